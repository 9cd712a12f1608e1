"""The model library: list what modfetch holds on disk, remove files with their placements, prune leftovers.

Only what modfetch itself recorded is ever deleted, and each thing is checked first: a symlink must still point
at the file, a hardlink must still share its inode, a copy must still hash to the file's SHA-256, a Modelfile
must still be the one modfetch wrote.  Anything the user replaced is kept (and reported).  Each file is handled
under its target lock (``engine.files.TargetLock``), so nothing is removed under a running download.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..engine.files import TargetLock
from ..engine.hashing import sha256_file
from ..errors import LockedError, UsageError
from ..paths import expand_path
from ..state import (
    FINISHED_STATUSES,
    MISMATCH,
    VERIFIED,
    DownloadRow,
    PlacementRow,
    StateDB,
)

LISTED_STATUSES = (*FINISHED_STATUSES, MISMATCH)
DEFAULT_PRUNE_AGE = 7 * 86400.0  # `.part` files of interrupted/failed downloads older than this are deleted


@dataclass
class LibraryEntry:
    """One file modfetch holds, as ``modfetch list`` shows it (one ``stat`` each, no hashing)."""

    row: DownloadRow
    status: str  # complete | verified | mismatch | missing
    placements: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        verified = self.row.meta.get("verified_at")
        return {"id": self.row.id, "path": self.row.dest_path, "size": self.row.size, "source": self.row.source,
                "type": self.row.artifact_type, "status": self.status, "url": self.row.url,
                "sha256": self.row.sha256,
                "last_verified": verified if isinstance(verified, (int, float)) else None,
                "placements": self.placements}


def list_library(db: StateDB, source: str | None = None, artifact_type: str | None = None) -> list[LibraryEntry]:
    """Every finished (or mismatching) download with its on-disk state, newest first."""
    entries = []
    for row in db.list_downloads(statuses=LISTED_STATUSES, source=source):
        if artifact_type and (row.artifact_type or "") != artifact_type:
            continue
        placements = [{"app": p.app, "mode": p.mode, "target": p.target_path,
                       "present": os.path.lexists(p.target_path)} for p in placements_of(db, row)]
        entries.append(LibraryEntry(row, disk_status(row), placements))
    return entries


def disk_status(row: DownloadRow) -> str:
    """``missing`` when the file is gone, ``mismatch`` when recorded so or its size changed, else the row's."""
    try:
        st = os.stat(row.dest_path)
    except OSError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return MISMATCH
    if row.status == MISMATCH or (row.size is not None and st.st_size != row.size):
        return MISMATCH
    return row.status


def placements_of(db: StateDB, row: DownloadRow) -> list[PlacementRow]:
    """Placements recorded for the download, by id or (``place PATH`` of a known file) by its path."""
    found = {p.id: p for p in db.placements(download_id=row.id)}
    found.update({p.id: p for p in db.placements(source_path=row.dest_path)})
    return sorted(found.values(), key=lambda p: p.id)


# -- removing ---------------------------------------------------------------------------------------------
@dataclass
class RemovalReport:
    """What ``rm`` / ``prune`` did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "<path>: why"
    failed: list[str] = field(default_factory=list)  # "<path>: why"
    forgotten: list[int] = field(default_factory=list)
    bytes_freed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"dry_run": self.dry_run, "removed": self.removed, "kept": self.kept, "failed": self.failed,
                "forgotten": self.forgotten, "bytes_freed": self.bytes_freed}

    def delete(self, path: Path) -> bool:
        """Unlink ``path`` (a file or link), counting the bytes a last link frees; False (recorded) on failure."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True
        except OSError as exc:
            self.failed.append(f"{path}: {exc.strerror or exc}")
            return False
        if stat.S_ISDIR(st.st_mode):
            self.failed.append(f"{path}: is a directory")
            return False
        if not self.dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return True
            except OSError as exc:
                self.failed.append(f"{path}: {exc.strerror or exc}")
                return False
        self.removed.append(str(path))
        if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:  # another link keeps the data alive
            # A preallocated .part may be sparse: count the blocks it holds, at most its size.
            self.bytes_freed += min(st.st_size, st.st_blocks * 512) if st.st_blocks else st.st_size
        return True


def find_rows(db: StateDB, targets: Iterable[str]) -> list[DownloadRow]:
    """The downloads named by IDs or paths; UsageError (exit 2, like ``status``) naming the first unknown one."""
    rows: dict[int, DownloadRow] = {}
    for target in targets:
        row: DownloadRow | None = None
        if target.isascii() and target.isdigit():
            row = db.get_download(int(target)) if int(target) < 2**63 else None
            if row is None:
                raise UsageError(f"no download with id {target}", hint="run 'modfetch list' to see them")
        elif "://" in target:  # the PATH that `status` shows for a failure keyed by its URI
            found = db.find_by_dest(target.strip())
            row = found if found is not None and not names_a_file(found) else None
        elif "\x00" not in target:
            path = expand_path(target)
            for candidate in dict.fromkeys([str(path), os.path.realpath(path)]):
                row = row or db.find_by_dest(candidate)
        if row is None:
            raise UsageError(f"no download matches {target!r}", hint="use an ID or a path from 'modfetch list'")
        rows[row.id] = row
    return list(rows.values())


def remove_downloads(config: Config, db: StateDB, rows: list[DownloadRow], *, keep_file: bool = False,
                     dry_run: bool = False) -> RemovalReport:
    """Remove each download's file, sidecar, ``.part`` and verified placements, then forget its rows.

    With ``keep_file`` nothing on disk is touched: the rows alone are forgotten."""
    report = RemovalReport(dry_run=dry_run)
    for row in rows:
        dest = Path(row.dest_path)
        try:
            with TargetLock(config.data_root / "locks", dest):
                current = db.get_download(row.id)
                if current is None:
                    continue  # another rm got there first
                failures = len(report.failed)
                if not keep_file and names_a_file(current):
                    _remove_files(db, current, report)
                if len(report.failed) == failures:  # keep the rows of what could not be removed: rm again
                    forget(db, current, report)
        except LockedError as exc:
            report.failed.append(f"{dest}: {exc.message}")
    return report


def _remove_files(db: StateDB, row: DownloadRow, report: RemovalReport) -> None:
    dest = Path(row.dest_path)
    for placement in placements_of(db, row):
        target = Path(placement.target_path)
        verdict = placement_verdict(placement, row)
        if verdict == "ours":
            blob = os.path.realpath(target) if os.path.islink(target) else None
            if report.delete(target) and blob is not None and blob != os.path.realpath(dest) and not report.dry_run:
                leftover = _cache_blob_after(Path(blob), row)
                if leftover is not None:
                    report.delete(leftover)
        elif verdict != "absent":
            report.kept.append(f"{target}: {verdict}")
    sidecar = dest.with_name(dest.name + ".sha256")
    if row.sha256 and _sidecar_names(sidecar, row.sha256, dest.name):
        report.delete(sidecar)
    if os.path.lexists(row.part_path) and stat.S_ISREG(os.lstat(row.part_path).st_mode):
        report.delete(row.part_path)
    verdict = dest_verdict(row)
    if verdict == "ours":
        report.delete(dest)
    elif verdict != "absent":
        report.kept.append(f"{dest}: {verdict}")
    remove_sidecars(row, report)


MAX_SIDECAR_BYTES = 32 << 20  # a --metadata info JSON or preview (at most 16 MiB); anything bigger is not one


def sidecar_holds(path: Path, sha256: str) -> bool:
    """True when ``path`` is a small regular file (not a link) whose SHA-256 is ``sha256``."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDECAR_BYTES:
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def remove_sidecars(row: DownloadRow, report: RemovalReport) -> None:
    """The ``--metadata`` sidecars recorded for ``row`` (``app.metadata``), each once the file it sits beside
    is gone (removed now or before) and only while its bytes are still the ones modfetch wrote."""
    for item in row.meta.get("sidecars") or []:
        if not isinstance(item, dict):
            continue
        path, want, beside = item.get("path"), item.get("sha256"), item.get("beside")
        if not (isinstance(path, str) and isinstance(want, str) and isinstance(beside, str)):
            continue
        if os.path.lexists(beside) and not (report.dry_run and beside in report.removed):
            continue  # its model is still there (a copy kept, a file the user put there): the sidecar stays
        if sidecar_holds(Path(path), want):
            report.delete(Path(path))
        elif os.path.lexists(path):
            report.kept.append(f"{path}: changed since modfetch wrote it")


def names_a_file(row: DownloadRow) -> bool:
    """False for a row keyed by its URI (``hf://...``: a failure before any target was known).  Such a
    ``dest_path`` is no path at all; read as one it would name something relative to the current directory."""
    return os.path.isabs(row.dest_path)


def dest_verdict(row: DownloadRow) -> str:
    """``ours`` when the file at the download's path is still the one modfetch installed there, ``absent``
    when nothing is there, otherwise why it is someone else's now (it is then left alone).

    Ours, as the engine's repair judges it: the recorded size and the inode recorded when it was installed
    (damaged in place or not; without a recorded inode, the size alone), or else the download's exact bytes (a
    restore from backup).  The size counts too because a file deleted and replaced often gets the freed inode
    number back.  A link, directory or other file the user put in its place is never removed."""
    try:
        lst = os.lstat(row.dest_path)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"cannot inspect: {exc.strerror or exc}"
    if stat.S_ISLNK(lst.st_mode):
        return "a link put in its place (not the file modfetch downloaded)"
    if not stat.S_ISREG(lst.st_mode):
        return "not a file any more"
    recorded = row.meta.get("stat")
    inode = recorded[2] if isinstance(recorded, list) and len(recorded) >= 3 else lst.st_ino
    if row.size is not None and lst.st_size == row.size and inode == lst.st_ino:
        return "ours"
    try:
        same = bool(row.sha256) and lst.st_size == row.size and sha256_file(row.dest_path) == row.sha256
        return "ours" if same else "not the file modfetch installed (other size, inode and bytes): delete it yourself"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"


def _sidecar_names(sidecar: Path, sha256: str, name: str) -> bool:
    """True when ``sidecar`` is exactly the checksum file modfetch wrote for ``name``."""
    try:
        st = os.lstat(sidecar)
        return stat.S_ISREG(st.st_mode) and st.st_size < 1024 and \
            sidecar.read_text(encoding="utf-8", errors="replace") == f"{sha256}  {name}\n"
    except OSError:
        return False


def placement_verdict(placement: PlacementRow, row: DownloadRow) -> str:
    """``ours`` when ``placement``'s target is still what modfetch put there for ``row``, ``absent`` when it is
    gone, otherwise why it is not ours any more (it is then left alone)."""
    target = placement.target_path
    try:
        lst = os.lstat(target)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"cannot inspect: {exc.strerror or exc}"
    sources = {row.dest_path, placement.source_path, os.path.realpath(row.dest_path)}
    if stat.S_ISLNK(lst.st_mode):
        text = os.readlink(target)
        pointed = os.path.normpath(os.path.join(os.path.dirname(target), text))
        if pointed in sources or os.path.realpath(target) in sources:
            return "ours"
        # An HF-cache snapshot links to its blob, which holds the file's bytes (a hardlink or verified copy).
        real = os.path.realpath(target)
        return "ours" if os.path.isfile(real) and holds_bytes_of(real, row) else "a link that points elsewhere now"
    if not stat.S_ISREG(lst.st_mode):
        return "not a file or link any more"
    if placement.mode == "modelfile":
        wanted = {f"FROM {s}\n" for s in sources}
        try:
            ours = lst.st_size < 4096 and Path(target).read_text(encoding="utf-8", errors="replace") in wanted
        except OSError:
            ours = False
        return "ours" if ours else "changed since modfetch wrote it"
    try:
        return "ours" if holds_bytes_of(target, row) else "changed since modfetch placed it"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"


def holds_bytes_of(path: str, row: DownloadRow) -> bool:
    """True when the regular file ``path`` is the download's file (same inode) or a copy of its bytes."""
    st = os.stat(path)
    with contextlib.suppress(OSError):
        if os.path.samestat(st, os.stat(row.dest_path)):
            return True
    return bool(row.sha256) and (row.size is None or st.st_size == row.size) and sha256_file(path) == row.sha256


def _cache_blob_after(blob: Path, row: DownloadRow) -> Path | None:
    """``blob`` when it is an HF-cache blob (``<repo>/blobs/<etag>``) that a removed snapshot link pointed to,
    holds the download's bytes and no other snapshot of that repo links to any more (a blob shared by another
    revision is kept)."""
    snapshots = blob.parent.parent / "snapshots"
    if blob.parent.name != "blobs" or not snapshots.is_dir() or not blob.is_file():
        return None
    for folder, _dirs, files in os.walk(snapshots):
        for name in files:
            other = os.path.join(folder, name)
            if os.path.islink(other) and os.path.realpath(other) == str(blob):
                return None
    try:
        return blob if holds_bytes_of(str(blob), row) else None
    except OSError:
        return None


def forget(db: StateDB, row: DownloadRow, report: RemovalReport) -> None:
    if not report.dry_run:
        db.forget_download(row.id)
    report.forgotten.append(row.id)


__all__ = [
    "DEFAULT_PRUNE_AGE",
    "VERIFIED",
    "LibraryEntry",
    "RemovalReport",
    "dest_verdict",
    "disk_status",
    "find_rows",
    "forget",
    "list_library",
    "names_a_file",
    "placement_verdict",
    "placements_of",
    "remove_downloads",
    "remove_sidecars",
]
