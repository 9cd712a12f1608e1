"""Built-in app presets: where each app looks for each artifact type, and each app's default base folder.

Facts from the apps' own code (see docs/PLACEMENT.md): ComfyUI ``folder_paths.py``, A1111/Forge
``modules/cmd_args.py`` + ``modelloader.py``, LM Studio ``lmstudioPaths.ts``, the Hugging Face cache layout,
Ollama ``manifest/paths.go``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import vocabulary as v
from ..errors import ConfigError
from ..util.hf_env import hf_hub_cache

FOLDERS, LMSTUDIO, HF_CACHE, OLLAMA = "folders", "lmstudio", "hf-cache", "ollama"

_COMFY_EXT = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
_COMFY_GGUF = _COMFY_EXT | {".gguf"}  # the ComfyUI-GGUF node reads diffusion_models and clip/text_encoders


@dataclass(frozen=True)
class Preset:
    """One app: how it is laid out (``kind``), type -> folders under its base, and the folder names
    (``aliases``) mapping rules may use as ``app:alias``."""

    name: str
    kind: str
    description: str
    folders: Mapping[str, str] = field(default_factory=dict)
    extensions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    base_must_exist: bool = False

    def folder_for(self, artifact_type: str) -> str | None:
        """The folder (relative to base) this app reads ``artifact_type`` from, or None."""
        return self.folders.get(artifact_type)

    def accepts_extension(self, artifact_type: str, suffix: str) -> bool:
        """Whether the app loads files with ``suffix`` for this type (True when it does not filter)."""
        allowed = self.extensions.get(artifact_type)
        return allowed is None or suffix.lower() in allowed

    def resolve_alias(self, folder: str) -> str:
        """A mapping target's folder: a known alias (``loras``, ``Lora``) or a relative path under base."""
        if folder in self.aliases:
            return self.aliases[folder]
        parts = [p for p in folder.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts or folder.startswith(("/", "~")):
            raise ConfigError(f"placement.mapping: {self.name}:{folder}: "
                              "the folder must be relative to the app's base")
        return "/".join(parts)


_COMFY_FOLDERS = {
    v.SD_CHECKPOINT: "models/checkpoints",
    v.SD_LORA: "models/loras",
    v.SD_VAE: "models/vae",
    v.SD_EMBEDDING: "models/embeddings",
    v.SD_CONTROLNET: "models/controlnet",
    v.SD_UPSCALER: "models/upscale_models",
    v.SD_HYPERNETWORK: "models/hypernetworks",
    v.SD_TEXT_ENCODER: "models/text_encoders",
    v.SD_DIFFUSION_MODEL: "models/diffusion_models",
}
_COMFY_ALIASES = {name.split("/", 1)[1]: name for name in _COMFY_FOLDERS.values()} | {
    name: f"models/{name}" for name in ("clip", "unet", "clip_vision", "style_models", "gligen", "photomaker",
                                        "vae_approx", "t2i_adapter")
}

_A1111_FOLDERS = {
    v.SD_CHECKPOINT: "models/Stable-diffusion",
    v.SD_LORA: "models/Lora",
    v.SD_VAE: "models/VAE",
    v.SD_EMBEDDING: "embeddings",  # at the root, NOT under models/
    v.SD_HYPERNETWORK: "models/hypernetworks",
    v.SD_UPSCALER: "models/ESRGAN",
    v.SD_CONTROLNET: "models/ControlNet",
    v.SD_TEXT_ENCODER: "models/text_encoder",  # Forge
}
_A1111_EXT = {
    v.SD_CHECKPOINT: frozenset({".ckpt", ".safetensors", ".gguf"}),
    v.SD_VAE: frozenset({".ckpt", ".pt", ".safetensors"}),
    v.SD_LORA: frozenset({".pt", ".ckpt", ".safetensors"}),
    v.SD_EMBEDDING: frozenset({".pt", ".bin", ".safetensors"}),
    v.SD_HYPERNETWORK: frozenset({".pt"}),
    v.SD_UPSCALER: frozenset({".pt", ".pth", ".safetensors"}),
    v.SD_CONTROLNET: frozenset({".pt", ".pth", ".ckpt", ".safetensors", ".bin"}),
    v.SD_TEXT_ENCODER: frozenset({".safetensors", ".gguf"}),
}
_A1111_ALIASES = {name.rsplit("/", 1)[-1]: name for name in _A1111_FOLDERS.values()} | {
    name: f"models/{name}" for name in ("LyCORIS", "RealESRGAN", "SwinIR", "ScuNET", "LDSR")
}

PRESETS: dict[str, Preset] = {
    "comfyui": Preset(
        "comfyui", FOLDERS, "ComfyUI: <base>/models/<folder>", _COMFY_FOLDERS,
        {t: (_COMFY_GGUF if t in (v.SD_DIFFUSION_MODEL, v.SD_TEXT_ENCODER) else _COMFY_EXT)
         for t in _COMFY_FOLDERS},
        _COMFY_ALIASES, base_must_exist=True,
    ),
    "a1111": Preset(
        "a1111", FOLDERS, "AUTOMATIC1111 / Forge: <base>/models/<Folder>, <base>/embeddings", _A1111_FOLDERS,
        _A1111_EXT, _A1111_ALIASES, base_must_exist=True,
    ),
    "lmstudio": Preset("lmstudio", LMSTUDIO, "LM Studio: <base>/<publisher>/<repo>/<file>.gguf",
                       {v.LLM_GGUF: ""}, {v.LLM_GGUF: frozenset({".gguf"})}),
    "hf-cache": Preset("hf-cache", HF_CACHE, "Hugging Face cache: models--org--name/{blobs,refs,snapshots}"),
    "ollama": Preset("ollama", OLLAMA, "Ollama: a Modelfile beside the GGUF + `ollama create`",
                     {v.LLM_GGUF: ""}, {v.LLM_GGUF: frozenset({".gguf"})}),
}
PRESETS["forge"] = PRESETS["a1111"]

_DEFAULT_BASES = {"comfyui": "~/comfy/ComfyUI", "a1111": "~/stable-diffusion-webui"}


def get_preset(name: str, app: str) -> Preset:
    """The preset called ``name`` (configured for ``app``), or a ConfigError listing the known ones."""
    preset = PRESETS.get(name or app)
    if preset is None:
        raise ConfigError(f"placement.apps.{app}.preset: unknown preset {name or app!r}",
                          hint=f"known presets: {', '.join(sorted(PRESETS))}")
    return preset


def lmstudio_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """LM Studio's models folder: the home pointer file, else legacy ~/.cache/lm-studio, else ~/.lmstudio."""
    home = Path((env or os.environ).get("HOME") or Path.home())
    pointer = home / ".lmstudio-home-pointer"
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if text:
        return Path(text).expanduser() / "models"
    legacy = home / ".cache" / "lm-studio"
    return (legacy if legacy.is_dir() else home / ".lmstudio") / "models"


def hf_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub`` (like huggingface_hub)."""
    return hf_hub_cache(env)


def ollama_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$OLLAMA_MODELS`` or ``~/.ollama/models`` (informational: modfetch never writes there)."""
    env = env if env is not None else os.environ
    if env.get("OLLAMA_MODELS"):
        return Path(env["OLLAMA_MODELS"]).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".ollama" / "models"


def default_base(preset: Preset, env: Mapping[str, str] | None = None) -> Path:
    """The base folder used when the config leaves ``base`` empty."""
    if preset.kind == LMSTUDIO:
        return lmstudio_models_dir(env)
    if preset.kind == HF_CACHE:
        return hf_cache_dir(env)
    if preset.kind == OLLAMA:
        return ollama_models_dir(env)
    home = Path((env or os.environ).get("HOME") or Path.home())
    return home / _DEFAULT_BASES[preset.name].removeprefix("~/")
