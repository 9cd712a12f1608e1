"""modfetch.cancel: one stop event, one Interrupted for every mode, one "wait on futures, stop on a signal"."""

from __future__ import annotations

import ast
import concurrent.futures
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch import cancel
from modfetch.cli import _STOPPING, _terminate
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "modfetch"


@pytest.fixture(autouse=True)
def _fresh_stop() -> Iterator[None]:
    cancel.STOP.clear()
    cancel.POLLING.clear()
    _STOPPING.clear()
    yield
    cancel.STOP.clear()
    cancel.POLLING.clear()
    _STOPPING.clear()


def test_wait_or_stop_reports_each_future_then_returns() -> None:
    seen: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(lambda n=n: n) for n in range(5)]
        cancel.wait_or_stop(futures, lambda f: seen.append(f.result()))
    assert sorted(seen) == [0, 1, 2, 3, 4]


def test_a_stop_cancels_waiting_jobs_lets_running_ones_finish_and_raises_interrupted() -> None:
    started = threading.Event()
    finished: list[int] = []

    def job(n: int) -> int:
        started.set()
        cancel.STOP.wait(10)  # a running job sees the stop and checkpoints
        # ...taking a while, so the waiter cancels the queued jobs before this worker could pick one up
        wait_for(lambda: futures[1].cancelled(), "the queued job to be cancelled")
        finished.append(n)
        return n

    futures: list[concurrent.futures.Future[int]] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        futures += [pool.submit(job, n) for n in range(3)]
        threading.Timer(0.2, cancel.request_stop).start()
        with pytest.raises(cancel.Interrupted):
            cancel.wait_or_stop(futures)
        assert started.is_set() and finished == [0]  # the waiting two never started
        assert all(f.cancelled() for f in futures[1:])
    assert not cancel.POLLING.is_set()


def test_a_job_stopped_by_request_stop_stops_the_wait() -> None:
    def stopped() -> None:
        cancel.request_stop()
        raise cancel.Interrupted()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        futures = [pool.submit(stopped)]
        with pytest.raises(cancel.Interrupted):
            cancel.wait_or_stop(futures, lambda f: f.result())


def test_request_stop_runs_the_stop_callbacks() -> None:
    calls: list[str] = []
    cancel.on_stop(lambda: calls.append("woken"))
    cancel.request_stop()
    assert cancel.STOP.is_set() and calls == ["woken"]


def test_sleep_unless_stopped_is_cut_short() -> None:
    threading.Timer(0.1, cancel.request_stop).start()
    with pytest.raises(cancel.Interrupted):
        cancel.sleep_unless_stopped(30)


def test_the_signal_handler_raises_interrupted_not_a_bare_keyboardinterrupt() -> None:
    with pytest.raises(cancel.Interrupted):
        _terminate(signal.SIGINT, None)


def test_the_signal_handler_only_stops_while_a_waiter_polls() -> None:
    with cancel.polling():
        _terminate(signal.SIGTERM, None)  # no exception: the waiter raises Interrupted itself
    assert cancel.STOP.is_set()


def test_the_cli_imports_cancel_without_the_network_stack() -> None:
    code = ("import sys, modfetch.cli, modfetch.cancel; "
            "print(sorted(m for m in ('requests', 'urllib3', 'modfetch.engine.session') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def _imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            yield ".".join(p for p in (base, node.module or "") if p)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_layering_rules_of_the_engine_reshape() -> None:
    """The engine never imports resolvers; nobody looks modules up in sys.modules; resolvers never time.sleep
    (a backoff must be cut short by a stop); nothing raises a bare KeyboardInterrupt."""
    problems: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        if "sys.modules" in text:
            problems.append(f"{where}: sys.modules")
        if "raise KeyboardInterrupt" in text:
            problems.append(f"{where}: raise KeyboardInterrupt")
        if path.parent.name == "resolvers" and "time.sleep" in text:
            problems.append(f"{where}: time.sleep")
        if path.parent.name == "engine":
            problems += [f"{where}: imports {m}" for m in _imports(path) if m.startswith("modfetch.resolvers")]
    assert problems == []
