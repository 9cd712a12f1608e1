"""Helpers shared by the torture tests (``pytest -m torture tests/torture``, run by ``scripts/torture``).

Every test here drives the real ``modfetch`` console script in subprocesses against the project's own
servers (``tests/servers``), so what is proven is what a user's shell would see.  Figures worth quoting are
printed with ``report()`` (shown by ``pytest -s``; ``scripts/torture`` passes it).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tests.conftest import Modfetch, error_lines


def report(title: str, **figures: Any) -> None:
    """Print one figures line, e.g. ``TORTURE kill-loop: kills=20 ...`` (collected by scripts/torture)."""
    text = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\nTORTURE {title}: {text}", flush=True)


def db_rows(mf: Modfetch, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of a read-only query on the state DB (no recovery side effects)."""
    if not mf.state_db.exists():
        return []
    conn = sqlite3.connect(f"file:{mf.state_db}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a process is creating the DB right now
            return []
        raise
    finally:
        conn.close()


def stuck_running_chunks(mf: Modfetch) -> list[dict[str, Any]]:
    """Chunk rows marked ``running`` (after a start, none may be: their owner is gone)."""
    return db_rows(mf, "SELECT * FROM chunks WHERE status = 'running'")


def assert_one_line_error(stderr: str) -> str:
    """A failed run printed exactly one ``modfetch: error:`` line (plus an optional hint) and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    return lines[0]
