"""The chunk scheduler (modfetch/engine/scheduler.py): hand-out order, work stealing, contiguous bytes on disk.

Pure in-memory state, so every case is a table: chunks in, what the scheduler hands out / reports.
"""

from __future__ import annotations

import hashlib
import itertools
import threading

import pytest

from modfetch.engine.scheduler import STEAL_GUARD, STEAL_MIN, LiveChunk, Scheduler
from modfetch.state import CHUNK_COMPLETE, CHUNK_PENDING, CHUNK_RUNNING, ChunkRow

MiB = 1 << 20


def chunks(*spans: tuple[int, int], status: str = CHUNK_PENDING) -> list[LiveChunk]:
    """LiveChunks over ``spans`` (in MiB) numbered in order."""
    return [LiveChunk(idx=i, start=a * MiB, end=b * MiB, status=status) for i, (a, b) in enumerate(spans)]


def test_pending_chunks_go_out_in_offset_order_then_none() -> None:
    given = chunks((8, 12), (0, 4), (4, 8))  # out of order on purpose
    scheduler = Scheduler(given, steal=False)
    handed = [scheduler.next_chunk() for _ in range(4)]
    assert [c.start if c else None for c in handed] == [0, 4 * MiB, 8 * MiB, None]
    assert all(c.status == CHUNK_RUNNING for c in given)


def test_complete_chunks_are_never_handed_out() -> None:
    given = chunks((0, 4), (4, 8))
    given[0].status = CHUNK_COMPLETE
    scheduler = Scheduler(given, steal=False)
    assert scheduler.next_chunk() is given[1]
    assert scheduler.next_chunk() is None


@pytest.mark.parametrize(("victim_mib", "done", "steals"), [
    (64, 0, True),                                      # a big running chunk: split
    (64, 60 * MiB, False),                              # too little left behind the guard
    ((STEAL_MIN + STEAL_GUARD) // MiB, 0, True),       # exactly the threshold
    ((STEAL_MIN + STEAL_GUARD) // MiB - 1, 0, False),  # just under it
])
def test_steal_splits_the_largest_running_chunk_behind_a_guard(victim_mib: int, done: int, steals: bool) -> None:
    [victim] = chunks((0, victim_mib), status=CHUNK_RUNNING)
    victim.done = done
    original_end = victim.end
    scheduler = Scheduler([victim])
    thief = scheduler.next_chunk()
    if not steals:
        assert thief is None and victim.end == original_end
        return
    assert thief is not None
    assert thief.status == CHUNK_RUNNING and thief.idx == 1 and thief.hasher is not None
    assert victim.end == thief.start and thief.end == original_end          # split, nothing lost
    assert thief.start >= victim.position + STEAL_GUARD                      # the owner's read is untouched
    assert thief.start % (64 << 10) == 0                                     # aligned
    assert scheduler.take_new_chunks() == [thief] and scheduler.take_new_chunks() == []


def test_steal_picks_the_chunk_with_most_remaining() -> None:
    small, big = chunks((0, 16), (16, 80), status=CHUNK_RUNNING)
    thief = Scheduler([small, big]).next_chunk()
    assert thief is not None and big.end == thief.start and small.end == 16 * MiB


def test_no_stealing_when_disabled() -> None:
    assert Scheduler(chunks((0, 64), status=CHUNK_RUNNING), steal=False).next_chunk() is None


def test_concurrent_workers_split_without_overlap_or_gap() -> None:
    """Many threads asking at once: every byte of the file is owned by exactly one chunk."""
    given = chunks((0, 32), (32, 64), (64, 256))
    scheduler = Scheduler(given)
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(20):
            scheduler.next_chunk()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = sorted((c.start, c.end) for c in scheduler.chunks)
    assert spans[0][0] == 0 and spans[-1][1] == 256 * MiB
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert len({c.idx for c in scheduler.chunks}) == len(scheduler.chunks)


@pytest.mark.parametrize(("states", "offset", "expected"), [
    ([(CHUNK_COMPLETE, 0), (CHUNK_COMPLETE, 0)], 0, 8 * MiB),        # all on disk
    ([(CHUNK_COMPLETE, 0), (CHUNK_RUNNING, MiB)], 0, 5 * MiB),       # stops inside the running chunk
    ([(CHUNK_RUNNING, MiB), (CHUNK_COMPLETE, 0)], 0, MiB),           # a gap ends the prefix
    ([(CHUNK_PENDING, 0), (CHUNK_COMPLETE, 0)], 0, 0),               # nothing at the offset yet
    ([(CHUNK_COMPLETE, 0), (CHUNK_COMPLETE, 0)], 6 * MiB, 2 * MiB),  # from the middle of a chunk
    ([(CHUNK_COMPLETE, 0), (CHUNK_PENDING, 0)], 3 * MiB, MiB),
])
def test_available_counts_contiguous_bytes_from_an_offset(states: list[tuple[str, int]], offset: int,
                                                          expected: int) -> None:
    given = chunks((0, 4), (4, 8))
    for chunk, (status, done) in zip(given, states, strict=True):
        chunk.status, chunk.done = status, done
    assert Scheduler(given).available(offset) == expected


def test_bytes_done_counts_complete_chunks_whole_and_others_by_done() -> None:
    given = chunks((0, 4), (4, 8), (8, 12))
    given[0].status = CHUNK_COMPLETE
    given[1].done = 3
    assert Scheduler(given).bytes_done() == 4 * MiB + 3


@pytest.mark.parametrize(("row_status", "live_status"), [
    ("complete", CHUNK_COMPLETE), ("running", CHUNK_PENDING), ("pending", CHUNK_PENDING),
])
def test_live_chunk_from_row_treats_running_rows_as_pending(row_status: str, live_status: str) -> None:
    row = ChunkRow(idx=3, start=10, end=20, bytes_done=4, sha256="ab", status=row_status)
    live = LiveChunk.from_row(row)
    assert (live.idx, live.start, live.end, live.done, live.status, live.sha256) == (3, 10, 20, 4, live_status,
                                                                                     "ab")
    assert (live.position, live.remaining) == (14, 6)


def test_to_row_of_a_partial_chunk_stores_the_hash_of_its_saved_prefix() -> None:
    live = LiveChunk(idx=0, start=0, end=10, status=CHUNK_RUNNING)
    prefix = hashlib.sha256(b"abc")
    live.prefix = (3, prefix)
    live.done = 7  # moved on since the prefix was taken: the row must still pair 3 bytes with their hash
    row = live.to_row()
    assert (row.bytes_done, row.sha256) == (3, hashlib.sha256(b"abc").hexdigest())
    live.status, live.sha256 = CHUNK_COMPLETE, "whole"
    assert (live.to_row().bytes_done, live.to_row().sha256) == (7, "whole")


def test_reset_forgets_the_bytes() -> None:
    live = LiveChunk(idx=0, start=0, end=10, done=5, status=CHUNK_RUNNING, sha256="x")
    live.prefix = (5, hashlib.sha256())
    live.reset()
    assert (live.done, live.sha256, live.prefix, live.status) == (0, None, None, CHUNK_PENDING)
    assert live.hasher.hexdigest() == hashlib.sha256().hexdigest()
