"""``bip verify TORRENT DIR``: which pieces and files of a torrent are on disk and good.

The check is bip_disk's own (the one a download resumes with): every piece is hashed (v1
SHA-1, v2 merkle roots, hybrid both) on every core, with a progress bar. Nothing is written:
no file is created, resized or touched. The exit status is 0 only when every piece is good
and every file is there.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

import trio

from bip_disk import (
    CheckFinished,
    CheckProgress,
    FileStat,
    NativeFileSystem,
    StorageLayout,
    TorrentFailed,
    open_disk_manager,
)
from bip_metainfo import Metainfo

from ._arguments import add_torrent_and_directory
from ._describe import json_text, safe_text
from ._errors import CLIError
from ._humanize import format_size
from ._inputs import load_torrent
from ._progress import ProgressBar

__all__ = ["FileReport", "VerifyReport", "add_parser", "run", "verify"]

_MAX_RANGES_SHOWN = 20
"""Ranges of bad pieces listed in text output before "and N more" (JSON lists them all)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bip verify`` to the command line."""
    parser = subparsers.add_parser(
        "verify",
        help="check a torrent's data on disk",
        description=(
            "Hash a torrent's data in DIR (the directory holding the torrent's name, as"
            " for 'bip download --dir') and report which pieces and files are good."
            " Exits 0 only when everything is complete and good. Writes nothing."
        ),
    )
    add_torrent_and_directory(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class FileReport:
    """One file's verdict.

    Attributes:
        index: the file's index in the torrent.
        path: its relative path under DIR.
        length: its size in the torrent.
        size_on_disk: its size on disk, or None when it is missing.
        status: ``"complete"``, ``"incomplete"``, ``"missing"`` or ``"link"`` (BEP 47
            links carry no data and are not checked).
        pieces_good: of the pieces holding its bytes, how many are good.
        pieces_total: how many pieces hold its bytes.
    """

    index: int
    path: str
    length: int
    size_on_disk: int | None
    status: str
    pieces_good: int
    pieces_total: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a check found.

    Attributes:
        num_pieces: the torrent's pieces.
        good: the indices of good pieces.
        files: one report per file (pad files left out).
    """

    num_pieces: int
    good: frozenset[int]
    files: tuple[FileReport, ...]

    @property
    def complete(self) -> bool:
        """Every piece is good and every file is there."""
        return len(self.good) == self.num_pieces and all(
            file.status in ("complete", "link") for file in self.files
        )

    def bad_ranges(self) -> list[tuple[int, int]]:
        """Pieces not good, as inclusive ``(first, last)`` ranges."""
        ranges: list[tuple[int, int]] = []
        for piece in range(self.num_pieces):
            if piece in self.good:
                continue
            if ranges and ranges[-1][1] == piece - 1:
                ranges[-1] = (ranges[-1][0], piece)
            else:
                ranges.append((piece, piece))
        return ranges


async def verify(torrent: Metainfo, directory: str, bar: ProgressBar | None) -> VerifyReport:
    """Hash ``torrent``'s data under ``directory`` and say what is good.

    Raises:
        CLIError: the check failed (a read error other than a missing file).
        DiskError: bip_disk refused the torrent.
    """
    filesystem = NativeFileSystem(directory)
    try:
        async with open_disk_manager() as disk:
            # create_files=False: the check reads and leaves the directory as it found it.
            handle = await disk.add_torrent(torrent, filesystem, create_files=False)
            async for event in disk.events():
                if event.torrent != handle:
                    continue
                if isinstance(event, CheckProgress) and bar is not None:
                    bar.update(event.checked, total=event.total, fields=[("good", str(event.good))])
                elif isinstance(event, TorrentFailed):
                    raise CLIError(f"cannot check the data: {event.reason}")
                elif isinstance(event, CheckFinished):
                    break
            good = disk.have(handle)
            await disk.remove_torrent(handle)
        layout = StorageLayout.from_info(torrent.info)
        stats = await trio.to_thread.run_sync(
            lambda: [filesystem.stat(file.path) for file in layout.files]
        )
    finally:
        filesystem.close()
    return VerifyReport(torrent.info.num_pieces, good, tuple(_file_reports(torrent, good, stats)))


def _file_reports(
    torrent: Metainfo, good: frozenset[int], stats: list[FileStat | None]
) -> list[FileReport]:
    info = torrent.info
    reports = []
    for index, entry in enumerate(info.files):
        if entry.is_pad:
            continue
        pieces = info.geometry.file_pieces(index)
        have = sum(1 for piece in pieces if piece in good)
        stat = stats[index]
        if entry.is_symlink:
            status = "link"
        elif stat is None:
            status = "missing"
        elif have == len(pieces):
            status = "complete"
        else:
            status = "incomplete"
        reports.append(
            FileReport(
                index=index,
                path="/".join(entry.path),
                length=entry.length,
                size_on_disk=None if stat is None else stat.size,
                status=status,
                pieces_good=have,
                pieces_total=len(pieces),
            )
        )
    return reports


def run(args: argparse.Namespace) -> int:
    """Check, print the report; returns 0 when everything is good, else 1."""
    torrent = load_torrent(args.torrent)
    directory: str = args.directory
    if not os.path.isdir(directory):
        what = "not a directory" if os.path.exists(directory) else "no such directory"
        raise CLIError(f"{directory}: {what}")
    label = f"checking {torrent.info.name}"
    quiet = args.quiet or args.json
    bar = None if quiet else ProgressBar(label, torrent.info.num_pieces, sizes=False)
    if bar is not None:
        with bar:
            report = trio.run(verify, torrent, directory, bar)
    else:
        report = trio.run(verify, torrent, directory, None)
    if args.json:
        print(json_text(_json(torrent, report)))
    else:
        print(_text(torrent, report, directory))
    return 0 if report.complete else 1


def _json(torrent: Metainfo, report: VerifyReport) -> dict[str, Any]:
    hashes = torrent.info.info_hash
    return {
        "name": torrent.info.name,
        "info_hash": {
            "v1": None if hashes.v1 is None else hashes.v1.hex(),
            "v2": None if hashes.v2 is None else hashes.v2.hex(),
        },
        "complete": report.complete,
        "num_pieces": report.num_pieces,
        "pieces_good": len(report.good),
        "bad_pieces": [list(bounds) for bounds in report.bad_ranges()],
        "files": [
            {
                "index": file.index,
                "path": file.path,
                "length": file.length,
                "size_on_disk": file.size_on_disk,
                "status": file.status,
                "pieces_good": file.pieces_good,
                "pieces_total": file.pieces_total,
            }
            for file in report.files
        ],
    }


def _sizes_differing(on_disk: int, length: int) -> str:
    """``"1.50 MiB of 2.00 MiB"``, in exact bytes when rounding would show two equal sizes."""
    shown, expected = format_size(on_disk), format_size(length)
    if shown == expected:
        return f"{on_disk:,} of {length:,} bytes"
    return f"{shown} of {expected}"


def _text(torrent: Metainfo, report: VerifyReport, directory: str) -> str:
    rows = []
    for file in report.files:
        if file.status == "incomplete":
            detail = f"incomplete  {file.pieces_good}/{file.pieces_total} pieces good"
            if file.size_on_disk is not None and file.size_on_disk < file.length:
                detail += ", " + _sizes_differing(file.size_on_disk, file.length)
        else:
            detail = file.status
        rows.append((safe_text(file.path), detail))
    width = max((len(path) for path, _ in rows), default=0)
    lines = [f"{path:<{width}}  {detail}" for path, detail in rows]
    good, total = len(report.good), report.num_pieces
    percent = 100.0 * good / total if total else 100.0
    missing = sum(1 for file in report.files if file.status == "missing")
    if report.complete:
        lines.append(f"{good}/{total} pieces good (100%): every file is complete")
    else:
        ranges = report.bad_ranges()
        shown = ", ".join(
            str(first) if first == last else f"{first}-{last}"
            for first, last in ranges[:_MAX_RANGES_SHOWN]
        )
        if len(ranges) > _MAX_RANGES_SHOWN:
            shown += f", and {len(ranges) - _MAX_RANGES_SHOWN} more ranges"
        lines.append(f"{good}/{total} pieces good ({percent:.1f}%)")
        if ranges:
            lines.append(f"missing or bad pieces: {shown}")
        if missing:
            lines.append(f"{missing} of {len(report.files)} files missing")
        if missing == len(report.files):
            lines.append(_hint(torrent, directory))
    return "\n".join(lines)


def _hint(torrent: Metainfo, directory: str) -> str:
    """Nothing found: say which directory DIR should be."""
    name = torrent.info.name
    inside = os.path.basename(os.path.normpath(os.path.abspath(directory)))
    hint = f"hint: no file of the torrent is in {directory!r}; DIR holds {name!r}"
    if inside == name:
        hint += f" (try {os.path.dirname(os.path.normpath(os.path.abspath(directory)))!r})"
    return hint
