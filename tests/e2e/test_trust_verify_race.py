"""Finding 9: ``verify`` never judges a file against a stale row.

``verify --all`` used to read every row first and hash later: a ``--force`` re-download finishing in between was
judged against the old hash and marked ``mismatch`` (and a plain rerun then refused the good file).  Now each
target's download lock is taken while it is hashed (a target being downloaded is reported as skipped, busy),
the row is re-read under that lock, and the verdict is written in one transaction only if the row is still the
one hashed against.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch.app.status import verify_rows
from modfetch.engine.files import TargetLock
from modfetch.state import DownloadRow, open_state
from tests.conftest import Modfetch, sha256_of
from tests.e2e.test_trust_locks import hold_flock
from tests.servers.lookalike import LookalikeServer, Request, Response, pseudo_random_bytes, serve_bytes


class Versioned:
    """A file server whose content the test swaps (a new upstream version, as ``--force`` fetches)."""

    def __init__(self) -> None:
        self.data = pseudo_random_bytes("v1", 1 << 20)
        self.server = LookalikeServer(self._app).start()

    def _app(self, request: Request) -> Response:
        data = self.data
        return serve_bytes(request, data, etag=f'"{hashlib.sha256(data).hexdigest()[:16]}"')

    @property
    def url(self) -> str:
        return self.server.url + "/model.bin"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@pytest.fixture
def upstream() -> Iterator[Versioned]:
    versioned = Versioned()
    yield versioned
    versioned.server.stop()


def _locks(mf: Modfetch) -> Path:
    return mf.home / ".local" / "share" / "modfetch" / "locks"


def _status(mf: Modfetch) -> str:
    """The file's row (a refused concurrent attempt leaves a URL-keyed ``failed`` row beside it)."""
    (row,) = [r for r in mf.rows() if r["status"] != "failed"]
    return str(row["status"])


def test_target_being_downloaded_is_skipped_not_judged(mf: Modfetch, upstream: Versioned) -> None:
    """Another process holds the target's lock and is replacing the file: verify says busy, writes nothing."""
    result = mf.run("download", "--quiet", "--url", upstream.url, "--dest", str(mf.dest))
    assert result.returncode == 0, result.stderr
    target = mf.dest / "model.bin"
    holder = hold_flock(TargetLock(_locks(mf), target).path)
    try:
        # What a re-download's install looks like from outside: new bytes in place, row not yet updated.
        target.write_bytes(pseudo_random_bytes("v2", 1 << 20))
        verify = mf.run("verify", "--all", timeout=30)
    finally:
        holder.release()
    assert verify.returncode == 0, verify.stdout + verify.stderr
    (line,) = [line for line in verify.stdout.splitlines() if str(target) in line]
    assert line.startswith("SKIP") and "busy" in line and "another" in line, line
    assert _status(mf) == "complete"  # no verdict written while the download holds the target


def test_force_redownload_after_the_snapshot_is_judged_on_the_fresh_row(mf: Modfetch, upstream: Versioned) -> None:
    """Rows read, then a real ``--force`` re-download of a new version completes, then the hashing: verified."""
    assert mf.run("download", "--quiet", "--url", upstream.url, "--dest", str(mf.dest)).returncode == 0
    db = open_state(mf.state_db)
    try:
        snapshot = db.list_downloads()  # what `verify --all` read first
        upstream.data = pseudo_random_bytes("v2", 1 << 20)
        redo = mf.run("download", "--quiet", "--force", "--url", upstream.url, "--dest", str(mf.dest))
        assert redo.returncode == 0, redo.stderr
        assert sha256_of(mf.dest / "model.bin") == upstream.sha256
        (outcome,) = verify_rows(db, snapshot)  # (the CLI also passes the lock dir; not needed here)
    finally:
        db.close()
    assert outcome.ok and not outcome.skipped, outcome.message
    assert _status(mf) == "verified"
    again = mf.run("download", "--quiet", "--url", upstream.url, "--dest", str(mf.dest))
    assert again.returncode == 0, again.stderr  # a plain rerun accepts the good file


def test_row_replaced_while_hashing_gets_no_verdict(mf: Modfetch, upstream: Versioned) -> None:
    """The row changes between the hash and the write (hook): no stale verdict, reported as skipped."""
    assert mf.run("download", "--quiet", "--url", upstream.url, "--dest", str(mf.dest)).returncode == 0
    new_sha = "f" * 64

    def replace_row(row: DownloadRow) -> None:
        # Another writer (its own connection, like another process) records a new version of this download.
        conn = sqlite3.connect(mf.state_db, isolation_level=None)
        try:
            conn.execute("UPDATE downloads SET sha256 = ?, updated_at = ? WHERE id = ?",
                         (new_sha, time.time() + 1, row.id))
        finally:
            conn.close()

    db = open_state(mf.state_db)
    try:
        (outcome,) = verify_rows(db, db.list_downloads(), _locks(mf), on_hashed=replace_row)
    finally:
        db.close()
    assert outcome.skipped and not outcome.ok and "changed" in outcome.message
    (row,) = mf.rows()
    assert (row["status"], row["sha256"], row["error"]) == ("complete", new_sha, None)


def test_verify_holds_the_target_lock_while_hashing(mf: Modfetch, upstream: Versioned) -> None:
    """While verify hashes a file, a download of that target is refused at once (it cannot swap the bytes)."""
    assert mf.run("download", "--quiet", "--url", upstream.url, "--dest", str(mf.dest)).returncode == 0
    seen: list[subprocess.CompletedProcess[str]] = []

    def download_meanwhile(_row: DownloadRow) -> None:
        seen.append(mf.run("download", "--quiet", "--force", "--url", upstream.url, "--dest", str(mf.dest)))

    db = open_state(mf.state_db)
    try:
        (outcome,) = verify_rows(db, db.list_downloads(), _locks(mf), on_hashed=download_meanwhile)
    finally:
        db.close()
    (during,) = seen
    assert during.returncode != 0 and "already downloading" in during.stderr, during.stderr
    assert outcome.ok and _status(mf) == "verified"
