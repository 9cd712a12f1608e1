"""The Hub/CivitAI API client retries with the engine's policy (config.concurrency), honours Retry-After and stops
on a stop request; it maps transport failures the way the engine does."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from modfetch import cancel
from modfetch.config import load_config
from modfetch.engine.retry import BackoffWait, RetryPolicy
from modfetch.errors import NetworkError
from modfetch.resolvers.api import SourceClient, config_retry
from modfetch.resolvers.civitai import CivitaiResolver
from modfetch.resolvers.huggingface import HuggingFaceResolver
from tests.helpers import write_test_config
from tests.servers.scripted import Scripted


@pytest.fixture
def server() -> Iterator[Scripted]:
    scripted = Scripted()
    yield scripted
    scripted.close()


def _failing(times: int, status: int = 503, retry_after: str | None = None) -> object:
    count = {"n": 0}

    def route(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        count["n"] += 1
        if count["n"] <= times:
            return status, ({"Retry-After": retry_after} if retry_after else {}), b"busy"
        return 200, {"Content-Type": "application/json"}, b'{"ok": true}'

    return route


def _client(server: Scripted, session: requests.Session, policy: RetryPolicy) -> SourceClient:
    return SourceClient(session, server.url, None, 5, "the Hugging Face Hub", policy)


def test_the_configured_attempts_are_used(server: Scripted) -> None:
    """Five answers of 503, then JSON: with max_retries 5 the call succeeds (the old fixed 3 tries failed)."""
    server.route = _failing(5)  # type: ignore[assignment]
    policy = RetryPolicy(6, BackoffWait(0.0, 0.01))
    with requests.Session() as session:
        response, parsed = _client(server, session, policy).get_json(f"{server.url}/api/models/a/b")
    assert response.status_code == 200 and parsed == {"ok": True}
    assert len(server.seen) == 6


def test_attempts_are_bounded(server: Scripted) -> None:
    server.route = _failing(100)  # type: ignore[assignment]
    with requests.Session() as session, pytest.raises(NetworkError, match="HTTP 503"):
        _client(server, session, RetryPolicy(4, BackoffWait(0.0, 0.01))).get_json(f"{server.url}/api/x")
    assert len(server.seen) == 4


def test_retry_after_is_honoured_beyond_the_old_five_second_cap(server: Scripted) -> None:
    """Retry-After is honoured up to the engine's cap (300 s); the API client used to cut it to 5 s.  Checked
    with the policy's own arithmetic, then end to end with a short value."""
    assert RetryPolicy(3, BackoffWait(0.0, 0.01)).wait.delay(1, 60.0) == 60.0
    server.route = _failing(1, 429, "1")  # type: ignore[assignment]
    started = time.monotonic()
    with requests.Session() as session:
        _client(server, session, RetryPolicy(3, BackoffWait(0.0, 0.01))).get_json(f"{server.url}/api/x")
    assert time.monotonic() - started >= 1.0 and len(server.seen) == 2


def test_a_stop_request_ends_the_backoff_with_interrupted(server: Scripted) -> None:
    server.route = _failing(1, 429, "120")  # type: ignore[assignment]
    cancel.STOP.clear()
    timer = threading.Timer(0.3, cancel.request_stop)
    timer.start()
    started = time.monotonic()
    try:
        with requests.Session() as session, pytest.raises(cancel.Interrupted):
            _client(server, session, RetryPolicy(3, BackoffWait(0.0, 0.01))).get_json(f"{server.url}/api/x")
    finally:
        timer.cancel()
        cancel.STOP.clear()
    assert time.monotonic() - started < 10


def test_a_refused_connection_gives_up_after_the_unreachable_attempts(caplog: pytest.LogCaptureFixture) -> None:
    """A dead endpoint is not retried max_retries times (minutes): the engine's unreachable rule applies."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    policy = RetryPolicy(50, BackoffWait(0.01, 0.01))
    caplog.set_level(logging.DEBUG, logger="modfetch.resolvers")
    with requests.Session() as session, pytest.raises(NetworkError, match="connection refused"):
        SourceClient(session, url, None, 5, "CivitAI", policy).get_json(f"{url}/api/v1/models/1")
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == policy.unreachable_attempts - 1


def test_resolvers_take_the_policy_from_the_config(tmp_path: Path) -> None:
    config = load_config(str(write_test_config(tmp_path / "config.yml", max_retries=7)))
    policy = config_retry(config)
    assert policy.attempts == 8
    assert (policy.wait.minimum, policy.wait.maximum) == (0.01, 0.05)
    assert HuggingFaceResolver(config).retry == policy == CivitaiResolver(config).retry
