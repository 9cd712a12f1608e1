"""Text from the state DB made safe for a terminal: no control or bidi characters, widths in columns.

File names, URLs and error messages come from servers and hand-edited DBs.  Printed raw, ``\\x1b[2J`` would
clear the user's screen, a NUL makes curses raise, a newline breaks a table row and U+202E reorders it; and a
CJK or emoji character takes two columns, so counting characters misaligns every column after it.
"""

from __future__ import annotations

import unicodedata

# Unicode categories shown as "?": controls (C0, DEL, C1), format characters (bidi overrides, zero-width
# joiners and spaces), lone surrogates (unencodable), private use, unassigned, line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_WHITESPACE = {"\t": " ", "\n": " ", "\r": " ", "\v": " ", "\f": " "}


def printable(text: str) -> str:
    """``text`` with whitespace controls as spaces and every other unsafe character as ``?``."""
    if text.isascii() and text.isprintable():  # the common case, fast
        return text
    return "".join(_WHITESPACE.get(ch) or ("?" if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch)
                   for ch in text)


def char_width(ch: str) -> int:
    """Terminal columns of one printable character: 0 for combining marks, 2 for wide (CJK, emoji), else 1."""
    if ch.isascii():
        return 1
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: str) -> int:
    """Terminal columns of printable ``text``."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def cut(text: str, width: int) -> str:
    """Printable ``text`` in at most ``width`` columns, marking a cut with ``~``."""
    text = printable(text)
    if width <= 0:
        return ""
    if text_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "~"


def fit(text: str, width: int, right: bool = False) -> str:
    """``cut`` then padded with spaces to exactly ``width`` columns (on the left when ``right``)."""
    text = cut(text, width)
    padding = " " * max(0, width - text_width(text))
    return padding + text if right else text + padding


__all__ = ["char_width", "cut", "fit", "printable", "text_width"]
