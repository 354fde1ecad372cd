"""Mends in the discovery extensions: ut_holepunch's err_code on every message (BEP 55), PEX
stopped for a magnet found private (BEP 27), no metadata served for a private torrent, and
libtorrent's ``is_local`` instead of ipaddress' ``is_private``."""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from types import SimpleNamespace
from typing import Any

import _managers
import pytest
import trio
import trio.testing
from _managers import node

from bip_bencode import encode
from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_peer._exchange import MetadataExchange, MetadataFetchError, PeerExchange
from bip_peer._extended import (
    HolepunchMessage,
    MetadataRequest,
    PexMessage,
    decode_holepunch_message,
)
from bip_peer._holepunch import HolepunchService
from bip_peer._manager import Peer, PeerManager, PeerService
from bip_peer._metadata import MetadataServer
from bip_peer._pex import PexInbox, _is_local


def addr(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), port)


def make_info(private: object = None) -> bytes:
    fields: dict[bytes, Any] = {
        b"length": 1,
        b"name": b"x",
        b"piece length": 16384,
        b"pieces": random.Random(0).randbytes(20),
    }
    if private is not None:
        fields[b"private"] = private
    return encode(fields)


PUBLIC_INFO = make_info()
PRIVATE_INFO = make_info(1)
IH = InfoHash.from_info_bytes(PUBLIC_INFO, v1=True)
PRIVATE_IH = InfoHash.from_info_bytes(PRIVATE_INFO, v1=True)
TEREDO = PeerAddress(IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2"), 6881)

connect = functools.partial(_managers.connect, info_hash=IH)


async def _node(
    address: PeerAddress,
    services: list[PeerService],
    *,
    task_status: trio.TaskStatus[_managers.Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery, node(nursery, address, services) as result:
        task_status.started(result)
        await trio.sleep_forever()


# ------------------------------------------------------------------ ut_holepunch err_code


@pytest.mark.parametrize(
    ("message", "size"),
    [
        (HolepunchMessage.rendezvous(addr(1)), 12),
        (HolepunchMessage.connect(addr(1)), 12),
        (HolepunchMessage.rendezvous(PeerAddress.parse("[2001:db8::1]:6881")), 24),
        (HolepunchMessage.connect(PeerAddress.parse("[2001:db8::1]:6881")), 24),
    ],
)
def test_every_holepunch_message_carries_its_err_code(message: HolepunchMessage, size: int) -> None:
    # anacrolix/torrent refuses a message under 12 (IPv6: 24) bytes and drops the peer.
    payload = message.encode_payload()
    assert len(payload) == size
    assert payload[-4:] == bytes(4)
    assert decode_holepunch_message(payload) == message
    # libtorrent's form, without err_code outside errors, is still read.
    assert decode_holepunch_message(payload[:-4]) == message
    # A rendezvous' or connect's err_code is not looked at.
    assert decode_holepunch_message(payload[:-4] + b"\x00\x00\x00\x07") == message


# ------------------------------------------------------------- PEX of a magnet found private


class RecordingSink:
    def __init__(self) -> None:
        self.addresses: list[PeerAddress] = []

    def discovered(self, info_hash: object, addresses: Any, source: str) -> None:
        self.addresses.extend(addresses)


class FakePeer:
    """What the PEX hooks read of a peer that dialled us, before its extended handshake
    (hashed by identity, as a Peer is)."""

    def __init__(self, info_hash: InfoHash, address: PeerAddress) -> None:
        self.info_hash = info_hash
        self.address = address
        self.direction = "inbound"
        self.extended_handshake = None


async def test_a_pex_message_after_the_torrent_turned_private_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    private = False
    sink = RecordingSink()
    exchange = PeerExchange(sink, is_private=lambda info_hash: private)
    peer: Any = FakePeer(IH, addr(2, 50000))
    manager: Any = SimpleNamespace()
    exchange.peer_added(manager, peer)  # the magnet's metadata unknown: PEX starts
    private = True  # its metadata came: private
    assert exchange.message_received(manager, peer, PexMessage(added=(addr(9),)))
    assert sink.addresses == []  # nothing dialled (BEP 27)
    stats = exchange.statistics()
    assert (stats.messages_received, stats.messages_ignored) == (0, 1)
    assert exchange._peers == {}  # its inbox and outbox are gone
    assert exchange.relay_for(IH, addr(9)) is None


class PexRecorder:
    """A service (before PeerExchange) that counts the PEX messages a leaf is sent."""

    def __init__(self) -> None:
        self.messages: list[PexMessage] = []

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if isinstance(message, PexMessage):
            self.messages.append(message)
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


async def test_pex_stops_telling_the_peers_of_a_torrent_found_private(
    autojump_clock: trio.testing.MockClock,
) -> None:
    private = False
    hub_ex = PeerExchange(RecordingSink(), is_private=lambda info_hash: private)
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [hub_ex]) as hub:
            recorders = {n: PexRecorder() for n in (2, 3)}
            on_hub = {}
            for n in (2, 3):
                leaf = await nursery.start(
                    _node, addr(n), [recorders[n], PeerExchange(RecordingSink())]
                )
                on_hub[n], _ = connect(hub, leaf)
            await trio.sleep(3)
            assert [len(recorders[n].messages) for n in (2, 3)] == [1, 1]  # told of each other
            private = True  # the magnet's metadata says private
            await trio.sleep(2)
            assert hub_ex._peers == {}  # dropped at the next tick
            # Leaf 3 leaves: leaf 2 would hear it dropped a minute after its first message.
            hub.manager.remove_peer(on_hub[3], "test")
            await trio.sleep(70)
            assert len(recorders[2].messages) == 1
            assert hub_ex.statistics().messages_sent == 2
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------ metadata of a private torrent


class Seed:
    """Serves a dictionary whatever it holds (as a peer that does not care for BEP 27)."""

    def __init__(self, info: bytes) -> None:
        self.server: MetadataServer[Peer] = MetadataServer(info)

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {"m": {"ut_metadata": 2}, "metadata_size": self.server.metadata_size}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if not isinstance(message, MetadataRequest):
            return False
        manager.send_nowait(peer, self.server.answer(peer, message, trio.current_time()))
        return True

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


@pytest.mark.parametrize(("flag", "served"), [(1, False), (2, False), (0, True), (b"1", True)])
def test_a_private_dictionary_is_not_served(flag: object, served: bool) -> None:
    info = make_info(flag)
    info_hash = InfoHash.from_info_bytes(info, v1=True)
    exchange = MetadataExchange()
    exchange.serve(info_hash, info)  # a non-zero int is private, as libtorrent reads it
    assert exchange.serving(info_hash) is served
    peer: Any = SimpleNamespace(info_hash=info_hash)
    fields = exchange.handshake_fields(peer)
    assert ("metadata_size" in fields) is served
    # A private torrent's peers see no ut_metadata at all, as libtorrent's (which adds no
    # ut_metadata plugin to a private torrent with metadata).
    assert ("m" in fields and "ut_metadata" in fields["m"]) is served  # type: ignore[operator]
    with pytest.raises(ValueError, match="does not hash"):
        exchange.serve(info_hash, PUBLIC_INFO)


async def test_a_private_dictionary_is_fetched_but_not_served_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    leech_ex = MetadataExchange()
    third_ex = MetadataExchange(request_timeout=2.0, reject_backoff=5.0)
    join = functools.partial(_managers.connect, info_hash=PRIVATE_IH)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [Seed(PRIVATE_INFO)]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
            node(nursery, addr(3), [third_ex]) as third,
        ):
            join(leech, seed)
            with trio.fail_after(5):  # a magnet's fetch is unaffected
                assert await leech_ex.fetch(leech.manager, PRIVATE_IH, timeout=30) == PRIVATE_INFO
            assert not leech_ex.serving(PRIVATE_IH)
            leech_on_third, _ = join(third, leech, ephemeral=40000)
            await trio.sleep(1)
            # The leech's handshake, as the third peer got it.
            assert leech_on_third.extended_handshake is not None
            assert leech_on_third.extended_handshake.metadata_size is None
            assert leech_on_third.extended_handshake.extension_id("ut_metadata") is None
            with pytest.raises(MetadataFetchError):
                await third_ex.fetch(third.manager, PRIVATE_IH, timeout=10)
            # Offered no ut_metadata, the third peer has nothing to ask the leech under.
            assert leech_ex.statistics().requests_answered == 0
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- libtorrent's is_local


@pytest.mark.parametrize(
    "host",
    [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.1.1",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "fec0::1",
        "fd00::5",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
    ],
)
def test_local_as_libtorrent(host: str) -> None:
    assert _is_local(ip_address(host))


@pytest.mark.parametrize(
    "host",
    [
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo: public
        "2001:db8::1",
        "198.18.0.1",
        "0.0.0.1",
        "192.0.2.1",
        "100.64.0.1",
        "172.32.0.1",
        "8.8.8.8",
        "2a00::1",
        "::ffff:8.8.8.8",
    ],
)
def test_not_local_as_libtorrent(host: str) -> None:
    assert not _is_local(ip_address(host))


def test_a_teredo_peer_cannot_point_pex_at_our_network() -> None:
    inbox = PexInbox(peer_address=TEREDO)
    message = PexMessage(
        added=(PeerAddress.parse("127.0.0.1:6881"), addr(5), PeerAddress.parse("5.6.7.8:6881")),
        added6=(PeerAddress.parse("[fe80::1]:6881"),),
    )
    update = inbox.receive(message, now=0.0)
    assert update is not None
    assert [address for address, _ in update.added] == [PeerAddress.parse("5.6.7.8:6881")]
    assert inbox.statistics().ignored_local == 3


def test_a_teredo_peer_cannot_point_a_holepunch_at_our_network() -> None:
    service = HolepunchService()
    peer: Any = SimpleNamespace(address=TEREDO)
    assert service._connect_problem(peer, addr(5)) == "a private address from a public peer"
    assert service._connect_problem(peer, PeerAddress.parse("5.6.7.8:6881")) is None
