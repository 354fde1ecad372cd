"""BEP 55 in the client: three sessions on loopback, one of them behind a simulated NAT.

R relays. B is behind a port-restricted cone NAT: its uTP socket sends through the NAT's
public UDP port, which lets in only datagrams from addresses B has sent to, and nothing
listens on TCP there. A is reachable by nobody either (no listener: an outgoing uTP socket
that accepts nothing, as a peer behind a NAT of its own would be). Both join R. A learns B's
public address from R's PEX and dials it: TCP is refused, the uTP SYNs die in the NAT. A
asks R for a rendezvous; R tells both to connect; B's SYN to A opens the NAT for A, A's SYN
passes it, and A and B are connected over uTP.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from _engine_helpers import LOOPBACK, address_of, loopback_config, make_torrent, write_content
from tests._nat import session_behind_nat

from bip._client import ClientConfig, Session, TorrentOptions, open_session
from bip._client._holepunch import HolepunchCounts, HolepunchPolicy
from bip._client._torrent import Torrent
from bip._cmd_download import add_session_arguments, config_from_args
from bip_handshake import IPFilter, IPRange, PeerAddress
from bip_handshake._handshaker import DialFailure
from bip_metainfo import InfoHash
from bip_peer import (
    DEFAULT_HOLEPUNCH_RELAY_BURST,
    DEFAULT_HOLEPUNCH_RELAY_RATE,
    HOLEPUNCH_EXTENSION,
    HolepunchService,
    Peer,
    PexFlags,
    PexRelay,
)

DEADLINE = 15.0
NAT_HOST = "127.0.0.2"  # the NAT's public address: where the swarm sees B
B_HOST = "127.0.0.3"  # B's own address, behind the NAT: nobody is told it
OTHER_NAT_HOST = "127.0.0.4"  # the same for A, when A is behind a NAT too
A_HOST = "127.0.0.5"


def utp_first(inside: str, port: int) -> ClientConfig:
    """A session behind a NAT: listening at ``(inside, port)``, uTP first."""
    return loopback_config(listen=((inside, port),), prefer_utp=True)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll every 20 ms (the caller bounds the whole test in time)."""
    while not predicate():
        await trio.sleep(0.02)


async def test_a_and_b_meet_through_a_holepunch(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "data", (100_000,))
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config()) as relay,
            session_behind_nat(NAT_HOST, B_HOST, utp_first) as (b, nat),
            # No listener: A can dial out only, and its uTP socket accepts nothing.
            open_session(loopback_config(listen=(), prefer_utp=True)) as a,
        ):
            for session in (relay, a, b):
                assert isinstance(session.holepunch, HolepunchPolicy)
            # Nobody has the data: the connections stay, whatever the transfers do.
            at_relay = await relay.add_torrent(torrent, TorrentOptions(tmp_path / "r"))
            at_b = await b.add_torrent(
                torrent, TorrentOptions(tmp_path / "b", peers=(address_of(relay),))
            )
            # B joins R through its NAT, over uTP: R sees it at the NAT's public address.
            await wait_until(
                lambda: any(
                    p.address == nat.public and p.extended_handshake is not None
                    for p in at_relay.peers
                )
            )
            at_a = await a.add_torrent(
                torrent, TorrentOptions(tmp_path / "a", peers=(address_of(relay),))
            )
            await wait_until(
                lambda: at_a.status().holepunch_peers >= 1 and at_b.status().holepunch_peers >= 1
            )
            await wait_until(lambda: any(p.address == nat.public for p in at_a.peers))

            # A learnt B's public address from R's PEX, and its direct dial failed there.
            assert a.pex.statistics().addresses_discovered >= 1
            assert a.handshaker.statistics().connect_failed >= 1
            assert nat.dropped  # A's unsolicited SYNs died in the NAT
            # A asked R; R relayed; both were told to connect.
            assert at_a.status().holepunch_rendezvous == 1
            assert at_a.status().holepunch_connects == 1
            assert at_b.status().holepunch_connects == 1
            assert at_b.status().holepunch_rendezvous == 0
            assert relay.holepunch is not None
            assert relay.holepunch.service.statistics().relayed == 1
            # A and B are connected, over uTP, through the hole B's own SYN opened.
            [to_b] = [p for p in at_a.peers if p.address == nat.public]
            assert to_b.transport == "utp"
            assert to_b.peer_id == b.peer_id
            assert any(p.peer_id == a.peer_id and p.transport == "utp" for p in at_b.peers)
            assert a.dialer is not None
            assert a.dialer.statistics().hinted >= 1
            assert at_a.status().holepunch_peers == 1
            assert at_b.status().holepunch_peers == 1
            assert at_relay.status().holepunch_connects == 0


async def test_two_peers_behind_nats_meet_through_a_holepunch(tmp_path: Path) -> None:
    """Both behind NATs, both accepting uTP (through their NATs): the BEP 55 case proper.

    A is in the swarm first, and has had R's PEX message already (about C, a public peer),
    so it hears of B only a minute later; B hears of A at once, dials, and its SYNs die in
    A's NAT (opening B's NAT for A on the way out). B asks R; R tells both to connect; both
    dial at once, each SYN passing the other's NAT once that side's own SYN opened it, and
    each end sees the other's connection arrive from the very address it is dialling (a
    simultaneous open): one connection is kept.

    C refuses A: otherwise A connects to C, and C's first PEX message to A goes at C's next
    tick, which lists B whenever B has connected to C by then (a matter of the sessions'
    tick phases and the machine's load). A then dials B itself, its SYN passes B's NAT
    (B's own SYNs to A opened it) and opens A's for B: they meet without a rendezvous.
    With R as A's only peer, A can hear of B from R alone.
    """
    torrent = make_torrent(write_content(tmp_path / "data", (100_000,)), "v1")
    # A's NAT and A itself (a TCP dial leaves from A's own address: the NAT is UDP's only):
    # C neither dials A nor takes its connections.
    refuse_a = IPFilter.blocking([IPRange(IPv4Address(OTHER_NAT_HOST), IPv4Address(A_HOST))])
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config()) as relay,
            open_session(loopback_config(holepunch=False, ip_filter=refuse_a)) as public,
            session_behind_nat(OTHER_NAT_HOST, A_HOST, utp_first) as (a, nat_a),
            session_behind_nat(NAT_HOST, B_HOST, utp_first) as (b, nat_b),
        ):
            at_relay = await relay.add_torrent(torrent, TorrentOptions(tmp_path / "r"))
            await public.add_torrent(
                torrent, TorrentOptions(tmp_path / "c", peers=(address_of(relay),))
            )
            await wait_until(lambda: len(at_relay.peers) == 1)
            at_a = await a.add_torrent(
                torrent, TorrentOptions(tmp_path / "a", peers=(address_of(relay),))
            )
            # A has heard about C: R's next message to A is a minute away.
            await wait_until(lambda: a.pex.statistics().messages_received >= 1)
            at_b = await b.add_torrent(
                torrent, TorrentOptions(tmp_path / "b", peers=(address_of(relay),))
            )

            def met(here: Torrent, other: Session) -> list[Peer]:
                return [p for p in here.peers if p.peer_id == other.peer_id]

            await wait_until(lambda: bool(met(at_a, b)) and bool(met(at_b, a)))
            # The duplicate of the simultaneous open is settled: one connection each side.
            await trio.sleep(0.5)
            [a_to_b] = met(at_a, b)
            [b_to_a] = met(at_b, a)
            assert a_to_b.transport == b_to_a.transport == "utp"
            assert a_to_b.address == nat_b.public
            assert b_to_a.address == nat_a.public
            assert not met(at_a, public)  # C never met A: A heard of B from R alone
            assert nat_b.public in nat_a.dropped  # B's SYNs before the holepunch
            assert at_b.status().holepunch_rendezvous == 1
            assert at_a.status().holepunch_rendezvous == 0
            assert at_a.status().holepunch_connects == at_b.status().holepunch_connects == 1
            assert at_a.status().holepunch_peers == at_b.status().holepunch_peers == 1
            assert relay.holepunch is not None
            assert relay.holepunch.service.statistics().relayed == 1


async def test_no_utp_no_holepunch(tmp_path: Path) -> None:
    """Holepunching is two uTP dials: without uTP the service is not offered at all, nor
    with ``holepunch=False``; a session that dials uTP offers it."""
    torrent = make_torrent(write_content(tmp_path / "data", (40_000,)), "v1")
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config(utp=False)) as tcp_only,
            open_session(loopback_config(holepunch=False)) as turned_off,
            open_session(loopback_config()) as offering,
        ):
            assert tcp_only.holepunch is None
            assert turned_off.holepunch is None
            assert offering.holepunch is not None
            services = offering.manager.services
            assert offering.holepunch.service in services
            assert offering.holepunch in services
            for session in (tcp_only, turned_off):
                assert not any(isinstance(s, HolepunchService) for s in session.manager.services)
            # The extended handshakes say so (nobody has the data: the connections stay).
            await offering.add_torrent(torrent, TorrentOptions(tmp_path / "offering"))
            for session, name in ((tcp_only, "t"), (turned_off, "o")):
                download = await session.add_torrent(
                    torrent, TorrentOptions(tmp_path / name, peers=(address_of(offering),))
                )

                def handshaken(peers: set[Peer] = download.peers) -> bool:
                    return any(p.extended_handshake is not None for p in peers)

                await wait_until(handshaken)
                [peer] = download.peers
                assert peer.extended_handshake is not None
                assert HOLEPUNCH_EXTENSION in peer.extended_handshake.m
                assert HOLEPUNCH_EXTENSION not in peer.connection.our_extension_ids


def session_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    return parser.parse_args(["--bind", LOOPBACK, "--no-trackers", *options])


def test_config_and_flag() -> None:
    assert config_from_args(session_args()).holepunch
    assert not config_from_args(session_args("--no-holepunch")).holepunch
    both = config_from_args(session_args("--no-holepunch", "--no-utp"))
    assert not both.holepunch
    assert not both.utp
    with pytest.raises(TypeError, match="holepunch must be a bool"):
        loopback_config(holepunch=1)


# ------------------------------------------------------------------ the policy, alone

V1 = InfoHash(v1=b"\x11" * 20)
HYBRID = InfoHash(v1=b"\x22" * 20, v2=b"\x33" * 32)
TARGET = PeerAddress(IPv4Address("10.0.0.9"), 6881)
V6_TARGET = PeerAddress(IPv6Address("2001:db8::9"), 6881)


class FakePeer:
    """What the policy reads of a bip_peer Peer (hashed by identity, as a Peer is)."""

    def __init__(self, address: str, holepunch: bool, info_hash: InfoHash) -> None:
        self.address = PeerAddress.parse(address)
        self.info_hash = info_hash
        self.transport = "utp"
        ids = {HOLEPUNCH_EXTENSION: 4} if holepunch else {}
        self.connection = SimpleNamespace(their_extension_ids=ids)


def fake_peer(
    address: str = "10.0.0.1:6881", *, holepunch: bool = True, info_hash: InfoHash = V1
) -> Any:
    return FakePeer(address, holepunch, info_hash)


class FakePex:
    def __init__(self) -> None:
        self.relays: dict[PeerAddress, PexRelay] = {}

    def relay_for(self, info_hash: InfoHash, address: PeerAddress) -> PexRelay | None:
        return self.relays.get(address)


class FakeDialer:
    def __init__(self, families: tuple[int, ...] = (4,)) -> None:
        self.utp_sockets = tuple(
            SimpleNamespace(local_address=SimpleNamespace(family=f)) for f in families
        )
        self.hints: list[tuple[PeerAddress, float, bool]] = []

    def prefer_utp_for(self, address: PeerAddress, ttl: float, *, only: bool = True) -> None:
        self.hints.append((address, ttl, only))


class FakeHandshaker:
    def __init__(self) -> None:
        self.dials: list[tuple[InfoHash, PeerAddress]] = []

    def connect(self, torrent: InfoHash, address: PeerAddress) -> bool:
        self.dials.append((torrent, address))
        return True


class Rig:
    """A HolepunchPolicy over fakes; its service's rendezvous are recorded, not sent."""

    def __init__(self, **options: Any) -> None:
        self.pex = FakePex()
        self.dialer = FakeDialer(options.pop("families", (4,)))
        self.handshaker = FakeHandshaker()
        self.policy = HolepunchPolicy(
            handshaker=self.handshaker,  # type: ignore[arg-type]
            pex=self.pex,  # type: ignore[arg-type]
            dialer=self.dialer,  # type: ignore[arg-type]
            **options,
        )
        self.sent: list[tuple[Any, PeerAddress]] = []
        self.answer = True

        def rendezvous(manager: object, relay: Any, target: PeerAddress) -> bool:
            self.sent.append((relay, target))
            return self.answer

        self.policy.service.rendezvous = rendezvous  # type: ignore[method-assign]
        manager: Any = SimpleNamespace()
        self.manager = manager
        self.policy.attach(manager)

    def listed(
        self, address: PeerAddress, relay: Any = None, flags: PexFlags = PexFlags.HOLEPUNCH
    ) -> Any:
        relay = relay if relay is not None else fake_peer()
        self.pex.relays[address] = PexRelay(relay, flags)
        return relay

    def fail(self, address: PeerAddress, torrent: InfoHash = V1) -> None:
        self.policy.dial_failed(DialFailure(torrent, address, "connect_failed"))


async def test_a_failed_dial_asks_the_peer_that_listed_it_once_per_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig(rendezvous_interval=300.0)
    relay = rig.listed(TARGET)
    rig.fail(TARGET)
    assert rig.sent == [(relay, TARGET)]
    assert rig.policy.counts(V1) == HolepunchCounts(rendezvous=1)
    rig.fail(TARGET)  # too soon
    await trio.sleep(299.0)
    rig.fail(TARGET)
    assert len(rig.sent) == 1
    assert rig.policy.statistics().too_soon == 2
    await trio.sleep(1.0)
    rig.fail(TARGET)
    assert len(rig.sent) == 2
    assert rig.policy.counts(V1).rendezvous == 2


async def test_no_rendezvous_without_a_relay_that_would_do_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    rig.fail(TARGET)  # not learnt from PEX
    rig.listed(TARGET, fake_peer(holepunch=False))  # the relay does not speak ut_holepunch
    rig.fail(TARGET)
    rig.listed(TARGET, flags=PexFlags.UTP)  # the target was not flagged as speaking it
    rig.fail(TARGET)
    rig.listed(TARGET)
    rig.answer = False  # the relay left meanwhile, or its queue is full
    rig.fail(TARGET)
    assert rig.policy.statistics().no_relay == 4
    assert rig.policy.counts(V1) == HolepunchCounts()
    rig.answer = True
    rig.fail(TARGET)  # not counted as asked: tried again at once
    assert rig.policy.counts(V1).rendezvous == 1


async def test_nothing_before_the_manager_is_attached() -> None:
    rig = Rig()
    rig.policy._manager = None
    rig.listed(TARGET)
    rig.fail(TARGET)
    assert rig.sent == []


async def test_a_relay_is_asked_no_faster_than_it_relays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig()
    relay = fake_peer()
    targets = [PeerAddress(IPv4Address(f"10.0.1.{n}"), 6881) for n in range(1, 8)]
    for target in targets:
        rig.listed(target, relay)
    for target in targets[:6]:
        rig.fail(target)
    assert len(rig.sent) == DEFAULT_HOLEPUNCH_RELAY_BURST
    assert rig.policy.statistics().relay_busy == 1
    await trio.sleep(1 / DEFAULT_HOLEPUNCH_RELAY_RATE)
    rig.fail(targets[6])
    assert len(rig.sent) == DEFAULT_HOLEPUNCH_RELAY_BURST + 1
    rig.policy.peer_removed(rig.manager, relay)  # its budget is forgotten with it
    assert rig.policy._budgets == {}


async def test_a_connect_is_dialled_over_utp_only_and_its_failure_asks_nobody(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig(dial_ttl=30.0)
    rig.listed(TARGET)
    rig.policy._on_connect(V1, TARGET)
    assert rig.dialer.hints == [(TARGET, 30.0, True)]
    assert rig.handshaker.dials == [(V1, TARGET)]
    assert rig.policy.counts(V1) == HolepunchCounts(connects=1)
    rig.fail(TARGET)  # the holepunch's own dial: libtorrent's holepunch mode asks nobody
    assert rig.sent == []
    assert rig.policy.statistics().no_relay == 0


async def test_a_peer_a_connect_brought_is_counted_once_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig(dial_ttl=30.0)
    rig.policy._on_connect(HYBRID, TARGET)
    peer = fake_peer(str(TARGET), info_hash=HYBRID)
    other_torrent = fake_peer(str(TARGET), info_hash=V1)
    rig.policy.peer_added(rig.manager, other_torrent)  # the same address, another torrent
    rig.policy.peer_added(rig.manager, peer)
    rig.policy.peer_added(rig.manager, peer)  # the other direction's connection too
    assert rig.policy.counts(HYBRID) == HolepunchCounts(connects=1, peers=1)
    # Found by any of the torrent's swarm ids (a magnet's hash grows its v2 half).
    assert rig.policy.counts(InfoHash(v2=b"\x33" * 32)).peers == 1
    assert rig.policy.counts(V1) == HolepunchCounts()
    late = PeerAddress(IPv4Address("10.0.0.10"), 6881)
    rig.policy._on_connect(HYBRID, late)
    await trio.sleep(30.0)
    rig.policy.peer_added(rig.manager, fake_peer(str(late), info_hash=HYBRID))
    assert rig.policy.counts(HYBRID).peers == 1
    stats = rig.policy.statistics()
    assert (stats.connects, stats.peers) == (2, 1)


async def test_no_utp_socket_of_the_family_no_holepunch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = Rig(families=(4,))
    rig.listed(V6_TARGET)
    rig.fail(V6_TARGET)
    rig.policy._on_connect(V1, V6_TARGET)
    assert (rig.sent, rig.handshaker.dials, rig.dialer.hints) == ([], [], [])
    assert rig.policy.counts(V1) == HolepunchCounts()


async def test_tables_are_bounded_and_expire(autojump_clock: trio.testing.MockClock) -> None:
    rig = Rig(max_addresses=3, rendezvous_interval=10.0, dial_ttl=5.0)
    addresses = [PeerAddress(IPv4Address(f"10.0.2.{n}"), 6881) for n in range(1, 6)]
    for address in addresses:
        rig.listed(address, fake_peer(f"10.0.3.{address.host.packed[-1]}:6881"))
        rig.fail(address)
        rig.policy._on_connect(V1, address)
    assert list(rig.policy._asked) == addresses[2:]
    assert list(rig.policy._punching) == addresses[2:]
    await trio.sleep(5.0)
    rig.policy.tick(rig.manager, trio.current_time())
    assert not rig.policy._punching
    assert list(rig.policy._asked) == addresses[2:]
    await trio.sleep(5.0)
    rig.policy.tick(rig.manager, trio.current_time())
    assert not rig.policy._asked


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("rendezvous_interval", 0),
        ("rendezvous_interval", float("inf")),
        ("dial_ttl", -1.0),
        ("dial_ttl", True),
        ("max_addresses", 0),
        ("max_addresses", 2.5),
    ],
)
def test_policy_settings_are_checked(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        HolepunchPolicy(
            handshaker=FakeHandshaker(),  # type: ignore[arg-type]
            pex=FakePex(),  # type: ignore[arg-type]
            dialer=FakeDialer(),  # type: ignore[arg-type]
            **{option: value},  # type: ignore[arg-type]
        )


def test_the_policy_watches_peers_only() -> None:
    policy = Rig().policy
    peer = fake_peer()
    assert policy.handshake_fields(peer) == {}
    assert not policy.message_received(SimpleNamespace(), peer, object())  # type: ignore[arg-type]
