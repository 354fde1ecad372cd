"""A peer that sends bad data: every piece it gave fails its hash check, is fetched again, and
the peer is banned (by address) once the brain has seen enough; an honest peer then completes
the download.

The liar is our own engine serving from a MemoryFileSystem whose bytes are overwritten with
garbage after its check said they were good. Each client has its own 127.0.0.X, since bans are
by host.
"""

from __future__ import annotations

import random
from pathlib import Path

import trio
from _engine_helpers import loopback_config, make_torrent, same_files, write_content

from bip._client import TorrentOptions, open_session
from bip_disk import MemoryFileSystem
from bip_handshake import PeerAddress

SIZES = (400_000, 250_000)
DEADLINE = 60.0


async def test_liar_banned_honest_peer_completes(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    memory = MemoryFileSystem()
    for entry in torrent.info.files:
        memory.write("/".join(entry.path), 0, folder.parent.joinpath(*entry.path).read_bytes())
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config(listen=(("127.0.0.2", 0),))) as liar,
            open_session(loopback_config(listen=(("127.0.0.3", 0),))) as honest,
            open_session(loopback_config(listen=(("127.0.0.4", 0),))) as leecher,
        ):
            lying = await liar.add_torrent(
                torrent,
                TorrentOptions(
                    tmp_path / "liar", files=frozenset(), resume=False, storage=lambda _: memory
                ),
            )
            await lying.wait_complete()
            garbage = random.Random(5)
            for entry in torrent.info.files:
                memory.write("/".join(entry.path), 0, garbage.randbytes(entry.length))
            [liar_address] = liar.handshaker.listen_addresses
            [honest_address] = honest.handshaker.listen_addresses
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(tmp_path / "down", peers=(liar_address, honest_address)),
            )
            while not download.refuses(liar_address):
                await trio.sleep(0.05)
            assert download.status().pieces == 0
            # Only now is there someone honest to get the pieces from.
            seeding = await honest.add_torrent(
                torrent, TorrentOptions(folder.parent, files=frozenset())
            )
            await download.wait_complete()
            status = download.status()
            assert download.refuses(PeerAddress(liar_address.host, 1))  # any port of it
            assert not download.refuses(honest_address)
            assert seeding.status().uploaded >= torrent.info.total_size
    assert status.bad_pieces >= 1
    assert same_files(folder, tmp_path / "down" / "album")
