"""The thin curses layer of ``modfetch tui``: poll the DB (read-only), draw ``View.render``, map keys.

``curses.wrapper`` restores the terminal on every exit path (q, an exception, Ctrl-C, SIGTERM raised as
KeyboardInterrupt by the CLI, SIGHUP and SIGQUIT raised here).  Colours are used only when the terminal has them
and ``NO_COLOR`` is unset.
"""

from __future__ import annotations

import contextlib
import curses
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModfetchError, UsageError
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


# How long one poll waits for a writer's lock: the screen and its keys stay live while a process (or a user's
# sqlite3 shell) holds the DB; the next poll tries again.
POLL_BUSY_TIMEOUT = 0.25


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Poller:
    """Holds the read-only connection; reopens it when the DB appears, is replaced, or after an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: StateDB | None = None
        self.identity: tuple[int, int] | None = None
        self.speeds = SpeedTracker()

    def poll(self, view: View) -> None:
        try:
            # An open connection keeps reading a deleted or replaced file forever: follow the path instead.
            if self.db is not None and _identity(self.path) != self.identity:
                self.close()
            if self.db is None:
                self.identity = _identity(self.path)
                self.db = open_state(self.path, readonly=True, busy_timeout=POLL_BUSY_TIMEOUT)
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
        except (TypeError, ValueError, OverflowError) as exc:  # a hand-edited chunk row, say: say so, keep going
            self.close()
            view.message = f"! unreadable data in {self.path}: {exc}; retrying"

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


class _Signalled(BaseException):
    """SIGHUP or SIGQUIT arrived: unwind through ``curses.wrapper`` so it restores the terminal (a
    BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, _frame: object) -> None:
    raise _Signalled(signum)


@contextlib.contextmanager
def _restoring_signals() -> Iterator[None]:
    """Their default actions kill the process with the terminal still in cbreak/no-echo mode and the
    alternate screen up (Ctrl-\\ sends SIGQUIT; closing an ssh session or ``kill -HUP`` sends SIGHUP)."""
    previous = {signum: signal.signal(signum, _raise_signalled) for signum in (signal.SIGHUP, signal.SIGQUIT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def check_terminal() -> None:
    """UsageError unless ``$TERM`` names a terminal curses can drive (known, with cursor addressing)."""
    term = os.environ.get("TERM", "")
    try:
        curses.setupterm(term or None)
        addressable = curses.tigetstr("cup") is not None
    except curses.error:
        addressable = False
    if not addressable:
        raise UsageError(f"modfetch tui cannot drive this terminal (TERM={term or 'unset'})",
                         hint="set TERM to your terminal (e.g. xterm-256color), or use 'modfetch status --watch'")


def run(path: Path, interval: float = 1.0) -> int:
    """Run the dashboard until ``q`` (or Ctrl-C); returns the exit status (0, or 128 + SIGHUP/SIGQUIT)."""
    os.environ.setdefault("ESCDELAY", "25")  # Esc closes things at once, not after a second
    check_terminal()
    try:
        with _restoring_signals():
            return int(curses.wrapper(_loop, path, interval))
    except KeyboardInterrupt:
        return 0
    except _Signalled as exc:
        return 128 + exc.signum


__all__ = ["check_terminal", "key_name", "run"]
