"""The CLI commands of issue 3 end to end: download output, status (table / JSON / selectors), verify,
--version, help, global options anywhere, and progress rendering (tqdm on a TTY, nothing otherwise)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modfetch import __version__
from tests.conftest import MiB, Modfetch, assert_clean_error, modfetch_command
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]


def test_version(mf: Modfetch) -> None:
    result = mf.cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"modfetch {__version__}"


@pytest.mark.parametrize("command", [[], ["download"], ["status"], ["verify"]])
def test_help(mf: Modfetch, command: list[str]) -> None:
    result = mf.cli(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    for option in ("--config", "--log-level", "--json", "--quiet"):
        assert option in result.stdout


def test_download_prints_path_and_sha256_as_a_process(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB)
    done = mf.run("download", "--url", server.url, "--dest", str(mf.dest))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{mf.dest / 'file.bin'}\n  sha256 {server.sha256()}\n"
    assert "Traceback" not in done.stderr
    # stderr is not a TTY: no progress bar, only log lines
    assert "\r" not in done.stderr and "%|" not in done.stderr


def test_download_json_output(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    result = mf.cli("--json", "download", "--url", server.url, "--dest", str(mf.dest))  # global option first
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out == {"id": 1, "path": str(mf.dest / "file.bin"), "sha256": server.sha256(), "size": MiB,
                   "fetched_bytes": out["fetched_bytes"], "already_present": False}
    for line in result.stderr.splitlines():  # logs are JSON lines too
        assert isinstance(json.loads(line), dict)


def test_quiet_prints_only_the_result(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    result = mf.cli("download", "-q", "--url", server.url, "--dest", str(mf.dest))
    assert result.exit_code == 0
    assert result.stderr == ""
    assert server.sha256() in result.stdout


def test_status_empty(mf: Modfetch) -> None:
    assert mf.cli("status").stdout.strip() == "no downloads yet"
    assert mf.status() == []


def test_status_table_and_selectors(mf: Modfetch, faulty_server: Serve) -> None:
    a = faulty_server(size=MiB, path="/a.bin", seed=1)
    b = faulty_server(size=2 * MiB, path="/b.bin", seed=2)
    mf.download_json(a.url)
    mf.download_json(b.url)
    table = mf.cli("status")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "FILE", "SOURCE", "SIZE", "PROGRESS", "STATUS", "UPDATED", "PATH"]
    assert any("a.bin" in line and "1.0 MiB" in line and "100.0%" in line and "complete" in line
               for line in lines)
    assert any("b.bin" in line and "2.0 MiB" in line for line in lines)
    rows = mf.status()
    assert {r["path"] for r in rows} == {str(mf.dest / "a.bin"), str(mf.dest / "b.bin")}
    for row in rows:
        for key in ("id", "url", "path", "size", "bytes_done", "status", "sha256", "updated_at"):
            assert key in row
    by_id = mf.status("1")
    assert [r["path"] for r in by_id] == [str(mf.dest / "a.bin")]
    by_path = mf.status(str(mf.dest / "b.bin"))
    assert [r["sha256"] for r in by_path] == [b.sha256()]
    by_url = mf.status(b.url)
    assert [r["id"] for r in by_url] == [2]


def test_verify_all_ok_then_detects_corruption(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB)
    mf.download_json(server.url)
    ok = mf.cli("verify", "--all")
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.stdout and str(mf.dest / "file.bin") in ok.stdout
    assert mf.status()[0]["status"] == "verified"

    path = mf.dest / "file.bin"
    with path.open("r+b") as handle:
        handle.seek(MiB)
        byte = handle.read(1)
        handle.seek(MiB)
        handle.write(bytes([byte[0] ^ 1]))
    bad = mf.cli("verify", "--all")
    assert bad.exit_code == 1
    assert "FAIL" in bad.stdout and "MISMATCH" in bad.stdout
    assert_clean_error(bad.stderr, "1 of 1 file(s) failed verification")
    assert mf.status()[0]["status"] == "mismatch"
    # still reported on the next run (mismatch rows are re-checked by --all)
    assert mf.cli("verify", "--all").exit_code == 1


def test_verify_by_id_and_path_as_a_process(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    mf.download_json(server.url)
    path = mf.dest / "file.bin"
    done = mf.run("verify", "1", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("OK") == 2
    path.write_bytes(b"x" + server.content()[1:])
    done = mf.run("verify", str(path))
    assert done.returncode == 1
    assert "FAIL" in done.stdout
    assert_clean_error(done.stderr, "failed verification")
    status = json.loads(mf.run("status", "--json").stdout)
    assert status[0]["status"] == "mismatch"


def test_verify_missing_file(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    mf.download_json(server.url)
    (mf.dest / "file.bin").unlink()
    result = mf.cli("verify", "--all")
    assert result.exit_code == 1
    assert "missing" in result.stdout and "modfetch rm 1" in result.stdout
    assert mf.status()[0]["status"] == "complete"  # not a mismatch: `list` shows it missing, `prune` forgets it


def test_verify_unknown_file_uses_sha256_beside_it(mf: Modfetch, tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "loose.bin"
    path.write_bytes(b"hello")
    (tmp_path / "loose.bin.sha256").write_text(f"{hashlib.sha256(b'hello').hexdigest()}  loose.bin\n")
    assert mf.cli("verify", str(path)).exit_code == 0
    path.write_bytes(b"hellO")
    assert mf.cli("verify", str(path)).exit_code == 1
    (tmp_path / "nohash.bin").write_bytes(b"x")
    result = mf.cli("verify", str(tmp_path / "nohash.bin"))
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "not a known download")


def test_verify_nothing_finished(mf: Modfetch) -> None:
    result = mf.cli("verify", "--all")
    assert result.exit_code == 0
    assert "nothing to verify" in result.stdout


def _run_on_pty(argv: list[str], timeout: float = 60) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (a TTY) and stdout on a pipe; returns (rc, stdout, tty)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real size, not 0x0
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, COLUMNS="100", TERM="xterm"))
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        stdout = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_tty(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=8 * MiB, rate=4 * MiB)
    argv = [*modfetch_command(), "download", "--url", server.url, "--dest", str(mf.dest)]
    rc, stdout, tty = _run_on_pty(argv)
    assert rc == 0, tty
    bar = [line for line in tty.replace("\r", "\n").splitlines() if "%|" in line]
    assert bar, tty
    assert any(line.startswith("file.bin") and "100%" in line and "8.00M/8.00M" in line and "B/s" in line
               for line in bar), bar
    assert server.sha256() in stdout  # the final line goes to stdout


def test_no_progress_bar_with_quiet_on_a_tty(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB)
    rc, stdout, tty = _run_on_pty([*modfetch_command(), "--quiet", "download", "--url", server.url, "--dest",
                                   str(mf.dest)])
    assert rc == 0, tty
    assert "%|" not in tty
    assert server.sha256() in stdout
