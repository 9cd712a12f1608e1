"""Black-box runs of the installed ``modfetch`` about URLs, TLS and how the output file name is chosen.

Same acceptance rule as ``test_blackbox_faults``: exit 0 with exactly the right bytes at a predictable name
inside ``--dest``, or one clean ``modfetch: error:`` line (plus an optional hint), no traceback, bounded time.
TLS servers use a throw-away self-signed certificate made with the ``openssl`` command.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from tests.conftest import modfetch_command
from tests.helpers import Run, assert_ok, assert_run_error, write_test_config
from tests.servers.raw import DATA, Handler, PlainAnswerer, RawServer, Req, TlsServer, response, serve_file

OTHER = hashlib.sha256(b"other").digest() * 512  # 16 KiB, different bytes


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def _make_cert(folder: Path, *alt_names: str) -> Cert:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=modfetch-test", "-addext",
                    "subjectAltName=" + ",".join(alt_names)],
                   check=True, capture_output=True, timeout=60)
    return Cert(cert, key)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1 and ::1 only (not ``localhost``)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    return _make_cert(tmp_path_factory.mktemp("tls"), "IP:127.0.0.1", "IP:::1")


@pytest.fixture
def servers() -> Iterator[Callable[..., RawServer]]:
    """Factory: ``servers(handler)`` (plain), ``servers(handler, tls=cert)`` or ``servers(handler, v6=True)``."""
    started: list[RawServer] = []

    def start(handler: Handler, tls: Cert | None = None, v6: bool = False) -> RawServer:
        if v6:
            server: RawServer = RawServer(handler, host="::1")
        elif tls is not None:
            tls_server = TlsServer(handler)
            tls_server.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls_server.context.load_cert_chain(tls.cert, tls.key)
            server = tls_server
        else:
            server = RawServer(handler)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _file(req: Req, conn: socket.socket, server: RawServer) -> bool:
    return serve_file(req, conn)


def _named(disposition: str, data: bytes = DATA) -> Handler:
    return lambda req, conn, srv: serve_file(req, conn, data, extra=[("Content-Disposition", disposition)])


@pytest.fixture
def mf_env(tmp_path: Path) -> dict[str, str]:
    """An isolated HOME (own config and state DB), no proxies, tokens or CA variables from the caller."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and "TOKEN" not in k and not k.endswith("CA_BUNDLE")
           and not k.startswith("SSL_CERT")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               NO_PROXY="127.0.0.1,::1,localhost")
    return env


@pytest.fixture
def cli(tmp_path: Path, mf_env: dict[str, str]) -> Callable[..., Run]:
    """``modfetch --quiet download ARGS --dest DEST`` (or any other subcommand with ``command=``) as a real
    process, with ``env`` added to the test environment."""
    config = write_test_config(tmp_path / "config.yml")
    dest = tmp_path / "dest"

    def run(*args: str, env: dict[str, str] | None = None, command: str = "download") -> Run:
        extra = ["--dest", str(dest)] if command == "download" else []
        started = time.monotonic()
        proc = subprocess.run([*modfetch_command(), "--config", str(config), "--quiet", command, *args, *extra],
                              capture_output=True, text=True, env={**mf_env, **(env or {})}, timeout=40,
                              check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started, dest)

    return run


def _tls_url(server: RawServer, host: str = "127.0.0.1", path: str = "/model.bin") -> str:
    return f"https://{host}:{server.port}{path}"


def _names(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# -- TLS ----------------------------------------------------------------------------------------------------
def test_self_signed_certificate_is_refused_at_once_with_a_clear_error(servers, cli, cert) -> None:
    """Used to be retried as a network failure (8 times with backoff by default, ~40 s) and reported as
    'cannot reach ...: SSLError talking to ...', never naming certificate verification."""
    server = servers(_file, tls=cert)
    run = cli(_tls_url(server))
    line = assert_run_error(run)
    assert "certificate verif" in line.lower() and "127.0.0.1" in line, run.stderr
    assert "REQUESTS_CA_BUNDLE" in run.stderr  # the hint says how to trust it
    assert "retry" not in run.stderr.lower(), run.stderr  # not transient: no retries
    assert server.handshakes == 1
    assert _names(run.dest) == []


def test_certificate_for_another_host_name_is_refused(servers, cli, cert) -> None:
    server = servers(_file, tls=cert)
    run = cli(_tls_url(server, host="localhost"), env={"REQUESTS_CA_BUNDLE": str(cert.cert)})
    line = assert_run_error(run)
    assert "certificate verif" in line.lower() and "localhost" in line.lower(), run.stderr
    assert "retry" not in run.stderr.lower(), run.stderr


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"])
def test_ca_bundle_variables_make_a_private_certificate_work(servers, cli, cert, variable) -> None:
    """``SSL_CERT_FILE`` (OpenSSL's, honoured by curl and Python's ssl) used to be ignored: requests reads
    only its own two variables."""
    server = servers(_file, tls=cert)
    assert_ok(cli(_tls_url(server), env={variable: str(cert.cert)}), "model.bin", DATA)


def test_requests_ca_bundle_wins_over_ssl_cert_file(servers, cli, cert, tmp_path) -> None:
    other = _make_cert(tmp_path / "other", "IP:127.0.0.1")
    server = servers(_file, tls=cert)
    run = cli(_tls_url(server), env={"REQUESTS_CA_BUNDLE": str(cert.cert), "SSL_CERT_FILE": str(other.cert)})
    assert_ok(run, "model.bin", DATA)


def test_unusable_ca_bundle_is_a_clean_error(servers, cli, cert) -> None:
    """A key (no certificate) as the bundle used to be retried like a network failure."""
    server = servers(_file, tls=cert)
    run = cli(_tls_url(server), env={"REQUESTS_CA_BUNDLE": str(cert.key)})
    line = assert_run_error(run)
    assert "CA certificate" in line and "retry" not in run.stderr.lower(), run.stderr
    missing = cli(_tls_url(server), env={"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"})
    assert "/nonexistent/ca.pem" in assert_run_error(missing)


def test_https_to_plain_http_server(cli) -> None:
    """A plain-HTTP port behind an https:// URL answers the ClientHello with an HTTP error page: used to be
    retried and reported as 'SSLError talking to ...'."""
    server = PlainAnswerer()
    try:
        run = cli(f"https://127.0.0.1:{server.port}/model.bin")
        line = assert_run_error(run)
        assert "does not speak TLS" in line and "http://" in run.stderr, run.stderr
        assert server.hits == 1
    finally:
        server.close()


def test_plain_http_to_a_tls_server_and_handshake_resets_fail_cleanly(servers, cli, cert) -> None:
    server = servers(_file, tls=cert)
    run = cli(f"http://127.0.0.1:{server.port}/model.bin")
    assert_run_error(run)
    assert run.elapsed < 20

    def reset(conn: socket.socket) -> None:  # accept, then reset the connection mid-handshake
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    resetting = servers(_file, tls=cert)
    resetting._serve = reset  # type: ignore[method-assign]
    run = cli(_tls_url(resetting), env={"REQUESTS_CA_BUNDLE": str(cert.cert)})
    assert "127.0.0.1" in assert_run_error(run)
    assert run.elapsed < 20


# -- URL forms ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/a b.bin", "http://127.0.0.1:0/x.bin", "http://127.0.0.1:65536/x.bin",
    "http://127.0.0.1:abc/x.bin", "http://127.0.0.1:-1/x.bin", "file:///etc/passwd", "ftp://127.0.0.1/x.bin",
    "data:text/plain,hello", "127.0.0.1:{port}/x.bin", "localhost", "http:///x.bin", "http://", "http://[::1/x",
])
def test_unusable_urls_are_usage_errors_before_any_request(servers, cli, url) -> None:
    server = servers(_file)
    run = cli(url.format(port=server.port))
    assert_run_error(run)
    assert run.code == 2 and server.requests == [] and _names(run.dest) == []


@pytest.mark.parametrize(("path", "name"), [
    ("/a%20b.bin", "a b.bin"),
    ("/x%2F..%2F..%2Fescape.bin", "escape.bin"),
    ("/x%5C..%5Cwin.bin", "win.bin"),
    ("/d/../up.bin", "up.bin"),
    ("/f.bin#fragment", "f.bin"),
    ("/q.bin?x=1&y=/etc/passwd", "q.bin"),
    ("/", "download.bin"),
    ("", "download.bin"),
    ("//", "download.bin"),
    ("/%2e%2e", "download.bin"),
    ("/.bashrc", "bashrc"),
    ("/%C3%A9t%C3%A9.bin", "\u00e9t\u00e9.bin"),
    ("/ctl%0A%00.bin", "ctl.bin"),
    ("/download?file=model.safetensors", "download"),  # the path names the file, never the query
])
def test_name_from_the_url_is_one_safe_component_inside_dest(servers, cli, path, name) -> None:
    server = servers(_file)
    run = cli(f"http://127.0.0.1:{server.port}{path}")
    assert_ok(run, name, DATA)
    assert _names(run.dest) == sorted([name, name + ".sha256"])


def test_ipv6_literal_url(servers, cli) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = servers(_file, v6=True)
    except OSError:
        pytest.skip("::1 is not available")
    url = f"http://[::1]:{server.port}/v6.bin"
    assert_ok(cli(url), "v6.bin", DATA)
    rows = json.loads(cli("--json", command="status").stdout)
    assert [r["url"] for r in rows] == [url]


def test_userinfo_password_is_never_printed_logged_or_stored(servers, cli, tmp_path) -> None:
    """The password may be sent to its own host (Basic auth), never shown, stored or sent elsewhere."""
    other = servers(_file)
    seen: list[Req] = []

    def redirecting(req: Req, conn: socket.socket, server: RawServer) -> bool:
        seen.append(req)
        conn.sendall(response("302 Found", [("Connection", "close"), ("Content-Length", "0"),
                                            ("Location", f"http://127.0.0.1:{other.port}/elsewhere.bin")]))
        return False

    first = servers(redirecting)
    secret = "s3cr3t-pw-9f8e7d"
    url = f"http://someone:{secret}@127.0.0.1:{first.port}/model.bin"
    run = cli(url, "--log-level", "debug")
    assert_ok(run, "elsewhere.bin", DATA)
    assert all("authorization" in r.headers for r in seen)  # its own host gets the credentials
    assert not any("authorization" in r.headers for r in other.requests)  # the redirect target never does
    status = cli("--json", command="status")
    assert status.code == 0 and secret not in status.stdout + status.stderr
    assert secret not in run.stdout + run.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


# -- Content-Disposition ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("disposition", "name"), [
    ("attachment; filename*=UTF-8''%E2%82%AC%20rates.bin", "\u20ac rates.bin"),
    # RFC 5987 allows a language tag between the quotes: it used to end up in the name ("UTF-8'en'...").
    ("attachment; filename*=UTF-8'en'%E2%82%AC%20rates.bin", "\u20ac rates.bin"),
    ("attachment; filename*=iso-8859-1'en'%A3%20rates.bin", "\u00a3 rates.bin"),
    ('attachment; filename="plain.bin"; filename*=UTF-8\'\'star.bin', "star.bin"),
    ("attachment; filename*=UTF-8''star.bin; filename=\"plain.bin\"", "star.bin"),
    # Shell metacharacters become "_" (finding 6: the name ends up in commands printed for pasting).
    ('attachment; filename="a\\"b.bin"', "a_b.bin"),
    ('attachment; filename="name; with semicolon.bin"', "name_ with semicolon.bin"),
    ('attachment; filename="../../etc/x.bin"', "x.bin"),
    ('attachment; filename="..\\\\..\\\\win.bin"', "win.bin"),
    ("attachment; filename*=UTF-8''a%2F..%2Fb.bin", "b.bin"),
    ("attachment; filename*=UTF-8''nul%00.bin", "nul.bin"),
    ('attachment; filename=".hidden.bin"', "hidden.bin"),
    ('attachment; filename="..."', "download.bin"),
    ('attachment; filename=""', "model.bin"),  # empty: the URL names it
    ("attachment; filename=", "model.bin"),
    ('attachment; FILENAME="upper.bin"', "upper.bin"),
    # A charset that is a codec but not one that decodes arbitrary bytes used to be an internal UnicodeError.
    ("attachment; filename*=idna''%FF%FE.bin", "\ufffd\ufffd.bin"),
    ("attachment; filename*=punycode''%E2%82%AC.bin", "\u20ac.bin"),
    ("attachment; filename*=rot13''r.bin", "r.bin"),
    # Only the filename parameter counts, not one that merely ends in "filename".
    ('attachment; xfilename="not-this.bin"', "model.bin"),
    ("attachment; x-filename*=UTF-8''not-this.bin", "model.bin"),
    ('attachment; filename="' + "a" * 300 + '.safetensors"', "a" * 228 + ".safetensors"),
])
def test_content_disposition_names(servers, cli, disposition, name) -> None:
    server = servers(_named(disposition))
    run = cli(f"http://127.0.0.1:{server.port}/model.bin")
    assert_ok(run, name, DATA)
    assert _names(run.dest) == sorted([name, name + ".sha256"])


def test_name_differing_between_head_and_get_follows_the_get(servers, cli) -> None:
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        name = "from-head.bin" if req.method == "HEAD" else "from-get.bin"
        return serve_file(req, conn, extra=[("Content-Disposition", f'attachment; filename="{name}"')])

    run = cli(f"http://127.0.0.1:{servers(handler).port}/model.bin")
    assert_ok(run, "from-get.bin", DATA)
    assert not (run.dest / "from-head.bin").exists()


def test_name_ending_in_part_never_collides_with_a_download_in_progress(servers, cli) -> None:
    """A server-chosen ``model.bin.part`` used to be installed under that name; the next download of
    ``model.bin`` took it for its own stale ``.part`` and deleted it (and ``verify`` then said 'missing')."""
    named = servers(_named('attachment; filename="model.bin.part"'))
    plain = servers(lambda req, conn, srv: serve_file(req, conn, OTHER))
    first = cli(f"http://127.0.0.1:{named.port}/a")
    assert first.code == 0, first.stderr
    (installed,) = [p for p in first.dest.iterdir() if not p.name.endswith(".sha256")]
    assert not installed.name.endswith(".part") and installed.read_bytes() == DATA
    assert_ok(cli(f"http://127.0.0.1:{plain.port}/model.bin"), "model.bin", OTHER)
    assert installed.read_bytes() == DATA
    verify = cli("--all", command="verify")
    assert verify.code == 0, verify.stdout + verify.stderr


def test_out_refuses_a_part_name(servers, cli) -> None:
    server = servers(_file)
    run = cli(f"http://127.0.0.1:{server.port}/model.bin", "--out", "model.bin.part")
    assert "--out must be a plain file name" in assert_run_error(run) and run.code == 2
    assert server.requests == []


def test_out_always_wins(servers, cli) -> None:
    def redirect(req: Req, conn: socket.socket, server: RawServer) -> bool:
        conn.sendall(response("302 Found", [("Connection", "close"), ("Content-Length", "0"),
                                            ("Location", f"http://127.0.0.1:{target.port}/redirected.bin")]))
        return False

    target = servers(_named('attachment; filename="server-name.bin"'))
    run = cli(f"http://127.0.0.1:{servers(redirect).port}/url-name.bin", "--out", "mine.bin")
    assert_ok(run, "mine.bin", DATA)
    assert _names(run.dest) == ["mine.bin", "mine.bin.sha256"]


@pytest.mark.parametrize(("location", "name"), [("/files/renamed.safetensors", "renamed.safetensors"),
                                                ("/", "model.bin"), ("/cdn/?sig=abc", "cdn")])
def test_redirect_renames_by_the_final_url(servers, cli, location, name) -> None:
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        if req.target == "/model.bin":
            conn.sendall(response("302 Found", [("Connection", "close"), ("Location", location),
                                                ("Content-Length", "0")]))
            return False
        return serve_file(req, conn)

    run = cli(f"http://127.0.0.1:{servers(handler).port}/model.bin")
    assert_ok(run, name, DATA)
    assert _names(run.dest) == sorted([name, name + ".sha256"])


def test_two_urls_with_the_same_name_never_overwrite_each_other(servers, cli) -> None:
    one, two = servers(_file), servers(lambda req, conn, srv: serve_file(req, conn, OTHER))
    assert_ok(cli(f"http://127.0.0.1:{one.port}/"), "download.bin", DATA)
    run = cli(f"http://127.0.0.1:{two.port}/")
    assert "already exists" in assert_run_error(run)
    assert (run.dest / "download.bin").read_bytes() == DATA


def test_status_and_verify_with_odd_names(servers, cli) -> None:
    sent = ['a "quoted" name.bin', "\u20ac rates.bin", "semi;colon.bin", "x" * 236 + ".bin"]
    # Shell metacharacters become "_" (finding 6).
    names = ["a _quoted_ name.bin", "\u20ac rates.bin", "semi_colon.bin", "x" * 236 + ".bin"]
    for wire, name in zip(sent, names, strict=True):
        server = servers(_named(f"attachment; filename*=UTF-8''{quote(wire)}"))
        assert_ok(cli(f"http://127.0.0.1:{server.port}/model.bin"), name, DATA)
    rows = json.loads(cli("--json", command="status").stdout)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(names)
    for row in rows:
        one = cli("--json", row["path"], command="status")
        assert one.code == 0 and json.loads(one.stdout)[0]["path"] == row["path"], one.stderr
    verify = cli("--all", command="verify")
    assert verify.code == 0 and all(name in verify.stdout for name in names), verify.stdout + verify.stderr


def test_refused_connection_fails_fast_with_a_clear_reason(tmp_path: Path) -> None:
    """A server that is down (or a wrong port) used to be retried max_retries times with growing backoff
    (~60 s with the defaults) and reported as 'ConnectionError talking to ...'.  Before the first byte, a
    refused connection now gets two quick retries and says 'connection refused'."""
    with socket.socket() as probe_sock:
        probe_sock.bind(("127.0.0.1", 0))
        port = probe_sock.getsockname()[1]  # closed again: nothing listens there
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": 1,
        "concurrency": {"max_retries": 8, "backoff_min_ms": 10, "backoff_max_ms": 20},
    }))
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.update(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"), NO_PROXY="127.0.0.1")
    proc = subprocess.run([*modfetch_command(), "--config", str(config), "download", "--url",
                           f"http://127.0.0.1:{port}/model.bin", "--dest", str(tmp_path / "dest")],
                          env=env, capture_output=True, text=True, timeout=60)
    run = Run(proc.returncode, proc.stdout, proc.stderr, 0.0, tmp_path / "dest")
    line = assert_run_error(run)
    assert f"connection refused by 127.0.0.1:{port}" in line, run.stderr
    retries = [text for text in run.stderr.splitlines() if "probe failed" in text]
    assert len(retries) == 2, run.stderr  # not max_retries (8)


@pytest.mark.parametrize("option", ["--dest", "--out"])
def test_non_utf8_dest_or_out_is_a_usage_error_before_any_request(tmp_path: Path, option: str) -> None:
    """Bytes that are not UTF-8 in --dest or --out used to end in 'internal error: UnicodeEncodeError' once
    the path reached the state DB; now they are refused up front, naming the option and showing the bytes."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.update(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"), NO_PROXY="127.0.0.1")
    with socket.socket() as probe_sock:
        probe_sock.bind(("127.0.0.1", 0))
        port = probe_sock.getsockname()[1]  # nothing listens: the error must come before any request
    bad = os.fsencode(str(tmp_path)) + b"/d\xff" if option == "--dest" else b"model\xff.bin"
    args = [os.fsencode(a) for a in (*modfetch_command(), "download", "--url", f"http://127.0.0.1:{port}/m.bin")]
    args += [option.encode(), bad]
    proc = subprocess.run(args, env=env, capture_output=True, timeout=60)
    stderr = proc.stderr.decode("utf-8")  # strict: the message itself must be valid UTF-8
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert "is not valid UTF-8" in stderr and "\\xff" in stderr, stderr
    assert "connection refused" not in stderr, stderr  # refused before any request was tried
