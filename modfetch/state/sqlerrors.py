"""What a failing SQLite statement means for the user (locked, disk full, damaged), and whether the process
that owns a ``running`` row is still alive."""

from __future__ import annotations

import os
import shlex
import sqlite3
import stat
from pathlib import Path

from ..errors import StateError

BUSY_TIMEOUT_MS = 30_000
# Seconds a statement waits for another process's lock before failing with a clear "locked" error (never an
# endless wait); tests and impatient services lower it.
BUSY_TIMEOUT_ENV = "MODFETCH_DB_BUSY_TIMEOUT"


def refuse_special_file(path: Path) -> None:
    """StateError when ``path`` exists but is not a regular file: sqlite would block for ever reading the
    header of a FIFO (and no signal gets it out), or fail obscurely on a device or directory."""
    try:
        st = os.stat(path)
    except OSError:
        return  # absent (created on open) or unreadable: sqlite's own error says which
    if not stat.S_ISREG(st.st_mode):
        raise StateError(f"state database {path} is not a regular file",
                         hint="move it aside; modfetch creates a new database there")


def pid_alive(pid: int | None) -> bool:
    """True while process ``pid`` exists and is not a zombie (a killed child not yet reaped is dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")



# Result codes (primary, the low byte of extended codes) that mean the disk, the OS or another process got in
# the way of a healthy database: https://www.sqlite.org/rescode.html
_SQLITE_FULL, _SQLITE_OS = 13, {3: "permission denied", 5: "busy", 6: "locked", 8: "read-only", 10: "I/O error",
                                14: "cannot open"}


def default_busy_timeout() -> float:
    """The lock wait in seconds: ``$MODFETCH_DB_BUSY_TIMEOUT`` when it is a sane number, else 30."""
    try:
        seconds = float(os.environ.get(BUSY_TIMEOUT_ENV, ""))
    except ValueError:
        return BUSY_TIMEOUT_MS / 1000
    return seconds if 0 <= seconds <= 3600 else BUSY_TIMEOUT_MS / 1000


def is_locked(exc: sqlite3.Error) -> bool:
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # Python >= 3.11; the message before that
    return code in (5, 6) or "database is locked" in str(exc) or "database is busy" in str(exc)


def locked_error(path: str | os.PathLike[str], seconds: float | None = None) -> StateError:
    """The StateError for a state DB another process kept locked past the busy timeout."""
    waited = f" (waited {seconds:g} s)" if seconds is not None else ""
    return StateError(f"state database {path} is locked by another process{waited}",
                      hint=f"find it with: {shlex.join(['fuser', '-v', str(path)])}; rerun the same command when "
                           "it is done (a download resumes where it stopped)")


def db_failure(exc: sqlite3.Error, path: str | os.PathLike[str]) -> StateError:
    """The StateError for a statement that failed on a database that opened fine.

    A full disk, an I/O or permission error or a lock held too long is not damage: telling the user to move
    state.db aside would throw away every download's resumable progress, so only real damage says so."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # Python >= 3.11; the message before that
    text = str(exc)
    resume = "rerun the same command: the download resumes where it stopped"
    if code == _SQLITE_FULL or "disk is full" in text:
        return StateError(f"cannot write state database {path}: the disk is full", hint=f"free some space and {resume}")
    if is_locked(exc):
        return locked_error(path)
    if code in _SQLITE_OS or any(word in text for word in ("I/O error", "readonly", "locked", "unable to open")):
        return StateError(f"cannot write state database {path}: {text}",
                          hint=f"free some space or fix the folder's permissions, then {resume}")
    return StateError(f"state database {path} is damaged: {text}",
                      hint="move state.db aside (keeping a copy) and rerun; files on disk are kept and re-verified")
