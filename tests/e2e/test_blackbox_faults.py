"""Black-box runs of the installed ``modfetch download`` against raw-socket servers that misbehave.

Every run must end with exit 0 and exactly the bytes the server meant, or one ``modfetch: error:`` line (plus
an optional ``  hint:`` line), a non-zero exit, no traceback, within bounded time, and nothing already on disk
lost.  The servers here speak raw bytes on 127.0.0.1 so they can break HTTP in ways ``http.server`` cannot.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
from pathlib import Path

import pytest

from tests.helpers import assert_ok, assert_run_error, download_runner
from tests.servers.raw import BIG, DATA, Handler, RawServer, Req, requested_range, response, serve_file


# -- regressions --------------------------------------------------------------------------------------------
def test_compressed_chunk_responses_are_refused_not_written(raw_server, cli) -> None:
    """The probe's 206 is identity but data 206s come gzipped: their raw bytes used to be written at the chunk
    offsets and the run exited 0 with a corrupt file."""
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        r = requested_range(req)
        if r and r != (0, 0):
            body = gzip.compress(BIG[r[0]:r[1] + 1])
            conn.sendall(response("206 Partial Content", [("Connection", "close"), ("Content-Encoding", "gzip"),
                                                          ("Content-Range", f"bytes {r[0]}-{r[1]}/{len(BIG)}")],
                                  body))
            return False
        return serve_file(req, conn, BIG)

    run = cli(raw_server(handler).url())
    assert "Content-Encoding: gzip" in assert_run_error(run)
    assert not (run.dest / "file.bin").exists()


def test_gzip_forced_on_every_206_falls_back_to_one_stream(raw_server, cli) -> None:
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        r = requested_range(req)
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
        if requested_range(req) == (0, 0):
            conn.sendall(response("206 Partial Content", [("Connection", "close"), header, ("Content-Length", "1")],
                                  DATA[:1]))
            return False
        return serve_file(req, conn)

    assert_ok(cli(raw_server(handler).url()), "file.bin", DATA)


@pytest.mark.parametrize("content_range", [f"bytes */{len(DATA)}", None])
def test_416_on_the_probe_of_a_non_empty_file_downloads_as_one_stream(raw_server, cli, content_range) -> None:
    """Used to be retried as a network failure and end in 'cannot reach ...'."""
    def handler(req: Req, conn: socket.socket, server: RawServer) -> bool:
        if requested_range(req):
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
    r = requested_range(req)
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
    if requested_range(req):
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
    r = requested_range(req)
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
    assert_run_error(run)
    assert not (run.dest / "file.bin").exists()
    assert "passwd" not in "".join(p.name for p in run.dest.rglob("*")) if run.dest.exists() else True


def test_silent_server_times_out_within_bounds(raw_server, tmp_path: Path) -> None:
    server = raw_server(lambda req, conn, srv: srv.stop_event.wait(60) and False)
    run = download_runner(tmp_path, timeout_seconds=1, max_retries=1)(server.url())
    assert_run_error(run)
    # (HEAD + GET probe) x (1 + max_retries) x timeout_seconds, plus start-up
    assert run.elapsed < 2 * 2 * 1 + 8


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
        assert_run_error(run)
        assert (run.dest / "file.bin").read_bytes() == DATA


def test_dest_under_a_file_and_out_with_traversal(raw_server, cli, tmp_path) -> None:
    server = raw_server(lambda req, conn, srv: serve_file(req, conn))
    (tmp_path / "afile").write_text("x")
    assert "Not a directory" in assert_run_error(cli(server.url(), dest_dir=tmp_path / "afile" / "sub"))
    requests_before = len(server.requests)
    for out in ("../../escape.bin", "sub/x.bin", "", "..", ".hidden", "a\x01b"):
        line = assert_run_error(run := cli(server.url(), "--out", out))
        assert "--out must be a plain file name" in line and run.code == 2
        assert not run.dest.exists() or not any(run.dest.iterdir())
    assert len(server.requests) == requests_before  # refused before any request
    assert not (tmp_path / "escape.bin").exists()
