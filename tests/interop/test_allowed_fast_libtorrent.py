"""libtorrent 2.1 takes its BEP 6 allowed-fast pieces from a bip seed that chokes it.

The bip seed runs in this process with its brains given no unchoke slots, so libtorrent is
choked for good: every block it gets is one of the pieces bip granted it (the first
``allowed_fast_set_size`` of its BEP 6 set, computed from 127.0.0.1), requested while choked,
and nothing else.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest
import trio

import bip._client._swarm
import bip_select._brain
from bip._client import ClientConfig, TorrentOptions, open_session
from bip_metainfo import create_torrent
from bip_peer import Peer, allowed_fast_set
from bip_select import Choker

from ._helpers import StartProcess
from ._seeders import HOST, SmallTorrent, run_lt_peer

pytestmark = pytest.mark.interop

PIECE = 16384
NUM_PIECES = 40
GRANTED = 5  # libtorrent's default allowed_fast_set_size, and bip's
DEADLINE = 20.0


async def test_libtorrent_requests_its_allowed_fast_pieces_while_choked(
    start_process: StartProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        bip_select._brain, "Choker", functools.partial(Choker, regular_slots=0, optimistic_slots=0)
    )
    requested: list[int] = []  # the pieces requested of us while we choke the peer
    original = bip._client._swarm.Swarm.fast_request

    def recording(self: bip._client._swarm.Swarm, peer: Peer, piece: int) -> bool:
        requested.append(piece)
        return original(self, peer, piece)

    monkeypatch.setattr(bip._client._swarm.Swarm, "fast_request", recording)
    content = tmp_path / "content"
    folder = content / "payload"
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(random.Random(5).randbytes(NUM_PIECES * PIECE))
    metainfo = create_torrent(
        folder, version="v1", piece_length=PIECE, creation_date=None, created_by=None
    )
    torrent_path = tmp_path / "payload.torrent"
    torrent_path.write_bytes(metainfo.to_bytes())
    torrent = SmallTorrent(torrent_path, content, metainfo.info.info_hash)
    assert torrent.info_hash.v1 is not None
    expected = allowed_fast_set(HOST, torrent.info_hash.v1, NUM_PIECES, GRANTED)
    config = ClientConfig(
        listen=((HOST, 0),), trackers=False, utp=False, natpmp_announce_address=None
    )
    with trio.fail_after(DEADLINE):
        async with open_session(config) as seeder:
            seeding = await seeder.add_torrent(metainfo, TorrentOptions(content))
            await seeding.wait_complete()
            [address] = seeder.handshaker.listen_addresses
            save = tmp_path / "lt-download"
            save.mkdir()
            await trio.to_thread.run_sync(
                functools.partial(
                    run_lt_peer,
                    start_process,
                    tmp_path,
                    torrent_path,
                    save,
                    peer=(HOST, address.port),
                    lifetime=DEADLINE + 30,
                    name="libtorrent-downloader",
                )
            )
            # Every block of every granted piece, requested while choked (one block a piece).
            while sorted(set(requested)) != sorted(expected):
                assert set(requested) <= set(expected), requested
                await trio.sleep(0.05)
            while seeding.status().uploaded < GRANTED * PIECE:
                await trio.sleep(0.05)
            assert set(requested) == set(expected)
            assert seeding.status().uploaded == GRANTED * PIECE
