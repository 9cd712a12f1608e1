"""Read model file headers without loading weights and without unpickling anything.

Both readers return ``None`` plus a reason for anything malformed or oversized; they never raise for bad
content (only for an unreadable file, as OSError).
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

SAFETENSORS_HEADER_CAP = 100 << 20  # accept at most a 100 MB JSON header
GGUF_MAGIC = b"GGUF"
GGUF_MAX_KV = 4096
GGUF_MAX_STRING = 1 << 20  # one key or string value
GGUF_MAX_ARRAY_SKIP = 64 << 20  # bytes we are willing to skip for one array value
# Strings walked (keys, values, array items) before giving up: real headers hold < 2M (vocab + merges); the
# cap keeps a crafted file of millions of empty strings from taking minutes.
GGUF_MAX_STRINGS = 4 << 20
# Lone surrogates (from JSON \ud800 escapes) cannot be printed or encoded; control characters would reach the
# terminal through `modfetch type`'s reason.
_UNPRINTABLE = re.compile(r"[\ud800-\udfff\x00-\x1f\x7f-\x9f]")

# GGUF value types (gguf.h): fixed sizes for the scalar ones.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class MalformedHeader(Exception):
    """Internal: the header does not parse; the message says why."""


def clean_text(value: object) -> str:
    """``str(value)`` with lone surrogates and control characters replaced by U+FFFD (printable, encodable)."""
    return _UNPRINTABLE.sub("\ufffd", str(value))


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
    except RecursionError:  # e.g. {"a":{"a":...}} nested 100k deep
        return None, "safetensors header nests too deeply"
    if not isinstance(data, dict):
        return None, "safetensors header is not a JSON object"
    meta = data.pop("__metadata__", None)
    metadata = {clean_text(k): clean_text(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    if any(not isinstance(v, dict) for v in data.values()):
        return None, "safetensors header has entries that are not tensor descriptions"
    return SafetensorsHeader(tensors=[clean_text(k) for k in data], metadata=metadata), ""


def _read(fh: IO[bytes], n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise MalformedHeader("GGUF header ends early")
    return data


class _Budget:
    """Strings left to walk in one GGUF header (see GGUF_MAX_STRINGS)."""

    def __init__(self, strings: int = GGUF_MAX_STRINGS) -> None:
        self.strings = strings

    def take(self, n: int = 1) -> None:
        self.strings -= n
        if self.strings < 0:
            raise MalformedHeader("GGUF header holds implausibly many strings")


def _gguf_string(fh: IO[bytes], version: int, budget: _Budget) -> str:
    budget.take()
    (length,) = struct.unpack("<I" if version == 1 else "<Q", _read(fh, 4 if version == 1 else 8))
    if length > GGUF_MAX_STRING:
        raise MalformedHeader(f"GGUF string of {length} bytes is implausibly long")
    return _read(fh, length).decode("utf-8", "replace")


def _gguf_value(fh: IO[bytes], vtype: int, version: int, budget: _Budget, size: int) -> Any:
    if vtype in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[vtype]
        return struct.unpack(fmt, _read(fh, struct.calcsize(fmt)))[0]
    if vtype == _GGUF_STRING:
        return _gguf_string(fh, version, budget)
    if vtype == _GGUF_ARRAY:
        (item_type,) = struct.unpack("<I", _read(fh, 4))
        (count,) = struct.unpack("<I" if version == 1 else "<Q", _read(fh, 4 if version == 1 else 8))
        if item_type in _GGUF_SCALARS:  # skip without decoding
            nbytes = count * struct.calcsize(_GGUF_SCALARS[item_type])
            if nbytes > GGUF_MAX_ARRAY_SKIP:
                raise MalformedHeader("GGUF array is implausibly large")
            # Seek rather than read: 4096 keys x 64 MB must not mean reading 256 GB.
            if fh.seek(nbytes, os.SEEK_CUR) > size:
                raise MalformedHeader("GGUF header ends early")
        elif item_type == _GGUF_STRING:
            if count > GGUF_MAX_ARRAY_SKIP // 8 or count > budget.strings:
                raise MalformedHeader("GGUF array is implausibly large")
            for _ in range(count):
                _gguf_string(fh, version, budget)
        else:
            raise MalformedHeader(f"unsupported GGUF array item type {item_type}")
        return None
    raise MalformedHeader(f"unknown GGUF value type {vtype}")


def read_gguf(path: Path) -> tuple[GGUFHeader | None, str]:
    """Parse a GGUF header up to the end of its ``general.*`` keys: (header, "") or (None, why not)."""
    size = path.stat().st_size
    budget = _Budget()
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
                key = _gguf_string(fh, version, budget)
                (vtype,) = struct.unpack("<I", _read(fh, 4))
                if not key.startswith("general.") and "general.architecture" in header.kv:
                    break  # writers put general.* first; the rest (tokenizer arrays...) is not needed
                value = _gguf_value(fh, vtype, version, budget, size)
                if key.startswith("general."):
                    header.kv[clean_text(key)] = clean_text(value) if isinstance(value, str) else value
        except MalformedHeader as exc:
            return None, str(exc)
        except struct.error:
            return None, "GGUF header does not parse"
    return header, ""
