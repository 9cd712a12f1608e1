"""Concurrency: 8 processes download 8 different files into one state DB at once, 2 more race for the same
target, and a ``status --json`` poller (plus a metrics-file reader) loops meanwhile.

Pass: no "database is locked" anywhere, every poll parses, the metrics file is never torn, all files correct;
of the same-target pair one succeeds and the other either succeeds too (it found the file done) or exits 1
with the clear lock message; the file is correct.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Modfetch, sha256_of
from tests.servers.faulty import FaultyServer
from tests.torture.conftest import assert_one_line_error, report, stuck_running_chunks

pytestmark = pytest.mark.torture

MiB = 1 << 20


def _metrics_ok(text: str) -> bool:
    """A complete textfile: empty (not written yet) or newline-terminated lines that all look like samples."""
    if not text:
        return True
    if not text.endswith("\n"):
        return False
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    return all(len(line.rsplit(" ", 1)) == 2 for line in samples)


@pytest.mark.timeout(300)
def test_many_processes_one_state_db(mf: Modfetch, faulty_server: Callable[..., FaultyServer]) -> None:
    mf.write_config(concurrency={"per_file_chunks": 3, "chunk_size_mb": 1})
    servers = [faulty_server(size=12 * MiB + i * 4099, seed=100 + i, path=f"/model-{i}.bin", rate=3 * MiB)
               for i in range(8)]
    shared = faulty_server(size=20 * MiB + 3, seed=999, path="/shared.bin", rate=4 * MiB)
    for server in [*servers, shared]:
        server.content()
    metrics_path = mf.home / ".local/share/modfetch/metrics/modfetch.prom"

    polls: list[str] = []
    poll_errors: list[str] = []
    torn: list[str] = []
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            result = mf.run("--json", "status", timeout=60)
            if result.returncode != 0 or "locked" in result.stderr:
                poll_errors.append(result.stderr)
            else:
                try:
                    json.loads(result.stdout)
                    polls.append("ok")
                except ValueError:
                    poll_errors.append("unparseable status --json: " + result.stdout[:200])

    def metrics_reader() -> None:
        while not stop.is_set():
            try:
                text = metrics_path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            if not _metrics_ok(text):
                torn.append(text[-200:])
            time.sleep(0.01)

    threads = [threading.Thread(target=poller), threading.Thread(target=metrics_reader)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        procs = [mf.popen("--quiet", "download", "--url", s.url, "--dest", str(mf.dest)) for s in servers]
        pair = [mf.popen("--quiet", "download", "--url", shared.url, "--dest", str(mf.dest)) for _ in range(2)]
        results = [(p, *p.communicate(timeout=240)) for p in [*procs, *pair]]
    finally:
        stop.set()
        for thread in threads:
            thread.join(90)
    elapsed = time.monotonic() - started

    for _proc, _out, err in results:
        assert "database is locked" not in err, err
        assert "Traceback" not in err, err
    for (proc, _out, err), server in zip(results[:8], servers, strict=True):
        assert proc.returncode == 0, err
        assert sha256_of(mf.dest / Path(server.path).name) == server.sha256()
    pair_codes = sorted(p.returncode for p, _, _ in results[8:])
    assert pair_codes in ([0, 0], [0, 1]), [e for _, _, e in results[8:]]
    for proc, _out, err in results[8:]:
        if proc.returncode == 1:
            line = assert_one_line_error(err)
            assert "another modfetch process" in line and "already downloading" in line, line
    assert sha256_of(mf.dest / "shared.bin") == shared.sha256()
    assert not poll_errors, poll_errors[:3]
    assert polls, "the status poller never completed a poll"
    assert not torn, torn[:2]
    assert metrics_path.exists() and _metrics_ok(metrics_path.read_text(encoding="utf-8"))
    assert not stuck_running_chunks(mf)
    rows = mf.rows()
    assert len(rows) == 9, rows
    assert all(r["status"] == "complete" for r in rows), [(r["dest_path"], r["status"]) for r in rows]
    report("concurrency", processes=10, files=9, status_polls=len(polls), poll_errors=len(poll_errors),
           torn_metrics=len(torn), same_target_exit_codes=pair_codes, elapsed_s=f"{elapsed:.0f}")
