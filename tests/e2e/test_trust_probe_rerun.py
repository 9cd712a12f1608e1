"""Issue 13, smaller faults: weak validators are not "no Range support", and a rerun of a complete download
sends no body request.

A real local server (tests/servers/gated.py) serves a weak ETag for its first answers (Apache does for a file
modified within the last second) and answers a date ``If-Range`` with the whole file (200)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Modfetch, sha256_of
from tests.servers.faulty import make_content
from tests.servers.gated import GatedServer

MiB = 1 << 20
SIZE = 4 * MiB


@pytest.fixture
def served() -> Iterator[Callable[..., GatedServer]]:
    started: list[GatedServer] = []

    def start(**options: object) -> GatedServer:
        server = GatedServer(make_content(SIZE, seed=7), **options)  # type: ignore[arg-type]
        started.append(server.__enter__())
        return server

    yield start
    for server in started:
        server.__exit__()


@pytest.mark.parametrize("weak_for", [2, 10**9], ids=["weak-then-strong", "always-weak"])
def test_weak_validators_keep_parallel_chunks(mf: Modfetch, served: Callable[..., GatedServer],
                                              weak_for: int) -> None:
    server = served(weak_etag_for=weak_for, date_if_range=False)
    result = mf.run("download", "--url", server.url, "--dest", str(mf.dest))
    assert result.returncode == 0, result.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert "does not support ranges" not in result.stderr, result.stderr
    assert "single stream" not in result.stderr, result.stderr
    assert "validators are weak" in result.stderr, result.stderr
    gets = [s for s in server.seen if s.method == "GET" and s.range != "bytes=0-0"]
    assert all(s.range for s in gets), "fell back to one stream (a GET without Range)"
    ranged_ok = [s for s in gets if s.status == 206]
    assert len(ranged_ok) >= 4, [(s.range, s.if_range, s.status) for s in gets]  # parallel 1 MiB chunks
    assert sum(s.body_bytes for s in ranged_ok) == SIZE


@pytest.mark.parametrize("ranges", [False, True], ids=["single-stream", "chunked"])
def test_rerun_of_a_complete_download_sends_no_body_request(mf: Modfetch, served: Callable[..., GatedServer],
                                                            ranges: bool) -> None:
    server = served(ranges=ranges)
    first = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    assert first.returncode == 0, first.stderr
    seen_before, bytes_before = len(server.seen), server.body_bytes()
    again = mf.run("download", "--url", server.url, "--dest", str(mf.dest))
    assert again.returncode == 0, again.stderr
    assert "already present" in again.stderr + again.stdout
    rerun = server.seen[seen_before:]
    assert [s.method for s in rerun] == ["HEAD"], [(s.method, s.range, s.status) for s in rerun]
    assert server.body_bytes() == bytes_before  # zero body bytes
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    # HEAD showing another entity (another ETag) is never taken as "present": the normal probe decides.
    seen_before = len(server.seen)
    server.etag_value = '"changed"'
    changed = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    assert any(s.method == "GET" for s in server.seen[seen_before:]), "a changed remote was not probed"
    assert changed.returncode == 1, changed.stderr  # a different file is in the way: never clobbered

