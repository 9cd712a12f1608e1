"""Hostile black-box checks of the issue-16 run options through the installed ``modfetch``: ``--dry-run`` writes
nothing anywhere (not even the Hub listings a real run saves), a URI list is checked whole before the first
download, and ``--limit-rate`` reads zero in any spelling as "unlimited"."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modfetch.errors import UsageError
from modfetch.util.sizes import parse_rate
from tests.conftest import MiB, Modfetch
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.civitai import CivitaiLookalike
from tests.servers.lookalike.hub import HubLookalike


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``root`` with its size and mtime (directories too)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("first_run", [True, False], ids=["fresh-home", "after-a-real-run"])
def test_dry_run_writes_nothing_anywhere(mf: Modfetch, hub: HubLookalike, civitai: CivitaiLookalike,
                                         faulty_server: type[FaultyServer], tmp_path: Path, first_run: bool) -> None:
    """A whole-repo hf:// dry run saved the repo listing under <data_root>/hf-trees/ (and created data_root)."""
    mf.write_config(sources={"huggingface": {"endpoint": hub.url}, "civitai": {"endpoint": civitai.url}},
                    general={"download_root": str(mf.dest)})
    server = faulty_server(size=MiB, path="/plain.bin")
    uris = ["hf://openai-community/gpt2", "hf://acme/tiny-model?include=weights/*", "civitai://model/4201",
            server.url]
    if not first_run:
        assert mf.run("-q", "download", server.url).returncode == 0
    before = tree(tmp_path)
    proc = mf.run("--json", "download", "--dry-run", *uris)
    assert proc.returncode == 0, proc.stderr
    planned = json.loads(proc.stdout)
    assert {p["path"] for p in planned} >= {str(mf.dest / "hf/openai-community/gpt2/config.json"),
                                           str(mf.dest / f"127.0.0.1_{server.port}" / "plain.bin")}
    # SQLite itself may leave its -wal/-shm side files when the (read-only) DB is opened: not a dry run's write.
    sqlite_side = ("state.db-wal", "state.db-shm")
    assert {k: v for k, v in tree(tmp_path).items() if not k.endswith(sqlite_side)} == \
        {k: v for k, v in before.items() if not k.endswith(sqlite_side)}


@pytest.mark.parametrize("bad", ["ftp://host/model.bin", "hf://bad repo/x", "civitai://model/abc",
                                 "http:///no-host.bin", "hf://acme/tiny-model:Q4/extra"])
def test_a_bad_uri_in_a_list_stops_the_run_before_the_first_download(mf: Modfetch,
                                                                    faulty_server: type[FaultyServer],
                                                                    tmp_path: Path, bad: str) -> None:
    """It was found only when its turn came: line 1 was downloaded (hours, for a big model), then exit 2 and
    line 3 skipped."""
    server = faulty_server(size=MiB, path="/first.bin")
    listing = tmp_path / "urls.txt"
    listing.write_text(f"{server.url}\n{bad}\n{server.url.replace('first', 'third')}\n", encoding="utf-8")
    for args in (("-i", str(listing)), (server.url, bad)):
        proc = mf.run("download", "--dest", str(mf.dest), *args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("modfetch: error: ") and "Traceback" not in proc.stderr
        assert not mf.dest.exists() and server.requests == []


@pytest.mark.parametrize(("text", "rate"), [("0", 0), ("00", 0), ("0.0", 0), ("0K", 0), ("0MiB", 0), (" 0 ", 0),
                                            ("1", 1), ("1.5M", 1572864), ("500K", 512000), ("2MB", 2_000_000)])
def test_limit_rate_values(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0.5", "-1", "1e100", "5X", "", "0X", "2T"])
def test_bad_limit_rates_are_one_clear_line(mf: Modfetch, text: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(text)
    proc = mf.run("download", "--dry-run", "--limit-rate", text, "http://127.0.0.1:9/x.bin")
    assert proc.returncode == 2 and proc.stderr.startswith("modfetch: error: --limit-rate: "), proc.stderr


def test_limit_rate_zero_spellings_lift_the_limit(mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    mf.write_config(network={"max_bytes_per_second": 1})  # a configured crawl that --limit-rate 0.0 must lift
    server = faulty_server(size=MiB, path="/fast.bin")
    proc = mf.run("-q", "download", "--dest", str(mf.dest), "--limit-rate", "0.0", server.url, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (mf.dest / "fast.bin").stat().st_size == MiB


def test_verify_mismatches_counts_a_deleted_file(mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    """HELP: "Downloads whose file no longer matches its recorded SHA-256 (or is gone)"; verify exits 1 with
    "missing", but the gauge (and so the ModfetchVerifyMismatch alert) stays 0."""
    from prometheus_client.parser import text_string_to_metric_families

    prom = mf.home / "prom" / "modfetch.prom"
    mf.write_config(metrics={"prometheus_textfile": {"enabled": True, "path": str(prom)}})
    server = faulty_server(size=MiB, path="/gone.bin")
    path = Path(mf.download_json(server.url)["path"])
    path.unlink()
    proc = mf.run("verify", "--all")
    assert proc.returncode == 1 and "missing" in proc.stdout
    values = {s.name: s.value for f in text_string_to_metric_families(prom.read_text()) for s in f.samples}
    assert values["modfetch_verify_mismatches"] == 1
