"""The state database connection and every SQL statement modfetch runs (the schema is in ``schema.py``).

Threading rule: a ``StateDB`` (one sqlite3 connection) belongs to the thread that opened it.  The download
engine's worker threads never touch it; the coordinating thread writes chunk rows when a chunk completes or
fails and checkpoints progress about once a second, never per block.  WAL mode plus a busy timeout lets many
processes (downloads, ``status``, the TUI) share the file; the TUI opens it read-only.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import StateError
from .rows import (
    CHUNK_PENDING,
    CHUNK_RUNNING,
    DOWNLOAD_COLUMNS,
    FAILED,
    FINISHED_STATUSES,
    INTERRUPTED,
    MAX_TIMESTAMP,
    NUMBER_DEFAULTS,
    PENDING,
    RUNNING,
    TEXT_COLUMNS,
    ChunkRow,
    DownloadRow,
    PlacementRow,
    part_path_for,
    sane_number,
)
from .schema import SCHEMA_VERSION, migrate
from .sqlerrors import default_busy_timeout, is_locked, locked_error, pid_alive, refuse_special_file

# A counter's key: (name, source, reason); '' for a label a counter does not have.
CounterKey = tuple[str, str, str]


def _decode_text(raw: bytes) -> str:
    """TEXT columns as str; bytes that are not UTF-8 (a hand-edited row) become U+FFFD instead of making every
    read of that row fail as "damaged"."""
    return raw.decode("utf-8", "replace")


class StateDB:
    """A connection to the state database; use one per thread (see module docstring)."""

    def __init__(self, path: Path, readonly: bool = False, busy_timeout: float | None = None) -> None:
        self.path = path
        self.readonly = readonly
        busy_timeout = default_busy_timeout() if busy_timeout is None else busy_timeout
        self.busy_timeout = busy_timeout
        refuse_special_file(path)
        try:
            if readonly:
                # Quoted: a '?' or '#' in the path would otherwise end the file name inside the URI.
                self.conn = sqlite3.connect(
                    f"file:{quote(str(path))}?mode=ro", uri=True, timeout=busy_timeout, isolation_level=None
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.text_factory = _decode_text
            self.conn.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
            if readonly:
                try:
                    self._check_version()
                except StateError:
                    self.conn.close()
                    raise
            else:
                # Switching a brand-new file to WAL (and migrating it) can answer "database is locked" at
                # once, without the busy handler, while another process does the same: retry those briefly.
                self._retry_locked(lambda: self.conn.execute("PRAGMA journal_mode = WAL"), busy_timeout)
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self.conn.execute("PRAGMA foreign_keys = ON")
                self._retry_locked(self._migrate, busy_timeout)
        except sqlite3.Error as exc:
            if is_locked(exc):
                raise locked_error(path, busy_timeout) from None
            raise StateError(f"cannot open state database {path}: {exc}") from None
        except OSError as exc:
            raise StateError(f"cannot open state database {path}: {exc.strerror or exc}") from None

    @staticmethod
    def _retry_locked(action: Callable[[], object], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                action()
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02 + random.random() * 0.05)

    # -- lifecycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """An immediate write transaction (taken up front so concurrent writers queue instead of failing)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _check_version(self) -> int:
        """The schema version; StateError when a newer modfetch wrote it (its rows may not fit ours)."""
        current = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        if current > SCHEMA_VERSION:
            raise StateError(
                f"state database {self.path} is from a newer modfetch (schema {current})",
                hint="upgrade modfetch, or point general.data_root elsewhere",
            )
        return current

    def _migrate(self) -> None:
        with self.transaction():
            migrate(self.conn, self._check_version())

    def recover_stale(self) -> int:
        """Mark ``running`` downloads whose process is gone as ``interrupted``; reset their running chunks."""
        rows = self.conn.execute("SELECT id, pid FROM downloads WHERE status = ?", (RUNNING,)).fetchall()
        stale = [r["id"] for r in rows if not pid_alive(r["pid"])]
        if stale:
            with self.transaction():
                for download_id in stale:
                    self.conn.execute(
                        "UPDATE downloads SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
                        (INTERRUPTED, time.time(), download_id, RUNNING),
                    )
                    self.conn.execute(
                        "UPDATE chunks SET status = ? WHERE download_id = ? AND status = ?",
                        (CHUNK_PENDING, download_id, CHUNK_RUNNING),
                    )
        # A download stopped cleanly (Ctrl-C, SIGTERM, an error) is no longer running, but its last checkpoint
        # left its partial chunks marked running: they are pending (their bytes_done is kept).
        orphans = self.conn.execute(
            "SELECT 1 FROM chunks WHERE status = ? AND download_id IN "
            "(SELECT id FROM downloads WHERE status != ?) LIMIT 1", (CHUNK_RUNNING, RUNNING)).fetchone()
        if orphans:
            with self.transaction():
                self.conn.execute(
                    "UPDATE chunks SET status = ? WHERE status = ? AND download_id IN "
                    "(SELECT id FROM downloads WHERE status != ?)", (CHUNK_PENDING, CHUNK_RUNNING, RUNNING))
        return len(stale)

    # -- downloads -------------------------------------------------------------------------------------
    @staticmethod
    def _download(row: sqlite3.Row) -> DownloadRow:
        data = dict(row)
        try:
            meta = json.loads(data.get("meta") or "{}")
        except (ValueError, TypeError):
            meta = None
        # Hints only: a damaged or hand-edited value must not make every command that lists downloads fail.
        data["meta"] = meta if isinstance(meta, dict) else {}
        # SQLite columns take any type: the same goes for a size of 'abc' or Inf (invalid JSON in status
        # --json) and a time past year 9999 (time.localtime raises), and for a column we do not know.
        for name, default in NUMBER_DEFAULTS.items():
            if name in data:
                data[name] = sane_number(name, data[name], default)
        for name in TEXT_COLUMNS:
            value = data.get(name)
            if isinstance(value, bytes):
                data[name] = value.decode("utf-8", "replace")
            elif value is not None and not isinstance(value, str):
                data[name] = str(value)
        return DownloadRow(**{name: value for name, value in data.items() if name in DOWNLOAD_COLUMNS})

    def create_download(self, url: str, dest_path: str, **fields: Any) -> DownloadRow:
        """Insert a new download row and return it."""
        now = time.time()
        fields.setdefault("status", PENDING)
        if "meta" in fields:
            fields["meta"] = json.dumps(fields["meta"], sort_keys=True)
        columns = ["url", "dest_path", "created_at", "updated_at", *fields]
        values = [url, dest_path, now, now, *fields.values()]
        cur = self.conn.execute(
            f"INSERT INTO downloads ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", values
        )
        row = self.get_download(int(cur.lastrowid or 0))
        assert row is not None
        return row

    def update_download(self, download_id: int, **fields: Any) -> None:
        """Update columns of one download (``updated_at`` is set automatically)."""
        unknown = set(fields) - set(DOWNLOAD_COLUMNS)
        if unknown:
            raise ValueError(f"unknown download columns: {sorted(unknown)}")
        if "meta" in fields:
            fields["meta"] = json.dumps(fields["meta"], sort_keys=True)
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self.conn.execute(f"UPDATE downloads SET {assignments} WHERE id = ?", (*fields.values(), download_id))

    def get_download(self, download_id: int) -> DownloadRow | None:
        """One download by id."""
        row = self.conn.execute("SELECT * FROM downloads WHERE id = ?", (download_id,)).fetchone()
        return self._download(row) if row else None

    def find_by_dest(self, dest_path: str) -> DownloadRow | None:
        """The download targeting this final path, if any."""
        row = self.conn.execute("SELECT * FROM downloads WHERE dest_path = ?", (dest_path,)).fetchone()
        return self._download(row) if row else None

    def find_by_url(self, url: str) -> list[DownloadRow]:
        """Downloads whose original or resolved URL is ``url``, newest first."""
        rows = self.conn.execute(
            "SELECT * FROM downloads WHERE url = ? OR resolved_url = ? ORDER BY id DESC", (url, url)
        ).fetchall()
        return [self._download(r) for r in rows]

    def list_downloads(self, statuses: Iterable[str] | None = None, source: str | None = None) -> list[DownloadRow]:
        """All downloads (optionally filtered), newest first."""
        sql, args = "SELECT * FROM downloads WHERE 1 = 1", list[Any]()
        status_list = list(statuses or [])
        if status_list:
            sql += f" AND status IN ({', '.join('?' for _ in status_list)})"
            args.extend(status_list)
        if source:
            sql += " AND source = ?"
            args.append(source)
        rows = self.conn.execute(sql + " ORDER BY id DESC", args).fetchall()
        return [self._download(r) for r in rows]

    def latest_finished(self, timed: bool = False) -> DownloadRow | None:
        """The finished download with the latest (sane, non-zero) ``finished_at``; with ``timed`` the latest one
        that also has a ``started_at``.  SQLite picks it: metrics ask at every checkpoint, and decoding every row
        of a history that grows with each download made a batch of N jobs cost O(N * history)."""
        sane = "typeof({0}) IN ('integer', 'real') AND {0} > 0 AND {0} <= ?"  # what sane_number keeps, and truthy
        sql = f"SELECT * FROM downloads WHERE status IN ({', '.join('?' for _ in FINISHED_STATUSES)}) AND "
        sql += sane.format("finished_at")
        args: list[Any] = [*FINISHED_STATUSES, MAX_TIMESTAMP]
        if timed:
            sql += " AND " + sane.format("started_at")
            args.append(MAX_TIMESTAMP)
        row = self.conn.execute(sql + " ORDER BY finished_at DESC, id DESC LIMIT 1", args).fetchone()
        return self._download(row) if row is not None else None

    def add_retries(self, download_id: int, count: int) -> None:
        """Count ``count`` more retried requests on a download (the TUI and ``status --json`` show the total)."""
        self.conn.execute("UPDATE downloads SET retries = retries + ? WHERE id = ?", (count, download_id))

    def delete_download(self, download_id: int) -> None:
        """Forget a download and its chunks."""
        self.conn.execute("DELETE FROM downloads WHERE id = ?", (download_id,))

    # -- chunks ----------------------------------------------------------------------------------------
    def get_chunks(self, download_id: int) -> list[ChunkRow]:
        """Chunk rows of a download ordered by offset."""
        rows = self.conn.execute(
            'SELECT idx, start, "end", bytes_done, sha256, status FROM chunks WHERE download_id = ? '
            "ORDER BY start",
            (download_id,),
        ).fetchall()
        return [ChunkRow(**dict(r)) for r in rows]

    def replace_chunks(self, download_id: int, chunks: Iterable[ChunkRow]) -> None:
        """Drop a download's chunk plan and store a new one."""
        with self.transaction():
            self.conn.execute("DELETE FROM chunks WHERE download_id = ?", (download_id,))
            self.conn.executemany(
                'INSERT INTO chunks (download_id, idx, start, "end", bytes_done, sha256, status) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(download_id, c.idx, c.start, c.end, c.bytes_done, c.sha256, c.status) for c in chunks],
            )

    def save_chunks(self, download_id: int, chunks: Iterable[ChunkRow], bytes_done: int | None = None) -> None:
        """Upsert several chunk rows (and optionally the download's bytes_done) in one transaction."""
        with self.transaction():
            self.conn.executemany(
                'INSERT INTO chunks (download_id, idx, start, "end", bytes_done, sha256, status) '
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(download_id, idx) DO UPDATE SET "
                'start = excluded.start, "end" = excluded."end", bytes_done = excluded.bytes_done, '
                "sha256 = excluded.sha256, status = excluded.status",
                [(download_id, c.idx, c.start, c.end, c.bytes_done, c.sha256, c.status) for c in chunks],
            )
            if bytes_done is not None:
                self.conn.execute(
                    "UPDATE downloads SET bytes_done = ?, updated_at = ? WHERE id = ?",
                    (bytes_done, time.time(), download_id),
                )

    def restart_download(self, download_id: int, **fields: Any) -> None:
        """Start a download over from byte 0: forget its chunk plan, reset ``bytes_done`` (plus ``fields``, e.g.
        new validators or a status) in one transaction, then delete its ``.part``.  The one place a restart
        happens: a killed process leaves either the old state or a row with no chunks (which re-plans)."""
        row = self.get_download(download_id)
        if row is None:
            return
        fields.setdefault("bytes_done", 0)
        with self.transaction():
            self.conn.execute("DELETE FROM chunks WHERE download_id = ?", (download_id,))
            self.update_download(download_id, **fields)
        part_path_for(row.dest_path).unlink(missing_ok=True)

    # -- placements ------------------------------------------------------------------------------------
    def record_placement(
        self, download_id: int | None, source_path: str, target_path: str, app: str, mode: str,
        artifact_type: str | None,
    ) -> None:
        """Record (or refresh) that ``target_path`` now provides ``source_path`` to ``app``."""
        self.conn.execute(
            "INSERT INTO placements (download_id, source_path, target_path, app, mode, artifact_type, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(target_path) DO UPDATE SET download_id = excluded.download_id, "
            "source_path = excluded.source_path, app = excluded.app, mode = excluded.mode, "
            "artifact_type = excluded.artifact_type, created_at = excluded.created_at",
            (download_id, source_path, target_path, app, mode, artifact_type, time.time()),
        )

    def placements(self, download_id: int | None = None, source_path: str | None = None) -> list[PlacementRow]:
        """Placements, optionally only those of one download or one source file."""
        sql, args = "SELECT * FROM placements WHERE 1 = 1", list[Any]()
        if download_id is not None:
            sql += " AND download_id = ?"
            args.append(download_id)
        if source_path is not None:
            sql += " AND source_path = ?"
            args.append(source_path)
        return [PlacementRow(**dict(r)) for r in self.conn.execute(sql + " ORDER BY id", args).fetchall()]

    def delete_placement(self, placement_id: int) -> None:
        """Forget one placement record (the link or copy itself is the caller's business)."""
        self.conn.execute("DELETE FROM placements WHERE id = ?", (placement_id,))

    def forget_download(self, download_id: int) -> None:
        """Forget a download with its chunks and its placement records, in one transaction."""
        with self.transaction():
            self.conn.execute("DELETE FROM placements WHERE download_id = ?", (download_id,))
            self.conn.execute("DELETE FROM chunks WHERE download_id = ?", (download_id,))
            self.conn.execute("DELETE FROM downloads WHERE id = ?", (download_id,))

    # -- counters (metrics survive across processes) ---------------------------------------------------
    def add_counters(self, increments: Iterable[tuple[str, str, str, float]]) -> None:
        """Add to named counters (name, source, reason, delta) in one transaction; '' for an absent label."""
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO counters (name, source, reason, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name, source, reason) DO UPDATE SET value = value + excluded.value",
                list(increments),
            )

    def counters(self) -> dict[CounterKey, float]:
        """All counters keyed by (name, source, reason)."""
        rows = self.conn.execute("SELECT name, source, reason, value FROM counters").fetchall()
        return {(str(r["name"]), str(r["source"]), str(r["reason"])): float(r["value"]) for r in rows}

    def raise_to(self, name: str, value: float) -> None:
        """Set a stored gauge to ``value`` unless it already holds a larger one (a "last time" stays monotonic)."""
        self.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name, source, reason) DO UPDATE SET value = max(value, excluded.value)", (name, value))

    def count_status(self, statuses: Iterable[str], error: str | None = None) -> int:
        """How many downloads are in one of ``statuses`` (and, with ``error``, record exactly that error)."""
        wanted = list(statuses)
        sql = f"SELECT count(*) FROM downloads WHERE status IN ({', '.join('?' for _ in wanted)})"
        args = [*wanted] if error is None else [*wanted, error]
        return int(self.conn.execute(sql + ("" if error is None else " AND error = ?"), args).fetchone()[0])

    def supersede_failures(self, url: str, keep_id: int | None = None) -> int:
        """Forget ``failed`` rows of ``url`` that hold no bytes (recorded before the first byte, or keyed by the
        URI): a later success of the same target makes them stale.  Returns how many went."""
        cur = self.conn.execute(
            "DELETE FROM downloads WHERE status = ? AND url = ? AND bytes_done = 0 AND id != ?",
            (FAILED, url, -1 if keep_id is None else keep_id))
        return int(cur.rowcount or 0)


def open_state(path: Path, readonly: bool = False, busy_timeout: float | None = None) -> StateDB:
    """Open the state DB (creating and migrating it unless read-only) and recover stale running rows;
    ``busy_timeout`` is how long a statement waits for another process's lock (default: default_busy_timeout())."""
    if readonly and not path.exists():
        raise StateError(f"no state database at {path} yet", hint="run a download first")
    db = StateDB(path, readonly=readonly, busy_timeout=busy_timeout)
    if not readonly:
        db.recover_stale()
    return db
