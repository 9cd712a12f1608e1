"""How the ``modfetch`` process ends (cli ``main``): it skips the interpreter's module-by-module teardown (tens of
milliseconds once requests is loaded, a fixed cost of every download), yet every ``atexit`` handler runs, buffered
output is flushed, the exit code is kept, and a non-daemon thread that is still running is waited for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modfetch import __version__

DRIVER = """
import atexit, os, sys, threading, time
from modfetch.cli import main

log = sys.argv[1]

def note(what):
    with open(log, "a") as handle:
        handle.write(what + "\\n")

class Marker:
    # Runs only during the interpreter's teardown of this module (builtins may be gone then: bound here).
    def __del__(self, path=log, os_open=os.open, write=os.write, close=os.close,
                flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT):
        fd = os_open(path, flags, 0o644)
        write(fd, b"teardown\\n")
        close(fd)

marker = Marker()
atexit.register(note, "atexit")
if sys.argv[2] == "thread":
    def late():
        time.sleep(0.3)
        note("thread")
    threading.Thread(target=late).start()
sys.stdout.write("x" * 100000)  # buffered: lost unless flushed before the process ends
main(sys.argv[3:])
"""


def run(tmp_path: Path, mode: str, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = tmp_path / "log.txt"
    done = subprocess.run([sys.executable, "-c", DRIVER, str(log), mode, *args], capture_output=True, text=True,
                          timeout=60)
    return done, log.read_text().split() if log.exists() else []


@pytest.mark.parametrize(("args", "code", "stdout_tail", "stderr_part"), [
    (("--version",), 0, f"modfetch {__version__}\n", ""),
    (("no-such-command",), 2, "", "modfetch: error: No such command"),
])
def test_exit_skips_teardown_but_runs_atexit_and_flushes(tmp_path: Path, args: tuple[str, ...], code: int,
                                                         stdout_tail: str, stderr_part: str) -> None:
    done, notes = run(tmp_path, "plain", *args)
    assert done.returncode == code, done.stderr
    assert done.stdout.startswith("x" * 100000) and done.stdout.endswith(stdout_tail)
    assert stderr_part in done.stderr
    assert notes == ["atexit"]  # the handler ran; the module teardown (Marker.__del__) did not


def test_a_running_non_daemon_thread_is_waited_for(tmp_path: Path) -> None:
    done, notes = run(tmp_path, "thread", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(f"modfetch {__version__}\n")
    assert "thread" in notes and "atexit" in notes  # the normal exit: Python waited for the thread


def test_a_failing_stdout_is_still_reported(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", "from modfetch.cli import main; main(['--version'])"],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 1
    assert "No space left on device" in done.stderr
