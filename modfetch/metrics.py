"""Prometheus textfile output (node_exporter ``--collector.textfile.directory``).

Counters come from the state DB's ``counters`` table, which every modfetch process adds to, so they are
monotonic across runs and processes; gauges are derived from the ``downloads`` table.  The file is written
under an exclusive lock beside it, to a uniquely named temp file in the same directory, fsynced and
``os.replace``d: a scrape sees either the previous or the next complete file, never a torn or mixed one,
and two processes writing at once serialise (the later write always carries the newer counter values).
Metrics are best-effort: the lock is waited for at most ``LOCK_WAIT_SECONDS`` and on contention this write
is skipped (a later checkpoint writes newer values), so a lock held by anyone can never stall a download.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .errors import ERROR_CLASSES, ModfetchError
from .state import FILE_MISSING, FINISHED_STATUSES, MISMATCH, RUNNING, StateDB, pid_alive
from .util.atomic import write_atomic as util_write_atomic
from .util.redact import redact

log = logging.getLogger("modfetch.metrics")

KNOWN_SOURCES = ("http", "huggingface", "civitai")
# DB counter name -> (metric name, help text).  Base units; counters end in _total.
COUNTERS: dict[str, tuple[str, str]] = {
    "downloaded_bytes": ("modfetch_downloaded_bytes_total", "Bytes fetched and written to disk."),
    "retries": ("modfetch_retries_total", "Requests retried after a transient failure."),
    "downloads_succeeded": ("modfetch_downloads_succeeded_total", "Downloads that finished and verified."),
    "downloads_failed": ("modfetch_downloads_failed_total",
                         "Download attempts that ended in an error (not interrupts), by error class."),
    "downloads_interrupted": ("modfetch_downloads_interrupted_total",
                              "Downloads stopped by Ctrl-C or SIGTERM; a rerun resumes them."),
}
# Stored in the counters table but shown as a gauge (raised, never added to).
LAST_FAILURE = "last_failure_timestamp_seconds"
# Every file render() writes starts with this: how check_target() recognises modfetch's own textfile.
_OWN_HEADER = b"# HELP modfetch_"
# How long a write waits for the textfile lock before skipping; a few writers serialise well within it.
LOCK_WAIT_SECONDS = 0.5


@dataclass
class Snapshot:
    """What one textfile shows: counter values keyed by (db name, labels dict items) and the gauges."""

    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    last_duration_seconds: float | None = None
    last_success_timestamp_seconds: float | None = None
    in_progress: int = 0
    last_failure_timestamp_seconds: float | None = None
    verify_mismatches: int = 0


def labels_of(source: str, reason: str) -> tuple[tuple[str, str], ...]:
    """A counter's label columns as sorted ((name, value), ...); an empty column is no label."""
    return tuple((name, value) for name, value in (("reason", reason), ("source", source)) if value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    """Integers without a fraction, everything else in Python's shortest round-trip form."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def collect(db: StateDB, now: float | None = None) -> Snapshot:
    """Read counters and gauges from the state DB."""
    snap = Snapshot()
    for (name, source, reason), value in db.counters().items():
        if name == LAST_FAILURE:
            snap.last_failure_timestamp_seconds = value
            continue
        key = (name, labels_of(source, reason))
        snap.counters[key] = snap.counters.get(key, 0.0) + value
    last = db.latest_finished()
    if last is not None:
        snap.last_success_timestamp_seconds = last.finished_at
        latest = db.latest_finished(timed=True)
        if latest is not None:
            snap.last_duration_seconds = max(0.0, (latest.finished_at or 0.0) - (latest.started_at or 0.0))
    # A deleted file keeps its row's status (so list/prune see it); verify records FILE_MISSING on it.
    snap.verify_mismatches = db.count_status([MISMATCH]) + db.count_status(FINISHED_STATUSES, error=FILE_MISSING)
    snap.in_progress = sum(1 for r in db.list_downloads(statuses=[RUNNING]) if pid_alive(r.pid))
    return snap


def render(snap: Snapshot) -> str:
    """The text exposition (format 0.0.4) of a snapshot: HELP and TYPE for every family, no timestamps."""
    lines: list[str] = []
    for db_name, (metric, help_text) in COUNTERS.items():
        series = {labels: value for (name, labels), value in snap.counters.items() if name == db_name}
        for source in KNOWN_SOURCES:
            if db_name == "downloads_failed":  # every series exists from the start: increase() sees the first one
                for reason in ERROR_CLASSES:
                    series.setdefault((("reason", reason), ("source", source)), 0.0)
            else:
                series.setdefault((("source", source),), 0.0)
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} counter")
        for labels in sorted(series):
            rendered = ",".join(f'{k}="{_escape(redact(v))}"' for k, v in labels)
            lines.append(f"{metric}{{{rendered}}} {format_value(series[labels])}" if rendered
                         else f"{metric} {format_value(series[labels])}")
    gauges = [
        ("modfetch_last_download_duration_seconds", "Wall time of the most recent successful download.",
         snap.last_duration_seconds),
        ("modfetch_last_success_timestamp_seconds", "Unix time the most recent successful download finished.",
         snap.last_success_timestamp_seconds),
        ("modfetch_downloads_in_progress", "Downloads running right now (in any process).",
         float(snap.in_progress)),
        ("modfetch_last_failure_timestamp_seconds", "Unix time the most recent download attempt failed.",
         snap.last_failure_timestamp_seconds),
        ("modfetch_verify_mismatches", "Downloads whose file no longer matches its recorded SHA-256 (or is gone).",
         float(snap.verify_mismatches)),
    ]
    for metric, help_text, value in gauges:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} gauge")
        lines.append(f"{metric} {format_value(value or 0.0)}")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: unique temp file in the same directory, fsync, rename."""
    # (The temporary name ends in .tmp, never .prom: node_exporter would read it.)
    util_write_atomic(path, text.encode("utf-8"), fsync=True, mode=0o644, exact_mode=True)


def check_target(path: Path) -> None:
    """Raise ModfetchError unless ``path`` is absent, a link, or a regular file modfetch wrote (or an empty one).

    ``os.replace`` would replace whatever a misconfigured path names: a device node (``path: /dev/null`` under
    a root service), a FIFO, or another exporter's ``.prom`` file in a shared textfile directory."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        return  # os.replace swaps the link itself, never writes through it
    if stat.S_ISDIR(mode):
        raise ModfetchError("it is a directory")
    if not stat.S_ISREG(mode):
        raise ModfetchError("it is not a regular file (a device, FIFO or socket); not replacing it")
    with path.open("rb") as fh:
        head = fh.read(len(_OWN_HEADER))
    if head and head != _OWN_HEADER:
        raise ModfetchError("it holds something modfetch did not write; not replacing it",
                            hint="point metrics.prometheus_textfile.path at a file of its own")


class MetricsBusy(ModfetchError):
    """The textfile lock stayed held for ``LOCK_WAIT_SECONDS``: this write is skipped."""


def _lock_bounded(fd: int, seconds: float) -> bool:
    """Take an exclusive ``flock`` on ``fd`` within ``seconds`` (polling, never blocking); True when held."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def write_textfile(state_db: Path, path: Path, lock_wait: float = LOCK_WAIT_SECONDS) -> str:
    """Collect from ``state_db`` and write ``path`` under an exclusive lock; returns the text written.

    Raises MetricsBusy when another process (of any user) keeps the lock for ``lock_wait`` seconds."""
    if path.parent.exists() and not path.parent.is_dir():  # mkdir would say "File exists"
        raise ModfetchError(f"{path.parent} is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    # O_NOFOLLOW: the lock name is predictable, and a link planted there (the textfile directory is often
    # shared with node_exporter's group) must not make modfetch create or open a file elsewhere.  0600:
    # flock works on a read-only descriptor, so a lock file others can open is one they can hold forever.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+b") as lock:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)  # a lock file left 0644 by an older modfetch
        if not _lock_bounded(lock.fileno(), lock_wait):
            raise MetricsBusy(f"{lock_path} is held by another process; skipping this metrics write")
        try:
            if state_db.exists():
                # Read-only: a writable open would run recover_stale, which treats this process's own
                # running downloads as stale.  A short busy timeout: a DB another process keeps locked
                # must not hold this best-effort write (and the download calling it) for 30 s.
                db = StateDB(state_db, readonly=True, busy_timeout=lock_wait)
                try:
                    snap = collect(db)
                finally:
                    db.close()
            else:
                snap = Snapshot()
            text = render(snap)
            check_target(path)
            write_atomic(path, text)
            return text
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


class TextfileWriter:
    """A callable for ``Downloader(on_checkpoint=...)``: rewrites the textfile, never raises."""

    def __init__(self, state_db: Path, path: Path) -> None:
        self.state_db = state_db
        self.path = path
        self._lock = threading.Lock()
        self._warned = False
        self.last_written: float | None = None

    def __call__(self) -> None:
        try:
            with self._lock:
                write_textfile(self.state_db, self.path)
                self.last_written = time.time()
        except MetricsBusy as exc:  # contention is normal, not worth a warning: one debug line per skip
            log.debug("%s", exc.message)
        except Exception as exc:  # metrics must never break a download
            if not self._warned:
                self._warned = True
                log.warning("cannot write metrics textfile %s: %s", self.path, exc)
            else:
                log.debug("cannot write metrics textfile %s: %s", self.path, exc)


def write_after_run(config: Config) -> None:
    """Rewrite the textfile at the end of a command (download, verify), whatever the outcome; never raises."""
    writer = checkpoint_writer(config)
    if writer is not None:
        writer()


_WRITERS: dict[tuple[Path, Path], TextfileWriter] = {}
_WRITERS_LOCK = threading.Lock()


def checkpoint_writer(config: Config) -> Callable[[], None] | None:
    """The metrics hook for this config, or None when the textfile is disabled.  One writer per textfile and
    process: the checkpoints and the end-of-run write share its "warn once" state."""
    if not config.metrics.prometheus_textfile.enabled:
        return None
    key = (config.state_db, config.metrics_path)
    with _WRITERS_LOCK:
        writer = _WRITERS.get(key)
        if writer is None:
            writer = _WRITERS[key] = TextfileWriter(*key)
        return writer


__all__ = ["COUNTERS", "LOCK_WAIT_SECONDS", "MetricsBusy", "Snapshot", "TextfileWriter", "check_target",
           "checkpoint_writer", "collect", "labels_of", "render", "write_after_run", "write_atomic",
           "write_textfile"]
