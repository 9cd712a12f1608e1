"""Black box: the installed ``modfetch tui`` (and ``status``) in a real terminal (tmux) against hostile state DBs,
hostile terminals and signals.  The rule: a clear one-line error or a working screen, never a traceback, a crash
or a terminal left broken; nothing from the DB reaches the terminal as an escape sequence; no token on screen.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modfetch.state import FAILED, INTERRUPTED, open_state
from tests.conftest import assert_clean_error
from tests.e2e.tmux import Tmux, tmux_bin

TOKEN = "hf_BlackBoxTuiToken0123456789"
TIME = re.compile(r"\d\d:\d\d:\d\d\s*$")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., Tmux]]:
    tmux_bin()
    sessions: list[Tmux] = []

    def start(argv: list[str], width: int = 100, height: int = 24, **env: str) -> Tmux:
        session = Tmux(tmp_path, width, height).run(argv, env={**os.environ, **env})
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.kill()


def _shell(mf, script: str) -> list[str]:
    """``sh -c SCRIPT`` with ``$MF`` the installed modfetch; the pane stays up after it (to read the screen)."""
    return ["env", f"MF={' '.join(mf.command())}", "sh", "-c", script + "; exec sleep 60"]


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _wait_pid_file(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"no pid in {path}")


def test_escape_nul_newline_and_wide_names_stay_in_their_cells(mf, tmux) -> None:
    db = open_state(mf.state_db)
    db.create_download("https://h/a", "/d/ansi\x1b[31mred.bin", size=10, status=FAILED,
                       error="boom \x1b[2J\x1b]0;TITLE\x07 after\nsecond\ttab\x00nul")
    db.create_download("https://h/b", "/d/宽字符模型文件名字很长很长很长很长很长很长.bin", size=2**40,
                       bytes_done=2**41, status=INTERRUPTED)
    db.create_download("https://h/c", "/d/emoji😀🚀💥\u202eevil.gguf", status=INTERRUPTED)
    db.close()
    tui = tmux(mf.command("tui"), width=100, height=22)
    screen = tui.wait_text("emoji")
    rows = [line for line in screen.splitlines() if " http " in line]
    assert len(rows) == 3, screen
    for line in rows:  # a wide name must not push the last column off the screen
        assert TIME.search(line) and _columns(line.rstrip()) <= 100, screen
    assert "\u202e" not in screen and "ansi?[31m" in screen
    tui.send("End", "d")  # details of download 1: the error with ESC, NUL, newline and tab
    screen = tui.wait_text("Download 1:")
    assert "boom ?[2J?]0;TITLE? after second tab?nul" in screen, screen
    tui.type("q")
    assert tui.exit_status() == 0


def test_status_table_never_sends_escape_sequences_to_the_terminal(mf, tmux) -> None:
    db = open_state(mf.state_db)
    db.create_download("https://h/a", "/d/ansi\x1b[2J\x1b[31mclear.bin", size=10, status=FAILED)
    db.close()
    tui = tmux(_shell(mf, "echo MARKER-BEFORE; $MF status; echo EXIT=$?"), width=120, height=10)
    screen = tui.wait_text("EXIT=")
    assert "MARKER-BEFORE" in screen, screen  # "\x1b[2J" would have cleared it
    assert "ansi?[2J?[31mclear.bin" in screen and "EXIT=0" in screen


def test_newer_schema_is_reported_not_a_crash(mf, tmux) -> None:
    open_state(mf.state_db).close()
    conn = sqlite3.connect(mf.state_db)
    conn.execute("ALTER TABLE downloads ADD COLUMN from_the_future TEXT")
    conn.execute("INSERT INTO downloads (url, dest_path, created_at, updated_at) VALUES ('u', '/d/x', 0, 0)")
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    tui = tmux(mf.command("tui"), width=400)
    tui.wait_text("is from a newer modfetch (schema 7)")
    tui.type("q")
    assert tui.exit_status() == 0


def test_absurd_numbers_crash_neither_the_tui_nor_status(mf, tmux) -> None:
    open_state(mf.state_db).close()
    conn = sqlite3.connect(mf.state_db)
    rows = [("/d/text-size.bin", "'abc'", "5", "0"), ("/d/inf-size.bin", "9e999", "-9e999", "'x'"),
            ("/d/far-future.bin", "1e300", "-5", "1e20"), ("/d/negative.bin", "-100", "50", "-1e20")]
    for path, size, done, updated in rows:
        conn.execute("INSERT INTO downloads (url, dest_path, size, bytes_done, status, created_at, updated_at, "
                     f"started_at) VALUES ('u', ?, {size}, {done}, 'pending', 0, {updated}, {updated})", (path,))
    conn.commit()
    conn.close()
    tui = tmux(mf.command("tui"), width=120)
    screen = tui.wait_text("4 downloads")
    assert all(name in screen for name in ("text-size.bin", "inf-size.bin", "far-future.bin", "negative.bin"))
    assert "-100" not in screen and "%" not in screen.split("\n", 2)[2].split("q quit")[0]
    tui.send("End", "d")
    tui.wait_text("Download ")
    tui.type("q")
    assert tui.exit_status() == 0

    table = mf.run("status")
    assert table.returncode == 0 and "far-future.bin" in table.stdout, table.stderr
    assert "-50.0%" not in table.stdout
    listing = mf.run("status", "--json")
    assert listing.returncode == 0, listing.stderr

    def strict(constant: str) -> None:
        raise AssertionError(f"status --json printed {constant}, which is not JSON")

    assert len(json.loads(listing.stdout, parse_constant=strict)) == 4


def test_keys_work_while_another_process_holds_the_db_locked(mf, tmux) -> None:
    db = open_state(mf.state_db)
    db.create_download("https://h/a", "/d/a.bin", size=10, status=FAILED)
    db.close()
    # A rollback-journal DB (a user's sqlite3 shell can switch it) with an exclusive lock blocks every reader.
    conn = sqlite3.connect(mf.state_db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("BEGIN EXCLUSIVE")
    try:
        tui = tmux(mf.command("tui"), width=400)
        tui.wait_text("is locked by another process", timeout=8)
        started = time.monotonic()
        tui.type("q")
        assert tui.exit_status(timeout=5) == 0
        assert time.monotonic() - started < 3
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_follows_a_deleted_and_recreated_db(mf, tmux) -> None:
    db = open_state(mf.state_db)
    db.create_download("https://h/old", "/d/old.bin", size=10, status=FAILED)
    db.close()
    tui = tmux(mf.command("tui", "--interval", "0.2"))
    tui.wait_text("old.bin")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{mf.state_db}{suffix}").unlink(missing_ok=True)
    tui.wait_text("no state database")
    db = open_state(mf.state_db)
    db.create_download("https://h/new", "/d/brand-new.bin", size=10, status=FAILED)
    db.close()
    screen = tui.wait_text("brand-new")
    assert "old.bin" not in screen
    tui.type("q")
    assert tui.exit_status() == 0


@pytest.mark.parametrize("term", ["dumb", "no-such-terminal-xyz"])
def test_refuses_terminals_it_cannot_drive_in_one_line(mf, tmux, term: str) -> None:
    tui = tmux(_shell(mf, f"TERM={term} $MF tui; echo EXIT=$?"))
    screen = tui.wait_text("EXIT=")
    assert "EXIT=2" in screen, screen
    assert_clean_error(screen.split("EXIT=")[0], "terminal", term)


def test_without_a_terminal_is_one_clear_line() -> None:
    from tests.conftest import modfetch_command

    result = subprocess.run([*modfetch_command(), "tui"], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert_clean_error(result.stderr, "interactive terminal")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGHUP, 129), (signal.SIGQUIT, 131), (signal.SIGTERM, 0)])
def test_terminal_is_restored_after_signals(mf, tmux, tmp_path: Path, signum: int, code: int) -> None:
    before, after, pid_file = tmp_path / "before", tmp_path / "after", tmp_path / "sh.pid"
    tui = tmux(_shell(mf, f"echo $$ > {pid_file}; stty -g > {before}; $MF tui; echo EXIT=$?; stty -g > {after}"))
    tui.wait_text("0 running")
    shell = _wait_pid_file(pid_file)
    (child,) = _children(shell)
    os.kill(child, signum)
    screen = tui.wait_text("EXIT=")
    assert f"EXIT={code}" in screen, screen
    tui.wait_for(lambda _s: after.exists() and bool(after.read_text().strip()), what="stty after")
    assert after.read_text() == before.read_text()  # echo, icanon, onlcr... all back
    assert "0 running" not in screen  # the alternate screen is gone


def test_tokens_never_reach_the_screen(mf, tmux) -> None:
    db = open_state(mf.state_db)
    row = db.create_download(f"https://h/{TOKEN}/m?token={TOKEN}", f"/d/{TOKEN}-model.bin", size=10,
                             status=FAILED, error=f"HTTP 401 Authorization: Bearer {TOKEN}")
    db.record_placement(row.id, row.dest_path, f"/apps/{TOKEN}/model.bin", app="comfyui", mode="symlink",
                        artifact_type=None)
    db.close()
    tui = tmux(mf.command("tui"), width=160, HF_TOKEN=TOKEN)
    screen = tui.wait_text("-model.bin")
    tui.send("d")
    details = tui.wait_text("comfyui")
    for text in (screen, details):
        assert "BlackBoxTui" not in text, text
    assert "***-model.bin" in details and "/apps/***/model.bin" in details
    tui.type("q")
    assert tui.exit_status() == 0


def test_tiny_sizes_resizes_and_key_bursts(mf, tmux) -> None:
    db = open_state(mf.state_db)
    for i in range(300):
        db.create_download(f"https://h/{i}", f"/d/file-{i}.bin", size=i + 1, status=FAILED)
    db.close()
    tui = tmux(mf.command("tui"), width=100, height=24)
    tui.wait_text("300 downloads")
    for width, height in [(1, 1), (10, 3), (2, 1), (5, 2), (200, 60)]:
        tui.resize(width, height)
        tui.send(*["j"] * 5, "d", "?", "x", "s", "End", "Home", "PageDown")
    tui.resize(100, 24)
    tui.send("Escape")
    tui.wait_text("300 downloads")
    tui.type("q")
    assert tui.exit_status() == 0
