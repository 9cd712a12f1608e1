"""Which mirrors may serve a download, and finding the one that sent wrong bytes.

Before a transfer (``open_sources``) every mirror is probed like the primary.  A mirror is used only when it
does ranges, its size equals the primary's, and either its strong ETag (or, with no ETag on either side, its
Last-Modified) equals the primary's or an expected SHA-256 will check the result; and when a small range from
the middle of the file hashes the same as the primary's (a mirror holding another version of the same size is
caught before it writes a byte).  Anything else skips the mirror with one warning naming it.

After a transfer whose whole-file hash differs from the expected one (``recheck``), every byte range a mirror
wrote is hashed again from the primary and compared with the bytes on disk: a mirror whose range differs is
dropped (named in a warning, the row's meta and the result) and the chunks it touched are fetched again from
the honest sources.  Bytes written by an earlier process (whose source is unknown) are checked the same way.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging

import requests

from ..errors import ModfetchError, NetworkError
from ..util.http import parse_content_range, strong_etag
from ..util.redact import redact, redact_url
from .hashing import hash_range
from .http import RetryableError, check_status, host_of, request
from .mirrors import Excluded, Source, SourceSet
from .probe import ProbeResult, probe
from .ratelimit import throttle
from .run import Run
from .scheduler import LiveChunk
from .session import make_session

log = logging.getLogger("modfetch.engine")
CHECK_BYTES = 64 << 10   # the cross-check range read from the primary and from each mirror before spreading
_BLOCK = 1 << 20


def check_range(size: int) -> tuple[int, int]:
    """``[start, end)`` of the cross-check: ``CHECK_BYTES`` from the middle of the file (headers of two versions
    of one model are often identical; the weights in the middle are not)."""
    length = min(CHECK_BYTES, size)
    start = (size - length) // 2
    return start - start % 4096, start - start % 4096 + length


def _source(info: ProbeResult, label: str, primary: bool = False) -> Source:
    etag = strong_etag(info.etag)
    date = info.last_modified if etag is None and info.date_if_range else None
    return Source(url=info.url, label=label, etag=info.etag, last_modified=info.last_modified,
                  if_range=etag or date, primary=primary)


def remote_digest(run: Run, session: requests.Session, source: Source, start: int, end: int) -> str:
    """SHA-256 hex of bytes ``[start, end)`` as ``source`` serves them (a validated 206; nothing is written)."""
    headers = dict(run.dl.base_headers, Range=f"bytes={start}-{end - 1}")
    if source.if_range:
        headers["If-Range"] = source.if_range
    response, final = request(session, "GET", source.url, base_headers=headers, auth=run.req.headers,
                              auth_host=run.req.auth_host, timeout=run.dl.timeout)
    with response:
        check_status(response, final)
        got = parse_content_range(response.headers.get("Content-Range"))
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if (response.status_code != 206 or got is None or (got.start, got.end) != (start, end - 1)
                or encoding not in ("identity", "")):
            raise RetryableError(f"{host_of(final)} did not answer bytes {start}-{end - 1} with that range "
                                 f"(HTTP {response.status_code})")
        digest, read = hashlib.sha256(), 0
        try:
            for block in response.raw.stream(_BLOCK, decode_content=False):
                digest.update(block[:end - start - read])
                read += len(block)
                throttle(len(block))
                if read >= end - start:
                    break
        except (OSError, ValueError, requests.RequestException) as exc:
            raise RetryableError(f"reading from {host_of(final)} failed: {type(exc).__name__}") from None
        if read < end - start:
            raise RetryableError(f"{host_of(final)} sent {read} of {end - start} bytes")
    return digest.hexdigest()


def _mismatch(run: Run, mirror: ProbeResult) -> str | None:
    """Why a probed mirror cannot serve this download's bytes, or None."""
    info = run.info
    if not mirror.ranges:
        return "it does not support range requests"
    if mirror.size != info.size:
        return f"its size ({mirror.size} bytes) differs from the primary's ({info.size} bytes)"
    ours, theirs = strong_etag(info.etag), strong_etag(mirror.etag)
    if ours and theirs:
        same = ours == theirs
    elif not info.etag and not mirror.etag:
        same = bool(info.last_modified) and info.last_modified == mirror.last_modified
    else:
        same = False
    if same or run.expected:
        return None
    return ("its ETag/Last-Modified differ from the primary's and there is no expected SHA-256 (--sha256) "
            "to check the result")


def _probe_mirror(run: Run, url: str, reference: str | None) -> Source | str:
    """The mirror's Source, or the reason to skip it."""
    session = make_session(run.dl.config, 1)
    label = redact_url(url)
    try:
        info = probe(session, url, base_headers=run.dl.base_headers, auth=run.req.headers,
                     auth_host=run.req.auth_host, timeout=run.dl.timeout)
        reason = _mismatch(run, info)
        if reason is not None:
            return reason
        source = _source(info, label)
        if reference is not None:
            start, end = check_range(run.info.size or 0)
            if remote_digest(run, session, source, start, end) != reference:
                return f"it serves different bytes than the primary (bytes {start}-{end - 1} differ)"
        return source
    except (RetryableError, ModfetchError) as exc:
        return f"it cannot be used ({redact(getattr(exc, 'message', None) or str(exc))})"
    finally:
        session.close()


def open_sources(run: Run) -> SourceSet | None:
    """The sources of this transfer (None without mirrors): the primary plus every mirror that passed the checks;
    each skipped mirror is named in one warning and recorded as excluded."""
    if not run.req.mirrors:
        return None
    size = run.info.size or 0
    primary = _source(run.info, run.req.row_url, primary=True)
    sources = SourceSet([primary])
    reference: str | None = None
    try:
        reference = remote_digest(run, run.session, primary, *check_range(size))
    except (RetryableError, ModfetchError) as exc:
        # Without the primary's bytes there is nothing to compare with: the validators and the final hash decide.
        log.warning("could not read the primary's check range (%s); mirrors are not cross-checked", exc)
    urls = [u for u in run.req.mirrors if redact_url(u) != primary.label and u != run.info.url]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, max(1, len(urls))),
                                               thread_name_prefix="modfetch-m") as pool:
        found = list(pool.map(lambda u: _probe_mirror(run, u, reference), urls))
    for url, outcome in zip(urls, found, strict=True):
        if isinstance(outcome, Source):
            sources.sources.append(outcome)
        else:
            log.warning("mirror %s skipped: %s", redact_url(url), outcome, extra={"download_id": run.row.id})
            sources.excluded.append(Excluded(redact_url(url), outcome))
    used = len(sources.sources)
    if used > 1:
        log.info("downloading %s from %d sources", run.name, used, extra={"download_id": run.row.id})
    return sources


def _differs(run: Run, primary: Source, start: int, end: int) -> bool:
    """True when the bytes on disk in ``[start, end)`` are not what the primary serves there (with retries)."""
    try:
        for attempt in run.dl.retrying():
            with attempt:
                return remote_digest(run, run.session, primary, start, end) != hash_range(run.fd, start, end)
    except RetryableError as exc:
        raise NetworkError(f"cannot check the mirrors' bytes against {primary.label}: {exc}",
                           hint="rerun the same command to try again") from None
    raise AssertionError("unreachable")


def recheck(run: Run, sources: SourceSet) -> tuple[list[LiveChunk], list[LiveChunk]]:
    """After a whole-file hash mismatch: (all chunks, the chunks to fetch again).  Every range a mirror (or an
    earlier process) wrote is compared with the primary's bytes; a mirror caught lying is dropped and every
    chunk it touched is dirty."""
    chunks = [LiveChunk.from_row(r) for r in run.db.get_chunks(run.row.id)]
    primary = sources.primary
    if primary.dropped is not None:
        log.warning("cannot tell which source sent wrong bytes: the primary source was dropped")
        return chunks, []
    with sources.lock:
        segments = list(sources.segments)
    bad: list[tuple[int, int]] = []
    liars: set[int] = set()
    for source, start, end in segments:
        if source.primary:
            continue
        if id(source) in liars or _differs(run, primary, start, end):
            if id(source) not in liars:
                liars.add(id(source))
                sources.drop(source, f"it served bytes {start}-{end - 1} that differ from the primary's")
            bad.append((start, end))
    for chunk in chunks:  # bytes of an earlier run: their source is unknown, so they are checked too
        covered = sum(min(e, chunk.end) - max(s, chunk.start) for _, s, e in segments
                      if s < chunk.end and e > chunk.start)
        if covered < chunk.end - chunk.start and not _overlaps(chunk, bad) and \
                _differs(run, primary, chunk.start, chunk.end):
            bad.append((chunk.start, chunk.end))
    dirty = [c for c in chunks if _overlaps(c, bad)]
    for chunk in dirty:
        sources.forget(chunk.start, chunk.end)
    return chunks, dirty


def _overlaps(chunk: LiveChunk, ranges: list[tuple[int, int]]) -> bool:
    return any(start < chunk.end and end > chunk.start for start, end in ranges)
