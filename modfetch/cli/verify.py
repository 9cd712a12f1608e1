"""``modfetch verify``: re-hash finished files and compare with the recorded SHA-256."""

from __future__ import annotations

import json
from typing import Any

import click

from ..app.status import open_db, select_downloads, verify_paths, verify_rows
from ..errors import IntegrityError, UsageError
from ..state import FINISHED_STATUSES, MISMATCH
from . import write_metrics
from .context import CliState, global_options, pass_state


@click.command("verify")
@click.argument("targets", nargs=-1)
@click.option("--all", "verify_all", is_flag=True, help="Verify every finished download.")
@global_options
@pass_state
def command(state: CliState, targets: tuple[str, ...], verify_all: bool, **_: Any) -> None:
    """Re-hash finished files (--all, IDs or PATHs); exits 1 if any file does not match."""
    try:
        _verify(state, targets, verify_all)
    finally:
        write_metrics(state)  # modfetch_verify_mismatches follows every verify run


def _verify(state: CliState, targets: tuple[str, ...], verify_all: bool) -> None:
    if not verify_all and not targets:
        raise UsageError("say what to verify", hint="modfetch verify --all, or an ID or PATH")
    with open_db(state.config) as db:
        if verify_all:
            outcomes = verify_rows(db, db.list_downloads(statuses=[*FINISHED_STATUSES, MISMATCH]))
        else:
            ids = [t for t in targets if t.isdigit()]
            paths = [t for t in targets if not t.isdigit()]
            rows = [r for i in ids for r in select_downloads(db, i)]
            outcomes = verify_rows(db, rows) + verify_paths(db, paths)
    bad = sum(not outcome.ok for outcome in outcomes)
    if state.json_output:  # one JSON list of results on stdout (errors stay JSON lines on stderr)
        click.echo(json.dumps([{"id": o.row.id or None, "path": o.row.dest_path, "ok": o.ok, "sha256": o.sha256,
                                "expected": o.row.sha256, "message": o.message} for o in outcomes], indent=2))
    else:
        for outcome in outcomes:
            click.echo(f"{'OK' if outcome.ok else 'FAIL':<4}  {outcome.row.dest_path}  {outcome.message}")
        if not outcomes:
            click.echo("nothing to verify")
    if bad:
        raise IntegrityError(f"{bad} of {len(outcomes)} file(s) failed verification")
