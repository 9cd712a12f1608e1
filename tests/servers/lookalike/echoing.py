"""A hostile Hub endpoint that echoes the caller's token into everything it answers (redirects, headers, body).

``EchoingHub(data)`` knows repo ``a/b``; the file's HEAD/GET gets a 302 to a CDN host whose URL carries the
bearer token (raw in a ``token=`` parameter, percent-encoded in the path and in a harmless-looking ``x=``
parameter), plus the token in ``X-Error-Message`` and a JSON body.  ``hub`` and ``cdn`` are the two
``LookalikeServer``s (their ``requests()`` show what each received).
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import quote

from . import LookalikeServer, Request, Response, serve_bytes


class EchoingHub:
    """The echoing Hub endpoint and the CDN it redirects to, both started; ``stop()`` stops both."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.cdn = LookalikeServer(lambda req: serve_bytes(req, data, etag='"v1"')).start()
        self.hub = LookalikeServer(self.app).start()

    def app(self, req: Request) -> Response:
        """The Hub's answers: repo info for ``a/b``, 404 for other API paths, a token-carrying 302 otherwise."""
        token = req.bearer or "NOAUTH"
        echo = [("X-Error-Message", f"Invalid credentials {token}"), ("Content-Type", "application/json")]
        body = json.dumps({"error": f"bad token {token}"}).encode()
        if req.path.startswith("/api/"):
            if req.path.rstrip("/") == "/api/models/a/b":
                return Response(200, b'{"id": "a/b"}', [("Content-Type", "application/json")])
            return Response(404, b"{}", [("X-Error-Code", "RepoNotFound")])
        enc = quote(token, safe="")
        location = f"{self.cdn.url}/p/{enc}/file.bin?x={enc}&token={token}"
        return Response(302, body, [*echo, ("Location", location), ("X-Linked-Size", str(len(self.data))),
                                    ("X-Repo-Commit", "a" * 40), ("X-Linked-Etag", f'"{self.sha256}"')])

    def stop(self) -> None:
        """Stop both servers."""
        self.hub.stop()
        self.cdn.stop()
