"""Black-box regressions for placement, type detection and the metrics textfile: hostile files and trees,
run through the installed ``modfetch`` (subprocess) or the CLI, real files only."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modfetch.metrics import TextfileWriter
from tests.conftest import Modfetch, assert_clean_error


def _safetensors(path: Path, header: bytes, payload: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)
    return path


def _gguf_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _type(mf: Modfetch, path: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    proc = mf.run("type", str(path), timeout=timeout)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc


def test_type_survives_a_safetensors_header_nested_100k_deep(mf: Modfetch, tmp_path: Path) -> None:
    """json.loads raises RecursionError (not ValueError) on deep nesting: it must read as malformed."""
    deep = _safetensors(tmp_path / "deep.safetensors", b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    proc = _type(mf, deep)
    assert proc.returncode == 0 and "generic" in proc.stdout and "nests too deeply" in proc.stdout


def test_type_prints_lone_surrogates_and_control_characters_safely(mf: Modfetch, tmp_path: Path) -> None:
    """JSON escapes such as \\ud800 decode to lone surrogates, which crashed printing the reason; control
    characters (ESC) from a header must not reach the terminal either."""
    lora = _safetensors(tmp_path / "lora.safetensors", b'{"lora_unet_\\ud800\\u001b[31m":{}}')
    meta = _safetensors(tmp_path / "meta.safetensors",
                        b'{"a":{}, "__metadata__":{"ss_network_module":"x\\udc00\\u001b[2J"}}')
    for path in (lora, meta):
        proc = _type(mf, path)
        assert proc.returncode == 0 and "sd.lora" in proc.stdout, proc.stderr
        assert "\x1b" not in proc.stdout
    result = mf.cli("type", str(lora))
    assert result.exit_code == 0 and "sd.lora" in result.stdout


def test_type_does_not_block_on_a_fifo(mf: Modfetch, tmp_path: Path) -> None:
    """open() of a FIFO blocks until a writer appears: detection must not open non-regular files."""
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    proc = _type(mf, fifo, timeout=15)
    assert proc.returncode == 0 and "generic" in proc.stdout and "not a regular file" in proc.stdout


def test_type_refuses_a_gguf_with_millions_of_strings_at_once(mf: Modfetch, tmp_path: Path) -> None:
    """A crafted string array far beyond any real vocabulary is rejected up front, not walked item by item."""
    count = 5_000_000
    path = tmp_path / "strings.gguf"
    with path.open("wb") as fh:
        fh.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _gguf_str("x.tokens") + struct.pack("<IIQ", 9, 8, count))
        fh.write(b"\0" * (8 * count))
    proc = _type(mf, path)
    assert proc.returncode == 0 and "generic" in proc.stdout and "implausibly" in proc.stdout, proc.stdout


def test_metrics_lock_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    """The lock name beside the textfile is predictable; a link planted there must not create the file it
    points to (the write fails and is only warned about)."""
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    victim = tmp_path / "victim"
    (textdir / ".modfetch.prom.lock").symlink_to(victim)
    TextfileWriter(tmp_path / "missing-state.db", textdir / "modfetch.prom")()
    assert not victim.exists() and not victim.is_symlink()


def test_place_refuses_a_download_whose_bytes_changed(mf: Modfetch, tmp_path: Path,
                                                     faulty_server: Callable[..., Any]) -> None:
    """A file modfetch downloaded and that was modified since is not placed as that download (wrong bytes);
    the app folder is left untouched."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    mf.write_config(placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)}}})
    server = faulty_server(size=64 << 10, path="/adapter.safetensors")
    assert mf.download(server.url).exit_code == 0
    final = mf.dest / "adapter.safetensors"
    data = bytearray(final.read_bytes())
    data[-1] ^= 0xFF
    final.write_bytes(bytes(data))
    for mode in ("symlink", "copy"):
        result = mf.cli("place", "--type", "sd.lora", "--mode", mode, str(final))
        assert result.exit_code == 1, result.output
        assert_clean_error(result.output, "changed since modfetch downloaded it")
    assert not (comfy / "models" / "loras" / final.name).exists()
    assert json.loads(mf.cli("status", "--json").stdout)[0].get("placements", []) == []
    # Touched but unchanged bytes are still the download: placed.
    data[-1] ^= 0xFF
    final.write_bytes(bytes(data))
    assert mf.cli("place", "--type", "sd.lora", str(final)).exit_code == 0
    assert (comfy / "models" / "loras" / final.name).is_symlink()


def test_place_dry_run_creates_nothing_not_even_the_state_db(mf: Modfetch, tmp_path: Path) -> None:
    """``--dry-run`` changes nothing: no app folders, no Modelfile and no state DB."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    mf.write_config(placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)},
                                        "ollama": {"preset": "ollama"}}})
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _gguf_str("general.architecture")
                     + struct.pack("<I", 8) + _gguf_str("llama") + b"\0" * 32)
    lora = _safetensors(tmp_path / "my.safetensors", b'{"lora_unet_a.lora_down.weight":{}}')
    proc = mf.run("place", "--dry-run", str(gguf), str(lora))
    assert proc.returncode == 0 and "would-place" in proc.stdout, proc.stderr
    assert not mf.state_db.exists()
    assert list(comfy.iterdir()) == [] and not (tmp_path / "tiny.Modelfile").exists()
