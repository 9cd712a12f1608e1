"""The ``downloads.retries`` column is truthful: every retried request of a run is added to the row (which
the TUI and ``status --json`` show), and it agrees with the ``retries`` metrics counter."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from tests.conftest import MiB, Modfetch
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]


@pytest.mark.parametrize(("faults", "cuts"), [
    ({}, 1),  # chunked: one chunk's connection drops once
    ({}, 3),
    ({"ranges": False}, 2),  # one stream, restarted from 0 after each drop
])
def test_row_counts_the_retries_of_its_run(mf: Modfetch, faulty_server: Serve, faults: dict[str, object],
                                           cuts: int) -> None:
    server = faulty_server(size=2 * MiB, cut_after=100_000, cut_times=cuts, **faults)
    mf.download_json(server.url)
    (row,) = mf.status()
    assert row["retries"] == cuts
    conn = sqlite3.connect(mf.state_db)
    try:
        (counted,) = conn.execute("SELECT value FROM counters WHERE name = 'retries' AND source = 'http'").fetchone()
    finally:
        conn.close()
    assert counted == cuts


def test_retries_add_up_across_runs_of_one_download(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, cut_after=50_000, cut_times=1)
    mf.download_json(server.url)
    mf.download_json(server.url, "--force")  # the same row, fetched again: its cut happened in the first run
    (row,) = mf.status()
    assert row["retries"] == 1
