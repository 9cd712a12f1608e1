"""Hashing helpers: whole-file and range hashes with a reused buffer, git blob SHA-1, and the prefix hasher
that computes the final SHA-256 while later chunks are still downloading."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable

from . import prefixproc

log = logging.getLogger("modfetch.engine")

READ_BLOCK = 4 << 20
WRITEBACK_STEP = 32 << 20
# From this size on, the prefix is hashed by a child process through mmap (engine/prefixproc.py): no read-back
# copy.  Below it the child's start (about 10 ms of CPU) costs more than the copy it saves.
CHILD_MIN_SIZE = 64 << 20


def advise_done(fd: int, offset: int, length: int) -> None:
    """Start writeback of (and release from cache) a range we will not read again; best effort."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def hash_range(fd: int, start: int, end: int, buffer: bytearray | None = None) -> str:
    """SHA-256 hex of bytes ``[start, end)`` of an open file (short file -> hash of what is there)."""
    return range_digest(fd, start, end, buffer).hexdigest()


def range_digest(fd: int, start: int, end: int, buffer: bytearray | None = None) -> hashlib._Hash:
    """The SHA-256 object fed bytes ``[start, end)`` of an open file, to go on hashing what follows them."""
    digest = hashlib.sha256()
    buf = buffer if buffer is not None else bytearray(READ_BLOCK)
    view = memoryview(buf)
    pos = start
    while pos < end:
        n = os.preadv(fd, [view[: min(len(buf), end - pos)]], pos)
        if n <= 0:
            break
        digest.update(view[:n])
        pos += n
    return digest


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex of a whole file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return hash_range(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def git_blob_hasher(size: int) -> hashlib._Hash:
    """A SHA-1 primed with the git blob header of a ``size``-byte file: feed it the content to get its blob id."""
    return hashlib.sha1(f"blob {size}\0".encode())


def git_blob_sha1(path: str | os.PathLike[str]) -> str:
    """The git blob SHA-1 of a file: sha1(``blob <size>\\0`` + content), as Hugging Face ETags use."""
    digest = git_blob_hasher(os.path.getsize(path))
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class PrefixHasher(threading.Thread):
    """Hashes the file front to back as the contiguous prefix becomes available, overlapping the download.

    A file of CHILD_MIN_SIZE or more is hashed by a child process reading it through ``mmap`` (no read-back copy,
    see engine/prefixproc.py); smaller files, or when the child cannot run, by this thread as follows.

    ``available(offset)`` returns how many bytes from ``offset`` are known to be on disk (0 when the byte at
    ``offset`` has not arrived yet).  The data is read back with ``preadv`` right after workers wrote it, so
    it comes from the page cache; hashlib releases the GIL on large buffers, so this runs beside the workers.

    Behind itself it advises the kernel (``POSIX_FADV_DONTNEED``) that hashed ranges are done with: that
    starts their writeback early, so the final ``fsync`` has little left to do, and a 50 GB download does
    not push everything else out of the page cache.
    """

    def __init__(self, fd: int, size: int, available: Callable[[int], int], stop: threading.Event) -> None:
        super().__init__(name="modfetch-prefix-hasher", daemon=True)
        self.fd = fd
        self.size = size
        self.available = available
        self.stop_event = stop
        self.offset = 0
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None
        self.hex: str | None = None  # set when a child process hashed the whole file
        self.child_pid: int | None = None
        self.wake = threading.Event()

    def nudge(self) -> None:
        """New bytes are on disk (the transfer ended): look now instead of after the next poll."""
        self.wake.set()

    def run(self) -> None:
        proc = prefixproc.spawn(self.fd, self.size, WRITEBACK_STEP) if self.size >= CHILD_MIN_SIZE else None
        if proc is not None:
            self.child_pid = proc.pid
            try:
                self.hex = prefixproc.drive(proc, self.size, self.available, self.stop_event, wake=self.wake)
                return
            except OSError as exc:  # the child died or could not run: hash here instead, from the start
                log.debug("hashing process failed (%s); hashing in a thread", exc)
            except BaseException as exc:  # surfaced by the coordinator, which falls back to a full pass
                self.error = exc
                return
        self._run_here()

    def _run_here(self) -> None:
        buf = bytearray(READ_BLOCK)
        view = memoryview(buf)
        advised = 0
        try:
            while self.offset < self.size and not self.stop_event.is_set():
                ready = min(self.available(self.offset), self.size - self.offset)
                if ready <= 0:
                    if self.wake.wait(0.02):
                        self.wake.clear()
                    continue
                while ready > 0:
                    n = os.preadv(self.fd, [view[: min(len(buf), ready)]], self.offset)
                    if n <= 0:
                        raise OSError("short read while hashing")
                    self.digest.update(view[:n])
                    self.offset += n
                    ready -= n
                if self.offset - advised >= WRITEBACK_STEP or self.offset == self.size:
                    advise_done(self.fd, advised, self.offset - advised)
                    advised = self.offset
        except BaseException as exc:  # surfaced by the coordinator, which falls back to a full pass
            self.error = exc

    def result(self) -> str | None:
        """The hex digest if the whole file was hashed, else None."""
        if self.error is None and self.hex is not None:
            return self.hex
        if self.error is None and self.offset == self.size:
            return self.digest.hexdigest()
        return None
