"""Kill loop: one 256 MiB download killed with SIGKILL at 20 seeded random moments, plus SIGTERM/SIGINT stops,
resumed each time by a fresh ``modfetch`` process.

Pass: the final SHA-256 is right; after every stop the next start leaves no chunk ``running``; graceful stops
exit 130 with status ``interrupted``; the bytes fetched again across all resumes (server body bytes beyond the
file size) stay under 35% of the file.  The server is throttled (``MODFETCH_TORTURE_RATE`` bytes/s per
connection) so the 20 kills land mid-transfer.  By design (chunk progress is checkpointed about once a second)
a SIGKILL loses roughly half a second of transfer, so the re-fetch figure scales with the rate: at 4 x 2.5 MiB/s
it is ~35%, at the default 4 x 1.5 MiB/s ~20%.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Modfetch, sha256_of
from tests.servers.faulty import Faults, FaultyServer
from tests.torture.conftest import report, stuck_running_chunks

pytestmark = pytest.mark.torture

MiB = 1 << 20
SIZE = int(os.environ.get("MODFETCH_TORTURE_SIZE", 256 * MiB))
RATE = float(os.environ.get("MODFETCH_TORTURE_RATE", 1.5 * MiB))   # per connection; 4 connections
KILLS = 20
GRACEFUL = [signal.SIGTERM, signal.SIGINT, signal.SIGTERM]
SEED = int(os.environ.get("MODFETCH_TORTURE_SEED", 8))


def _wait_for_transfer(server: FaultyServer, since: int, proc: subprocess.Popen[str], limit: float = 20) -> None:
    """Until the process has data requests in flight (so a graceful signal hits a running transfer)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if server.body_bytes(since) > 0:
            return
        time.sleep(0.02)


def _communicate_or_dump(proc: subprocess.Popen[str], sig: int, timeout: float = 60) -> tuple[str, str]:
    """Wait for the signalled process; if it hangs, show where (py-spy when installed) and fail."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        dump = ""
        if Path(spy).exists():
            dump = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True,
                                  check=False).stdout
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"modfetch did not exit within {timeout:.0f}s of signal {sig}:\n{dump}\n{err[-3000:]}")


@pytest.mark.timeout(420)
def test_kill_loop(mf: Modfetch) -> None:
    rng = random.Random(SEED)
    mf.write_config(concurrency={"per_file_chunks": 4, "chunk_size_mb": 4})
    plan = [signal.SIGKILL] * KILLS + GRACEFUL
    rng.shuffle(plan)
    with FaultyServer(size=SIZE, faults=Faults(rate=RATE)) as server:
        server.content()
        args = ("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
        kills = graceful = 0
        finished_early = False
        started = time.monotonic()
        for sig in plan:
            since = server.mark()
            proc = mf.popen(*args)
            if sig == signal.SIGKILL:
                time.sleep(rng.uniform(0.4, 3.0))
            else:
                _wait_for_transfer(server, since, proc)
                time.sleep(rng.uniform(0.3, 2.0))
            if proc.poll() is not None:
                _, err = proc.communicate()
                assert proc.returncode == 0, err
                finished_early = True
                break
            proc.send_signal(sig)
            _, err = _communicate_or_dump(proc, sig)
            if sig == signal.SIGKILL:
                assert proc.returncode == -signal.SIGKILL, (proc.returncode, err)
                kills += 1
            else:
                assert proc.returncode == 130, (sig, proc.returncode, err)
                assert "Traceback" not in err, err
                assert "interrupted" in err, err
                rows = mf.rows()
                assert rows and rows[0]["status"] == "interrupted", rows
                graceful += 1
            # The next start (here: ``status --json``) must leave nothing marked running.
            status = mf.run("--json", "status")
            assert status.returncode == 0, status.stderr
            assert not stuck_running_chunks(mf), (sig, mf.rows(), stuck_running_chunks(mf))
            assert all(r["status"] != "running" for r in mf.rows()), mf.rows()
        final = mf.run(*args, timeout=300)
        elapsed = time.monotonic() - started
        assert final.returncode == 0, final.stderr
        target = mf.dest / "file.bin"
        assert sha256_of(target) == server.sha256()
        assert server.sha256() in final.stdout
        assert not (mf.dest / "file.bin.part").exists()
        assert not stuck_running_chunks(mf)
        row = mf.rows()[0]
        assert row["status"] == "complete" and row["sha256"] == server.sha256()
        served = server.body_bytes()
        refetched = served - SIZE
        pct = 100.0 * refetched / SIZE
        report("kill-loop", size_mib=SIZE // MiB, sigkill=kills, graceful=graceful,
               finished_early=finished_early, served_mib=f"{served / MiB:.1f}",
               refetched_mib=f"{refetched / MiB:.1f}", refetch_pct=f"{pct:.1f}%",
               lost_per_kill_mib=f"{refetched / max(1, kills) / MiB:.2f}",
               rate_per_conn_mib=f"{RATE / MiB:.1f}", elapsed_s=f"{elapsed:.0f}")
        assert kills >= KILLS or finished_early
        assert pct < 35.0, f"re-fetched {pct:.1f}% of the file across {kills} kills"
