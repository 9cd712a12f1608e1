"""Which targets a file goes to: pure path computation from the detected type, hints and configured apps.

Nothing here touches the file system; ``app/place.py`` resolves bases and hands in ``AppSpec``s, and the
linker / hf_cache / ollama modules carry the plan out.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import vocabulary as v
from ..config import MappingRule
from ..errors import ConfigError
from ..util.filenames import sanitize_filename, sanitize_relpath
from .presets import FOLDERS, HF_CACHE, LMSTUDIO, OLLAMA, Preset

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# llama.cpp's gguf-split names shards ``<name>-00001-of-00003.gguf`` and finds the others beside the first.
_SPLIT_GGUF = re.compile(r"^(?P<name>.+)-\d{5}-of-\d{5}$")


@dataclass(frozen=True)
class AppSpec:
    """A configured app: its name in the config, its preset and its (expanded) base folder."""

    name: str
    preset: Preset
    base: Path


@dataclass(frozen=True)
class HfCacheEntry:
    """Where an hf:// file lives inside the cache."""

    repo_dir: Path
    blob: Path
    snapshot: Path
    ref: Path | None
    commit: str
    etag: str
    tree: Path | None = None  # the repo's saved file listing (whole-repo downloads), for trees/<commit>.json


@dataclass(frozen=True)
class PlannedTarget:
    """One place a file should appear: ``target`` is the link/copy path (the snapshot path for the HF cache,
    the Modelfile for Ollama)."""

    app: str
    kind: str
    target: Path
    hf: HfCacheEntry | None = None
    ollama_model: str | None = None


@dataclass
class Plan:
    """Targets, apps skipped quietly (with the reason, shown by --dry-run) and notes worth reporting."""

    targets: list[PlannedTarget] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def validate_mapping(rules: Sequence[MappingRule], apps: Mapping[str, AppSpec]) -> None:
    """ConfigError naming the rule for unknown types, unknown apps or malformed ``app:folder`` targets."""
    for i, rule in enumerate(rules):
        where = f"placement.mapping[{i}]"
        if rule.type not in v.TYPES:
            raise ConfigError(f"{where}.type: unknown artifact type {rule.type!r}",
                              hint=f"known types: {', '.join(v.TYPES)}")
        for target in rule.targets:
            app, sep, folder = target.partition(":")
            if not sep or not folder:
                raise ConfigError(f"{where}.targets: {target!r} must look like app:folder")
            if app not in apps:
                raise ConfigError(f"{where}.targets: app {app!r} is not configured under placement.apps")
            if apps[app].preset.kind != FOLDERS:
                raise ConfigError(f"{where}.targets: {app} ({apps[app].preset.name}) has a fixed layout; "
                                  "mapping applies to folder apps (comfyui, a1111)")
            apps[app].preset.resolve_alias(folder)


def plan(source: Path, artifact_type: str, hints: Mapping[str, Any], apps: Sequence[AppSpec],
         rules: Sequence[MappingRule] = ()) -> Plan:
    """The placement plan for ``source`` of ``artifact_type`` across ``apps``."""
    result = Plan()
    file_type = str(hints.get("file_type") or "")  # CivitAI files[].type
    if file_type and v.civitai_not_model(file_type):
        # A model's config, training data or archive is kept in the download folder, never put where an app
        # would try to load it as a model (whatever --type or a mapping rule says).
        result.notes.append(f"CivitAI file type {file_type!r} is not a model; downloaded, not placed")
        return result
    mapped: dict[str, list[str]] = {}
    for rule in rules:
        if rule.type == artifact_type:
            for target in rule.targets:
                app_name, _, folder = target.partition(":")
                mapped.setdefault(app_name, []).append(folder)
    suffix = source.suffix.lower()
    for app in apps:
        kind = app.preset.kind
        if kind == FOLDERS:
            folders = ([app.preset.resolve_alias(f) for f in mapped[app.name]] if app.name in mapped
                       else [f for f in [app.preset.folder_for(artifact_type)] if f is not None])
            if not folders:
                result.skipped.append((app.name, f"{app.preset.name} has no folder for {artifact_type}"))
                continue
            if app.name not in mapped and not app.preset.accepts_extension(artifact_type, suffix):
                ext = suffix or "extension-less"
                why = f"{app.preset.name} does not load {ext} files as {artifact_type}"
                result.skipped.append((app.name, why))
                continue
            for folder in dict.fromkeys(folders):
                result.targets.append(PlannedTarget(app.name, kind, app.base / folder / source.name))
        elif kind == LMSTUDIO:
            if artifact_type != v.LLM_GGUF or suffix != ".gguf":
                result.skipped.append((app.name, f"LM Studio takes GGUF LLMs, not {artifact_type}"))
                continue
            publisher, repo = lmstudio_names(source, hints)
            result.targets.append(PlannedTarget(app.name, kind, app.base / publisher / repo / source.name))
        elif kind == HF_CACHE:
            entry, why = hf_cache_entry(app.base, hints, source.name)
            if entry is None:
                result.skipped.append((app.name, why))
                continue
            result.targets.append(PlannedTarget(app.name, kind, entry.snapshot, hf=entry))
        elif kind == OLLAMA:
            if artifact_type != v.LLM_GGUF or suffix != ".gguf":
                result.skipped.append((app.name, f"Ollama imports GGUF language models, not {artifact_type}"))
                continue
            if _SPLIT_GGUF.match(source.stem):
                result.skipped.append((app.name, "Ollama cannot import a split GGUF (ollama/ollama#5245); merge "
                                                 "the shards with llama-gguf-split --merge and place that file"))
                continue
            result.targets.append(PlannedTarget(app.name, kind, source.parent / f"{source.stem}.Modelfile",
                                                ollama_model=ollama_model_name(source, hints)))
    if not result.targets:
        result.notes.append(f"no configured app takes {artifact_type} ({', '.join(a.name for a in apps)} "
                            "configured); nothing placed")
    return result


def lmstudio_names(source: Path, hints: Mapping[str, Any]) -> tuple[str, str]:
    """LM Studio's publisher/repo folders: the HF repo id, else CivitAI creator/model, else local/<stem>."""
    repo_id = str(hints.get("repo_id") or "")
    if "/" in repo_id:
        publisher, repo = repo_id.split("/", 1)
    else:
        publisher = str(hints.get("creator") or "") or "local"
        repo = str(hints.get("model_name") or "") or split_gguf_name(source)
    repo = sanitize_filename(repo.replace("/", "-"), split_gguf_name(source) or "model")
    return sanitize_filename(publisher, "local"), repo


def split_gguf_name(source: Path) -> str:
    """The file stem without a split GGUF's ``-00001-of-00003`` (all shards must share one folder)."""
    match = _SPLIT_GGUF.match(source.stem)
    return match.group("name") if match else source.stem


def ollama_model_name(source: Path, hints: Mapping[str, Any]) -> str:
    """A valid Ollama model name from the file stem: lower case, ``[a-z0-9._-]``."""
    name = re.sub(r"[^a-z0-9._-]+", "-", source.stem.lower()).strip("-._")
    return name or "model"


def _clean_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"').lower()


def hf_cache_entry(cache: Path, hints: Mapping[str, Any], filename: str) -> tuple[HfCacheEntry | None, str]:
    """The cache paths for an hf:// file from its hints, or (None, why it cannot go to the cache)."""
    repo_id = str(hints.get("repo_id") or "")
    commit = str(hints.get("commit") or "").lower()
    etag = _clean_etag(str(hints.get("etag") or ""))
    if not repo_id:
        return None, "not an hf:// download (no repo id): the HF cache only takes Hub files"
    if not _HEX40.match(commit):
        return None, "no commit hash recorded for this hf:// file; the cache needs snapshots/<commit>"
    if not (_HEX64.match(etag) or _HEX40.match(etag)):
        return None, "no usable ETag recorded for this hf:// file; the cache names blobs by it"
    repo_type = str(hints.get("repo_type") or "model")
    prefix = {"model": "models", "dataset": "datasets", "space": "spaces"}.get(repo_type)
    if prefix is None or "/" not in repo_id or ".." in repo_id:
        return None, f"unsupported repo {repo_type}:{repo_id} for the HF cache"
    rel = sanitize_relpath(str(hints.get("path_in_repo") or filename))
    if not rel:
        return None, "no file path inside the repo"
    repo_dir = cache / f"{prefix}--{repo_id.replace('/', '--')}"
    revision = str(hints.get("revision") or "main")
    ref = None
    if revision != commit:
        ref_rel = posixpath.normpath(revision)
        if ref_rel.startswith(("..", "/")):
            return None, f"unsafe revision name {revision!r}"
        ref = repo_dir / "refs" / ref_rel
    snapshot = repo_dir / "snapshots" / commit / rel
    tree = Path(str(hints["hf_tree"])) if hints.get("hf_tree") else None
    return HfCacheEntry(repo_dir, repo_dir / "blobs" / etag, snapshot, ref, commit, etag, tree), ""
