"""hf:// and Hub browser URLs end to end against the Hub look-alike (app layer and CLI, real servers)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch.app.download import DownloadOptions, download_uri
from modfetch.config import Config, load_config
from modfetch.errors import AmbiguousChoiceError, IntegrityError, UsageError
from modfetch.progress import NullProgress
from tests.conftest import ROOT, Modfetch, assert_clean_error
from tests.servers.lookalike.hub import GOOD_TOKEN, NOACCESS_TOKEN, HubData, HubFile, HubLookalike


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    with HubLookalike() as server:
        yield server


def use(mf: Modfetch, hub: HubLookalike | None = None, **huggingface: object) -> Config:
    """Point the config at the look-alike (state DB under the test's HOME) and load it."""
    sources = {"huggingface": {**({"endpoint": hub.url} if hub else {}), **huggingface}}
    mf.write_config(
        general={"download_root": str(mf.dest), "data_root": str(mf.state_db.parent)}, sources=sources
    )
    return load_config(str(mf.config_path))


def fetch(config: Config, uri: str, dest: Path) -> list[Path]:
    results = download_uri(config, uri, DownloadOptions(dest=dest), NullProgress)
    return [r.path for r in results]


def repo_file(
    hub: HubLookalike, repo: str, path: str, rev: str = "main", repo_type: str = "model"
) -> HubFile:
    r = hub.data.repos[(repo_type, repo)]
    return r.commits[r.refs[rev]][path]


def test_prd_smoke_command(mf: Modfetch, hub: HubLookalike) -> None:
    use(mf, hub)
    result = mf.download("hf://gpt2/README.md?rev=main")
    assert result.exit_code == 0, result.output
    expected = repo_file(hub, "openai-community/gpt2", "README.md").data
    assert (mf.dest / "README.md").read_bytes() == expected
    assert hashlib.sha256(expected).hexdigest() in result.stdout
    (row,) = mf.rows()
    meta = json.loads(row["meta"])
    gpt2 = hub.data.repos[("model", "openai-community/gpt2")]
    assert row["source"] == "huggingface" and row["status"] == "complete"
    assert meta["repo_id"] == "openai-community/gpt2" and meta["repo_type"] == "model"
    assert meta["commit"] == gpt2.refs["main"] and meta["revision"] == "main"
    assert meta["etag"] == hashlib.sha1(b"blob %d\x00" % len(expected) + expected).hexdigest()
    assert meta["path_in_repo"] == "README.md"


def test_lfs_file_comes_from_cdn_verified_against_x_linked_etag(mf: Modfetch, hub: HubLookalike) -> None:
    config = use(mf, hub)
    entry = repo_file(hub, "openai-community/gpt2", "model.safetensors")
    before = len(hub.cdn.requests())
    (path,) = fetch(config, "hf://openai-community/gpt2/model.safetensors", mf.dest)
    assert path == mf.dest / "model.safetensors" and path.read_bytes() == entry.data
    cdn = hub.cdn.requests()[before:]
    assert cdn and all(r.target.startswith(f"/repos/{entry.sha256[:2]}/") for r in cdn)
    (row,) = mf.rows()
    assert row["expected_sha256"] == entry.sha256
    signature = hub.app.cdn_location(entry, "x").split("Signature=")[1].split("&")[0]
    assert signature not in row["resolved_url"] and "Signature=" in row["resolved_url"]
    meta = json.loads(row["meta"])
    assert meta["etag"] == entry.sha256 and meta["lfs"] is True
    assert meta["commit"] == hub.data.repos[("model", "openai-community/gpt2")].refs["main"]


@pytest.mark.parametrize(
    ("uri", "repo", "path", "rev", "repo_type"),
    [
        ("hf://gpt2/README.md?rev=v1.0", "openai-community/gpt2", "README.md", "v1.0", "model"),
        ("hf://gpt2/README.md?rev=refs/pr/1", "openai-community/gpt2", "README.md", "refs/pr/1", "model"),
        (
            "hf://openai-community/gpt2/tokenizer/vocab.json",
            "openai-community/gpt2",
            "tokenizer/vocab.json",
            "main",
            "model",
        ),
        (
            "{hub}/openai-community/gpt2/blob/main/tokenizer/vocab.json",
            "openai-community/gpt2",
            "tokenizer/vocab.json",
            "main",
            "model",
        ),
        (
            "https://huggingface.co/gpt2/resolve/v1.0/README.md",
            "openai-community/gpt2",
            "README.md",
            "v1.0",
            "model",
        ),
        (
            "https://huggingface.co/openai-community/gpt2/resolve/refs%2Fpr%2F1/config.json?download=true",
            "openai-community/gpt2",
            "config.json",
            "refs/pr/1",
            "model",
        ),
        (
            "hf://datasets/acme/tiny-dataset/data/train.parquet",
            "acme/tiny-dataset",
            "data/train.parquet",
            "main",
            "dataset",
        ),
        (
            "{hub}/datasets/acme/tiny-dataset/resolve/main/README.md",
            "acme/tiny-dataset",
            "README.md",
            "main",
            "dataset",
        ),
    ],
)
def test_uri_forms(
    mf: Modfetch, hub: HubLookalike, uri: str, repo: str, path: str, rev: str, repo_type: str
) -> None:
    config = use(mf, hub)
    (got,) = fetch(config, uri.format(hub=hub.url), mf.dest)
    assert got == mf.dest / path  # --dest keeps the path inside the repo
    assert got.read_bytes() == repo_file(hub, repo, path, rev, repo_type).data
    (row,) = mf.rows()
    assert json.loads(row["meta"])["repo_type"] == repo_type


def test_commit_revision(mf: Modfetch, hub: HubLookalike) -> None:
    config = use(mf, hub)
    old = hub.data.repos[("model", "openai-community/gpt2")].refs["v1.0"]
    (got,) = fetch(config, f"hf://openai-community/gpt2/README.md?rev={old}", mf.dest)
    assert got.read_bytes() == b"# GPT-2 (v1)\n"


def test_whole_repo_include_exclude_paginated(mf: Modfetch) -> None:
    data = HubData.demo()
    data.tree_page_size = 2  # the listing needs several pages (Link: rel="next")
    with HubLookalike(data) as hub:
        config = use(mf, hub)
        paths = fetch(config, "hf://acme/tiny-model?include=weights/*&exclude=*.bin", mf.dest)
        assert sorted(p.relative_to(mf.dest).as_posix() for p in paths) == [
            "weights/extra/notes.txt",
            "weights/model.safetensors",
        ]
        assert (mf.dest / "weights/model.safetensors").read_bytes() == repo_file(
            hub, "acme/tiny-model", "weights/model.safetensors"
        ).data
        listings = [r.target for r in hub.hub.requests() if "/tree/" in r.target]
        assert len(listings) >= 3 and all("recursive=true" in t for t in listings)
        more = fetch(
            config, "hf://acme/tiny-model?include=*.json,*.md&include=weights/model.bin", mf.dest / "b"
        )
        assert sorted(p.relative_to(mf.dest / "b").as_posix() for p in more) == [
            "README.md",
            "config.json",
            "weights/model.bin",
        ]
        rows = {
            Path(r["dest_path"]).relative_to(mf.dest).as_posix(): json.loads(r["meta"]) for r in mf.rows()
        }
        assert rows["weights/model.safetensors"]["path_in_repo"] == "weights/model.safetensors"
        assert rows["b/weights/model.bin"]["lfs"] is True
        assert len(rows["b/config.json"]["etag"]) == 40


def test_whole_repo_through_the_command(mf: Modfetch, hub: HubLookalike) -> None:
    use(mf, hub)
    result = mf.download("hf://datasets/acme/tiny-dataset")
    assert result.exit_code == 0, result.output
    assert (mf.dest / "data/train.parquet").read_bytes() == repo_file(
        hub, "acme/tiny-dataset", "data/train.parquet", repo_type="dataset"
    ).data
    assert (mf.dest / "README.md").exists()


def test_folder_path_downloads_its_files(mf: Modfetch, hub: HubLookalike) -> None:
    config = use(mf, hub)
    (got,) = fetch(config, "hf://acme/tiny-model/weights/extra", mf.dest)
    assert got == mf.dest / "weights/extra/notes.txt"


def test_no_file_matches(mf: Modfetch, hub: HubLookalike) -> None:
    config = use(mf, hub)
    with pytest.raises(UsageError, match=r"no files in acme/tiny-model@main match include=\*.gguf"):
        fetch(config, "hf://acme/tiny-model?include=*.gguf", mf.dest)


def test_legacy_single_name_repo_without_rename(mf: Modfetch) -> None:
    data = HubData.demo()
    data.add_repo("bert-base", {"config.json": b"{}\n", "sub/dir.txt": b"x\n"})
    with HubLookalike(data) as hub:
        config = use(mf, hub)
        (got,) = fetch(config, "hf://bert-base/sub/dir.txt", mf.dest)
        assert got.read_bytes() == b"x\n"


def test_ambiguous_reading_is_an_error_listing_both(mf: Modfetch) -> None:
    data = HubData.demo()
    data.add_repo("acme", {"tiny-model/README.md": b"legacy\n"})
    with HubLookalike(data) as hub:
        config = use(mf, hub)
        with pytest.raises(AmbiguousChoiceError) as info:
            fetch(config, "hf://acme/tiny-model/README.md", mf.dest)
        uris = [c.uri for c in info.value.candidates]
        assert uris == [
            f"{hub.url}/acme/tiny-model/resolve/main/README.md",
            f"{hub.url}/acme/resolve/main/tiny-model/README.md",
        ]
        (got,) = fetch(config, uris[1], mf.dest)  # each candidate is unambiguous
        assert got.read_bytes() == b"legacy\n"


@pytest.mark.parametrize(
    ("uri", "token", "needles", "code"),
    [
        ("hf://acme/gated-model/model.safetensors", None, ["gated", "no hugging face token"], 1),
        ("hf://acme/gated-model/model.safetensors", NOACCESS_TOKEN, ["HF_TOKEN has no access", "gated"], 1),
        ("hf://acme/private-model/model.gguf", None, ["repository not found", "acme/private-model"], 1),
        ("hf://acme/does-not-exist/x.bin", None, ["repository not found", "acme/does-not-exist"], 1),
        ("hf://gpt2/missing.txt", None, ["'missing.txt' not found in openai-community/gpt2"], 1),
        ("hf://gpt2/README.md?rev=nope", None, ["revision 'nope' not found"], 1),
        ("hf://acme/tiny-model/README.md", "hf_bogus_token_123456", ["rejected the token in HF_TOKEN"], 1),
        ("hf://acme/tiny-model/README.md?bogus=1", None, ["unknown query parameter 'bogus'"], 2),
        ("hf://acme/../etc/passwd", None, ["invalid path component"], 2),
    ],
)
def test_errors_are_one_clear_line(
    mf: Modfetch,
    hub: HubLookalike,
    monkeypatch: pytest.MonkeyPatch,
    uri: str,
    token: str | None,
    needles: list[str],
    code: int,
) -> None:
    use(mf, hub)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    result = mf.download(uri)
    assert result.exit_code == code, result.output
    assert_clean_error(result.stderr, *needles)
    if token:
        assert token not in result.output


def test_gated_hint_says_what_to_do(mf: Modfetch, hub: HubLookalike) -> None:
    use(mf, hub)
    result = mf.download("hf://acme/gated-model/model.safetensors")
    assert "accept the terms on the model page" in result.stderr and "set HF_TOKEN" in result.stderr


@pytest.mark.parametrize("var", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MY_HF_KEY"])
def test_token_variables_open_gated_and_private_repos(
    mf: Modfetch, hub: HubLookalike, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    config = use(mf, hub, token_env=var) if var == "MY_HF_KEY" else use(mf, hub)
    monkeypatch.setenv(var, GOOD_TOKEN)
    (gated,) = fetch(config, "hf://acme/gated-model/model.safetensors", mf.dest)
    assert gated.read_bytes() == repo_file(hub, "acme/gated-model", "model.safetensors").data
    (private,) = fetch(config, "hf://acme/private-model/model.gguf", mf.dest)
    assert private.read_bytes() == repo_file(hub, "acme/private-model", "model.gguf").data


def test_hf_endpoint_overrides_config(
    mf: Modfetch, hub: HubLookalike, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = use(mf, None, endpoint="http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    (got,) = fetch(config, "hf://gpt2/config.json", mf.dest)
    assert got.read_bytes() == repo_file(hub, "openai-community/gpt2", "config.json").data
    (again,) = fetch(
        config, f"{hub.url}/gpt2/blob/main/README.md", mf.dest
    )  # browser URL on the endpoint host
    assert again.name == "README.md"


def test_disabled_source_is_a_usage_error(mf: Modfetch, hub: HubLookalike) -> None:
    use(mf, hub, enabled=False)
    result = mf.download("hf://gpt2/README.md")
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "huggingface source is disabled")


def test_lfs_bytes_not_matching_the_hub_sha256_fail(mf: Modfetch) -> None:
    data = HubData.demo()
    repo = data.repos[("model", "acme/tiny-model")]
    entry = repo.commits[repo.refs["main"]]["weights/model.bin"]
    data.blobs[entry.sha256] = HubFile(entry.path, b"tampered" + entry.data[8:], lfs=True)  # the CDN lies
    with HubLookalike(data) as hub:
        config = use(mf, hub)
        with pytest.raises(IntegrityError, match="SHA-256 mismatch"):
            fetch(config, "hf://acme/tiny-model/weights/model.bin", mf.dest)
        assert not (mf.dest / "model.bin").exists()


class _LyingFile(HubFile):
    @property
    def git_sha1(self) -> str:
        return "0" * 40


def test_regular_file_checked_against_git_blob_sha1(mf: Modfetch) -> None:
    data = HubData.demo()
    repo = data.repos[("model", "acme/tiny-model")]
    files = repo.commits[repo.refs["main"]]
    files["config.json"] = _LyingFile("config.json", files["config.json"].data, lfs=False)
    with HubLookalike(data) as hub:
        config = use(mf, hub)
        with pytest.raises(IntegrityError, match="git blob SHA-1 mismatch"):
            fetch(config, "hf://acme/tiny-model/config.json", mf.dest)


def test_standalone_lookalikes_serve_a_data_dir(mf: Modfetch, tmp_path: Path) -> None:
    """The look-alikes run standalone (``python -m tests.servers.lookalike.hub --data DIR``), as scripts/uat does."""
    import subprocess
    import sys

    repo = tmp_path / "hubdata" / "models" / "me" / "mine"
    (repo / "sub").mkdir(parents=True)
    (repo / "sub" / "w.safetensors").write_bytes(b"\x00" * 5000)
    (repo / ".hub.json").write_text('{"aliases": ["mine"]}')
    root = ROOT
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.servers.lookalike.hub", "--data", str(tmp_path / "hubdata")],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "tests.servers.lookalike.civitai"], cwd=root, stdout=subprocess.PIPE, text=True
        ),
    ]
    try:
        hub_info, civ_info = (json.loads(p.stdout.readline()) for p in procs if p.stdout)
        assert hub_info["repos"] == ["model:me/mine"]
        mf.write_config(
            general={"download_root": str(mf.dest), "data_root": str(mf.state_db.parent)},
            sources={"huggingface": {"endpoint": hub_info["hub"]}, "civitai": {"endpoint": civ_info["api"]}},
        )
        config = load_config(str(mf.config_path))
        (got,) = fetch(config, "hf://mine/sub/w.safetensors", mf.dest)
        assert got.read_bytes() == b"\x00" * 5000
        assert (
            fetch(config, "civitai://model/4201?version=125000", mf.dest)[0].name
            == "realisticVision_v51.safetensors"
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
