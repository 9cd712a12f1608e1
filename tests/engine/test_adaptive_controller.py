"""The adaptive connection count's pure logic (engine/adaptive.py): the controller fed with synthetic
``(time, bytes, errors)`` samples, and the worker gate (``Connections``) driven by hand, without threads."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from modfetch.engine.adaptive import BUSY_BYTES, AdaptiveSettings, Connections, Controller, connections_for
from modfetch.engine.scheduler import LiveChunk, Scheduler
from modfetch.state import CHUNK_PENDING, CHUNK_RUNNING

MB = 1_000_000
SETTINGS = AdaptiveSettings(cap=32, settle=0.2, window=1.0, tick=0.1, retry=None)  # each step judged once
Link = Callable[[int], float]  # connection count -> aggregate bytes/s


def per_connection(limit: float, link: float = float("inf")) -> Link:
    """A server throttling each connection to ``limit`` behind a link of ``link`` bytes/s."""
    return lambda n: min(n * limit, link)


def drive(link: Link, start: int = 8, seconds: float = 20.0, settings: AdaptiveSettings = SETTINGS,
          errors: Callable[[int, float], int] | None = None) -> tuple[Controller, list[int]]:
    """Run a controller against ``link`` in 0.1 s steps; the controller and every count it asked for."""
    controller = Controller(start, settings, 0.0)
    now, done, count, seen = 0.0, 0.0, start, [start]
    while now < seconds:
        now = round(now + 0.1, 6)
        done += link(count) * 0.1
        count = controller.feed(now, int(done), errors(count, now) if errors else 0)
        if count != seen[-1]:
            seen.append(count)
    return controller, seen


def trials(link: Callable[[int, float], float], settings: AdaptiveSettings, seconds: float = 30.0,
           errors: Callable[[int, float], int] | None = None) -> list[tuple[float, int]]:
    """Like ``drive`` with a link that may change over time: every (time, count) the controller asked for."""
    controller = Controller(8, settings, 0.0)
    now, done, count, seen = 0.0, 0.0, 8, [(0.0, 8)]
    while now < seconds:
        now = round(now + 0.1, 6)
        done += link(count, now) * 0.1
        count = controller.feed(now, int(done), errors(count, now) if errors else 0)
        if count != seen[-1][1]:
            seen.append((now, count))
    return seen


RETRYING = AdaptiveSettings(cap=32, settle=0.2, window=1.0, tick=0.1, retry=1.0)


def test_a_step_judged_on_a_bad_window_is_tried_again() -> None:
    # A throttled server whose first second at 16 connections looks like +10% (new requests still connecting,
    # a burst at 8 before): the step is dropped, then measured again and kept; the count reaches the cap.
    def link(n: int, now: float) -> float:
        unlucky = n == 16 and now < 2.5
        return 80 * MB * (1.1 if unlucky else n / 8)
    counts = [count for _, count in trials(link, RETRYING)]
    assert counts == [8, 16, 8, 16, 32]


def test_a_full_link_is_tried_again_at_growing_intervals() -> None:
    seen = trials(lambda n, now: min(n * 100 * MB, 125 * MB), RETRYING, seconds=40.0)
    assert {count for _, count in seen} == {8, 16}  # never beyond one step, and always back to 8
    assert [count for _, count in seen[::2]] == [8] * len(seen[::2])
    starts = [when for when, count in seen if count == 16]
    assert len(starts) >= 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))


def test_a_step_that_brought_retries_is_not_tried_again() -> None:
    seen = trials(lambda n, now: n * 10 * MB, RETRYING, errors=lambda n, now: int(now * 10) if n > 20 else 0)
    assert [count for _, count in seen] == [8, 16, 32, 16]


def test_a_per_connection_throttle_grows_the_count_to_the_cap() -> None:
    controller, seen = drive(per_connection(10 * MB))
    assert seen == [8, 16, 32]
    assert controller.count == 32 and not controller.measuring


@pytest.mark.parametrize("cap", [20, 9])
def test_the_cap_is_never_passed(cap: int) -> None:
    _, seen = drive(per_connection(10 * MB), settings=AdaptiveSettings(cap=cap, settle=0.2, window=1.0))
    assert seen == [8, 16, 20][: 3 if cap == 20 else 1] + ([9] if cap == 9 else [])
    assert max(seen) == cap


def test_a_full_link_keeps_the_starting_count() -> None:
    controller, seen = drive(per_connection(100 * MB, link=125 * MB))
    assert seen == [8, 16, 8]  # one step tried, nothing gained: back to the start
    assert controller.count == 8 and not controller.measuring


def test_the_count_stops_where_the_link_fills() -> None:
    # 10 MB/s per connection behind a 160 MB/s link: 16 connections fill it, 32 bring nothing more
    controller, seen = drive(per_connection(10 * MB, link=160 * MB))
    assert seen == [8, 16, 32, 16]
    assert controller.count == 16


@pytest.mark.parametrize(("gain", "kept"), [(1.10, 8), (1.30, 16)])
def test_a_step_must_bring_a_share_of_the_ideal_gain(gain: float, kept: int) -> None:
    # doubling 8 -> 16 would double a throttled rate; +10% is noise or a nearly full link, +30% pays
    controller, _ = drive(lambda n: 80 * MB * (gain if n > 8 else 1.0))
    assert controller.count == kept


def test_retries_during_a_step_shed_back_at_once() -> None:
    # a server answering 503 past 20 connections: the step to 32 brings retries
    controller, seen = drive(per_connection(10 * MB), errors=lambda n, now: int(now * 10) if n > 20 else 0)
    assert seen == [8, 16, 32, 16]
    assert controller.count == 16


def test_shedding_on_retries_does_not_wait_for_the_window() -> None:
    controller = Controller(8, SETTINGS, 0.0)
    assert controller.feed(0.3, 10 * MB, 0) == 8  # baseline window began at 0.3
    assert controller.feed(1.3, 90 * MB, 0) == 16  # 80 MB/s at 8: try 16
    assert controller.feed(1.4, 98 * MB, 1) == 8  # one retry, 0.1 s into the step: back at once
    assert not controller.measuring


def test_retries_at_the_starting_count_never_grow_it() -> None:
    controller, seen = drive(per_connection(10 * MB), errors=lambda n, now: int(now))
    assert seen == [8]
    assert controller.count == 8


def test_retries_after_settling_shed_one_level_at_a_time() -> None:
    controller, seen = drive(per_connection(10 * MB), errors=lambda n, now: int(now > 10) * int(now * 10))
    assert seen[:3] == [8, 16, 32]
    assert seen[3:] == [16, 8]  # a window with retries per level, never below the start
    assert controller.count == 8


def test_bytes_during_the_settle_time_are_not_measured() -> None:
    controller = Controller(8, SETTINGS, 0.0)
    controller.feed(0.1, 50 * MB, 0)  # a burst while connecting: before the window
    controller.feed(0.2, 50 * MB, 0)  # the window starts here
    assert controller.feed(1.2, 130 * MB, 0) == 16
    assert controller.good[0].rate == pytest.approx(80 * MB)


# -- the worker gate ---------------------------------------------------------------------------------------
def scheduler_of(n: int) -> Scheduler:
    return Scheduler([LiveChunk(idx=i, start=i << 20, end=(i + 1) << 20) for i in range(n)])


class Fixed:
    """A stand-in controller that asks for whatever count the test sets."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.measuring = True
        self.settings = AdaptiveSettings()

    def feed(self, now: float, done: int, errors: int) -> int:
        return self.count


def test_the_gate_starts_workers_on_growth_and_lets_surplus_ones_leave() -> None:
    recorded: list[int] = []
    fixed = Fixed(4)
    conns = Connections(scheduler_of(8), 2, fixed, recorded.append)  # type: ignore[arg-type]
    assert conns.tick(1.0, 0, 0) == 2  # two more workers to start
    assert conns.tick(1.1, 0, 0) == 0
    fixed.count = 2
    assert conns.tick(2.0, 0, 0) == 0
    taken = [conns.next_chunk(), conns.next_chunk()]
    assert taken == [None, None]  # the two surplus workers leave at their chunk boundary
    assert conns.next_chunk() is not None  # the others keep working
    assert recorded == [2, 4, 2]


def test_a_surplus_worker_hands_its_chunk_back_with_its_progress() -> None:
    scheduler = scheduler_of(2)
    conns = Connections(scheduler, 2)
    first = conns.next_chunk()
    assert first is not None and first.status == CHUNK_RUNNING
    first.done = 1000
    assert not conns.shed(first)  # not surplus: keeps retrying itself
    conns.allowed = 1
    assert conns.shed(first)
    assert first.status == CHUNK_PENDING and first.done == 1000
    again = conns.next_chunk()  # the remaining worker continues it where it stopped
    assert again is first and again.position == 1000


def test_the_last_worker_never_leaves_work_behind() -> None:
    scheduler = scheduler_of(1)
    conns = Connections(scheduler, 1)
    chunk = conns.next_chunk()
    assert chunk is not None
    assert not conns.shed(chunk)  # allowed >= 1 == active: the last worker carries on
    chunk.status = "complete"
    assert conns.next_chunk() is None and conns.active == 0


@pytest.mark.parametrize(("start", "remaining", "settings", "adaptive"), [
    (8, 1 << 30, AdaptiveSettings(), True),
    (8, 1 << 30, None, False),                          # --concurrency pinned
    (8, 16 << 20, AdaptiveSettings(), False),           # too little left for a step to pay off
    (32, 1 << 30, AdaptiveSettings(cap=32), False),     # already at the cap
])
def test_adapting_only_where_it_can_matter(start: int, remaining: int, settings: AdaptiveSettings | None,
                                           adaptive: bool) -> None:
    conns = connections_for(start, remaining, settings, scheduler_of(4), None, 0.0, 0)
    assert (conns.controller is not None) is adaptive
    assert conns.poll_seconds == (0.1 if adaptive else 0.25)


def test_a_far_server_gets_a_longer_settle_time() -> None:
    # Each new connection needs 0.8 s (connect, TLS, first bytes) before it adds its 10 MB/s, as the first
    # ones did: measuring right after a step would see no gain and wrongly keep the starting count.
    controller = Controller(8, SETTINGS, 0.0)
    now, done, count, since = 0.0, 0.0, 8, 0.0
    productive = 0
    while now < 12:
        now = round(now + 0.1, 6)
        if now - since >= 0.8:
            productive = count
        done += productive * 10 * MB * 0.1
        new = controller.feed(now, int(done), 0)
        if new != count:
            count, since = new, now
    assert controller.settle == pytest.approx(0.8)
    assert count == 32


def test_no_step_is_taken_or_judged_near_the_end() -> None:
    # 10 MB/s per connection: 16 connections are judged (and pay off) 2.4 s in, with 288 MB on disk; what is
    # left then keeps 16 connections busy but not 32 (each needs BUSY_BYTES of work), so 32 is never tried.
    total = int(288 * MB + 24 * BUSY_BYTES)
    controller = Controller(8, SETTINGS, 0.0, total=total)
    now, done, count, seen = 0.0, 0.0, 8, {8}
    while done < total:
        now = round(now + 0.1, 6)
        done += count * 10 * MB * 0.1
        count = controller.feed(now, int(done), 0)
        seen.add(count)
    assert count == 16 and not controller.measuring
    assert [g.count for g in controller.good] == [8, 16] and seen == {8, 16}


def test_a_step_that_runs_into_the_end_keeps_its_count() -> None:
    # the step to 16 is taken with enough left, but the end arrives before its window is judged
    total = 8 * 10 * MB * 1.2 + 16 * BUSY_BYTES + 1
    controller = Controller(8, SETTINGS, 0.0, total=int(total))
    assert controller.feed(0.2, 10 * MB, 0) == 8
    assert controller.feed(1.2, 90 * MB, 0) == 16
    assert controller.feed(1.5, int(total) - 4 * BUSY_BYTES, 0) == 16  # window starts
    assert controller.feed(2.5, int(total) - BUSY_BYTES, 0) == 16  # too little left to judge: kept
    assert not controller.measuring
