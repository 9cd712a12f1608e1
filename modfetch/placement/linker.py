"""Put one file at one target path: symlink, hardlink or verified copy, safely.

Rules:
- The target is inspected with ``lstat``: a symlink found there is never written through; when it must go,
  the link itself is replaced (``os.replace`` renames over the directory entry).
- Identical content already there (same inode, a link to our file, or the same SHA-256) is skipped.
- A different file is replaced only with ``force``, and atomically: the new link/copy is made beside the
  target under a temporary name, then ``os.replace``\\ d over it.  Dangling links are repaired without force.
- A new target is created without clobbering (``os.symlink`` / ``os.link`` fail if something appeared).
- Hardlinks across file systems (EXDEV) fall back to a copy and say so; copies are verified by SHA-256.
- Directories are never replaced (an app's model folder stays a real folder; files are linked inside it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..engine.hashing import sha256_file
from ..errors import DiskError, IntegrityError, TargetExistsError, UsageError
from ..util.atomic import temp_sibling

SYMLINK, HARDLINK, COPY = "symlink", "hardlink", "copy"
MODES = (SYMLINK, HARDLINK, COPY)
CREATED, REPLACED, REPAIRED, SKIPPED = "created", "replaced", "repaired", "skipped"
_HARDLINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
_COPY_BLOCK = 4 << 20


class SourceFile:
    """The file being placed: its real absolute path and its SHA-256 (given, or computed once on demand)."""

    def __init__(self, path: Path, sha256: str | None = None) -> None:
        try:
            self.path = Path(os.path.realpath(path, strict=True))
        except OSError as exc:
            raise UsageError(f"cannot place {path}: {exc.strerror or exc}") from None
        self.stat = os.stat(self.path)
        if not stat.S_ISREG(self.stat.st_mode):
            raise UsageError(f"cannot place {path}: not a regular file")
        self._sha256 = sha256.lower() if sha256 else None

    def sha256(self) -> str:
        """The SHA-256 hex digest (hashing the file the first time it is needed)."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256


@dataclass(frozen=True)
class LinkResult:
    """What happened at one target: ``action`` (created/replaced/repaired/skipped), the mode actually used
    and a human message (e.g. the EXDEV copy fallback)."""

    action: str
    mode: str
    message: str = ""


def inspect_target(target: Path, source: SourceFile, symlink_text: str | None = None) -> str:
    """``absent``, ``same`` (already provides our bytes), ``dangling``, ``different`` or ``directory``."""
    try:
        lst = os.lstat(target)
    except FileNotFoundError:
        return "absent"
    if stat.S_ISDIR(lst.st_mode):
        return "directory"
    if stat.S_ISLNK(lst.st_mode):
        if symlink_text is not None and os.readlink(target) == symlink_text:
            return "same"
        try:
            st = os.stat(target)
        except OSError:
            return "dangling"
    elif stat.S_ISREG(lst.st_mode):
        st = lst
    else:
        return "different"
    if os.path.samestat(st, source.stat):
        return "same"
    # Reading through a link only to compare is fine (regular files only); writing never follows it.
    if (stat.S_ISREG(st.st_mode) and st.st_size == source.stat.st_size
            and sha256_file(os.path.realpath(target)) == source.sha256()):
        return "same"
    return "different"


def folder_problem(target: Path) -> str | None:
    """Why ``target``'s folder cannot hold it — the nearest existing ancestor is a file or a broken link
    (e.g. an app's ``models/loras`` linked to a disk that is not mounted) — or None.  Nothing is changed."""
    for folder in (target.parent, *target.parent.parents):
        if os.path.isdir(folder):
            return None
        if os.path.islink(folder) and not os.path.exists(folder):
            return f"{folder} is a broken link (to {os.readlink(folder)}); is that disk mounted?"
        if os.path.lexists(folder):
            return f"{folder} is not a folder"
    return None


def place(source: SourceFile, target: Path, mode: str, *, force: bool = False,
          symlink_text: str | None = None) -> LinkResult:
    """Make ``target`` provide ``source`` (see the module docstring); raises ModfetchError subclasses."""
    if mode not in MODES:
        raise UsageError(f"unknown placement mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    problem = folder_problem(target)
    if problem is not None:
        raise DiskError(problem)
    state = inspect_target(target, source, symlink_text if mode == SYMLINK else None)
    if state == "same":
        return LinkResult(SKIPPED, mode, "already in place")
    if state == "directory":
        raise TargetExistsError(f"{target} is a directory; not replacing it",
                                hint="remove or rename that directory yourself if it is not needed")
    if state == "different" and not force:
        raise TargetExistsError(f"{target} already exists with different content",
                                hint="pass --force (or set general.allow_overwrite) to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk(exc, "cannot create folder", target.parent) from None
    if state == "absent":
        try:
            used, note = _materialize(source, target, mode, symlink_text, final=True)
        except TargetExistsError:
            # Another process (a second `place`, a parallel batch job) created it meanwhile: fine if it is ours.
            if inspect_target(target, source, symlink_text if mode == SYMLINK else None) == "same":
                return LinkResult(SKIPPED, mode, "already in place")
            raise
        return LinkResult(CREATED, used, note)
    temp = temp_sibling(target)
    used, note = _materialize(source, temp, mode, symlink_text, final=False)
    try:
        os.replace(temp, target)
    except OSError as exc:
        _unlink_quiet(temp)
        raise _disk(exc, "cannot replace", target) from None
    if state == "dangling":
        return LinkResult(REPAIRED, used, "repaired a dangling link" + (f"; {note}" if note else ""))
    return LinkResult(REPLACED, used, "replaced a different file" + (f"; {note}" if note else ""))


def _materialize(source: SourceFile, path: Path, mode: str, symlink_text: str | None,
                 final: bool) -> tuple[str, str]:
    """Create ``path`` (which must not exist) as a link/copy of ``source``; returns (mode used, note)."""
    try:
        if mode == SYMLINK:
            os.symlink(symlink_text or str(source.path), path)
            return SYMLINK, ""
        if mode == HARDLINK:
            try:
                os.link(source.path, path, follow_symlinks=False)
                return HARDLINK, ""
            except OSError as exc:
                if exc.errno not in _HARDLINK_FALLBACK:
                    raise
                why = ("different file systems" if exc.errno == errno.EXDEV
                       else exc.strerror or errno.errorcode.get(exc.errno or 0, "error"))
                copy_verified(source, path, final=final)
                return COPY, f"hardlink not possible ({why}); copied instead (verified by SHA-256)"
        copy_verified(source, path, final=final)
        return COPY, ""
    except FileExistsError:
        raise TargetExistsError(f"{path} appeared while placing; not overwriting it",
                                hint="rerun to re-check it") from None
    except OSError as exc:
        raise _disk(exc, f"cannot {mode}", path) from None


def copy_verified(source: SourceFile, path: Path, final: bool = True) -> None:
    """Copy ``source`` to ``path`` (never following a link there), fsync, and check the copy's SHA-256.

    With ``final`` the copy is written under a temporary name and linked into place without clobbering."""
    temp = temp_sibling(path) if final else path
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with open(source.path, "rb") as src, os.fdopen(fd, "wb", closefd=False) as dst:
            while block := src.read(_COPY_BLOCK):
                dst.write(block)
            dst.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quiet(temp)
        raise
    os.close(fd)
    try:
        actual = sha256_file(temp)
        if actual != source.sha256():
            raise IntegrityError(f"copy to {path} does not match: sha256 {actual}, "
                                 f"expected {source.sha256()}",
                                 hint="the source changed or the disk is failing; nothing was left behind")
        if final:
            try:
                os.link(temp, path, follow_symlinks=False)
            except FileExistsError:
                raise
            except OSError:  # a file system without hardlinks: rename, still refusing to clobber
                if os.path.lexists(path):
                    raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
                os.rename(temp, path)
                return
            os.unlink(temp)
    except BaseException:
        _unlink_quiet(temp)
        raise


def _unlink_quiet(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _disk(exc: OSError, action: str, path: Path) -> DiskError:
    error = DiskError(f"{action} {path}: {exc.strerror or exc}")
    error.errno = exc.errno
    return error
