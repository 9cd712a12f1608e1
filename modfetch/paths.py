"""XDG locations and path expansion (``~`` and ``$VARS``) used by config and state."""

from __future__ import annotations

import os
from pathlib import Path


def expand_path(value: str | os.PathLike[str]) -> Path:
    """Expand ``~`` and ``$VARS`` in a path string and return an absolute Path."""
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(value)))).absolute()


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
