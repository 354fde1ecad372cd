"""``bip create PATH``: make a .torrent of a file or a directory.

Hybrid (v1 + v2) by default, as libtorrent 2.x's ``create_torrent`` and qBittorrent's
torrent creator default to: every client can use a hybrid torrent (v1-only clients read its
v1 half, v2 clients get per-file merkle trees and their stronger hashes), at the cost of pad
files that align each file to a piece.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
import threading
from typing import Any

from bip_metainfo import CreateError, Metainfo, create_torrent, sanitize_name

from . import __version__
from ._describe import safe_text, torrent_version
from ._errors import CLIError
from ._humanize import format_size, parse_size
from ._inputs import check_tracker_url, check_url, parse_endpoint
from ._progress import ProgressBar

__all__ = ["add_parser", "run"]

_TRACKER_SCHEMES = ("udp", "http", "https", "ws", "wss")
"""Announce URL schemes clients know (BEP 3, BEP 15, WebTorrent); anything else is a typo."""

_WEBTORRENT_SCHEMES = ("ws", "wss")
"""WebTorrent trackers: bip announces to none, but the torrent is for every client."""

_WEB_SEED_SCHEMES = ("http", "https", "ftp")
"""BEP 19 web seeds are plain file servers."""

_STOP_GRACE = 10.0
"""Seconds Ctrl-C waits for the hashing threads to stop (each stops within a 1 MiB read)."""


def _size(text: str) -> int:
    """argparse type for ``--piece-size``: a size of more than 0 bytes."""
    try:
        size = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"a piece size must be positive, not {text!r}")
    return size


def _node(text: str) -> tuple[str, int]:
    """A ``--node`` value as ``(host, port)``.

    Raises:
        CLIError: not ``HOST:PORT``, or a port out of 1..65535 (no node listens on 0).
    """
    try:
        return parse_endpoint(text, lowest_port=1)
    except CLIError as error:
        raise CLIError(f"--node {safe_text(text)}: {error}") from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bip create`` to the command line."""
    parser = subparsers.add_parser(
        "create",
        help="make a .torrent of a file or directory",
        description=(
            "Make a .torrent of a file or a directory. Hybrid (v1 + v2) by default, as"
            " libtorrent and qBittorrent make them: every client can use it."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="the file or directory to share")
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="where to write the torrent: a file, a directory to put NAME.torrent in, or '-'"
        " for stdout (default: NAME.torrent here)",
    )
    version = parser.add_mutually_exclusive_group()
    version.add_argument(
        "--v1", dest="version", action="store_const", const="v1", help="BEP 3 only (SHA-1)"
    )
    version.add_argument(
        "--v2",
        dest="version",
        action="store_const",
        const="v2",
        help="BEP 52 only (SHA-256 merkle trees; v1-only clients cannot read it)",
    )
    version.add_argument(
        "--hybrid",
        dest="version",
        action="store_const",
        const="hybrid",
        help="both v1 and v2 (the default)",
    )
    parser.set_defaults(version="hybrid")
    parser.add_argument(
        "-t",
        "--tracker",
        metavar="URL[,URL...]",
        action="append",
        default=[],
        help="an announce URL; repeat for more tiers, comma-separate URLs of one tier",
    )
    parser.add_argument(
        "-w",
        "--web-seed",
        metavar="URL",
        action="append",
        default=[],
        help="a BEP 19 web seed URL (repeatable)",
    )
    parser.add_argument(
        "--node",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="a DHT bootstrap node to list in the torrent (repeatable)",
    )
    parser.add_argument("-p", "--private", action="store_true", help="set the BEP 27 private flag")
    parser.add_argument(
        "-l",
        "--piece-size",
        metavar="N",
        type=_size,
        help="bytes per piece, e.g. 256k or 4MiB (default: libtorrent's rule for the size)",
    )
    parser.add_argument("-c", "--comment", help="a free-text comment")
    parser.add_argument("-s", "--source", help="the info dict's 'source' (private trackers use it)")
    parser.add_argument("-n", "--name", help="the torrent's name (default: PATH's name)")
    parser.add_argument(
        "--no-date",
        action="store_true",
        help="leave out the creation date (the same files give the same bytes)",
    )
    parser.add_argument("--no-creator", action="store_true", help="leave out 'created by'")
    parser.add_argument(
        "--exclude-hidden",
        action="store_true",
        help="leave out files and directories whose name starts with '.'",
    )
    parser.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="share what links point to (default: store links as BEP 47 links)",
    )
    parser.add_argument(
        "--keep-names",
        action="store_true",
        help="keep names readers would rename (':', '?', 'con.txt', 'README' beside 'Readme';"
        " refused by default): libtorrent on Linux and macOS reads them as they are, bip and"
        " Windows clients would not find the files",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="hashing threads (default: every core)"
    )
    parser.add_argument("-f", "--force", action="store_true", help="overwrite OUT if it exists")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar nor summary")
    parser.set_defaults(func=run)


def _check_tracker(url: str) -> None:
    """Refuse a ``--tracker`` URL: a ``udp://``, ``http://`` or ``https://`` one as ``bip
    download`` and ``bip seed`` refuse it (the announcing client's own parser, the same
    message: a UDP URL without a port, port 0, no host...), a ``ws://`` or ``wss://`` one
    (WebTorrent's, which other clients announce to) if it has no host, any other scheme.

    Raises:
        CLIError: naming the URL and what is wrong with it.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in _TRACKER_SCHEMES and scheme not in _WEBTORRENT_SCHEMES:
        check_tracker_url(url)
    else:
        check_url(url, _TRACKER_SCHEMES, "tracker")


def _tiers(values: list[str]) -> list[list[str]]:
    """``--tracker`` values as BEP 12 tiers, each URL checked."""
    tiers = []
    for value in values:
        tier = [url.strip() for url in value.split(",") if url.strip()]
        for url in tier:
            _check_tracker(url)
        if tier:
            tiers.append(tier)
    return tiers


def _default_output(path: str, name: str | None) -> str:
    """``NAME.torrent``, the name made safe as a file name (``--name a/b`` is one name)."""
    base = name if name else os.path.basename(os.path.normpath(os.path.abspath(path)))
    return f"{sanitize_name(base) or 'torrent'}.torrent"


def _output_path(output: str | None, path: str, name: str | None, *, force: bool) -> str:
    """Where the torrent goes, checked before any hashing (which can take hours)."""
    if output is None:
        output = _default_output(path, name)
    elif output != "-" and os.path.isdir(output):
        output = os.path.join(output, _default_output(path, name))
    if output == "-":
        return output
    # Not abspath first: it drops "l/.." as text, where the OS goes where l leads, then up.
    parent = os.path.dirname(output) or os.curdir
    if not os.path.isdir(parent):
        raise CLIError(f"{output}: no such directory {parent!r}")
    _check_outside(output, path)
    if os.path.exists(output) and not force:
        raise CLIError(f"{output}: already exists (use --force to overwrite)")
    return output


def _check_outside(output: str, path: str) -> None:
    """Refuse to write the torrent into the directory it shares (or over the shared file).

    The torrent is written once the files are hashed, so it would lie among the files it
    describes: the next run there (``bip create . -f``) would hash the old torrent into the
    new one, then replace it, and the new torrent would fail its own check. Refusing any
    output inside is simpler to act on than leaving that one file out of the walk.

    Directories are compared by identity, walking up from the output's: a name would miss a
    bind mount of the share, or the share named in another case where case is ignored.
    What links (followed with ``--follow-symlinks``) lead the walk to, ``create_torrent``
    refuses, given the output, as it walks.

    Raises:
        CLIError: ``output`` lies inside the directory ``path`` or is the file ``path``.
    """
    shared = os.stat(path)
    if os.path.lexists(output):
        # lstat: os.replace writes over a link, not through it (a link to the shared file is
        # no harm to it; the link PATH itself is refused too).
        existing = os.lstat(output)
        if os.path.samestat(existing, shared) or os.path.samestat(existing, os.lstat(path)):
            raise CLIError(
                f"{safe_text(output)}: is the shared file; write the torrent elsewhere (-o OUT)"
            )
    if not stat.S_ISDIR(shared.st_mode):
        return
    # Where the OS puts the file, every link resolved ("l/.." is where l leads, then up):
    # so walking up its names walks up the directories.
    directory = os.path.realpath(os.path.dirname(output) or os.curdir)
    while True:
        if os.path.samestat(os.stat(directory), shared):
            raise CLIError(
                f"{safe_text(output)}: inside the shared directory {safe_text(path)!r}, where "
                "the next run would hash it into the torrent; write it elsewhere (-o OUT)"
            )
        above = os.path.dirname(directory)
        if above == directory:
            return
        directory = above


def run(args: argparse.Namespace) -> int:
    """Create the torrent, write it, print a summary; returns the exit status."""
    path: str = args.path
    if not os.path.exists(path):
        raise CLIError(f"{safe_text(path)}: no such file or directory")
    tiers = _tiers(args.tracker)
    for url in args.web_seed:
        check_url(url, _WEB_SEED_SCHEMES, "web seed")
    nodes = [_node(text) for text in args.node]
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be at least 1, not {args.threads}")
    output = _output_path(args.output, path, args.name, force=args.force)
    if args.private and not tiers:
        print("bip: warning: a private torrent without trackers cannot find peers", file=sys.stderr)

    options: dict[str, Any] = {
        "version": args.version,
        "piece_length": args.piece_size,
        "trackers": tiers,
        "web_seeds": args.web_seed,
        "nodes": nodes,
        "private": args.private,
        "source": args.source,
        "comment": args.comment,
        "creation_date": None if args.no_date else "now",
        "created_by": None if args.no_creator else f"bip/{__version__}",
        "name": args.name,
        "include_hidden": not args.exclude_hidden,
        "symlinks": "follow" if args.follow_symlinks else "store",
        "portable_names": not args.keep_names,
        # Refused as the walk reaches it: through a followed link, _check_outside cannot.
        "output": None if output == "-" else output,
        "threads": args.threads,
    }
    # A folder's name is anyone's choice: escaped, so no terminal escape reaches stderr.
    label = safe_text(os.path.basename(os.path.normpath(path)) or path)
    torrent = _create_with_progress(path, options, label, quiet=args.quiet)
    data = torrent.to_bytes()
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_atomically(output, data, force=args.force)
    if not args.quiet:
        _summary(torrent, output, sys.stdout if output != "-" else sys.stderr)
    return 0


def _create_with_progress(
    path: str, options: dict[str, Any], label: str, *, quiet: bool
) -> Metainfo:
    """``create_torrent`` on a worker thread, so Ctrl-C can cancel the hashing cleanly.

    The main thread only waits: a KeyboardInterrupt lands there, sets ``cancel`` (every
    hashing thread stops within a chunk) and is re-raised once the worker has ended.
    """
    cancel = threading.Event()
    outcome: list[Metainfo] = []
    failure: list[BaseException] = []
    hashing = threading.Event()  # set at the first progress call, once every check passed
    bar = None if quiet else ProgressBar(f"hashing {label}", None)

    def progress(done: int, total: int) -> None:
        hashing.set()
        if bar is not None:
            bar.update(done, total=total)

    # Our own "finished" flag: Thread.join interrupted by Ctrl-C can leave the thread marked
    # stopped while it still runs (CPython 3.11), so join and is_alive cannot be trusted then.
    finished = threading.Event()

    def work() -> None:
        try:
            outcome.append(create_torrent(path, progress=progress, cancel=cancel, **options))
        except BaseException as error:  # handed to the main thread, which raises it
            failure.append(error)
        finally:
            finished.set()

    worker = threading.Thread(target=work, name="bip-create", daemon=True)
    try:
        worker.start()  # inside the try: Ctrl-C may land while the thread is starting
        while not finished.wait(0.5):
            pass
    except KeyboardInterrupt:
        cancel.set()
        if worker.ident is not None:  # started: wait until every hashing thread stopped
            _wait_for_stop(finished)
        if bar is not None:
            bar.__exit__(KeyboardInterrupt, None, None)
        raise
    if failure:
        if bar is not None:
            bar.__exit__(type(failure[0]), failure[0], None)
        error = failure[0]
        # CreateError: the files or the choices (bad piece size, no files, text that is not
        # UTF-8), the user's to fix. create_torrent checks its arguments before it hashes:
        # a ValueError then is an option it refused that no check here repeats, the user's
        # too. A ValueError once hashing started is a bug, and keeps its traceback.
        if isinstance(error, CreateError) or (
            isinstance(error, ValueError) and not hashing.is_set()
        ):
            raise CLIError(f"cannot create a torrent of {safe_text(path)}: {error}") from error
        raise error
    if bar is not None:
        bar.finish()
    return outcome[0]


def _wait_for_stop(finished: threading.Event) -> None:
    """After Ctrl-C, wait for the worker to end, but not for ever.

    Every hashing thread stops within one read, but a read the OS never completes (a
    hung network mount) would leave Ctrl-C silent for ever: after :data:`_STOP_GRACE`
    seconds (with a warning), or at a second Ctrl-C, it stops waiting and the interrupt
    goes on to its ``bip: error`` line, and the process exits: the hashing threads are
    daemon threads, which the interpreter does not wait for.
    """
    try:
        if not finished.wait(_STOP_GRACE):
            print(
                f"bip: warning: hashing did not stop within {_STOP_GRACE:g} s of Ctrl-C",
                file=sys.stderr,
            )
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: the user does not want to wait


def _write_atomically(output: str, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``output`` via a temporary file, so a crash leaves no half torrent.

    The temporary file goes in the directory the rename puts ``output`` in, every link
    resolved (``l/..`` is where ``l`` leads, then up, not the current directory): a
    rename cannot cross file systems.
    """
    directory = os.path.realpath(os.path.dirname(output) or os.curdir)
    target = os.path.join(directory, os.path.basename(output))
    fd, temp = tempfile.mkstemp(prefix=".bip-", suffix=".torrent.part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temp, 0o644 & ~_umask())
        if not force and os.path.exists(target):
            raise CLIError(f"{output}: already exists (use --force to overwrite)")
        os.replace(temp, target)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _summary(torrent: Metainfo, output: str, stream: Any) -> None:
    info = torrent.info
    files = [entry for entry in info.files if not entry.is_pad]
    hashes = info.info_hash
    version = torrent_version(info)
    lines = [
        f"wrote {output if output != '-' else 'standard output'} ({version})",
        f"  name:       {info.name}",
    ]
    if hashes.v1 is not None:
        lines.append(f"  info-hash:  {hashes.v1.hex()} (v1)")
    if hashes.v2 is not None:
        lines.append(f"  info-hash:  {hashes.v2.hex()} (v2)")
    lines.append(
        f"  size:       {format_size(info.total_size)} in {len(files)} file"
        f"{'s' if len(files) != 1 else ''}, {info.num_pieces} pieces of"
        f" {format_size(info.piece_length)}"
    )
    lines.append(f"  magnet:     {torrent.magnet()}")
    print("\n".join(lines), file=stream)
