"""Issue 13, finding 3: only modfetch's own bytes are installed.

Another program changes the ``.part`` at a deterministic point (the local server pauses its body at a given byte
until the test has tampered): bytes appended or overwritten in place (also by a writer that restores the mtime)
while the download runs, or the ``.part`` extended between a kill and the resume.  The file must then not be
installed (a clear one-line error) or be re-verified and correct; never installed with foreign bytes and
reported verified."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modfetch.engine.files import OwnWrites, PartWritten
from modfetch.errors import DiskError
from tests.conftest import Modfetch, assert_clean_error, sha256_of, wait_for
from tests.servers.faulty import make_content
from tests.servers.gated import GatedServer

MiB = 1 << 20
SIZE = 4 * MiB
GATE = 2 * MiB + 64 * 1024  # inside the third 1 MiB chunk: the first two are written (and hashed) by then


def _append(part: Path) -> None:
    with open(part, "ab") as handle:
        handle.write(b"appended by someone else" * 100)


def _overwrite(part: Path) -> None:
    fd = os.open(part, os.O_WRONLY)
    try:
        os.pwrite(fd, b"EVIL" * 1024, 4096)
    finally:
        os.close(fd)


def _overwrite_keep_mtime(part: Path) -> None:
    before = part.stat()
    _overwrite(part)
    os.utime(part, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime still moves


TAMPERS: dict[str, Callable[[Path], None]] = {
    "append": _append, "overwrite": _overwrite, "overwrite-restoring-mtime": _overwrite_keep_mtime,
}


@pytest.fixture
def served() -> Iterator[Callable[..., GatedServer]]:
    started: list[GatedServer] = []

    def start(**options: object) -> GatedServer:
        server = GatedServer(make_content(SIZE, seed=13), gate_at=GATE, **options)  # type: ignore[arg-type]
        started.append(server.__enter__())
        return server

    yield start
    for server in started:
        server.__exit__()


def _written(mf: Modfetch, part: Path, ranges: bool) -> int:
    """Bytes modfetch has written so far: a stream's .part grows as it is written; a chunked one is preallocated,
    so its completed chunks are counted in the state DB."""
    if not ranges:
        return part.stat().st_size if part.exists() else 0
    rows = mf.rows()
    if not rows:
        return 0
    return sum(c["end"] - c["start"] for c in mf.chunk_rows(rows[0]["id"]) if c["status"] == "complete")


def _args(mf: Modfetch, server: GatedServer, sha256: bool) -> list[str]:
    return ["--quiet", "download", "--url", server.url, "--dest", str(mf.dest),
            *(["--sha256", server.sha256()] if sha256 else [])]


@pytest.mark.parametrize("sha256", [False, True], ids=["no-sha256", "sha256"])
@pytest.mark.parametrize("tamper", sorted(TAMPERS))
@pytest.mark.parametrize("ranges", [True, False], ids=["chunked", "single-stream"])
def test_part_changed_while_downloading_is_never_installed(mf: Modfetch, served: Callable[..., GatedServer],
                                                           tamper: str, sha256: bool, ranges: bool) -> None:
    mf.write_config(concurrency={"per_file_chunks": 1, "chunk_size_mb": 1})
    server = served(ranges=ranges, head=ranges)
    proc = mf.popen(*_args(mf, server, sha256))
    try:
        assert server.paused.wait(30), "the download never reached the pause"
        part = mf.dest / "file.bin.part"
        wait_for(lambda: _written(mf, part, ranges) >= 2 * MiB, "the first 2 MiB on disk", proc)
        TAMPERS[tamper](part)
        server.gate.set()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert_clean_error(err, "file.bin.part was written to by another program")
    assert not (mf.dest / "file.bin").exists()
    assert mf.rows()[0]["status"] == "failed"
    # The rerun trusts nothing it did not verify: the result is exactly the server's file.
    again = mf.run(*_args(mf, server, sha256))
    assert again.returncode == 0, again.stderr
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert (mf.dest / "file.bin").stat().st_size == SIZE


@pytest.mark.parametrize("sha256", [False, True], ids=["no-sha256", "sha256"])
def test_part_extended_between_kill_and_resume_is_cut(mf: Modfetch, served: Callable[..., GatedServer],
                                                      sha256: bool) -> None:
    mf.write_config(concurrency={"per_file_chunks": 1, "chunk_size_mb": 1})
    server = served()
    proc = mf.popen(*_args(mf, server, sha256))
    assert server.paused.wait(30), "the download never reached the pause"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    server.gate.set()
    part = mf.dest / "file.bin.part"
    _append(part)
    assert part.stat().st_size > SIZE
    again = mf.run(*_args(mf, server, sha256))
    assert again.returncode == 0, again.stderr
    assert (mf.dest / "file.bin").stat().st_size == SIZE
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert (mf.dest / "file.bin.sha256").read_text().split()[0] == server.sha256()


@pytest.mark.parametrize("tamper", [None, *sorted(TAMPERS)])
def test_install_gate_sees_any_change_after_the_last_own_write(tmp_path: Path, tamper: str | None) -> None:
    """The stat right before the link is compared with modfetch's own last write: the window between the final
    fsync and the install is closed too (a writer restoring the mtime still moves the ctime)."""
    part = tmp_path / "file.bin.part"
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        writes = OwnWrites(fd)
        writes.pwrite(memoryview(b"x" * 65536), 0)
        os.fsync(fd)
        if tamper is None:
            writes.check(part, 65536)
            return
        TAMPERS[tamper](part)
        with pytest.raises(DiskError, match="by another program"):
            writes.check(part, 65536)
        with pytest.raises(PartWritten):  # and the next own write refuses to go on
            writes.pwrite(memoryview(b"y"), 0)
    finally:
        os.close(fd)
