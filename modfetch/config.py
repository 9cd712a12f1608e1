"""Configuration: YAML (``yaml.safe_load``) into frozen dataclasses, validated with errors naming file and key.

Precedence: embedded defaults < config file < command-line flags.  There is no general environment layer
over the file: ``MODFETCH_CONFIG`` (and ``XDG_CONFIG_HOME`` / ``XDG_DATA_HOME``, ``paths``) only say where
the file and the data live.  The few variables that override a setting are read where that setting is used,
each as the tool that owns the variable reads it: ``HF_ENDPOINT`` (``resolvers.huggingface``), ``HF_HOME`` /
``HF_HUB_CACHE`` / ``HF_TOKEN_PATH`` (``util.hf_env``), the token variables (``resolvers.hf_token``,
``resolvers.api.token_from_env``), ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` and the ``*_PROXY`` variables
(``engine.session``, requests).  Adding a section is one dataclass plus one field on ``Config``: the generic
``_build`` walks type hints, so validation, unknown-key errors and path expansion come for free.  Secrets are
never accepted from the file: they come from the environment variables the ``sources`` section names.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import __version__
from .errors import ConfigError
from .paths import default_config_file, default_data_root, expand_path

# Keys whose values would be secrets: refused anywhere in the file (``token_env`` names a variable: fine).
_SECRET_KEY = re.compile(r"(^|_)(token|password|passwd|secret|api_?key|apikey|auth|credentials?)$", re.I)
_PATH = {"path": True}
# Characters an HTTP header value cannot carry (http.client sends latin-1 and refuses CR/LF/NUL).
_HEADER_UNSAFE = re.compile(r"[^\t\x20-\x7e\xa0-\xff]")


def _path_field(default: str) -> Any:
    return field(default=default, metadata=_PATH)


def _bounded(default: float, low: float, high: float) -> Any:
    """A number field with an inclusive range: absurd values (a billion connections, an infinite timeout)
    would otherwise hang or crash deep inside the engine instead of failing here, naming the key."""
    return field(default=default, metadata={"range": (low, high)})


@dataclass(frozen=True)
class GeneralConfig:
    """Where files go and whether existing different files may be replaced."""

    download_root: str = _path_field("~/Downloads/modfetch")
    data_root: str = _path_field("")  # empty: $XDG_DATA_HOME/modfetch, resolved when used (not at import)
    allow_overwrite: bool = False
    metadata: bool = False  # --metadata by default: CivitAI sidecars (<stem>.civitai.info, <stem>.preview.png)
    # Space that must stay free after a download is allocated; unset (-1): 1% of the file system, at most 1 GiB.
    min_free_mb: int = _bounded(-1, 0, 1 << 24)


@dataclass(frozen=True)
class NetworkConfig:
    """HTTP behaviour: read timeout (also the stall limit) and the User-Agent."""

    timeout_seconds: float = _bounded(30.0, 0.001, 86400.0)
    user_agent: str = field(default=f"modfetch/{__version__}", metadata={"header": True})
    # One limit for the whole process, shared by every connection of every file (0: unlimited).
    max_bytes_per_second: int = _bounded(0, 0, 1 << 40)


@dataclass(frozen=True)
class ConcurrencyConfig:
    """Parallelism and retry policy for chunked downloads."""

    per_file_chunks: int = _bounded(8, 1, 64)  # the same range as --concurrency
    # The adaptive count's ceiling: connections are added while each step raises the rate (engine/adaptive.py).
    max_connections_per_file: int = _bounded(32, 1, 64)
    chunk_size_mb: int = 16
    max_retries: int = 8
    backoff_min_ms: int = _bounded(250, 0, 3_600_000)  # at most an hour between retries
    backoff_max_ms: int = _bounded(30000, 0, 3_600_000)
    batch_parallel_files: int = 2
    repo_parallel_files: int = _bounded(16, 1, 64)  # files of one multi-file URI (a repo) downloaded at once


@dataclass(frozen=True)
class LoggingConfig:
    """Log level and format (human text or JSON lines)."""

    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    format: Literal["human", "json"] = "human"


@dataclass(frozen=True)
class SourceConfig:
    """One remote source: whether it is enabled, its API endpoint and the env var holding its token."""

    enabled: bool = True
    endpoint: str = ""
    token_env: str = ""


@dataclass(frozen=True)
class SourcesConfig:
    """Hugging Face and CivitAI endpoints and token variables."""

    huggingface: SourceConfig = SourceConfig(endpoint="https://huggingface.co", token_env="HF_TOKEN")
    civitai: SourceConfig = SourceConfig(endpoint="https://civitai.com", token_env="CIVITAI_TOKEN")


@dataclass(frozen=True)
class AppConfig:
    """One app that receives placed files: a preset name and its base folder (preset default when empty)."""

    preset: str = ""
    base: str = _path_field("")


@dataclass(frozen=True)
class MappingRule:
    """Override or extend the folders a type is placed into: ``targets`` are ``app:folder`` strings."""

    type: str = ""
    targets: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlacementConfig:
    """How and where downloaded files are linked into apps' model folders."""

    mode: Literal["symlink", "hardlink", "copy"] = "symlink"
    apps: dict[str, AppConfig] = field(default_factory=dict)
    mapping: list[MappingRule] = field(default_factory=list)


@dataclass(frozen=True)
class TextfileConfig:
    """Prometheus node_exporter textfile output."""

    enabled: bool = True
    path: str = _path_field("")


@dataclass(frozen=True)
class MetricsConfig:
    """Metrics outputs."""

    prometheus_textfile: TextfileConfig = TextfileConfig()


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; ``source`` names the file it came from (or ``<defaults>``)."""

    version: int = 1
    general: GeneralConfig = GeneralConfig()
    network: NetworkConfig = NetworkConfig()
    concurrency: ConcurrencyConfig = ConcurrencyConfig()
    logging: LoggingConfig = LoggingConfig()
    sources: SourcesConfig = SourcesConfig()
    placement: PlacementConfig = PlacementConfig()
    metrics: MetricsConfig = MetricsConfig()
    source: str = field(default="<defaults>", metadata={"internal": True})

    @property
    def download_root(self) -> Path:
        """The expanded default destination directory."""
        return expand_path(self.general.download_root)

    @property
    def data_root(self) -> Path:
        """The expanded directory holding state.db (default: ``$XDG_DATA_HOME/modfetch``)."""
        return expand_path(self.general.data_root) if self.general.data_root else default_data_root()

    @property
    def state_db(self) -> Path:
        """Path of the SQLite state database."""
        return self.data_root / "state.db"

    @property
    def metrics_path(self) -> Path:
        """Path of the Prometheus textfile (default under data_root/metrics)."""
        configured = self.metrics.prometheus_textfile.path
        return expand_path(configured) if configured else self.data_root / "metrics" / "modfetch.prom"

    def replace(self, **changes: Any) -> Config:
        """A copy with top-level fields replaced."""
        return dataclasses.replace(self, **changes)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (list,):
        return "a list"
    if origin in (dict,):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _shown(value: Any) -> str:
    """``value`` for an error message, never a container's repr (an alias bomb would expand in repr)."""
    from .util.yamltext import describe_value  # imported here: YAML is imported lazily, see parse_config

    return describe_value(value)


def _convert(tp: Any, value: Any, where: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: must be one of {_describe(tp)}, got {_shown(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list, got {type(value).__name__}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(item_tp, item, f"{where}[{i}]", {}) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping, got {type(value).__name__}")
        _key_tp, val_tp = typing.get_args(tp)
        return {str(k): _convert(val_tp, v, f"{where}.{k}", {}) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise TypeError("unions are not supported in config fields")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {_shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be a whole number, got {_shown(value)}")
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value}")
        return _in_range(value, where, meta)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number, got {_shown(value)}")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}: must be a positive finite number, got {value}")
        return float(_in_range(value, where, meta))
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: must be a string, got {_shown(value)}")
        text = str(value)
        if "\x00" in text:  # no path, variable name or header can hold NUL (the OS raises ValueError)
            raise ConfigError(f"{where}: must not contain a NUL character")
        if meta.get("header") and _HEADER_UNSAFE.search(text):
            raise ConfigError(f"{where}: must be printable Latin-1 text on one line (it is sent as an HTTP "
                              f"header), got {text!r}")
        return str(expand_path(text)) if meta.get("path") and text else text
    raise TypeError(f"unsupported config field type {tp!r}")


def _in_range(value: float, where: str, meta: Mapping[str, Any]) -> float:
    bounds = meta.get("range")
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where}: must be between {bounds[0]} and {bounds[1]}, got {value}")
    return value


def _build(cls: type[Any], data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a YAML mapping, rejecting unknown and secret-looking keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    defaults = cls()
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        label = key if isinstance(key, str) and key.isprintable() else repr(key)  # keep errors on one line
        key_where = f"{where}.{label}" if where else str(label)
        if isinstance(key, str) and _SECRET_KEY.search(key):
            raise ConfigError(
                f"{key_where}: secrets are not accepted in the config file",
                hint="put tokens in environment variables (HF_TOKEN, CIVITAI_TOKEN); "
                "the config may only name the variable (token_env)",
            )
        if key not in known:
            raise ConfigError(
                f"{key_where}: unknown key", hint=f"known keys here: {', '.join(sorted(known))}"
            )
        f = known[key]
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # Merge a partial nested mapping over the default instance so unspecified keys keep defaults.
            base = getattr(defaults, key)
            merged = {
                fld.name: getattr(base, fld.name)
                for fld in dataclasses.fields(base)
                if fld.name not in value
            }
            built = _build(hints[key], value, key_where)
            kwargs[key] = dataclasses.replace(built, **merged) if merged else built
            continue
        kwargs[key] = _convert(hints[key], value, key_where, f.metadata)
    return cls(**kwargs)


def parse_config(text: str, source: str) -> Config:
    """Parse and validate config YAML text; errors name ``source`` and the offending key."""
    import yaml  # only when a config file exists: keeps start-up of config-less runs lean

    from .util.yamltext import load_yaml

    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    try:
        config: Config = _build(Config, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from None
    if config.version != 1:
        raise ConfigError(f"{source}: version: unsupported config version {config.version} (expected 1)")
    return dataclasses.replace(config, source=source)


def config_path_from(explicit: str | None) -> tuple[Path | None, bool]:
    """Which config file to read: (path, must_exist).  ``--config`` > ``$MODFETCH_CONFIG`` > XDG file."""
    if explicit:
        return expand_path(explicit), True
    env = os.environ.get("MODFETCH_CONFIG")
    if env:
        return expand_path(env), True
    return default_config_file(), False


def load_config(explicit: str | None = None) -> Config:
    """Load the effective configuration; with no file at all, embedded defaults are used."""
    path, must_exist = config_path_from(explicit)
    if path is None or not path.exists():
        if must_exist:
            raise ConfigError(f"config file not found: {path}")
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_config(text, str(path))
