"""``modfetch verify``: re-hash finished files and compare with the recorded SHA-256."""

from __future__ import annotations

from typing import Any

import click

from ..app.status import open_db, select_downloads, verify_paths, verify_rows
from ..errors import IntegrityError, UsageError
from ..state import FINISHED_STATUSES, MISMATCH
from .context import CliState, global_options, pass_state


@click.command("verify")
@click.argument("targets", nargs=-1)
@click.option("--all", "verify_all", is_flag=True, help="Verify every finished download.")
@global_options
@pass_state
def command(state: CliState, targets: tuple[str, ...], verify_all: bool, **_: Any) -> None:
    """Re-hash finished files (--all, IDs or PATHs); exits 1 if any file does not match."""
    if not verify_all and not targets:
        raise UsageError("say what to verify", hint="modfetch verify --all, or an ID or PATH")
    # Each target's download lock is taken while it is hashed: a file being (re-)downloaded is skipped.
    locks = state.config.data_root / "locks"
    with open_db(state.config) as db:
        if verify_all:
            outcomes = verify_rows(db, db.list_downloads(statuses=[*FINISHED_STATUSES, MISMATCH]), locks)
        else:
            ids = [t for t in targets if t.isdigit()]
            paths = [t for t in targets if not t.isdigit()]
            rows = [r for i in ids for r in select_downloads(db, i)]
            outcomes = verify_rows(db, rows, locks) + verify_paths(db, paths, locks)
    bad = 0
    for outcome in outcomes:
        bad += not outcome.ok and not outcome.skipped
        label = "OK" if outcome.ok else "SKIP" if outcome.skipped else "FAIL"
        click.echo(f"{label:<4}  {outcome.row.dest_path}  {outcome.message}")
    if not outcomes:
        click.echo("nothing to verify")
    if bad:
        raise IntegrityError(f"{bad} of {len(outcomes)} file(s) failed verification")
