"""``bip show TORRENT_OR_MAGNET``: everything a .torrent file or a magnet link says."""

from __future__ import annotations

import argparse

from bip_metainfo import Metainfo

from ._describe import json_text, magnet_json, magnet_text, torrent_json, torrent_text
from ._inputs import load_source

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bip show`` to the command line."""
    parser = subparsers.add_parser(
        "show",
        help="show what a torrent or magnet link holds",
        description=(
            "Show everything in a .torrent file, a magnet link or a bare info-hash: name,"
            " info-hashes (v1, v2), sizes, pieces, files, trackers, web seeds, flags, dates"
            " and its magnet link."
        ),
    )
    parser.add_argument(
        "source",
        metavar="TORRENT_OR_MAGNET",
        help="a .torrent file ('-' for standard input), a magnet link or an info-hash",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--pad", action="store_true", help="list BEP 47 pad files too")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the description; returns the exit status."""
    source = load_source(args.source)
    if isinstance(source, Metainfo):
        if args.json:
            print(json_text(torrent_json(source)))
        else:
            print(torrent_text(source, show_pad=args.pad))
    elif args.json:
        print(json_text(magnet_json(source)))
    else:
        print(magnet_text(source))
    return 0
