"""Small files written atomically: a temporary file in the same folder, then a rename (or a no-clobber link)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A fresh temporary name in ``path``'s folder for an atomic write of ``path``.  Not derived from
    ``path.name``: any name the file system holds (up to NAME_MAX) must stay writable, and a prefix plus
    suffix around it would pass NAME_MAX for names longer than about 230 bytes."""
    return path.parent / f".modfetch-{uuid.uuid4().hex[:12]}.tmp"


def write_atomic(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename (never a partial
    file; a link planted at ``path`` is replaced, not written through).  With ``replace=False`` an existing
    ``path`` is kept (``os.link`` refuses to clobber).  True when written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:  # writes all of it (os.write may write less)
            fh.write(data)
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
