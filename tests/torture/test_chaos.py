"""Chaos: 50 downloads of varied sizes from servers that misbehave at random (seeded): resets, stalls, short
bodies, 500/502/503/429 with and without Retry-After, wrong Content-Range, overlong 206s, one ETag flip.

Pass: every run ends either with exit 0 and exactly the server's bytes (one whole content version, never a
splice), or with exit 1, one clear error line and no traceback, after which a rerun against a calmed server
completes correctly (the state was resumable).  Zero corrupt files reported as success.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import random
import time
from dataclasses import dataclass

import pytest

from tests.conftest import Modfetch, sha256_of
from tests.servers.chaos import ChaosServer
from tests.torture.conftest import assert_one_line_error, report, stuck_running_chunks

pytestmark = pytest.mark.torture

MiB = 1 << 20
RUNS = int(os.environ.get("MODFETCH_CHAOS_RUNS", 50))
SEED = int(os.environ.get("MODFETCH_TORTURE_SEED", 8))
SIZES = [0, 1, 2, MiB - 1, MiB, MiB + 1, 64 * 1024 + 1, 3 * MiB + 7, 12 * MiB + 5, 5 * MiB - 3]
RATES = [0.15, 0.3, 0.5, 0.85]


@dataclass
class Outcome:
    index: int
    size: int
    rate: float
    kind: str            # ok | error_then_resumed
    error: str = ""
    flipped: bool = False


def _one(mf: Modfetch, index: int, rng: random.Random) -> tuple[Outcome, collections.Counter[str]]:
    size = SIZES[index % len(SIZES)]
    rate = rng.choice(RATES)
    flip = index % 6 == 2
    name = f"chaos-{index:02d}-{size}.bin"
    target = mf.dest / name
    with ChaosServer(size=size, seed=SEED * 1000 + index, fault_rate=rate, flip_etag=flip, max_stall=3.0,
                     path=f"/{name}") as server:
        args = ("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
        first = mf.run(*args, timeout=180)
        if first.returncode == 0:
            actual = sha256_of(target)
            good = {server.sha256(v) for v in server.versions}
            assert actual in good, f"run {index}: exit 0 but the file is corrupt ({server.counts})"
            assert actual in first.stdout
            assert not target.with_name(name + ".part").exists()
            return Outcome(index, size, rate, "ok", flipped=server.flipped), server.counts
        assert first.returncode == 1, (index, first.returncode, first.stderr)
        line = assert_one_line_error(first.stderr)
        assert not target.exists() or sha256_of(target) in {server.sha256(v) for v in server.versions}
        server.calm()
        second = mf.run(*args, timeout=180)
        assert second.returncode == 0, (index, line, second.stderr)
        assert sha256_of(target) == server.sha256(server.versions[-1]), f"run {index}: resumed file is corrupt"
        kind = "error_then_resumed"
        return Outcome(index, size, rate, kind, error=line, flipped=server.flipped), server.counts


@pytest.mark.timeout(420)
def test_chaos_campaign(mf: Modfetch) -> None:
    mf.write_config(network={"timeout_seconds": 2},
                    concurrency={"per_file_chunks": 4, "chunk_size_mb": 1, "max_retries": 4,
                                 "backoff_min_ms": 10, "backoff_max_ms": 200})
    rngs = [random.Random(SEED * 7 + i) for i in range(RUNS)]
    started = time.monotonic()
    outcomes: list[Outcome] = []
    faults: collections.Counter[str] = collections.Counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(_one, mf, i, rngs[i]) for i in range(RUNS)]
        for future in futures:
            outcome, counts = future.result()
            outcomes.append(outcome)
            faults.update(counts)
    assert not stuck_running_chunks(mf)
    assert all(r["status"] == "complete" for r in mf.rows()), [(r["dest_path"], r["status"]) for r in mf.rows()]
    kinds = collections.Counter(o.kind for o in outcomes)
    errors = collections.Counter(o.error.split(":", 2)[-1].strip()[:60] for o in outcomes if o.error)
    report("chaos", runs=len(outcomes), ok_first_run=kinds["ok"], clear_error_then_resumed=kinds["error_then_resumed"],
           corrupt_success=0, etag_flips=sum(o.flipped for o in outcomes),
           elapsed_s=f"{time.monotonic() - started:.0f}")
    report("chaos-faults", **dict(sorted(faults.items())))
    for message, count in errors.most_common(8):
        print(f"  chaos error x{count}: {message}")
    assert len(outcomes) == RUNS
    assert faults["etag_flip"] >= 1 and sum(faults.values()) >= RUNS, faults
