"""``modfetch place``: link (or copy) files already on disk into the configured apps' model folders."""

from __future__ import annotations

import json
from typing import Any

import click

from ..app.batch import BatchSummary, load_batch, run_batch
from ..app.place import PlaceOptions, PlaceReport, configured_apps, place_download, place_paths
from ..artifacts import TYPES
from ..engine.download import DownloadResult
from ..errors import ModfetchError
from ..paths import expand_path
from ..placement.linker import MODES
from ..util.redact import redact_url
from ..util.sizes import human_size
from .context import CliState, global_options, pass_state
from .progress import progress_factory


def report_json(report: PlaceReport) -> dict[str, Any]:
    """A JSON-ready view of one file's placement."""
    return {
        "source": str(report.source),
        "type": report.detection.type,
        "detected_by": report.detection.source,
        "reason": report.detection.reason,
        "targets": [{"app": o.app, "target": str(o.target), "action": o.action, "mode": o.mode,
                     "message": o.message or None, "command": o.command} for o in report.outcomes],
        "skipped": [{"app": app, "reason": why} for app, why in report.skipped],
        "notes": report.notes,
    }


def render_report(report: PlaceReport, show_skipped: bool = False) -> list[str]:
    """Human lines for one file's placement."""
    lines = [f"{report.source}: {report.detection.describe()}"]
    width = max([len(o.app) for o in report.outcomes] + [len(app) for app, _ in report.skipped] + [4])
    for o in report.outcomes:
        tail = f"  ({o.message})" if o.message else ""
        lines.append(f"  {o.app:<{width}}  {o.action:<11}  {o.mode:<9}  {o.target}{tail}")
    if show_skipped:
        lines.extend(f"  {app:<{width}}  skipped: {why}" for app, why in report.skipped)
    lines.extend(f"  note: {note}" for note in report.notes)
    return lines


def echo_reports(state: CliState, reports: list[PlaceReport], show_skipped: bool = False) -> None:
    """Print reports (JSON lines with --json) and raise when any target failed."""
    for report in reports:
        if state.json_output:
            click.echo(json.dumps(report_json(report)))
        else:
            for line in render_report(report, show_skipped):
                click.echo(line)
    failed = [o for r in reports for o in r.failed]
    if failed:
        first = failed[0]
        raise ModfetchError(f"{len(failed)} placement(s) failed; first: {first.target}: {first.message}",
                            hint="fix the cause and rerun: placed targets are re-checked and skipped")


@click.command("place")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--type", "artifact_type", type=click.Choice(list(TYPES)),
              help="Artifact type (skips detection).")
@click.option("--mode", type=click.Choice(list(MODES)),
              help="symlink | hardlink | copy (default: placement.mode).")
@click.option("--app", "apps", multiple=True, help="Only this configured app (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show the detected type and targets; change nothing.")
@click.option("--force", is_flag=True, help="Replace a different file already at a target (atomically).")
@click.option("--ollama-create", is_flag=True, help="Run 'ollama create' for GGUFs when ollama is on PATH.")
@global_options
@pass_state
def command(state: CliState, paths: tuple[str, ...], artifact_type: str | None, mode: str | None,
            apps: tuple[str, ...], dry_run: bool, force: bool, ollama_create: bool, **_: Any) -> None:
    """Place files already on disk into the configured apps (ComfyUI, A1111, LM Studio, HF cache, Ollama).

    Each file's type is detected (or given with --type), then it is linked into every configured app that
    takes that type.  Identical targets are skipped, dangling links repaired; a different file is replaced
    only with --force.  Files modfetch downloaded reuse their recorded source hints (HF repo, CivitAI type).
    """
    options = PlaceOptions(artifact_type=artifact_type, mode=mode, apps=apps, dry_run=dry_run, force=force,
                           ollama_create=ollama_create)
    reports = place_paths(state.config, [expand_path(p) for p in paths], options)
    echo_reports(state, reports, show_skipped=dry_run)



class Placer:
    """``download --place``: checks the apps up front, places each verified result, fails at the end if any
    target failed (after every file was downloaded and placed)."""

    def __init__(self, state: CliState, artifact_type: str | None) -> None:
        self.config = state.config
        self.options = PlaceOptions(artifact_type=artifact_type)
        self.apps = configured_apps(self.config)  # "no apps configured" before anything downloads
        self.reports: list[PlaceReport] = []

    def place(self, result: DownloadResult) -> PlaceReport:
        """Place one verified download."""
        report = place_download(self.config, result, self.options, self.apps)
        self.reports.append(report)
        return report

    def finish(self) -> None:
        """Raise when any placement failed."""
        failed = [o for r in self.reports for o in r.failed]
        if failed:
            raise ModfetchError(f"{len(failed)} placement(s) failed; first: {failed[0].target}: "
                                f"{failed[0].message}", hint="fix the cause and rerun the same command")


def run_batch_cli(state: CliState, batch_file: str, *, place: bool, artifact_type: str | None, force: bool,
                  concurrency: int | None, chunk_size: int | None, metadata: bool | None = None) -> None:
    """``download --batch FILE``: validate every job first, run them, print a summary, fail if any failed."""
    jobs = load_batch(None if batch_file == "-" else expand_path(batch_file))
    summary = run_batch(state.config, jobs, progress_factory(state.quiet, state.json_output), place=place,
                        place_options=PlaceOptions(artifact_type=artifact_type), force=force,
                        concurrency=concurrency, chunk_size=chunk_size, metadata=metadata)
    for outcome in summary.outcomes:
        if state.json_output:
            click.echo(json.dumps({
                "job": outcome.job.index, "uri": redact_url(outcome.job.uri), "ok": outcome.ok,
                "error": outcome.error,
                "files": [{"id": r.download_id, "path": str(r.path), "sha256": r.sha256, "size": r.size,
                           "fetched_bytes": r.fetched_bytes, "already_present": r.already_present}
                          for r in outcome.results],
                "placements": [report_json(p) for p in outcome.placements]}))
    if not state.json_output and not (state.quiet and not summary.failed):  # --quiet success: cron mails nothing
        click.echo(render_summary(summary, only_failed=state.quiet))
    if summary.failed:
        raise ModfetchError(f"{len(summary.failed)} of {len(summary.outcomes)} batch jobs failed",
                            hint="fix them and rerun the batch: finished files are not fetched again")


def render_summary(summary: BatchSummary, only_failed: bool = False) -> str:
    """The batch summary table: one row per job (with ``only_failed``, as for --quiet: only the failed ones, so
    a cron mail about one failure among thousands of jobs stays short), then the count."""
    lines = [f"{'JOB':>3}  {'RESULT':<7}  {'FILES':>5}  {'FETCHED':>9}  {'PLACED':>6}  DETAIL"]
    for o in summary.failed if only_failed else summary.outcomes:
        fetched = sum(r.fetched_bytes for r in o.results)
        placed = sum(1 for p in o.placements for t in p.outcomes if t.ok)
        if o.error:
            detail = f"{redact_url(o.job.uri)}: {o.error}"
        else:
            detail = ", ".join(str(r.path) + (" (already present)" if r.already_present else "")
                               for r in o.results)
            failed = [t for p in o.placements for t in p.failed]
            if failed:
                detail += f"; placement failed: {failed[0].target}: {failed[0].message}"
        result = "ok" if o.ok else "FAILED"
        lines.append(f"{o.job.index:>3}  {result:<7}  {len(o.results):>5}  {human_size(fetched):>9}  "
                     f"{placed:>6}  {detail}")
    ok = len(summary.outcomes) - len(summary.failed)
    lines.append(f"{ok} of {len(summary.outcomes)} jobs succeeded")
    return "\n".join(lines)
