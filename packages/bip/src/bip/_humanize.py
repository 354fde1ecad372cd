"""Sizes, rates and durations written for people, and sizes read from them.

Binary units throughout (KiB = 1024 bytes), as BitTorrent sizes (pieces, blocks) are powers
of two and every major client shows them that way.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "format_rate", "format_size", "parse_size"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

_MULTIPLIERS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def format_size(size: int | float) -> str:
    """``size`` bytes as ``"512 B"``, ``"1.5 KiB"``, ``"16.0 MiB"``, ``"2.00 GiB"``.

    Three significant digits past the first unit, so columns of sizes stay narrow. Negative
    sizes keep their sign (a difference of sizes).
    """
    if size < 0:
        return "-" + format_size(-size)
    if size < 1024:
        return f"{int(size)} B"
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    # Rounding may carry into the next unit (1023.96 KiB -> "1024 KiB"); move up instead.
    # (Only a value of 1000 or more can round to 1024, and that one prints no decimals.)
    if round(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    # The decimals by the value as printed: 99.96 is "100", not "100.0" (a digit too many).
    for decimals, limit in ((2, 10), (1, 100)):
        if round(value, decimals) < limit:
            return f"{value:.{decimals}f} {_UNITS[unit]}"
    return f"{value:.0f} {_UNITS[unit]}"


def format_rate(bytes_per_second: float) -> str:
    """A transfer rate as ``"1.50 MiB/s"``; ``"0 B/s"`` for zero or a non-finite rate."""
    if not math.isfinite(bytes_per_second) or bytes_per_second <= 0:
        return "0 B/s"
    return f"{format_size(bytes_per_second)}/s"


def format_duration(seconds: float | None) -> str:
    """A duration as ``"45s"``, ``"3m05s"``, ``"2h07m"``, ``"3d04h"``; ``"--"`` when unknown.

    ``None``, negative and non-finite durations (an ETA at rate zero) are unknown.
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def parse_size(text: str) -> int:
    """A size typed by a person, in bytes: ``"16384"``, ``"16k"``, ``"16 KiB"``, ``"1.5MiB"``.

    Units are binary whatever their spelling (``"16kb"`` is 16384), as for piece sizes
    everyone means powers of two.

    Raises:
        ValueError: ``text`` is not a size, names an unknown unit, or is not a whole number
            of bytes.
    """
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (expected e.g. 16384, 256k, 4MiB)")
    number: str = match.group(1)
    unit: str = match.group(2)
    multiplier: int | None = _MULTIPLIERS.get(unit.lower())
    if multiplier is None:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (use B, KiB, MiB, GiB, TiB)")
    if "." in number:
        # Exact arithmetic: "1.5MiB" is a whole number of bytes, "1.3B" is not.
        whole, frac = number.split(".")
        scaled = int(whole + frac) * multiplier
        divisor: int = 10 ** len(frac)
        if scaled % divisor:
            raise ValueError(f"not a whole number of bytes: {text!r}")
        return scaled // divisor
    return int(number) * multiplier
