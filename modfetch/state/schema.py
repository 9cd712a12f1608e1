"""The state database's schema: the DDL of every version and the migrations between them.

``PRAGMA user_version`` holds the version; ``migrate`` runs inside the caller's write transaction, one step per
version, so a database is never left half-migrated.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 4

_V1 = """
    CREATE TABLE downloads (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        url TEXT NOT NULL,
        resolved_url TEXT,
        dest_path TEXT NOT NULL,
        size INTEGER,
        bytes_done INTEGER NOT NULL DEFAULT 0,
        etag TEXT,
        last_modified TEXT,
        expected_sha256 TEXT,
        sha256 TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        error TEXT,
        source TEXT NOT NULL DEFAULT 'http',
        artifact_type TEXT,
        meta TEXT NOT NULL DEFAULT '{}',
        retries INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE UNIQUE INDEX downloads_dest ON downloads(dest_path);
    CREATE INDEX downloads_status ON downloads(status);
    CREATE TABLE chunks (
        download_id INTEGER NOT NULL REFERENCES downloads(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL,
        bytes_done INTEGER NOT NULL DEFAULT 0,
        sha256 TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        PRIMARY KEY (download_id, idx)
    );
    CREATE TABLE placements (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        download_id INTEGER REFERENCES downloads(id) ON DELETE SET NULL,
        source_path TEXT NOT NULL,
        target_path TEXT NOT NULL UNIQUE,
        app TEXT NOT NULL,
        mode TEXT NOT NULL,
        artifact_type TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE counters (
        name TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '',
        value REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (name, labels)
    );
"""

# 1 -> 2: why a download failed, as a class (errors.ERROR_CLASSES); failures gain a ``reason`` label.
_V2 = """
    ALTER TABLE downloads ADD COLUMN error_class TEXT;
    UPDATE counters SET labels = labels || ',reason="other"' WHERE name = 'downloads_failed'
        AND labels NOT LIKE '%reason=%'
"""

# Counters whose stored value is a "last time" (raised to a maximum, never added to).
MAX_COUNTERS = frozenset({"last_failure_timestamp_seconds"})
# The Prometheus label text schema 2 stored in counters.labels, e.g. ``source="http",reason="gated"``.
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def labels_to_columns(text: str) -> tuple[str, str]:
    """Schema 2's label text -> (source, reason), values unescaped; '' for a label the text lacks.  Used once,
    by the 2 -> 3 migration: from then on the columns are the truth and nothing parses label text."""
    found = {m.group(1): re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), m.group(2))
             for m in _LABEL.finditer(text or "")}
    return found.get("source", ""), found.get("reason", "")


def _v3(conn: sqlite3.Connection) -> None:
    """2 -> 3: counters keyed by real ``source`` and ``reason`` columns instead of Prometheus label text."""
    conn.execute("""
        CREATE TABLE counters_v3 (
            name TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            value REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (name, source, reason)
        )""")
    for name, labels, value in conn.execute("SELECT name, labels, value FROM counters").fetchall():
        merge = "max(value, excluded.value)" if name in MAX_COUNTERS else "value + excluded.value"
        # Two label texts can name the same series (another order, a label we no longer keep): they add up,
        # exactly as the metrics summed them when they parsed the text.
        conn.execute("INSERT INTO counters_v3 (name, source, reason, value) VALUES (?, ?, ?, ?) "
                     f"ON CONFLICT(name, source, reason) DO UPDATE SET value = {merge}",
                     (name, *labels_to_columns(str(labels)), value))
    conn.execute("DROP TABLE counters")
    conn.execute("ALTER TABLE counters_v3 RENAME TO counters")


# 3 -> 4: the connection count a chunked transfer used (adaptive per file, issue 17).
_V4 = "ALTER TABLE downloads ADD COLUMN connections INTEGER"


def _script(text: str) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        # executescript would commit the caller's transaction; run the statements one by one instead.
        for statement in text.split(";"):
            if statement.strip():
                conn.execute(statement)
    return run


# MIGRATIONS[v] takes a database from version v to v + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_script(_V1), _script(_V2), _v3, _script(_V4)]


def migrate(conn: sqlite3.Connection, current: int) -> None:
    """Bring a database at version ``current`` to SCHEMA_VERSION (inside the caller's transaction)."""
    for version in range(current, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {version + 1}")
