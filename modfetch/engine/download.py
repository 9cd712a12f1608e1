"""The download coordinator: probe, plan, run workers, checkpoint state, verify, repair and finish.

One call to ``Downloader.run`` downloads one file.  The calling thread coordinates: it owns the state DB
connection, writes chunk rows when chunks complete or fail and checkpoints progress about once a second,
drives the progress listener and watches for stalls.  Worker threads (one ``requests.Session`` each) only
fetch, ``pwrite`` and hash.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from ..cancel import POLLING, STOP, Interrupted, request_stop, sleep_unless_stopped
from ..config import Config
from ..errors import (
    IntegrityError,
    ModfetchError,
    NetworkError,
    RemoteChangedError,
    TargetExistsError,
)
from ..failures import record_failure, record_interrupt, settle_success
from ..progress import NullProgress, ProgressListener
from ..state import (
    CHUNK_COMPLETE,
    CHUNK_DIRTY,
    CHUNK_PENDING,
    COMPLETE,
    FAILED,
    FINISHED_STATUSES,
    INTERRUPTED,
    MISMATCH,
    RUNNING,
    DownloadRow,
    StateDB,
    open_state,
)
from ..util.filenames import filename_from_url, safe_join, sanitize_filename
from ..util.http import strong_etag
from ..util.redact import redact, redact_url
from . import ratelimit
from .fetch import BLOCK, DiskWriteError, FetchContext, PartTruncated, fetch_chunk
from .files import (
    OwnWrites,
    PartWritten,
    TargetLock,
    check_part,
    ensure_space,
    free_space_margin,
    fsync_dir,
    install_file,
    is_own_sidecar,
    open_part,
    os_error,
    part_changed,
    preallocate,
    write_checksum_file,
)
from .hashing import PrefixHasher, git_blob_sha1, hash_range, range_digest, sha256_file
from .http import RangesIgnored, RemoteChanged, RetryableError
from .partcopy import copy_into_part
from .plan import plan_chunks
from .probe import HeadResult, ProbeResult, probe, probe_head
from .retry import UNREACHABLE_ATTEMPTS, backoff_wait
from .scheduler import LiveChunk, Scheduler
from .session import make_session, shutdown_response
from .stream import fetch_stream

log = logging.getLogger("modfetch.engine")
CHECKPOINT_SECONDS = 1.0
HOOK_SECONDS = 5.0
MAX_RESTARTS = 3
UNREACHABLE_PROBE_ATTEMPTS = UNREACHABLE_ATTEMPTS  # (engine.retry says why)


class _StopWhenUnreachable(stop_base):
    """Give up once ``attempts`` tries have failed and the last failure was ``unreachable``."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        return retry_state.attempt_number >= self.attempts and bool(getattr(exc, "unreachable", False))


@dataclass(frozen=True)
class DownloadRequest:
    """What to download and where.  ``filename`` is authoritative (``--out`` or a resolver's name);
    otherwise the server's Content-Disposition, then the URL's last segment, name the file."""

    url: str
    dest_dir: Path
    display_url: str = ""
    filename: str | None = None
    subdir: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    auth_host: str | None = None
    expected_sha256: str | None = None
    expected_size: int | None = None
    expected_git_sha1: str | None = None
    force: bool = False
    source: str = "http"
    artifact_type: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    repair: bool = False  # `verify --repair`: mend the installed file even if its inode changed since


@dataclass
class DownloadResult:
    """The outcome of a successful download (or of finding the file already present)."""

    download_id: int
    path: Path
    sha256: str
    size: int
    fetched_bytes: int = 0
    elapsed_s: float = 0.0
    already_present: bool = False
    resumed: bool = False


class Downloader:
    """Runs downloads with the configured concurrency, retry policy and progress listener."""

    def __init__(self, config: Config, *, progress: ProgressListener | None = None, concurrency: int | None = None,
                 chunk_size: int | None = None, on_checkpoint: Callable[[], None] | None = None,
                 steal: bool = True) -> None:
        self.config = config
        self.progress: ProgressListener = progress or NullProgress()
        self.workers = max(1, concurrency or config.concurrency.per_file_chunks)
        self.chunk_size = chunk_size or config.concurrency.chunk_size_mb << 20
        self.on_checkpoint = on_checkpoint
        self.steal = steal
        self.timeout = (min(10.0, config.network.timeout_seconds), config.network.timeout_seconds)
        self.base_headers = {"Accept-Encoding": "identity", "User-Agent": config.network.user_agent}
        self._hashed: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime, inode) -> sha256
        ratelimit.configure(config.network.max_bytes_per_second)  # process-wide: shared with other files

    # -- public ----------------------------------------------------------------------------------------
    def run(self, req: DownloadRequest) -> DownloadResult:
        """Download ``req`` to its destination, resuming earlier state; raises ModfetchError on failure."""
        started = time.monotonic()
        db = open_state(self.config.state_db)
        session = make_session(self.config, self.workers)
        dest: Path | None = None
        try:
            if req.filename:  # authoritative name: a path the file system cannot hold is refused before any request
                safe_join(req.dest_dir, req.subdir, sanitize_filename(req.filename))
            present = self._present_without_probe(db, req)
            if present is None:
                head = probe_head(session, req.url, base_headers=self.base_headers, auth=req.headers,
                                  auth_host=req.auth_host, timeout=self.timeout)
                present = self._present_after_head(db, req, head)
                if present is None:
                    info = self._probe(session, req, head)
                    dest = self._destination(req, info)
                    with TargetLock(self.config.data_root / "locks", dest):
                        present = self._run_locked(db, session, req, info, dest, started)
            settle_success(db, present.download_id, redact_url(req.display_url or req.url))
            return present
        except KeyboardInterrupt:
            record_interrupt(db, req.source)
            self._checkpoint_hook()
            raise
        except Exception as exc:
            record_failure(db, redact_url(req.display_url or req.url), str(dest or self._guess_dest(req) or "")
                           or None, req.source, exc)
            self._checkpoint_hook()
            raise
        finally:
            session.close()
            db.close()

    def _guess_dest(self, req: DownloadRequest) -> Path | None:
        """The target a request would have before the server named it (the failure row's key), if any."""
        name = req.filename or filename_from_url(req.url)
        try:
            return safe_join(req.dest_dir, req.subdir, sanitize_filename(name)) if name else None
        except (ModfetchError, ValueError):  # best effort only (a non-UTF-8 name): the URI keys the row then
            return None

    def _checkpoint_hook(self) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint()

    # -- steps -----------------------------------------------------------------------------------------
    def _retrying(self, on_retry: Callable[[RetryCallState], None] | None = None,
                  unreachable_attempts: int | None = None) -> Retrying:
        cc = self.config.concurrency
        stop: stop_base = stop_after_attempt(cc.max_retries + 1)
        if unreachable_attempts is not None:
            stop = stop | _StopWhenUnreachable(unreachable_attempts)
        return Retrying(
            stop=stop,
            wait=backoff_wait(cc.backoff_min_ms / 1000, cc.backoff_max_ms / 1000),
            retry=retry_if_exception_type(RetryableError),
            sleep=sleep_unless_stopped,  # a stop request ends the backoff at once (raising Interrupted)
            before_sleep=on_retry,
            reraise=True,
        )

    def _probe(self, session: requests.Session, req: DownloadRequest, head: HeadResult | None = None) -> ProbeResult:
        def note(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("probe failed (%s); retry %d", exc, state.attempt_number,
                        extra={"url": redact_url(req.url), "attempt": state.attempt_number})

        try:
            for attempt in self._retrying(on_retry=note, unreachable_attempts=UNREACHABLE_PROBE_ATTEMPTS):
                with attempt:
                    return probe(session, req.url, base_headers=self.base_headers, auth=req.headers,
                                 auth_host=req.auth_host, timeout=self.timeout, head=head)
        except RetryableError as exc:
            raise NetworkError(f"cannot reach {redact_url(req.display_url or req.url)}: {exc}",
                               hint="check the URL and your connection; rerun to try again") from None
        raise AssertionError("unreachable")

    def _destination(self, req: DownloadRequest, info: ProbeResult) -> Path:
        name = req.filename or info.filename or filename_from_url(info.url) or filename_from_url(req.url)
        return safe_join(req.dest_dir, req.subdir, sanitize_filename(name))

    def _run_locked(self, db: StateDB, session: requests.Session, req: DownloadRequest, info: ProbeResult,
                    dest: Path, started: float) -> DownloadResult:
        expected = req.expected_sha256.lower() if req.expected_sha256 else None
        row = db.find_by_dest(str(dest))
        damaged = self._repairable(db, row, req, info, dest, expected)
        if damaged is not None:
            return self._repair_installed(db, session, req, info, dest, damaged, started)
        present = self._already_present(db, row, req, info, dest, expected)
        if present is not None:
            return present
        if req.expected_size is not None and info.size is not None and req.expected_size != info.size:
            log.warning("source says %d bytes but the server sends %d", req.expected_size, info.size)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, "cannot create directory", dest.parent) from None
        row = self._prepare_row(db, row, req, info, dest, expected)
        restarts = 0
        while True:
            try:
                return self._transfer(db, session, req, info, dest, row, expected, started)
            except RemoteChanged as change:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    db.update_download(row.id, status=FAILED, error="remote file kept changing")
                    raise RemoteChangedError(f"the remote file kept changing while downloading {dest.name}",
                                             hint="try again later") from None
                previous, info = info, self._probe(session, req)
                if isinstance(change, RangesIgnored) and _date_if_range(previous):
                    # The 200 answered our If-Range date, not the Range: the server's validators were weak.
                    strong = strong_etag(info.etag) is not None
                    log.warning("server answered If-Range %s with the whole file: its validators are weak (a file "
                                "modified within the last second?), its Range support is fine; continuing in "
                                "parallel %s", previous.last_modified,
                                "with its now strong ETag" if strong else "checking every response's validators",
                                extra={"download_id": row.id})
                    info = dataclasses.replace(info, date_if_range=strong)
                elif isinstance(change, RangesIgnored):
                    log.warning("%s; restarting as one stream", change, extra={"download_id": row.id})
                    info = dataclasses.replace(info, ranges=False)
                else:
                    log.warning("remote file changed (%s); restarting cleanly", change,
                                extra={"download_id": row.id})
                db.replace_chunks(row.id, [])
                db.update_download(row.id, size=info.size, etag=info.etag, last_modified=info.last_modified,
                                   bytes_done=0, resolved_url=redact_url(info.url))
                row = db.get_download(row.id) or row
                Path(row.part_path).unlink(missing_ok=True)

    def _present_without_probe(self, db: StateDB, req: DownloadRequest) -> DownloadResult | None:
        """With an expected SHA-256 and a name known without asking the server (``--out``, the resolver's name
        or the URL's), a file already there with exactly those bytes is a no-op that sends no request at all.
        Anything else (no such file, other bytes) is left to the normal path after the probe."""
        name = req.filename or filename_from_url(req.url)
        if not req.expected_sha256 or not name:
            return None
        dest = safe_join(req.dest_dir, req.subdir, sanitize_filename(name))
        if not dest.is_file():
            return None
        expected = req.expected_sha256.lower()
        with TargetLock(self.config.data_root / "locks", dest):
            row = db.find_by_dest(str(dest))
            if self._cached_sha256(row, dest) != expected:
                return None
            unprobed = ProbeResult(url=req.url, size=None, ranges=False, etag=None, last_modified=None,
                                   filename=None)
            return self._already_present(db, row, req, unprobed, dest, expected)

    def _present_after_head(self, db: StateDB, req: DownloadRequest, head: HeadResult) -> DownloadResult | None:
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
                or row.url != redact_url(req.display_url or req.url)
                or validator != (row.etag if head.etag else row.last_modified)):
            return None
        expected = req.expected_sha256.lower() if req.expected_sha256 else None
        with TargetLock(self.config.data_root / "locks", dest):
            known = ProbeResult(url=head.url, size=head.size, ranges=False, etag=head.etag,
                                last_modified=head.last_modified, filename=head.filename)
            if not dest.is_file():
                return None
            try:
                return self._already_present(db, row, req, known, dest, expected)
            except TargetExistsError:
                return None  # changed on disk: the normal path repairs it in place or refuses it

    def _already_present(self, db: StateDB, row: DownloadRow | None, req: DownloadRequest, info: ProbeResult,
                         dest: Path, expected: str | None) -> DownloadResult | None:
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
        known: str | None = expected if regular else None
        # An unfinished row with a hash was killed after hashing, around the final rename (see _transfer).
        if known is None and regular and row is not None and row.sha256 and row.status != MISMATCH:
            same_remote = (row.size == info.size and (not row.etag or not info.etag or row.etag == info.etag))
            if same_remote and row.url == redact_url(req.display_url or req.url):
                known = row.sha256
        if known is not None:
            actual = self._cached_sha256(row, dest)
            if actual == known:
                log.info("%s is already present and verified; nothing to fetch", dest)
                write_checksum_file(dest, actual)
                if row is not None and row.status not in FINISHED_STATUSES:
                    Path(row.part_path).unlink(missing_ok=True)  # a hard link to dest if killed mid-install
                    db.update_download(row.id, status=COMPLETE, bytes_done=dest.stat().st_size, error=None,
                                       finished_at=time.time())
                if row is None:
                    row = db.create_download(redact_url(req.display_url or req.url), str(dest),
                                             resolved_url=redact_url(info.url), size=dest.stat().st_size,
                                             sha256=actual, expected_sha256=expected, status=COMPLETE,
                                             source=req.source, artifact_type=req.artifact_type,
                                             meta=dict(req.meta), finished_at=time.time())
                return DownloadResult(row.id, dest, actual, dest.stat().st_size, already_present=True)
        if req.force or self.config.general.allow_overwrite:
            log.info("%s exists and differs; it will be replaced (--force)", dest)
            return None
        if is_own_sidecar(dest):  # modfetch's checksum of a sibling, in the way of a real file of that name
            log.info("%s holds the checksum of a sibling file; the downloaded file replaces it", dest)
            return None
        raise TargetExistsError(f"{dest} already exists with different or unknown content",
                                hint="pass --sha256 to check it, --force to replace it, or --out another name")

    def _repairable(self, db: StateDB, row: DownloadRow | None, req: DownloadRequest, info: ProbeResult,
                    dest: Path, expected: str | None) -> DownloadRow | None:
        """The row of an installed file this download finished once and that no longer hashes to what was
        recorded (bit rot, a bad disk, a stray write), when it can be mended in place; else None.

        Only the same URL, the same size and (unless ``req.repair``) the same inode count as "our file,
        damaged": a file of another size or a new inode was put there by someone else and is left to
        ``_already_present`` (which refuses to overwrite it without --force)."""
        if row is None or req.force or not row.sha256 or row.size is None or dest.is_symlink() or not dest.is_file():
            return None  # (a link put in its place is someone else's: never read through it)
        if row.status not in (*FINISHED_STATUSES, MISMATCH) and not row.meta.get("repairing"):
            return None
        if row.url != redact_url(req.display_url or req.url) or (expected and expected != row.sha256):
            return None
        st = dest.stat()
        recorded = row.meta.get("stat")
        if st.st_size != row.size or (not req.repair and isinstance(recorded, list) and len(recorded) == 3
                                      and recorded[2] != st.st_ino):
            return None
        if self._cached_sha256(row, dest) == row.sha256:
            return None
        same_remote = (row.size == info.size and (row.etag or None) == (info.etag or None)
                       and (row.etag is not None or (row.last_modified or None) == (info.last_modified or None)))
        if not same_remote:
            db.update_download(row.id, status=MISMATCH, error="damaged; the remote file changed since")
            raise RemoteChangedError(
                f"{dest} is damaged, and the remote file changed since it was downloaded: not repairing it",
                hint="the damaged file is kept; pass --force to download the new version over it")
        return row

    def _repair_installed(self, db: StateDB, session: requests.Session, req: DownloadRequest, info: ProbeResult,
                          dest: Path, row: DownloadRow, started: float) -> DownloadResult:
        """Mend a damaged installed file: copy it to the ``.part``, let the resume path re-hash every recorded
        chunk and fetch only those that differ, and install over the damaged file (os.replace) only once the
        whole file hashes to the recorded SHA-256.  The damaged file stays in place until then."""
        assert row.sha256 is not None and row.size is not None
        part = row.part_path
        chunks = db.get_chunks(row.id)
        covered = (info.ranges and bool(chunks) and chunks[0].start == 0 and chunks[-1].end == row.size
                   and all(c.status == CHUNK_COMPLETE and c.sha256 for c in chunks)
                   and all(a.end == b.start for a, b in itertools.pairwise(chunks)))
        resuming = bool(row.meta.get("repairing")) and part.is_file()
        if not resuming:
            if covered:
                copy_into_part(dest, part)
            else:
                db.replace_chunks(row.id, [])  # no chunk hashes on record: the whole file is fetched again
                part.unlink(missing_ok=True)
        log.warning("%s no longer matches its recorded SHA-256; repairing it in place (%s)", dest,
                    "re-fetching only the chunks that differ" if covered or resuming else "fetching it whole",
                    extra={"download_id": row.id})
        db.update_download(row.id, meta=dict(row.meta, repairing=True), error=None, pid=os.getpid())
        fresh = db.get_download(row.id) or row
        try:
            return self._transfer(db, session, dataclasses.replace(req, force=True), info, dest, fresh,
                                  row.sha256, started)
        except RemoteChanged:
            db.update_download(row.id, status=MISMATCH, error="damaged; the remote file changed during repair")
            db.replace_chunks(row.id, [])
            part.unlink(missing_ok=True)
            raise RemoteChangedError(f"the remote file changed while repairing {dest.name}; the damaged file "
                                     "is kept", hint="pass --force to download the new version over it") from None

    def _cached_sha256(self, row: DownloadRow | None, dest: Path) -> str:
        """The file's SHA-256, reusing the recorded one while size, mtime and inode are unchanged."""
        st = dest.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        if row is not None and row.sha256 and row.meta.get("stat") == stamp:
            return row.sha256
        key = (str(dest), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in self._hashed:  # hashed at most once per run (the no-probe check, then the normal one)
            self._hashed[key] = sha256_file(dest)
        return self._hashed[key]

    def _prepare_row(self, db: StateDB, row: DownloadRow | None, req: DownloadRequest, info: ProbeResult,
                     dest: Path, expected: str | None) -> DownloadRow:
        url = redact_url(req.display_url or req.url)
        fields: dict[str, Any] = dict(
            resolved_url=redact_url(info.url), size=info.size, expected_sha256=expected, source=req.source,
            artifact_type=req.artifact_type, meta=dict(req.meta), error=None, pid=os.getpid(),
        )
        if row is None:
            if Path(str(dest) + ".part").exists():
                log.warning("found %s.part without saved state; starting over", dest.name)
                Path(str(dest) + ".part").unlink()
            return db.create_download(url, str(dest), etag=info.etag, last_modified=info.last_modified, **fields)
        same = (row.url == url and row.size == info.size and row.size is not None and info.ranges
                and (row.etag or None) == (info.etag or None)
                and (row.etag is not None or (row.last_modified or None) == (info.last_modified or None)))
        if not same or row.status in FINISHED_STATUSES:
            part = Path(row.part_path)
            # bytes_done is checkpointed for both modes; a chunked .part is preallocated, so its size says little.
            on_disk = row.bytes_done or (part.stat().st_size if part.is_file() else 0)
            unchanged = (row.url == url and row.size == info.size and (row.etag or None) == (info.etag or None))
            if on_disk and row.status not in FINISHED_STATUSES and unchanged and not info.ranges:
                # Said before the transfer starts: a rerun that silently refetches 30 MB looks like a hang.
                log.warning("this server cannot resume; starting again from 0 (%d bytes on disk are discarded)",
                            on_disk, extra={"download_id": row.id})
            elif row.bytes_done and row.status not in FINISHED_STATUSES:
                log.warning("the remote file or URL changed since the last attempt; restarting cleanly",
                            extra={"download_id": row.id})
            db.replace_chunks(row.id, [])
            Path(row.part_path).unlink(missing_ok=True)
            fields.update(bytes_done=0, sha256=None, etag=info.etag, last_modified=info.last_modified,
                          started_at=None, finished_at=None)
        db.update_download(row.id, url=url, **fields)
        fresh = db.get_download(row.id)
        assert fresh is not None
        return fresh

    # -- the transfer ----------------------------------------------------------------------------------
    def _transfer(self, db: StateDB, session: requests.Session, req: DownloadRequest, info: ProbeResult,
                  dest: Path, row: DownloadRow, expected: str | None, started: float) -> DownloadResult:
        part = Path(row.part_path)
        db.update_download(row.id, status=RUNNING, pid=os.getpid(), started_at=row.started_at or time.time())
        try:
            fd = open_part(part, lambda: db.replace_chunks(row.id, []))
        except OSError as exc:
            db.update_download(row.id, status=FAILED, error=f"cannot open {part}: {exc.strerror}")
            raise os_error(exc, "cannot open", part) from None
        counters = _RunCounters()
        ok: bool | None = False  # None: restarting after a remote change, neither success nor failure
        try:
            writes = OwnWrites(fd)
            chunked = info.size is not None and info.ranges and info.size > 0
            if chunked:
                sha256, resumed = self._chunked(db, req, info, row, fd, part, expected, counters, writes)
            else:
                sha256, resumed = self._single_stream(db, session, req, info, row, fd, counters, writes)
            if expected and sha256 != expected:
                raise IntegrityError(f"SHA-256 mismatch for {dest.name}: got {sha256}, expected {expected}",
                                     hint="the server sent different bytes than the source published")
            size = os.fstat(fd).st_size
            if req.expected_git_sha1:
                os.fsync(fd)
                actual_sha1 = git_blob_sha1(part)
                if actual_sha1 != req.expected_git_sha1.lower():
                    raise IntegrityError(f"git blob SHA-1 mismatch for {dest.name}: got {actual_sha1}, "
                                         f"expected {req.expected_git_sha1}")
            try:
                os.fsync(fd)
            except OSError as exc:
                raise os_error(exc, "cannot flush", part) from None
            # The path we install must still be the file we wrote (and, chunked, still preallocated in full).
            check_part(fd, part, info.size if chunked else None)
            os.close(fd)
            fd = -1
            # Recorded before the rename: a process killed between the rename and the "complete" write below
            # leaves a row whose hash proves the installed file is this download's, so the rerun adopts it.
            db.update_download(row.id, sha256=sha256)
            # Exactly the planned bytes, and nobody wrote to them since our last write (stat right before the
            # link): otherwise the hash above is not the hash of the file we would install.
            planned = info.size if info.size is not None else size
            install_file(part, dest, overwrite=req.force or self.config.general.allow_overwrite,
                         check=lambda: writes.check(part, planned))
            write_checksum_file(dest, sha256)
            st = dest.stat()
            elapsed = time.monotonic() - started
            meta = dict(req.meta, stat=[st.st_size, st.st_mtime_ns, st.st_ino])
            db.update_download(row.id, status=COMPLETE, sha256=sha256, bytes_done=size, error=None,
                               finished_at=time.time(), meta=meta)
            ok = True
            self.progress.finish(True)  # the bar closes (at 100%) before the final line is printed below it
            rate = counters.fetched / elapsed / 1e6 if elapsed > 0 else 0.0
            log.info("done: %s (%d bytes, sha256 %s, %.1f MB/s)", dest, size, sha256, rate,
                     extra={"download_id": row.id, "bytes": size, "elapsed_s": round(elapsed, 3),
                            "status": COMPLETE})
            return DownloadResult(row.id, dest, sha256, size, counters.fetched, elapsed, resumed=resumed)
        except IntegrityError as exc:
            db.update_download(row.id, status=MISMATCH, error=redact(exc.message))
            db.replace_chunks(row.id, [])
            part.unlink(missing_ok=True)
            raise
        except ModfetchError as exc:
            db.update_download(row.id, status=FAILED, error=redact(exc.message))
            raise
        except RemoteChanged:
            ok = None
            raise
        except KeyboardInterrupt:
            db.update_download(row.id, status=INTERRUPTED, error="interrupted; rerun to resume")
            raise
        except BaseException as exc:
            db.update_download(row.id, status=FAILED, error=redact(f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            if fd >= 0:
                os.close(fd)
            counters.flush(db, req.source, True if ok else None)  # failures: counted with a reason in run()
            self.progress.finish(bool(ok))
            if self.on_checkpoint is not None:
                self.on_checkpoint()

    def _single_stream(self, db: StateDB, session: requests.Session, req: DownloadRequest, info: ProbeResult,
                       row: DownloadRow, fd: int, counters: _RunCounters, writes: OwnWrites) -> tuple[str, bool]:
        """No size or no Range support: one GET from the start; a retry starts over (nothing to resume)."""
        log.info("downloading %s as a single stream (%s)", row.dest_path,
                 "no size" if info.size is None else "server does not support ranges",
                 extra={"download_id": row.id})
        db.replace_chunks(row.id, [])
        if info.size is not None:
            ensure_space(fd, info.size, Path(row.part_path), self._margin(fd))
        self.progress.start(Path(row.dest_path).name, info.size, 0)
        sent = [0]
        saved = [time.monotonic()]

        def report(n: int) -> None:
            sent[0] += n
            counters.fetched += n
            if n < 0:
                counters.fetched -= n
            self.progress.advance(n)
            if time.monotonic() - saved[0] >= CHECKPOINT_SECONDS:  # `status` shows the bytes on disk
                saved[0] = time.monotonic()
                db.update_download(row.id, bytes_done=sent[0])

        def note(state: RetryCallState) -> None:
            counters.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            log.warning("stream failed (%s); retry %d from the start", exc, state.attempt_number,
                        extra={"download_id": row.id, "attempt": state.attempt_number})
            report(-sent[0])

        try:
            return self._stream_with_retries(session, req, info, row, fd, writes, note, report)
        except BaseException:
            with contextlib.suppress(Exception):  # stopped or failed: the row tells what the .part holds
                db.update_download(row.id, bytes_done=sent[0])
            raise

    def _stream_with_retries(self, session: requests.Session, req: DownloadRequest, info: ProbeResult,
                             row: DownloadRow, fd: int, writes: OwnWrites,
                             note: Callable[[RetryCallState], None], report: Callable[[int], None]
                             ) -> tuple[str, bool]:
        try:
            for attempt in self._retrying(note):
                with attempt:
                    return fetch_stream(session, info.url, fd=fd, expected_size=info.size,
                                        base_headers=self.base_headers, auth=req.headers,
                                        auth_host=req.auth_host, timeout=self.timeout, on_bytes=report,
                                        stop=STOP, writes=writes), False
        except RetryableError as exc:
            raise NetworkError(f"download of {Path(row.dest_path).name} failed after retries: {exc}",
                               hint="rerun the same command to try again") from None
        except PartTruncated:
            raise part_changed(row.part_path, "truncated") from None
        except PartWritten:
            raise part_changed(row.part_path, "written to") from None
        except OSError as exc:
            # A stream has no checkpoint to resume from: give all its space back (never leave the disk full).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            error = os_error(exc, "cannot write", row.part_path)
            if error.hint and "resumes" in error.hint:
                error.hint = "free some space and rerun the same command (this server cannot resume: it starts over)"
            raise error from None
        raise AssertionError("unreachable")

    def _margin(self, fd: int) -> int:
        """Bytes that must stay free on the .part's file system (general.min_free_mb)."""
        try:
            return free_space_margin(fd, self.config.general.min_free_mb)
        except OSError:
            return 0

    def _chunked(self, db: StateDB, req: DownloadRequest, info: ProbeResult, row: DownloadRow, fd: int,
                 part: Path, expected: str | None, counters: _RunCounters, writes: OwnWrites) -> tuple[str, bool]:
        assert info.size is not None
        size = info.size
        on_disk = os.fstat(fd).st_size  # before preallocation: a truncated or recreated .part shows here
        if on_disk > size:  # bytes past the planned end were never ours: cut them, then verify the rest
            log.warning("the .part file is longer than the download (%d > %d bytes); cutting it", on_disk, size,
                        extra={"download_id": row.id})
            try:
                os.ftruncate(fd, size)
            except OSError as exc:
                raise os_error(exc, "cannot truncate", part) from None
            on_disk = size
        ensure_space(fd, size, part, self._margin(fd))
        preallocate(fd, size, part)
        writes.own_change()
        rows = db.get_chunks(row.id)
        resumed = bool(rows)
        if rows:
            chunks = [LiveChunk.from_row(r) for r in rows]
            self._reverify(chunks, fd, on_disk, db, row.id)
        else:
            chunks = [LiveChunk.from_row(r) for r in plan_chunks(size, self.workers, self.chunk_size)]
            db.replace_chunks(row.id, [c.to_row() for c in chunks])
        for chunk in chunks:
            if chunk.status != CHUNK_COMPLETE and chunk.hasher is None:
                chunk.hasher = hashlib.sha256()  # a chunk resumed inside got the hasher of its verified bytes
        done_before = sum(c.end - c.start if c.status == CHUNK_COMPLETE else c.done for c in chunks)
        if resumed:
            log.info("resuming %s: %d of %d bytes already on disk", Path(row.dest_path).name, done_before, size,
                     extra={"download_id": row.id, "bytes": done_before})
        log.info("downloading %s: %d bytes in %d chunks over %d connections", Path(row.dest_path).name, size,
                 len(chunks), self.workers, extra={"download_id": row.id, "url": redact_url(req.display_url)})
        self.progress.start(Path(row.dest_path).name, size, done_before)
        sha256 = self._run_workers(db, req, info, row, fd, chunks, counters, writes, hash_while_downloading=True)
        if expected and sha256 != expected:
            sha256 = self._repair(db, req, info, row, fd, counters, expected, sha256, writes)
        return sha256, resumed

    def _reverify(self, chunks: list[LiveChunk], fd: int, on_disk: int, db: StateDB, download_id: int) -> None:
        """Trust no chunk on resume until its bytes hash to what was recorded: a complete chunk's whole range, a
        partly fetched one's first ``done`` bytes (the .part may be older than the DB: restored from a backup,
        or a power cut kept the DB's checkpoint but not the data).  A verified partial chunk keeps its hasher
        to continue after those bytes; any other is fetched again from its start."""
        started = [c for c in chunks if c.status == CHUNK_COMPLETE or c.done]

        def digest(chunk: LiveChunk) -> hashlib._Hash | None:
            end = chunk.end if chunk.status == CHUNK_COMPLETE else chunk.start + chunk.done
            return range_digest(fd, chunk.start, end) if end <= on_disk and chunk.sha256 else None

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            digests = list(pool.map(digest, started))
        dirty = []
        for chunk, found in zip(started, digests, strict=True):
            if found is None or found.hexdigest() != chunk.sha256:
                dirty.append(chunk)
            elif chunk.status != CHUNK_COMPLETE:
                chunk.hasher = found
        shrunk = [c for c in dirty if (c.end if c.status == CHUNK_COMPLETE else c.start + c.done) > on_disk]
        complete = sum(1 for c in dirty if c.status == CHUNK_COMPLETE)
        for chunk in dirty:
            chunk.reset()
        if dirty and on_disk == 0:
            # No .part at all (a finished file deleted after `verify`, or the .part removed): say that, not
            # "shorter than recorded" / "no longer match".
            log.info("no .part file from the earlier attempt; fetching the whole file",
                     extra={"download_id": download_id})
            complete = len(dirty)
        elif shrunk:
            log.warning("the .part file is shorter than recorded; fetching the missing bytes again",
                        extra={"download_id": download_id})
        if complete and on_disk:
            log.warning("%d completed chunk(s) no longer match their hash; fetching them again", complete,
                        extra={"download_id": download_id})
        if len(dirty) > complete and on_disk:
            log.warning("%d partly fetched chunk(s) no longer match their hash; fetching them again",
                        len(dirty) - complete, extra={"download_id": download_id})
        if dirty:
            db.save_chunks(download_id, [c.to_row() for c in chunks])

    def _repair(self, db: StateDB, req: DownloadRequest, info: ProbeResult, row: DownloadRow, fd: int,
                counters: _RunCounters, expected: str, got: str, writes: OwnWrites) -> str:
        """Final hash mismatch: find chunks whose bytes changed on disk, fetch only those, hash again."""
        chunks = [LiveChunk.from_row(r) for r in db.get_chunks(row.id)]
        dirty = [c for c in chunks if hash_range(fd, c.start, c.end) != c.sha256]
        if not dirty:
            raise IntegrityError(
                f"SHA-256 mismatch for {Path(row.dest_path).name}: got {got}, expected {expected}",
                hint="every chunk arrived intact, so the server itself sent different bytes than published")
        log.warning("final hash mismatch: repairing %d chunk(s)", len(dirty), extra={"download_id": row.id})
        for chunk in dirty:
            chunk.reset()
            chunk.status = CHUNK_DIRTY
        db.save_chunks(row.id, [c.to_row() for c in chunks])
        for chunk in dirty:
            chunk.status = CHUNK_PENDING
        self._run_workers(db, req, info, row, fd, chunks, counters, writes, hash_while_downloading=False)
        return hash_range(fd, 0, info.size or 0)

    def _run_workers(self, db: StateDB, req: DownloadRequest, info: ProbeResult, row: DownloadRow, fd: int,
                     chunks: list[LiveChunk], counters: _RunCounters, writes: OwnWrites,
                     hash_while_downloading: bool) -> str:
        assert info.size is not None
        scheduler = Scheduler(chunks, steal=self.steal)
        cancel = threading.Event()
        validator = strong_etag(info.etag) or (info.last_modified if _date_if_range(info) else None)
        ctx = FetchContext(url=info.url, size=info.size, fd=fd, base_headers=self.base_headers, auth=req.headers,
                           auth_host=req.auth_host, timeout=self.timeout, etag=info.etag, if_range=validator,
                           cancel=cancel, last_modified=info.last_modified, writes=writes)
        events: queue.Queue[tuple[str, LiveChunk, BaseException | None]] = queue.Queue()
        hasher = PrefixHasher(fd, info.size, scheduler.available, cancel) if hash_while_downloading else None
        pending = [c for c in chunks if c.status != CHUNK_COMPLETE]
        workers = max(1, min(self.workers, len(pending) if not self.steal else self.workers))
        if hasher is not None:
            hasher.start()
        failure: BaseException | None = None
        last_checkpoint = last_hook = time.monotonic()
        reported = scheduler.bytes_done()
        polling = threading.current_thread() is threading.main_thread()
        if polling:
            POLLING.set()  # signals now stop us through STOP, never by raising inside the pool's bookkeeping
        with _Clear(POLLING if polling else None), \
                concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modfetch-w") as pool:
            futures = [pool.submit(self._worker, ctx, scheduler, events, counters, row.id) for _ in range(workers)]
            try:
                while True:
                    finished, _ = concurrent.futures.wait(futures, timeout=0.25)
                    failure = self._drain(db, row.id, scheduler, events, failure, cancel)
                    now = time.monotonic()
                    done_now = scheduler.bytes_done()
                    if done_now != reported:
                        self.progress.advance(done_now - reported)
                        counters.fetched += max(0, done_now - reported)
                        reported = done_now
                    if now - last_checkpoint >= CHECKPOINT_SECONDS:
                        self._checkpoint(db, row.id, scheduler)
                        counters.flush(db, req.source, None)
                        last_checkpoint = now
                    if self.on_checkpoint is not None and now - last_hook >= HOOK_SECONDS:
                        self.on_checkpoint()
                        last_hook = now
                    self._watchdog(ctx)
                    check_part(fd, row.part_path, info.size)  # stop early, not after fetching into a lost file
                    if STOP.is_set():
                        raise Interrupted()
                    if len(finished) == len(futures):
                        break
            except BaseException:
                cancel.set()
                for response, _ in list(ctx.active.values()):
                    shutdown_response(response)
                concurrent.futures.wait(futures)
                self._drain(db, row.id, scheduler, events, None, cancel)
                self._checkpoint(db, row.id, scheduler, stopped=True)
                raise
        failure = self._drain(db, row.id, scheduler, events, failure, cancel)
        self._checkpoint(db, row.id, scheduler, stopped=True)
        if failure is None:
            for future in futures:
                if future.exception() is not None:
                    failure = future.exception()
        if failure is not None:
            cancel.set()
            if hasher is not None:
                hasher.join()
            self._raise_failure(failure, row)
        unfinished = [c for c in scheduler.chunks if c.status != CHUNK_COMPLETE]
        if unfinished:
            raise NetworkError(f"download of {Path(row.dest_path).name} stopped with {len(unfinished)} chunk(s) "
                               "unfinished", hint="rerun the same command to resume")
        if hasher is not None:
            # Flush the data to disk while the hasher catches up with the last bytes (both wait on I/O or
            # hash with the GIL released, so they overlap); the fsync before the rename is then cheap.
            flusher = threading.Thread(target=_fsync_quietly, args=(fd,), name="modfetch-fsync", daemon=True)
            flusher.start()
            hasher.join()
            flusher.join()
            digest = hasher.result()
            if digest is not None:
                return digest
            log.debug("prefix hasher did not finish (%s); hashing the whole file", hasher.error)
        return hash_range(fd, 0, info.size)

    def _worker(self, ctx: FetchContext, scheduler: Scheduler, events: queue.Queue[Any], counters: _RunCounters,
                download_id: int) -> None:
        session = make_session(self.config, 2)
        buf = bytearray(BLOCK)
        try:
            while not ctx.cancel.is_set():
                chunk = scheduler.next_chunk()
                if chunk is None:
                    return
                if chunk.hasher is None:
                    chunk.hasher = hashlib.sha256()
                try:
                    self._fetch_with_retries(ctx, chunk, session, buf, counters, download_id)
                except BaseException as exc:
                    events.put(("failed", chunk, exc))
                    ctx.cancel.set()
                    return
                if ctx.cancel.is_set() and chunk.position < chunk.end:
                    events.put(("failed", chunk, None))
                    return
                chunk.sha256 = chunk.hasher.hexdigest()
                chunk.status = CHUNK_COMPLETE
                events.put(("complete", chunk, None))
        finally:
            session.close()

    def _fetch_with_retries(self, ctx: FetchContext, chunk: LiveChunk, session: requests.Session, buf: bytearray,
                            counters: _RunCounters, download_id: int) -> None:
        cc = self.config.concurrency
        wait = backoff_wait(cc.backoff_min_ms / 1000, cc.backoff_max_ms / 1000)
        attempt = 0
        while True:
            before = chunk.done
            try:
                fetch_chunk(ctx, chunk, session, buf)
                return
            except RetryableError as exc:
                if STOP.is_set():
                    ctx.cancel.set()  # request_stop() shut the socket down: the chunk is unfinished, not done
                if ctx.cancel.is_set():
                    return  # the failure is our own shutdown of the socket
                attempt += 1
                # Attempts are counted per chunk and reset whenever an attempt made progress, so a link that
                # drops every few MB still finishes a 100 GB file.
                chunk.failures = 0 if chunk.done > before else chunk.failures + 1
                if chunk.failures > cc.max_retries:
                    raise NetworkError(f"giving up on bytes {chunk.position}-{chunk.end - 1} after "
                                       f"{cc.max_retries} retries: {exc}",
                                       hint="rerun the same command to resume") from None
                delay = wait.delay(max(1, chunk.failures), exc.retry_after)
                with counters.lock:
                    counters.retries += 1
                log.warning("chunk %d: %s; retry %d in %.1fs", chunk.idx, exc, attempt, delay,
                            extra={"download_id": download_id, "chunk": chunk.idx, "attempt": attempt})
                if ctx.cancel.wait(delay):
                    return

    def _drain(self, db: StateDB, download_id: int, scheduler: Scheduler, events: queue.Queue[Any],
               failure: BaseException | None, cancel: threading.Event) -> BaseException | None:
        changed: list[LiveChunk] = scheduler.take_new_chunks()
        while True:
            try:
                kind, chunk, exc = events.get_nowait()
            except queue.Empty:
                break
            changed.append(chunk)
            if kind == "failed" and exc is not None and failure is None:
                failure = exc
                cancel.set()
        if changed:
            for chunk in scheduler.chunks:
                if chunk not in changed and chunk.status != CHUNK_PENDING:
                    changed.append(chunk)  # a victim whose end moved
            db.save_chunks(download_id, [c.to_row() for c in changed], scheduler.bytes_done())
        return failure

    def _checkpoint(self, db: StateDB, download_id: int, scheduler: Scheduler, stopped: bool = False) -> None:
        """Persist running chunks' progress (bounded loss on kill -9: about one second of transfer).

        ``stopped``: the workers have exited, so no chunk is running any more."""
        with scheduler.lock:
            rows = [c.to_row() for c in scheduler.chunks if c.status != CHUNK_COMPLETE]
        for r in rows:
            if r.status == "running" and (stopped or r.bytes_done == 0):
                r.status = CHUNK_PENDING
        db.save_chunks(download_id, rows, scheduler.bytes_done())

    def _watchdog(self, ctx: FetchContext) -> None:
        """Abort reads that made no progress for twice the timeout (trickling servers never time out)."""
        limit = 2 * ctx.timeout[1]
        now = time.monotonic()
        for response, last in list(ctx.active.values()):
            if now - last > limit:
                log.warning("a connection stalled for %.0fs; reconnecting", now - last)
                shutdown_response(response)

    def _raise_failure(self, failure: BaseException, row: DownloadRow) -> None:
        if isinstance(failure, RemoteChanged):
            raise failure
        if isinstance(failure, PartTruncated):
            raise part_changed(row.part_path, "truncated") from None
        if isinstance(failure, PartWritten):
            raise part_changed(row.part_path, "written to") from None
        if isinstance(failure, DiskWriteError):
            raise os_error(failure.os_error, "cannot write", row.part_path) from None
        if isinstance(failure, ModfetchError):
            raise failure
        if isinstance(failure, OSError):
            raise os_error(failure, "cannot write", row.part_path) from None
        raise failure


def _date_if_range(info: ProbeResult) -> bool:
    """True when chunk requests carry ``If-Range: <Last-Modified>`` (no strong ETag to send instead)."""
    return strong_etag(info.etag) is None and bool(info.last_modified) and info.date_if_range


def _fsync_quietly(fd: int) -> None:
    """fsync for overlap only: an error here resurfaces from the real fsync before the rename."""
    with contextlib.suppress(OSError):
        os.fsync(fd)


class _Clear:
    """Clears an event when the block ends (after the pool inside it has shut down)."""

    def __init__(self, event: threading.Event | None) -> None:
        self.event = event

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self.event is not None:
            self.event.clear()


class _RunCounters:
    """Bytes fetched and retries in this run, flushed to the DB counters behind the metrics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fetched = 0
        self.retries = 0
        self._flushed_fetched = 0
        self._flushed_retries = 0

    def flush(self, db: StateDB, source: str, ok: bool | None) -> None:
        """Add what changed since the last flush; ``ok`` True/False also counts the outcome."""
        labels = f'source="{source}"'
        increments = []
        if self.fetched != self._flushed_fetched:
            increments.append(("downloaded_bytes", labels, float(self.fetched - self._flushed_fetched)))
            self._flushed_fetched = self.fetched
        if self.retries != self._flushed_retries:
            increments.append(("retries", labels, float(self.retries - self._flushed_retries)))
            self._flushed_retries = self.retries
        if ok is not None:
            increments.append(("downloads_succeeded" if ok else "downloads_failed", labels, 1.0))
        if increments:
            try:
                db.add_counters(increments)
            except Exception as exc:  # metrics must never break a download
                log.debug("could not record counters: %s", exc)


__all__ = ["STOP", "DownloadRequest", "DownloadResult", "Downloader", "Interrupted", "fsync_dir", "request_stop"]
