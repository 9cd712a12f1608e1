"""Artifact-type detection: tiny safetensors/GGUF files crafted byte by byte, hints, names, malformed headers.

The ``write_safetensors`` / ``write_gguf`` builders live in ``tests/helpers.py``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from modfetch.artifacts import TYPES, detect
from modfetch.artifacts.headers import read_gguf, read_safetensors
from modfetch.errors import UsageError
from tests.conftest import ROOT
from tests.helpers import MANY, gguf_str, write_gguf, write_safetensors


@pytest.mark.parametrize(("tensors", "metadata", "expected"), [
    (["lora_unet_down_blocks_0.lora_down.weight", "lora_unet_down_blocks_0.lora_up.weight"], None, "sd.lora"),
    (["x.weight"], {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0"},
     "sd.lora"),
    (["a.weight", *MANY], {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sd.lora"),
    (["transformer.blocks.0.attn.lora_A.weight", "transformer.blocks.0.attn.lora_B.weight"], None, "sd.lora"),
    (["lycoris_x.hada_w1_a", "lycoris_x.hada_w1_b"], None, "sd.lora"),
    ([f"model.diffusion_model.input_blocks.{i}.weight" for i in range(20)]
     + ["first_stage_model.decoder.conv_in.weight", "cond_stage_model.transformer.x"], None, "sd.checkpoint"),
    ([f"model.diffusion_model.input_blocks.{i}.weight" for i in range(20)], None, "sd.diffusion_model"),
    ([f"double_blocks.{i}.img_attn.qkv.weight" for i in range(20)], None, "sd.diffusion_model"),
    (["encoder.conv_in.weight", "decoder.conv_in.weight", "quant_conv.weight", "post_quant_conv.weight"] + [
        f"decoder.up.{i}.weight" for i in range(10)], None, "sd.vae"),
    (["emb_params"], None, "sd.embedding"),
    (["clip_g", "clip_l"], None, "sd.embedding"),
    (["string_to_param.*"], None, "sd.embedding"),
    (["control_model.input_hint_block.0.weight", *MANY], None, "sd.controlnet"),
    (["controlnet_cond_embedding.conv_in.weight", *MANY], None, "sd.controlnet"),
    ([f"text_model.encoder.layers.{i}.mlp.fc1.weight" for i in range(12)], None, "sd.text_encoder"),
    ([f"encoder.block.{i}.layer.0.SelfAttention.q.weight" for i in range(12)], None, "sd.text_encoder"),
    (["conv_first.weight"] + [f"body.{i}.weight" for i in range(20)], None, "sd.upscaler"),
    (["model.0.weight"] + [f"model.1.sub.{i}.weight" for i in range(20)], None, "sd.upscaler"),
    (MANY, None, "generic"),
])
def test_safetensors_content(tmp_path: Path, tensors: list[str], metadata: dict[str, str] | None,
                             expected: str) -> None:
    path = write_safetensors(tmp_path / "model.safetensors", tensors, metadata)
    found = detect(path)
    assert found.type == expected, found
    assert found.reason
    assert found.source == ("extension" if expected == "generic" else "content")


def test_safetensors_base_model_from_metadata(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "x.safetensors", ["w"], {"ss_network_module": "lycoris.kohya",
                                                              "ss_base_model_version": "flux1"})
    assert detect(path).base_model == "flux1"


@pytest.mark.parametrize(("kv", "expected"), [
    ({"general.architecture": "llama", "general.name": "Tiny", "tokenizer.ggml.tokens": ["a", "b"]},
     "llm.gguf"),
    ({"general.architecture": "qwen2", "general.type": "model"}, "llm.gguf"),
    ({"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"}, "llm.adapter"),
    ({"general.architecture": "flux"}, "sd.diffusion_model"),
    ({"general.architecture": "t5encoder"}, "sd.text_encoder"),
])
def test_gguf_content(tmp_path: Path, kv: dict[str, Any], expected: str) -> None:
    path = write_gguf(tmp_path / "m.gguf", kv)
    found = detect(path)
    assert found.type == expected, found
    assert "GGUF v3" in found.reason


def test_gguf_header_stops_after_general_keys(tmp_path: Path) -> None:
    kv = {"general.architecture": "llama", "tokenizer.ggml.tokens": ["x"] * 5, "general.late": "ignored"}
    path = write_gguf(tmp_path / "m.gguf", kv)
    header, why = read_gguf(path)
    assert header is not None, why
    assert header.kv == {"general.architecture": "llama"}


@pytest.mark.parametrize("content", [
    b"GGUF",                                              # truncated after the magic
    b"GGUF" + struct.pack("<I", 99) + b"\0" * 16,         # unknown version
    b"GGUF" + struct.pack("<IQQ", 3, 0, 10**9),           # absurd key count
    b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40),  # absurd key length
    b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_str("general.architecture") + struct.pack("<I", 77),
    b"not a gguf at all",
])
def test_malformed_gguf_is_generic(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    found = detect(path)
    assert found.type == "generic"
    assert "GGUF" in found.reason


@pytest.mark.parametrize("content", [
    b"",
    b"\x01\x00",
    struct.pack("<Q", 1 << 40) + b"{}",                   # over the header cap
    struct.pack("<Q", 500) + b"{}",                        # runs past the end of the file
    struct.pack("<Q", 8) + b"not json",
    struct.pack("<Q", 7) + b"[1,2,3]",
    struct.pack("<Q", 12) + b'{"a": "str"}',
    struct.pack("<Q", 4) + b"\xff\xfe{}",
])
def test_malformed_safetensors_is_generic(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    found = detect(path)
    assert found.type == "generic"
    assert "safetensors" in found.reason or "short" in found.reason


def test_header_cap_is_enforced_without_reading(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "x.safetensors", ["w"] * 1)
    header, why = read_safetensors(path, cap=4)
    assert header is None and "cap" in why


def test_explicit_type_beats_everything(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", {"general.architecture": "llama"})
    found = detect(path, "sd.vae", {"civitai_type": "LORA"})
    assert (found.type, found.source) == ("sd.vae", "flag")
    with pytest.raises(UsageError):
        detect(path, "nonsense")


@pytest.mark.parametrize(("civitai", "expected"), [
    ("Checkpoint", "sd.checkpoint"), ("LORA", "sd.lora"), ("LoCon", "sd.lora"), ("DoRA", "sd.lora"),
    ("TextualInversion", "sd.embedding"), ("Hypernetwork", "sd.hypernetwork"), ("VAE", "sd.vae"),
    ("Controlnet", "sd.controlnet"), ("Upscaler", "sd.upscaler"),
])
def test_civitai_hint_beats_content(tmp_path: Path, civitai: str, expected: str) -> None:
    path = write_safetensors(tmp_path / "x.safetensors", MANY)
    found = detect(path, hints={"civitai_type": civitai, "base_model": "SDXL 1.0"})
    assert (found.type, found.source, found.base_model) == (expected, "hint", "SDXL 1.0")
    assert civitai in found.reason


def test_unknown_civitai_type_falls_through_to_content(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "x.safetensors", ["lora_unet_a.lora_down.weight"])
    assert detect(path, hints={"civitai_type": "Workflows"}).type == "sd.lora"


def test_hf_hint_is_hf_file_unless_content_says_more(tmp_path: Path) -> None:
    hints = {"repo_id": "acme/tiny", "commit": "a" * 40}
    config = tmp_path / "config.json"
    config.write_text("{}")
    assert detect(config, hints=hints).type == "hf.file"
    small = write_safetensors(tmp_path / "model.safetensors", ["w1", "w2"])
    assert detect(small, hints=hints).type == "hf.file"  # no "few tensors = embedding" guess for repo files
    assert detect(small).type == "sd.embedding"
    gguf = write_gguf(tmp_path / "m.gguf", {"general.architecture": "llama"})
    assert detect(gguf, hints=hints).type == "llm.gguf"


@pytest.mark.parametrize(("name", "expected"), [
    ("sd15.ckpt", "sd.checkpoint"),
    ("RealESRGAN_x4plus.pth", "sd.upscaler"),
    ("4x-UltraSharp.pth", "sd.upscaler"),
    ("my_vae.pt", "sd.vae"),
    ("style_lora.pt", "sd.lora"),
    ("anime_hypernetwork.pt", "sd.hypernetwork"),
    ("control_v11p_sd15_canny.pth", "sd.controlnet"),
    ("weights.bin", "generic"),
    ("notes.txt", "generic"),
])
def test_pickle_formats_by_name_only(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    # A pickle that would run code if anything unpickled it: detection must only look at the name.
    path.write_bytes(b"\x80\x04cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    found = detect(path)
    assert found.type == expected
    assert found.source == "extension"
    assert not (tmp_path / "pwned").exists()


def test_vocabulary_is_documented() -> None:
    assert {"sd.checkpoint", "sd.lora", "sd.vae", "sd.embedding", "sd.controlnet", "sd.upscaler",
            "sd.hypernetwork", "sd.text_encoder", "sd.diffusion_model", "llm.gguf", "hf.file",
            "generic"} <= set(TYPES)
    doc = (ROOT / "docs" / "PLACEMENT.md").read_text(encoding="utf-8")
    for name in TYPES:
        assert f"`{name}`" in doc, name
