"""``modfetch prune``: forget deleted files, remove dangling links modfetch made, delete stale ``.part`` files."""

from __future__ import annotations

from typing import Any

import click

from ..app.prune import prune
from ..app.status import open_db
from ..util.sizes import parse_duration
from .context import CliState, global_options, pass_state
from .rm import echo_removal


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@click.option("--older-than", "older_than", default="7d", show_default=True, metavar="AGE",
              help="Delete .part files of interrupted/failed downloads untouched this long (30m, 12h, 7d, 2w).")
@global_options
@pass_state
def command(state: CliState, dry_run: bool, older_than: str, **_: Any) -> None:
    """Forget downloads whose files are gone, remove their dangling links, delete old .part files."""
    age = parse_duration(older_than)
    with open_db(state.config) as db:
        report = prune(state.config, db, older_than=age, dry_run=dry_run)
    echo_removal(state, report, "pruned")
