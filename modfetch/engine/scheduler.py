"""In-memory chunk state shared by workers, and the scheduler that hands out chunks and steals tail work.

Concurrency rule: a chunk's ``done`` is written only by the worker that owns it; ``end`` only shrinks,
under the scheduler lock, when another worker steals the back half of the range.  The owner re-reads
``end`` every block, so reads past a stolen boundary are discarded.  No lock is taken per block.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

from ..state import CHUNK_COMPLETE, CHUNK_PENDING, CHUNK_RUNNING, ChunkRow

STEAL_MIN = 4 << 20      # never split a remainder smaller than this
STEAL_GUARD = 2 << 20    # keep this far ahead of the owner's position so its in-flight read is untouched


@dataclass(eq=False)
class LiveChunk:
    """A chunk during a run: ``[start, end)`` with ``done`` bytes at the front already on disk."""

    idx: int
    start: int
    end: int
    done: int = 0
    status: str = CHUNK_PENDING
    sha256: str | None = None
    hasher: Any = field(default=None, repr=False)
    failures: int = 0      # consecutive attempts without progress
    # (done, a copy of the hasher at that point), set by the owner after each block it wrote: the coordinator
    # saves a partly fetched chunk as this pair, so a rerun can prove those bytes are still the ones on disk.
    # ``done`` and ``hasher`` themselves change under the coordinator's feet and may not match each other.
    prefix: tuple[int, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: ChunkRow) -> LiveChunk:
        """Live state from a DB row (running rows are treated as pending)."""
        status = CHUNK_COMPLETE if row.status == CHUNK_COMPLETE else CHUNK_PENDING
        return cls(idx=row.idx, start=row.start, end=row.end, done=row.bytes_done, status=status,
                   sha256=row.sha256)

    def to_row(self) -> ChunkRow:
        """A DB row snapshot.  ``sha256`` is the whole chunk's hash once complete, before that the hash of its
        first ``bytes_done`` bytes (None when nothing is on disk)."""
        if self.status != CHUNK_COMPLETE and self.prefix is not None:
            done, hasher = self.prefix
            return ChunkRow(idx=self.idx, start=self.start, end=self.end, bytes_done=done,
                            sha256=hasher.hexdigest(), status=self.status)
        return ChunkRow(idx=self.idx, start=self.start, end=self.end, bytes_done=self.done,
                        sha256=self.sha256, status=self.status)

    @property
    def position(self) -> int:
        """Absolute offset of the next byte this chunk needs."""
        return self.start + self.done

    @property
    def remaining(self) -> int:
        """Bytes still to fetch."""
        return max(0, self.end - self.position)

    def reset(self) -> None:
        """Forget the bytes of this chunk (they will be fetched again)."""
        self.done = 0
        self.sha256 = None
        self.hasher = hashlib.sha256()
        self.prefix = None
        self.status = CHUNK_PENDING


class Scheduler:
    """Hands pending chunks to workers in offset order; when none are left, splits the largest running one."""

    def __init__(self, chunks: list[LiveChunk], steal: bool = True) -> None:
        self.lock = threading.Lock()
        self.chunks = sorted(chunks, key=lambda c: c.start)
        self.steal = steal
        self.next_idx = max((c.idx for c in chunks), default=-1) + 1
        self.new_chunks: list[LiveChunk] = []   # created by stealing; the coordinator persists them

    def next_chunk(self) -> LiveChunk | None:
        """The next chunk to work on, or None when nothing is left to do."""
        with self.lock:
            for chunk in self.chunks:
                if chunk.status == CHUNK_PENDING:
                    chunk.status = CHUNK_RUNNING
                    return chunk
            return self._steal() if self.steal else None

    def _steal(self) -> LiveChunk | None:
        running = [c for c in self.chunks if c.status == CHUNK_RUNNING]
        victim = max(running, key=lambda c: c.remaining, default=None)
        if victim is None or victim.remaining < STEAL_MIN + STEAL_GUARD:
            return None
        floor = victim.position + STEAL_GUARD
        mid = floor + (victim.end - floor) // 2
        mid -= mid % (64 << 10)
        if mid <= floor or victim.end - mid < STEAL_MIN // 2:
            return None
        thief = LiveChunk(idx=self.next_idx, start=mid, end=victim.end, status=CHUNK_RUNNING,
                          hasher=hashlib.sha256())
        self.next_idx += 1
        victim.end = mid
        self.chunks.append(thief)
        self.chunks.sort(key=lambda c: c.start)
        self.new_chunks.append(thief)
        return thief

    def available(self, offset: int) -> int:
        """Contiguous bytes on disk from ``offset`` (for the prefix hasher)."""
        total = 0
        with self.lock:
            chunks = list(self.chunks)
        for chunk in chunks:
            if chunk.end <= offset:
                continue
            if chunk.start > offset + total:
                break
            have = chunk.end if chunk.status == CHUNK_COMPLETE else chunk.start + chunk.done
            begin = max(offset + total, chunk.start)
            if have <= begin:
                break
            total += have - begin
            if have < chunk.end:
                break
        return total

    def bytes_done(self) -> int:
        """Bytes on disk across all chunks."""
        return sum(c.end - c.start if c.status == CHUNK_COMPLETE else c.done for c in self.chunks)

    def take_new_chunks(self) -> list[LiveChunk]:
        """Chunks created by stealing since the last call."""
        with self.lock:
            created, self.new_chunks = self.new_chunks, []
        return created
