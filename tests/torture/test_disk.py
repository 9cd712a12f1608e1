"""Disk trouble: ENOSPC on a small tmpfs (clear error, resumable, completes once space is freed) and a read-only
destination (clear error).  Needs root (``mount -t tmpfs``); skipped with the reason otherwise."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Modfetch, sha256_of
from tests.servers.faulty import FaultyServer
from tests.torture.conftest import assert_one_line_error, report, stuck_running_chunks

pytestmark = pytest.mark.torture

MiB = 1 << 20


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(size_mb, ro=False)`` mounts a fresh tmpfs and returns its path; all are unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size_mb: int, ro: bool = False) -> Path:
        where = tmp_path / f"fs-{uuid.uuid4().hex[:8]}"
        where.mkdir()
        options = f"size={size_mb}m" + (",ro" if ro else "")
        result = _mount("-t", "tmpfs", "-o", options, "tmpfs", str(where))
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {result.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.mark.timeout(180)
def test_enospc_then_resume_after_space_is_freed(mf: Modfetch, faulty_server: Callable[..., FaultyServer],
                                                 tmpfs: Callable[..., Path]) -> None:
    mf.write_config(concurrency={"per_file_chunks": 4, "chunk_size_mb": 1})
    disk = tmpfs(24)
    filler = disk / "filler.bin"
    filler.write_bytes(b"\0" * (8 * MiB))   # another file eats space the download was counting on
    server = faulty_server(size=20 * MiB + 5)
    args = ("--quiet", "download", "--url", server.url, "--dest", str(disk))
    full = mf.run(*args)
    assert full.returncode == 1, full.stdout + full.stderr
    line = assert_one_line_error(full.stderr)
    assert "not enough space" in line.lower(), line  # refused before allocating (issue 13)
    assert "free some space" in full.stderr
    row = mf.rows()[0]
    assert row["status"] == "failed" and "space" in (row["error"] or "").lower()
    assert not (disk / "file.bin").exists()
    # Free space: grow the filesystem (as a user would by deleting files elsewhere) and rerun the same command.
    grown = _mount("-o", "remount,size=64m", str(disk))
    assert grown.returncode == 0, grown.stderr
    again = mf.run(*args)
    assert again.returncode == 0, again.stderr
    assert sha256_of(disk / "file.bin") == server.sha256()
    assert not (disk / "file.bin.part").exists()
    assert not stuck_running_chunks(mf)
    report("disk", case="enospc", first_exit=full.returncode, error=repr(line[16:90]), rerun_exit=again.returncode,
           result="correct")


@pytest.mark.timeout(180)
def test_enospc_mid_transfer_keeps_progress(mf: Modfetch, faulty_server: Callable[..., FaultyServer],
                                           tmpfs: Callable[..., Path]) -> None:
    """Space runs out after preallocation (another program punches the .part's tail free and fills the disk):
    the error is clear, the chunks already on disk stay recorded and a rerun after freeing space completes.
    Since issue 13 the punched hole is itself seen as another program writing to the .part (its ctime moves),
    which stops the download before a write can hit ENOSPC; the rerun re-verifies every recorded chunk."""
    mf.write_config(concurrency={"per_file_chunks": 2, "chunk_size_mb": 1})
    disk = tmpfs(48)
    server = faulty_server(size=32 * MiB, rate=8 * MiB)
    args = ("--quiet", "download", "--url", server.url, "--dest", str(disk))
    proc = mf.popen(*args)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.body_bytes() < 6 * MiB:
        time.sleep(0.02)
    # Preallocation reserved the .part's blocks, so fill whatever is left and punch the .part's tail free:
    # the next writes past the hole need new blocks that are no longer there.  A punched hole keeps the
    # file's size; truncate + extend shrinks it for a moment, which modfetch rightly reports as tampering.
    part = disk / "file.bin.part"
    filler = disk / "filler.bin"
    size = part.stat().st_size
    punched = subprocess.run(["fallocate", "--punch-hole", "--offset", str(16 * MiB), "--length",
                              str(size - 16 * MiB), str(part)], capture_output=True, text=True, check=False)
    assert punched.returncode == 0, punched.stderr
    assert part.stat().st_size == size
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\1" * MiB)
                handle.flush()
        except OSError:
            pass
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    line = assert_one_line_error(err)
    assert "written to by another program" in line.lower(), line
    row = mf.rows()[0]
    assert 0 < row["bytes_done"] < server.size
    filler.unlink()
    mark = server.mark()
    again = mf.run(*args)
    assert again.returncode == 0, again.stderr
    assert sha256_of(disk / "file.bin") == server.sha256()
    refetched = server.body_bytes(mark)
    assert refetched < server.size, "the rerun started over instead of resuming"
    report("disk", case="enospc_mid_transfer", bytes_kept_mib=f"{row['bytes_done'] / MiB:.1f}",
           rerun_fetched_mib=f"{refetched / MiB:.1f}",
           error=repr(line[16:90]), rerun_exit=again.returncode, result="correct")


@pytest.mark.timeout(120)
def test_read_only_destination(mf: Modfetch, faulty_server: Callable[..., FaultyServer],
                               tmpfs: Callable[..., Path]) -> None:
    disk = tmpfs(8, ro=True)
    server = faulty_server(size=2 * MiB)
    for dest in (disk, disk / "sub"):
        result = mf.run("--quiet", "download", "--url", server.url, "--dest", str(dest))
        assert result.returncode == 1, result.stdout + result.stderr
        line = assert_one_line_error(result.stderr)
        assert "read-only file system" in line.lower(), line
        assert "writable --dest" in result.stderr
    report("disk", case="read_only_destination", exit=1, error=repr(line[16:90]))
