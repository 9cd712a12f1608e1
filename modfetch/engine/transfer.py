"""One transfer attempt of a prepared run: open the ``.part``, fetch it (in parallel chunks, or as one stream
when the server cannot do ranges or names no size), verify, install, and record the outcome on the row.

Resuming lives here too: a resumed chunk is trusted only once its bytes on disk hash to what was recorded
(``_reverify``), and a final hash mismatch re-fetches only the chunks whose bytes changed (``_repair``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable

from tenacity import RetryCallState

from ..cancel import STOP
from ..errors import IntegrityError, ModfetchError, NetworkError
from ..state import CHUNK_COMPLETE, CHUNK_DIRTY, CHUNK_PENDING, COMPLETE, FAILED, INTERRUPTED, MISMATCH, RUNNING
from ..util.redact import redact, redact_url
from .fetch import PartTruncated
from .files import (
    OwnWrites,
    PartWritten,
    check_part,
    ensure_space,
    file_stamp,
    free_space_margin,
    install_file,
    open_part,
    os_error,
    part_changed,
    preallocate,
    write_checksum_file,
)
from .hashing import git_blob_sha1, hash_range, range_digest
from .http import RemoteChanged, RetryableError
from .mirrorcheck import open_sources, recheck
from .plan import plan_chunks, taper_tail
from .request import DownloadResult
from .run import Run, RunCounters
from .scheduler import LiveChunk
from .stream import fetch_stream
from .workers import CHECKPOINT_SECONDS, run_workers

log = logging.getLogger("modfetch.engine")


def transfer(run: Run) -> DownloadResult:
    """Fetch, verify and install ``run``'s file; the row records the outcome whichever way it ends."""
    db, row, dest, part, dl = run.db, run.row, run.dest, run.part, run.dl
    db.update_download(row.id, status=RUNNING, pid=os.getpid(), started_at=row.started_at or time.time())
    try:
        run.fd = open_part(part, lambda: db.replace_chunks(row.id, []))
    except OSError as exc:
        db.update_download(row.id, status=FAILED, error=f"cannot open {part}: {exc.strerror}")
        raise os_error(exc, "cannot open", part) from None
    run.counters = counters = RunCounters()
    ok: bool | None = False  # None: restarting after a remote change, neither success nor failure
    try:
        run.writes = writes = OwnWrites(run.fd)
        info = run.info
        chunked = info.size is not None and info.ranges and info.size > 0
        sha256, resumed = _chunked(run) if chunked else _single_stream(run)
        if run.expected and sha256 != run.expected:
            raise IntegrityError(f"SHA-256 mismatch for {dest.name}: got {sha256}, expected {run.expected}",
                                 hint="the server sent different bytes than the source published")
        size = os.fstat(run.fd).st_size
        if run.req.expected_git_sha1:
            os.fsync(run.fd)
            actual_sha1 = git_blob_sha1(part)
            if actual_sha1 != run.req.expected_git_sha1.lower():
                raise IntegrityError(f"git blob SHA-1 mismatch for {dest.name}: got {actual_sha1}, "
                                     f"expected {run.req.expected_git_sha1}")
        try:
            os.fsync(run.fd)
        except OSError as exc:
            raise os_error(exc, "cannot flush", part) from None
        # The path we install must still be the file we wrote (and, chunked, still preallocated in full).
        check_part(run.fd, part, info.size if chunked else None)
        os.close(run.fd)
        run.fd = -1
        # Recorded before the rename: a process killed between the rename and the "complete" write below
        # leaves a row whose hash proves the installed file is this download's, so the rerun adopts it.
        db.update_download(row.id, sha256=sha256)
        # Exactly the planned bytes, and nobody wrote to them since our last write (stat right before the
        # link): otherwise the hash above is not the hash of the file we would install.
        planned = info.size if info.size is not None else size
        install_file(part, dest, overwrite=run.req.force or dl.config.general.allow_overwrite,
                     check=lambda: writes.check(part, planned))
        write_checksum_file(dest, sha256)
        st = dest.stat()
        elapsed = time.monotonic() - run.started
        meta = dict(run.req.meta, stat=file_stamp(st))
        sources = run.sources.summary() if run.sources is not None else None
        if sources is not None:
            meta["mirrors"] = sources
        if run.req.expected_git_sha1:  # verified above: a rerun knows the file without a request (present.py)
            meta["git_sha1"] = run.req.expected_git_sha1.lower()
        db.update_download(row.id, status=COMPLETE, sha256=sha256, bytes_done=size, error=None,
                           finished_at=time.time(), meta=meta)
        ok = True
        dl.progress.finish(True)  # the bar closes (at 100%) before the final line is printed below it
        rate = counters.fetched / elapsed / 1e6 if elapsed > 0 else 0.0
        log.info("done: %s (%d bytes, sha256 %s, %.1f MB/s)", dest, size, sha256, rate,
                 extra={"download_id": row.id, "bytes": size, "elapsed_s": round(elapsed, 3), "status": COMPLETE})
        return DownloadResult(row.id, dest, sha256, size, counters.fetched, elapsed, resumed=resumed,
                              sources=sources)
    except IntegrityError as exc:
        _name_excluded(run, exc)
        db.restart_download(row.id, status=MISMATCH, error=redact(exc.message))
        raise
    except ModfetchError as exc:
        _name_excluded(run, exc)
        db.update_download(row.id, status=FAILED, error=redact(exc.message))
        raise
    except RemoteChanged:
        ok = None
        raise
    except KeyboardInterrupt:
        db.update_download(row.id, status=INTERRUPTED, error="interrupted; rerun to resume")
        raise
    except BaseException as exc:
        db.update_download(row.id, status=FAILED, error=redact(f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if run.fd >= 0:
            os.close(run.fd)
            run.fd = -1
        counters.flush(db, row.id, run.req.source, True if ok else None)  # failures: counted in run()
        dl.progress.finish(bool(ok))
        if dl.on_checkpoint is not None:
            dl.on_checkpoint()


def _name_excluded(run: Run, exc: ModfetchError) -> None:
    """A failed download with mirrors records its sources in the row's meta, and its error says which were
    excluded and why (the warnings may be long gone)."""
    if run.sources is None:
        return
    exc.sources_tried = True  # type: ignore[attr-defined]  # (mirrors.next_primary: no second go)
    with contextlib.suppress(Exception):  # the failure itself is what must be reported
        run.db.update_download(run.row.id, meta=dict(run.req.meta, mirrors=run.sources.summary()))
    if run.sources.excluded and "excluded sources" not in exc.message:
        exc.message += "; excluded sources: " + ", ".join(f"{e.label} ({e.reason})" for e in run.sources.excluded)


def _single_stream(run: Run) -> tuple[str, bool]:
    """No size or no Range support: one GET from the start; a retry starts over (nothing to resume)."""
    db, row, info, counters, progress = run.db, run.row, run.info, run.counters, run.dl.progress
    if run.req.mirrors:
        log.warning("mirrors not used: the primary source %s", "names no size" if info.size is None
                    else "does not support range requests", extra={"download_id": row.id})
    log.info("downloading %s as a single stream (%s)", row.dest_path,
             "no size" if info.size is None else "server does not support ranges", extra={"download_id": row.id})
    db.replace_chunks(row.id, [])
    if info.size is not None:
        ensure_space(run.fd, info.size, run.part, _margin(run))
    progress.start(run.name, info.size, 0)
    sent = [0]
    saved = [time.monotonic()]

    def report(n: int) -> None:
        sent[0] += n
        counters.fetched += n
        if n < 0:
            counters.fetched -= n
        progress.advance(n)
        if time.monotonic() - saved[0] >= CHECKPOINT_SECONDS:  # `status` shows the bytes on disk
            saved[0] = time.monotonic()
            db.update_download(row.id, bytes_done=sent[0])

    def note(state: RetryCallState) -> None:
        counters.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning("stream failed (%s); retry %d from the start", exc, state.attempt_number,
                    extra={"download_id": row.id, "attempt": state.attempt_number})
        report(-sent[0])

    try:
        return _stream_with_retries(run, note, report)
    except BaseException:
        with contextlib.suppress(Exception):  # stopped or failed: the row tells what the .part holds
            db.update_download(row.id, bytes_done=sent[0])
        raise


def _stream_with_retries(run: Run, note: Callable[[RetryCallState], None],
                         report: Callable[[int], None]) -> tuple[str, bool]:
    dl, req, info = run.dl, run.req, run.info
    try:
        for attempt in dl.retrying(note):
            with attempt:
                return fetch_stream(run.session, info.url, fd=run.fd, expected_size=info.size,
                                    base_headers=dl.base_headers, auth=req.headers, auth_host=req.auth_host,
                                    timeout=dl.timeout, on_bytes=report, stop=STOP,
                                    writes=run.own_writes()), False
    except RetryableError as exc:
        raise NetworkError(f"download of {run.name} failed after retries: {exc}",
                           hint="rerun the same command to try again") from None
    except PartTruncated:
        raise part_changed(run.part, "truncated") from None
    except PartWritten:
        raise part_changed(run.part, "written to") from None
    except OSError as exc:
        # A stream has no checkpoint to resume from: give all its space back (never leave the disk full).
        with contextlib.suppress(OSError):
            os.ftruncate(run.fd, 0)
        error = os_error(exc, "cannot write", run.part)
        if error.hint and "resumes" in error.hint:
            error.hint = "free some space and rerun the same command (this server cannot resume: it starts over)"
        raise error from None
    raise AssertionError("unreachable")


def _margin(run: Run) -> int:
    """Bytes that must stay free on the .part's file system (general.min_free_mb)."""
    try:
        return free_space_margin(run.fd, run.dl.config.general.min_free_mb)
    except OSError:
        return 0


def _chunked(run: Run) -> tuple[str, bool]:
    db, row, fd, part = run.db, run.row, run.fd, run.part
    assert run.info.size is not None
    size = run.info.size
    on_disk = os.fstat(fd).st_size  # before preallocation: a truncated or recreated .part shows here
    if on_disk > size:  # bytes past the planned end were never ours: cut them, then verify the rest
        log.warning("the .part file is longer than the download (%d > %d bytes); cutting it", on_disk, size,
                    extra={"download_id": row.id})
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise os_error(exc, "cannot truncate", part) from None
        on_disk = size
    ensure_space(fd, size, part, _margin(run))
    preallocate(fd, size, part)
    run.own_writes().own_change()
    rows = db.get_chunks(row.id)
    resumed = bool(rows)
    if rows:
        chunks = [LiveChunk.from_row(r) for r in rows]
        _reverify(run, chunks, on_disk)
    else:
        plan = taper_tail(plan_chunks(size, run.dl.workers, run.dl.chunk_size), run.dl.workers)
        chunks = [LiveChunk.from_row(r) for r in plan]
        db.replace_chunks(row.id, [c.to_row() for c in chunks])
    for chunk in chunks:
        if chunk.status != CHUNK_COMPLETE and chunk.hasher is None:
            chunk.hasher = hashlib.sha256()  # a chunk resumed inside got the hasher of its verified bytes
    done_before = sum(c.end - c.start if c.status == CHUNK_COMPLETE else c.done for c in chunks)
    if resumed:
        log.info("resuming %s: %d of %d bytes already on disk", run.name, done_before, size,
                 extra={"download_id": row.id, "bytes": done_before})
    log.info("downloading %s: %d bytes in %d chunks over %d connections", run.name, size, len(chunks),
             run.dl.workers, extra={"download_id": row.id, "url": redact_url(run.req.display_url)})
    run.sources = open_sources(run)
    run.dl.progress.start(run.name, size, done_before)
    sha256 = run_workers(run, chunks, hash_while_downloading=True)
    for _ in range(3):  # a round may refetch bytes of unknown source from a liar not caught yet: check again
        if not (run.expected and sha256 != run.expected and run.sources is not None and run.sources.mirrored):
            break
        chunks, dirty = recheck(run, run.sources)  # a mirror that sent other bytes is dropped here
        if not dirty:
            break
        log.warning("final hash mismatch: fetching %d chunk(s) again from the honest sources", len(dirty),
                    extra={"download_id": row.id})
        sha256 = _refetch(run, chunks, dirty)
    if run.expected and sha256 != run.expected:
        sha256 = _repair(run, sha256)
    return sha256, resumed


def _reverify(run: Run, chunks: list[LiveChunk], on_disk: int) -> None:
    """Trust no chunk on resume until its bytes hash to what was recorded: a complete chunk's whole range, a
    partly fetched one's first ``done`` bytes (the .part may be older than the DB: restored from a backup,
    or a power cut kept the DB's checkpoint but not the data).  A verified partial chunk keeps its hasher
    to continue after those bytes; any other is fetched again from its start."""
    download_id, fd = run.row.id, run.fd
    started = [c for c in chunks if c.status == CHUNK_COMPLETE or c.done]

    def digest(chunk: LiveChunk) -> hashlib._Hash | None:
        end = chunk.end if chunk.status == CHUNK_COMPLETE else chunk.start + chunk.done
        return range_digest(fd, chunk.start, end) if end <= on_disk and chunk.sha256 else None

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        digests = list(pool.map(digest, started))
    dirty = []
    for chunk, found in zip(started, digests, strict=True):
        if found is None or found.hexdigest() != chunk.sha256:
            dirty.append(chunk)
        elif chunk.status != CHUNK_COMPLETE:
            chunk.hasher = found
    shrunk = [c for c in dirty if (c.end if c.status == CHUNK_COMPLETE else c.start + c.done) > on_disk]
    complete = sum(1 for c in dirty if c.status == CHUNK_COMPLETE)
    for chunk in dirty:
        chunk.reset()
    if dirty and on_disk == 0:
        # No .part at all (a finished file deleted after `verify`, or the .part removed): say that, not
        # "shorter than recorded" / "no longer match".
        log.info("no .part file from the earlier attempt; fetching the whole file", extra={"download_id": download_id})
        complete = len(dirty)
    elif shrunk:
        log.warning("the .part file is shorter than recorded; fetching the missing bytes again",
                    extra={"download_id": download_id})
    if complete and on_disk:
        log.warning("%d completed chunk(s) no longer match their hash; fetching them again", complete,
                    extra={"download_id": download_id})
    if len(dirty) > complete and on_disk:
        log.warning("%d partly fetched chunk(s) no longer match their hash; fetching them again",
                    len(dirty) - complete, extra={"download_id": download_id})
    if dirty:
        run.db.save_chunks(download_id, [c.to_row() for c in chunks])


def _repair(run: Run, got: str) -> str:
    """Final hash mismatch: find chunks whose bytes changed on disk, fetch only those, hash again."""
    db, row, fd = run.db, run.row, run.fd
    chunks = [LiveChunk.from_row(r) for r in db.get_chunks(row.id)]
    dirty = [c for c in chunks if hash_range(fd, c.start, c.end) != c.sha256]
    if not dirty:
        raise IntegrityError(
            f"SHA-256 mismatch for {run.name}: got {got}, expected {run.expected}",
            hint="every chunk arrived intact, so the server itself sent different bytes than published")
    log.warning("final hash mismatch: repairing %d chunk(s)", len(dirty), extra={"download_id": row.id})
    return _refetch(run, chunks, dirty)


def _refetch(run: Run, chunks: list[LiveChunk], dirty: list[LiveChunk]) -> str:
    """Fetch the ``dirty`` chunks of ``chunks`` again (marked dirty in the DB first, so a kill in between
    re-fetches them too); the SHA-256 of the whole ``.part`` afterwards."""
    for chunk in dirty:
        chunk.reset()
        chunk.status = CHUNK_DIRTY
    run.db.save_chunks(run.row.id, [c.to_row() for c in chunks])
    for chunk in dirty:
        chunk.status = CHUNK_PENDING
    run_workers(run, chunks, hash_while_downloading=False)
    return hash_range(run.fd, 0, run.info.size or 0)
