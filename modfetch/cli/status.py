"""``modfetch status``: a table (or JSON list) of downloads from the state DB."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..app.status import open_db, progress_of, select_downloads
from ..errors import UsageError
from ..state import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    MISMATCH,
    PENDING,
    RUNNING,
    VERIFIED,
    DownloadRow,
    StateDB,
)
from ..util.redact import redact
from ..util.sizes import human_size
from ..util.termtext import cut, fit, printable, text_width
from .context import CliState, global_options, pass_state


def _json_row(row: DownloadRow, placements: list[dict[str, Any]]) -> dict[str, Any]:
    data = row.as_dict()
    data["path"] = data.pop("dest_path")
    data["placements"] = placements
    return data


def short_path(path: str, root: Path | None, width: int = 48) -> str:
    """``path`` relative to the download root (or with ``~`` for the home folder), its start cut with ``~`` to
    fit ``width`` columns: the end (repo folder and file) is what tells two same-named files apart."""
    home = os.path.expanduser("~").rstrip("/") + "/"
    if root is not None and path.startswith(str(root).rstrip("/") + "/"):
        path = path[len(str(root).rstrip("/")) + 1:]
    elif home != "/" and path.startswith(home):
        path = "~/" + path[len(home):]
    text = printable(redact(path))
    if text_width(text) <= width:
        return text
    return "~" + cut(text[::-1], width - 1)[::-1].lstrip("~")


def render_table(rows: list[DownloadRow], root: Path | None = None) -> str:
    """The human status table.  Names and statuses come from the DB: control characters (an escape sequence
    would act on the terminal) become ``?``, secrets are masked, and widths are counted in columns.  PATH is
    relative to ``root`` (the download root) when the file lies inside it."""
    header = (f"{'ID':>4}  {'FILE':<40}  {'SOURCE':<11}  {'SIZE':>10}  {'PROGRESS':>8}  {'STATUS':<11}  "
              f"{'UPDATED':<19}  PATH")
    lines = [header]
    for row in rows:
        fraction = progress_of(row)
        progress = (human_size(row.bytes_done) if row.bytes_done else "?") if fraction is None \
            else f"{fraction * 100:.1f}%"  # unknown size: the bytes on disk say more than "?"
        name = fit(redact(row.dest_path.rsplit("/", 1)[-1]), 40)
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.updated_at))
        lines.append(f"{row.id:>4}  {name}  {fit(row.source, 11)}  {human_size(row.size):>10}  {progress:>8}  "
                     f"{fit(row.status, 11)}  {updated}  {short_path(row.dest_path, root)}")
    return "\n".join(lines)


def render_placements(db: StateDB, rows: list[DownloadRow]) -> str:
    """Lines under the table listing where files were placed (empty when nothing was)."""
    lines = [printable(redact(f"{row.id:>4}  {p.app:<10}  {p.mode:<9}  {p.target_path}"))
             for row in rows for p in db.placements(download_id=row.id)]
    return "\nplacements:\n" + "\n".join(lines) if lines else ""


def render_failures(rows: list[DownloadRow]) -> str:
    """Lines under the table naming each failed download's error class and (redacted) error."""
    lines = [printable(f"{row.id:>4}  {row.error_class or 'other':<11}  {redact(row.error or '')}")
             for row in rows if row.status == FAILED]
    return "\nfailures:\n" + "\n".join(lines) if lines else ""


STATUSES = [PENDING, RUNNING, COMPLETE, VERIFIED, MISMATCH, FAILED, INTERRUPTED]


def _split(values: tuple[str, ...]) -> list[str]:
    out = [v.strip().lower() for value in values for v in value.split(",") if v.strip()]
    unknown = sorted(set(out) - set(STATUSES))
    if unknown:
        raise UsageError(f"unknown status {', '.join(unknown)}", hint=f"use one of: {', '.join(STATUSES)}")
    return out


def _render(state: CliState, db: StateDB, selector: str | None, statuses: list[str], source: str | None,
            compact: bool = False) -> str:
    rows = select_downloads(db, selector, statuses=statuses or None, source=source)
    if state.json_output:
        out = []
        for row in rows:
            placements = [{"app": p.app, "target": p.target_path, "mode": p.mode}
                          for p in db.placements(download_id=row.id)]
            out.append(_json_row(row, placements))
        return json.dumps(out) if compact else json.dumps(out, indent=2)
    if not rows:
        return "no downloads match" if (statuses or source or selector) else "no downloads yet"
    return render_table(rows, state.config.download_root) + render_placements(db, rows) + render_failures(rows)


def _watch(state: CliState, selector: str | None, statuses: list[str], source: str | None,
           interval: float = 1.0) -> None:
    """Redraw every ``interval`` seconds until Ctrl-C (which ends the watch with exit status 0)."""
    tty = sys.stdout.isatty()
    try:
        with open_db(state.config) as db:
            while True:
                text = _render(state, db, selector, statuses, source, compact=True)
                if tty and not state.json_output:
                    stamp = time.strftime("%H:%M:%S")
                    click.echo(f"\x1b[H\x1b[2J{stamp}  modfetch status --watch (Ctrl-C stops)\n{text}")
                else:
                    click.echo(text)
                time.sleep(interval)
    except KeyboardInterrupt:
        return


@click.command("status")
@click.argument("selector", required=False)
@click.option("--watch", "-w", is_flag=True, help="Refresh every second until Ctrl-C.")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              help=f"Only downloads in this status (repeatable or comma-separated: {', '.join(STATUSES)}).")
@click.option("--source", type=click.Choice(["http", "huggingface", "civitai"]),
              help="Only downloads from this source.")
@global_options
@pass_state
def command(state: CliState, selector: str | None, watch: bool, statuses: tuple[str, ...], source: str | None,
            **_: Any) -> None:
    """Show downloads: all, or one by ID, PATH or URL; --watch keeps refreshing."""
    wanted = _split(statuses)
    if watch:
        _watch(state, selector, wanted, source)
        return
    with open_db(state.config) as db:
        click.echo(_render(state, db, selector, wanted, source))
