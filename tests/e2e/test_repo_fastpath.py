"""Issue 17, many-file repos: ``download hf://owner/repo`` fetches each small listed file with ONE GET (plus the
LFS redirect hop), no HEAD and no range probe; every file is verified (SHA-256 for LFS, git blob SHA-1 for
regular files); files run concurrently over a bounded number of connections; a rerun sends no data request;
an interrupted run resumes with the files it had not finished."""

from __future__ import annotations

import collections
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import Modfetch, wait_for
from tests.servers.lookalike import pseudo_random_bytes
from tests.servers.lookalike.hub import GOOD_TOKEN, HubData, HubFile, HubLookalike

REPO = "acme/many"
REGULAR = {f"cfg/file-{i:02d}.json": pseudo_random_bytes(f"regular-{i}", 3000 + i) for i in range(12)}
SMALL_LFS = {f"shards/part-{i:02d}.bin": pseudo_random_bytes(f"lfs-{i}", 20000 + i) for i in range(8)}
BIG = {"weights/big.safetensors": pseudo_random_bytes("big", 3 << 20)}  # > the tests' 1 MiB chunk: chunked
FILES = {**REGULAR, **SMALL_LFS, **BIG}
SMALL = {**REGULAR, **SMALL_LFS}
LANES = 8


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    data = HubData()
    data.add_repo(REPO, FILES)
    with HubLookalike(data) as server:
        yield server


@pytest.fixture
def fresh(hub: HubLookalike) -> Iterator[HubLookalike]:
    """The module's hub with empty request logs, no delay and nothing corrupted, restored afterwards."""
    _reset(hub)
    yield hub
    _reset(hub)


def _reset(hub: HubLookalike) -> None:
    for server in (hub.hub, hub.cdn):
        server.records.clear()
        server.delay = 0.0
        server.max_in_flight = server.connections = 0
    hub.data.corrupt.clear()
    hub.data.fail_once.clear()


def use_hub(mf: Modfetch, url: str, **concurrency: int) -> None:
    mf.write_config(sources={"huggingface": {"endpoint": url}},
                    concurrency={"repo_parallel_files": LANES, **concurrency})


def entry(hub: HubLookalike, path: str) -> HubFile:
    repo = hub.data.repos[("model", REPO)]
    return repo.commits[repo.refs["main"]][path]


def resolve_requests(hub: HubLookalike) -> collections.Counter[tuple[str, str]]:
    """(method, path in repo) of every request to the Hub's resolve endpoint."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for record in hub.hub.requests():
        path = urlsplit(record.target).path
        if "/resolve/" in path:
            counts[(record.method, unquote(path.split("/resolve/", 1)[1].split("/", 1)[1]))] += 1
    return counts


def cdn_requests(hub: HubLookalike, path: str) -> list[tuple[str, str | None]]:
    """(method, Range header) of every CDN request for ``path``'s blob."""
    sha = entry(hub, path).sha256
    return [(r.method, r.headers.get("range")) for r in hub.cdn.requests() if urlsplit(r.target).path.endswith(sha)]


def assert_tree(dest: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        assert (dest / path).read_bytes() == data, path


def test_one_get_per_small_file_and_no_head(mf: Modfetch, fresh: HubLookalike,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    use_hub(mf, fresh.url)
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    result = mf.download(f"hf://{REPO}")
    assert result.exit_code == 0, result.output
    assert_tree(mf.dest, FILES)
    resolve = resolve_requests(fresh)
    for path in SMALL:  # one GET on the Hub each: regular files answered there, LFS ones redirected
        assert resolve[("GET", path)] == 1, (path, resolve)
        assert resolve[("HEAD", path)] == 0, (path, resolve)
    for path in SMALL_LFS:  # the redirect hop: one whole-body GET on the CDN, no probe, no Range
        assert cdn_requests(fresh, path) == [("GET", None)], path
    # The big file still goes chunked: ranged GETs on the CDN.
    ranges = [r for _, r in cdn_requests(fresh, "weights/big.safetensors")]
    assert sum(1 for r in ranges if r and r != "bytes=0-0") >= 2, ranges
    # The repo's info already named main's commit: pinning it cost no extra request.
    assert not any("/revision/" in r.target for r in fresh.hub.requests())
    # The token goes to the Hub with every request, and never with the redirect to the CDN.
    assert all(r.headers.get("authorization") == f"Bearer {GOOD_TOKEN}" for r in fresh.hub.requests())
    assert not any("authorization" in r.headers for r in fresh.cdn.requests())
    rows = {Path(r["dest_path"]).name: r for r in mf.rows()}
    assert len(rows) == len(FILES)
    assert all(r["status"] == "complete" and r["sha256"] for r in rows.values()), rows
    # The server's validator is recorded, as the probe would have recorded it.
    name, data = next(iter(REGULAR.items()))
    assert rows[Path(name).name]["etag"] == f'"{entry(fresh, name).git_sha1}"'
    assert rows[Path(name).name]["size"] == len(data)


@pytest.mark.parametrize("path", [next(iter(REGULAR)), next(iter(SMALL_LFS))], ids=["git-sha1", "sha256"])
def test_a_corrupted_small_file_is_caught_by_its_listed_hash(mf: Modfetch, fresh: HubLookalike, path: str) -> None:
    use_hub(mf, fresh.url)
    fresh.data.corrupt.add(path)
    result = mf.download(f"hf://{REPO}")
    assert result.exit_code != 0, result.output
    assert "mismatch" in result.output and Path(path).name in result.output, result.output
    assert "1 of" in result.output  # that file's failure alone
    assert not (mf.dest / path).exists()
    assert_tree(mf.dest, {p: d for p, d in FILES.items() if p != path})
    status = {Path(r["dest_path"]).name: r["status"] for r in mf.rows()}
    assert status[Path(path).name] == "mismatch", status
    resolve = resolve_requests(fresh)
    assert resolve[("GET", path)] == 1 and resolve[("HEAD", path)] == 0, resolve  # caught on the fast path


@pytest.mark.parametrize("path", [next(iter(REGULAR)), next(iter(SMALL_LFS))], ids=["regular", "lfs"])
def test_a_failed_single_get_falls_back_to_the_normal_path(mf: Modfetch, fresh: HubLookalike, path: str) -> None:
    """A 503 on the one GET is not the file's failure: the normal path (probe, retries) takes it over."""
    use_hub(mf, fresh.url)
    fresh.data.fail_once.add(path)
    result = mf.download(f"hf://{REPO}")
    assert result.exit_code == 0, result.output
    assert_tree(mf.dest, FILES)
    resolve = resolve_requests(fresh)
    assert resolve[("HEAD", path)] >= 1, resolve  # the normal path's probe
    others = [p for p in SMALL if p != path]
    assert all(resolve[("HEAD", p)] == 0 for p in others), resolve
    rows = [r for r in mf.rows() if r["dest_path"].endswith(path)]
    assert [r["status"] for r in rows] == ["complete"], rows  # one row, no leftover of the fast attempt


def test_files_run_concurrently_over_bounded_connections(mf: Modfetch, fresh: HubLookalike) -> None:
    use_hub(mf, fresh.url)
    fresh.hub.delay = fresh.cdn.delay = 0.05  # requests overlap only if files really run at once
    result = mf.download(f"hf://{REPO}")
    assert result.exit_code == 0, result.output
    assert_tree(mf.dest, FILES)
    # Before: two files at a time, so never more than two requests at once on the Hub.
    assert 2 < fresh.hub.max_in_flight <= LANES, fresh.hub.max_in_flight
    # the big file's chunks share the budget (max_connections_per_file, 32 by default)
    assert fresh.cdn.max_in_flight <= 32, fresh.cdn.max_in_flight


def test_connections_are_reused_from_file_to_file(mf: Modfetch, fresh: HubLookalike) -> None:
    """Each lane keeps its keep-alive connections: far fewer connections than requests (before, every file
    opened new ones: a TLS handshake per file against the real Hub and CDN)."""
    use_hub(mf, fresh.url)
    result = mf.download(f"hf://{REPO}?exclude=weights/*")  # small files only: one request each
    assert result.exit_code == 0, result.output
    assert_tree(mf.dest, SMALL)
    hub_requests, cdn_requests_ = len(fresh.hub.requests()), len(fresh.cdn.requests())
    assert hub_requests >= len(SMALL) and cdn_requests_ == len(SMALL_LFS)
    assert fresh.hub.connections <= LANES + 2, (fresh.hub.connections, hub_requests)  # (+ the resolver's)
    assert fresh.cdn.connections <= LANES, (fresh.cdn.connections, cdn_requests_)


def test_a_second_run_sends_no_data_request(mf: Modfetch, fresh: HubLookalike) -> None:
    use_hub(mf, fresh.url)
    assert mf.download(f"hf://{REPO}").exit_code == 0
    _reset(fresh)
    result = mf.download(f"hf://{REPO}")
    assert result.exit_code == 0, result.output
    assert_tree(mf.dest, FILES)
    assert not resolve_requests(fresh), resolve_requests(fresh)  # not even a HEAD for the regular files
    assert not fresh.cdn.requests()
    assert all(r["status"] == "complete" for r in mf.rows())


@pytest.mark.timeout(90)
def test_an_interrupted_repo_run_resumes(mf: Modfetch, fresh: HubLookalike) -> None:
    use_hub(mf, fresh.url, repo_parallel_files=2)
    fresh.hub.delay = fresh.cdn.delay = 0.1

    def finished() -> list[str]:
        return [p for p in SMALL if (mf.dest / p).is_file()]

    proc = mf.popen("--quiet", "download", "--url", f"hf://{REPO}", "--dest", str(mf.dest))
    try:
        wait_for(lambda: len(finished()) >= 3, "a few files to finish", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    done_before = finished()
    assert 3 <= len(done_before) < len(SMALL), done_before
    assert all(r["status"] != "running" for r in mf.rows()), mf.rows()
    _reset(fresh)
    result = mf.download(f"hf://{REPO}")
    assert result.exit_code == 0, result.output
    assert_tree(mf.dest, FILES)
    resolve = resolve_requests(fresh)
    for path in done_before:  # finished files are kept and never asked for again
        assert resolve[("GET", path)] == 0 and resolve[("HEAD", path)] == 0, (path, resolve)
    for path in set(SMALL) - set(done_before):
        assert resolve[("GET", path)] == 1, (path, resolve)
