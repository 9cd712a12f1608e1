"""Every command and option of the ``modfetch`` group has help text and is documented (README.md or docs/*.md):
commands as ``modfetch NAME`` (global options may stand between), options by their long flag."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest

from modfetch.cli import COMMAND_MODULES, cli
from tests.conftest import ROOT

DOCS = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
_CTX = click.Context(cli, info_name="modfetch")


def _commands() -> Iterator[tuple[str, click.Command]]:
    """(``modfetch NAME ...``, command) for the group and every subcommand, loading the lazy ones."""
    def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        yield path, command
        if isinstance(command, click.Group):
            for name in command.list_commands(_CTX):
                sub = command.get_command(_CTX, name)
                assert sub is not None, f"{path} {name} is listed but does not load"
                yield from walk(sub, f"{path} {name}")

    yield from walk(cli, "modfetch")


COMMANDS = dict(_commands())
OPTIONS = [(path, option) for path, command in COMMANDS.items() for option in command.params
           if isinstance(option, click.Option) and not option.hidden]


def _documented_flag(flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", DOCS) is not None


def test_the_walk_sees_every_command_and_option() -> None:
    """Guards the tests below against passing vacuously (a lazy command that failed to load, say)."""
    assert {path.split(" ", 1)[1] for path in COMMANDS if " " in path} == set(COMMAND_MODULES)
    assert len(OPTIONS) >= 20


@pytest.mark.parametrize("path", list(COMMANDS))
def test_command_has_help_and_is_documented(path: str) -> None:
    command = COMMANDS[path]
    assert (command.help or "").strip(), f"{path} has no help text"
    if path == "modfetch":
        return
    name = path.rsplit(" ", 1)[1]
    # ``modfetch download``, or with global options first: ``modfetch --json --config x.yml status``
    usage = re.compile(rf"modfetch(?: -[-\w]+(?: [^\s`-][^\s`]*)?)* {re.escape(name)}\b")
    assert usage.search(DOCS), f"`{path}` appears nowhere in README.md or docs/*.md"


@pytest.mark.parametrize(("path", "option"), OPTIONS, ids=[f"{p}:{o.name}" for p, o in OPTIONS])
def test_option_has_help_and_is_documented(path: str, option: click.Option) -> None:
    flags = [flag for flag in [*option.opts, *option.secondary_opts] if flag.startswith("--")]
    assert flags, f"{path} {option.opts}: give the option a long flag"
    assert (option.help or "").strip(), f"{path} {flags[0]} has no help text"
    assert any(_documented_flag(flag) for flag in flags), f"{path} {flags[0]} is in no doc (README.md, docs/*.md)"
