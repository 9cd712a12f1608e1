"""Small scripted HTTP servers for one-off scenarios: every answer comes from a function the test passes.

``Scripted(route)`` is a threaded HTTP/1.1 server on 127.0.0.1 answering each request with
``route(method, path, lower-cased headers) -> (status, headers, body)`` and recording what it saw; ``ranged``
builds a correct reply for a byte string honouring a single ``Range``.  ``Redirector`` answers every request
with a 302 to its (settable) ``location`` and records whether each request carried ``Authorization``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .lookalike import LookalikeServer, Request, Response

# (status, headers, body) for (method, path, lower-cased request headers)
Reply = tuple[int, dict[str, str], bytes | str]
Route = Callable[[str, str, dict[str, str]], Reply]


class Scripted:
    """A threaded HTTP/1.1 server answering every request with ``route``; records (method, path, headers)."""

    def __init__(self, route: Route | None = None) -> None:
        self.route: Route = route or (lambda m, p, h: (404, {}, b""))
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.seen.append((self.command, self.path, headers))
                status, extra, body = owner.route(self.command, self.path, headers)
                raw = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                for key, value in {"Content-Length": str(len(raw)), **extra}.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(raw)

            do_GET = do_HEAD = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Shut the server down."""
        self.httpd.shutdown()
        self.httpd.server_close()


def ranged(data: bytes, headers: dict[str, str], extra: dict[str, str] | None = None) -> Reply:
    """``data`` honouring a single ``Range: bytes=A-[B]``."""
    match = re.match(r"bytes=(\d+)-(\d*)$", headers.get("range", ""))
    base = {"Accept-Ranges": "bytes", **(extra or {})}
    if not match:
        return 200, base, data
    start = int(match.group(1))
    end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
    return 206, {**base, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1]


class Redirector:
    """A real HTTP server whose every request answers 302 to ``location`` (set after start)."""

    def __init__(self) -> None:
        self.location = ""
        self.server = LookalikeServer(self.app).start()

    def app(self, req: Request) -> Response:
        """302 to ``location``."""
        return Response(302, b"", [("Location", self.location), ("Content-Length", "0")])

    def saw_auth(self) -> list[bool]:
        """For each request so far: did it carry ``Authorization``?"""
        return ["authorization" in r.headers for r in self.server.requests()]

    def stop(self) -> None:
        """Shut the server down."""
        self.server.stop()
