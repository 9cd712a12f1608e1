"""Metadata sidecars beside a model file, named as A1111's extra networks and Civitai Helper read them:
``<stem>.civitai.info`` (the CivitAI model-version JSON) and ``<stem>.preview.<ext>`` (the card image).

Beside a placement (a symlink or hardlink in an app's folder) the sidecar is a real small file of its own.
An existing file at a sidecar's name is never replaced: it may be the user's own preview or notes (and a
link planted there is never written through); a rerun therefore keeps the sidecars it wrote before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..util.atomic import write_atomic

WRITTEN, KEPT = "written", "kept"


@dataclass(frozen=True)
class SidecarResult:
    """One sidecar: its path and ``written`` or ``kept`` (something was already there)."""

    path: Path
    action: str


def sidecar_paths(model: Path, preview_ext: str = "png") -> tuple[Path, Path]:
    """``(<stem>.civitai.info, <stem>.preview.<ext>)`` beside ``model`` (stem: the name without its suffix)."""
    stem = model.name[: -len(model.suffix)] if model.suffix else model.name
    return model.with_name(f"{stem}.civitai.info"), model.with_name(f"{stem}.preview.{preview_ext}")


def write_sidecar(path: Path, data: bytes) -> SidecarResult:
    """Create ``path`` with ``data`` atomically unless anything (file, link, folder) is already there."""
    if path.is_symlink() or path.exists():
        return SidecarResult(path, KEPT)
    return SidecarResult(path, WRITTEN if write_atomic(path, data, replace=False) else KEPT)


def write_sidecars(model: Path, info: bytes, preview: tuple[bytes, str] | None) -> list[SidecarResult]:
    """The info (and preview) sidecars beside ``model``."""
    info_path, preview_path = sidecar_paths(model, preview[1] if preview else "png")
    results = [write_sidecar(info_path, info)]
    if preview is not None:
        results.append(write_sidecar(preview_path, preview[0]))
    return results
