"""Small files written atomically: a temporary file in the same folder, then a rename (or a no-clobber link).

Every small file modfetch writes goes through here: checksum sidecars, CivitAI sidecars, HF cache refs,
``CACHEDIR.TAG`` and tree listings, Ollama Modelfiles, the metrics textfile; placement's links and copies take
their temporary names from ``temp_path``.  A reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

NAME_MAX = 255  # bytes in one path component on Linux, macOS and Windows file systems
_TAG = ".modfetch-"


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.modfetch-<12 hex>.tmp``, with ``<name>`` shortened
    (on a character boundary) so the whole name stays within NAME_MAX bytes even for a 255-byte ``path``.
    Never ends like ``path`` (``.tmp``): a textfile collector or a model scanner does not take it for the file."""
    suffix = f"{_TAG}{uuid.uuid4().hex[:12]}.tmp"
    room = NAME_MAX - 1 - len(suffix)  # 1: the leading dot
    name = os.fsencode(path.name)[:room].decode("utf-8", "ignore")  # a character cut in two is dropped
    return path.parent / f".{name}{suffix}"


def write_atomic(path: Path, data: bytes, *, replace: bool = True, fsync: bool = False, mode: int = 0o644,
                 exact_mode: bool = False, mkdir: bool = True) -> bool:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename (never a partial
    file; a link planted at ``path`` is replaced, not written through; the temporary file is opened with
    ``O_EXCL | O_NOFOLLOW``).  True when written.

    ``replace=False``: an existing ``path`` is kept (``os.link`` refuses to clobber) and False returned.
    ``fsync``: the data reaches the disk before the rename.  ``mode``: the new file's permissions, less the
    umask unless ``exact_mode``.  ``mkdir``: create missing parent folders first."""
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:  # writes all of it (os.write may write less)
            fh.write(data)
            if exact_mode:
                os.fchmod(fh.fileno(), mode)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if replace:
            os.replace(temp, path)
            return True
        try:
            os.link(temp, path, follow_symlinks=False)
        except FileExistsError:
            return False
        return True
    finally:
        temp.unlink(missing_ok=True)  # gone after a rename; the spare name after a link
