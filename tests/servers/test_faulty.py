"""The fault server itself (tests/servers/faulty.py) must do what the engine tests rely on."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Callable

import pytest
import requests

from tests.conftest import ROOT, MiB
from tests.servers.faulty import FaultyServer, make_content

Serve = Callable[..., FaultyServer]


def test_content_is_deterministic() -> None:
    assert make_content(1000, 3) == make_content(1000, 3) != make_content(1000, 4)


def test_ranges_validators_and_keep_alive(faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    with requests.Session() as session:
        head = session.head(server.url)
        assert head.status_code == 200 and head.headers["Content-Length"] == str(MiB)
        assert head.headers["Accept-Ranges"] == "bytes" and head.headers["ETag"] == server.etag()
        part = session.get(server.url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes 10-19/{MiB}"
        assert part.content == server.content()[10:20]
        tail = session.get(server.url, headers={"Range": "bytes=-5"})
        assert tail.content == server.content()[-5:]
        past = session.get(server.url, headers={"Range": f"bytes={MiB}-"})
        assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{MiB}"
    assert len({r.index for r in server.requests}) == 4


def test_if_range(faulty_server: Serve) -> None:
    server = faulty_server(size=1000)
    ok = requests.get(server.url, headers={"Range": "bytes=0-9", "If-Range": server.etag()})
    assert ok.status_code == 206
    stale = requests.get(server.url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and len(stale.content) == 1000
    by_date = requests.get(server.url, headers={"Range": "bytes=0-9", "If-Range": server.last_modified()})
    assert by_date.status_code == 206
    weak = requests.get(server.url, headers={"Range": "bytes=0-9", "If-Range": "W/" + server.etag()})
    assert weak.status_code == 200
    assert server.requests[0].header("if-range") == server.etag()


def test_faults(faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, head_status=405, chunked=True, disposition='attachment; filename="../x"')
    assert requests.head(server.url).status_code == 405
    full = requests.get(server.url, headers={"Range": "bytes=0-9"})
    assert full.status_code == 200 and "Content-Length" not in full.headers
    assert full.headers["Transfer-Encoding"] == "chunked" and full.content == server.content()
    assert full.headers["Content-Disposition"] == 'attachment; filename="../x"'

    server = faulty_server(size=MiB, error_status=503, retry_after="7", error_times=1, wrong_range_times=1)
    first = requests.get(server.url, headers={"Range": "bytes=100-199"})
    assert first.status_code == 503 and first.headers["Retry-After"] == "7"
    wrong = requests.get(server.url, headers={"Range": "bytes=100-199"})
    assert wrong.headers["Content-Range"].startswith("bytes 4196-")
    assert requests.get(server.url, headers={"Range": "bytes=100-199"}).content == server.content()[100:200]
    assert [r.faults for r in server.requests] == [["error 503"], ["wrong range"], []]

    server = faulty_server(size=MiB, cut_after=1000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(server.url).content  # noqa: B018  (short body: urllib3 raises IncompleteRead)
    assert server.requests[0].bytes_sent == 1000

    server = faulty_server(size=MiB, change_after=1, head_size=5)
    assert requests.head(server.url).headers["Content-Length"] == "5"
    assert hashlib.sha256(requests.get(server.url).content).hexdigest() == server.sha256(1)
    second = requests.get(server.url)
    assert hashlib.sha256(second.content).hexdigest() == server.sha256(2)
    assert second.headers["ETag"] == server.etag(2) != server.etag(1)


def test_probe_is_spared_unless_asked(faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, error_status=500, error_times=None)
    assert requests.get(server.url, headers={"Range": "bytes=0-0"}).status_code == 206
    assert requests.get(server.url, headers={"Range": "bytes=0-1"}).status_code == 500
    assert [r.is_probe for r in server.requests] == [True, False]
    assert len(server.data_requests()) == 1


def test_stall_is_bounded_by_stop(faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, stall_seconds=60, stall_after=10)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url, timeout=(2, 0.5)).content  # noqa: B018
    server.stop()  # wakes the stalled handler; teardown must not hang


def test_standalone_mode(tmp_path: object) -> None:
    argv = [sys.executable, "-m", "tests.servers.faulty", "--port", "0", "--size", "1M",
            "--mode", "nohead", "--mode", "cut"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"serving (\S+) size=1048576 sha256=([0-9a-f]{64}) modes=nohead,cut", line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        url = match.group(1)
        assert requests.head(url).status_code == 405
        assert hashlib.sha256(make_content(MiB)).hexdigest() == match.group(2)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "Traceback" not in stderr and "RuntimeWarning" not in stderr
