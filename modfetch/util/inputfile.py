"""``download -i FILE``: an aria2c/wget-style URI list (one URI per line, ``#`` comments, blank lines; as in
aria2c, further URLs on the same line separated by TABs are mirrors of the same file)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from ..errors import UsageError

MAX_INPUT_BYTES = 16 << 20  # a list of URIs, not a data file: refuse to read gigabytes by mistake


class Listed(NamedTuple):
    """One line of a URI list: the URI, the mirrors that followed it (TAB-separated, unchecked) and its line."""

    uri: str
    mirrors: tuple[str, ...] = ()
    line: int = 0


def parse_uri_list(text: str, where: str) -> list[Listed]:
    """The URIs in ``text``; UsageError naming ``where`` and the line for anything that is not one."""
    uris: list[Listed] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if raw[:1] in (" ", "\t"):
            # aria2c reads indented lines as per-URI options; silently fetching "dir=/x" as a URI would be worse.
            raise UsageError(f"{where}:{number}: indented option lines are not supported",
                             hint="put one URI per line; use --dest and the other options for the whole run")
        words = [w.strip() for w in line.split("\t") if w.strip()]
        if any(ch.isspace() for word in words for ch in word):
            raise UsageError(f"{where}:{number}: one URI per line, found {len(line.split())} words",
                             hint="split them onto separate lines (# starts a comment line); TABs separate the "
                                  "mirrors of one file")
        uris.append(Listed(words[0], tuple(words[1:]), number))
    return uris


def read_uri_list(name: str) -> list[Listed]:
    """Read and parse ``name`` (``-``: standard input); UsageError for a missing, unreadable or binary file."""
    where = "standard input" if name == "-" else name
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            path = Path(name).expanduser()
            if path.is_dir():
                raise UsageError(f"--input-file {name} is a directory")
            with path.open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read --input-file {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"--input-file {where} is larger than {MAX_INPUT_BYTES >> 20} MiB; is it a URI list?")
    if b"\x00" in data:
        raise UsageError(f"--input-file {where} is a binary file, not a list of URIs")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--input-file {where} is not UTF-8 text") from None
    return parse_uri_list(text.lstrip("\ufeff"), where)


__all__ = ["Listed", "parse_uri_list", "read_uri_list"]
