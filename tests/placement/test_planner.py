"""The placement planner (modfetch/placement/planner.py): pure path computation, so every rule is a table row.
No file is touched; ``AppSpec``s are built from the real presets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modfetch.artifacts import vocabulary as v
from modfetch.config import MappingRule
from modfetch.errors import ConfigError
from modfetch.placement.planner import (
    AppSpec,
    hf_cache_entry,
    lmstudio_names,
    ollama_model_name,
    plan,
    split_gguf_name,
    validate_mapping,
)
from modfetch.placement.presets import PRESETS

BASE = Path("/apps")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ETAG = "a" * 64
HF_HINTS = {"repo_id": "org/repo", "commit": COMMIT, "etag": f'"{ETAG}"', "revision": "main",
            "path_in_repo": "sub/model.safetensors"}


def app(name: str, preset: str | None = None) -> AppSpec:
    return AppSpec(name, PRESETS[preset or name], BASE / name)


ALL = [app("comfyui"), app("a1111"), app("lmstudio"), app("hf-cache"), app("ollama")]


def targets(result: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in result.targets:
        out.setdefault(t.app, []).append(str(t.target))
    return out


@pytest.mark.parametrize(("source", "kind", "hints", "expected"), [
    ("/dl/x.safetensors", v.SD_LORA, {}, {"comfyui": ["/apps/comfyui/models/loras/x.safetensors"],
                                          "a1111": ["/apps/a1111/models/Lora/x.safetensors"]}),
    ("/dl/e.pt", v.SD_EMBEDDING, {}, {"comfyui": ["/apps/comfyui/models/embeddings/e.pt"],
                                      "a1111": ["/apps/a1111/embeddings/e.pt"]}),  # A1111: not under models/
    ("/dl/f.gguf", v.SD_DIFFUSION_MODEL, {}, {"comfyui": ["/apps/comfyui/models/diffusion_models/f.gguf"]}),
    ("/dl/m.gguf", v.LLM_GGUF, {"repo_id": "TheOrg/Some-Model-GGUF"},
     {"lmstudio": ["/apps/lmstudio/TheOrg/Some-Model-GGUF/m.gguf"], "ollama": ["/dl/m.Modelfile"]}),
    ("/dl/m-00001-of-00002.gguf", v.LLM_GGUF, {},
     {"lmstudio": ["/apps/lmstudio/local/m/m-00001-of-00002.gguf"]}),  # Ollama cannot import split GGUFs
    ("/dl/model.safetensors", v.HF_FILE, HF_HINTS,
     {"hf-cache": [f"/apps/hf-cache/models--org--repo/snapshots/{COMMIT}/sub/model.safetensors"]}),
])
def test_plan_targets_per_app(source: str, kind: str, hints: dict[str, Any], expected: dict[str, list[str]]) -> None:
    assert targets(plan(Path(source), kind, hints, ALL)) == expected


@pytest.mark.parametrize(("source", "kind", "app_name", "why"), [
    ("/dl/x.gguf", v.SD_LORA, "a1111", "does not load .gguf files as sd.lora"),
    ("/dl/x", v.SD_LORA, "comfyui", "does not load extension-less files"),
    ("/dl/x.safetensors", v.GENERIC, "comfyui", "has no folder for generic"),
    ("/dl/x.safetensors", v.SD_LORA, "lmstudio", "LM Studio takes GGUF LLMs"),
    ("/dl/x.safetensors", v.SD_LORA, "ollama", "Ollama imports GGUF language models"),
    ("/dl/x-00001-of-00003.gguf", v.LLM_GGUF, "ollama", "split GGUF"),
    ("/dl/x.safetensors", v.SD_LORA, "hf-cache", "not an hf:// download"),
])
def test_apps_that_do_not_take_a_file_are_skipped_with_the_reason(source: str, kind: str, app_name: str,
                                                                  why: str) -> None:
    result = plan(Path(source), kind, {}, ALL)
    reasons = dict(result.skipped)
    assert app_name in reasons and why in reasons[app_name]
    assert app_name not in targets(result)


def test_nothing_placed_is_a_note_naming_the_apps() -> None:
    result = plan(Path("/dl/x.bin"), v.GENERIC, {}, [app("comfyui"), app("a1111")])
    assert result.targets == [] and result.notes == [
        "no configured app takes generic (comfyui, a1111 configured); nothing placed"]


def test_mapping_rules_replace_the_preset_folders_and_repeat_once() -> None:
    rules = [MappingRule(v.SD_LORA, ["comfyui:loras", "comfyui:custom/lycoris", "comfyui:loras"]),
             MappingRule(v.SD_VAE, ["a1111:VAE"])]
    result = plan(Path("/dl/x.gguf"), v.SD_LORA, {}, [app("comfyui"), app("a1111")], rules)
    assert targets(result) == {"comfyui": ["/apps/comfyui/models/loras/x.gguf",
                                           "/apps/comfyui/custom/lycoris/x.gguf"]}  # mapping ignores extensions


@pytest.mark.parametrize(("rule", "message"), [
    (MappingRule("sd.nonsense", ["comfyui:loras"]), "unknown artifact type"),
    (MappingRule(v.SD_LORA, ["comfyui"]), "must look like app:folder"),
    (MappingRule(v.SD_LORA, ["comfyui:"]), "must look like app:folder"),
    (MappingRule(v.SD_LORA, ["nope:loras"]), "app 'nope' is not configured"),
    (MappingRule(v.LLM_GGUF, ["lmstudio:x"]), "has a fixed layout"),
    (MappingRule(v.SD_LORA, ["comfyui:../escape"]), "relative to the app's base"),
    (MappingRule(v.SD_LORA, ["comfyui:/abs"]), "relative to the app's base"),
])
def test_invalid_mapping_rules_name_the_rule(rule: MappingRule, message: str) -> None:
    apps = {a.name: a for a in ALL}
    with pytest.raises(ConfigError, match=r"placement\.mapping(\[0\]|:)") as caught:
        validate_mapping([rule], apps)
    assert message in str(caught.value)


def test_valid_mapping_passes() -> None:
    validate_mapping([MappingRule(v.SD_LORA, ["comfyui:loras", "a1111:LyCORIS"])], {a.name: a for a in ALL})


@pytest.mark.parametrize(("name", "hints", "expected"), [
    ("m.gguf", {"repo_id": "org/repo"}, ("org", "repo")),
    ("m.gguf", {"creator": "alice", "model_name": "My/Model"}, ("alice", "My-Model")),
    ("m-00002-of-00003.gguf", {}, ("local", "m")),
    ("m.gguf", {"repo_id": "noslash"}, ("local", "m")),
])
def test_lmstudio_names(name: str, hints: dict[str, str], expected: tuple[str, str]) -> None:
    assert lmstudio_names(Path("/dl") / name, hints) == expected


@pytest.mark.parametrize(("name", "split", "ollama"), [
    ("Llama-3-8B.Q4_K_M.gguf", "Llama-3-8B.Q4_K_M", "llama-3-8b.q4_k_m"),
    ("big-00001-of-00004.gguf", "big", "big-00001-of-00004"),
    ("big-1-of-4.gguf", "big-1-of-4", "big-1-of-4"),  # not llama.cpp's shard pattern
    ("Ünïcode Model!.gguf", "Ünïcode Model!", "n-code-model"),
    ("___.gguf", "___", "model"),
])
def test_split_and_ollama_names(name: str, split: str, ollama: str) -> None:
    assert split_gguf_name(Path(name)) == split
    assert ollama_model_name(Path(name), {}) == ollama


@pytest.mark.parametrize(("hints", "why"), [
    ({**HF_HINTS, "repo_id": ""}, "no repo id"),
    ({**HF_HINTS, "commit": "main"}, "no commit hash"),
    ({**HF_HINTS, "etag": "nothex"}, "no usable ETag"),
    ({**HF_HINTS, "repo_type": "weird"}, "unsupported repo"),
    ({**HF_HINTS, "repo_id": "../x"}, "unsupported repo"),
    ({**HF_HINTS, "revision": "../../etc"}, "unsafe revision name"),
])
def test_hf_cache_entry_refuses_what_it_cannot_name_safely(hints: dict[str, str], why: str) -> None:
    entry, reason = hf_cache_entry(BASE, hints, "model.safetensors")
    assert entry is None and why in reason


@pytest.mark.parametrize(("revision", "ref"), [("main", "refs/main"), ("v1/beta", "refs/v1/beta"),
                                               (COMMIT, None)])
def test_hf_cache_entry_layout(revision: str, ref: str | None) -> None:
    entry, reason = hf_cache_entry(BASE, {**HF_HINTS, "etag": f'W/"{ETAG.upper()}"', "revision": revision,
                                          "repo_type": "dataset"}, "model.safetensors")
    assert entry is not None and reason == ""
    repo = BASE / "datasets--org--repo"
    assert (entry.repo_dir, entry.blob, entry.etag) == (repo, repo / "blobs" / ETAG, ETAG)
    assert entry.snapshot == repo / "snapshots" / COMMIT / "sub" / "model.safetensors"
    assert entry.ref == (repo / ref if ref else None)
