"""Group commit for many small files finishing at once: what must be durable before a file is installed or
recorded complete is synced together with the other files' instead of one file at a time.

* A file's data: each caller fsyncs its own descriptor, concurrently with the other lanes.  The file system
  commits concurrent fsyncs in one journal transaction (measured here: 48 files of 32 KiB took 13-100 ms from
  8 threads, 27-800 ms one after the other on the same busy disk), so a leader syncing everyone's files in
  turn would be the slow way.
* A folder's entries (the new names): one caller (the leader) syncs every folder handed in so far, each
  folder once per round, while the others wait; names that arrive during a round share the next one.

A file is recorded complete, or installed under its final name, only after ``sync`` returns for it, exactly
as with a lone ``os.fsync``: the rule "nothing is recorded complete before it is durable" stands.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .files import fsync_dir


@dataclass
class _Entry:
    directory: Path
    done: bool = False
    error: OSError | None = None


class SyncGroup:
    """Concurrent data fsyncs and leader/follower folder syncs (thread-safe; one per multi-file run)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[_Entry] = []
        self._leading = False
        self.rounds = 0  # folder rounds run (a test sees names batched: rounds < syncs)
        self.syncs = 0  # folder syncs asked for

    def sync(self, fd: int | None = None, directory: Path | None = None) -> None:
        """Return once ``fd`` (its data and metadata) and then ``directory`` (its entries) are durable; raises
        ``fd``'s own fsync error (a folder that cannot be synced is skipped, as ``fsync_dir`` does)."""
        if fd is not None:
            os.fsync(fd)  # in this thread, concurrently with the other lanes (see the module docstring)
        if directory is None:
            return
        entry = _Entry(directory)
        with self._cond:
            self._pending.append(entry)
            self.syncs += 1
            while not entry.done and self._leading:
                self._cond.wait()
            if not entry.done:
                self._leading = True
        if not entry.done:
            self._lead()
        if entry.error is not None:
            raise entry.error

    def _lead(self) -> None:
        batch: list[_Entry] = []
        synced = False
        try:
            while True:
                with self._cond:
                    batch, self._pending, synced = self._pending, [], False
                    if not batch:
                        return
                    self.rounds += 1
                for directory in dict.fromkeys(e.directory for e in batch):
                    fsync_dir(directory)
                synced = True
                self._release(batch)
        finally:
            if not synced:  # the leader was stopped mid-round: nobody of this round may take it for durable
                for entry in batch:
                    entry.error = OSError("the sync was interrupted")
                self._release(batch)
            with self._cond:
                self._leading = False
                self._cond.notify_all()  # a follower whose entry was not taken leads the next round

    def _release(self, batch: list[_Entry]) -> None:
        with self._cond:
            for entry in batch:
                entry.done = True
            self._cond.notify_all()
