"""Chunk planning (pure): split ``size`` bytes into ranges sized for the connection count."""

from __future__ import annotations

from ..state import ChunkRow

MIN_CHUNK = 1 << 20          # below this, more connections cost more than they bring
CHUNKS_PER_WORKER = 4        # a few chunks per connection keeps the tail short before stealing starts


def plan_chunks(size: int, workers: int, chunk_size: int) -> list[ChunkRow]:
    """Half-open ranges ``[start, end)`` covering ``[0, size)``.

    Chunks are at most ``chunk_size``; small files get smaller chunks so every worker has work, but never
    below MIN_CHUNK (a 3 MiB file uses 3 chunks, not 8; a ``chunk_size`` below MIN_CHUNK is raised to it, so
    ``--chunk-size 1`` cannot plan a billion one-byte chunks).  Work stealing splits the tail at run time.
    """
    if size <= 0:
        return []
    workers = max(1, workers)
    chunk_size = max(MIN_CHUNK, chunk_size)
    target = -(-size // (workers * CHUNKS_PER_WORKER))
    length = max(min(chunk_size, max(target, MIN_CHUNK)), 1)
    length = min(length, size)
    chunks = []
    for idx, start in enumerate(range(0, size, length)):
        chunks.append(ChunkRow(idx=idx, start=start, end=min(start + length, size)))
    return chunks


TAIL_PIECE = 2 << 20         # the length of the last round's chunks (see taper_tail)


def taper_tail(chunks: list[ChunkRow], workers: int) -> list[ChunkRow]:
    """The same cover with the last round (the last ``workers`` chunks) cut into pieces of TAIL_PIECE.

    Why: the whole-file SHA-256 follows the contiguous prefix on disk, and the last round of parallel chunks
    ends together, so all of it above the lowest chunk's progress is hashed only after the last byte arrived:
    with 8 connections of 8 MiB chunks, 56 MiB (about 40 ms of hashing) after the transfer.  Pieces of
    TAIL_PIECE leave a quarter of that.  A plan of one round or of chunks no longer than TAIL_PIECE is kept.
    """
    workers = max(1, workers)
    if len(chunks) <= workers or chunks[-workers].end - chunks[-workers].start <= TAIL_PIECE:
        return chunks
    head = chunks[:-workers]
    start, size = chunks[-workers].start, chunks[-1].end
    pieces = [ChunkRow(idx=len(head) + i, start=at, end=min(at + TAIL_PIECE, size))
              for i, at in enumerate(range(start, size, TAIL_PIECE))]
    return head + pieces
