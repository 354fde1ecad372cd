"""The ``bip`` command line: one sub-command per job (filled in by issue 10's work)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bip`` command with ``argv`` (default: the process arguments); return its
    exit status."""
    parser = argparse.ArgumentParser(prog="bip", description="A BitTorrent client and toolbox.")
    parser.add_argument("--version", action="version", version=f"bip {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
