"""The parallel part of a chunked transfer: worker threads (one ``requests.Session`` each) fetch, ``pwrite``
and hash chunks; the coordinating thread drains their events into chunk rows, checkpoints about once a
second, reports progress, watches for stalled connections and for a ``.part`` someone else changed."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
from typing import Any

import requests

from ..cancel import STOP, Interrupted, polling
from ..errors import ModfetchError, NetworkError
from ..state import CHUNK_COMPLETE, CHUNK_PENDING, CHUNK_RUNNING, StateDB
from ..util.http import strong_etag
from .adaptive import Connections, Shed, connections_for
from .fetch import BLOCK, DiskWriteError, FetchContext, PartTruncated, fetch_chunk
from .files import PartWritten, check_part, os_error, part_changed
from .flush import start_flush
from .hashing import PrefixHasher, hash_range
from .http import RemoteChanged, RetryableError
from .probe import ProbeResult
from .retry import backoff_wait
from .run import Run, RunCounters
from .scheduler import LiveChunk, Scheduler
from .session import make_session, shutdown_response

log = logging.getLogger("modfetch.engine")
CHECKPOINT_SECONDS = 1.0
HOOK_SECONDS = 5.0

_Events = queue.Queue[tuple[str, LiveChunk, BaseException | None]]


def date_if_range(info: ProbeResult) -> bool:
    """True when chunk requests carry ``If-Range: <Last-Modified>`` (no strong ETag to send instead)."""
    return strong_etag(info.etag) is None and bool(info.last_modified) and info.date_if_range


def run_workers(run: Run, chunks: list[LiveChunk], hash_while_downloading: bool) -> str:
    """Fetch every unfinished chunk of ``chunks`` in parallel; the SHA-256 of the whole ``.part``."""
    dl, db, row, info, fd = run.dl, run.db, run.row, run.info, run.fd
    assert info.size is not None
    scheduler = Scheduler(chunks, steal=dl.steal)
    cancel = threading.Event()
    validator = strong_etag(info.etag) or (info.last_modified if date_if_range(info) else None)
    ctx = FetchContext(url=info.url, size=info.size, fd=fd, base_headers=dl.base_headers, auth=run.req.headers,
                       auth_host=run.req.auth_host, timeout=dl.timeout, etag=info.etag, if_range=validator,
                       cancel=cancel, last_modified=info.last_modified, writes=run.own_writes())
    events: _Events = queue.Queue()
    hasher = PrefixHasher(fd, info.size, scheduler.available, cancel) if hash_while_downloading else None
    pending = [c for c in chunks if c.status != CHUNK_COMPLETE]
    workers = max(1, min(dl.workers, len(pending) if not dl.steal else dl.workers))
    conns = connections_for(workers, info.size - scheduler.bytes_done(), dl.adaptive, scheduler,
                            lambda n: db.update_download(row.id, connections=n), time.monotonic(),
                            run.counters.retries)
    if hasher is not None:
        hasher.start()
    failure: BaseException | None = None
    last_checkpoint = last_hook = time.monotonic()
    reported = scheduler.bytes_done()
    background = start_flush(fd, scheduler.bytes_done, info.size - reported)  # the final fsync is then cheap
    # signals now stop us through STOP, never by raising inside the pool's bookkeeping (see modfetch.cancel)
    with polling(), \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(workers, dl.adaptive.cap if dl.adaptive else 0),
                                                  thread_name_prefix="modfetch-w") as pool:
        futures = [pool.submit(_worker, run, ctx, conns, events) for _ in range(workers)]
        try:
            while True:
                finished, _ = concurrent.futures.wait(futures, timeout=conns.poll_seconds)
                failure = _drain(db, row.id, scheduler, events, failure, cancel)
                now = time.monotonic()
                done_now = scheduler.bytes_done()
                if done_now != reported:
                    dl.progress.advance(done_now - reported)
                    run.counters.fetched += max(0, done_now - reported)
                    reported = done_now
                futures += [pool.submit(_worker, run, ctx, conns, events)
                            for _ in range(conns.tick(now, done_now, run.counters.retries))]
                if now - last_checkpoint >= CHECKPOINT_SECONDS:
                    _checkpoint(db, row.id, scheduler)
                    run.counters.flush(db, row.id, run.req.source, None)
                    last_checkpoint = now
                if dl.on_checkpoint is not None and now - last_hook >= HOOK_SECONDS:
                    dl.on_checkpoint()
                    last_hook = now
                _watchdog(ctx)
                if run.sources is not None:
                    run.sources.police(ctx)  # a far slower mirror is dropped, its pieces move on
                check_part(fd, row.part_path, info.size)  # stop early, not after fetching into a lost file
                if STOP.is_set():
                    raise Interrupted()
                if len(finished) == len(futures):
                    break
        except BaseException:
            cancel.set()
            if background is not None:
                background.stop()
            for response, _ in list(ctx.active.values()):
                shutdown_response(response)
            concurrent.futures.wait(futures)
            _drain(db, row.id, scheduler, events, None, cancel)
            _checkpoint(db, row.id, scheduler, stopped=True)
            raise
    if background is not None:
        background.stop()
    failure = _drain(db, row.id, scheduler, events, failure, cancel)
    _checkpoint(db, row.id, scheduler, stopped=True)
    if failure is None:
        for future in futures:
            if future.exception() is not None:
                failure = future.exception()
    if failure is not None:
        cancel.set()
        if hasher is not None:
            hasher.join()
        _raise_failure(failure, run)
    unfinished = [c for c in scheduler.chunks if c.status != CHUNK_COMPLETE]
    if unfinished:
        raise NetworkError(f"download of {run.name} stopped with {len(unfinished)} chunk(s) unfinished",
                           hint="rerun the same command to resume")
    if hasher is not None:
        # Flush the data to disk while the hasher catches up with the last bytes (both wait on I/O or
        # hash with the GIL released, so they overlap); the fsync before the rename is then cheap.
        flusher = threading.Thread(target=_fsync_quietly, args=(fd,), name="modfetch-fsync", daemon=True)
        flusher.start()
        hasher.nudge()  # the last bytes are on disk: no need to wait for its next poll
        hasher.join()
        flusher.join()
        digest = hasher.result()
        if digest is not None:
            return digest
        log.debug("prefix hasher did not finish (%s); hashing the whole file", hasher.error)
    return hash_range(fd, 0, info.size)


def _worker(run: Run, ctx: FetchContext, conns: Connections, events: _Events) -> None:
    session = make_session(run.dl.config, 2)
    buf = bytearray(BLOCK)
    try:
        while not ctx.cancel.is_set():
            chunk = conns.next_chunk()
            if chunk is None:
                return
            if chunk.hasher is None:
                chunk.hasher = hashlib.sha256()
            try:
                _fetch_with_retries(run, ctx, chunk, session, buf, conns)
            except Shed:
                return  # fewer connections now: another worker continues this chunk
            except BaseException as exc:
                events.put(("failed", chunk, exc))
                ctx.cancel.set()
                return
            if ctx.cancel.is_set() and chunk.position < chunk.end:
                events.put(("failed", chunk, None))
                return
            chunk.sha256 = chunk.hasher.hexdigest()
            chunk.status = CHUNK_COMPLETE
            events.put(("complete", chunk, None))
    finally:
        session.close()


def _fetch_with_retries(run: Run, ctx: FetchContext, chunk: LiveChunk, session: requests.Session,
                        buf: bytearray, conns: Connections | None = None) -> None:
    cc = run.dl.config.concurrency
    counters: RunCounters = run.counters
    wait = backoff_wait(cc.backoff_min_ms / 1000, cc.backoff_max_ms / 1000)
    attempt = 0
    while True:
        before = chunk.done
        try:
            (run.sources.fetch if run.sources is not None else fetch_chunk)(ctx, chunk, session, buf)
            return
        except RetryableError as exc:
            if STOP.is_set():
                ctx.cancel.set()  # request_stop() shut the socket down: the chunk is unfinished, not done
            if ctx.cancel.is_set():
                return  # the failure is our own shutdown of the socket
            attempt += 1
            # Attempts are counted per chunk and reset whenever an attempt made progress, so a link that
            # drops every few MB still finishes a 100 GB file.
            chunk.failures = 0 if chunk.done > before else chunk.failures + 1
            if chunk.failures > cc.max_retries:
                raise NetworkError(f"giving up on bytes {chunk.position}-{chunk.end - 1} after "
                                   f"{cc.max_retries} retries: {exc}",
                                   hint="rerun the same command to resume") from None
            delay = wait.delay(max(1, chunk.failures), exc.retry_after)
            with counters.lock:
                counters.retries += 1
            log.warning("chunk %d: %s; retry %d in %.1fs", chunk.idx, exc, attempt, delay,
                        extra={"download_id": run.row.id, "chunk": chunk.idx, "attempt": attempt})
            if ctx.cancel.wait(delay):
                return
            if conns is not None and conns.shed(chunk):
                raise Shed() from None


def _drain(db: StateDB, download_id: int, scheduler: Scheduler, events: queue.Queue[Any],
           failure: BaseException | None, cancel: threading.Event) -> BaseException | None:
    changed: list[LiveChunk] = scheduler.take_new_chunks()
    while True:
        try:
            kind, chunk, exc = events.get_nowait()
        except queue.Empty:
            break
        changed.append(chunk)
        if kind == "failed" and exc is not None and failure is None:
            failure = exc
            cancel.set()
    if changed:
        for chunk in scheduler.chunks:
            if chunk not in changed and chunk.status != CHUNK_PENDING:
                changed.append(chunk)  # a victim whose end moved
        db.save_chunks(download_id, [c.to_row() for c in changed], scheduler.bytes_done())
    return failure


def _checkpoint(db: StateDB, download_id: int, scheduler: Scheduler, stopped: bool = False) -> None:
    """Persist running chunks' progress (bounded loss on kill -9: about one second of transfer).

    ``stopped``: the workers have exited, so no chunk is running any more."""
    with scheduler.lock:
        rows = [c.to_row() for c in scheduler.chunks if c.status != CHUNK_COMPLETE]
    for r in rows:
        if r.status == CHUNK_RUNNING and (stopped or r.bytes_done == 0):
            r.status = CHUNK_PENDING
    db.save_chunks(download_id, rows, scheduler.bytes_done())


def _watchdog(ctx: FetchContext) -> None:
    """Abort reads that made no progress for twice the timeout (trickling servers never time out)."""
    limit = 2 * ctx.timeout[1]
    now = time.monotonic()
    for response, last in list(ctx.active.values()):
        if now - last > limit:
            log.warning("a connection stalled for %.0fs; reconnecting", now - last)
            shutdown_response(response)


def _raise_failure(failure: BaseException, run: Run) -> None:
    part = run.part
    if isinstance(failure, RemoteChanged):
        raise failure
    if isinstance(failure, PartTruncated):
        raise part_changed(part, "truncated") from None
    if isinstance(failure, PartWritten):
        raise part_changed(part, "written to") from None
    if isinstance(failure, DiskWriteError):
        raise os_error(failure.os_error, "cannot write", part) from None
    if isinstance(failure, ModfetchError):
        raise failure
    if isinstance(failure, OSError):
        raise os_error(failure, "cannot write", part) from None
    raise failure


def _fsync_quietly(fd: int) -> None:
    """fsync for overlap only: an error here resurfaces from the real fsync before the rename."""
    with contextlib.suppress(OSError):
        os.fsync(fd)


