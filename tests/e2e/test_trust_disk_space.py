"""Issue 13, finding 2: a download larger than the free space never fills the disk.

Real loop-mounted 64 MiB ext4 images (ext4's ``posix_fallocate`` takes every free block before it reports
ENOSPC), real local servers and the real CLI.  Needs root for ``mount``; skipped with the reason otherwise."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modfetch.engine.files import preallocate
from modfetch.errors import DiskError
from tests.conftest import Modfetch, assert_clean_error, sha256_of
from tests.servers.faulty import FaultyServer

MiB = 1 << 20
Serve = Callable[..., FaultyServer]


def _free(path: Path) -> int:
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A fresh 64 MiB ext4 file system on a loop device, with a pre-existing file ``keep.bin`` on it."""
    image, where = tmp_path / "disk.img", tmp_path / "ext4"
    where.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(64 * MiB)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make an ext4 image here: {made.stderr.strip()}")
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(where)], capture_output=True, text=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image here (needs root): {mounted.stderr.strip()}")
    try:
        (where / "keep.bin").write_bytes(b"precious" * 1000)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _assert_refused(mf: Modfetch, result: subprocess.CompletedProcess[str], disk: Path, free_before: int) -> str:
    """Exit 1, one line naming both sizes, the disk not left full, nothing pre-existing lost."""
    assert result.returncode == 1, result.stdout + result.stderr
    line = assert_clean_error(result.stderr, "not enough space for file.bin", "MiB more", "MiB is free")
    assert _free(disk) >= free_before - MiB, "the failed download left the disk fuller"
    assert (disk / "keep.bin").read_bytes() == b"precious" * 1000
    assert not (disk / "file.bin").exists()
    return line


@pytest.mark.parametrize("ranges", [True, False], ids=["chunked", "single-stream-no-range-no-head"])
def test_file_larger_than_the_disk_is_refused_before_allocating(mf: Modfetch, faulty_server: Serve, ext4: Path,
                                                                ranges: bool) -> None:
    server = faulty_server(size=100 * MiB, ranges=ranges, **({} if ranges else {"head_status": 405}))
    free_before = _free(ext4)
    result = mf.run("--quiet", "download", "--url", server.url, "--dest", str(ext4))
    line = _assert_refused(mf, result, ext4, free_before)
    assert "100.0 MiB more" in line, line
    assert f"{free_before / MiB:.1f} MiB is free" in line, line
    # not one body byte was fetched for a file that cannot fit (the probe's 1-byte range aside)
    assert server.body_bytes() <= (1 if ranges else 8 * MiB)


def test_file_that_fits_but_leaves_less_than_the_margin_is_refused(mf: Modfetch, faulty_server: Serve,
                                                                    ext4: Path) -> None:
    free_before = _free(ext4)
    server = faulty_server(size=free_before - 4 * MiB)
    mf.write_config(general={"min_free_mb": 8})
    result = mf.run("--quiet", "download", "--url", server.url, "--dest", str(ext4))
    line = _assert_refused(mf, result, ext4, free_before)
    assert "8.0 MiB must stay free" in line, line
    # With the margin lowered the same download fits, completes and verifies.
    mf.write_config(general={"min_free_mb": 0})
    again = mf.run("--quiet", "download", "--url", server.url, "--dest", str(ext4))
    assert again.returncode == 0, again.stderr
    assert sha256_of(ext4 / "file.bin") == server.sha256()


def test_default_margin_is_one_percent_of_a_small_disk(mf: Modfetch, faulty_server: Serve, ext4: Path) -> None:
    free_before = _free(ext4)
    total = os.statvfs(ext4).f_blocks * os.statvfs(ext4).f_frsize
    server = faulty_server(size=free_before - total // 200)  # fits, but leaves half of the 1% margin
    result = mf.run("--quiet", "download", "--url", server.url, "--dest", str(ext4))
    line = _assert_refused(mf, result, ext4, free_before)
    assert "KiB must stay free" in line, line


def test_failed_allocation_gives_the_space_back(ext4: Path) -> None:
    """Free space shrank between the check and the allocation (another writer): ext4 took every free block
    before failing; ``preallocate`` cuts the file back to what it held and nothing it held is lost."""
    part = ext4 / "file.bin.part"
    held = os.urandom(MiB)
    part.write_bytes(held)
    free_before = _free(ext4)
    fd = os.open(part, os.O_RDWR)
    try:
        with pytest.raises(DiskError) as raised:
            preallocate(fd, free_before + 16 * MiB, part)
    finally:
        os.close(fd)
    assert "No space left on device" in str(raised.value)
    assert _free(ext4) >= free_before - MiB, "the failed allocation left the disk full"
    assert part.read_bytes() == held


def test_resume_of_a_preallocated_part_is_not_refused(mf: Modfetch, faulty_server: Serve, ext4: Path) -> None:
    """The .part's own blocks count as its own: a resume of a preallocated download that fills most of the disk
    is not refused for lack of the space it already holds."""
    free_before = _free(ext4)
    server = faulty_server(size=free_before - 2 * MiB, error_status=503, error_times=None, error_min_start=8 * MiB)
    mf.write_config(general={"min_free_mb": 1}, concurrency={"max_retries": 0, "per_file_chunks": 1})
    first = mf.run("--quiet", "download", "--url", server.url, "--dest", str(ext4))
    assert first.returncode == 1, first.stderr
    assert (ext4 / "file.bin.part").exists()
    assert _free(ext4) < 4 * MiB  # preallocated: the part holds nearly the whole disk
    server.configure(error_status=None)
    again = mf.run("--quiet", "download", "--url", server.url, "--dest", str(ext4))
    assert again.returncode == 0, again.stderr
    assert sha256_of(ext4 / "file.bin") == server.sha256()


def test_single_stream_without_length_that_hits_enospc_gives_the_space_back(mf: Modfetch, faulty_server: Serve,
                                                                            ext4: Path) -> None:
    """No size known (chunked transfer, no Range, no HEAD): nothing to check up front, so the disk fills while
    writing; the .part is cut back to its last verified point (nothing, for a stream) and the disk is not left
    full."""
    server = faulty_server(size=100 * MiB, ranges=False, chunked=True, head_status=405)
    free_before = _free(ext4)
    result = mf.run("--quiet", "download", "--url", server.url, "--dest", str(ext4))
    assert result.returncode == 1, result.stderr
    assert_clean_error(result.stderr, "No space left on device")
    assert _free(ext4) >= free_before - MiB, "the failed stream left the disk full"
    assert (ext4 / "keep.bin").read_bytes() == b"precious" * 1000
    assert not (ext4 / "file.bin").exists()
