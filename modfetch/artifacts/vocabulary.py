"""The fixed artifact-type vocabulary and the mapping from source hints (CivitAI model types) onto it."""

from __future__ import annotations

from ..errors import UsageError

SD_CHECKPOINT = "sd.checkpoint"
SD_LORA = "sd.lora"
SD_VAE = "sd.vae"
SD_EMBEDDING = "sd.embedding"
SD_CONTROLNET = "sd.controlnet"
SD_UPSCALER = "sd.upscaler"
SD_HYPERNETWORK = "sd.hypernetwork"
SD_TEXT_ENCODER = "sd.text_encoder"
SD_DIFFUSION_MODEL = "sd.diffusion_model"
LLM_GGUF = "llm.gguf"
LLM_ADAPTER = "llm.adapter"
HF_FILE = "hf.file"
GENERIC = "generic"

# name -> one-line description (rendered by docs and `modfetch type --list`).
TYPES: dict[str, str] = {
    SD_CHECKPOINT: "full Stable Diffusion / SDXL / Flux checkpoint (UNet + VAE + text encoders)",
    SD_LORA: "LoRA / LyCORIS / LoCon / DoRA adapter for diffusion models",
    SD_VAE: "VAE (autoencoder) weights",
    SD_EMBEDDING: "textual-inversion embedding",
    SD_CONTROLNET: "ControlNet / T2I adapter",
    SD_UPSCALER: "ESRGAN-style upscaler",
    SD_HYPERNETWORK: "hypernetwork",
    SD_TEXT_ENCODER: "text encoder (CLIP / T5) used by diffusion models",
    SD_DIFFUSION_MODEL: "diffusion model / UNet-only weights (e.g. Flux transformer)",
    LLM_GGUF: "GGUF language model (llama.cpp, LM Studio, Ollama)",
    LLM_ADAPTER: "GGUF LoRA adapter for a language model (general.type = adapter); not placed by presets",
    HF_FILE: "a file of a Hugging Face repo with no more specific type",
    GENERIC: "anything else",
}

# CivitAI's model "type" field (case-insensitive) -> our type; unlisted types fall through to content.
CIVITAI_TYPES: dict[str, str] = {
    "checkpoint": SD_CHECKPOINT,
    "lora": SD_LORA,
    "locon": SD_LORA,
    "dora": SD_LORA,
    "lycoris": SD_LORA,
    "textualinversion": SD_EMBEDDING,
    "hypernetwork": SD_HYPERNETWORK,
    "vae": SD_VAE,
    "controlnet": SD_CONTROLNET,
    "upscaler": SD_UPSCALER,
}


def validate_type(name: str) -> str:
    """The canonical type name, or UsageError listing the vocabulary."""
    text = name.strip().lower()
    if text not in TYPES:
        raise UsageError(f"unknown artifact type {name!r}", hint=f"known types: {', '.join(TYPES)}")
    return text


def civitai_type(value: str) -> str | None:
    """Our type for a CivitAI model type (``LORA``, ``TextualInversion``...), or None when it says nothing."""
    return CIVITAI_TYPES.get(value.strip().lower().replace(" ", "").replace("_", ""))


# CivitAI *file* types (``files[].type``) that say more than the model's type: a VAE shipped with a Checkpoint
# model is a VAE.  "Model", "Pruned Model" and "Negative" (a negative embedding) keep the model's type.
CIVITAI_FILE_TYPES: dict[str, str] = {"vae": SD_VAE}
# File types that are not models at all: downloaded, never placed into an app's model folders.
CIVITAI_NOT_MODELS = frozenset({"config", "trainingdata", "archive"})


def _civitai_key(value: str) -> str:
    return value.strip().lower().replace(" ", "").replace("_", "")


def civitai_file_type(value: str) -> str | None:
    """Our type for a CivitAI file type (``VAE``), or None when the model's type decides."""
    return CIVITAI_FILE_TYPES.get(_civitai_key(value))


def civitai_not_model(value: str) -> bool:
    """True for CivitAI file types that are no model (``Config``, ``Training Data``, ``Archive``)."""
    return _civitai_key(value) in CIVITAI_NOT_MODELS
