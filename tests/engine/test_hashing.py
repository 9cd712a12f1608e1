"""Hashing (modfetch/engine/hashing.py): range and whole-file SHA-256, git blob SHA-1, and the prefix hasher
that follows a download's contiguous prefix.  Real files in tmp_path, compared with hashlib."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch.engine.hashing import READ_BLOCK, PrefixHasher, git_blob_sha1, hash_range, range_digest, sha256_file
from tests.servers.lookalike import git_blob_sha1 as lookalike_blob_sha1

DATA = random.Random(7).randbytes(2 * READ_BLOCK + 12345)  # crosses block boundaries


@pytest.fixture
def data_fd(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.mark.parametrize(("start", "end"), [
    (0, 0), (0, 1), (0, len(DATA)), (1, READ_BLOCK + 1), (READ_BLOCK - 3, READ_BLOCK + 3),
    (len(DATA) - 10, len(DATA)),
    (len(DATA) - 10, len(DATA) + 1000),  # past the end: the bytes that are there
])
@pytest.mark.parametrize("buffer_size", [None, 4099, 1 << 16])  # odd sizes straddle block ends
def test_hash_range_matches_hashlib(data_fd: int, start: int, end: int, buffer_size: int | None) -> None:
    buffer = bytearray(buffer_size) if buffer_size else None
    assert hash_range(data_fd, start, end, buffer) == hashlib.sha256(DATA[start:end]).hexdigest()


def test_range_digest_can_go_on_hashing_what_follows(data_fd: int) -> None:
    digest = range_digest(data_fd, 0, 1000)
    digest.update(DATA[1000:])
    assert digest.hexdigest() == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("content", [b"", b"x", DATA])
def test_whole_file_hashes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    assert sha256_file(path) == hashlib.sha256(content).hexdigest()
    assert git_blob_sha1(path) == hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    assert git_blob_sha1(path) == lookalike_blob_sha1(content)  # what the Hub look-alike serves as ETag


def test_git_blob_sha1_of_a_known_blob(tmp_path: Path) -> None:
    path = tmp_path / "hello"
    path.write_bytes(b"hello\n")
    assert git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`


class _Prefix:
    """Stands in for the scheduler: bytes become available as a test thread "downloads" them."""

    def __init__(self) -> None:
        self.ready = 0
        self.lock = threading.Lock()

    def available(self, offset: int) -> int:
        with self.lock:
            return max(0, self.ready - offset)


@pytest.mark.parametrize("steps", [[len(DATA)], [1, READ_BLOCK, 5, len(DATA)], [0, 3, 3, len(DATA)]])
def test_prefix_hasher_follows_the_prefix_to_the_whole_hash(tmp_path: Path, steps: list[int]) -> None:
    path = tmp_path / "part"
    path.write_bytes(b"\0" * len(DATA))
    fd = os.open(path, os.O_RDWR)
    prefix, stop = _Prefix(), threading.Event()
    hasher = PrefixHasher(fd, len(DATA), prefix.available, stop)
    try:
        hasher.start()
        for upto in steps:  # write, then publish, as workers do
            os.pwrite(fd, DATA[prefix.ready:upto], prefix.ready)
            with prefix.lock:
                prefix.ready = max(prefix.ready, upto)
        hasher.join(20)
    finally:
        stop.set()
        os.close(fd)
    assert not hasher.is_alive()
    assert hasher.result() == hashlib.sha256(DATA).hexdigest()


def test_prefix_hasher_stopped_early_has_no_result(tmp_path: Path) -> None:
    path = tmp_path / "part"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    stop = threading.Event()
    hasher = PrefixHasher(fd, len(DATA), lambda offset: 100 if offset < 100 else 0, stop)
    try:
        hasher.start()
        stop.set()
        hasher.join(20)
    finally:
        os.close(fd)
    assert not hasher.is_alive() and hasher.result() is None and hasher.offset <= 100


def test_prefix_hasher_short_file_is_an_error_not_a_hash(tmp_path: Path) -> None:
    """The scheduler claims bytes the file does not have (truncated behind our back): no digest."""
    path = tmp_path / "part"
    path.write_bytes(DATA[:50])
    fd = os.open(path, os.O_RDONLY)
    hasher = PrefixHasher(fd, len(DATA), lambda offset: len(DATA) - offset, threading.Event())
    try:
        hasher.start()
        hasher.join(20)
    finally:
        os.close(fd)
    assert isinstance(hasher.error, OSError) and hasher.result() is None
