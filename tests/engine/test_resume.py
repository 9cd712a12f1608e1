"""Engine behaviours 5 (remote changes, If-Range) and 7 (resume, re-verification, repair), including real
processes killed with SIGKILL / SIGINT mid-download and rerun."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

from modfetch.engine.download import MAX_RESTARTS
from tests.conftest import MiB, Modfetch, assert_clean_error, wait_for
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]


def _fail_partway(mf: Modfetch, server: FaultyServer, at: int, *args: str) -> None:
    """Run 1: chunks before ``at`` complete (one connection, in order), then a 403 stops the run."""
    server.configure(error_status=403, error_times=None, error_min_start=at)
    result = mf.download(server.url, "--concurrency", "1", "--chunk-size", "1M", *args)
    assert result.exit_code == 1, result.output
    server.configure(error_status=None)


def test_resume_fetches_only_missing_chunks_with_if_range(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=5 * MiB)
    _fail_partway(mf, server, 3 * MiB)
    row = mf.rows()[0]
    assert row["status"] == "failed" and row["bytes_done"] == 3 * MiB
    mark = server.mark()
    out = mf.download_json(server.url, "--concurrency", "1", "--chunk-size", "1M")
    assert out["sha256"] == server.sha256()
    resumed = server.data_requests(mark)
    assert sorted(r.range_start for r in resumed) == [3 * MiB, 4 * MiB]
    assert {r.header("If-Range") for r in resumed} == {server.etag()}
    assert out["fetched_bytes"] <= 2 * MiB


def test_remote_change_during_download_restarts_cleanly(mf: Modfetch, faulty_server: Serve) -> None:
    # GET 1 is the probe, GETs 2-3 get version 1, everything after gets version 2 with a new ETag
    server = faulty_server(size=4 * MiB, change_after=3)
    result = mf.cli("download", "--json", "--url", server.url, "--dest", str(mf.dest), "--chunk-size", "1M")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["sha256"] == server.sha256(2) != server.sha256(1)
    assert (mf.dest / "file.bin").read_bytes() == server.content(2)
    assert "remote file changed" in result.stderr
    # the new version was fetched with the new validator
    v2 = [r for r in server.data_requests() if r.status == 206 and r.version == 2]
    assert v2 and {r.header("If-Range") for r in v2} == {server.etag(2)}
    row = mf.status()[0]
    assert row["etag"] == server.etag(2) and row["sha256"] == server.sha256(2)


def test_remote_that_keeps_changing_fails_clearly_after_bounded_restarts(mf: Modfetch,
                                                                          faulty_server: Serve) -> None:
    # every GET after the probe sees a new version: no restart can ever finish
    server = faulty_server(size=4 * MiB, change_after=1, change_every=1)
    result = mf.cli("download", "--url", server.url, "--dest", str(mf.dest), "--chunk-size", "1M")
    assert result.exit_code == 1, result.output
    assert_clean_error(result.stderr, "kept changing")
    assert result.stderr.count("remote file changed") == MAX_RESTARTS
    assert not (mf.dest / "file.bin").exists()
    assert mf.rows()[0]["status"] == "failed"
    # bounded: each restart asks again from the start; nothing loops forever
    assert sum(1 for r in server.data_requests() if r.range_start == 0) <= 2 * (MAX_RESTARTS + 1)


def test_changed_remote_without_etag_is_caught_by_if_range_date(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB, change_after=3, etag=False)
    out = mf.download_json(server.url, "--chunk-size", "1M")
    assert out["sha256"] == server.sha256(2)
    assert (mf.dest / "file.bin").read_bytes() == server.content(2)


def test_remote_change_between_runs_restarts_cleanly(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB)
    _fail_partway(mf, server, 2 * MiB)
    server.configure(change_after=0)  # from now on every response is version 2
    mark = server.mark()
    result = mf.cli("download", "--json", "--url", server.url, "--dest", str(mf.dest), "--chunk-size", "1M")
    assert result.exit_code == 0, result.output
    assert "changed since the last attempt" in result.stderr
    assert (mf.dest / "file.bin").read_bytes() == server.content(2)
    starts = sorted(r.range_start for r in server.data_requests(mark))
    assert starts[0] == 0 and server.body_bytes(mark) == server.size  # nothing of version 1 was kept


def test_tampered_part_is_repaired_on_resume(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB)
    _fail_partway(mf, server, 2 * MiB)
    part = mf.dest / "file.bin.part"
    with part.open("r+b") as handle:  # flip bytes inside completed chunk 0 (and leave chunk 1 alone)
        handle.seek(12345)
        original = handle.read(4)
        handle.seek(12345)
        handle.write(bytes(b ^ 0xFF for b in original))
    mark = server.mark()
    result = mf.cli("download", "--json", "--url", server.url, "--dest", str(mf.dest), "--concurrency", "1",
                    "--chunk-size", "1M", "--sha256", server.sha256())
    assert result.exit_code == 0, result.output
    assert "no longer match" in result.stderr
    assert (mf.dest / "file.bin").read_bytes() == server.content()
    starts = sorted(r.range_start for r in server.data_requests(mark))
    assert starts == [0, 2 * MiB, 3 * MiB]  # chunk 0 again, chunk 1 trusted


def test_truncated_part_is_refetched(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB)
    _fail_partway(mf, server, 2 * MiB)
    part = mf.dest / "file.bin.part"
    with part.open("r+b") as handle:
        handle.truncate(MiB + 100)
    out = mf.download_json(server.url, "--concurrency", "1", "--chunk-size", "1M")
    assert out["sha256"] == server.sha256()


def test_part_without_state_is_not_trusted(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB)
    mf.dest.mkdir()
    (mf.dest / "file.bin.part").write_bytes(b"\x00garbage" * 1000)
    out = mf.download_json(server.url)
    assert out["sha256"] == server.sha256()
    assert (mf.dest / "file.bin").read_bytes() == server.content()


def test_kill_9_mid_download_then_rerun_resumes(mf: Modfetch, faulty_server: Serve) -> None:
    size = 16 * MiB
    server = faulty_server(size=size, rate=1.5 * MiB)  # 4 connections: ~6 MB/s, ~2.7 s in all
    args = ("download", "--quiet", "--url", server.url, "--dest", str(mf.dest), "--chunk-size", "1M",
            "--concurrency", "4")
    proc = mf.popen(*args)
    try:
        wait_for(lambda: any(r["status"] == "running" and r["bytes_done"] >= 3 * MiB for r in mf.rows()),
                 "3 MiB downloaded", seconds=20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = mf.rows()[0]["bytes_done"]
    assert 0 < killed_at < size
    assert mf.rows()[0]["status"] == "running"  # nobody cleaned up after SIGKILL...

    status = mf.run("status", "--json")  # ...until the next start
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert [r["status"] for r in rows] == ["interrupted"]
    assert all(r["status"] != "running" for r in mf.rows())

    server.configure(rate=None)
    mark = server.mark()
    rerun = mf.run(*args)
    assert rerun.returncode == 0, rerun.stderr
    path = mf.dest / "file.bin"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == server.sha256()
    assert server.sha256() in rerun.stdout
    refetched = server.body_bytes(mark)
    assert refetched < size
    assert refetched <= size - killed_at + 4 * MiB  # at most the unrecorded tail of each running chunk
    check = subprocess.run(["sha256sum", "-c", "file.bin.sha256"], cwd=mf.dest, capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert [r["status"] for r in mf.rows()] == ["complete"]


def test_ctrl_c_saves_state_and_rerun_resumes(mf: Modfetch, faulty_server: Serve) -> None:
    size = 12 * MiB
    server = faulty_server(size=size, rate=1.5 * MiB)
    args = ("download", "--url", server.url, "--dest", str(mf.dest), "--chunk-size", "1M",
            "--concurrency", "4")
    proc = mf.popen(*args)
    try:
        wait_for(lambda: any(r["bytes_done"] >= 2 * MiB for r in mf.rows()), "2 MiB downloaded", seconds=20)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and "rerun" in stderr
    row = mf.rows()[0]
    assert row["status"] != "running"
    saved = row["bytes_done"]
    assert saved >= 2 * MiB
    server.configure(rate=None)
    mark = server.mark()
    rerun = mf.run(*args, "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert (mf.dest / "file.bin").read_bytes() == server.content()
    assert server.body_bytes(mark) <= size - saved


def test_status_of_a_failed_download_is_resumable(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB)
    _fail_partway(mf, server, 2 * MiB)
    row = mf.status()[0]
    assert row["status"] == "failed"
    assert "403" in row["error"]
    assert row["bytes_done"] == 2 * MiB and row["size"] == 4 * MiB
    text = mf.cli("status")
    assert text.exit_code == 0
    assert "file.bin" in text.stdout and "50.0%" in text.stdout and "failed" in text.stdout


def test_failed_run_error_is_one_line(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB, error_status=403, error_times=None, error_min_start=MiB)
    result = mf.download(server.url, "--concurrency", "1", "--chunk-size", "1M")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "403")
    assert Path(mf.dest / "file.bin.part").exists()


def _as_if_killed_mid_install(mf: Modfetch, dest: Path) -> None:
    """The state a SIGKILL leaves between the final ``os.link`` and the "complete" write: the row still says
    running (for a dead pid) with the hash recorded, and the ``.part`` is a second link to the installed file."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    conn = sqlite3.connect(mf.state_db)
    with conn:
        conn.execute("UPDATE downloads SET status = 'running', pid = ?, finished_at = NULL", (dead.pid,))
    conn.close()
    os.link(dest, str(dest) + ".part")
    Path(str(dest) + ".sha256").unlink()


def test_rerun_adopts_a_file_installed_just_before_a_kill(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB)
    mf.download_json(server.url, "--chunk-size", "1M")
    dest = mf.dest / "file.bin"
    _as_if_killed_mid_install(mf, dest)
    mark = server.mark()
    out = mf.download_json(server.url, "--chunk-size", "1M")  # no --sha256: the recorded hash is the proof
    assert out["sha256"] == server.sha256() and dest.read_bytes() == server.content()
    assert server.body_bytes(mark) <= 1  # only the probe's byte
    assert not Path(str(dest) + ".part").exists()
    assert Path(str(dest) + ".sha256").read_text() == f"{server.sha256()}  file.bin\n"
    assert mf.rows()[0]["status"] == "complete"


def test_rerun_never_adopts_a_file_that_is_not_the_hashed_one(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB)
    mf.download_json(server.url, "--chunk-size", "1M")
    dest = mf.dest / "file.bin"
    _as_if_killed_mid_install(mf, dest)
    Path(str(dest) + ".part").unlink()
    dest.write_bytes(b"somebody else's file")
    result = mf.download(server.url, "--chunk-size", "1M")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "already exists")
    assert dest.read_bytes() == b"somebody else's file"
