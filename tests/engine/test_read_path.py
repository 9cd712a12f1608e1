"""Issue 17 (CPU per GB): the whole-file SHA-256 of a large file is computed by a child process hashing an mmap
of the ``.part`` (engine/prefixproc.py) instead of copying every byte back with ``preadv``.

The class of faults for that path: the digest must be exact wherever the prefix grows (unaligned offsets, across
mapping windows); a child that dies (SIGBUS from a truncated file), finds the file short, or is stopped never
yields a digest, leaves no process behind, and the thread takes over; the child never sees modfetch's secrets.
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import os
import random
import signal
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modfetch.engine import hashing, prefixproc
from modfetch.engine.hashing import PrefixHasher
from tests.conftest import MiB, Modfetch, sha256_of, wait_for
from tests.servers.faulty import FaultyServer, make_content
from tests.servers.gated import GatedServer

# Crosses the child's 16 MiB mapping window, and ends off a page boundary.
DATA = random.Random(17).randbytes(prefixproc.WINDOW + 3 * 4096 + 123)
DIGEST = hashlib.sha256(DATA).hexdigest()


class _Prefix:
    """Stands in for the scheduler: bytes become available as the test "downloads" them."""

    def __init__(self) -> None:
        self.ready = 0
        self.lock = threading.Lock()

    def available(self, offset: int) -> int:
        with self.lock:
            return max(0, self.ready - offset)


@pytest.fixture
def child_always(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every PrefixHasher uses the child (whatever the size); yields the pids of the children started."""
    pids: list[int] = []
    real = prefixproc.spawn

    def spawn(fd: int, size: int, step: int) -> subprocess.Popen[bytes] | None:
        proc = real(fd, size, step)
        if proc is not None:
            pids.append(proc.pid)
        return proc

    monkeypatch.setattr(hashing, "CHILD_MIN_SIZE", 1)
    monkeypatch.setattr(prefixproc, "spawn", spawn)
    yield pids
    for pid in pids:
        assert not _alive(pid), f"hashing process {pid} outlived its PrefixHasher"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes, as in some containers, has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _open(tmp_path: Path, content: bytes) -> int:
    path = tmp_path / "part"
    path.write_bytes(content)
    return os.open(path, os.O_RDWR)


def _hash_with(fd: int, size: int, available: Callable[[int], int], steps: Callable[[], None] | None = None,
               stop: threading.Event | None = None) -> PrefixHasher:
    hasher = PrefixHasher(fd, size, available, stop or threading.Event())
    hasher.start()
    if steps is not None:
        steps()
    hasher.join(30)
    assert not hasher.is_alive()
    return hasher


STEPS = [
    [len(DATA)],                                                   # all at once (a resume)
    [1, 4095, 4097, prefixproc.WINDOW - 1, prefixproc.WINDOW + 1, len(DATA)],  # unaligned, around the window
    [0, 3, 3, 1 << 20, len(DATA) - 1, len(DATA)],                 # repeats, then one byte at the end
]


@pytest.mark.parametrize("steps", STEPS, ids=["whole", "unaligned", "repeats"])
def test_child_follows_the_prefix_to_the_exact_digest(tmp_path: Path, child_always: list[int],
                                                      steps: list[int]) -> None:
    fd = _open(tmp_path, b"\0" * len(DATA))
    prefix = _Prefix()

    def publish() -> None:
        for upto in steps:  # write, then publish, as workers do
            os.pwrite(fd, DATA[prefix.ready:upto], prefix.ready)
            with prefix.lock:
                prefix.ready = max(prefix.ready, upto)

    try:
        hasher = _hash_with(fd, len(DATA), prefix.available, publish)
    finally:
        os.close(fd)
    assert hasher.child_pid is not None and child_always == [hasher.child_pid]
    assert hasher.hex == DIGEST and hasher.result() == DIGEST


def test_child_finding_the_file_short_gives_no_digest(tmp_path: Path, child_always: list[int]) -> None:
    """The scheduler claims bytes the file no longer has (truncated behind our back): neither the child nor the
    thread that takes over may produce a digest."""
    fd = _open(tmp_path, DATA[: prefixproc.WINDOW // 2])
    try:
        hasher = _hash_with(fd, len(DATA), lambda offset: len(DATA) - offset)
    finally:
        os.close(fd)
    assert child_always and hasher.hex is None
    assert hasher.result() is None and hasher.error is not None


def test_child_killed_by_sigbus_hands_over_to_the_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGBUS (a mapping read past a truncated end) ends only the child: the thread hashes instead."""
    monkeypatch.setattr(hashing, "CHILD_MIN_SIZE", 1)
    started: list[subprocess.Popen[bytes]] = []

    def dying(fd: int, size: int, step: int) -> subprocess.Popen[bytes]:
        code = "import os, signal, sys; sys.stdin.buffer.readline(); os.kill(os.getpid(), signal.SIGBUS)"
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    monkeypatch.setattr(prefixproc, "spawn", dying)
    fd = _open(tmp_path, DATA)
    try:
        hasher = _hash_with(fd, len(DATA), lambda offset: len(DATA) - offset)
    finally:
        os.close(fd)
    assert [p.returncode for p in started] == [-signal.SIGBUS]
    assert hasher.hex is None and hasher.error is None
    assert hasher.result() == DIGEST


def test_stop_ends_the_child_without_a_digest(tmp_path: Path, child_always: list[int]) -> None:
    fd = _open(tmp_path, DATA)
    stop = threading.Event()
    try:
        hasher = _hash_with(fd, len(DATA), lambda offset: 100 if offset < 100 else 0, stop.set, stop)
    finally:
        os.close(fd)
    assert child_always and hasher.result() is None  # (the fixture checks the child is gone)


def test_a_child_far_behind_never_blocks_stop() -> None:
    """A child that reads nothing (far behind, hashing a large resumed prefix) while the prefix keeps growing:
    the pipe fills, and stop must still end the feeding thread and the child at once."""
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", "import time; time.sleep(60)"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    capacity = fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, 4096)  # (at least one page)

    def queued() -> int:
        out = array.array("i", [0])
        fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, out)
        return out[0]

    stop = threading.Event()
    result: list[str | None] = []
    # The prefix always has one more byte: an offset to send on every turn.
    feeder = threading.Thread(target=lambda: result.append(prefixproc.drive(proc, 1 << 40, lambda _: 1, stop)))
    feeder.start()
    try:
        wait_for(lambda: queued() > capacity - 32, "the pipe to the child to fill")
        stop.set()
        feeder.join(5)
        assert not feeder.is_alive(), "the feeding thread blocked on a full pipe"
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        feeder.join(30)
        proc.wait()
    assert result == [None] and proc.returncode == -signal.SIGKILL


def test_child_ends_when_its_input_ends_early(tmp_path: Path) -> None:
    """modfetch gone (its end of the pipe closed) before the file was whole: the child exits, printing nothing."""
    fd = _open(tmp_path, DATA)
    try:
        proc = prefixproc.spawn(fd, len(DATA), 32 << 20)
        assert proc is not None
        out, _ = proc.communicate(b"%d\n" % (len(DATA) // 2), timeout=30)
    finally:
        os.close(fd)
    assert proc.returncode == 1 and out == b""


def test_child_environment_carries_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secretsecretsecret")
    monkeypatch.setenv("CIVITAI_TOKEN", "civitai-secret-token")
    fd = _open(tmp_path, DATA)
    try:
        proc = prefixproc.spawn(fd, len(DATA), 32 << 20)
        assert proc is not None
        try:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        finally:
            out, _ = proc.communicate(b"%d\n" % len(DATA), timeout=30)
    finally:
        os.close(fd)
    for secret in (b"hf_secretsecretsecret", b"civitai-secret-token"):
        assert secret not in environ and secret not in cmdline
    assert out.decode().strip() == DIGEST


@pytest.mark.parametrize("faults", [{}, {"cut_after": 300_000}], ids=["clean", "connections-cut"])
def test_download_verified_by_the_child(mf: Modfetch, faulty_server: Callable[..., FaultyServer],
                                        child_always: list[int], faults: dict[str, int]) -> None:
    """A real chunked download whose whole-file hash comes from the child matches the server's bytes, also when
    connections are cut mid-block and chunks resume (short reads)."""
    server = faulty_server(size=6 * MiB + 4321, **faults)
    result = mf.cli("download", "--url", server.url, "--dest", str(mf.dest), "--chunk-size", "1M")
    assert result.exit_code == 0, result.output
    assert child_always, "the whole-file hash did not come from the child"
    assert (mf.dest / "file.bin").read_bytes() == server.content()
    assert server.sha256() in result.stdout and mf.status()[0]["sha256"] == server.sha256()


@pytest.mark.parametrize("where", ["frozen", "not-python"])
def test_no_child_where_none_can_run_and_the_thread_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           where: str) -> None:
    """A frozen app, or an embedding program as sys.executable, must not be started with our arguments."""
    monkeypatch.setattr(hashing, "CHILD_MIN_SIZE", 1)
    if where == "frozen":
        monkeypatch.setattr(sys, "frozen", True, raising=False)
    else:
        monkeypatch.setattr(sys, "executable", "/usr/bin/uwsgi")
    fd = _open(tmp_path, DATA)
    try:
        assert prefixproc.spawn(fd, len(DATA), 32 << 20) is None
        hasher = _hash_with(fd, len(DATA), lambda offset: len(DATA) - offset)
    finally:
        os.close(fd)
    assert hasher.child_pid is None and hasher.result() == DIGEST


def _hashing_children(pid: int) -> list[int]:
    """Pids of ``pid``'s children running engine/prefixproc.py."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"prefixproc.py" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("end", ["kill-9", "finish"])
def test_modfetch_process_never_leaves_its_hashing_child_behind(mf: Modfetch, end: str) -> None:
    """The real CLI on a file large enough for the child: it runs beside the download, and is gone both after
    a normal finish and after modfetch is killed with SIGKILL (its stdin closes; no orphan keeps hashing)."""
    content = make_content(hashing.CHILD_MIN_SIZE + 5 * MiB + 7, seed=17)
    with GatedServer(content, gate_at=8 * MiB) as server:
        proc = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
        try:
            assert server.paused.wait(30), "the download never reached the pause"
            children: list[int] = []
            wait_for(lambda: bool(children.extend(_hashing_children(proc.pid)) or children),
                     "the hashing child", proc)
            if end == "kill-9":
                proc.kill()
                proc.wait(30)
            else:
                server.gate.set()
                _, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err
                assert sha256_of(mf.dest / "file.bin") == server.sha256()
                assert mf.rows()[0]["sha256"] == server.sha256()
            wait_for(lambda: not any(_alive(pid) for pid in children), "the hashing child to exit")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
