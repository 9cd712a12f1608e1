"""Secret redaction (modfetch/util/redact.py), human sizes and --chunk-size parsing (util/sizes.py)."""

from __future__ import annotations

import pytest

from modfetch.errors import UsageError
from modfetch.util.redact import MASK, redact, redact_url
from modfetch.util.sizes import human_size, parse_size


def test_token_values_from_env_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_SeCrEtVaLuE123")
    text = redact("failed with hf_SeCrEtVaLuE123 in the middle")
    assert "hf_SeCrEtVaLuE123" not in text
    assert MASK in text


def test_short_env_values_are_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVITAI_TOKEN", "ab")
    assert redact("abc ab") == "abc ab"


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefgh123456",
        "{'Authorization': 'Bearer abcdefgh123456'}",
        "headers={\"authorization\": \"abcdefgh123456\"}",
        "Cookie: session=abcdefgh123456",
        "sent Bearer abcdefgh123456 upstream",
        "GET https://cdn/x?X-Amz-Signature=abcdefgh123456&ok=1",
        "GET https://civitai/api?token=abcdefgh123456",
    ],
)
def test_secrets_in_text_are_masked(text: str) -> None:
    assert "abcdefgh123456" not in redact(text)


def test_plain_text_is_untouched() -> None:
    text = "downloaded model.safetensors (4 MiB) from http://127.0.0.1:8080/file.bin"
    assert redact(text) == text
    assert redact("") == ""


def test_redact_url_masks_userinfo_and_secret_params() -> None:
    url = redact_url("https://user:pw@host.example/a/b.bin?token=t0k3n&x=1&X-Amz-Signature=sig&sig=s")
    assert "user" not in url and "pw@" not in url
    assert "t0k3n" not in url and "=sig" not in url
    assert url.startswith("https://host.example/a/b.bin?")
    assert "x=1" in url


def test_redact_url_leaves_plain_urls_alone() -> None:
    assert redact_url("http://127.0.0.1:9/file.bin") == "http://127.0.0.1:9/file.bin"


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("524288", 524288), ("256K", 256 << 10), ("16M", 16 << 20), ("16m", 16 << 20), ("1G", 1 << 30),
     ("1GiB", 1 << 30), ("1MB", 1_000_000), ("1.5M", 3 << 19), (" 2 MiB ", 2 << 20), ("10b", 10)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1M", "0", "0.1", "12 parsecs", "1e6", "1,000"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "?"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 << 20, "5.0 MiB"),
     (3 << 30, "3.0 GiB"), (5 << 40, "5.0 TiB"), (5 << 50, "5120.0 TiB")],
)
def test_human_size(n: int | None, text: str) -> None:
    assert human_size(n) == text
