"""Cancellation for the whole process: one stop event, one ``Interrupted``, one "wait on futures" helper.

Ctrl-C / SIGTERM reach the CLI's signal handler in the main thread.  When that thread is waiting on work that
runs in pool threads (a download's chunk workers, the files of a multi-URL download, a batch's jobs) it must
not raise there: an exception raised asynchronously inside ``concurrent.futures.wait()`` can leave the
futures' locks held, and the workers and the pool's shutdown hang forever.  So a waiter marks ``POLLING``
(``polling()``), the handler then only calls ``request_stop()``, and the waiter sees ``STOP`` within a tick and
raises ``Interrupted`` itself.  ``request_stop`` also runs the registered stop callbacks (the engine's HTTP
layer registers one that shuts every open socket down, so no thread stays blocked in a read).

Kept free of network imports: the CLI imports it at start-up (``modfetch --version`` stays fast).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# Set by request_stop() (SIGINT/SIGTERM in the CLI): every running download saves its state and stops.
STOP = threading.Event()
# Set while the main thread waits on futures through wait_or_stop() / polling(): a signal then only stops.
POLLING = threading.Event()
# Re-entrant: request_stop() runs in the main thread's signal handler, possibly while that thread registers.
_LOCK = threading.RLock()
_CALLBACKS: list[Callable[[], None]] = []
TICK = 0.25  # seconds between looks at STOP while waiting


class Interrupted(KeyboardInterrupt):
    """Raised by every mode (one download, several, a batch, the API calls) once a stop was requested; the
    downloads' state has been saved.  A KeyboardInterrupt, so no ``except Exception`` on the way swallows it."""


def on_stop(callback: Callable[[], None]) -> None:
    """Run ``callback`` (once per request, must not raise) whenever a stop is requested."""
    with _LOCK:
        if callback not in _CALLBACKS:
            _CALLBACKS.append(callback)


def request_stop() -> None:
    """Ask everything running in this process to checkpoint and stop: sets ``STOP``, then runs the stop
    callbacks (which wake blocked reads)."""
    STOP.set()  # first: work registered after the snapshot below sees STOP on its own
    with _LOCK:
        callbacks = list(_CALLBACKS)
    for callback in callbacks:
        with contextlib.suppress(Exception):
            callback()


def check_stop() -> None:
    """Raise Interrupted when a stop was requested (after a read failed or ended: was it our own shutdown?)."""
    if STOP.is_set():
        raise Interrupted()


def sleep_unless_stopped(seconds: float) -> None:
    """A retry backoff that a stop request cuts short (raising Interrupted)."""
    STOP.wait(max(0.0, seconds))
    check_stop()


def signalled() -> bool:
    """For the CLI's signal handler: when a waiter polls (``POLLING``), request a stop and return True (the
    waiter raises Interrupted); False when the handler should raise Interrupted itself."""
    if POLLING.is_set():
        request_stop()
        return True
    return False


@contextlib.contextmanager
def polling() -> Iterator[None]:
    """Mark the block as a poller of ``STOP`` when it runs in the main thread (where signals arrive)."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        POLLING.set()
    try:
        yield
    finally:
        if main:
            POLLING.clear()


def wait_or_stop(futures: Sequence[concurrent.futures.Future[Any]],
                 on_done: Callable[[concurrent.futures.Future[Any]], None] | None = None) -> None:
    """Wait for ``futures`` (calling ``on_done`` for each as it finishes, in this thread); on a stop request
    cancel those not started, wait for the running ones (they checkpoint) and raise Interrupted."""
    reported: set[int] = set()
    try:
        with polling():
            pending = True
            while pending and not STOP.is_set():
                pending = bool(concurrent.futures.wait(futures, timeout=TICK).not_done)
                for index, future in enumerate(futures):
                    if on_done is not None and index not in reported and future.done():
                        reported.add(index)
                        on_done(future)  # may raise Interrupted (a job stopped by request_stop())
    except KeyboardInterrupt:
        request_stop()  # a signal that arrived before POLLING was set, or on_done's Interrupted
    if STOP.is_set():
        for future in futures:
            future.cancel()  # jobs not started yet never start
        concurrent.futures.wait(futures)
        raise Interrupted()
