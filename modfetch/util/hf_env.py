"""Where the Hugging Face ecosystem keeps its files, read from the same variables as ``huggingface_hub``
(``constants.py``): ``HF_HOME``, ``HF_HUB_CACHE`` (legacy ``HUGGINGFACE_HUB_CACHE``) and ``HF_TOKEN_PATH``.

An empty variable counts as unset here (``huggingface_hub`` would turn an empty ``HF_HOME`` into paths relative
to the current directory, and read a token file from wherever the command happens to run).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def hf_home(env: Mapping[str, str] | None = None) -> Path:
    """``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    env = env if env is not None else os.environ
    if env.get("HF_HOME"):
        return _expand(env["HF_HOME"])
    xdg = env.get("XDG_CACHE_HOME")
    return (_expand(xdg) if xdg else _home(env) / ".cache") / "huggingface"


def hf_hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """``$HF_HUB_CACHE``, else the legacy ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``."""
    env = env if env is not None else os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return _expand(env[name])
    return hf_home(env) / "hub"


def hf_token_path(env: Mapping[str, str] | None = None) -> Path:
    """The token file ``hf auth login`` writes: ``$HF_TOKEN_PATH``, else ``$HF_HOME/token``."""
    env = env if env is not None else os.environ
    if env.get("HF_TOKEN_PATH"):
        return _expand(env["HF_TOKEN_PATH"])
    return hf_home(env) / "token"
