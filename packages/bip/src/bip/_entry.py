"""The ``bip`` command's entry point (the installed script and ``python -m bip``).

Tiny on purpose: importing the command line (every bip library, trio, cryptography) and
building its parser take a second or two, and a Ctrl-C then would otherwise end in a
traceback, outside the ``try`` of ``bip._cli.main``. Here both happen inside one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["EXIT_INTERRUPTED", "main"]

EXIT_INTERRUPTED = 130
"""The exit status after Ctrl-C, as ``bip._errors`` has it (not imported: it is heavy)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bip`` command with ``argv`` (default: the process arguments) and return its
    exit status, as ``bip._cli.main`` does; Ctrl-C while it loads is the same one line and
    status 130 as Ctrl-C while a command runs."""
    try:
        from ._cli import main as run_command  # noqa: PLC0415 - inside the try, on purpose

        return run_command(argv)
    except KeyboardInterrupt:
        print("bip: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
