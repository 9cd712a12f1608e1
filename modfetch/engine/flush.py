"""Write a ``.part``'s data back to disk while the transfer is still running, so the final ``fsync`` is cheap.

Why: without it every byte of a download is still dirty in the page cache when the last one arrives (the kernel
starts writing back only after ~30 s or at 10 % of RAM), and the ``fsync`` before the install then writes the
whole file at disk speed: on a 1 Gbit/s link about a tenth of the transfer time for 256 MiB, all of it after
the last byte.  A background thread ``fdatasync``s the file each time another ``STEP`` bytes are on disk, so at
the end only the last few MiB are left to flush.

This is only about *when* data reaches the disk, never about what is recorded: the ``fsync`` before the install
still runs, and nothing is recorded complete before it returns.  An error here is ignored on purpose (it comes
back from that final ``fsync``).  The flusher syncs through its own duplicate of the descriptor, so a stop never
waits for a flush in progress: the thread finishes it alone and closes its copy.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

STEP = 16 << 20        # bytes written between two flushes: what the final fsync has left at most, plus one step
POLL_SECONDS = 0.05    # how often the flusher looks at the bytes on disk
sync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)  # (macOS has no fdatasync)


class BackgroundFlush(threading.Thread):
    """Flushes ``fd`` each time ``written()`` (bytes on disk) grew by ``step`` since the last flush, until
    ``stop()``.  ``stop()`` never blocks: a flush in progress finishes in the background."""

    def __init__(self, fd: int, written: Callable[[], int], step: int | None = None) -> None:
        super().__init__(name="modfetch-flush", daemon=True)
        self.fd = os.dup(fd)  # ours to close: the transfer may close its descriptor while a flush runs
        self.written = written
        self.step = STEP if step is None else step
        self.flushes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            flushed = self.written()
            while not self._stop_event.wait(POLL_SECONDS):
                now = self.written()
                if now - flushed < self.step or self._stop_event.is_set():
                    continue
                try:
                    sync(self.fd)
                except OSError:
                    return  # a disk error resurfaces from the fsync before the install
                self.flushes += 1
                flushed = now
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def stop(self) -> None:
        """Ask the thread to end; returns at once."""
        self._stop_event.set()


def start_flush(fd: int, written: Callable[[], int], size: int) -> BackgroundFlush | None:
    """A started flusher for a transfer of ``size`` bytes, or None when the file is too small to need one (or
    the descriptor cannot be duplicated: then the final fsync does all the work, as before)."""
    if size < 2 * STEP:
        return None
    try:
        flusher = BackgroundFlush(fd, written)
    except OSError:
        return None
    flusher.start()
    return flusher
