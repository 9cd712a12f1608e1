"""A signed-URL CDN built on the fault server, and the stable URL that redirects to it.

``require_signature(cdn, "first")`` makes a running ``FaultyServer`` answer 403 unless the request URL carries
``sig=first``; calling it again with another value expires the old signature.  ``SignedRedirector(cdn)`` is
the stable URL a user passes: every request is redirected to the CDN URL signed with the current signature.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .faulty import FaultyServer, _Handler


class _SignedHandler(_Handler):
    """Serves only under the currently valid signature (``owner.valid_sig``); others get 403."""

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        if f"sig={owner.valid_sig}" not in self.path:  # type: ignore[attr-defined]
            record, _ = owner._record(method, self.path, dict(self.headers.items()))
            self._error(record, 403, {})
            return
        super()._serve(method)


def require_signature(cdn: FaultyServer, signature: str) -> None:
    """From now on ``cdn`` serves only URLs carrying ``sig=SIGNATURE``."""
    cdn.valid_sig = signature  # type: ignore[attr-defined]
    cdn.httpd.RequestHandlerClass = _SignedHandler


class SignedRedirector:
    """A real HTTP server on 127.0.0.1 whose every request is a 302 to ``/signed/model.bin?sig=<current>`` on
    ``cdn``; ``url`` is the stable URL, ``stop()`` shuts it down."""

    def __init__(self, cdn: FaultyServer) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", cdn.url_for(f"/signed/model.bin?sig={cdn.valid_sig}"))  # type: ignore[attr-defined]
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.bin"

    def stop(self) -> None:
        """Shut the server down."""
        self.httpd.shutdown()
        self.httpd.server_close()
