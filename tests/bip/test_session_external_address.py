"""The session learns its external address and recognises itself (PEX, holepunch).

S listens on 127.0.0.1 and votes with ``accept_local`` (loopback stands in for the internet).
Three other sessions, each on its own 127.0.0.x (one voter each) and each in its own torrent
(so that they never learn of each other and PEX between them stays quiet), tell S in their
extended handshake that they see it at ``127.0.0.9`` (a made-up public address). S decides
``127.0.0.9``; that address with S's port is then ours: a PEX message naming it is not
dialled, and a rendezvous for it is refused (``NoSelf``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from _engine_helpers import address_of, loopback_config, make_torrent, write_content
from _http_tracker_server import answer, http_server, reply
from hypothesis import given, settings
from hypothesis import strategies as st

from bip._client import Session, TorrentOptions, open_session
from bip._client._discovery import TrackerAnnouncer
from bip._client._external_address import ExternalAddresses
from bip._client._http_tracker_codec import parse_announce_response
from bip._client._session import _dht_decided
from bip._client._torrent import Torrent
from bip_bencode import encode
from bip_handshake import PeerAddress
from bip_handshake._external import ExternalIPVoter, VoteSource
from bip_metainfo import InfoHash, Metainfo
from bip_peer import HolepunchError, HolepunchService, Peer, PeerExchange, PeerManager, PexMessage
from bip_peer._pex import MAX_OUR_ADDRESSES, PexInbox

DEADLINE = 20.0
S_HOST = "127.0.0.1"
SEEN_AT = IPv4Address("127.0.0.9")  # where the others say they see S


class SaysYourIp:
    """A peer service: ``yourip`` in our extended handshake is ``SEEN_AT``, whoever the peer
    is (what peers on the internet would see of S behind its NAT)."""

    def __init__(self, seen_at: IPv4Address | IPv6Address = SEEN_AT) -> None:
        self._packed = seen_at.packed

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {"yourip": self._packed}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        return None

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        return None

    def tick(self, manager: PeerManager, now: float) -> None:
        return None


async def wait_until(predicate: object) -> None:
    """Poll every 20 ms (the caller bounds the whole test in time)."""
    assert callable(predicate)
    while not predicate():
        await trio.sleep(0.02)


def _torrents(tmp_path: Path, count: int) -> list[Metainfo]:
    return [
        make_torrent(write_content(tmp_path / f"content{n}", (20_000 + n,), seed=n), "v1")
        for n in range(count)
    ]


def _peer_of(torrent: Torrent, address: PeerAddress) -> Peer:
    [peer] = [p for p in torrent.peers if p.address == address]
    return peer


async def _join(
    stack: AsyncExitStack, tmp_path: Path, host: str, torrent: Metainfo, target: Session
) -> tuple[Session, Torrent]:
    """A session on ``host`` that says ``yourip`` is SEEN_AT and joins ``target`` in
    ``torrent``."""
    session = await stack.enter_async_context(open_session(loopback_config(listen=((host, 0),))))
    session.manager.add_service(SaysYourIp())
    joined = await session.add_torrent(
        torrent, TorrentOptions(tmp_path / host, peers=(address_of(target),))
    )
    return session, joined


async def test_peers_yourip_decides_and_we_recognise_ourselves(tmp_path: Path) -> None:
    torrents = _torrents(tmp_path, 4)
    with trio.fail_after(DEADLINE):
        async with AsyncExitStack() as stack:
            s = await stack.enter_async_context(
                open_session(
                    loopback_config(listen=((S_HOST, 0),)),
                    external_voter=ExternalIPVoter(accept_local=True),
                )
            )
            assert not s.external_addresses
            external = s.external
            assert external is not None
            at_s = [
                await s.add_torrent(t, TorrentOptions(tmp_path / f"s{n}"))
                for n, t in enumerate(torrents)
            ]
            port = address_of(s).port
            ours = PeerAddress(SEEN_AT, port)
            others = []
            for n in range(3):
                others.append(await _join(stack, tmp_path, f"127.0.0.{n + 2}", torrents[n], s))
                if n < 2:
                    # Not decided on fewer than three peers' word.
                    await wait_until(lambda n=n: external.voter.statistics().votes == n + 1)
                    assert not s.external_addresses
            await wait_until(lambda: s.external_addresses != ())
            assert s.external_addresses == (ours,)  # TCP and uTP share the port
            assert external.voter.decided == {4: SEEN_AT}
            assert ours in s.pex.our_addresses
            assert s.holepunch is not None
            assert ours in s.holepunch.service.our_addresses

            # PEX from a peer connected before the decision: ours is not taken, another is.
            l2, at_l2 = others[0]
            to_s = _peer_of(at_l2, address_of(s))
            decoy = PeerAddress(SEEN_AT, port + 1 if port < 65535 else port - 1)
            assert l2.manager.send_nowait(
                to_s,
                PexMessage(
                    added=(ours, decoy),
                    added_flags=(0, 0),
                    added6=(),
                    added6_flags=(),
                    dropped=(),
                    dropped6=(),
                ),
            )
            await wait_until(lambda: s.pex.statistics().messages_received == 1)
            stats = s.pex.statistics()
            assert stats.addresses_discovered == 1  # the decoy only
            assert stats.addresses_ignored == 1

            # PEX from a peer added after the decision (another torrent): ours is not taken.
            late = await l2.add_torrent(
                torrents[3], TorrentOptions(tmp_path / "late", peers=(address_of(s),))
            )
            # Connected is not enough: PEX goes out once its extended handshake is in.
            await wait_until(
                lambda: any(
                    p.address == address_of(s) and p.extended_handshake is not None
                    for p in late.peers
                )
            )
            await wait_until(lambda: len(at_s[3].peers) == 1)
            assert l2.manager.send_nowait(
                _peer_of(late, address_of(s)),
                PexMessage(
                    added=(ours,),
                    added_flags=(0,),
                    added6=(),
                    added6_flags=(),
                    dropped=(),
                    dropped6=(),
                ),
            )
            await wait_until(lambda: s.pex.statistics().messages_received == 2)
            assert s.pex.statistics().addresses_discovered == 1
            assert s.pex.statistics().addresses_ignored == 2

            # A rendezvous for our own external address: S refuses it as NoSelf.
            assert l2.holepunch is not None
            errors: list[tuple[PeerAddress, int]] = []
            l2.holepunch.service._on_error = lambda info_hash, target, code: errors.append(
                (target, code)
            )
            assert l2.holepunch.service.rendezvous(l2.manager, to_s, ours)
            await wait_until(lambda: bool(errors))
            assert errors == [(ours, HolepunchError.NO_SELF)]
            assert s.holepunch.service.statistics().relay_refused == 1


async def test_trackers_external_ip_counts(tmp_path: Path) -> None:
    [torrent] = _torrents(tmp_path, 1)
    body = answer(interval=1800, peers=b"", external_ip=SEEN_AT.packed)
    with trio.fail_after(DEADLINE):
        async with (
            # Two trackers, two voters (by their address): a tracker outweighs a peer.
            http_server(reply(body), host="127.0.0.1") as one,
            http_server(reply(body), host="127.0.0.2") as two,
            open_session(
                loopback_config(listen=((S_HOST, 0),), trackers=True),
                external_voter=ExternalIPVoter(accept_local=True),
            ) as s,
        ):
            await s.add_torrent(
                torrent, TorrentOptions(tmp_path / "s", extra_trackers=(one.url, two.url))
            )
            await wait_until(lambda: bool(s.external_addresses))
            assert s.external_addresses == (PeerAddress(SEEN_AT, address_of(s).port),)
            assert s.external is not None
            assert s.external.voter.statistics().votes == 2


@pytest.mark.parametrize(
    "external_ip",
    [b"\x7f\x00\x09", b"127.0.0.9", b"", b"\x00" * 17, 2130706441, [b"\x7f\x00\x00\x09"]],
)
async def test_a_malformed_external_ip_is_ignored(tmp_path: Path, external_ip: object) -> None:
    [torrent] = _torrents(tmp_path, 1)
    somebody = PeerAddress(IPv4Address("127.0.0.5"), 1)
    body = answer(interval=1800, peers=somebody.to_compact(), external_ip=external_ip)
    with trio.fail_after(DEADLINE):
        async with (
            http_server(reply(body), host="127.0.0.1") as one,
            http_server(reply(body), host="127.0.0.2") as two,
            open_session(
                loopback_config(listen=((S_HOST, 0),), trackers=True),
                external_voter=ExternalIPVoter(accept_local=True),
            ) as s,
        ):
            added = await s.add_torrent(
                torrent, TorrentOptions(tmp_path / "s", extra_trackers=(one.url, two.url))
            )
            [announcer] = [a for a in added._sources if isinstance(a, TrackerAnnouncer)]
            # Both answers were read (an update per answer casts its vote) ...
            await wait_until(
                lambda: (
                    len(announcer.status()) == 2
                    and all(status.announces >= 1 for status in announcer.status())
                )
            )
            # ... and their external ip left alone.
            assert s.external is not None
            assert s.external.voter.statistics().votes == 0
            assert not s.external_addresses


class _FakeDht:
    """What ExternalAddresses reads of a DHT: its decided addresses."""

    def __init__(self) -> None:
        self.decided: dict[int, PeerAddress] = {}

    def read(self) -> Mapping[int, PeerAddress]:
        return self.decided


class _Users:
    def __init__(self) -> None:
        self.ours: set[PeerAddress] = set()

    def add_our_address(self, address: PeerAddress) -> None:
        self.ours.add(address)

    def remove_our_address(self, address: PeerAddress) -> None:
        self.ours.discard(address)


async def test_dht_and_tracker_votes_and_a_change(autojump_clock: object) -> None:
    dht = _FakeDht()
    users = _Users()
    external = ExternalAddresses(
        ExternalIPVoter(),
        ports=[6881, 6881, 0, 7000],
        users=[users],
        dht_addresses=dht.read,  # type: ignore[arg-type]
    )
    me = IPv4Address("81.2.69.160")
    dht.decided[4] = PeerAddress(me, 1234)
    external.tick(None, trio.current_time())  # type: ignore[arg-type]
    assert not external.addresses  # the DHT alone is one voter
    external.tick(None, trio.current_time())  # type: ignore[arg-type]
    assert external.voter.statistics().votes == 1  # and not asked again at once
    external.tracker_vote(me, IPv4Address("9.9.9.9"))
    assert external.addresses == (PeerAddress(me, 6881), PeerAddress(me, 7000))
    assert users.ours == set(external.addresses)
    # A user added later hears of them at once.
    late = _Users()
    external.add_user(late)
    assert late.ours == users.ours
    # The address changes: three peers say so; the old addresses are dropped.
    new = IPv4Address("81.2.69.200")
    for n in range(3):
        external.vote(new, IPv4Address(f"5.6.7.{n + 1}"), VoteSource.PEER, trio.current_time())
    assert external.addresses == (PeerAddress(new, 6881), PeerAddress(new, 7000))
    assert users.ours == late.ours == set(external.addresses)
    # The DHT still says the old one: it votes again only after DHT_VOTE_INTERVAL.
    await trio.sleep(61)
    external.tick(None, trio.current_time())  # type: ignore[arg-type]
    assert external.voter.statistics().votes == 6
    # Its lone vote decides nothing when the round runs out.
    dht.decided.clear()
    await trio.sleep(400)
    external.tick(None, trio.current_time())  # type: ignore[arg-type]
    assert external.voter.decided == {4: new}
    # Two peers' votes do, when their round runs out (a clear leader of two voters).
    third = IPv4Address("81.2.69.201")
    for n in range(2):
        external.vote(third, IPv4Address(f"5.6.8.{n + 1}"), VoteSource.PEER, trio.current_time())
    assert external.voter.decided == {4: new}
    await trio.sleep(400)
    external.tick(None, trio.current_time())  # type: ignore[arg-type]
    assert external.voter.decided == {4: third}
    assert users.ours == {PeerAddress(third, 6881), PeerAddress(third, 7000)}


def test_add_our_address_is_bounded_and_reversible() -> None:
    constructed = PeerAddress(IPv4Address("10.0.0.1"), 1)
    inbox = PexInbox(our_addresses=[constructed])
    added = [PeerAddress(IPv4Address("81.2.0.1"), port) for port in range(1, 200)]
    for address in added:
        inbox.add_our_address(address)
    assert len(inbox.our_addresses) == MAX_OUR_ADDRESSES + 1
    assert constructed in inbox.our_addresses  # never evicted
    assert added[-1] in inbox.our_addresses
    assert added[0] not in inbox.our_addresses
    inbox.remove_our_address(added[-1])
    inbox.remove_our_address(constructed)  # a listening address: only learnt ones go
    inbox.remove_our_address(PeerAddress(IPv4Address("1.1.1.1"), 1))  # unknown: no error
    assert added[-1] not in inbox.our_addresses
    assert constructed in inbox.our_addresses
    mapped = PeerAddress(IPv6Address("::ffff:81.2.9.9"), 5)
    inbox.add_our_address(mapped)
    assert PeerAddress(IPv4Address("81.2.9.9"), 5) in inbox.our_addresses
    with pytest.raises(TypeError):
        inbox.add_our_address("81.2.9.9:5")  # type: ignore[arg-type]

    class _Sink:
        def discovered(self, info_hash: InfoHash, addresses: object, source: str) -> None:
            return None

    pex = PeerExchange(_Sink())  # type: ignore[arg-type]
    pex.add_our_address(mapped)
    assert pex.our_addresses == {mapped.normalized()}
    pex.remove_our_address(mapped)
    assert pex.our_addresses == frozenset()
    service = HolepunchService()
    service.add_our_address(mapped)
    assert service.our_addresses == {mapped.normalized()}
    service.remove_our_address(mapped)
    assert service.our_addresses == frozenset()
    with pytest.raises(TypeError):
        service.add_our_address(None)  # type: ignore[arg-type]


def test_the_dht_decision_is_read_from_its_node() -> None:
    me = PeerAddress(IPv4Address("81.2.69.160"), 6881)
    node = SimpleNamespace(external_addresses={4: me, 6: "not an address", 5: me})
    read = _dht_decided(SimpleNamespace(node=node))
    assert read is not None
    assert read() == {4: me}
    # A DHT of the user's without a node (or a node without the attribute) never votes.
    read = _dht_decided(SimpleNamespace())
    assert read is not None
    assert read() == {}
    assert _dht_decided(None) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x51\x02\x45\xa0", IPv4Address("81.2.69.160")),
        (IPv6Address("2a00:1450:4001:80b::200e"), IPv6Address("2a00:1450:4001:80b::200e")),
        (IPv6Address("::ffff:81.2.69.160"), IPv4Address("81.2.69.160")),
        (b"\x51\x02\x45", None),
        (b"", None),
        (b"\x00" * 17, None),
        (b"81.2.69.160", None),
        (1359103392, None),
        ([b"\x51\x02\x45\xa0"], None),
        ({b"ip": b"\x51\x02\x45\xa0"}, None),
    ],
)
def test_the_codec_reads_external_ip(value: object, expected: object) -> None:
    raw = value.packed if isinstance(value, IPv4Address | IPv6Address) else value
    fields: dict[bytes, Any] = {b"interval": 60, b"external ip": raw}
    parsed = parse_announce_response(encode(fields))
    assert parsed.external_ip == expected
    assert parse_announce_response(encode({b"interval": 60})).external_ip is None


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        st.binary(max_size=20) | st.integers(),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.binary(max_size=4), inner, max_size=3)
        ),
        max_leaves=6,
    )
)
def test_any_external_ip_is_read_or_ignored(value: object) -> None:
    fields: dict[bytes, Any] = {b"interval": 60, b"external ip": value}
    parsed = parse_announce_response(encode(fields))
    if isinstance(value, bytes) and len(value) in (4, 16):
        assert isinstance(parsed.external_ip, IPv4Address | IPv6Address)
    else:
        assert parsed.external_ip is None
