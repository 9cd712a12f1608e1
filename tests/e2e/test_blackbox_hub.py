"""Protocol fidelity against the Hub and CivitAI look-alikes, black-box through the installed ``modfetch``:
what a huggingface_hub / CivitAI user expects for awkward paths and revisions, gated whole repos, rate limits
and same-named CivitAI files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from modfetch.app.download import DownloadOptions, download_uri
from modfetch.config import load_config
from modfetch.errors import AmbiguousChoiceError
from modfetch.progress import NullProgress
from tests.conftest import Modfetch, assert_clean_error
from tests.servers.lookalike import pseudo_random_bytes
from tests.servers.lookalike.civitai import CivFile, CivitaiData, CivitaiLookalike, CivModel, CivVersion
from tests.servers.lookalike.hub import GOOD_TOKEN, NOACCESS_TOKEN, HubData, HubLookalike, RateLimitedHub

WEIRD = {
    "sub dir/a b.txt": b"space\n",
    "uni/\u00fcn\u00ef.json": b"{}\n",
    "hash#q?.txt": b"hash and question mark\n",
    "pct%20.txt": b"a literal percent\n",
    "empty.txt": b"",
    "nested/deep/m.safetensors": pseudo_random_bytes("weird-nested", 5000),
    "top.safetensors": pseudo_random_bytes("weird-top", 7000),
}


def hub_data() -> HubData:
    data = HubData.demo()
    repo = data.add_repo("acme/weird", WEIRD)
    data.commit(repo, {**WEIRD, "x.txt": b"on a branch with a slash\n"}, branch="feature/x")
    return data


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    with HubLookalike(hub_data()) as server:
        yield server


def use_hub(mf: Modfetch, url: str) -> None:
    mf.write_config(
        general={"download_root": str(mf.dest), "data_root": str(mf.state_db.parent)},
        sources={"huggingface": {"endpoint": url}},
    )


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("hf://acme/weird/sub%20dir/a%20b.txt", "sub dir/a b.txt"),
        ("hf://acme/weird/uni/\u00fcn\u00ef.json", "uni/\u00fcn\u00ef.json"),
        ("hf://acme/weird/hash%23q%3F.txt", "hash#q?.txt"),
        ("hf://acme/weird/pct%2520.txt", "pct%20.txt"),
        ("hf://acme/weird/empty.txt", "empty.txt"),  # 0 bytes, ETag = git blob sha1 of nothing
        ("{hub}/acme/weird/blob/main/sub%20dir/a%20b.txt", "sub dir/a b.txt"),
        ("hf://acme/weird/x.txt?rev=feature/x", "x.txt"),
    ],
)
def test_awkward_paths_and_slashed_revisions(mf: Modfetch, hub: HubLookalike, uri: str, path: str) -> None:
    use_hub(mf, hub.url)
    result = mf.download(uri.replace("{hub}", hub.url))
    assert result.exit_code == 0, result.output
    expected = b"on a branch with a slash\n" if path == "x.txt" else WEIRD[path]
    assert (mf.dest / path).read_bytes() == expected  # --dest keeps the path inside the repo
    targets = [r.target for r in hub.hub.requests() if "/resolve/" in r.target]
    assert any(t.endswith("/resolve/main/" + quote(path)) or t.endswith("/resolve/feature%2Fx/x.txt")
               for t in targets)  # percent-encoded as huggingface_hub does; the revision's slash too


def test_whole_repo_with_awkward_paths_at_a_full_commit(mf: Modfetch, hub: HubLookalike) -> None:
    use_hub(mf, hub.url)
    commit = hub.data.repos[("model", "acme/weird")].refs["main"]
    result = mf.download(f"hf://acme/weird?rev={commit}")
    assert result.exit_code == 0, result.output
    for path, data in WEIRD.items():
        assert (mf.dest / path).read_bytes() == data  # --dest: the repo's tree directly under it
    # as huggingface_hub's allow_patterns: fnmatch on the whole path, so "*" crosses folders
    result = mf.download("hf://acme/weird?include=*.safetensors&rev=feature/x", "--dest", str(mf.dest / "st"))
    assert result.exit_code == 0, result.output
    got = sorted(str(p.relative_to(mf.dest / "st")) for p in (mf.dest / "st").rglob("*.safetensors"))
    assert got == ["nested/deep/m.safetensors", "top.safetensors"]


@pytest.mark.parametrize(
    ("uri", "token", "needles"),
    [
        ("hf://acme/gated-model", None, ["gated repository", "no Hugging Face token"]),
        ("hf://acme/gated-model?include=*.safetensors", None, ["gated repository", "no Hugging Face token"]),
        ("hf://acme/gated-model", NOACCESS_TOKEN, ["HF_TOKEN has no access to gated repository"]),
    ],
)
def test_whole_gated_repo_says_gated(
    mf: Modfetch, hub: HubLookalike, monkeypatch: pytest.MonkeyPatch, uri: str, token: str | None,
    needles: list[str],
) -> None:
    """A user of snapshot_download gets a GatedRepoError, not an anonymous 401 per file."""
    use_hub(mf, hub.url)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    result = mf.download(uri)
    assert result.exit_code == 1, result.output
    line = assert_clean_error(result.stderr, "acme/gated-model", *needles)
    assert "accept the terms" in result.stderr
    assert "resolve/" not in line
    if token:
        assert token not in result.output


def test_whole_gated_repo_with_access(mf: Modfetch, hub: HubLookalike, monkeypatch: pytest.MonkeyPatch) -> None:
    use_hub(mf, hub.url)
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    result = mf.download("hf://acme/gated-model")
    assert result.exit_code == 0, result.output
    assert (mf.dest / "README.md").read_bytes() == b"# gated\n"
    assert (mf.dest / "model.safetensors").is_file()


def test_api_rate_limit_is_waited_out(mf: Modfetch) -> None:
    with HubLookalike(hub_data()) as hub:
        app = RateLimitedHub(hub.data, hub.cdn.url)
        hub.hub.app = app
        use_hub(mf, hub.url)
        result = mf.download("hf://acme/weird?include=top.safetensors")
        assert result.exit_code == 0, result.output
        assert (mf.dest / "top.safetensors").read_bytes() == WEIRD["top.safetensors"]
        app.limit = 100
        result = mf.download("hf://acme/weird/empty.txt")
        assert result.exit_code == 1
        assert_clean_error(result.stderr, "HTTP 429")


# -- CivitAI --------------------------------------------------------------------------------------------


def civ_data() -> CivitaiData:
    data = CivitaiData.demo()
    files = [
        CivFile(91011, "twin.safetensors", pseudo_random_bytes("twin16", 3000), fp="fp16", primary=True),
        CivFile(91012, "twin.safetensors", pseudo_random_bytes("twin32", 4000), fp="fp32"),
        CivFile(91013, "twin.zip", pseudo_random_bytes("twin-cfg", 1000), type="Config", format="Other",
                fp=None, size=None),
    ]
    data.add(CivModel(9100, "Twin", "Checkpoint", "bob", [CivVersion(9101, "v1", "SDXL 1.0", files)]))
    return data


def test_civitai_same_named_files_get_candidates_that_resolve(mf: Modfetch) -> None:
    """The candidates of an ambiguity (what --pick runs next) must each select one file, also when two files of
    a version share a name (an fp16 and an fp32 "model.safetensors")."""
    with CivitaiLookalike(civ_data()) as civ:
        mf.write_config(
            general={"download_root": str(mf.dest), "data_root": str(mf.state_db.parent)},
            sources={"civitai": {"endpoint": civ.url}},
        )
        result = mf.download("civitai://model/9100?file=twin.safetensors")
        assert result.exit_code == 2, result.output
        assert_clean_error(result.stderr, "2 files", "fp16", "fp32")
        with pytest.raises(AmbiguousChoiceError) as info:
            download_uri(load_config(str(mf.config_path)), "civitai://model/9100?file=twin.safetensors",
                         DownloadOptions(dest=mf.dest), NullProgress)
        uris = [c.uri for c in info.value.candidates]
        assert len(set(uris)) == 2, uris
        for n, uri in enumerate(uris):
            result = mf.download(uri, "--dest", str(mf.dest / str(n)))
            assert result.exit_code == 0, result.output
        got = [hashlib.sha256((mf.dest / str(n) / "twin.safetensors").read_bytes()).hexdigest() for n in (0, 1)]
        version = civ.data.models[9100].versions[0]
        assert got == [version.files[0].sha256, version.files[1].sha256]
