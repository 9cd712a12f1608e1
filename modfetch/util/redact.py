"""Secret redaction: tokens from the environment, Authorization headers, signed-URL query parameters.

Every log handler, error message, DB URL column and metrics label goes through ``redact``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Environment variables whose values are secrets wherever they appear.
TOKEN_ENV_VARS: set[str] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CIVITAI_TOKEN"}
_SECRET_PARAMS = re.compile(
    r"^(token|access_token|api_key|apikey|key|sig|signature|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token|x-goog-signature|x-goog-credential|policy|se|sv|skoid|sktid|hmac|auth)$",
    re.I,
)
_AUTH_HEADER = re.compile(r"(?i)\b(authorization|proxy-authorization|cookie)(['\"]?\s*[:=]\s*['\"]?)([^'\"\n,}]+)")
_BEARER = re.compile(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{6,}")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|sig|signature|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token|x-goog-signature|x-goog-credential|policy|key-pair-id|hmac)=)[^&#\s'\"]+"
)


def register_token_env(names: Iterable[str]) -> None:
    """Add config-named token variables (``sources.*.token_env``) to the redacted set."""
    TOKEN_ENV_VARS.update(n for n in names if n)


def secret_values() -> list[str]:
    """The current values of every token variable (at least 4 characters, to avoid masking noise)."""
    values = {os.environ.get(name, "") for name in TOKEN_ENV_VARS}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str) -> str:
    """Mask token values, Authorization/Cookie header values and secret query parameters in ``text``."""
    if not text:
        return text
    for value in secret_values():
        if value in text:
            text = text.replace(value, MASK)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + " " + MASK, text)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)


def redact_url(url: str) -> str:
    """A URL safe to store or show: user-info removed, secret query parameters masked, tokens masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAMS.match(k) else v) for k, v in pairs], safe="*/:")
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))
