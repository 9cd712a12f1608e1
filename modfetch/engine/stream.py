"""Single-stream download for servers without size or Range support: one GET, written front to back."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests

from ..cancel import Interrupted
from ..util.http import header_int
from .fetch import BLOCK, PartTruncated
from .files import OwnWrites
from .http import RemoteChanged, RetryableError, check_status, request
from .ratelimit import throttle


def fetch_stream(session: requests.Session, url: str, *, fd: int, expected_size: int | None,
                 base_headers: Mapping[str, str], auth: Mapping[str, str], auth_host: str | None,
                 timeout: tuple[float, float], on_bytes: Callable[[int], None],
                 stop: threading.Event | None = None, writes: OwnWrites | None = None,
                 on_headers: Callable[[requests.Response, str], None] | None = None,
                 also: Any | None = None) -> str:
    """Download the whole body into ``fd`` from offset 0, returning its SHA-256; the file is truncated to the
    body's length.  A short body (fewer bytes than Content-Length) is a RetryableError.  ``on_headers`` sees
    the 200 response (and the final URL after redirects) before its body is read; ``also`` (a hashlib object,
    e.g. the git blob SHA-1) is fed every byte too, so nobody reads the file back for a second digest."""
    response, final = request(session, "GET", url, base_headers=base_headers, auth=auth, auth_host=auth_host,
                              timeout=timeout)
    with response:
        check_status(response, final)
        if response.status_code != 200:
            raise RetryableError(f"unexpected HTTP {response.status_code} for a full download")
        if on_headers is not None:
            on_headers(response, final)
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("identity", "")
        length_header = response.headers.get("Content-Length")
        length = header_int(length_header) if not encoded else None
        if expected_size is not None and length is not None and length != expected_size:
            raise RemoteChanged(f"size changed from {expected_size} to {length}")
        digest = hashlib.sha256()
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        pos = 0
        os.ftruncate(fd, 0)
        if writes is not None:
            writes.own_change()
        # The most this body may hold: the file's announced size (the free-space check was made for it).  A body
        # without a Content-Length, or a compressed one, could otherwise be written on until the disk is full.
        allowed = length if length is not None else expected_size
        for block in _unless_stopped(response.iter_content(BLOCK) if encoded else _raw_blocks(response, view), stop):
            n = len(block)
            if allowed is not None and pos + n > allowed:
                raise RemoteChanged(f"the server sent more than the {allowed} bytes it announced")
            data = block if isinstance(block, memoryview) else memoryview(block)
            if os.fstat(fd).st_size < pos:  # truncated by another program: writing on would leave a hole
                raise PartTruncated()
            if writes is not None:  # disk errors propagate as OSError; the caller turns them into DiskError
                pos = writes.pwrite(data, pos)
            while data and writes is None:
                written = os.pwrite(fd, data, pos)
                pos += written
                data = data[written:]
            digest.update(block)
            if also is not None:
                also.update(block)
            on_bytes(n)
            throttle(n, stop)  # the process-wide --limit-rate
            if stop is not None and stop.is_set():
                raise Interrupted()
        if length is not None and pos != length:
            raise RetryableError(f"body ended after {pos} of {length} bytes")
        if length is not None and not encoded:
            # Read to its announced end (straight from the socket, past requests' bookkeeping): say so, or
            # closing the response drops a clean keep-alive connection and the next file connects again.
            response._content_consumed = True  # type: ignore[attr-defined]
        if writes is not None:
            writes.truncate(pos)
        else:
            os.ftruncate(fd, pos)
        return digest.hexdigest()


def _unless_stopped(blocks: Iterator[Any], stop: threading.Event | None) -> Iterator[Any]:
    """``blocks``, raising Interrupted instead of whatever a read raised, or instead of ending, once a stop was
    requested: request_stop() shuts the socket down, and a shut-down socket reads as a failure or, worse, as a
    clean end of file, which for a body without a Content-Length would pass for the whole body."""
    try:
        yield from blocks
    except Exception:
        if stop is not None and stop.is_set():
            raise Interrupted() from None
        raise
    if stop is not None and stop.is_set():
        raise Interrupted()


def _raw_blocks(response: requests.Response, view: memoryview) -> Iterator[memoryview]:
    """Blocks read straight into one reused buffer (identity encoding only); network failures become
    RetryableError so they are never mistaken for disk errors."""
    fp = getattr(response.raw, "_fp", None)
    readinto = getattr(fp, "readinto", None)
    while True:
        try:
            if readinto is not None:
                n = readinto(view)
            else:
                data = response.raw.read(len(view))
                n = len(data)
                view[:n] = data
        except (OSError, ValueError, requests.RequestException) as exc:
            raise RetryableError(f"connection failed mid-body: {type(exc).__name__}") from None
        except Exception as exc:
            if type(exc).__module__.startswith(("urllib3", "http.client")):
                raise RetryableError(f"connection failed mid-body: {type(exc).__name__}") from None
            raise
        if not n:
            return
        yield view[:n]
