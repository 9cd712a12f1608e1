"""Issue 16 item 11: ``--limit-rate`` / ``network.max_bytes_per_second``, one token bucket for the process.

Unit tests drive the bucket with a fake clock (30 simulated seconds, several readers); one real download
measures the limit end to end through the installed CLI over four connections."""

from __future__ import annotations

import threading
import time

import pytest

from modfetch.engine import ratelimit
from modfetch.engine.ratelimit import TokenBucket
from tests.conftest import MiB, Modfetch
from tests.servers.faulty import FaultyServer


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def run_readers(bucket: TokenBucket, clock: FakeClock, readers: int, block: int, seconds: float,
                arrivals: list[tuple[float, int]]) -> None:
    """Round-robin ``readers`` that each read ``block`` bytes (instantly) then throttle, until ``seconds``."""
    start = clock()
    while clock() - start < seconds:
        for _ in range(readers):
            arrivals.append((clock() - start, block))
            bucket.take(block)


@pytest.mark.parametrize(("rate", "block", "readers"), [(1_000_000, 256 << 10, 4), (10 << 20, 1 << 20, 8),
                                                        (500 << 10, 64 << 10, 1), (100_000, 300_000, 3)])
def test_bucket_is_accurate_over_30s_and_never_bursts_past_2x(rate: int, block: int, readers: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, clock=clock, sleep=clock.sleep)
    arrivals: list[tuple[float, int]] = []
    run_readers(bucket, clock, readers, block, 30.0, arrivals)
    elapsed = clock() - 1000.0
    total = sum(n for _t, n in arrivals)
    assert abs(total / elapsed - rate) <= 0.10 * rate, (total / elapsed, rate)
    # Sliding one-second windows: never more than twice the rate, plus the one block a reader holds.
    times = [t for t, _n in arrivals]
    for i, t in enumerate(times):
        window = sum(n for u, n in arrivals[i:] if u < t + 1.0)
        assert window <= 2 * rate + block, (t, window)


def test_an_idle_bucket_refills_only_a_quarter_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1_000_000, clock=clock, sleep=clock.sleep)
    clock.sleep(60.0)  # a long idle spell
    assert bucket.reserve(250_000) == 0.0
    assert bucket.reserve(250_000) == pytest.approx(0.25)


def test_queued_readers_wait_in_turn() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=0, clock=clock, sleep=clock.sleep)
    waits = [bucket.reserve(100) for _ in range(4)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_a_throttled_reader_wakes_on_stop_and_reports_it_is_alive() -> None:
    bucket = TokenBucket(1000)  # real clock: 10 s of debt
    stop = threading.Event()
    alive: list[float] = []
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    bucket.take(10_000, stop, on_wait=lambda: alive.append(time.monotonic()))
    assert time.monotonic() - began < 2.0
    assert len(alive) >= 2  # told the stall watchdog about every 0.2 s


def test_configure_keeps_one_bucket_per_rate_and_zero_is_unlimited() -> None:
    try:
        ratelimit.configure(1 << 20)
        first = ratelimit._bucket
        ratelimit.configure(1 << 20)
        assert ratelimit._bucket is first and ratelimit.current_rate() == 1 << 20
        ratelimit.configure(2 << 20)
        assert ratelimit._bucket is not first
        ratelimit.configure(0)
        assert ratelimit.current_rate() == 0
        began = time.monotonic()
        ratelimit.throttle(100 << 20)
        assert time.monotonic() - began < 0.1
    finally:
        ratelimit.configure(0)


def test_a_limited_download_keeps_its_connections_and_the_rate(mf: Modfetch,
                                                               faulty_server: type[FaultyServer]) -> None:
    """4 MiB at 2M/s over 4 connections (four 1 MiB chunks): about 2 s, measured from the state DB's start and
    finish of the transfer."""
    server = faulty_server(size=4 * MiB)
    done = mf.run("download", "--quiet", "--limit-rate", "2M", "--concurrency", "4", "--dest", str(mf.dest),
                  server.url)
    assert done.returncode == 0, done.stderr
    (row,) = mf.rows()
    elapsed = row["finished_at"] - row["started_at"]
    assert 1.8 <= elapsed <= 2.2 + 0.3, elapsed  # +-10%, plus a little for fsync and hashing on a loaded box
    ranged = [r for r in server.data_requests() if not r.is_probe]
    assert len({r.range_start for r in ranged}) >= 4
    first = min(r.time for r in ranged)
    assert sum(1 for r in ranged if r.time - first < 0.5) >= 3  # in parallel, not one after another


def test_limit_rate_config_and_bad_values(mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    bad = mf.run("download", "--limit-rate", "fast", "http://127.0.0.1:9/x")
    assert bad.returncode == 2 and "--limit-rate: invalid size 'fast'" in bad.stderr
    mf.write_config(network={"timeout_seconds": 5, "max_bytes_per_second": -1})
    wrong = mf.run("download", "http://127.0.0.1:9/x")
    assert wrong.returncode == 2 and "max_bytes_per_second" in wrong.stderr
    server = faulty_server(size=MiB)
    mf.write_config(network={"timeout_seconds": 5, "max_bytes_per_second": 1 << 20})
    began = time.monotonic()
    ok = mf.run("download", "--quiet", "--limit-rate", "0", "--dest", str(mf.dest), server.url)
    assert ok.returncode == 0 and time.monotonic() - began < 5  # 0 on the command line lifts the config's limit
    (row,) = mf.rows()
    assert row["finished_at"] - row["started_at"] < 0.9
