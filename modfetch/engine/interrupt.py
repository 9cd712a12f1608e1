"""Process-wide stop requests (SIGINT/SIGTERM) that wake every blocking network read within a second.

``STOP`` alone is only looked at between reads, and a read waits for its data or its timeout: a thread reading
from a slow or silent server would hold the process (a batch job, a probe, an API call) for minutes after
Ctrl-C.  So every connection modfetch opens registers its socket here (``track``, called by the connection
classes in ``engine.http``), and ``request_stop`` sets ``STOP`` and shuts all of them down, as the chunk stall
watchdog does for one response: each blocked ``recv`` returns at once, and the reader sees ``STOP`` and raises
``Interrupted``.  A connection opened after the stop is refused the same way, so no retry can start a new wait.
"""

from __future__ import annotations

import _socket
import contextlib
import socket
import threading
import weakref

# Set by request_stop() (SIGINT/SIGTERM in the CLI): every running download saves its state and stops.
STOP = threading.Event()
# Re-entrant: request_stop() runs in the main thread's signal handler, possibly while that thread is in track().
_LOCK = threading.RLock()
_LIVE: weakref.WeakSet[socket.socket] = weakref.WeakSet()


class Interrupted(KeyboardInterrupt):
    """Raised in a download's coordinating thread after request_stop(); state has been saved."""


def request_stop() -> None:
    """Ask every download in this process to checkpoint and stop (used on SIGINT/SIGTERM): sets ``STOP`` and
    shuts down every open connection so no thread stays blocked in a read."""
    STOP.set()  # before the snapshot: a socket tracked after it sees STOP in track() and is shut down there
    with _LOCK:
        live = list(_LIVE)
    for sock in live:
        _shutdown(sock)


def track(sock: socket.socket) -> None:
    """Register a freshly connected socket so request_stop() can wake its reader; raises Interrupted (after
    shutting it down) when a stop was already requested."""
    with _LOCK:
        _LIVE.add(sock)
    if STOP.is_set():
        _shutdown(sock)
        raise Interrupted()


def check_stop() -> None:
    """Raise Interrupted when a stop was requested (after a read failed or ended: was it our own shutdown?)."""
    if STOP.is_set():
        raise Interrupted()


def sleep_unless_stopped(seconds: float) -> None:
    """A retry backoff that a stop request cuts short (raising Interrupted)."""
    STOP.wait(max(0.0, seconds))
    check_stop()


def _shutdown(sock: socket.socket) -> None:
    # The C-level shutdown, also for an SSLSocket: SSLSocket.shutdown() drops its TLS object under the feet of
    # the thread reading instead of just waking it.
    with contextlib.suppress(OSError, ValueError, TypeError):
        _socket.socket.shutdown(sock, socket.SHUT_RDWR)
