"""``download --dry-run``: resolve the sources and say what a real run would do, without fetching file bytes.

API calls are allowed (listings, metadata); a plain URL whose resolver does not know the name and size is
probed the way the engine probes (HEAD, then at most a ``bytes=0-0`` GET).  A dry run writes nothing: no state
rows (the state DB is only read, and only when it exists), no ``.part``, no metrics textfile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import vocabulary
from ..artifacts.detect import _by_name, detect
from ..config import Config
from ..engine.files import file_stamp
from ..engine.hashing import sha256_file
from ..engine.http import RetryableError
from ..engine.probe import probe
from ..engine.session import make_session
from ..errors import NetworkError, UsageError
from ..placement.planner import AppSpec, plan
from ..state import FINISHED_STATUSES, DownloadRow, open_state, part_path_for
from ..util.filenames import filename_from_url, safe_join, sanitize_filename
from ..util.redact import redact_url
from .download import DownloadOptions, build_request, resolve_uri

# What is at the destination now.
PRESENT, ABSENT, PARTIAL, CONFLICT = "present", "absent", "partial", "conflict"


@dataclass
class PlannedFile:
    """One file a real run would download (or find present)."""

    uri: str
    url: str
    name: str
    size: int | None
    path: Path
    sha256: str | None
    source: str
    state: str
    artifact_type: str | None = None
    placements: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` view."""
        return {"uri": self.uri, "url": self.url, "name": self.name, "size": self.size, "path": str(self.path),
                "sha256": self.sha256, "source": self.source, "state": self.state,
                "artifact_type": self.artifact_type, "placements": self.placements}


def dry_run(config: Config, uri: str, options: DownloadOptions, apps: list[AppSpec] | None = None,
            mode: str | None = None) -> list[PlannedFile]:
    """What downloading ``uri`` would do; ``apps`` (from ``--place``) adds the placements it would make."""
    items = resolve_uri(config, uri, dry_run=True)
    if not items:
        raise UsageError(f"{redact_url(uri)} names no files", hint="check the include/exclude patterns")
    requests_ = [build_request(config, item, options, single=len(items) == 1) for item in items]
    session = make_session(config)
    timeout = (min(10.0, config.network.timeout_seconds), config.network.timeout_seconds)
    headers = {"Accept-Encoding": "identity", "User-Agent": config.network.user_agent}
    out: list[PlannedFile] = []
    try:
        for req in requests_:
            name, size, url = req.filename, req.expected_size, req.url
            if not name or size is None:
                try:
                    info = probe(session, req.url, base_headers=headers, auth=req.headers,
                                 auth_host=req.auth_host, timeout=timeout)
                except RetryableError as exc:
                    raise NetworkError(f"cannot reach {redact_url(req.display_url or req.url)}: {exc}") from None
                name = name or info.filename or filename_from_url(info.url) or filename_from_url(req.url)
                size = size if size is not None else info.size
                url = info.url
            path = safe_join(req.dest_dir, req.subdir, sanitize_filename(name))
            out.append(PlannedFile(uri=redact_url(uri), url=redact_url(url), name=path.name, size=size, path=path,
                                   sha256=req.expected_sha256, source=req.source,
                                   state=_state(config, path, req.expected_sha256, size)))
            if apps is not None:
                _add_placements(config, out[-1], dict(req.meta), options.artifact_type, apps, mode)
    finally:
        session.close()
    return out


def _row(config: Config, path: Path) -> DownloadRow | None:
    if not config.state_db.exists():  # read-only: a dry run must not even create the state DB
        return None
    with open_state(config.state_db, readonly=True) as db:
        return db.find_by_dest(str(path))


def _state(config: Config, path: Path, expected: str | None, size: int | None) -> str:
    """``present`` (the right bytes are there), ``partial`` (a resumable .part), ``conflict`` (another file is
    in the way: the real run fails without --force) or ``absent``."""
    if path.is_file():
        row = _row(config, path)
        st = path.stat()
        stamp = file_stamp(st)
        recorded = row.sha256 if row is not None and row.meta.get("stat") == stamp else None
        if expected:
            return PRESENT if (recorded or sha256_file(path)) == expected else CONFLICT
        finished = row is not None and row.status in FINISHED_STATUSES and recorded is not None
        return PRESENT if finished and (size is None or st.st_size == size) else CONFLICT
    if os.path.lexists(path):
        return CONFLICT
    return PARTIAL if part_path_for(path).exists() else ABSENT


def _add_placements(config: Config, item: PlannedFile, hints: dict[str, Any], explicit: str | None,
                    apps: list[AppSpec], mode: str | None) -> None:
    """The targets ``--place`` would create, from the type the file would be detected as."""
    if item.path.is_file() or explicit or hints.get("artifact_type") or hints.get("civitai_type"):
        kind = detect(item.path, explicit, hints).type
    elif hints.get("repo_id"):
        kind = vocabulary.HF_FILE
    else:
        kind = _by_name(item.path, None).type  # no bytes yet: the name decides
    item.artifact_type = kind
    the_plan = plan(item.path, kind, hints, apps, config.placement.mapping)
    shown = mode or config.placement.mode
    item.placements = [{"app": t.app, "target": str(t.target), "mode": shown} for t in the_plan.targets]


__all__ = ["ABSENT", "CONFLICT", "PARTIAL", "PRESENT", "PlannedFile", "dry_run"]
