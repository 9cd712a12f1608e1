"""Helpers on a Hub repo listing: the files it names (each plain relative path once) and the error for a
quantization the repo does not have (its quantizations offered as candidates)."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ..errors import AmbiguousChoiceError, Candidate, UsageError
from . import quant
from .uris import HfUri

log = logging.getLogger("modfetch.resolvers.huggingface")


def no_quant(ref: HfUri, repo_id: str, revision: str, files: list[Mapping[str, Any]]) -> UsageError:
    """The error for a quantization the repo does not have: its quantizations as candidates (``--pick``)."""
    sizes = {str(e["path"]): e.get("size") for e in files}
    found = quant.available(sizes)
    if not found:
        return UsageError(f"{repo_id}@{revision} has no GGUF files, so :{ref.quant} picks nothing",
                          hint="name a file (hf://owner/repo/file) or use ?include=GLOB")
    query = [*([("rev", ref.revision)] if ref.revision else []), *(("include", p) for p in ref.include),
             *(("exclude", p) for p in ref.exclude)]
    suffix = ("?" + urlencode(query, safe="*/")) if query else ""
    prefix = {"dataset": "datasets/", "space": "spaces/"}.get(ref.repo_type, "")
    candidates = []
    for name, paths in found.items():
        total = sum(s for s in (sizes[p] for p in paths) if isinstance(s, int))
        label = f"{name} ({len(paths)} files)" if len(paths) > 1 else f"{name} ({posixpath.basename(paths[0])})"
        candidates.append(Candidate(label, f"hf://{prefix}{repo_id}:{name}{suffix}", total or None, "GGUF"))
    return AmbiguousChoiceError(f"no {ref.quant} GGUF in {repo_id}@{revision}; its quantizations are",
                                candidates, hint=f"pick one, e.g. hf://{prefix}{repo_id}:{next(iter(found))}"
                                " (or rerun with --pick)")


def unique_files(entries: list[Mapping[str, Any]], repo_id: str) -> list[Mapping[str, Any]]:
    """The listing's file entries, each path once: a path the Hub could not have (empty, absolute, ``.``/``..``
    parts) is skipped, and a repeated one would otherwise be downloaded twice to the same target at once."""
    unique: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        path = entry.get("path")
        if entry.get("type") != "file" or not isinstance(path, str):
            continue
        parts = path.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\x00" in path:
            log.warning("hf: skipping the listed path %r of %s: not a plain relative path", path, repo_id)
            continue
        unique.setdefault(path, entry)
    return list(unique.values())
