"""A client killed with SIGKILL in the middle of a download loses nothing.

A child process downloads a torrent through a DiskManager onto a NativeFileSystem,
prints every piece reported good and saves resume data every few pieces (as a
real client would: atomically, by renaming). The test kills it with SIGKILL while it
is still writing, then starts again from the last resume data: every piece reported
good before the kill is still good, the pieces the resume data could not vouch for
were hashed again, nothing had is wrong, and the download then completes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import trio

from bip_disk._events import CheckFinished, DiskEvent, PieceVerified
from bip_disk._manager import open_disk_manager
from bip_disk._native import NativeFileSystem
from bip_disk._resume import ResumeData
from bip_metainfo import Metainfo, create_torrent

PIECE = 32 * 1024
SIZES = (9 * 1024 * 1024 + 1234, 7 * 1024 * 1024 + 99)  # two files, ~16 MiB, 512 pieces
KILL_AFTER = 120  # pieces reported good

CHILD = r"""
import os, random, sys
from pathlib import Path
import trio
from bip_metainfo import Metainfo
from bip_disk._events import PieceVerified
from bip_disk._manager import open_disk_manager
from bip_disk._native import NativeFileSystem

torrent, root, resume_path, space_path = sys.argv[1:5]

async def main():
    metainfo = Metainfo.from_file(torrent)
    info = metainfo.info
    space = Path(space_path).read_bytes()
    fs = NativeFileSystem(root)
    # A small bound and event queue, so writing goes at the pace of the reports (as
    # it would at a network's pace) and the kill lands in the middle of it.
    async with open_disk_manager(max_in_flight_bytes=1024 * 1024, event_buffer=4) as disk:
        handle = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(handle)
        order = list(range(info.num_pieces))
        random.Random(5).shuffle(order)

        async def report():
            count = 0
            async for event in disk.events():
                if isinstance(event, PieceVerified) and event.good:
                    print("good", event.piece, flush=True)
                    count += 1
                    if count % 16 == 0:
                        data = await disk.save_resume_data(handle)
                        Path(resume_path + ".tmp").write_bytes(data)
                        os.replace(resume_path + ".tmp", resume_path)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(report)
            for piece in order:
                start = piece * info.piece_length
                data = space[start : start + info.piece_size(piece)]
                for begin in range(0, len(data), 16384):
                    await disk.write_block(handle, piece, begin, data[begin : begin + 16384])
            print("all written", flush=True)
            await trio.sleep_forever()

trio.run(main)
"""


def _make(tmp_path: Path) -> tuple[Metainfo, bytes]:
    source = tmp_path / "source" / "payload"
    source.mkdir(parents=True)
    rng = random.Random(11)
    contents = [rng.randbytes(size) for size in SIZES]
    for index, data in enumerate(contents):
        (source / f"part{index}.bin").write_bytes(data)
    metainfo = create_torrent(
        source, version="hybrid", piece_length=PIECE, creation_date=None, created_by=None
    )
    pad = bytes(-len(contents[0]) % PIECE)  # the hybrid torrent's pad file
    return metainfo, contents[0] + pad + contents[1]


def _run_and_kill(tmp_path: Path, metainfo: Metainfo, space: bytes) -> list[int]:
    """Start the child, kill it mid-download, return the pieces it reported good."""
    torrent = tmp_path / "payload.torrent"
    torrent.write_bytes(metainfo.to_bytes())
    space_path = tmp_path / "space.bin"
    space_path.write_bytes(space)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(torrent),
            str(tmp_path / "storage"),
            str(tmp_path / "resume.dat"),
            str(space_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported: list[int] = []
    try:
        for line in child.stdout:
            if not line.startswith("good "):
                continue  # "all written": some pieces are still being hashed and stored
            reported.append(int(line.split()[1]))
            if len(reported) == KILL_AFTER:
                os.kill(child.pid, signal.SIGKILL)
                break
        # Lines the child printed before it died are reports made before the kill too.
        reported.extend(int(line.split()[1]) for line in child.stdout if line.startswith("good "))
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return reported


async def test_sigkill_mid_download_then_resume_loses_nothing(tmp_path: Path) -> None:
    metainfo, space = _make(tmp_path)
    info = metainfo.info
    count = info.num_pieces
    reported = _run_and_kill(tmp_path, metainfo, space)
    assert KILL_AFTER <= len(reported) < count, "killed in the middle of writing"
    resume_raw = (tmp_path / "resume.dat").read_bytes()
    resume = ResumeData.from_bytes(resume_raw)
    # Resume data lists pieces verified and written (some perhaps not yet reported).
    assert resume.have
    fs = NativeFileSystem(tmp_path / "storage")
    events: list[DiskEvent] = []
    try:
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fs, resume_data=resume_raw)
            with trio.fail_after(60):
                async for event in disk.events():
                    events.append(event)
                    if isinstance(event, CheckFinished):
                        break
            finished = events[-1]
            assert isinstance(finished, CheckFinished)
            assert finished.resumed
            have = disk.have(torrent)
            # Every piece reported good before the kill is still good...
            assert set(reported) <= have
            assert resume.have <= have
            # ...the pieces written after the last resume data were hashed again...
            assert finished.checked > 0
            # ...and everything had really is right.
            for piece in have:
                start = piece * info.piece_length
                expected = space[start : start + info.piece_size(piece)]
                assert await disk.read_block(torrent, piece, 0, len(expected)) == expected
            # Nothing is lost: the rest downloads and the files are whole.
            for piece in sorted(set(range(count)) - have):
                start = piece * info.piece_length
                data = space[start : start + info.piece_size(piece)]
                for begin in range(0, len(data), 16384):
                    await disk.write_block(torrent, piece, begin, data[begin : begin + 16384])
            missing = count - len(have)
            verdicts: list[bool] = []
            with trio.fail_after(60):
                async for event in disk.events():
                    if isinstance(event, PieceVerified):
                        verdicts.append(event.good)
                        if len(verdicts) == missing:
                            break
            assert verdicts == [True] * missing
            assert disk.have(torrent) == frozenset(range(count))
    finally:
        fs.close()
    stored = tmp_path / "storage" / "payload"
    first = space[: SIZES[0]]
    second = space[-SIZES[1] :]
    assert (stored / "part0.bin").read_bytes() == first
    assert (stored / "part1.bin").read_bytes() == second
