"""Shared fixtures: per-test isolation (HOME, XDG dirs, no tokens), the fault-injecting server, and a helper
that runs modfetch in-process (Click's CliRunner) or as a real subprocess against a per-test config and DB."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``tests.servers`` must import however pytest was started
    sys.path.insert(0, str(ROOT))

from tests.servers.faulty import Faults, FaultyServer  # noqa: E402

# Property tests assert properties, not speed: no per-example deadline on a loaded 2-core CI machine.
settings.register_profile("modfetch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("modfetch")

MiB = 1 << 20
_SCRUBBED_ENV = (
    "MODFETCH_CONFIG", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "CIVITAI_TOKEN", "HF_ENDPOINT", "HF_HOME",
    "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_ENABLE_HF_TRANSFER", "http_proxy", "https_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", "NO_COLOR",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own HOME and XDG dirs (so its own config and state DB) and no tokens or proxies."""
    home = tmp_path / "home"
    for sub in ("", ".config", ".local/share", ".cache"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    yield home
    # modfetch configures logging per invocation; leave no handler bound to a finished test's streams.
    ours = logging.getLogger("modfetch")
    for handler in list(ours.handlers):
        ours.removeHandler(handler)
    ours.propagate = True


@pytest.fixture
def faulty_server() -> Iterator[Callable[..., FaultyServer]]:
    """Factory: ``faulty_server(size=8 * MiB, cut_after=1000, ...)`` starts a FaultyServer; all stop at
    teardown."""
    started: list[FaultyServer] = []

    def start(size: int = 4 * MiB, seed: int = 1, path: str = "/file.bin", **faults: Any) -> FaultyServer:
        server = FaultyServer(size=size, faults=Faults(**faults), seed=seed, path=path).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def modfetch_command() -> list[str]:
    """argv prefix that runs the installed modfetch (console script beside this interpreter, else -c)."""
    script = Path(sys.executable).parent / "modfetch"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from modfetch.cli import main; main(sys.argv[1:])"]


class Modfetch:
    """Runs modfetch for one test: a config at the XDG location (fast backoff, small chunks), ``dest`` for
    files."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.home = home
        self.dest = tmp_path / "dl"
        self.config_path = home / ".config" / "modfetch" / "config.yml"
        self.state_db = home / ".local" / "share" / "modfetch" / "state.db"
        self.config: dict[str, Any] = {}
        self.write_config()

    def write_config(self, **sections: Any) -> Path:
        """(Re)write the config: the test defaults merged with ``sections`` (nested dicts)."""
        defaults = {
            "version": 1,
            "general": {"download_root": str(self.dest)},
            "network": {"timeout_seconds": 5},
            "concurrency": {"per_file_chunks": 4, "chunk_size_mb": 1, "max_retries": 4,
                            "backoff_min_ms": 10, "backoff_max_ms": 100},
        }
        self.config = _merge(defaults, sections)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        return self.config_path

    # -- in-process
    def cli(self, *args: str) -> Result:
        """``modfetch ARGS`` through CliRunner (exceptions that escape Click fail the test)."""
        return CliRunner().invoke(_cli_group(), [str(a) for a in args], catch_exceptions=False)

    def download(self, url: str, *extra: str) -> Result:
        """``modfetch --quiet download --url URL --dest DEST EXTRA``."""
        return self.cli("download", "--quiet", "--url", url, "--dest", str(self.dest), *extra)

    def download_json(self, url: str, *extra: str) -> dict[str, Any]:
        """A successful ``download --json``: the result object printed on stdout."""
        result = self.cli("download", "--json", "--url", url, "--dest", str(self.dest), *extra)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    def status(self, *extra: str) -> list[dict[str, Any]]:
        """``status --json`` rows."""
        result = self.cli("status", "--json", *extra)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    # -- subprocesses
    def command(self, *args: str) -> list[str]:
        """argv for a real ``modfetch`` process."""
        return [*modfetch_command(), *[str(a) for a in args]]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``modfetch ARGS`` as a subprocess (same environment, so same config and state DB)."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                              env=os.environ.copy(), check=False)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``modfetch ARGS`` without waiting."""
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=os.environ.copy(), **kwargs)

    # -- state
    def rows(self) -> list[dict[str, Any]]:
        """``downloads`` rows read straight from SQLite (no recovery side effects)."""
        if not self.state_db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True, timeout=5)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM downloads ORDER BY id")]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def chunk_rows(self, download_id: int) -> list[dict[str, Any]]:
        """``chunks`` rows of one download ordered by offset."""
        conn = sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True, timeout=5)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(
                'SELECT * FROM chunks WHERE download_id = ? ORDER BY start', (download_id,))]
        finally:
            conn.close()


def _cli_group() -> Any:
    from modfetch.cli import cli

    return cli


@pytest.fixture
def mf(isolated_env: Path, tmp_path: Path) -> Modfetch:
    """A Modfetch runner with a fresh config and state DB for this test."""
    return Modfetch(isolated_env, tmp_path)


def error_lines(text: str) -> list[str]:
    """The ``modfetch: error: ...`` lines of some stderr."""
    return [line for line in text.splitlines() if line.startswith("modfetch: error:")]


def assert_clean_error(text: str, *needles: str) -> str:
    """Exactly one error line, no traceback, containing every needle (case-insensitive); returns the line."""
    assert "Traceback" not in text, text
    lines = error_lines(text)
    assert len(lines) == 1, text
    for needle in needles:
        assert needle.lower() in lines[0].lower(), text
    return lines[0]


def sha256_of(path: Path) -> str:
    """SHA-256 hex of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def wait_for(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str] | None = None,
             seconds: float = 30) -> None:
    """Poll ``condition`` until true; fail naming ``what`` (with the process's output if it ended first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"modfetch exited ({proc.returncode}) before {what}: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 8 MiB tmpfs (needs root); skipped with the reason when it cannot be mounted, always unmounted
    at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
