"""Drive a real terminal program in a private tmux server (send-keys / capture-pane) for end-to-end tests."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest


def tmux_bin() -> str:
    """The tmux binary, or skip the test with a reason (scripts/test installs it with apt-get)."""
    found = shutil.which(os.environ.get("TMUX_BIN", "tmux"))
    if found is None:
        pytest.skip("tmux not installed (Debian package tmux; scripts/test installs it)")
    return found


class Tmux:
    """One detached session on a private server socket; ``run`` records the program's exit status."""

    def __init__(self, tmp_path: Path, width: int = 120, height: int = 30) -> None:
        self.bin = tmux_bin()
        self.socket = f"mf-test-{uuid.uuid4().hex[:10]}"
        self.width, self.height = width, height
        self.exit_file = tmp_path / f"exit-{self.socket}"
        self.session = "t"
        self.env: dict[str, str] = dict(os.environ)

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.bin, "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=20, check=check, env=self.env)

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> Tmux:
        """Start ``argv`` in a new session of the configured size."""
        self.env = dict(env or os.environ)
        self.env.setdefault("TERM", "xterm-256color")
        self.env.pop("TMUX", None)
        # ``trap : INT``: Ctrl-C reaches the program, but the wrapper shell survives it to record the status.
        command = f"trap : INT; {shlex.join(argv)}; echo $? > {shlex.quote(str(self.exit_file))}"
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", self.session, "-x", str(self.width), "-y",
                   str(self.height), "sh", "-c", command)
        return self

    def send(self, *keys: str) -> None:
        """tmux key names (``Enter``, ``Escape``, ``Down``) or literal text."""
        for key in keys:
            self._tmux("send-keys", "-t", self.session, key)
            time.sleep(0.05)

    def type(self, text: str) -> None:
        """Literal characters."""
        self._tmux("send-keys", "-t", self.session, "-l", text)

    def screen(self) -> str:
        """The visible pane (empty once the program has ended)."""
        result = self._tmux("capture-pane", "-p", "-t", self.session, check=False)
        return result.stdout if result.returncode == 0 else ""

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", self.session, "-x", str(width), "-y", str(height))

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15.0, what: str = "") -> str:
        """Poll the pane until ``predicate(screen)``; fail with the last screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or predicate}; screen:\n{screen}")

    def wait_text(self, text: str, timeout: float = 15.0) -> str:
        return self.wait_for(lambda s: text in s, timeout, repr(text))

    def exit_status(self, timeout: float = 10.0) -> int:
        """Wait for the program to end; its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_file.exists() and self.exit_file.read_text().strip():
                return int(self.exit_file.read_text().strip())
            time.sleep(0.05)
        raise AssertionError(f"program did not exit; screen:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run([self.bin, "-L", self.socket, "kill-server"], capture_output=True, timeout=20,
                       check=False)
