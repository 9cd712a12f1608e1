"""The state database's rows as dataclasses, the status names, and what is derived from a row alone (its
``.part`` path, its progress).  Pure: no SQL here (that is ``db.py``), no file I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Download statuses.  "running" rows whose owner process is gone become "interrupted" on the next open.
PENDING, RUNNING, COMPLETE, VERIFIED, MISMATCH, FAILED, INTERRUPTED = (
    "pending", "running", "complete", "verified", "mismatch", "failed", "interrupted",
)
FINISHED_STATUSES = (COMPLETE, VERIFIED)
# The error `verify` records on a finished row whose file is gone (its status stays: `list`/`prune` see it).
FILE_MISSING = "file is missing"
# Every download status, the most active first (the TUI's status sort).
STATUSES = (RUNNING, PENDING, INTERRUPTED, FAILED, MISMATCH, COMPLETE, VERIFIED)
# Chunk statuses.
CHUNK_PENDING, CHUNK_RUNNING, CHUNK_COMPLETE, CHUNK_DIRTY = "pending", "running", "complete", "dirty"

# Where a download's bytes land until the final rename: "<target>.part", beside the target.
PART_SUFFIX = ".part"

DOWNLOAD_COLUMNS = (
    "id", "url", "resolved_url", "dest_path", "size", "bytes_done", "etag", "last_modified", "expected_sha256",
    "sha256", "status", "error", "source", "artifact_type", "meta", "retries", "pid", "created_at", "updated_at",
    "started_at", "finished_at", "error_class", "connections",
)
# Numeric download columns and what a damaged value reads as (None where the column is nullable).
NUMBER_DEFAULTS: dict[str, float | None] = {
    "size": None, "bytes_done": 0, "retries": 0, "pid": None,
    "created_at": 0.0, "updated_at": 0.0, "started_at": None, "finished_at": None, "connections": None,
}
_INT_COLUMNS = frozenset({"size", "bytes_done", "retries", "pid", "connections"})
TEXT_COLUMNS = tuple(name for name in DOWNLOAD_COLUMNS if name not in NUMBER_DEFAULTS and name not in ("id", "meta"))
MAX_TIMESTAMP = 253402300799.0  # 9999-12-31 23:59:59 UTC


def sane_number(name: str, value: Any, default: float | None) -> Any:
    """``value`` when it is a finite number in range for column ``name``, else ``default``.

    Sizes, counts and pids are never negative and fit SQLite's 64-bit integers; times lie in 1970..9999."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    if name in _INT_COLUMNS:
        return int(value) if 0 <= value < 2**63 else default
    return float(value) if 0 <= value <= MAX_TIMESTAMP else default


def part_path_for(dest: str | Path) -> Path:
    """The ``.part`` file a download of ``dest`` writes into (the one place this name is derived)."""
    return Path(str(dest) + PART_SUFFIX)


def progress_fraction(status: str, size: int | None, done: int) -> float | None:
    """Fraction done (0..1) of a download in ``status`` with ``done`` of ``size`` bytes on disk; None when the
    size is unknown.  Shared by ``status`` and the TUI so both always show the same percentage."""
    if status in FINISHED_STATUSES:
        return 1.0
    if not size or size < 0:  # unknown, or a damaged row: no percentage beats "-50.0%"
        return None
    return max(0.0, min(1.0, done / size))


@dataclass
class DownloadRow:
    """One download as stored; ``meta`` holds source hints (repo id, revision, commit, CivitAI type...)."""

    id: int
    url: str
    dest_path: str
    status: str = PENDING
    resolved_url: str | None = None
    size: int | None = None
    bytes_done: int = 0
    etag: str | None = None
    last_modified: str | None = None
    expected_sha256: str | None = None
    sha256: str | None = None
    error: str | None = None
    error_class: str | None = None
    source: str = "http"
    artifact_type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    pid: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    connections: int | None = None  # parallel connections of the last chunked transfer (adaptive, or pinned)

    @property
    def part_path(self) -> Path:
        """The ``.part`` file beside the final file."""
        return part_path_for(self.dest_path)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``status --json``)."""
        return {name: getattr(self, name) for name in DOWNLOAD_COLUMNS}


@dataclass
class ChunkRow:
    """One byte range ``[start, end)`` of a download and how much of it is on disk."""

    idx: int
    start: int
    end: int
    bytes_done: int = 0
    sha256: str | None = None
    status: str = CHUNK_PENDING

    @property
    def length(self) -> int:
        """Bytes the chunk covers."""
        return self.end - self.start


@dataclass
class PlacementRow:
    """A link or copy of a downloaded file inside an app's folder."""

    id: int
    download_id: int | None
    source_path: str
    target_path: str
    app: str
    mode: str
    artifact_type: str | None
    created_at: float
