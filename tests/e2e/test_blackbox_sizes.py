"""Black-box runs of the installed ``modfetch download``: sizes, chunk boundaries and upstream content changes.

Servers here generate their bytes (64 KiB blocks derived from a version and the block number), so a file's
declared size costs no memory and a "new version" of it is just another seed.  Same acceptance rule as
``test_blackbox_faults``: exit 0 with exactly the bytes the server meant, or one ``modfetch: error:`` line, a
non-zero exit, no traceback, and nothing installed whose bytes come from two versions of the file.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import socket
import threading
from collections.abc import Sequence
from functools import lru_cache

import pytest

from tests.helpers import Run, assert_run_error
from tests.servers.raw import RawServer, Req, response

MiB = 1 << 20
GEN_BLOCK = 64 << 10
_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


@lru_cache(maxsize=256)
def _block(version: int, idx: int) -> bytes:
    return hashlib.sha256(f"{version}:{idx}".encode()).digest() * (GEN_BLOCK // 32)


def gen(start: int, end: int, version: int = 1) -> bytes:
    """Bytes ``[start, end)`` of version ``version`` of the generated file (any offset, no storage)."""
    out = bytearray()
    pos = start
    while pos < end:
        idx, off = divmod(pos, GEN_BLOCK)
        take = min(GEN_BLOCK - off, end - pos)
        out += _block(version, idx)[off:off + take]
        pos += take
    return bytes(out)


def sha_of(size: int, version: int = 1) -> str:
    digest = hashlib.sha256()
    for pos in range(0, size, 4 * MiB):
        digest.update(gen(pos, min(size, pos + 4 * MiB), version))
    return digest.hexdigest()


def ranges_of(requests: Sequence[Req]) -> list[tuple[int, int]]:
    """The (first, last) byte of every data GET (the ``bytes=0-0`` probe left out), in offset order."""
    found = []
    for req in requests:
        match = _RANGE.match(req.headers.get("range", ""))
        if req.method == "GET" and match and req.headers["range"] != "bytes=0-0":
            found.append((int(match[1]), int(match[2])))
    return sorted(found)


def serve_generated(req: Req, conn: socket.socket, size: int, version: int = 1,
                    headers: Sequence[tuple[str, str]] = (), ranges: bool = True) -> bool:
    """A correct server for the generated file (HEAD, GET, one range per request), one request a connection."""
    base = [("Connection", "close"), *headers]
    match = _RANGE.match(req.headers.get("range", "")) if ranges else None
    if match:
        start, end = int(match[1]), min(int(match[2]), size - 1)
        if start >= size:
            conn.sendall(response("416 Range Not Satisfiable",
                                  [*base, ("Content-Range", f"bytes */{size}"), ("Content-Length", "0")]))
            return False
        conn.sendall(response("206 Partial Content", [*base, ("Content-Range", f"bytes {start}-{end}/{size}"),
                                                       ("Content-Length", str(end - start + 1))]))
        first, last = start, end + 1
    else:
        conn.sendall(response("200 OK", [*base, ("Content-Length", str(size))]))
        first, last = 0, size
    if req.method != "HEAD":
        for pos in range(first, last, 4 * MiB):
            conn.sendall(gen(pos, min(last, pos + 4 * MiB), version))
    return False


class Versions:
    """Counts data GETs (not HEAD, not the ``bytes=0-0`` probe); the file is version 1 for the first ``first``
    of them, version 2 after that."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, req: Req) -> int:
        with self.lock:
            if req.method == "GET" and req.headers.get("range") != "bytes=0-0":
                self.count += 1
            return 1 if self.count <= self.first else 2


def assert_installed(run: Run, data_size: int, version: int = 1, name: str = "file.bin") -> None:
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    path = run.dest / name
    assert path.stat().st_size == data_size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha_of(data_size, version)


def assert_nothing_installed(run: Run, name: str = "file.bin") -> None:
    assert not (run.dest / name).exists()
    assert not (run.dest / f"{name}.sha256").exists()


# -- upstream content changes -------------------------------------------------------------------------------
def test_changed_last_modified_on_a_206_is_never_mixed_into_the_file(raw_server, cli) -> None:
    """Server with only Last-Modified that ignores If-Range: it changed the file after the first two chunks and
    said so in its 206s' Last-Modified.  modfetch wrote both versions' bytes into one file, exit 0."""
    versions = Versions(first=2)

    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        v = versions(req)
        return serve_generated(req, conn, 4 * MiB, v, [("Last-Modified", f"Mon, 01 Jan 2024 00:00:0{v} GMT")])

    run = cli(raw_server(handler).url(), "--chunk-size", "1M")
    assert_installed(run, 4 * MiB, version=2)


def test_no_validators_and_a_change_mid_download_is_caught_by_sha256(raw_server, cli) -> None:
    """Without ETag or Last-Modified nothing on the wire tells a changed file apart: the SHA-256 modfetch prints is
    of the bytes it received.  With --sha256 a mixed file must never be installed, and the .part is dropped."""
    versions = Versions(first=2)

    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        return serve_generated(req, conn, 4 * MiB, versions(req))

    run = cli(raw_server(handler).url(), "--chunk-size", "1M", "--sha256", sha_of(4 * MiB, 1))
    assert "SHA-256 mismatch" in assert_run_error(run)
    assert_nothing_installed(run)
    assert not (run.dest / "file.bin.part").exists()


@pytest.mark.parametrize("weak", [False, True])
def test_etag_that_changes_on_every_response_fails_clearly(raw_server, cli, weak) -> None:
    """Same bytes, a new ETag per response (per-backend ETags behind a load balancer): modfetch cannot tell that
    from a changing file, so it restarts a bounded number of times and says so; nothing is installed."""
    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        tag = f'"r{len(srv.requests)}"'
        return serve_generated(req, conn, 4 * MiB, 1, [("ETag", f"W/{tag}" if weak else tag)])

    run = cli(raw_server(handler).url(), "--chunk-size", "1M")
    assert "kept changing" in assert_run_error(run)
    assert_nothing_installed(run)


def test_content_range_total_that_disagrees_once_restarts_with_exact_bytes(raw_server, cli) -> None:
    seen = Versions(first=0)

    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        seen(req)
        if req.headers.get("range") == f"bytes={2 * MiB}-{3 * MiB - 1}" and seen.count <= 4:
            conn.sendall(response("206 Partial Content", [
                ("Connection", "close"), ("Content-Range", f"bytes {2 * MiB}-{3 * MiB - 1}/{4 * MiB + 1}"),
                ("Content-Length", str(MiB))], gen(2 * MiB, 3 * MiB)))
            return False
        return serve_generated(req, conn, 4 * MiB, 1, [("ETag", '"v1"')])

    assert_installed(cli(raw_server(handler).url(), "--chunk-size", "1M"), 4 * MiB)


def test_one_chunk_answered_200_with_other_bytes_never_lands_at_an_offset(raw_server, cli) -> None:
    """One backend answers one ranged request with a whole (different) file and no validators: those bytes must
    not be written at the chunk's offset; the run restarts and the file is one version."""
    seen = Versions(first=0)

    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        seen(req)
        if req.headers.get("range") == f"bytes={2 * MiB}-{3 * MiB - 1}" and seen.count <= 4:
            conn.sendall(response("200 OK", [("Connection", "close"), ("Content-Length", str(4 * MiB))],
                                  gen(0, 4 * MiB, 2)))
            return False
        return serve_generated(req, conn, 4 * MiB, 1)

    assert_installed(cli(raw_server(handler).url(), "--chunk-size", "1M"), 4 * MiB)


def test_server_capping_every_range_short_still_assembles_exactly(raw_server, cli) -> None:
    """206s that cover only the first 100000 bytes asked for (a valid partial answer): each chunk is fetched
    in pieces, no byte twice, none missing."""
    size = 2 * MiB + 12345

    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        match = _RANGE.match(req.headers.get("range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]), start + 99_999, size - 1)
            conn.sendall(response("206 Partial Content", [
                ("Connection", "close"), ("Content-Range", f"bytes {start}-{end}/{size}"),
                ("Content-Length", str(end - start + 1))], gen(start, end + 1)))
            return False
        return serve_generated(req, conn, size)

    srv = raw_server(handler)
    assert_installed(cli(srv.url(), "--chunk-size", "1M"), size)
    got = ranges_of(srv.requests)
    assert sum(min(last, start + 99_999) - start + 1 for start, last in got) == size


# -- sizes --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "head_size", "ranges"), [
    (0, 0, True), (0, 0, False), (1, 1, True), (1, 1, False), (2, 2, True),
    (0, 5, True), (0, 5, False), (5, 0, True), (5, 0, False), (1, 0, True),
])
def test_empty_and_tiny_files_whatever_head_says(raw_server, cli, size, head_size, ranges) -> None:
    """The GET's bytes win over a HEAD that says 0 or more; 0 and 1 byte files with and without Range."""
    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        if req.method == "HEAD":
            conn.sendall(response("200 OK", [("Connection", "close"), ("Content-Length", str(head_size))]))
            return False
        return serve_generated(req, conn, size, 1, [("ETag", '"v1"')], ranges=ranges)

    run = cli(raw_server(handler).url())
    assert_installed(run, size)
    assert (run.dest / "file.bin.sha256").read_text().split()[0] == sha_of(size)


@pytest.mark.parametrize("size", [MiB - 1, MiB, MiB + 1, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1])
def test_sizes_around_chunk_multiples_are_requested_exactly_once(raw_server, cli, size) -> None:
    srv = raw_server(lambda req, conn, s: serve_generated(req, conn, size, 1, [("ETag", '"v1"')]))
    assert_installed(cli(srv.url(), "--chunk-size", "1M"), size)
    got = ranges_of(srv.requests)
    assert got[0][0] == 0 and got[-1][1] == size - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(got)), got
    assert all(last - start + 1 <= MiB for start, last in got), got
    assert len(got) == -(-size // MiB)


@pytest.mark.parametrize(("size", "extra"), [
    (3, ("--concurrency", "64")),
    (MiB + 1, ("--concurrency", "64", "--chunk-size", "1")),
    (3 * MiB + 5, ("--concurrency", "64", "--chunk-size", "1024G")),
])
def test_more_connections_than_the_file_has_chunks(raw_server, cli, size, extra) -> None:
    srv = raw_server(lambda req, conn, s: serve_generated(req, conn, size, 1, [("ETag", '"v1"')]))
    assert_installed(cli(srv.url(), *extra), size)
    got = ranges_of(srv.requests)
    assert got[0][0] == 0 and got[-1][1] == size - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(got)), got
