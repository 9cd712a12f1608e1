"""The library layout: default destinations namespaced by source (nothing collides), ``--dest`` keeping repo
paths, downloads from the old flat layout still found where they are, and path safety of every component."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modfetch.app.layout import civitai_folder, hf_subdir, host_folder, library_subdir
from modfetch.cli.status import short_path
from modfetch.resolvers.base import ResolvedFile
from modfetch.util.filenames import safe_join
from tests.conftest import MiB, Modfetch, wait_for
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.civitai import CivitaiLookalike
from tests.servers.lookalike.hub import HubData, HubLookalike

Serve = Callable[..., FaultyServer]


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    with HubLookalike() as server:
        yield server


def use_hub(mf: Modfetch, hub: HubLookalike, **extra: Any) -> None:
    mf.write_config(general={"download_root": str(mf.dest)}, sources={"huggingface": {"endpoint": hub.url}},
                    **extra)


def fetch(mf: Modfetch, uri: str, *extra: str) -> dict[str, Any]:
    """``download --json URI`` with the default layout (no --dest): the result object."""
    result = mf.cli("download", "--json", "--url", uri, *extra)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_two_repos_config_json_do_not_collide(mf: Modfetch, hub: HubLookalike) -> None:
    use_hub(mf, hub)
    a = fetch(mf, "hf://openai-community/gpt2/config.json")
    b = fetch(mf, "hf://acme/tiny-model/config.json")
    assert a["path"] == str(mf.dest / "hf/openai-community/gpt2/config.json")
    assert b["path"] == str(mf.dest / "hf/acme/tiny-model/config.json")
    assert Path(a["path"]).read_bytes() != Path(b["path"]).read_bytes()
    # A legacy name resolves to the same repo folder (the Hub redirects gpt2 -> openai-community/gpt2).
    c = fetch(mf, "hf://gpt2/config.json")
    assert c["path"] == a["path"] and c["already_present"] is True


def test_two_revisions_get_their_own_folders(mf: Modfetch, hub: HubLookalike) -> None:
    use_hub(mf, hub)
    main = fetch(mf, "hf://openai-community/gpt2/README.md")
    old = fetch(mf, "hf://openai-community/gpt2/README.md?rev=v1.0")
    pr = fetch(mf, "hf://openai-community/gpt2/README.md?rev=refs/pr/1")
    assert main["path"] == str(mf.dest / "hf/openai-community/gpt2/README.md")
    assert old["path"] == str(mf.dest / "hf/openai-community/gpt2@v1.0/README.md")
    assert pr["path"] == str(mf.dest / "hf/openai-community/gpt2@refs%2Fpr%2F1/README.md")
    assert Path(old["path"]).read_bytes() == b"# GPT-2 (v1)\n"
    assert Path(main["path"]).read_bytes() != Path(old["path"]).read_bytes()


def test_datasets_and_whole_repos_in_the_default_layout(mf: Modfetch, hub: HubLookalike) -> None:
    use_hub(mf, hub)
    result = mf.cli("download", "--quiet", "--url", "hf://datasets/acme/tiny-dataset")
    assert result.exit_code == 0, result.output
    assert (mf.dest / "hf/datasets/acme/tiny-dataset/data/train.parquet").is_file()
    assert (mf.dest / "hf/datasets/acme/tiny-dataset/README.md").is_file()


def test_dest_keeps_the_path_inside_the_repo(mf: Modfetch, hub: HubLookalike, tmp_path: Path) -> None:
    use_hub(mf, hub)
    one = tmp_path / "one"
    got = fetch(mf, "hf://openai-community/gpt2/onnx/decoder_model.onnx", "--dest", str(one))
    assert got["path"] == str(one / "onnx/decoder_model.onnx")
    tree = tmp_path / "tree"
    result = mf.cli("download", "--quiet", "--url", "hf://acme/tiny-model", "--dest", str(tree))
    assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    assert [f for f in files if not f.endswith(".sha256")] == [
        "README.md", "config.json", "weights/extra/notes.txt", "weights/model.bin", "weights/model.safetensors"]
    named = fetch(mf, "hf://acme/tiny-model/weights/model.bin", "--dest", str(tmp_path / "o"), "--out", "m.bin")
    assert named["path"] == str(tmp_path / "o/weights/m.bin")


def test_plain_urls_by_host_and_port(mf: Modfetch, faulty_server: Serve) -> None:
    a = faulty_server(size=MiB, seed=1, path="/model.bin")
    b = faulty_server(size=MiB, seed=2, path="/model.bin")
    got_a, got_b = fetch(mf, a.url), fetch(mf, b.url)
    assert got_a["path"] == str(mf.dest / f"127.0.0.1_{a.port}/model.bin")
    assert got_b["path"] == str(mf.dest / f"127.0.0.1_{b.port}/model.bin")
    assert Path(got_a["path"]).read_bytes() == a.content() and Path(got_b["path"]).read_bytes() == b.content()


def test_civitai_by_model_slug_and_id(mf: Modfetch) -> None:
    with CivitaiLookalike() as civ:
        mf.write_config(general={"download_root": str(mf.dest)}, sources={"civitai": {"endpoint": civ.url}})
        got = fetch(mf, "civitai://model/4201")
    assert got["path"] == str(mf.dest / "civitai/realistic-vision-4201/realisticVision_v60B1.safetensors")


def test_old_layout_entry_is_found_where_it_is(mf: Modfetch, hub: HubLookalike, faulty_server: Serve) -> None:
    """A DB from the flat layout (files straight in download_root): a rerun finds the file, fetches nothing
    and writes nothing to the new layout."""
    use_hub(mf, hub)
    server = faulty_server(size=2 * MiB, path="/old.bin")
    flat = fetch(mf, server.url, "--dest", str(mf.dest))  # exactly where the old default put it
    hf_flat = fetch(mf, "hf://openai-community/gpt2/model.safetensors", "--dest", str(mf.dest))
    assert flat["path"] == str(mf.dest / "old.bin") and hf_flat["path"] == str(mf.dest / "model.safetensors")
    mark = server.mark()
    again = fetch(mf, server.url)
    hf_again = fetch(mf, "hf://openai-community/gpt2/model.safetensors")
    assert again["path"] == flat["path"] and again["already_present"] is True and again["fetched_bytes"] == 0
    assert hf_again["path"] == hf_flat["path"] and hf_again["already_present"] is True
    assert server.body_bytes(mark) == 0
    assert not (mf.dest / f"127.0.0.1_{server.port}").exists() and not (mf.dest / "hf").exists()
    assert len(mf.rows()) == 2
    listed = mf.cli("list", "--json")
    assert {e["path"] for e in json.loads(listed.stdout)} == {flat["path"], hf_flat["path"]}


def _resolved(source: str, url: str = "https://example.com/x", **hints: Any) -> ResolvedFile:
    return ResolvedFile(url=url, filename="f.bin", display_url=url, source=source, hints=hints)


HOSTILE = [
    _resolved("huggingface", repo_id="../../etc", repo_type="model", revision="../../..",
              path_in_repo="../../../etc/passwd"),
    _resolved("huggingface", repo_id="/abs/olute", repo_type="dataset", revision="/", path_in_repo="/etc/x"),
    _resolved("huggingface", repo_id="a\\..\\..\\b", repo_type="space", revision="..", path_in_repo="..\\..\\x"),
    _resolved("huggingface", repo_id="owner/..", repo_type="model", revision=None, path_in_repo="a/./../../b"),
    _resolved("civitai", model_name="../../..", model_id=5, version_id=6),
    _resolved("civitai", model_name="/etc/passwd", model_id=None, version_id="../x"),
    _resolved("http", url="http://../../x"),
    _resolved("http", url="http://[::1]:8080/x"),
    _resolved("http", url="http://%2e%2e/x"),
]


@pytest.mark.parametrize("item", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_components_never_leave_the_root(tmp_path: Path, item: ResolvedFile) -> None:
    root = tmp_path / "root"
    root.mkdir()
    target = safe_join(root, library_subdir(item), "../../f.bin")
    assert target.resolve().is_relative_to(root.resolve())
    assert ".." not in target.relative_to(root).parts


def test_component_spellings() -> None:
    assert hf_subdir("gpt2", "model", "main", "config.json") == "hf/_/gpt2"
    assert hf_subdir("org/name", "dataset", "v2", "a/b/c.txt") == "hf/datasets/org/name@v2/a/b"
    assert hf_subdir("org/name", "space", "refs/pr/1", "x") == "hf/spaces/org/name@refs%2Fpr%2F1"
    assert civitai_folder("Realistic Vision V6.0!", 4201, 1) == "realistic-vision-v6-0-4201"
    assert civitai_folder("", 7, 8) == "7" and civitai_folder(None, None, 9) == "version-9"
    assert civitai_folder("日本語モデル", 3, 1) == "日本語モデル-3"
    assert host_folder("https://Example.COM/x") == "example.com"
    assert host_folder("https://example.com:443/x") == "example.com"
    assert host_folder("http://example.com:8080/x") == "example.com_8080"
    assert host_folder("http://[::1]:8080/x") == "__1_8080"


def test_hostile_repo_listing_stays_inside(mf: Modfetch, tmp_path: Path) -> None:
    """A listing with ``..`` and absolute paths (a hostile Hub) writes only inside the root, in both layouts."""
    data = HubData()
    data.add_repo("evil/repo", {"ok.txt": b"fine\n", "../escape.txt": b"bad\n", "/etc/abs.txt": b"bad\n",
                                "a/../../up.txt": b"bad\n"})
    with HubLookalike(data) as hub:
        use_hub(mf, hub)
        for extra in ([], ["--dest", str(tmp_path / "d")]):
            result = mf.cli("download", "--quiet", "--url", "hf://evil/repo", *extra)
            assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.txt"))
    assert written == ["d/ok.txt", "dl/hf/evil/repo/ok.txt"]


def test_status_table_tells_same_named_files_apart(mf: Modfetch, hub: HubLookalike) -> None:
    use_hub(mf, hub)
    fetch(mf, "hf://openai-community/gpt2/model.safetensors")
    fetch(mf, "hf://acme/tiny-model/weights/model.safetensors")
    lines = mf.cli("status").stdout.splitlines()
    assert lines[0].split() == ["ID", "FILE", "SOURCE", "SIZE", "PROGRESS", "STATUS", "UPDATED", "PATH"]
    rows = [line.split() for line in lines[1:3]]
    assert {r[-1] for r in rows} == {"hf/openai-community/gpt2/model.safetensors",
                                     "hf/acme/tiny-model/weights/model.safetensors"}
    assert all(r[1] == "model.safetensors" and r[2] == "huggingface" for r in rows)


def test_status_path_is_shortened_from_the_left(tmp_path: Path) -> None:
    root = tmp_path / "root"
    deep = str(root / ("d" * 80) / "tail-folder" / "model.safetensors")
    shown = short_path(deep, root, width=40)
    assert shown.startswith("~") and shown.endswith("tail-folder/model.safetensors") and len(shown) <= 40
    assert short_path(str(root / "a/b.bin"), root) == "a/b.bin"
    assert short_path("/elsewhere/x\x1b[31m.bin", root) == "/elsewhere/x?[31m.bin"


def test_interrupted_old_layout_download_resumes_where_its_part_is(mf: Modfetch, faulty_server: Serve) -> None:
    """An old-layout download interrupted (SIGINT) with its .part in download_root: the rerun without --dest
    resumes that .part instead of starting over in the new layout."""
    server = faulty_server(size=8 * MiB, path="/big.bin", rate=1 << 20)
    proc = mf.popen("--quiet", "download", "--url", server.url, "--dest", str(mf.dest))
    try:
        wait_for(lambda: any(c["status"] == "complete" for r in mf.rows() for c in mf.chunk_rows(r["id"])),
                 "a complete chunk", proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (mf.dest / "big.bin.part").exists()
    server.configure(rate=None)
    mark = server.mark()
    got = fetch(mf, server.url)
    assert got["path"] == str(mf.dest / "big.bin") and Path(got["path"]).read_bytes() == server.content()
    assert server.body_bytes(mark) < 8 * MiB and not (mf.dest / f"127.0.0.1_{server.port}").exists()
