"""One worker's job: fetch the rest of a chunk with a validated ranged GET, writing with ``os.pwrite``.

Every response is checked before a byte is written: a 206 must start exactly where we asked and carry the
total we planned for, a 200 to a ranged request is never written at an offset, a changed ETag stops the run.
Bytes are counted against what the range promised; a short body is a retryable error that resumes from the
chunk's own progress.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from ..errors import ProtocolViolation
from ..util.http import etag_value, header_int, parse_content_range, parse_unsatisfied_range
from .files import OwnWrites
from .http import RangesIgnored, RemoteChanged, RetryableError, check_status, request
from .ratelimit import throttle
from .scheduler import LiveChunk

log = logging.getLogger("modfetch.engine")
BLOCK = 1 << 20
MIN_BLOCK = 256 << 10


@dataclass
class FetchContext:
    """Everything a worker needs that is the same for all chunks of one download."""

    url: str
    size: int
    fd: int
    base_headers: Mapping[str, str]
    auth: Mapping[str, str]
    auth_host: str | None
    timeout: tuple[float, float]
    etag: str | None
    if_range: str | None
    cancel: threading.Event
    last_modified: str | None = None
    # Per-thread slots for the stall watchdog: thread id -> (response, time of last progress).
    active: dict[int, tuple[requests.Response, float]] = field(default_factory=dict)
    # modfetch's own writes to the .part, so a write by anyone else in between is noticed (engine/files.py).
    writes: OwnWrites | None = None


class FatalChunkError(Exception):
    """Raised inside a worker for a failure retrying will not fix; wraps the ModfetchError to show."""


class DiskWriteError(Exception):
    """pwrite failed: never retried, surfaced as a DiskError by the coordinator."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.os_error = exc


class PartTruncated(Exception):
    """The ``.part`` is shorter than preallocated: another program truncated it, and bytes written earlier are
    gone.  Never retried (this write would re-extend the file with a hole); surfaced as a DiskError."""


def _pwrite_all(fd: int, view: memoryview, offset: int, size: int, writes: OwnWrites | None = None) -> None:
    try:
        if os.fstat(fd).st_size < size:
            raise PartTruncated()
        if writes is not None:
            writes.pwrite(view, offset)
            return
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written
    except OSError as exc:
        raise DiskWriteError(exc) from None


def fetch_chunk(ctx: FetchContext, chunk: LiveChunk, session: requests.Session, buf: bytearray) -> None:
    """Fetch ``chunk`` from its current position to its end (which may shrink meanwhile through stealing)."""
    while chunk.position < chunk.end and not ctx.cancel.is_set():
        _fetch_once(ctx, chunk, session, buf)


def _fetch_once(ctx: FetchContext, chunk: LiveChunk, session: requests.Session, buf: bytearray) -> None:
    pos, end = chunk.position, chunk.end
    headers = dict(ctx.base_headers, Range=f"bytes={pos}-{end - 1}")
    if ctx.if_range:
        headers["If-Range"] = ctx.if_range
    response, url = request(session, "GET", ctx.url, base_headers=headers, auth=ctx.auth, auth_host=ctx.auth_host,
                            timeout=ctx.timeout)
    consumed = False
    try:
        if response.status_code == 416:
            total = parse_unsatisfied_range(response.headers.get("Content-Range"))
            raise RemoteChanged(f"server says range {pos}-{end - 1} is unsatisfiable (size now {total})")
        check_status(response, url)
        received_etag = response.headers.get("ETag")
        modified = response.headers.get("Last-Modified")
        if ctx.etag and received_etag:
            if etag_value(received_etag) != etag_value(ctx.etag):
                raise RemoteChanged(f"ETag changed from {ctx.etag} to {received_etag}")
        elif modified and ctx.last_modified and modified != ctx.last_modified:
            # No ETag to compare: a server that ignores If-Range still says in Last-Modified that these bytes
            # are from another version of the file; writing them would mix two versions in one file.
            raise RemoteChanged(f"Last-Modified changed from {ctx.last_modified} to {modified}")
        if response.status_code == 200:
            # Same validators and size: the file did not change, this backend just ignores Range (load balancers
            # where only some backends do ranges).  Restarting chunked would hit it again, so fall back.
            length = header_int(response.headers.get("Content-Length"))
            if length in (None, ctx.size) and not (modified and ctx.last_modified and modified != ctx.last_modified):
                raise RangesIgnored("server answered a ranged request with the whole, unchanged file (200)")
            raise RemoteChanged("server answered a ranged request with the whole file (200)"
                                + (" — the remote file changed" if ctx.if_range else ""))
        if response.status_code != 206:
            raise RetryableError(f"unexpected HTTP {response.status_code} to a ranged request")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            # The body is compressed bytes (read raw, never decoded): writing them at the offset corrupts the file.
            raise ProtocolViolation(f"server compressed a ranged response (Content-Encoding: {encoding}) "
                                    f"although modfetch asked for identity; cannot write it at offset {pos}",
                                    hint="the server ignores Accept-Encoding: identity for ranged requests")
        content_range = parse_content_range(response.headers.get("Content-Range"))
        if content_range is None or content_range.start != pos:
            raise RetryableError(f"server sent Content-Range {response.headers.get('Content-Range')!r} "
                                 f"for a request starting at {pos}")
        if content_range.total is not None and content_range.total != ctx.size:
            raise RemoteChanged(f"size changed from {ctx.size} to {content_range.total}")
        expected = min(content_range.length, end - pos)
        if content_range.end >= end:
            expected = end - pos
        length_header = response.headers.get("Content-Length")
        if header_int(length_header) not in (None, content_range.length):
            raise RetryableError(f"Content-Length {length_header} disagrees with Content-Range "
                                 f"{response.headers.get('Content-Range')}")
        consumed = _stream_into(ctx, chunk, response, buf, expected, content_range.length)
    finally:
        ctx.active.pop(threading.get_ident(), None)
        if consumed:
            response.raw.release_conn()  # body fully read: keep the connection alive for the next chunk
        else:
            response.close()


def _readinto_available(fp: Any) -> Callable[[memoryview], int] | None:
    """A ``readinto`` that returns as soon as *some* body bytes arrived, straight into our buffer.

    http.client's own ``readinto`` (a BufferedReader underneath) blocks until the whole 1 MiB buffer is full:
    a slow but steady server then shows no progress to the stall watchdog for seconds (and gets reconnected
    as "stalled"), and a read timeout throws away everything received into the buffer so far.  For an
    identity body with a Content-Length we use the socket file's ``readinto1`` (at most one recv) and keep
    http.client's length bookkeeping, so the connection is still reusable.  Otherwise: http.client's
    ``readinto``; None (urllib3's allocating read) as the last resort.
    """
    if fp is None:
        return None
    inner: Any = getattr(fp, "fp", None)
    if (getattr(fp, "chunked", True) or not isinstance(getattr(fp, "length", None), int)
            or not hasattr(inner, "readinto1") or not hasattr(fp, "_close_conn")):
        return getattr(fp, "readinto", None)

    def readinto(view: memoryview) -> int:
        left = fp.length
        if fp.fp is None or not left:
            return 0
        if len(view) > left:
            view = view[:left]
        n = inner.readinto1(view)
        if n:
            fp.length = left - n
        if not n or not fp.length:
            fp._close_conn()  # as http.client does at the end of a body: the connection becomes reusable
        return int(n or 0)

    return readinto


def _stream_into(ctx: FetchContext, chunk: LiveChunk, response: requests.Response, buf: bytearray,
                 wanted: int, body_length: int) -> bool:
    """Copy up to ``wanted`` body bytes to the chunk's position; True when the body was read to its end."""
    raw = response.raw
    readinto = _readinto_available(getattr(raw, "_fp", None))
    view = memoryview(buf)
    hasher = chunk.hasher
    thread = threading.get_ident()
    ctx.active[thread] = (response, time.monotonic())
    got = 0
    try:
        while got < wanted:
            if ctx.cancel.is_set():
                return False
            pos = chunk.position
            limit = min(len(buf), wanted - got, chunk.end - pos)
            if limit <= 0:
                return False  # the back of this chunk was stolen
            # Gather recvs into one block of at least MIN_BLOCK before writing and hashing: on a paced link
            # each recv is small, and per-block pwrite/hash calls would dominate the CPU cost.
            n = 0
            closed = False
            try:
                while n < limit:
                    if readinto is not None:
                        got_now = readinto(view[n:limit])
                    else:
                        data = raw.read(limit - n)
                        got_now = len(data)
                        view[n:n + got_now] = data
                    if not got_now:
                        closed = True
                        break
                    n += got_now
                    ctx.active[thread] = (response, time.monotonic())
                    if n >= MIN_BLOCK:
                        break
            finally:
                # Whatever arrived is written even when the connection failed mid-block.
                stop = chunk.end - pos  # re-read: a steal may have moved the end during the read
                if n > stop:
                    n = max(0, stop)
                if n:
                    block = view[:n]
                    _pwrite_all(ctx.fd, block, pos, ctx.size, ctx.writes)
                    hasher.update(block)
                    chunk.done += n
                    chunk.prefix = (chunk.done, hasher.copy())  # a consistent pair for the checkpoint
                    got += n
            throttle(n, ctx.cancel, lambda: ctx.active.__setitem__(thread, (response, time.monotonic())))
            if closed and got < wanted and chunk.position < chunk.end:
                raise RetryableError(f"connection closed after {got} of {wanted} bytes")
            if chunk.position >= chunk.end and got < wanted:
                return False  # the back of this chunk was stolen
    except (OSError, ValueError) as exc:
        raise RetryableError(f"connection failed after {got} of {wanted} bytes: {type(exc).__name__}") from None
    except requests.RequestException as exc:
        raise RetryableError(f"connection failed after {got} of {wanted} bytes: {type(exc).__name__}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("urllib3", "http.client")):
            raise RetryableError(f"connection failed after {got} of {wanted} bytes: {type(exc).__name__}") from None
        raise
    return got == body_length
