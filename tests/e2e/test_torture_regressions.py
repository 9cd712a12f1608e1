"""Regression tests (default suite) for failures the torture and fuzzing campaign (issue 8) found."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modfetch.app.status import select_downloads
from modfetch.errors import UsageError
from modfetch.state import ChunkRow, open_state
from tests.conftest import Modfetch, wait_for
from tests.servers.faulty import FaultyServer

MiB = 1 << 20


def test_next_start_resets_running_chunks_of_a_stopped_download(tmp_path: Path) -> None:
    """A clean stop (SIGTERM/Ctrl-C/error) marks the download ``interrupted`` but its last checkpoint left partial
    chunks ``running``; recover_stale only looked at ``running`` downloads, so those rows stayed running forever."""
    db_path = tmp_path / "state.db"
    with open_state(db_path) as db:
        row = db.create_download("http://h/f", str(tmp_path / "f"), size=4 * MiB, status="interrupted")
        db.replace_chunks(row.id, [ChunkRow(0, 0, 2 * MiB, 2 * MiB, "ab" * 32, "complete"),
                                   ChunkRow(1, 2 * MiB, 4 * MiB, 12345, None, "running")])
    with open_state(db_path) as db:
        chunks = db.get_chunks(row.id)
    assert [c.status for c in chunks] == ["complete", "pending"]
    assert chunks[1].bytes_done == 12345   # progress is kept


@pytest.mark.timeout(60)
def test_sigterm_leaves_no_chunk_running(mf: Modfetch, faulty_server: Callable[..., FaultyServer]) -> None:
    server = faulty_server(size=16 * MiB, rate=2 * MiB)
    proc = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    wait_for(lambda: server.body_bytes() >= 2 * MiB, "the transfer under way", proc=proc, seconds=20)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    rows = mf.status()
    assert rows[0]["status"] == "interrupted"
    assert all(c["status"] != "running" for c in mf.chunk_rows(rows[0]["id"]))


@settings(max_examples=100, deadline=None)
@given(selector=st.text())
def test_status_selector_never_crashes(selector: str) -> None:
    """Regression (fuzzing): ``modfetch status ²`` / ``verify ²`` died with an internal ValueError."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, open_state(Path(tmp) / "s.db") as db:
        db.create_download("http://h/f", "/tmp/x/f", size=1)
        try:
            rows = select_downloads(db, selector)
        except UsageError:
            return
        assert isinstance(rows, list)


def test_status_with_a_superscript_id_is_a_usage_error(mf: Modfetch) -> None:
    result = mf.cli("status", "²")
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output
    assert json.dumps  # keep the import honest for --json variants


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_storm_stops_cleanly(mf: Modfetch, faulty_server: Callable[..., FaultyServer], sig: int) -> None:
    """A burst of Ctrl-C / SIGTERM during a transfer: exit 130 promptly with the progress saved.

    Found by the kill loop (a graceful stop hung for over 60 s): the signal handler raised KeyboardInterrupt
    inside concurrent.futures.wait(), which can leave the futures' locks held, so the workers never finished
    and the shutdown waited forever; a second signal during the cleanup also skipped the final checkpoint."""
    mf.write_config(concurrency={"per_file_chunks": 4, "chunk_size_mb": 1})
    server = faulty_server(size=32 * MiB, rate=2 * MiB)
    proc = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    wait_for(lambda: server.body_bytes() >= 3 * MiB, "the transfer under way", proc=proc, seconds=20)
    for _ in range(10):   # a burst while the transfer runs (not during interpreter shutdown, which
        if proc.poll() is not None:   # restores the default handlers: a signal then is a plain kill)
            break
        proc.send_signal(sig)
        time.sleep(0.005)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    row = mf.rows()[0]
    assert row["status"] == "interrupted"
    assert row["bytes_done"] >= 2 * MiB          # the final checkpoint ran despite the storm
    assert all(c["status"] != "running" for c in mf.chunk_rows(row["id"]))


def test_sigterm_handler_defers_to_the_polling_coordinator() -> None:
    from modfetch.cli import _STOPPING, _terminate
    from modfetch.engine import download as engine

    engine.POLLING.set()
    try:
        _terminate(signal.SIGTERM, None)          # no exception: the coordinator will see STOP
        assert engine.STOP.is_set()
        _terminate(signal.SIGINT, None)           # already stopping: ignored
    finally:
        engine.POLLING.clear()
        engine.STOP.clear()
        _STOPPING.clear()
    try:
        with pytest.raises(KeyboardInterrupt):
            _terminate(signal.SIGTERM, None)      # not downloading: interrupt at once
    finally:
        _STOPPING.clear()
