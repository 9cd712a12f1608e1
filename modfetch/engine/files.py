"""File-system side of a download: the per-target lock, preallocation, and the atomic no-clobber finish."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import DiskError, LockedError, TargetExistsError
from ..state import PART_SUFFIX
from ..util.atomic import write_atomic
from ..util.sizes import human_size

GiB = 1 << 30


def os_error(exc: OSError, action: str, path: str | os.PathLike[str]) -> DiskError:
    """A one-line DiskError for an OSError (ENOSPC, EROFS, EACCES, ...)."""
    hints = {
        errno.ENOSPC: "free some space and rerun the same command: the download resumes where it stopped",
        errno.EDQUOT: "free some space and rerun the same command: the download resumes where it stopped",
        errno.EROFS: "choose a writable --dest",
        errno.EACCES: "check the directory's permissions or choose another --dest",
    }
    message = f"{action} {path}: {exc.strerror or exc}"
    error = DiskError(message, hint=hints.get(exc.errno or 0))
    error.errno = exc.errno
    return error


class TargetLock:
    """An exclusive advisory lock (``fcntl.flock``) per final path, held for the whole download.

    Keyed on the path with its folder's symlinks resolved: ``--dest /srv/models`` and ``--dest ~/models`` (a
    link to it) name the same ``.part``, and two processes writing it at once would install a torn file."""

    def __init__(self, lock_dir: Path, target: Path) -> None:
        canonical = os.path.join(os.path.realpath(target.parent), target.name)
        digest = hashlib.sha1(canonical.encode()).hexdigest()[:20]
        self.path = lock_dir / f"{digest}.lock"
        self.target = target
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise LockedError naming the holder: never waits for another process."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: the pid is written (and the file truncated) through this descriptor.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise os_error(exc, "cannot create lock file", self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Whoever holds it may have written anything there: only a plain number is shown as a pid.
            holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
            os.close(fd)
            if holder == str(os.getpid()):  # flock is per open file: a second job of this very run
                raise LockedError(f"this run already downloads {self.target} for another job or URL",
                                  hint="two sources resolve to the same file; give one another name") from None
            if holder.isascii() and holder.isdigit():
                raise LockedError(f"another modfetch process (pid {holder}) is already downloading {self.target}",
                                  hint="wait for it to finish; rerunning afterwards is safe") from None
            raise LockedError(f"another process holds the lock {self.path} for {self.target}",
                              hint="wait for it to finish; rerunning afterwards is safe") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Drop the lock."""
        if self.fd is not None:
            with contextlib.suppress(OSError):  # a later holder that is not modfetch must not get our old pid
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> TargetLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_part(part: Path, on_discard: Callable[[], None]) -> int:
    """Open (creating) the ``.part`` file without ever following a link planted at its name.

    Anything at that path that is not a regular file of its own (a symlink, a fifo, or a hard link: a second
    name of another file, which every write would change too) is removed first, only the name, so another
    file keeps its bytes, and ``on_discard`` forgets the chunk state that described it.  ``O_NOFOLLOW`` closes
    the symlink race after the check, an ``fstat`` of the opened file the hard-link race.
    """
    for _ in range(3):
        try:
            st = os.lstat(part)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "a directory is in the way", str(part))
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                os.unlink(part)
                on_discard()
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        if os.fstat(fd).st_nlink <= 1:
            return fd
        os.close(fd)  # linked between the check and the open: drop that name too
    raise part_changed(part, "hard-linked to another file")


def check_part(fd: int, part: Path, size: int | None = None) -> None:
    """Raise DiskError unless ``part`` still names the file open as ``fd`` and, given ``size``, that file still
    has its preallocated size.

    Another program may delete, replace or truncate the ``.part`` (or move its folder) while we write through
    ``fd``: installing the path would then install bytes we never fetched under the hash we computed, and a
    write past a truncation re-extends the file with a hole of zeros."""
    st = os.fstat(fd)
    try:
        named = os.lstat(part)
    except OSError:
        named = None
    if named is None or (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
        raise part_changed(part, "removed or replaced")
    if size is not None and st.st_size < size:
        raise part_changed(part, "truncated")


def part_changed(part: str | os.PathLike[str], what: str) -> DiskError:
    """The error for a ``.part`` file another program changed under a running download."""
    return DiskError(f"{part} was {what} by another program while downloading",
                     hint="rerun the same command: bytes still on disk are checked again, the rest is fetched")


def free_space_margin(fd: int, setting_mb: int) -> int:
    """Bytes to keep free on ``fd``'s file system: ``setting_mb`` MiB, or when negative (unset) 1% of the file
    system, at most 1 GiB (a full disk breaks logs, databases and the desktop, not just this download)."""
    if setting_mb >= 0:
        return setting_mb << 20
    vfs = os.fstatvfs(fd)
    return min(vfs.f_blocks * vfs.f_frsize // 100, GiB)


def ensure_space(fd: int, size: int, path: Path, margin: int) -> None:
    """Refuse, before anything is allocated or fetched, a ``size``-byte file the file system cannot hold while
    keeping ``margin`` bytes free.  Blocks the ``.part`` already holds count as its own (a resume of a
    preallocated file needs nothing more)."""
    try:
        allocated = os.fstat(fd).st_blocks * 512
        vfs = os.fstatvfs(fd)
    except OSError as exc:
        raise os_error(exc, "cannot check free space for", path) from None
    needed = max(0, size - allocated)
    free = vfs.f_bavail * vfs.f_frsize
    if needed and needed + margin > free:
        name = path.name.removesuffix(PART_SUFFIX)
        raise DiskError(f"not enough space for {name}: it needs {human_size(needed)} more, "
                        f"{human_size(free)} is free and {human_size(margin)} must stay free",
                        hint="free some space (or lower general.min_free_mb) and rerun the same command")


def preallocate(fd: int, size: int, path: Path) -> None:
    """Reserve ``size`` bytes (fallocate; truncate where unsupported) so ENOSPC surfaces before any transfer.

    A failed allocation gives its blocks back (the file is cut to the size it had): ext4 allocates every free
    block before it reports ENOSPC, and the disk must not stay full."""
    try:
        before = os.fstat(fd).st_size
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            try:
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)
            except OSError as inner:
                raise os_error(inner, "cannot allocate", path) from None
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, before)  # frees the blocks the failed call took past the old end
        raise os_error(exc, f"cannot allocate {size} bytes for", path) from None


class PartWritten(Exception):
    """Someone else wrote to (or changed) the ``.part`` between two of modfetch's own writes."""


class OwnWrites:
    """The ``.part``'s stamp (inode, size, mtime, ctime) as modfetch's own last write left it.

    Writes go through ``pwrite`` here, one at a time: the stamp is taken right after each and compared right
    before the next, so any write by another program in between (an append, an in-place overwrite of bytes
    already hashed, a writer that restores the mtime: ctime still moves) is noticed, and the final ``check``
    proves the file to install is byte for byte what was written and hashed.  No extra read pass.  ``check``
    only stats the path, so it also works after ``fd`` was closed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        st = os.fstat(fd)
        self.dev = st.st_dev
        self.stamp = _stamp(st)

    def own_change(self) -> None:
        """Record a change modfetch itself just made (preallocation, truncation)."""
        with self.lock:
            self.stamp = _stamp(os.fstat(self.fd))

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` (an own write: refused like one when the file changed since our last)."""
        with self.lock:
            if _stamp(os.fstat(self.fd)) != self.stamp:
                raise PartWritten()
            os.ftruncate(self.fd, size)
            self.stamp = _stamp(os.fstat(self.fd))

    def pwrite(self, data: memoryview, offset: int) -> int:
        """Write all of ``data`` at ``offset``; raises PartWritten when the file changed since our last write
        (OSError from the write propagates).  Returns the offset after the data."""
        with self.lock:
            if _stamp(os.fstat(self.fd)) != self.stamp:
                raise PartWritten()
            try:
                while data:
                    written = os.pwrite(self.fd, data, offset)
                    offset += written
                    data = data[written:]
            finally:
                self.stamp = _stamp(os.fstat(self.fd))
        return offset

    def check(self, part: Path, size: int | None) -> None:
        """Raise DiskError unless ``part`` is the file we wrote, exactly ``size`` bytes (when known), unchanged
        since our last write."""
        try:
            st = os.lstat(part)
        except OSError:
            raise part_changed(part, "removed or replaced") from None
        if (st.st_dev, st.st_ino) != (self.dev, self.stamp[0]):
            raise part_changed(part, "removed or replaced")
        if size is not None and st.st_size != size:
            raise part_changed(part, f"resized to {st.st_size} bytes (expected {size})")
        if _stamp(st) != self.stamp:
            raise part_changed(part, "written to")


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it is durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_stamp(st: os.stat_result) -> list[int]:
    """What lets a recorded SHA-256 stand for a file without re-reading it: size, mtime, inode and ctime.  The
    ctime catches a writer that restores the mtime (``touch -d``); nobody can set it back."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def install_file(part: Path, final: Path, overwrite: bool, check: Callable[[], None] | None = None,
                 sync_dir: bool = True) -> None:
    """Move ``part`` to ``final`` atomically; without ``overwrite`` an existing file is never replaced.
    ``check`` runs right before the move (the last moment to refuse a ``.part`` someone changed).
    ``sync_dir=False``: the caller makes the folder durable itself (a ``SyncGroup`` round) before relying on it."""
    if check is not None:
        check()
    try:
        if overwrite:
            os.replace(part, final)
        else:
            try:
                # Fails with EEXIST instead of clobbering a file (or a planted link) that appeared meanwhile.
                os.link(part, final, follow_symlinks=False)
            except FileExistsError:
                if is_own_sidecar(final):  # our checksum of a sibling file, written meanwhile: regenerable
                    os.replace(part, final)
                    if sync_dir:
                        fsync_dir(final.parent)
                    return
                raise TargetExistsError(f"{final} appeared while downloading; not overwriting it",
                                        hint="the new bytes are kept in " + str(part)) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if final.exists():
                    raise TargetExistsError(f"{final} already exists; not overwriting it") from None
                os.rename(part, final)
            else:
                os.unlink(part)
    except OSError as exc:
        raise os_error(exc, "cannot move the finished file to", final) from None
    if sync_dir:
        fsync_dir(final.parent)


_SIDECAR = re.compile(rb"[0-9a-f]{64}  ([^\n/]+)\n")


def is_own_sidecar(path: Path) -> bool:
    """True when ``path`` is a regular file holding exactly what ``write_checksum_file`` writes for its sibling
    (``X.sha256`` = ``<sha256>  X``): regenerable, so a real file of that name may replace it."""
    if not path.name.endswith(".sha256"):
        return False
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 512:
            return False
        match = _SIDECAR.fullmatch(path.read_bytes())
    except OSError:
        return False
    return match is not None and match.group(1) == path.name[: -len(".sha256")].encode()


def write_checksum_file(final: Path, sha256: str) -> Path | None:
    """Write ``<final>.sha256`` in ``sha256sum`` format atomically; returns its path, or None when a file of
    that name that is not such a checksum already exists (e.g. a repo's own ``X.sha256``): never clobbered."""
    checksum = final.with_name(final.name + ".sha256")
    if os.path.lexists(checksum) and not is_own_sidecar(checksum):
        return None
    try:  # (the temporary name fits NAME_MAX even for a 250-byte ``final``: util.atomic.temp_path)
        write_atomic(checksum, f"{sha256}  {final.name}\n".encode(), mode=0o666, mkdir=False)
    except OSError as exc:
        raise os_error(exc, "cannot write", checksum) from None
    return checksum
