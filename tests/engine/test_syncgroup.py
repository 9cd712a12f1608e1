"""engine/syncgroup.py: files finishing together are made durable in shared rounds, each caller returns only once
its own descriptor was synced, and a failure (or a stopped leader) is never reported as durable."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from modfetch.engine import syncgroup
from modfetch.engine.syncgroup import SyncGroup
from tests.conftest import wait_for


def _files(tmp_path: Path, n: int) -> list[int]:
    fds = []
    for i in range(n):
        fd = os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"x" * 100)
        fds.append(fd)
    return fds


def test_syncs_that_arrive_during_a_round_share_the_next_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first caller leads; while its fsync runs, five more arrive and are synced together in ONE round."""
    group = SyncGroup()
    fds = _files(tmp_path, 6)
    gate, synced = threading.Event(), []
    real_fsync = os.fsync

    def gated_fsync(fd: int) -> None:  # the first round waits until the others queued behind it
        if fd == fds[0]:
            gate.wait(10)
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(syncgroup.os, "fsync", gated_fsync)
    returned: list[int] = []
    threads = [threading.Thread(target=lambda fd=fd: (group.sync(fd, tmp_path), returned.append(fd)))
               for fd in fds]
    threads[0].start()
    wait_for(lambda: group.syncs == 1 and group.rounds == 1, "the first round to start")
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: group.syncs == 6, "the other syncs to queue")
    assert returned == []  # nobody returns before its fsync ran
    gate.set()
    for thread in threads:
        thread.join(10)
    assert sorted(returned) == sorted(fds) and set(fds) <= set(synced)
    assert group.rounds == 2  # six syncs, two rounds
    assert len(synced) == len(fds) + 2  # and the shared folder synced once per round, not once per file
    for fd in fds:
        os.close(fd)


def test_a_failing_descriptor_fails_only_its_caller(tmp_path: Path) -> None:
    group = SyncGroup()
    good = _files(tmp_path, 1)[0]
    bad = os.open(tmp_path / "bad", os.O_RDWR | os.O_CREAT)
    os.close(bad)  # a closed descriptor: fsync says EBADF
    with pytest.raises(OSError):
        group.sync(bad)
    group.sync(good, tmp_path)  # the group still works
    os.close(good)


def test_a_stopped_leader_never_reports_its_round_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C inside the leader's fsync of a round: the other callers of that round get an error, never a
    silent success, and the group goes on."""
    group = SyncGroup()
    fds = _files(tmp_path, 4)
    gate = threading.Event()
    real_fsync = os.fsync

    def stopping_fsync(fd: int) -> None:
        if fd == fds[0]:
            gate.wait(10)  # round 1 (fd 0) runs while fds 1 and 2 queue for round 2
        if fd == fds[1]:
            raise KeyboardInterrupt  # round 2 is stopped before fd 2 is synced
        real_fsync(fd)

    monkeypatch.setattr(syncgroup.os, "fsync", stopping_fsync)
    outcome: dict[int, str] = {}

    def call(fd: int) -> None:
        try:
            group.sync(fd)
            outcome[fd] = "ok"
        except KeyboardInterrupt:
            outcome[fd] = "stopped"
        except OSError:
            outcome[fd] = "error"

    leader = threading.Thread(target=call, args=(fds[0],))
    leader.start()
    wait_for(lambda: group.rounds == 1, "the leader's round")
    followers = [threading.Thread(target=call, args=(fd,)) for fd in fds[1:3]]
    for thread in followers:
        thread.start()
    wait_for(lambda: group.syncs == 3, "the followers to queue")
    gate.set()
    for thread in [leader, *followers]:
        thread.join(10)
    assert outcome == {fds[0]: "stopped", fds[1]: "error", fds[2]: "error"}, outcome
    group.sync(fds[3])  # a later sync leads a round of its own
    assert group.rounds == 3
    for fd in fds:
        os.close(fd)
