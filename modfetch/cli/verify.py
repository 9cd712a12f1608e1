"""``modfetch verify``: re-hash finished files and compare with the recorded SHA-256; ``--repair`` mends them."""

from __future__ import annotations

import json
from typing import Any

import click

from ..app.status import MISSING, VerifyOutcome, open_db, select_downloads, verify_paths, verify_rows
from ..errors import IntegrityError, ModfetchError, UsageError
from ..state import FINISHED_STATUSES, MISMATCH
from ..util.sizes import human_size
from . import write_metrics
from .context import CliState, global_options, pass_state


@click.command("verify")
@click.argument("targets", nargs=-1)
@click.option("--all", "verify_all", is_flag=True, help="Verify every finished download.")
@click.option("--repair", is_flag=True,
              help="Mend files that no longer match in place, re-fetching only their damaged chunks.")
@global_options
@pass_state
def command(state: CliState, targets: tuple[str, ...], verify_all: bool, repair: bool, **_: Any) -> None:
    """Re-hash finished files (--all, IDs or PATHs); exits 1 if any file is missing or does not match."""
    try:
        _verify(state, targets, verify_all, repair)
    finally:
        write_metrics(state)  # modfetch_verify_mismatches follows every verify run


def _verify(state: CliState, targets: tuple[str, ...], verify_all: bool, repair: bool) -> None:
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
    bad, hints = 0, []
    for index, outcome in enumerate(outcomes):
        if repair and outcome.message == "MISMATCH" and outcome.row.id:
            outcomes[index] = outcome = _repair(state, outcome)
        bad += not outcome.ok and not outcome.skipped
        if outcome.message == "MISMATCH" and not repair:
            hints.append("modfetch verify --repair mends damaged files in place")
        elif outcome.message == MISSING:
            hints.append("forget deleted files with 'modfetch rm ID' or 'modfetch prune'")
    if state.json_output:  # one JSON list of results on stdout (errors stay JSON lines on stderr)
        click.echo(json.dumps([{"id": o.row.id or None, "path": o.row.dest_path, "ok": o.ok, "skipped": o.skipped,
                                "sha256": o.sha256, "expected": o.row.sha256, "message": o.message}
                               for o in outcomes], indent=2))
    else:
        for outcome in outcomes:
            message = outcome.message
            if message == MISSING:
                message = f"missing (forget it: modfetch rm {outcome.row.id}, or modfetch prune)"
            label = "OK" if outcome.ok else "SKIP" if outcome.skipped else "FAIL"
            click.echo(f"{label:<4}  {outcome.row.dest_path}  {message}")
        if not outcomes:
            click.echo("nothing to verify")
    if bad:
        raise IntegrityError(f"{bad} of {len(outcomes)} file(s) failed verification",
                             hint="; ".join(dict.fromkeys(hints)) or None)


def _repair(state: CliState, outcome: VerifyOutcome) -> VerifyOutcome:
    """Repair one mismatching file; the outcome says what happened (never raises a ModfetchError)."""
    from ..app.repair import repair_download  # imports requests: only when repairing

    try:
        result = repair_download(state.config, outcome.row)
    except ModfetchError as exc:
        return VerifyOutcome(outcome.row, False, outcome.sha256, f"MISMATCH, not repaired: {exc.message}")
    return VerifyOutcome(outcome.row, True, result.sha256,
                         f"repaired (fetched {human_size(result.fetched_bytes)})")
