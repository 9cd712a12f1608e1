"""Tampering between runs: the files and the state DB are changed behind modfetch's back.  Each case ends with
the right bytes or a clear message; nothing is silently wrong."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Modfetch, sha256_of
from tests.servers.faulty import FaultyServer
from tests.torture.conftest import assert_one_line_error, db_rows, report, stuck_running_chunks

pytestmark = pytest.mark.torture

MiB = 1 << 20
SIZE = 24 * MiB


def _args(mf: Modfetch, server: FaultyServer) -> tuple[str, ...]:
    return ("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))


def _complete_chunks(mf: Modfetch) -> list[dict[str, object]]:
    return db_rows(mf, "SELECT * FROM chunks WHERE status = 'complete' ORDER BY start")


def _kill_partway(mf: Modfetch, server: FaultyServer, min_complete: int = 3) -> None:
    """Start a throttled download and SIGKILL it once ``min_complete`` chunks are recorded complete."""
    server.configure(rate=3 * MiB)
    proc = mf.popen(*_args(mf, server))
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if len(_complete_chunks(mf)) >= min_complete:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("no chunk completed in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    server.configure(rate=None)
    part = mf.dest / "file.bin.part"
    assert part.exists()
    row = mf.rows()[0]
    assert 0 < row["bytes_done"] < SIZE


def _finish(mf: Modfetch, server: FaultyServer) -> int:
    """Rerun to the end; returns the body bytes this rerun fetched."""
    mark = server.mark()
    result = mf.run(*_args(mf, server))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert not stuck_running_chunks(mf)
    return server.body_bytes(mark)


def _flip_in_complete_chunk(mf: Modfetch, part: Path) -> None:
    chunk = _complete_chunks(mf)[1]
    offset = int(chunk["start"]) + (int(chunk["end"]) - int(chunk["start"])) // 2  # type: ignore[call-overload]
    with open(part, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x5A]))


def _truncate(mf: Modfetch, part: Path) -> None:
    done = mf.rows()[0]["bytes_done"]
    os.truncate(part, max(1, done // 3))


def _delete_part(mf: Modfetch, part: Path) -> None:
    part.unlink()


def _delete_db(mf: Modfetch, part: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(mf.state_db) + suffix).unlink(missing_ok=True)


CASES: dict[str, Callable[[Modfetch, Path], None]] = {
    "flipped byte in a completed chunk": _flip_in_complete_chunk,
    "part truncated": _truncate,
    "part deleted while the DB says half done": _delete_part,
    "state DB deleted while the part exists": _delete_db,
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(CASES))
def test_tampered_between_runs(mf: Modfetch, faulty_server: Callable[..., FaultyServer], case: str) -> None:
    mf.write_config(concurrency={"per_file_chunks": 4, "chunk_size_mb": 1})
    server = faulty_server(size=SIZE)
    server.content()
    _kill_partway(mf, server)
    part = mf.dest / "file.bin.part"
    recorded = mf.rows()[0]["bytes_done"]
    CASES[case](mf, part)
    fetched = _finish(mf, server)
    # Tampering may only cost a re-fetch; the flipped chunk must have been fetched again, not trusted.
    if case == "flipped byte in a completed chunk":
        assert fetched >= SIZE - recorded + MiB - 1
    report("tampering", case=case.replace(" ", "_"), recorded_mib=f"{recorded / MiB:.1f}",
           refetched_mib=f"{fetched / MiB:.1f}", result="correct")


@pytest.mark.timeout(120)
def test_final_file_corrupted_before_verify(mf: Modfetch, faulty_server: Callable[..., FaultyServer]) -> None:
    server = faulty_server(size=3 * MiB + 11)
    first = mf.run(*_args(mf, server))
    assert first.returncode == 0, first.stderr
    target = mf.dest / "file.bin"
    with open(target, "r+b") as handle:
        handle.seek(MiB + 5)
        handle.write(b"\x00garbage\x00")
    verify = mf.run("verify", "--all")
    assert verify.returncode == 1
    assert "FAIL" in verify.stdout and str(target) in verify.stdout
    assert_one_line_error(verify.stderr)
    assert mf.rows()[0]["status"] == "mismatch"
    # A plain rerun refuses to overwrite the changed file and says how to proceed ...
    again = mf.run(*_args(mf, server))
    assert again.returncode == 1
    line = assert_one_line_error(again.stderr)
    assert "already exists" in line and "--force" in again.stderr
    # ... --force fetches it again, and verify is happy.
    forced = mf.run(*_args(mf, server), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sha256_of(target) == server.sha256()
    ok = mf.run("verify", "--all")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert mf.rows()[0]["status"] == "verified"
    report("tampering", case="final_file_corrupted_before_verify", verify_exit=verify.returncode,
           result="mismatch_reported_then_force_fixed")
