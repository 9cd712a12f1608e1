"""CivitAI fidelity: a file's own type beats its model's type for placement (a VAE of a Checkpoint model goes
where VAEs go; Config / Training Data / Archive are never placed), and ``--metadata`` writes the sidecars the
Stable Diffusion front ends read (A1111 / Civitai Helper naming), with a safe-for-work preview fetched without the
token, beside the file and beside each placement, never replacing a user's file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from modfetch.app.batch import BatchError, parse_batch
from modfetch.artifacts import detect
from modfetch.artifacts import vocabulary as v
from modfetch.config import MappingRule
from modfetch.placement.planner import AppSpec, plan
from modfetch.placement.presets import PRESETS
from modfetch.resolvers.api import SourceClient
from modfetch.resolvers.civitai_meta import MAX_PREVIEW, fetch_preview, is_safe_image
from tests.conftest import Modfetch, assert_clean_error
from tests.servers.lookalike import LookalikeServer, Request, Response
from tests.servers.lookalike.civitai import (
    GOOD_TOKEN,
    CivFile,
    CivImage,
    CivitaiData,
    CivitaiLookalike,
    CivModel,
    CivVersion,
)
from tests.servers.lookalike.hub import HubLookalike

PNG = b"\x89PNG\r\n\x1a\n" + b"safe preview" * 10
NSFW_PNG = b"\x89PNG\r\n\x1a\n" + b"not for work" * 10
VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"v" * 50
STEM = "realisticVision_v60B1"


def _data() -> CivitaiData:
    data = CivitaiData.demo()
    rv = data.models[4201].versions[0]
    rv.trained_words = ["analog style"]
    rv.images = [
        CivImage("clip.mp4", VIDEO, "video/mp4", nsfw_level=1, type="video"),
        CivImage("spicy.png", NSFW_PNG, nsfw_level=4),
        CivImage("old-spicy.png", NSFW_PNG, nsfw_level=None, nsfw=True),
        CivImage("card.png", PNG, nsfw_level=1),
    ]
    rv.files.append(CivFile(1005, "realisticVision_v60B1.yaml", b"model:\n  target: ldm\n", type="Config",
                            format="Other", fp=None, size=None))
    rv.files.append(CivFile(1006, "realisticVision_dataset.zip", b"PK\x03\x04 training", type="Training Data",
                            format="Other", fp=None, size=None))
    data.add(CivModel(8800, "Lonely LoRA", "LORA", "someone", versions=[CivVersion(
        88001, "v1", "SDXL 1.0", [CivFile(8801, "lonely.safetensors", b"lonely lora bytes", primary=True)],
        images=[CivImage("gone.png", PNG, url="http://127.0.0.1:1/img/gone.png")])]))
    return data


@pytest.fixture(scope="module")
def civ() -> Iterator[CivitaiLookalike]:
    with CivitaiLookalike(_data()) as server:
        yield server


def _configure(mf: Modfetch, civ: CivitaiLookalike, tmp_path: Path, **general: object) -> tuple[Path, Path]:
    comfy, a1111 = tmp_path / "ComfyUI", tmp_path / "webui"
    comfy.mkdir(exist_ok=True)
    a1111.mkdir(exist_ok=True)
    mf.write_config(general={"download_root": str(mf.dest), **general},
                    sources={"civitai": {"endpoint": civ.url}},
                    placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)},
                                        "a1111": {"preset": "a1111", "base": str(a1111)}}})
    return comfy, a1111


# -- file type beats model type ------------------------------------------------------------------------------

def test_vae_file_of_a_checkpoint_model_is_placed_as_a_vae(mf: Modfetch, civ: CivitaiLookalike,
                                                           tmp_path: Path) -> None:
    comfy, a1111 = _configure(mf, civ, tmp_path)
    out = mf.download_json("civitai://model/4201?type=VAE", "--place")
    name = "realisticVision_v60B1_vae.safetensors"
    targets = {t["app"]: Path(t["target"]) for t in out["placement"]["targets"]}
    assert targets == {"comfyui": comfy / "models" / "vae" / name, "a1111": a1111 / "models" / "VAE" / name}
    assert out["placement"]["type"] == v.SD_VAE and "file type 'VAE'" in out["placement"]["reason"]
    assert (comfy / "models" / "vae" / name).resolve() == (mf.dest / name).resolve()
    assert not (comfy / "models" / "checkpoints").exists()


@pytest.mark.parametrize(("query", "name"), [("type=Config", "realisticVision_v60B1.yaml"),
                                             ("type=Training%20Data", "realisticVision_dataset.zip")])
def test_config_and_training_data_are_downloaded_but_never_placed(mf: Modfetch, civ: CivitaiLookalike,
                                                                  tmp_path: Path, query: str, name: str) -> None:
    comfy, a1111 = _configure(mf, civ, tmp_path)
    out = mf.download_json(f"civitai://model/4201?{query}", "--place")
    assert (mf.dest / name).is_file()
    assert out["placement"]["targets"] == []
    assert any("not a model; downloaded, not placed" in n for n in out["placement"]["notes"])
    assert not any(p.is_file() or p.is_symlink() for p in [*comfy.rglob("*"), *a1111.rglob("*")])


@pytest.mark.parametrize(("civitai_type", "file_type", "expected"), [
    ("Checkpoint", "VAE", v.SD_VAE),
    ("Checkpoint", "Model", v.SD_CHECKPOINT),
    ("Checkpoint", "Pruned Model", v.SD_CHECKPOINT),
    ("LORA", "Model", v.SD_LORA),
    ("TextualInversion", "Negative", v.SD_EMBEDDING),
    ("Checkpoint", "Config", v.GENERIC),
    ("LORA", "Training Data", v.GENERIC),
    ("Checkpoint", "Archive", v.GENERIC),
])
def test_detection_prefers_the_file_type(tmp_path: Path, civitai_type: str, file_type: str,
                                         expected: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x00" * 16)
    assert detect(path, None, {"civitai_type": civitai_type, "file_type": file_type}).type == expected


@pytest.mark.parametrize("file_type", ["Config", "Training Data", "Archive", "training_data"])
def test_non_model_files_are_not_placed_even_by_type_or_mapping(tmp_path: Path, file_type: str) -> None:
    app = AppSpec("comfyui", PRESETS["comfyui"], tmp_path)
    rules = [MappingRule(type=v.SD_CHECKPOINT, targets=["comfyui:checkpoints"])]
    result = plan(tmp_path / "m.safetensors", v.SD_CHECKPOINT, {"file_type": file_type, "civitai_type": "Checkpoint"},
                  [app], rules)
    assert result.targets == [] and "not a model" in result.notes[0]


# -- --metadata ----------------------------------------------------------------------------------------------

def _version_json(civ: CivitaiLookalike, version_id: int) -> dict[str, object]:
    return dict(requests.get(f"{civ.url}/api/v1/model-versions/{version_id}", timeout=10).json())


def test_metadata_sidecars_beside_file_and_placements(mf: Modfetch, civ: CivitaiLookalike, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    comfy, a1111 = _configure(mf, civ, tmp_path)
    monkeypatch.setenv("CIVITAI_TOKEN", GOOD_TOKEN)
    mine = a1111 / "models" / "Stable-diffusion" / f"{STEM}.preview.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own preview")
    before_images = len(civ.images.requests())
    result = mf.cli("download", "--url", "civitai://model/4201", "--dest", str(mf.dest), "--place", "--metadata")
    assert result.exit_code == 0, result.output
    expected = _version_json(civ, 130072)
    folders = [mf.dest, comfy / "models" / "checkpoints", a1111 / "models" / "Stable-diffusion"]
    for folder in folders:
        model = folder / f"{STEM}.safetensors"
        assert model.exists()
        info = folder / f"{STEM}.civitai.info"  # A1111 / Civitai Helper: os.path.splitext(name)[0] + suffix
        assert info.is_file() and not info.is_symlink()
        assert json.loads(info.read_bytes()) == expected
        assert json.loads(info.read_bytes())["trainedWords"] == ["analog style"]
        preview = folder / f"{STEM}.preview.png"
        assert not preview.is_symlink()
        assert preview.read_bytes() == (b"the user's own preview" if folder == mine.parent else PNG)
    assert f"metadata written {mf.dest / (STEM + '.civitai.info')}" in result.output
    assert f"metadata kept {mine}" in result.output
    images = civ.images.requests()[before_images:]
    assert [r.target for r in images] == ["/img/card.png"]  # one fetch: not the video, not the NSFW ones
    assert all("authorization" not in r.headers for r in images)
    assert all(GOOD_TOKEN not in r.target for r in images)
    assert any(r.headers.get("authorization") == f"Bearer {GOOD_TOKEN}" and "/model-versions/" in r.target
               for r in civ.api.requests())
    # A rerun keeps what is there and still succeeds.
    again = mf.cli("download", "--url", "civitai://model/4201", "--dest", str(mf.dest), "--metadata")
    assert again.exit_code == 0 and "metadata kept" in again.output


def test_metadata_off_by_default_and_from_config(mf: Modfetch, civ: CivitaiLookalike, tmp_path: Path) -> None:
    _configure(mf, civ, tmp_path)
    assert mf.download("civitai://model/4201?type=VAE").exit_code == 0
    assert not list(mf.dest.glob("*.civitai.info"))
    _configure(mf, civ, tmp_path, metadata=True)
    assert mf.download("civitai://model/4201?type=VAE").exit_code == 0
    assert (mf.dest / "realisticVision_v60B1_vae.civitai.info").is_file()
    assert (mf.dest / "realisticVision_v60B1_vae.preview.png").read_bytes() == PNG
    assert mf.download("civitai://model/6600", "--no-metadata").exit_code == 0  # the flag beats the config
    assert not (mf.dest / "old_embedding.civitai.info").exists()


def test_version_without_a_safe_image_gets_only_the_info(mf: Modfetch, civ: CivitaiLookalike,
                                                         tmp_path: Path) -> None:
    _configure(mf, civ, tmp_path)
    assert mf.download("civitai://model/6600", "--metadata").exit_code == 0
    assert (mf.dest / "old_embedding.civitai.info").is_file()
    assert not list(mf.dest.glob("old_embedding.preview.*"))


def test_unreachable_image_host_costs_only_the_preview(mf: Modfetch, civ: CivitaiLookalike,
                                                       tmp_path: Path) -> None:
    _configure(mf, civ, tmp_path)
    result = mf.cli("download", "--url", "civitai://model/8800", "--dest", str(mf.dest), "--metadata")
    assert result.exit_code == 0, result.output
    assert json.loads((mf.dest / "lonely.civitai.info").read_bytes())["id"] == 88001
    assert not list(mf.dest.glob("lonely.preview.*"))


def test_hf_files_get_no_sidecars(mf: Modfetch, tmp_path: Path) -> None:
    with HubLookalike() as hub:
        mf.write_config(general={"download_root": str(mf.dest)},
                        sources={"huggingface": {"endpoint": hub.url}})
        result = mf.download("hf://acme/tiny-model/config.json", "--metadata")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in mf.dest.rglob("*") if p.is_file()) == ["config.json", "config.json.sha256"]


def test_batch_metadata_key(mf: Modfetch, civ: CivitaiLookalike, tmp_path: Path) -> None:
    _configure(mf, civ, tmp_path)
    batch = tmp_path / "jobs.yml"
    batch.write_text(f"jobs:\n  - uri: civitai://model/4201?type=VAE\n    dest: {mf.dest}\n    metadata: true\n"
                     f"  - uri: civitai://model/6600\n    dest: {mf.dest}\n", encoding="utf-8")
    result = mf.cli("download", "--quiet", "--batch", str(batch))
    assert result.exit_code == 0, result.output
    assert (mf.dest / "realisticVision_v60B1_vae.preview.png").read_bytes() == PNG
    assert not (mf.dest / "old_embedding.civitai.info").exists()
    with pytest.raises(BatchError, match=r"jobs\[0\]\.metadata: must be true or false"):
        parse_batch("jobs:\n  - {uri: 'civitai://model/1', metadata: 'yes'}\n", "b.yml")


@pytest.mark.parametrize(("image", "safe"), [
    ({"nsfwLevel": 1, "type": "image"}, True),
    ({"nsfwLevel": 2, "type": "image"}, False),
    ({"nsfwLevel": 1, "type": "video"}, False),
    ({"nsfw": False}, True),
    ({"nsfw": "None"}, True),
    ({"nsfw": "Soft"}, False),
    ({"nsfw": True}, False),
    ({"nsfwLevel": True}, False),
    ({}, False),
])
def test_safe_image_rule(image: dict[str, object], safe: bool) -> None:
    assert is_safe_image(image) is safe


def _image_host(requests_seen: list[Request]) -> LookalikeServer:
    def app(request: Request) -> Response:
        requests_seen.append(request)
        return {
            "/ok.png": Response(200, PNG, [("Content-Type", "image/png")]),
            "/page": Response(200, b"<html>login</html>", [("Content-Type", "text/html")]),
            "/liar.jpg": Response(200, PNG, [("Content-Type", "image/jpeg")]),
            "/huge.png": Response(200, b"", [("Content-Type", "image/png"),
                                             ("Content-Length", str(MAX_PREVIEW + 1))]),
            "/big.png": Response(200, PNG + b"x" * MAX_PREVIEW, [("Content-Type", "image/png")]),
            "/webp": Response(200, b"RIFF\x10\x00\x00\x00WEBPVP8 ", [("Content-Type", "image/webp")]),
            "/missing": Response(404, b"no"),
        }.get(request.path, Response(404, b""))

    return LookalikeServer(app).start()


@pytest.mark.parametrize(("path", "ext", "why"), [
    ("/ok.png", "png", ""),
    ("/webp", "webp", ""),
    ("/page", None, "not a PNG/JPEG/WebP/GIF image (text/html)"),
    ("/liar.jpg", None, "not a jpg image"),
    ("/huge.png", None, "larger than 16 MiB"),
    ("/big.png", None, "larger than 16 MiB"),
    ("/missing", None, "HTTP 404"),
])
def test_preview_checks_and_host_binding(civ: CivitaiLookalike, path: str, ext: str | None, why: str) -> None:
    seen: list[Request] = []
    images = _image_host(seen)
    try:
        client = SourceClient(requests.Session(), civ.url, GOOD_TOKEN, 5.0, "CivitAI")
        preview, reason = fetch_preview(client, images.url + path)
    finally:
        images.stop()
    assert (preview[1] if preview else None) == ext
    assert why in reason
    assert seen and all(r.bearer is None for r in seen)


def test_preview_redirected_off_the_endpoint_never_carries_the_token(civ: CivitaiLookalike) -> None:
    seen: list[Request] = []
    images = _image_host(seen)
    # The endpoint itself redirects to the image host (as civitai.com/images/... may).
    endpoint = LookalikeServer(lambda r: Response(302, b"", [("Location", images.url + "/ok.png")])).start()
    try:
        client = SourceClient(requests.Session(), endpoint.url, GOOD_TOKEN, 5.0, "CivitAI")
        preview, _ = fetch_preview(client, endpoint.url + "/images/1")
    finally:
        endpoint.stop()
        images.stop()
    assert preview == (PNG, "png")
    assert [r.bearer for r in seen] == [None]
    assert [r.headers.get("authorization") for r in endpoint.requests()] == [f"Bearer {GOOD_TOKEN}"]


def test_unknown_metadata_flag_value_is_a_clean_error(mf: Modfetch) -> None:
    result = mf.run("download", "--metadata=maybe", "--url", "civitai://model/1")
    assert result.returncode == 2
    assert_clean_error(result.stderr)
