"""End to end through the real resolvers and the CivitAI / Hub look-alike servers: ``download --place``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Modfetch
from tests.servers.lookalike import civitai, hub


@pytest.fixture
def civ() -> Iterator[Any]:
    with civitai.CivitaiLookalike() as server:
        yield server


@pytest.fixture
def hf() -> Iterator[Any]:
    with hub.HubLookalike() as server:
        yield server


def _configure(mf: Modfetch, tmp_path: Path, apps: dict[str, Any], **sources: Any) -> None:
    general = {"download_root": str(mf.dest), "data_root": str(mf.home / ".local/share/modfetch")}
    mf.write_config(general=general, sources=sources, placement={"apps": apps})


def test_civitai_lora_with_place_links_into_comfyui_and_a1111(
        mf: Modfetch, tmp_path: Path, civ: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    comfy, a1111 = tmp_path / "ComfyUI", tmp_path / "stable-diffusion-webui"
    comfy.mkdir()
    a1111.mkdir()
    _configure(mf, tmp_path, {"comfyui": {"preset": "comfyui", "base": str(comfy)},
                              "a1111": {"preset": "a1111", "base": str(a1111)}},
               civitai={"endpoint": civ.url})
    monkeypatch.setenv("CIVITAI_TOKEN", civitai.GOOD_TOKEN)
    result = mf.cli("download", "--quiet", "--dest", str(mf.dest), "civitai://model/5500", "--place")
    assert result.exit_code == 0, result.output
    final = mf.dest / "detail_tweaker.safetensors"
    for link in (comfy / "models/loras" / final.name, a1111 / "models/Lora" / final.name):
        assert link.is_symlink() and os.readlink(link) == str(final)
    row = mf.status()[0]
    assert {p["app"] for p in row["placements"]} == {"comfyui", "a1111"}
    typed = mf.cli("type", str(final))
    assert "sd.lora" in typed.stdout and "CivitAI model type 'LORA'" in typed.stdout


def test_hf_file_with_place_is_found_offline_by_huggingface_hub(mf: Modfetch, tmp_path: Path,
                                                                 hf: Any) -> None:
    cache = tmp_path / "hub-cache"
    _configure(mf, tmp_path, {"hf-cache": {"preset": "hf-cache", "base": str(cache)}},
               huggingface={"endpoint": hf.url})
    result = mf.cli("download", "--quiet", "--dest", str(mf.dest), "--place",
                    "hf://acme/tiny-model/weights/model.safetensors")
    assert result.exit_code == 0, result.output
    downloaded = next(mf.dest.rglob("model.safetensors"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    code = ("from huggingface_hub import hf_hub_download; "
            "print(hf_hub_download('acme/tiny-model', 'weights/model.safetensors'))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip().splitlines()[-1]).read_bytes() == downloaded.read_bytes()
