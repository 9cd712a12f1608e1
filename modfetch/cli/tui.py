"""``modfetch tui``: the live curses dashboard over the state DB (works while other processes download)."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import UsageError
from .context import CliState, global_options, pass_state


@click.command("tui")
@click.option("--interval", type=click.FloatRange(0.2, 60.0), default=1.0, show_default=True,
              help="Seconds between polls of the state DB.")
@global_options
@pass_state
def command(state: CliState, interval: float, **_: Any) -> None:
    """Live dashboard of downloads: q quits, j/k move, d details, / filter, s sort, c completed, ? help."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("modfetch tui needs an interactive terminal",
                         hint="use 'modfetch status --watch' (or 'modfetch status --json') instead")
    from ..tui.screen import run

    code = run(state.config.state_db, interval)
    if code:
        raise click.exceptions.Exit(code)
