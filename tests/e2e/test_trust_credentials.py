"""Issue 13, finding 1: a token only ever goes to the host that really receives the connection.

urlsplit (which modfetch used to decide "is this the endpoint?") and urllib3 (which requests uses to connect)
read some URL spellings differently: ``http://EVIL:PORT\\@HUB/x`` is HUB to the first and EVIL:PORT to the
second.  The rule: the credential decision uses urllib3's reading (``modfetch.engine.origin``), and a URL the
two parsers disagree on is refused before any request.  Proved here by a table of spellings against the
decision function, then end to end with a real "hub" redirecting to hostile spellings of a second, "evil"
server on another port, through the engine, the API client and the CLI (Hugging Face and CivitAI tokens, the
latter also echoed as ``?token=``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
import requests

from modfetch.engine.http import headers_for, request
from modfetch.engine.origin import AmbiguousURLError, may_carry_credentials
from modfetch.resolvers.api import SourceClient
from tests.conftest import Modfetch, assert_clean_error
from tests.servers.lookalike import LookalikeServer, Request, Response, json_response, serve_bytes

TOKEN = "hf_TrustHoleToken0123456789abcdef"
CIV_TOKEN = "civ0123456789TrustHoleToken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DATA = bytes(range(256)) * 64
GIT_SHA1 = hashlib.sha1(b"blob %d\0" % len(DATA) + DATA).hexdigest()

SEND, WITHHOLD, REFUSE = "send", "withhold", "refuse"

# (url, auth_host, auth_scheme, expected decision)
DECISIONS = [
    ("https://hub.example/x", "hub.example", "https", SEND),
    ("https://hub.example:443/x", "hub.example", "https", SEND),  # the default port, spelled out
    ("https://hub.example/x", "hub.example:443", "https", SEND),
    ("https://HUB.Example./x", "hub.example", "https", SEND),  # case and the DNS root dot: the same host
    ("HTTPS://hub.example/x", "hub.example", "https", SEND),
    ("https://user@hub.example/x", "hub.example", "https", SEND),  # user-info does not change the host
    ("http://127.0.0.1:8080/x", "127.0.0.1:8080", "http", SEND),
    ("http://[::1]:8080/x", "[::1]:8080", "http", SEND),
    ("https://evil.example/x", "hub.example", "https", WITHHOLD),
    ("https://hub.example:444/x", "hub.example", "https", WITHHOLD),
    ("http://hub.example/x", "hub.example", "https", WITHHOLD),  # downgrade
    ("http://hub.example:443/x", "hub.example", "https", WITHHOLD),  # downgrade on the same port
    ("https://hub.example.evil.example/x", "hub.example", "https", WITHHOLD),
    ("https://hub.example@evil.example/x", "hub.example", "https", WITHHOLD),  # a@b is b
    ("https://a@hub.example@evil.example/x", "hub.example", "https", WITHHOLD),
    ("https://evil.example#@hub.example/x", "hub.example", "https", WITHHOLD),
    ("https://evil.example?@hub.example/x", "hub.example", "https", WITHHOLD),
    ("https://h\u00fcb.example/x", "hub.example", "https", WITHHOLD),  # IDNA: xn--hb-xka.example
    ("http://[::1]:8080/x", "127.0.0.1:8080", "http", WITHHOLD),
    ("http://[::1%25lo]:8080/x", "[::1]:8080", "http", WITHHOLD),  # a zone id is another address
    ("http://127.1:8080/x", "127.0.0.1:8080", "http", WITHHOLD),  # a numeric alias is not trusted
    ("https://evil.example\\@hub.example/x", "hub.example", "https", REFUSE),
    ("https://evil.example:1234\\@hub.example/x", "hub.example", "https", REFUSE),
    ("https://evil.example\\\\@hub.example:443/x", "hub.example", "https", REFUSE),
    ("https://evil.example\\.hub.example/x", "hub.example", "https", REFUSE),
    ("https://h%75b.example/x", "hub.example", "https", REFUSE),  # urllib3 decodes it, urlsplit does not
    ("https://hub.example%2eevil.example/x", "hub.example.evil.example", "https", REFUSE),
    ("https://hub.example\t/x", "hub.example", "https", REFUSE),
    ("https://hub.ex\nample/x", "hub.example", "https", REFUSE),
    ("https://hub.example\x00.evil.example/x", "hub.example", "https", REFUSE),
    (" https://hub.example/x", "hub.example", "https", REFUSE),
    ("https://evil.example :1@hub.example/x", "hub.example", "https", REFUSE),
    ("https://hub.example:+443/x", "hub.example", "https", REFUSE),
]


@pytest.mark.parametrize(("url", "auth_host", "scheme", "expected"), DECISIONS)
def test_credential_decision_follows_the_connecting_parser(url: str, auth_host: str, scheme: str,
                                                           expected: str) -> None:
    """The one decision function, and ``headers_for`` built on it, on every spelling of the family."""
    if expected == REFUSE:
        with pytest.raises(AmbiguousURLError, match="refusing the URL"):
            may_carry_credentials(url, auth_host, scheme)
        with pytest.raises(AmbiguousURLError):
            headers_for(url, {}, AUTH, auth_host, scheme)
        with pytest.raises(AmbiguousURLError):  # refused even without a credential: it is not a usable URL
            headers_for(url, {}, {}, None, None)
        return
    assert may_carry_credentials(url, auth_host, scheme) is (expected == SEND)
    assert ("Authorization" in headers_for(url, {}, AUTH, auth_host, scheme)) is (expected == SEND)


def test_refusal_message_names_where_the_connection_would_go() -> None:
    with pytest.raises(AmbiguousURLError) as caught:
        may_carry_credentials(f"http://evil.example:1234\\@hub.example/x?token={TOKEN}", "hub.example", "http")
    assert "evil.example:1234" in str(caught.value) and TOKEN not in str(caught.value)


# -- end to end: a hub and an evil server on two local ports -------------------------------------------------

# Location spellings that urlsplit reads as the hub and urllib3 connects to the evil server.
HOSTILE = [
    "http://127.0.0.1:{evil}\\@127.0.0.1:{hub}/x.bin",
    "//127.0.0.1:{evil}\\@127.0.0.1:{hub}/x.bin",
    "HTTP://127.0.0.1:{evil}\\\\@127.0.0.1:{hub}/x.bin",
    "http://127.0.0.1:{evil}\\x@127.0.0.1:{hub}/x.bin?token={token}",
]


class Pair:
    """A "hub" answering with ``route(request)`` and an "evil" server serving bytes to anyone."""

    def __init__(self) -> None:
        self.evil = LookalikeServer(lambda req: serve_bytes(req, DATA)).start()
        self.route: Callable[[Request], Response] = lambda req: Response(404)
        self.hub = LookalikeServer(lambda req: self.route(req)).start()

    def hostile(self, template: str, token: str = TOKEN) -> str:
        return template.format(evil=self.evil.port, hub=self.hub.port, token=quote(token, safe=""))

    def evil_saw_nothing(self, *tokens: str) -> None:
        """The evil server never got a request, so neither the header nor a token in its URL."""
        seen = self.evil.requests()
        assert not any("authorization" in r.headers for r in seen), seen
        assert not any(t in r.target or quote(t, safe="") in r.target for r in seen for t in tokens), seen
        assert seen == [], seen

    def stop(self) -> None:
        self.hub.stop()
        self.evil.stop()


@pytest.fixture
def pair() -> Iterator[Pair]:
    servers = Pair()
    yield servers
    servers.stop()


def _redirect(location: str, status: int = 302) -> Response:
    return Response(status, b"", [("Location", location)])


@pytest.mark.parametrize("template", HOSTILE)
@pytest.mark.parametrize("hops", [0, 1, 2])
def test_engine_request_never_hands_the_token_to_the_evil_host(pair: Pair, template: str, hops: int) -> None:
    """``engine.http.request`` with the hostile URL as the initial URL (0) or after one or two redirects."""
    hostile = pair.hostile(template)
    if hops == 0:
        start = hostile if not hostile.startswith("//") else "http:" + hostile
    else:
        start = f"{pair.hub.url}/hop/{hops}"
        pair.route = lambda req: _redirect(hostile if req.path.endswith("/1") else "/hop/1")
    with requests.Session() as session, pytest.raises(AmbiguousURLError, match="refusing"):
        request(session, "GET", start, base_headers={}, auth=AUTH, auth_host=pair.hub.hostport, timeout=(5, 5))
    pair.evil_saw_nothing(TOKEN)
    if hops:
        assert all(r.headers.get("authorization") == AUTH["Authorization"] for r in pair.hub.requests())


@pytest.mark.parametrize("template", HOSTILE)
@pytest.mark.parametrize("call", ["get_json", "send", "off_host_target"])
def test_api_client_never_hands_the_token_to_the_evil_host(pair: Pair, template: str, call: str) -> None:
    """The resolvers' ``SourceClient``: followed redirects (JSON listings, HEAD/GET of a file) and the
    off-host redirect it hands to the engine."""
    hostile = pair.hostile(template)
    pair.route = lambda req: _redirect(hostile)
    with requests.Session() as session:
        client = SourceClient(session, pair.hub.url, TOKEN, 5, "Hub")
        with pytest.raises(AmbiguousURLError, match="refusing"):
            if call == "get_json":
                client.get_json(client.url("/api/models/a/b"))
            elif call == "send":
                client.send("HEAD", client.url("/a/b/resolve/main/x.bin"))
            else:
                response, final = client.send("HEAD", client.url("/a/b/resolve/main/x.bin"), follow=False)
                response.close()
                client.off_host_target(final, response.headers["Location"], response.status_code)
    pair.evil_saw_nothing(TOKEN)


def _everything(mf: Modfetch, *outputs: str) -> str:
    texts = list(outputs)
    for path in mf.home.parent.rglob("*"):
        if path.is_file() and not path.is_symlink():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


@pytest.mark.parametrize("template", HOSTILE[:2])
@pytest.mark.parametrize("where", ["api", "resolve", "engine"])
def test_cli_hf_token_never_reaches_the_evil_host(mf: Modfetch, pair: Pair, monkeypatch: pytest.MonkeyPatch,
                                                   template: str, where: str) -> None:
    """``modfetch download hf://a/b/file.bin`` with HF_TOKEN: the hub redirects its repo API call (``api``),
    the resolver's HEAD of the file (``resolve``) or only the engine's requests of the pinned file
    (``engine``) to a hostile spelling of the evil server."""
    hostile = pair.hostile(template)
    commit = "c" * 40

    def route(req: Request) -> Response:
        if req.path == "/api/models/a/b":
            return _redirect(hostile) if where == "api" else json_response(200, {"id": "a/b", "sha": commit})
        if req.path == "/a/b/resolve/main/file.bin" and where != "resolve":
            return Response(200, b"", [("X-Repo-Commit", commit), ("ETag", f'"{GIT_SHA1}"'),
                                       ("Content-Length", str(len(DATA)))])
        if "/resolve/" in req.path:
            return _redirect(hostile)
        return Response(404, b"{}", [("X-Error-Code", "RepoNotFound")])

    pair.route = route
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    mf.write_config(sources={"huggingface": {"endpoint": pair.hub.url}})
    proc = mf.run("download", "--url", "hf://a/b/file.bin", "--dest", str(mf.dest))
    assert proc.returncode == 1, proc.stderr
    assert_clean_error(proc.stderr, "refusing the URL")
    debug = mf.run("--log-level", "debug", "download", "--url", "hf://a/b/file.bin", "--dest", str(mf.dest))
    assert debug.returncode == 1, debug.stderr
    pair.evil_saw_nothing(TOKEN)
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in pair.hub.requests())
    status = mf.run("--json", "status").stdout
    assert TOKEN not in _everything(mf, proc.stdout, proc.stderr, debug.stderr, status)
    assert not (mf.dest / "file.bin").exists()


@pytest.mark.parametrize("template", [HOSTILE[0], HOSTILE[3]])
def test_cli_civitai_token_never_reaches_the_evil_host(mf: Modfetch, pair: Pair, monkeypatch: pytest.MonkeyPatch,
                                                        template: str) -> None:
    """CivitAI's download endpoint redirects to a hostile spelling that also carries the token as
    ``?token=`` (CivitAI's query form): neither the header nor the query reaches the evil server."""
    hostile = pair.hostile(template + ("&" if "?" in template else "?") + "token={token}", CIV_TOKEN)
    files = [{"id": 1, "name": "m.safetensors", "primary": True, "sizeKB": len(DATA) / 1024,
              "downloadUrl": f"{pair.hub.url}/api/download/models/7", "hashes": {}}]
    model = {"id": 5, "name": "m", "type": "Checkpoint", "modelVersions": [
        {"id": 7, "modelId": 5, "name": "v1", "files": files}]}

    def route(req: Request) -> Response:
        if req.path == "/api/v1/models/5":
            return Response(200, json.dumps(model).encode(), [("Content-Type", "application/json")])
        if req.path.startswith("/api/download/"):
            return _redirect(hostile, 307)
        return json_response(404, {"error": "Not found"})

    pair.route = route
    monkeypatch.setenv("CIVITAI_TOKEN", CIV_TOKEN)
    mf.write_config(sources={"civitai": {"endpoint": pair.hub.url}})
    proc = mf.run("download", "--url", "civitai://model/5", "--dest", str(mf.dest))
    assert proc.returncode == 1, proc.stderr
    assert_clean_error(proc.stderr, "refusing the URL")
    debug = mf.run("--log-level", "debug", "download", "--url", "civitai://model/5", "--dest", str(mf.dest))
    assert debug.returncode == 1, debug.stderr
    pair.evil_saw_nothing(CIV_TOKEN)
    assert any(r.headers.get("authorization") == f"Bearer {CIV_TOKEN}" for r in pair.hub.requests())
    assert CIV_TOKEN not in _everything(mf, proc.stdout, proc.stderr, debug.stderr)


@pytest.mark.parametrize("template", [HOSTILE[0], HOSTILE[2], HOSTILE[3], "http://127.0.0.1:{evil}%5C@127.0.0.1:{hub}/x",
                                      "http://127.0.0.1:{hub}\\@127.0.0.1:{evil}/x", "http://12%37.0.0.1:{evil}/x"])
def test_cli_refuses_a_hostile_initial_url_before_any_request(mf: Modfetch, pair: Pair, template: str) -> None:
    """A plain URL given on the command line with a spelling the parsers read two ways is a usage error
    (exit 2) before any request; a harmless look-alike (``%5C`` in user-info) is not refused."""
    url = pair.hostile(template)
    proc = mf.run("download", "--url", url, "--dest", str(mf.dest))
    if "%5C" in template:  # user-info ``127.0.0.1:EVIL\`` for both parsers: an ordinary URL to the hub
        assert "refusing" not in proc.stderr and pair.evil.requests() == [], proc.stderr
        assert pair.hub.requests(), proc.stderr
        return
    assert proc.returncode == 2, proc.stderr
    assert_clean_error(proc.stderr, "refusing the URL")
    pair.evil_saw_nothing()
    assert pair.hub.requests() == []
