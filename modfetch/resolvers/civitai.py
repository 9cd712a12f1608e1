"""CivitAI: ``civitai://model/ID[?version=V&file=..&format=..&fp=..]`` and civitai.com URLs -> one file.

Metadata comes from ``/api/v1/models/{id}`` (versions newest first) or ``/api/v1/model-versions/{id}``.  The
file is picked by ``file=`` (case-insensitive substring of the name), ``format=``/``fp=``/``size=``/``type=``
filters, else the version's primary file; SafeTensor beats PickleTensor between otherwise equal files.  The
resolver then requests the file's ``downloadUrl`` itself (auth only to the CivitAI host), stops at the
redirect to the signed storage URL and returns that URL without auth; ``Content-Disposition`` names the file.
The engine verifies the bytes against ``hashes.SHA256``.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import requests

from ..config import Config
from ..engine.origin import scoped_auth_host
from ..errors import AmbiguousChoiceError, AuthError, Candidate, HTTPStatusError, NotFoundError, UsageError
from ..util.filenames import sanitize_filename
from ..util.http import MAX_SIZE, parse_content_disposition_filename
from ..util.redact import redact_url
from ..util.sizes import human_size
from .api import SourceClient, config_retry, token_from_env
from .base import ResolvedFile
from .uris import CivitaiUri, is_civitai_browser_url, parse_civitai_browser_url, parse_civitai_uri

log = logging.getLogger("modfetch.resolvers.civitai")
DEFAULT_ENDPOINT = "https://civitai.com"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILTERS = ("format", "fp", "size", "type")
File = Mapping[str, Any]


class CivitaiResolver:
    """``civitai://`` URIs and civitai.com (or configured endpoint) model / download URLs."""

    name = "civitai"

    def __init__(self, config: Config) -> None:
        source = config.sources.civitai
        self.enabled = source.enabled
        self.endpoint = (source.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.endpoint_host = urlsplit(self.endpoint).netloc.rsplit("@", 1)[-1].lower()
        self.token_vars = [source.token_env, "CIVITAI_TOKEN"]
        self.timeout = config.network.timeout_seconds
        self.retry = config_retry(config)
        token_from_env(self.token_vars)

    def matches(self, uri: str) -> bool:
        """True for ``civitai://`` and CivitAI model / download URLs (civitai.com or the endpoint host)."""
        text = uri.strip()
        return text.lower().startswith("civitai://") or is_civitai_browser_url(text, [self.endpoint_host])

    def check(self, uri: str) -> CivitaiUri:
        """The parsed URI; UsageError (without any request) when the source is off or the URI is malformed."""
        if not self.enabled:
            raise UsageError("the civitai source is disabled in the config",
                             hint="set sources.civitai.enabled: true to use civitai:// URIs")
        text = uri.strip()
        return parse_civitai_uri(text) if text.lower().startswith("civitai://") else parse_civitai_browser_url(text)

    def resolve(self, uri: str, session: requests.Session) -> list[ResolvedFile]:
        """The one file ``uri`` selects, with CivitAI's SHA-256 and placement hints."""
        ref = self.check(uri)
        var, token = token_from_env(self.token_vars)
        client = SourceClient(session, self.endpoint, token, self.timeout, "CivitAI", self.retry)
        model, version = _load(client, ref, var)
        model_id = _int(version.get("modelId")) or _int(model.get("id")) or ref.model_id or 0
        version_id = _int(version.get("id")) or ref.version_id or 0
        chosen = choose_file(_list(version.get("files")), ref, model_id, version_id)
        url, name, display, headers = _follow(client, chosen, model_id, version_id, var)
        meta = _dict(chosen.get("metadata"))
        creator = _dict(model.get("creator"))
        sha = str(_dict(chosen.get("hashes")).get("SHA256") or "").lower()
        hints = {
            "civitai_type": model.get("type"), "base_model": version.get("baseModel"),
            "creator": creator.get("username"), "model_name": model.get("name"), "model_id": model_id,
            "version_id": version_id, "version_name": version.get("name"), "file_id": chosen.get("id"),
            "file_type": chosen.get("type"), "format": meta.get("format"), "fp": meta.get("fp"),
            "nsfw": model.get("nsfw"),
        }
        log.info("civitai: model %s version %s: %s (%s)", model_id, version_id, name,
                 meta.get("format") or "?")
        return [ResolvedFile(
            url=url, filename=name, display_url=display, headers=headers,
            auth_host=scoped_auth_host(client.auth_scheme, client.auth_host) if headers else None,
            size=_size_bytes(chosen.get("sizeKB")),
            sha256=sha if _SHA256.match(sha) else None, source="civitai",
            hints={k: v for k, v in hints.items() if v is not None})]


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _size_bytes(size_kb: Any) -> int | None:
    """``sizeKB`` in bytes; None unless a positive finite number of sane size (JSON allows Infinity, NaN, 1e308,
    which ``round()`` turns into OverflowError / ValueError)."""
    if isinstance(size_kb, bool) or not isinstance(size_kb, (int, float)):
        return None
    if not math.isfinite(size_kb) or not 0 < size_kb < MAX_SIZE / 1024:
        return None
    return round(size_kb * 1024)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _auth_hint(var: str | None) -> str:
    if var is None:
        return "create an API key at https://civitai.com/user/account and export CIVITAI_TOKEN=<key>"
    return f"check the key in {var}; some files also need early access on the model page"


def _api_error(response: requests.Response, what: str, var: str | None) -> HTTPStatusError:
    status = response.status_code
    if status == 404:
        return NotFoundError(f"CivitAI has no {what}", status, hint="check the id on civitai.com")
    if status in (401, 403):
        return AuthError(f"CivitAI refused access to {what} (HTTP {status})", status, hint=_auth_hint(var))
    return HTTPStatusError(f"HTTP {status} from CivitAI for {what}", status)


def _load(client: SourceClient, ref: CivitaiUri,
          var: str | None) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """``(model, version)`` JSON for ``ref``: the requested version or the model's newest one."""
    if ref.version_id is not None:
        response, version = client.get_json(client.url(f"/api/v1/model-versions/{ref.version_id}"))
        if response.status_code >= 400 or not isinstance(version, dict):
            raise _api_error(response, f"model version {ref.version_id}", var)
        owner = _int(version.get("modelId"))
        if ref.model_id is not None and owner is not None and owner != ref.model_id:
            raise UsageError(f"CivitAI version {ref.version_id} belongs to model {owner}, not {ref.model_id}",
                             hint=f"use {shlex.quote(f'civitai://model/{owner}?version={ref.version_id}')}")
        model = _dict(version.get("model"))
        model_id = owner or ref.model_id
        if model_id is not None:
            response, full = client.get_json(client.url(f"/api/v1/models/{model_id}"))
            if response.status_code < 400 and isinstance(full, dict):
                model = {**full, **{k: v for k, v in model.items() if v is not None}}
        return model, version
    response, model = client.get_json(client.url(f"/api/v1/models/{ref.model_id}"))
    if response.status_code >= 400 or not isinstance(model, dict):
        raise _api_error(response, f"model {ref.model_id}", var)
    versions = [v for v in _list(model.get("modelVersions")) if isinstance(v, dict)]
    if not versions:
        raise NotFoundError(f"CivitAI model {ref.model_id} has no published versions", 404)
    return model, versions[0]


def _meta(f: File, key: str) -> str:
    if key == "type":
        return str(f.get("type") or "")
    meta = f.get("metadata")
    return str(meta.get(key) or "") if isinstance(meta, dict) else ""


def _twin_key(f: File) -> tuple[str, str, str]:
    return (_meta(f, "type").lower(), _meta(f, "fp").lower(), _meta(f, "size").lower())


def _prefer_safetensor(pool: list[File]) -> list[File]:
    """Drop PickleTensor files that have a SafeTensor twin (same file type, fp and size)."""
    safe = {_twin_key(f) for f in pool if _meta(f, "format").lower() == "safetensor"}
    return [f for f in pool if not (_meta(f, "format").lower() == "pickletensor" and _twin_key(f) in safe)]


def _candidate(f: File, model_id: int, version_id: int, pool: Sequence[File] = ()) -> Candidate:
    name = str(f.get("name") or "?")
    size = _size_bytes(f.get("sizeKB"))
    details = ", ".join(x for x in (_meta(f, "type"), _meta(f, "format"), _meta(f, "fp"),
                                    human_size(size) if size else "") if x)
    uri = f"civitai://model/{model_id}?version={version_id}&file={quote(name)}"
    if sum(str(g.get("name") or "?").lower() == name.lower() for g in pool) > 1:
        # Same-named files (fp16 / fp32 twins): the name alone would select both again.
        uri += "".join(f"&{key}={quote(_meta(f, key))}" for key in _FILTERS if _meta(f, key))
    return Candidate(f"{name} ({details})" if details else name, uri, size, _meta(f, "format") or None)


def choose_file(files: list[Any], ref: CivitaiUri, model_id: int, version_id: int) -> File:
    """The file ``ref`` selects from a version's ``files`` (pure; raises NotFound/AmbiguousChoiceError)."""
    everything: list[File] = [f for f in files if isinstance(f, dict)]
    pool = everything
    for key in _FILTERS:
        wanted = getattr(ref, key)
        if wanted:
            pool = [f for f in pool if _meta(f, key).lower() == wanted.lower()]
    filtered = any(getattr(ref, k) for k in _FILTERS)
    if ref.file:
        needle = ref.file.lower()
        pool = [f for f in pool if needle in str(f.get("name") or "").lower()]
        exact = [f for f in pool if str(f.get("name") or "").lower() == needle]
        if len(exact) == 1:
            return exact[0]
    if not pool:
        wanted_text = ", ".join(f"{k}={getattr(ref, k)}" for k in ("file", *_FILTERS) if getattr(ref, k))
        available = "; ".join(_candidate(f, model_id, version_id).label for f in everything) or "none"
        wanted_text = wanted_text or "the request"
        raise NotFoundError(f"no file of CivitAI version {version_id} matches {wanted_text}; "
                            f"files: {available}", 404, hint="pick one with ?file=NAME")
    if not ref.file:
        primary = [f for f in pool if f.get("primary")]
        if len(primary) == 1 or (primary and not filtered):
            chosen = primary[0]
            twins = [f for f in pool if _meta(f, "format").lower() == "safetensor"
                     and _twin_key(f) == _twin_key(chosen)]
            if _meta(chosen, "format").lower() == "pickletensor" and twins:
                log.info("civitai: preferring %s (SafeTensor) over the primary %s (PickleTensor)",
                         twins[0].get("name"), chosen.get("name"))
                return twins[0]
            return chosen
    pool = _prefer_safetensor(pool)
    if len(pool) == 1:
        return pool[0]
    raise AmbiguousChoiceError(f"{len(pool)} files of CivitAI version {version_id} match",
                               [_candidate(f, model_id, version_id, pool) for f in pool],
                               hint="choose one with ?file=NAME (or format=/fp=/size=/type=)")


def _download_url(client: SourceClient, f: File, version_id: int) -> str:
    """The file's download URL, always on the configured endpoint (the token may only go there)."""
    raw = str(f.get("downloadUrl") or "")
    parts = urlsplit(raw)
    if parts.path.startswith("/api/download/"):
        return client.url(parts.path + (f"?{parts.query}" if parts.query else ""))
    return client.url(f"/api/download/models/{version_id}")


def _name_from_location(location: str) -> str | None:
    for key, value in parse_qsl(urlsplit(location).query):
        if key.lower() == "response-content-disposition":
            return parse_content_disposition_filename(value)
    return None


def _follow(client: SourceClient, f: File, model_id: int, version_id: int,
            var: str | None) -> tuple[str, str, str, dict[str, str]]:
    """Request the download URL (auth to CivitAI only) and stop at the storage redirect:
    ``(url to fetch, file name, display URL, headers for that URL)``."""
    url = _download_url(client, f, version_id)
    display = redact_url(url)
    api_name = str(f.get("name") or "")
    response, final = client.send("GET", url)
    response.close()
    label = f"{api_name or 'the file'} (model {model_id}, version {version_id})"
    if urlsplit(final).path.rstrip("/").endswith("/login") or response.status_code in (401, 403):
        if var is None:
            raise AuthError(f"{label} needs a CivitAI login and CIVITAI_TOKEN is not set",
                            response.status_code, hint=_auth_hint(None))
        raise AuthError(f"CivitAI refused the token in {var} for {label} (HTTP {response.status_code})",
                        response.status_code, hint=_auth_hint(var))
    if response.status_code == 404:
        raise NotFoundError(f"CivitAI has no download for {label}", 404)
    disposition = parse_content_disposition_filename(response.headers.get("Content-Disposition"))
    location = response.headers.get("Location")
    if 300 <= response.status_code < 400 and location:
        target = client.off_host_target(final, location, response.status_code)
        name = disposition or _name_from_location(target) or api_name
        return target, sanitize_filename(name or f"civitai-{version_id}.bin"), display, {}
    if response.status_code == 200 and response.headers.get("Content-Type", "").lower().startswith("text/html"):
        # No model file is a web page: this is a login / captcha / error page served with 200.
        raise HTTPStatusError(f"CivitAI answered with a web page instead of {label}", 200,
                              hint=_auth_hint(var) if var is None else "open the model page in a browser to see why")
    if response.status_code == 200:
        name = disposition or api_name
        return final, sanitize_filename(name or f"civitai-{version_id}.bin"), display, dict(client.auth)
    raise HTTPStatusError(f"unexpected HTTP {response.status_code} from CivitAI for {label}",
                          response.status_code)
