"""The end of the whole-file hash (engine/prefixproc.py, engine/hashing.py): once the last bytes are on disk the
coordinator nudges the hasher, which then goes on at once instead of after its next poll."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch.engine import prefixproc
from modfetch.engine.hashing import PrefixHasher
from tests.conftest import MiB, wait_for

SIZE = 4 * MiB
LONG_POLL = 5.0  # far longer than the test may take: only the nudge can end it in time


@pytest.fixture
def part(tmp_path: Path) -> Iterator[tuple[int, str]]:
    data = os.urandom(SIZE)
    path = tmp_path / "f.part"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, hashlib.sha256(data).hexdigest()
    os.close(fd)


def test_a_nudge_ends_the_drive_without_waiting_for_the_poll(part: tuple[int, str]) -> None:
    fd, want = part
    proc = prefixproc.spawn(fd, SIZE, SIZE)
    assert proc is not None, "the test venv's interpreter must be able to run the hashing child"
    on_disk = [0]
    asked = threading.Event()

    def available(offset: int) -> int:
        asked.set()
        return on_disk[0] - offset

    stop, wake = threading.Event(), threading.Event()
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(
        prefixproc.drive(proc, SIZE, available, stop, poll_seconds=LONG_POLL, wake=wake)), daemon=True)
    thread.start()
    wait_for(asked.is_set, "the drive to look for bytes")
    time.sleep(0.05)  # it is now waiting out its (long) poll
    started = time.monotonic()
    on_disk[0] = SIZE
    wake.set()
    thread.join(LONG_POLL * 2)
    assert result == [want]
    assert time.monotonic() - started < LONG_POLL / 2


def test_the_thread_hasher_takes_a_nudge_too(part: tuple[int, str]) -> None:
    # Below CHILD_MIN_SIZE the prefix is hashed in the thread itself; the nudge wakes that loop as well.
    fd, want = part
    on_disk = [0]
    hasher = PrefixHasher(fd, SIZE, lambda offset: on_disk[0] - offset, threading.Event())
    hasher.start()
    for _ in range(3):  # several polls with nothing to hash: the wake flag must not stay set
        time.sleep(0.03)
    on_disk[0] = SIZE
    hasher.nudge()
    hasher.join(5)
    assert not hasher.is_alive() and hasher.result() == want
