"""File-name sanitising: names from URLs, APIs and Content-Disposition never escape the destination."""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import UsageError
from ..paths import require_utf8

# C0/C1 controls, and the bidirectional controls that let a name display as something else
# ("evil\u202egnp.exe" shows as "evilexe.png"); the zero-width joiner stays (emoji, Indic scripts).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# Shell metacharacters no model file name needs: a server-chosen name lands in commands printed for the user
# to paste (``ollama create ... -f PATH``), where ``$(...)``, backticks or ``;`` would run code if a printer
# ever forgot to quote.  Parentheses, spaces and ``#`` stay ("model (1).safetensors" is common).
_SHELL_META = re.compile("[$`;|&<>'\"]")
_MAX_NAME_BYTES = 240  # leaves room for ".part" / ".sha256" within NAME_MAX (255)
FALLBACK_NAME = "download.bin"
_SIBLING_SUFFIX = len(".sha256")  # the longest name derived from a target (its .part is shorter)


def sanitize_filename(name: str | None, fallback: str = FALLBACK_NAME) -> str:
    """One safe path component: no separators, no ``..``, no control characters, never empty or hidden-dot,
    and no shell metacharacters (``$ ` ; | & < > ' "`` become ``_``)."""
    cleaned = _SHELL_META.sub("_", _clean(name))
    return _shorten(cleaned) if cleaned else fallback


def _clean(name: str | None) -> str:
    """``name`` without separators, control characters or leading/trailing dots ("" when nothing is left)."""
    if not name:
        return ""
    name = unicodedata.normalize("NFC", name)
    # Only the last path component of whatever was given counts (``../../x.pt`` -> ``x.pt``).
    name = re.split(r"[/\\]", name)[-1]
    # Strip dots and spaces until none lead or trail (". .x" must not become the hidden ".x").
    name = re.sub(r"^[\s.]+|[\s.]+$", "", _CONTROL.sub("", name))
    name = name.replace(":", "_")
    if name.lower().endswith(".part"):
        # "<x>.part" is where <x> is downloaded: a later download of <x> would delete this file as its own
        # stale leftover, so the server's "model.bin.part" is saved as "model.bin_part".
        name = name[:-5] + "_" + name[-4:]
    return "" if name in {".", ".."} else name


def _shorten(name: str) -> str:
    """``name`` cut to _MAX_NAME_BYTES of UTF-8, keeping a short extension."""
    encoded = name.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        _stem, dot, ext = name.rpartition(".")
        ext_bytes = (dot + ext).encode("utf-8") if dot and len(ext) <= 16 else b""
        keep = encoded[: _MAX_NAME_BYTES - len(ext_bytes)].decode("utf-8", "ignore")
        name = keep + ext_bytes.decode("utf-8")
    return name


def check_plain_filename(name: str, what: str) -> str:
    """``name`` unchanged if it is already one safe path component; UsageError naming ``what`` otherwise.

    Used for names the user typed (``--out``, a batch job's ``name``): silently saving somewhere other
    than asked would surprise, so the error suggests the safe spelling instead."""
    require_utf8(name, what)
    safe = sanitize_filename(name, fallback="")
    if name and _clean(name) == name and not _SHELL_META.search(name) and safe != name:
        # Only shortened: say so (the generic message would send the user hunting for a bad character).
        raise UsageError(f"{what} is {len(name.encode('utf-8'))} bytes long; at most {_MAX_NAME_BYTES} bytes fit "
                         "(with room for .part and .sha256 within the file system's 255)",
                         hint=f"e.g. {shlex.quote(safe)}")
    if not name or safe != name:
        hint = f"e.g. {shlex.quote(safe)}; use --dest or a job's dest for the folder" if safe else \
            "use --dest or a job's dest for the folder"
        raise UsageError(f"{what} must be a plain file name (no '/', ':', control characters, shell "
                         f"metacharacters $`;|&<>'\", leading dots or '.part' ending), got {name!r}", hint=hint)
    return name


def sanitize_relpath(path: str) -> str:
    """A safe relative sub-path (``a/b/c``) with each component sanitised and ``..``/absolute parts dropped."""
    parts = [p for p in re.split(r"[/\\]+", path) if p not in {"", ".", ".."}]
    cleaned = [sanitize_filename(p, fallback="_") for p in parts]
    return posixpath.join(*cleaned) if cleaned else ""


def filename_from_url(url: str) -> str | None:
    """The last non-empty path segment of a URL, percent-decoded (unsanitised), or None."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    segment = unquote(path.rstrip("/").rsplit("/", 1)[-1]) if path else ""
    return segment or None


def safe_join(root: Path, *relative: str) -> Path:
    """``root / relative`` that is guaranteed to stay inside ``root`` (raises UsageError otherwise)."""
    root = root.absolute()
    target = root.joinpath(*[sanitize_relpath(r) for r in relative if r]).absolute()
    try:
        resolved_root = root.resolve()
        resolved_parent = target.parent.resolve()
    except (RuntimeError, OSError) as exc:  # Python < 3.13 raises RuntimeError for a symlink loop
        raise UsageError(f"cannot use {root}: {getattr(exc, 'strerror', None) or exc}") from None
    if resolved_parent != resolved_root and resolved_root not in resolved_parent.parents:
        raise UsageError(f"refusing to write outside {root}: {target}")
    check_path_fits(target)
    return target


def check_path_fits(path: Path) -> None:
    """UsageError when ``path`` or its ``.part``/``.sha256`` sibling cannot exist on the file system that will
    hold it: a component longer than its NAME_MAX or the whole longer than PATH_MAX (in bytes, as the kernel
    counts).  Checked before any request, so an over-long name in a repo is that file's clear error, not an
    ENAMETOOLONG from somewhere deep in the download."""
    try:
        encoded = os.fsencode(path)
        parts = [os.fsencode(part) for part in path.parts[1:]]
    except UnicodeError:
        raise UsageError(f"cannot save {path!r}: the name is not valid text for this file system") from None
    anchor = path.parent
    while not os.path.isdir(anchor) and anchor != anchor.parent:  # the deepest folder that exists already
        anchor = anchor.parent
    name_max = _pathconf(anchor, "PC_NAME_MAX", 255)
    path_max = _pathconf(anchor, "PC_PATH_MAX", 4096)
    shown = f"{path.name[:60]}..." if len(path.name) > 60 else path.name
    hint = "choose a shorter --dest (or a job's dest); the source's folder names cannot be changed"
    if len(encoded) + _SIBLING_SUFFIX >= path_max:  # (PATH_MAX counts the terminating NUL)
        raise UsageError(f"cannot save {shown}: its path is {len(encoded)} bytes long, and this file system "
                         f"allows {path_max - 1 - _SIBLING_SUFFIX} (with room for .sha256)", hint=hint)
    for i, part in enumerate(parts):
        extra = _SIBLING_SUFFIX if i == len(parts) - 1 else 0
        if len(part) + extra > name_max:
            raise UsageError(f"cannot save {shown}: the name {os.fsdecode(part)[:60]!r}... is {len(part)} bytes "
                             f"long, and this file system allows {name_max - extra} per name", hint=hint)


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):
        return default
    return value if value > 0 else default
