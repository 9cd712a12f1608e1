"""Adaptive connection count for one file: add connections while each step raises the aggregate rate.

A server that limits every connection (nginx ``limit_rate``, many CDNs) gives N connections N times the rate
of one; a link that is already full gives them the same rate.  ``Controller`` is pure logic fed with
``(time, bytes on disk, errors)`` samples: it measures the rate at the starting count, doubles the count up
to a cap while a step pays off, and goes back to the last count that paid off when a step brings too little
or when retries (stalls, cuts, 429/503) appear.  A step judged on a fraction of a second can be judged wrong
(nginx's ``limit_rate`` lets every new request burst for a second), so one that brought too little is tried
again later, at growing intervals; one that brought retries is not.  ``Connections`` is the thread-safe side
the worker pool consults: surplus workers leave at a chunk boundary, or hand back their chunk instead of
retrying.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..state import CHUNK_PENDING
from .scheduler import STEAL_MIN, LiveChunk, Scheduler

log = logging.getLogger("modfetch.engine")
POLL_SECONDS = 0.25  # the coordinator's loop period when nothing is being measured
# Below this much left per connection, not every connection has work (a thief takes at least half of
# STEAL_MIN): the rate then measures the end of the transfer, not the count, and more connections would
# find nothing to do.
BUSY_BYTES = STEAL_MIN


@dataclass(frozen=True)
class AdaptiveSettings:
    """How the count adapts.  The defaults are the measured behaviour; tests shorten the windows."""

    cap: int = 32                # concurrency.max_connections_per_file
    settle: float = 0.1          # seconds after a change before measuring (at least the time the first
                                 # connections took to deliver bytes: a far server needs longer to connect)
    window: float = 0.3          # seconds of transfer measured per count
    min_gain: float = 0.05       # a step must raise the rate by at least this fraction...
    efficiency: float = 0.25     # ...and by this share of what it would bring if each connection were throttled
    min_bytes: int = 64 << 20    # adapt only when at least this much is left to fetch
    retry: float | None = 1.0    # seconds before a step that brought too little is measured again (doubling
                                 # each time); None: never
    tick: float = 0.1            # the coordinator's loop period while measuring


@dataclass(frozen=True)
class Level:
    """A count that paid off and the aggregate rate (bytes/s) measured with it."""

    count: int
    rate: float


class Controller:
    """The connection count of one transfer, decided from samples alone (no clock, no threads)."""

    def __init__(self, start: int, settings: AdaptiveSettings, now: float, errors: int = 0, done: int = 0,
                 total: int | None = None) -> None:
        self.settings = settings
        self.total = total  # bytes on disk once the transfer is done (None: never too close to the end)
        self.start = start
        self.count = start
        self.good: list[Level] = []     # counts that paid off, lowest first
        self.probing = start < settings.cap
        self.settle = settings.settle
        self._first: tuple[float, int] | None = (now, done)  # until the first bytes arrive
        self._retry_at: float | None = None   # when to measure the settled count again and step up
        self._retry_wait = settings.retry
        self._remeasure = False               # this window measures the settled count again
        self._reset(now, errors)

    def _reset(self, now: float, errors: int) -> None:
        self._changed = now
        self._errors_at_change = errors
        self._base: tuple[float, int] | None = None   # (time, bytes) where the measured window began

    @property
    def measuring(self) -> bool:
        """True while a step is being measured (the caller then samples every ``settings.tick``)."""
        return self.probing

    def feed(self, now: float, done: int, errors: int) -> int:
        """Take one sample (monotonic seconds, bytes on disk, retries so far); the count to run with now."""
        if self._first is not None:
            if done <= self._first[1]:
                return self.count
            # New connections take about as long as the first ones did before they add to the rate.
            self.settle = max(self.settings.settle, now - self._first[0])
            self._first = None
        failed = errors > self._errors_at_change
        if failed and self.probing and self.good:
            # A step above a good count brought retries (429/503, stalls, cuts): back off at once.
            self._settle(now, errors, self.good[-1].count, "retries rose")
            return self.count
        if self._base is None:
            if now - self._changed >= self.settle:
                self._base = (now, done)
            return self.count
        began, base = self._base
        if now - began < self.settings.window:
            return self.count
        rate = (done - base) / (now - began)
        if self.probing and self._ending(done, self.count):
            self._settle(now, errors, self.count, "too little left to measure")
            return self.count
        if not self.probing:
            if failed and len(self.good) > 1:
                self.good.pop()  # retries at a count that once paid off: one level down
                self._settle(now, errors, self.good[-1].count, "retries rose")
            elif (not failed and self._retry_at is not None and now >= self._retry_at
                  and not self._ending(done, min(self.settings.cap, self.count * 2))):
                log.debug("measuring %d connections again before trying more", self.count)
                self.probing = self._remeasure = True
                self._retry_at = None
                self._reset(now, errors)
            else:
                self._reset(now, errors)
            return self.count
        if not self.good or self._remeasure:
            if failed:
                self._settle(now, errors, self.count, "retries rose" if self.good else "retries at the starting count")
                return self.count
            self._accept(now, errors, done, rate)
            return self.count
        previous = self.good[-1]
        wanted = max(self.settings.min_gain, self.settings.efficiency * (self.count / previous.count - 1))
        if rate >= previous.rate * (1 + wanted):
            self._accept(now, errors, done, rate)
        else:
            self._settle(now, errors, previous.count,
                         f"{self.count} connections gave {rate / 1e6:.1f} MB/s, {previous.count} gave "
                         f"{previous.rate / 1e6:.1f} MB/s", retry=True)
        return self.count

    def _accept(self, now: float, errors: int, done: int, rate: float) -> None:
        if self._remeasure:  # the settled count, measured again: its fresh rate is what the next step must beat
            self._remeasure = False
            self.good[-1] = Level(self.count, rate)
        else:
            self.good.append(Level(self.count, rate))
        if self.count >= self.settings.cap:
            self._settle(now, errors, self.count, f"the cap ({self.settings.cap})")
            return
        if self._ending(done, min(self.settings.cap, self.count * 2)):
            self._settle(now, errors, self.count, "too little left for more")
            return
        log.debug("%d connections: %.1f MB/s; trying %d", self.count, rate / 1e6,
                  min(self.settings.cap, self.count * 2))
        self.count = min(self.settings.cap, self.count * 2)
        self._reset(now, errors)

    def _ending(self, done: int, count: int) -> bool:
        return self.total is not None and self.total - done < count * BUSY_BYTES

    def _settle(self, now: float, errors: int, count: int, why: str, retry: bool = False) -> None:
        """Stop measuring at ``count``; ``retry``: the step brought too little (not retries, the cap or the
        end), so it is worth measuring again later."""
        self.probing = self._remeasure = False
        self.count = count
        self._retry_at = None
        if retry and self._retry_wait is not None:
            self._retry_at = now + self._retry_wait
            self._retry_wait *= 2
        log.debug("connection count settled at %d (%s)", count, why)
        self._reset(now, errors)


class Connections:
    """The live worker count: how many may run (``allowed``) and how many do (``active``).

    Every decision that lowers ``active`` is taken under one lock, together with the scheduler call that
    goes with it, so the last workers never leave while a chunk is still pending (no chunk is orphaned)."""

    def __init__(self, scheduler: Scheduler, start: int, controller: Controller | None = None,
                 record: Callable[[int], None] | None = None) -> None:
        self.scheduler = scheduler
        self.controller = controller
        self.allowed = self.active = start
        self.record = record
        self.lock = threading.Lock()
        if record is not None:
            record(start)

    @property
    def poll_seconds(self) -> float:
        """How long the coordinator may wait before the next ``tick``."""
        measuring = self.controller is not None and self.controller.measuring
        return self.controller.settings.tick if measuring and self.controller else POLL_SECONDS

    def tick(self, now: float, done: int, errors: int) -> int:
        """Feed a sample to the controller; the number of new workers the caller must start."""
        if self.controller is None:
            return 0
        target = self.controller.feed(now, done, errors)
        with self.lock:
            if target == self.allowed:
                return 0
            added = max(0, target - self.active)
            self.allowed = target
            self.active += added
        if self.record is not None:
            self.record(target)
        return added

    def next_chunk(self) -> LiveChunk | None:
        """The next chunk for a worker, or None when it must exit (nothing left, or it is surplus)."""
        with self.lock:
            if self.active > self.allowed:
                self.active -= 1
                return None
            chunk = self.scheduler.next_chunk()
            if chunk is None:
                self.active -= 1
            return chunk

    def shed(self, chunk: LiveChunk) -> bool:
        """True when the worker owning ``chunk`` is surplus: the chunk went back to the scheduler (with its
        bytes and hash so far) for another worker to continue, and the caller must exit."""
        with self.lock:
            if self.active <= self.allowed:
                return False
            with self.scheduler.lock:
                chunk.status = CHUNK_PENDING
            self.active -= 1
            return True


class Shed(Exception):
    """Raised inside a surplus worker that handed its chunk back (``Connections.shed``)."""


def connections_for(start: int, remaining: int, settings: AdaptiveSettings | None, scheduler: Scheduler,
                    record: Callable[[int], None] | None, now: float, errors: int) -> Connections:
    """The worker count for a run of ``remaining`` bytes: adaptive when ``settings`` allow it and enough is
    left to fetch for a step to pay off, fixed otherwise (a pinned ``--concurrency``, a small file)."""
    controller = None
    if settings is not None and settings.cap > start and remaining >= settings.min_bytes and scheduler.steal:
        done = scheduler.bytes_done()
        controller = Controller(start, settings, now, errors, done, done + remaining)
    return Connections(scheduler, start, controller, record)
