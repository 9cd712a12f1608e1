"""The single-stream download (modfetch/engine/stream.py) against real local servers: whole bodies, chunked
and gzip bodies, short bodies, size changes, HTTP errors and a stop request."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from modfetch.engine.http import RemoteChanged, RetryableError
from modfetch.engine.stream import fetch_stream
from modfetch.errors import NotFoundError
from tests.servers.faulty import FaultyServer
from tests.servers.raw import BIG, RawServer, Req, response

MiB = 1 << 20


@pytest.fixture
def part(tmp_path: Path) -> Iterator[int]:
    """An open ``.part`` with stale bytes in it (longer than any body here), as a restart leaves it."""
    path = tmp_path / "file.bin.part"
    path.write_bytes(b"\xff" * (6 * MiB))
    fd = os.open(path, os.O_RDWR)
    yield fd
    os.close(fd)


def _fetch(url: str, fd: int, expected_size: int | None = None, stop: threading.Event | None = None,
           on_bytes: Callable[[int], None] = lambda n: None) -> str:
    with requests.Session() as session:
        session.trust_env = False
        return fetch_stream(session, url, fd=fd, expected_size=expected_size, base_headers={}, auth={},
                            auth_host=None, timeout=(5, 5), on_bytes=on_bytes, stop=stop)


def _contents(fd: int) -> bytes:
    return os.pread(fd, os.fstat(fd).st_size + 1, 0)


@pytest.mark.parametrize("faults", [{}, {"ranges": False}, {"chunked": True}, {"etag": False,
                                                                              "last_modified": False}])
@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 17])
def test_whole_body_lands_at_offset_zero_and_the_file_is_cut_to_it(faulty_server: Callable[..., FaultyServer],
                                                                   part: int, faults: dict[str, Any],
                                                                   size: int) -> None:
    server = faulty_server(size=size, **faults)
    counted: list[int] = []
    digest = _fetch(server.url, part, expected_size=None if faults.get("chunked") else size,
                    on_bytes=counted.append)
    assert digest == server.sha256() == hashlib.sha256(server.content()).hexdigest()
    assert _contents(part) == server.content()  # no stale tail from the earlier .part
    assert sum(counted) == size


def test_gzip_body_is_decoded_and_hashed_as_decoded(part: int) -> None:
    body = gzip.compress(BIG)

    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        conn.sendall(response("200 OK", [("Connection", "close"), ("Content-Encoding", "gzip"),
                                         ("Content-Length", str(len(body)))], body))
        return False

    server = RawServer(handler)
    try:
        digest = _fetch(server.url(), part)
    finally:
        server.close()
    assert digest == hashlib.sha256(BIG).hexdigest() and _contents(part) == BIG


@pytest.mark.parametrize(("faults", "error", "words"), [
    ({"cut_after": 100_000}, RetryableError, "mid-body|body ended"),
    ({"error_status": 503, "include_probe": True}, RetryableError, "503"),
    ({"error_status": 429, "include_probe": True}, RetryableError, "429"),
    ({"error_status": 404, "include_probe": True}, NotFoundError, "404"),
])
def test_failures_raise_the_errors_the_retry_loop_expects(faulty_server: Callable[..., FaultyServer], part: int,
                                                          faults: dict[str, Any], error: type[Exception],
                                                          words: str) -> None:
    server = faulty_server(size=MiB, **faults)
    with pytest.raises(error, match=words):
        _fetch(server.url, part, expected_size=MiB)


def test_a_different_size_than_probed_is_a_remote_change(faulty_server: Callable[..., FaultyServer],
                                                         part: int) -> None:
    server = faulty_server(size=MiB)
    with pytest.raises(RemoteChanged, match=f"size changed from {MiB + 1} to {MiB}"):
        _fetch(server.url, part, expected_size=MiB + 1)


def test_a_non_200_success_is_retryable(part: int) -> None:
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        conn.sendall(response("206 Partial Content", [("Connection", "close"), ("Content-Range", "bytes 0-1/2"),
                                                      ("Content-Length", "2")], b"ab"))
        return False

    server = RawServer(handler)
    try:
        with pytest.raises(RetryableError, match="unexpected HTTP 206"):
            _fetch(server.url(), part)
    finally:
        server.close()


def test_stop_request_interrupts_after_the_current_block(faulty_server: Callable[..., FaultyServer],
                                                         part: int) -> None:
    server = faulty_server(size=4 * MiB)
    stop = threading.Event()
    counted: list[int] = []

    def on_bytes(n: int) -> None:
        counted.append(n)
        stop.set()

    with pytest.raises(KeyboardInterrupt):
        _fetch(server.url, part, stop=stop, on_bytes=on_bytes)
    assert len(counted) == 1 and counted[0] < 4 * MiB
