"""Seed a ``.part`` with the bytes of an installed file, so a repair re-fetches only the chunks that differ."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .files import os_error

_BLOCK = 8 << 20


def copy_into_part(source: Path, part: Path) -> None:
    """Copy ``source`` to a fresh ``part`` (whatever was at that name is removed first; ``O_EXCL|O_NOFOLLOW``
    never writes through a link planted there).  ``copy_file_range`` lets the file system share blocks
    (reflink on btrfs/XFS) or copy in the kernel; a plain read/write loop covers the rest."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                _copy(src, dst, os.fstat(src).st_size)
            finally:
                os.close(dst)
        finally:
            os.close(src)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise os_error(exc, "cannot copy the installed file to", part) from None


def _copy(src: int, dst: int, size: int) -> None:
    offset = 0
    fast = hasattr(os, "copy_file_range")
    while offset < size:
        if fast:
            try:
                n = os.copy_file_range(src, dst, min(_BLOCK, size - offset), offset, offset)
            except OSError:
                fast = False  # EXDEV on old kernels, ENOSYS, EINVAL on some file systems: plain copy
                continue
        else:
            data = os.pread(src, min(_BLOCK, size - offset), offset)
            n = os.pwrite(dst, data, offset) if data else 0
        if n == 0:
            break
        offset += n
