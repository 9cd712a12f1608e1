"""Fuzzing (hypothesis) of the header parsers and file-name rules: any input gives a value or a clean refusal,
never another exception, and no file name ever escapes the destination or comes out empty."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modfetch.errors import UsageError
from modfetch.util.filenames import filename_from_url, safe_join, sanitize_filename, sanitize_relpath
from modfetch.util.http import (
    etag_value,
    header_int,
    parse_content_disposition_filename,
    parse_content_range,
    parse_retry_after,
    parse_unsatisfied_range,
    strong_etag,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Header values arrive decoded as latin-1; names from APIs and URLs can be any text.
header_text = st.one_of(st.text(alphabet=st.characters(max_codepoint=255)), st.text())
hostile_names = st.one_of(
    st.text(),
    st.lists(st.sampled_from(["..", ".", "/", "\\", "\x00", "a", " ", ":", "~", "\u202e", "é", ".bin", "%2F"]),
             max_size=12).map("".join),
)


def _check_name(name: str) -> None:
    assert name, "empty file name"
    assert name not in (".", "..")
    assert not name.startswith(".")
    for bad in ("/", "\\", "\x00"):
        assert bad not in name
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name)
    assert len(name.encode("utf-8")) <= 240


@FUZZ
@given(value=header_text)
@example(value='attachment; filename="../../etc/passwd"')
@example(value="attachment; filename*=UTF-8''..%2F..%2Fx%00y")
@example(value="attachment; filename*=bogus-charset''%FF%FE")
@example(value='attachment; filename="\\')
def test_content_disposition_gives_a_safe_name(value: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    raw = parse_content_disposition_filename(value)
    assert raw is None or isinstance(raw, str)
    name = sanitize_filename(raw)
    _check_name(name)


@FUZZ
@given(name=hostile_names)
@example(name="..")
@example(name="../..")
@example(name="a" * 300 + ".safetensors")
@example(name="é" * 200 + "." + "ü" * 20)
def test_sanitized_names_stay_inside_root(name: str, tmp_path: Path) -> None:
    clean = sanitize_filename(name)
    _check_name(clean)
    target = safe_join(tmp_path, clean)
    assert target.parent == tmp_path.absolute()


@FUZZ
@given(subdir=hostile_names, name=hostile_names)
@example(subdir="../../..", name="x")
@example(subdir="/etc", name="passwd")
def test_safe_join_never_escapes(subdir: str, name: str, tmp_path: Path) -> None:
    rel = sanitize_relpath(subdir)
    assert not rel.startswith("/") and ".." not in rel.split("/")
    try:
        target = safe_join(tmp_path, subdir, sanitize_filename(name))
    except UsageError:
        return
    root = tmp_path.absolute()
    assert target == root or root in target.parents


@FUZZ
@given(url=st.one_of(st.text(), st.builds(lambda p: "http://h/" + p, st.text())))
def test_filename_from_url_never_raises(url: str) -> None:
    name = filename_from_url(url)
    assert name is None or (isinstance(name, str) and name)
    _check_name(sanitize_filename(name))


@FUZZ
@given(value=st.one_of(header_text, st.builds("bytes {}-{}/{}".format, st.integers(-5, 2**70),
                                                  st.integers(-5, 2**70), st.one_of(st.integers(-5, 2**70),
                                                                                    st.just("*")))))
@example(value="bytes 5-4/10")
@example(value="bytes 0-9/9")
@example(value="bytes ²-³/¹")
def test_content_range_parsed_ranges_are_consistent(value: str) -> None:
    parsed = parse_content_range(value)
    if parsed is None:
        return
    assert 0 <= parsed.start <= parsed.end
    assert parsed.length == parsed.end - parsed.start + 1 >= 1
    assert parsed.total is None or parsed.end < parsed.total


@FUZZ
@given(start=st.integers(0, 2**62), length=st.integers(1, 2**40), extra=st.integers(0, 2**40))
def test_content_range_round_trip(start: int, length: int, extra: int) -> None:
    end = start + length - 1
    total = end + 1 + extra
    parsed = parse_content_range(f"bytes {start}-{end}/{total}")
    assert parsed is not None and (parsed.start, parsed.end, parsed.total) == (start, end, total)
    assert parse_content_range(f"bytes {start}-{end}/{end}") is None   # end must be inside the total


@FUZZ
@given(beyond=st.integers(2**63, 10**40))
def test_content_range_beyond_any_file_size_is_malformed(beyond: int) -> None:
    assert parse_content_range(f"bytes 0-0/{beyond}") is None
    assert parse_content_range(f"bytes {beyond}-{beyond}/*") is None
    assert parse_unsatisfied_range(f"bytes */{beyond}") is None


@FUZZ
@given(value=header_text)
@example(value="²")
@example(value="bytes */²")
def test_other_header_parsers_never_raise(value: str) -> None:
    total = parse_unsatisfied_range(value)
    assert total is None or total >= 0
    delay = parse_retry_after(value)
    assert delay is None or delay >= 0
    strong_etag(value)
    etag_value(value)


def test_retry_after_non_ascii_digits_are_ignored() -> None:
    """Regression (fuzzing): a Retry-After of '²' passed str.isdigit() and crashed float()."""
    assert parse_retry_after("²") is None
    assert parse_retry_after("³⁴") is None
    assert parse_retry_after(" 7 ") == 7.0


@FUZZ
@given(value=st.one_of(st.none(), header_text, st.integers(0, 2**70).map(str)))
@example(value="²")
@example(value=" 12 ")
def test_header_int(value: str | None) -> None:
    parsed = header_int(value)
    assert parsed is None or (value is not None and parsed == int(value.strip()) >= 0)


def test_header_int_rejects_non_ascii_digits() -> None:
    """Regression (fuzzing): Content-Length / X-Linked-Size of '²' passed str.isdigit() and crashed int() in the
    engine's 206 check, the single-stream download and the Hub resolver."""
    assert header_int("²") is None
    assert header_int("١٢") is None
    assert header_int("123") == 123
    assert header_int(None) is None


def test_sanitize_never_yields_a_hidden_name() -> None:
    """Regression (fuzzing): '. .0' was stripped once ('.'-then-space) and came out as the hidden '.0'."""
    assert sanitize_filename(". .0") == "0"
    assert sanitize_filename(" . . model.bin . ") == "model.bin"
