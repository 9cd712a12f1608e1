"""A fault-injecting HTTP/1.1 file server for tests (stdlib only, real sockets on 127.0.0.1).

It serves deterministic random bytes of a given size at any path and misbehaves on request: no Range support,
HEAD refused or lying, chunked transfer without Content-Length, connections cut mid-body, 503/429 with
Retry-After, stalls, 206s with a wrong Content-Range, content that changes (new ETag) after K requests,
hostile Content-Disposition names, trickling, wrong bytes.  Every request is recorded (method, path, headers,
the range asked for, status, bytes sent, time) so tests can assert what the client did.

Faults that hit "data requests" (every GET except the ``Range: bytes=0-0`` probe, unless ``include_probe``)
fire on the first ``*_times`` matching requests (``None``: on every one).

Use it from pytest through the ``faulty_server`` fixture in ``tests/conftest.py``, from Python::

    with FaultyServer(size=8 << 20, faults=Faults(cut_after=100_000)) as server:
        download(server.url)
        assert server.data_requests()[1].range_start > 0

or standalone (scripts/uat)::

    python -m tests.servers.faulty --port 8765 --size 64M --mode cut
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import email.utils
import hashlib
import random
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PIECE = 64 << 10
STALL_CAP = 60.0      # no single stall or hold outlasts this, even if the test forgets to stop the server
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)
_LAST_MODIFIED = (1_700_000_000, 1_700_086_400)


def make_content(size: int, seed: int = 1) -> bytes:
    """``size`` deterministic pseudo-random bytes (the same for the same seed, in every process)."""
    rng = random.Random(seed)
    if size < (64 << 20):
        return rng.randbytes(size)
    # randbytes() overflows a C int past 256 MiB; build big contents from 64 MiB pieces.
    return b"".join(rng.randbytes(min(64 << 20, size - off)) for off in range(0, size, 64 << 20))


@dataclass
class Faults:
    """How the server misbehaves.  Change it mid-test with ``FaultyServer.configure(**changes)``."""

    # -- what the entity looks like
    ranges: bool = True                    # answer Range with 206; False: ignore Range, always 200
    advertise_ranges: bool | None = None   # Accept-Ranges: bytes (default: same as ``ranges``)
    chunked: bool = False                  # no Content-Length: Transfer-Encoding: chunked (ignores Range)
    etag: bool = True
    weak_etag: bool = False                # W/"..." (not usable in If-Range)
    last_modified: bool = True
    disposition: str | None = None         # raw Content-Disposition header value
    head_status: int | None = None         # e.g. 405: HEAD refused
    head_size: int | None = None           # HEAD lies: this Content-Length instead of the real one
    change_after: int | None = None        # after this many GETs (probe included) the content is version 2
    change_every: int | None = None        # with change_after: a further new version every this many GETs
    # -- faults on data requests
    include_probe: bool = False            # let the faults below hit the bytes=0-0 probe too
    error_status: int | None = None        # e.g. 503, 429, 403, 404
    error_times: int | None = 1
    error_min_start: int = 0               # only for requests whose range starts at or after this offset
    retry_after: str | None = None         # Retry-After header sent with error_status
    cut_after: int | None = None           # send this many body bytes, then close the connection
    cut_times: int | None = 1
    stall_after: int = 0                   # body bytes sent before the stall
    stall_seconds: float = 0.0             # > 0 enables the stall (bounded, interrupted by stop())
    stall_times: int | None = 1
    wrong_range_times: int | None = 0      # 206 whose Content-Range (and body) start wrong_range_shift late
    wrong_range_shift: int = 4096
    overlong_times: int | None = 0         # 206 covering more than asked (through the end of the file)
    corrupt_times: int | None = 0          # flip the first body byte (the server sends wrong bytes)
    corrupt_starts: frozenset[int] | None = None  # corrupt only ranges starting at these offsets
    hold: bool = False                     # data requests wait until release() (or stop())
    rate: float | None = None              # bytes per second per response (a trickle / throttle)
    rate_starts: frozenset[int] | None = None  # throttle only ranges starting at these offsets
    max_active: int | None = None          # data requests in flight past this many get error_status (or 503)
    total_rate: float | None = None        # bytes per second shared by all responses (a full link)

    def __post_init__(self) -> None:
        if self.advertise_ranges is None:
            self.advertise_ranges = self.ranges and not self.chunked


PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "norange": {"ranges": False},
    "nohead": {"head_status": 405},
    "chunked": {"chunked": True},
    "cut": {"cut_after": 300_000, "cut_times": 4},
    "503": {"error_status": 503, "retry_after": "1", "error_times": 4},
    "429": {"error_status": 429, "retry_after": "1", "error_times": 4},
    "stall": {"stall_seconds": 30.0, "stall_after": 65536},
    "wrongrange": {"wrong_range_times": 2},
    "headlie": {"head_size": 12345},
    "change": {"change_after": 3},
    "disposition": {"disposition": 'attachment; filename="../../evil.bin"'},
    "trickle": {"rate": 256 << 10},
    "corrupt": {"corrupt_times": 1},
}


@dataclass
class RequestRecord:
    """One request as the server saw it."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    time: float                                 # time.monotonic() when the request line was read
    range_start: int | None = None
    range_end: int | None = None                # inclusive, as sent (None: open-ended)
    status: int = 0
    bytes_sent: int = 0                         # body bytes written
    version: int = 1                            # content version served
    faults: list[str] = field(default_factory=list)

    @property
    def is_probe(self) -> bool:
        """The client's ``Range: bytes=0-0`` probe."""
        return self.method == "GET" and self.range_start == 0 and self.range_end == 0

    def header(self, name: str) -> str | None:
        """A request header, case-insensitively."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


class _Stop(Exception):
    """The server is stopping or the client went away: abandon this response."""


class FaultyServer:
    """The server; ``url`` points at ``/file.bin`` (any path serves the same content)."""

    def __init__(self, size: int = 4 << 20, faults: Faults | None = None, seed: int = 1,
                 host: str = "127.0.0.1", port: int = 0, path: str = "/file.bin") -> None:
        self.size = size
        self.seed = seed
        self.faults = faults or Faults()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.released = threading.Event()
        self.requests: list[RequestRecord] = []
        self.path = path
        self._contents: dict[int, bytes] = {}
        self._shas: dict[int, str] = {}
        self._content_lock = threading.Lock()
        self._gets = 0
        self._fired: dict[str, int] = {}
        self.active = 0                    # data requests being answered now
        self.peak_active = 0               # the most that were ever answered at once (parallel connections)
        self._link_free = 0.0              # total_rate: when the shared link can send the next piece
        self.httpd = _Httpd((host, port), _Handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.host = host
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FaultyServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"faulty-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wake every stalled or held response."""
        self.stopping.set()
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls
    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """URL of the served file."""
        return self.base + self.path

    def url_for(self, path: str) -> str:
        """URL of another path (same content)."""
        return self.base + "/" + path.lstrip("/")

    def configure(self, **changes: Any) -> None:
        """Replace fault settings (and reset the fault counters)."""
        with self.lock:
            self.faults = dataclasses.replace(self.faults, **changes)
            self._fired.clear()

    def release(self) -> None:
        """Let held data requests proceed."""
        self.released.set()

    def content(self, version: int = 1) -> bytes:
        """The bytes served as ``version`` (1, or 2 after ``change_after``)."""
        with self._content_lock:
            if version not in self._contents:
                data = make_content(self.size, self.seed + version - 1)
                self._shas[version] = hashlib.sha256(data).hexdigest()
                self._contents[version] = data
            return self._contents[version]

    def sha256(self, version: int = 1) -> str:
        """SHA-256 hex of a content version."""
        self.content(version)
        return self._shas[version]

    def etag(self, version: int = 1) -> str:
        """The ETag header value for a version."""
        tag = f'"{self.sha256(version)[:20]}-v{version}"'
        return "W/" + tag if self.faults.weak_etag else tag

    def last_modified(self, version: int = 1) -> str:
        """The Last-Modified header value for a version."""
        return _http_date(_LAST_MODIFIED[min(version, 2) - 1])

    def data_requests(self, since: int = 0) -> list[RequestRecord]:
        """GETs other than the bytes=0-0 probe (from request index ``since``)."""
        with self.lock:
            return [r for r in self.requests[since:] if r.method == "GET" and not r.is_probe]

    def body_bytes(self, since: int = 0) -> int:
        """Body bytes sent to data requests (from request index ``since``)."""
        return sum(r.bytes_sent for r in self.data_requests(since))

    def mark(self) -> int:
        """The current request count, to pass as ``since`` later."""
        with self.lock:
            return len(self.requests)

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self.lock:
            self.requests.clear()

    # -- internals used by the handler
    def _record(self, method: str, path: str, headers: dict[str, str]) -> tuple[RequestRecord, int]:
        with self.lock:
            if method == "GET":
                self._gets += 1
            change = self.faults.change_after
            version = 2 if change is not None and method == "GET" and self._gets > change else 1
            if version == 2 and self.faults.change_every:
                version += (self._gets - change - 1) // self.faults.change_every  # type: ignore[operator]
            if change is not None and method == "HEAD" and self._gets >= change:
                version = 2
            record = RequestRecord(index=len(self.requests), method=method, path=path, headers=headers,
                                   time=time.monotonic(), version=version)
            self.requests.append(record)
            return record, version

    def _fire(self, name: str, times: int | None) -> bool:
        """Whether fault ``name`` (allowed ``times`` times; None: always) fires now; counts it."""
        with self.lock:
            used = self._fired.get(name, 0)
            if times is not None and used >= times:
                return False
            self._fired[name] = used + 1
            return True

    def _enter(self) -> bool:
        """Count a data request in flight; True when it is one more than ``max_active`` allows."""
        with self.lock:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            return self.faults.max_active is not None and self.active > self.faults.max_active

    def _leave(self) -> None:
        with self.lock:
            self.active -= 1

    def _pace(self, nbytes: int, rate: float) -> None:
        """Wait for the shared link (``total_rate``): pieces of all responses go out one after another."""
        with self.lock:
            now = time.monotonic()
            start = max(now, self._link_free)
            self._link_free = start + nbytes / rate
        if start > now:
            self._wait(start - now)

    def _wait(self, seconds: float, event: threading.Event | None = None) -> None:
        """Sleep up to ``seconds`` (capped), returning early when stopping; raises _Stop when stopping."""
        deadline = time.monotonic() + min(seconds, STALL_CAP)
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or (event is not None and event.is_set()):
                return
            (event or self.stopping).wait(min(left, 0.05))
        raise _Stop()


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    owner: FaultyServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client disconnects are part of the game: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faulty/1"
    timeout = 30  # idle keep-alive connections end eventually
    server: _Httpd

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    # -- entry points
    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        record, version = owner._record(method, self.path, dict(self.headers.items()))
        self._parse_range(record)
        data = method == "GET" and not record.is_probe
        over = data and owner._enter()
        try:
            if over:
                record.faults.append("over max_active")
                faults = owner.faults
                extra = {"Retry-After": faults.retry_after} if faults.retry_after else {}
                self._error(record, faults.error_status or 503, extra)
            else:
                self._respond(owner, record, version, method)
        except (_Stop, BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.close_connection = True
        finally:
            if data:
                owner._leave()

    def _respond(self, owner: FaultyServer, record: RequestRecord, version: int, method: str) -> None:
        faults = owner.faults
        content = owner.content(version)
        size = len(content)
        validators = self._validators(owner, faults, version)
        if method == "HEAD":
            if faults.head_status:
                record.status = faults.head_status
                self._head_only(faults.head_status, {"Content-Length": "0", "Allow": "GET"})
                return
            headers = dict(validators)
            if not faults.chunked:
                headers["Content-Length"] = str(faults.head_size if faults.head_size is not None else size)
            record.status = 200
            self._head_only(200, headers)
            return

        wanted = self._parse_range(record)
        is_probe = record.is_probe
        data_fault_ok = not is_probe or faults.include_probe
        start = record.range_start or 0

        if data_fault_ok and faults.hold:
            record.faults.append("hold")
            owner._wait(STALL_CAP, owner.released)
        if (data_fault_ok and faults.error_status and start >= faults.error_min_start
                and owner._fire("error", faults.error_times)):
            record.faults.append(f"error {faults.error_status}")
            extra = {"Retry-After": faults.retry_after} if faults.retry_after else {}
            self._error(record, faults.error_status, extra)
            return

        use_range = wanted and faults.ranges and not faults.chunked and self._if_range_ok(owner, version)
        if use_range:
            first, last = self._range_bounds(wanted, size)
            if first is None:
                record.status = 416
                self._head_only(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"}, body=True)
                return
            assert last is not None
            cr_first = first
            if data_fault_ok and owner._fire("wrong_range", faults.wrong_range_times):
                record.faults.append("wrong range")
                cr_first = min(first + faults.wrong_range_shift, size - 1)
                last = max(last, cr_first)
            if data_fault_ok and owner._fire("overlong", faults.overlong_times):
                record.faults.append("overlong")
                last = size - 1
            body = content[cr_first:last + 1]
            headers = dict(validators, **{"Content-Range": f"bytes {cr_first}-{last}/{size}",
                                          "Content-Length": str(len(body))})
            status = 206
        else:
            body = content
            headers = dict(validators)
            if not faults.chunked:
                headers["Content-Length"] = str(size)
            status = 200
        if (data_fault_ok and body and (faults.corrupt_starts is None or start in faults.corrupt_starts)
                and owner._fire("corrupt", faults.corrupt_times)):
            record.faults.append("corrupt")
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if faults.chunked and status == 200:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._send_body(owner, record, faults, body, start, chunked=faults.chunked and status == 200,
                        data_fault_ok=data_fault_ok)

    # -- pieces
    def _validators(self, owner: FaultyServer, faults: Faults, version: int) -> dict[str, str]:
        headers: dict[str, str] = {"Content-Type": "application/octet-stream"}
        if faults.advertise_ranges:
            headers["Accept-Ranges"] = "bytes"
        if faults.etag:
            headers["ETag"] = owner.etag(version)
        if faults.last_modified:
            headers["Last-Modified"] = owner.last_modified(version)
        if faults.disposition:
            headers["Content-Disposition"] = faults.disposition
        return headers

    def _parse_range(self, record: RequestRecord) -> tuple[str, str] | None:
        value = self.headers.get("Range")
        if not value:
            return None
        match = _RANGE.match(value)
        if not match or (not match.group(1) and not match.group(2)):
            return None
        if match.group(1):
            record.range_start = int(match.group(1))
            record.range_end = int(match.group(2)) if match.group(2) else None
        return match.group(1), match.group(2)

    @staticmethod
    def _range_bounds(wanted: tuple[str, str], size: int) -> tuple[int | None, int | None]:
        first_s, last_s = wanted
        if not first_s:  # suffix range: the last N bytes
            n = int(last_s)
            if n == 0 or size == 0:
                return None, None
            return max(0, size - n), size - 1
        first = int(first_s)
        if first >= size:
            return None, None
        last = min(int(last_s), size - 1) if last_s else size - 1
        if last < first:
            return None, None
        return first, last

    def _if_range_ok(self, owner: FaultyServer, version: int) -> bool:
        """RFC 9110 If-Range: an entity tag must match strongly, a date exactly; otherwise serve 200."""
        value = self.headers.get("If-Range")
        if not value:
            return True
        value = value.strip()
        if value.startswith(('"', "W/")):
            current = owner.etag(version)
            return not value.startswith("W/") and not current.startswith("W/") and value == current
        return value == owner.last_modified(version)

    def _head_only(self, status: int, headers: dict[str, str], body: bool = False) -> None:
        del body
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _error(self, record: RequestRecord, status: int, extra: dict[str, str]) -> None:
        payload = f"fault: HTTP {status}\n".encode()
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_body(self, owner: FaultyServer, record: RequestRecord, faults: Faults, body: bytes, start: int,
                   chunked: bool, data_fault_ok: bool) -> None:
        cut = None
        if data_fault_ok and faults.cut_after is not None and owner._fire("cut", faults.cut_times):
            record.faults.append(f"cut at {faults.cut_after}")
            cut = faults.cut_after
        stall_at = None
        if data_fault_ok and faults.stall_seconds > 0 and owner._fire("stall", faults.stall_times):
            record.faults.append(f"stall at {faults.stall_after}")
            stall_at = faults.stall_after
        rate = faults.rate
        if rate and faults.rate_starts is not None and start not in faults.rate_starts:
            rate = None
        began = time.monotonic()
        sent = 0
        view = memoryview(body)
        while sent < len(body):
            if owner.stopping.is_set():
                raise _Stop()
            if stall_at is not None and sent >= stall_at:
                self.wfile.flush()
                owner._wait(faults.stall_seconds)
                self.close_connection = True  # the client gave up long ago
                return
            piece = PIECE
            if rate:
                piece = max(1024, min(PIECE, int(rate / 20)))
            if cut is not None:
                piece = min(piece, cut - sent)
            if stall_at is not None:
                piece = min(piece, max(1, stall_at - sent))
            block = view[sent:sent + piece]
            if faults.total_rate:
                owner._pace(len(block), faults.total_rate)
            if chunked:
                self.wfile.write(f"{len(block):x}\r\n".encode() + bytes(block) + b"\r\n")
            else:
                self.wfile.write(block)
            sent += len(block)
            record.bytes_sent = sent
            if cut is not None and sent >= cut:
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if rate:
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    owner._wait(ahead)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 64M)")
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers.faulty",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port (printed)")
    parser.add_argument("--size", type=_parse_size, default=_parse_size("16M"), help="e.g. 64M")
    parser.add_argument("--mode", action="append", choices=sorted(PRESETS), default=[],
                        help="fault preset (repeatable)")
    parser.add_argument("--rate", type=_parse_size, help="throttle every response to this many bytes/s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--path", default="/file.bin")
    args = parser.parse_args(argv)
    settings: dict[str, Any] = {}
    for mode in args.mode or ["full"]:
        settings.update(PRESETS[mode])
    if args.rate:
        settings["rate"] = args.rate
    server = FaultyServer(size=args.size, faults=Faults(**settings), seed=args.seed, host=args.host,
                          port=args.port, path=args.path)
    modes = ",".join(args.mode or ["full"])
    print(f"serving {server.url} size={server.size} sha256={server.sha256()} modes={modes}", flush=True)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
