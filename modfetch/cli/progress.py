"""Progress renderers for the CLI: a tqdm bar on a TTY, nothing otherwise (a final line is printed anyway)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from ..logs import set_console_writer
from ..progress import NullProgress, ProgressListener


class TqdmProgress:
    """A tqdm bar (bytes, rate, ETA) driven by the engine's batched callbacks."""

    _position_lock = threading.Lock()
    _positions: set[int] = set()

    def __init__(self) -> None:
        self.bar: Any = None
        self.position = 0

    def start(self, name: str, total: int | None, already: int) -> None:
        """Open the bar."""
        from tqdm import tqdm

        with self._position_lock:
            while self.position in self._positions:
                self.position += 1
            self._positions.add(self.position)
            set_console_writer(_write_above_bars)  # log lines go above the bars, never into them
        self.bar = tqdm(total=total, initial=already, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=name[:40], file=sys.stderr, leave=self.position == 0, position=self.position,
                        dynamic_ncols=True, mininterval=0.25)

    def advance(self, nbytes: int) -> None:
        """Move the bar."""
        if self.bar is not None:
            self.bar.update(nbytes)

    def finish(self, ok: bool) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            with self._position_lock:
                self._positions.discard(self.position)
                if not self._positions:
                    set_console_writer(None)


def _write_above_bars(line: str) -> None:
    """tqdm.write: clear the bars, print the line, redraw the bars."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def progress_factory(quiet: bool, json_logs: bool) -> type[TqdmProgress] | type[NullProgress]:
    """TqdmProgress when stderr is an interactive terminal and output is not quiet/JSON."""
    if quiet or json_logs or not sys.stderr.isatty():
        return NullProgress
    return TqdmProgress


__all__ = ["ProgressListener", "TqdmProgress", "progress_factory"]
