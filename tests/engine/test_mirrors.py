"""Multi-source downloads (engine/mirrors.py, engine/mirrorcheck.py) against real local servers: chunks spread
over every source, failing mirrors dropped, lying mirrors caught and named, mismatched mirrors skipped,
credentials only to their own host, resume with mirrors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from modfetch.config import load_config
from modfetch.engine.download import Downloader
from modfetch.engine.mirrorcheck import CHECK_BYTES, check_range
from modfetch.engine.request import DownloadRequest, DownloadResult
from modfetch.errors import ModfetchError
from tests.conftest import MiB, Modfetch, sha256_of, wait_for
from tests.servers.faulty import FaultyServer
from tests.servers.scripted import Redirector

Serve = Callable[..., FaultyServer]
SIZE = 8 * MiB
TOKEN = "hf_mirrortest_secret_0123456789"


def _download(mf: Modfetch, primary: FaultyServer, *mirrors: FaultyServer | str, sha256: str | None = None,
              concurrency: int = 4, **request: Any) -> DownloadResult:
    urls = tuple(m if isinstance(m, str) else m.url for m in mirrors)
    downloader = Downloader(load_config(), concurrency=concurrency, chunk_size=MiB)
    return downloader.run(DownloadRequest(url=primary.url, dest_dir=mf.dest, mirrors=urls,
                                          expected_sha256=sha256, **request))


def _meta(mf: Modfetch) -> Any:
    import json

    return json.loads(mf.rows()[0]["meta"])["mirrors"]


def _excluded(result: DownloadResult) -> dict[str, str]:
    assert result.sources is not None
    return {e["url"]: e["reason"] for e in result.sources["excluded"]}


def _only_the_check_range(server: FaultyServer) -> bool:
    """The server got exactly one request: the probe that is also the cross-check (no chunk was fetched)."""
    start, end = check_range(SIZE)
    return [(r.method, r.range_start, r.range_end) for r in server.requests] == [("GET", start, end - 1)]


def _held_then(mirror: FaultyServer, run: Callable[[], DownloadResult], **faults: Any) -> DownloadResult:
    """Run ``run`` in a thread; once the (held) mirror's cross-check request arrived, switch its faults on for
    every later request and let the cross-check through: the mirror passes its probe, then misbehaves."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = run()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    wait_for(lambda: bool(mirror.data_requests()) or not thread.is_alive(), "the mirror's cross-check request")
    mirror.configure(hold=False, **faults)  # the held request keeps the faults it started with
    mirror.release()
    thread.join(60)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out["result"]  # type: ignore[no-any-return]


def test_chunks_are_spread_over_every_source(mf: Modfetch, faulty_server: Serve) -> None:
    servers = [faulty_server(size=SIZE) for _ in range(3)]
    result = _download(mf, *servers, concurrency=6)
    assert sha256_of(result.path) == servers[0].sha256()
    for server in servers:
        assert [r for r in server.data_requests() if r.range_start is not None and r.status == 206]
    # every byte came from exactly one source; the only extra bytes are the cross-check ranges
    assert sum(s.body_bytes() for s in servers) == SIZE + 3 * CHECK_BYTES
    used = {u["url"]: u["bytes"] for u in _meta(mf)["used"]}
    assert set(used) == {s.url for s in servers} and sum(used.values()) == SIZE
    assert result.sources is not None and result.sources["excluded"] == []


@pytest.mark.parametrize("faults", [
    {"error_status": 503, "error_times": None},
    {"error_status": 404, "error_times": None},
    {"cut_after": 0, "cut_times": None},
    {"stall_seconds": 30.0, "stall_after": 0, "stall_times": None},
], ids=["503", "404", "cut", "stall"])
def test_a_mirror_failing_mid_download_is_dropped_and_the_file_verifies(
        mf: Modfetch, faulty_server: Serve, faults: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    mf.write_config(network={"timeout_seconds": 1})  # a stalled read gives up after 1 s
    primary, mirror = faulty_server(size=SIZE), faulty_server(size=SIZE, hold=True)
    with caplog.at_level(logging.WARNING, "modfetch"):
        result = _held_then(mirror, lambda: _download(mf, primary, mirror, sha256=primary.sha256()), **faults)
    assert sha256_of(result.path) == primary.sha256()
    assert mirror.url in _excluded(result)
    assert [r for r in caplog.records if "dropped" in r.getMessage() and mirror.url in r.getMessage()]
    assert mirror.data_requests()[1:], "the mirror was given chunks after its cross-check"
    assert _meta(mf)["excluded"][0]["url"] == mirror.url


def test_a_failing_primary_is_dropped_while_a_mirror_works(mf: Modfetch, faulty_server: Serve) -> None:
    primary, mirror = faulty_server(size=SIZE, hold=True), faulty_server(size=SIZE)
    # the primary's cross-check request is held; after it, every data request to the primary gets a 500
    result = _held_then(primary, lambda: _download(mf, primary, mirror), error_status=500, error_times=None)
    assert sha256_of(result.path) == mirror.sha256()
    assert primary.url in _excluded(result)


def test_a_far_slower_mirror_is_dropped_and_its_pieces_move(mf: Modfetch, faulty_server: Serve) -> None:
    # 512 KiB/s per connection: without the speed check its chunks would hold the download for about 2 s after
    # the primary finished everything else
    primary, slow = faulty_server(size=SIZE), faulty_server(size=SIZE, rate=512 << 10)
    result = _download(mf, primary, slow)
    assert sha256_of(result.path) == primary.sha256()
    assert "too slow" in _excluded(result)[slow.url]
    pieces = [r for r in slow.data_requests() if r.status == 206][1:]
    assert pieces and slow.body_bytes() < SIZE // 4, "it served some pieces, then they moved"
    # every piece continued where the slow mirror stopped: the primary sent only what the mirror did not
    kept = {u["url"]: u["bytes"] for u in _meta(mf)["used"]}
    assert kept.get(slow.url, 0) > 0 and primary.body_bytes() == CHECK_BYTES + SIZE - kept[slow.url]


@pytest.mark.parametrize("down", ["refused", "404", "503"])
def test_a_primary_that_cannot_be_reached_hands_over_to_a_mirror(mf: Modfetch, faulty_server: Serve,
                                                                  down: str) -> None:
    faults = {"404": {"error_status": 404, "error_times": None, "include_probe": True},
              "503": {"error_status": 503, "error_times": None, "include_probe": True}}.get(down, {})
    primary = faulty_server(size=SIZE, path="/model.bin", head_status=404 if down == "404" else None, **faults)
    first, second = faulty_server(size=SIZE, path="/x"), faulty_server(size=SIZE, path="/y")
    if down == "refused":
        primary.stop()
    result = _download(mf, primary, first.url_for("/dl?id=1"), second.url_for("/dl?id=1"))
    assert result.path.name == "model.bin"  # the primary's name, not the mirror's
    assert sha256_of(result.path) == first.sha256()
    assert _served_chunks(first) and _served_chunks(second)  # the remaining mirror still serves chunks
    rows = mf.rows()
    assert [(r["url"], r["status"]) for r in rows] == [(primary.url, "complete")]  # the failure is superseded


def _served_chunks(server: FaultyServer) -> int:
    return len([r for r in server.data_requests() if r.status == 206][1:])


def test_an_unreachable_mirror_is_skipped_with_one_warning(mf: Modfetch, faulty_server: Serve,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    primary, gone = faulty_server(size=SIZE), faulty_server(size=SIZE)
    gone.stop()  # connection refused
    with caplog.at_level(logging.WARNING, "modfetch"):
        result = _download(mf, primary, gone)
    assert sha256_of(result.path) == primary.sha256()
    named = [r for r in caplog.records if gone.url in r.getMessage()]
    assert len(named) == 1 and "skipped" in named[0].getMessage()


def test_a_lying_mirror_is_caught_by_the_cross_check(mf: Modfetch, faulty_server: Serve) -> None:
    primary, liar = faulty_server(size=SIZE), faulty_server(size=SIZE, seed=7)  # same size, other bytes
    result = _download(mf, primary, liar, sha256=primary.sha256())
    assert sha256_of(result.path) == primary.sha256()
    assert "different bytes" in _excluded(result)[liar.url]
    assert _only_the_check_range(liar)


def test_a_mirror_lying_after_the_cross_check_is_found_by_chunk_hashes(mf: Modfetch, faulty_server: Serve) -> None:
    # passes the cross-check, then flips the first byte of every chunk it serves: only the whole-file hash shows it
    primary = faulty_server(size=SIZE)
    liar = faulty_server(size=SIZE, corrupt_times=None, corrupt_starts=frozenset(range(0, SIZE, MiB)))
    result = _download(mf, primary, liar, sha256=primary.sha256())
    assert sha256_of(result.path) == primary.sha256()
    assert [r for r in liar.data_requests() if r.faults == ["corrupt"]], "the liar really served chunks"
    assert "differ from the primary" in _excluded(result)[liar.url]
    assert liar.url not in {u["url"] for u in _meta(mf)["used"]}  # none of its bytes are left in the file


def test_a_lying_mirror_without_an_expected_hash_fails_cleanly_naming_it(mf: Modfetch, faulty_server: Serve) -> None:
    # same validators are impossible to fake here (the ETag is the content's hash): without --sha256 the liar
    # is skipped before it is used
    primary, liar = faulty_server(size=SIZE), faulty_server(size=SIZE, seed=7)
    result = _download(mf, primary, liar)
    assert "no expected SHA-256" in _excluded(result)[liar.url]
    assert _only_the_check_range(liar)
    assert sha256_of(result.path) == primary.sha256()


@pytest.mark.parametrize(("faults", "reason"), [
    ({"size": SIZE // 2}, "size (4194304 bytes) differs"),  # its probe is past its end: 416
    ({"size": SIZE + 1}, f"size ({SIZE + 1} bytes) differs"),
    ({"ranges": False}, "does not support range requests"),
    ({"error_status": 404, "error_times": None}, "HTTP 404"),
    ({"error_status": 503, "error_times": None}, "HTTP 503"),
], ids=["smaller", "larger", "no-ranges", "404", "503"])
def test_a_mirror_that_cannot_serve_the_file_is_skipped(mf: Modfetch, faulty_server: Serve, faults: dict[str, Any],
                                                        reason: str, caplog: pytest.LogCaptureFixture) -> None:
    primary, other = faulty_server(size=SIZE), faulty_server(**{"size": SIZE, **faults})
    with caplog.at_level(logging.WARNING, "modfetch"):
        result = _download(mf, primary, other, sha256=primary.sha256())
    assert reason in _excluded(result)[other.url]
    assert _only_the_check_range(other)  # one request, no chunk
    assert sha256_of(result.path) == primary.sha256()
    assert len([r for r in caplog.records if other.url in r.getMessage()]) == 1


def test_a_redirecting_mirror_is_followed_without_the_token(mf: Modfetch, faulty_server: Serve) -> None:
    primary, target = faulty_server(size=SIZE), faulty_server(size=SIZE)
    redirector = Redirector()
    try:
        redirector.location = target.url
        auth = {"Authorization": f"Bearer {TOKEN}"}
        result = _download(mf, primary, redirector.server.url + "/file.bin", headers=auth,
                           auth_host=f"127.0.0.1:{primary.port}")
        assert redirector.saw_auth() == [False]  # the probe; chunks then go to where it led
    finally:
        redirector.stop()
    assert sha256_of(result.path) == primary.sha256()
    assert [r for r in target.data_requests() if r.status == 206][1:], "the redirect target served chunks"
    assert not any(r.header("Authorization") for r in target.requests)
    assert all(r.header("Authorization") for r in primary.requests)


@pytest.mark.parametrize("spelling", ["other-server", "same-server-by-another-name"])
def test_the_token_never_travels_to_a_mirror_host(mf: Modfetch, faulty_server: Serve, spelling: str) -> None:
    primary = faulty_server(size=SIZE)
    if spelling == "other-server":
        mirror: FaultyServer | str = faulty_server(size=SIZE)
    else:
        mirror = f"http://localhost:{primary.port}/file.bin"  # credentials are bound to the host as written
    auth = {"Authorization": f"Bearer {TOKEN}"}
    result = _download(mf, primary, mirror, headers=auth, auth_host=f"127.0.0.1:{primary.port}")
    assert sha256_of(result.path) == primary.sha256()
    records = [*primary.requests, *(mirror.requests if isinstance(mirror, FaultyServer) else [])]
    to_primary = [r for r in records if r.header("Host") == f"127.0.0.1:{primary.port}"]
    to_mirror = [r for r in records if r not in to_primary]
    assert to_primary and all(r.header("Authorization") == f"Bearer {TOKEN}" for r in to_primary)
    assert [r for r in to_mirror if r.method == "GET" and not r.is_probe], "the mirror served chunks"
    assert not any(r.header("Authorization") for r in to_mirror)
    assert not any(TOKEN in r.path for r in to_mirror)


def test_resume_with_mirrors_fetches_only_the_missing_chunks(mf: Modfetch, faulty_server: Serve) -> None:
    # first run: both sources answer 404 past 4 MiB (after the cross-check range), so it fails half done
    broken = {"error_status": 404, "error_times": None, "error_min_start": 4 * MiB}
    primary, mirror = faulty_server(size=SIZE, **broken), faulty_server(size=SIZE, **broken)
    with pytest.raises(ModfetchError) as failed:
        _download(mf, primary, mirror)
    assert "excluded sources" in failed.value.message and mirror.url in failed.value.message
    # the first source to fail was dropped (the other, last one failed the run): the row records it
    assert [e["url"] for e in _meta(mf)["excluded"]] in ([primary.url], [mirror.url])
    kept = mf.rows()[0]["bytes_done"]
    assert kept >= MiB  # chunks below 4 MiB were saved (those still running when it failed: partly)
    for server in (primary, mirror):
        server.configure(error_status=None)
    marks = [primary.mark(), mirror.mark()]
    result = _download(mf, primary, mirror)
    assert result.resumed and sha256_of(result.path) == primary.sha256()
    check = (check_range(SIZE)[0], check_range(SIZE)[1] - 1)
    again = [r for server, mark in zip((primary, mirror), marks, strict=True) for r in server.data_requests(mark)
             if (r.range_start, r.range_end) != check]
    assert {r.header("Host") for r in again} == {f"127.0.0.1:{primary.port}", f"127.0.0.1:{mirror.port}"}
    assert sum(r.bytes_sent for r in again) == SIZE - kept  # nothing saved was fetched again


def test_a_liars_bytes_from_an_earlier_run_are_found_on_resume(mf: Modfetch, faulty_server: Serve) -> None:
    # run 1 fails half way (404 past 4 MiB on both sources) after the liar wrote some chunks below 4 MiB
    broken = {"error_status": 404, "error_times": None, "error_min_start": 4 * MiB}
    lies = {"corrupt_times": None, "corrupt_starts": frozenset(range(0, SIZE, MiB))}
    primary, liar = faulty_server(size=SIZE, **broken), faulty_server(size=SIZE, **broken, **lies)
    with pytest.raises(ModfetchError):
        _download(mf, primary, liar, sha256=primary.sha256())
    assert [r for r in liar.data_requests() if r.faults == ["corrupt"]], "the liar wrote chunks in run 1"
    for server in (primary, liar):
        server.configure(error_status=None)
    # run 2 resumes: the earlier run's bytes (source unknown) and the liar's new ones are checked against the primary
    marks = primary.mark(), liar.mark()
    result = _download(mf, primary, liar, sha256=primary.sha256())
    assert result.resumed and sha256_of(result.path) == primary.sha256()
    if [r for r in liar.data_requests(marks[1]) if r.faults == ["corrupt"]]:  # it lied again: caught and named
        assert "differ from the primary" in _excluded(result)[liar.url]
    # the chunks it poisoned in run 1 were fetched again in run 2
    poisoned = {r.range_start for r in liar.data_requests() if r.index < marks[1] and r.faults == ["corrupt"]}
    again = {r.range_start for s, m in zip((primary, liar), marks, strict=True) for r in s.data_requests(m)}
    assert poisoned <= again


def test_a_primary_refusing_the_cross_check_leaves_unhashed_mirrors_unused(mf: Modfetch, faulty_server: Serve) -> None:
    # Matching validators (no ETag, same Last-Modified) and different bytes: only the cross-check could tell, and
    # the primary answers it with a 429, so without --sha256 the mirror must not be trusted.
    primary = faulty_server(size=SIZE, etag=False, error_status=429, retry_after="0", error_times=1)
    liar = faulty_server(size=SIZE, etag=False, seed=7)
    result = _download(mf, primary, liar)
    assert "could not be read to cross-check" in _excluded(result)[liar.url]
    assert sha256_of(result.path) == primary.sha256()
