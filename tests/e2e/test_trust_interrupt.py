"""Issue 13, finding 4: every blocking network read stops within about a second of SIGINT/SIGTERM.

A real ``modfetch`` process talks to a local server that answers the request and then trickles one body byte
every 0.1 s (reads never time out, but a 1 MiB block never fills) or never answers at all.  Once the server
has seen the request (a server-side Event, no sleeps), the test sends SIGINT or SIGTERM and expects exit 130
within ~3 s with the state saved: a chunked download, a single stream (no Range support), the probe and an
hf:// API call, each run alone and as a batch job, plus an hf:// repo whose files download in parallel.
"""

from __future__ import annotations

import contextlib
import http.server
import signal
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.conftest import Modfetch, wait_for
from tests.servers.lookalike import Request
from tests.servers.lookalike.hub import HubApp, HubData

SIZE = 4 << 20
STOP_BUDGET = 3.5  # seconds from the signal to the exit, process teardown included, on a loaded machine


class SlowServer:
    """Files named ``*chunked*`` (Range support), ``*stream*`` (none) and ``*probe*`` (HEAD never answered);
    ``/api/`` never answered with ``stall_api``, else answered by a Hub look-alike (repo ``acme/slowrepo``)."""

    def __init__(self, stall_api: bool) -> None:
        self.stall_api = stall_api
        self.seen = threading.Event()  # a request whose answer blocks the client has arrived
        self.done = threading.Event()
        data = HubData()
        data.add_repo("acme/slowrepo", {"a-stream.txt": b"a" * 1000, "b-stream.txt": b"b" * 1000})
        self.hub = HubApp(data, "http://127.0.0.1:9")  # (no LFS files: the CDN is never used)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_HEAD(self) -> None:
                owner.handle(self)

            def do_GET(self) -> None:
                owner.handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stall(self) -> None:
        self.seen.set()
        self.done.wait()

    def trickle(self, handler: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str],
                signal_seen: bool) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.flush()
        if handler.command == "HEAD":
            return
        if signal_seen:
            self.seen.set()
        with contextlib.suppress(OSError):
            while not self.done.wait(0.1):
                handler.wfile.write(b"x")
                handler.wfile.flush()

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        if path.startswith("/api/"):
            if self.stall_api:
                self.stall()
                return
            self.answer_hub(h)
            return
        ranged = h.headers.get("Range")
        if "probe" in path:
            self.stall()
        elif "stream" in path:
            # "nolen": no Content-Length, the body ends when the connection does (a shut-down socket looks so)
            framing = {"Connection": "close"} if "nolen" in path else {"Content-Length": str(SIZE)}
            self.trickle(h, 200, framing, signal_seen=ranged is None)
        elif ranged == "bytes=0-0":
            h.send_response(206)
            for name, value in {"Content-Range": f"bytes 0-0/{SIZE}", "Content-Length": "1", "ETag": '"v1"',
                                "Accept-Ranges": "bytes"}.items():
                h.send_header(name, value)
            h.end_headers()
            if h.command == "GET":
                h.wfile.write(b"x")
        elif ranged:
            start, end = (int(v) for v in ranged.split("=", 1)[1].split("-"))
            self.trickle(h, 206, {"Content-Range": f"bytes {start}-{end}/{SIZE}", "ETag": '"v1"',
                                  "Content-Length": str(end - start + 1)}, signal_seen=True)
        else:
            self.trickle(h, 200, {"Content-Length": str(SIZE), "Accept-Ranges": "bytes", "ETag": '"v1"'},
                         signal_seen=False)

    def answer_hub(self, h: http.server.BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        response = self.hub(Request(h.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                                    headers, h.path))
        h.send_response(response.status)
        for name, value in response.headers:
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(response.body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(response.body)

    def __enter__(self) -> SlowServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


CASES = {
    # mode: (URI template, API stalls?, rows expected afterwards)
    "chunked": ("{url}/file-chunked.bin", False, "interrupted"),
    "single-stream": ("{url}/file-stream.bin", False, "interrupted"),
    "stream-without-length": ("{url}/file-stream-nolen.bin", False, "interrupted"),
    "probe": ("{url}/file-probe.bin", False, None),
    "api-call": ("hf://acme/model/file.bin", True, None),
}


def _run_and_stop(mf: Modfetch, server: SlowServer, sig: int, *args: str) -> tuple[int, str, float]:
    mf.write_config(sources={"huggingface": {"endpoint": server.url}},
                    concurrency={"per_file_chunks": 4, "chunk_size_mb": 1})
    proc = mf.popen("--quiet", "download", *args)
    try:
        wait_for(server.seen.is_set, "the server to see the request", proc)
        signalled = time.monotonic()
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=10)
        except Exception:
            proc.kill()
            raise
        return proc.returncode, err, time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _check_stopped(mf: Modfetch, code: int, err: str, took: float, expected_status: str | None) -> None:
    assert code == 130, err
    assert took < STOP_BUDGET, f"stopping took {took:.1f}s: {err}"
    assert "Traceback" not in err, err
    assert "interrupted" in err, err
    rows = mf.rows()
    assert all(r["status"] != "running" for r in rows), rows
    if expected_status is not None:
        assert [r["status"] for r in rows] == [expected_status], rows


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("runner", ["single", "batch"])
@pytest.mark.parametrize("mode", list(CASES))
def test_every_blocking_read_stops_within_a_second(mf: Modfetch, tmp_path: Path, mode: str, runner: str,
                                                    sig: int) -> None:
    template, stall_api, status = CASES[mode]
    with SlowServer(stall_api=stall_api) as server:
        uri = template.format(url=server.url)
        if runner == "single":
            args = ("--url", uri, "--dest", str(mf.dest))
        else:
            jobs = tmp_path / "jobs.yml"
            jobs.write_text(yaml.safe_dump({"jobs": [{"uri": uri, "dest": str(mf.dest)}]}), encoding="utf-8")
            args = ("--batch", str(jobs))
        code, err, took = _run_and_stop(mf, server, sig, *args)
    _check_stopped(mf, code, err, took, status)
    assert not list(mf.dest.glob("file-*.bin")), "a stopped download was installed"
    if status == "interrupted":
        assert "rerun" in mf.rows()[0]["error"]  # resumable: the rerun picks it up


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_repo_whose_files_stream_in_parallel_stops_within_a_second(mf: Modfetch, sig: int) -> None:
    """``download hf://owner/repo`` runs its files in pool threads while the main thread waits: the stop must
    reach the threads' reads too, not only set a flag they look at between 1 MiB blocks."""
    with SlowServer(stall_api=False) as server:
        code, err, took = _run_and_stop(mf, server, sig, "--url", "hf://acme/slowrepo", "--dest", str(mf.dest))
    _check_stopped(mf, code, err, took, None)
    assert {r["status"] for r in mf.rows()} <= {"interrupted"}, mf.rows()
