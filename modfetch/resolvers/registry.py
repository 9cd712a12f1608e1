"""Which resolver handles a URI: specific sources first (hf://, civitai://, their browser URLs), then http."""

from __future__ import annotations

import requests

from ..config import Config
from ..errors import UsageError
from ..util.redact import redact_url
from .base import ResolvedFile, Resolver
from .civitai import CivitaiResolver
from .http import HttpResolver
from .huggingface import HuggingFaceResolver


def build_resolvers(config: Config, dry_run: bool = False) -> list[Resolver]:
    """Resolvers in priority order for this config; with ``dry_run`` none of them writes anything."""
    resolvers: list[Resolver] = []
    resolvers.append(HuggingFaceResolver(config, save_trees=not dry_run))
    resolvers.append(CivitaiResolver(config))
    resolvers.append(HttpResolver())
    return resolvers


def check_uri(uri: str, config: Config) -> None:
    """UsageError for a URI that no source understands, or whose source is disabled or rejects its syntax: the
    checks ``resolve`` starts with, without a request.  A list of URIs is checked whole before any download, so
    a typo on line 50 does not stop the run after 49 files (and skip the rest)."""
    uri = uri.strip()
    for resolver in build_resolvers(config, dry_run=True):
        if resolver.matches(uri):
            check = getattr(resolver, "check", None)
            if check is not None:
                check(uri)
            return
    raise _unsupported(uri)


def _unsupported(uri: str) -> UsageError:
    return UsageError(f"unsupported URI {redact_url(uri)!r}",
                      hint="use http(s)://host/path, hf://owner/repo/path or civitai://model/ID")


def resolve(uri: str, config: Config, session: requests.Session, dry_run: bool = False) -> list[ResolvedFile]:
    """Resolve ``uri`` to the files it names; UsageError for URIs no source understands.  ``dry_run``: write
    nothing (no saved Hub listings)."""
    uri = uri.strip()
    for resolver in build_resolvers(config, dry_run):
        if resolver.matches(uri):
            return resolver.resolve(uri, session)
    raise _unsupported(uri)
