"""``modfetch prune``: forget downloads whose files are gone, remove modfetch's placements that now dangle, and
delete stale ``.part`` files — with the same "only what modfetch made, checked first" rule as ``app.library``."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

from ..config import Config
from ..engine.files import TargetLock
from ..errors import LockedError
from ..state import FINISHED_STATUSES, MISMATCH, RUNNING, DownloadRow, PlacementRow, StateDB, pid_alive
from .library import (
    DEFAULT_PRUNE_AGE,
    RemovalReport,
    forget,
    names_a_file,
    placements_of,
    remove_sidecars,
)


def prune(config: Config, db: StateDB, older_than: float = DEFAULT_PRUNE_AGE, dry_run: bool = False,
          now: float | None = None) -> RemovalReport:
    """Forget downloads whose files are gone, remove modfetch's placements that now dangle, and delete the
    ``.part`` of interrupted/failed downloads not touched for ``older_than`` seconds (forgetting them)."""
    report = RemovalReport(dry_run=dry_run)
    cutoff = (time.time() if now is None else now) - older_than
    for row in db.list_downloads():
        if row.status == RUNNING and pid_alive(row.pid):
            continue
        dest = Path(row.dest_path)
        try:
            with TargetLock(config.data_root / "locks", dest):
                _prune_row(db, row, report, cutoff)
        except LockedError:
            continue  # a download is running: leave it be
    for placement in db.placements():
        if placement.download_id is not None:
            continue  # handled with its download above
        _prune_placement(db, placement, report)
    return report


def _prune_row(db: StateDB, row: DownloadRow, report: RemovalReport, cutoff: float) -> None:
    if not names_a_file(row):  # a failure keyed by its URI: nothing of it on disk, nothing to resume
        forget(db, row, report)
        return
    dest = Path(row.dest_path)
    part = row.part_path
    finished = row.status in (*FINISHED_STATUSES, MISMATCH)
    if not os.path.lexists(dest) and _not_mounted(dest):
        # Forgetting would lose the records (and the app links) of files that come back with the mount;
        # `rm ID` forgets on purpose.
        report.kept.append(f"{dest}: its folder {dest.parent} is missing too (a disk not mounted?); not "
                           f"forgotten: 'modfetch rm {row.id}' forgets it")
        return
    if finished and not os.path.lexists(dest):
        for placement in placements_of(db, row):
            _prune_placement(db, placement, report, row)
        remove_sidecars(row, report)
        forget(db, row, report)
        return
    if finished:
        for placement in placements_of(db, row):
            _prune_placement(db, placement, report, row)
        return
    try:
        part_st = os.lstat(part)
    except FileNotFoundError:
        if not os.path.lexists(dest):
            forget(db, row, report)  # nothing of it on disk: nothing to resume
        return
    stale = stat.S_ISREG(part_st.st_mode) and part_st.st_mtime < cutoff and row.updated_at < cutoff
    if stale and report.delete(part):
        forget(db, row, report)


def _not_mounted(dest: Path) -> bool:
    """True when ``dest``'s folder is gone and the nearest folder that exists is empty: what a disk or share
    that is not mounted looks like (its mount point stays, empty).  A deleted file, or a folder deleted from a
    library that still holds others, is not that."""
    if os.path.isdir(dest.parent):
        return False
    for ancestor in dest.parent.parents:
        if os.path.isdir(ancestor):
            try:
                with os.scandir(ancestor) as entries:
                    return next(entries, None) is None
            except OSError:
                return True
    return True


def _prune_placement(db: StateDB, placement: PlacementRow, report: RemovalReport,
                     row: DownloadRow | None = None) -> None:
    """Remove a placement whose file is gone: a symlink that now dangles (or a Modelfile naming a missing
    file) that modfetch made; forget a record whose target is gone.  Copies and hardlinks hold data: kept."""
    target = Path(placement.target_path)
    try:
        lst = os.lstat(target)
    except FileNotFoundError:
        if not report.dry_run:
            db.delete_placement(placement.id)
        return
    except OSError:
        return
    if os.path.exists(placement.source_path):
        return
    sources = {placement.source_path} | ({row.dest_path} if row is not None else set())
    ours = False
    if stat.S_ISLNK(lst.st_mode):
        pointed = os.path.normpath(os.path.join(os.path.dirname(target), os.readlink(target)))
        ours = pointed in sources and not os.path.exists(target)
    elif stat.S_ISREG(lst.st_mode) and placement.mode == "modelfile" and lst.st_size < 4096:
        with contextlib.suppress(OSError):
            ours = target.read_text(encoding="utf-8", errors="replace") in {f"FROM {s}\n" for s in sources}
    if ours and report.delete(target) and not report.dry_run:
        db.delete_placement(placement.id)



__all__ = ["prune"]
