"""The whole-file SHA-256 of a large ``.part``, computed in a child process that reads it through ``mmap``.

Why: reading the freshly written bytes back with ``preadv`` copies every byte once more (page cache to buffer),
about a quarter of modfetch's kernel time on a fast link.  Hashing straight from a read-only mapping of the page
cache avoids that copy.  Why a child: reading a mapping past the end of a file that another program truncated
raises SIGBUS, which would kill modfetch itself.  In a child it only ends the child: the parent gets no digest and
hashes in a thread instead (``PrefixHasher``); the truncation is reported, as always, by the writers' checks.

Protocol: the parent passes the ``.part`` descriptor and writes, one per line, how far the file may be hashed (an
increasing offset); after closing stdin it reads one line, the hex digest, written only when the child hashed
exactly ``size`` bytes.  End of stdin, or the parent gone, ends the child.  This file runs as a script with
``python -I -S``: standard library only, no site-packages, not modfetch's modules (``-I`` keeps this folder, whose
``http.py`` would shadow the standard library's, off ``sys.path``), and no secrets in its environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable

WINDOW = 16 << 20  # bytes mapped at once: bounds the child's resident pages
_ENV_KEPT = ("LD_LIBRARY_PATH",)  # what some Python builds need to start; nothing else is passed on


def spawn(fd: int, size: int, writeback_step: int) -> subprocess.Popen[bytes] | None:
    """Start the child hashing ``fd`` (``size`` bytes); None when it cannot start (no interpreter to run)."""
    script = os.path.abspath(__file__)
    interpreter = os.path.basename(sys.executable or "").lower()
    if getattr(sys, "frozen", False) or "python" not in interpreter or not os.path.isfile(script):
        return None  # frozen, zipped or embedded (sys.executable is not a Python): hash in a thread instead
    env = {key: os.environ[key] for key in _ENV_KEPT if key in os.environ}
    try:
        # A session of its own: Ctrl-C in the terminal goes to modfetch, which then ends the child itself.
        return subprocess.Popen([sys.executable, "-I", "-S", script, str(fd), str(size), str(writeback_step)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                pass_fds=(fd,), env=env, start_new_session=True)
    except OSError:
        return None


def drive(proc: subprocess.Popen[bytes], size: int, available: Callable[[int], int], stop: threading.Event,
          poll_seconds: float = 0.02, wake: threading.Event | None = None) -> str | None:
    """Feed the child offsets as the prefix grows; the hex digest, or None when stopped.  Raises OSError when the
    child failed (died, could not start, or found the file shorter than the prefix).  The child is always gone
    when this returns.  ``wake`` set: look for new bytes now rather than after the poll (the last ones came)."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # Never block on a full pipe (a child far behind, hashing a large resumed prefix): this thread must keep
        # seeing ``stop``.  Offsets are cumulative, so one that does not fit is simply sent later.
        os.set_blocking(proc.stdin.fileno(), False)
        sent = 0
        while sent < size:
            if stop.is_set():
                return None
            ready = min(available(sent), size - sent)
            if ready > 0:
                try:
                    os.write(proc.stdin.fileno(), b"%d\n" % (sent + ready))  # < PIPE_BUF: all or nothing
                    sent += ready
                    continue
                except BlockingIOError:
                    pass  # the child is behind: a later offset goes out later
            if wake is None:
                stop.wait(poll_seconds)
            elif wake.wait(poll_seconds):
                wake.clear()
        proc.stdin.close()
        while not select.select([proc.stdout], [], [], 0.1)[0]:
            if stop.is_set():
                return None
        line = proc.stdout.read().decode("ascii", "replace").strip()
        if proc.wait() != 0 or len(line) != 64:
            raise OSError(f"hashing process failed (exit {proc.returncode})")
        return line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


def _hash(fd: int, size: int, writeback_step: int) -> str | None:
    """The child's loop: hash up to each offset read from stdin; the digest once ``size`` bytes are hashed."""
    parent = os.getppid()
    digest = hashlib.sha256()
    offset = advised = 0
    for line in sys.stdin.buffer:
        target = min(int(line), size)
        while offset < target:
            if os.getppid() != parent:
                return None  # modfetch died (kill -9): stop at once rather than finish a long backlog
            if os.fstat(fd).st_size < target:
                return None  # truncated behind our back: no digest (and no SIGBUS in the common case)
            base = offset - offset % mmap.ALLOCATIONGRANULARITY
            length = min(target, base + WINDOW) - base
            with mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=base) as mapped, \
                    memoryview(mapped) as view, view[offset - base:] as part:
                digest.update(part)
            offset = base + length
            if offset - advised >= writeback_step or offset == size:
                # Start writeback of what is hashed and let it leave the cache (as PrefixHasher does).
                with contextlib.suppress(OSError, AttributeError):  # (no posix_fadvise on macOS)
                    os.posix_fadvise(fd, advised, offset - advised, os.POSIX_FADV_DONTNEED)
                advised = offset
    return digest.hexdigest() if offset == size else None


if __name__ == "__main__":
    result = _hash(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    if result is not None:
        sys.stdout.write(result + "\n")
    sys.exit(0 if result is not None else 1)
