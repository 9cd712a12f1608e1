"""The adaptive connection count against real servers on 127.0.0.1 (issue 17): it grows against a server that
throttles each connection, stays at the start where the aggregate rate cannot grow, never moves when
``--concurrency`` pins it, and sheds back when extra connections get 503/429.  The windows are shortened
through ``Downloader(adaptive=...)``; the logic is the default one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from modfetch.config import ConcurrencyConfig, Config, GeneralConfig, NetworkConfig, parse_config
from modfetch.engine.adaptive import AdaptiveSettings
from modfetch.engine.download import Downloader, DownloadRequest
from modfetch.errors import ConfigError
from modfetch.state import open_state
from tests.conftest import MiB, Modfetch
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]
START = 2
FAST = AdaptiveSettings(cap=8, settle=0.1, window=0.4, tick=0.05, min_bytes=8 * MiB)
PER_CONNECTION = 8 * MiB  # bytes/s each connection gets from the throttled server


def config_for(tmp_path: Path) -> Config:
    return Config(general=GeneralConfig(download_root=str(tmp_path / "dl"), data_root=str(tmp_path / "data")),
                  network=NetworkConfig(timeout_seconds=5),
                  concurrency=ConcurrencyConfig(per_file_chunks=START, chunk_size_mb=4, max_retries=8,
                                                backoff_min_ms=10, backoff_max_ms=100))


def download(tmp_path: Path, server: FaultyServer, config: Config | None = None,
             **options: object) -> int | None:
    """Download ``server``'s file; check its bytes; the connection count recorded in its row."""
    config = config or config_for(tmp_path)
    result = Downloader(config, **options).run(  # type: ignore[arg-type]
        DownloadRequest(url=server.url, dest_dir=tmp_path / "dl"))
    assert result.sha256 == server.sha256()
    assert result.path.read_bytes() == server.content()
    with open_state(config.state_db) as db:
        row = db.get_download(result.download_id)
    assert row is not None
    return row.connections


def test_a_per_connection_throttle_grows_the_count(tmp_path: Path, faulty_server: Serve) -> None:
    server = faulty_server(size=48 * MiB, rate=PER_CONNECTION)
    chosen = download(tmp_path, server, adaptive=FAST)
    assert chosen is not None and START < chosen <= FAST.cap
    assert START < server.peak_active <= FAST.cap


def test_a_rate_that_cannot_grow_keeps_the_starting_count(tmp_path: Path, faulty_server: Serve) -> None:
    # A server whose responses share one 32 MiB/s link (no limit per connection): the step is tried, brings
    # nothing, and the transfer goes back to the starting count.
    server = faulty_server(size=64 * MiB, total_rate=32 * MiB)
    chosen = download(tmp_path, server, adaptive=dataclasses.replace(FAST, retry=None))  # judged once
    assert chosen == START
    assert server.peak_active > START  # it did try more


def test_a_pinned_concurrency_never_changes(tmp_path: Path, faulty_server: Serve) -> None:
    server = faulty_server(size=32 * MiB, rate=PER_CONNECTION)
    chosen = download(tmp_path, server, concurrency=3, adaptive=FAST)
    assert chosen == 3
    assert server.peak_active == 3


@pytest.mark.parametrize("status", [503, 429])
def test_refused_extra_connections_shed_back(tmp_path: Path, faulty_server: Serve, status: int) -> None:
    # The server answers `status` to any request past START in flight: the step to 2 x START brings retries.
    server = faulty_server(size=32 * MiB, rate=PER_CONNECTION, max_active=START, error_status=status,
                           error_times=0)
    chosen = download(tmp_path, server, adaptive=FAST)
    assert chosen == START
    data = server.data_requests()
    refused = [r for r in data if r.status == status]
    assert refused  # more connections were tried...
    assert len(refused) <= 2 * FAST.cap  # ...and given up quickly,
    assert all(r.status == 206 for r in data[-3:])  # after which the transfer went on without refusals


@pytest.mark.parametrize(("args", "expected"), [([], 4), (["--concurrency", "3"], 3)])
def test_status_json_shows_the_count(mf: Modfetch, faulty_server: Serve, args: list[str], expected: int) -> None:
    # A small file never adapts: the row holds the configured count (per_file_chunks 4) or the pinned one.
    server = faulty_server(size=4 * MiB)
    assert mf.download(server.url, *args).exit_code == 0
    assert mf.status()[0]["connections"] == expected


@pytest.mark.parametrize(("value", "error"), [(16, None), (0, "between 1 and 64"), (65, "between 1 and 64"),
                                              ("many", "concurrency.max_connections_per_file")])
def test_the_cap_is_a_validated_config_key(value: object, error: str | None) -> None:
    text = f"version: 1\nconcurrency:\n  max_connections_per_file: {value}\n"
    if error is None:
        assert parse_config(text, "c.yml").concurrency.max_connections_per_file == value
        return
    with pytest.raises(ConfigError, match=error):
        parse_config(text, "c.yml")
    with pytest.raises(ConfigError, match="unknown key"):  # a misspelt key is still refused
        parse_config(text.replace("max_connections_per_file", "max_connection_per_file"), "c.yml")
