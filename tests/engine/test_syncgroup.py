"""engine/syncgroup.py: the new names of files finishing together are made durable in shared rounds (each
folder once per round), each caller returns only once its own data and folder were synced, and a failure (or
a stopped leader) is never reported as durable."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from modfetch.engine import syncgroup
from modfetch.engine.syncgroup import SyncGroup
from tests.conftest import wait_for


class GatedDirSync:
    """Stands in for ``fsync_dir`` (it still syncs): the first call waits for ``gate``; ``stop_on`` makes that
    call number raise KeyboardInterrupt (Ctrl-C inside the leader's round)."""

    def __init__(self, stop_on: int | None = None) -> None:
        self.gate = threading.Event()
        self.calls: list[Path] = []
        self.stop_on = stop_on
        self.real = syncgroup.fsync_dir

    def __call__(self, directory: Path) -> None:
        self.calls.append(directory)
        if len(self.calls) == 1:
            self.gate.wait(10)
        if len(self.calls) == self.stop_on:
            raise KeyboardInterrupt
        self.real(directory)


def _outcome(group: SyncGroup, directory: Path, outcome: dict[str, str], key: str,
             fd: int | None = None) -> threading.Thread:
    def call() -> None:
        try:
            group.sync(fd, directory)
            outcome[key] = "ok"
        except KeyboardInterrupt:
            outcome[key] = "stopped"
        except OSError:
            outcome[key] = "error"

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_names_that_arrive_during_a_round_share_the_next_one(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The first caller leads; while its folder sync runs, five more arrive (two folders) and are synced in ONE
    more round: each folder once, not once per file."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    gated = GatedDirSync()
    monkeypatch.setattr(syncgroup, "fsync_dir", gated)
    group, outcome = SyncGroup(), {}
    threads = [_outcome(group, a, outcome, "first")]
    wait_for(lambda: group.rounds == 1, "the first round to start")
    threads += [_outcome(group, a if i % 2 else b, outcome, f"f{i}") for i in range(5)]
    wait_for(lambda: group.syncs == 6, "the other syncs to queue")
    assert outcome == {}  # nobody returns before its folder was synced
    gated.gate.set()
    for thread in threads:
        thread.join(10)
    assert set(outcome.values()) == {"ok"} and len(outcome) == 6
    assert group.rounds == 2
    assert sorted(gated.calls) == sorted([a, a, b])  # round 1: a; round 2: a and b once each


def test_each_caller_syncs_its_own_data_and_gets_its_own_error(tmp_path: Path) -> None:
    group = SyncGroup()
    good = os.open(tmp_path / "good", os.O_RDWR | os.O_CREAT)
    os.write(good, b"data")
    bad = os.open(tmp_path / "bad", os.O_RDWR | os.O_CREAT)
    os.close(bad)  # a closed descriptor: fsync says EBADF
    with pytest.raises(OSError):
        group.sync(bad, tmp_path)
    assert group.syncs == 0  # a file whose data is not durable never asks for its name
    group.sync(good, tmp_path)  # the group still works
    assert group.syncs == group.rounds == 1
    os.close(good)


def test_a_stopped_leader_never_reports_its_round_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C inside the leader's folder sync of round 2: the callers of that round get an error, never a silent
    success, and the group goes on."""
    gated = GatedDirSync(stop_on=2)
    monkeypatch.setattr(syncgroup, "fsync_dir", gated)
    group, outcome = SyncGroup(), {}
    leader = _outcome(group, tmp_path, outcome, "leader")
    wait_for(lambda: group.rounds == 1, "the leader's round")
    followers = [_outcome(group, tmp_path, outcome, f"f{i}") for i in range(2)]
    wait_for(lambda: group.syncs == 3, "the followers to queue")
    gated.gate.set()
    for thread in [leader, *followers]:
        thread.join(10)
    assert outcome == {"leader": "stopped", "f0": "error", "f1": "error"}, outcome
    group.sync(None, tmp_path)  # a later sync leads a round of its own
    assert group.rounds == 3
