"""Group commit for many small files: threads hand in what must be durable (a file descriptor, a directory) and
wait; one of them (the leader) fsyncs everything handed in so far in one go, each directory once per round.

A file of a many-file repo is recorded complete, or installed under its final name, only after ``sync`` returns
for it, exactly as with a lone ``os.fsync``: the rule "nothing is recorded complete before it is durable" stands,
but forty files finishing together in one folder cost forty data syncs and one directory sync instead of forty
of each, and the syncs of files that finish while a round is running are taken together by the next round.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .files import fsync_dir


@dataclass
class _Entry:
    fd: int | None
    directory: Path | None
    done: bool = False
    error: OSError | None = field(default=None)


class SyncGroup:
    """Leader/follower group fsync (thread-safe; one per multi-file run)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[_Entry] = []
        self._leading = False
        self.rounds = 0  # how many rounds ran (a test sees files batched: rounds < syncs)
        self.syncs = 0

    def sync(self, fd: int | None = None, directory: Path | None = None) -> None:
        """Return once ``fd`` (its data and metadata) and ``directory`` (its entries) are durable; raises the
        OSError of ``fd``'s own fsync (a directory that cannot be synced is skipped, as ``fsync_dir`` does)."""
        entry = _Entry(fd, directory)
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
                for entry in batch:
                    if entry.fd is not None:
                        try:
                            os.fsync(entry.fd)
                        except OSError as exc:
                            entry.error = exc
                for directory in {e.directory for e in batch if e.directory is not None}:
                    fsync_dir(directory)
                synced = True
                self._release(batch)
        finally:
            if not synced:  # the leader was stopped mid-round: nobody of this round may take it for durable
                for entry in batch:
                    entry.error = entry.error or OSError("the sync was interrupted")
                self._release(batch)
            with self._cond:
                self._leading = False
                self._cond.notify_all()  # a follower whose entry was not taken leads the next round

    def _release(self, batch: list[_Entry]) -> None:
        with self._cond:
            for entry in batch:
                entry.done = True
            self._cond.notify_all()
