"""A peer that sends the last block of a bad piece and hangs up before the hash verdict is
banned all the same, by host: the brain judges a departed source (its trust is kept per host,
beyond the connection) and the session refuses that host from then on.

The verdict is held back for certain: the disk hashes on one thread (patched), which the
liar's own good piece, sent first, keeps busy in its write (gated) until the liar is gone.
"""

from __future__ import annotations

import threading
from ipaddress import ip_address
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, until, write_content
from _hostile_peer import hostile_peer

import bip_disk._manager as disk_manager
from bip._client import TorrentOptions, open_session
from bip._client._swarm import brain_queueing, trust_identity
from bip._client._webseed import WebSeed
from bip._client._webseed_http import WebSeedClient
from bip._client._webseed_layout import web_seed_layout
from bip_disk import MemoryFileSystem
from bip_disk._filesystem import Buffer
from bip_handshake import PeerAddress
from bip_metainfo import create_torrent
from bip_peer import HaveAll, Message, Piece, Request, Unchoke
from bip_select import Block, Input

SIZES = (100_000,)
PIECE_LENGTH = 16384  # one block a piece: one answer sends a whole piece
DEADLINE = 10.0
LEECH_HOST = "127.0.0.4"
ATTACKER_HOST = "127.0.0.5"


class GatedFileSystem(MemoryFileSystem):
    """A memory filesystem whose first write waits until :attr:`release` is set (bounded)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, path: str, offset: int, data: Buffer) -> None:
        """Write, the first time only once released (the hash thread waits meanwhile)."""
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(DEADLINE)  # bounded: a failing test still ends
        super().write(path, offset, data)


def is_request(message: Message) -> bool:
    """Whether ``message`` is a block request."""
    return isinstance(message, Request)


async def test_a_liar_that_hangs_up_before_the_verdict_is_banned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk_manager, "default_hash_threads", lambda: 1)
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1", piece_length=PIECE_LENGTH)
    content = b"".join(
        folder.parent.joinpath(*entry.path).read_bytes() for entry in torrent.info.files
    )
    fs = GatedFileSystem()
    liar_host = PeerAddress(ip_address(ATTACKER_HOST), 1)  # any port of it
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config(listen=((LEECH_HOST, 0),))) as leecher:
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", resume=False, storage=lambda _: fs)
            )
            [address] = leecher.handshaker.listen_addresses
            try:
                async with hostile_peer(
                    address, download.info_hash, local_host=ATTACKER_HOST
                ) as liar:
                    await liar.send(HaveAll(), Unchoke())
                    await liar.wait_until(lambda: sum(map(is_request, liar.received)) >= 2)
                    good, bad = [m for m in liar.received if isinstance(m, Request)][:2]
                    [peer] = leecher.manager.peers
                    start = good.index * PIECE_LENGTH + good.begin
                    data = content[start : start + good.length]
                    await liar.send(Piece(good.index, good.begin, data))
                    await until(fs.entered.is_set)  # the one hash thread waits in the write
                    await liar.send(Piece(bad.index, bad.begin, bytes(bad.length)))
                    await liar._stream.send_eof()  # hangs up right after its bad piece
                    await until(lambda: not leecher.manager.peers)
                # No verdict yet: the liar is gone first.
                assert not download.refuses(liar_host)
            finally:
                fs.release.set()  # a failing test must not leave the hash thread waiting
            await until(lambda: download.refuses(liar_host))
            swarm = download.swarm
            assert swarm is not None
            assert swarm.brain.is_banned(peer)
            # Its trust was kept per host: one bad piece (-2). Its good piece earned nothing:
            # judged after it left, when which connection of the host sent it no longer tells.
            assert trust_identity(peer) == ip_address(ATTACKER_HOST)
            assert swarm.brain.queues.trust(peer) == -2
            assert swarm.brain.queues.hash_failures(peer) == 1
            assert download.status().bad_pieces == 1


def test_a_web_seeds_trust_is_kept_by_url(tmp_path: Path) -> None:
    # A restart makes a new WebSeed for the same URL: its trust carries over, and the old
    # object is no separate identity left behind among the departed.
    info = create_torrent(
        write_content(tmp_path / "seed", (20_000,)), piece_length=16384, creation_date=None
    ).info

    def feed(_seed: WebSeed, event: Input) -> None:
        """Nothing to feed: the seeds are never run."""

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    def seed(url: str) -> WebSeed:
        return WebSeed(
            web_seed_layout(url, info),
            WebSeedClient(),
            deliver=deliver,
            feed=feed,
            piece_length=info.piece_length,
        )

    first, again, other = seed("http://h/"), seed("http://h/"), seed("http://g/")
    assert trust_identity(first) == trust_identity(again) == ("web seed", "http://h/")
    assert trust_identity(other) != trust_identity(first)
    queues = brain_queueing()
    queues.add_peer(first, 0.0)
    queues.add_peer(other, 0.0)
    assert queues.piece_failed([first, other]) == []
    queues.remove_peer(first)
    queues.add_peer(again, 1.0)
    assert queues.trust(again) == -2
    assert queues.on_parole(again)
