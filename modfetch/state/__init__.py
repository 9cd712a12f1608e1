"""The state database: rows (``rows``), schema and migrations (``schema``), the connection and its SQL (``db``),
and what a failing statement means (``sqlerrors``).  Everything is re-exported here: import from ``modfetch.state``.
"""

from __future__ import annotations

from .db import CounterKey, StateDB, open_state
from .rows import (
    CHUNK_COMPLETE,
    CHUNK_DIRTY,
    CHUNK_PENDING,
    CHUNK_RUNNING,
    COMPLETE,
    FAILED,
    FILE_MISSING,
    FINISHED_STATUSES,
    INTERRUPTED,
    MISMATCH,
    PART_SUFFIX,
    PENDING,
    RUNNING,
    STATUSES,
    VERIFIED,
    ChunkRow,
    DownloadRow,
    PlacementRow,
    part_path_for,
    progress_fraction,
)
from .schema import SCHEMA_VERSION
from .sqlerrors import BUSY_TIMEOUT_ENV, BUSY_TIMEOUT_MS, db_failure, default_busy_timeout, locked_error, pid_alive

__all__ = [
    "BUSY_TIMEOUT_ENV", "BUSY_TIMEOUT_MS", "CHUNK_COMPLETE", "CHUNK_DIRTY", "CHUNK_PENDING", "CHUNK_RUNNING",
    "COMPLETE", "FAILED", "FILE_MISSING", "FINISHED_STATUSES", "INTERRUPTED", "MISMATCH", "PART_SUFFIX", "PENDING",
    "RUNNING",
    "SCHEMA_VERSION", "STATUSES", "VERIFIED", "ChunkRow", "CounterKey", "DownloadRow", "PlacementRow", "StateDB",
    "db_failure", "default_busy_timeout", "locked_error", "open_state", "part_path_for", "pid_alive",
    "progress_fraction",
]
