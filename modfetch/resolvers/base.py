"""The resolver interface: a URI in, one or more ``ResolvedFile`` out.

A resolver knows one source's wire format.  It returns for each file the URL the engine fetches, headers to
send (auth) with the one host they may go to, the file name and relative sub-path, and whatever the source
publishes about size and hashes so the engine can verify the bytes against the source's own word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests


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
