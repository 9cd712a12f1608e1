"""The thin curses layer of ``modfetch tui``: poll the DB (read-only), draw ``View.render``, map keys.

``curses.wrapper`` restores the terminal on every exit path (q, an exception, Ctrl-C, SIGTERM raised as
KeyboardInterrupt by the CLI).  Colours are used only when the terminal has them and ``NO_COLOR`` is unset.
"""

from __future__ import annotations

import contextlib
import curses
import os
import sqlite3
import time
from pathlib import Path

from ..errors import ModfetchError
from ..state import StateDB, open_state
from .model import DIM, ERROR, FOOTER, HEADER, SELECTED, TITLE, SpeedTracker, View, read_items

_KEYS = {
    curses.KEY_UP: "up", curses.KEY_DOWN: "down", curses.KEY_NPAGE: "pgdown", curses.KEY_PPAGE: "pgup",
    curses.KEY_HOME: "home", curses.KEY_END: "end", curses.KEY_ENTER: "enter", 10: "enter", 13: "enter",
    27: "esc", curses.KEY_BACKSPACE: "backspace", 127: "backspace", 8: "backspace",
    curses.KEY_RESIZE: "resize",
}


def key_name(code: int) -> str | None:
    """A curses key code as the name ``View.handle_key`` understands (None for nothing/unknown)."""
    if code in _KEYS:
        return _KEYS[code]
    if 32 <= code < 127:
        return chr(code)
    return None


class _Poller:
    """Holds the read-only connection; reopens it when the DB appears or after an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: StateDB | None = None
        self.speeds = SpeedTracker()

    def poll(self, view: View) -> None:
        try:
            if self.db is None:
                self.db = open_state(self.path, readonly=True)
            detail = view.selected_id if view.mode == "details" else None
            view.set_items(read_items(self.db, detail_id=detail))
            self.speeds.update(view.items, time.monotonic())
            if view.message.startswith("!"):
                view.message = ""
        except ModfetchError as exc:
            self.close()
            view.message = f"! {exc.message}; waiting"
        except sqlite3.Error as exc:
            self.close()
            view.message = f"! cannot read {self.path}: {exc}; retrying"

    def close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None


def _styles() -> dict[str, int]:
    styles = {TITLE: curses.A_BOLD, HEADER: curses.A_BOLD | curses.A_UNDERLINE, SELECTED: curses.A_REVERSE,
              FOOTER: curses.A_REVERSE, ERROR: curses.A_BOLD, DIM: curses.A_DIM}
    if curses.has_colors() and not os.environ.get("NO_COLOR"):
        try:
            curses.start_color()
            curses.use_default_colors()
            curses.init_pair(1, curses.COLOR_CYAN, -1)
            curses.init_pair(2, curses.COLOR_RED, -1)
            styles[TITLE] |= curses.color_pair(1)
            styles[ERROR] |= curses.color_pair(2)
        except curses.error:
            pass
    return styles


def _draw(stdscr: curses.window, view: View, styles: dict[str, int]) -> None:
    height, width = stdscr.getmaxyx()
    stdscr.erase()
    for y, line in enumerate(view.render(width, height)):
        # Writing the bottom-right cell moves the cursor off-screen (curses.error): stop one short there.
        limit = width - 1 if y == height - 1 else width
        with contextlib.suppress(curses.error):
            stdscr.addnstr(y, 0, line.text, max(0, limit), styles.get(line.style, curses.A_NORMAL))
    stdscr.noutrefresh()
    curses.doupdate()


def _loop(stdscr: curses.window, path: Path, interval: float) -> int:
    with contextlib.suppress(curses.error):
        curses.curs_set(0)
    styles = _styles()
    stdscr.keypad(True)
    stdscr.timeout(100)
    view = View(db_path=str(path))
    poller = _Poller(path)
    last_poll = 0.0
    try:
        while True:
            now = time.monotonic()
            if now - last_poll >= interval:
                poller.poll(view)
                last_poll = now
            _draw(stdscr, view, styles)
            name = key_name(stdscr.getch())
            if name is None:
                continue
            if name == "resize":
                with contextlib.suppress(curses.error):
                    curses.update_lines_cols()
                continue
            action = view.handle_key(name)
            if action == "quit":
                return 0
            if action == "refresh":
                poller.poll(view)
                last_poll = time.monotonic()
    finally:
        poller.close()


def run(path: Path, interval: float = 1.0) -> int:
    """Run the dashboard until ``q`` (or Ctrl-C); returns the exit status (0)."""
    os.environ.setdefault("ESCDELAY", "25")  # Esc closes things at once, not after a second
    try:
        return int(curses.wrapper(_loop, path, interval))
    except KeyboardInterrupt:
        return 0


__all__ = ["key_name", "run"]
