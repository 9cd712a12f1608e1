"""The files of one multi-file URI (a whole Hugging Face repo, a CivitAI version with several files) downloaded
together: ``concurrency.repo_parallel_files`` lanes, each with one state DB connection and one HTTP session kept
for all the files it takes (so connections are reused from file to file), small files on the engine's one-GET
fast path, made durable together by one ``SyncGroup``.

The connections carrying data are bounded by a ``ConnectionBudget`` of ``max(lanes, per-file connections,
max_connections_per_file)`` (32 by default; ``--concurrency N`` makes it ``max(lanes, N)``): a small file takes
one, a chunked file takes up to its per-file count of what is free (at least one), so several large shards run
at once (a server that limits each connection is met with as many connections as one adaptive file would open)
while a repo never opens ``lanes x per_file_chunks`` connections.  One file's failure is that file's alone; a stop
(Ctrl-C, SIGTERM) ends every lane after its current file has saved its state.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence

import requests

from ..cancel import STOP, check_stop, wait_or_stop
from ..config import Config
from ..engine import quick
from ..engine.download import Downloader, DownloadRequest, DownloadResult
from ..engine.session import make_session
from ..engine.syncgroup import SyncGroup
from ..engine.workers import HOOK_SECONDS
from ..errors import ModfetchError
from ..progress import ProgressListener
from ..state import StateDB, open_state

log = logging.getLogger("modfetch.app")
ProgressFactory = Callable[[], ProgressListener]
FailureOf = Callable[[DownloadRequest, Exception], ModfetchError]


class ConnectionBudget:
    """At most ``total`` connections carrying data at once across the lanes."""

    def __init__(self, total: int) -> None:
        self.total = self.free = max(1, total)
        self._cond = threading.Condition()
        self.peak = 0  # the most ever taken at once

    def take(self, want: int) -> int:
        """Wait until one connection is free, then take up to ``want``; a stop ends the wait (Interrupted)."""
        with self._cond:
            while self.free < 1:
                self._cond.wait(0.2)
                check_stop()
            got = max(1, min(want, self.free))
            self.free -= got
            self.peak = max(self.peak, self.total - self.free)
            return got

    def give(self, count: int) -> None:
        """Return ``count`` connections."""
        with self._cond:
            self.free += count
            self._cond.notify_all()


class Throttled:
    """A metrics hook called at most every ``seconds`` (counted from the start) while many files finish: each
    call reads the whole DB and rewrites and fsyncs the textfile.  The end of the command writes it anyway
    (``metrics.write_after_run``), so a repo done within ``seconds`` costs no write of its own."""

    def __init__(self, hook: Callable[[], None], seconds: float = HOOK_SECONDS) -> None:
        self.hook, self.seconds = hook, seconds
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def __call__(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.seconds:
                return
            self._last = now
        self.hook()


def download_many(config: Config, requests_: Sequence[DownloadRequest], *, progress: ProgressFactory,
                  concurrency: int | None, chunk_size: int | None, on_checkpoint: Callable[[], None] | None,
                  failure: FailureOf) -> tuple[dict[int, DownloadResult], list[ModfetchError]]:
    """Download every request over bounded lanes: ``({index: result}, [errors])``; raises Interrupted on a
    stop.  ``failure`` turns an unexpected exception of one file into its one-line error."""
    lanes = max(1, min(config.concurrency.repo_parallel_files, len(requests_)))
    per_file = max(1, concurrency or config.concurrency.per_file_chunks)
    cap = per_file if concurrency else config.concurrency.max_connections_per_file
    budget = ConnectionBudget(max(lanes, per_file, cap))
    group = SyncGroup()
    hook = Throttled(on_checkpoint) if on_checkpoint is not None else None
    chunk = chunk_size or config.concurrency.chunk_size_mb << 20
    done: dict[int, DownloadResult] = {}
    errors: list[tuple[int, ModfetchError]] = []
    lock, opening = threading.Lock(), threading.Lock()
    # Largest first (a file of unknown size counts as large): the big transfers overlap the small files'
    # round trips instead of running alone at the end.  Popped from the end of the list.
    queue = sorted(range(len(requests_)), key=lambda n: (requests_[n].expected_size is not None,
                                                          -(requests_[n].expected_size or 0), n), reverse=True)

    def next_index() -> int | None:
        with lock:
            return queue.pop() if queue and not STOP.is_set() else None

    def one(db: StateDB, session: requests.Session, n: int) -> None:
        req = requests_[n]
        small = quick.eligible(req, chunk)
        taken = budget.take(1 if small else per_file)
        try:
            downloader = Downloader(config, progress=progress(), concurrency=taken, chunk_size=chunk_size,
                                    on_checkpoint=hook, group=group)
            result = downloader.run(req, db=db, session=session)
            with lock:
                done[n] = result
        except Exception as exc:  # this file's failure alone (whatever it is): the others go on
            check_stop()  # request_stop() shut its connections down: the file was stopped, not failed
            error = exc if isinstance(exc, ModfetchError) else failure(req, exc)
            log.error("%s", error.message)
            with lock:
                errors.append((n, error))
        finally:
            budget.give(taken)

    def lane() -> None:
        with opening:  # one at a time: eight connections switching to WAL at once wait in SQLite's busy handler
            db = open_state(config.state_db)
        session = make_session(config, 2)
        try:
            while (n := next_index()) is not None:
                one(db, session, n)
        finally:
            session.close()
            db.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="modfetch-file") as pool:
        futures = [pool.submit(lane) for _ in range(lanes)]
        wait_or_stop(futures, lambda future: future.result())  # a lane raises only when stopped (or a bug)
    return done, [error for _, error in sorted(errors, key=lambda pair: pair[0])]
