"""The one HTTP client of modfetch: guarded connections, the shared Session, and the socket registry.

Every request modfetch sends (probe, chunk workers, single stream, the Hub and CivitAI API calls) goes through a
Session made here.  Its connections (1) give up when response headers do not arrive within a deadline,
(2) refuse a header block cut off by the connection closing, (3) skip informational 1xx responses, and
(4) register their socket so that a stop request (``modfetch.cancel.request_stop``) shuts every open
connection down: each blocked ``recv`` returns at once, the reader sees ``STOP`` and raises ``Interrupted``.
A connection opened after the stop is refused the same way, so no retry can start a new wait.
"""

from __future__ import annotations

import _socket
import contextlib
import heapq
import http.client
import itertools
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils
import urllib3.connection
import urllib3.connectionpool
from requests.sessions import merge_setting as _untyped_merge

from ..cancel import STOP, Interrupted, check_stop, on_stop
from ..config import Config

HEADER_DEADLINE_FACTOR = 2.0  # response headers must be complete within this many read timeouts
HEADER_DEADLINE_DEFAULT = 120.0  # seconds, when the socket has no timeout

_LOCK = threading.RLock()
merge_setting: Callable[..., Any] = _untyped_merge  # (requests' helper has no annotations)
_LIVE: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def track(sock: socket.socket) -> None:
    """Register a freshly connected socket so a stop request wakes its reader; raises Interrupted (after
    shutting it down) when a stop was already requested."""
    with _LOCK:
        _LIVE.add(sock)
    if STOP.is_set():
        _shutdown(sock)
        raise Interrupted()


def _shutdown_all() -> None:
    """The stop callback: shut down every open connection so no thread stays blocked in a read."""
    with _LOCK:
        live = list(_LIVE)
    for sock in live:
        _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # The C-level shutdown, also for an SSLSocket: SSLSocket.shutdown() drops its TLS object under the feet of
    # the thread reading instead of just waking it.
    with contextlib.suppress(OSError, ValueError, TypeError):
        _socket.socket.shutdown(sock, socket.SHUT_RDWR)


on_stop(_shutdown_all)


class _Deadlines:
    """One daemon thread for every response's header deadline: a ``threading.Timer`` per response started a
    thread per request, which a many-file repo (hundreds of small requests) paid in CPU on every file."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[list[Any]] = []  # [when, seq, action or None (cancelled)]
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, seconds: float, action: Callable[[], None]) -> list[Any]:
        """Run ``action`` in ``seconds`` unless ``cancel``-led before; returns the handle for ``cancel``."""
        entry = [time.monotonic() + seconds, next(self._seq), action]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="modfetch-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:
                self._cond.notify()
        return entry

    def cancel(self, entry: list[Any]) -> None:
        """Drop ``entry``'s action (it is skipped when its time comes)."""
        with self._cond:
            entry[2] = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                when, _, action = self._heap[0]
                if action is not None and when > time.monotonic():
                    self._cond.wait(when - time.monotonic())
                    continue
                heapq.heappop(self._heap)
            if action is not None:
                with contextlib.suppress(Exception):
                    action()


_DEADLINES = _Deadlines()


class _LineTracker:
    """Wraps a response's file to remember the last line read: a header block that did not end with an empty
    line was cut off (http.client takes EOF as the end of the headers)."""

    def __init__(self, fp: Any) -> None:
        self.fp = fp
        self.last = b""

    def readline(self, *args: Any) -> bytes:
        line: bytes = self.fp.readline(*args)
        self.last = line
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)


class _GuardedResponse(http.client.HTTPResponse):
    """An HTTPResponse that (1) gives up when the status line and headers are not complete within a deadline:
    the read timeout is per recv, so a server trickling one header byte a second would otherwise hold the
    request forever, and the stall watchdog only sees bodies; (2) refuses a header block cut off by the
    connection closing (http.client takes it for a complete response with an empty body); (3) skips every
    informational 1xx response (``103 Early Hints``), not only ``100 Continue``: http.client returns those as
    the response and leaves the real one unread in the socket."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self._guard_sock = sock

    def begin(self) -> None:
        timeout = self._guard_sock.gettimeout()
        limit = HEADER_DEADLINE_FACTOR * timeout if timeout else HEADER_DEADLINE_DEFAULT
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            with contextlib.suppress(OSError):
                self._guard_sock.shutdown(socket.SHUT_RDWR)

        tracker = _LineTracker(self.fp)
        self.fp = tracker  # type: ignore[assignment]
        deadline = _DEADLINES.add(limit, expire)
        try:
            super().begin()
            while 100 <= self.status < 200 and self.status != 101:
                self.headers = None  # type: ignore[assignment]  # (begin() returns at once if headers are set)
                super().begin()
            if fired.is_set():
                raise TimeoutError(f"no complete response headers within {limit:.0f}s")
            if tracker.last not in (b"\r\n", b"\n"):
                raise http.client.RemoteDisconnected("connection closed inside the response headers")
        except Exception:
            check_stop()  # the failure is request_stop() shutting the socket down: a stop, not a network error
            if fired.is_set():
                raise TimeoutError(f"no complete response headers within {limit:.0f}s") from None
            raise
        finally:
            _DEADLINES.cancel(deadline)
            if self.fp is tracker:  # type: ignore[comparison-overlap]
                self.fp = tracker.fp


class _GuardedHTTPConnection(urllib3.connection.HTTPConnection):
    response_class = _GuardedResponse

    def connect(self) -> None:
        super().connect()
        track(self.sock)  # request_stop() can now wake any read on this connection


class _GuardedHTTPSConnection(urllib3.connection.HTTPSConnection):
    response_class = _GuardedResponse

    def connect(self) -> None:
        super().connect()
        track(self.sock)  # (the TLS socket: set only once the handshake is done)


class _GuardedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(requests.adapters.HTTPAdapter):
    """An HTTPAdapter whose connections use ``_GuardedResponse``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def guard_session(session: requests.Session) -> None:
    """Swap the session's plain HTTPAdapters for GuardedAdapters with the same pool settings (once)."""
    for prefix, adapter in list(session.adapters.items()):
        if type(adapter) is requests.adapters.HTTPAdapter:
            pool: Any = adapter  # (requests keeps the pool settings in private attributes)
            guarded = GuardedAdapter(pool_connections=pool._pool_connections, pool_maxsize=pool._pool_maxsize,
                                     max_retries=adapter.max_retries, pool_block=pool._pool_block)
            session.mount(prefix, guarded)
            adapter.close()


class _Session(requests.Session):
    """A Session that works out the environment's proxies (``*_PROXY``, ``NO_PROXY``) once per origin instead of
    on every request: a repo of hundreds of small files spent about 0.5 ms of CPU per request scanning the
    environment.  The environment is read when a session first talks to an origin (a session lives for one
    download or one many-file run)."""

    def __init__(self) -> None:
        super().__init__()
        self._environ_proxies: dict[tuple[str, str], dict[str, str]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        if not self.trust_env or proxies:  # (proxies given per request: requests' own path)
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._environ_proxies.get(key)
        if found is None:
            found = self._environ_proxies[key] = dict(requests.utils.get_environ_proxies(url, no_proxy=None))
        if verify is True or verify is None:  # as requests does (curl's variable too)
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
        return {"proxies": merge_setting(dict(found), self.proxies), "stream": merge_setting(stream, self.stream),
                "verify": merge_setting(verify, self.verify), "cert": merge_setting(cert, self.cert)}


def make_session(config: Config, pool_size: int = 4) -> requests.Session:
    """A requests Session with modfetch's User-Agent, identity encoding, guarded connections and a pool sized
    for ``pool_size``."""
    session = _Session()
    adapter = GuardedAdapter(pool_connections=4, pool_maxsize=max(4, pool_size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": config.network.user_agent, "Accept-Encoding": "identity"})
    # requests trusts only certifi's bundle or REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (those still win, per
    # request); OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR, which curl and Python's ssl honour, are what private-CA
    # setups usually export.  A path that does not exist is ignored, as OpenSSL does.
    for variable, exists in (("SSL_CERT_FILE", os.path.isfile), ("SSL_CERT_DIR", os.path.isdir)):
        path = os.environ.get(variable, "")
        if path and exists(path):
            session.verify = path
            break
    return session


def shutdown_response(response: requests.Response | None) -> None:
    """Wake a thread blocked reading ``response`` by shutting its socket down (stall watchdog)."""
    if response is None:
        return
    raw = response.raw
    candidates = [getattr(getattr(raw, "_connection", None), "sock", None)]
    fp = getattr(raw, "_fp", None)
    candidates.append(getattr(getattr(getattr(fp, "fp", None), "raw", None), "_sock", None))
    for sock in candidates:
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                return
            except OSError:
                continue
