"""civitai:// and CivitAI URLs end to end against the CivitAI look-alike (app layer and CLI), plus the pure
file choice and URI parsing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modfetch.app.download import DownloadOptions, download_uri
from modfetch.config import Config, load_config
from modfetch.errors import AmbiguousChoiceError, NotFoundError, UsageError
from modfetch.progress import NullProgress
from modfetch.resolvers.civitai import choose_file
from modfetch.resolvers.uris import (
    CivitaiUri,
    is_civitai_browser_url,
    parse_civitai_browser_url,
    parse_civitai_uri,
)
from tests.conftest import Modfetch, assert_clean_error
from tests.servers.lookalike.civitai import GOOD_TOKEN, CivitaiData, CivitaiLookalike


@pytest.fixture(scope="module")
def civ() -> Iterator[CivitaiLookalike]:
    with CivitaiLookalike() as server:
        yield server


def use(mf: Modfetch, civ: CivitaiLookalike, **civitai: object) -> Config:
    mf.write_config(
        general={"download_root": str(mf.dest), "data_root": str(mf.state_db.parent)},
        sources={"civitai": {"endpoint": civ.url, **civitai}},
    )
    return load_config(str(mf.config_path))


def fetch(config: Config, uri: str, dest: Path) -> Path:
    (result,) = download_uri(config, uri, DownloadOptions(dest=dest), NullProgress)
    return result.path


def data_of(civ: CivitaiLookalike, file_id: int) -> bytes:
    f = civ.data.file(file_id)
    assert f is not None
    return f.data


def test_latest_version_primary_file_with_hints(mf: Modfetch, civ: CivitaiLookalike) -> None:
    use(mf, civ)
    result = mf.download("civitai://model/4201")
    assert result.exit_code == 0, result.output
    path = mf.dest / "realisticVision_v60B1.safetensors"
    assert path.read_bytes() == data_of(civ, 1001)
    (row,) = mf.rows()
    assert row["source"] == "civitai" and row["status"] == "complete"
    assert row["expected_sha256"] == hashlib.sha256(data_of(civ, 1001)).hexdigest()
    assert row["url"] == f"{civ.url}/api/download/models/130072"
    meta = json.loads(row["meta"])
    assert meta["civitai_type"] == "Checkpoint" and meta["base_model"] == "SD 1.5"
    assert meta["creator"] == "SG_161222" and meta["model_name"] == "Realistic Vision"
    assert meta["model_id"] == 4201 and meta["version_id"] == 130072 and meta["format"] == "SafeTensor"
    assert "artifact_type" not in meta


@pytest.mark.parametrize(
    ("uri", "file_id"),
    [
        ("civitai://model/4201?version=125000", 901),
        ("civitai://model/4201?file=ckpt", 1002),
        ("civitai://model/4201?file=FP32", 1003),
        ("civitai://model/4201?file=realisticVision_v60B1.safetensors", 1001),  # exact name beats substrings
        ("civitai://model/4201?format=SafeTensor&fp=fp32", 1003),
        ("civitai://model/4201?type=VAE", 1004),
        ("civitai://model/4201?format=PickleTensor", 1002),
        ("civitai://version/125000", 901),
        ("civitai://model/6600", 3002),  # primary is a pickle; its SafeTensor twin wins
        ("https://civitai.com/models/4201/realistic-vision?modelVersionId=125000", 901),
        ("https://civitai.com/models/4201", 1001),
        ("{civ}/models/4201/realistic-vision", 1001),
        ("https://civitai.com/api/download/models/130072?type=Model&format=PickleTensor", 1002),
    ],
)
def test_selection(mf: Modfetch, civ: CivitaiLookalike, uri: str, file_id: int) -> None:
    config = use(mf, civ)
    path = fetch(config, uri.format(civ=civ.url), mf.dest)
    f = civ.data.file(file_id)
    assert f is not None and path == mf.dest / f.name and path.read_bytes() == f.data


def test_ambiguous_file_lists_candidates_that_each_resolve(mf: Modfetch, civ: CivitaiLookalike) -> None:
    config = use(mf, civ)
    with pytest.raises(AmbiguousChoiceError) as info:
        fetch(config, "civitai://model/4201?file=realistic", mf.dest)
    names = [c.label.split(" ")[0] for c in info.value.candidates]
    assert names == [
        "realisticVision_v60B1.safetensors",
        "realisticVision_v60B1_fp32.safetensors",
        "realisticVision_v60B1_vae.safetensors",
    ]  # the .ckpt lost to its SafeTensor twin
    assert all(c.fmt == "SafeTensor" and c.size for c in info.value.candidates)
    chosen = fetch(config, info.value.candidates[1].uri, mf.dest)
    assert chosen.name == "realisticVision_v60B1_fp32.safetensors"
    use(mf, civ)
    result = mf.download("civitai://model/4201?file=realistic")
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "3 files", "realisticVision_v60B1_vae.safetensors")


def test_auth_required_file(mf: Modfetch, civ: CivitaiLookalike, monkeypatch: pytest.MonkeyPatch) -> None:
    use(mf, civ)
    result = mf.download("civitai://model/5500")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "needs a CivitAI login", "CIVITAI_TOKEN is not set")
    assert "export CIVITAI_TOKEN" in result.stderr
    monkeypatch.setenv("CIVITAI_TOKEN", "wrong-token-value-123")
    result = mf.download("civitai://model/5500")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "refused the token in CIVITAI_TOKEN")
    assert "wrong-token-value-123" not in result.output
    monkeypatch.setenv("CIVITAI_TOKEN", GOOD_TOKEN)
    result = mf.download("civitai://model/5500")
    assert result.exit_code == 0, result.output
    assert (mf.dest / "detail_tweaker.safetensors").read_bytes() == data_of(civ, 2001)
    assert json.loads(mf.rows()[-1]["meta"])["civitai_type"] == "LORA"


def test_login_redirect_without_token(mf: Modfetch) -> None:
    data = CivitaiData.demo()
    data.login_redirect = True
    with CivitaiLookalike(data) as civ:
        config = use(mf, civ)
        with pytest.raises(Exception, match="needs a CivitAI login"):
            fetch(config, "civitai://model/5500", mf.dest)


def test_configured_token_variable(
    mf: Modfetch, civ: CivitaiLookalike, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = use(mf, civ, token_env="MY_CIVITAI_KEY")
    monkeypatch.setenv("MY_CIVITAI_KEY", GOOD_TOKEN)
    assert fetch(config, "civitai://model/5500", mf.dest).name == "detail_tweaker.safetensors"


@pytest.mark.parametrize(
    ("uri", "needles", "code"),
    [
        ("civitai://model/999", ["CivitAI has no model 999"], 1),
        ("civitai://model/4201?version=999999", ["model version 999999"], 1),
        ("civitai://model/5500?version=130072", ["version 130072 belongs to model 4201"], 2),
        (
            "civitai://model/4201?file=nothing-like-this",
            ["no file of CivitAI version 130072 matches file=nothing"],
            1,
        ),
        ("civitai://model/abc", ["invalid CivitAI model id"], 2),
        ("civitai://model/4201?colour=red", ["unknown query parameter 'colour'"], 2),
    ],
)
def test_errors_are_one_clear_line(
    mf: Modfetch, civ: CivitaiLookalike, uri: str, needles: list[str], code: int
) -> None:
    use(mf, civ)
    result = mf.download(uri)
    assert result.exit_code == code, result.output
    assert_clean_error(result.stderr, *needles)


def test_hostile_file_name_lands_inside_dest(mf: Modfetch, civ: CivitaiLookalike) -> None:
    config = use(mf, civ)
    path = fetch(config, "civitai://model/7700", mf.dest / "inner")
    assert path == mf.dest / "inner" / "evil.pth" and path.read_bytes() == data_of(civ, 4001)
    assert not (mf.dest / "evil.pth").exists() and not (mf.dest.parent / "evil.pth").exists()


def test_disabled_source(mf: Modfetch, civ: CivitaiLookalike) -> None:
    use(mf, civ, enabled=False)
    result = mf.download("civitai://model/4201")
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "civitai source is disabled")


# -- pure parts -------------------------------------------------------------------------------------------
def _f(
    name: str,
    fmt: str = "SafeTensor",
    primary: bool = False,
    ftype: str = "Model",
    fp: str = "fp16",
    size: str = "pruned",
) -> dict[str, Any]:
    return {
        "id": hash(name) % 1000,
        "name": name,
        "type": ftype,
        "primary": primary,
        "sizeKB": 1.5,
        "metadata": {"format": fmt, "fp": fp, "size": size},
    }


@pytest.mark.parametrize(
    ("files", "ref", "expected"),
    [
        ([_f("a.ckpt", "PickleTensor"), _f("a.safetensors")], CivitaiUri(1, file="a."), "a.safetensors"),
        ([_f("a.ckpt", "PickleTensor", primary=True), _f("a.safetensors")], CivitaiUri(1), "a.safetensors"),
        (
            [_f("a.ckpt", "PickleTensor", primary=True), _f("a.safetensors", fp="fp32")],
            CivitaiUri(1),
            "a.ckpt",
        ),
        ([_f("x.safetensors"), _f("y.safetensors", primary=True)], CivitaiUri(1), "y.safetensors"),
        ([_f("x.safetensors"), _f("y.safetensors")], CivitaiUri(1, file="Y"), "y.safetensors"),
        (
            [_f("x.safetensors", fp="fp32"), _f("y.safetensors", primary=True)],
            CivitaiUri(1, fp="FP32"),
            "x.safetensors",
        ),
    ],
)
def test_choose_file(files: list[dict[str, Any]], ref: CivitaiUri, expected: str) -> None:
    assert choose_file(files, ref, 1, 2)["name"] == expected


def test_choose_file_errors() -> None:
    files = [_f("x.safetensors"), _f("y.safetensors", fp="fp32")]
    with pytest.raises(AmbiguousChoiceError) as info:
        choose_file(files, CivitaiUri(1, file="safetensors"), 1, 2)
    assert [c.uri for c in info.value.candidates] == [
        "civitai://model/1?version=2&file=x.safetensors",
        "civitai://model/1?version=2&file=y.safetensors",
    ]
    with pytest.raises(NotFoundError, match=r"files: x\.safetensors"):
        choose_file(files, CivitaiUri(1, format="GGUF"), 1, 2)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("civitai://model/4201", CivitaiUri(4201)),
        ("civitai://model/4201/some-slug?version=130072", CivitaiUri(4201, 130072)),
        (
            "civitai://models/4201?modelVersionId=130072&file=My File",
            CivitaiUri(4201, 130072, file="My File"),
        ),
        (
            "civitai://version/130072?format=SafeTensor&fp=fp16",
            CivitaiUri(None, 130072, format="SafeTensor", fp="fp16"),
        ),
    ],
)
def test_parse_civitai_uri(uri: str, expected: CivitaiUri) -> None:
    assert parse_civitai_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "civitai://model/",
        "civitai://model/0",
        "civitai://model/1?version=x",
        "civitai://thing/1",
        "civitai://model/1?version=1&version=2",
        "civitai://model/1?file=",
        "civitai://model/1?file=a%0Ab",
    ],
)
def test_parse_civitai_uri_rejects(uri: str) -> None:
    with pytest.raises(UsageError):
        parse_civitai_uri(uri)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://civitai.com/models/4201/realistic-vision?modelVersionId=130072&utm=x",
            CivitaiUri(4201, 130072),
        ),
        ("https://www.civitai.com/models/4201", CivitaiUri(4201)),
        (
            "https://civitai.com/api/download/models/130072?type=Model&format=SafeTensor&token=abc",
            CivitaiUri(None, 130072, format="SafeTensor", type="Model"),
        ),
    ],
)
def test_parse_civitai_browser_url(url: str, expected: CivitaiUri) -> None:
    assert is_civitai_browser_url(url)
    assert parse_civitai_browser_url(url) == expected


def test_browser_url_matching() -> None:
    assert not is_civitai_browser_url("https://civitai.com/images/123")
    assert not is_civitai_browser_url("https://example.com/models/1")
    assert is_civitai_browser_url("http://127.0.0.1:5000/models/1", ["127.0.0.1:5000"])
