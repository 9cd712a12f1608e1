"""Which host a URL really connects to, and whether a credential may go there.

requests hands every URL to urllib3's ``parse_url``, and urllib3 opens the connection to the host *it* reads.
Python's ``urlsplit`` reads some spellings differently (``http://evil:1\\@hub/`` is ``hub`` to urlsplit and
``evil:1`` to urllib3), so a credential decision made with urlsplit can send the token to another host.
Here the decision uses urllib3's reading, normalised (case, trailing dot, default port), and a URL the two
parsers read differently is refused outright before any request.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from ..errors import HTTPStatusError
from ..util.redact import redact, redact_url

DEFAULT_PORTS = {"http": 80, "https": 443}


class AmbiguousURLError(HTTPStatusError):
    """A URL whose host (or port) is read differently by the parser that decides credentials and the one that
    connects, or that cannot be connected to as written: refused before any request."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refusing the URL {redact_url(url)}: {redact(reason)}", 0,
                         hint="the URL (or a redirect's Location) spells its host in a way HTTP clients "
                              "disagree on; use a plain scheme://host[:port]/path URL")


@dataclass(frozen=True)
class Origin:
    """``scheme``, ``host`` (lower-case, no trailing dot, IPv6 in brackets) and ``port`` (default filled in)."""

    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        """``host:port``, the unit a credential is bound to."""
        return f"{self.host}:{self.port}"


def _has_control(text: str) -> bool:
    return any(c < " " or c == "\x7f" for c in text)


def _split_view(url: str) -> tuple[str, str, int | None]:
    """``(netloc, host, port)`` as urlsplit reads them (ValueError on a malformed port or IPv6 literal)."""
    parts = urlsplit(url)
    return parts.netloc, (parts.hostname or ""), parts.port


def _normal_split_host(host: str) -> str | None:
    """urlsplit's host in urllib3's normal form, or None when it cannot be one (percent-encoding outside an
    IPv6 zone id: urllib3 decodes some of it, urlsplit none)."""
    if ":" in host:  # an IPv6 literal; a zone id is percent-encoded as %25 in a URL
        return "[" + host.replace("%25", "%", 1).lower() + "]"
    if "%" in host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return host.lower()


def connection_origin(url: str) -> Origin:
    """The origin urllib3 (so requests) connects to for ``url``.  Raises AmbiguousURLError when urlsplit
    reads another host or port, when the authority holds a backslash, whitespace or a control character, or
    when the URL is not an http(s) URL urllib3 can open."""
    if _has_control(url) or url != url.strip(" "):
        raise AmbiguousURLError(url, "it contains whitespace or a control character")
    try:
        parsed = parse_url(url)
    except LocationParseError:
        raise AmbiguousURLError(url, "its host or port cannot be parsed") from None
    scheme = (parsed.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or not parsed.host:
        raise AmbiguousURLError(url, "it is not an http(s) URL with a host")
    host = parsed.host.lower().rstrip(".")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
    try:
        netloc, split_host, split_port = _split_view(url)
    except ValueError:
        raise AmbiguousURLError(url, "its host or port cannot be parsed") from None
    seen = _normal_split_host(split_host)
    split_port = split_port or DEFAULT_PORTS[scheme]
    odd = "\\" in netloc or " " in netloc
    if odd or seen is None or seen.rstrip(".") != host or split_port != port:
        why = "a backslash or space in its host part" if odd else "its host is read two ways"
        raise AmbiguousURLError(url, f"{why}: the connection would go to {host}:{port}, while the URL "
                                     f"appears to name {split_host or '(no host)'}:{split_port}")
    return Origin(scheme, host, port)


def scoped_auth_host(scheme: str, auth_host: str) -> str:
    """``scheme://host[:port]``: an ``auth_host`` that also binds the credential to ``scheme``, so that a request
    chain which starts off the endpoint (the engine restarts its chunk requests from the probe's final URL)
    can never hand an https credential to the same host over plain http."""
    return f"{scheme.lower()}://{auth_host}"


def bound_origin(auth_host: str, scheme: str) -> Origin | None:
    """The origin a credential bound to ``auth_host`` (``host[:port]``, or ``scheme://host[:port]`` from
    ``scoped_auth_host``) is for, the port defaulting by ``scheme`` (or the bound scheme); None when
    ``auth_host`` is not a usable host."""
    try:
        return connection_origin(auth_host + "/" if "://" in auth_host else f"{scheme}://{auth_host}/")
    except AmbiguousURLError:
        return None


def may_carry_credentials(url: str, auth_host: str | None, auth_scheme: str | None = None) -> bool:
    """THE credential decision, for every request modfetch sends: True only when ``url`` connects to
    ``auth_host`` (same host and port, as urllib3 reads the URL) over ``auth_scheme`` (or the scheme
    ``auth_host`` is scoped to) or a stronger scheme (never downgraded from https to http).  Raises
    AmbiguousURLError for a URL the parsers disagree on."""
    target = connection_origin(url)
    if not auth_host:
        return False
    scheme = (auth_scheme or target.scheme).lower()
    bound = bound_origin(auth_host, scheme if scheme in DEFAULT_PORTS else target.scheme)
    if bound is None or (bound.host, bound.port) != (target.host, target.port):
        return False
    if "://" in auth_host and bound.scheme == "https":
        scheme = "https"  # the credential's own scheme wins over one derived from the request chain
    return not (scheme == "https" and target.scheme != "https")
