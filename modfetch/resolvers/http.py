"""Plain http(s) URLs: validated, then fetched as they are (the server names the file)."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from ..engine.origin import AmbiguousURLError, connection_origin
from ..errors import UsageError
from ..util.filenames import filename_from_url
from ..util.redact import redact_url
from .base import ResolvedFile


def validate_http_url(uri: str) -> None:
    """Raise UsageError unless ``uri`` is an absolute http(s) URL with a host that every parser reads alike."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid URL {redact_url(uri)!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid URL {redact_url(uri)!r}", hint="expected http(s)://host/path, hf://... or civitai://...")
    if port == 0 or any(c in uri for c in " \t\r\n"):
        raise UsageError(f"invalid URL {redact_url(uri)!r}")
    try:
        connection_origin(uri)  # a host the HTTP parsers read two ways (``http://a:1\\@b/``) is no usable URL
    except AmbiguousURLError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None


class HttpResolver:
    """Any http(s) URL not claimed by a more specific source."""

    name = "http"

    def matches(self, uri: str) -> bool:
        """True for http:// and https:// URLs."""
        return uri.lower().startswith(("http://", "https://"))

    def check(self, uri: str) -> None:
        """UsageError for a URL that can never be fetched (no host, a bad port, ...)."""
        validate_http_url(uri)

    def resolve(self, uri: str, session: requests.Session) -> list[ResolvedFile]:
        """The URL itself; the name comes from Content-Disposition or the URL path at download time."""
        self.check(uri)
        del session
        return [ResolvedFile(url=uri, filename=None, display_url=redact_url(uri), source="http",
                             hints={"url_name": filename_from_url(uri) or ""})]
