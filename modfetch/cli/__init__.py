"""The ``modfetch`` command group: global options, subcommand registration and the one error-to-exit mapping.

Subcommands live in sibling modules (``download``, ``status``, ``verify``, ...) and stay thin: they parse
options, call an ``modfetch.app`` service and render the result.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

import click

from .. import __version__
from ..errors import ModfetchError, exit_code
from ..util.redact import redact
from .context import CliState, global_options, pass_state

log = logging.getLogger("modfetch")


# Subcommands are imported only when used, so `modfetch --version` and `status` stay fast (no requests import).
COMMAND_MODULES = {
    "download": "download", "status": "status", "verify": "verify", "place": "place", "type": "types",
    "tui": "tui",
}


class ModfetchGroup(click.Group):
    """A lazily-loading group that turns every ModfetchError into one clear line (plus hint) and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMAND_MODULES if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def _load(self, name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module_name}":
                return None  # optional command not built into this install
            raise
        command: click.Command = module.command
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModfetchError as error:
            _report(ctx, error)
            ctx.exit(exit_code(error))
        except KeyboardInterrupt:
            from ..engine.download import request_stop

            request_stop()
            click.echo("modfetch: interrupted; state saved, rerun the same command to resume", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # `modfetch status | head`: the reader left; exit quietly like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except OSError as error:
            _report(ctx, ModfetchError(f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")))
            ctx.exit(1)
        except Exception as error:  # last line of defence: a bug, still no traceback unless debugging
            _report(ctx, ModfetchError(f"internal error: {type(error).__name__}: {error}",
                                       hint="rerun with --log-level debug for the traceback and report it"))
            ctx.exit(1)


def _report(ctx: click.Context, error: ModfetchError) -> None:
    state = ctx.find_object(CliState)
    debug = state is not None and state.log_level == "debug"
    if debug:
        log.debug("traceback", exc_info=error)
    if state is not None and state.json_output:
        import json

        payload = {"level": "error", "msg": redact(error.message), "hint": redact(error.hint or "") or None,
                   "exit_code": exit_code(error)}
        click.echo(json.dumps(payload), err=True)
        return
    click.echo(f"modfetch: error: {redact(error.message)}", err=True)
    if error.hint:
        click.echo(f"  hint: {redact(error.hint)}", err=True)


@click.group(cls=ModfetchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="modfetch", message="%(prog)s %(version)s")
@global_options
@click.pass_context
def cli(ctx: click.Context, /, **_: Any) -> None:
    """Fast, verified, resumable downloads of ML model files.

    Fetches plain http(s) URLs, hf://owner/repo/file and civitai://model/ID, checks every byte against
    SHA-256, and places files where ComfyUI, A1111/Forge, LM Studio, Ollama and the Hugging Face cache look.
    """
    ctx.ensure_object(CliState)


_STOPPING = threading.Event()


def _terminate(signum: int, _frame: object) -> None:
    """SIGINT/SIGTERM: downloads checkpoint their state and the process exits cleanly (130).

    While a download's coordinator polls for stop requests in this (main) thread, the signal only asks it to
    stop: a KeyboardInterrupt raised inside the thread pool's bookkeeping can leave locks held and hang.  Once
    stopping, further signals are ignored so they cannot cut the state saving short (SIGKILL still works)."""
    if _STOPPING.is_set():
        return
    _STOPPING.set()
    engine = sys.modules.get("modfetch.engine.download")
    if engine is not None and engine.POLLING.is_set():
        engine.request_stop()
        return
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    cli.main(args=argv, prog_name="modfetch")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

__all__ = ["cli", "main", "pass_state"]
