"""``modfetch download --mirror URL`` and the batch key ``mirrors:``: both spread a download over real local
servers; bad mirror URLs are one clear line and exit 2 (never a traceback), checked before any request."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import MiB, Modfetch, assert_clean_error, sha256_of, wait_for
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.hub import GOOD_TOKEN, HubLookalike

Serve = Callable[..., FaultyServer]
SIZE = 4 * MiB

BAD_MIRRORS = [
    ("ftp://mirror.example/file.bin", "http:// or https://"),
    ("hf://acme/model/file.bin", "http:// or https://"),
    ("mirror.example/file.bin", "http:// or https://"),
    ("http://", "host"),
    ("http://evil:1\\@127.0.0.1/file.bin", "host"),
    ("http://127.0.0.1:99999/file.bin", "port"),
    ("http://[::1/file.bin", "cannot be parsed"),
    ("   ", "empty"),
    ("http://127.0.0.1/my file.bin", "whitespace"),
    ("http://127.0.0.1:0/file.bin", "port 0"),
]


def _served_chunks(server: FaultyServer) -> int:
    return len([r for r in server.data_requests() if r.status == 206])


def test_help_offers_mirror(mf: Modfetch) -> None:
    # scripts/bench detects support this way (modfetch_has_mirror)
    done = mf.run("download", "--help")
    assert done.returncode == 0 and "--mirror URL" in done.stdout


def test_mirror_option_spreads_the_download(mf: Modfetch, faulty_server: Serve) -> None:
    primary, mirror = faulty_server(size=SIZE), faulty_server(size=SIZE)
    out = mf.download_json(primary.url, "--mirror", mirror.url, "--concurrency", "4")
    assert out["sha256"] == primary.sha256()
    assert _served_chunks(primary) and _served_chunks(mirror)
    assert {u["url"] for u in out["mirrors"]["used"]} == {primary.url, mirror.url}
    assert mf.status()[0]["meta"]["mirrors"] == out["mirrors"]  # status --json shows the row's record


def test_mirror_option_in_a_real_process_names_an_excluded_mirror(mf: Modfetch, faulty_server: Serve) -> None:
    primary, liar = faulty_server(size=SIZE), faulty_server(size=SIZE, seed=9)
    done = mf.run("download", "--dest", str(mf.dest), "--mirror", liar.url, "--sha256", primary.sha256(),
                  primary.url)
    assert done.returncode == 0, done.stderr
    assert sha256_of(mf.dest / "file.bin") == primary.sha256()
    assert f"mirror excluded {liar.url}: it serves different bytes" in done.stdout
    assert "Traceback" not in done.stderr and liar.url in done.stderr  # the warning names it too


def test_hf_token_reaches_the_hub_but_never_a_mirror(mf: Modfetch, monkeypatch: pytest.MonkeyPatch) -> None:
    """hf:// primary (the Hub gets the token, its CDN does not) + a mirror on another Hub look-alike whose
    resolve URL redirects to its own CDN: neither the mirror's host nor its CDN ever sees the token."""
    path = "acme/tiny-model/resolve/main/weights/model.safetensors"
    with HubLookalike() as hub, HubLookalike() as other:
        mf.write_config(sources={"huggingface": {"endpoint": hub.url}})
        monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
        out = mf.download_json("hf://acme/tiny-model/weights/model.safetensors", "--mirror", f"{other.url}/{path}",
                               "--concurrency", "4")
        ours = [r for r in hub.hub.requests() if "/resolve/" in r.target]
        theirs = [*other.hub.requests(), *other.cdn.requests()]
    assert out["mirrors"]["excluded"] == [] and len(out["mirrors"]["used"]) == 2
    assert ours and all(r.headers.get("authorization") == f"Bearer {GOOD_TOKEN}" for r in ours)
    assert [r for r in other.cdn.requests() if "range" in r.headers], "the mirror's CDN served chunks"
    assert not any("authorization" in r.headers or GOOD_TOKEN in r.target for r in theirs)


def test_a_signed_mirror_url_is_never_shown_or_stored(mf: Modfetch, faulty_server: Serve) -> None:
    primary, mirror, gone = faulty_server(size=SIZE), faulty_server(size=SIZE), faulty_server(size=SIZE)
    gone.stop()  # skipped with a warning that names it
    secret = "Sig0123456789abcdefSECRET"
    signed, dead = (f"{s.url}?X-Amz-Signature={secret}&X-Amz-Expires=60" for s in (mirror, gone))
    done = mf.run("--log-level", "debug", "download", "--json", "--dest", str(mf.dest), "--mirror", signed,
                  "--mirror", dead, primary.url)
    assert done.returncode == 0, done.stderr
    assert [r for r in mirror.data_requests() if r.status == 206][1:], "the signed mirror served chunks"
    assert secret not in done.stdout + done.stderr
    assert "X-Amz-Expires=60" in done.stdout  # the URL is still recognisable, its signature masked
    written = [f for f in mf.home.rglob("*") if f.is_file()]  # state DB (and its WAL), metrics, logs
    assert mf.state_db in written and not [f for f in written if secret.encode() in f.read_bytes()]


def test_input_file_lines_name_their_mirrors_after_a_tab(mf: Modfetch, tmp_path: Path, faulty_server: Serve) -> None:
    """aria2c's input-file format: URLs of one file on one line, TAB-separated; each line its own file."""
    one, one_mirror = faulty_server(size=SIZE), faulty_server(size=SIZE)
    two, two_mirror = faulty_server(size=SIZE, seed=2), faulty_server(size=SIZE, seed=2)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{one.url_for('/one.bin')}\t{one_mirror.url}\n"
                       f"{two.url_for('/two.bin')}\t \t{two_mirror.url}\n", encoding="utf-8")
    done = mf.run("download", "--json", "--concurrency", "4", "--dest", str(mf.dest), "-i", str(listing))
    assert done.returncode == 0, done.stderr
    assert sha256_of(mf.dest / "one.bin") == one.sha256() and sha256_of(mf.dest / "two.bin") == two.sha256()
    for server in (one, one_mirror, two, two_mirror):
        assert _served_chunks(server) >= 2  # the probe range plus chunks: each line's mirror served its own file
    files = [json.loads(line) for line in done.stdout.splitlines()]
    assert [len(f["mirrors"]["used"]) for f in files] == [2, 2]


def test_a_bad_mirror_in_an_input_file_names_its_line(mf: Modfetch, tmp_path: Path, faulty_server: Serve) -> None:
    primary = faulty_server(size=SIZE)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# list\n{primary.url}\n{primary.url_for('/b.bin')}\tftp://mirror/b.bin\n", encoding="utf-8")
    done = mf.run("download", "-i", str(listing))
    assert done.returncode == 2
    assert_clean_error(done.stderr, f"{listing}:3: mirror", "ftp://mirror/b.bin")
    assert primary.mark() == 0


def test_ctrl_c_while_a_mirror_is_probed_stops_at_once(mf: Modfetch, faulty_server: Serve) -> None:
    primary, mirror = faulty_server(size=SIZE), faulty_server(size=SIZE, hold=True)  # the mirror never answers
    proc = mf.popen("download", "--quiet", "--dest", str(mf.dest), "--mirror", mirror.url, primary.url)
    try:
        wait_for(lambda: bool(mirror.data_requests()), "the mirror's probe", proc)
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert time.monotonic() - began < 3, "a held probe must not delay the stop (read timeout: 5 s)"
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert mf.rows()[0]["status"] == "interrupted"


def _batch(tmp_path: Path, jobs: list[object]) -> Path:
    path = tmp_path / "jobs.yml"
    path.write_text(yaml.safe_dump({"jobs": jobs}), encoding="utf-8")
    return path


def test_batch_mirrors_key_spreads_the_download(mf: Modfetch, tmp_path: Path, faulty_server: Serve) -> None:
    primary, mirror = faulty_server(size=SIZE), faulty_server(size=SIZE)
    path = _batch(tmp_path, [{"uri": primary.url, "dest": str(mf.dest), "mirrors": [mirror.url]}])
    result = mf.cli("download", "--quiet", "--json", "--concurrency", "4", "--batch", str(path))
    assert result.exit_code == 0, result.output
    assert sha256_of(mf.dest / "file.bin") == primary.sha256()
    assert _served_chunks(primary) and _served_chunks(mirror)
    meta = json.loads(mf.rows()[0]["meta"])
    assert {u["url"] for u in meta["mirrors"]["used"]} == {primary.url, mirror.url}


@pytest.mark.parametrize(("value", "needle"), [
    ("http://127.0.0.1:1/file.bin", "must be a list"),
    ([1, 2], "must be a list"),
    ({"url": "http://127.0.0.1:1/x"}, "must be a list"),
    *[([bad], needle) for bad, needle in BAD_MIRRORS],
])
def test_bad_batch_mirrors_are_one_line_and_fetch_nothing(mf: Modfetch, tmp_path: Path, faulty_server: Serve,
                                                          value: object, needle: str) -> None:
    primary = faulty_server(size=SIZE)
    path = _batch(tmp_path, [{"uri": primary.url, "mirrors": value}])
    result = mf.cli("download", "--quiet", "--batch", str(path))
    assert result.exit_code == 2, result.output
    assert_clean_error(result.stderr, "jobs[0].mirrors", needle)
    assert primary.mark() == 0


def test_unknown_job_keys_are_still_rejected(mf: Modfetch, tmp_path: Path, faulty_server: Serve) -> None:
    primary = faulty_server(size=SIZE)
    path = _batch(tmp_path, [{"uri": primary.url, "mirror": [primary.url]}])  # a typo of mirrors
    result = mf.cli("download", "--quiet", "--batch", str(path))
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "jobs[0].mirror", "unknown key", "mirrors")
    assert primary.mark() == 0


@pytest.mark.parametrize(("bad", "needle"), BAD_MIRRORS)
def test_bad_mirror_urls_are_one_line_exit_2(mf: Modfetch, faulty_server: Serve, bad: str, needle: str) -> None:
    primary = faulty_server(size=SIZE)
    result = mf.download(primary.url, "--mirror", bad)
    assert result.exit_code == 2, result.output
    assert_clean_error(result.stderr, "--mirror", needle)
    assert primary.mark() == 0  # checked before any request


@pytest.mark.parametrize("extra", [("--url", "http://127.0.0.1:1/b.bin"), ("--batch", "JOBS")])
def test_mirror_needs_exactly_one_url(mf: Modfetch, tmp_path: Path, faulty_server: Serve,
                                      extra: tuple[str, str]) -> None:
    primary = faulty_server(size=SIZE)
    jobs = _batch(tmp_path, [{"uri": primary.url}])
    args = [a.replace("JOBS", str(jobs)) for a in extra]
    if args[0] == "--batch":
        result = mf.cli("download", "--quiet", "--mirror", primary.url, *args)
    else:
        result = mf.download(primary.url, "--mirror", primary.url, *args)
    assert result.exit_code == 2, result.output
    assert_clean_error(result.stderr, "--mirror")
    assert primary.mark() == 0
