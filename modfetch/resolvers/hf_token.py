"""The Hugging Face token, looked up as ``huggingface_hub`` does (``utils/_auth.py``).

Order: the variable the config names (``sources.huggingface.token_env``, default ``HF_TOKEN``), ``HF_TOKEN``,
the legacy ``HUGGING_FACE_HUB_TOKEN``, then the token file ``hf auth login`` writes (``$HF_TOKEN_PATH``, else
``$HF_HOME/token``).  Like ``_clean_token``: surrounding white space and line ends are stripped, and an empty
result means "no token here" (a line break inside a token is refused, see ``clean_token``).  Like
``_get_token_from_environment``, the first *set* variable wins even if it holds only white space (then no
variable gives a token and the file is read).

The file is the client's own credential store, not modfetch configuration: its token is bound to the Hub host
and registered for redaction exactly like a variable's (``util.redact.register_secret``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..util.hf_env import hf_token_path
from ..util.redact import register_secret, register_token_env

ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MAX_TOKEN_FILE = 64 * 1024  # a token is ~40 bytes; a bigger "token file" is a mistake (or /dev/zero)


@dataclass(frozen=True)
class HfToken:
    """A token and where it came from (``origin``: a variable name or ``file PATH``; shown, never the value)."""

    value: str | None
    origin: str | None


def clean_token(raw: str | None) -> str | None:
    """As ``huggingface_hub``'s ``_clean_token``: surrounding white space and line ends stripped, None when
    empty.  One deliberate difference: a line break *inside* the value is kept, so the client refuses the token
    with a clear error (huggingface_hub would silently join two lines into one wrong token)."""
    if raw is None:
        return None
    return raw.strip() or None


def _unreadable(path: Path, exc: OSError) -> UsageError:
    return UsageError(f"cannot read the Hugging Face token file {path}: {exc.strerror or exc}",
                      hint="fix its permissions, or set HF_TOKEN (or HF_TOKEN_PATH to another file)")


def read_token_file(path: Path) -> str | None:
    """The token stored in ``path`` (None when the file does not exist); UsageError when it cannot be read."""
    try:
        # O_NONBLOCK: a FIFO (HF_TOKEN_PATH=/dev/stdin under cron) must not hang the run; only a file is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if stat.S_ISDIR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):  # /dev/null is fine: no token
                raise UsageError(f"the Hugging Face token file {path} is not a regular file",
                                 hint="point HF_TOKEN_PATH at the file 'hf auth login' wrote, or set HF_TOKEN")
            data = fh.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if len(data) > MAX_TOKEN_FILE:
        raise UsageError(f"the Hugging Face token file {path} is not a token (larger than "
                         f"{MAX_TOKEN_FILE >> 10} KiB)", hint="run 'hf auth login' again, or set HF_TOKEN")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"the Hugging Face token file {path} is not UTF-8 text",
                         hint="run 'hf auth login' again, or set HF_TOKEN") from None
    token = clean_token(text)
    if token:
        register_secret(token)
    return token


def lookup(config_var: str | None = None, env: Mapping[str, str] | None = None,
           read_file: bool = True) -> HfToken:
    """The token for the Hub and its origin; ``HfToken(None, None)`` when there is none."""
    env = env if env is not None else os.environ
    register_token_env(n for n in (config_var, *ENV_VARS) if n)
    if config_var and config_var not in ENV_VARS:
        token = clean_token(env.get(config_var))
        if token:
            register_secret(token)
            return HfToken(token, config_var)
    # huggingface_hub: ``os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")``, then clean.
    raw_var = next((n for n in ENV_VARS if env.get(n)), None)
    if raw_var is not None:
        token = clean_token(env.get(raw_var))
        if token:
            register_secret(token)
            return HfToken(token, raw_var)
    if not read_file:
        return HfToken(None, None)
    path = hf_token_path(env)
    token = read_token_file(path)
    return HfToken(token, f"the token file {path}") if token else HfToken(None, None)
