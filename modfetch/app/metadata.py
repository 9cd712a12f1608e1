"""``--metadata``: after a CivitAI download (and its placements), write the sidecars the Stable Diffusion front
ends read, beside the file and beside each placement in an app's model folders.

Only CivitAI has something to add: for ``hf://`` and plain URLs nothing new is written.  A sidecar that cannot
be fetched or written is reported as a warning; the verified download stays a success.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from ..config import Config
from ..engine.download import DownloadResult
from ..engine.session import make_session
from ..errors import ModfetchError
from ..placement.linker import CREATED, REPAIRED, REPLACED, SKIPPED
from ..placement.planner import AppSpec
from ..placement.presets import FOLDERS
from ..placement.sidecars import SidecarResult, sidecar_paths, write_sidecars
from ..resolvers.civitai_meta import fetch_metadata
from ..state import open_state
from .library import sidecar_holds
from .place import PlaceReport

log = logging.getLogger("modfetch.metadata")
PLACED = (CREATED, REPLACED, REPAIRED, SKIPPED)  # the target holds the file (SKIPPED: it already did)


def metadata_targets(result: DownloadResult, reports: Sequence[PlaceReport], apps: Sequence[AppSpec]) -> list[Path]:
    """The download itself, then every placement of it in a folder app (ComfyUI, A1111), each path once."""
    folder_apps = {a.name for a in apps if a.preset.kind == FOLDERS}
    paths = [result.path]
    for report in reports:
        paths.extend(o.target for o in report.outcomes if o.ok and o.app in folder_apps and o.action in PLACED)
    return list(dict.fromkeys(paths))


def write_metadata(config: Config, result: DownloadResult, reports: Sequence[PlaceReport] = (),
                   apps: Sequence[AppSpec] = ()) -> list[SidecarResult]:
    """Sidecars for one verified download (none unless it came from CivitAI)."""
    with open_state(config.state_db) as db:
        row = db.get_download(result.download_id)
    version_id = row.meta.get("version_id") if row is not None else None
    if row is None or row.source != "civitai" or not isinstance(version_id, int):
        return []
    session = make_session(config)
    try:
        meta = fetch_metadata(config, session, version_id)
    except ModfetchError as exc:
        log.warning("no metadata sidecars for %s: %s", result.path.name, exc.message)
        return []
    finally:
        session.close()
    if meta.preview is None and meta.note:
        log.info("no preview for %s: %s", result.path.name, meta.note)
    written: list[SidecarResult] = []
    for target in metadata_targets(result, reports, apps):
        try:
            written.extend(write_sidecars(target, meta.info, meta.preview))
        except OSError as exc:
            log.warning("cannot write the metadata sidecars beside %s: %s", target, exc.strerror or exc)
    for item in written:
        log.info("metadata: %s %s", item.action, item.path)
    _record(config, result.download_id, meta.info, meta.preview, written, metadata_targets(result, reports, apps))
    return written


def _record(config: Config, download_id: int, info: bytes, preview: tuple[bytes, str] | None,
            written: Sequence[SidecarResult], models: Sequence[Path]) -> None:
    """Remember in the download's row each sidecar that holds exactly what modfetch writes (written now, or
    kept from an earlier run), with its SHA-256 and the model file it sits beside: ``rm`` and ``prune`` remove
    such a sidecar once that file is gone, and only while its bytes are unchanged."""
    hashes = {"info": hashlib.sha256(info).hexdigest(),
              "preview": hashlib.sha256(preview[0]).hexdigest() if preview else None}
    beside = {sidecar_paths(m, preview[1] if preview else "png"): m for m in models}
    found: list[dict[str, str]] = []
    for (info_path, preview_path), model in beside.items():
        for path, want in ((info_path, hashes["info"]), (preview_path, hashes["preview"])):
            if want and any(w.path == path for w in written) and sidecar_holds(path, want):
                found.append({"path": str(path), "sha256": want, "beside": str(model)})
    if not found:
        return
    with open_state(config.state_db) as db, db.transaction():
        row = db.get_download(download_id)
        if row is None:
            return
        known = [s for s in row.meta.get("sidecars") or [] if isinstance(s, dict)]
        merged = {str(s.get("path")): s for s in [*known, *found]}
        db.update_download(download_id, meta=dict(row.meta, sidecars=list(merged.values())))
