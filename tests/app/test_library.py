"""``modfetch list``, ``rm`` and ``prune``, and ``verify`` on deleted files: against a real HTTP server, real
files, links and copies, through CliRunner and (once each) as real subprocesses."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modfetch.config import load_config
from modfetch.engine.files import TargetLock
from modfetch.errors import UsageError
from modfetch.state import INTERRUPTED, open_state
from modfetch.util.sizes import parse_duration
from tests.conftest import MiB, Modfetch, assert_clean_error
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.hub import HubLookalike

Serve = Callable[..., FaultyServer]


@pytest.fixture
def apps(mf: Modfetch, tmp_path: Path) -> dict[str, Path]:
    """Two app trees (ComfyUI, A1111) in the config."""
    comfy, a1111 = tmp_path / "ComfyUI", tmp_path / "webui"
    comfy.mkdir()
    a1111.mkdir()
    mf.write_config(placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)},
                                        "a1111": {"preset": "a1111", "base": str(a1111)}}})
    return {"comfyui": comfy / "models/loras", "a1111": a1111 / "models/Lora"}


def download(mf: Modfetch, server: FaultyServer) -> Path:
    return Path(mf.download_json(server.url)["path"])


def place(mf: Modfetch, path: Path, mode: str, app: str) -> None:
    result = mf.cli("place", str(path), "--type", "sd.lora", "--mode", mode, "--app", app)
    assert result.exit_code == 0, result.output


def as_json(mf: Modfetch, *args: str) -> Any:
    result = mf.cli("--json", *args)
    return result.exit_code, json.loads(result.stdout)


def test_list_shows_status_placements_and_filters(mf: Modfetch, faulty_server: Serve,
                                                  apps: dict[str, Path]) -> None:
    a = download(mf, faulty_server(size=MiB, path="/a.safetensors", seed=1))
    b = download(mf, faulty_server(size=MiB, path="/b.bin", seed=2))
    c = download(mf, faulty_server(size=MiB, path="/c.bin", seed=3))
    place(mf, a, "symlink", "comfyui")
    assert mf.cli("verify", str(a)).exit_code == 0
    b.unlink()
    with open(c, "ab") as handle:
        handle.write(b"x")  # another size: a mismatch, found without hashing
    code, entries = as_json(mf, "list")
    assert code == 0
    by_path = {e["path"]: e for e in entries}
    assert by_path[str(a)]["status"] == "verified" and by_path[str(a)]["last_verified"] > 0
    assert by_path[str(b)]["status"] == "missing" and by_path[str(c)]["status"] == "mismatch"
    assert by_path[str(a)]["placements"] == [{"app": "comfyui", "mode": "symlink",
                                              "target": str(apps["comfyui"] / a.name), "present": True}]
    assert {e["source"] for e in entries} == {"http"} and all(e["size"] == MiB for e in entries)
    assert as_json(mf, "list", "--source", "civitai")[1] == []
    table = mf.cli("list").stdout
    assert "missing" in table and str(b) in table and f"-> comfyui symlink {apps['comfyui'] / a.name}" in table
    assert mf.cli("list", "--source", "huggingface").stdout.strip() == "no files match"


def test_rm_removes_file_sidecar_placements_and_keeps_a_replaced_copy(
        mf: Modfetch, faulty_server: Serve, apps: dict[str, Path]) -> None:
    server = faulty_server(size=2 * MiB, path="/lora.safetensors")
    path = download(mf, server)
    place(mf, path, "symlink", "comfyui")
    place(mf, path, "copy", "a1111")
    copy = apps["a1111"] / path.name
    copy.write_bytes(b"the user's own file now")  # replaced: must survive
    (row,) = mf.rows()
    Path(str(path) + ".part").write_bytes(b"leftover")
    code, report = as_json(mf, "rm", str(row["id"]))
    assert code == 0, report
    assert not path.exists() and not Path(str(path) + ".sha256").exists() and not Path(str(path) + ".part").exists()
    assert not os.path.lexists(apps["comfyui"] / path.name)
    assert copy.read_bytes() == b"the user's own file now"
    assert report["kept"] == [f"{copy}: changed since modfetch placed it"]
    assert report["forgotten"] == [row["id"]] and report["bytes_freed"] >= 2 * MiB
    assert mf.rows() == [] and mf.status() == []
    with open_state(mf.state_db) as db:
        assert db.placements() == []


def test_rm_by_path_with_hardlink_and_copy_frees_the_bytes_once(mf: Modfetch, faulty_server: Serve,
                                                                apps: dict[str, Path]) -> None:
    path = download(mf, faulty_server(size=MiB, path="/h.safetensors"))
    place(mf, path, "hardlink", "comfyui")
    place(mf, path, "copy", "a1111")
    result = mf.cli("rm", str(path))
    assert result.exit_code == 0, result.output
    assert not (apps["comfyui"] / path.name).exists() and not (apps["a1111"] / path.name).exists()
    assert f"removed  {path}" in result.stdout
    freed = int(result.stdout.strip().splitlines()[-1].split("(")[1].split()[0])
    assert 2 * MiB <= freed < 2 * MiB + 64 * 1024  # the copy and the file; the hardlink shares the file's blocks


def test_rm_keep_file_and_dry_run(mf: Modfetch, faulty_server: Serve, apps: dict[str, Path]) -> None:
    a = download(mf, faulty_server(size=MiB, path="/a.safetensors", seed=1))
    b = download(mf, faulty_server(size=MiB, path="/b.safetensors", seed=2))
    place(mf, a, "symlink", "comfyui")
    dry = mf.cli("rm", "--dry-run", str(a))
    assert dry.exit_code == 0 and f"would remove  {a}" in dry.stdout and "would free" in dry.stdout
    assert a.exists() and (apps["comfyui"] / a.name).is_symlink() and len(mf.rows()) == 2
    kept = mf.cli("rm", "--keep-file", str(b))
    assert kept.exit_code == 0, kept.output
    assert b.read_bytes() and Path(str(b) + ".sha256").exists() and "freed 0 B" in kept.stdout
    assert [r["dest_path"] for r in mf.rows()] == [str(a)]


def test_rm_unknown_ids_and_a_running_download(mf: Modfetch, faulty_server: Serve) -> None:
    path = download(mf, faulty_server(size=MiB))
    result = mf.cli("rm", "99")
    assert result.exit_code == 2 and "no download with id 99" in result.output
    assert mf.cli("status", "99").exit_code == 2  # the same as status on an unknown id
    result = mf.cli("rm", "1", "/no/such/file.bin")
    assert result.exit_code == 2 and path.exists()  # nothing removed when any target is unknown
    config = load_config(str(mf.config_path))
    with TargetLock(config.data_root / "locks", path):  # as a running download of that file holds it
        held = mf.run("rm", "1")
    assert_clean_error(held.stderr, "could not be removed")
    assert held.returncode == 1 and path.exists() and len(mf.rows()) == 1


def _interrupted(mf: Modfetch, name: str, age: float) -> Path:
    """An interrupted download's row and ``.part`` last touched ``age`` seconds ago."""
    dest = mf.dest / name
    part = Path(str(dest) + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(os.urandom(300_000))
    with open_state(mf.state_db) as db:
        row = db.create_download(f"http://127.0.0.1:9/{name}", str(dest), status=INTERRUPTED)
        db.conn.execute("UPDATE downloads SET updated_at = ? WHERE id = ?", (time.time() - age, row.id))
    os.utime(part, (time.time() - age, time.time() - age))
    return part


def test_prune_after_manual_delete(mf: Modfetch, faulty_server: Serve, apps: dict[str, Path]) -> None:
    gone = download(mf, faulty_server(size=MiB, path="/gone.safetensors", seed=1))
    kept = download(mf, faulty_server(size=MiB, path="/kept.safetensors", seed=2))
    place(mf, gone, "symlink", "comfyui")
    place(mf, kept, "symlink", "comfyui")
    gone.unlink()
    old_part = _interrupted(mf, "old.bin", age=3 * 86400)
    new_part = _interrupted(mf, "new.bin", age=60)
    verify = mf.cli("verify", "--all")
    assert verify.exit_code == 1 and "missing (forget it: modfetch rm 1, or modfetch prune)" in verify.stdout
    dry = mf.cli("prune", "--dry-run", "--older-than", "1d")
    assert dry.exit_code == 0 and old_part.exists() and len(mf.rows()) == 4
    code, report = as_json(mf, "prune", "--older-than", "1d")
    assert code == 0, report
    assert not os.path.lexists(apps["comfyui"] / gone.name)  # the dangling link modfetch made
    assert (apps["comfyui"] / kept.name).is_symlink()
    assert not old_part.exists() and new_part.exists()
    assert report["bytes_freed"] >= 300_000 and sorted(report["removed"]) == sorted(
        [str(apps["comfyui"] / gone.name), str(old_part)])
    assert sorted(r["dest_path"] for r in mf.rows()) == sorted([str(kept), str(mf.dest / "new.bin")])
    again = mf.cli("verify", "--all")
    assert again.exit_code == 0, again.output  # once pruned, the deleted file no longer fails verify


def test_prune_default_age_keeps_recent_parts(mf: Modfetch) -> None:
    recent = _interrupted(mf, "recent.bin", age=6 * 86400)
    stale = _interrupted(mf, "stale.bin", age=8 * 86400)
    result = mf.cli("prune")
    assert result.exit_code == 0, result.output
    assert recent.exists() and not stale.exists()
    assert f"removed  {stale}" in result.stdout and "freed" in result.stdout


def test_list_rm_prune_as_real_processes(mf: Modfetch, faulty_server: Serve) -> None:
    a = download(mf, faulty_server(size=MiB, path="/a.bin", seed=1))
    b = download(mf, faulty_server(size=MiB, path="/b.bin", seed=2))
    listed = mf.run("--json", "list")
    assert listed.returncode == 0 and {e["path"] for e in json.loads(listed.stdout)} == {str(a), str(b)}
    removed = mf.run("--json", "rm", str(a))
    assert removed.returncode == 0 and json.loads(removed.stdout)["removed"][-1] == str(a)
    b.unlink()
    pruned = mf.run("prune")
    assert pruned.returncode == 0 and "forgot  download id(s) 2" in pruned.stdout
    assert mf.run("list").stdout.strip() == "no files yet"


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
                                               ("90", 90), ("1.5h", 5400), (" 3D ", 259200)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "-1d", "d", "1e9w", "7 days"])
def test_bad_durations(mf: Modfetch, text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)
    result = mf.cli("prune", "--older-than", text)
    assert result.exit_code == 2 and "modfetch: error:" in result.output


def test_rm_removes_an_hf_cache_placement_with_its_blob(mf: Modfetch, tmp_path: Path) -> None:
    """The HF cache holds a relative snapshot link to a blob (a hardlink of the file): rm removes both, and the
    bytes are freed once everything pointing at them is gone."""
    cache = tmp_path / "hub-cache"
    with HubLookalike() as hub:
        mf.write_config(sources={"huggingface": {"endpoint": hub.url}},
                        placement={"apps": {"hf-cache": {"preset": "hf-cache", "base": str(cache)}}})
        got = mf.cli("download", "--json", "--url", "hf://acme/tiny-model/weights/model.safetensors", "--place")
        assert got.exit_code == 0, got.output
    path = Path(json.loads(got.stdout.strip().splitlines()[-1])["path"])
    snapshots = list(cache.rglob("snapshots/*/weights/model.safetensors"))
    blobs = [p for p in cache.rglob("blobs/*") if p.is_file()]
    assert len(snapshots) == 1 and snapshots[0].is_symlink() and len(blobs) == 1
    code, report = as_json(mf, "rm", str(path))
    assert code == 0, report
    assert not os.path.lexists(snapshots[0]) and not blobs[0].exists() and not path.exists()
    assert report["kept"] == [] and report["bytes_freed"] >= 1_200_000  # the file's size, freed once
