"""Quantization picks for GGUF repos: which files ``hf://owner/repo:Q4_K_M`` names (pure; no I/O).

As ollama's ``hf.co/{user}/{repo}:{QUANT}`` and LM Studio's ``lms get ...@q4_k_m``: the quantization is read
from each GGUF file's name (``model.Q4_K_M.gguf``, ``model-IQ3_XS.gguf``, ``...-bf16.gguf``), or from its folder
when the name carries none (``Q4_K_M/model-00001-of-00003.gguf``), and compared case-insensitively.  Every
shard of a split GGUF (``name-00001-of-00003.gguf``) carries the same quantization, so a pick takes them all.
Multimodal projectors (``mmproj-*.gguf``) are not quantizations of the model: add them with ``?include=``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

# Quantization names llama.cpp's quantize and the usual uploaders (unsloth's "UD-" dynamic quants) use.
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?Q[1-8](?:_[A-Z0-9]{1,4})*|TQ[12]_0|B?F16|F32|FP16|FP32|MXFP4(?:_MOE)?))"
    r"(?![A-Za-z0-9])", re.I)


def is_model_gguf(path: str) -> bool:
    """A GGUF file that is (part of) a model: ``.gguf``, not a multimodal projector."""
    name = posixpath.basename(path).lower()
    return name.endswith(".gguf") and not name.startswith("mmproj")


def quant_of(path: str) -> str | None:
    """The quantization a GGUF path names (upper case): the last one in the file name, else in its folders."""
    if not is_model_gguf(path):
        return None
    folder, name = posixpath.split(path)
    for text in (name[: -len(".gguf")], *reversed(folder.split("/"))):
        found = _TOKEN.findall(text)
        if found:
            return str(found[-1]).upper()
    return None


def select(paths: Iterable[str], quant: str) -> list[str]:
    """The GGUF paths of quantization ``quant`` (case-insensitive), sorted (shards in order)."""
    wanted = quant.upper()
    return sorted(p for p in paths if quant_of(p) == wanted)


def available(paths: Iterable[str]) -> dict[str, list[str]]:
    """Quantization -> its GGUF paths, for every quantization the paths carry (sorted by name)."""
    found: dict[str, list[str]] = {}
    for path in sorted(paths):
        quant = quant_of(path)
        if quant is not None:
            found.setdefault(quant, []).append(path)
    return dict(sorted(found.items()))
