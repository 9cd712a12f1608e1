"""Fuzzing (hypothesis) of URI parsing: hf://, civitai://, Hub and CivitAI browser URLs and plain http(s) URLs.
Any text gives a parsed value or a UsageError, never another exception; parsed values are well-formed."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from modfetch.errors import UsageError
from modfetch.resolvers.http import validate_http_url
from modfetch.resolvers.uris import (
    CivitaiUri,
    HfUri,
    is_civitai_browser_url,
    is_hf_browser_url,
    parse_civitai_browser_url,
    parse_civitai_uri,
    parse_hf_browser_url,
    parse_hf_uri,
)

FUZZ = settings(max_examples=200, deadline=None)
PIECES = ["/", "?", "&", "=", "#", "%", "%2F", "%2E%2E", "..", ".", "@", ":", "rev", "include", "exclude",
          "version", "modelVersionId", "file", "format", "fp", "size", "type", "models", "datasets", "spaces",
          "blob", "resolve", "tree", "main", "owner", "repo", "a.bin", "12", "0", "²", "007", " ", "\x00", "é",
          "api", "download", "model", "refs/pr/1", "*"]
junk = st.lists(st.sampled_from(PIECES), max_size=16).map("".join)
anytext = st.one_of(st.text(), junk)
hf_uris = st.builds(lambda s: "hf://" + s, anytext)
civitai_uris = st.builds(lambda s: "civitai://" + s, anytext)
hf_browser = st.builds(lambda s: "https://huggingface.co/" + s, anytext)
civitai_browser = st.builds(lambda s: "https://civitai.com/" + s, anytext)


def _segments(text: str) -> list[str]:
    return text.split("/")


def _check_hf(uri: HfUri) -> None:
    assert uri.repo_type in ("model", "dataset", "space")
    assert uri.parts and all(uri.parts)
    for repo_id, path in uri.candidates():
        assert repo_id and not repo_id.startswith("/")
        for segment in _segments(repo_id) + (_segments(path) if path else []):
            assert segment not in ("", ".", ".."), (repo_id, path)
    if uri.revision is not None:
        assert uri.revision and ".." not in uri.revision.split("/")


@FUZZ
@given(text=st.one_of(hf_uris, anytext))
@example(text="hf://owner/repo/x%2F..%2F..%2Fapi%2Fwhoami")
@example(text="hf://owner/repo/a%2F%2Fb")
@example(text="hf://owner/repo?rev=..")
def test_hf_uri(text: str) -> None:
    try:
        parsed = parse_hf_uri(text)
    except UsageError:
        return
    _check_hf(parsed)


@FUZZ
@given(text=st.one_of(hf_browser, anytext))
@example(text="https://huggingface.co/owner/repo/resolve/main/x%2F..%2F..%2Fy")
def test_hf_browser_url(text: str) -> None:
    is_hf_browser_url(text)
    try:
        parsed = parse_hf_browser_url(text)
    except UsageError:
        return
    _check_hf(parsed)


@FUZZ
@given(text=st.one_of(civitai_uris, anytext))
@example(text="civitai://model/²")
@example(text="civitai://version/٣")
@example(text="civitai://model/12?version=²")
def test_civitai_uri(text: str) -> None:
    try:
        parsed = parse_civitai_uri(text)
    except UsageError:
        return
    assert isinstance(parsed, CivitaiUri)
    for value in (parsed.model_id, parsed.version_id):
        assert value is None or value > 0


@FUZZ
@given(text=st.one_of(civitai_browser, anytext))
@example(text="https://civitai.com/models/²")
@example(text="https://civitai.com/api/download/models/¹²")
def test_civitai_browser_url(text: str) -> None:
    is_civitai_browser_url(text)
    try:
        parsed = parse_civitai_browser_url(text)
    except UsageError:
        return
    for value in (parsed.model_id, parsed.version_id):
        assert value is None or value > 0


@FUZZ
@given(text=st.one_of(anytext, st.builds(lambda s: "http://" + s, anytext),
                      st.builds(lambda s: "https://" + s, anytext)))
@example(text="http://[::1")
@example(text="http://host:99999999/x")
@example(text="http://host:²/x")
def test_validate_http_url(text: str) -> None:
    try:
        validate_http_url(text)
    except UsageError:
        return
    assert text.lower().startswith(("http://", "https://"))


def test_civitai_ids_must_be_ascii_digits() -> None:
    """Regression (fuzzing): '²' passed str.isdigit() and crashed int() with a ValueError."""
    for uri in ("civitai://model/²", "civitai://version/¹²", "https://civitai.com/models/²"):
        try:
            (parse_civitai_browser_url if uri.startswith("https") else parse_civitai_uri)(uri)
        except UsageError:
            continue
        raise AssertionError(f"{uri} was accepted")
