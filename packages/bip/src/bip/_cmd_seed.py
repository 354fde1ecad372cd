"""``bip seed TORRENT DIR``: serve a torrent's data to its swarm until Ctrl-C, or until the
upload ratio (``--seed-ratio``) or the seeding time (``--seed-time``) is reached (exit 0).

The data in DIR is checked first (bip_disk, with the resume data in ``DIR/.bip/`` when it is
there, so a restart is quick); then the pieces found good are served to every peer that comes:
through the torrent's UDP trackers, ``--peer`` (dialled), or by dialling our ``--port``.
Nothing is downloaded. Partial data is served as it is, with a warning; no data at all is an
error (the usual mistake: DIR must be the directory that holds the torrent's name).
``--super-seed`` reveals the pieces as BEP 16 says (an initial seeder's way of making its
upload go further).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from pathlib import Path

import trio

from ._arguments import (
    add_seed_limit_options,
    add_super_seed_option,
    add_torrent_and_directory,
)
from ._client import TorrentError, TorrentOptions, TorrentPhase
from ._cmd_download import (
    add_session_arguments,
    check_trackers,
    config_from_args,
    listen_ports_text,
    open_session_with_dht,
    seed_on,
    seeding_until,
    until_terminated,
    user_peers,
)
from ._describe import safe_text
from ._errors import CLIError
from ._inputs import load_torrent

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bip seed`` to the command line."""
    parser = subparsers.add_parser(
        "seed",
        help="serve a torrent's data",
        description=(
            "Check a torrent's data in DIR (the directory holding the torrent's name, as for"
            " 'bip download --dir') and serve it to peers until Ctrl-C, --seed-ratio or"
            " --seed-time."
        ),
    )
    add_torrent_and_directory(parser)
    add_seed_limit_options(parser, implies_seed=False)
    add_super_seed_option(parser)
    add_session_arguments(parser)
    parser.set_defaults(func=run)


async def _seed(args: argparse.Namespace) -> int:
    metainfo = load_torrent(args.torrent)
    directory = Path(args.directory)
    if not directory.is_dir():
        raise CLIError(f"{directory}: no such directory")
    peers = await user_peers(args)
    # Selecting no file makes the torrent complete at once: it serves what it has and never
    # asks for more. A pause a library user's session saved there is lifted: we serve; and
    # super-seeding is what the command line says, whatever was saved.
    options = TorrentOptions(
        directory,
        peers=peers,
        files=frozenset(),
        extra_trackers=tuple(args.tracker),
        paused=False,
        super_seeding=args.super_seed,
    )
    async with open_session_with_dht(args, config_from_args(args), directory) as session:
        try:
            torrent = await session.add_torrent(metainfo, options)
        except TorrentError as error:  # a torrent the session refuses (named .bip)
            raise CLIError(str(error)) from None
        with contextlib.suppress(TorrentError):  # a failure is reported from the status
            await torrent.wait_complete()  # the data is checked
        status = torrent.status()
        if status.phase is TorrentPhase.FAILED:
            raise CLIError(f"{status.name}: {status.error}")
        if status.pieces == 0:
            raise CLIError(
                f"no piece of {status.name!r} found in {directory}"
                " (DIR is the directory that holds the torrent's files or folder)"
            )
        if not args.quiet:
            what = (
                "all"
                if status.pieces == status.num_pieces
                else f"only {status.pieces} of {status.num_pieces}"
            )
            how = "super-seeding" if args.super_seed else "seeding"
            print(
                f"bip: {how} {safe_text(status.name)}: {what} pieces,"
                f" on {listen_ports_text(session)},"
                f" until {seeding_until(args)}",
                file=sys.stderr,
            )
        # The ratio counts against the whole torrent: a seed selected no file.
        await seed_on(torrent, args, size=metainfo.info.total_size)
    return 0


def run(args: argparse.Namespace) -> int:
    """``bip seed``: serve until interrupted, or until a seeding limit is reached (0)."""
    check_trackers(args.tracker)  # before anything starts, as `bip download` does
    return trio.run(until_terminated, functools.partial(_seed, args))
