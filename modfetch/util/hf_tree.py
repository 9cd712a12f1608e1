"""The repo listing huggingface_hub keeps beside its cache: ``models--org--name/trees/<commit>.json``.

Format (huggingface_hub 2.x ``_tree_cache.py``, ``TREE_CACHE_FORMAT_VERSION = 1``)::

    {"format_version": 1,
     "files": {"config.json": {"size": 519, "blob_id": "<git sha1>"},
               "model.safetensors": {"size": 1234, "blob_id": "<git sha1>", "lfs_sha256": "<sha256>",
                                     "lfs_size": 1234, "xet_hash": "<64 hex>"}}}

An offline ``snapshot_download`` compares it with ``snapshots/<commit>/`` to tell a partial snapshot from a
complete one.  The resolver saves the whole repo's listing in modfetch's data folder when it lists a repo; the
HF cache placement copies it into the cache.  Every write is atomic (temporary file + rename).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import write_atomic

log = logging.getLogger("modfetch.hf_tree")
FORMAT_VERSION = 1
MAX_TREE_FILE = 256 << 20  # a listing of ~1M files; anything bigger is not one
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = {"model": "models", "dataset": "datasets", "space": "spaces"}


def repo_folder_name(repo_type: str, repo_id: str) -> str:
    """``models--org--name`` (huggingface_hub's ``repo_folder_name``)."""
    return f"{_PREFIX.get(repo_type, 'models')}--{repo_id.replace('/', '--')}"


def listing(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The trees file document for the Hub's ``/tree?recursive=true`` file entries."""
    files: dict[str, dict[str, Any]] = {}
    for entry in entries:
        path, size, oid = entry.get("path"), entry.get("size"), str(entry.get("oid") or "").lower()
        if not isinstance(path, str) or not isinstance(size, int) or isinstance(size, bool):
            continue
        info: dict[str, Any] = {"size": size, "blob_id": oid}
        lfs = entry.get("lfs")
        if isinstance(lfs, dict):
            sha = str(lfs.get("oid") or lfs.get("sha256") or "").lower()
            lfs_size = lfs.get("size")
            if _HEX64.match(sha) and isinstance(lfs_size, int):
                info.update(lfs_sha256=sha, lfs_size=lfs_size)
        xet = entry.get("xetHash")
        if isinstance(xet, str) and _HEX64.match(xet):  # huggingface_hub ignores a listing with an invalid one
            info["xet_hash"] = xet
        files[path] = info
    return {"format_version": FORMAT_VERSION, "files": {p: files[p] for p in sorted(files)}}


def save_listing(folder: Path, repo_type: str, repo_id: str, commit: str,
                 entries: Iterable[Mapping[str, Any]]) -> Path | None:
    """Save the listing of ``repo_id`` at ``commit`` under ``folder``; its path, or None when it could not be
    written (the download goes on; the cache then just lacks the listing, as one made by an old client)."""
    if not _HEX40.match(commit):
        return None
    path = folder / repo_folder_name(repo_type, repo_id) / f"{commit}.json"
    try:
        write_atomic(path, json.dumps(listing(entries), indent=1).encode())
    except OSError as exc:
        log.warning("cannot save the file listing of %s: %s", repo_id, exc.strerror or exc)
        return None
    return path


def load_listing(path: Path) -> bytes | None:
    """The bytes of a saved listing when it is one (valid JSON in the expected format), else None."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TREE_FILE + 1)
        doc = json.loads(data) if len(data) <= MAX_TREE_FILE else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        return None
    files = doc.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) and isinstance(v.get("size"), int)
                                              and isinstance(v.get("blob_id"), str) for v in files.values()):
        return None
    return json.dumps(doc, indent=1).encode()
