"""Secret redaction: tokens from the environment, Authorization headers, signed-URL query parameters.

Every log handler, error message, DB URL column and metrics label goes through ``redact``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

MASK = "***"
# Environment variables whose values are secrets wherever they appear.
TOKEN_ENV_VARS: set[str] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CIVITAI_TOKEN"}
# Query parameter names whose values are secrets: exact names, plus any name containing token, secret,
# password, signature or credential (``access_token``, ``client_secret``, ``X-Amz-Security-Token``, ...).
# One list for URLs (``redact_url``) and free text (``redact``: urllib3's debug lines print request targets).
_SECRET_PARAM_NAMES = (
    r"key|api[_-]?key|sig|auth|hmac|policy|key-pair-id|pass|pwd|se|sv|skoid|sktid|"
    r"[\w.-]*(?:token|secret|passw(?:or)?d|signature|credential)[\w.-]*"
)
_SECRET_PARAMS = re.compile(rf"^(?:{_SECRET_PARAM_NAMES})$", re.I)
_AUTH_HEADER = re.compile(r"(?i)\b(authorization|proxy-authorization|cookie)(['\"]?\s*[:=]\s*['\"]?)([^'\"\n,}]+)")
_BEARER = re.compile(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{6,}")
_QUERY_SECRET = re.compile(rf"(?i)([?&;](?:{_SECRET_PARAM_NAMES})=)[^&#\s'\"]+")
# A secret assignment hidden inside one decoded query pair: ``x=1;token=S`` (``;`` as a separator, which
# parse_qsl no longer splits on but some servers do), ``amp;token=S`` (``&amp;`` pasted from HTML),
# ``Token%3DS`` (the whole assignment percent-encoded into the name).
_NESTED_SECRET = re.compile(rf"(?i)(?:^|[;&?])(?:{_SECRET_PARAM_NAMES})=")


# Secret values that come from somewhere other than a variable (the Hugging Face token file).
SECRET_VALUES: set[str] = set()


def register_token_env(names: Iterable[str]) -> None:
    """Add config-named token variables (``sources.*.token_env``) to the redacted set."""
    TOKEN_ENV_VARS.update(n for n in names if n)


def register_secret(value: str) -> None:
    """Mask ``value`` wherever it appears from now on, exactly like a token variable's value (a token read
    from a file)."""
    if value:
        SECRET_VALUES.add(value)


@functools.lru_cache(maxsize=64)  # redact() runs for every log record; the token values rarely change
def _spellings(value: str) -> frozenset[str]:
    """``value`` verbatim and percent-encoded as URLs spell it (a token with ``/+=&`` echoed into a URL path or
    query, and ``redact_url``'s own re-encoding), with upper- and lower-case hex digits."""
    forms = {value}
    for safe in ("", "/", "*/:"):
        for encoded in (quote(value, safe=safe), quote_plus(value, safe=safe)):
            forms.add(encoded)
            forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded))
    return frozenset(forms)


def secret_values() -> list[str]:
    """Every spelling of every token variable's value (values of at least 4 characters, to avoid masking
    noise), longest first."""
    values = {os.environ.get(name, "") for name in TOKEN_ENV_VARS} | SECRET_VALUES
    forms = {form for v in values if len(v) >= 4 for form in _spellings(v)}
    return sorted(forms, key=len, reverse=True)


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


def _masked_pair(key: str, value: str) -> tuple[str, str]:
    """A decoded query pair with its secret masked: the value of a secret name, or everything after a
    secret assignment hidden inside the pair."""
    if _SECRET_PARAMS.match(key):
        return key, MASK
    hidden = _NESTED_SECRET.search(f"{key}={value}")
    if hidden is None:
        return key, value
    return f"{key}={value}"[: hidden.end() - 1], MASK


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
        query = urlencode([_masked_pair(k, v) for k, v in pairs], safe="*/:")
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))
