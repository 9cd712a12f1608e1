"""A raw-socket HTTP server for tests that must send bytes ``http.server`` cannot: malformed status lines,
conflicting headers, bodies that do not match their length, TLS on odd ports.

``RawServer(handler)`` listens on 127.0.0.1 (or ``host="::1"``) and calls ``handler(req, conn, server)`` for
each request; the handler writes whatever bytes it likes to ``conn`` and returns True to keep reading requests
on the same connection.  ``serve_file`` is a correct handler to build faults from; ``TlsServer`` speaks HTTPS
with a given context; ``PlainAnswerer`` answers anything (a TLS ClientHello too) with ``400``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

DATA = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB of deterministic bytes
BIG = random.Random(3).randbytes(4 << 20)  # incompressible: gzip makes it *longer*, enough to fill a range
_RANGE = re.compile(r"^\s*bytes=(\d*)-(\d*)\s*$", re.I)


@dataclass
class Req:
    """One parsed request head (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]


Handler = Callable[[Req, socket.socket, "RawServer"], bool]


@dataclass
class RawServer:
    """One thread per connection; ``handler`` writes raw bytes for each request, then the connection closes
    (unless it returns True: keep reading requests on the same connection)."""

    handler: Handler
    requests: list[Req] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    host: str = "127.0.0.1"  # "::1" for IPv6

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path: str = "/file.bin") -> str:
        """``http://127.0.0.1:PORT/PATH``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                req = Req(method, target, headers)
                self.requests.append(req)
                if not self.handler(req, conn, self):
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        """Stop accepting; connections in flight end with their handler."""
        self.stop_event.set()
        self.sock.close()


class TlsServer(RawServer):
    """A RawServer speaking HTTPS with ``context``; counts TLS handshakes that were attempted."""

    context: ssl.SSLContext | None = None
    handshakes = 0

    def _serve(self, conn: socket.socket) -> None:
        self.handshakes += 1
        assert self.context is not None
        try:
            conn.settimeout(10)
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()  # the client refused our certificate, or spoke plain HTTP
            return
        super()._serve(tls)


class PlainAnswerer:
    """A plain-HTTP server that answers whatever arrives (a TLS ClientHello too) with ``400 Bad Request``,
    as nginx or ``http.server`` do when spoken to with https://."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.hits = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    self.hits += 1
                    conn.sendall(response("400 Bad Request", [("Connection", "close"), ("Content-Length", "0")]))

    def close(self) -> None:
        """Stop accepting."""
        self.stop.set()
        self.sock.close()


def response(status: str, headers: list[tuple[str, str]], body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    """The raw bytes of one response: status line, headers as given (no checks), blank line, body."""
    head = f"{version} {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def requested_range(req: Req) -> tuple[int, int] | None:
    """``(start, end)`` of a closed single ``Range: bytes=S-E`` header, else None."""
    match = re.match(r"bytes=(\d+)-(\d+)$", req.headers.get("range", ""))
    return (int(match[1]), int(match[2])) if match else None


def serve_file(req: Req, conn: socket.socket, data: bytes = DATA, extra: list[tuple[str, str]] | None = None,
               ranges: bool = True) -> bool:
    """A correct server for ``data`` (HEAD, GET, single ranges), one request per connection."""
    extra = list(extra or [])
    match = _RANGE.match(req.headers.get("range", "")) if ranges else None
    base = [("Connection", "close"), ("ETag", '"v1"'), *extra]
    if match:
        start = int(match.group(1) or 0)
        end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            conn.sendall(response("416 Range Not Satisfiable",
                                  [*base, ("Content-Range", f"bytes */{len(data)}"), ("Content-Length", "0")]))
            return False
        body = data[start:end + 1]
        conn.sendall(response("206 Partial Content", [*base, ("Content-Range", f"bytes {start}-{end}/{len(data)}"),
                                                       ("Content-Length", str(len(body)))],
                              b"" if req.method == "HEAD" else body))
        return False
    conn.sendall(response("200 OK", [*base, ("Content-Length", str(len(data)))],
                          b"" if req.method == "HEAD" else data))
    return False
