"""The placement service and CLI on real files: every preset's folders, LM Studio's two-level layout, the HF
cache checked with the real huggingface_hub client offline, the Ollama Modelfile, mapping rules, DB records,
``modfetch place`` / ``modfetch type`` / ``status``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modfetch.app.place import PlaceOptions, place_download, place_file
from modfetch.config import Config, load_config
from modfetch.engine.download import DownloadResult
from modfetch.errors import ConfigError, UsageError
from modfetch.placement.presets import hf_cache_dir, lmstudio_models_dir
from modfetch.state import COMPLETE, open_state
from tests.conftest import Modfetch, assert_clean_error
from tests.helpers import MANY, write_gguf, write_lora, write_safetensors

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Apps:
    """Fake app installs under tmp_path plus the config that points at them."""

    def __init__(self, mf: Modfetch, tmp_path: Path) -> None:
        self.mf = mf
        self.comfy = tmp_path / "ComfyUI"
        self.a1111 = tmp_path / "stable-diffusion-webui"
        self.lms = tmp_path / "lmstudio" / "models"
        self.hub = tmp_path / "hub"
        self.comfy.mkdir()
        self.a1111.mkdir()
        self.data_root = mf.home / ".local" / "share" / "modfetch"

    def configure(self, apps: dict[str, Any] | None = None, **placement: Any) -> Config:
        if apps is None:
            apps = {"comfyui": {"preset": "comfyui", "base": str(self.comfy)},
                    "a1111": {"preset": "a1111", "base": str(self.a1111)},
                    "lmstudio": {"preset": "lmstudio", "base": str(self.lms)},
                    "hf-cache": {"preset": "hf-cache", "base": str(self.hub)},
                    "ollama": {"preset": "ollama"}}
        self.mf.write_config(general={"download_root": str(self.mf.dest), "data_root": str(self.data_root)},
                             placement={"apps": apps, **placement})
        return load_config(str(self.mf.config_path))


@pytest.fixture
def apps(mf: Modfetch, tmp_path: Path) -> Apps:
    return Apps(mf, tmp_path)


def _lora(tmp_path: Path) -> Path:
    return write_lora(tmp_path / "dl" / "detail_tweaker.safetensors")


def _register(config: Config, path: Path, meta: dict[str, Any],
              artifact_type: str | None = None) -> DownloadResult:
    """Record ``path`` as a finished download with source hints, as the engine does."""
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    st = path.stat()
    with open_state(config.state_db) as db:
        row = db.create_download("https://example.invalid/" + path.name, str(path), size=st.st_size,
                                 sha256=sha, status=COMPLETE, artifact_type=artifact_type,
                                 meta={**meta, "stat": [st.st_size, st.st_mtime_ns, st.st_ino]})
    return DownloadResult(row.id, path, sha, st.st_size)


@pytest.mark.parametrize(("tensors", "comfy_folder", "a1111_folder"), [
    (["lora_unet_a.lora_down.weight"], "models/loras", "models/Lora"),
    ([f"model.diffusion_model.x{i}" for i in range(12)] + ["first_stage_model.y"], "models/checkpoints",
     "models/Stable-diffusion"),
    (["encoder.conv_in.weight", "decoder.conv_in.weight"] + [f"decoder.m{i}" for i in range(10)],
     "models/vae", "models/VAE"),
    (["emb_params"], "models/embeddings", "embeddings"),
    (["control_model.zero_convs.0", *MANY], "models/controlnet", "models/ControlNet"),
    (["conv_first.weight", *MANY], "models/upscale_models", "models/ESRGAN"),
    ([f"text_model.encoder.layers.{i}.w" for i in range(12)], "models/text_encoders", "models/text_encoder"),
    ([f"double_blocks.{i}.w" for i in range(12)], "models/diffusion_models", None),
])
def test_sd_presets_folders(apps: Apps, tmp_path: Path, tensors: list[str], comfy_folder: str,
                            a1111_folder: str | None) -> None:
    config = apps.configure()
    path = write_safetensors(tmp_path / "dl" / "thing.safetensors", tensors)
    report = place_file(config, path, PlaceOptions())
    placed = {o.app: o.target for o in report.outcomes}
    assert placed["comfyui"] == apps.comfy / comfy_folder / "thing.safetensors"
    assert (apps.comfy / comfy_folder / "thing.safetensors").resolve() == path.resolve()
    if a1111_folder:
        assert placed["a1111"] == apps.a1111 / a1111_folder / "thing.safetensors"
        assert os.readlink(placed["a1111"]) == str(path.resolve())
    else:
        assert "a1111" not in placed
    assert {"lmstudio", "ollama", "hf-cache"}.isdisjoint(placed)  # skipped quietly
    assert not report.failed and not report.notes


def test_hypernetwork_goes_to_both_sd_apps(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure()
    path = tmp_path / "dl" / "cute_hypernetwork.pt"
    path.parent.mkdir()
    path.write_bytes(b"pickle bytes never opened")
    report = place_file(config, path, PlaceOptions())
    assert {o.target for o in report.outcomes} == {apps.comfy / "models/hypernetworks" / path.name,
                                                  apps.a1111 / "models/hypernetworks" / path.name}


def test_civitai_lora_lands_in_comfyui_and_a1111_as_links(apps: Apps, tmp_path: Path) -> None:
    """Done means: a CivitAI LoRA with --place appears in ComfyUI models/loras and A1111 models/Lora."""
    config = apps.configure()
    path = write_safetensors(tmp_path / "dl" / "add_detail.safetensors", MANY)  # content alone says nothing
    hints = {"civitai_type": "LORA", "creator": "someone", "model_name": "Add Detail"}
    result = _register(config, path, hints)
    report = place_download(config, result, PlaceOptions())
    assert report.detection.type == "sd.lora" and report.detection.source == "hint"
    for link in (apps.comfy / "models/loras/add_detail.safetensors",
                 apps.a1111 / "models/Lora/add_detail.safetensors"):
        assert link.is_symlink() and os.readlink(link) == str(path.resolve())
        assert link.read_bytes() == path.read_bytes()
    with open_state(config.state_db) as db:
        rows = db.placements(download_id=result.download_id)
    assert {(r.app, r.mode, r.artifact_type) for r in rows} == {("comfyui", "symlink", "sd.lora"),
                                                               ("a1111", "symlink", "sd.lora")}
    again = place_download(config, result, PlaceOptions())
    assert {o.action for o in again.outcomes} == {"skipped"}


def test_gguf_lmstudio_two_levels_and_ollama_modelfile(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure()
    path = write_gguf(tmp_path / "dl" / "Qwen2-0.5B-Instruct-Q4_K_M.gguf", {"general.architecture": "qwen2"})
    result = _register(config, path, {"repo_id": "Qwen/Qwen2-0.5B-Instruct-GGUF", "commit": COMMIT})
    report = place_download(config, result, PlaceOptions())
    by_app = {o.app: o for o in report.outcomes}
    lms = apps.lms / "Qwen" / "Qwen2-0.5B-Instruct-GGUF" / path.name
    assert by_app["lmstudio"].target == lms and lms.is_symlink()
    assert lms.relative_to(apps.lms).parts[:-1] == ("Qwen", "Qwen2-0.5B-Instruct-GGUF")  # exactly two levels
    modelfile = path.parent / "Qwen2-0.5B-Instruct-Q4_K_M.Modelfile"
    assert by_app["ollama"].target == modelfile
    assert modelfile.read_text() == f"FROM {path.resolve()}\n"
    expected = ["ollama", "create", "qwen2-0.5b-instruct-q4_k_m", "-f", str(modelfile)]
    assert by_app["ollama"].command == expected
    assert "ollama create" in by_app["ollama"].message
    ollama_home = apps.mf.home / ".ollama"
    assert not ollama_home.exists()  # Ollama's own store (blobs/) is never touched
    assert "comfyui" not in by_app and "a1111" not in by_app


def test_ollama_dry_run_tells_what_the_real_run_would_do(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure(apps={"ollama": {"preset": "ollama"}})
    gguf = write_gguf(tmp_path / "dl" / "tiny.gguf", {"general.architecture": "llama"})
    modelfile = gguf.parent / "tiny.Modelfile"
    modelfile.write_text("FROM /somewhere/else.gguf\n")
    (dry,) = place_file(config, gguf, PlaceOptions(dry_run=True)).outcomes
    assert "different file is there (needs --force)" in dry.message
    (real,) = place_file(config, gguf, PlaceOptions()).outcomes
    assert not real.ok and modelfile.read_text() == "FROM /somewhere/else.gguf\n"  # kept without --force
    place_file(config, gguf, PlaceOptions(force=True))
    (dry,) = place_file(config, gguf, PlaceOptions(dry_run=True)).outcomes
    assert dry.message == "already in place"


def test_lmstudio_names_from_civitai_and_local(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure(apps={"lms": {"preset": "lmstudio", "base": str(apps.lms)}})
    gguf = write_gguf(tmp_path / "dl" / "tiny.gguf", {"general.architecture": "llama"})
    report = place_file(config, gguf, PlaceOptions(), hints={"creator": "bob", "model_name": "Tiny Llama"})
    assert report.outcomes[0].target == apps.lms / "bob" / "Tiny Llama" / "tiny.gguf"
    report = place_file(config, gguf, PlaceOptions())
    assert report.outcomes[0].target == apps.lms / "local" / "tiny" / "tiny.gguf"


def test_ollama_create_runs_only_with_flag_and_binary(apps: Apps, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = apps.configure(apps={"ollama": {"preset": "ollama"}})
    gguf = write_gguf(tmp_path / "dl" / "tiny.gguf", {"general.architecture": "llama"})
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    report = place_file(config, gguf, PlaceOptions(ollama_create=True))
    assert report.outcomes[0].ok and "not on PATH" in report.outcomes[0].message
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ollama-args.txt"
    fake = bindir / "ollama"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {log}\necho success\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    place_file(config, gguf, PlaceOptions())
    assert not log.exists()
    report = place_file(config, gguf, PlaceOptions(ollama_create=True))
    assert "succeeded" in report.outcomes[0].message
    assert log.read_text().split() == ["create", "tiny", "-f", str(gguf.parent / "tiny.Modelfile")]


def _hf_download_offline(hub: Path, repo: str, filename: str, revision: str | None) -> str:
    """Run the real huggingface_hub client offline in a fresh process (it reads HF_* env at import)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "HF_HUB_DISABLE_TELEMETRY": "1"}
    code = ("import sys; from huggingface_hub import hf_hub_download; "
            "print(hf_hub_download(sys.argv[1], sys.argv[2], revision=sys.argv[3] or None))")
    proc = subprocess.run([sys.executable, "-c", code, repo, filename, revision or ""], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_hf_cache_found_by_huggingface_hub_offline(apps: Apps, tmp_path: Path, mode: str) -> None:
    """Done means: an hf:// file placed into the HF cache is returned by hf_hub_download offline."""
    config = apps.configure(apps={"hf": {"preset": "hf-cache", "base": str(apps.hub)}}, mode=mode)
    lfs = write_safetensors(tmp_path / "dl" / "model.safetensors", MANY)
    sha = hashlib.sha256(lfs.read_bytes()).hexdigest()
    meta = {"repo_id": "acme/tiny-model", "repo_type": "model", "revision": "main", "commit": COMMIT,
            "etag": sha, "path_in_repo": "unet/model.safetensors", "lfs": True}
    report = place_download(config, _register(config, lfs, meta), PlaceOptions())
    assert not report.failed, report
    regular = tmp_path / "dl" / "config.json"
    regular.write_bytes(b'{"hidden_size": 8}\n')
    git_sha1 = hashlib.sha1(b"blob %d\0" % regular.stat().st_size + regular.read_bytes()).hexdigest()
    meta2 = {**meta, "etag": git_sha1, "path_in_repo": "config.json", "lfs": False}
    regular_result = _register(config, regular, meta2)
    place_download(config, regular_result, PlaceOptions())

    repo_dir = apps.hub / "models--acme--tiny-model"
    snapshot = repo_dir / "snapshots" / COMMIT / "unet" / "model.safetensors"
    assert os.readlink(snapshot) == f"../../../blobs/{sha}"  # relative, one more ../ per subfolder
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    assert (repo_dir / "blobs" / sha).read_bytes() == lfs.read_bytes()
    for revision in ("main", COMMIT, None):
        found = _hf_download_offline(apps.hub, "acme/tiny-model", "unet/model.safetensors", revision)
        assert Path(found).read_bytes() == lfs.read_bytes()
    found = _hf_download_offline(apps.hub, "acme/tiny-model", "config.json", "main")
    assert Path(found).read_bytes() == regular.read_bytes()
    again = place_download(config, regular_result, PlaceOptions())
    assert again.outcomes[0].action == "skipped"


def test_hf_cache_refuses_a_file_that_does_not_match_the_etag(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure(apps={"hf": {"preset": "hf-cache", "base": str(apps.hub)}})
    path = write_safetensors(tmp_path / "dl" / "model.safetensors", MANY)
    hints = {"repo_id": "acme/x", "commit": COMMIT, "etag": "f" * 64, "path_in_repo": "model.safetensors"}
    report = place_file(config, path, PlaceOptions(), hints=hints)
    assert report.failed and "ETag" in report.failed[0].message
    assert not (apps.hub / "models--acme--x" / "blobs").exists() or not any(
        (apps.hub / "models--acme--x" / "blobs").iterdir())


def test_hf_cache_skips_files_not_from_the_hub(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure(apps={"hf": {"preset": "hf-cache", "base": str(apps.hub)}})
    report = place_file(config, _lora(tmp_path), PlaceOptions(dry_run=True))
    assert not report.outcomes and "no configured app takes sd.lora" in report.notes[0]
    assert "repo id" in report.skipped[0][1]


def test_default_bases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    env = {"HOME": str(home)}
    assert lmstudio_models_dir(env) == home / ".lmstudio" / "models"
    (home / ".cache" / "lm-studio").mkdir(parents=True)
    assert lmstudio_models_dir(env) == home / ".cache" / "lm-studio" / "models"
    (home / ".lmstudio-home-pointer").write_text(str(tmp_path / "custom") + "\n")
    assert lmstudio_models_dir(env) == tmp_path / "custom" / "models"
    assert hf_cache_dir(env) == home / ".cache" / "huggingface" / "hub"
    assert hf_cache_dir({**env, "HF_HOME": str(tmp_path / "hf")}) == tmp_path / "hf" / "hub"
    assert hf_cache_dir({**env, "HF_HOME": "/x", "HF_HUB_CACHE": str(tmp_path / "c")}) == tmp_path / "c"


def test_mapping_overrides_and_extends(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure(mapping=[{"type": "sd.lora", "targets": ["a1111:Lora", "a1111:LyCORIS"]},
                                     {"type": "generic", "targets": ["comfyui:models/misc"]}])
    report = place_file(config, _lora(tmp_path), PlaceOptions())
    assert {o.target.parent for o in report.outcomes} == {
        apps.comfy / "models/loras", apps.a1111 / "models/Lora", apps.a1111 / "models/LyCORIS"}
    other = tmp_path / "dl" / "notes.txt"
    other.write_text("x")
    assert [o.target for o in place_file(config, other, PlaceOptions()).outcomes] == [
        apps.comfy / "models/misc/notes.txt"]


@pytest.mark.parametrize(("rule", "needle"), [
    ({"type": "sd.nope", "targets": ["comfyui:loras"]}, "mapping[0].type"),
    ({"type": "sd.lora", "targets": ["invoke:loras"]}, "not configured"),
    ({"type": "sd.lora", "targets": ["comfyui"]}, "app:folder"),
    ({"type": "sd.lora", "targets": ["comfyui:../../etc"]}, "relative"),
    ({"type": "sd.lora", "targets": ["lmstudio:x"]}, "fixed layout"),
])
def test_bad_mapping_is_a_config_error(apps: Apps, tmp_path: Path, rule: dict[str, Any], needle: str) -> None:
    config = apps.configure(mapping=[rule])
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        place_file(config, _lora(tmp_path), PlaceOptions())


def test_no_apps_configured_is_a_clear_error(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure(apps={})
    with pytest.raises(UsageError, match="no apps configured") as info:
        place_file(config, _lora(tmp_path), PlaceOptions())
    assert "placement:" in (info.value.hint or "")
    result = apps.mf.cli("place", str(_lora(tmp_path)))
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "no apps configured")
    assert "comfyui: {preset: comfyui" in result.stderr
    # The snippet must survive the terminal-safety filter as lines that paste into the config as YAML.
    snippet = result.stderr.split("e.g.\n", 1)[1].split("  see docs", 1)[0]
    assert yaml.safe_load(snippet)["placement"]["apps"]["comfyui"] == {"preset": "comfyui", "base": "~/ComfyUI"}


def test_missing_app_base_fails_that_target_only(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure(apps={"comfyui": {"preset": "comfyui", "base": str(tmp_path / "NoComfy")},
                                  "a1111": {"preset": "a1111", "base": str(apps.a1111)}})
    report = place_file(config, _lora(tmp_path), PlaceOptions())
    by_app = {o.app: o for o in report.outcomes}
    assert not by_app["comfyui"].ok and "does not exist" in by_app["comfyui"].message
    assert not (tmp_path / "NoComfy").exists()
    assert by_app["a1111"].ok and (apps.a1111 / "models/Lora").is_dir()


def test_type_no_app_takes_is_reported_not_an_error(apps: Apps, tmp_path: Path) -> None:
    apps.configure(apps={"lmstudio": {"preset": "lmstudio", "base": str(apps.lms)}})
    result = apps.mf.cli("place", str(_lora(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "no configured app takes sd.lora" in result.stdout


def test_cli_place_dry_run_force_and_modes(apps: Apps, tmp_path: Path) -> None:
    apps.configure()
    lora = _lora(tmp_path)
    result = apps.mf.cli("place", "--dry-run", str(lora))
    assert result.exit_code == 0, result.output
    assert "sd.lora (content: LoRA tensor names" in result.stdout
    assert "would-place" in result.stdout and "lmstudio" in result.stdout  # skipped apps listed with why
    assert not (apps.comfy / "models").exists()

    (apps.comfy / "models/loras").mkdir(parents=True)
    (apps.comfy / "models/loras" / lora.name).write_bytes(b"someone else's file")
    result = apps.mf.cli("place", "--mode", "hardlink", str(lora))
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "placement(s) failed")
    assert (apps.a1111 / "models/Lora" / lora.name).stat().st_ino == lora.stat().st_ino
    result = apps.mf.cli("place", "--force", "--app", "comfyui", "--json", str(lora))
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["type"] == "sd.lora" and [t["action"] for t in line["targets"]] == ["replaced"]
    result = apps.mf.cli("place", "--type", "sd.vae", "--app", "a1111", str(lora))
    assert (apps.a1111 / "models/VAE" / lora.name).is_symlink(), result.output
    result = apps.mf.cli("place", "--app", "invokeai", str(lora))
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "invokeai", "not configured")


def test_cli_type_command(apps: Apps, tmp_path: Path) -> None:
    apps.configure()
    gguf = write_gguf(tmp_path / "m.gguf", {"general.architecture": "llama"})
    result = apps.mf.cli("type", str(gguf), str(_lora(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "llm.gguf" in result.stdout and "general.architecture=llama" in result.stdout
    assert "sd.lora" in result.stdout and "why: content:" in result.stdout
    result = apps.mf.cli("type", "--json", str(gguf))
    assert json.loads(result.stdout)["type"] == "llm.gguf"
    assert "sd.checkpoint" in apps.mf.cli("type", "--list").stdout


def test_place_reuses_recorded_hints_and_status_shows_placements(apps: Apps, tmp_path: Path) -> None:
    config = apps.configure()
    lora = write_safetensors(tmp_path / "dl" / "x.safetensors", MANY)
    _register(config, lora, {"civitai_type": "LoCon"})
    result = apps.mf.cli("place", str(lora))
    assert result.exit_code == 0, result.output
    assert "CivitAI model type 'LoCon'" in result.stdout
    rows = apps.mf.status()
    assert {p["app"] for p in rows[0]["placements"]} == {"comfyui", "a1111"}
    table = apps.mf.cli("status")
    assert "comfyui" in table.stdout and "models/loras/x.safetensors" in table.stdout
