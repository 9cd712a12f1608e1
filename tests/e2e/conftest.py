"""Fixtures of the end-to-end suites: raw-socket servers and the installed ``modfetch download`` as a process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Run, download_runner
from tests.servers.lookalike.civitai import CivitaiLookalike
from tests.servers.lookalike.hub import HubLookalike
from tests.servers.raw import Handler, RawServer


@pytest.fixture
def raw_server() -> Iterator[Callable[[Handler], RawServer]]:
    """Factory: ``raw_server(handler)`` starts a RawServer on 127.0.0.1; all close at teardown."""
    started: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Run]:
    """Run the installed ``modfetch download`` with an isolated HOME and small timeouts."""
    return download_runner(tmp_path)


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    """The Hub + CDN look-alike with its demo repos, one per module (a module may define its own)."""
    with HubLookalike() as server:
        yield server


@pytest.fixture(scope="module")
def civitai() -> Iterator[CivitaiLookalike]:
    """The CivitAI + storage look-alike with its demo models, one per module."""
    with CivitaiLookalike() as server:
        yield server
