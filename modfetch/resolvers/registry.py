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


def build_resolvers(config: Config) -> list[Resolver]:
    """Resolvers in priority order for this config."""
    resolvers: list[Resolver] = []
    resolvers.append(HuggingFaceResolver(config))
    resolvers.append(CivitaiResolver(config))
    resolvers.append(HttpResolver())
    return resolvers


def resolve(uri: str, config: Config, session: requests.Session) -> list[ResolvedFile]:
    """Resolve ``uri`` to the files it names; UsageError for URIs no source understands."""
    uri = uri.strip()
    for resolver in build_resolvers(config):
        if resolver.matches(uri):
            return resolver.resolve(uri, session)
    raise UsageError(f"unsupported URI {redact_url(uri)!r}",
                     hint="use http(s)://host/path, hf://owner/repo/path or civitai://model/ID")
