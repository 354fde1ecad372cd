"""A download killed with SIGKILL (or stopped by Ctrl-C) resumes and finishes without fetching
a verified piece again.

The first run is a real ``bip download`` process. Its seeder (in this process) holds only the
first half of the pieces, so the download stops there, deterministically; it is then killed
with SIGKILL, either at once or once it saved resume data, or interrupted with SIGINT. The
second run, in this process against a seeder of everything, must receive exactly the bytes of
the missing half: a piece fetched again would show up in its payload count (one seeder: no
end-game duplicates).
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    address_of,
    good_pieces,
    loopback_config,
    make_torrent,
    same_files,
    spoil_pieces,
    write_content,
)

from bip._client import RESUME_DIRECTORY, TorrentOptions, open_session

SIZES = (200_000, 150_000, 33, 400_000)  # 24 pieces of 32 KiB across four files
DEADLINE = 60.0


@pytest.mark.parametrize(
    ("stop", "wait_for_resume_data"),
    [
        (signal.SIGKILL, False),
        (signal.SIGKILL, True),
        (signal.SIGINT, False),
        (signal.SIGTERM, False),
    ],
    ids=["sigkill-at-once", "sigkill-after-save", "ctrl-c", "sigterm"],
)
async def test_resume_after_interruption(
    tmp_path: Path, stop: signal.Signals, wait_for_resume_data: bool
) -> None:
    folder = write_content(tmp_path / "full", SIZES)
    torrent = make_torrent(folder, "v1")
    torrent_path = tmp_path / "album.torrent"
    torrent_path.write_bytes(torrent.to_bytes())
    info = torrent.info
    first_half = frozenset(range(info.num_pieces // 2))
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial / "album")
    spoil_pieces(info, partial, range(len(first_half), info.num_pieces))
    down = tmp_path / "down"
    resume_dir = down / RESUME_DIRECTORY

    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as seeder:
            seeding = await seeder.add_torrent(torrent, TorrentOptions(partial, files=frozenset()))
            await seeding.wait_complete()
            assert seeding.status().pieces == len(first_half)
            argv = [sys.executable, "-m", "bip", "download", str(torrent_path), "--dir", str(down)]
            argv += ["--bind", "127.0.0.1", "--port", "0", "--no-trackers", "-q"]
            argv += ["--peer", str(address_of(seeder))]
            process = await trio.lowlevel.open_process(argv)
            try:
                while good_pieces(info, down) != first_half or (
                    wait_for_resume_data and not any(resume_dir.glob("*.resume"))
                ):
                    assert process.returncode is None, "bip download ended by itself"
                    await trio.sleep(0.05)
            finally:
                process.send_signal(stop)
                await process.wait()
            # Ctrl-C and SIGTERM: a clean exit, 128 + the signal as shells report it, with the
            # resume data saved.
            if stop == signal.SIGKILL:
                assert process.returncode == -signal.SIGKILL
            else:
                assert process.returncode == 128 + stop
                assert any(resume_dir.glob("*.resume"))

        async with (
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            seeding = await seeder.add_torrent(
                torrent, TorrentOptions(folder.parent, files=frozenset())
            )
            await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(down, peers=(address_of(seeder),))
            )
            await download.wait_complete()
            status = download.status()

    missing = sum(info.piece_size(piece) for piece in range(len(first_half), info.num_pieces))
    assert status.downloaded == missing, "a verified piece was fetched again"
    assert status.bad_pieces == 0
    assert same_files(folder, down / "album")
