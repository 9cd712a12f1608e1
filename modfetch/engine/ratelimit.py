"""One download rate limit for the whole process (``--limit-rate``, ``network.max_bytes_per_second``).

A token bucket every connection of every file draws from after each block it read (``throttle``), so a
limited download keeps its parallel connections and a batch shares one budget.  Tokens may go into debt: a
reader that took more than the bucket held sleeps until the debt is repaid, and later readers queue behind it,
so the long-run rate is exact.  The bucket starts empty and refills to at most a quarter of a second of tokens
(at least 64 KiB): after an idle spell at most 1.25x the rate (plus one block in flight) gets through in a
second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# How long a throttled reader sleeps at most before checking stop (and telling the stall watchdog it is alive).
SLICE_SECONDS = 0.2
BURST_SECONDS = 0.25
MIN_BURST = 64 << 10


class TokenBucket:
    """``rate`` bytes per second; ``take(n)`` blocks until ``n`` bytes may pass.  Thread-safe."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = float(burst) if burst is not None else max(MIN_BURST, self.rate * BURST_SECONDS)
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 0.0  # start empty: a fresh run gets exactly the rate, bursts only follow idle time
        self._last = clock()

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` now (possibly into debt); the seconds the caller must wait before using them."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= nbytes
            return max(0.0, -self._tokens / self.rate)

    def take(self, nbytes: int, stop: threading.Event | None = None,
             on_wait: Callable[[], None] | None = None) -> None:
        """Block until ``nbytes`` may pass; returns early once ``stop`` is set.  ``on_wait`` is called about
        every SLICE_SECONDS while waiting (a throttled reader is not a stalled one)."""
        if nbytes <= 0:
            return
        deadline = self.clock() + self.reserve(nbytes)
        while True:
            left = deadline - self.clock()
            if left <= 0 or (stop is not None and stop.is_set()):
                return
            if on_wait is not None:
                on_wait()
            if stop is not None:
                stop.wait(min(left, SLICE_SECONDS))
            else:
                self.sleep(min(left, SLICE_SECONDS))


_bucket: TokenBucket | None = None
_bucket_lock = threading.Lock()


def configure(bytes_per_second: float) -> None:
    """Set the process-wide limit (0: unlimited).  The same rate again keeps the bucket (and its debt)."""
    global _bucket
    with _bucket_lock:
        if bytes_per_second <= 0:
            _bucket = None
        elif _bucket is None or _bucket.rate != float(bytes_per_second):
            _bucket = TokenBucket(bytes_per_second)


def current_rate() -> float:
    """The configured limit in bytes per second (0: unlimited)."""
    bucket = _bucket
    return bucket.rate if bucket is not None else 0.0


def throttle(nbytes: int, stop: threading.Event | None = None, on_wait: Callable[[], None] | None = None) -> None:
    """Called by every reader after each block: waits as long as the process-wide limit requires."""
    bucket = _bucket
    if bucket is not None:
        bucket.take(nbytes, stop, on_wait)


__all__ = ["TokenBucket", "configure", "current_rate", "throttle"]
