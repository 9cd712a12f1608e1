"""Engine behaviour 1 (probe) and the single-stream fallback, against the fault server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from tests.conftest import MiB, Modfetch, assert_clean_error, sha256_of
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]


def test_probe_is_head_then_ranged_get_then_chunks(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB)
    out = mf.download_json(server.url, "--chunk-size", "1M")
    methods = [(r.method, r.range_start, r.range_end) for r in server.requests[:2]]
    assert methods == [("HEAD", None, None), ("GET", 0, 0)]
    data = server.data_requests()
    assert sorted(r.range_start for r in data) == [0, MiB, 2 * MiB, 3 * MiB]
    assert all(r.status == 206 for r in data)
    assert all(r.header("Accept-Encoding") == "identity" for r in server.requests)
    assert all((r.header("User-Agent") or "").startswith("modfetch/") for r in server.requests)
    assert out["sha256"] == server.sha256()
    assert out["size"] == 4 * MiB


def test_head_refused_falls_back_to_ranged_get(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB, head_status=405)
    out = mf.download_json(server.url)
    assert server.requests[0].method == "HEAD" and server.requests[0].status == 405
    assert server.requests[1].is_probe and server.requests[1].status == 206
    assert len(server.data_requests()) == 4  # still chunked
    assert out["sha256"] == server.sha256()


def test_head_that_lies_about_size_is_not_trusted(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=4 * MiB + 7, head_size=123)
    result = mf.cli("download", "--url", server.url, "--dest", str(mf.dest))
    assert result.exit_code == 0, result.output
    path = mf.dest / "file.bin"
    assert path.stat().st_size == 4 * MiB + 7
    assert sha256_of(path) == server.sha256()
    assert "trusting the GET" in result.stderr


def test_head_that_lies_bigger_is_not_trusted(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB, head_size=10 * MiB)
    out = mf.download_json(server.url)
    assert out["size"] == 3 * MiB
    assert out["sha256"] == server.sha256()


def test_no_range_support_is_one_stream(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=5 * MiB + 3, ranges=False)
    result = mf.cli("download", "--url", server.url, "--dest", str(mf.dest))
    assert result.exit_code == 0, result.output
    assert "single stream" in result.stderr
    data = server.data_requests()
    assert len(data) == 1
    assert data[0].header("Range") is None and data[0].status == 200
    assert sha256_of(mf.dest / "file.bin") == server.sha256()
    assert mf.status()[0]["status"] == "complete"


def test_advertised_but_ignored_ranges_are_one_stream(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB, ranges=False, advertise_ranges=True)
    out = mf.download_json(server.url)
    assert len(server.data_requests()) == 1
    assert out["sha256"] == server.sha256()


def test_no_content_length_chunked_transfer_is_one_stream(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB + 11, chunked=True)
    result = mf.cli("download", "--url", server.url, "--dest", str(mf.dest))
    assert result.exit_code == 0, result.output
    assert "no size" in result.stderr
    path = mf.dest / "file.bin"
    assert path.stat().st_size == 3 * MiB + 11
    assert sha256_of(path) == server.sha256()
    row = mf.status()[0]
    assert row["status"] == "complete" and row["size"] in (None, 3 * MiB + 11)


def test_head_refused_and_no_ranges(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB, head_status=405, ranges=False)
    out = mf.download_json(server.url)
    assert out["sha256"] == server.sha256()


def test_probe_404_fails_at_once(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, head_status=404, error_status=404, error_times=None, include_probe=True)
    result = mf.download(server.url)
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "404", "not found")
    assert len(server.requests) == 1  # the HEAD's 404 is final: no GET, no retry


def test_probe_403_fails_at_once(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, error_status=403, error_times=None, include_probe=True)
    result = mf.download(server.url)
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "403")
    assert [r.method for r in server.requests] == ["HEAD", "GET"]
    assert not (mf.dest / "file.bin").exists()


def test_probe_503_is_retried_with_retry_after(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB, error_status=503, retry_after="1", error_times=1, include_probe=True)
    out = mf.download_json(server.url)
    probes = [r for r in server.requests if r.is_probe]
    assert [p.status for p in probes] == [503, 206]
    assert probes[1].time - probes[0].time >= 1.0
    assert out["sha256"] == server.sha256()


def test_unreachable_server_is_a_clean_network_error(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    url = server.url
    server.stop()
    mf.write_config(concurrency={"max_retries": 1})
    result = mf.download(url)
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "cannot reach")


def test_empty_file(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=0)
    out = mf.download_json(server.url)
    assert out["size"] == 0
    assert out["sha256"] == hashlib.sha256(b"").hexdigest()
    assert (mf.dest / "file.bin").read_bytes() == b""
