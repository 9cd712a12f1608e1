"""The ``modfetch`` command group: global options, subcommand registration and the one error-to-exit mapping.

Subcommands live in sibling modules (``download``, ``status``, ``verify``, ...) and stay thin: they parse
options, call an ``modfetch.app`` service and render the result.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from .. import __version__
from ..errors import ModfetchError, exit_code
from ..util.redact import redact
from .context import CliState, global_options, pass_state

log = logging.getLogger("modfetch")


class ModfetchGroup(click.Group):
    """A group that turns every ModfetchError into one clear line (plus hint) and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModfetchError as error:
            _report(ctx, error)
            ctx.exit(exit_code(error))
        except KeyboardInterrupt:
            click.echo("modfetch: interrupted; state saved, rerun the same command to resume", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
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
def cli(ctx: click.Context, **_: Any) -> None:
    """Fast, verified, resumable downloads of ML model files.

    Fetches plain http(s) URLs, hf://owner/repo/file and civitai://model/ID, checks every byte against
    SHA-256, and places files where ComfyUI, A1111/Forge, LM Studio, Ollama and the Hugging Face cache look.
    """
    ctx.ensure_object(CliState)


def _register() -> None:
    from . import download, status, verify

    for module in (download, status, verify):
        cli.add_command(module.command)
    for optional in ("place", "tui", "types"):
        try:
            module = __import__(f"{__name__}.{optional}", fromlist=["command"])
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{optional}":
                raise
            continue
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        from ..util.proctitle import sanitize_process_title

        sanitize_process_title()
    except ImportError:
        pass
    cli.main(args=argv, prog_name="modfetch")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

__all__ = ["cli", "main", "pass_state"]
