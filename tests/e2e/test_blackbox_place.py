"""Black-box placement, type detection and the metrics textfile, run through the installed ``modfetch``
(subprocess) or the CLI on real files: hostile model headers and trees; real temporary app trees with unusual
but legal existing content (folder links to another disk, files where folders should be), LM Studio names that
need sanitising, the Hugging Face cache checked with the real huggingface_hub offline (two revisions sharing a
blob, an entry huggingface_hub wrote itself, scan_cache_dir), split GGUFs and Ollama, concurrent runs, and
``--dry-run`` against the real run."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modfetch.metrics import TextfileWriter
from modfetch.state import COMPLETE, open_state
from tests.conftest import Modfetch, assert_clean_error
from tests.helpers import MANY, gguf_str, write_gguf, write_lora, write_safetensors


def _safetensors(path: Path, header: bytes, payload: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)
    return path


def _type(mf: Modfetch, path: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    proc = mf.run("type", str(path), timeout=timeout)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc


def test_type_survives_a_safetensors_header_nested_100k_deep(mf: Modfetch, tmp_path: Path) -> None:
    """json.loads raises RecursionError (not ValueError) on deep nesting: it must read as malformed."""
    deep = _safetensors(tmp_path / "deep.safetensors", b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    proc = _type(mf, deep)
    assert proc.returncode == 0 and "generic" in proc.stdout and "nests too deeply" in proc.stdout


def test_type_prints_lone_surrogates_and_control_characters_safely(mf: Modfetch, tmp_path: Path) -> None:
    """JSON escapes such as \\ud800 decode to lone surrogates, which crashed printing the reason; control
    characters (ESC) from a header must not reach the terminal either."""
    lora = _safetensors(tmp_path / "lora.safetensors", b'{"lora_unet_\\ud800\\u001b[31m":{}}')
    meta = _safetensors(tmp_path / "meta.safetensors",
                        b'{"a":{}, "__metadata__":{"ss_network_module":"x\\udc00\\u001b[2J"}}')
    for path in (lora, meta):
        proc = _type(mf, path)
        assert proc.returncode == 0 and "sd.lora" in proc.stdout, proc.stderr
        assert "\x1b" not in proc.stdout
    result = mf.cli("type", str(lora))
    assert result.exit_code == 0 and "sd.lora" in result.stdout


def test_type_does_not_block_on_a_fifo(mf: Modfetch, tmp_path: Path) -> None:
    """open() of a FIFO blocks until a writer appears: detection must not open non-regular files."""
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    proc = _type(mf, fifo, timeout=15)
    assert proc.returncode == 0 and "generic" in proc.stdout and "not a regular file" in proc.stdout


def test_type_refuses_a_gguf_with_millions_of_strings_at_once(mf: Modfetch, tmp_path: Path) -> None:
    """A crafted string array far beyond any real vocabulary is rejected up front, not walked item by item."""
    count = 5_000_000
    path = tmp_path / "strings.gguf"
    with path.open("wb") as fh:
        fh.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_str("x.tokens") + struct.pack("<IIQ", 9, 8, count))
        fh.write(b"\0" * (8 * count))
    proc = _type(mf, path)
    assert proc.returncode == 0 and "generic" in proc.stdout and "implausibly" in proc.stdout, proc.stdout


def test_metrics_lock_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    """The lock name beside the textfile is predictable; a link planted there must not create the file it
    points to (the write fails and is only warned about)."""
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    victim = tmp_path / "victim"
    (textdir / ".modfetch.prom.lock").symlink_to(victim)
    TextfileWriter(tmp_path / "missing-state.db", textdir / "modfetch.prom")()
    assert not victim.exists() and not victim.is_symlink()


def test_place_refuses_a_download_whose_bytes_changed(mf: Modfetch, tmp_path: Path,
                                                     faulty_server: Callable[..., Any]) -> None:
    """A file modfetch downloaded and that was modified since is not placed as that download (wrong bytes);
    the app folder is left untouched."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    mf.write_config(placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)}}})
    server = faulty_server(size=64 << 10, path="/adapter.safetensors")
    assert mf.download(server.url).exit_code == 0
    final = mf.dest / "adapter.safetensors"
    data = bytearray(final.read_bytes())
    data[-1] ^= 0xFF
    final.write_bytes(bytes(data))
    for mode in ("symlink", "copy"):
        result = mf.cli("place", "--type", "sd.lora", "--mode", mode, str(final))
        assert result.exit_code == 1, result.output
        assert_clean_error(result.output, "changed since modfetch downloaded it")
    assert not (comfy / "models" / "loras" / final.name).exists()
    assert json.loads(mf.cli("status", "--json").stdout)[0].get("placements", []) == []
    # Touched but unchanged bytes are still the download: placed.
    data[-1] ^= 0xFF
    final.write_bytes(bytes(data))
    assert mf.cli("place", "--type", "sd.lora", str(final)).exit_code == 0
    assert (comfy / "models" / "loras" / final.name).is_symlink()


def test_place_dry_run_creates_nothing_not_even_the_state_db(mf: Modfetch, tmp_path: Path) -> None:
    """``--dry-run`` changes nothing: no app folders, no Modelfile and no state DB."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    mf.write_config(placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)},
                                        "ollama": {"preset": "ollama"}}})
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_str("general.architecture")
                     + struct.pack("<I", 8) + gguf_str("llama") + b"\0" * 32)
    lora = _safetensors(tmp_path / "my.safetensors", b'{"lora_unet_a.lora_down.weight":{}}')
    proc = mf.run("place", "--dry-run", str(gguf), str(lora))
    assert proc.returncode == 0 and "would-place" in proc.stdout, proc.stderr
    assert not mf.state_db.exists()
    assert list(comfy.iterdir()) == [] and not (tmp_path / "tiny.Modelfile").exists()


# -- app trees, the HF cache, split GGUFs, concurrency, --dry-run ------------------------------------------
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


class Tree:
    """Fake app installs under tmp_path and a config naming them."""

    def __init__(self, mf: Modfetch, tmp_path: Path) -> None:
        self.mf = mf
        self.tmp = tmp_path
        self.comfy = tmp_path / "ComfyUI"
        self.a1111 = tmp_path / "sd-webui"
        self.lms = tmp_path / "lms" / "models"
        self.hub = tmp_path / "hub"
        self.comfy.mkdir()
        self.a1111.mkdir()

    def configure(self, *names: str, **placement: Any) -> None:
        every = {"comfyui": {"preset": "comfyui", "base": str(self.comfy)},
                 "a1111": {"preset": "a1111", "base": str(self.a1111)},
                 "lmstudio": {"preset": "lmstudio", "base": str(self.lms)},
                 "hf": {"preset": "hf-cache", "base": str(self.hub)},
                 "ollama": {"preset": "ollama"}}
        apps = {name: every[name] for name in (names or every)}
        self.mf.write_config(placement={"apps": apps, **placement})

    def place(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        proc = self.mf.run("place", *[str(a) for a in args])
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def place_json(self, *args: str | Path) -> tuple[int, list[dict[str, Any]]]:
        proc = self.mf.run("--json", "place", *[str(a) for a in args])
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture
def tree(mf: Modfetch, tmp_path: Path) -> Tree:
    return Tree(mf, tmp_path)


def _register(mf: Modfetch, path: Path, meta: dict[str, Any]) -> int:
    """Record ``path`` as a finished download with source hints, as the engine does."""
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    st = path.stat()
    mf.state_db.parent.mkdir(parents=True, exist_ok=True)
    with open_state(mf.state_db) as db:
        row = db.create_download("https://example.invalid/" + path.name, str(path), size=st.st_size,
                                 sha256=sha, status=COMPLETE,
                                 meta={**meta, "stat": [st.st_size, st.st_mtime_ns, st.st_ino]})
    return row.id


def _hf_meta(path: Path, repo: str, commit: str, revision: str, path_in_repo: str) -> dict[str, Any]:
    return {"repo_id": repo, "repo_type": "model", "revision": revision, "commit": commit,
            "etag": hashlib.sha256(path.read_bytes()).hexdigest(), "path_in_repo": path_in_repo, "lfs": True}


def _hub_python(hub: Path, code: str, *args: str) -> str:
    """Run the real huggingface_hub client offline in a fresh process (it reads HF_* env at import)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# -- folder apps: existing trees ---------------------------------------------------------------------------

def test_folder_link_to_another_disk_is_followed_not_replaced(tree: Tree, tmp_path: Path) -> None:
    other = tmp_path / "other-disk" / "loras"
    other.mkdir(parents=True)
    (tree.comfy / "models").mkdir()
    (tree.comfy / "models" / "loras").symlink_to(other)
    tree.configure("comfyui")
    lora = write_lora(tmp_path / "dl" / "detail.safetensors")
    for _ in range(2):
        proc = tree.place(lora)
        assert proc.returncode == 0, proc.stderr
    assert (tree.comfy / "models" / "loras").is_symlink()
    assert os.readlink(tree.comfy / "models" / "loras") == str(other)
    assert os.readlink(other / "detail.safetensors") == str(lora)
    assert "skipped" in proc.stdout


# -- Hugging Face cache ----------------------------------------------------------------------------------

def test_hf_cache_two_revisions_share_one_blob_and_scan_cache_dir_accepts_it(tree: Tree, tmp_path: Path) -> None:
    """The same bytes at two commits (main and a tag), one in a nested folder: one blob, two snapshots, both
    refs; hf_hub_download / try_to_load_from_cache offline and scan_cache_dir accept the tree."""
    tree.configure("hf")
    first = write_safetensors(tmp_path / "dl" / "a" / "model.safetensors", MANY)
    second = tmp_path / "dl" / "b" / "model.safetensors"
    second.parent.mkdir(parents=True)
    second.write_bytes(first.read_bytes())
    _register(tree.mf, first, _hf_meta(first, "acme/tiny", COMMIT_A, "main", "unet/model.safetensors"))
    _register(tree.mf, second, _hf_meta(second, "acme/tiny", COMMIT_B, "v1.0", "unet/model.safetensors"))
    for _ in range(2):  # a rerun is a no-op
        proc = tree.place(first, second)
        assert proc.returncode == 0, proc.stderr
    repo = tree.hub / "models--acme--tiny"
    assert len(list((repo / "blobs").iterdir())) == 1
    assert (repo / "refs" / "main").read_text() == COMMIT_A
    assert (repo / "refs" / "v1.0").read_text() == COMMIT_B
    code = ("import sys; from huggingface_hub import hf_hub_download, try_to_load_from_cache, scan_cache_dir\n"
            "for rev in ('main', 'v1.0', sys.argv[1], sys.argv[2]):\n"
            "    print(hf_hub_download('acme/tiny', 'unet/model.safetensors', revision=rev))\n"
            "    print(try_to_load_from_cache('acme/tiny', 'unet/model.safetensors', revision=rev))\n"
            "info = scan_cache_dir()\n"
            "assert not info.warnings, info.warnings\n"
            "(r,) = info.repos\n"
            "print(r.repo_id, r.nb_files, sorted(sorted(x.refs) for x in r.revisions))")
    out = _hub_python(tree.hub, code, COMMIT_A, COMMIT_B).splitlines()
    for line in out[:-1]:
        assert Path(line).read_bytes() == first.read_bytes()
    assert out[-1] == "acme/tiny 1 [['main'], ['v1.0']]"


def test_hf_cache_entry_written_by_huggingface_hub_is_kept(tree: Tree, tmp_path: Path) -> None:
    """A cache entry huggingface_hub itself wrote (real blob file, relative link, ref) for the same file is
    recognised as already in place: nothing is replaced, in any mode."""
    model = write_safetensors(tmp_path / "dl" / "model.safetensors", MANY)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    repo = tree.hub / "models--acme--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(model.read_bytes())
    (repo / "snapshots" / COMMIT_A).mkdir(parents=True)
    (repo / "snapshots" / COMMIT_A / "model.safetensors").symlink_to(f"../../blobs/{sha}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT_A)
    blob_ino = (repo / "blobs" / sha).stat().st_ino
    _register(tree.mf, model, _hf_meta(model, "acme/tiny", COMMIT_A, "main", "model.safetensors"))
    for mode in ("symlink", "hardlink", "copy"):
        tree.configure("hf", mode=mode)
        code, (report,) = tree.place_json(model)
        assert code == 0 and report["targets"][0]["action"] == "skipped", report
    assert (repo / "blobs" / sha).stat().st_ino == blob_ino
    assert sorted(p.name for p in (repo / "blobs").iterdir()) == [sha]
    found = _hub_python(tree.hub, "from huggingface_hub import hf_hub_download as d; "
                                  "print(d('acme/tiny', 'model.safetensors'))")
    assert Path(found).read_bytes() == model.read_bytes()


# -- split GGUFs: LM Studio and Ollama --------------------------------------------------------------------

def _split_gguf(folder: Path, stem: str, count: int = 3) -> list[Path]:
    """A split GGUF as llama.cpp's gguf-split writes it: the metadata in the first shard only."""
    shards = []
    for i in range(1, count + 1):
        kv: dict[str, Any] = {"split.no": i - 1, "split.count": count}
        if i == 1:
            kv["general.architecture"] = "llama"
        shards.append(write_gguf(folder / f"{stem}-{i:05d}-of-{count:05d}.gguf", kv))
    return shards


def test_split_gguf_shards_land_in_one_lmstudio_folder(tree: Tree, tmp_path: Path) -> None:
    """llama.cpp (inside LM Studio) finds shards 2..N beside the first one: a local split GGUF's shards must
    share one publisher/repo folder, not get a folder per shard."""
    tree.configure("lmstudio")
    shards = _split_gguf(tmp_path / "dl", "Big-Model.Q4_K_M")
    proc = tree.place(*shards)
    assert proc.returncode == 0, proc.stderr
    folder = tree.lms / "local" / "Big-Model.Q4_K_M"
    assert sorted(p.name for p in folder.iterdir()) == sorted(s.name for s in shards)
    assert [p.name for p in (tree.lms / "local").iterdir()] == ["Big-Model.Q4_K_M"]


def test_split_gguf_gets_no_ollama_modelfile(tree: Tree, tmp_path: Path) -> None:
    """Ollama cannot import a split GGUF (ollama/ollama#5245): no per-shard Modelfile / ``ollama create``
    (which would import a fragment), but a reason; a plain GGUF still gets its Modelfile."""
    tree.configure("ollama")
    shards = _split_gguf(tmp_path / "dl", "big")
    code, reports = tree.place_json("--dry-run", *shards)
    assert code == 0 and all(not r["targets"] for r in reports), reports
    assert all("split" in r["skipped"][0]["reason"] for r in reports), reports
    code, reports = tree.place_json(*shards)
    assert code == 0 and all(not r["targets"] for r in reports), reports
    assert not list((tmp_path / "dl").glob("*.Modelfile"))
    single = write_gguf(tmp_path / "dl" / "small.gguf", {"general.architecture": "llama"})
    code, (report,) = tree.place_json(single)
    assert code == 0 and report["targets"][0]["action"] == "created"
    assert (tmp_path / "dl" / "small.Modelfile").read_text() == f"FROM {single}\n"


# -- concurrency ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_losing_a_race_to_an_identical_placement_is_not_a_failure(tree: Tree, tmp_path: Path, mode: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process creates the same target between our check and our create: it now holds our bytes,
    so this run reports it as in place instead of failing."""
    from modfetch.app.place import PlaceOptions, place_file
    from modfetch.config import load_config
    from modfetch.placement import linker

    tree.configure("comfyui", mode=mode)
    lora = write_lora(tmp_path / "dl" / "x.safetensors")
    target = tree.comfy / "models" / "loras" / lora.name
    real_inspect = linker.inspect_target

    def racing_inspect(path: Path, *args: Any, **kwargs: Any) -> str:
        state = real_inspect(path, *args, **kwargs)
        if path == target and state == "absent" and not os.path.lexists(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(lora)  # the other process wins
        return state

    monkeypatch.setattr(linker, "inspect_target", racing_inspect)
    report = place_file(load_config(str(tree.mf.config_path)), lora, PlaceOptions())
    (outcome,) = report.outcomes
    assert outcome.action == "skipped", outcome
    assert os.readlink(target) == str(lora)


def test_concurrent_place_of_the_same_file_both_succeed(tree: Tree, tmp_path: Path) -> None:
    """Two real ``modfetch place`` processes at once (symlinks, copies, a Modelfile): both exit 0."""
    tree.configure("comfyui", "a1111", "ollama")
    lora = write_lora(tmp_path / "dl" / "x.safetensors")
    gguf = write_gguf(tmp_path / "dl" / "m.gguf", {"general.architecture": "llama"})
    for round_ in range(4):
        for folder in (tree.comfy / "models", tree.a1111 / "models"):
            if folder.exists():
                for path in sorted(folder.rglob("*"), reverse=True):
                    path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
        (tmp_path / "dl" / "m.Modelfile").unlink(missing_ok=True)
        mode = ("symlink", "copy")[round_ % 2]
        procs = [tree.mf.popen("--quiet", "place", "--mode", mode, str(lora), str(gguf)) for _ in range(2)]
        for proc in procs:
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        assert (tree.comfy / "models" / "loras" / lora.name).read_bytes() == lora.read_bytes()


# -- blocked folders and --dry-run parity -----------------------------------------------------------------

def _blocked_trees(tree: Tree, tmp_path: Path) -> None:
    """ComfyUI's loras folder is a link to an unmounted disk; A1111's Lora folder is a file."""
    (tree.comfy / "models").mkdir()
    (tree.comfy / "models" / "loras").symlink_to(tmp_path / "unmounted" / "loras")
    (tree.a1111 / "models").mkdir()
    (tree.a1111 / "models" / "Lora").write_bytes(b"not a folder")


def test_blocked_app_folders_fail_with_one_clear_line_and_are_left_alone(tree: Tree, tmp_path: Path) -> None:
    tree.configure("comfyui", "a1111")
    _blocked_trees(tree, tmp_path)
    lora = write_lora(tmp_path / "dl" / "x.safetensors")
    code, (report,) = tree.place_json(lora)
    assert code == 1
    by_app = {t["app"]: t for t in report["targets"]}
    assert "broken link" in by_app["comfyui"]["message"], by_app
    assert f"{tree.a1111 / 'models' / 'Lora'} is not a folder" in by_app["a1111"]["message"], by_app
    proc = tree.place(lora)
    assert_clean_error(proc.stderr, "2 placement(s) failed", "is not a folder")  # apps run sorted
    assert os.readlink(tree.comfy / "models" / "loras") == str(tmp_path / "unmounted" / "loras")
    assert not (tmp_path / "unmounted").exists()
    assert (tree.a1111 / "models" / "Lora").read_bytes() == b"not a folder"


@pytest.mark.parametrize("force", [False, True])
def test_dry_run_predicts_the_real_run(tree: Tree, tmp_path: Path, force: bool) -> None:
    """Same targets, and a target the real run fails is already failed in the dry run (same exit code):
    blocked folders, a different file without --force; with --force that file is 'would be replaced'."""
    tree.configure("comfyui", "a1111", "ollama")
    _blocked_trees(tree, tmp_path)
    gguf = write_gguf(tmp_path / "dl" / "m.gguf", {"general.architecture": "llama"})
    (tmp_path / "dl" / "m.Modelfile").write_text("FROM /elsewhere.gguf\n")
    lora = write_lora(tmp_path / "dl" / "x.safetensors")
    extra = ["--force"] if force else []
    dry_code, dry = tree.place_json("--dry-run", *extra, lora, gguf)
    real_code, real = tree.place_json(*extra, lora, gguf)
    assert dry_code == real_code == 1
    for d, r in zip(dry, real, strict=True):
        assert [(t["app"], t["target"]) for t in d["targets"]] == [(t["app"], t["target"]) for t in r["targets"]]
        assert [t["action"] == "failed" for t in d["targets"]] == [t["action"] == "failed" for t in r["targets"]]
    (ollama,) = dry[1]["targets"]
    assert "--force" in ollama["message"] if not force else "would be replaced" in ollama["message"], ollama


# -- LM Studio names, one file under two types -------------------------------------------------------------

def test_lmstudio_names_are_sanitised_to_exactly_two_levels(tree: Tree, tmp_path: Path) -> None:
    tree.configure("lmstudio")
    gguf = write_gguf(tmp_path / "dl" / "m.Q4.gguf", {"general.architecture": "llama"})
    _register(tree.mf, gguf, {"creator": "../..", "model_name": "a/b:c\x1b"})
    code, (report,) = tree.place_json(gguf)
    assert code == 0, report
    target = Path(report["targets"][0]["target"])
    assert target.relative_to(tree.lms).parts == ("local", "a-b_c", "m.Q4.gguf")
    assert os.readlink(target) == str(gguf)


def test_one_file_placed_under_two_types_keeps_both(tree: Tree, tmp_path: Path) -> None:
    tree.configure("comfyui")
    lora = write_lora(tmp_path / "dl" / "x.safetensors")
    assert tree.place("--type", "sd.lora", lora).returncode == 0
    assert tree.place("--type", "sd.checkpoint", lora).returncode == 0
    assert os.readlink(tree.comfy / "models" / "loras" / lora.name) == str(lora)
    assert os.readlink(tree.comfy / "models" / "checkpoints" / lora.name) == str(lora)
