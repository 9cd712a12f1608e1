"""``--metadata``: after a CivitAI download (and its placements), write the sidecars the Stable Diffusion front
ends read, beside the file and beside each placement in an app's model folders.

Only CivitAI has something to add: for ``hf://`` and plain URLs nothing new is written.  A sidecar that cannot
be fetched or written is reported as a warning; the verified download stays a success.
"""

from __future__ import annotations

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
from ..placement.sidecars import SidecarResult, write_sidecars
from ..resolvers.civitai_meta import fetch_metadata
from ..state import open_state
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
    return written
