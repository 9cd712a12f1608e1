"""Schema 3: counters keyed by real ``source`` and ``reason`` columns.  A schema-2 database's Prometheus label
text is migrated once, and the metrics textfile renders the same bytes from the columns as it did from the
text (no label parsing at render time)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from modfetch.metrics import collect, render
from modfetch.state import SCHEMA_VERSION, open_state
from modfetch.state.schema import MIGRATIONS, labels_to_columns


@pytest.mark.parametrize(("text", "columns"), [
    ('source="http"', ("http", "")),
    ('source="http",reason="gated"', ("http", "gated")),
    ('reason="gated",source="civitai"', ("civitai", "gated")),
    ("", ("", "")),
    ("x" * 50, ("", "")),
    ('source="a\\"b\\\\c\\nd"', ('a"b\\c\nd', "")),
    ('source="http",reason="disk",extra="dropped"', ("http", "disk")),
])
def test_label_text_to_columns(text: str, columns: tuple[str, str]) -> None:
    assert labels_to_columns(text) == columns


def _schema_2_db(path: Path, counters: list[tuple[str, str, float]]) -> None:
    conn = sqlite3.connect(path)
    MIGRATIONS[0](conn)
    MIGRATIONS[1](conn)
    conn.executemany("INSERT INTO counters (name, labels, value) VALUES (?, ?, ?)", counters)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_schema_2_counters_migrate_to_columns_and_render_identically(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _schema_2_db(path, [
        ("downloaded_bytes", 'source="http"', 1000.0),
        ("downloaded_bytes", 'source="huggingface"', 7.0),
        ("retries", 'source="http"', 2.0),
        ("downloads_failed", 'source="http",reason="gated"', 2.0),
        ("downloads_failed", 'reason="gated",source="http"', 3.0),  # the same series spelt another way: adds up
        ("downloads_interrupted", 'source="civitai"', 1.0),
        ("last_failure_timestamp_seconds", "", 1700000000.5),
    ])
    with open_state(path) as db:
        assert int(db.conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION == 4
        columns = [r[1] for r in db.conn.execute("PRAGMA table_info(counters)")]
        assert columns == ["name", "source", "reason", "value"]
        assert db.counters() == {
            ("downloaded_bytes", "http", ""): 1000.0,
            ("downloaded_bytes", "huggingface", ""): 7.0,
            ("retries", "http", ""): 2.0,
            ("downloads_failed", "http", "gated"): 5.0,
            ("downloads_interrupted", "civitai", ""): 1.0,
            ("last_failure_timestamp_seconds", "", ""): 1700000000.5,
        }
        text = render(collect(db))
    lines = text.splitlines()
    # exactly what the label-text renderer printed for these rows
    assert 'modfetch_downloaded_bytes_total{source="http"} 1000' in lines
    assert 'modfetch_downloaded_bytes_total{source="huggingface"} 7' in lines
    assert 'modfetch_downloaded_bytes_total{source="civitai"} 0' in lines
    assert 'modfetch_retries_total{source="http"} 2' in lines
    assert 'modfetch_downloads_failed_total{reason="gated",source="http"} 5' in lines
    assert 'modfetch_downloads_failed_total{reason="other",source="http"} 0' in lines
    assert 'modfetch_downloads_interrupted_total{source="civitai"} 1' in lines
    assert "modfetch_last_failure_timestamp_seconds 1700000000.5" in lines
    assert text.count("# HELP ") == text.count("# TYPE ") == 10


def test_new_counters_render_the_same_as_migrated_ones(tmp_path: Path) -> None:
    """The same data written through the new API (columns) and migrated from label text renders byte-identically."""
    old = tmp_path / "old.db"
    _schema_2_db(old, [("downloads_failed", 'source="civitai",reason="auth"', 4.0),
                       ("downloaded_bytes", 'source="http"', 12.0)])
    with open_state(old) as db:
        migrated = render(collect(db))
    with open_state(tmp_path / "new.db") as db:
        db.add_counters([("downloads_failed", "civitai", "auth", 4.0), ("downloaded_bytes", "http", "", 12.0)])
        written = render(collect(db))
    assert migrated == written
    assert 'modfetch_downloads_failed_total{reason="auth",source="civitai"} 4' in written.splitlines()


def test_migration_is_one_transaction(tmp_path: Path) -> None:
    """A schema-2 file whose counters cannot migrate stays at schema 2, its label rows intact."""
    path = tmp_path / "state.db"
    _schema_2_db(path, [("retries", 'source="http"', 1.0)])
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE counters_v3 (x)")  # in the way of the migration's new table
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match="counters_v3"):
        open_state(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        rows = conn.execute("SELECT name, labels, value FROM counters").fetchall()
        assert rows == [("retries", 'source="http"', 1.0)]
    finally:
        conn.close()
