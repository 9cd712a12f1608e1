"""File-name sanitising (modfetch/util/filenames.py): names from servers never escape the destination."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modfetch.errors import UsageError
from modfetch.util.filenames import (
    FALLBACK_NAME,
    filename_from_url,
    safe_join,
    sanitize_filename,
    sanitize_relpath,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("model.safetensors", "model.safetensors"),
        ("../../evil.bin", "evil.bin"),
        ("..\\..\\evil.bin", "evil.bin"),
        ("/etc/passwd", "passwd"),
        ("dir/", FALLBACK_NAME),
        ("..", FALLBACK_NAME),
        (".", FALLBACK_NAME),
        ("...", FALLBACK_NAME),
        (".hidden", "hidden"),
        ("  spaced.bin  ", "spaced.bin"),
        ("x\x00y\x1fz\x7f.bin", "xyz.bin"),
        ("line\nbreak.bin", "linebreak.bin"),
        ("c:evil.bin", "c_evil.bin"),
        ("", FALLBACK_NAME),
        (None, FALLBACK_NAME),
        ("e\u0301.bin", "\u00e9.bin"),  # NFC
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override: would display as "invoiceexe.pdf"
        ("a\u2066b\u2069\u200f.bin", "ab.bin"),  # other bidi controls
        ("c1\x85\x9b.bin", "c1.bin"),  # C1 controls (NEL, CSI)
        ("\ufeffbom.bin", "bom.bin"),
        ("\U0001f469\u200d\U0001f52c.gguf", "\U0001f469\u200d\U0001f52c.gguf"),  # the joiner is kept
    ],
)
def test_sanitize_filename(raw: str | None, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_sanitize_custom_fallback() -> None:
    assert sanitize_filename("..", fallback="x") == "x"


@pytest.mark.parametrize("stem", ["a", "\u00e9", "\U0001f600"])
def test_long_names_keep_extension_and_fit_name_max(stem: str) -> None:
    name = sanitize_filename(stem * 400 + ".safetensors")
    assert name.endswith(".safetensors")
    assert len(name.encode()) <= 240
    name.encode("utf-8")  # never cut inside a character


@given(st.text(max_size=300))
def test_sanitized_name_is_always_one_safe_component(raw: str) -> None:
    name = sanitize_filename(raw)
    assert name
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in {".", ".."}
    assert not name.startswith(".")
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in name)
    assert len(name.encode()) <= 255 - len(".sha256")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("a/b/c", "a/b/c"), ("../a/./b/../c", "a/b/c"), ("/etc/passwd", "etc/passwd"), ("..", ""), ("", ""),
     ("a\\..\\b", "a/b"), ("a//b", "a/b")],
)
def test_sanitize_relpath(raw: str, clean: str) -> None:
    assert sanitize_relpath(raw) == clean


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://h/a/b.bin", "b.bin"),
        ("http://h/a/b%20c.bin?x=1#frag", "b c.bin"),
        ("http://h/dir/", "dir"),
        ("http://h/", None),
        ("http://h", None),
        ("http://h/a/%2E%2E%2Fevil", "../evil"),  # decoded, unsanitised: sanitize_filename cleans it
    ],
)
def test_filename_from_url(url: str, name: str | None) -> None:
    assert filename_from_url(url) == name


def test_safe_join_stays_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "sub", "x.bin") == tmp_path / "sub" / "x.bin"
    assert safe_join(tmp_path, "../../etc", "passwd") == tmp_path / "etc" / "passwd"
    assert safe_join(tmp_path, "", "x.bin") == tmp_path / "x.bin"


def test_safe_join_refuses_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UsageError, match="outside"):
        safe_join(root, "link", "x.bin")
