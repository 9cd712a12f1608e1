"""Decide a file's artifact type, and say why.

Order: an explicit type (``--type``) > a source hint (CivitAI model type; a Hugging Face file is ``hf.file``
unless its content says more) > the file's content (GGUF header; safetensors ``__metadata__`` and tensor
names) > its extension and name.  Pickle-based formats (.ckpt/.pt/.pth/.bin) are never opened beyond their
name.  A malformed header makes the file ``generic`` (with the reason), never an exception.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import vocabulary as v
from .headers import GGUFHeader, SafetensorsHeader, read_gguf, read_safetensors

H = TypeVar("H")

# GGUF architectures that are diffusion models or their text encoders (ComfyUI-GGUF), not LLMs.
_GGUF_DIFFUSION = {"flux", "sd1", "sd3", "sdxl", "aura", "hidream", "hyvid", "ltxv", "wan", "cosmos",
                   "lumina2", "chroma", "qwen_image", "hunyuan", "mochi", "stable-diffusion"}
_GGUF_TEXT_ENCODERS = {"t5", "t5encoder", "clip", "umt5"}

_LORA_MARKERS = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", ".lora_down.", ".lora_up.", "lora_a.",
                 "lora_b.", ".lora.down.", ".lora.up.", "hada_w1", "hada_w2", "lokr_w1", "lokr_w2",
                 ".dora_scale")
_CONTROLNET_MARKERS = ("control_model.", "input_hint_block", "controlnet_cond_embedding", "controlnet_blocks",
                       "controlnet_x_embedder")
_VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "first_stage_model.")
_EMBEDDING_KEYS = {"string_to_param", "emb_params", "clip_g", "clip_l", "string_to_param.*"}
_DIFFUSION_PREFIXES = ("model.diffusion_model.", "double_blocks.", "single_blocks.", "joint_blocks.",
                       "transformer_blocks.", "input_blocks.", "output_blocks.", "middle_block.", "blocks.0.")
_CHECKPOINT_COMPANIONS = ("first_stage_model.", "conditioner.", "cond_stage_model.", "text_encoders.", "vae.")
_UPSCALER_KEYS = ("conv_first.weight", "model.0.weight", "body.0.rdb1.conv1.weight", "conv_body.weight")

_NAME_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(^|[^a-z])(lora|lycoris|locon)([^a-z]|$)"), v.SD_LORA),
    (re.compile(r"(^|[^a-z])vae([^a-z]|$)"), v.SD_VAE),
    (re.compile(r"control[_-]?net|t2i[_-]?adapter|(^|[^a-z])control_"), v.SD_CONTROLNET),
    (re.compile(r"esrgan|swinir|upscal|(^|[^a-z0-9])[248]x[^a-z0-9]|[^a-z0-9]x[248]($|[^a-z0-9])"),
     v.SD_UPSCALER),
    (re.compile(r"hypernet"), v.SD_HYPERNETWORK),
    (re.compile(r"embedding|textual[_-]?inversion"), v.SD_EMBEDDING),
]


@dataclass(frozen=True)
class Detection:
    """A detected type, how it was decided (``flag``/``hint``/``content``/``extension``) and why."""

    type: str
    source: str
    reason: str
    base_model: str | None = None

    def describe(self) -> str:
        """One line: ``sd.lora (content: ...)``."""
        return f"{self.type} ({self.source}: {self.reason})"


def detect(path: Path, explicit: str | None = None, hints: Mapping[str, Any] | None = None) -> Detection:
    """The artifact type of ``path`` (see the module docstring for the order)."""
    hints = hints or {}
    base = _str(hints.get("base_model")) or None
    if explicit:
        return Detection(v.validate_type(explicit), "flag", "--type given", base)
    recorded = _str(hints.get("artifact_type"))
    if recorded and recorded in v.TYPES:
        return Detection(recorded, "hint", "type recorded by the source", base)
    file_type = _str(hints.get("file_type"))  # CivitAI files[].type: beats the model type
    if file_type and v.civitai_not_model(file_type):
        return Detection(v.GENERIC, "hint", f"CivitAI file type {file_type!r}: not a model, not placed", base)
    mapped_file = v.civitai_file_type(file_type) if file_type else None
    if mapped_file:
        return Detection(mapped_file, "hint", f"CivitAI file type {file_type!r}", base)
    civitai = _str(hints.get("civitai_type"))
    if civitai:
        mapped = v.civitai_type(civitai)
        if mapped:
            return Detection(mapped, "hint", f"CivitAI model type {civitai!r}", base)
    from_hf = bool(_str(hints.get("repo_id")))
    content = detect_content(path, weak=not from_hf)
    if content is not None:
        if base and not content.base_model:
            content = Detection(content.type, content.source, content.reason, base)
        return content
    if from_hf:
        return Detection(v.HF_FILE, "hint", f"file of Hugging Face repo {hints['repo_id']}", base)
    return _by_name(path, base)


def detect_content(path: Path, weak: bool = True) -> Detection | None:
    """A type from the file's bytes, or None when the content says nothing specific.

    ``weak`` allows the "fewer than 10 tensors = embedding" guess (off for files with a repo hint)."""
    try:
        # A FIFO would block open() forever and a device never ends: only regular files are read.
        if not stat.S_ISREG(path.stat().st_mode):
            return Detection(v.GENERIC, "content", "not a regular file; not read")
        with path.open("rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        return Detection(v.GENERIC, "content", f"cannot read the file: {exc.strerror or exc}")
    suffix = path.suffix.lower()
    if magic[:4] == b"GGUF":
        header, failed = _read_header(read_gguf, path, "GGUF")
        return _classify_gguf(header) if header is not None else failed
    if suffix == ".gguf":
        return Detection(v.GENERIC, "content", "named .gguf but has no GGUF magic")
    if suffix in (".safetensors", ".sft"):
        st, failed = _read_header(read_safetensors, path, "safetensors")
        return classify_safetensors(st, weak) if st is not None else failed
    return None


def _read_header(read: Callable[[Path], tuple[H | None, str]], path: Path,
                 kind: str) -> tuple[H | None, Detection | None]:
    """``(header, None)``, or ``(None, a generic Detection saying why)`` when the file cannot be read or its
    ``kind`` header is malformed."""
    try:
        header, why = read(path)
    except OSError as exc:
        return None, Detection(v.GENERIC, "content", f"cannot read the file: {exc.strerror or exc}")
    if header is None:
        return None, Detection(v.GENERIC, "content", f"malformed {kind} header: {why}")
    return header, None


def _classify_gguf(header: GGUFHeader) -> Detection:
    arch = _str(header.kv.get("general.architecture")).lower()
    kind = _str(header.kv.get("general.type")).lower()
    what = f"GGUF v{header.version}, general.architecture={arch or '?'}"
    if kind == "adapter":
        return Detection(v.LLM_ADAPTER, "content", f"{what}, general.type=adapter (a LoRA adapter)")
    if arch in _GGUF_DIFFUSION:
        return Detection(v.SD_DIFFUSION_MODEL, "content", f"{what} (a diffusion model)", arch)
    if arch in _GGUF_TEXT_ENCODERS:
        return Detection(v.SD_TEXT_ENCODER, "content", f"{what} (a text encoder)")
    return Detection(v.LLM_GGUF, "content", what)


def classify_safetensors(header: SafetensorsHeader, weak: bool = True) -> Detection | None:
    """A type from safetensors metadata and tensor names, or None when nothing matches."""
    meta = header.metadata
    base = meta.get("ss_base_model_version") or None
    spec = meta.get("modelspec.architecture", "")
    if meta.get("ss_network_module"):
        module = meta["ss_network_module"]
        return Detection(v.SD_LORA, "content", f"__metadata__ ss_network_module={module}", base)
    spec_kind = spec.rsplit("/", 1)[1] if "/" in spec else ""
    spec_types = {"lora": v.SD_LORA, "lycoris": v.SD_LORA, "textual-inversion": v.SD_EMBEDDING,
                  "vae": v.SD_VAE, "controlnet": v.SD_CONTROLNET, "hypernetwork": v.SD_HYPERNETWORK}
    if spec_kind in spec_types:
        return Detection(spec_types[spec_kind], "content", f"__metadata__ modelspec.architecture={spec}",
                         base or spec.split("/")[0])
    names = [n.lower() for n in header.tensors]
    count = len(names)

    def hit(markers: tuple[str, ...]) -> str | None:
        return next((n for n in names for m in markers if m in n), None)

    found = hit(_LORA_MARKERS)
    if found:
        return Detection(v.SD_LORA, "content", f"LoRA tensor names (e.g. {found})", base)
    found = hit(_CONTROLNET_MARKERS)
    if found:
        return Detection(v.SD_CONTROLNET, "content", f"ControlNet tensor names (e.g. {found})", base)
    unet = [n for n in names if n.startswith(_DIFFUSION_PREFIXES)]
    if unet:
        companions = [n for n in names if n.startswith(_CHECKPOINT_COMPANIONS)]
        if companions and any(n.startswith("model.diffusion_model.") for n in unet):
            return Detection(v.SD_CHECKPOINT, "content",
                             f"{len(unet)} diffusion-model tensors plus e.g. {companions[0]}", base)
        if len(unet) >= count // 2:
            return Detection(v.SD_DIFFUSION_MODEL, "content",
                             f"diffusion-model tensors only (e.g. {unet[0]})", base)
    found = next((n for n in names if "text_model.encoder.layers" in n or n.startswith("encoder.block.")
                  or ".encoder.block." in n), None)
    if found:
        return Detection(v.SD_TEXT_ENCODER, "content", f"text-encoder tensor names (e.g. {found})", base)
    if any(n.endswith("conv_in.weight") for n in names) and all(n.startswith(_VAE_PREFIXES) for n in names):
        return Detection(v.SD_VAE, "content", "only encoder./decoder. (VAE) tensors", base)
    found = next((n for n in names if n in _UPSCALER_KEYS), None)
    if found:
        return Detection(v.SD_UPSCALER, "content", f"upscaler tensor {found}", base)
    found = next((n for n in names if n.split(".")[0] in _EMBEDDING_KEYS), None)
    if found:
        return Detection(v.SD_EMBEDDING, "content", f"embedding tensor {found}", base)
    if weak and 0 < count < 10:
        return Detection(v.SD_EMBEDDING, "content",
                         f"only {count} tensor(s): a textual-inversion embedding", base)
    return None


def _by_name(path: Path, base: str | None) -> Detection:
    name = path.name.lower()
    suffix = path.suffix.lower()
    for pattern, kind in _NAME_RULES:
        if pattern.search(name):
            return Detection(kind, "extension", f"file name {path.name!r} suggests {kind}", base)
    if suffix == ".ckpt":
        return Detection(v.SD_CHECKPOINT, "extension", ".ckpt (not opened: pickle)", base)
    if suffix in (".pt", ".pth", ".bin", ".pkl"):
        return Detection(v.GENERIC, "extension",
                         f"{suffix} is a pickle container; not opened, name says nothing", base)
    what = suffix or "a file without extension"
    return Detection(v.GENERIC, "extension", f"nothing identifies {what}", base)


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""
