"""The tapered last round of a chunk plan (engine/plan.py ``taper_tail``): the same exact cover, with the last
``workers`` chunks cut into TAIL_PIECE pieces so the whole-file hash has little left after the last byte."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modfetch.engine.plan import MIN_CHUNK, TAIL_PIECE, plan_chunks, taper_tail

MiB = 1 << 20


def _check_cover(size: int, chunks: list) -> None:
    assert [c.idx for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0 and chunks[-1].end == size
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start
    assert all(c.end > c.start and c.bytes_done == 0 and c.status == "pending" for c in chunks)


@pytest.mark.parametrize(("size", "workers", "chunk", "head", "pieces"), [
    (256 * MiB, 8, 8 * MiB, 24, 32),          # the shaped bench: 8 x 8 MiB at the end become 32 x 2 MiB
    (1 << 30, 8, 8 * MiB, 120, 32),
    (256 * MiB + 5, 8, 8 * MiB, 25, 29),      # an uneven end (a 5-byte last chunk): 7 x 8 MiB + 5 bytes
    (100 * MiB, 4, 16 * MiB, 12, 13),         # 16 chunks of 6.25 MiB: the last 25 MiB in 2 MiB pieces
])
def test_the_last_round_is_cut_into_small_pieces(size: int, workers: int, chunk: int, head: int,
                                                 pieces: int) -> None:
    plan = plan_chunks(size, workers, chunk)
    tapered = taper_tail(plan, workers)
    _check_cover(size, tapered)
    assert [(c.start, c.end) for c in tapered[:head]] == [(c.start, c.end) for c in plan[:head]]
    tail = tapered[head:]
    assert len(tail) == pieces
    assert all(c.end - c.start <= TAIL_PIECE for c in tail)
    assert tail[0].start == plan[-workers].start


@pytest.mark.parametrize(("size", "workers", "chunk"), [
    (16 * MiB, 8, 8 * MiB),    # one round only: nothing after it to gain
    (3 * MiB, 8, 16 * MiB),    # MIN_CHUNK pieces already
    (64 * MiB, 8, 2 * MiB),    # chunks no longer than a tail piece
    (10, 1, MiB),
])
def test_plans_without_a_long_last_round_are_kept(size: int, workers: int, chunk: int) -> None:
    plan = plan_chunks(size, workers, chunk)
    assert taper_tail(plan, workers) == plan


@given(size=st.integers(1, 1 << 36), workers=st.integers(-1, 64), chunk_size=st.integers(0, 1 << 30))
def test_a_tapered_plan_covers_exactly_and_never_goes_below_min_chunk_but_at_the_end(
        size: int, workers: int, chunk_size: int) -> None:
    tapered = taper_tail(plan_chunks(size, workers, chunk_size), workers)
    _check_cover(size, tapered)
    assert all(c.end - c.start >= min(MIN_CHUNK, TAIL_PIECE) for c in tapered[:-1])
