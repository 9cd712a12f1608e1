"""The progress interface the engine reports through; the renderers live in the CLI (``cli.progress``: a tqdm
bar on an interactive terminal, otherwise nothing; ``--json`` prints no progress, only its result lines)."""

from __future__ import annotations

from typing import Protocol


class ProgressListener(Protocol):
    """Receives batched progress from a download's coordinating thread (never from workers, never per block)."""

    def start(self, name: str, total: int | None, already: int) -> None:
        """A transfer begins: ``already`` bytes were on disk from an earlier run."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes are on disk (may be negative when a chunk is reset)."""

    def finish(self, ok: bool) -> None:
        """The transfer ended (successfully or not); a second call does nothing."""


class NullProgress:
    """A listener that ignores everything (``--quiet``, tests, batch workers)."""

    def start(self, name: str, total: int | None, already: int) -> None:
        """Ignore."""

    def advance(self, nbytes: int) -> None:
        """Ignore."""

    def finish(self, ok: bool) -> None:
        """Ignore."""
