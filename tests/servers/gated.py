"""A small HTTP/1.1 file server for the issue-13 trust tests: it can pause a body at a given byte until the test
releases it (so a test tampers with the ``.part`` at a deterministic point, no sleeps), serve a weak ETag for
its first N answers, answer a date ``If-Range`` with the whole file (Apache within a second of a change), and
run without Range / HEAD support.  Every request is recorded with the body bytes it was sent.

    with GatedServer(content, gate_at=2 << 20) as server:
        proc = start_download(server.url)
        assert server.paused.wait(30)   # the first 2 MiB were sent; the response waits
        tamper()
        server.gate.set()
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
PIECE = 64 << 10
GATE_CAP = 30.0  # a paused response never waits longer, even if a test forgets to release it


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    range: str | None
    if_range: str | None
    status: int = 0
    body_bytes: int = 0


class GatedServer:
    """Serves ``content`` at any path on 127.0.0.1 (see the module docstring for the knobs)."""

    def __init__(self, content: bytes, *, ranges: bool = True, head: bool = True, gate_at: int | None = None,
                 weak_etag_for: int = 0, date_if_range: bool = True, length: bool = True) -> None:
        self.content = content
        self.ranges = ranges
        self.head = head
        self.gate_at = gate_at
        self.weak_etag_for = weak_etag_for
        self.date_if_range = date_if_range
        self.length = length
        self.etag_value = '"' + hashlib.sha256(content).hexdigest()[:16] + '"'
        self.last_modified = email.utils.formatdate(1_700_000_000, usegmt=True)
        self.paused = threading.Event()
        self.gate = threading.Event()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The file's URL (its last segment names the file ``file.bin``)."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"

    def sha256(self) -> str:
        """SHA-256 of the content."""
        return hashlib.sha256(self.content).hexdigest()

    def body_bytes(self) -> int:
        """Body bytes sent so far, over every request."""
        with self.lock:
            return sum(s.body_bytes for s in self.seen)

    def __enter__(self) -> GatedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _etag(self) -> str:
        with self.lock:
            answered = len(self.seen)
        return ("W/" if answered <= self.weak_etag_for else "") + self.etag_value

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                seen = Seen(self.command, self.headers.get("Range"), self.headers.get("If-Range"))
                with server.lock:
                    server.seen.append(seen)
                etag = server._etag()
                if not body and not server.head:
                    seen.status = 405
                    self.send_response(405)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = 0, len(server.content)
                status = 200
                match = _RANGE.match(seen.range or "")
                if server.ranges and match and self._if_range_ok(seen.if_range, etag):
                    start = int(match.group(1))
                    end = min(end, int(match.group(2)) + 1) if match.group(2) else end
                    status = 206
                seen.status = status
                self.send_response(status)
                if server.length:
                    self.send_header("Content-Length", str(end - start))
                else:
                    self.send_header("Connection", "close")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(server.content)}")
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", server.last_modified)
                self.end_headers()
                if body:
                    self._body(seen, start, end)

            def _if_range_ok(self, if_range: str | None, etag: str) -> bool:
                if if_range is None:
                    return True
                if if_range.startswith(('"', "W/")):
                    return not etag.startswith("W/") and if_range == etag  # strong comparison only
                return server.date_if_range and if_range == server.last_modified

            def _body(self, seen: Seen, start: int, end: int) -> None:
                pos = start
                try:
                    while pos < end:
                        stop = min(end, pos + PIECE)
                        gate = server.gate_at if seen.range != "bytes=0-0" else None  # never the probe
                        if gate is not None and pos <= gate < stop and not server.gate.is_set():
                            if pos < gate:
                                self.wfile.write(server.content[pos:gate])
                                seen.body_bytes += gate - pos
                                pos = gate
                            self.wfile.flush()
                            server.paused.set()
                            server.gate.wait(GATE_CAP)
                            continue
                        self.wfile.write(server.content[pos:stop])
                        seen.body_bytes += stop - pos
                        pos = stop
                    self.wfile.flush()
                except OSError:
                    pass
                if not server.length:
                    self.close_connection = True

        return Handler
