"""Issue 13, smaller faults: errors name the thing that really failed.

- With ``HTTP(S)_PROXY`` pointing at a dead proxy, the error used to blame the origin ("connection refused by
  ORIGIN"); it now names the proxy, without the credentials its URL may carry.
- ``REQUESTS_CA_BUNDLE`` silently wins over ``SSL_CERT_FILE``; the TLS error hint now says which CA variable
  was used and which was ignored.
Both through the installed CLI (real subprocesses, real sockets, a real TLS server).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests.e2e.test_blackbox_urls import (  # noqa: F401 - fixtures
    _file,
    _make_cert,
    _tls_url,
    cert,
    cli,
    mf_env,
    servers,
)
from tests.helpers import Run
from tests.helpers import assert_run_error as assert_clean_error

PROXY_SECRET = "pr0xyPassw0rd"


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"])
def test_dead_proxy_is_named_not_the_origin(cli: Callable[..., Run], variable: str) -> None:  # noqa: F811
    proxy_port, origin_port = _closed_port(), _closed_port()
    scheme = "https" if variable == "HTTPS_PROXY" else "http"
    url = f"{scheme}://127.0.0.1:{origin_port}/model.bin"
    run = cli(url, env={variable: f"http://user:{PROXY_SECRET}@127.0.0.1:{proxy_port}", "NO_PROXY": "",
                        "no_proxy": ""})
    line = assert_clean_error(run)
    assert f"proxy 127.0.0.1:{proxy_port}" in line, run.stderr
    assert f"refused by 127.0.0.1:{origin_port}" not in line, run.stderr
    assert PROXY_SECRET not in run.stderr + run.stdout and "user:" not in run.stderr, run.stderr


def test_dead_proxy_is_named_for_source_api_calls(cli: Callable[..., Run]) -> None:  # noqa: F811
    """The resolvers' API client (here the Hub's repo API) reports the proxy too."""
    proxy_port, hub_port = _closed_port(), _closed_port()
    run = cli("hf://a/b/file.bin", env={"HTTP_PROXY": f"http://user:{PROXY_SECRET}@127.0.0.1:{proxy_port}",
                                        "NO_PROXY": "", "HF_ENDPOINT": f"http://127.0.0.1:{hub_port}"})
    line = assert_clean_error(run)
    assert f"proxy 127.0.0.1:{proxy_port}" in line, run.stderr
    assert PROXY_SECRET not in run.stderr, run.stderr


def test_tls_hint_says_requests_ca_bundle_won_over_ssl_cert_file(servers, cli, cert, tmp_path) -> None:  # noqa: F811
    """The right CA in SSL_CERT_FILE, a wrong one in REQUESTS_CA_BUNDLE: requests uses the latter, and the hint
    now says so instead of leaving the user to wonder why SSL_CERT_FILE 'does not work'."""
    other = _make_cert(tmp_path / "other", "IP:127.0.0.1")
    server = servers(_file, tls=cert)
    run = cli(_tls_url(server), env={"REQUESTS_CA_BUNDLE": str(other.cert), "SSL_CERT_FILE": str(cert.cert)})
    assert "certificate verif" in assert_clean_error(run).lower(), run.stderr
    hint = run.stderr.split("hint:", 1)[1]
    assert f"REQUESTS_CA_BUNDLE={other.cert}" in hint, run.stderr
    assert f"SSL_CERT_FILE={cert.cert} ignored" in hint, run.stderr


@pytest.mark.parametrize("setting", ["wrong", "missing"])
def test_tls_hint_names_ssl_cert_file_when_it_is_the_one_used(servers, cli, cert, tmp_path,  # noqa: F811
                                                              setting: str) -> None:
    other = _make_cert(tmp_path / "other", "IP:127.0.0.1")
    path = str(other.cert) if setting == "wrong" else str(tmp_path / "nowhere.pem")
    server = servers(_file, tls=cert)
    run = cli(_tls_url(server), env={"SSL_CERT_FILE": path})
    assert_clean_error(run)
    hint = run.stderr.split("hint:", 1)[1]
    if setting == "wrong":
        assert f"checked against SSL_CERT_FILE={path}" in hint, run.stderr
    else:
        assert f"SSL_CERT_FILE={path} exists" in hint and "certifi" in hint, run.stderr
