"""Fuzzing (hypothesis) of YAML loading: the config file and batch files.  Any text gives a value or a
ModfetchError (one clear line), never another exception."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modfetch.app.batch import parse_batch
from modfetch.config import Config, parse_config
from modfetch.errors import ModfetchError

FUZZ = settings(max_examples=200, deadline=None)
YAML_BITS = ["version: 1\n", "general:\n", "  download_root: ", "network: {timeout_seconds: ", "}", "[", "]", "{",
             ": ", "- ", "\n", "  ", "~", "$HOME", "2001-13-01", "0x_", "!!float abc", "!!int 0b2", "!!binary x",
             "!!timestamp 2001-1-1T99:99", "&a ", "*a", "? ", "'", '"', "\\", "#", "1e999", "-1", "null", "true",
             "concurrency:\n  per_file_chunks: ", "token: x", "logging: {level: ", "metrics:\n", "é", "\x00", "\t"]
yaml_soup = st.lists(st.sampled_from(YAML_BITS), max_size=24).map("".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20))
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(
        ["version", "general", "network", "concurrency", "logging", "sources", "placement", "metrics",
         "download_root", "data_root", "allow_overwrite", "timeout_seconds", "user_agent", "per_file_chunks",
         "chunk_size_mb", "max_retries", "level", "format", "apps", "mapping", "prometheus_textfile", "enabled",
         "path", "token", "jobs", "uri", "dest", "name", "sha256", "type", "place"]), st.text(max_size=8),
        st.integers()), inner, max_size=5)), max_leaves=25)


def _dump(tree: Any) -> str:
    try:
        return yaml.safe_dump(tree)
    except (yaml.YAMLError, ValueError, OverflowError):
        return "{"


def _config_outcome(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.yml")
    except ModfetchError as exc:
        assert exc.message.startswith("fuzz.yml"), exc.message
        assert "\n" not in exc.message.strip() or "invalid YAML" in exc.message
        return
    assert isinstance(config, Config)


@FUZZ
@given(text=st.one_of(st.text(), yaml_soup))
@example(text="a: 2001-13-01")
@example(text="[" * 5000)
@example(text="a: !!timestamp 2001-1-1T99:99")
@example(text="general: {download_root: 0x_}")
def test_config_text(text: str) -> None:
    _config_outcome(text)


@FUZZ
@given(tree=trees)
@example(tree={"version": 1, "concurrency": {"per_file_chunks": 2**70}})
@example(tree={"general": {"download_root": None}})
def test_config_structured(tree: Any) -> None:
    _config_outcome(_dump(tree))


@pytest.mark.parametrize("text", ["a: 2001-13-01", "[" * 5000, "a: 0x_", "a: !!int 0b2", "a: !!float abc",
                                  "a: !!timestamp 2001-1-1T99:99"])
def test_config_yaml_that_pyyaml_chokes_on_is_a_config_error(text: str) -> None:
    """Regression (fuzzing): PyYAML raises ValueError / RecursionError / AttributeError, not only YAMLError."""
    with pytest.raises(ModfetchError, match="invalid YAML"):
        parse_config(text, "fuzz.yml")




def _batch_outcome(text: str) -> None:
    try:
        jobs = parse_batch(text, "jobs.yml")
    except ModfetchError as exc:
        assert "jobs.yml" in exc.message
        assert "\n" not in exc.message or "invalid YAML" in exc.message, exc.message
        return
    assert isinstance(jobs, list) and jobs


@FUZZ
@given(text=st.one_of(st.text(), yaml_soup, st.builds(lambda s: "jobs:\n  - " + s, yaml_soup)))
@example(text="jobs: [2001-13-01]")
@example(text="jobs:\n  - {\"\\nx\": 1}")
@example(text="jobs:\n  - {uri: 'hf://a/b', sha256: 2001-13-01}")
@example(text="[" * 5000)
def test_batch_text(text: str) -> None:
    _batch_outcome(text)


@FUZZ
@given(tree=trees, jobs=st.lists(trees, max_size=4))
def test_batch_structured(tree: Any, jobs: list[Any]) -> None:
    _batch_outcome(_dump({"jobs": jobs}))
    _batch_outcome(_dump(tree))


@pytest.mark.parametrize("text", ["jobs: 2001-13-01", "[" * 5000, "jobs: [!!int 0b2]"])
def test_batch_yaml_that_pyyaml_chokes_on_is_a_batch_error(text: str) -> None:
    """Regression (fuzzing): the batch loader had the same PyYAML ValueError / RecursionError escape."""
    with pytest.raises(ModfetchError, match="invalid YAML"):
        parse_batch(text, "jobs.yml")


def test_config_key_with_a_newline_gives_a_one_line_error() -> None:
    """Regression (fuzzing): a YAML key containing a newline was echoed raw, splitting the error line."""
    with pytest.raises(ModfetchError) as info:
        parse_config('"\\nmodfetch: error: forged": 1\n', "fuzz.yml")
    assert "\n" not in info.value.message
    assert "unknown key" in info.value.message


def test_batch_key_with_a_newline_gives_a_one_line_error() -> None:
    """Regression (fuzzing): the batch loader echoed a newline-holding key raw, splitting the error line."""
    with pytest.raises(ModfetchError) as info:
        parse_batch('jobs:\n  - {"\\nx": 1}\n', "jobs.yml")
    assert "\n" not in info.value.message and "unknown key" in info.value.message
