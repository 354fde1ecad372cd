"""argparse pieces more than one ``bip`` command uses: number types, shared arguments, and
the usage answer of a command group called without its action."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["add_torrent_and_directory", "positive", "print_usage"]

N = TypeVar("N", int, float)


def positive(kind: type[N]) -> Callable[[str], N]:
    """An argparse ``type=`` that reads a ``kind`` number above 0 (finite, for a float)."""

    def check(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        # `not value > 0` also refuses a float NaN, which compares false with everything.
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
        return value

    return check


def add_torrent_and_directory(parser: argparse.ArgumentParser) -> None:
    """The ``TORRENT [DIR]`` arguments of the commands that work on data already on disk."""
    parser.add_argument("torrent", metavar="TORRENT", help="the .torrent file")
    parser.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        default=".",
        help="the directory the torrent's files are in (default: here)",
    )


def print_usage(parser: argparse.ArgumentParser) -> int:
    """Print ``parser``'s help on stderr and return the usage exit status (2): what a command
    group such as ``bip dht`` does when no action is given."""
    parser.print_help(sys.stderr)
    return 2
