"""The session and BEP 5's PORT message (s13 DHT hunt): one peer's PORT messages are one node
to ping, not one each; ours goes out after the torrent's BITFIELD / HAVE_ALL (BEP 3: those
only as the first message)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, write_content
from _hostile_peer import hostile_peer

from bip._client import Session, TorrentOptions, open_session
from bip_dht import DHT, open_dht
from bip_handshake import Extensions, PeerAddress
from bip_metainfo import InfoHash
from bip_peer import Bitfield, HaveAll, Port, RejectRequest, Request

ATTACKER_HOST = "127.0.0.9"


@dataclass
class Seeding:
    session: Session
    dht: DHT
    address: PeerAddress
    info_hash: InfoHash


@asynccontextmanager
async def seeding(tmp_path: Path) -> AsyncIterator[Seeding]:
    """A session with a DHT, seeding one public torrent."""
    folder = write_content(tmp_path / "seed", [100_000])
    torrent = make_torrent(folder, "v1")
    async with (
        open_dht("127.0.0.1:0", rng=random.Random(3)) as dht,
        open_session(loopback_config(), dht=dht) as session,
    ):
        handle = await session.add_torrent(torrent, TorrentOptions(folder.parent))
        await handle.wait_complete()
        [address] = session.handshaker.listen_addresses
        yield Seeding(session, dht, address, handle.info_hash)


async def test_one_port_message_per_connection_reaches_the_dht(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(20):
        async with seeding(tmp_path) as where:
            learned: list[PeerAddress] = []
            monkeypatch.setattr(where.dht, "add_node", learned.append)
            async with hostile_peer(
                where.address, where.info_hash, local_host=ATTACKER_HOST
            ) as peer:
                # Each a node to ping before: 1300 of them took every DHT transaction slot.
                await peer.send(*(Port(7000 + i) for i in range(1300)))
                # Never interested, so choked: the request is rejected (BEP 6), and its
                # rejection comes after every PORT before it was routed.
                await peer.send(Request(0, 0, 16384))
                await peer.wait_for(lambda m: isinstance(m, RejectRequest))
    assert learned == [PeerAddress.parse(f"{ATTACKER_HOST}:7000")]


@pytest.mark.parametrize(
    ("extensions", "availability"),
    [
        (Extensions.DHT, Bitfield),
        (Extensions.DHT | Extensions.FAST, HaveAll),
    ],
)
async def test_our_port_follows_the_availability_message(
    tmp_path: Path, extensions: Extensions, availability: type
) -> None:
    with trio.fail_after(20):
        async with (
            seeding(tmp_path) as where,
            hostile_peer(
                where.address,
                where.info_hash,
                local_host=ATTACKER_HOST,
                extensions=extensions,
                extended_handshake=None,
            ) as peer,
        ):
            await peer.wait_for(lambda m: isinstance(m, Port))
    kinds = [type(m) for m in peer.received if isinstance(m, Bitfield | HaveAll | Port)]
    assert kinds[:2] == [availability, Port]
    assert type(peer.received[0]) is availability  # BEP 3: the first message
