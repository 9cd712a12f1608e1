"""Pure parsers for HTTP headers modfetch relies on: Content-Range, Content-Disposition, Retry-After, ETag."""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.I)
# ``; name=value`` (or a bare ``name=value`` with no disposition type before it), the value a quoted string
# (escapes allowed) or a token running to the next ';'.
_DISPOSITION_PARAM = re.compile(r'(?:^|;)\s*([^\s;=]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')
_EXT_VALUE = re.compile(r"^([^']*)'[^']*'(.*)$", re.S)  # charset'language'value
MAX_SIZE = (1 << 63) - 1  # no file is larger (off_t, SQLite INTEGER): a bigger number is a malformed header


@dataclass(frozen=True)
class ContentRange:
    """A parsed ``Content-Range: bytes START-END/TOTAL`` (END inclusive, TOTAL None when ``*``)."""

    start: int
    end: int
    total: int | None

    @property
    def length(self) -> int:
        """Number of bytes the range covers."""
        return self.end - self.start + 1


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse a Content-Range header; None when absent or malformed (callers treat that as a violation)."""
    if not value:
        return None
    match = _CONTENT_RANGE.match(value)
    if not match:
        return None
    start, end = header_int(match.group(1)), header_int(match.group(2))
    total = None if match.group(3) == "*" else header_int(match.group(3))
    if start is None or end is None or (total is None and match.group(3) != "*"):
        return None  # a number beyond MAX_SIZE
    if end < start or (total is not None and end >= total):
        return None
    return ContentRange(start, end, total)


def header_int(value: str | None) -> int | None:
    """A non-negative integer header (Content-Length, X-Linked-Size); None when absent or not plain ASCII digits
    (``str.isdigit()`` alone accepts '²', which ``int()`` rejects)."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value.lstrip("0")) > 19:
        return None  # (int() of thousands of digits raises ValueError; anything past 19 is past MAX_SIZE)
    number = int(value)
    return number if number <= MAX_SIZE else None


def parse_unsatisfied_range(value: str | None) -> int | None:
    """The total size from a 416's ``Content-Range: bytes */TOTAL``."""
    match = _UNSATISFIED_RANGE.match(value or "")
    return header_int(match.group(1)) if match else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() alone accepts '²', which float() rejects
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _disposition_params(value: str) -> dict[str, str]:
    """The parameters of a Content-Disposition value: names lower-cased, quoted strings unescaped, the first of
    a repeated name kept.  Parsed as whole ``; name=value`` pairs so that neither ``xfilename=`` nor a
    ``filename=`` inside another parameter's quoted value counts as the file name."""
    params: dict[str, str] = {}
    for match in _DISPOSITION_PARAM.finditer(value):
        name, quoted, token = match.group(1).lower(), match.group(2), match.group(3)
        text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token.strip()
        params.setdefault(name, text)
    return params


def _decode_ext_value(raw: str) -> str:
    """An RFC 5987 ``charset'language'percent-encoded`` value (the language may be empty or a tag, e.g.
    ``UTF-8'en'%E2%82%AC.bin``); a value without the two quotes is taken as plain percent-encoded UTF-8."""
    match = _EXT_VALUE.match(raw)
    if match is None:
        return unquote(raw)
    charset, encoded = match.group(1) or "utf-8", match.group(2)
    try:
        return unquote(encoded, encoding=charset, errors="replace")
    except (LookupError, ValueError):  # an unknown charset, or a codec like idna that fails on any bytes
        return unquote(encoded, errors="replace")  # UTF-8 is the best guess


def parse_content_disposition_filename(value: str | None) -> str | None:
    """The file name from Content-Disposition (RFC 6266 ``filename*`` wins over ``filename``), unsanitised."""
    if not value:
        return None
    params = _disposition_params(value)
    if params.get("filename*"):
        decoded = _decode_ext_value(params["filename*"])
        if decoded:
            return decoded
    return params.get("filename")


def strong_etag(value: str | None) -> str | None:
    """The ETag if it is strong (usable in If-Range), else None."""
    if not value or value.strip().upper().startswith("W/"):
        return None
    return value.strip()


def etag_value(value: str | None) -> str | None:
    """An ETag without quotes and weak prefix (``W/"abc"`` -> ``abc``), for comparing with hashes."""
    if not value:
        return None
    value = value.strip()
    if value.upper().startswith("W/"):
        value = value[2:]
    return value.strip('"') or None
