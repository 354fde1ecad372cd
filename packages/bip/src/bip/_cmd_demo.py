"""``bip demo``: a whole swarm on loopback, watched live, checked, and summed up.

It starts bip_utracker's tracker, a small bip_dht network, one seeder and several leechers
of a freshly generated random file, all in this process on 127.0.0.X addresses (see
:mod:`bip._demo_swarm`); shows one progress line per peer (redrawn in place on a terminal,
every few seconds otherwise); then checks every leecher's copy twice, byte for byte against
the source and piece by piece with bip_disk's check (``bip verify``'s), and prints a short
report: the time, the rates, where each leecher found its peers and whom its data came from.

Nothing leaves loopback; the temporary directory is removed unless ``--keep DIR``; every
phase is bounded by ``--timeout``. Exit 0 when every leecher has a good copy, else one line
and 1.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Final, TextIO

import trio

from ._client import TorrentPhase, TorrentStatus
from ._cmd_download import until_terminated
from ._cmd_verify import verify
from ._demo_swarm import DEMO_FILE, DemoPeer, DemoSwarm, run_swarm
from ._errors import CLIError
from ._humanize import format_duration, format_rate, format_size, parse_size

__all__ = [
    "DEFAULT_LEECHERS",
    "DEFAULT_SIZE",
    "DEFAULT_TIMEOUT",
    "add_parser",
    "board_lines",
    "check_copies",
    "report",
    "run",
]

DEFAULT_SIZE: Final = 32 << 20
"""Bytes of the generated file: a few seconds of transfer, long enough to watch."""
DEFAULT_LEECHERS: Final = 4
DEFAULT_TIMEOUT: Final = 120.0
"""Seconds the whole demo may take (the defaults finish in a few seconds)."""
MAX_LEECHERS: Final = 32
MAX_SIZE: Final = 4 << 30
_BAR_CELLS: Final = 20
_MIN_BAR_CELLS: Final = 6
_TAIL_BUDGET: Final = 48  # a downloading peer's fields: share, rates, peers
_UTP_BUDGET: Final = 9  # " (12 uTP)" after the peer count, once some peer has uTP peers
_TTY_REFRESH: Final = 0.1
_PLAIN_REFRESH: Final = 2.0
_COMPARE_CHUNK: Final = 1 << 20


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not 1 <= size <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"the size is 1 B to {format_size(MAX_SIZE)}")
    return size


def _leechers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= MAX_LEECHERS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_LEECHERS} leechers")
    return count


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError("the timeout is a positive number of seconds")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bip demo`` to the command line."""
    parser = subparsers.add_parser(
        "demo",
        help="run a whole swarm on loopback and report",
        description=(
            "Start a UDP tracker, a small DHT, one seeder and several leechers of a random"
            " file, all on loopback (127.0.0.X) in this process; show their progress; check"
            " every copy (byte for byte and piece by piece); print a report. Nothing leaves"
            " this machine."
        ),
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=DEFAULT_SIZE,
        metavar="SIZE",
        help=f"size of the file (default {format_size(DEFAULT_SIZE)}; 16M, 1GiB...)",
    )
    parser.add_argument(
        "--leechers",
        type=_leechers,
        default=DEFAULT_LEECHERS,
        metavar="N",
        help=f"how many leechers (default {DEFAULT_LEECHERS}, at most {MAX_LEECHERS})",
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="work in DIR (new or empty) and keep the files and the torrent there"
        " (default: a temporary directory, removed)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


# -- the live view ------------------------------------------------------------------------------


def _peer_parts(peer: DemoPeer, status: TorrentStatus | None) -> tuple[str, str, float]:
    """One peer's line without its bar: the name and address, the rest, the share done.

    A leecher without a tracker is marked ``*``, as in the report. The peer count says how
    many of them are over uTP when any is, as ``bip download``'s status line does.
    """
    name = peer.name + ("*" if not peer.use_tracker else "")
    head = f"{name:<11} {peer.host:<11}"
    if status is None:
        return head, "starting", 0.0
    fraction = status.done / status.total if status.total else 0.0
    fields = [f"{fraction * 100:5.1f}%"]
    if status.phase is TorrentPhase.DOWNLOADING:
        fields.append(f"down {format_rate(status.download_rate):<10}")
    fields.append(f"up {format_rate(status.upload_rate):<10}")
    # Only when there is one: TCP-only swarms keep their familiar line.
    utp = f" ({status.utp_peers} uTP)" if status.utp_peers else ""
    fields.append(f"peers {status.peers}{utp}")
    if status.phase is not TorrentPhase.DOWNLOADING:
        fields.append("seeding" if status.complete else status.phase.value)
    return head, "  ".join(fields), fraction


# One frame of the live view: each peer with its status, taken once. Every part of a frame
# (the uTP room, each line) reads this snapshot, so that they agree with each other and a
# frame costs one status() per peer, whatever the number of its readers.
_Frame = list[tuple[DemoPeer, TorrentStatus | None]]


def _frame(swarm: DemoSwarm) -> _Frame:
    return [(peer, peer.status()) for peer in swarm.peers]


def _any_utp(frame: _Frame) -> bool:
    return any(status is not None and status.utp_peers for _, status in frame)


def board_lines(swarm: DemoSwarm, width: int, *, bar: bool, utp_room: bool = False) -> list[str]:
    """The live view: one line per peer, cut to ``width``; with ``bar``, bars of one width
    for all and from frame to frame, in the room a downloading peer's line leaves (none on a
    narrow terminal).

    That room includes a uTP count's when a peer has uTP peers now, or with ``utp_room``
    (the live view keeps it once it was needed, so that bars do not change width back).
    Each peer's status is read once.
    """
    return _frame_lines(_frame(swarm), width, bar=bar, utp_room=utp_room)


def _frame_lines(frame: _Frame, width: int, *, bar: bool, utp_room: bool) -> list[str]:
    """:func:`board_lines` of one snapshot."""
    parts = [_peer_parts(peer, status) for peer, status in frame]
    head_width = max(len(head) for head, _, _ in parts)
    budget = _TAIL_BUDGET + (_UTP_BUDGET if utp_room or _any_utp(frame) else 0)
    cells = min(_BAR_CELLS, width - head_width - budget - 5) if bar else 0
    lines = []
    for head, tail, fraction in parts:
        gauge = ""
        if cells >= _MIN_BAR_CELLS:
            filled = int(fraction * cells)
            gauge = f"[{'#' * filled}{'.' * (cells - filled)}] "
        line = f"{head}  {gauge}{tail}"
        lines.append(line if len(line) <= width else line[: max(width - 1, 0)] + "~")
    return lines


class _Board:
    """One line per peer on ``stream``: redrawn in place on a terminal, else printed as a
    block every few seconds."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._drawn = 0
        self._utp_room = False  # once a uTP count was shown, the bars leave room for it

    def draw(self, swarm: DemoSwarm, elapsed: float) -> None:
        width = shutil.get_terminal_size((100, 24)).columns - 1 if self.tty else 120
        frame = _frame(swarm)
        self._utp_room = self._utp_room or _any_utp(frame)
        lines = _frame_lines(frame, width, bar=self.tty, utp_room=self._utp_room)
        if self.tty:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            block = "".join(f"{line}\n" for line in lines)
            self.stream.write(f"-- {format_duration(elapsed)}\n{block}")
        self.stream.flush()

    async def follow(self, swarm: DemoSwarm) -> None:
        """Redraw until cancelled."""
        start = trio.current_time()
        while True:
            self.draw(swarm, trio.current_time() - start)
            await trio.sleep(_TTY_REFRESH if self.tty else _PLAIN_REFRESH)


# -- checking -----------------------------------------------------------------------------------


def _same_bytes(left: Path, right: Path) -> bool:
    if left.stat().st_size != right.stat().st_size:
        return False
    with left.open("rb") as a, right.open("rb") as b:
        while True:
            chunk = a.read(_COMPARE_CHUNK)
            if chunk != b.read(_COMPARE_CHUNK):
                return False
            if not chunk:
                return True


async def check_copies(swarm: DemoSwarm) -> list[str]:
    """What is wrong with the leechers' copies (nothing: an empty list).

    Each copy must be complete for its own engine (every piece verified, none left to do),
    byte-equal to the seeder's file, and pass bip_disk's check of every piece afresh.
    """
    problems: list[str] = []
    source = swarm.seeder.directory / DEMO_FILE
    num_pieces = swarm.torrent.info.num_pieces
    for peer in swarm.leechers:
        status = peer.final
        if status is None or not status.complete or status.pieces != num_pieces:
            have = 0 if status is None else status.pieces
            problems.append(f"{peer.name} verified {have} of {num_pieces} pieces")
            continue
        copy = peer.directory / DEMO_FILE
        same = await trio.to_thread.run_sync(_same_bytes, source, copy)
        if not same:
            problems.append(f"{peer.name}'s copy differs from the source")
            continue
        checked = await verify(swarm.torrent, str(peer.directory), None)
        if not checked.complete:
            bad = num_pieces - len(checked.good)
            problems.append(f"{peer.name}: {bad} pieces fail bip_disk's check")
    return problems


# -- the report ---------------------------------------------------------------------------------


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def report(swarm: DemoSwarm) -> str:
    """The summary printed at the end of a successful demo."""
    info = swarm.torrent.info
    size = info.total_size
    leechers = swarm.leechers
    delivered = size * len(leechers)
    seeder_id = bytes(swarm.seeder.peer_id)
    from_seeder = sum(peer.received.get(seeder_id, 0) for peer in leechers)
    from_leechers = sum(
        count for peer in leechers for sender, count in peer.received.items() if sender != seeder_id
    )
    hosts = "127.0.0.1 (no loopback aliases)" if swarm.layout.shared_host else "127.0.0.X"
    lines = [
        f"bip demo: {len(leechers)} leecher{'s' if len(leechers) != 1 else ''} each fetched"
        f" {format_size(size)} from 1 seeder in {swarm.elapsed:.1f} s"
        f" ({format_rate(delivered / max(swarm.elapsed, 1e-9))} in all)",
        f"  swarm: hybrid torrent, {info.num_pieces} pieces of {format_size(info.piece_length)};"
        f" tracker {swarm.tracker_url}; DHT of {len(swarm.dht_nodes)} nodes"
        f" + {len(swarm.peers)} peers' nodes; on {hosts}",
        "  checked: every copy byte-equal to the source and every piece verified afresh",
        "",
        f"  {'peer':<10}  {'done in':>7}  {'avg rate':>11}  {'peers found via':<26}"
        f"  {'data from seeder / leechers'}",
    ]
    for peer in leechers:
        got = sum(peer.received.values())
        own = peer.received.get(seeder_id, 0)
        found = (
            f"tracker {len(peer.from_tracker) if peer.use_tracker else '-'},"
            f" DHT {len(peer.from_dht)}, PEX {peer.from_pex}"
        )
        took = peer.finished_after or 0.0
        rate = format_rate(size / took) if took > 0 else "-"
        lines.append(
            f"  {peer.name + ('*' if not peer.use_tracker else ''):<10}  {took:>6.1f}s  {rate:>11}"
            f"  {found:<26}  {_percent(own, got)} / {_percent(got - own, got)}"
        )
    final = swarm.seeder.final
    uploaded = final.uploaded if final is not None else from_seeder
    lines += [
        "",
        f"  seeder sent {format_size(uploaded)}; leechers sent each other"
        f" {format_size(from_leechers)} ({_percent(from_leechers, from_seeder + from_leechers)}"
        " of the data received)",
    ]
    if any(not peer.use_tracker for peer in leechers):
        lines.append("  * no tracker: found its peers through the DHT and PEX only")
    lines.append(
        "  peers found: distinct peers the tracker gave and the DHT lookups returned;"
        " PEX: addresses received"
    )
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------------


def _work_dir(keep: str | None) -> tuple[Path, bool]:
    """The directory to work in, and whether to remove it at the end."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="bip-demo-")), True
    path = Path(keep)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CLIError(f"{keep}: --keep needs a new or empty directory")
    path.mkdir(parents=True, exist_ok=True)
    return path, False


async def _demo(args: argparse.Namespace, root: Path) -> int:
    board = None if args.quiet else _Board(sys.stderr)
    async with trio.open_nursery() as nursery:

        def started(swarm: DemoSwarm) -> None:
            if board is not None:
                nursery.start_soon(board.follow, swarm)

        with trio.fail_after(args.timeout + 30):  # a backstop: run_swarm bounds itself
            swarm = await run_swarm(
                root,
                size=args.size,
                leechers=args.leechers,
                timeout=args.timeout,
                on_started=started,
            )
        nursery.cancel_scope.cancel()
    if board is not None:
        board.draw(swarm, swarm.elapsed)
    with trio.move_on_after(args.timeout) as scope:
        problems = await check_copies(swarm)
    if scope.cancelled_caught:
        raise CLIError(f"checking the copies took longer than {args.timeout:g} s")
    if problems:
        raise CLIError("; ".join(problems))
    if args.keep is not None:
        torrent_path = root / "bip-demo.torrent"
        await trio.to_thread.run_sync(torrent_path.write_bytes, swarm.torrent.to_bytes())
    print(report(swarm), flush=True)
    if args.keep is not None:
        print(f"  kept in {os.fspath(root)}", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """``bip demo``: 0 when every leecher ends with a good copy."""
    root, remove = _work_dir(args.keep)
    try:
        return trio.run(until_terminated, functools.partial(_demo, args, root))
    finally:
        if remove:
            shutil.rmtree(root, ignore_errors=True)
