"""The placement service: detect a file's type, plan its targets across the configured apps, carry the plan
out (links, HF cache, Ollama Modelfile) and record each placement in the state DB.

Used by ``modfetch place`` (files on disk), ``modfetch download --place`` and batch runs.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import Detection, detect
from ..config import Config
from ..engine.download import DownloadResult
from ..engine.files import file_stamp
from ..engine.hashing import sha256_file
from ..errors import IntegrityError, ModfetchError, UsageError
from ..paths import expand_path
from ..placement import hf_cache, linker, ollama
from ..placement.planner import AppSpec, PlannedTarget, plan, validate_mapping
from ..placement.presets import FOLDERS, HF_CACHE, OLLAMA, default_base, get_preset
from ..state import FINISHED_STATUSES, DownloadRow, StateDB, open_state

log = logging.getLogger("modfetch.place")

WOULD_PLACE, FAILED = "would-place", "failed"
NO_APPS_HINT = (
    "list the apps to place into under placement.apps in your config file (--config, $MODFETCH_CONFIG or "
    "$XDG_CONFIG_HOME/modfetch/config.yml), e.g.\n"
    "    placement:\n"
    "      apps:\n"
    "        comfyui: {preset: comfyui, base: ~/ComfyUI}\n"
    "        a1111:   {preset: a1111, base: ~/stable-diffusion-webui}\n"
    "        lmstudio: {preset: lmstudio}\n"
    "  see docs/PLACEMENT.md"
)


@dataclass(frozen=True)
class PlaceOptions:
    """What the user asked for: a type override, a mode override, a subset of apps, dry run, force."""

    artifact_type: str | None = None
    mode: str | None = None
    apps: tuple[str, ...] = ()
    dry_run: bool = False
    force: bool = False
    ollama_create: bool = False


@dataclass
class TargetOutcome:
    """What happened (or would happen) at one target."""

    app: str
    target: Path
    action: str
    mode: str
    message: str = ""
    command: list[str] | None = None

    @property
    def ok(self) -> bool:
        """False only for a failed target."""
        return self.action != FAILED


@dataclass
class PlaceReport:
    """One source file: what it was detected as and where it went."""

    source: Path
    detection: Detection
    outcomes: list[TargetOutcome] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[TargetOutcome]:
        """Targets that failed."""
        return [o for o in self.outcomes if not o.ok]


def configured_apps(config: Config, only: Sequence[str] = (),
                    env: Mapping[str, str] | None = None) -> list[AppSpec]:
    """The configured apps (optionally only ``only``); UsageError with a config snippet when none are."""
    apps = config.placement.apps
    if not apps:
        raise UsageError("no apps configured for placement", hint=NO_APPS_HINT)
    specs: dict[str, AppSpec] = {}
    for name, app in apps.items():
        preset = get_preset(app.preset, name)
        base = expand_path(app.base) if app.base else default_base(preset, env)
        specs[name] = AppSpec(name, preset, base)
    validate_mapping(config.placement.mapping, specs)
    unknown = [name for name in only if name not in specs]
    if unknown:
        raise UsageError(f"--app {unknown[0]!r} is not configured",
                         hint=f"configured apps: {', '.join(specs)}")
    return [specs[name] for name in (only or specs)]


def place_file(config: Config, path: Path, options: PlaceOptions, *, hints: Mapping[str, Any] | None = None,
               sha256: str | None = None, download_id: int | None = None,
               apps: Sequence[AppSpec] | None = None) -> PlaceReport:
    """Detect, plan and place one file; failures of single targets are reported, not raised."""
    hints = dict(hints or {})
    apps = list(apps) if apps is not None else configured_apps(config, options.apps)
    source = linker.SourceFile(path, sha256)
    detection = detect(source.path, options.artifact_type, hints)
    the_plan = plan(source.path, detection.type, hints, apps, config.placement.mapping)
    report = PlaceReport(source.path, detection, skipped=the_plan.skipped, notes=list(the_plan.notes))
    mode = options.mode or config.placement.mode
    force = options.force or config.general.allow_overwrite
    specs = {a.name: a for a in apps}
    for target in the_plan.targets:
        report.outcomes.append(_place_one(source, target, specs[target.app], mode, force, options))
    if not options.dry_run:
        _record(config, report, download_id, detection.type)
    return report


def place_download(config: Config, result: DownloadResult, options: PlaceOptions,
                   apps: Sequence[AppSpec] | None = None) -> PlaceReport:
    """Place a verified download using the source hints recorded with it (repo id, commit, CivitAI type)."""
    with open_state(config.state_db) as db:
        row = db.get_download(result.download_id)
    hints = _row_hints(row)
    return place_file(config, result.path, options, hints=hints, sha256=result.sha256,
                      download_id=result.download_id, apps=apps)


def place_paths(config: Config, paths: Sequence[Path], options: PlaceOptions) -> list[PlaceReport]:
    """Place files already on disk; a file modfetch downloaded reuses its recorded hints and hash."""
    apps = configured_apps(config, options.apps)
    reports = []
    if options.dry_run:  # read-only: a dry run must not even create the state DB
        known: list[DownloadRow | None] = [None] * len(paths)
        if config.state_db.exists():
            with open_state(config.state_db, readonly=True) as db:
                known = [_lookup(db, path) for path in paths]
    else:
        with open_state(config.state_db) as db:
            known = [_lookup(db, path) for path in paths]
    # Check every file first, so a changed download stops the run before anything is placed.
    hashes = [_checked_sha256(path, row) for path, row in zip(paths, known, strict=True)]
    for path, row, sha in zip(paths, known, hashes, strict=True):
        reports.append(place_file(config, path, options, hints=_row_hints(row), sha256=sha,
                                  download_id=row.id if row else None, apps=apps))
    return reports


def detect_file(config: Config, path: str | Path, artifact_type: str | None = None) -> Detection:
    """Detect one file's type, using the hints recorded if modfetch downloaded it."""
    real = expand_path(path)
    hints: dict[str, Any] = {}
    if config.state_db.exists():
        with open_state(config.state_db, readonly=True) as db:
            hints = _row_hints(_lookup(db, real))
    return detect(real, artifact_type, hints)


def _place_one(source: linker.SourceFile, target: PlannedTarget, app: AppSpec, mode: str, force: bool,
               options: PlaceOptions) -> TargetOutcome:
    kind = app.preset.kind
    shown_mode = "modelfile" if kind == OLLAMA else mode
    command = ollama.create_command(target.ollama_model or "model", target.target) if kind == OLLAMA else None
    if kind == FOLDERS and app.preset.base_must_exist and not app.base.is_dir():
        return TargetOutcome(app.name, target.target, FAILED, shown_mode,
                             f"{app.preset.name} folder {app.base} does not exist; "
                             f"set placement.apps.{app.name}.base to where it is installed")
    if options.dry_run:  # predict the real run: what it would fail is failed here too
        problem = linker.folder_problem(target.target)
        if problem is not None:
            return TargetOutcome(app.name, target.target, FAILED, shown_mode, problem, command)
        try:
            state = ("n/a" if kind == HF_CACHE else ollama.modelfile_state(source, target.target) if kind == OLLAMA
                     else linker.inspect_target(target.target, source))
        except OSError as exc:
            return TargetOutcome(app.name, target.target, FAILED, shown_mode, _os_message(exc), command)
        if state == "directory" or (state == "different" and not force):
            message = ("a directory is there; not replacing it" if state == "directory"
                       else "a different file is there (needs --force)")
            return TargetOutcome(app.name, target.target, FAILED, shown_mode, message, command)
        note = {"same": "already in place", "different": "a different file is there; it would be replaced",
                "dangling": "dangling link would be repaired"}.get(state, "")
        return TargetOutcome(app.name, target.target, WOULD_PLACE, shown_mode, note, command)
    try:
        if kind == HF_CACHE:
            assert target.hf is not None
            result = hf_cache.place_in_cache(source, target.hf, mode, force)
        elif kind == OLLAMA:
            result = ollama.write_modelfile(source, target.target, force)
        else:
            result = linker.place(source, target.target, mode, force=force)
    except ModfetchError as exc:
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return TargetOutcome(app.name, target.target, FAILED, shown_mode, message, command)
    except OSError as exc:  # ENOTDIR, ELOOP, EACCES... fail this target; the other apps are still placed
        return TargetOutcome(app.name, target.target, FAILED, shown_mode, _os_message(exc), command)
    outcome = TargetOutcome(app.name, target.target, result.action, result.mode, result.message, command)
    if command is not None:
        if options.ollama_create:
            ok, message = ollama.run_create(command)
            outcome.message = message
            if not ok and "not on PATH" not in message:
                outcome.action = FAILED
        else:
            # shlex.join: the path holds names a server chose; pasted unquoted, "$(...)" in one would run.
            outcome.message = "import with: " + shlex.join(command)
    if result.message:
        log.info("%s: %s", target.target, result.message)
    return outcome


def _os_message(exc: OSError) -> str:
    return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")


def _record(config: Config, report: PlaceReport, download_id: int | None, artifact_type: str) -> None:
    done = [o for o in report.outcomes if o.ok]
    if not done:
        return
    with open_state(config.state_db) as db, db.transaction():
        for o in done:
            db.record_placement(download_id, str(report.source), str(o.target), o.app, o.mode, artifact_type)


def _row_hints(row: DownloadRow | None) -> dict[str, Any]:
    if row is None:
        return {}
    hints = {k: v for k, v in row.meta.items() if k != "stat"}
    if row.artifact_type and "artifact_type" not in hints:
        hints["artifact_type"] = row.artifact_type
    return hints


def _lookup(db: StateDB, path: Path) -> DownloadRow | None:
    for candidate in dict.fromkeys([str(expand_path(path)), os.path.realpath(path)]):
        row = db.find_by_dest(candidate)
        if row is not None and row.status in FINISHED_STATUSES:
            return row
    return None


def _checked_sha256(path: Path, row: DownloadRow | None) -> str | None:
    """The recorded SHA-256 of a file modfetch downloaded, re-hashing it when it was touched since; an
    IntegrityError when its bytes are no longer the download's (never place a changed/corrupted file as it)."""
    if row is None or not row.sha256:
        return None
    if _stat_matches(row):
        return row.sha256
    try:
        real = os.path.realpath(path)
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None  # SourceFile refuses it (and hashing a FIFO would block)
        actual = sha256_file(real)
    except OSError:
        return None  # unreadable/vanished: SourceFile reports it as this file's error
    if actual != row.sha256.lower():
        raise IntegrityError(f"{path} changed since modfetch downloaded it (sha256 {actual}, "
                             f"recorded {row.sha256}); nothing placed",
                             hint=f"run: {shlex.join(['modfetch', 'verify', str(row.id)])}; or download it again "
                                  "with --force")
    return actual


def _stat_matches(row: DownloadRow) -> bool:
    try:
        st = os.stat(row.dest_path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and row.meta.get("stat") == file_stamp(st)
