"""Issue 13, smaller fault: a server that accepts connections and never answers fails in bounded time.

Each request waits at most ``timeout_seconds`` for the first response byte; a request that got no response at
all is treated like a refused connection (almost always a dead server, not a blip), so the probe gives up after
``UNREACHABLE_PROBE_ATTEMPTS`` attempts (HEAD + GET each) instead of ``max_retries + 1``: with the defaults
(30 s, 8 retries) that was about ten minutes, now it is 3 x 2 x 30 s plus a second of backoff.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modfetch.engine.download import UNREACHABLE_PROBE_ATTEMPTS
from tests.conftest import Modfetch, assert_clean_error

TIMEOUT = 0.5


class SilentServer:
    """Accepts every connection, reads nothing, answers nothing; counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.accepted: list[socket.socket] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/model.bin"

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)  # held open, never answered

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


@pytest.mark.timeout(60)
@pytest.mark.parametrize("runner", ["single", "batch"])
def test_a_server_that_never_answers_fails_in_bounded_time(mf: Modfetch, silent: SilentServer, tmp_path: Path,
                                                           runner: str) -> None:
    mf.write_config(network={"timeout_seconds": TIMEOUT},
                    concurrency={"max_retries": 8, "backoff_min_ms": 10, "backoff_max_ms": 100})
    if runner == "single":
        args = ["--url", silent.url, "--dest", str(mf.dest)]
    else:
        jobs = tmp_path / "jobs.yml"
        jobs.write_text(yaml.safe_dump({"jobs": [{"uri": silent.url, "dest": str(mf.dest)}]}), encoding="utf-8")
        args = ["--batch", str(jobs)]
    started = time.monotonic()
    done = mf.run("--quiet", "download", *args)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    # Every request costs one timeout: HEAD and GET per probe attempt, and no more attempts than for a
    # refused connection (max_retries + 1 = 9 attempts, 18 requests, before).
    requests = 2 * UNREACHABLE_PROBE_ATTEMPTS
    assert len(silent.accepted) <= requests, len(silent.accepted)
    bound = requests * TIMEOUT + 2 * 0.1 + 3.0  # timeouts + backoff + process start-up on a loaded machine
    assert took < bound, f"gave up after {took:.1f}s (bound {bound:.1f}s)"
    if runner == "single":
        assert_clean_error(done.stderr, "cannot reach", "no response")
    else:
        assert "no response" in done.stderr, done.stderr
