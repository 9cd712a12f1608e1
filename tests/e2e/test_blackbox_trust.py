"""Hostile black-box review of the issue 13 trust fixes: members of the fixed fault classes the fixes missed.

Each test drives the installed ``modfetch`` (a real subprocess, private HOME) against local servers.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from modfetch.engine.files import open_part
from modfetch.engine.origin import may_carry_credentials
from modfetch.placement.hf_cache import write_ref
from modfetch.placement.linker import SourceFile, copy_verified
from modfetch.util.atomic import write_atomic
from tests.conftest import Modfetch, assert_clean_error, sha256_of
from tests.e2e.test_blackbox_urls import Cert, cert  # noqa: F401 - fixture
from tests.e2e.test_trust_credentials import Pair
from tests.e2e.test_trust_paste import _gguf_server
from tests.servers.faulty import make_content
from tests.servers.gated import GatedServer
from tests.servers.lookalike import Request as LookalikeRequest
from tests.servers.lookalike import Response, json_response
from tests.servers.raw import RawServer, Req, serve_file

TOKEN = "hf_BlackboxTrustToken0123456789abcdef"
DATA = hashlib.sha256(b"blackbox").digest() * 4096  # 128 KiB
GIT_SHA1 = hashlib.sha1(b"blob %d\0" % len(DATA) + DATA).hexdigest()
COMMIT = "d" * 40


class DualServer(RawServer):
    """One port speaking both HTTPS and plain HTTP (it peeks at the first byte: 0x16 starts a TLS handshake),
    so ``https://127.0.0.1:P`` and ``http://127.0.0.1:P`` are the same host and port, as ``https://hub`` and
    ``http://hub`` are on the default ports.  ``seen`` holds ``(scheme, Req)`` for every request."""

    context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self.seen: list[tuple[str, Req]] = []
        super().__post_init__()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except OSError:
            conn.close()
            return
        if first == b"\x16":
            assert self.context is not None
            try:
                conn = self.context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
            self._scheme = "https"
        super()._serve(conn)


def _send(conn: socket.socket, status: str, headers: dict[str, str], body: bytes = b"") -> None:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    conn.sendall((head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)


@pytest.fixture
def dual(cert: Cert) -> Iterator[DualServer]:  # noqa: F811
    """A Hub look-alike on a dual HTTPS/HTTP port whose file answers redirect to ``http://`` on the same port."""
    holder: list[DualServer] = []

    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        scheme = "https" if isinstance(conn, ssl.SSLSocket) else "http"
        holder[0].seen.append((scheme, req))
        if req.target.startswith("/api/models/a/b"):
            _send(conn, "200 OK", {"Content-Type": "application/json"},
                  json.dumps({"id": "a/b", "sha": COMMIT}).encode())
        elif "/resolve/" in req.target and scheme == "https":
            if req.method == "HEAD" and "/resolve/main/" in req.target:
                _send(conn, "200 OK", {"X-Repo-Commit": COMMIT, "ETag": f'"{GIT_SHA1}"'})
                return False
            # The pinned file moved to plain http on the same host and port (a downgrade).
            _send(conn, "302 Found", {"Location": f"http://127.0.0.1:{server.port}/plain/file.bin"})
        elif req.target == "/plain/file.bin":
            _send(conn, "200 OK", {"Accept-Ranges": "bytes"}, b"" if req.method == "HEAD" else DATA)
        else:
            _send(conn, "404 Not Found", {})
        return False

    server = DualServer(handler)
    server.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.context.load_cert_chain(cert.cert, cert.key)
    holder.append(server)
    yield server
    server.close()


def test_token_never_travels_over_a_downgraded_hop(mf: Modfetch, dual: DualServer, cert: Cert,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 1's rule "never after an https -> http downgrade": the probe withheld the token on the plain
    hop, but the chunk and stream requests restart from the probe's final (plain http) URL and decided the
    scheme from it, so the token went in clear text to http://HUB."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert.cert))
    mf.write_config(sources={"huggingface": {"endpoint": f"https://127.0.0.1:{dual.port}"}})
    proc = mf.run("--log-level", "debug", "download", "--url", "hf://a/b/file.bin", "--dest", str(mf.dest))
    plain = [(req.method, req.target, req.headers.get("authorization")) for scheme, req in dual.seen
             if scheme == "http"]
    assert plain, (proc.stderr, dual.seen)
    assert all(auth is None for _, _, auth in plain), (plain, proc.stderr)
    assert TOKEN not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("url", "auth_host", "expected"), [
    ("https://hub.example/x", "https://hub.example", True),
    ("http://hub.example/x", "https://hub.example", False),  # port 80 = port 80, but a downgrade
    ("http://hub.example:443/x", "https://hub.example", False),
    ("http://127.0.0.1:8443/x", "https://127.0.0.1:8443", False),
    ("https://127.0.0.1:8443/x", "https://127.0.0.1:8443", True),
    ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080", True),
    ("https://127.0.0.1:8080/x", "http://127.0.0.1:8080", True),  # an upgrade is fine
    ("https://evil.example/x", "https://hub.example", False),
])
def test_a_scoped_credential_never_follows_a_downgrade(url: str, auth_host: str, expected: bool) -> None:
    """Without ``auth_scheme`` (a chain that started off the endpoint) the scope's own scheme decides."""
    assert may_carry_credentials(url, auth_host) is expected
    assert may_carry_credentials(url, auth_host, "http") is expected


# -- Finding 3's class: a .part that is also another file's name ---------------------------------------------

PART_SIZE = 4 << 20


@pytest.mark.parametrize("ranges", [True, False], ids=["chunked", "single-stream"])
def test_resume_never_writes_into_a_file_the_part_is_hard_linked_to(mf: Modfetch, tmp_path: Path,
                                                                     ranges: bool) -> None:
    """Between a kill and the rerun the ``.part`` name became a hard link to another file (a dedup tool, a
    ``cp -al`` backup, someone else): resuming wrote the download into that file too, destroying it.  Now only
    modfetch's name is dropped and the download starts over; the other file keeps its bytes."""
    mf.write_config(concurrency={"per_file_chunks": 1, "chunk_size_mb": 1})
    server = GatedServer(make_content(PART_SIZE, seed=29), gate_at=2 * (1 << 20) + 4096, ranges=ranges,
                         head=ranges)
    with server:
        args = ["--quiet", "download", "--url", server.url, "--dest", str(mf.dest)]
        proc = mf.popen(*args)
        assert server.paused.wait(30), "the download never reached the pause"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        server.gate.set()
        part = mf.dest / "file.bin.part"
        assert part.exists()
        victim = tmp_path / "precious.bin"
        precious = b"P" * os.path.getsize(part)
        victim.write_bytes(precious)
        part.unlink()
        os.link(victim, part)
        again = mf.run(*args)
    assert again.returncode == 0, again.stderr
    assert victim.read_bytes() == precious
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert os.stat(mf.dest / "file.bin").st_ino != victim.stat().st_ino


def test_open_part_never_opens_a_shared_inode(tmp_path: Path) -> None:
    """The same rule at the function every ``.part`` open goes through (a link made before the open)."""
    victim = tmp_path / "other.bin"
    victim.write_bytes(b"keep me")
    part = tmp_path / "file.bin.part"
    os.link(victim, part)
    discarded: list[bool] = []
    fd = open_part(part, lambda: discarded.append(True))
    try:
        assert os.fstat(fd).st_nlink == 1 and os.fstat(fd).st_ino != victim.stat().st_ino
        os.pwrite(fd, b"new", 0)
    finally:
        os.close(fd)
    assert discarded == [True] and victim.read_bytes() == b"keep me"


# -- Finding 7's class: a name the file system can hold must not fail later through a longer temporary name --

LONG_STEM = "\u00e9" * 100 + "m" * 29  # 229 bytes, two-byte characters included: the name is 234 bytes


@pytest.mark.parametrize("stem_bytes", [229, 235])
def test_a_long_but_valid_name_is_placed_and_its_sidecars_written(mf: Modfetch, tmp_path: Path,
                                                                  stem_bytes: int) -> None:
    """A server-chosen name that passes the 240-byte rule (``X.gguf``) is downloaded, then ``--place`` wrote
    ``X.Modelfile`` through ``.X.Modelfile.modfetch-<12 hex>.tmp``: 23 bytes more than the name, past NAME_MAX,
    so the placement failed with ENAMETOOLONG although every real name fits."""
    stem = LONG_STEM[: 100] + "m" * (stem_bytes - 200)
    name = stem + ".gguf"
    assert len(name.encode()) == stem_bytes + 5
    mf.write_config(placement={"apps": {"ollama": {"preset": "ollama"}}})
    server = _gguf_server(tmp_path, f"attachment; filename*=UTF-8''{quote(name)}")
    try:
        result = mf.run("download", "--url", server.url + "/model", "--dest", str(mf.dest), "--place")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert (mf.dest / name).is_file()
    assert (mf.dest / (stem + ".Modelfile")).is_file(), result.stdout + result.stderr
    assert not [p for p in mf.dest.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name_bytes", [232, 240, 255])
def test_every_atomic_writer_fits_any_name_the_file_system_holds(tmp_path: Path, name_bytes: int) -> None:
    """The class at its root: the temporary name of an atomic write never grows past the final name's length
    budget (util/atomic.py, hf_cache refs, linker copies and replacements, Ollama Modelfiles)."""
    target = tmp_path / ("\u00e9" * 50 + "x" * (name_bytes - 100))
    assert len(target.name.encode()) == name_bytes
    assert write_atomic(target, b"data") and target.read_bytes() == b"data"
    write_ref(tmp_path / ("r" * name_bytes), "c" * 40)
    assert (tmp_path / ("r" * name_bytes)).read_text() == "c" * 40
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    copy_target = tmp_path / "sub" / target.name
    copy_target.parent.mkdir()
    copy_verified(SourceFile(source, hashlib.sha256(b"payload").hexdigest()), copy_target)
    assert copy_target.read_bytes() == b"payload"
    assert not [p for p in tmp_path.rglob("*.tmp")]


# -- secrets in a URL the user typed: every spelling a server may read as a token is masked everywhere ------

def _everything_under(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("query", ["x=1;token={s}", "key=1&amp;token={s}", "a=b;api_key={s}"])
def test_a_secret_hidden_in_one_query_pair_is_masked_in_output_logs_and_state(mf: Modfetch, query: str) -> None:
    """``redact_url`` masked only the values of secret parameter *names*; ``;`` separators (which parse_qsl no
    longer splits on, but some servers do) and ``&amp;`` pasted from HTML kept the token in the state DB and
    in ``status`` output."""
    secret = "SeCrEt0123456789Hidden"
    server = RawServer(lambda req, conn, srv: serve_file(req, conn))
    try:
        url = server.url("/f.bin?" + query.format(s=secret))
        proc = mf.run("--log-level", "debug", "download", "--url", url, "--dest", str(mf.dest))
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    status = mf.run("--json", "status")
    listed = mf.run("list")
    texts = proc.stdout + proc.stderr + status.stdout + status.stderr + listed.stdout + listed.stderr
    assert secret not in texts
    assert secret.encode() not in _everything_under(mf.home.parent)


# -- Finding 2's class: a single stream never writes past the size the free-space check was made for --------

ANNOUNCED = 100_000
OVERSIZE = 8 << 20  # what the server really sends (bounded, so that the old code could not fill /tmp)


def _oversized(kind: str) -> Callable[[Req, socket.socket, RawServer], bool]:
    """HEAD announces ANNOUNCED bytes; the probe's ranged GET makes modfetch keep that size for a single stream
    (``gzip``: a compressed 206; ``416``: an unsatisfiable bytes=0-0), then the full GET sends OVERSIZE bytes
    without a Content-Length: gzip-compressed zeros (a decompression bomb, ~8 KiB on the wire) or plain."""
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        if req.method == "HEAD":
            conn.sendall(f'HTTP/1.1 200 OK\r\nETag: "e1"\r\nContent-Length: {ANNOUNCED}\r\n'
                         "Connection: close\r\n\r\n".encode())
        elif "range" in req.headers and kind == "gzip":
            body = gzip.compress(b"\0")
            conn.sendall(f'HTTP/1.1 206 Partial Content\r\nETag: "e1"\r\nContent-Encoding: gzip\r\n'
                         f"Content-Range: bytes 0-0/{ANNOUNCED}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
        elif "range" in req.headers:
            conn.sendall(b'HTTP/1.1 416 Range Not Satisfiable\r\nETag: "e1"\r\nContent-Length: 0\r\n'
                         b"Connection: close\r\n\r\n")
        else:
            body = gzip.compress(b"\0" * OVERSIZE) if kind == "gzip" else b"\0" * OVERSIZE
            encoding = "Content-Encoding: gzip\r\n" if kind == "gzip" else ""
            with contextlib.suppress(OSError):
                conn.sendall(f'HTTP/1.1 200 OK\r\nETag: "e1"\r\n{encoding}Connection: close\r\n\r\n'.encode())
                conn.sendall(body)
        return False

    return handler


@pytest.mark.parametrize("kind", ["gzip", "416"])
def test_a_stream_longer_than_its_announced_size_is_cut_off(mf: Modfetch, kind: str) -> None:
    """The free-space check is made for the announced 100 kB, but a stream body without a Content-Length was
    written on for as long as the server sent (a gzip bomb: ~8 KiB on the wire, any size on disk; an endless
    one filled a 64 MiB ext4 image to ENOSPC) and then installed as the file.  Now the stream stops past the
    announced size: nothing installed, the ``.part`` never larger than announced."""
    biggest = [0]
    part = mf.dest / "e.bin.part"
    handler = _oversized(kind)

    def watched(req: Req, conn: socket.socket, server: RawServer) -> bool:
        with contextlib.suppress(OSError):
            biggest[0] = max(biggest[0], part.stat().st_size)
        return handler(req, conn, server)

    server = RawServer(watched)
    try:
        proc = mf.run("download", "--url", server.url("/e.bin"), "--dest", str(mf.dest))
    finally:
        server.close()
    assert proc.returncode == 1, proc.stderr
    assert "kept changing" in proc.stderr, proc.stderr
    assert not (mf.dest / "e.bin").exists()
    assert (part.stat().st_size if part.exists() else 0) <= ANNOUNCED
    assert biggest[0] <= ANNOUNCED


# -- Finding 6's class: server-chosen text never reaches the terminal as escape sequences -------------------

ESCAPES = "\x1b]0;PWNED\x07\x1b[2J\x1b[31m"


def test_a_hostile_reason_phrase_never_reaches_the_terminal_even_in_a_debug_traceback(mf: Modfetch) -> None:
    """The error line was made safe, but ``--log-level debug`` printed the traceback raw, and its last line
    quotes the server's reason phrase: ``\\x1b]0;...`` retitles the terminal, ``\\x1b[2J`` clears it."""
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        conn.sendall(f"HTTP/1.1 418 {ESCAPES}teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                     .encode("latin-1"))
        return False

    server = RawServer(handler)
    try:
        proc = mf.run("--log-level", "debug", "download", "--url", server.url("/f.bin"), "--dest", str(mf.dest))
    finally:
        server.close()
    assert proc.returncode == 1, proc.stderr
    assert "teapot" in proc.stderr and "Traceback" in proc.stderr
    assert "\x1b" not in proc.stderr + proc.stdout and "\x07" not in proc.stderr


# -- Finding 1's class: the token echoed into a URL the endpoint hands over without a redirect ---------------

@pytest.fixture
def pair() -> Iterator[Pair]:
    servers = Pair()
    yield servers
    servers.stop()


@pytest.mark.parametrize("echo", [True, False])
def test_token_echoed_into_a_listing_page_link_never_leaves_the_hub(mf: Modfetch, pair: Pair,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     echo: bool) -> None:
    """The Hub's tree listing is paginated by ``Link: <URL>; rel="next"``.  A next link to another host is
    fetched without the Authorization header, but a link that spells the token in its query handed it to that
    host anyway (three times, with retries): the echo rule was checked for redirects only.  Now a next page on
    another host is refused before any request (with or without the token in it)."""
    commit = "e" * 40

    def route(req: LookalikeRequest) -> Response:
        if req.path in ("/api/models/a/b", "/api/models/a/b/revision/main"):
            return json_response(200, {"id": "a/b", "sha": commit})
        if req.path.startswith(f"/api/models/a/b/tree/{commit}"):
            nxt = f"http://127.0.0.1:{pair.evil.port}/page2" + (f"?token={quote(TOKEN, safe='')}" if echo else "")
            return Response(200, b"[]", [("Content-Type", "application/json"), ("Link", f'<{nxt}>; rel="next"')])
        return json_response(404, {"error": "nope"})

    pair.route = route
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    mf.write_config(sources={"huggingface": {"endpoint": pair.hub.url}})
    proc = mf.run("download", "--url", "hf://a/b", "--dest", str(mf.dest))
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in pair.hub.requests())
    pair.evil_saw_nothing(TOKEN)
    assert proc.returncode == 1, proc.stderr
    assert_clean_error(proc.stderr, "links its next page to another host")
    assert TOKEN not in proc.stdout + proc.stderr


CIV_TOKEN = "civ0123456789BlackboxEcho"


def test_civitai_token_echoed_into_a_preview_url_never_leaves_civitai(mf: Modfetch, pair: Pair,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``--metadata`` fetches the version's preview image from the URL in CivitAI's JSON, off the endpoint
    without the Authorization header; a URL that spells the token in its query still handed it to that host.
    Now the preview is skipped with a note; the model and its info are kept."""
    echo = f"http://127.0.0.1:{pair.evil.port}/img.png?token={CIV_TOKEN}"
    files = [{"id": 1, "name": "m.safetensors", "primary": True, "sizeKB": len(DATA) / 1024,
              "downloadUrl": f"{pair.hub.url}/api/download/models/7", "hashes": {}}]
    version = {"id": 7, "modelId": 5, "name": "v1", "files": files,
               "images": [{"url": echo, "type": "image", "nsfwLevel": 1}]}
    model = {"id": 5, "name": "m", "type": "Checkpoint", "modelVersions": [version]}

    def route(req: LookalikeRequest) -> Response:
        if req.path == "/api/v1/models/5":
            return json_response(200, model)
        if req.path == "/api/v1/model-versions/7":
            return json_response(200, version)
        if req.path.startswith("/api/download/"):
            return Response(200, DATA, [("Content-Type", "application/octet-stream"),
                                        ("Content-Disposition", 'attachment; filename="m.safetensors"')])
        return json_response(404, {"error": "Not found"})

    pair.route = route
    monkeypatch.setenv("CIVITAI_TOKEN", CIV_TOKEN)
    mf.write_config(sources={"civitai": {"endpoint": pair.hub.url}})
    proc = mf.run("download", "--metadata", "--url", "civitai://model/5", "--dest", str(mf.dest))
    assert any(r.headers.get("authorization") == f"Bearer {CIV_TOKEN}" for r in pair.hub.requests()), proc.stderr
    pair.evil_saw_nothing(CIV_TOKEN)
    assert proc.returncode == 0, proc.stderr
    assert (mf.dest / "m.safetensors").read_bytes() == DATA
    assert (mf.dest / "m.civitai.info").is_file() and not list(mf.dest.glob("m.preview.*"))
    assert CIV_TOKEN not in proc.stdout + proc.stderr


# -- Finding 3's class: "verified" is never said of bytes that were not hashed -------------------------------

def test_a_file_changed_in_place_with_its_mtime_restored_is_not_reported_verified(mf: Modfetch) -> None:
    """Rerunning a finished download answered ``already present and verified`` with the recorded hash for a
    file whose bytes were overwritten in place, same size, mtime restored (``touch -d``): the reuse of the
    recorded hash keyed on size, mtime and inode only.  The ctime moves on every such change."""
    server = RawServer(lambda req, conn, srv: serve_file(req, conn))
    try:
        first = mf.run("download", "--url", server.url("/f.bin"), "--dest", str(mf.dest))
        assert first.returncode == 0, first.stderr
        path = mf.dest / "f.bin"
        before = path.stat()
        with open(path, "r+b") as handle:
            handle.seek(1000)
            handle.write(b"EVIL")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        real = sha256_of(path)
        again = mf.run("download", "--url", server.url("/f.bin"), "--dest", str(mf.dest))
    finally:
        server.close()
    assert "already present and verified" not in again.stderr, again.stderr
    if again.returncode == 0:  # mended in place (a plain rerun repairs): what it reports is what is on disk
        assert sha256_of(path) in again.stdout and sha256_of(path) != real, (again.stdout, again.stderr)


# -- Finding 5's class: nothing at modfetch's own paths can hang it without bound ------------------------------

def test_a_fifo_at_the_state_db_path_is_one_clear_error_not_a_hang(mf: Modfetch) -> None:
    """A FIFO (or another non-regular file) at the state DB path: sqlite opens it read-write, then blocks for
    ever reading its header; SIGTERM does not help (sqlite retries the read after EINTR), only SIGKILL does."""
    mf.state_db.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(mf.state_db)
    server = RawServer(lambda req, conn, srv: serve_file(req, conn))
    proc = mf.popen("download", "--url", server.url("/f.bin"), "--dest", str(mf.dest))
    try:
        _, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("modfetch download hung on a FIFO at the state DB path")
    finally:
        server.close()
    assert proc.returncode == 1
    assert_clean_error(err, "state database")
