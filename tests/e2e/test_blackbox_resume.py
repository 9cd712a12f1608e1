"""Resume semantics across runs, black-box: the installed ``modfetch`` as real subprocesses, interrupted with
SIGINT/SIGTERM/SIGKILL once some chunks are complete, then rerun after something changed in between: the
command line (``--concurrency``, ``--chunk-size``, ``--dest``, ``--out``, ``--sha256``, ``--force``), the
config, the server (no Range, no validators, a new ETag, a new size, 404/410, a new signed redirect), the
``.part`` or the state DB (another machine, an older backup), or the final file (installed by someone else).

The promise held in every case: a rerun continues where it stopped, never installs bytes other than the
server's, and fetches again only what it cannot prove it already has (bytes served are counted by the test
server); a failure is one ``modfetch: error:`` line, no traceback; ``status`` tells the truth.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MiB, Modfetch, assert_clean_error, sha256_of, wait_for
from tests.servers.faulty import FaultyServer
from tests.servers.signed import SignedRedirector, require_signature

Serve = Callable[..., FaultyServer]
SIZE = 8 * MiB
RATE = 1.5 * MiB  # per connection: a few seconds for SIZE, time enough to interrupt after some chunks


def _query(mf: Modfetch, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    if not mf.state_db.exists():
        return []
    conn = sqlite3.connect(f"file:{mf.state_db}?mode=ro", uri=True, timeout=5)
    try:
        return list(conn.execute(sql, args))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _complete_bytes(mf: Modfetch) -> int:
    """Bytes in chunks the DB records as complete (what a rerun may keep without fetching)."""
    rows = _query(mf, "SELECT coalesce(sum(\"end\" - start), 0) FROM chunks WHERE status = 'complete'")
    return int(rows[0][0]) if rows else 0


def _args(mf: Modfetch, server: FaultyServer, *extra: str, dest: Path | None = None) -> list[str]:
    return ["--quiet", "download", "--url", server.url, "--dest", str(dest or mf.dest), *extra]


def _interrupt(mf: Modfetch, server: FaultyServer, args: list[str], sig: signal.Signals = signal.SIGKILL,
               complete: int = 2 * MiB) -> int:
    """Run ``args`` against a throttled ``server``, send ``sig`` once ``complete`` bytes are in complete chunks,
    unthrottle; returns the complete bytes the DB recorded at the end."""
    server.configure(rate=RATE)
    proc = mf.popen(*args)
    try:
        wait_for(lambda: _complete_bytes(mf) >= complete, f"{complete} bytes in complete chunks", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.configure(rate=None)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert "Traceback" not in err, err
    saved = _complete_bytes(mf)
    assert complete <= saved < server.size
    return saved


def _rerun_ok(mf: Modfetch, server: FaultyServer, argv: list[str]) -> int:
    """Run ``modfetch ARGV`` again: it must exit 0 with the served bytes; returns the body bytes it fetched."""
    mark = server.mark()
    rerun = mf.run(*argv)
    assert rerun.returncode == 0, rerun.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    return server.body_bytes(mark)


def _status(mf: Modfetch) -> list[dict[str, Any]]:
    done = mf.run("status", "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def _rows(mf: Modfetch) -> list[tuple[str, str, int]]:
    """(file name, status, bytes_done) of every download, oldest first, as ``status --json`` reports them."""
    return sorted((Path(r["path"]).name, r["status"], r["bytes_done"]) for r in _status(mf))


# -- the command line or the config changed ---------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_rerun_with_other_concurrency_and_chunk_size_keeps_the_chunks_done(mf: Modfetch, faulty_server: Serve,
                                                                           sig: signal.Signals) -> None:
    server = faulty_server(size=SIZE)
    saved = _interrupt(mf, server, _args(mf, server, "--concurrency", "2", "--chunk-size", "1M"), sig)
    assert [r["status"] for r in _status(mf)] == ["interrupted"]
    fetched = _rerun_ok(mf, server, _args(mf, server, "--concurrency", "7", "--chunk-size", "3M"))
    assert fetched <= SIZE - saved  # the plan of the first run is kept, whatever was asked now
    assert _rows(mf) == [("file.bin", "complete", SIZE)]


def test_rerun_after_the_config_changed_keeps_the_chunks_done(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=SIZE)
    mf.write_config(concurrency={"per_file_chunks": 2, "chunk_size_mb": 1})
    saved = _interrupt(mf, server, _args(mf, server), signal.SIGTERM)
    mf.write_config(concurrency={"per_file_chunks": 16, "chunk_size_mb": 4})
    fetched = _rerun_ok(mf, server, _args(mf, server))
    assert fetched <= SIZE - saved


def test_status_while_running_and_after_each_signal_is_truthful(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=SIZE, rate=RATE)
    proc = mf.popen(*_args(mf, server, "--concurrency", "2"))
    try:
        wait_for(lambda: _complete_bytes(mf) >= MiB, "1 MiB in complete chunks", proc)
        [row] = _status(mf)
        assert row["status"] == "running" and MiB <= row["bytes_done"] < SIZE and row["size"] == SIZE
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    [row] = _status(mf)
    assert row["status"] == "interrupted" and MiB <= row["bytes_done"] < SIZE
    text = mf.run("status")
    assert text.returncode == 0 and "interrupted" in text.stdout and "file.bin" in text.stdout


def test_rerun_into_another_dest_leaves_the_first_one_resumable(mf: Modfetch, faulty_server: Serve,
                                                              tmp_path: Path) -> None:
    """A new --dest is a new download (its own .part and row); the first one is neither lost nor taken over."""
    server = faulty_server(size=SIZE)
    saved = _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    other = tmp_path / "other"
    rerun = mf.run(*_args(mf, server, dest=other))
    assert rerun.returncode == 0, rerun.stderr
    assert sha256_of(other / "file.bin") == server.sha256()
    assert (mf.dest / "file.bin.part").exists()
    assert sorted(r[1] for r in _rows(mf)) == ["complete", "interrupted"]
    fetched = _rerun_ok(mf, server, _args(mf, server))
    assert fetched <= SIZE - saved
    assert sorted(r[1] for r in _rows(mf)) == ["complete", "complete"]
    assert not (mf.dest / "file.bin.part").exists()


def test_rerun_with_another_out_name_keeps_the_first_part(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=SIZE)
    _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    part = (mf.dest / "file.bin.part").read_bytes()
    rerun = mf.run(*_args(mf, server, "--out", "renamed.bin"))
    assert rerun.returncode == 0, rerun.stderr
    assert sha256_of(mf.dest / "renamed.bin") == server.sha256()
    assert (mf.dest / "file.bin.part").read_bytes() == part
    assert [(name, status) for name, status, _ in _rows(mf)] == [("file.bin", "interrupted"),
                                                                 ("renamed.bin", "complete")]


def test_same_name_from_another_url_restarts_cleanly(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=SIZE)
    other = faulty_server(size=SIZE, seed=7)
    _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    mark = other.mark()
    rerun = mf.run(*_args(mf, other))
    assert rerun.returncode == 0, rerun.stderr
    assert "changed since the last attempt" in rerun.stderr
    assert sha256_of(mf.dest / "file.bin") == other.sha256()
    assert other.body_bytes(mark) == SIZE  # nothing of the first URL's bytes survives into this file
    first = mf.run(*_args(mf, server))  # and the first URL never overwrites it
    assert first.returncode == 1
    assert_clean_error(first.stderr, "already exists")
    assert sha256_of(mf.dest / "file.bin") == other.sha256()


# -- the .part or the DB is not the one the last run left -------------------------------------------------------
def _stop_inside_chunk_2(mf: Modfetch, server: FaultyServer, args: list[str], sig: signal.Signals) -> int:
    """Chunks 0 and 1 (1 MiB each) arrive at once, chunk 2 trickles: ``sig`` once the DB records part of it.
    Returns how many bytes of chunk 2 the DB says are on disk."""
    server.configure(rate=512 << 10, rate_starts=frozenset({2 * MiB}))
    proc = mf.popen(*args)

    def partial() -> int:
        rows = _query(mf, "SELECT bytes_done FROM chunks WHERE start = ? AND status != 'complete'", 2 * MiB)
        return int(rows[0][0]) if rows else 0

    try:
        wait_for(lambda: partial() >= 256 << 10 and _complete_bytes(mf) == 2 * MiB, "part of chunk 2", proc)
        proc.send_signal(sig)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.configure(rate=None, rate_starts=None)
    return partial()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_part_older_than_the_db_is_never_installed(mf: Modfetch, faulty_server: Serve, sig: signal.Signals) -> None:
    """The DB says part of a chunk is on disk, the .part does not hold those bytes (restored from an older backup,
    or the DB reached the disk and the data did not before a power cut): the bytes a partly fetched chunk
    keeps must be proven like a complete chunk's, never hashed into the final file as they are."""
    server = faulty_server(size=4 * MiB)
    args = _args(mf, server, "--concurrency", "1", "--chunk-size", "1M")
    partial = _stop_inside_chunk_2(mf, server, args, sig)
    with (mf.dest / "file.bin.part").open("r+b") as handle:  # what an older copy holds there: nothing yet
        handle.seek(2 * MiB)
        handle.write(bytes(partial))
    mark = server.mark()
    rerun = mf.run(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert "1 partly fetched chunk(s) no longer match" in rerun.stderr
    assert server.body_bytes(mark) == 2 * MiB  # chunk 2 again, chunk 3; never chunks 0 and 1


def test_partly_fetched_chunk_is_kept_when_its_bytes_are_intact(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB)
    args = _args(mf, server, "--concurrency", "1", "--chunk-size", "1M")
    partial = _stop_inside_chunk_2(mf, server, args, signal.SIGKILL)
    mark = server.mark()
    fetched = _rerun_ok(mf, server, args)
    assert fetched == 2 * MiB - partial
    assert server.data_requests(mark)[0].range_start == 2 * MiB + partial


def _backup_db(mf: Modfetch, to: Path) -> None:
    src, dst = sqlite3.connect(mf.state_db), sqlite3.connect(to)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()


def test_db_restored_from_an_older_backup_resumes_from_what_it_knows(mf: Modfetch, faulty_server: Serve,
                                                                      tmp_path: Path) -> None:
    server = faulty_server(size=SIZE, rate=RATE)
    args = _args(mf, server, "--concurrency", "2")
    proc = mf.popen(*args)
    try:
        wait_for(lambda: _complete_bytes(mf) >= MiB, "1 MiB in complete chunks", proc)
        _backup_db(mf, tmp_path / "old.db")
        wait_for(lambda: _complete_bytes(mf) >= 4 * MiB, "4 MiB in complete chunks", proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.configure(rate=None)
    for suffix in ("-wal", "-shm"):
        Path(str(mf.state_db) + suffix).unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "old.db", mf.state_db)
    known = _complete_bytes(mf)
    fetched = _rerun_ok(mf, server, args)
    assert fetched <= SIZE - known
    assert _rows(mf) == [("file.bin", "complete", SIZE)]


def test_part_moved_to_a_machine_with_a_new_db_is_not_trusted(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=SIZE)
    _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGKILL)
    for suffix in ("", "-wal", "-shm"):
        Path(str(mf.state_db) + suffix).unlink(missing_ok=True)
    mark = server.mark()
    rerun = mf.run(*_args(mf, server))
    assert rerun.returncode == 0, rerun.stderr
    assert "without saved state; starting over" in rerun.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert server.body_bytes(mark) == SIZE


# -- the server changed between runs ----------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "restart"), [
    ({"ranges": False}, True),                       # now 200 only: one stream from the start
    ({"etag": False, "last_modified": False}, True),  # nothing left to prove it is the same entity
    ({"weak_etag": True}, True),                     # another ETag (the bytes may well be identical)
    ({"last_modified": False}, False),               # the same strong ETag is proof enough
])
def test_server_changed_between_runs(mf: Modfetch, faulty_server: Serve, change: dict[str, Any],
                                     restart: bool) -> None:
    server = faulty_server(size=SIZE)
    saved = _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    server.configure(**change)
    mark = server.mark()
    rerun = mf.run(*_args(mf, server))
    assert rerun.returncode == 0, rerun.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    if restart:
        # Issue 16: a server that lost Range support says so (it cannot resume), not "changed".
        expected = "this server cannot resume; starting again from 0" if change == {"ranges": False} \
            else "changed since the last attempt"
        assert expected in rerun.stderr
        assert server.body_bytes(mark) == SIZE
    else:
        assert server.body_bytes(mark) <= SIZE - saved
    assert _rows(mf) == [("file.bin", "complete", SIZE)]


@pytest.mark.parametrize("size", [SIZE - MiB, SIZE + 3 * MiB, 0])
def test_server_with_another_size_restarts_cleanly(mf: Modfetch, faulty_server: Serve, size: int) -> None:
    server = faulty_server(size=SIZE)
    _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGKILL)
    server.stop()
    new = FaultyServer(size=size, port=server.port, seed=5).start()  # same URL, another file
    try:
        rerun = mf.run(*_args(mf, new))
        assert rerun.returncode == 0, rerun.stderr
        assert sha256_of(mf.dest / "file.bin") == new.sha256()
        assert new.body_bytes() == size
        assert _rows(mf) == [("file.bin", "complete", size)]
    finally:
        new.stop()


@pytest.mark.parametrize("gone", [404, 410])
def test_file_removed_upstream_is_one_line_and_keeps_the_part(mf: Modfetch, faulty_server: Serve,
                                                              gone: int) -> None:
    server = faulty_server(size=SIZE)
    saved = _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    server.configure(error_status=gone, error_times=None, include_probe=True, head_status=gone)
    rerun = mf.run(*_args(mf, server))
    assert rerun.returncode == 1
    assert_clean_error(rerun.stderr, str(gone))
    assert (mf.dest / "file.bin.part").exists() and not (mf.dest / "file.bin").exists()
    assert _complete_bytes(mf) == saved
    server.configure(error_status=None, include_probe=False, head_status=None)  # back again
    fetched = _rerun_ok(mf, server, _args(mf, server))
    assert fetched <= SIZE - saved


def test_expired_signed_redirect_is_resolved_again_on_resume(mf: Modfetch, faulty_server: Serve) -> None:
    cdn = faulty_server(size=SIZE)
    require_signature(cdn, "first")
    redirector = SignedRedirector(cdn)
    try:
        args = ["--quiet", "download", "--url", redirector.url, "--dest", str(mf.dest), "--concurrency", "2"]
        saved = _interrupt(mf, cdn, args, signal.SIGKILL)
        require_signature(cdn, "second")  # the first signature expired meanwhile
        mark = cdn.mark()
        rerun = mf.run(*args)
    finally:
        redirector.stop()
    assert rerun.returncode == 0, rerun.stderr
    assert sha256_of(mf.dest / "model.bin") == cdn.sha256()
    assert server_paths(cdn, mark) == {"/signed/model.bin?sig=second"}  # never the expired URL
    assert cdn.body_bytes(mark) <= SIZE - saved
    [row] = _status(mf)
    assert row["url"] == redirector.url and row["status"] == "complete"
    assert "second" not in row["resolved_url"]  # the signature itself is not stored


def server_paths(server: FaultyServer, since: int) -> set[str]:
    with server.lock:
        return {r.path for r in server.requests[since:]}


# -- the second run asks for more (or other) than the first -----------------------------------------------------
def test_wrong_sha256_given_only_on_the_rerun_installs_nothing(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=SIZE)
    _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    rerun = mf.run(*_args(mf, server, "--sha256", "0" * 64))
    assert rerun.returncode == 1
    assert_clean_error(rerun.stderr, "mismatch")
    assert not (mf.dest / "file.bin").exists()
    assert [r["status"] for r in _status(mf)] == ["mismatch"]
    again = mf.run(*_args(mf, server, "--sha256", server.sha256()))
    assert again.returncode == 0, again.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()


@pytest.mark.parametrize("extra", [["--sha256", "RIGHT"], ["--force"]])
def test_right_sha256_or_force_on_the_rerun_still_resumes(mf: Modfetch, faulty_server: Serve,
                                                          extra: list[str]) -> None:
    server = faulty_server(size=SIZE)
    saved = _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    fetched = _rerun_ok(mf, server, _args(mf, server, *[server.sha256() if e == "RIGHT" else e for e in extra]))
    assert fetched <= SIZE - saved
    assert _rows(mf) == [("file.bin", "complete", SIZE)]


def test_final_file_installed_meanwhile_by_someone_else(mf: Modfetch, faulty_server: Serve) -> None:
    """Without a hash to check it against, someone else's file is never overwritten (nor the .part dropped);
    with --sha256 it is adopted without a byte fetched and the .part is cleaned up."""
    server = faulty_server(size=SIZE)
    _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    (mf.dest / "file.bin").write_bytes(server.content())
    mark = server.mark()
    unknown = mf.run(*_args(mf, server))
    assert unknown.returncode == 1
    assert_clean_error(unknown.stderr, "already exists")
    assert (mf.dest / "file.bin.part").exists()
    adopted = mf.run(*_args(mf, server, "--sha256", server.sha256()))
    assert adopted.returncode == 0, adopted.stderr
    assert server.body_bytes(mark) == 0
    assert not (mf.dest / "file.bin.part").exists()
    assert _rows(mf) == [("file.bin", "complete", SIZE)]


def test_other_file_installed_meanwhile_is_never_replaced(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=SIZE)
    _interrupt(mf, server, _args(mf, server, "--concurrency", "2"), signal.SIGINT)
    (mf.dest / "file.bin").write_bytes(b"someone else's")
    rerun = mf.run(*_args(mf, server, "--sha256", server.sha256()))
    assert rerun.returncode == 1
    assert_clean_error(rerun.stderr, "already exists")
    assert (mf.dest / "file.bin").read_bytes() == b"someone else's"
    assert (mf.dest / "file.bin.part").exists()
