"""Engine behaviours 4 and 5: retries (resume from own bytes, Retry-After, bounded), final 4xx, validation of
every response (wrong Content-Range, over-long 206, short bodies, wrong bytes), stalls and trickles."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch, assert_clean_error
from tests.servers.faulty import FaultyServer, RequestRecord

Serve = Callable[..., FaultyServer]


def _by_start(records: list[RequestRecord]) -> dict[int, list[RequestRecord]]:
    out: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        assert record.range_start is not None
        out[record.range_start].append(record)
    return out


def _follow_up(server: FaultyServer, failed: RequestRecord) -> RequestRecord:
    """The next data request for the same chunk (same range end) after ``failed``."""
    later = [r for r in server.data_requests() if r.index > failed.index and r.range_end == failed.range_end]
    assert later, f"request {failed} was never retried"
    return later[0]


def test_cut_connections_resume_from_their_own_bytes(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB, cut_after=300_000, cut_times=4)
    out = mf.download_json(server.url, "--chunk-size", "1M")
    assert out["sha256"] == server.sha256()
    cuts = [r for r in server.data_requests() if r.faults and r.faults[0].startswith("cut")]
    assert len(cuts) == 4
    for cut in cuts:
        assert cut.bytes_sent == 300_000
        retry = _follow_up(server, cut)
        # resumed where the cut left it: not from the chunk start, not overlapping
        assert retry.range_start == cut.range_start + 300_000
        assert retry.header("If-Range") == server.etag()
    # no byte fetched twice: body bytes sent == file size
    assert server.body_bytes() == server.size
    assert mf.status()[0]["status"] == "complete"


def test_repeated_cuts_in_one_chunk_keep_making_progress(mf: Modfetch, faulty_server: Serve) -> None:
    # every attempt delivers 200 kB and then drops: progress resets the retry budget, so it still finishes
    server = faulty_server(size=2 * MiB, cut_after=200_000, cut_times=12)
    mf.write_config(concurrency={"max_retries": 1})
    out = mf.download_json(server.url, "--concurrency", "1")
    assert out["sha256"] == server.sha256()
    starts = [r.range_start for r in server.data_requests()]
    assert starts == sorted(starts)
    assert server.body_bytes() == server.size


def test_no_progress_gives_up_after_max_retries_and_rerun_resumes(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB, cut_after=0, cut_times=None)
    mf.write_config(concurrency={"max_retries": 2})
    result = mf.download(server.url, "--concurrency", "1")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "after 2 retries")
    assert "rerun" in result.stderr
    first = server.data_requests()
    assert [r.range_start for r in first] == [0, 0, 0]  # 1 try + 2 retries, then stop
    row = mf.status()[0]
    assert row["status"] == "failed" and row["error"]
    server.configure(cut_after=None)
    out = mf.download_json(server.url, "--concurrency", "1")
    assert out["sha256"] == server.sha256()


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured(mf: Modfetch, faulty_server: Serve, status: int) -> None:
    server = faulty_server(size=2 * MiB, error_status=status, retry_after="1", error_times=2)
    started = time.monotonic()
    out = mf.download_json(server.url, "--chunk-size", "1M")
    assert out["sha256"] == server.sha256()
    failed = [r for r in server.data_requests() if r.status == status]
    assert len(failed) == 2
    for record in failed:
        retry = _follow_up(server, record)
        assert retry.range_start == record.range_start
        assert retry.time - record.time >= 1.0, f"retried after {retry.time - record.time:.3f}s"
    assert time.monotonic() - started < 10


def test_5xx_without_retry_after_uses_small_backoff(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB, error_status=500, error_times=3)
    out = mf.download_json(server.url, "--concurrency", "1")
    assert out["sha256"] == server.sha256()
    records = server.data_requests()
    assert [r.status for r in records[:4]] == [500, 500, 500, 206]
    assert records[3].time - records[0].time < 2.0  # backoff_max_ms is 100 in the test config


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_final_4xx_fails_at_once_with_one_line(mf: Modfetch, faulty_server: Serve, status: int) -> None:
    server = faulty_server(size=4 * MiB, error_status=status, error_times=None)
    result = mf.download(server.url, "--chunk-size", "1M")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, str(status))
    assert "retry" not in result.stderr.lower()
    per_start = _by_start(server.data_requests())
    assert all(len(v) == 1 for v in per_start.values()), "a final status was retried"
    assert not (mf.dest / "file.bin").exists()
    assert mf.status()[0]["status"] == "failed"


def test_mid_download_4xx_keeps_the_part_resumable(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB, error_status=403, error_times=None, error_min_start=2 * MiB)
    result = mf.download(server.url, "--chunk-size", "1M", "--concurrency", "1")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "403")
    assert (mf.dest / "file.bin.part").exists()
    server.configure(error_status=None)
    mark = server.mark()
    out = mf.download_json(server.url, "--chunk-size", "1M", "--concurrency", "1")
    assert out["sha256"] == server.sha256()
    assert sorted(r.range_start for r in server.data_requests(mark)) == [2 * MiB, 3 * MiB]


def test_wrong_content_range_is_never_written(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB, wrong_range_times=3)
    result = mf.cli("download", "--url", server.url, "--dest", str(mf.dest), "--chunk-size", "1M")
    assert result.exit_code == 0, result.output
    assert (mf.dest / "file.bin").read_bytes() == server.content()
    wrong = [r for r in server.data_requests() if r.faults == ["wrong range"]]
    assert len(wrong) == 3
    for record in wrong:
        assert _follow_up(server, record).range_start == record.range_start  # nothing of it was kept
    assert "Content-Range" in result.stderr


def test_always_wrong_content_range_fails_clearly_and_writes_nothing(mf: Modfetch,
                                                                    faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB, wrong_range_times=None)
    mf.write_config(concurrency={"max_retries": 1})
    result = mf.download(server.url, "--concurrency", "1")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "Content-Range")
    part = mf.dest / "file.bin.part"
    assert part.exists()
    assert part.read_bytes().count(0) == part.stat().st_size  # preallocated, never written
    assert not (mf.dest / "file.bin").exists()


def test_overlong_206_is_cut_to_the_chunk(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB, overlong_times=2)
    out = mf.download_json(server.url, "--chunk-size", "1M")
    assert out["sha256"] == server.sha256()
    assert (mf.dest / "file.bin").read_bytes() == server.content()


def test_wrong_bytes_with_expected_sha256_fail_clearly(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB, corrupt_times=1)
    result = mf.download(server.url, "--sha256", server.sha256())
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "SHA-256 mismatch", server.sha256())
    assert not (mf.dest / "file.bin").exists()
    assert not (mf.dest / "file.bin.part").exists()
    assert mf.status()[0]["status"] == "mismatch"
    # the next attempt (server healthy again) starts clean and succeeds
    out = mf.download_json(server.url, "--sha256", server.sha256())
    assert out["sha256"] == server.sha256()


@pytest.mark.parametrize("stall_after", [0, 65536])
def test_stall_times_out_and_resumes(mf: Modfetch, faulty_server: Serve, stall_after: int) -> None:
    mf.write_config(network={"timeout_seconds": 1})
    server = faulty_server(size=2 * MiB, stall_seconds=30, stall_after=stall_after)
    started = time.monotonic()
    out = mf.download_json(server.url, "--concurrency", "1")
    elapsed = time.monotonic() - started
    assert out["sha256"] == server.sha256()
    assert elapsed < 10, elapsed
    stalled = [r for r in server.data_requests() if r.faults and r.faults[0].startswith("stall")]
    assert len(stalled) == 1
    retry = _follow_up(server, stalled[0])
    assert retry.range_start == stalled[0].range_start + stall_after
    assert retry.time - stalled[0].time >= 1.0  # it waited for the read timeout, not less


def test_trickle_is_slow_but_not_a_stall(mf: Modfetch, faulty_server: Serve) -> None:
    mf.write_config(network={"timeout_seconds": 1})
    server = faulty_server(size=MiB, rate=400 << 10)  # ~2.5 s, a few KB every 50 ms
    out = mf.download_json(server.url, "--concurrency", "1")
    assert out["sha256"] == server.sha256()
    assert len(server.data_requests()) == 1  # no spurious timeout / retry


def test_single_stream_short_body_restarts_from_zero(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB, ranges=False, cut_after=500_000, cut_times=2)
    out = mf.download_json(server.url)
    assert out["sha256"] == server.sha256()
    data = server.data_requests()
    assert [r.bytes_sent for r in data] == [500_000, 500_000, 3 * MiB]
    assert (mf.dest / "file.bin").stat().st_size == 3 * MiB


def test_single_stream_chunked_cut_is_retried(mf: Modfetch, faulty_server: Serve) -> None:
    # chunked transfer: no length promised, so a cut is only visible as a broken chunked framing
    server = faulty_server(size=2 * MiB, chunked=True, cut_after=300_000, cut_times=1)
    out = mf.download_json(server.url)
    assert out["sha256"] == server.sha256()
    assert (mf.dest / "file.bin").read_bytes() == server.content()


def test_single_stream_final_status_fails_at_once(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, ranges=False, error_status=404, error_times=None)
    result = mf.download(server.url)
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "404")
    assert len(server.data_requests()) == 1


def test_sha256_of_what_was_written_matches_disk(mf: Modfetch, faulty_server: Serve, tmp_path: Path) -> None:
    # many faults at once; the recorded hash must be the hash of the bytes on disk, which are the server's
    server = faulty_server(size=6 * MiB, cut_after=123_457, cut_times=3, wrong_range_times=2,
                           error_status=503, retry_after="0", error_times=2, overlong_times=1)
    out = mf.download_json(server.url, "--chunk-size", "1M", "--concurrency", "4")
    data = Path(out["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == out["sha256"] == server.sha256()
