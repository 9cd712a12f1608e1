"""Pure parsing of hf:// URIs and Hub browser URLs (parametrized, plus a fuzz: only UsageError may escape)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modfetch.errors import UsageError
from modfetch.resolvers.uris import (
    HfUri,
    is_hf_browser_url,
    parse_civitai_browser_url,
    parse_civitai_uri,
    parse_hf_browser_url,
    parse_hf_uri,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://gpt2/README.md?rev=main", HfUri("model", ("gpt2", "README.md"), "main")),
        ("hf://owner/repo/a/b/c.safetensors", HfUri("model", ("owner", "repo", "a", "b", "c.safetensors"))),
        ("hf://datasets/acme/ds/data/x.parquet", HfUri("dataset", ("acme", "ds", "data", "x.parquet"))),
        ("hf://spaces/acme/app/app.py?revision=v2", HfUri("space", ("acme", "app", "app.py"), "v2")),
        (
            "hf://owner/repo?include=*.json,*.md&include=a/&exclude=*.bin",
            HfUri("model", ("owner", "repo"), None, ("*.json", "*.md", "a/"), ("*.bin",)),
        ),
        ("hf://owner/repo/f?rev=refs%2Fpr%2F1", HfUri("model", ("owner", "repo", "f"), "refs/pr/1")),
        ("hf://owner/repo/f?rev=refs/pr/1", HfUri("model", ("owner", "repo", "f"), "refs/pr/1")),
        ("HF://owner//repo/f", HfUri("model", ("owner", "repo", "f"))),
    ],
)
def test_parse_hf_uri(uri: str, expected: HfUri) -> None:
    assert parse_hf_uri(uri) == expected


def test_candidates() -> None:
    assert parse_hf_uri("hf://gpt2").candidates() == [("gpt2", "")]
    assert parse_hf_uri("hf://gpt2/README.md").candidates() == [("gpt2/README.md", ""), ("gpt2", "README.md")]
    assert parse_hf_uri("hf://o/r/a/b").candidates() == [("o/r", "a/b"), ("o", "r/a/b")]


@pytest.mark.parametrize(
    "uri",
    [
        "hf://",
        "hf://datasets",
        "hf://o/r/../x",
        "hf://o/r/./x",
        "hf://o/r?rev=",
        "hf://o/r?rev=a&rev=b",
        "hf://o/r?unknown=1",
        "hf://-bad/r",
        "hf://o/r%0Ax",
        "hf://o/r?rev=a%20b",
        "http://o/r",
    ],
)
def test_parse_hf_uri_rejects(uri: str) -> None:
    with pytest.raises(UsageError):
        parse_hf_uri(uri)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://huggingface.co/owner/repo/blob/main/a/b.gguf",
            HfUri("model", ("owner", "repo", "a", "b.gguf"), "main", split=2),
        ),
        (
            "https://huggingface.co/gpt2/resolve/v1.0/README.md?download=true",
            HfUri("model", ("gpt2", "README.md"), "v1.0", split=1),
        ),
        (
            "https://hf.co/datasets/o/d/resolve/refs%2Fconvert%2Fparquet/x.parquet",
            HfUri("dataset", ("o", "d", "x.parquet"), "refs/convert/parquet", split=2),
        ),
        (
            "https://huggingface.co/o/r/tree/main/sub",
            HfUri("model", ("o", "r", "sub"), "main", split=2, folder=True),
        ),
        (
            "http://127.0.0.1:8080/o/r/blob/dev/f%20g.txt",
            HfUri("model", ("o", "r", "f g.txt"), "dev", split=2),
        ),
    ],
)
def test_parse_hf_browser_url(url: str, expected: HfUri) -> None:
    assert is_hf_browser_url(url, ["127.0.0.1:8080"])
    assert parse_hf_browser_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/owner/repo",
        "https://huggingface.co/docs/hub/index",
        "https://cdn-lfs.huggingface.co/repos/aa/bb/cc",
        "https://example.com/o/r/blob/main/x",
        "http://127.0.0.1:9999/o/r/blob/main/x",
        "ftp://huggingface.co/o/r/blob/main/x",
    ],
)
def test_not_hub_browser_urls(url: str) -> None:
    assert not is_hf_browser_url(url, ["127.0.0.1:8080"])


def test_browser_url_needs_a_file() -> None:
    with pytest.raises(UsageError, match="no file"):
        parse_hf_browser_url("https://huggingface.co/o/r/blob/main")


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(body=_text, query=_text)
def test_parsers_only_raise_usage_errors(body: str, query: str) -> None:
    for parse, uri in (
        (parse_hf_uri, f"hf://{body}?{query}"),
        (parse_civitai_uri, f"civitai://{body}?{query}"),
        (parse_hf_browser_url, f"https://huggingface.co/{body}?{query}"),
        (parse_civitai_browser_url, f"https://civitai.com/{body}?{query}"),
    ):
        try:
            parse(uri)  # type: ignore[operator]
        except UsageError as exc:
            assert "\n" not in exc.message
