"""Hostile black-box checks of ``modfetch rm`` / ``prune`` / ``verify --repair``: the installed command, real
local servers, real files.  Only what modfetch made is ever deleted: not a user's file that took a download's
place, and nothing named by a failure row that is keyed by its URI (``hf://...`` is no path)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch, sha256_of
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.civitai import CivitaiLookalike
from tests.servers.lookalike.hub import HubLookalike

Serve = Callable[..., FaultyServer]


def run_in(mf: Modfetch, cwd: Path, *args: str) -> tuple[int, str, str]:
    import subprocess

    proc = subprocess.run(mf.command(*args), capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=os.environ.copy(), check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(("uri", "relative"), [
    ("hf://acme/gated-model/model.safetensors", "hf:/acme/gated-model/model.safetensors"),
    ("civitai://model/5500", "civitai:/model/5500"),
])
@pytest.mark.parametrize("command", ["rm", "prune"])
def test_a_failure_keyed_by_its_uri_names_no_file_in_the_current_directory(
        mf: Modfetch, hub: HubLookalike, civitai: CivitaiLookalike, tmp_path: Path, uri: str, relative: str,
        command: str) -> None:
    """The failed row of a URI that never resolved has ``dest_path`` = the URI.  Read as a path, ``hf://a/b``
    is ``hf:/a/b`` relative to the current directory: rm deleted a user's files there (and their ``.part``)."""
    mf.write_config(sources={"huggingface": {"endpoint": hub.url}, "civitai": {"endpoint": civitai.url}})
    work = tmp_path / "work"
    work.mkdir()
    code, _out, err = run_in(mf, work, "-q", "download", uri)
    assert code == 1, err
    row = next(r for r in mf.rows() if r["status"] == "failed")
    assert row["dest_path"] == uri
    precious = work / relative
    precious.parent.mkdir(parents=True)
    precious.write_bytes(b"the user's own file")
    part = Path(f"{precious}.part")
    part.write_bytes(b"the user's own partial file")
    os.utime(part, (1, 1))  # older than any --older-than
    args = ("rm", str(row["id"]), uri) if command == "rm" else ("prune", "--older-than", "1s")
    for dry in (("--dry-run",), ()):
        code, out, err = run_in(mf, work, "--json", *args, *dry)
        assert code == 0, err
        report = json.loads(out)
        assert report["removed"] == [] and report["bytes_freed"] == 0 and report["forgotten"] == [row["id"]]
    assert precious.read_bytes() == b"the user's own file" and part.exists()
    assert not any(r["id"] == row["id"] for r in mf.rows())


def _plant(kind: str, dest: Path, elsewhere: Path) -> None:
    """Put something of the user's where the download was."""
    size = dest.stat().st_size
    if kind == "same-size-other-bytes":  # written beside it, then renamed over it: surely another inode
        fresh = dest.with_name("fresh.tmp")
        fresh.write_bytes(b"u" * size)
        os.replace(fresh, dest)
        return
    dest.unlink()
    if kind == "other-size":
        dest.write_bytes(b"my own notes\n")
    elif kind == "symlink":
        elsewhere.write_bytes(b"the user's real file")
        dest.symlink_to(elsewhere)
    elif kind == "directory":
        dest.mkdir()
        (dest / "keep.txt").write_text("mine")


@pytest.mark.parametrize("kind", ["same-size-other-bytes", "other-size", "symlink", "directory"])
def test_rm_keeps_a_file_the_user_put_in_place_of_the_download(mf: Modfetch, faulty_server: Serve, tmp_path: Path,
                                                               kind: str) -> None:
    server = faulty_server(size=MiB, path="/model.bin")
    result = mf.download_json(server.url)
    dest = Path(result["path"])
    elsewhere = tmp_path / "elsewhere.bin"
    _plant(kind, dest, elsewhere)
    before = os.lstat(dest)
    proc = mf.run("--json", "rm", str(result["id"]))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert str(dest) not in report["removed"] and any(k.startswith(f"{dest}: ") for k in report["kept"])
    assert report["removed"] == [f"{dest}.sha256"]  # modfetch's own checksum file goes
    assert report["forgotten"] == [result["id"]] and mf.rows() == []
    assert os.path.lexists(dest) and os.lstat(dest).st_ino == before.st_ino
    if kind == "symlink":
        assert elsewhere.read_bytes() == b"the user's real file"
    if kind == "directory":
        assert (dest / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["none", "flipped-byte", "restored-copy"])
def test_rm_still_removes_modfetchs_own_file_damaged_or_restored(mf: Modfetch, faulty_server: Serve,
                                                                 tmp_path: Path, damage: str) -> None:
    server = faulty_server(size=MiB, path="/model.bin")
    result = mf.download_json(server.url)
    dest = Path(result["path"])
    if damage == "flipped-byte":
        with open(dest, "r+b") as handle:
            handle.seek(1000)
            byte = handle.read(1)
            handle.seek(1000)
            handle.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "restored-copy":  # from a backup: another inode, the same bytes
        backup = tmp_path / "backup.bin"
        shutil.copyfile(dest, backup)
        dest.unlink()
        tmp_path.joinpath("hold").write_bytes(b"x")  # keep the freed inode number from coming straight back
        shutil.copyfile(backup, dest)
        assert sha256_of(dest) == result["sha256"]
    proc = mf.run("--json", "rm", str(dest))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert str(dest) in report["removed"] and report["kept"] == [] and not os.path.lexists(dest)


def test_two_files_of_one_server_with_one_name_do_not_collide(mf: Modfetch, faulty_server: Serve) -> None:
    """``<host>/<file>`` dropped the URL's folders: ``/sdxl/vae.safetensors`` then ``/sd15/vae.safetensors``
    from one server met at one path, and the second download failed ("already exists")."""
    server = faulty_server(size=MiB, path="/sdxl/vae.safetensors")
    host = mf.dest / f"127.0.0.1_{server.port}"
    urls = {f"{server.base}/sdxl/vae.safetensors": host / "sdxl/vae.safetensors",
            f"{server.base}/sd15/vae.safetensors": host / "sd15/vae.safetensors",
            f"{server.base}/vae.safetensors": host / "vae.safetensors",
            # a %2F inside one segment is one folder name, never a way to merge with (or escape to) another
            f"{server.base}/sd15%2Fx/vae.safetensors": host / "sd15%2Fx/vae.safetensors",
            f"{server.base}/%2e%2e/%2E%2E/up/vae.safetensors": host / "up/vae.safetensors"}
    proc = mf.run("--json", "download", *urls)
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(line)["path"] for line in proc.stdout.splitlines()) == sorted(map(str, urls.values()))


def test_url_folders_that_meet_a_downloaded_file_get_their_own_folder(mf: Modfetch, faulty_server: Serve) -> None:
    """``http://h/llama`` (a file) then ``http://h/llama/config.json``: "Not a directory" once URL folders were
    kept.  The second gets a hashed folder, also on its rerun (found by URL), and the first file is untouched."""
    server = faulty_server(size=MiB, path="/llama")
    first = json.loads(mf.run("--json", "download", f"{server.base}/llama").stdout)
    for _ in range(2):
        proc = mf.run("--json", "download", f"{server.base}/llama/config.json")
        assert proc.returncode == 0, proc.stderr
        path = Path(json.loads(proc.stdout)["path"])
        assert path.name == "config.json" and path.parent.name.startswith("_")
        assert path.parent.parent == Path(first["path"]).parent and sha256_of(Path(first["path"])) == first["sha256"]


def test_a_url_path_too_long_for_folders_still_downloads(mf: Modfetch, faulty_server: Serve) -> None:
    """30 folders of 200 bytes exceed PATH_MAX: they become one hashed folder, two such URLs stay apart."""
    server = faulty_server(size=MiB, path="/x.bin")
    long_a = "/".join(["a" * 200] * 30)
    long_b = "/".join(["a" * 200] * 29 + ["b" * 200])
    proc = mf.run("--json", "download", f"{server.base}/{long_a}/x.bin", f"{server.base}/{long_b}/x.bin")
    assert proc.returncode == 0, proc.stderr
    paths = [Path(json.loads(line)["path"]) for line in proc.stdout.splitlines()]
    assert len(set(paths)) == 2 and all(p.parent.parent == mf.dest / f"127.0.0.1_{server.port}" for p in paths)


def test_a_file_from_the_flat_host_layout_is_still_found_by_its_url(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, path="/models/model.bin")
    url = f"{server.base}/models/model.bin"
    old = mf.dest / f"127.0.0.1_{server.port}"
    first = mf.run("--json", "download", "--dest", str(old), url)
    assert first.returncode == 0, first.stderr
    again = mf.run("--json", "download", url)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["path"] == str(old / "model.bin") and result["already_present"] is True


def test_a_plain_rerun_repairs_a_damaged_file_without_force(mf: Modfetch, faulty_server: Serve) -> None:
    """README: "rerunning the download command re-fetches only the damaged chunks".  Since the HEAD-only rerun
    (same size + strong ETag) landed, the rerun says "already exists with different or unknown content"."""
    server = faulty_server(size=4 * MiB, path="/model.bin")
    result = mf.download_json(server.url)
    dest = Path(result["path"])
    with open(dest, "r+b") as handle:
        handle.seek(3 * MiB + 5)
        handle.write(b"\xff\x00\xff")
    proc = mf.run("download", "--dest", str(mf.dest), server.url)
    assert proc.returncode == 0, proc.stderr
    assert "repairing it in place" in proc.stderr and sha256_of(dest) == result["sha256"]


def test_prune_does_not_forget_a_library_whose_disk_is_not_mounted(mf: Modfetch, faulty_server: Serve,
                                                                  tmp_path: Path) -> None:
    """A cron ``prune`` while the models disk is unmounted forgot every download and removed every app link."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    mount = tmp_path / "mnt"
    mf.write_config(general={"download_root": str(mount / "models")},
                    placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)}}})
    server = faulty_server(size=MiB, path="/lora.safetensors")
    proc = mf.run("--json", "download", "--type", "sd.lora", "--place", server.url)
    assert proc.returncode == 0, proc.stderr
    dest = Path(json.loads(proc.stdout)["path"])
    link = comfy / "models/loras/lora.safetensors"
    assert link.is_symlink()
    (mount / "models").rename(tmp_path / "elsewhere")  # "unmounted": the whole tree is gone
    pruned = mf.run("--json", "prune")
    assert pruned.returncode == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["forgotten"] == [] and report["removed"] == [] and report["kept"][0].startswith(f"{dest}: ")
    assert link.is_symlink() and len(mf.rows()) == 1
    (tmp_path / "elsewhere").rename(mount / "models")  # mounted again: all there
    listed = json.loads(mf.run("--json", "list").stdout)
    assert [e["status"] for e in listed] == ["complete"] and link.resolve() == dest
    other = faulty_server(size=MiB, path="/other.bin")
    assert mf.run("-q", "download", f"{other.base}/keep/other.bin").returncode == 0
    shutil.rmtree(dest.parent)  # a folder deleted on purpose, in a library that still holds others: forgotten
    again = json.loads(mf.run("--json", "prune").stdout)
    assert again["forgotten"] == [listed[0]["id"]] and not os.path.lexists(link)


@pytest.mark.parametrize("how", ["rm", "prune"])
def test_metadata_sidecars_go_with_their_model(mf: Modfetch, civitai: CivitaiLookalike, tmp_path: Path,
                                               how: str) -> None:
    """``--metadata`` sidecars were left behind by rm (and prune): beside the gone file and in the app folders,
    where a later model of the same stem would have been shown with this one's info ("never over an existing
    file").  A sidecar the user edited since is kept."""
    comfy, webui = tmp_path / "ComfyUI", tmp_path / "webui"
    comfy.mkdir()
    webui.mkdir()
    mf.write_config(sources={"civitai": {"endpoint": civitai.url}}, general={"download_root": str(mf.dest)},
                    placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)},
                                        "a1111": {"preset": "a1111", "base": str(webui)}}})
    proc = mf.run("--json", "download", "--place", "--metadata", "civitai://model/4201")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    sidecars = [Path(s["path"]) for s in result["sidecars"]]
    assert len(sidecars) == 3 and all(p.is_file() for p in sidecars)
    edited = next(p for p in sidecars if p.is_relative_to(webui))
    edited.write_text('{"my": "notes"}', encoding="utf-8")
    if how == "rm":
        done = mf.run("--json", "rm", str(result["id"]))
    else:
        Path(result["path"]).unlink()
        done = mf.run("--json", "prune")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [p for p in sidecars if p.exists()] == [edited] and edited.read_text() == '{"my": "notes"}'
    assert f"{edited}: changed since modfetch wrote it" in report["kept"]
