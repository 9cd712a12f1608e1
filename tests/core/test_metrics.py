"""Prometheus textfile: content, node_exporter conventions, counters that grow across runs, atomic writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modfetch import metrics
from modfetch.state import COMPLETE, RUNNING, open_state
from tests.conftest import ROOT

MiB = 1 << 20
FAMILIES = {
    "modfetch_downloaded_bytes": "counter", "modfetch_retries": "counter",
    "modfetch_downloads_succeeded": "counter", "modfetch_downloads_failed": "counter",
    "modfetch_last_download_duration_seconds": "gauge", "modfetch_last_success_timestamp_seconds": "gauge",
    "modfetch_downloads_in_progress": "gauge", "modfetch_downloads_interrupted": "counter",
    "modfetch_last_failure_timestamp_seconds": "gauge", "modfetch_verify_mismatches": "gauge",
}


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples keyed by (sample name, sorted labels); asserts every family has the expected type."""
    samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert types == FAMILIES
    return samples


def bytes_total(samples: dict, source: str = "http") -> float:
    return samples[("modfetch_downloaded_bytes_total", (("source", source),))]


def default_path(home: Path) -> Path:
    return home / ".local" / "share" / "modfetch" / "metrics" / "modfetch.prom"


@pytest.fixture
def mfd(mf, isolated_env: Path):
    """``mf`` with data_root spelled out: in-process runs write this test's textfile."""
    mf.write_config(general={"data_root": str(isolated_env / ".local" / "share" / "modfetch")})
    return mf


def test_textfile_after_downloads_counts_bytes_and_outcomes(mfd, faulty_server, isolated_env: Path) -> None:
    mf = mfd
    server = faulty_server(size=3 * MiB)
    assert mf.download(server.url).exit_code == 0
    path = default_path(isolated_env)
    first = parse(path.read_text())
    assert bytes_total(first) == 3 * MiB
    assert first[("modfetch_downloads_succeeded_total", (("source", "http"),))] == 1
    assert first[("modfetch_downloads_in_progress", ())] == 0
    assert abs(first[("modfetch_last_success_timestamp_seconds", ())] - time.time()) < 60
    assert first[("modfetch_last_download_duration_seconds", ())] >= 0
    # a second download in another process: the counter grows by exactly that file's size
    other = faulty_server(size=MiB + 123, seed=2)
    run = mf.run("--quiet", "download", "--url", other.url_for("/other.bin"), "--dest", str(mf.dest))
    assert run.returncode == 0, run.stderr
    second = parse(path.read_text())
    assert bytes_total(second) == bytes_total(first) + MiB + 123
    assert second[("modfetch_downloads_succeeded_total", (("source", "http"),))] == 2
    # a failure counts too, and nothing is left behind but the file and its lock
    failing = faulty_server(size=MiB, seed=3, error_status=404, error_times=None)
    assert mf.download(failing.url_for("/gone.bin")).exit_code != 0
    leftovers = sorted(p.name for p in path.parent.iterdir())
    assert leftovers == [".modfetch.prom.lock", "modfetch.prom"]


def test_custom_path_directory_is_created_and_disabled_writes_nothing(mfd, faulty_server, tmp_path: Path,
                                                                     isolated_env: Path) -> None:
    mf = mfd
    target = tmp_path / "node_exporter" / "textfile" / "mf.prom"
    mf.write_config(general=mf.config["general"],
                    metrics={"prometheus_textfile": {"enabled": True, "path": str(target)}})
    server = faulty_server(size=MiB)
    assert mf.download(server.url).exit_code == 0
    assert bytes_total(parse(target.read_text())) == MiB
    off = {"enabled": False, "path": str(tmp_path / "off" / "x.prom")}
    mf.write_config(general=mf.config["general"], metrics={"prometheus_textfile": off})
    assert mf.download(server.url_for("/again.bin")).exit_code == 0
    assert not (tmp_path / "off").exists()
    assert not default_path(isolated_env).exists()


def test_render_conventions_and_gauges(tmp_path: Path) -> None:
    db = open_state(tmp_path / "state.db")
    db.add_counters([("downloaded_bytes", "huggingface", "", 10.0), ("retries", "http", "", 2.0)])
    now = time.time()
    done = db.create_download("https://h/a", str(tmp_path / "a"), size=5)
    db.update_download(done.id, status=COMPLETE, started_at=now - 12.5, finished_at=now)
    live = db.create_download("https://h/b", str(tmp_path / "b"))
    db.update_download(live.id, status=RUNNING, pid=os.getpid())
    dead = db.create_download("https://h/c", str(tmp_path / "c"))
    db.update_download(dead.id, status=RUNNING, pid=2**22 + 12345)  # no such process
    text = metrics.render(metrics.collect(db))
    db.close()
    assert "# HELP modfetch_downloaded_bytes_total " in text
    assert "# TYPE modfetch_downloaded_bytes_total counter" in text
    assert all(not line.split()[-1].isdigit() or len(line.split()) == 2 for line in text.splitlines()
               if not line.startswith("#"))  # no timestamps
    samples = parse(text)
    assert bytes_total(samples, "huggingface") == 10 and bytes_total(samples, "civitai") == 0
    assert samples[("modfetch_retries_total", (("source", "http"),))] == 2
    assert samples[("modfetch_downloads_in_progress", ())] == 1
    assert samples[("modfetch_last_download_duration_seconds", ())] == pytest.approx(12.5, abs=0.01)
    assert samples[("modfetch_last_success_timestamp_seconds", ())] == pytest.approx(now, abs=0.01)


def test_missing_state_db_still_writes_a_valid_file(tmp_path: Path) -> None:
    out = tmp_path / "m" / "x.prom"
    metrics.write_textfile(tmp_path / "nope.db", out)
    assert bytes_total(parse(out.read_text())) == 0


def test_label_values_are_escaped_and_redacted() -> None:
    snap = metrics.Snapshot(counters={("retries", (("source", 'we"ird\\x'),)): 1.0})
    text = metrics.render(snap)
    samples = parse(text)
    assert samples[("modfetch_retries_total", (("source", 'we"ird\\x'),))] == 1


def test_promtool_check_metrics(mfd, faulty_server, isolated_env: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    assert mfd.download(faulty_server(size=MiB).url).exit_code == 0
    text = default_path(isolated_env).read_text()
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


_WRITER = """
import sys, time
from pathlib import Path
from modfetch import metrics
from modfetch.state import open_state
db_path, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
db = open_state(db_path)
for i in range(n):
    db.add_counters([("downloaded_bytes", "http", "", 1.0)])
    metrics.write_textfile(db_path, out, lock_wait=60)  # this test is about tearing, not skipping
db.close()
"""


def test_concurrent_writers_never_tear_the_file(tmp_path: Path) -> None:
    """Processes and threads rewrite the file while a reader parses it continuously: every read is a complete,
    valid file and the byte counter never goes backwards (writes serialise under the lock)."""
    db_path, out = tmp_path / "state.db", tmp_path / "prom" / "modfetch.prom"
    open_state(db_path).close()
    procs, per_proc = 4, 25
    threads_n, per_thread = 4, 25
    stop = threading.Event()
    seen: list[float] = []
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                text = out.read_text()
            except FileNotFoundError:
                continue
            try:
                seen.append(bytes_total(parse(text)))
            except Exception as exc:  # a torn file fails to parse or misses families
                problems.append(f"{type(exc).__name__}: {exc}: {text[-200:]!r}")

    def thread_writer() -> None:
        db = open_state(db_path)
        try:
            for _ in range(per_thread):
                db.add_counters([("downloaded_bytes", "http", "", 1.0)])
                metrics.write_textfile(db_path, out, lock_wait=60)
        finally:
            db.close()

    read = threading.Thread(target=reader)
    read.start()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", _WRITER, str(db_path), str(out), str(per_proc)]
    children = [subprocess.Popen(argv, env=env) for _ in range(procs)]
    writers = [threading.Thread(target=thread_writer) for _ in range(threads_n)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    codes = [c.wait(timeout=60) for c in children]
    stop.set()
    read.join()
    assert codes == [0] * procs
    assert not problems, problems[:3]
    assert seen and seen == sorted(seen), "the counter went backwards between reads"
    assert bytes_total(parse(out.read_text())) == procs * per_proc + threads_n * per_thread
    assert sorted(p.name for p in out.parent.iterdir()) == [".modfetch.prom.lock", "modfetch.prom"]
