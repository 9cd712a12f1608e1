"""HTTP plumbing shared by the Hugging Face and CivitAI resolvers.

``SourceClient`` talks to one source's endpoint: it sends the ``Authorization`` header only to that host
(``engine.http.headers_for``), follows redirects that stay on that host, stops at the first redirect that
leaves it (a CDN / storage URL, returned to the caller unfollowed) and retries transient failures a few
times.  Tokens come from the environment only and are registered for redaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from ..engine.http import (
    REDIRECT_STATUSES,
    RETRYABLE_STATUSES,
    carries_credential,
    connect_failure,
    headers_for,
    host_of,
    tls_failure,
)
from ..engine.interrupt import check_stop, sleep_unless_stopped
from ..engine.origin import connection_origin
from ..errors import AuthError, HTTPStatusError, NetworkError, UsageError
from ..util.http import header_int, parse_retry_after
from ..util.redact import redact, redact_url, register_token_env

log = logging.getLogger("modfetch.resolvers")
ATTEMPTS = 3
MAX_REDIRECTS = 10
MAX_JSON_BODY = 32 << 20  # the largest Hub tree page or CivitAI model is a few MiB
MAX_ERROR_BODY = 64 << 10
_READ_BLOCK = 64 << 10


def read_capped(response: requests.Response, limit: int, too_big: str | None) -> bytes:
    """At most ``limit`` bytes of ``response``'s (decoded) body, read block by block so memory stays bounded
    whatever the framing (a lying or missing Content-Length, an endless chunked body).  Past ``limit``: an
    HTTPStatusError saying ``too_big``, or, when ``too_big`` is None, the first ``limit`` bytes (the rest is
    never read; closing the response drops the connection)."""
    declared = header_int(response.headers.get("Content-Length"))
    if too_big is not None and declared is not None and declared > limit:
        raise HTTPStatusError(too_big, response.status_code, hint="check that the configured endpoint is that "
                                                                  "service")
    body = bytearray()
    try:
        for block in response.iter_content(_READ_BLOCK):
            body += block
            if len(body) > limit:
                if too_big is None:
                    return bytes(body[:limit])
                raise HTTPStatusError(too_big, response.status_code,
                                      hint="check that the configured endpoint is that service")
    except requests.RequestException as exc:  # cut off, reset or stalled mid-body
        if too_big is None:
            return bytes(body)  # an error body is only drained: its status already says what happened
        raise NetworkError(f"the answer from {host_of(response.url)} broke off ({type(exc).__name__})",
                           hint="check your connection and the source's endpoint in the config") from None
    return bytes(body)


def token_from_env(names: Iterable[str]) -> tuple[str | None, str | None]:
    """``(variable, value)`` of the first non-empty variable in ``names`` (all registered for redaction)."""
    ordered = [n for n in dict.fromkeys(names) if n]
    register_token_env(ordered)
    for name in ordered:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None, None


def redirect_target(base: str, location: str, status: int) -> str:
    """The absolute http(s) URL a ``Location`` header points to; HTTPStatusError for anything else (an
    unparsable URL would otherwise surface as an internal ValueError, a ``file:`` URL as a network error)."""
    try:
        target = urljoin(base, location.strip())
        parts = urlsplit(target)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise HTTPStatusError(f"{host_of(base)} sent an invalid redirect (HTTP {status})", status) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise HTTPStatusError(f"{host_of(base)} redirected to an unsupported URL {redact_url(target)!r}",
                              status)
    connection_origin(target)  # refuses a target whose host the parsers disagree on
    return target


def origin(url: str) -> tuple[str, str]:
    """``(scheme, host:port)`` of a URL as the connection reads it (AmbiguousURLError when parsers disagree)."""
    where = connection_origin(url)
    return where.scheme, where.authority


class SourceClient:
    """Requests to one source endpoint with auth bound to its host and hand-followed on-host redirects."""

    def __init__(self, session: requests.Session, endpoint: str, token: str | None, timeout: float,
                 label: str) -> None:
        self.session = session
        self.endpoint = endpoint.rstrip("/")
        self.auth_host = host_of(self.endpoint)
        self.auth_scheme = urlsplit(self.endpoint).scheme.lower()
        if token and any(c < " " or c == "\x7f" for c in token):
            # requests would refuse the header on every attempt and report a network error.
            raise UsageError(f"the token for {label} contains a control character (a line break?)",
                             hint="check the token variable; it must be a single line")
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = (min(10.0, timeout), timeout)
        self.label = label

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on the endpoint."""
        return self.endpoint + path

    def send(self, method: str, url: str, *, follow: bool = True,
             accept: str | None = None) -> tuple[requests.Response, str]:
        """Send ``method``; follow redirects that stay on ``url``'s origin (all of them when ``follow``),
        return the first response that is not such a redirect and the URL that answered it.  The response body
        is not read (``stream=True``): the caller closes it."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send_once(method, url, accept)
            location = response.headers.get("Location")
            if follow and response.status_code in REDIRECT_STATUSES and location:
                try:
                    target = redirect_target(url, location, response.status_code)
                except HTTPStatusError:
                    response.close()
                    raise
                if origin(target) == origin(url):
                    log.debug("%s %s -> %d, following to %s", method, redact_url(url), response.status_code,
                              redact_url(target))
                    response.close()
                    url = target
                    continue
            return response, url
        raise HTTPStatusError(f"too many redirects from {redact_url(url)}", 310)

    def off_host_target(self, base: str, location: str, status: int) -> str:
        """The URL a redirect that leaves the endpoint points to (a CDN or storage URL, fetched without auth).
        Refused when it carries this source's token: that would hand the token to the other host (or send it
        in clear after an https -> http downgrade) inside the URL instead of the withheld header."""
        target = redirect_target(base, location, status)
        auth_sent = bool(self.auth) and set(self.auth).issubset(
            headers_for(target, {}, self.auth, self.auth_host, self.auth_scheme))
        if not auth_sent and carries_credential(target, self.auth):
            raise AuthError(f"refusing to send the token for {self.label} to {host_of(target)}: "
                            f"{self.auth_host} redirected there with the token in the URL", status,
                            hint="the endpoint echoed the token into a redirect; check the source's endpoint")
        return target

    def get_json(self, url: str) -> tuple[requests.Response, Any]:
        """GET a JSON document, on-host redirects followed: ``(response, parsed)``, parsed None on errors."""
        response, _ = self.send("GET", url, accept="application/json")
        with response:
            if response.status_code >= 400:
                # Drain a small error body so the connection can be reused; a bigger one is just dropped.
                read_capped(response, MAX_ERROR_BODY, None)
                return response, None
            body = read_capped(response, MAX_JSON_BODY, f"{self.label} sent a JSON answer larger than "
                                                       f"{MAX_JSON_BODY >> 20} MiB for {redact_url(url)}")
            try:
                return response, json.loads(body)
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting ("[[[[...")
                raise HTTPStatusError(f"{self.label} sent invalid JSON for {redact_url(url)}",
                                      response.status_code,
                                      hint="check that the configured endpoint is that service") from None

    def _send_once(self, method: str, url: str, accept: str | None) -> requests.Response:
        base = {"Accept": accept} if accept else {}
        headers = headers_for(url, base, self.auth, self.auth_host, self.auth_scheme)
        last = ""
        for attempt in range(ATTEMPTS):
            delay = 0.3 * (2 ** attempt)
            try:
                response = self.session.request(method, url, headers=headers, timeout=self.timeout,
                                                stream=True, allow_redirects=False)
            except requests.RequestException as exc:
                check_stop()  # request_stop() shut this connection down: a stop, not a network failure
                if isinstance(exc, requests.exceptions.InvalidHeader):  # malformed, not transient: no retry
                    raise HTTPStatusError(f"{host_of(url)} sent a malformed response to {method} "
                                          f"{redact_url(url)}: {redact(str(exc))}", 502) from None
                failure = tls_failure(exc, url)  # an untrusted certificate is not transient: no retry
                if failure is not None:
                    raise failure from None
                # "connection refused" (by the origin or the proxy) says more than "ConnectionError"
                unreachable = connect_failure(exc, url, self.session)
                last = str(unreachable) if unreachable else f"{type(exc).__name__} talking to {host_of(url)}"
            except ValueError as exc:
                # requests parses a Location even with allow_redirects=False ("Invalid IPv6 URL"): not transient.
                raise HTTPStatusError(f"{host_of(url)} sent a malformed response to {method} "
                                      f"{redact_url(url)}: {redact(str(exc))}", 502) from None
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    log.debug("%s %s -> %d", method, redact_url(url), response.status_code)
                    return response
                last = f"HTTP {response.status_code} from {host_of(url)}"
                delay = min(5.0, parse_retry_after(response.headers.get("Retry-After")) or delay)
                if (header_int(response.headers.get("Content-Length")) or 1 << 20) <= 64 << 10:
                    # A short error body is read before closing: closing with unread bytes resets the
                    # connection (RST), which servers log as an error (the test Hub printed tracebacks).
                    with contextlib.suppress(Exception):
                        response.raw.read(64 << 10)
                response.close()
            if attempt + 1 < ATTEMPTS:
                log.debug("%s; retrying in %.1fs", last, delay)
                sleep_unless_stopped(delay)
        raise NetworkError(f"cannot reach {self.label} at {host_of(url)}: {last}",
                           hint="check your connection and the source's endpoint in the config")
