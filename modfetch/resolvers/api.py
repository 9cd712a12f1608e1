"""HTTP plumbing shared by the Hugging Face and CivitAI resolvers.

``SourceClient`` wraps the engine's HTTP client for one source's endpoint: it sends the ``Authorization``
header only to that host (``engine.http.headers_for``), follows redirects that stay on that host, stops at the
first redirect that leaves it (a CDN / storage URL, returned to the caller unfollowed) and retries transient
failures with the engine's retry policy (``engine.retry``).  Tokens come from the environment only and are
registered for redaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests

from ..cancel import check_stop, sleep_unless_stopped
from ..config import Config
from ..engine.http import (
    REDIRECT_STATUSES,
    RETRYABLE_STATUSES,
    RetryableError,
    carries_credential,
    headers_for,
    host_of,
    read_capped,
    redirect_target,
    same_origin,
    send_once,
)
from ..engine.retry import BackoffWait, RetryPolicy, retry_policy
from ..errors import AuthError, HTTPStatusError, NetworkError, UsageError
from ..util.http import header_int, parse_retry_after
from ..util.redact import redact_url, register_token_env

log = logging.getLogger("modfetch.resolvers")
MAX_REDIRECTS = 10
MAX_JSON_BODY = 32 << 20  # the largest Hub tree page or CivitAI model is a few MiB
MAX_ERROR_BODY = 64 << 10
# For a client made without the config's policy (tests, tools): three quick tries.
DEFAULT_RETRY = RetryPolicy(3, BackoffWait(0.3, 1.2))


def config_retry(config: Config) -> RetryPolicy:
    """The engine's retry policy as configured (``concurrency.max_retries`` and the backoff bounds)."""
    cc = config.concurrency
    return retry_policy(cc.max_retries, cc.backoff_min_ms, cc.backoff_max_ms)


def token_from_env(names: Iterable[str]) -> tuple[str | None, str | None]:
    """``(variable, value)`` of the first non-empty variable in ``names`` (all registered for redaction)."""
    ordered = [n for n in dict.fromkeys(names) if n]
    register_token_env(ordered)
    for name in ordered:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None, None


class SourceClient:
    """Requests to one source endpoint with auth bound to its host and hand-followed on-host redirects."""

    def __init__(self, session: requests.Session, endpoint: str, token: str | None, timeout: float,
                 label: str, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.session = session
        self.retry = retry
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
                if same_origin(target, url):
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
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = send_once(self.session, method, url, headers, self.timeout)
            except RetryableError as exc:
                check_stop()  # a stop request shut this connection down: a stop, not a network failure
                last, unreachable = str(exc), exc.unreachable
            except Exception:
                check_stop()
                raise  # final: an untrusted certificate, a malformed response
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    log.debug("%s %s -> %d", method, redact_url(url), response.status_code)
                    return response
                last, unreachable = f"HTTP {response.status_code} from {host_of(url)}", False
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if (header_int(response.headers.get("Content-Length")) or 1 << 20) <= MAX_ERROR_BODY:
                    # A short error body is read before closing: closing with unread bytes resets the
                    # connection (RST), which servers log as an error (the test Hub printed tracebacks).
                    with contextlib.suppress(Exception):
                        response.raw.read(MAX_ERROR_BODY)
                response.close()
            if self.retry.gives_up(attempt, unreachable):
                raise NetworkError(f"cannot reach {self.label} at {host_of(url)}: {last}",
                                   hint="check your connection and the source's endpoint in the config")
            delay = self.retry.wait.delay(attempt, retry_after)
            log.debug("%s; retrying in %.1fs", last, delay)
            sleep_unless_stopped(delay)
