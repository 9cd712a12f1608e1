"""Read model file headers without loading weights and without unpickling anything.

Both readers return ``None`` plus a reason for anything malformed or oversized; they never raise for bad
content (only for an unreadable file, as OSError).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

SAFETENSORS_HEADER_CAP = 100 << 20  # accept at most a 100 MB JSON header
GGUF_MAGIC = b"GGUF"
GGUF_MAX_KV = 4096
GGUF_MAX_STRING = 1 << 20  # one key or string value
GGUF_MAX_ARRAY_SKIP = 64 << 20  # bytes we are willing to skip for one array value

# GGUF value types (gguf.h): fixed sizes for the scalar ones.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class MalformedHeader(Exception):
    """Internal: the header does not parse; the message says why."""


@dataclass
class SafetensorsHeader:
    """Tensor names and the free-form ``__metadata__`` strings of a safetensors file."""

    tensors: list[str]
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class GGUFHeader:
    """The GGUF version, tensor count and the leading ``general.*`` key/values."""

    version: int
    tensor_count: int
    kv: dict[str, Any] = field(default_factory=dict)


def read_safetensors(path: Path, cap: int = SAFETENSORS_HEADER_CAP) -> tuple[SafetensorsHeader | None, str]:
    """Parse the JSON header of a safetensors file: (header, "") or (None, why it is not one)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            return None, "too short for a safetensors header"
        (length,) = struct.unpack("<Q", prefix)
        if length < 2:
            return None, "safetensors header length is too small"
        if length > cap:
            return None, f"safetensors header length {length} exceeds the {cap} byte cap"
        if length > size - 8:
            return None, "safetensors header length runs past the end of the file"
        raw = fh.read(length)
    if not raw.lstrip().startswith(b"{"):
        return None, "safetensors header is not a JSON object"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "safetensors header is not valid JSON"
    if not isinstance(data, dict):
        return None, "safetensors header is not a JSON object"
    meta = data.pop("__metadata__", None)
    metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    if any(not isinstance(v, dict) for v in data.values()):
        return None, "safetensors header has entries that are not tensor descriptions"
    return SafetensorsHeader(tensors=[str(k) for k in data], metadata=metadata), ""


def _read(fh: IO[bytes], n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise MalformedHeader("GGUF header ends early")
    return data


def _gguf_string(fh: IO[bytes], version: int) -> str:
    (length,) = struct.unpack("<I" if version == 1 else "<Q", _read(fh, 4 if version == 1 else 8))
    if length > GGUF_MAX_STRING:
        raise MalformedHeader(f"GGUF string of {length} bytes is implausibly long")
    return _read(fh, length).decode("utf-8", "replace")


def _gguf_value(fh: IO[bytes], vtype: int, version: int) -> Any:
    if vtype in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[vtype]
        return struct.unpack(fmt, _read(fh, struct.calcsize(fmt)))[0]
    if vtype == _GGUF_STRING:
        return _gguf_string(fh, version)
    if vtype == _GGUF_ARRAY:
        (item_type,) = struct.unpack("<I", _read(fh, 4))
        (count,) = struct.unpack("<I" if version == 1 else "<Q", _read(fh, 4 if version == 1 else 8))
        if item_type in _GGUF_SCALARS:  # skip without decoding
            nbytes = count * struct.calcsize(_GGUF_SCALARS[item_type])
            if nbytes > GGUF_MAX_ARRAY_SKIP:
                raise MalformedHeader("GGUF array is implausibly large")
            _read(fh, nbytes)
        elif item_type == _GGUF_STRING:
            if count > GGUF_MAX_ARRAY_SKIP // 8:
                raise MalformedHeader("GGUF array is implausibly large")
            for _ in range(count):
                _gguf_string(fh, version)
        else:
            raise MalformedHeader(f"unsupported GGUF array item type {item_type}")
        return None
    raise MalformedHeader(f"unknown GGUF value type {vtype}")


def read_gguf(path: Path) -> tuple[GGUFHeader | None, str]:
    """Parse a GGUF header up to the end of its ``general.*`` keys: (header, "") or (None, why not)."""
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            return None, "no GGUF magic"
        try:
            (version,) = struct.unpack("<I", _read(fh, 4))
            if version not in (1, 2, 3):
                return None, f"unsupported GGUF version {version}"
            wide = version != 1
            fmt, width = ("<Q", 8) if wide else ("<I", 4)
            (tensor_count,) = struct.unpack(fmt, _read(fh, width))
            (kv_count,) = struct.unpack(fmt, _read(fh, width))
            if kv_count > GGUF_MAX_KV:
                return None, f"GGUF key/value count {kv_count} is implausible"
            header = GGUFHeader(version=version, tensor_count=tensor_count)
            for _ in range(kv_count):
                key = _gguf_string(fh, version)
                (vtype,) = struct.unpack("<I", _read(fh, 4))
                if not key.startswith("general.") and "general.architecture" in header.kv:
                    break  # writers put general.* first; the rest (tokenizer arrays...) is not needed
                value = _gguf_value(fh, vtype, version)
                if key.startswith("general."):
                    header.kv[key] = value
        except MalformedHeader as exc:
            return None, str(exc)
        except struct.error:
            return None, "GGUF header does not parse"
    return header, ""
