"""Which mirrors may serve a download, and finding the one that sent wrong bytes.

Before a transfer (``open_sources``) every mirror is probed with one ranged GET of a small range from the middle
of the file, the primary's same range read in parallel.  A mirror is used only when it does ranges, its size
equals the primary's, and either its strong ETag (or, with no ETag on either side, its
Last-Modified) equals the primary's or an expected SHA-256 will check the result; and when that range hashes the
same as the primary's (a mirror holding another version of the same size is caught before it writes a byte).
Anything else skips the mirror with one warning naming it.

After a transfer whose whole-file hash differs from the expected one (``recheck``), every byte range a mirror
wrote is hashed again from the primary and compared with the bytes on disk: a mirror whose range differs is
dropped (named in a warning, the row's meta and the result) and the chunks it touched are fetched again from
the honest sources.  Bytes written by an earlier process (whose source is unknown) are checked the same way.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
from collections.abc import Callable, Mapping

import requests

from ..cancel import wait_or_stop
from ..errors import ModfetchError, NetworkError
from ..util.http import parse_content_range, parse_unsatisfied_range, strong_etag
from ..util.redact import redact, redact_url
from .hashing import hash_range
from .http import RetryableError, check_status, host_of, request
from .mirrors import Excluded, Source, SourceSet
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


class _Skip(Exception):
    """A mirror that cannot serve this download; the message says why."""


def _source(url: str, label: str, etag: str | None, last_modified: str | None, primary: bool = False) -> Source:
    strong = strong_etag(etag)
    return Source(url=url, label=label, etag=etag, last_modified=last_modified, if_range=strong or last_modified,
                  primary=primary)


Vet = Callable[[int | None, Mapping[str, str]], None]


def read_range(run: Run, session: requests.Session, url: str, start: int, end: int, if_range: str | None = None,
               vet: Vet | None = None) -> tuple[str, str, Mapping[str, str]]:
    """(final URL, SHA-256 hex, headers) of bytes ``[start, end)`` as ``url`` serves them: a validated 206, read
    and hashed, nothing written.  ``vet(total, headers)`` may refuse the answer (raising) before its body is
    read; it also sees a 416 (total from ``bytes */TOTAL``) and a 200 (total None)."""
    headers = dict(run.dl.base_headers, Range=f"bytes={start}-{end - 1}")
    if if_range:
        headers["If-Range"] = if_range
    response, final = request(session, "GET", url, base_headers=headers, auth=run.req.headers,
                              auth_host=run.req.auth_host, timeout=run.dl.timeout)
    with response:
        if vet is not None and response.status_code in (200, 416):
            vet(parse_unsatisfied_range(response.headers.get("Content-Range")), response.headers)
        check_status(response, final)
        got = parse_content_range(response.headers.get("Content-Range"))
        if vet is not None and got is not None:
            vet(got.total, response.headers)  # first: a shorter file answers with a shorter range
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
        return final, digest.hexdigest(), response.headers


def remote_digest(run: Run, session: requests.Session, source: Source, start: int, end: int) -> str:
    """SHA-256 hex of bytes ``[start, end)`` as ``source`` serves them (with its own If-Range)."""
    return read_range(run, session, source.url, start, end, source.if_range)[1]


def _vet(run: Run) -> Vet:
    """The checks a mirror's answer must pass before its bytes count: ranges, the primary's size, and the
    primary's validators unless an expected SHA-256 will check the result."""
    info = run.info

    def vet(total: int | None, headers: Mapping[str, str]) -> None:
        if total is None:
            raise _Skip("it does not support range requests")
        if total != info.size:
            raise _Skip(f"its size ({total} bytes) differs from the primary's ({info.size} bytes)")
        etag, modified = headers.get("ETag"), headers.get("Last-Modified")
        ours, theirs = strong_etag(info.etag), strong_etag(etag)
        if ours and theirs:
            same = ours == theirs
        else:
            same = not info.etag and not etag and bool(modified) and modified == info.last_modified
        if not same and not run.expected:
            raise _Skip("its ETag/Last-Modified differ from the primary's and there is no expected SHA-256 "
                        "(--sha256) to check the result")

    return vet


def _probe_mirror(run: Run, url: str, start: int, end: int) -> tuple[Source, str] | str:
    """One ranged GET of the check range (probe and cross-check at once): the mirror's Source and the range's
    digest, or why to skip it."""
    session = make_session(run.dl.config, 1)
    try:
        final, digest, headers = read_range(run, session, url, start, end, vet=_vet(run))
        return _source(final, redact_url(url), headers.get("ETag"), headers.get("Last-Modified")), digest
    except _Skip as skip:
        return str(skip)
    except (RetryableError, ModfetchError) as exc:
        return f"it cannot be used ({redact(getattr(exc, 'message', None) or str(exc))})"
    finally:
        session.close()


def open_sources(run: Run) -> SourceSet | None:
    """The sources of this transfer (None without mirrors): the primary plus every mirror that passed the checks;
    each skipped mirror is named in one warning and recorded as excluded.  One round trip: the primary's check
    range and every mirror's are read in parallel."""
    if not run.req.mirrors:
        return None
    info = run.info
    primary = _source(info.url, run.req.row_url, info.etag, info.last_modified, primary=True)
    if strong_etag(info.etag) is None and not info.date_if_range:
        primary.if_range = None  # (workers.date_if_range): this server's dates are too weak for If-Range
    sources = SourceSet([primary])
    start, end = check_range(info.size or 0)
    urls = [u for u in run.req.mirrors if u not in (run.req.url, info.url)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(urls) + 1),
                                               thread_name_prefix="modfetch-m") as pool:
        ours = pool.submit(remote_digest, run, run.session, primary, start, end)
        probes = [pool.submit(_probe_mirror, run, u, start, end) for u in urls]
        wait_or_stop([ours, *probes])  # Ctrl-C: request_stop() cuts every probe's connection, then Interrupted
        found = [p.result() for p in probes]
        try:
            reference: str | None = ours.result()
        except (RetryableError, ModfetchError) as exc:
            # Nothing to compare with: only an expected SHA-256 can still catch a lying mirror, so without one
            # the mirrors are not trusted (a 429 from the primary must not turn the cross-check off).
            log.warning("could not read the primary's check range (%s); mirrors are not cross-checked", exc)
            reference = None
    for url, outcome in zip(urls, found, strict=True):
        if isinstance(outcome, tuple) and reference is None and not run.expected:
            outcome = ("the primary's bytes could not be read to cross-check it and there is no expected SHA-256 "
                       "(--sha256) to check the result")
        elif isinstance(outcome, tuple) and reference is not None and outcome[1] != reference:
            outcome = f"it serves different bytes than the primary (bytes {start}-{end - 1} differ)"
        if isinstance(outcome, tuple):
            sources.sources.append(outcome[0])
        else:
            log.warning("mirror %s skipped: %s", redact_url(url), outcome, extra={"download_id": run.row.id})
            sources.excluded.append(Excluded(redact_url(url), outcome))
    if len(sources.sources) > 1:
        log.info("downloading %s from %d sources", run.name, len(sources.sources),
                 extra={"download_id": run.row.id})
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
