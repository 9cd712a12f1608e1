"""The background flush of a ``.part`` (engine/flush.py): data is written back while the transfer runs, so the
final fsync has little left; it never decides what is recorded (the file is installed and the row completed only
after the final fsync), and a stop never waits for a flush in progress."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modfetch import cancel
from modfetch.config import ConcurrencyConfig, Config, GeneralConfig, NetworkConfig
from modfetch.engine import flush
from modfetch.engine.download import Downloader, DownloadRequest
from modfetch.state import COMPLETE, open_state
from tests.conftest import MiB, wait_for
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]


class Recorder:
    """Stands in for ``flush.sync``: does the real fdatasync (unless held), and notes what was on disk then."""

    def __init__(self, dest: Path | None = None) -> None:
        self.dest = dest
        self.calls: list[tuple[int, bool]] = []  # (size of the file synced, was the final file installed yet)
        self.hold = threading.Event()            # set: block inside the sync until ``release``
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, fd: int) -> None:
        self.entered.set()
        if self.hold.is_set():
            self.release.wait(10)
        os.fdatasync(fd)
        self.calls.append((os.fstat(fd).st_size, self.dest is not None and self.dest.exists()))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    monkeypatch.setattr(flush, "sync", rec)
    monkeypatch.setattr(flush, "STEP", 1 * MiB)
    monkeypatch.setattr(flush, "POLL_SECONDS", 0.01)
    yield rec
    rec.release.set()
    cancel.STOP.clear()


def config_for(tmp_path: Path) -> Config:
    return Config(general=GeneralConfig(download_root=str(tmp_path / "dl"), data_root=str(tmp_path / "data")),
                  network=NetworkConfig(timeout_seconds=5),
                  concurrency=ConcurrencyConfig(per_file_chunks=2, chunk_size_mb=2, max_retries=3,
                                                backoff_min_ms=10, backoff_max_ms=50))


def test_a_flush_follows_every_step_of_bytes_written(tmp_path: Path, recorder: Recorder) -> None:
    path = tmp_path / "f.part"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    written = [0]
    background = flush.BackgroundFlush(fd, lambda: written[0])
    background.start()
    try:
        time.sleep(0.1)
        assert recorder.calls == []  # nothing written: nothing to flush
        for step in range(1, 4):
            os.pwrite(fd, b"x" * MiB, (step - 1) * MiB)
            written[0] = step * MiB
            wait_for(lambda step=step: background.flushes == step, f"flush {step}")  # type: ignore[misc]
        os.pwrite(fd, b"y" * 1000, 3 * MiB)
        written[0] += 1000  # less than a step: no flush for it
        time.sleep(0.1)
        assert background.flushes == 3
    finally:
        background.stop()
        background.join(2)
        os.close(fd)
    assert not background.is_alive()
    with pytest.raises(OSError):
        os.fstat(background.fd)  # the flusher closed its own descriptor


def test_small_files_get_no_flusher(tmp_path: Path, recorder: Recorder) -> None:
    fd = os.open(tmp_path / "f.part", os.O_RDWR | os.O_CREAT)
    try:
        assert flush.start_flush(fd, lambda: 0, 2 * flush.STEP - 1) is None
        started = flush.start_flush(fd, lambda: 0, 2 * flush.STEP)
        assert started is not None
        started.stop()
        started.join(2)
    finally:
        os.close(fd)


def test_a_download_flushes_while_it_runs_and_completes_only_after(tmp_path: Path, faulty_server: Serve,
                                                                  recorder: Recorder) -> None:
    # 12 MiB over a 12 MiB/s link: about a second of transfer, a flush about every 1 MiB of it.
    server = faulty_server(size=12 * MiB, total_rate=12 * MiB)
    recorder.dest = tmp_path / "dl" / "file.bin"
    config = config_for(tmp_path)
    result = Downloader(config).run(DownloadRequest(url=server.url, dest_dir=tmp_path / "dl"))
    assert result.path == recorder.dest
    assert result.path.read_bytes() == server.content()
    during = [installed for _, installed in recorder.calls]
    assert len(during) >= 3, recorder.calls  # flushed while bytes were still arriving...
    assert not any(during)  # ...each time before the file was installed (the final fsync comes after them)
    with open_state(config.state_db) as db:
        row = db.get_download(result.download_id)
    assert row is not None and row.status == COMPLETE and row.sha256 == server.sha256()


def test_a_stop_during_a_slow_flush_ends_within_a_second(tmp_path: Path, faulty_server: Serve,
                                                         recorder: Recorder) -> None:
    server = faulty_server(size=24 * MiB, total_rate=8 * MiB)
    recorder.hold.set()  # the first flush blocks (a slow disk) until the test ends
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            Downloader(config_for(tmp_path)).run(DownloadRequest(url=server.url, dest_dir=tmp_path / "dl"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(recorder.entered.is_set, "a flush to start")
    stopped = time.monotonic()
    cancel.request_stop()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < 1.0
    assert len(outcome) == 1 and isinstance(outcome[0], cancel.Interrupted)
    assert not (tmp_path / "dl" / "file.bin").exists()
