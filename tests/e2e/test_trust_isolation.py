"""Issue 13, finding 7: one file's failure is that file's alone; only a real signal stops everything.

An hf:// repo holds, among normal files, one whose path is longer than the file system allows (ENAMETOOLONG
from deep inside the download used to set the process-wide stop, as if Ctrl-C had been pressed), or one that
makes some other unexpected OSError.  The other files download, the other batch jobs finish, the failing file
is one clear error line and exit 1, and the over-long path is refused before any request for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import Modfetch, assert_clean_error, sha256_of
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.hub import HubData, HubLookalike

MiB = 1 << 20
DEEP = "/".join(["d" * 200] * 25) + "/deep.txt"  # every name fits NAME_MAX, the whole path not PATH_MAX
LONG_NAME = "n" * 300 + "/inside.txt"  # a 300-character folder name: saved under a shortened name
FILES = {"a.txt": b"first file\n", LONG_NAME: b"in a long folder\n", DEEP: b"never saved\n", "c.txt": b"third\n",
         "sub/file.txt": b"under a folder the user has a file in the way of\n", "ok.txt": b"fine\n"}


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    data = HubData()
    data.add_repo("acme/long", {k: FILES[k] for k in ("a.txt", LONG_NAME, DEEP, "c.txt")})
    data.add_repo("acme/blocked", {k: FILES[k] for k in ("sub/file.txt", "ok.txt")})
    with HubLookalike(data) as server:
        yield server


def use_hub(mf: Modfetch, hub: HubLookalike) -> None:
    mf.write_config(sources={"huggingface": {"endpoint": hub.url}})


def _deep_requests(hub: HubLookalike) -> list[str]:
    return [r.target for r in hub.hub.requests() if "deep.txt" in r.target and "/resolve/" in r.target]


def test_an_over_long_path_fails_that_file_only(mf: Modfetch, hub: HubLookalike) -> None:
    use_hub(mf, hub)
    before = len(_deep_requests(hub))
    done = mf.run("--quiet", "download", "--url", "hf://acme/long", "--dest", str(mf.dest))
    assert done.returncode == 1, done.stderr
    line = assert_clean_error(done.stderr, "1 of 4 files failed", "deep.txt", "bytes long")
    assert "interrupted" not in done.stderr.lower(), line
    repo = mf.dest
    assert (repo / "a.txt").read_bytes() == FILES["a.txt"]
    assert (repo / "c.txt").read_bytes() == FILES["c.txt"]
    [folder] = [p for p in repo.iterdir() if p.name.startswith("nnn")]
    assert len(os.fsencode(folder.name)) <= 255
    assert (folder / "inside.txt").read_bytes() == FILES[LONG_NAME]
    assert len(_deep_requests(hub)) == before  # refused up front: not even probed
    assert all(r["status"] != "interrupted" for r in mf.rows()), mf.rows()


def _batch(mf: Modfetch, tmp_path: Path, uris: list[str]) -> Path:
    jobs = tmp_path / "jobs.yml"
    jobs.write_text(yaml.safe_dump({"jobs": [{"uri": u, "dest": str(mf.dest)} for u in uris]}), encoding="utf-8")
    return jobs


@pytest.mark.timeout(90)
@pytest.mark.parametrize("repo", ["long", "blocked"], ids=["path-too-long", "unexpected-oserror"])
def test_one_failing_file_never_stops_the_other_batch_jobs(
        mf: Modfetch, hub: HubLookalike, faulty_server: Callable[..., FaultyServer], tmp_path: Path,
        repo: str) -> None:
    """Job 0's failing file used to call request_stop(): job 1, still transferring, was interrupted and the
    whole batch exited 130.  ``blocked``: a regular file ``sub`` sits where the repo needs a folder, which
    fails with an OSError nothing below expected (a class test: not only ENAMETOOLONG)."""
    use_hub(mf, hub)
    mf.dest.mkdir(parents=True, exist_ok=True)
    (mf.dest / "sub").write_bytes(b"the user's own file\n")
    slow = faulty_server(size=8 * MiB, rate=2 * MiB)  # still running when job 0's file fails
    done = mf.run("--quiet", "download", "--batch", str(_batch(mf, tmp_path, [f"hf://acme/{repo}", slow.url])))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "interrupted" not in done.stderr.lower(), done.stderr
    needle = "deep.txt" if repo == "long" else "not a directory"
    failing = [line for line in done.stderr.splitlines() if needle in line.lower()]
    assert failing, done.stderr
    assert sha256_of(mf.dest / "file.bin") == slow.sha256()  # job 1 finished
    if repo == "long":
        assert (mf.dest / "c.txt").read_bytes() == FILES["c.txt"]
    else:
        assert (mf.dest / "ok.txt").read_bytes() == FILES["ok.txt"]
        assert (mf.dest / "sub").read_bytes() == b"the user's own file\n"  # untouched
    statuses = {Path(r["dest_path"]).name: r["status"] for r in mf.rows()}
    assert statuses["file.bin"] == "complete", statuses
    assert "interrupted" not in statuses.values(), statuses


def test_an_unexpected_oserror_is_one_clear_line(mf: Modfetch, hub: HubLookalike) -> None:
    use_hub(mf, hub)
    mf.dest.mkdir(parents=True, exist_ok=True)
    (mf.dest / "sub").write_bytes(b"the user's own file\n")
    done = mf.run("--quiet", "download", "--url", "hf://acme/blocked", "--dest", str(mf.dest))
    assert done.returncode == 1, done.stderr
    assert_clean_error(done.stderr, "1 of 2 files failed", "cannot download", "not a directory")
    assert (mf.dest / "ok.txt").read_bytes() == FILES["ok.txt"]
