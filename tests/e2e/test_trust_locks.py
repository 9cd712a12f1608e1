"""Finding 5: no lock anyone else holds can hang a download.

Each lock is held by a separate process (another user's process in real life: the metrics lock file used to
be 0644, and ``flock`` works on a read-only descriptor).  The holder prints ``locked`` on a pipe once it holds
the lock, so the tests wait on that condition, never on a sleep.  Then a real ``modfetch`` process runs:

* metrics textfile lock held -> the download still finishes promptly, verified (that metrics write is skipped);
* a download target's lock held -> one clear "another process" line at once, the holder's file content (it
  can write anything there) never echoed;
* the state DB held in an exclusive transaction -> one clear "locked by another process" line after the
  configured bounded wait, and the interrupted download resumes once the holder is gone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modfetch.engine.files import TargetLock
from tests.conftest import MiB, assert_clean_error, sha256_of, wait_for

# Opens argv[1] the way a hostile local user could (read-only, creating it 0644 like an older modfetch did),
# optionally writes argv[2] into it first, takes an exclusive flock, says so, and holds until stdin closes.
_FLOCK_HOLDER = r"""
import fcntl, os, sys
path = sys.argv[1]
if len(sys.argv) > 2:
    with open(path, "w") as fh:
        fh.write(sys.argv[2])
fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""

# Holds the SQLite database argv[1] in an exclusive transaction until stdin closes.
_DB_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


class Holder:
    """A separate process holding a lock until ``release()``; started only once it printed ``locked``."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the holder has the lock (or died)
        if line.strip() != "locked":
            self.release()
            pytest.fail(f"lock holder did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")

    def release(self) -> None:
        """Let the holder exit (closing its stdin) and reap it."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def hold_flock(path: Path, content: str | None = None) -> Holder:
    """A process holding an exclusive flock on ``path`` (through a read-only descriptor)."""
    return Holder(_FLOCK_HOLDER, str(path), *([content] if content is not None else []))


def hold_db(path: Path) -> Holder:
    """A process holding ``path`` in an exclusive SQLite transaction."""
    return Holder(_DB_HOLDER, str(path))


def _metrics_config(mf, home: Path) -> Path:  # type: ignore[no-untyped-def]
    textfile = home / "textfile" / "modfetch.prom"
    mf.write_config(metrics={"prometheus_textfile": {"enabled": True, "path": str(textfile)}})
    return textfile


def test_metrics_lock_file_is_private(mf, faulty_server, isolated_env: Path) -> None:
    """The lock is created 0600, and one left 0644 (by an older modfetch) is tightened on the next write."""
    textfile = _metrics_config(mf, isolated_env)
    lock = textfile.parent / f".{textfile.name}.lock"
    result = mf.run("download", "--quiet", "--url", faulty_server(size=MiB).url, "--dest", str(mf.dest))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    os.chmod(lock, 0o644)
    second = faulty_server(size=MiB, seed=2, path="/two.bin").url
    result = mf.run("download", "--quiet", "--url", second, "--dest", str(mf.dest))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_held_metrics_lock_never_blocks_a_download(mf, faulty_server, isolated_env: Path) -> None:
    """Another process flocks the metrics lock forever: the download finishes promptly, verified."""
    textfile = _metrics_config(mf, isolated_env)
    textfile.parent.mkdir(parents=True)
    server = faulty_server(size=2 * MiB)
    holder = hold_flock(textfile.parent / f".{textfile.name}.lock")
    try:
        started = time.monotonic()
        try:
            result = mf.run("--log-level", "debug", "download", "--url", server.url, "--sha256", server.sha256(),
                            "--dest", str(mf.dest), timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the download hung on the metrics lock another process holds")
        elapsed = time.monotonic() - started
    finally:
        holder.release()
    assert result.returncode == 0, result.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert [(r["status"], r["sha256"]) for r in mf.rows()] == [("complete", server.sha256())]
    assert "skipping this metrics write" in result.stderr
    assert not textfile.exists()  # every write was skipped, none waited
    assert elapsed < 20, elapsed


@pytest.mark.parametrize("content", ["", "\x1b]0;owned\x07\x1b[2J"])
def test_held_target_lock_fails_at_once_with_a_clear_line(mf, faulty_server, content: str) -> None:
    """A target lock held by another process: one clean error at once; the holder's bytes never printed."""
    server = faulty_server(size=MiB)
    lock = TargetLock(mf.home / ".local" / "share" / "modfetch" / "locks", mf.dest / "file.bin")
    lock.path.parent.mkdir(parents=True)
    holder = hold_flock(lock.path, content)
    try:
        started = time.monotonic()
        result = mf.run("download", "--quiet", "--url", server.url, "--dest", str(mf.dest), timeout=30)
        elapsed = time.monotonic() - started
    finally:
        holder.release()
    assert result.returncode != 0
    assert_clean_error(result.stderr, "another process", str(lock.path), "file.bin")
    assert "\x1b" not in result.stderr and "owned" not in result.stderr
    assert elapsed < 15, elapsed
    assert not (mf.dest / "file.bin").exists()


def test_state_db_held_exclusively_gives_a_clear_error_after_a_bounded_wait(
        mf, faulty_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open blocked by an exclusive transaction: "locked by another process" after the bounded wait."""
    monkeypatch.setenv("MODFETCH_DB_BUSY_TIMEOUT", "1")
    server = faulty_server(size=MiB)
    assert mf.run("status").returncode == 0  # creates the DB
    holder = hold_db(mf.state_db)
    try:
        started = time.monotonic()
        result = mf.run("download", "--quiet", "--url", server.url, "--dest", str(mf.dest), timeout=25)
        elapsed = time.monotonic() - started
    finally:
        holder.release()
    assert result.returncode == 1
    line = assert_clean_error(result.stderr, "locked by another process", str(mf.state_db))
    assert "damaged" not in line and "free some space" not in result.stderr
    assert 1 <= elapsed < 15, elapsed


def test_state_db_locked_mid_download_fails_clearly_and_resumes_later(
        mf, faulty_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DB is locked while a download runs: it stops with the clear line; rerun afterwards completes."""
    monkeypatch.setenv("MODFETCH_DB_BUSY_TIMEOUT", "1")
    server = faulty_server(size=2 * MiB, hold=True)
    proc = mf.popen("download", "--quiet", "--url", server.url, "--dest", str(mf.dest))
    holder = None
    try:
        wait_for(lambda: bool(server.data_requests()), "the download to start transferring", proc)
        holder = hold_db(mf.state_db)
        server.release()
        try:
            _out, err = proc.communicate(timeout=25)
        except subprocess.TimeoutExpired:
            pytest.fail("the download waited endlessly for the locked state DB")
    finally:
        if holder is not None:
            holder.release()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert_clean_error(err, "locked by another process")
    result = mf.run("download", "--quiet", "--url", server.url, "--dest", str(mf.dest))
    assert result.returncode == 0, result.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
