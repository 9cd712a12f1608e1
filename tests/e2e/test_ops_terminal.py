"""Issue 16 items 8 and 9 in a real terminal (tmux): ``--pick`` leaves the terminal settings exactly as it
found them (``stty -a`` before and after, whether the user chooses, cancels or presses Ctrl-C), and progress
bars and log lines never overwrite each other (the final line appears once, after the bar closed)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch
from tests.e2e.tmux import Tmux
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.civitai import CivitaiLookalike


@pytest.fixture
def civitai(mf: Modfetch) -> Iterator[CivitaiLookalike]:
    with CivitaiLookalike() as civ:
        mf.write_config(sources={"civitai": {"endpoint": civ.url}})
        yield civ


def stty_wrapped(argv: list[str], before: Path, after: Path) -> list[str]:
    """``sh -c``: record ``stty -a``, run argv in the same terminal, record ``stty -a`` again."""
    script = (f"trap : INT; stty -a > {shlex.quote(str(before))}; {shlex.join(argv)}; rc=$?; "
              f"stty -a > {shlex.quote(str(after))}; exit $rc")
    return ["sh", "-c", script]


@pytest.mark.parametrize(("action", "status"), [("choose", 0), ("cancel", 2), ("ctrl-c", 130)])
def test_pick_restores_the_terminal_exactly(mf: Modfetch, civitai: CivitaiLookalike, tmp_path: Path,
                                            action: str, status: int) -> None:
    before, after = tmp_path / "before.txt", tmp_path / "after.txt"
    argv = mf.command("--quiet", "download", "--pick", "civitai://model/4201?file=realistic",
                      "--dest", str(mf.dest))
    session = Tmux(tmp_path, 120, 20).run(stty_wrapped(argv, before, after), env=os.environ.copy())
    try:
        session.wait_text("realisticVision_v60B1_vae.safetensors")
        if action == "choose":
            session.type("2")
            session.send("Enter")
        elif action == "cancel":
            session.send("q")
            session.send("Enter")
        else:
            session.send("C-c")
        assert session.exit_status(timeout=30) == status
    finally:
        session.kill()
    assert before.read_text() == after.read_text()
    assert "-onlcr" not in after.read_text()


def test_final_line_is_not_drawn_over_the_progress_bar(mf: Modfetch, faulty_server: type[FaultyServer],
                                                       tmp_path: Path) -> None:
    """A trickled download shows its bar; warnings logged while it runs and the final ``done`` line each get
    their own line in the captured pane, and no bar is left half-drawn on the same line."""
    server = faulty_server(size=2 * MiB, rate=1.5 * MiB, cut_after=300_000)
    argv = mf.command("download", "--concurrency", "2", "--dest", str(mf.dest), server.url)
    # The pane must outlive the program to be captured: the shell prints the status, then waits.
    keep = ["sh", "-c", f"{shlex.join(argv)}; echo \"[exit $?]\"; sleep 120"]
    session = Tmux(tmp_path, 160, 40).run(keep, env=os.environ.copy())
    try:
        screen = session.wait_text("[exit ", timeout=60)
    finally:
        session.kill()
    assert "[exit 0]" in screen, screen
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    bars = [i for i, line in enumerate(lines) if "%|" in line]
    done = [i for i, line in enumerate(lines) if " done: " in line]
    warns = [i for i, line in enumerate(lines) if " WARN " in line]
    # One bar left on screen, closed at 100%; no stale bar above it, nothing drawn into it.
    assert len(bars) == 1 and "100%|" in lines[bars[0]], screen
    assert lines[bars[0]].startswith("file.bin: 100%"), screen
    # The retry warning got its own line above the bar; the final line appears once, right after the bar.
    assert warns and warns[-1] < bars[0], screen
    assert len(done) == 1 and done[0] == bars[0] + 1, screen
    assert lines[done[0]][:8].count(":") == 2, screen  # starts with its own HH:MM:SS, not bar leftovers
    assert any(line == str(mf.dest / "file.bin") for line in lines[done[0]:]), screen
