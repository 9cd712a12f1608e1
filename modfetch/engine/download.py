"""The download coordinator: probe, decide (already present? repair? resume?), prepare the row, then run
the transfer under the target's lock, restarting cleanly when the remote file changes.

One call to ``Downloader.run`` downloads one file.  The calling thread coordinates: it owns the state DB
connection, writes chunk rows when chunks complete or fail and checkpoints progress about once a second,
drives the progress listener and watches for stalls.  Worker threads (one ``requests.Session`` each) only
fetch, ``pwrite`` and hash.  The steps share one ``Run`` (engine/run.py); "already present" lives in
engine/present.py, one transfer attempt in engine/transfer.py, the worker pool in engine/workers.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from ..cancel import POLLING, STOP, Interrupted, request_stop, sleep_unless_stopped
from ..config import Config
from ..errors import HTTPStatusError, ModfetchError, NetworkError, RemoteChangedError
from ..failures import record_failure, record_interrupt, settle_success
from ..progress import NullProgress, ProgressListener
from ..state import FAILED, FINISHED_STATUSES, DownloadRow, StateDB, open_state, part_path_for
from ..util.filenames import filename_from_url, safe_join, sanitize_filename
from ..util.http import strong_etag
from ..util.redact import redact_url
from . import quick, ratelimit
from .adaptive import AdaptiveSettings
from .files import TargetLock, fsync_dir, os_error
from .http import RangesIgnored, RemoteChanged, RetryableError
from .mirrors import next_primary
from .present import Presence, repair_installed
from .probe import HeadResult, ProbeResult, probe, probe_head
from .request import DownloadRequest, DownloadResult
from .retry import UNREACHABLE_ATTEMPTS, backoff_wait
from .run import Run
from .session import make_session
from .syncgroup import SyncGroup
from .transfer import transfer
from .workers import CHECKPOINT_SECONDS, HOOK_SECONDS, date_if_range

log = logging.getLogger("modfetch.engine")
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


class Downloader:
    """Runs downloads with the configured concurrency, retry policy and progress listener."""

    def __init__(self, config: Config, *, progress: ProgressListener | None = None, concurrency: int | None = None,
                 chunk_size: int | None = None, on_checkpoint: Callable[[], None] | None = None,
                 steal: bool = True, adaptive: AdaptiveSettings | None = None,
                 group: SyncGroup | None = None) -> None:
        """``group``: this file is one of a many-file run whose small files take the one-GET fast path
        (engine/quick.py) and are made durable together."""
        self.config = config
        self.group = group
        self.progress: ProgressListener = progress or NullProgress()
        self.workers = max(1, concurrency or config.concurrency.per_file_chunks)
        self.chunk_size = chunk_size or config.concurrency.chunk_size_mb << 20
        self.on_checkpoint = on_checkpoint
        self.steal = steal
        # Connections per file grow from per_file_chunks while that pays (engine/adaptive.py); --concurrency pins.
        self.adaptive: AdaptiveSettings | None = None if concurrency else (
            adaptive or AdaptiveSettings(cap=config.concurrency.max_connections_per_file))
        self.timeout = (min(10.0, config.network.timeout_seconds), config.network.timeout_seconds)
        self.base_headers = {"Accept-Encoding": "identity", "User-Agent": config.network.user_agent}
        self.present = Presence(config)
        ratelimit.configure(config.network.max_bytes_per_second)  # process-wide: shared with other files

    # -- public ----------------------------------------------------------------------------------------
    def run(self, req: DownloadRequest, db: StateDB | None = None,
            session: requests.Session | None = None) -> DownloadResult:
        """Download ``req`` to its destination, resuming earlier state; raises ModfetchError on failure.
        ``db`` / ``session``: this thread's state DB connection and HTTP session, shared by the files of a
        many-file run (left open); by default the run opens and closes its own."""
        try:
            return self._run(req, db, session)
        except (NetworkError, HTTPStatusError) as exc:
            fallback = next_primary(req, exc)  # the primary cannot be reached: a mirror takes its place
            if fallback is None:
                raise
            return self.run(fallback, db, session)

    def _run(self, req: DownloadRequest, db: StateDB | None, session: requests.Session | None) -> DownloadResult:
        started = time.monotonic()
        own_db, own_session = db is None, session is None
        db = open_state(self.config.state_db) if db is None else db
        session = make_session(self.config, self.workers) if session is None else session
        dest: Path | None = None
        try:
            named = None
            if req.filename:  # authoritative name: a path the file system cannot hold is refused before any request
                named = safe_join(req.dest_dir, req.subdir, sanitize_filename(req.filename))
            present = self.present.without_probe(db, req, named)
            if (present is None and named is not None and self.group is not None
                    and quick.eligible(req, self.chunk_size)):
                present = quick.fetch_small(self, db, session, req, named, self.group, started)
                if present is not None:
                    return present  # (settled in its final transaction)
            if present is None:
                head = probe_head(session, req.url, base_headers=self.base_headers, auth=req.headers,
                                  auth_host=req.auth_host, timeout=self.timeout)
                present = self.present.after_head(db, req, head)
                if present is None:
                    info = self.probe(session, req, head)
                    dest = self._destination(req, info)
                    with TargetLock(self.config.data_root / "locks", dest):
                        present = self._run_locked(db, session, req, info, dest, started)
            settle_success(db, present.download_id, req.row_url)
            return present
        except KeyboardInterrupt:
            record_interrupt(db, req.source)
            self._checkpoint_hook()
            raise
        except Exception as exc:
            record_failure(db, req.row_url, str(dest or self._guess_dest(req) or "") or None, req.source, exc)
            self._checkpoint_hook()
            raise
        finally:
            if own_session:
                session.close()
            if own_db:
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
    def retrying(self, on_retry: Callable[[RetryCallState], None] | None = None,
                 unreachable_attempts: int | None = None) -> Retrying:
        """The tenacity policy for whole requests (the probe, a single stream): bounded attempts, backoff."""
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

    def probe(self, session: requests.Session, req: DownloadRequest, head: HeadResult | None = None) -> ProbeResult:
        """Ask the server about ``req`` (size, ranges, validators, name), with retries."""
        def note(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("probe failed (%s); retry %d", exc, state.attempt_number,
                        extra={"url": redact_url(req.url), "attempt": state.attempt_number})

        try:
            for attempt in self.retrying(on_retry=note, unreachable_attempts=UNREACHABLE_PROBE_ATTEMPTS):
                with attempt:
                    return probe(session, req.url, base_headers=self.base_headers, auth=req.headers,
                                 auth_host=req.auth_host, timeout=self.timeout, head=head)
        except RetryableError as exc:
            raise NetworkError(f"cannot reach {req.row_url}: {exc}",
                               hint="check the URL and your connection; rerun to try again") from None
        raise AssertionError("unreachable")

    def _destination(self, req: DownloadRequest, info: ProbeResult) -> Path:
        name = req.filename or info.filename or filename_from_url(info.url) or filename_from_url(req.url)
        return safe_join(req.dest_dir, req.subdir, sanitize_filename(name))

    def _run_locked(self, db: StateDB, session: requests.Session, req: DownloadRequest, info: ProbeResult,
                    dest: Path, started: float) -> DownloadResult:
        row = db.find_by_dest(str(dest))
        damaged = self.present.repairable(db, row, req, info, dest)
        if damaged is not None:
            return repair_installed(Run(self, db, session, req, info, dest, damaged, damaged.sha256, started))
        present = self.present.already_present(db, row, req, info, dest)
        if present is not None:
            return present
        if req.expected_size is not None and info.size is not None and req.expected_size != info.size:
            log.warning("source says %d bytes but the server sends %d", req.expected_size, info.size)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, "cannot create directory", dest.parent) from None
        run = Run(self, db, session, req, info, dest, self._prepare_row(db, row, req, info, dest), req.expected,
                  started)
        restarts = 0
        while True:
            try:
                return transfer(run)
            except RemoteChanged as change:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    db.update_download(run.row.id, status=FAILED, error="remote file kept changing")
                    raise RemoteChangedError(f"the remote file kept changing while downloading {dest.name}",
                                             hint="try again later") from None
                self._after_change(run, change)

    def _after_change(self, run: Run, change: RemoteChanged) -> None:
        """Probe again after the remote file changed mid-transfer and restart the run cleanly from 0."""
        previous, info = run.info, self.probe(run.session, run.req)
        download_id = run.row.id
        if isinstance(change, RangesIgnored) and date_if_range(previous):
            # The 200 answered our If-Range date, not the Range: the server's validators were weak.
            strong = strong_etag(info.etag) is not None
            log.warning("server answered If-Range %s with the whole file: its validators are weak (a file "
                        "modified within the last second?), its Range support is fine; continuing in "
                        "parallel %s", previous.last_modified,
                        "with its now strong ETag" if strong else "checking every response's validators",
                        extra={"download_id": download_id})
            info = dataclasses.replace(info, date_if_range=strong)
        elif isinstance(change, RangesIgnored):
            log.warning("%s; restarting as one stream", change, extra={"download_id": download_id})
            info = dataclasses.replace(info, ranges=False)
        else:
            log.warning("remote file changed (%s); restarting cleanly", change, extra={"download_id": download_id})
        run.info = info
        run.db.restart_download(download_id, size=info.size, etag=info.etag, last_modified=info.last_modified,
                                resolved_url=redact_url(info.url))
        run.refresh_row()

    def _prepare_row(self, db: StateDB, row: DownloadRow | None, req: DownloadRequest, info: ProbeResult,
                     dest: Path) -> DownloadRow:
        """The row this transfer writes: a new one, the same one to resume, or the old one restarted from 0."""
        url = req.row_url
        fields: dict[str, Any] = dict(
            resolved_url=redact_url(info.url), size=info.size, expected_sha256=req.expected, source=req.source,
            artifact_type=req.artifact_type, meta=dict(req.meta), error=None, pid=os.getpid(),
        )
        if row is None:
            if part_path_for(dest).exists():
                log.warning("found %s without saved state; starting over", part_path_for(dest).name)
                part_path_for(dest).unlink()
            return db.create_download(url, str(dest), etag=info.etag, last_modified=info.last_modified, **fields)
        same = (row.url == url and row.size == info.size and row.size is not None and info.ranges
                and (row.etag or None) == (info.etag or None)
                and (row.etag is not None or (row.last_modified or None) == (info.last_modified or None)))
        if not same or row.status in FINISHED_STATUSES:
            part = row.part_path
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
            db.restart_download(row.id, url=url, sha256=None, etag=info.etag, last_modified=info.last_modified,
                                started_at=None, finished_at=None, **fields)
        else:
            db.update_download(row.id, url=url, **fields)
        fresh = db.get_download(row.id)
        assert fresh is not None
        return fresh


__all__ = ["CHECKPOINT_SECONDS", "HOOK_SECONDS", "POLLING", "STOP", "DownloadRequest", "DownloadResult",
           "Downloader", "Interrupted", "fsync_dir", "request_stop"]
