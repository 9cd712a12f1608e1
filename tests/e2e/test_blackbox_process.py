"""Process-level and file-system faults, black-box: the installed ``modfetch`` as real subprocesses against
the local fault-injecting server, with other programs (simulated by the test) changing the destination, the
``.part`` file or the disk under a running download.

Every case holds the product promise: exit 0 with exactly the server's bytes, or one clear error line (non-zero
exit, no traceback), and a rerun ends with the right bytes; nothing already on disk is lost or overwritten.
Waits are on observable conditions (files, DB rows, process exit) with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Modfetch, assert_clean_error, sha256_of, wait_for
from tests.servers.faulty import FaultyServer

MiB = 1 << 20
Serve = Callable[..., FaultyServer]


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _complete_chunks(mf: Modfetch) -> int:
    if not mf.state_db.exists():
        return 0
    conn = sqlite3.connect(f"file:{mf.state_db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM chunks WHERE status = 'complete'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def _assert_right_or_clean_failure(rc: int, err: str, target: Path, server: FaultyServer) -> None:
    """Exit 0 only with exactly the server's bytes; otherwise one clear error and no file at the target."""
    if rc == 0:
        assert sha256_of(target) == server.sha256(), "exit 0 but the installed file has other bytes"
        return
    assert rc == 1, err
    assert_clean_error(err)
    assert not target.exists() or sha256_of(target) == server.sha256()


# -- something else is at the final name -----------------------------------------------------------------------
def test_fifo_at_the_target_with_sha256_does_not_hang(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    mf.dest.mkdir()
    fifo = mf.dest / "file.bin"
    os.mkfifo(fifo)
    done = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest), "--sha256", server.sha256(),
                  timeout=30)
    assert done.returncode == 1, done.stderr
    assert_clean_error(done.stderr, "already exists")
    assert fifo.is_fifo()
    forced = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest), "--sha256",
                    server.sha256(), "--force", timeout=30)
    assert forced.returncode == 0, forced.stderr
    assert sha256_of(fifo) == server.sha256()


def test_dangling_symlink_at_the_target_is_refused_before_any_transfer(mf: Modfetch, faulty_server: Serve,
                                                                       tmp_path: Path) -> None:
    server = faulty_server(size=2 * MiB)
    mf.dest.mkdir()
    link = mf.dest / "file.bin"
    link.symlink_to(tmp_path / "not-there-yet")
    done = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    assert done.returncode == 1
    assert_clean_error(done.stderr, "already exists")
    assert server.data_requests() == [], "the whole file was fetched only to be refused at the end"
    assert link.is_symlink() and not (tmp_path / "not-there-yet").exists()


def test_directory_at_the_target_is_refused_before_any_transfer_even_with_force(mf: Modfetch,
                                                                                 faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB)
    kept = mf.dest / "file.bin" / "inside.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("mine")
    done = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest), "--force")
    assert done.returncode == 1
    assert_clean_error(done.stderr, "directory")
    assert server.data_requests() == []
    assert kept.read_text() == "mine"


# -- two processes -----------------------------------------------------------------------------------------------
def test_two_processes_through_a_symlinked_dest_take_turns(mf: Modfetch, faulty_server: Serve,
                                                          tmp_path: Path) -> None:
    """Cron job and a manual run naming the same folder two ways: one .part, so one process at a time."""
    server = faulty_server(size=4 * MiB, hold=True)
    mf.dest.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(mf.dest)
    first = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    second: subprocess.Popen[str] | None = None
    try:
        wait_for((mf.dest / "file.bin.part").exists, "the first process's .part", first)
        second = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(alias))
        rc2, _, err2 = _finish(second, timeout=20)
    finally:
        server.release()
        if second is not None and second.poll() is None:
            second.kill()
            second.communicate()
    rc1, _, err1 = _finish(first)
    assert rc2 == 1, err2
    assert_clean_error(err2, "already downloading")
    assert rc1 == 0, err1
    assert sha256_of(mf.dest / "file.bin") == server.sha256()


# -- the .part changes under a running download -----------------------------------------------------------------
def _replace(part: Path) -> None:
    part.unlink()
    part.write_bytes(b"not the download" * 64)


def _delete(part: Path) -> None:
    part.unlink()


def _move_dest(part: Path) -> None:
    part.parent.rename(part.parent.with_name("moved-away"))


@pytest.mark.parametrize("change", [_replace, _delete, _move_dest], ids=["replaced", "deleted", "dest-moved"])
def test_part_changed_by_someone_else_is_never_installed(mf: Modfetch, faulty_server: Serve,
                                                         change: Callable[[Path], None]) -> None:
    server = faulty_server(size=4 * MiB, hold=True)
    part = mf.dest / "file.bin.part"
    proc = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    try:
        wait_for(part.exists, "the .part", proc)
        change(part)
    finally:
        server.release()
    rc, out, err = _finish(proc)
    target = mf.dest / "file.bin"
    assert rc == 1, f"exit {rc}: {out} {err}"
    assert_clean_error(err, ".part", "while downloading")
    assert not target.exists()
    server.configure(hold=False)
    again = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    assert again.returncode == 0, again.stderr
    assert sha256_of(target) == server.sha256()


def test_part_truncated_mid_download_never_ends_as_a_wrong_file(mf: Modfetch, faulty_server: Serve) -> None:
    # One connection fetching 1 MiB chunks in order, slowly: truncate once two chunks are recorded complete,
    # while later chunks are still being written (each write past the cut re-extends the file with a hole).
    server = faulty_server(size=8 * MiB, rate=3 * MiB)
    part = mf.dest / "file.bin.part"
    target = mf.dest / "file.bin"
    proc = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(mf.dest), "--concurrency", "1")
    wait_for(lambda: _complete_chunks(mf) >= 2, "two complete chunks", proc)
    os.truncate(part, 1000)
    rc, _, err = _finish(proc)
    _assert_right_or_clean_failure(rc, err, target, server)
    server.configure(rate=None)
    again = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    assert again.returncode == 0, again.stderr
    assert sha256_of(target) == server.sha256()


# -- a full disk under the state DB ------------------------------------------------------------------------------
def _fill(where: Path) -> Path:
    """Fill the file system holding ``where`` to the last block; returns the filler to delete later."""
    filler = where / "filler"
    block = b"\0" * (64 << 10)
    with open(filler, "wb", buffering=0) as handle:
        for size in (len(block), 4096, 512, 1):
            try:
                while True:
                    handle.write(block[:size])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def test_state_db_on_a_full_disk_is_not_called_damaged(mf: Modfetch, faulty_server: Serve,
                                                       small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(small_tmpfs))
    server = faulty_server(size=4 * MiB, hold=True)
    proc = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(mf.dest), "--chunk-size", "256K")
    try:
        wait_for((mf.dest / "file.bin.part").exists, "the .part", proc)
        filler = _fill(small_tmpfs)
    finally:
        server.release()
    rc, _, err = _finish(proc)
    assert rc == 1, err
    line = assert_clean_error(err, "state database")
    assert "damaged" not in line and "aside" not in err, "a full disk must not send the user to delete state"
    assert "free some space" in err
    filler.unlink()
    again = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    assert again.returncode == 0, again.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()


# -- the process's own surroundings ---------------------------------------------------------------------------
def test_relative_dest_from_a_deleted_cwd_is_a_clear_error(mf: Modfetch, faulty_server: Serve,
                                                            tmp_path: Path) -> None:
    server = faulty_server(size=MiB)
    gone = tmp_path / "gone"
    gone.mkdir()
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    done = subprocess.run(["sh", "-c", script, "sh", str(gone),
                           *mf.command("--quiet", "download", "--url", server.url, "--dest", "models")],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy(), check=False)
    assert done.returncode == 2, done.stderr
    assert_clean_error(done.stderr, "current directory")


# -- names at the file-system limits ------------------------------------------------------------------------------
def test_longest_allowed_name_downloads_with_part_and_sidecar(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    name = "m" * 235 + ".gguf"  # 240 bytes: .part and .sha256 beside it still fit NAME_MAX (255)
    done = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest), "--out", name)
    assert done.returncode == 0, done.stderr
    assert sha256_of(mf.dest / name) == server.sha256()
    assert (mf.dest / f"{name}.sha256").read_text().split()[0] == server.sha256()


def test_too_long_out_name_says_it_is_too_long(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    done = mf.run("--quiet", "download", "--url", server.url, "--dest", str(mf.dest), "--out", "m" * 250 + ".gguf")
    assert done.returncode == 2, done.stderr
    assert_clean_error(done.stderr, "--out", "bytes")
    assert server.requests == []
