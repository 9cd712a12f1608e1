"""The dashboard's logic, free of curses: items from the state DB, speed/ETA, formatting, filtering, sorting,
key handling and the text of every screen.  ``modfetch.tui.screen`` only draws what :meth:`View.render`
returns and feeds :meth:`View.handle_key` the key names it reads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..state import (
    FINISHED_STATUSES,
    INTERRUPTED,
    RUNNING,
    STATUSES,
    ChunkRow,
    DownloadRow,
    PlacementRow,
    StateDB,
    pid_alive,
    progress_fraction,
)
from ..util.redact import redact, redact_url
from .render import chunk_done, cut, details_lines, table_lines

SORTS = ("id", "name", "progress", "speed", "status", "updated")
# Styles a line can ask for; the screen maps them to curses attributes (or to nothing on monochrome).
NORMAL, TITLE, HEADER, SELECTED = "normal", "title", "header", "selected"
FOOTER, ERROR, DIM = "footer", "error", "dim"
_STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}
HELP = """\
modfetch tui - keys

  q           quit
  r           refresh now (the screen also polls every second)
  j / down    next download
  k / up      previous download
  d / Enter   details pane (URL with secrets redacted, path, chunk map, sha256, error, placements)
  Esc         close details / help
  /           filter by substring (Enter applies, Esc clears)
  s           cycle sort: id, name, progress, speed, status, updated
  c           hide / show completed downloads
  ?           this help

press any key to go back"""


@dataclass
class Item:
    """One download as the dashboard shows it."""

    row: DownloadRow
    done: int
    chunks: list[ChunkRow] = field(default_factory=list)
    placements: list[PlacementRow] = field(default_factory=list)
    speed: float | None = None
    eta: float | None = None

    @property
    def id(self) -> int:
        """The download id."""
        return self.row.id

    @property
    def name(self) -> str:
        """The file name, secrets masked (a token can end up in a name taken from a URL)."""
        return redact(Path(self.row.dest_path).name)

    @property
    def fraction(self) -> float | None:
        """0..1, or None when the size is unknown."""
        return progress_fraction(self.row.status, self.row.size, self.done)

    def haystack(self) -> str:
        """What the filter searches (lower-case)."""
        r = self.row
        return " ".join([str(r.id), self.name, r.dest_path, redact_url(r.url), r.status, r.source,
                         r.artifact_type or ""]).lower()


# -- reading the DB --------------------------------------------------------------------------------------
def _part_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def done_bytes(row: DownloadRow, chunks: list[ChunkRow], part_size: int | None) -> int:
    """Bytes on disk: all of a finished file, the chunk rows' sum, or the ``.part`` size (single stream)."""
    if row.status in FINISHED_STATUSES:
        return row.size if row.size is not None else row.bytes_done
    if chunks:
        return sum(chunk_done(c) for c in chunks)
    if row.status == RUNNING and part_size is not None:
        return part_size if row.size is None else min(part_size, row.size)
    return row.bytes_done


def read_items(db: StateDB, detail_id: int | None = None,
               part_size: Callable[[Path], int | None] = _part_size) -> list[Item]:
    """Every download with its progress; chunk rows for unfinished ones, placements for ``detail_id``."""
    items = []
    for row in db.list_downloads():
        if row.status == RUNNING and not pid_alive(row.pid):
            row.status = INTERRUPTED  # read-only view: show what the next writer will record
        wanted = row.status not in FINISHED_STATUSES or row.id == detail_id
        chunks = db.get_chunks(row.id) if wanted else []
        size = part_size(row.part_path) if row.status == RUNNING and not chunks else None
        placements = db.placements(download_id=row.id) if row.id == detail_id else []
        items.append(Item(row, done_bytes(row, chunks, size), chunks, placements))
    return items


class SpeedTracker:
    """Speed from successive polls (smoothed), and ETA from it; only running downloads have a speed."""

    def __init__(self, smoothing: float = 0.5, min_interval: float = 0.2) -> None:
        self.smoothing = smoothing
        self.min_interval = min_interval
        self._last: dict[int, tuple[float, int, float | None]] = {}

    def update(self, items: list[Item], now: float) -> None:
        """Set ``speed`` and ``eta`` on every item."""
        seen: dict[int, tuple[float, int, float | None]] = {}
        for item in items:
            previous = self._last.get(item.id)
            speed: float | None = None
            if item.row.status == RUNNING and previous is not None:
                when, done, last_speed = previous
                elapsed = now - when
                if elapsed < self.min_interval:  # a forced refresh right after a poll: keep the last value
                    seen[item.id] = previous
                    item.speed, item.eta = last_speed, eta_seconds(item, last_speed)
                    continue
                if item.done >= done:
                    instant = (item.done - done) / elapsed
                    speed = instant if last_speed is None else (
                        self.smoothing * instant + (1 - self.smoothing) * last_speed)
            seen[item.id] = (now, item.done, speed)
            item.speed = speed
            item.eta = eta_seconds(item, speed)
        self._last = seen


def eta_seconds(item: Item, speed: float | None) -> float | None:
    """Seconds left at ``speed``; None when unknown (no size, no speed, stalled)."""
    if item.row.status != RUNNING or not item.row.size or not speed or speed <= 0:
        return None
    return max(0.0, (item.row.size - item.done) / speed)


# -- the view --------------------------------------------------------------------------------------------
@dataclass
class Line:
    """One screen line and its style."""

    text: str
    style: str = NORMAL


@dataclass
class View:
    """Everything on screen; mutated by ``set_items`` (each poll) and ``handle_key`` (each key)."""

    items: list[Item] = field(default_factory=list)
    selected_id: int | None = None
    filter_text: str = ""
    filter_buffer: str | None = None  # not None while the user types a filter
    sort_index: int = 0
    hide_completed: bool = False
    mode: str = "list"  # list | details | help
    top: int = 0
    message: str = ""
    db_path: str = ""

    @property
    def sort(self) -> str:
        """The current sort key."""
        return SORTS[self.sort_index]

    def visible(self) -> list[Item]:
        """Items after the completed toggle and the filter, in sort order."""
        items = [i for i in self.items if not (self.hide_completed and i.row.status in FINISHED_STATUSES)]
        needle = self.filter_text.lower().strip()
        if needle:
            items = [i for i in items if needle in i.haystack()]
        return sort_items(items, self.sort)

    def set_items(self, items: list[Item]) -> None:
        """New poll results; the selection stays on the same download when it is still visible."""
        self.items = items
        self._fix_selection()

    def selected(self) -> Item | None:
        """The highlighted item."""
        for item in self.visible():
            if item.id == self.selected_id:
                return item
        return None

    def _fix_selection(self) -> None:
        visible = self.visible()
        if not visible:
            self.selected_id = None
        elif self.selected_id not in {i.id for i in visible}:
            self.selected_id = visible[0].id

    def _move(self, delta: int) -> None:
        visible = self.visible()
        if not visible:
            return
        ids = [i.id for i in visible]
        pos = ids.index(self.selected_id) if self.selected_id in ids else 0
        self.selected_id = ids[max(0, min(len(ids) - 1, pos + delta))]

    def handle_key(self, key: str) -> str | None:
        """Apply one key (``q``, ``up``, ``enter``, ``esc``, ``backspace``, ``/``...); returns ``quit``,
        ``refresh`` (poll now) or None."""
        if self.filter_buffer is not None:
            return self._filter_key(key)
        if key == "q":
            return "quit"
        if self.mode == "help":
            self.mode = "list"
            return None
        self.message = ""
        if key == "r":
            return "refresh"
        if key in ("j", "down"):
            self._move(1)
        elif key in ("k", "up"):
            self._move(-1)
        elif key == "pgdown":
            self._move(10)
        elif key == "pgup":
            self._move(-10)
        elif key == "home":
            self._move(-len(self.items))
        elif key == "end":
            self._move(len(self.items))
        elif key in ("d", "enter"):
            self.mode = "list" if self.mode == "details" else "details"
            return "refresh"  # fetch the selected download's chunks and placements
        elif key == "esc":
            if self.mode != "list":
                self.mode = "list"
            elif self.filter_text:
                self.filter_text = ""
                self._fix_selection()
        elif key == "/":
            self.filter_buffer = self.filter_text
        elif key == "?":
            self.mode = "help"
        elif key == "s":
            self.sort_index = (self.sort_index + 1) % len(SORTS)
            self.message = f"sorted by {self.sort}"
        elif key == "c":
            self.hide_completed = not self.hide_completed
            self.message = "completed hidden" if self.hide_completed else "completed shown"
            self._fix_selection()
        return None

    def _filter_key(self, key: str) -> str | None:
        assert self.filter_buffer is not None
        if key == "enter":
            self.filter_text = self.filter_buffer
            self.filter_buffer = None
            self._fix_selection()
        elif key == "esc":
            self.filter_text = ""
            self.filter_buffer = None
            self._fix_selection()
        elif key == "backspace":
            self.filter_buffer = self.filter_buffer[:-1]
        elif len(key) == 1 and key.isprintable():
            self.filter_buffer += key
        return None

    # -- rendering -------------------------------------------------------------------------------------
    def title(self, width: int) -> str:
        """The top line."""
        running = sum(1 for i in self.items if i.row.status == RUNNING)
        parts = [f"modfetch: {len(self.items)} downloads, {running} running", f"sort:{self.sort}"]
        if self.filter_text:
            parts.append(f"filter:{self.filter_text!r}")
        if self.hide_completed:
            parts.append("completed hidden")
        return cut("  ".join(parts), width)

    def footer(self, width: int) -> Line:
        """The bottom line: the filter prompt, a message, or the key hints."""
        if self.filter_buffer is not None:
            return Line(cut(f"/{self.filter_buffer}_   (Enter applies, Esc clears)", width), FOOTER)
        if self.message:
            return Line(cut(self.message, width), ERROR if self.message.startswith("!") else FOOTER)
        hints = "q quit  r refresh  j/k move  d details  / filter  s sort  c completed  ? help"
        return Line(cut(hints, width), FOOTER)

    def render(self, width: int, height: int, now: float | None = None) -> list[Line]:
        """Exactly ``height`` lines (or fewer when ``height`` < 1), none wider than ``width``."""
        now = time.time() if now is None else now
        if width <= 0 or height <= 0:
            return []
        if height == 1:
            return [self.footer(width) if self.filter_buffer is not None else Line(self.title(width), TITLE)]
        if self.mode == "help":
            lines = [Line(cut(t, width)) for t in HELP.splitlines()]
            return self._pad(lines[:height], width, height)
        lines = [Line(self.title(width), TITLE)]
        body = max(0, height - 2)
        visible = self.visible()
        selected = self.selected()
        detail: list[str] = []
        if self.mode == "details" and selected is not None:
            detail = details_lines(selected, width, now)
        list_rows = body
        if detail:
            list_rows = min(max(2, body // 3), body) if body >= 12 else 0
        if list_rows:
            shown = max(0, list_rows - 1)
            self._scroll(visible, shown)
            # Format only the rows on screen: this runs every frame, and a DB can hold thousands of downloads.
            page = visible[self.top:self.top + shown]
            header, rows = table_lines(page, width, now)
            lines.append(Line(header, HEADER))
            for item, text in zip(page, rows, strict=True):
                lines.append(Line(text, SELECTED if item.id == self.selected_id else NORMAL))
            if not visible and shown:
                empty = "no downloads match the filter" if self.items else (
                    self.message_empty())
                lines.append(Line(cut(empty, width), DIM))
        if detail:
            room = body - (len(lines) - 1)
            lines.extend(Line(t) for t in detail[:max(0, room)])
        lines = lines[: max(0, height - 1)]
        lines = self._pad(lines, width, height - 1)
        if height >= 2:
            lines.append(self.footer(width))
        return lines

    def message_empty(self) -> str:
        """What an empty table says."""
        return "no downloads yet" + (f" (state: {self.db_path})" if self.db_path else "")

    def _scroll(self, visible: list[Item], shown: int) -> None:
        if shown <= 0:
            self.top = 0
            return
        ids = [i.id for i in visible]
        pos = ids.index(self.selected_id) if self.selected_id in ids else 0
        if pos < self.top:
            self.top = pos
        elif pos >= self.top + shown:
            self.top = pos - shown + 1
        self.top = max(0, min(self.top, max(0, len(visible) - shown)))

    @staticmethod
    def _pad(lines: list[Line], width: int, height: int) -> list[Line]:
        out = [Line(cut(line.text, width), line.style) for line in lines]
        while len(out) < height:
            out.append(Line(""))
        return out


def sort_items(items: list[Item], key: str) -> list[Item]:
    """Sort for the table: id/updated newest first, name A-Z, progress/speed highest first, status active
    first."""
    if key == "name":
        return sorted(items, key=lambda i: (i.name.lower(), -i.id))
    if key == "progress":
        return sorted(items, key=lambda i: (-(i.fraction if i.fraction is not None else -1), -i.id))
    if key == "speed":
        return sorted(items, key=lambda i: (-(i.speed or 0.0), -i.id))
    if key == "status":
        return sorted(items, key=lambda i: (_STATUS_RANK.get(i.row.status, 9), -i.id))
    if key == "updated":
        return sorted(items, key=lambda i: (-i.row.updated_at, -i.id))
    return sorted(items, key=lambda i: -i.id)


__all__ = ["HELP", "SORTS", "Item", "Line", "SpeedTracker", "View", "done_bytes", "eta_seconds", "read_items",
           "sort_items"]
