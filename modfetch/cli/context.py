"""Global options (accepted on the group and after any subcommand) and the per-invocation CLI state."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ..config import Config, load_config

F = TypeVar("F", bound=Callable[..., Any])
LOG_LEVELS = ["debug", "info", "warn", "error"]


@dataclass
class CliState:
    """What the global options said; the config is loaded lazily, once, with flags applied on top."""

    config_path: str | None = None
    log_level: str | None = None
    json_output: bool = False
    quiet: bool = False
    _config: Config | None = None
    _logging_ready: bool = False

    @property
    def config(self) -> Config:
        """The effective config (file < flags, see modfetch.config); logging is configured on first use."""
        if self._config is None:
            self._config = load_config(self.config_path)
            self.setup_logging()
        return self._config

    def setup_logging(self) -> None:
        """Configure logging once from config + flags (see modfetch.logs)."""
        if self._logging_ready:
            return
        self._logging_ready = True
        from ..logs import configure_logging

        cfg = self._config or Config()
        level = self.log_level or cfg.logging.level
        fmt = "json" if self.json_output else cfg.logging.format
        configure_logging(level=level, fmt=fmt, quiet=self.quiet)


def _store(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        state = ctx.ensure_object(CliState)
        if value not in (None, False):
            setattr(state, name, value)
        return value

    return callback


def global_options(func: F) -> F:
    """Attach --config/--log-level/--json/--quiet; usable on the group and on every subcommand."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), expose_value=False,
                     callback=_store("config_path"), is_eager=True,
                     help="Config file (default: $MODFETCH_CONFIG, else $XDG_CONFIG_HOME/modfetch/config.yml)."),
        click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), expose_value=False,
                     callback=_store("log_level"), help="Log verbosity (default from config: info)."),
        # Eager, so a bad value of another option is already reported as JSON.
        click.option("--json", "json_output", is_flag=True, default=False, expose_value=False, is_eager=True,
                     callback=_store("json_output"),
                     help="JSON-lines logs and errors on stderr; JSON results on stdout (download, place, type, "
                          "status)."),
        click.option("--quiet", "-q", is_flag=True, default=False, expose_value=False, callback=_store("quiet"),
                     help="No progress bars (errors are still printed)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def pass_state(func: F) -> F:
    """Pass the CliState as the first argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(click.get_current_context().ensure_object(CliState), *args, **kwargs)

    return wrapper  # type: ignore[return-value]
