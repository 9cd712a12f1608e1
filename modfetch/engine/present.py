"""Is the file already there?  The checks that make a rerun a no-op (or refuse to overwrite someone else's
file), adopt a file a killed process installed, and find and mend an installed file that rotted.

``Presence`` keeps one run's hash cache: a file is hashed at most once per ``Downloader.run``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import stat
import time
from pathlib import Path

from ..config import Config
from ..errors import ModfetchError, RemoteChangedError, TargetExistsError
from ..state import CHUNK_COMPLETE, COMPLETE, FINISHED_STATUSES, MISMATCH, DownloadRow, StateDB
from ..util.filenames import filename_from_url, safe_join, sanitize_filename
from ..util.http import strong_etag
from ..util.redact import redact_url
from .files import TargetLock, file_stamp, is_own_sidecar, write_checksum_file
from .hashing import sha256_file
from .http import RemoteChanged
from .partcopy import copy_into_part
from .probe import HeadResult, ProbeResult
from .request import DownloadRequest, DownloadResult
from .run import Run
from .transfer import transfer

log = logging.getLogger("modfetch.engine")


class Presence:
    """The "already present" checks of one downloader (``config``: lock folder, allow_overwrite)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._hashed: dict[tuple[object, ...], str] = {}  # (path, *file_stamp) -> sha256

    def _lock(self, dest: Path) -> TargetLock:
        return TargetLock(self.config.data_root / "locks", dest)

    def without_probe(self, db: StateDB, req: DownloadRequest, dest: Path | None = None) -> DownloadResult | None:
        """With an expected SHA-256 (or a git blob SHA-1 an earlier run verified) and a name known without asking
        the server (``--out``, the resolver's name or the URL's), a file already there with exactly those bytes
        is a no-op that sends no request at all.
        Anything else (no such file, other bytes) is left to the normal path after the probe.  ``dest``: the
        target of ``req.filename`` when the caller has already worked it out (``safe_join``)."""
        name = req.filename or filename_from_url(req.url)
        blob = req.expected_git_sha1.lower() if req.expected_git_sha1 and not req.expected else None
        if not (req.expected or blob) or not name:
            return None
        if dest is None or not req.filename:
            dest = safe_join(req.dest_dir, req.subdir, sanitize_filename(name))
        if not dest.is_file():
            return None
        with self._lock(dest):
            row = db.find_by_dest(str(dest))
            if blob is not None:
                # A repo's regular file (only its git blob SHA-1 is listed): ours when this URL's finished row
                # verified exactly that blob and the file still hashes to the row's SHA-256.
                if (row is None or row.status not in FINISHED_STATUSES or row.url != req.row_url or not row.sha256
                        or row.meta.get("git_sha1") != blob or self.cached_sha256(row, dest) != row.sha256):
                    return None
            elif self.cached_sha256(row, dest) != req.expected:
                return None
            unprobed = ProbeResult(url=req.url, size=None, ranges=False, etag=None, last_modified=None,
                                   filename=None)
            if blob is not None and row is not None and row.sha256:
                return self._adopt(db, row, req, unprobed, dest, row.sha256)
            return self.already_present(db, row, req, unprobed, dest)

    def after_head(self, db: StateDB, req: DownloadRequest, head: HeadResult) -> DownloadResult | None:
        """A rerun of a completed download whose HEAD still shows the same entity (size and a strong ETag, or
        Last-Modified when there is no ETag) needs no body request: for a server without Range support the
        probe's GET would otherwise start sending the whole file again.  Anything else takes the normal path."""
        validator = strong_etag(head.etag) or (None if head.etag else head.last_modified)
        name = req.filename or head.filename or filename_from_url(head.url) or filename_from_url(req.url)
        if head.size is None or validator is None or not name:
            return None
        try:
            dest = safe_join(req.dest_dir, req.subdir, sanitize_filename(name))
        except ModfetchError:
            return None  # the normal path reports it
        row = db.find_by_dest(str(dest))
        if (row is None or row.status != COMPLETE or not row.sha256 or row.size != head.size
                or row.url != req.row_url or validator != (row.etag if head.etag else row.last_modified)):
            return None
        with self._lock(dest):
            known = ProbeResult(url=head.url, size=head.size, ranges=False, etag=head.etag,
                                last_modified=head.last_modified, filename=head.filename)
            if not dest.is_file():
                return None
            try:
                return self.already_present(db, row, req, known, dest)
            except TargetExistsError:
                return None  # changed on disk: the normal path repairs it in place or refuses it

    def already_present(self, db: StateDB, row: DownloadRow | None, req: DownloadRequest, info: ProbeResult,
                        dest: Path) -> DownloadResult | None:
        """A no-op success when the target already holds the right bytes; an error when it holds others."""
        try:
            st = dest.lstat()
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            # Checked before any transfer: not even --force replaces a directory (rename(2) cannot anyway).
            raise TargetExistsError(f"{dest} is a directory; not replacing it",
                                    hint="move it away, or pass --out another name")
        # Only a regular file (or a link to one) can hold the bytes: hashing a FIFO would block forever, and a
        # dangling link would be found in the way only after the whole transfer.
        regular = dest.is_file()
        known: str | None = req.expected if regular else None
        # An unfinished row with a hash was killed after hashing, around the final rename (see transfer()).
        if known is None and regular and row is not None and row.sha256 and row.status != MISMATCH:
            same_remote = (row.size == info.size and (not row.etag or not info.etag or row.etag == info.etag))
            if same_remote and row.url == req.row_url:
                known = row.sha256
        if known is not None:
            actual = self.cached_sha256(row, dest)
            if actual == known:
                return self._adopt(db, row, req, info, dest, actual)
        if req.force or self.config.general.allow_overwrite:
            log.info("%s exists and differs; it will be replaced (--force)", dest)
            return None
        if is_own_sidecar(dest):  # modfetch's checksum of a sibling, in the way of a real file of that name
            log.info("%s holds the checksum of a sibling file; the downloaded file replaces it", dest)
            return None
        raise TargetExistsError(f"{dest} already exists with different or unknown content",
                                hint="pass --sha256 to check it, --force to replace it, or --out another name")

    @staticmethod
    def _adopt(db: StateDB, row: DownloadRow | None, req: DownloadRequest, info: ProbeResult, dest: Path,
               actual: str) -> DownloadResult:
        """Record the verified file in place as this download's finished result."""
        log.info("%s is already present and verified; nothing to fetch", dest)
        write_checksum_file(dest, actual)
        stamp = file_stamp(dest.stat())
        if row is not None and row.sha256 == actual and row.meta.get("stat") != stamp:
            # Hashed again (a placement's hard link moves the ctime): the next rerun need not read it again.
            db.update_download(row.id, meta=dict(row.meta, stat=stamp))
        if row is not None and row.status not in FINISHED_STATUSES:
            row.part_path.unlink(missing_ok=True)  # a hard link to dest if killed mid-install
            db.update_download(row.id, status=COMPLETE, bytes_done=dest.stat().st_size, error=None,
                               finished_at=time.time())
        if row is None:
            row = db.create_download(req.row_url, str(dest), resolved_url=redact_url(info.url),
                                     size=dest.stat().st_size, sha256=actual, expected_sha256=req.expected,
                                     status=COMPLETE, source=req.source, artifact_type=req.artifact_type,
                                     meta=dict(req.meta), finished_at=time.time())
        return DownloadResult(row.id, dest, actual, dest.stat().st_size, already_present=True)

    def repairable(self, db: StateDB, row: DownloadRow | None, req: DownloadRequest, info: ProbeResult,
                   dest: Path) -> DownloadRow | None:
        """The row of an installed file this download finished once and that no longer hashes to what was
        recorded (bit rot, a bad disk, a stray write), when it can be mended in place; else None.

        Only the same URL, the same size and (unless ``req.repair``) the same inode count as "our file,
        damaged": a file of another size or a new inode was put there by someone else and is left to
        ``already_present`` (which refuses to overwrite it without --force)."""
        if row is None or req.force or not row.sha256 or row.size is None or dest.is_symlink() or not dest.is_file():
            return None  # (a link put in its place is someone else's: never read through it)
        if row.status not in (*FINISHED_STATUSES, MISMATCH) and not row.meta.get("repairing"):
            return None
        if row.url != req.row_url or (req.expected and req.expected != row.sha256):
            return None
        st = dest.stat()
        recorded = row.meta.get("stat")
        if st.st_size != row.size or (not req.repair and isinstance(recorded, list) and len(recorded) >= 3
                                      and recorded[2] != st.st_ino):
            return None
        if self.cached_sha256(row, dest) == row.sha256:
            return None
        same_remote = (row.size == info.size and (row.etag or None) == (info.etag or None)
                       and (row.etag is not None or (row.last_modified or None) == (info.last_modified or None)))
        if not same_remote:
            db.update_download(row.id, status=MISMATCH, error="damaged; the remote file changed since")
            raise RemoteChangedError(
                f"{dest} is damaged, and the remote file changed since it was downloaded: not repairing it",
                hint="the damaged file is kept; pass --force to download the new version over it")
        return row

    def cached_sha256(self, row: DownloadRow | None, dest: Path) -> str:
        """The file's SHA-256, reusing the recorded one while its ``file_stamp`` is unchanged."""
        st = dest.stat()
        stamp = file_stamp(st)
        if row is not None and row.sha256 and row.meta.get("stat") == stamp:
            return row.sha256
        key = (str(dest), *stamp)
        if key not in self._hashed:  # hashed at most once per run (the no-probe check, then the normal one)
            self._hashed[key] = sha256_file(dest)
        return self._hashed[key]


def repair_installed(run: Run) -> DownloadResult:
    """Mend a damaged installed file (``run.row`` is its row, ``run.expected`` its recorded SHA-256): copy it to
    the ``.part``, let the resume path re-hash every recorded chunk and fetch only those that differ, and
    install over the damaged file (os.replace) only once the whole file hashes to the recorded SHA-256.  The
    damaged file stays in place until then."""
    db, row, dest = run.db, run.row, run.dest
    assert row.sha256 is not None and row.size is not None
    part = row.part_path
    chunks = db.get_chunks(row.id)
    covered = (run.info.ranges and bool(chunks) and chunks[0].start == 0 and chunks[-1].end == row.size
               and all(c.status == CHUNK_COMPLETE and c.sha256 for c in chunks)
               and all(a.end == b.start for a, b in itertools.pairwise(chunks)))
    resuming = bool(row.meta.get("repairing")) and part.is_file()
    if not resuming:
        if covered:
            copy_into_part(dest, part)
        else:
            db.restart_download(row.id)  # no chunk hashes on record: the whole file is fetched again
    log.warning("%s no longer matches its recorded SHA-256; repairing it in place (%s)", dest,
                "re-fetching only the chunks that differ" if covered or resuming else "fetching it whole",
                extra={"download_id": row.id})
    db.update_download(row.id, meta=dict(row.meta, repairing=True), error=None, pid=os.getpid())
    run.refresh_row()
    run.req = dataclasses.replace(run.req, force=True)
    try:
        return transfer(run)
    except RemoteChanged:
        db.restart_download(row.id, status=MISMATCH, error="damaged; the remote file changed during repair",
                            bytes_done=row.size)  # the damaged file is still installed in full
        raise RemoteChangedError(f"the remote file changed while repairing {dest.name}; the damaged file "
                                 "is kept", hint="pass --force to download the new version over it") from None
