"""Place an hf:// download into the Hugging Face cache so huggingface_hub (transformers, diffusers, vLLM)
finds it offline.

Layout (``huggingface/hub-docs`` ``local-cache.md``)::

    models--{org}--{name}/blobs/<etag>               our bytes (hardlink, else a verified copy)
    models--{org}--{name}/snapshots/<commit>/<path>  RELATIVE symlink to ../../blobs/<etag>
    models--{org}--{name}/refs/<revision>            the 40-hex commit
    models--{org}--{name}/trees/<commit>.json        the repo's file listing (whole-repo downloads)
    CACHEDIR.TAG                                     at the cache root: backup tools skip the cache

The last two are what huggingface_hub 2.x writes itself: with the listing an offline ``snapshot_download``
tells a partial snapshot (raises ``IncompleteSnapshotError``) from a complete one.  Every small file is written
atomically (temporary file + rename); an existing ``CACHEDIR.TAG`` or listing is kept.

A blob is named by its content (sha256 for LFS files, git blob sha1 otherwise), so before anything is
written the file is checked against the ETag; a blob already there with other bytes is corrupt and is
replaced.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..engine.hashing import git_blob_sha1
from ..errors import DiskError, IntegrityError
from ..util.atomic import temp_sibling, write_atomic
from ..util.hf_tree import load_listing
from .linker import COPY, HARDLINK, SKIPPED, SYMLINK, LinkResult, SourceFile, place
from .planner import HfCacheEntry

log = logging.getLogger("modfetch.place")


def verify_etag(source: SourceFile, etag: str) -> None:
    """IntegrityError unless the file's sha256 (64-hex ETag) / git blob sha1 (40-hex ETag) is ``etag``."""
    actual = source.sha256() if len(etag) == 64 else git_blob_sha1(source.path)
    if actual != etag:
        raise IntegrityError(f"{source.path.name} does not match the Hub's ETag {etag} (got {actual})",
                             hint="the file changed since it was downloaded; run 'modfetch verify'")


def place_in_cache(source: SourceFile, entry: HfCacheEntry, mode: str, force: bool = False) -> LinkResult:
    """Blob + relative snapshot link + ref; returns the snapshot's result (message mentions the blob)."""
    verify_etag(source, entry.etag)
    blob_mode = COPY if mode == COPY else HARDLINK
    blob_result = place(source, entry.blob, blob_mode, force=True)  # a differing blob is corrupt by its name
    blob = SourceFile(entry.blob, sha256=source.sha256())
    text = os.path.relpath(entry.blob, entry.snapshot.parent)
    snap_result = place(blob, entry.snapshot, SYMLINK, force=force, symlink_text=text)
    if entry.ref is not None:
        write_ref(entry.ref, entry.commit)
    write_cache_files(entry)
    notes = [f"blob {blob_result.action} ({blob_result.mode})"]
    if blob_result.message and blob_result.action != SKIPPED:
        notes.append(blob_result.message)
    if snap_result.message:
        notes.append(snap_result.message)
    action = snap_result.action if snap_result.action != SKIPPED else blob_result.action
    return LinkResult(action, blob_result.mode, "; ".join(notes))


def write_ref(ref: Path, commit: str) -> None:
    """Write ``refs/<revision>`` atomically (replacing a planted link, never writing through it)."""
    try:
        if not ref.is_symlink() and ref.is_file() and ref.read_text(encoding="utf-8").strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_sibling(ref)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, commit.encode())
        finally:
            os.close(fd)
        os.replace(temp, ref)
    except OSError as exc:
        raise DiskError(f"cannot write {ref}: {exc.strerror or exc}") from None


# The standard cache-directory tag (https://bford.info/cachedir/), as huggingface_hub's CACHEDIR_TAG_CONTENT.
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)


def write_cache_files(entry: HfCacheEntry) -> None:
    """``CACHEDIR.TAG`` at the cache root and ``trees/<commit>.json`` (when the repo's listing was saved),
    each only when missing: the cache's own files are never replaced.  A failure is a warning (huggingface_hub
    ignores it too): without them the cache still works, an offline snapshot is just not checked."""
    try:
        tag = entry.repo_dir.parent / "CACHEDIR.TAG"
        if not os.path.lexists(tag):
            write_atomic(tag, CACHEDIR_TAG.encode(), replace=False)
        if entry.tree is None:
            return
        target = entry.repo_dir / "trees" / f"{entry.commit}.json"
        if os.path.lexists(target):
            return
        data = load_listing(entry.tree)
        if data is not None:
            write_atomic(target, data, replace=False)
    except OSError as exc:  # as huggingface_hub: the snapshot is in place; these files are an extra
        log.warning("cannot write the cache files of %s: %s", entry.repo_dir, exc.strerror or exc)
