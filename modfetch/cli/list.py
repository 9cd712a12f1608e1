"""``modfetch list``: every file modfetch holds on disk, with its status and placements (no hashing)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..app.library import LibraryEntry, list_library
from ..app.status import open_db
from ..artifacts import TYPES
from ..util.redact import redact
from ..util.sizes import human_size
from ..util.termtext import fit, printable
from .context import CliState, global_options, pass_state


def render_library(entries: list[LibraryEntry]) -> str:
    """The human table: one line per file, its placements indented below it."""
    lines = [f"{'ID':>4}  {'STATUS':<8}  {'SIZE':>10}  {'SOURCE':<11}  {'TYPE':<14}  {'VERIFIED':<16}  PATH"]
    for entry in entries:
        verified = entry.row.meta.get("verified_at")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(verified)) \
            if isinstance(verified, (int, float)) and 0 < verified < 253402300799 else "-"
        lines.append(f"{entry.row.id:>4}  {fit(entry.status, 8)}  {human_size(entry.row.size):>10}  "
                     f"{fit(entry.row.source, 11)}  {fit(entry.row.artifact_type or '-', 14)}  {when:<16}  "
                     f"{printable(redact(entry.row.dest_path))}")
        for p in entry.placements:
            gone = "" if p["present"] else "  (gone)"
            lines.append(printable(redact(f"{'':>4}  -> {p['app']} {p['mode']} {p['target']}{gone}")))
    return "\n".join(lines)


@click.command("list")
@click.option("--source", type=click.Choice(["http", "huggingface", "civitai"]), help="Only files from this source.")
@click.option("--type", "artifact_type", type=click.Choice(list(TYPES)), help="Only files of this artifact type.")
@global_options
@pass_state
def command(state: CliState, source: str | None, artifact_type: str | None, **_: Any) -> None:
    """List every file modfetch holds: id, status (complete, verified, mismatch, missing), size, placements."""
    with open_db(state.config) as db:
        entries = list_library(db, source=source, artifact_type=artifact_type)
    if state.json_output:
        click.echo(json.dumps([e.as_dict() for e in entries], indent=2))
    elif not entries:
        click.echo("no files match" if (source or artifact_type) else "no files yet")
    else:
        click.echo(render_library(entries))
