"""How an attempt that did not succeed is recorded: a ``failed`` row with the error and its class, and the
outcome counters behind the metrics (a failure is counted with its reason; an interrupt is not a failure).

Every attempt leaves a trace, also one that failed before its first byte (404, unreachable host, gated repo):
the row is keyed by the target path when one is known, else by the (redacted) URI.  A later success of the same
target supersedes such a row (``StateDB.supersede_failures``).
"""

from __future__ import annotations

import logging
import os
import time

from .errors import ModfetchError, error_class
from .logs import utf8_text
from .state import FAILED, FINISHED_STATUSES, MISMATCH, RUNNING, DownloadRow, StateDB, pid_alive
from .util.redact import redact

log = logging.getLogger("modfetch.failures")


def source_of_uri(uri: str) -> str:
    """The metrics ``source`` label of a URI that never resolved (its resolver failed)."""
    text = uri.strip().lower()
    if text.startswith("hf://") or "huggingface.co/" in text or "hf.co/" in text:
        return "huggingface"
    if text.startswith("civitai://") or "civitai.com/" in text:
        return "civitai"
    return "http"


def error_text(error: BaseException) -> str:
    """The redacted one-line text stored for an error."""
    if isinstance(error, ModfetchError):
        return redact(error.message)
    return redact(f"{type(error).__name__}: {error}")


def _owned_elsewhere(row: DownloadRow) -> bool:
    return row.status == RUNNING and row.pid != os.getpid() and pid_alive(row.pid)


def record_failure(db: StateDB, url: str, target: str | None, source: str, error: BaseException) -> None:
    """Record that an attempt at ``url`` (to ``target`` when known) failed with ``error``; never raises.

    A finished file is not marked failed by a later attempt that could not even start (its bytes are still
    good): that failure is recorded under the URI instead."""
    kind = error_class(error)
    message = error_text(error)
    # A URL or path given as non-UTF-8 bytes carries surrogates SQLite cannot store: keep them as \xff text.
    url, target = utf8_text(url), utf8_text(target) if target else None
    try:
        row = db.find_by_dest(target) if target else None
        if row is not None and (row.status in FINISHED_STATUSES or _owned_elsewhere(row)):
            row, target = None, None  # a finished file, or another process's running download: not ours to mark
        if row is None and target and os.path.lexists(target):
            target = None  # a file modfetch does not know (the target was in the way): no row claims it
        key = target or url
        if row is None:
            row = db.find_by_dest(key)
        if row is None:
            db.create_download(url, key, status=FAILED, error=message, error_class=kind, source=source)
        elif row.status == MISMATCH:
            db.update_download(row.id, error_class=kind)
        else:
            db.update_download(row.id, status=FAILED, error=message, error_class=kind, pid=None)
        db.add_counters([("downloads_failed", source, kind, 1.0)])
        db.raise_to("last_failure_timestamp_seconds", time.time())
    except Exception as exc:  # recording must never hide the error being recorded
        log.debug("could not record the failure: %s", exc)


def status_label(row: DownloadRow, compact: bool = False) -> str:
    """A row's status as tables show it: ``failed:auth`` for a failure with a known class; ``compact`` (the
    TUI's 11-column cell) shows the class alone, every class name fits and says it failed."""
    if row.status != FAILED or not row.error_class:
        return row.status
    return row.error_class if compact else f"{row.status}:{row.error_class}"


def record_interrupt(db: StateDB, source: str) -> None:
    """Count an interrupted attempt (Ctrl-C, SIGTERM): not a failure, the rerun resumes it; never raises."""
    try:
        db.add_counters([("downloads_interrupted", source, "", 1.0)])
    except Exception as exc:
        log.debug("could not count the interrupt: %s", exc)


def settle_success(db: StateDB, download_id: int | None, url: str) -> None:
    """A success of ``url`` (a download, or a URI that resolves again): its row loses the old error class and
    stale byte-less failure rows of ``url`` go; never raises."""
    try:
        if download_id is not None:
            db.update_download(download_id, error_class=None)
        db.supersede_failures(utf8_text(url), keep_id=download_id)
    except Exception as exc:
        log.debug("could not settle the success: %s", exc)


__all__ = ["record_failure", "record_interrupt", "settle_success", "source_of_uri", "status_label"]
