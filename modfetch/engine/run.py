"""One download in flight: the run object the engine's steps share instead of long argument lists, and the
counters of one transfer (bytes fetched, retries) that feed the metrics and the row's ``retries`` column."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from ..state import DownloadRow, StateDB
from .files import OwnWrites
from .probe import ProbeResult
from .request import DownloadRequest

if TYPE_CHECKING:  # the Downloader builds runs; a run only reads its settings
    from .download import Downloader
    from .mirrors import SourceSet

log = logging.getLogger("modfetch.engine")


class RunCounters:
    """Bytes fetched and retries in this transfer, flushed to the DB counters behind the metrics and to the
    download row's ``retries`` (workers add under ``lock``; the coordinating thread flushes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fetched = 0
        self.retries = 0
        self._flushed_fetched = 0
        self._flushed_retries = 0

    def flush(self, db: StateDB, download_id: int, source: str, ok: bool | None) -> None:
        """Add what changed since the last flush; ``ok`` True/False also counts the outcome."""
        increments = []
        retried = 0
        if self.fetched != self._flushed_fetched:
            increments.append(("downloaded_bytes", source, "", float(self.fetched - self._flushed_fetched)))
            self._flushed_fetched = self.fetched
        if self.retries != self._flushed_retries:
            retried = self.retries - self._flushed_retries
            increments.append(("retries", source, "", float(retried)))
            self._flushed_retries = self.retries
        if ok is not None:
            increments.append(("downloads_succeeded" if ok else "downloads_failed", source, "", 1.0))
        try:
            if increments:
                db.add_counters(increments)
            if retried:
                db.add_retries(download_id, retried)
        except Exception as exc:  # metrics must never break a download
            log.debug("could not record counters: %s", exc)


@dataclass
class Run:
    """Everything one download's steps need: the downloader's settings (``dl``), the state DB, the request,
    what the probe found (``info``, replaced when the remote changes), the row, the destination, and per
    transfer attempt the ``.part``'s descriptor, its OwnWrites guard and the counters."""

    dl: Downloader
    db: StateDB
    session: requests.Session
    req: DownloadRequest
    info: ProbeResult
    dest: Path
    row: DownloadRow
    expected: str | None
    started: float
    fd: int = -1
    writes: OwnWrites | None = None
    counters: RunCounters = field(default_factory=RunCounters)
    sources: SourceSet | None = None  # with mirrors: the sources chunks are spread over (per transfer)

    @property
    def part(self) -> Path:
        """The ``.part`` file this run writes."""
        return self.row.part_path

    @property
    def name(self) -> str:
        """The final file's name (for messages)."""
        return Path(self.row.dest_path).name

    def own_writes(self) -> OwnWrites:
        """The OwnWrites guard of the open ``.part`` (set by the transfer before any step writes)."""
        assert self.writes is not None
        return self.writes

    def refresh_row(self) -> None:
        """Re-read the row after the DB changed it."""
        self.row = self.db.get_download(self.row.id) or self.row
