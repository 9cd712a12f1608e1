"""Header parsing (modfetch/util/http.py): Content-Range, 416, Retry-After, Content-Disposition, ETags."""

from __future__ import annotations

import email.utils

import pytest

from modfetch.util.http import (
    ContentRange,
    etag_value,
    parse_content_disposition_filename,
    parse_content_range,
    parse_retry_after,
    parse_unsatisfied_range,
    strong_etag,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-0/10", ContentRange(0, 0, 10)),
        ("bytes 0-9/10", ContentRange(0, 9, 10)),
        ("bytes 100-199/1000", ContentRange(100, 199, 1000)),
        ("BYTES 5-6/*", ContentRange(5, 6, None)),
        ("  bytes 1-2/3  ", ContentRange(1, 2, 3)),
    ],
)
def test_content_range_valid(value: str, expected: ContentRange) -> None:
    assert parse_content_range(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None, "", "bytes", "bytes 0-9", "bytes */10", "items 0-9/10", "bytes 9-0/10",  # reversed
        "bytes 0-10/10",  # end beyond total
        "bytes -1-9/10", "bytes 0-9/ten", "bytes 0-9/10, bytes 20-29/10", "bytes=0-9/10",
    ],
)
def test_content_range_malformed_is_none(value: str | None) -> None:
    assert parse_content_range(value) is None


def test_content_range_length() -> None:
    assert ContentRange(0, 0, 1).length == 1
    assert ContentRange(1048576, 2097151, None).length == 1048576


@pytest.mark.parametrize(("value", "total"), [("bytes */1234", 1234), ("bytes */0", 0), (None, None),
                                              ("bytes 0-1/2", None), ("garbage", None)])
def test_unsatisfied_range_total(value: str | None, total: int | None) -> None:
    assert parse_unsatisfied_range(value) == total


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("1", 1.0), (" 120 ", 120.0), (None, None),
                                                ("", None), ("soon", None), ("-1", None), ("1.5", None)])
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ('attachment; filename="model.safetensors"', "model.safetensors"),
        ("attachment; filename=model.ckpt", "model.ckpt"),
        ("attachment; filename=plain.bin; size=3", "plain.bin"),
        ('attachment; filename="a \\"quoted\\" name.bin"', 'a "quoted" name.bin'),
        ("attachment; filename*=UTF-8''%E2%82%AC%20rates.bin", "\u20ac rates.bin"),
        ("attachment; filename*=UTF-8''star.bin; filename=\"plain.bin\"", "star.bin"),
        ('attachment; filename="plain.bin"; filename*=UTF-8\'\'star.bin', "star.bin"),
        ("attachment; filename*=iso-8859-1''caf%E9.bin", "caf\u00e9.bin"),
        ('attachment; filename="../../evil.bin"', "../../evil.bin"),  # unsanitised by design
        ("inline", None),
        ("", None),
        (None, None),
    ],
)
def test_content_disposition_filename(value: str | None, name: str | None) -> None:
    assert parse_content_disposition_filename(value) == name


@pytest.mark.parametrize(("value", "strong"), [('"abc"', '"abc"'), (' "abc" ', '"abc"'), ('W/"abc"', None),
                                               ('w/"abc"', None), ("", None), (None, None)])
def test_strong_etag(value: str | None, strong: str | None) -> None:
    assert strong_etag(value) == strong


@pytest.mark.parametrize(("value", "bare"), [('"abc"', "abc"), ('W/"abc"', "abc"), ("abc", "abc"),
                                             ('""', None), (None, None)])
def test_etag_value(value: str | None, bare: str | None) -> None:
    assert etag_value(value) == bare
