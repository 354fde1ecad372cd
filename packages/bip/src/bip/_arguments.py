"""argparse pieces more than one ``bip`` command uses: number types, shared arguments, and
the usage answer of a command group called without its action."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "add_command_group",
    "add_serve_loop_options",
    "add_timeout",
    "add_torrent_and_directory",
    "positive",
    "print_usage",
]

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


def add_command_group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``bip NAME``, a command made of actions (``bip NAME ACTION ...``), and return the
    place to add the actions to; ``bip NAME`` alone prints its help (:func:`print_usage`)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    actions = parser.add_subparsers(title=f"{name} commands", metavar="ACTION")
    parser.set_defaults(func=lambda args: print_usage(parser))
    return actions


def add_serve_loop_options(parser: argparse.ArgumentParser, *, stats_interval: float) -> None:
    """``--stats-interval`` and ``--duration``, what a ``serve`` action hands to
    :func:`bip._serve_loop.print_statistics_until_stopped`."""
    parser.add_argument(
        "--stats-interval",
        type=positive(float),
        default=stats_interval,
        metavar="SECONDS",
        help=f"seconds between statistics lines (default {stats_interval:g})",
    )
    parser.add_argument(
        "--duration",
        type=positive(float),
        metavar="SECONDS",
        help="stop after this long (default: run until Ctrl-C)",
    )


def add_timeout(parser: argparse.ArgumentParser, *, default: float) -> None:
    """``--timeout SECONDS``: how long a one-shot question may take in all."""
    parser.add_argument(
        "--timeout",
        type=positive(float),
        default=default,
        metavar="SECONDS",
        help=f"give up after this long (default {default:g})",
    )


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
