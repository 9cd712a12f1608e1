"""``modfetch rm``: remove downloaded files with their sidecars, ``.part`` and the placements modfetch made."""

from __future__ import annotations

import json
from typing import Any

import click

from ..app.library import RemovalReport, find_rows, remove_downloads
from ..app.status import open_db
from ..errors import ModfetchError
from ..util.redact import redact
from ..util.sizes import human_size
from ..util.termtext import printable
from .context import CliState, global_options, pass_state


def echo_removal(state: CliState, report: RemovalReport, what: str) -> None:
    """Print what was removed, kept and forgotten and the bytes freed (JSON on stdout with --json); raise when
    anything could not be removed."""
    if state.json_output:
        click.echo(json.dumps(report.as_dict()))
    else:
        verb = "would remove" if report.dry_run else "removed"
        for path in report.removed:
            click.echo(printable(redact(f"{verb}  {path}")))
        for line in report.kept:
            click.echo(printable(redact(f"kept     {line}")))
        for line in report.failed:
            click.echo(printable(redact(f"FAILED   {line}")))
        if report.forgotten:
            ids = ", ".join(str(i) for i in report.forgotten)
            click.echo(f"{'would forget' if report.dry_run else 'forgot'}  download id(s) {ids}")
        freed = "would free" if report.dry_run else "freed"
        click.echo(f"{freed} {human_size(report.bytes_freed)} ({report.bytes_freed} bytes)")
    if report.failed:
        raise ModfetchError(f"{len(report.failed)} item(s) could not be {what}; first: {report.failed[0]}",
                            hint="fix the cause and rerun: what was removed is not asked for again")


@click.command("rm")
@click.argument("targets", nargs=-1, required=True)
@click.option("--keep-file", is_flag=True, help="Only forget the download: leave the file and its links alone.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@global_options
@pass_state
def command(state: CliState, targets: tuple[str, ...], keep_file: bool, dry_run: bool, **_: Any) -> None:
    """Remove downloads (by ID or PATH): file, .sha256, .part, placements modfetch made, and their records."""
    with open_db(state.config) as db:
        rows = find_rows(db, targets)
        report = remove_downloads(state.config, db, rows, keep_file=keep_file, dry_run=dry_run)
    echo_removal(state, report, "removed")
