"""HTTP plumbing for every request modfetch sends: failure classification (one mapping from a requests
exception to a final error or a RetryableError), redirects followed by hand with the credential bound to its
host, status classification and size-capped body reads.  The Session itself is made in ``engine.session``."""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Iterator, Mapping
from urllib.parse import unquote, urljoin, urlsplit

import requests
import urllib3.exceptions

from ..errors import AuthError, HTTPStatusError, ModfetchError, NetworkError, NotFoundError, TLSError
from ..util.http import header_int, parse_retry_after
from ..util.redact import redact, redact_url
from .origin import connection_origin, may_carry_credentials
from .session import guard_session

MAX_REDIRECTS = 10
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
RETRYABLE_STATUSES = {408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524, 529}
_READ_BLOCK = 64 << 10
_NOT_THAT_SERVICE = "check that the configured endpoint is that service"


class RetryableError(Exception):
    """A transient failure worth retrying; ``retry_after`` is the server's requested delay, if any.

    ``unreachable`` marks failures before any connection existed (refused, host name unknown): worth a few quick
    retries when a server restarts mid-download, but before the first byte they are almost always a wrong
    URL or a server that is down, so the probe gives up on them early."""

    def __init__(self, message: str, retry_after: float | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable


class RemoteChanged(Exception):
    """The remote entity is not the one we started with (validator, size or Range support changed)."""


class RangesIgnored(RemoteChanged):
    """A ranged request got the whole, unchanged file (200): some of the server's backends ignore Range, so
    chunked downloading cannot work reliably and the restart uses one stream."""



def host_of(url: str) -> str:
    """``host[:port]`` of a URL as written, lower-cased, for messages (the credential decision reads the host as
    the connection does: ``origin.may_carry_credentials``)."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1].lower()


# OpenSSL's reasons when the peer answered a ClientHello with something that is not TLS (a plain-HTTP port).
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
_NO_ROUTE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
_CA_HINT = "point REQUESTS_CA_BUNDLE or SSL_CERT_FILE at a PEM file with the CA certificates to trust"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (requests -> urllib3 -> ssl keep the original in ``args``,
    ``reason`` or ``__cause__``)."""
    seen: set[int] = set()
    stack = [exc]
    while stack and len(seen) < 32:
        err = stack.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        stack.extend(e for e in (err.__cause__, err.__context__, getattr(err, "reason", None), *err.args)
                     if isinstance(e, BaseException))


def ca_source() -> str | None:
    """Which CA variable the TLS check used and which it ignored (requests lets REQUESTS_CA_BUNDLE, then
    CURL_CA_BUNDLE, win over the SSL_CERT_FILE / SSL_CERT_DIR that ``make_session`` applies), or None when
    none is set (certifi's bundle)."""
    names = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
    present = [(name, os.environ[name]) for name in names if os.environ.get(name)]
    usable = [(name, value) for name, value in present if name.endswith("_BUNDLE")
              or (os.path.isfile(value) if name == "SSL_CERT_FILE" else os.path.isdir(value))]
    if not present:
        return None
    if not usable:
        return "none of " + ", ".join(f"{n}={v}" for n, v in present) + " exists, so certifi's bundle was used"
    winner = usable[0]
    ignored = [f"{n}={v}" for n, v in present if (n, v) != winner]
    text = f"certificates were checked against {winner[0]}={winner[1]}"
    return text + (f" ({', '.join(ignored)} ignored while it is set)" if ignored else "")


def _ca_hint(prefix: str) -> str:
    source = ca_source()
    return f"{prefix}{_CA_HINT}" + (f"; {source}" if source else "")


def tls_failure(exc: BaseException, url: str) -> TLSError | None:
    """A final TLSError when ``exc`` is a TLS failure that retrying cannot fix, else None (a handshake cut
    short by a reset or a timeout stays a transient network failure).  The hint names the CA variable used."""
    host = host_of(url)
    for err in _causes(exc):
        if isinstance(err, ssl.SSLCertVerificationError):
            detail = err.verify_message or err.reason or str(err)
            return TLSError(f"TLS certificate verification failed for {host}: {detail}",
                            hint=_ca_hint("if you trust this server, "))
        if isinstance(err, ssl.SSLError) and err.library in ("X509", "PEM"):
            return TLSError(f"cannot load the CA certificates to verify {host}: {err.reason or err}",
                            hint=_ca_hint(""))
        if isinstance(err, ssl.SSLError) and err.reason in _NOT_TLS_REASONS:
            return TLSError(f"{host} does not speak TLS ({err.reason}): is it a plain-HTTP port?",
                            hint="check the URL's port, or use http:// if the server has no TLS")
    return None


def proxy_in_use(session: requests.Session, url: str) -> str | None:
    """``host:port`` of the proxy requests sends ``url`` through (environment or session), without the
    user-info a proxy URL may carry; None when there is none."""
    try:
        proxies = session.merge_environment_settings(url, {}, None, None, None)["proxies"]
        proxy = requests.utils.select_proxy(url, proxies)
        if not proxy:
            return None
        return connection_origin(proxy if "://" in proxy else f"http://{proxy}").authority
    except Exception:  # an unusable proxy setting: requests reports it on its own
        return None


def proxy_failure(exc: BaseException, url: str, session: requests.Session) -> RetryableError | None:
    """A RetryableError (``unreachable``) naming the proxy when ``exc`` is a failure to use it (a dead or
    refusing proxy used to be reported as the origin refusing the connection), else None."""
    if not any(isinstance(err, (urllib3.exceptions.ProxyError, requests.exceptions.ProxyError))
               for err in _causes(exc)):
        return None
    proxy = proxy_in_use(session, url) or "configured"
    what = f"the proxy {proxy} (from the *_PROXY environment variables) for {host_of(url)}"
    return (_no_connection(exc, what, with_reason=False)
            or RetryableError(f"{what} failed or refused the request", unreachable=True))


def _no_connection(exc: BaseException, what: str, with_reason: bool) -> RetryableError | None:
    """An ``unreachable`` RetryableError naming ``what`` when ``exc`` is a refused connection, an unresolvable
    host name or no route, else None."""
    for err in _causes(exc):
        if isinstance(err, ConnectionRefusedError):
            return RetryableError(f"connection refused by {what}", unreachable=True)
        if isinstance(err, socket.gaierror):
            return RetryableError(f"cannot resolve the host name of {what}", unreachable=True)
        if isinstance(err, OSError) and err.errno in _NO_ROUTE_ERRNOS:
            reason = f" ({err.strerror})" if with_reason else ""
            return RetryableError(f"no route to {what}{reason}", unreachable=True)
    return None


def connect_failure(exc: BaseException, url: str, session: requests.Session | None = None) -> RetryableError | None:
    """A RetryableError marked ``unreachable`` when ``exc`` means no connection could be made (refused, host
    name not resolvable, no route, connect timeout; through ``session``'s proxy, naming the proxy) or the server
    never answered it (no response headers within the read timeout), else None."""
    if session is not None:
        failed_proxy = proxy_failure(exc, url, session)
        if failed_proxy is not None:
            return failed_proxy
    host = host_of(url)
    refused = _no_connection(exc, host, with_reason=True)
    if refused is not None:
        return refused
    for err in _causes(exc):
        # Raised before the body is read (stream=True): no connection within the connect timeout, or a server
        # that accepted and sent no response headers within the read timeout.  Like a refused connection this is
        # almost always a dead server, not a blip: the probe gives up after a few tries.  (urllib3's
        # NewConnectionError, e.g. a refusal, subclasses ConnectTimeoutError: matched above, not here.)
        if isinstance(err, urllib3.exceptions.ReadTimeoutError) or type(err) is urllib3.exceptions.ConnectTimeoutError:
            return RetryableError(f"no response from {host} within the timeout", unreachable=True)
    return None


def headers_for(url: str, base: Mapping[str, str], auth: Mapping[str, str], auth_host: str | None,
                auth_scheme: str | None = None) -> dict[str, str]:
    """Request headers for ``url``: ``auth`` headers only when the URL connects to ``auth_host`` over the same
    or a stronger scheme (``origin.may_carry_credentials``, the one credential decision)."""
    headers = dict(base)
    # may_carry_credentials also refuses (AmbiguousURLError) a URL whose host urlsplit and urllib3 disagree on.
    if may_carry_credentials(url, auth_host, auth_scheme) and auth:
        headers.update(auth)
    return headers


def carries_credential(url: str, auth: Mapping[str, str]) -> bool:
    """True when ``url`` spells one of the credentials in ``auth`` (the token of ``Bearer <token>``, verbatim or
    percent-encoded): an endpoint that echoes the token into a redirect would hand it to another host."""
    spelled = (url, unquote(url))
    for value in auth.values():
        secret = value.split(" ", 1)[-1].strip()
        # At least 8 characters: a shorter value could match a signed URL's hex by chance and refuse it.
        if len(secret) >= 8 and any(secret in text for text in spelled):
            return True
    return False


def transport_failure(exc: BaseException, method: str, url: str,
                      session: requests.Session | None = None) -> ModfetchError | RetryableError:
    """The exception a failed ``session.request`` means, for every caller (engine and API client): a final
    TLSError (untrusted certificate, not TLS) or HTTPStatusError (malformed response), else a RetryableError,
    marked ``unreachable`` when no connection could be made (naming the proxy when it was the proxy)."""
    if isinstance(exc, requests.exceptions.InvalidHeader) or (
            isinstance(exc, ValueError) and not isinstance(exc, requests.RequestException)):
        # InvalidHeader: e.g. two different Content-Lengths.  A bare ValueError: requests parses a Location even
        # with allow_redirects=False ("Invalid IPv6 URL").  Neither is transient.
        return HTTPStatusError(f"{host_of(url)} sent a malformed response to {method} {redact_url(url)}: "
                               f"{redact(str(exc))}", 502)
    failure = tls_failure(exc, url)  # (requests' SSLError is a ConnectionError)
    if failure is not None:
        return failure
    return connect_failure(exc, url, session) or RetryableError(f"{type(exc).__name__} talking to {host_of(url)}")


def send_once(session: requests.Session, method: str, url: str, headers: Mapping[str, str],
              timeout: tuple[float, float], stream: bool = True) -> requests.Response:
    """One request, redirects not followed; a failure raised as ``transport_failure`` maps it."""
    guard_session(session)
    try:
        return session.request(method, url, headers=dict(headers), stream=stream, timeout=timeout,
                               allow_redirects=False)
    except (TimeoutError, requests.RequestException, ValueError) as exc:
        raise transport_failure(exc, method, url, session) from None


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


def same_origin(url: str, other: str) -> bool:
    """True when both URLs connect to the same scheme and ``host:port`` (AmbiguousURLError when parsers
    disagree on either)."""
    first, second = connection_origin(url), connection_origin(other)
    return (first.scheme, first.authority) == (second.scheme, second.authority)


def request(session: requests.Session, method: str, url: str, *, base_headers: Mapping[str, str],
            auth: Mapping[str, str], auth_host: str | None, timeout: tuple[float, float],
            stream: bool = True) -> tuple[requests.Response, str]:
    """Send ``method`` following redirects by hand so auth never leaves ``auth_host``; return (response, url)."""
    auth_scheme = connection_origin(url).scheme if may_carry_credentials(url, auth_host) else None
    for _ in range(MAX_REDIRECTS + 1):
        headers = headers_for(url, base_headers, auth, auth_host, auth_scheme)
        if auth and not set(auth).issubset(headers) and carries_credential(url, auth):
            # The header is withheld from this host, so the token must not reach it inside the URL either.
            raise AuthError(f"refusing to send the token for {auth_host} to {host_of(url)}: the URL it was "
                            "redirected to contains the token", 0,
                            hint="the endpoint echoed the token into a redirect; check the source's endpoint")
        response = send_once(session, method, url, headers, timeout, stream)
        if response.status_code in REDIRECT_STATUSES and response.headers.get("Location"):
            next_url = urljoin(url, response.headers["Location"])
            response.close()
            if urlsplit(next_url).scheme not in ("http", "https"):
                raise HTTPStatusError(f"redirect to unsupported URL {redact_url(next_url)}", response.status_code)
            if method == "POST" and response.status_code == 303:
                method = "GET"
            url = next_url
            continue
        return response, url
    raise HTTPStatusError(f"too many redirects fetching {redact_url(url)}", 310)


def read_capped(response: requests.Response, limit: int, too_big: str | None) -> bytes:
    """At most ``limit`` bytes of ``response``'s (decoded) body, read block by block so memory stays bounded
    whatever the framing (a lying or missing Content-Length, an endless chunked body).  Past ``limit``: an
    HTTPStatusError saying ``too_big``, or, when ``too_big`` is None, the first ``limit`` bytes (the rest is
    never read; closing the response drops the connection)."""
    declared = header_int(response.headers.get("Content-Length"))
    if too_big is not None and declared is not None and declared > limit:
        raise HTTPStatusError(too_big, response.status_code, hint=_NOT_THAT_SERVICE)
    body = bytearray()
    try:
        for block in response.iter_content(_READ_BLOCK):
            body += block
            if len(body) > limit:
                if too_big is None:
                    return bytes(body[:limit])
                raise HTTPStatusError(too_big, response.status_code, hint=_NOT_THAT_SERVICE)
    except requests.RequestException as exc:  # cut off, reset or stalled mid-body
        if too_big is None:
            return bytes(body)  # an error body is only drained: its status already says what happened
        raise NetworkError(f"the answer from {host_of(response.url)} broke off ({type(exc).__name__})",
                           hint="check your connection and the source's endpoint in the config") from None
    return bytes(body)


def check_status(response: requests.Response, url: str, what: str = "") -> None:
    """Raise RetryableError for transient statuses and a clear HTTPStatusError for final ones (>= 400)."""
    status = response.status_code
    if status < 400:
        return
    label = what or redact_url(url)
    if status in RETRYABLE_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise RetryableError(f"HTTP {status} from {host_of(url)}", retry_after)
    if status in (401, 403):
        raise AuthError(f"HTTP {status} {response.reason or ''}: access denied to {label}".replace("  ", " "),
                        status, hint="the server needs credentials or refused them")
    if status in (404, 410):
        raise NotFoundError(f"HTTP {status}: not found: {label}", status)
    raise HTTPStatusError(f"HTTP {status} {response.reason or ''}: {label}".replace("  ", " "), status)


