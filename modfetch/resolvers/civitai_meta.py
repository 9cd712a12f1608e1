"""What the Stable Diffusion front ends read beside a CivitAI model: the model-version JSON and a preview image.

``fetch_metadata`` asks ``/api/v1/model-versions/{id}`` (the token only to the CivitAI endpoint, as every
CivitAI call) and keeps the body exactly as CivitAI sent it.  The preview is the version's first image that
is an image (not a video) and safe for work (``nsfwLevel`` 1, or, from older answers without a level, ``nsfw``
false or ``"None"``).  It is fetched with the same host binding: the image host (``image.civitai.com``)
never gets the token.  It must say it is an image (PNG, JPEG, WebP or GIF, and start like one) and be at
most ``MAX_PREVIEW`` bytes; anything else means "no preview", never a failed download.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from ..config import Config
from ..engine.http import REDIRECT_STATUSES
from ..errors import ModfetchError
from ..util.redact import redact_url
from .api import SourceClient, config_retry, token_from_env
from .civitai import DEFAULT_ENDPOINT

log = logging.getLogger("modfetch.resolvers.civitai")
MAX_INFO = 16 << 20
MAX_PREVIEW = 16 << 20
MAX_HOPS = 5
# Content type -> the extension A1111 / ComfyUI preview loaders accept, and the bytes such a file starts with.
IMAGE_TYPES: dict[str, tuple[str, tuple[bytes, ...]]] = {
    "image/png": ("png", (b"\x89PNG\r\n\x1a\n",)),
    "image/jpeg": ("jpg", (b"\xff\xd8\xff",)),
    "image/webp": ("webp", (b"RIFF",)),
    "image/gif": ("gif", (b"GIF87a", b"GIF89a")),
}


@dataclass(frozen=True)
class CivitaiMetadata:
    """The version JSON (bytes as CivitAI sent them) and the preview (bytes, extension) when there is one."""

    info: bytes
    preview: tuple[bytes, str] | None
    note: str = ""


def is_safe_image(image: Mapping[str, Any]) -> bool:
    """An image (not a video) CivitAI rates safe: ``nsfwLevel`` 1, else ``nsfw`` false / ``"None"``."""
    if str(image.get("type") or "image").lower() != "image":
        return False
    level = image.get("nsfwLevel")
    if level is not None:
        return level == 1 and not isinstance(level, bool)
    return image.get("nsfw") is False or image.get("nsfw") == "None"


def pick_preview(version: Mapping[str, Any]) -> str | None:
    """The URL of the version's first safe image, or None."""
    images = version.get("images")
    for image in images if isinstance(images, list) else []:
        if isinstance(image, dict) and is_safe_image(image):
            url = image.get("url")
            if isinstance(url, str) and urlsplit(url).scheme.lower() in ("http", "https"):
                return url
    return None


def _read_capped(response: requests.Response, cap: int, what: str) -> bytes | None:
    """The body, or None when it is (or says it is) larger than ``cap``; ModfetchError when it breaks off."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        return None
    body = bytearray()
    try:
        for block in response.iter_content(64 * 1024):
            body += block
            if len(body) > cap:
                return None
    except requests.RequestException as exc:  # a reset or short body while reading: not retried for a sidecar
        raise ModfetchError(f"reading {what} failed: {type(exc).__name__}") from None
    return bytes(body)


def fetch_preview(client: SourceClient, url: str) -> tuple[tuple[bytes, str] | None, str]:
    """``((bytes, extension), "")`` for an image at ``url``, else ``(None, why not)``."""
    # The URL comes from CivitAI's JSON: like a redirect's Location it must not spell the token for another host
    # (the header is withheld there, the URL would carry it anyway).  AuthError: the caller keeps the info.
    url = client.off_host_target(client.endpoint, url, 200)
    for _ in range(MAX_HOPS):
        response, final = client.send("GET", url)
        with response:
            location = response.headers.get("Location")
            if response.status_code in REDIRECT_STATUSES and location:
                # Off the endpoint: fetched without the token (headers_for binds it to the endpoint host).
                url = client.off_host_target(final, location, response.status_code)
                continue
            if response.status_code != 200:
                return None, f"HTTP {response.status_code} for the preview {redact_url(final)}"
            ctype = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if ctype not in IMAGE_TYPES:
                return None, f"the preview is not a PNG/JPEG/WebP/GIF image ({ctype or 'no content type'})"
            try:
                data = _read_capped(response, MAX_PREVIEW, "the preview")
            except ModfetchError as exc:
                return None, exc.message
            if data is None:
                return None, f"the preview is larger than {MAX_PREVIEW >> 20} MiB"
            ext, magic = IMAGE_TYPES[ctype]
            if not data.startswith(magic) or (ext == "webp" and data[8:12] != b"WEBP"):
                return None, f"the preview's bytes are not a {ext} image"
            return (data, ext), ""
    return None, "too many redirects for the preview"


def fetch_metadata(config: Config, session: requests.Session, version_id: int) -> CivitaiMetadata:
    """The version JSON and preview of CivitAI model version ``version_id``; ModfetchError when the JSON
    cannot be had (the preview is optional)."""
    source = config.sources.civitai
    endpoint = (source.endpoint or DEFAULT_ENDPOINT).rstrip("/")
    _, token = token_from_env([source.token_env, "CIVITAI_TOKEN"])
    client = SourceClient(session, endpoint, token, config.network.timeout_seconds, "CivitAI",
                          config_retry(config))
    response, _ = client.send("GET", client.url(f"/api/v1/model-versions/{version_id}"),
                              accept="application/json")
    with response:
        if response.status_code != 200:
            raise ModfetchError(f"HTTP {response.status_code} from CivitAI for model version {version_id}")
        info = _read_capped(response, MAX_INFO, f"model version {version_id}")
    try:
        version = json.loads(info) if info is not None else None
    except (ValueError, RecursionError):
        version = None
    if info is None or not isinstance(version, dict):
        raise ModfetchError(f"CivitAI sent no usable JSON for model version {version_id}")
    url = pick_preview(version)
    if url is None:
        return CivitaiMetadata(info, None, "no safe-for-work image to use as the preview")
    try:
        preview, why = fetch_preview(client, url)
    except ModfetchError as exc:  # an unreachable image host costs the preview, not the info
        preview, why = None, exc.message
    return CivitaiMetadata(info, preview, why)
