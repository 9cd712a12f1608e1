"""The Hub look-alike is faithful: the real ``huggingface_hub`` client downloads from it (HF_ENDPOINT
pointed at it), raises its own typed errors for it, and agrees with modfetch's resolver about commit, etag
and size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import huggingface_hub as hf  # a declared test dependency (setup.cfg [test]): missing means a broken install
import pytest
from huggingface_hub import errors as hf_errors

from modfetch.config import Config, SourceConfig, SourcesConfig
from modfetch.engine.session import make_session
from modfetch.resolvers.registry import resolve
from tests.servers.lookalike.hub import GOOD_TOKEN, NOACCESS_TOKEN, HubLookalike


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    with HubLookalike() as server:
        yield server


@pytest.fixture(autouse=True)
def no_xet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def _download(
    hub: HubLookalike, cache: Path, repo_id: str, filename: str, token: str | bool = False, **kwargs: object
) -> Path:
    return Path(
        hf.hf_hub_download(repo_id, filename, cache_dir=cache, endpoint=hub.url, token=token, **kwargs)
    )  # type: ignore[arg-type]


def test_real_client_downloads_regular_and_lfs_files(hub: HubLookalike, tmp_path: Path) -> None:
    gpt2 = hub.data.repos[("model", "openai-community/gpt2")]
    files = gpt2.commits[gpt2.refs["main"]]
    readme = _download(hub, tmp_path, "openai-community/gpt2", "README.md")
    assert readme.read_bytes() == files["README.md"].data
    weights = _download(hub, tmp_path, "openai-community/gpt2", "model.safetensors")
    assert weights.read_bytes() == files["model.safetensors"].data
    nested = _download(hub, tmp_path, "openai-community/gpt2", "tokenizer/vocab.json", revision="refs/pr/1")
    assert nested.read_bytes() == files["tokenizer/vocab.json"].data
    cache = tmp_path / "models--openai-community--gpt2"
    assert (cache / "refs" / "main").read_text() == gpt2.refs["main"]
    assert (cache / "blobs" / files["model.safetensors"].sha256).is_file()  # LFS blob named by its sha256
    assert (cache / "blobs" / files["README.md"].git_sha1).is_file()  # regular blob by its git sha1
    assert weights.parent == cache / "snapshots" / gpt2.refs["main"]


def test_real_client_follows_the_rename_and_old_revisions(hub: HubLookalike, tmp_path: Path) -> None:
    old = _download(hub, tmp_path, "gpt2", "README.md", revision="v1.0")
    assert old.read_bytes() == b"# GPT-2 (v1)\n"


def test_real_client_sees_the_same_errors(hub: HubLookalike, tmp_path: Path) -> None:
    with pytest.raises(hf_errors.GatedRepoError):
        _download(hub, tmp_path, "acme/gated-model", "model.safetensors")
    with pytest.raises(hf_errors.GatedRepoError):
        _download(hub, tmp_path, "acme/gated-model", "model.safetensors", token=NOACCESS_TOKEN)
    gated = _download(hub, tmp_path, "acme/gated-model", "model.safetensors", token=GOOD_TOKEN)
    assert gated.stat().st_size == 120_000
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        _download(hub, tmp_path, "acme/private-model", "model.gguf")
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        _download(hub, tmp_path, "acme/nothing-here", "x.bin")
    with pytest.raises(hf_errors.RevisionNotFoundError):
        _download(hub, tmp_path, "acme/tiny-model", "config.json", revision="no-such-branch")
    with pytest.raises(hf_errors.RemoteEntryNotFoundError):
        _download(hub, tmp_path, "acme/tiny-model", "no-such-file.json")


def test_real_snapshot_download_lists_through_the_api(hub: HubLookalike, tmp_path: Path) -> None:
    folder = Path(
        hf.snapshot_download(
            "acme/tiny-model",
            cache_dir=tmp_path,
            endpoint=hub.url,
            allow_patterns=["weights/*"],
            ignore_patterns=["*.bin"],
            token=False,
        )
    )
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert got == ["weights/extra/notes.txt", "weights/model.safetensors"]
    info = hf.HfApi(endpoint=hub.url).model_info("acme/tiny-model", files_metadata=True, token=False)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    assert sizes["weights/model.safetensors"] == 1_200_000


def test_modfetch_agrees_with_the_real_client(hub: HubLookalike) -> None:
    config = Config(sources=SourcesConfig(huggingface=SourceConfig(endpoint=hub.url, token_env="HF_TOKEN")))
    for path in ("model.safetensors", "README.md"):
        url = hf.hf_hub_url("openai-community/gpt2", path, endpoint=hub.url)
        meta = hf.get_hf_file_metadata(url, token=False)
        (item,) = resolve(f"hf://gpt2/{path}", config, make_session(config))
        assert item.hints["commit"] == meta.commit_hash
        assert item.hints["etag"] == meta.etag
        assert item.size == meta.size
        if path.endswith(".safetensors"):
            # the CDN URL is signed with an expiry in seconds: two calls may straddle a second boundary
            ours, theirs = urlsplit(item.url), urlsplit(meta.location)
            assert ours._replace(query="") == theirs._replace(query="")
            assert sorted(parse_qs(ours.query)) == sorted(parse_qs(theirs.query)) != []
        else:
            assert item.url.endswith(path)


def test_real_client_with_hf_endpoint_environment(hub: HubLookalike, tmp_path: Path) -> None:
    """A fresh interpreter configured only through the ecosystem's variables, as users do."""
    env = dict(
        os.environ,
        HF_ENDPOINT=hub.url,
        HF_HUB_CACHE=str(tmp_path / "cache"),
        HF_TOKEN=GOOD_TOKEN,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    code = (
        "import json, huggingface_hub as h; "
        "print(json.dumps([h.hf_hub_download('gpt2', 'model.safetensors'), "
        "h.hf_hub_download('acme/gated-model', 'README.md')]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    weights, readme = (Path(p) for p in json.loads(proc.stdout.strip().splitlines()[-1]))
    assert weights.is_relative_to(tmp_path / "cache") and weights.stat().st_size == 300_000
    assert readme.read_bytes() == b"# gated\n"
    assert not any("authorization" in r.headers for r in hub.cdn.requests())
