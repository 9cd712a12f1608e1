"""XDG locations and path expansion (``~`` and ``$VARS``) used by config and state."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .logs import utf8_text


def require_utf8(text: str, what: str) -> str:
    """``text`` unchanged if it is valid UTF-8 text; UsageError otherwise.

    Bytes that are not UTF-8 reach us from argv as lone surrogates; the state DB, logs and JSON output keep
    paths as text, so such a name would fail deep inside a download instead of here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} '{utf8_text(text)}' is not valid UTF-8",
                         hint="modfetch keeps names and paths as UTF-8 text; rename it or pick another name") from None
    return text


def expand_path(value: str | os.PathLike[str]) -> Path:
    """Expand ``~`` and ``$VARS`` in a path string and return an absolute Path (UsageError if not UTF-8)."""
    path = Path(os.path.expandvars(os.path.expanduser(require_utf8(os.fspath(value), "path"))))
    try:
        return path.absolute()
    except FileNotFoundError:  # os.getcwd() of a directory deleted after we were started in it
        raise UsageError(f"cannot resolve the relative path {os.fspath(value)!r}: the current directory no "
                         "longer exists", hint="cd to an existing directory or give an absolute path") from None


def xdg_config_home() -> Path:
    """``$XDG_CONFIG_HOME`` or ``~/.config``."""
    return expand_path(os.environ.get("XDG_CONFIG_HOME") or "~/.config")


def xdg_data_home() -> Path:
    """``$XDG_DATA_HOME`` or ``~/.local/share``."""
    return expand_path(os.environ.get("XDG_DATA_HOME") or "~/.local/share")


def default_config_file() -> Path:
    """Where the config file lives when neither ``--config`` nor ``$MODFETCH_CONFIG`` names one."""
    return xdg_config_home() / "modfetch" / "config.yml"


def default_data_root() -> Path:
    """Where the state database and metrics live by default."""
    return xdg_data_home() / "modfetch"
