"""Look-alike servers for remote sources: real threaded HTTP/1.1 servers on 127.0.0.1 (ephemeral ports).

``hub`` imitates the Hugging Face Hub (+ a CDN host), ``civitai`` the CivitAI API (+ a storage host).
Each server records every request it receives (method, path, headers) so tests can assert, for example,
that a CDN never saw an ``Authorization`` header.  Usable from pytest and standalone
(``python -m tests.servers.lookalike.hub --help``, ``python -m tests.servers.lookalike.civitai --help``).

This module holds the shared plumbing: the server wrapper, request/response values, Range handling and
URL signing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

SIGNING_KEY = b"lookalike-signing-key"


@dataclass
class Request:
    """One request as the app sees it: raw path (not decoded), parsed query, lower-cased headers."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_target: str

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[7:].strip() if value.lower().startswith("bearer ") else None

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('host', '127.0.0.1')}"


@dataclass
class Response:
    """What the app answers; ``Content-Length`` is added by the server (also for HEAD, without a body)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str, value: str) -> Response:
        self.headers.append((name, value))
        return self


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload).encode()
    return Response(status, body, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])])


@dataclass(frozen=True)
class Recorded:
    """A request a server received."""

    method: str
    target: str
    headers: Mapping[str, str]


App = Callable[[Request], Response]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr access log
        del format, args

    def setup(self) -> None:
        super().setup()
        self.server.owner.connected()

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.server.owner.record(Recorded(self.command, self.path, headers))
        with self.server.owner.serving():
            self._answer(parts, headers)

    def _answer(self, parts: Any, headers: dict[str, str]) -> None:
        if self.server.owner.delay:
            time.sleep(self.server.owner.delay)  # a per-request latency (round trip, server think time)
        request = Request(
            self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), headers, self.path
        )
        try:
            response = self.server.owner.app(request)
        except Exception as exc:  # a bug in the look-alike: answer 500 rather than hang the client
            response = Response(500, f"look-alike error: {type(exc).__name__}: {exc}".encode())
        self.send_response(response.status)
        names = {name.lower() for name, _ in response.headers}
        for name, value in response.headers:
            self.send_header(name, value)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.server.owner.count(len(response.body))  # counted before writing: an upper bound
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(response.body)

    do_GET = _handle
    do_HEAD = _handle
    do_POST = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LookalikeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-response (a killed download) are part of the game: stay quiet."""


class LookalikeServer:
    """An ``App`` served on 127.0.0.1 from a daemon thread; ``records`` lists every request received,
    ``bytes_sent`` counts the response body bytes written (what a cache in front of it saves), ``delay`` adds
    seconds of latency to every request, ``max_in_flight`` is the most requests it was answering at once,
    ``connections`` counts the TCP connections accepted (keep-alive reuse shows as fewer than requests)."""

    def __init__(self, app: App, port: int = 0, host: str = "127.0.0.1", delay: float = 0.0) -> None:
        self.app = app
        self.records: list[Recorded] = []
        self.bytes_sent = 0
        self.delay = delay
        self.in_flight = self.max_in_flight = self.connections = 0
        self._lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def record(self, entry: Recorded) -> None:
        with self._lock:
            self.records.append(entry)

    def count(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_sent += nbytes

    def connected(self) -> None:
        with self._lock:
            self.connections += 1

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Count one request being answered (``in_flight``, ``max_in_flight``)."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self.records)

    def start(self) -> LookalikeServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"lookalike-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def serve_bytes(
    request: Request,
    data: bytes,
    *,
    etag: str | None,
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "application/octet-stream",
) -> Response:
    """200 / 206 / 416 for ``data`` honouring a single ``Range`` and ``If-Range`` (strong ETag match)."""
    base = [("Accept-Ranges", "bytes"), ("Content-Type", content_type), *(headers or [])]
    if etag:
        base.append(("ETag", etag))
    total = len(data)
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if wanted and if_range and if_range != etag:
        wanted = None  # entity changed: the whole new entity
    if not wanted:
        return Response(200, data, base)
    match = _RANGE.match(wanted.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return Response(200, data, base)
    if match.group(1):
        start = int(match.group(1))
        end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
    else:
        start, end = max(0, total - int(match.group(2))), total - 1
    if start >= total or end < start:
        return Response(416, b"", [*base, ("Content-Range", f"bytes */{total}")])
    return Response(206, data[start : end + 1], [*base, ("Content-Range", f"bytes {start}-{end}/{total}")])


def sign(path: str, expires: int) -> str:
    """An HMAC signature for a storage path, like a CDN's signed URL."""
    return hmac.new(SIGNING_KEY, f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()


def signature_ok(path: str, expires: str | None, signature: str | None) -> bool:
    """True when ``signature`` signs ``path`` and has not expired."""
    if not expires or not signature or not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(sign(path, int(expires)), signature)


def git_blob_sha1(data: bytes) -> str:
    """sha1(``blob <size>\\0`` + data): git's object id, the Hub's ETag for regular files."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def pseudo_random_bytes(seed: str, size: int) -> bytes:
    """Deterministic incompressible bytes (for model-like files)."""
    return hashlib.shake_256(seed.encode()).digest(size)
