"""Local Service Discovery (BEP 14) in the session: what is announced while a torrent runs,
pauses, resumes and goes; a magnet that turns out private (BEP 27); the port each family's
announces carry.

The "group" is a UDP socket on 127.0.0.1 standing in for the multicast group (tests never
multicast): it keeps what the session sends and plays a LAN host sending it announces.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import trio
from _engine_helpers import address_of, loopback_config, make_torrent, until, write_content
from _hostile_peer import ATTACKER_IDS, HostilePeer, hostile_peer

from bip._client import TorrentOptions, open_session
from bip._client._lsd import announced_ports, open_session_lsd
from bip_handshake import (
    LocalServiceDiscovery,
    LsdAnnounce,
    PeerAddress,
    PeerOrigin,
    decode_lsd_announce,
)
from bip_metainfo import InfoHash, MagnetLink, create_torrent
from bip_peer import (
    Extended,
    ExtendedHandshake,
    MetadataData,
    MetadataRequest,
    decode_metadata_message,
)

LOOPBACK = "127.0.0.1"
DEADLINE = 20.0
H1 = bytes(range(20))


class Group:
    """The LSD group's stand-in: keeps every datagram the session sends it, and sends the
    session's LSD announces from 127.0.0.1 as a host on the local network would. Every
    datagram also goes to the LSD ports in ``members`` (the sender's too, as the multicast
    loopback does: its cookie drops it)."""

    def __init__(self) -> None:
        self.heard: list[bytes] = []
        self.members: list[int] = []
        self._sock: trio.socket.SocketType | None = None

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind((LOOPBACK, 0))
            self._sock = sock
            task_status.started(f"{LOOPBACK}:{sock.getsockname()[1]}")
            while True:
                data, _ = await sock.recvfrom(4096)
                self.heard.append(data)
                for port in self.members:
                    await sock.sendto(data, (LOOPBACK, port))

    def hashes_heard(self) -> set[bytes]:
        """Every info-hash the messages heard so far name."""
        return {h for data in self.heard for h in decode_lsd_announce(data).info_hashes}

    async def tell(self, lsd: LocalServiceDiscovery, info_hash: bytes, port: int) -> None:
        """Announce ``info_hash`` to ``lsd``: a peer on 127.0.0.1 listening on ``port``."""
        assert self._sock is not None
        message = LsdAnnounce(port, (info_hash,), cookie="lan-host").encode()
        await self._sock.sendto(message, (LOOPBACK, lsd.local_address.port))


async def test_withdrawn_on_pause_announced_on_resume_withdrawn_on_remove(
    tmp_path: Path,
) -> None:
    folder = write_content(tmp_path / "seed", (40_000,))
    torrent = make_torrent(folder, "hybrid")
    info_hash = torrent.info.info_hash
    group = Group()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            config = loopback_config(lsd=True, lsd_group=await nursery.start(group.serve))
            async with open_session(config) as session:
                [lsd] = session.lsd
                running = await session.add_torrent(torrent, TorrentOptions(folder.parent))
                await until(lambda: lsd.is_announced(info_hash))
                assert lsd.statistics().announced == 2  # both swarms of the hybrid
                # Both swarms at once: the second need not wait for BEP 14's minute.
                swarms = set(info_hash.swarm_ids())
                await until(lambda: group.hashes_heard() == swarms)
                running.pause()
                await until(lambda: lsd.statistics().announced == 0)
                running.resume()
                await until(lambda: lsd.is_announced(info_hash))
                await session.remove_torrent(running)
                await until(lambda: lsd.statistics().announced == 0)
            nursery.cancel_scope.cancel()


def _metadata_requests(peer: HostilePeer) -> list[MetadataRequest]:
    found = []
    for message in peer.received:
        if isinstance(message, Extended) and message.extended_id == ATTACKER_IDS["ut_metadata"]:
            decoded = decode_metadata_message(message.payload)
            if isinstance(decoded, MetadataRequest):
                found.append(decoded)
    return found


def _asked_more(peer: HostilePeer, answered: int) -> bool:
    return len(_metadata_requests(peer)) > answered


async def _give_metadata(peer: HostilePeer, raw: bytes) -> None:
    """Answer the session's ut_metadata requests with ``raw`` (one piece) until cancelled:
    a peer that fetched the private torrent as a magnet itself and serves it on (as
    libtorrent does; a bip session serves no private torrent's metadata)."""
    answered = 0
    while True:
        await peer.wait_until(functools.partial(_asked_more, peer, answered))
        their_id = peer.extension_id("ut_metadata")
        assert their_id is not None
        for request in _metadata_requests(peer)[answered:]:
            await peer.send(MetadataData(request.piece, len(raw), raw).to_extended(their_id))
            answered += 1


async def test_a_magnet_that_turns_out_private_is_withdrawn_and_its_lsd_peers_dropped(
    tmp_path: Path,
) -> None:
    folder = write_content(tmp_path / "seed", (40_000,))
    private = create_torrent(folder, version="v1", private=True, creation_date=None)
    v1 = private.info.info_hash.v1
    assert v1 is not None
    group = Group()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            config = loopback_config(lsd=True, lsd_group=await nursery.start(group.serve))
            async with open_session(loopback_config()) as seeder, open_session(config) as leecher:
                await (
                    await seeder.add_torrent(private, TorrentOptions(folder.parent))
                ).wait_complete()
                [lsd] = leecher.lsd
                magnet = await leecher.add_torrent(
                    MagnetLink(InfoHash(v1=v1)), TorrentOptions(tmp_path / "leech")
                )
                # Its metadata unknown, nothing says it is private: it is announced.
                await until(lambda: lsd.is_announced(v1))
                # The seeder is heard on the local network and dialled (it serves no
                # private torrent's metadata); another peer gives the metadata.
                await group.tell(lsd, v1, address_of(seeder).port)
                raw = private.info.to_bytes()
                assert len(raw) <= 16384
                handshake = ExtendedHandshake(m=ATTACKER_IDS, metadata_size=len(raw))
                async with (
                    hostile_peer(
                        address_of(leecher), InfoHash(v1=v1), extended_handshake=handshake
                    ) as giver,
                    trio.open_nursery() as giving,
                ):
                    giving.start_soon(_give_metadata, giver, raw)
                    await until(lambda: magnet.info is not None)
                    giving.cancel_scope.cancel()
                assert magnet.private
                peers = leecher.peer_list(magnet)
                assert peers is not None
                entry = peers.entry(address_of(seeder))
                assert entry is not None
                assert PeerOrigin.LSD in entry.origin
                # Private: withdrawn within a few seconds (BEP 27).
                await until(lambda: not lsd.is_announced(v1))
                # Heard meanwhile (as in the moment before the withdrawal): dropped.
                lsd.announce(v1)
                late = PeerAddress.parse(f"{LOOPBACK}:9")
                await group.tell(lsd, v1, late.port)
                await until(lambda: lsd.statistics().peers_found == 2)
                await trio.sleep(0.05)
                assert peers.entry(late) is None
            nursery.cancel_scope.cancel()


def test_each_family_announces_its_own_listener_s_port() -> None:
    # trio's IPv6 listeners are IPV6_V6ONLY: ``::`` serves no IPv4 peer.
    wildcard_first = [PeerAddress.parse("[::]:6882"), PeerAddress.parse("0.0.0.0:6881")]
    assert announced_ports(wildcard_first) == {6: 6882, 4: 6881}
    assert announced_ports([PeerAddress.parse("[::]:6882")]) == {6: 6882}
    mapped = PeerAddress.parse("[::ffff:10.0.0.1]:7000")
    assert announced_ports([PeerAddress.parse("0.0.0.0:0"), mapped]) == {4: 7000}
    assert announced_ports([]) == {}


async def test_the_ipv4_group_hears_the_ipv4_listener_s_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    group = Group()
    caplog.set_level(logging.INFO, logger="bip.client")
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            config = loopback_config(
                lsd=True,
                lsd_group=await nursery.start(group.serve),
                listen=(("::", 6882), ("0.0.0.0", 6881)),
            )
            # The listeners as the handshaker reports them (nothing is bound here).
            listening = [PeerAddress.parse("[::]:6882"), PeerAddress.parse("0.0.0.0:6881")]
            async with open_session_lsd(config, listening, lambda h, p: None) as running:
                [lsd] = running  # IPv4 only: the group given is a test's
                lsd.announce(H1)
                await until(lambda: bool(group.heard))
                assert decode_lsd_announce(group.heard[0]).port == 6881
            # ``::`` alone: no IPv4 listener, so no IPv4 announce at all.
            async with open_session_lsd(config, listening[:1], lambda h, p: None) as running:
                assert running == ()
            assert "we do not listen on IPv4" in caplog.text
            nursery.cancel_scope.cancel()


async def test_two_sessions_on_one_lan_find_each_other_at_once(tmp_path: Path) -> None:
    """The leecher announces another torrent first, then the one the seeder has: that
    first announce goes at once, not a minute later, and the seeder, hearing it, dials."""
    folder = write_content(tmp_path / "seed", (40_000,))
    shared = make_torrent(folder, "v1")
    own_folder = write_content(tmp_path / "own", (1_000,), seed=2)
    own = make_torrent(own_folder, "v1")
    group = Group()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            config = loopback_config(lsd=True, lsd_group=await nursery.start(group.serve))
            async with open_session(config) as seeder, open_session(config) as leecher:
                group.members.extend(
                    session.lsd[0].local_address.port for session in (seeder, leecher)
                )
                seeding = await seeder.add_torrent(shared, TorrentOptions(folder.parent))
                await seeding.wait_complete()
                await leecher.add_torrent(own, TorrentOptions(own_folder.parent))
                own_v1 = own.info.info_hash.v1
                await until(lambda: own_v1 in group.hashes_heard())  # its minute begins
                start = trio.current_time()
                download = await leecher.add_torrent(shared, TorrentOptions(tmp_path / "leech"))
                await download.wait_complete()
                assert trio.current_time() - start < 10.0  # well within BEP 14's minute
                peers = seeder.peer_list(seeding)
                assert peers is not None
                entry = peers.entry(address_of(leecher))
                assert entry is not None
                assert PeerOrigin.LSD in entry.origin
            nursery.cancel_scope.cancel()
