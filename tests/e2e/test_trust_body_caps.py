"""Issue 13, finding 8: every body modfetch reads into memory is capped.

API answers (Hub and CivitAI JSON listings) are read block by block up to 32 MiB, error bodies up to 64 KiB
(only drained for connection reuse), whatever the framing: an endless chunked body, a body without
Content-Length read to the connection's end, a Content-Length of gigabytes.  Past the cap: one clear error
line, and memory stays bounded (measured on a real ``modfetch`` process).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from modfetch.errors import HTTPStatusError
from modfetch.resolvers.api import MAX_ERROR_BODY, MAX_JSON_BODY, SourceClient
from tests.conftest import Modfetch, assert_clean_error
from tests.servers.raw import RawServer, Req, response

MiB = 1 << 20
BLOCK = b"[" + b"0," * (32 * 1024 - 1) + b"0"  # 64 KiB of a JSON array that never closes


class Endless:
    """A raw server answering every request with ``status`` and a body of ``limit`` bytes at most, framed as
    ``framing``: ``chunked``, ``close`` (no Content-Length, read to EOF) or ``huge`` (Content-Length 3 GB)."""

    def __init__(self, framing: str, status: str = "200 OK", limit: int = 384 * MiB) -> None:
        self.framing, self.status, self.limit = framing, status, limit
        self.sent = 0
        self.server = RawServer(self.handle)

    def handle(self, req: Req, conn: socket.socket, server: RawServer) -> None:
        headers = [("Content-Type", "application/json"), ("Connection", "close")]
        if self.framing == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        elif self.framing == "huge":
            headers.append(("Content-Length", str(3 << 30)))
        conn.sendall(response(self.status, headers))
        if req.method == "HEAD":
            return
        frame = (b"%x\r\n" % len(BLOCK) + BLOCK + b"\r\n") if self.framing == "chunked" else BLOCK
        try:
            while self.sent < self.limit:
                conn.sendall(frame)
                self.sent += len(BLOCK)
        except OSError:
            return  # the client stopped reading and closed: what a capped reader does

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
def endless() -> Iterator[Callable[..., Endless]]:
    started: list[Endless] = []

    def start(framing: str, status: str = "200 OK", limit: int = 384 * MiB) -> Endless:
        started.append(Endless(framing, status, limit))
        return started[-1]

    yield start
    for server in started:
        server.server.close()


@pytest.mark.parametrize("framing", ["chunked", "close", "huge"])
def test_json_answer_past_the_cap_is_a_clear_error(endless: Callable[..., Endless], framing: str) -> None:
    server = endless(framing)
    with requests.Session() as session:
        client = SourceClient(session, server.url, None, 10, "the Hugging Face Hub")
        with pytest.raises(HTTPStatusError, match=r"JSON answer larger than 32 MiB"):
            client.get_json(client.url("/api/models/a/b"))
    # Bounded reading: at most the cap plus what sat in the socket buffers was ever sent.
    assert server.sent <= MAX_JSON_BODY + 16 * MiB


@pytest.mark.parametrize("framing", ["chunked", "close", "huge"])
def test_error_body_is_drained_only_up_to_its_cap(endless: Callable[..., Endless], framing: str) -> None:
    """A 404 with an endless body: the answer (status, no JSON) comes back at once; the body is not read."""
    server = endless(framing, status="404 Not Found")
    with requests.Session() as session:
        client = SourceClient(session, server.url, None, 10, "CivitAI")
        started = time.monotonic()
        answer, parsed = client.get_json(client.url("/api/v1/models/1"))
    assert answer.status_code == 404 and parsed is None
    assert server.sent <= MAX_ERROR_BODY + 16 * MiB
    assert time.monotonic() - started < 10


def test_cli_reports_an_oversized_listing_in_one_line_with_bounded_memory(
        mf: Modfetch, endless: Callable[..., Endless]) -> None:
    """A real ``modfetch`` against a Hub whose repo API answers an endless chunked JSON body: one error line,
    and the process's peak RSS stays far below the 384 MiB the server would send (the old code read it all,
    twice over: the bytes and the decoded text)."""
    server = endless("chunked")
    mf.write_config(sources={"huggingface": {"endpoint": server.url}})
    # A fresh interpreter whose only child is modfetch, so RUSAGE_CHILDREN is modfetch's own peak.
    wrapper = ("import resource, subprocess, sys\n"
               "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stdout.write(proc.stderr)\n"
               "print('EXIT', proc.returncode, 'PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    proc = subprocess.run([sys.executable, "-c", wrapper,
                           *mf.command("download", "--url", "hf://a/b/file.bin", "--dest", str(mf.dest))],
                          capture_output=True, text=True, timeout=120, check=False)
    *stderr, summary = proc.stdout.strip().splitlines()
    _, code, _, peak_kb = summary.split()
    assert code == "1", proc.stdout
    assert_clean_error("\n".join(stderr), "larger than 32 MiB")
    print(f"peak RSS {int(peak_kb) // 1024} MiB")
    assert int(peak_kb) < 200 * 1024, f"peak RSS {int(peak_kb) // 1024} MiB"
    assert server.sent <= MAX_JSON_BODY + 16 * MiB
