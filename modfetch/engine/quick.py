"""The fast path of a many-file run: a small file whose size and hash the repo listing gave is ONE GET.

No HEAD, no ranged probe, no chunk plan: one GET (following the Hub's redirect to its CDN by hand, the
credential bound to its own host) is written to the ``.part`` as one stream, checked against the listed size
and hash (SHA-256 for LFS files, the git blob SHA-1 for regular ones), made durable together with the other
files finishing at the same time (``SyncGroup``), installed without clobbering and only then recorded complete.
The row is written three times (created running; the proof hash with the server's validators, before the
rename; complete and settled in one transaction) instead of once per step.

Anything unexpected (another status, another size, a failed connection, a file or a finished row already
there) returns None after undoing the row: the caller takes the normal path (probe, resume, retries, repair,
"already present"), which reports real errors exactly as for any other file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from ..cancel import STOP, check_stop
from ..errors import DiskError, IntegrityError, ModfetchError
from ..failures import settle_success
from ..state import (
    COMPLETE,
    FAILED,
    FINISHED_STATUSES,
    INTERRUPTED,
    MISMATCH,
    RUNNING,
    DownloadRow,
    StateDB,
    part_path_for,
)
from ..util.redact import redact, redact_url
from .fetch import PartTruncated
from .files import (
    OwnWrites,
    PartWritten,
    TargetLock,
    check_part,
    ensure_space,
    file_stamp,
    free_space_margin,
    install_file,
    open_part,
    os_error,
    part_changed,
    write_checksum_file,
)
from .hashing import git_blob_hasher
from .http import RemoteChanged, RetryableError
from .request import DownloadRequest, DownloadResult
from .run import RunCounters
from .stream import fetch_stream
from .syncgroup import SyncGroup

if TYPE_CHECKING:
    from .download import Downloader

log = logging.getLogger("modfetch.engine")
# The fast path's row writes from every lane of this process take turns here: two lanes writing at once made
# SQLite put one to sleep in its busy handler (1, 2, 5, 10 ... ms steps; ~1800 sleeps in a 208-file repo),
# where a lock hands over in microseconds.  Reads need no turn (WAL).
_ROW_WRITES = threading.Lock()


class _Fallback(Exception):
    """The single GET did not go as the listing promised: take the normal path."""


def eligible(req: DownloadRequest, chunk_size: int) -> bool:
    """A file the fast path may take: its name, size (at most one chunk) and a hash are known up front, and
    nothing asks for a replacement (``--force``) or a repair."""
    return bool(req.filename and req.expected_size and req.expected_size <= chunk_size
                and (req.expected or req.expected_git_sha1) and not req.force and not req.repair)


def fetch_small(dl: Downloader, db: StateDB, session: requests.Session, req: DownloadRequest, dest: Path,
                group: SyncGroup, started: float) -> DownloadResult | None:
    """Download ``req`` (``eligible``) with one GET; None when the normal path must take it (nothing installed
    then, and the row as it was before this attempt).  ``dest``: the target, from ``safe_join``."""
    if os.path.lexists(dest):
        return None  # already present, to repair, or someone else's: the normal path decides
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # (a file in the way of a folder, no permission...): reported by the normal path
    with TargetLock(dl.config.data_root / "locks", dest):
        row = db.find_by_dest(str(dest))
        if row is not None and (row.status in (*FINISHED_STATUSES, MISMATCH) or row.meta.get("repairing")):
            return None
        with _ROW_WRITES:
            prior, row = row, _start_row(db, row, req, dest)
        try:
            return _Small(dl, db, session, req, group, row, dest, started).run()
        except _Fallback as why:
            log.debug("%s: %s; taking the normal path", dest.name, why, extra={"download_id": row.id})
            # The normal path starts from the state before this attempt: no row (a stop during its probe then
            # leaves none, as for any file), or the earlier attempt's row as it was (its .part is gone).
            if prior is None:
                db.delete_download(row.id)
                row.part_path.unlink(missing_ok=True)
            else:
                db.restart_download(row.id, status=prior.status, error=prior.error, pid=None)
            return None


def _start_row(db: StateDB, row: DownloadRow | None, req: DownloadRequest, dest: Path) -> DownloadRow:
    """The row of this attempt, running: a new one, or an unfinished one started over (a small file has
    nothing worth resuming)."""
    fields: dict[str, Any] = dict(
        resolved_url=redact_url(req.url), size=req.expected_size, expected_sha256=req.expected, source=req.source,
        artifact_type=req.artifact_type, meta=dict(req.meta), error=None, pid=os.getpid(), status=RUNNING,
        started_at=time.time(), finished_at=None,
    )
    if row is None:
        part = part_path_for(dest)
        if part.exists():
            log.warning("found %s without saved state; starting over", part.name)
            part.unlink()
        return db.create_download(req.row_url, str(dest), **fields)
    db.restart_download(row.id, url=req.row_url, sha256=None, etag=None, last_modified=None, **fields)
    fresh = db.get_download(row.id)
    assert fresh is not None
    return fresh


class _Small:
    """One small file's single GET, verification, durable install and completion."""

    def __init__(self, dl: Downloader, db: StateDB, session: requests.Session, req: DownloadRequest,
                 group: SyncGroup, row: DownloadRow, dest: Path, started: float) -> None:
        self.dl, self.db, self.session, self.req, self.group = dl, db, session, req, group
        self.row, self.dest, self.started = row, dest, started
        self.counters = RunCounters()
        self.seen: dict[str, str | None] = {}
        self.fd = -1

    def run(self) -> DownloadResult:
        db, row, part, dl = self.db, self.row, self.row.part_path, self.dl
        try:
            self.fd = open_part(part, lambda: None)
        except OSError as exc:
            db.update_download(row.id, status=FAILED, error=f"cannot open {part}: {exc.strerror}")
            raise os_error(exc, "cannot open", part) from None
        ok: bool | None = False
        dl.progress.start(self.dest.name, self.req.expected_size, 0)
        try:
            result = self._transfer()
            ok = True
            return result
        except _Fallback:
            ok = None
            raise
        except IntegrityError as exc:
            db.restart_download(row.id, status=MISMATCH, error=redact(exc.message))
            raise
        except ModfetchError as exc:
            db.update_download(row.id, status=FAILED, error=redact(exc.message))
            raise
        except KeyboardInterrupt:
            db.update_download(row.id, status=INTERRUPTED, error="interrupted; rerun to resume")
            raise
        except BaseException as exc:
            db.update_download(row.id, status=FAILED, error=redact(f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            if not ok:
                self.counters.flush(db, row.id, self.req.source, None)  # (a failure is counted by the caller)
            dl.progress.finish(bool(ok))
            if dl.on_checkpoint is not None:
                dl.on_checkpoint()

    def _fetch(self, fd: int, writes: OwnWrites, blob: Any | None) -> str:
        dl, req = self.dl, self.req
        size = req.expected_size
        assert size is not None

        def advance(n: int) -> None:
            self.counters.fetched += max(0, n)
            dl.progress.advance(n)

        def headers(response: requests.Response, final: str) -> None:
            self.seen.update(etag=response.headers.get("ETag"), last_modified=response.headers.get("Last-Modified"),
                             url=final)

        try:
            ensure_space(fd, size, self.row.part_path, free_space_margin(fd, dl.config.general.min_free_mb))
            sha256 = fetch_stream(self.session, req.url, fd=fd, expected_size=size, base_headers=dl.base_headers,
                                  auth=req.headers, auth_host=req.auth_host, timeout=dl.timeout, on_bytes=advance,
                                  stop=STOP, writes=writes, on_headers=headers, also=blob)
        except (RetryableError, RemoteChanged) as exc:
            check_stop()  # request_stop() shut the connection down: a stop, not a reason to ask again
            raise _Fallback(str(exc)) from None
        except PartTruncated:
            raise part_changed(self.row.part_path, "truncated") from None
        except PartWritten:
            raise part_changed(self.row.part_path, "written to") from None
        except DiskError:
            raise
        except ModfetchError as exc:  # a refusal (404, 401, ...): the normal path asks again and reports it
            check_stop()
            raise _Fallback(exc.message) from None
        except OSError as exc:
            raise os_error(exc, "cannot write", self.row.part_path) from None
        got = os.fstat(fd).st_size
        if got != size:  # a body without Content-Length that ended early
            raise _Fallback(f"got {got} of {size} bytes")
        return sha256

    def _transfer(self) -> DownloadResult:
        db, row, req, dest, part, fd = self.db, self.row, self.req, self.dest, self.row.part_path, self.fd
        size = req.expected_size
        assert size is not None
        writes = OwnWrites(fd)
        git_sha1 = req.expected_git_sha1.lower() if req.expected_git_sha1 else None
        # Both digests of the bytes as they were written (the file is unchanged since: ``writes.check``), so
        # the file is not opened and read back for the SHA-1.
        blob = git_blob_hasher(size) if git_sha1 is not None else None
        sha256 = self._fetch(fd, writes, blob)
        if req.expected and sha256 != req.expected:
            raise IntegrityError(f"SHA-256 mismatch for {dest.name}: got {sha256}, expected {req.expected}",
                                 hint="the server sent different bytes than the source published")
        if blob is not None:
            actual = blob.hexdigest()
            if actual != git_sha1:
                raise IntegrityError(f"git blob SHA-1 mismatch for {dest.name}: got {actual}, "
                                     f"expected {req.expected_git_sha1}",
                                     hint="the server sent different bytes than the repo lists")
        try:
            self.group.sync(fd=fd)  # durable (with the other files finishing now) before it is installed
        except OSError as exc:
            raise os_error(exc, "cannot flush", part) from None
        check_part(fd, part, None)
        os.close(fd)
        self.fd = -1
        # The proof before the rename (see transfer()): a rerun adopts an installed file only by this hash.
        with _ROW_WRITES:
            db.update_download(row.id, sha256=sha256, etag=self.seen.get("etag"),
                               last_modified=self.seen.get("last_modified"),
                               resolved_url=redact_url(self.seen.get("url") or req.url))
        install_file(part, dest, overwrite=self.dl.config.general.allow_overwrite,
                     check=lambda: writes.check(part, size), sync_dir=False)
        write_checksum_file(dest, sha256)
        self.group.sync(directory=dest.parent)  # the new name is durable before the row says complete
        meta = dict(req.meta, stat=file_stamp(dest.stat()))
        if git_sha1 is not None:
            meta["git_sha1"] = git_sha1  # verified: a rerun knows the file without asking (present.py)
        elapsed = time.monotonic() - self.started
        with _ROW_WRITES:
            with db.transaction():
                db.update_download(row.id, status=COMPLETE, bytes_done=size, error=None, finished_at=time.time(),
                                   meta=meta)
                settle_success(db, row.id, req.row_url)
            with contextlib.suppress(Exception):
                self.counters.flush(db, row.id, req.source, True)
        log.info("done: %s (%d bytes, sha256 %s, one request)", dest, size, sha256,
                 extra={"download_id": row.id, "bytes": size, "elapsed_s": round(elapsed, 3), "status": COMPLETE})
        return DownloadResult(row.id, dest, sha256, size, self.counters.fetched, elapsed)
