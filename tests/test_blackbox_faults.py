"""Black-box runs of the installed ``modfetch download`` against raw-socket servers that misbehave.

Every run must end with exit 0 and exactly the bytes the server meant, or one ``modfetch: error:`` line (plus
an optional ``  hint:`` line), a non-zero exit, no traceback, within bounded time, and nothing already on disk
lost.  The servers here speak raw bytes on 127.0.0.1 so they can break HTTP in ways ``http.server`` cannot.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

DATA = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB of deterministic bytes
_RANGE = re.compile(r"^\s*bytes=(\d*)-(\d*)\s*$", re.I)
RUN_TIMEOUT = 40.0


def _modfetch() -> list[str]:
    exe = Path(sys.executable).with_name("modfetch")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("modfetch")
    return [found] if found else [sys.executable, "-m", "modfetch"]


@dataclass
class Req:
    method: str
    target: str
    headers: dict[str, str]


Handler = Callable[[Req, socket.socket, "RawServer"], None]


@dataclass
class RawServer:
    """One thread per connection; ``handler`` writes raw bytes for each request, then the connection closes
    (unless it returns True: keep reading requests on the same connection)."""

    handler: Handler
    requests: list[Req] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    host: str = "127.0.0.1"  # "::1" for IPv6

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path: str = "/file.bin") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                req = Req(method, target, headers)
                self.requests.append(req)
                if not self.handler(req, conn, self):
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self.stop_event.set()
        self.sock.close()


def response(status: str, headers: list[tuple[str, str]], body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    head = f"{version} {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def serve_file(req: Req, conn: socket.socket, data: bytes = DATA, extra: list[tuple[str, str]] | None = None,
               ranges: bool = True) -> bool:
    """A correct server for ``data`` (HEAD, GET, single ranges), one request per connection."""
    extra = list(extra or [])
    match = _RANGE.match(req.headers.get("range", "")) if ranges else None
    base = [("Connection", "close"), ("ETag", '"v1"'), *extra]
    if match:
        start = int(match.group(1) or 0)
        end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            conn.sendall(response("416 Range Not Satisfiable",
                                  [*base, ("Content-Range", f"bytes */{len(data)}"), ("Content-Length", "0")]))
            return False
        body = data[start:end + 1]
        conn.sendall(response("206 Partial Content", [*base, ("Content-Range", f"bytes {start}-{end}/{len(data)}"),
                                                       ("Content-Length", str(len(body)))],
                              b"" if req.method == "HEAD" else body))
        return False
    conn.sendall(response("200 OK", [*base, ("Content-Length", str(len(data)))],
                          b"" if req.method == "HEAD" else data))
    return False


@pytest.fixture
def raw_server() -> Iterator[Callable[[Handler], RawServer]]:
    started: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    elapsed: float
    dest: Path


def cli_runner(tmp_path: Path, timeout_seconds: float = 3, max_retries: int = 2) -> Callable[..., Run]:
    """``run(*args)``: the installed ``modfetch download`` with an isolated HOME, small timeouts and few retries."""
    home = tmp_path / "home"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": 1,
        "network": {"timeout_seconds": timeout_seconds},
        "concurrency": {"max_retries": max_retries, "backoff_min_ms": 10, "backoff_max_ms": 50,
                        "per_file_chunks": 4},
    }))
    dest = tmp_path / "dest"

    def run(*args: str, dest_dir: Path | None = None, timeout: float = RUN_TIMEOUT) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and "TOKEN" not in k}
        env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
                   NO_PROXY="127.0.0.1,localhost")
        target = dest_dir or dest
        started = time.monotonic()
        proc = subprocess.run([*_modfetch(), "--config", str(config), "--quiet", "download", *args,
                               "--dest", str(target)],
                              capture_output=True, text=True, env=env, timeout=timeout, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started, target)

    return run


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Run]:
    """Run the installed ``modfetch download`` with an isolated HOME and small timeouts."""
    return cli_runner(tmp_path)


def assert_ok(run: Run, name: str, data: bytes) -> None:
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    path = run.dest / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def assert_clean_error(run: Run) -> str:
    assert run.code != 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("modfetch: error:")]
    assert len(errors) == 1, run.stderr
    after = lines[lines.index(errors[0]) + 1:]
    assert all(line.startswith("  hint:") for line in after) and len(after) <= 1, run.stderr
    return errors[0]


def _range(req: Req) -> tuple[int, int] | None:
    match = re.match(r"bytes=(\d+)-(\d+)$", req.headers.get("range", ""))
    return (int(match[1]), int(match[2])) if match else None


BIG = random.Random(3).randbytes(4 << 20)  # incompressible: gzip makes it *longer*, enough to fill a range


# -- regressions --------------------------------------------------------------------------------------------
def test_compressed_chunk_responses_are_refused_not_written(raw_server, cli) -> None:
    """The probe's 206 is identity but data 206s come gzipped: their raw bytes used to be written at the chunk
    offsets and the run exited 0 with a corrupt file."""
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        r = _range(req)
        if r and r != (0, 0):
            body = gzip.compress(BIG[r[0]:r[1] + 1])
            conn.sendall(response("206 Partial Content", [("Connection", "close"), ("Content-Encoding", "gzip"),
                                                          ("Content-Range", f"bytes {r[0]}-{r[1]}/{len(BIG)}")],
                                  body))
            return False
        return serve_file(req, conn, BIG)

    run = cli(raw_server(handler).url())
    assert "Content-Encoding: gzip" in assert_clean_error(run)
    assert not (run.dest / "file.bin").exists()


def test_gzip_forced_on_every_206_falls_back_to_one_stream(raw_server, cli) -> None:
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        r = _range(req)
        if r:
            body = gzip.compress(DATA[r[0]:r[1] + 1])
            conn.sendall(response("206 Partial Content", [("Connection", "close"), ("Content-Encoding", "gzip"),
                                                          ("Content-Range", f"bytes {r[0]}-{r[1]}/{len(DATA)}"),
                                                          ("Content-Length", str(len(body)))], body))
            return False
        return serve_file(req, conn)

    assert_ok(cli(raw_server(handler).url()), "file.bin", DATA)


@pytest.mark.parametrize("header", [("Content-Length", "9" * 23), ("Content-Range", "bytes 0-0/" + "9" * 20),
                                    ("Content-Range", "bytes 0-0/" + "9" * 5000)])
def test_absurd_sizes_are_malformed_headers_not_internal_errors(raw_server, cli, header) -> None:
    """A size past 2**63-1 used to reach SQLite: 'internal error: OverflowError'."""
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        if header[0] == "Content-Length":
            conn.sendall(response("200 OK", [("Connection", "close"), header],
                                  b"" if req.method == "HEAD" else DATA))
            return False
        if _range(req) == (0, 0):
            conn.sendall(response("206 Partial Content", [("Connection", "close"), header, ("Content-Length", "1")],
                                  DATA[:1]))
            return False
        return serve_file(req, conn)

    assert_ok(cli(raw_server(handler).url()), "file.bin", DATA)


@pytest.mark.parametrize("content_range", [f"bytes */{len(DATA)}", None])
def test_416_on_the_probe_of_a_non_empty_file_downloads_as_one_stream(raw_server, cli, content_range) -> None:
    """Used to be retried as a network failure and end in 'cannot reach ...'."""
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        if _range(req):
            extra = [("Content-Range", content_range)] if content_range else []
            conn.sendall(response("416 Range Not Satisfiable",
                                  [("Connection", "close"), *extra, ("Content-Length", "0")]))
            return False
        return serve_file(req, conn, ranges=False)

    assert_ok(cli(raw_server(handler).url()), "file.bin", DATA)


def test_longest_allowed_name_gets_its_checksum_file(raw_server, cli) -> None:
    """A 240-byte name made the checksum's temp name pass NAME_MAX: error after the file was installed."""
    name = "%C3%A9" * 300 + ".gguf"
    server = raw_server(lambda req, conn, srv: serve_file(
        req, conn, extra=[("Content-Disposition", f"attachment; filename*=UTF-8''{name}")]))
    run = cli(server.url("/"))
    assert run.code == 0, run.stderr
    (final,) = [p for p in run.dest.iterdir() if p.name.endswith(".gguf")]
    assert final.read_bytes() == DATA
    assert Path(str(final) + ".sha256").read_text().split()[0] == hashlib.sha256(DATA).hexdigest()
    assert sorted(p.name for p in run.dest.iterdir()) == sorted([final.name, final.name + ".sha256"])


# -- cases that already behaved -----------------------------------------------------------------------------
def _http10(req: Req, conn: socket.socket, server: RawServer) -> bool:
    conn.sendall(response("200 OK", [], b"" if req.method == "HEAD" else DATA, version="HTTP/1.0"))
    return False


def _multipart(req: Req, conn: socket.socket, server: RawServer) -> bool:
    r = _range(req)
    if r:
        part = (b"--XX\r\nContent-Type: application/octet-stream\r\n"
                + f"Content-Range: bytes {r[0]}-{r[1]}/{len(DATA)}\r\n\r\n".encode() + DATA[r[0]:r[1] + 1]
                + b"\r\n--XX--\r\n")
        conn.sendall(response("206 Partial Content", [("Connection", "close"), ("Content-Length", str(len(part))),
                                                      ("Content-Type", "multipart/byteranges; boundary=XX")], part))
        return False
    return serve_file(req, conn)


def _gzip200(req: Req, conn: socket.socket, server: RawServer) -> bool:
    body = gzip.compress(DATA)
    conn.sendall(response("200 OK", [("Connection", "close"), ("Content-Encoding", "gzip"),
                                     ("Content-Length", str(len(body)))], b"" if req.method == "HEAD" else body))
    return False


def _head_with_body(req: Req, conn: socket.socket, server: RawServer) -> bool:
    if req.method == "HEAD":
        conn.sendall(response("200 OK", [("Content-Length", str(len(DATA)))], b"JUNK" * 100))
        return False
    return serve_file(req, conn)


def _bad_range_order(req: Req, conn: socket.socket, server: RawServer) -> bool:
    if _range(req):
        conn.sendall(response("206 Partial Content", [("Connection", "close"), ("Content-Range", "bytes 5-2/9"),
                                                      ("Content-Length", "1")], b"x"))
        return False
    return serve_file(req, conn)


@pytest.mark.parametrize("handler", [_http10, _multipart, _gzip200, _head_with_body, _bad_range_order])
def test_odd_but_valid_servers_deliver_exact_bytes(raw_server, cli, handler) -> None:
    assert_ok(cli(raw_server(handler).url()), "file.bin", DATA)


@pytest.mark.parametrize("data", [b"", b"Z"])
def test_tiny_files(raw_server, cli, data) -> None:
    assert_ok(cli(raw_server(lambda req, conn, srv: serve_file(req, conn, data)).url()), "file.bin", data)


def _short_body(req: Req, conn: socket.socket, server: RawServer) -> bool:
    conn.sendall(response("200 OK", [("Connection", "close"), ("Content-Length", str(len(DATA) + 100))],
                          b"" if req.method == "HEAD" else DATA))
    return False


def _redirect(location: str) -> Handler:
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        conn.sendall(response("302 Found", [("Connection", "close"), ("Location", location or req.target),
                                            ("Content-Length", "0")]))
        return False
    return handler


def _garbage(req: Req, conn: socket.socket, server: RawServer) -> bool:
    conn.sendall(b"HELLO THERE\r\n\r\nsomething")
    return False


def _long_header(req: Req, conn: socket.socket, server: RawServer) -> bool:
    conn.sendall(response("200 OK", [("X-Long", "a" * 200_000), ("Content-Length", str(len(DATA)))], DATA))
    return False


def _size_doubles(req: Req, conn: socket.socket, server: RawServer) -> bool:
    r = _range(req)
    if r and r[0] > 0:
        body = BIG[r[0]:r[1] + 1]
        conn.sendall(response("206 Partial Content", [("Connection", "close"), ("Content-Length", str(len(body))),
                                                      ("Content-Range", f"bytes {r[0]}-{r[1]}/{2 * len(BIG)}")],
                              body))
        return False
    return serve_file(req, conn, BIG)


@pytest.mark.parametrize("handler", [_short_body, _redirect(""), _redirect("file:///etc/passwd"), _garbage,
                                     _long_header, _size_doubles], ids=["short", "loop", "file", "garbage", "longhdr",
                                                                         "total-changes"])
def test_broken_servers_fail_cleanly(raw_server, cli, handler) -> None:
    run = cli(raw_server(handler).url())
    assert_clean_error(run)
    assert not (run.dest / "file.bin").exists()
    assert "passwd" not in "".join(p.name for p in run.dest.rglob("*")) if run.dest.exists() else True


def test_silent_server_times_out_within_bounds(raw_server, cli) -> None:
    server = raw_server(lambda req, conn, srv: srv.stop_event.wait(60) and False)
    run = cli(server.url())
    assert_clean_error(run)
    # (HEAD + GET probe) x (1 + max_retries) x timeout_seconds, plus start-up
    assert run.elapsed < 2 * 3 * 3 + 8


def test_userinfo_password_never_shown(raw_server, cli) -> None:
    server = raw_server(lambda req, conn, srv: serve_file(req, conn))
    run = cli(server.url().replace("http://", "http://user:s3cr3tpw@"), "--log-level", "debug")
    assert_ok(run, "file.bin", DATA)
    assert "s3cr3tpw" not in run.stdout + run.stderr


def test_existing_file_survives_a_broken_rerun(raw_server, cli) -> None:
    mode = ["ok"]

    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        if mode[0] == "ok":
            return serve_file(req, conn)
        return _garbage(req, conn, server)

    server = raw_server(handler)
    assert_ok(cli(server.url()), "file.bin", DATA)
    mode[0] = "broken"
    for extra in ((), ("--force",)):
        run = cli(server.url(), *extra)
        assert_clean_error(run)
        assert (run.dest / "file.bin").read_bytes() == DATA


def test_dest_under_a_file_and_out_with_traversal(raw_server, cli, tmp_path) -> None:
    server = raw_server(lambda req, conn, srv: serve_file(req, conn))
    (tmp_path / "afile").write_text("x")
    assert "Not a directory" in assert_clean_error(cli(server.url(), dest_dir=tmp_path / "afile" / "sub"))
    requests_before = len(server.requests)
    for out in ("../../escape.bin", "sub/x.bin", "", "..", ".hidden", "a\x01b"):
        line = assert_clean_error(run := cli(server.url(), "--out", out))
        assert "--out must be a plain file name" in line and run.code == 2
        assert not run.dest.exists() or not any(run.dest.iterdir())
    assert len(server.requests) == requests_before  # refused before any request
    assert not (tmp_path / "escape.bin").exists()
