"""The interactive picker: when a URI matches several files or versions and ``--pick`` is given on a terminal,
a curses-menu selection lists the candidates (name, size, format) and the chosen one is downloaded.

Without a terminal or without ``--pick`` the :class:`~modfetch.errors.AmbiguousChoiceError` propagates and the
CLI prints its one-line message listing the candidates.
"""

from __future__ import annotations

import contextlib
import curses
import os
import shutil
import sys
import termios
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import AmbiguousChoiceError, Candidate, UsageError
from ..util.sizes import human_size

R = TypeVar("R")
MAX_ROUNDS = 5  # model -> version -> file: a few nested choices at most


def can_pick() -> bool:
    """An interactive menu needs a terminal on both stdin and stdout."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def candidate_line(candidate: Candidate, width: int = 100) -> str:
    """``name  1.9 GiB  SafeTensor`` cut to ``width`` characters."""
    parts = [candidate.label]
    if candidate.size is not None:
        parts.append(human_size(candidate.size))
    if candidate.fmt:
        parts.append(candidate.fmt)
    text = "  ".join(parts)
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


@contextlib.contextmanager
def terminal_restored() -> Iterator[None]:
    """Put the terminal's settings back exactly as they were, however the block ends (choice, cancel, Ctrl-C).

    curses' endwin() restores only what curses thinks it changed: after curses-menu the output post-processing
    (``onlcr``) stayed off, so every later line started where the previous one ended."""
    saved: list[tuple[int, list[Any]]] = []
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError, termios.error):
            fd = stream.fileno()
            if os.isatty(fd) and all(fd != known for known, _ in saved):
                saved.append((fd, termios.tcgetattr(fd)))
    try:
        yield
    finally:
        for fd, attrs in saved:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, attrs)


def pick_candidate(candidates: list[Candidate],
                   title: str = "modfetch: choose what to download") -> Candidate | None:
    """Show a selection menu; the chosen candidate, or None when the user picked "Exit" (q then Enter)."""
    from cursesmenu import CursesMenu
    from cursesmenu.items.selection_item import SelectionItem

    class _Menu(CursesMenu):  # type: ignore[misc]
        def _set_up_colors(self) -> None:
            # curses-menu assumes colours; monochrome terminals get reverse video instead.
            if curses.has_colors():
                super()._set_up_colors()
            else:
                self.highlight = curses.A_REVERSE

    width = max(20, shutil.get_terminal_size((80, 24)).columns - 10)
    subtitle = "arrows/digits move, Enter downloads, q then Enter cancels"
    menu = _Menu(title=title[:width], subtitle=subtitle[:width], show_exit_item=True)
    for index, candidate in enumerate(candidates):
        menu.items.append(SelectionItem(text=candidate_line(candidate, width), index=index, should_exit=True))
    # curses-menu registers an atexit "reset" that would wipe what modfetch prints afterwards: opt out.
    os.environ.setdefault("CURSES_MENU_PID", str(os.getpid()))
    with terminal_restored():
        try:
            choice = menu.show()
        except KeyboardInterrupt:
            with contextlib.suppress(curses.error):
                curses.endwin()
            raise
    if choice is None or not isinstance(choice, int) or not 0 <= choice < len(candidates):
        return None
    return candidates[choice]


def with_picker(run: Callable[[str], R], uri: str, pick: bool,
                chooser: Callable[[list[Candidate]], Candidate | None] | None = None) -> R:
    """``run(uri)``; on an ambiguity with ``pick`` on a terminal, ask and run the chosen candidate's URI."""
    chooser = chooser or pick_candidate
    for _ in range(MAX_ROUNDS):
        try:
            return run(uri)
        except AmbiguousChoiceError as exc:
            if not pick:
                raise
            if not can_pick():
                exc.hint = "--pick needs a terminal; pass one of the listed URIs instead"
                raise
            choice = chooser(exc.candidates)
            if choice is None:
                raise UsageError("nothing chosen",
                                 hint="rerun with --pick, or pass one of the listed URIs") from None
            uri = choice.uri
    raise UsageError("too many nested choices", hint="pass a more specific URI")


__all__ = ["can_pick", "candidate_line", "pick_candidate", "with_picker"]
