"""Config loading (modfetch/config.py): defaults, precedence, errors naming file and key, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from modfetch.config import Config, load_config, parse_config
from modfetch.errors import ConfigError


def test_no_file_at_all_gives_defaults(isolated_env: Path) -> None:
    config = load_config()
    assert config == Config()
    assert config.source == "<defaults>"
    assert config.download_root == isolated_env / "Downloads" / "modfetch"
    assert config.state_db == isolated_env / ".local" / "share" / "modfetch" / "state.db"
    assert config.network.user_agent.startswith("modfetch/")


def test_xdg_file_is_read(isolated_env: Path) -> None:
    path = isolated_env / ".config" / "modfetch" / "config.yml"
    path.parent.mkdir(parents=True)
    path.write_text("concurrency: {per_file_chunks: 3}\n")
    config = load_config()
    assert config.concurrency.per_file_chunks == 3
    assert config.concurrency.chunk_size_mb == Config().concurrency.chunk_size_mb  # partial section merged
    assert config.source == str(path)


def test_env_var_then_explicit_flag_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        isolated_env: Path) -> None:
    xdg = isolated_env / ".config" / "modfetch" / "config.yml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text("network: {timeout_seconds: 1}\n")
    env_file = tmp_path / "env.yml"
    env_file.write_text("network: {timeout_seconds: 2}\n")
    flag_file = tmp_path / "flag.yml"
    flag_file.write_text("network: {timeout_seconds: 3}\n")
    monkeypatch.setenv("MODFETCH_CONFIG", str(env_file))
    assert load_config().network.timeout_seconds == 2
    assert load_config(str(flag_file)).network.timeout_seconds == 3


def test_paths_expand_tilde_and_vars(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELS", "/srv/models")
    config = parse_config("general: {download_root: $MODELS/dl, data_root: ~/state}\n", "t.yml")
    assert config.download_root == Path("/srv/models/dl")
    assert config.data_root == isolated_env / "state"


def test_full_documented_example_parses() -> None:
    text = """
version: 1
general: {download_root: ~/Downloads/modfetch, data_root: ~/.local/share/modfetch, allow_overwrite: false}
network: {timeout_seconds: 30, user_agent: "modfetch/x"}
concurrency: {per_file_chunks: 8, chunk_size_mb: 16, max_retries: 8, backoff_min_ms: 250,
              backoff_max_ms: 30000}
logging: {level: info, format: human}
"""
    config = parse_config(text, "example.yml")
    assert config.concurrency.max_retries == 8
    assert config.logging.format == "human"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_file_is_defaults(text: str) -> None:
    assert parse_config(text, "e.yml").concurrency == Config().concurrency


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("general: [unclosed\n", ["bad.yml", "invalid YAML", "line"]),
        ("- just\n- a list\n", ["bad.yml", "mapping"]),
        ("genral: {}\n", ["bad.yml", "genral", "unknown key"]),
        ("network: {timeout: 3}\n", ["bad.yml", "network.timeout", "unknown key"]),
        ("network: {timeout_seconds: soon}\n", ["network.timeout_seconds", "number"]),
        ("network: {timeout_seconds: 0}\n", ["network.timeout_seconds", "positive"]),
        ("concurrency: {per_file_chunks: 2.5}\n", ["concurrency.per_file_chunks", "whole number"]),
        ("concurrency: {max_retries: -1}\n", ["concurrency.max_retries", "negative"]),
        ("concurrency: {per_file_chunks: true}\n", ["concurrency.per_file_chunks"]),
        ("general: {allow_overwrite: yes please}\n", ["general.allow_overwrite", "true or false"]),
        ("logging: {format: xml}\n", ["logging.format", "'human'"]),
        ("network: 5\n", ["network", "mapping"]),
        ("version: 2\n", ["version", "unsupported"]),
    ],
)
def test_invalid_config_names_file_and_key(text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "bad.yml")
    assert info.value.exit_code == 2
    assert "\n" not in info.value.message
    for needle in needles:
        assert needle.lower() in info.value.message.lower()


@pytest.mark.parametrize(
    "text",
    [
        "token: abc\n",
        "network: {api_key: abc}\n",
        "sources: {huggingface: {token: hf_abc}}\n",
        "sources: {civitai: {password: x}}\n",
        "general: {secret: x}\n",
        "hf_token: x\n",
    ],
)
def test_secret_keys_are_refused_with_env_hint(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "s.yml")
    assert "secret" in info.value.message
    assert info.value.hint is not None and "environment" in info.value.hint


def test_token_env_names_a_variable_and_is_fine() -> None:
    config = parse_config("sources: {huggingface: {token_env: MY_HF}}\n", "ok.yml")
    assert config.sources.huggingface.token_env == "MY_HF"
    assert config.sources.huggingface.endpoint == "https://huggingface.co"


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yml"))


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(path))


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.network.timeout_seconds = 1  # type: ignore[misc]
