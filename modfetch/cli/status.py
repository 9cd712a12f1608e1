"""``modfetch status``: a table (or JSON list) of downloads from the state DB."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..app.status import open_db, progress_of, select_downloads
from ..state import DownloadRow
from ..util.sizes import human_size
from .context import CliState, global_options, pass_state


def _json_row(row: DownloadRow, placements: list[dict[str, Any]]) -> dict[str, Any]:
    data = row.as_dict()
    data["path"] = data.pop("dest_path")
    data["placements"] = placements
    return data


def render_table(rows: list[DownloadRow]) -> str:
    """The human status table."""
    header = f"{'ID':>4}  {'FILE':<40}  {'SIZE':>10}  {'PROGRESS':>8}  {'STATUS':<11}  UPDATED"
    lines = [header]
    for row in rows:
        fraction = progress_of(row)
        progress = "?" if fraction is None else f"{fraction * 100:.1f}%"
        name = row.dest_path.rsplit("/", 1)[-1]
        name = name if len(name) <= 40 else name[:37] + "..."
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.updated_at))
        lines.append(f"{row.id:>4}  {name:<40}  {human_size(row.size):>10}  {progress:>8}  {row.status:<11}  {updated}")
    return "\n".join(lines)


@click.command("status")
@click.argument("selector", required=False)
@global_options
@pass_state
def command(state: CliState, selector: str | None, **_: Any) -> None:
    """Show downloads: all, or one by ID, PATH or URL."""
    with open_db(state.config) as db:
        rows = select_downloads(db, selector)
        if state.json_output:
            out = []
            for row in rows:
                placements = [{"app": p.app, "target": p.target_path, "mode": p.mode}
                              for p in db.placements(download_id=row.id)]
                out.append(_json_row(row, placements))
            click.echo(json.dumps(out, indent=2))
            return
    if not rows:
        click.echo("no downloads yet")
        return
    click.echo(render_table(rows))
