"""The resolver interface: a URI in, one or more ``ResolvedFile`` out.

A resolver knows one source's wire format.  It returns for each file the URL the engine fetches, headers to
send (auth) with the one host they may go to, the file name and relative sub-path, and whatever the source
publishes about size and hashes so the engine can verify the bytes against the source's own word.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from ..config import Config
from ..engine.http import GuardedAdapter


@dataclass(frozen=True)
class ResolvedFile:
    """One file to download.

    ``headers`` (e.g. ``Authorization``) are sent only to ``auth_host``; the engine drops them on any
    redirect or request to another host.  ``display_url`` is what we store and show (already redacted).
    ``hints`` carry placement facts: ``repo_id``, ``repo_type``, ``revision``, ``commit``, ``etag``,
    ``civitai_type``, ``base_model``, ``creator``, ``model_name``, ``artifact_type``, ...
    """

    url: str
    filename: str | None
    display_url: str
    subdir: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    auth_host: str | None = None
    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    source: str = "http"
    hints: Mapping[str, Any] = field(default_factory=dict)


class Resolver(Protocol):
    """A source: says whether it handles a URI and resolves it to files."""

    name: str

    def matches(self, uri: str) -> bool:
        """True when this resolver understands ``uri``."""

    def resolve(self, uri: str, session: requests.Session) -> list[ResolvedFile]:
        """Files for ``uri``; raises a ModfetchError subclass with a clear one-line message on failure."""



def make_session(config: Config, pool_size: int = 4) -> requests.Session:
    """A requests Session with modfetch's User-Agent, identity encoding and a pool sized for ``pool_size``."""
    session = requests.Session()
    # Guarded connections: response headers within a deadline, and every socket registered so that
    # request_stop() wakes a read on it (API calls and probes included, see engine.interrupt).
    adapter = GuardedAdapter(pool_connections=4, pool_maxsize=max(4, pool_size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": config.network.user_agent, "Accept-Encoding": "identity"})
    # requests trusts only certifi's bundle or REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (those still win, per
    # request); OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR, which curl and Python's ssl honour, are what private-CA
    # setups usually export.  A path that does not exist is ignored, as OpenSSL does.
    for variable, exists in (("SSL_CERT_FILE", os.path.isfile), ("SSL_CERT_DIR", os.path.isdir)):
        path = os.environ.get(variable, "")
        if path and exists(path):
            session.verify = path
            break
    return session
