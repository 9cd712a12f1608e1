"""Probe a URL before downloading: size, real Range support, validators and the server's file name.

HEAD first (some servers refuse it or lie), then always a ``GET Range: bytes=0-0``: only a 206 whose
Content-Range starts at 0 proves ranges work, and its total is trusted over any HEAD Content-Length.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import requests

from ..errors import HTTPStatusError
from ..util.http import (
    header_int,
    parse_content_disposition_filename,
    parse_content_range,
    parse_unsatisfied_range,
)
from ..util.redact import redact_url
from .http import RetryableError, check_status, request

log = logging.getLogger("modfetch.engine")


@dataclass(frozen=True)
class ProbeResult:
    """What the server told us about the entity."""

    url: str                      # final URL after redirects (where chunk requests go)
    size: int | None              # None: unknown (chunked transfer / no Content-Length)
    ranges: bool                  # a ranged GET was really answered with a correct 206
    etag: str | None
    last_modified: str | None
    filename: str | None          # from Content-Disposition, unsanitised
    # False after a date If-Range got the whole file (weak validators, e.g. Apache within a second of a change):
    # chunks then go without If-Range, each response's ETag / Last-Modified still checked (engine/fetch.py).
    date_if_range: bool = True


def _int(value: str | None) -> int | None:
    return header_int(value)  # ASCII digits up to MAX_SIZE only: a 10^30 "size" is a malformed header


@dataclass(frozen=True)
class HeadResult:
    """What a HEAD said (all None when it failed or was refused)."""

    url: str
    size: int | None
    etag: str | None
    last_modified: str | None
    filename: str | None


def probe_head(session: requests.Session, url: str, *, base_headers: Mapping[str, str], auth: Mapping[str, str],
               auth_host: str | None, timeout: tuple[float, float]) -> HeadResult:
    """HEAD ``url``: size, validators and file name of a 200; empty for a failure or another status (404/410
    raise HTTPStatusError).  Sends no body request."""
    empty = HeadResult(url, None, None, None, None)
    try:
        response, final = request(session, "HEAD", url, base_headers=base_headers, auth=auth,
                                  auth_host=auth_host, timeout=timeout, stream=False)
    except RetryableError as exc:
        log.debug("HEAD failed (%s); probing with GET", exc)
        return empty
    response.close()
    if response.status_code == 200:
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("identity", "")
        return HeadResult(final, None if encoded else _int(response.headers.get("Content-Length")),
                          response.headers.get("ETag"), response.headers.get("Last-Modified"),
                          parse_content_disposition_filename(response.headers.get("Content-Disposition")))
    if response.status_code in (404, 410):
        check_status(response, final)
    log.debug("HEAD answered %s; probing with GET", response.status_code)
    return empty


def probe(session: requests.Session, url: str, *, base_headers: Mapping[str, str], auth: Mapping[str, str],
          auth_host: str | None, timeout: tuple[float, float], head: HeadResult | None = None) -> ProbeResult:
    """Probe ``url``; raises RetryableError for transient failures and ModfetchError subclasses for final ones.
    ``head``: the answer of a HEAD already sent (not sent again)."""
    if head is None:
        head = probe_head(session, url, base_headers=base_headers, auth=auth, auth_host=auth_host,
                          timeout=timeout)
    head_size, head_etag, head_modified, head_name = head.size, head.etag, head.last_modified, head.filename

    headers = dict(base_headers, Range="bytes=0-0")
    response, final = request(session, "GET", url, base_headers=headers, auth=auth, auth_host=auth_host,
                              timeout=timeout, stream=True)
    with response:
        name = parse_content_disposition_filename(response.headers.get("Content-Disposition")) or head_name
        etag = response.headers.get("ETag") or head_etag
        modified = response.headers.get("Last-Modified") or head_modified
        if response.status_code == 416:
            total = parse_unsatisfied_range(response.headers.get("Content-Range"))
            if total == 0 or (total is None and head_size == 0):
                return ProbeResult(final, 0, True, etag, modified, name)
            # Unsatisfiable "bytes=0-0" for a file that is not empty: the server's ranges are broken, not the
            # network.  Fetch it as one plain GET (its Content-Length and status are checked there).
            log.warning("server refused bytes=0-0 with 416 for a non-empty file; downloading as one stream")
            return ProbeResult(final, head_size, False, etag, modified, name)
        check_status(response, final)
        if response.status_code == 206:
            if response.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
                # A compressed 206 cannot be written at an offset (its Content-Length counts compressed bytes).
                log.warning("server compresses ranged responses (Content-Encoding: %s); downloading as one stream",
                            response.headers.get("Content-Encoding"))
                return ProbeResult(final, head_size, False, etag, modified, name)
            content_range = parse_content_range(response.headers.get("Content-Range"))
            if content_range is not None and content_range.start == 0 and content_range.total is not None:
                if head_size is not None and head_size != content_range.total:
                    log.warning("server's HEAD says %d bytes but its ranged GET says %d; trusting the GET",
                                head_size, content_range.total)
                return ProbeResult(final, content_range.total, True, etag, modified, name)
            log.warning("server sent a 206 with a bad Content-Range (%r); downloading as one stream",
                        response.headers.get("Content-Range"))
            return ProbeResult(final, head_size, False, etag, modified, name)
        if response.status_code == 200:
            encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("identity", "")
            size = None if encoded else _int(response.headers.get("Content-Length"))
            if head_size is not None and size is not None and head_size != size:
                log.warning("server's HEAD says %d bytes but GET says %d; trusting the GET", head_size, size)
            return ProbeResult(final, size, False, etag, modified, name)
        raise HTTPStatusError(f"unexpected HTTP {response.status_code} from {redact_url(final)}",
                              response.status_code)
