"""Helpers shared by test modules in several folders (fixtures live in the conftest files).

Model files crafted byte by byte (``write_safetensors``, ``write_gguf``, ``write_lora``) and the black-box
runner used with ``tests.servers.raw``: ``download_runner`` runs the installed ``modfetch download`` with an
isolated HOME, ``assert_ok`` / ``assert_run_error`` hold a run to the acceptance rule (exact bytes, or one
``modfetch: error:`` line plus at most one hint, a non-zero exit, no traceback).  The per-test helpers
(``Modfetch``, ``assert_clean_error``, ``wait_for``, ``sha256_of``) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import assert_clean_error, modfetch_command

RUN_TIMEOUT = 40.0
MANY = [f"pad.{i}.weight" for i in range(12)]  # enough tensors that a header is not "tiny"
LORA_TENSORS = ["lora_unet_a.lora_down.weight", "lora_unet_a.lora_up.weight"]


# -- model files ---------------------------------------------------------------------------------------------
def write_safetensors(path: Path, tensors: list[str], metadata: dict[str, str] | None = None,
                      payload: int = 4) -> Path:
    """A valid safetensors file: u64 LE header length, JSON header, then ``payload`` bytes per tensor."""
    header: dict[str, Any] = {}
    for i, name in enumerate(tensors):
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [i * payload, (i + 1) * payload]}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * payload * len(tensors))
    return path


def write_lora(path: Path) -> Path:
    """A tiny safetensors file that type detection calls a LoRA."""
    return write_safetensors(path, LORA_TENSORS)


def gguf_str(text: str) -> bytes:
    """A GGUF string: u64 LE length, then UTF-8 bytes."""
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_gguf(path: Path, kv: dict[str, Any], version: int = 3, extra: bytes = b"") -> Path:
    """A GGUF v2/v3 header with string / u32 / string-array key-values (no tensors)."""
    body = b"GGUF" + struct.pack("<IQQ", version, 0, len(kv))
    for key, value in kv.items():
        body += gguf_str(key)
        if isinstance(value, str):
            body += struct.pack("<I", 8) + gguf_str(value)
        elif isinstance(value, int):
            body += struct.pack("<II", 4, value)
        elif isinstance(value, list):
            body += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(gguf_str(v) for v in value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body + extra + b"\0" * 32)
    return path


# -- black-box runs ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One finished ``modfetch`` process."""

    code: int
    stdout: str
    stderr: str
    elapsed: float
    dest: Path


def write_test_config(path: Path, timeout_seconds: float = 3, max_retries: int = 2) -> Path:
    """A config with small timeouts, few retries and fast backoff, so fault runs end quickly."""
    path.write_text(yaml.safe_dump({
        "version": 1,
        "network": {"timeout_seconds": timeout_seconds},
        "concurrency": {"max_retries": max_retries, "backoff_min_ms": 10, "backoff_max_ms": 50,
                        "per_file_chunks": 4},
    }))
    return path


def subprocess_env(home: Path, no_proxy: str = "127.0.0.1,localhost") -> dict[str, str]:
    """This process's environment without proxies or tokens, with HOME and XDG dirs under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and "TOKEN" not in k}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               NO_PROXY=no_proxy)
    return env


def download_runner(tmp_path: Path, timeout_seconds: float = 3, max_retries: int = 2) -> Callable[..., Run]:
    """``run(*args)``: the installed ``modfetch download`` with an isolated HOME, small timeouts and few retries."""
    config = write_test_config(tmp_path / "config.yml", timeout_seconds, max_retries)
    env = subprocess_env(tmp_path / "home")
    dest = tmp_path / "dest"

    def run(*args: str, dest_dir: Path | None = None, timeout: float = RUN_TIMEOUT) -> Run:
        target = dest_dir or dest
        started = time.monotonic()
        proc = subprocess.run([*modfetch_command(), "--config", str(config), "--quiet", "download", *args,
                               "--dest", str(target)],
                              capture_output=True, text=True, env=env, timeout=timeout, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started, target)

    return run


def assert_ok(run: Run, name: str, data: bytes) -> None:
    """The run exited 0 and ``dest/name`` holds exactly ``data``."""
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    path = run.dest / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def assert_run_error(run: Run) -> str:
    """A non-zero exit with one ``modfetch: error:`` line, at most one ``  hint:`` line after it, no traceback;
    returns the error line."""
    assert run.code != 0, run.stdout + run.stderr
    line = assert_clean_error(run.stderr)
    lines = [text for text in run.stderr.splitlines() if text.strip()]
    after = lines[lines.index(line) + 1:]
    assert all(text.startswith("  hint:") for text in after) and len(after) <= 1, run.stderr
    return line
