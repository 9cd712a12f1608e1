"""Human-readable sizes and the ``--chunk-size`` parser."""

from __future__ import annotations

import math
import re

from ..errors import UsageError

MAX_SIZE = 1 << 40  # no chunk is ever larger than this; bigger numbers are typos

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """Parse ``16M``, ``1GiB``, ``524288`` into bytes (K/M/G alone are binary units)."""
    _number, value = _parse_bytes(text)
    if value <= 0:
        raise UsageError(f"size must be positive: {text!r}")
    return value


def parse_rate(text: str) -> int:
    """A rate in bytes per second like ``parse_size``, where zero in any spelling (``0``, ``0.0``, ``0M``)
    means unlimited; a fraction of a byte per second is refused rather than read as zero."""
    number, value = _parse_bytes(text)
    if value <= 0 and number != 0:
        raise UsageError(f"size must be 0 (unlimited) or at least 1 byte: {text!r}")
    return max(value, 0)


def _parse_bytes(text: str) -> tuple[float, int]:
    """The number as written and the whole bytes it means."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise UsageError(f"invalid size {text!r}", hint="use a number with an optional unit, e.g. 16M or 1GiB")
    number = float(match.group(1))
    if not math.isfinite(number) or number * _UNITS[unit] > MAX_SIZE:  # "1" + 400 zeros is inf as a float
        raise UsageError(f"size too large: {text!r}", hint="at most 1 TiB")
    return number, int(number * _UNITS[unit])


def human_size(n: int | float | None) -> str:
    """``1536`` -> ``1.5 KiB``; None -> ``?``."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Parse ``30m``, ``12h``, ``7d``, ``2w`` (or ``90s``) into seconds; a bare number is seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwSMHDW]?)\s*", text or "")
    if not match:
        raise UsageError(f"invalid duration {text!r}", hint="use a number and a unit: 30m, 12h, 7d or 2w")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower() or "s"]
    if not math.isfinite(seconds) or seconds > 100 * 365 * 86400:
        raise UsageError(f"duration too long: {text!r}", hint="at most 100 years")
    return seconds
