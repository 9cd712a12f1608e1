"""Chunk planning (modfetch/engine/plan.py): pure, so tested exhaustively and by property."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modfetch.engine.plan import CHUNKS_PER_WORKER, MIN_CHUNK, plan_chunks

MiB = 1 << 20


def _check_cover(size: int, chunks: list) -> None:
    assert [c.idx for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0
    assert chunks[-1].end == size
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start
    assert all(c.end > c.start for c in chunks)
    assert all(c.bytes_done == 0 and c.status == "pending" and c.sha256 is None for c in chunks)


@pytest.mark.parametrize("size", [0, -5])
def test_empty_or_negative_size_plans_nothing(size: int) -> None:
    assert plan_chunks(size, 8, 16 * MiB) == []


def test_tiny_file_is_one_chunk() -> None:
    chunks = plan_chunks(10, 8, 16 * MiB)
    assert [(c.start, c.end) for c in chunks] == [(0, 10)]


def test_small_file_never_splits_below_min_chunk() -> None:
    chunks = plan_chunks(3 * MiB, 8, 16 * MiB)
    assert [(c.start, c.end) for c in chunks] == [(0, MiB), (MiB, 2 * MiB), (2 * MiB, 3 * MiB)]


def test_chunk_size_caps_chunk_length() -> None:
    chunks = plan_chunks(1 << 30, 8, 16 * MiB)
    assert len(chunks) == 64
    assert {c.end - c.start for c in chunks} == {16 * MiB}


def test_mid_sized_file_gives_each_worker_several_chunks() -> None:
    chunks = plan_chunks(64 * MiB, 4, 64 * MiB)
    assert len(chunks) == 4 * CHUNKS_PER_WORKER
    _check_cover(64 * MiB, chunks)


def test_uneven_tail() -> None:
    size = 5 * MiB + 123
    chunks = plan_chunks(size, 1, MiB)
    _check_cover(size, chunks)
    assert chunks[-1].end - chunks[-1].start == 123


@pytest.mark.parametrize(("workers", "chunk_size"), [(0, MiB), (-3, MiB), (4, 0)])
def test_degenerate_parameters_still_cover(workers: int, chunk_size: int) -> None:
    chunks = plan_chunks(3 * MiB + 1, workers, chunk_size)
    _check_cover(3 * MiB + 1, chunks)


@pytest.mark.parametrize("chunk_size", [1, 4096, 256 << 10])
def test_chunk_size_below_min_chunk_is_raised(chunk_size: int) -> None:
    # ``--chunk-size 1`` on a 1 GiB file must not plan a billion rows
    chunks = plan_chunks(1 << 30, 8, chunk_size)
    assert len(chunks) == (1 << 30) // MIN_CHUNK
    assert {c.end - c.start for c in chunks} == {MIN_CHUNK}


@given(size=st.integers(1, 1 << 36), workers=st.integers(-1, 64), chunk_size=st.integers(0, 1 << 30))
def test_plan_covers_exactly_without_overlap(size: int, workers: int, chunk_size: int) -> None:
    chunks = plan_chunks(size, workers, chunk_size)
    _check_cover(size, chunks)
    lengths = [c.end - c.start for c in chunks]
    # every chunk but the last has the same length, at least MIN_CHUNK unless the user asked for less
    assert len(set(lengths[:-1])) <= 1
    assert lengths[-1] <= lengths[0]
    if len(chunks) > 1:
        assert MIN_CHUNK <= lengths[0] <= max(MIN_CHUNK, chunk_size)
