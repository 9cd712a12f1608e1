"""Text for the dashboard: number formats, progress bars, the chunk map, the table and the details pane."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..failures import status_label
from ..state import CHUNK_COMPLETE, RUNNING, ChunkRow
from ..util import termtext
from ..util.redact import redact, redact_url
from ..util.sizes import human_size

if TYPE_CHECKING:
    from .model import Item


def chunk_done(c: ChunkRow) -> int:
    """Bytes of a chunk on disk."""
    return c.length if c.status == CHUNK_COMPLETE else max(0, min(c.bytes_done, c.length))


# -- formatting ------------------------------------------------------------------------------------------
def fmt_speed(speed: float | None) -> str:
    """``12.3 MiB/s``, or blank."""
    return "" if speed is None else human_size(speed) + "/s"


def fmt_duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``, ``3d04h``; blank when unknown."""
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_age(then: float | None, now: float) -> str:
    """``5s ago``-style for today's events is too jumpy; show ``HH:MM:SS`` today, else the date."""
    if not then:
        return ""
    if time.strftime("%Y-%m-%d", time.localtime(then)) == time.strftime("%Y-%m-%d", time.localtime(now)):
        return time.strftime("%H:%M:%S", time.localtime(then))
    return time.strftime("%Y-%m-%d", time.localtime(then))


def progress_bar(fraction: float | None, width: int) -> str:
    """``[####......]`` of total ``width`` (ASCII, so any terminal shows it)."""
    inner = max(0, width - 2)
    if fraction is None:
        return "[" + "?" * inner + "]" if inner else ""
    filled = round(fraction * inner)
    return "[" + "#" * filled + "." * (inner - filled) + "]"


def chunk_map(chunks: list[ChunkRow], size: int | None, width: int) -> str:
    """One character per slice of the file: ``#`` all on disk, ``+`` partly, ``.`` nothing yet."""
    if width <= 0:
        return ""
    if not chunks or not size:
        return ""
    done_ranges = [(c.start, c.start + chunk_done(c)) for c in chunks]
    cells = []
    for i in range(width):
        lo, hi = size * i // width, max(size * (i + 1) // width, size * i // width + 1)
        covered = sum(max(0, min(hi, e) - max(lo, s)) for s, e in done_ranges)
        cells.append("#" if covered >= hi - lo else "+" if covered > 0 else ".")
    return "".join(cells)


def cut(text: str, width: int) -> str:
    """Fit ``text`` into ``width`` terminal columns, marking the cut with ``~``; control and bidi characters
    become ``?`` (every line on screen passes through here, so DB text never reaches the terminal raw)."""
    return termtext.cut(text, width)


# -- the table -------------------------------------------------------------------------------------------
# (name, width, priority: lower survives longer on narrow terminals, right-aligned)
_COLUMNS = [("ID", 4, 0, True), ("SOURCE", 11, 6, False), ("SIZE", 9, 3, True), ("PROG", 6, 1, True),
            ("BAR", 12, 5, False), ("SPEED", 11, 4, True), ("ETA", 7, 4, True), ("STATUS", 11, 2, False),
            ("UPDATED", 10, 7, False)]
_FILE_MIN = 10


def columns_for(width: int) -> list[tuple[str, int, bool]]:
    """The columns that fit ``width`` (FILE flexes), in display order."""
    chosen = list(_COLUMNS)
    while chosen and sum(c[1] + 1 for c in chosen) + _FILE_MIN > width:
        chosen.remove(max(chosen, key=lambda c: c[2]))
    layout = [(name, w, right) for name, w, _p, right in chosen]
    file_width = max(1, width - sum(w + 1 for _n, w, _r in layout))
    index = 1 if layout and layout[0][0] == "ID" else 0
    layout.insert(index, ("FILE", file_width, False))
    return layout


def _cell(item: Item, name: str, width: int, now: float) -> str:
    r = item.row
    if name == "ID":
        return str(r.id)
    if name == "FILE":
        return item.name
    if name == "SOURCE":
        return r.source
    if name == "SIZE":
        return human_size(r.size) if r.size is not None else "?"
    if name == "PROG":
        frac = item.fraction
        return "?" if frac is None else f"{frac * 100:.1f}%" if frac < 1 else "100%"
    if name == "BAR":
        return progress_bar(item.fraction, width)
    if name == "SPEED":
        return fmt_speed(item.speed)
    if name == "ETA":
        return fmt_duration(item.eta)
    if name == "STATUS":
        return status_label(r, compact=True)  # e.g. "unreachable"; the details pane says "failed" too
    if name == "UPDATED":
        return fmt_age(r.updated_at, now)
    return ""


def table_lines(items: list[Item], width: int, now: float) -> tuple[str, list[str]]:
    """Header and one line per item, each exactly ``width`` wide."""
    layout = columns_for(width)

    def line(values: list[str]) -> str:
        # Padding by columns, not characters: a CJK or emoji file name must not push later columns right.
        parts = [termtext.fit(value, w, right) for (_name, w, right), value in zip(layout, values, strict=True)]
        return termtext.fit(" ".join(parts), width)

    header = line(["" if n == "BAR" else n for n, _w, _r in layout])
    rows = [line([_cell(item, n, w, now) for n, w, _r in layout]) for item in items]
    return header, rows


def details_lines(item: Item, width: int, now: float) -> list[str]:
    """The details pane for one download."""
    r = item.row
    frac = item.fraction
    lines = [f"Download {r.id}: {item.name}"]

    def add(label: str, value: str | None) -> None:
        if value:
            lines.append(f"  {label:<10}{redact(value)}")

    add("status", r.status + (f" (pid {r.pid})" if r.status == RUNNING and r.pid else ""))
    add("source", r.source + (f"   type {r.artifact_type}" if r.artifact_type else ""))
    add("url", redact_url(r.url))
    if r.resolved_url and r.resolved_url != r.url:
        add("resolved", redact_url(r.resolved_url))
    add("path", r.dest_path)
    done = f"{human_size(item.done)}" + (f" ({frac * 100:.1f}%)" if frac is not None else "")
    add("size", f"{human_size(r.size)}   done {done}")
    if item.speed is not None or item.eta is not None:
        add("speed", f"{fmt_speed(item.speed) or '-'}   ETA {fmt_duration(item.eta) or '-'}")
    add("sha256", r.sha256)
    if r.expected_sha256 and r.expected_sha256 != r.sha256:
        add("expected", r.expected_sha256)
    times = []
    if r.started_at:
        times.append("started " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at)))
    if r.finished_at:
        times.append("finished " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.finished_at)))
    add("time", "   ".join(times))
    if r.retries:
        add("retries", str(r.retries))
    add("error", f"[{r.error_class}] {r.error}" if r.error and r.error_class else r.error)
    if item.placements:
        lines.append("  placements:")
        lines.extend(redact(f"    {p.app:<10} {p.mode:<8} {p.target_path}") for p in item.placements)
    else:
        lines.append("  placements: none")
    if item.chunks:
        complete = sum(1 for c in item.chunks if c.status == CHUNK_COMPLETE)
        lines.append(f"  chunks    {complete}/{len(item.chunks)} complete")
        lines.append("  [" + chunk_map(item.chunks, r.size, max(4, width - 6)) + "]")
    return [cut(line, width) for line in lines]


__all__ = ["chunk_done", "chunk_map", "columns_for", "cut", "details_lines", "fmt_age", "fmt_duration",
           "fmt_speed", "progress_bar", "table_lines"]
