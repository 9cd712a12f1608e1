"""Status and verify services over the state DB."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..engine.files import TargetLock, file_stamp
from ..engine.hashing import sha256_file
from ..errors import LockedError, UsageError
from ..paths import expand_path
from ..state import (
    COMPLETE,
    FILE_MISSING,
    FINISHED_STATUSES,
    MISMATCH,
    VERIFIED,
    DownloadRow,
    StateDB,
    open_state,
    progress_fraction,
)


def open_db(config: Config) -> StateDB:
    """Open the state DB for a command (creating it when missing)."""
    return open_state(config.state_db)


def select_downloads(db: StateDB, selector: str | None, statuses: list[str] | None = None,
                     source: str | None = None) -> list[DownloadRow]:
    """Downloads matching an id, a path or a URL (all when ``selector`` is None)."""
    rows = db.list_downloads(statuses=statuses, source=source)
    if selector is None:
        return rows
    if selector.isascii() and selector.isdigit():  # str.isdigit() alone accepts '²', which int() rejects
        # Ids are SQLite integers: a longer number is no id (and would overflow the query).
        row = db.get_download(int(selector)) if int(selector) < 2**63 else None
        if row is None:
            raise UsageError(f"no download with id {selector}", hint="run 'modfetch status' to list them")
        return [row]
    if "\x00" in selector:  # no path or URL holds one; expanduser("~\x00") raises ValueError
        raise UsageError(f"no download matches {selector!r}", hint="use an id, a file path or a URL")
    if "://" in selector:
        matches = [r for r in rows if selector in (r.url, r.resolved_url)]
    else:
        path = str(expand_path(selector))
        matches = [r for r in rows if r.dest_path == path or r.part_path == Path(path)]
    if not matches:
        raise UsageError(f"no download matches {selector!r}",
                         hint="use an id, a file path or a URL from 'modfetch status'")
    return matches


def progress_of(row: DownloadRow) -> float | None:
    """Fraction done (0..1), or None when the size is unknown."""
    return progress_fraction(row.status, row.size, row.bytes_done)


MISSING = "missing"


@dataclass
class VerifyOutcome:
    """One re-hashed file; ``skipped`` when it could not be judged now (being downloaded, or changed meanwhile)."""

    row: DownloadRow
    ok: bool
    sha256: str | None
    message: str
    skipped: bool = False


def verify_rows(db: StateDB, rows: list[DownloadRow], lock_dir: Path | None = None,
                on_hashed: Callable[[DownloadRow], None] | None = None) -> list[VerifyOutcome]:
    """Re-hash finished files and record ``verified`` or ``mismatch``.

    ``rows`` only says which downloads to look at: each target's download lock (under ``lock_dir``) is taken
    first (a target being downloaded is skipped, never judged half-written), its row is re-read under that
    lock, and the verdict is written only if the row is still the one hashed against (``on_hashed`` runs in
    between, for tests).  A ``--force`` re-download finishing after ``rows`` was read is never judged
    against its old hash."""
    outcomes = []
    for snapshot in rows:
        lock = TargetLock(lock_dir, Path(snapshot.dest_path)) if lock_dir is not None else None
        try:
            if lock is not None:
                lock.acquire()
        except LockedError as exc:
            outcomes.append(VerifyOutcome(snapshot, False, None, f"skipped, busy: {exc.message}", skipped=True))
            continue
        try:
            row = db.get_download(snapshot.id)
            if row is None:
                outcomes.append(VerifyOutcome(snapshot, False, None, "skipped: forgotten meanwhile", skipped=True))
            else:
                outcomes.append(_verify_one(db, row, on_hashed))
        finally:
            if lock is not None:
                lock.release()
    return outcomes


def _verify_one(db: StateDB, row: DownloadRow, on_hashed: Callable[[DownloadRow], None] | None) -> VerifyOutcome:
    """Hash one (freshly read) row's file and record the verdict unless the row changed meanwhile."""
    path = Path(row.dest_path)
    if not row.sha256 or row.status not in (*FINISHED_STATUSES, MISMATCH):
        return VerifyOutcome(row, False, None, f"not finished ({row.status})")
    if not os.path.lexists(path):
        # Not a mismatch: the row stays as it was, so `modfetch list` shows "missing" and `prune` forgets it.
        return _judge(db, row, VerifyOutcome(row, False, None, MISSING), error=FILE_MISSING)
    if not path.is_file():  # a directory or FIFO put in its place: reading a FIFO would block forever
        return _judge(db, row, VerifyOutcome(row, False, None, "not a regular file"),
                      status=MISMATCH, error="not a regular file")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return VerifyOutcome(row, False, None, f"cannot read: {exc.strerror}")
    if on_hashed is not None:
        on_hashed(row)
    if actual == row.sha256:
        st = os.stat(path)
        meta = dict(row.meta, stat=file_stamp(st), verified_at=time.time())
        return _judge(db, row, VerifyOutcome(row, True, actual, "ok"), status=VERIFIED, error=None, meta=meta)
    return _judge(db, row, VerifyOutcome(row, False, actual, "MISMATCH"),
                  status=MISMATCH, error=f"on-disk sha256 {actual} != recorded {row.sha256}")


def _judge(db: StateDB, row: DownloadRow, outcome: VerifyOutcome, **fields: Any) -> VerifyOutcome:
    """Write ``fields`` in one transaction only if the row is still ``row``; else a skipped outcome."""
    with db.transaction():
        now = db.get_download(row.id)
        same = now is not None and all(getattr(now, name) == getattr(row, name)
                                       for name in ("dest_path", "sha256", "status", "updated_at"))
        if same:
            db.update_download(row.id, **fields)
    if same:
        return outcome
    return VerifyOutcome(row, False, None, "skipped: its download changed while it was hashed; not judged "
                         "(rerun verify)", skipped=True)


def verify_paths(db: StateDB, paths: list[str], lock_dir: Path | None = None) -> list[VerifyOutcome]:
    """Verify files by path: known downloads against the DB, others against a ``<file>.sha256`` beside them."""
    outcomes = []
    for raw in paths:
        path = expand_path(raw)
        row = db.find_by_dest(str(path))
        if row is not None:
            outcomes.extend(verify_rows(db, [row], lock_dir))
            continue
        checksum = path.with_name(path.name + ".sha256")
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        if not path.is_file():
            raise UsageError(f"not a regular file: {path}")
        if not checksum.exists():
            raise UsageError(f"{path} is not a known download and has no {checksum.name}")
        recorded = _sidecar_hash(checksum)
        actual = sha256_file(path)
        fake = DownloadRow(id=0, url="", dest_path=str(path), status=COMPLETE, sha256=recorded)
        ok = actual == recorded
        outcomes.append(VerifyOutcome(fake, ok, actual, "ok" if ok else "MISMATCH"))
    return outcomes


def _sidecar_hash(checksum: Path) -> str:
    """The SHA-256 in a ``sha256sum``-style file (``HEX  name``); UsageError when it holds none."""
    try:
        words = checksum.read_bytes()[:4096].decode("utf-8", "replace").split()
    except OSError as exc:
        raise UsageError(f"cannot read {checksum}: {exc.strerror or exc}") from None
    recorded = words[0].lower() if words else ""
    if len(recorded) != 64 or any(c not in "0123456789abcdef" for c in recorded):
        raise UsageError(f"{checksum} does not start with a SHA-256 (64 hex digits)",
                         hint="its format is that of sha256sum: HEX  NAME")
    return recorded


__all__ = ["MISSING", "VERIFIED", "VerifyOutcome", "open_db", "progress_of", "select_downloads", "verify_paths",
           "verify_rows"]
