"""Multi-source downloads (``--mirror``): the sources of one transfer, their health, and which source serves the
next piece of a chunk.

The primary (the URL the user gave, or the file a resolver found) and every accepted mirror serve the same
bytes.  A worker asks ``SourceSet.fetch`` instead of ``fetch_chunk``: it takes the healthy source with the fewest
open connections, fetches from it, and on a failure moves the chunk at once to another source (no backoff: it
is another server).  A source is dropped after a final failure (404, 403, a changed file, a refused
connection), after ``STRIKES`` failures in a row without progress, or when it is ``SLOW_FACTOR`` times slower
per connection than the fastest source (``police``, run by the coordinator), with one warning naming it.  The
last healthy source is never dropped: its failures go to the worker's normal retry loop, so a download with
mirrors fails only when a single-source download would; a primary that cannot be reached before the transfer
hands over to the first mirror (``next_primary``).  Every byte range a source wrote is remembered
(``segments``) so a final hash mismatch can be traced to the source that sent the wrong bytes
(``engine.mirrorcheck``).  Which URL may carry a credential is decided per request by ``engine.http.request``
(the token's host only), never here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from ..cancel import STOP
from ..errors import DiskError, ModfetchError, UsageError
from ..util.filenames import filename_from_url
from ..util.redact import redact, redact_url
from ..util.sizes import human_size
from .fetch import FetchContext, fetch_chunk
from .http import RemoteChanged, RetryableError
from .origin import AmbiguousURLError, connection_origin
from .request import DownloadRequest
from .scheduler import LiveChunk
from .session import shutdown_response

log = logging.getLogger("modfetch.engine")
STRIKES = 2           # failures in a row without progress before a source is dropped
MAX_MIRRORS = 16      # more sources than connections only add probes
SLOW_FACTOR = 8       # a source this many times slower per connection than the best one is dropped ...
SLOW_SECONDS = 1.0    # ... once it has been measured for this long (the best: over at least BEST_BYTES)
BEST_BYTES = 1 << 20


@dataclass(eq=False)
class Source:
    """One URL serving the file: where chunk requests go (after the probe's redirects) and its validators."""

    url: str
    label: str                      # the URL as given, redacted: what messages and the row's meta show
    etag: str | None = None
    last_modified: str | None = None
    if_range: str | None = None
    primary: bool = False
    active: int = 0                 # connections fetching from it now
    strikes: int = 0                # failures in a row without progress
    dropped: str | None = None      # why it is no longer used (None: healthy)
    # (bytes, seconds) of its last finished pieces: its speed per connection
    history: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=8))


@dataclass
class Excluded:
    """A mirror that was not used (skipped at the probe) or stopped being used (dropped), and why."""

    label: str
    reason: str


@dataclass
class SourceSet:
    """The sources of one download and the byte ranges each wrote (thread-safe; shared by the workers)."""

    sources: list[Source]
    excluded: list[Excluded] = field(default_factory=list)
    segments: list[tuple[Source, int, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # worker thread -> (source, chunk, start offset, start time) of the piece it is fetching
    flights: dict[int, tuple[Source, LiveChunk, int, float]] = field(default_factory=dict)

    @property
    def primary(self) -> Source:
        """The source the user named first (the reference the mirrors are checked against)."""
        return self.sources[0]

    @property
    def mirrored(self) -> bool:
        """True when more than one source was in use at some point."""
        return len(self.sources) > 1

    def healthy(self) -> list[Source]:
        """Sources still in use."""
        with self.lock:
            return [s for s in self.sources if s.dropped is None]

    # -- the worker side ---------------------------------------------------------------------------
    def fetch(self, ctx: FetchContext, chunk: LiveChunk, session: requests.Session, buf: bytearray) -> None:
        """``fetch_chunk`` over the healthy sources: a failing source hands the chunk to another one."""
        while chunk.position < chunk.end and not ctx.cancel.is_set():
            start = chunk.position
            source = self._take(chunk, start)
            try:
                fetch_chunk(ctx if source.primary else self._context(ctx, source), chunk, session, buf)
            except DiskError:
                raise
            except (RetryableError, RemoteChanged, ModfetchError) as exc:
                if ctx.cancel.is_set() or STOP.is_set() or (source.primary and isinstance(exc, RemoteChanged)):
                    raise  # our own shutdown, or the primary's file changed: the whole run restarts
                if not self._fail(source, exc, progressed=chunk.position > start):
                    raise  # the last healthy source: the normal retry loop (with backoff) takes over
            finally:
                self._give_back(source, start, chunk.position)

    @staticmethod
    def _context(ctx: FetchContext, source: Source) -> FetchContext:
        # Same .part, cancel event, watchdog slots and auth binding; the mirror's own URL and validators.
        return dataclasses.replace(ctx, url=source.url, etag=source.etag, if_range=source.if_range,
                                   last_modified=source.last_modified)

    def _take(self, chunk: LiveChunk, start: int) -> Source:
        with self.lock:
            healthy = [s for s in self.sources if s.dropped is None]
            source = min(healthy, key=lambda s: s.active)  # ties: the earlier source (the primary first)
            source.active += 1
            self.flights[threading.get_ident()] = (source, chunk, start, time.monotonic())
            return source

    def _give_back(self, source: Source, start: int, end: int) -> None:
        with self.lock:
            _, _, _, began = self.flights.pop(threading.get_ident())
            source.active -= 1
            if end > start:
                self.segments.append((source, start, end))
                source.history.append((end - start, time.monotonic() - began))

    def _fail(self, source: Source, exc: BaseException, progressed: bool) -> bool:
        """Count a failure of ``source``; False when it is the last healthy one (the caller re-raises)."""
        final = not isinstance(exc, RetryableError) or exc.unreachable
        reason = redact(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
        with self.lock:
            if not any(s is not source and s.dropped is None for s in self.sources):
                return False
            source.strikes = 0 if progressed and not final else source.strikes + 1
            if source.dropped is None and (final or source.strikes >= STRIKES):
                self._drop_locked(source, reason)
            return True

    # -- the coordinator side ------------------------------------------------------------------------
    def police(self, ctx: FetchContext) -> None:
        """Called by the coordinator about every 0.25 s: a source far slower per connection than the best one
        (``SLOW_FACTOR``) is dropped and its connections are cut, so its pieces move to the faster sources.
        Without this, one slow mirror would hold the last chunks long after the others finished."""
        now = time.monotonic()
        with self.lock:
            speed: dict[int, list[float]] = {id(s): [float(sum(b for b, _ in s.history)),
                                                     sum(t for _, t in s.history), 0.0] for s in self.sources}
            for source, chunk, start, began in self.flights.values():
                entry = speed[id(source)]
                entry[0] += max(0, chunk.position - start)
                entry[1] += now - began
                entry[2] = max(entry[2], now - began)  # its longest piece in flight
            healthy = [s for s in self.sources if s.dropped is None]
            rates = {id(s): speed[id(s)][0] / speed[id(s)][1] for s in healthy if speed[id(s)][1] > 0}
            best = max((rates[id(s)] for s in healthy if id(s) in rates and speed[id(s)][0] >= BEST_BYTES),
                       default=0.0)
            slow = [s for s in healthy if s.active and speed[id(s)][2] >= SLOW_SECONDS
                    and rates.get(id(s), 0.0) * SLOW_FACTOR < best]
            for source in slow:
                if any(s is not source and s.dropped is None for s in self.sources):
                    self._drop_locked(source, f"it is too slow ({human_size(int(rates.get(id(source), 0)))}/s per "
                                              f"connection; the fastest source: {human_size(int(best))}/s)")
            cut = [tid for tid, flight in self.flights.items() if flight[0].dropped is not None]
        for tid in cut:  # the worker's read fails; SourceSet.fetch moves its chunk to a healthy source
            response = ctx.active.get(tid)
            if response is not None:
                shutdown_response(response[0])

    def drop(self, source: Source, reason: str) -> None:
        """Stop using ``source`` (a liar found by the checks); says so once."""
        with self.lock:
            if source.dropped is None:
                self._drop_locked(source, reason)

    def _drop_locked(self, source: Source, reason: str) -> None:
        source.dropped = reason
        self.excluded.append(Excluded(source.label, reason))
        what = "primary source" if source.primary else "mirror"
        log.warning("%s %s dropped: %s; its chunks go to the other sources", what, source.label, reason)

    def forget(self, start: int, end: int) -> None:
        """Forget which source wrote bytes in ``[start, end)`` (they are about to be fetched again)."""
        with self.lock:
            self.segments = [seg for seg in self.segments if seg[2] <= start or seg[1] >= end]

    def summary(self) -> dict[str, Any]:
        """What the row's meta and the result record: the sources used (bytes from each) and the excluded."""
        with self.lock:
            kept: dict[int, int] = {}  # bytes of each source still in the file (a liar's were fetched again)
            for source, start, end in self.segments:
                kept[id(source)] = kept.get(id(source), 0) + end - start
            return {"used": [{"url": s.label, "bytes": kept.get(id(s), 0), **({"primary": True} if s.primary else {})}
                             for s in self.sources if kept.get(id(s)) or s.primary],
                    "excluded": [{"url": e.label, "reason": e.reason} for e in self.excluded]}


def check_mirror_url(url: str, what: str = "--mirror") -> str:
    """``url`` stripped, or UsageError (one line, exit 2) unless it is a plain http(s) URL with a host that every
    HTTP parser reads the same way (the credential decision depends on it)."""
    text = url.strip()
    shown = redact_url(text)[:200]
    if not text:
        raise UsageError(f"{what}: empty URL", hint="give the http(s) URL of a mirror serving the same file")
    plain = "give a plain http(s)://host[:port]/path URL of a mirror serving the same file"
    try:
        parts = urlsplit(text)
    except ValueError:
        raise UsageError(f"{what} {shown!r}: the URL cannot be parsed", hint=plain) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UsageError(f"{what} {shown!r}: a mirror must be an http:// or https:// URL",
                         hint="hf:// and civitai:// name files; a mirror is a plain URL of the same bytes")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{what} {shown!r}: its port is not a number from 1 to 65535", hint=plain) from None
    if any(ch.isspace() for ch in text):
        raise UsageError(f"{what} {shown!r}: the URL contains whitespace", hint=plain)
    if port == 0:
        raise UsageError(f"{what} {shown!r}: port 0 cannot be connected to", hint=plain)
    try:
        connection_origin(text)
    except AmbiguousURLError as exc:
        raise UsageError(f"{what} {shown!r}: {exc.message.split(': ', 1)[-1]}", hint=plain) from None
    return text


def check_mirrors(urls: list[str] | tuple[str, ...], what: str = "--mirror") -> tuple[str, ...]:
    """Every mirror URL checked (``check_mirror_url``), duplicates dropped, at most ``MAX_MIRRORS``."""
    checked = list(dict.fromkeys(check_mirror_url(u, what) for u in urls))
    if len(checked) > MAX_MIRRORS:
        raise UsageError(f"{what}: {len(checked)} mirrors given, at most {MAX_MIRRORS} are supported")
    return tuple(checked)


def next_primary(req: DownloadRequest, exc: ModfetchError) -> DownloadRequest | None:
    """The request again with its first mirror as the primary, when the primary failed before any transfer with
    mirrors began (``exc`` carries no ``sources_tried``); None otherwise.  The row keeps the user's URL and the
    primary's file name; the token stays bound to its own host; the failed primary is not tried again."""
    if not req.mirrors or getattr(exc, "sources_tried", False):
        return None
    mirror = req.mirrors[0]
    log.warning("%s cannot be used (%s); mirror %s takes its place", req.row_url, redact(exc.message),
                redact_url(mirror))
    return dataclasses.replace(req, url=mirror, mirrors=req.mirrors[1:], display_url=req.row_url,
                               filename=req.filename or filename_from_url(req.url) or None)
