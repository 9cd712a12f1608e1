"""The ``modfetch`` command group: global options, subcommand registration and the one error-to-exit mapping.

Subcommands live in sibling modules (``download``, ``status``, ``verify``, ...) and stay thin: they parse
options, call an ``modfetch.app`` service and render the result.
"""

from __future__ import annotations

import atexit
import errno
import importlib
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__, cancel
from ..errors import ModfetchError, UsageError, exit_code
from ..logs import json_line, terminal_text, utf8_text
from ..state import db_failure
from ..util.redact import redact
from .context import CliState, global_options, pass_state

log = logging.getLogger("modfetch")
# Click >= 8.2 raises this for a bare group invocation (it prints the help); older Clicks print help themselves.
_NO_ARGS_IS_HELP: type[click.ClickException] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_NeverRaised", (click.ClickException,), {}))


# Subcommands are imported only when used, so `modfetch --version` and `status` stay fast (no requests import).
COMMAND_MODULES = {
    "download": "download", "status": "status", "verify": "verify", "place": "place", "type": "types",
    "tui": "tui", "list": "list", "rm": "rm", "prune": "prune",
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

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Click's own errors (bad option values, unknown commands) and a failing stdout end like every other
        error: one ``modfetch: error:`` line (JSON with --json) and exit 2 / 1, never Click's usage block or a
        traceback."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:  # Ctrl-C while Click itself was parsing or prompting
            click.echo("modfetch: interrupted", err=True)
            sys.exit(130)
        except _NO_ARGS_IS_HELP as error:  # bare `modfetch`: the help text is the answer, not an error line
            error.show()
            sys.exit(error.exit_code)
        except click.ClickException as error:
            ctx = getattr(error, "ctx", None)
            hint = f"see '{ctx.command_path} --help'" if ctx is not None else "see 'modfetch --help'"
            _report(ctx, UsageError(error.format_message(), hint=hint))
            sys.exit(error.exit_code)
        except OSError as error:  # stdout failed while Click wrote (--version > /dev/full)
            _report(None, _os_error(error))
            _silence_stdout()
            sys.exit(141 if error.errno == errno.EPIPE else 1)
        _flush_stdout()
        sys.exit(code if isinstance(code, int) else 0)  # non-standalone Click returns ctx.exit()'s code

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModfetchError as error:
            _report(ctx, error)
            ctx.exit(exit_code(error))
        except KeyboardInterrupt:
            cancel.request_stop()  # every download still running (in pool threads) checkpoints and stops
            message = "interrupted; state saved, rerun the same command to resume"
            state = ctx.find_object(CliState)
            if state is not None and state.json_output:  # --json: every stderr line is a JSON object
                click.echo(json_line(logging.ERROR, message, log.name, hint=None, exit_code=130), err=True)
            else:
                click.echo(f"modfetch: {message}", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # `modfetch status | head`: the reader left; exit quietly like other Unix tools.
            _silence_stdout()
            ctx.exit(141)
        except OSError as error:
            _report(ctx, _os_error(error))
            _flush_stdout(report=False)  # keep results already printed; stdout may be what failed (> /dev/full)
            ctx.exit(1)
        except sqlite3.DatabaseError as error:  # opened fine, then a query met missing tables or bad pages
            state = ctx.find_object(CliState)
            where = str(state._config.state_db) if state is not None and state._config is not None else "state.db"
            _report(ctx, db_failure(error, where))  # damaged, or only a full disk / a permission problem
            ctx.exit(1)
        except Exception as error:  # last line of defence: a bug, still no traceback unless debugging
            _report(ctx, ModfetchError(f"internal error: {type(error).__name__}: {error}",
                                       hint="rerun with --log-level debug for the traceback and report it"))
            ctx.exit(1)


def _os_error(error: OSError) -> ModfetchError:
    return ModfetchError(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of a broken stdout stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _flush_stdout(report: bool = True) -> None:
    """Flush now, so a full or closed stdout is reported as an error instead of ignored at exit."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        if report:
            sys.exit(141)
    except OSError as error:
        _silence_stdout()
        if report:
            _report(None, _os_error(error))
            sys.exit(1)


def report_error(error: ModfetchError) -> None:
    """Print one error the way the final one is printed (a failed URI among several that keep going)."""
    _report(click.get_current_context(silent=True), error)


def write_metrics(state: CliState) -> None:
    """Rewrite the metrics textfile after a command (download, verify), whatever its outcome; never raises."""
    try:
        config = state.config
    except ModfetchError:
        return  # no usable config: nothing says where the textfile is
    from ..metrics import write_after_run

    write_after_run(config)


def _report(ctx: click.Context | None, error: ModfetchError) -> None:
    state = ctx.find_object(CliState) if ctx is not None else None
    debug = state is not None and state.log_level == "debug"
    if debug:
        log.debug("traceback", exc_info=error)
    if state is not None and state.json_output:
        click.echo(json_line(logging.ERROR, utf8_text(redact(error.message)), log.name,
                             hint=utf8_text(redact(error.hint or "")) or None, exit_code=exit_code(error)),
                   err=True)
        return
    click.echo(f"modfetch: error: {terminal_text(redact(error.message))}", err=True)
    if error.hint:
        # A hint may be several lines on purpose (a config snippet to paste); each line is made terminal-safe.
        hint = "\n".join(terminal_text(line) for line in redact(error.hint).split("\n"))
        click.echo(f"  hint: {hint}", err=True)


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
    """SIGINT/SIGTERM/SIGHUP: downloads checkpoint their state and the process exits cleanly (130).

    While a download's coordinator polls for stop requests in this (main) thread, the signal only asks it to
    stop: a KeyboardInterrupt raised inside the thread pool's bookkeeping can leave locks held and hang.  Once
    stopping, further signals are ignored so they cannot cut the state saving short (SIGKILL still works)."""
    if _STOPPING.is_set():
        return
    _STOPPING.set()
    if not cancel.signalled():  # a waiter polls STOP (cancel.POLLING): it raises Interrupted itself
        raise cancel.Interrupted()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    stopping = [signal.SIGTERM, signal.SIGINT]
    # A closed terminal (SIGHUP) saves state like Ctrl-C; under `nohup` (SIGHUP ignored) it stays ignored.
    if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        stopping.append(signal.SIGHUP)
    for signum in stopping:
        signal.signal(signum, _terminate)
    code: object = 0
    try:
        cli.main(args=argv, prog_name="modfetch")
    except SystemExit as done:
        code = done.code
    finally:
        if _STOPPING.is_set():
            # Python restores the default handlers while it shuts down, so a late signal of a burst would kill
            # the process that just saved its state (exit -2 instead of 130); ignored handlers stay ignored.
            for signum in stopping:
                signal.signal(signum, signal.SIG_IGN)
    _exit_now(code)


def _exit_now(code: object) -> None:
    """End the process without the interpreter's module-by-module teardown (about 30 ms once requests is
    loaded, a tenth of a small download's fixed cost).  Everything that matters at exit still happens: the
    ``atexit`` handlers run (logging's flush, coverage data), then stdout/stderr are flushed.  Falls back to a
    normal exit while another non-daemon thread runs (Python would wait for it) or when a flush fails."""
    if not (code is None or isinstance(code, int)) or any(
            t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        raise SystemExit(code)
    atexit._run_exitfuncs()  # (each handler runs once: the list is cleared)
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

__all__ = ["cli", "main", "pass_state", "report_error", "write_metrics"]
