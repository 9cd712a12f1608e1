"""Quantization picks, as ollama's ``hf.co/user/repo:Q4_K_M`` and ``lms get ...@q4_k_m``: ``hf://owner/repo:QUANT``
(case-insensitive) downloads that quantization's GGUF file(s), every shard of a split GGUF; a quantization the
repo lacks lists the ones it has (and ``--pick`` offers them as a menu); ``?include=``, ``?rev=``, ``@REV`` and
file paths with a ':' keep their meaning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch.app.download import DownloadOptions, download_uri, resolve_uri
from modfetch.cli import picker
from modfetch.config import Config, load_config
from modfetch.errors import AmbiguousChoiceError, Candidate, UsageError
from modfetch.progress import NullProgress
from modfetch.resolvers.quant import available, quant_of, select
from modfetch.resolvers.uris import HfUri, parse_hf_uri
from tests.conftest import Modfetch, assert_clean_error
from tests.servers.lookalike import pseudo_random_bytes
from tests.servers.lookalike.hub import HubData, HubLookalike

REPO = "acme/llama-3-8b-GGUF"
GGUF = {
    "README.md": b"# llama gguf\n",
    "llama-3-8b.Q4_K_M.gguf": b"GGUF" + pseudo_random_bytes("q4", 30_000),
    "llama-3-8b-Q8_0.gguf": b"GGUF" + pseudo_random_bytes("q8", 40_000),
    "llama-3-8b-IQ3_XS.gguf": b"GGUF" + pseudo_random_bytes("iq3", 20_000),
    "mmproj-llama-3-8b-F16.gguf": b"GGUF" + pseudo_random_bytes("proj", 5_000),
    **{f"Q5_K_M/llama-3-8b-Q5_K_M-0000{i}-of-00003.gguf": b"GGUF" + pseudo_random_bytes(f"q5-{i}", 25_000)
       for i in (1, 2, 3)},
    "BF16/llama-3-8b-00001-of-00002.gguf": b"GGUF" + pseudo_random_bytes("bf16-1", 10_000),
    "BF16/llama-3-8b-00002-of-00002.gguf": b"GGUF" + pseudo_random_bytes("bf16-2", 10_000),
}


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    data = HubData.demo()
    data.add_repo(REPO, GGUF)
    with HubLookalike(data) as server:
        yield server


@pytest.fixture
def config_for(mf: Modfetch, hub: HubLookalike) -> Config:
    mf.write_config(general={"download_root": str(mf.dest)}, sources={"huggingface": {"endpoint": hub.url}})
    return load_config(str(mf.config_path))


# -- parsing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "expected"), [
    ("hf://o/r:Q4_K_M", HfUri("model", ("o", "r"), split=2, quant="Q4_K_M")),
    ("hf://o/r:q4_k_m", HfUri("model", ("o", "r"), split=2, quant="Q4_K_M")),
    ("hf://o/r:UD-Q4_K_XL", HfUri("model", ("o", "r"), split=2, quant="UD-Q4_K_XL")),
    ("hf://o/r:Q8_0?rev=v2", HfUri("model", ("o", "r"), "v2", split=2, quant="Q8_0")),
    ("hf://o/r@v2:Q8_0", HfUri("model", ("o", "r"), "v2", split=2, quant="Q8_0")),
    ("hf://o/r@refs%2Fpr%2F3:bf16", HfUri("model", ("o", "r"), "refs/pr/3", split=2, quant="BF16")),
    ("hf://o/r:Q4_0?include=mmproj-*", HfUri("model", ("o", "r"), include=("mmproj-*",), split=2, quant="Q4_0")),
    ("hf://datasets/o/r:Q4_0", HfUri("dataset", ("o", "r"), split=2, quant="Q4_0")),
    ("hf://gpt2:Q4_0", HfUri("model", ("gpt2",), split=1, quant="Q4_0")),
    # '@REV' alone (HfFileSystem's spelling); a '/' in REV percent-encoded.
    ("hf://o/r@dev/a/b.gguf", HfUri("model", ("o", "r", "a", "b.gguf"), "dev", split=2)),
    ("hf://o/r@refs%2Fpr%2F1/x.gguf", HfUri("model", ("o", "r", "x.gguf"), "refs/pr/1", split=2)),
    ("hf://gpt2@v1.0/README.md", HfUri("model", ("gpt2", "README.md"), "v1.0", split=1)),
    # A ':' or '@' in a file path is part of the path.
    ("hf://o/r/dir/a:b.gguf", HfUri("model", ("o", "r", "dir", "a:b.gguf"))),
    ("hf://o/r/x:Q4_K_M", HfUri("model", ("o", "r", "x:Q4_K_M"))),
    ("hf://o/r/icon@2x.png", HfUri("model", ("o", "r", "icon@2x.png"))),
    ("hf://o/r?rev=main", HfUri("model", ("o", "r"), "main")),
    ("hf://o/r/f.gguf?rev=refs%2Fpr%2F1", HfUri("model", ("o", "r", "f.gguf"), "refs/pr/1")),
])
def test_parse(uri: str, expected: HfUri) -> None:
    assert parse_hf_uri(uri) == expected


@pytest.mark.parametrize(("uri", "message"), [
    ("hf://o/r:Q4_K_M/file.gguf", "no path may follow it"),
    ("hf://o/r:", "invalid quantization ''"),
    ("hf://o/r:Q4.K", "invalid quantization"),
    ("hf://o/r:Q4 K", "invalid"),
    ("hf://o/r@v1?rev=v2", "more than one revision"),
    ("hf://o/r@v1:Q4?revision=v2", "more than one revision"),
    ("hf://o/r@", "invalid revision"),
    ("hf://o/r@..%2Fx", "invalid revision"),
    ("hf://o:x/r", "invalid repository name"),
])
def test_parse_rejects(uri: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_hf_uri(uri)


@pytest.mark.parametrize(("path", "quant"), [
    ("llama-3-8b.Q4_K_M.gguf", "Q4_K_M"),
    ("model-q8_0.gguf", "Q8_0"),
    ("sub/model-IQ3_XS.gguf", "IQ3_XS"),
    ("Q5_K_M/llama-Q5_K_M-00001-of-00003.gguf", "Q5_K_M"),
    ("BF16/llama-00001-of-00002.gguf", "BF16"),
    ("model-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("phi-3-f32.gguf", "F32"),
    ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("mmproj-model-f16.gguf", None),
    ("model.gguf", None),
    ("model.Q4_K_M.safetensors", None),
])
def test_quant_of(path: str, quant: str | None) -> None:
    assert quant_of(path) == quant


def test_select_and_available() -> None:
    paths = list(GGUF)
    assert select(paths, "q5_k_m") == [f"Q5_K_M/llama-3-8b-Q5_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert select(paths, "Q4_K") == []  # no prefix matches
    assert list(available(paths)) == ["BF16", "IQ3_XS", "Q4_K_M", "Q5_K_M", "Q8_0"]


# -- against the Hub look-alike ----------------------------------------------------------------------------

def test_split_gguf_quant_pick_downloads_every_shard(mf: Modfetch, hub: HubLookalike) -> None:
    mf.write_config(general={"download_root": str(mf.dest)}, sources={"huggingface": {"endpoint": hub.url}})
    result = mf.download(f"hf://{REPO}:q5_k_m")
    assert result.exit_code == 0, result.output
    folder = mf.dest / "Q5_K_M"
    got = sorted(p.name for p in folder.glob("*.gguf"))
    assert got == [f"llama-3-8b-Q5_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for name in got:
        assert (folder / name).read_bytes() == GGUF[f"Q5_K_M/{name}"]
    assert len(list(mf.dest.rglob("*.gguf"))) == 3  # nothing else


@pytest.mark.parametrize(("uri", "expected"), [
    (f"hf://{REPO}:Q4_K_M", ["llama-3-8b.Q4_K_M.gguf"]),
    (f"hf://{REPO}:bf16", ["BF16/llama-3-8b-00001-of-00002.gguf", "BF16/llama-3-8b-00002-of-00002.gguf"]),
    (f"hf://{REPO}:Q8_0?include=mmproj-*,README.md",
     ["README.md", "llama-3-8b-Q8_0.gguf", "mmproj-llama-3-8b-F16.gguf"]),
    (f"hf://{REPO}:Q8_0?include=mmproj-*&exclude=*.md", ["llama-3-8b-Q8_0.gguf", "mmproj-llama-3-8b-F16.gguf"]),
    (f"hf://{REPO}@main:IQ3_XS", ["llama-3-8b-IQ3_XS.gguf"]),
])
def test_quant_pick_selects_files(config_for: Config, uri: str, expected: list[str]) -> None:
    items = resolve_uri(config_for, uri)
    assert sorted(i.hints["path_in_repo"] for i in items) == expected
    assert all(i.sha256 for i in items if i.filename and i.filename.endswith(".gguf"))


def test_no_match_lists_the_quantizations(mf: Modfetch, hub: HubLookalike) -> None:
    mf.write_config(general={"download_root": str(mf.dest)}, sources={"huggingface": {"endpoint": hub.url}})
    result = mf.run("download", "--url", f"hf://{REPO}:Q6_K", "--dest", str(mf.dest))
    assert result.returncode == 2
    line = assert_clean_error(result.stderr, "no Q6_K GGUF in", REPO)
    for listed in ("BF16 (2 files)", "IQ3_XS (llama-3-8b-IQ3_XS.gguf)", "Q4_K_M", "Q5_K_M (3 files)", "Q8_0"):
        assert listed in line
    assert "mmproj" not in line
    assert not mf.dest.exists() or not list(mf.dest.rglob("*.gguf"))


def test_no_gguf_at_all_says_so(mf: Modfetch, hub: HubLookalike) -> None:
    mf.write_config(general={"download_root": str(mf.dest)}, sources={"huggingface": {"endpoint": hub.url}})
    result = mf.run("download", "--url", "hf://acme/tiny-model:Q4_K_M", "--dest", str(mf.dest))
    assert result.returncode == 2
    assert_clean_error(result.stderr, "has no GGUF files")


def test_pick_offers_the_quantizations_as_a_menu(config_for: Config, mf: Modfetch,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(picker, "can_pick", lambda: True)  # the menu itself is driven in test_picker_tmux.py
    shown: list[list[Candidate]] = []

    def choose(candidates: list[Candidate]) -> Candidate:
        shown.append(candidates)
        return next(c for c in candidates if c.label.startswith("Q8_0"))

    results = picker.with_picker(
        lambda uri: download_uri(config_for, uri, DownloadOptions(dest=mf.dest), NullProgress),
        f"hf://{REPO}:q6_k?rev=main", pick=True, chooser=choose)
    assert [c.uri for c in shown[0]] == [f"hf://{REPO}:{q}?rev=main"
                                         for q in ("BF16", "IQ3_XS", "Q4_K_M", "Q5_K_M", "Q8_0")]
    assert [Path(r.path).name for r in results] == ["llama-3-8b-Q8_0.gguf"]
    assert shown[0][3].size == 75_012 and shown[0][3].fmt == "GGUF"


def test_without_pick_the_ambiguity_is_raised(config_for: Config) -> None:
    with pytest.raises(AmbiguousChoiceError) as info:
        download_uri(config_for, f"hf://{REPO}:Q2_K", DownloadOptions(), NullProgress)
    assert len(info.value.candidates) == 5
