"""BEP 55: the ut_holepunch codec, HolepunchService over real PeerManagers joined by trio memory
streams (relay, initiator, target, errors, budgets), and PEX's 0x08 flag and relay lookup."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import _managers
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from strategies import ipv4_peers, ipv6_peers

from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_peer._connection import UnknownExtended
from bip_peer._errors import LocalProtocolError, RemoteProtocolError
from bip_peer._exchange import PeerExchange, PexRelay
from bip_peer._extended import (
    HOLEPUNCH_EXTENSION,
    HOLEPUNCH_EXTENSION_ID,
    HolepunchError,
    HolepunchMessage,
    HolepunchMessageType,
    PexMessage,
    decode_holepunch_message,
)
from bip_peer._holepunch import HolepunchService
from bip_peer._manager import (
    MessageReceived,
    Peer,
    PeerManager,
    PeerService,
)
from bip_peer._messages import Extended
from bip_peer._pex import PexFlags

IH = InfoHash(v1=bytes(range(20)))
OTHER_IH = InfoHash(v1=bytes(20))

V4 = PeerAddress.parse("10.0.0.1:6881")
V6 = PeerAddress.parse("[2001:db8::1]:51413")


def addr(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), port)


# ------------------------------------------------------------------------------------ codec


def test_wire_layout() -> None:
    # err_code is in every message (BEP 55), 0 unless an error.
    rendezvous = HolepunchMessage.rendezvous(V4).encode_payload()
    assert rendezvous == bytes.fromhex("00000a0000011ae100000000")
    assert HolepunchMessage.connect(V6).encode_payload() == (
        b"\x01\x01" + V6.host.packed + (51413).to_bytes(2, "big") + bytes(4)
    )
    failed = HolepunchMessage.failed(V4, HolepunchError.NO_SELF)
    assert failed.encode_payload() == bytes.fromhex("02000a0000011ae100000004")
    assert failed.extension_name == HOLEPUNCH_EXTENSION == "ut_holepunch"
    assert HOLEPUNCH_EXTENSION_ID == 4  # libtorrent's holepunch_msg
    assert failed.to_extended(9) == Extended(9, failed.encode_payload())


@pytest.mark.parametrize(
    "message",
    [
        HolepunchMessage.rendezvous(V4),
        HolepunchMessage.connect(V6),
        HolepunchMessage.failed(V6, HolepunchError.NO_SUCH_PEER),
        HolepunchMessage.failed(V4, HolepunchError.NOT_CONNECTED),
        HolepunchMessage.failed(V4, HolepunchError.NO_SUPPORT),
        HolepunchMessage.failed(V4, 77),
    ],
)
def test_round_trip(message: HolepunchMessage) -> None:
    assert decode_holepunch_message(message.encode_payload()) == message
    # Bytes after the message are ignored, as libtorrent (it reads fields, not the length).
    assert decode_holepunch_message(message.encode_payload() + b"junk") == message
    assert decode_holepunch_message(memoryview(bytearray(message.encode_payload()))) == message


def test_error_codes() -> None:
    known = decode_holepunch_message(bytes.fromhex("02000a0000011ae100000003"))
    assert known is not None
    assert known.error is HolepunchError.NO_SUPPORT
    # A code BEP 55 does not define is kept (libtorrent logs "unknown" and goes on).
    unknown = decode_holepunch_message(bytes.fromhex("02000a0000011ae1ffffffff"))
    assert unknown is not None
    assert unknown.error == 0xFFFFFFFF
    assert not isinstance(unknown.error, HolepunchError)
    assert HolepunchMessage.failed(V4, 2).error is HolepunchError.NOT_CONNECTED


def test_mapped_address_is_sent_as_ipv6() -> None:
    mapped = PeerAddress.parse("[::ffff:10.0.0.1]:6881")
    payload = HolepunchMessage.connect(mapped).encode_payload()
    assert payload[1] == 1
    assert len(payload) == 24
    assert HolepunchMessage.connect(mapped.normalized()).encode_payload()[1] == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"\x03\x00" + bytes(6),  # a msg_type from the future
        b"\xff\x01" + bytes(18),
        b"\x00\x02" + bytes(30),  # an addr_type from the future
        b"\x09\x09",  # both unknown: nothing more is read
    ],
)
def test_unknown_types_are_ignored(payload: bytes) -> None:
    assert decode_holepunch_message(payload) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\x00\x00" + bytes(5),  # IPv4 without all of its port
        b"\x01\x01" + bytes(17),  # IPv6 cut short
        b"\x02\x00" + bytes(6),  # an error without its code
        b"\x02\x00" + bytes(9),  # an error with 3 bytes of code
    ],
)
def test_truncated_is_our_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="ut_holepunch"):
        decode_holepunch_message(payload)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"msg_type": 3, "address": V4}, ValueError),
        ({"msg_type": True, "address": V4}, TypeError),
        ({"msg_type": "0", "address": V4}, TypeError),
        ({"msg_type": 0, "address": "10.0.0.1:6881"}, TypeError),
        ({"msg_type": 0, "address": V4, "error": 1}, ValueError),
        ({"msg_type": 1, "address": V4, "error": 0}, ValueError),
        ({"msg_type": 2, "address": V4}, TypeError),
        ({"msg_type": 2, "address": V4, "error": -1}, ValueError),
        ({"msg_type": 2, "address": V4, "error": 2**32}, ValueError),
        ({"msg_type": 2, "address": V4, "error": 1.0}, TypeError),
    ],
)
def test_fields_checked(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        HolepunchMessage(**kwargs)


def test_plain_int_type_becomes_the_enum() -> None:
    message = HolepunchMessage(1, V4)  # type: ignore[arg-type]
    assert message.msg_type is HolepunchMessageType.CONNECT


_addresses = ipv4_peers | ipv6_peers


@st.composite
def _messages(draw: st.DrawFn) -> HolepunchMessage:
    msg_type = draw(st.sampled_from(HolepunchMessageType))
    error = draw(st.integers(0, 2**32 - 1)) if msg_type is HolepunchMessageType.ERROR else None
    return HolepunchMessage(msg_type, draw(_addresses), error)


@given(_messages())
def test_random_messages_round_trip(message: HolepunchMessage) -> None:
    assert decode_holepunch_message(message.encode_payload()) == message


@given(st.binary(max_size=40))
def test_arbitrary_payloads_give_a_value_or_our_error(payload: bytes) -> None:
    try:
        message = decode_holepunch_message(payload)
    except RemoteProtocolError:
        return
    if message is not None:
        encoded = message.encode_payload()
        if message.error is None:
            # A rendezvous or connect is read without its err_code too (libtorrent's form),
            # and the err_code it has is not looked at: ours is 0.
            encoded = encoded[:-4]
        assert payload.startswith(encoded)


# ------------------------------------------------------------------------------ the service


@dataclass
class Node(_managers.Node):
    """A node with a HolepunchService (unless made without), its callbacks recorded."""

    service: HolepunchService | None = None
    connects: list[tuple[InfoHash, PeerAddress]] = field(default_factory=list)
    errors: list[tuple[InfoHash, PeerAddress, int]] = field(default_factory=list)

    @property
    def hp(self) -> HolepunchService:
        assert self.service is not None
        return self.service


@asynccontextmanager
async def node(
    nursery: trio.Nursery,
    address: PeerAddress,
    *,
    holepunch: bool = True,
    extra: Iterable[PeerService] = (),
    **options: Any,
) -> AsyncIterator[Node]:
    services: list[PeerService] = list(extra)
    connects: list[tuple[InfoHash, PeerAddress]] = []
    errors: list[tuple[InfoHash, PeerAddress, int]] = []
    service = None
    if holepunch:
        service = HolepunchService(
            on_connect=lambda ih, a: connects.append((ih, a)),
            on_error=lambda ih, a, code: errors.append((ih, a, code)),
            **options,
        )
        services.append(service)
    async with _managers.node(nursery, address, services) as base:
        # The same events list: the base node's drain task keeps filling it.
        yield Node(base.manager, address, base.events, service, connects, errors)


# Every connection here is for IH unless a test names another torrent.
connect = functools.partial(_managers.connect, info_hash=IH)


async def handshaken(*peers: Peer) -> None:
    """Wait (virtual time) until each peer's extended handshake has arrived."""
    with trio.fail_after(5):
        while any(peer.extended_handshake is None for peer in peers):
            await trio.sleep(0.01)


def raw_send(sender: Node, peer: Peer, payload: bytes) -> None:
    """Send a ut_holepunch payload as is, under the id the peer gave (or libtorrent's)."""
    their_id = peer.connection.their_extension_ids.get(HOLEPUNCH_EXTENSION, 4)
    assert sender.manager.send_nowait(peer, Extended(their_id, payload))


@dataclass
class Triangle:
    """A relay and the two peers that dialled it: the nodes, and each side's peers."""

    r: Node
    x: Node
    t: Node
    x_r: Peer  # X's peer R
    t_r: Peer
    r_x: Peer  # R's peer X
    r_t: Peer


@asynccontextmanager
async def triangle(
    nursery: trio.Nursery, *, relay_options: Mapping[str, Any] | None = None, **target: Any
) -> AsyncIterator[Triangle]:
    """A relay R at 10.0.0.1 that X (10.0.0.2) and T (10.0.0.3) both dialled.

    Yields the nodes and each side's Peer of the two connections.
    """
    async with (
        node(nursery, addr(1), our_addresses=[addr(1)], **(relay_options or {})) as r,
        node(nursery, addr(2)) as x,
        node(nursery, addr(3), **target) as t,
    ):
        x_r, r_x = connect(x, r, ephemeral=50002)
        t_r, r_t = connect(t, r, ephemeral=50003)
        await handshaken(x_r, r_x, t_r, r_t)
        yield Triangle(r, x, t, x_r, t_r, r_x, r_t)


async def test_handshake_offers_ut_holepunch(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            assert tri.x_r.connection.their_extension_ids[HOLEPUNCH_EXTENSION] == 4
            assert HolepunchService.supports(tri.x_r)
            assert HolepunchService.supports(tri.r_x)
        nursery.cancel_scope.cancel()


async def test_relay_introduces_both_ends(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            # X asks for T where PEX lists it: T's host and listen port (it dialled R).
            assert tri.x.hp.rendezvous(tri.x.manager, tri.x_r, addr(3))
            assert tri.x.hp.statistics().pending == 1
            await trio.sleep(1)
            # X dials T where it asked for it; T dials X at X's listen address, not the
            # ephemeral TCP port X reached R from.
            assert tri.x.connects == [(IH, addr(3))]
            assert tri.t.connects == [(IH, addr(2))]
            assert tri.r.hp.statistics().relayed == 1
            assert tri.x.hp.statistics().connects == 1
            assert tri.x.hp.statistics().pending == 0
            assert tri.t.hp.statistics().connects == 1
            assert tri.x.errors == tri.t.errors == []

            # By the connection's remote address, as libtorrent's find_peer.
            assert tri.x.hp.rendezvous(tri.x.manager, tri.x_r, addr(3, 50003))
            await trio.sleep(1)
            assert tri.x.connects[-1] == (IH, addr(3, 50003))
            assert tri.r.hp.statistics().relayed == 2
            # Holepunch messages are consumed by the service, never events.
            assert not any(
                isinstance(e, MessageReceived) and isinstance(e.message, UnknownExtended)
                for n in (tri.r, tri.x, tri.t)
                for e in n.events
            )
            assert not any(n.removed() for n in (tri.r, tri.x, tri.t))
        nursery.cancel_scope.cancel()


async def test_relay_sends_a_utp_peer_its_remote_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer on uTP dials from its listen socket: its remote address is the NAT's hole."""
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1)) as r,
            node(nursery, addr(2)) as x,
            node(nursery, addr(3)) as t,
        ):
            x_r, r_x = connect(x, r, ephemeral=40002, transport="utp")
            t_r, r_t = connect(r, t)  # R dialled T: T's remote address is where it listens
            await handshaken(x_r, r_x, t_r, r_t)
            assert x.hp.rendezvous(x.manager, x_r, addr(3))
            await trio.sleep(1)
            assert t.connects == [(IH, addr(2, 40002))]
            assert x.connects == [(IH, addr(3))]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("target", "error"),
    [
        (addr(9), HolepunchError.NOT_CONNECTED),
        (addr(1), HolepunchError.NO_SELF),  # the relay's own address
        (addr(2), HolepunchError.NO_SELF),  # the initiator itself, as libtorrent
        (addr(2, 50002), HolepunchError.NO_SELF),
    ],
)
async def test_relay_errors(
    autojump_clock: trio.testing.MockClock, target: PeerAddress, error: HolepunchError
) -> None:
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            assert tri.x.hp.rendezvous(tri.x.manager, tri.x_r, target)
            await trio.sleep(1)
            assert tri.x.errors == [(IH, target, error)]
            assert tri.x.connects == tri.t.connects == []
            assert tri.r.hp.statistics().relay_refused == 1
            assert tri.x.hp.statistics().errors_received == 1
            assert tri.x.hp.statistics().pending == 0
        nursery.cancel_scope.cancel()


async def test_relay_no_such_peer_for_an_undialable_target(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            for target in (addr(3, 0), PeerAddress(IPv4Address("0.0.0.0"), 6881)):
                raw_send(tri.x, tri.x_r, HolepunchMessage.rendezvous(target).encode_payload())
            await trio.sleep(1)
            assert tri.r.hp.statistics().relay_refused == 2
            # We asked nothing (not through rendezvous()): the errors are not ours to report.
            assert tri.x.errors == []
            assert tri.x.hp.statistics().messages_ignored == 2
        nursery.cancel_scope.cancel()


async def test_relay_no_support(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        async with triangle(nursery, holepunch=False) as tri:
            assert not HolepunchService.supports(tri.r_t)
            assert tri.x.hp.rendezvous(tri.x.manager, tri.x_r, addr(3))
            await trio.sleep(1)
            assert tri.x.errors == [(IH, addr(3), HolepunchError.NO_SUPPORT)]
        nursery.cancel_scope.cancel()


async def test_relay_only_within_the_torrent(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1)) as r,
            node(nursery, addr(2)) as x,
            node(nursery, addr(3)) as t,
        ):
            x_r, r_x = connect(x, r, ephemeral=50002)
            t_r, r_t = connect(t, r, ephemeral=50003, info_hash=OTHER_IH)
            await handshaken(x_r, r_x, t_r, r_t)
            assert x.hp.rendezvous(x.manager, x_r, addr(3))
            await trio.sleep(1)
            assert x.errors == [(IH, addr(3), HolepunchError.NOT_CONNECTED)]
            assert t.connects == []
        nursery.cancel_scope.cancel()


async def test_relay_budget(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        options = {"relay_burst": 3, "relay_rate": 0.5}
        async with triangle(nursery, relay_options=options) as tri:
            for n in range(10):
                assert tri.x.hp.rendezvous(tri.x.manager, tri.x_r, addr(3, 7000 + n))
            await trio.sleep(1)
            stats = tri.r.hp.statistics()
            assert stats.relay_refused == 3
            assert stats.rate_limited == 7
            assert len(tri.x.errors) == 3
            assert tri.x.hp.statistics().pending == 7  # the ignored ones wait for nothing...
            await trio.sleep(40)
            assert tri.x.hp.statistics().pending == 0  # ...until they are forgotten
            # The budget refills: two seconds give one more.
            assert tri.x.hp.rendezvous(tri.x.manager, tri.x_r, addr(3))
            await trio.sleep(0.5)
            assert tri.r.hp.statistics().relayed == 1
            assert tri.x.connects == [(IH, addr(3))]
            # Another peer has its own budget.
            assert tri.t.hp.rendezvous(tri.t.manager, tri.t_r, addr(2))
            await trio.sleep(0.5)
            assert tri.r.hp.statistics().relayed == 2
        nursery.cancel_scope.cancel()


async def test_connect_budget_and_filters(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        async with triangle(
            nursery, connect_burst=2, connect_rate=0.1, our_addresses=[addr(3)]
        ) as tri:
            # Not dialable, T's own, the relay itself (connected already): ignored, uncharged.
            for target in (addr(30, 0), addr(3), addr(1)):
                raw_send(tri.r, tri.r_t, HolepunchMessage.connect(target).encode_payload())
            # R pushes unsolicited connects at T: the first two are taken, the rest dropped
            # (over budget, one to a peer we have would be too: the budget is looked at first).
            for n in range(6):
                raw_send(tri.r, tri.r_t, HolepunchMessage.connect(addr(20 + n)).encode_payload())
            await trio.sleep(0.5)
            assert tri.t.connects == [(IH, addr(20)), (IH, addr(21))]
            stats = tri.t.hp.statistics()
            assert stats.connects == 2
            assert stats.rate_limited == 4
            assert stats.connects_ignored == 3
            # A connect answering our own rendezvous is not charged.
            assert tri.t.hp.rendezvous(tri.t.manager, tri.t_r, addr(2))
            await trio.sleep(0.5)
            assert tri.t.connects[-1] == (IH, addr(2))
            # Ten seconds refill one token.
            await trio.sleep(10)
            raw_send(tri.r, tri.r_t, HolepunchMessage.connect(addr(40)).encode_payload())
            await trio.sleep(0.5)
            assert tri.t.connects[-1] == (IH, addr(40))
        nursery.cancel_scope.cancel()


async def test_connects_over_budget_never_look_for_the_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A flood of unsolicited connects costs a token test each once over budget: the search
    for a peer at the address (to ignore connects to peers we have) comes after it."""
    async with trio.open_nursery() as nursery:
        async with triangle(nursery, connect_burst=2, connect_rate=0.1) as tri:
            service = tri.t.hp
            searched: list[PeerAddress] = []
            find = service._find

            def spy(manager: PeerManager, info_hash: InfoHash, address: PeerAddress) -> Any:
                searched.append(address)
                return find(manager, info_hash, address)

            service._find = spy  # type: ignore[method-assign]
            for n in range(2):
                raw_send(tri.r, tri.r_t, HolepunchMessage.connect(addr(20 + n)).encode_payload())
            await trio.sleep(0.5)
            assert searched == [addr(20), addr(21)]
            # Over budget: new addresses, and the relay itself (a peer we have).
            for target in [*(addr(30 + n) for n in range(20)), addr(1)]:
                raw_send(tri.r, tri.r_t, HolepunchMessage.connect(target).encode_payload())
            await trio.sleep(0.5)
            assert searched == [addr(20), addr(21)]
            stats = service.statistics()
            assert (stats.connects, stats.rate_limited, stats.connects_ignored) == (2, 21, 0)
            assert tri.t.connects == [(IH, addr(20)), (IH, addr(21))]
        nursery.cancel_scope.cancel()


async def test_find_looks_at_the_peers_of_the_host(autojump_clock: trio.testing.MockClock) -> None:
    """The peer at an address is found through an index by host: by its remote address or
    its listen address, within the torrent, and never once it is being removed."""
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            service, manager = tri.r.hp, tri.r.manager
            assert set(service._by_host) == {addr(2).host, addr(3).host}
            assert service._find(manager, IH, addr(2, 50002)) is tri.r_x  # remote address
            assert service._find(manager, IH, addr(2)) is tri.r_x  # listen address (p)
            assert service._find(manager, IH, addr(2, 7000)) is None
            assert service._find(manager, OTHER_IH, addr(2)) is None
            assert service._find(manager, IH, addr(4)) is None
            manager.remove_peer(tri.r_x, "test")
            assert service._find(manager, IH, addr(2)) is None  # before peer_removed runs
            await trio.sleep(0.5)
            assert set(service._by_host) == {addr(3).host}
            assert service._find(manager, IH, addr(3)) is tri.r_t
        nursery.cancel_scope.cancel()


async def test_public_peer_cannot_point_at_private_addresses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    public = PeerAddress(IPv4Address("1.2.3.4"), 6881)
    async with trio.open_nursery() as nursery:
        async with node(nursery, public) as r, node(nursery, addr(2)) as x:
            x_r, r_x = connect(x, r)
            await handshaken(x_r, r_x)
            for target in (addr(9), PeerAddress.parse("127.0.0.1:6881")):
                raw_send(r, r_x, HolepunchMessage.connect(target).encode_payload())
            outside = PeerAddress(IPv4Address("5.6.7.8"), 6881)
            raw_send(r, r_x, HolepunchMessage.connect(outside).encode_payload())
            await trio.sleep(0.5)
            assert x.connects == [(IH, outside)]
            assert x.hp.statistics().connects_ignored == 2
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\x01\x00\x0a",
        b"\x02\x00" + addr(3).to_compact(),  # error without a code
        b"\x07\x00" + addr(3).to_compact(),  # unknown message type
        b"\x01\x05" + addr(3).to_compact(),  # unknown address type
        # An error answering no rendezvous of ours.
        HolepunchMessage.failed(addr(3), HolepunchError.NO_SUPPORT).encode_payload(),
    ],
)
async def test_bad_messages_are_ignored_not_fatal(
    autojump_clock: trio.testing.MockClock, payload: bytes
) -> None:
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            raw_send(tri.r, tri.r_x, payload)
            await trio.sleep(0.5)
            assert tri.x.hp.statistics().messages_ignored == 1
            assert tri.x.connects == []
            assert tri.x.errors == []
            assert not tri.x.removed()
            # The connection still works.
            assert tri.x.hp.rendezvous(tri.x.manager, tri.x_r, addr(3))
            await trio.sleep(0.5)
            assert tri.x.connects == [(IH, addr(3))]
        nursery.cancel_scope.cancel()


async def test_messages_from_a_peer_without_ut_holepunch_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1)) as r, node(nursery, addr(2), holepunch=False) as x:
            x_r, r_x = connect(x, r)
            await handshaken(x_r, r_x)
            assert not HolepunchService.supports(r_x)
            # x never offered ut_holepunch, but sends under the id R gave it anyway.
            raw_send(x, x_r, HolepunchMessage.rendezvous(addr(7)).encode_payload())
            raw_send(x, x_r, HolepunchMessage.connect(addr(7)).encode_payload())
            await trio.sleep(0.5)
            stats = r.hp.statistics()
            assert stats.messages_ignored == 2
            assert stats.relay_refused == 0
            assert r.connects == []
            assert not r.removed()
        nursery.cancel_scope.cancel()


async def test_rendezvous_preconditions(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), holepunch=False) as r, node(nursery, addr(2)) as x:
            x_r, r_x = connect(x, r)
            await handshaken(x_r, r_x)
            assert not x.hp.rendezvous(x.manager, x_r, addr(3))  # R does not offer it
            assert x.hp.statistics().rendezvous_sent == 0
            with pytest.raises(ValueError, match="dialable"):
                x.hp.rendezvous(x.manager, x_r, addr(3, 0))
            with pytest.raises(TypeError):
                x.hp.rendezvous(x.manager, x_r, "10.0.0.3:6881")  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError, match="services"):
                HolepunchService().rendezvous(x.manager, x_r, addr(3))
        nursery.cancel_scope.cancel()


async def test_departures_forget_pending(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        options = {"relay_burst": 1, "relay_rate": 0.01}
        async with triangle(nursery, relay_options=options) as tri:
            assert tri.x.hp.rendezvous(tri.x.manager, tri.x_r, addr(8))
            assert tri.x.hp.rendezvous(
                tri.x.manager, tri.x_r, addr(9)
            )  # over R's budget: unanswered
            await trio.sleep(0.5)
            assert tri.x.hp.statistics().pending == 1
            tri.x.manager.remove_peer(tri.x_r, "test")
            await trio.sleep(0.5)
            assert tri.x.hp.statistics().pending == 0
        nursery.cancel_scope.cancel()


async def test_pending_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        options = {"relay_burst": 1, "relay_rate": 0.01}
        async with triangle(nursery, relay_options=options) as tri:
            service = HolepunchService(max_pending=3)
            tri.x.manager.add_service(service)
            for n in range(5):
                assert service.rendezvous(tri.x.manager, tri.x_r, addr(3, 7000 + n))
            assert service.statistics().pending == 3
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"extension_id": 0},
        {"extension_id": 256},
        {"extension_id": True},
        {"relay_burst": 0},
        {"relay_rate": 0},
        {"connect_burst": 1.5},
        {"connect_rate": float("inf")},
        {"pending_timeout": -1},
        {"max_pending": 0},
    ],
)
def test_options_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        HolepunchService(**kwargs)


def test_our_addresses_checked() -> None:
    with pytest.raises(TypeError):
        HolepunchService(our_addresses=["10.0.0.1:6881"])  # type: ignore[list-item]


def test_handshake_fields() -> None:
    fields = HolepunchService(extension_id=9).handshake_fields(None)  # type: ignore[arg-type]
    assert fields == {"m": {"ut_holepunch": 9}}


# ---------------------------------------------------------------------------------- PEX


class RecordingSink:
    def __init__(self) -> None:
        self.addresses: list[PeerAddress] = []

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        self.addresses.extend(addresses)


class PexRecorder:
    """A service (placed before PeerExchange) that notes the PEX messages a node receives."""

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


async def test_pex_flags_holepunch_and_names_the_relay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """R tells X about T (0x08: T speaks ut_holepunch) and about U (no 0x08); X's PEX then
    names R as the relay for T, and the rendezvous through it works end to end."""
    recorder = PexRecorder()
    x_pex = PeerExchange(RecordingSink())
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), extra=[PeerExchange(RecordingSink())]) as r,
            node(nursery, addr(2), extra=[recorder, x_pex]) as x,
            node(nursery, addr(3)) as t,
            node(nursery, addr(4), holepunch=False) as u,
        ):
            x_r, r_x = connect(x, r, ephemeral=50002)
            t_r, r_t = connect(t, r, ephemeral=50003)
            u_r, r_u = connect(u, r, ephemeral=50004)
            await handshaken(x_r, r_x, t_r, r_t, u_r, r_u)
            await trio.sleep(3)
            (message,) = recorder.messages
            flags = dict(zip(message.added, message.added_flags, strict=True))
            assert flags == {addr(3): PexFlags.HOLEPUNCH, addr(4): PexFlags.NONE}

            relay = x_pex.relay_for(IH, addr(3))
            assert relay == PexRelay(x_r, PexFlags.HOLEPUNCH)
            assert relay.can_relay
            assert relay.target_supports_holepunch
            other = x_pex.relay_for(IH, addr(4))
            assert other is not None
            assert other.can_relay
            assert not other.target_supports_holepunch
            assert x_pex.relay_for(IH, addr(5)) is None
            assert x_pex.relay_for(OTHER_IH, addr(3)) is None
            # Looked up in any form: an IPv4-mapped IPv6 address finds the IPv4 one.
            mapped = PeerAddress(IPv6Address(f"::ffff:{addr(3).host}"), 6881)
            assert x_pex.relay_for(IH, mapped) == relay

            assert x.hp.rendezvous(x.manager, relay.peer, addr(3))
            await trio.sleep(1)
            assert x.connects == [(IH, addr(3))]
            assert t.connects == [(IH, addr(2))]

            # T leaves R: R's next PEX message drops it, and R is no relay for it any more.
            r.manager.remove_peer(r_t, "test")
            await trio.sleep(70)
            assert recorder.messages[-1].dropped == (addr(3),)
            assert x_pex.relay_for(IH, addr(3)) is None
            assert x_pex.relay_for(IH, addr(4)) is not None
            # R leaves X: nothing it told is a relay candidate any more.
            x.manager.remove_peer(x_r, "test")
            await trio.sleep(0.5)
            assert x_pex.relay_for(IH, addr(4)) is None
        nursery.cancel_scope.cancel()


async def test_relay_for_prefers_a_relay_that_speaks_holepunch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pex = PeerExchange(RecordingSink(), max_sources=50)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), extra=[pex]) as hub,
            node(nursery, addr(2)) as speaks,
            node(nursery, addr(3), holepunch=False) as mute,
        ):
            hub_speaks, speaks_hub = connect(hub, speaks)
            hub_mute, mute_hub = connect(hub, mute)
            await handshaken(hub_speaks, speaks_hub, hub_mute, mute_hub)
            target = PeerAddress(IPv4Address("10.0.1.1"), 6881)
            # Fed straight to the service: what the two peers' PEX messages would do.
            pex.message_received(
                hub.manager, hub_speaks, PexMessage(added=(target,), added_flags=(0,))
            )
            pex.message_received(
                hub.manager, hub_mute, PexMessage(added=(target,), added_flags=(0x08,))
            )
            relay = pex.relay_for(IH, target)
            assert relay == PexRelay(hub_speaks, PexFlags.NONE)  # it can relay: it wins
            # Only the last max_sources addresses are remembered.
            many = tuple(PeerAddress(IPv4Address(f"10.0.2.{n}"), 6881) for n in range(1, 81))
            await trio.sleep(60)
            pex.message_received(hub.manager, hub_mute, PexMessage(added=many))
            assert pex.relay_for(IH, many[-1]) == PexRelay(hub_mute, PexFlags.NONE)
            assert pex.relay_for(IH, many[29]) is None
            assert pex.relay_for(IH, target) is None  # told before all of them
        nursery.cancel_scope.cancel()


def test_max_sources_checked() -> None:
    with pytest.raises(ValueError, match="max_sources"):
        PeerExchange(RecordingSink(), max_sources=-1)


async def test_a_flood_is_logged_once_per_peer(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_peer.holepunch")
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            for _ in range(20):
                raw_send(tri.r, tri.r_x, b"\x00")
            for n in range(20):
                raw_send(tri.r, tri.r_x, HolepunchMessage.connect(addr(n, 0)).encode_payload())
            await trio.sleep(0.5)
            stats = tri.x.hp.statistics()
            assert stats.messages_ignored == 20
            assert stats.connects_ignored == 20
            records = [r for r in caplog.records if "later ones from this peer" in r.message]
            assert len(records) == 1
        nursery.cancel_scope.cancel()


async def test_decoded_messages_and_others(autojump_clock: trio.testing.MockClock) -> None:
    """A HolepunchMessage the connection decoded itself is taken the same way; anything else
    is left to the other services and the owner."""
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            hp, manager, peer = tri.x.hp, tri.x.manager, tri.x_r
            assert hp.message_received(manager, peer, HolepunchMessage.connect(addr(9)))
            assert tri.x.connects == [(IH, addr(9))]
            assert not hp.message_received(manager, peer, UnknownExtended(7, "ut_other", b""))
            assert not hp.message_received(manager, peer, PexMessage())
        nursery.cancel_scope.cancel()


async def test_rendezvous_through_a_departed_relay(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        async with triangle(nursery) as tri:
            tri.x.manager.remove_peer(tri.x_r, "test")
            await trio.sleep(0.5)
            assert not tri.x.hp.rendezvous(tri.x.manager, tri.x_r, addr(3))
            assert tri.x.hp.statistics().pending == 0
        nursery.cancel_scope.cancel()


async def test_relay_for_can_be_switched_off(autojump_clock: trio.testing.MockClock) -> None:
    pex = PeerExchange(RecordingSink(), max_sources=0)
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), extra=[pex]) as hub, node(nursery, addr(2)) as other:
            hub_other, other_hub = connect(hub, other)
            await handshaken(hub_other, other_hub)
            target = PeerAddress(IPv4Address("10.0.1.1"), 6881)
            pex.message_received(hub.manager, hub_other, PexMessage(added=(target,)))
            assert pex.relay_for(IH, target) is None
        nursery.cancel_scope.cancel()
