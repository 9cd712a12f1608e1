"""More black-box runs of the installed ``modfetch download`` against raw-socket servers (second round).

Same acceptance rule as ``test_blackbox_faults``: exit 0 with exactly the right bytes, or one clean
``modfetch: error:`` line, non-zero exit, no traceback, bounded time.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Run, assert_ok, assert_run_error, download_runner
from tests.servers.raw import BIG, DATA, RawServer, Req, requested_range, response, serve_file


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Run]:
    """The installed ``modfetch download`` with an isolated HOME, a 1 s timeout and one retry."""
    return download_runner(tmp_path, timeout_seconds=1, max_retries=1)


def test_backend_ignoring_range_falls_back_to_one_stream(raw_server, cli) -> None:
    """Load balancer where only some backends do Range: the probe got a 206, chunk requests got the whole,
    unchanged file (200).  Each restart probed 206 again and the run ended in 'the remote file kept
    changing', for ever; now it restarts once as a single stream."""
    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        r = requested_range(req)
        return serve_file(req, conn, BIG, ranges=not r or r == (0, 0))

    assert_ok(cli(raw_server(handler).url()), "file.bin", BIG)


@pytest.mark.parametrize("interim", [b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
                                     b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n"])
def test_informational_responses_before_the_real_one_are_skipped(raw_server, cli, interim) -> None:
    """http.client skips only '100 Continue': a 103 was taken for the response ('unexpected HTTP 103')."""
    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        conn.sendall(interim)
        return serve_file(req, conn, BIG)

    assert_ok(cli(raw_server(handler).url()), "file.bin", BIG)


def test_headers_cut_off_are_not_an_empty_file(raw_server, cli) -> None:
    """Connection closed inside the header block (no blank line): http.client took EOF as the end of the
    headers, and modfetch installed an empty file and exited 0."""
    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Partial: abc")
        return False

    run = cli(raw_server(handler).url())
    assert_run_error(run)
    assert not (run.dest / "file.bin").exists()


def test_server_trickling_its_headers_gives_up_in_bounded_time(raw_server, cli) -> None:
    """One header byte every 0.2 s never trips the per-recv read timeout and the stall watchdog only watches
    bodies: the probe used to wait for ever.  Headers now get 2 x timeout_seconds."""
    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not srv.stop_event.wait(0.2):
            conn.sendall(b"a")
        return False

    run = cli(raw_server(handler).url())
    assert_run_error(run)
    # (HEAD + GET probe) x (1 + max_retries) x 2 x timeout_seconds, plus start-up
    assert run.elapsed < 2 * 2 * 2 * 1 + 6


def test_later_responses_are_fine_after_interim_ones_on_kept_alive_connections(raw_server, cli) -> None:
    """Keep-alive server that sends a 103 before every response: no request may read another's response."""
    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\n\r\n")
        r = requested_range(req)
        if r:
            body = DATA[r[0]:r[1] + 1]
            conn.sendall(response("206 Partial Content", [("Content-Range", f"bytes {r[0]}-{r[1]}/{len(DATA)}"),
                                                          ("Content-Length", str(len(body)))], body))
        else:
            conn.sendall(response("200 OK", [("Content-Length", str(len(DATA)))],
                                  b"" if req.method == "HEAD" else DATA))
        return True

    assert_ok(cli(raw_server(handler).url()), "file.bin", DATA)



def test_conflicting_content_lengths_are_a_malformed_response_not_a_network_error(raw_server, cli) -> None:
    """Two different Content-Length headers: urllib3 refuses the response (rightly); it used to be retried
    and reported as 'cannot reach ...: InvalidHeader', pointing at the network instead of the server."""
    def handler(req: Req, conn: socket.socket, srv: RawServer) -> bool:
        conn.sendall(response("200 OK", [("Content-Length", str(len(DATA))), ("Content-Length", "7")],
                              b"" if req.method == "HEAD" else DATA))
        return False

    srv = raw_server(handler)
    run = cli(srv.url())
    line = assert_run_error(run)
    assert "malformed response" in line and "cannot reach" not in line
    assert len(srv.requests) <= 2  # HEAD + the GET probe: nothing retried
    assert not (run.dest / "file.bin").exists()
