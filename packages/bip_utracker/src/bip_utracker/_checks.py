"""Argument checks shared by the tracker's configuration and the announcer."""

from __future__ import annotations

import math

from ._errors import LocalProtocolError

__all__ = ["seconds"]


def seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` as a float of seconds: finite, above 0 (or at 0 with ``zero``).

    Raises:
        LocalProtocolError: ``value`` is not such a number (a bool is not).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = "at least 0" if zero else "more than 0"
        raise LocalProtocolError(f"{name} is a finite number of seconds {bound}, got {value!r}")
    return float(value)
