"""Engine behaviours 2, 3, 6 and 8 (names): chunked download, finish (hash, .sha256, state), file names."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]


@pytest.mark.parametrize(("size", "args"), [
    (4 * MiB, ["--chunk-size", "1M"]),
    (7 * MiB + 12345, ["--chunk-size", "2M", "--concurrency", "3"]),
    (6 * MiB, ["--concurrency", "1"]),
    (1000, []),
])
def test_chunked_download_is_exact_and_sha256sum_checks(mf: Modfetch, faulty_server: Serve, size: int,
                                                       args: list[str]) -> None:
    server = faulty_server(size=size)
    result = mf.cli("download", "--url", server.url, "--dest", str(mf.dest), *args)
    assert result.exit_code == 0, result.output
    path = mf.dest / "file.bin"
    assert path.read_bytes() == server.content()
    # prints the final path and SHA-256
    assert str(path) in result.stdout and server.sha256() in result.stdout
    # <name>.sha256 in sha256sum format, checked by the real sha256sum
    checksum = mf.dest / "file.bin.sha256"
    assert checksum.read_text() == f"{server.sha256()}  file.bin\n"
    check = subprocess.run(["sha256sum", "-c", checksum.name], cwd=mf.dest, capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "file.bin: OK" in check.stdout
    # no leftovers beside the file
    assert sorted(p.name for p in mf.dest.iterdir()) == ["file.bin", "file.bin.sha256"]
    row = mf.status()[0]
    assert row["status"] == "complete" and row["sha256"] == server.sha256()
    assert row["bytes_done"] == size and row["size"] == size
    assert row["path"] == str(path) and row["url"] == server.url
    for key in ("id", "updated_at"):
        assert key in row


def test_chunk_rows_cover_the_file_with_recorded_hashes(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=5 * MiB + 1)
    out = mf.download_json(server.url, "--chunk-size", "1M")
    chunks = mf.chunk_rows(out["id"])
    assert chunks[0]["start"] == 0 and chunks[-1]["end"] == server.size
    content = server.content()
    for before, after in itertools.pairwise(chunks):
        assert before["end"] == after["start"]
    for chunk in chunks:
        assert chunk["status"] == "complete"
        assert chunk["sha256"] == hashlib.sha256(content[chunk["start"]:chunk["end"]]).hexdigest()


def test_each_chunk_is_requested_exactly_once_with_if_range(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=6 * MiB)
    mf.download_json(server.url, "--chunk-size", "1M", "--concurrency", "3")
    data = server.data_requests()
    expected = [(i * MiB, (i + 1) * MiB - 1) for i in range(6)]
    assert sorted((r.range_start, r.range_end) for r in data) == expected
    assert {r.header("If-Range") for r in data} == {server.etag()}


def test_weak_etag_uses_last_modified_for_if_range(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB, weak_etag=True)
    out = mf.download_json(server.url)
    assert out["sha256"] == server.sha256()
    assert {r.header("If-Range") for r in server.data_requests()} == {server.last_modified()}


def test_no_validators_at_all_still_downloads(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=3 * MiB, etag=False, last_modified=False)
    out = mf.download_json(server.url)
    assert out["sha256"] == server.sha256()
    assert {r.header("If-Range") for r in server.data_requests()} == {None}


def test_work_stealing_splits_a_slow_tail(mf: Modfetch, faulty_server: Serve) -> None:
    # 64 MiB over 2 connections plans 8 MiB chunks, the last round (48-64 MiB) cut into 2 MiB pieces
    # (plan.taper_tail); the last full chunk's first response is throttled, so the other worker runs dry and
    # steals the back half of it.  Whatever the split, the bytes must be exact.
    size = 64 * MiB
    server = faulty_server(size=size, rate=6 * MiB, rate_starts=frozenset({40 * MiB}))
    out = mf.download_json(server.url, "--concurrency", "2", "--chunk-size", "8M")
    assert out["sha256"] == server.sha256()
    starts = [r.range_start for r in server.data_requests()]
    planned = {i * 8 * MiB for i in range(6)} | {48 * MiB + i * 2 * MiB for i in range(8)}
    assert len(starts) == 15, starts  # 6 chunks + 8 tail pieces + 1 stolen
    (stolen,) = set(starts) - planned
    assert 40 * MiB < stolen < 48 * MiB
    chunks = mf.chunk_rows(out["id"])
    assert len(chunks) == 15
    assert chunks[0]["start"] == 0 and chunks[-1]["end"] == size
    for before, after in itertools.pairwise(chunks):
        assert before["end"] == after["start"]
    content = server.content()
    for chunk in chunks:
        assert chunk["status"] == "complete"
        assert chunk["sha256"] == hashlib.sha256(content[chunk["start"]:chunk["end"]]).hexdigest()


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('attachment; filename="../../evil.bin"', "evil.bin"),
        ("attachment; filename*=UTF-8''..%2F..%2Fevil2.bin", "evil2.bin"),
        ('attachment; filename="/etc/passwd"', "passwd"),
        ('attachment; filename=".."', "file.bin"),
        ('attachment; filename="nice model.safetensors"', "nice model.safetensors"),
    ],
)
def test_content_disposition_names_are_sanitised(mf: Modfetch, faulty_server: Serve, tmp_path: Path,
                                                 disposition: str, name: str) -> None:
    server = faulty_server(size=MiB, disposition=disposition)
    mf.dest.mkdir()
    before = set(tmp_path.rglob("*"))
    out = mf.download_json(server.url)
    path = Path(out["path"])
    assert path.parent == mf.dest
    assert path.name in (name, "download.bin")
    assert path.read_bytes() == server.content()
    created = {p for p in set(tmp_path.rglob("*")) - before if not p.is_relative_to(mf.home)}
    assert all(p.is_relative_to(mf.dest) for p in created), created


def test_url_name_is_used_and_out_overrides_everything(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, path="/models/v1/tiny%20model.gguf",
                           disposition='attachment; filename="server.bin"')
    out = mf.download_json(server.url, "--out", "mine.gguf")
    assert Path(out["path"]) == mf.dest / "mine.gguf"
    plain = faulty_server(size=MiB, path="/models/v1/tiny%20model.gguf", seed=5)
    out = mf.download_json(plain.url)
    assert Path(out["path"]) == mf.dest / "tiny model.gguf"
    assert Path(out["path"]).read_bytes() == plain.content()


def test_server_name_wins_over_url_name(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, path="/download?id=3", disposition='attachment; filename="real.ckpt"')
    out = mf.download_json(server.url)
    assert Path(out["path"]) == mf.dest / "real.ckpt"


def test_two_urls_in_one_command(mf: Modfetch, faulty_server: Serve) -> None:
    a = faulty_server(size=MiB, path="/a.bin", seed=1)
    b = faulty_server(size=2 * MiB, path="/b.bin", seed=2)
    result = mf.cli("download", "--quiet", "--dest", str(mf.dest), "--url", a.url, b.url)
    assert result.exit_code == 0, result.output
    assert (mf.dest / "a.bin").read_bytes() == a.content()
    assert (mf.dest / "b.bin").read_bytes() == b.content()
    assert a.sha256() in result.stdout and b.sha256() in result.stdout


def test_download_root_from_config_is_the_default_dest(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    result = mf.cli("download", "--quiet", server.url)  # bare positional URL, no --dest
    assert result.exit_code == 0, result.output
    # The library layout: plain URLs under <download_root>/<host>_<port>/ (docs/SOURCES.md).
    assert (mf.dest / f"127.0.0.1_{server.port}/file.bin").read_bytes() == server.content()


def test_metrics_counters_are_recorded(mf: Modfetch, faulty_server: Serve) -> None:
    import sqlite3

    server = faulty_server(size=3 * MiB, cut_after=100_000, cut_times=1)
    mf.download_json(server.url)
    conn = sqlite3.connect(mf.state_db)
    counters = {(n, s, r): v for n, s, r, v in conn.execute("SELECT name, source, reason, value FROM counters")}
    conn.close()
    assert counters[("downloads_succeeded", "http", "")] == 1
    assert counters[("retries", "http", "")] >= 1
    assert counters[("downloaded_bytes", "http", "")] >= 3 * MiB
