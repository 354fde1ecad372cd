"""The ``bip`` command line: argparse, one sub-command per command module, error mapping.

Each name in :data:`_COMMAND_MODULES` is a module ``bip._cmd_<name>`` exposing
``add_parser(subparsers) -> None``, which adds its sub-command and sets ``func=`` to a
callable ``(args: argparse.Namespace) -> int`` (the exit status). :func:`main` parses, runs
the command, and turns every expected failure into one ``bip: error: ...`` line on stderr and
a non-zero exit (see :mod:`bip._errors`); ``--debug`` adds tracebacks and DEBUG logging,
``--verbose`` INFO logging.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Final

from . import __version__
from ._describe import safe_text
from ._errors import EXIT_USAGE, describe, exit_code_for, find_expected

__all__ = ["EXIT_INTERNAL", "build_parser", "main"]

_COMMAND_MODULES: tuple[str, ...] = (
    # One name per line: helpers append their own without touching the others.
    "create",
    "show",
    "verify",
    "tracker",
    "download",
    "seed",
    "dht",
    "demo",
)
"""The sub-commands, in ``bip --help`` order: ``"create"`` is ``bip._cmd_create``."""

EXIT_INTERNAL = 70
"""The exit status of a bug in bip (an unexpected exception): sysexits' EX_SOFTWARE."""


_GLOBAL_FLAGS: Final = (
    (("--debug",), "show tracebacks and DEBUG logging"),
    (("-v", "--verbose"), "log what the libraries do at INFO level (announces, DHT, checks)"),
)
"""Flags every command accepts before or after its name, with their help."""


def build_parser() -> argparse.ArgumentParser:
    """The full ``bip`` parser, with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="bip",
        description="A BitTorrent client and toolbox built on the bip libraries.",
    )
    parser.add_argument("--version", action="version", version=f"bip {__version__}")
    for flags, help_text in _GLOBAL_FLAGS:
        parser.add_argument(*flags, action="store_true", help=help_text)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"bip._cmd_{name}")
        module.add_parser(subparsers)
    for command in subparsers.choices.values():
        _accept_global_flags(command)
    return parser


def _accept_global_flags(parser: argparse.ArgumentParser) -> None:
    """Let the global flags come after the command too (``bip show x --debug``), at every level.

    Their defaults are suppressed so that a command's parser never resets a flag given before
    the command.
    """
    for flags, _ in _GLOBAL_FLAGS:
        if flags[-1] not in parser._option_string_actions:
            parser.add_argument(
                *flags, action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _accept_global_flags(child)


def _setup_logging(*, debug: bool, verbose: bool) -> None:
    """DEBUG logs with times and sources under ``--debug``, INFO logs with their sources under
    ``--verbose``, else warnings only: every library logs under its own name (``bip_dht...``)."""
    if debug:
        level, fmt = logging.DEBUG, "%(asctime)s %(levelname)s %(name)s: %(message)s"
    elif verbose:
        level, fmt = logging.INFO, "bip: %(name)s: %(message)s"
    else:
        level, fmt = logging.WARNING, "bip: %(levelname)s: %(message)s"
    handler = logging.StreamHandler()
    handler.setFormatter(_SafeFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class _SafeFormatter(logging.Formatter):
    """A formatter that escapes control characters in each message, as ``bip: error:`` lines
    are: log messages quote others' text (a magnet's ``dn`` as a torrent's name, a tracker's
    failure reason, a peer's words), which could otherwise set the terminal's title or
    rewrite what is on screen. A traceback (``--debug``) is added after, with its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The line for ``record``, its message (set by ``format``) escaped."""
        # format() sets record.message anew for each handler: escaping it here changes
        # nothing another formatter sees.
        record.message = safe_text(record.message)
        return super().formatMessage(record)


def _escape_unencodable_output() -> None:
    """Let stdout and stderr write what their encoding lacks as ``\\u65e5`` escapes.

    A torrent's name is anyone's text: under ``LANG=C`` or ``PYTHONIOENCODING=latin-1`` the
    first name outside the encoding would otherwise end the command in ``UnicodeEncodeError``.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):  # not None (pythonw), nor a test's StringIO
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bip`` command with ``argv`` (default: the process arguments); return its
    exit status.

    Never raises for a failure the user can cause: those become one ``bip: error: ...`` line
    on stderr and a non-zero status (130 after Ctrl-C, 2 for a bad command line, 70 for a
    bug in bip). ``--debug`` prints the traceback as well. What the output's encoding cannot
    show is printed as backslash escapes.
    """
    _escape_unencodable_output()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits for --help, --version and usage errors; return instead, so
        # in-process callers (tests, the README) get a status rather than an exit.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug: bool = args.debug
    _setup_logging(debug=debug, verbose=args.verbose)
    try:
        return int(func(args))
    except SystemExit:
        raise
    except BrokenPipeError:
        # `bip show x | head`: the reader left; nothing more to say to anyone. Point stdout
        # at devnull so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except BaseException as exc:
        expected = find_expected(exc)
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        if expected is None:
            print(
                f"bip: internal error: {type(exc).__name__}: {exc}"
                + ("" if debug else " (run with --debug for the traceback)"),
                file=sys.stderr,
            )
            return EXIT_INTERNAL
        print(f"bip: error: {describe(expected)}", file=sys.stderr)
        return exit_code_for(expected)


if __name__ == "__main__":
    sys.exit(main())
