"""A hostile-client campaign against a running UDP tracker on loopback (BEP 15, BEP 41).

The server listens on 127.0.0.1; attackers send from other 127.0.0.X addresses with plain
non-blocking sockets, in chunks that the server drains before the next (so that no datagram is
lost to a full socket buffer and every count below is exact). After each campaign two honest
bip_utracker clients must still find each other, nothing may be logged at ERROR or with a
traceback, and what the server keeps stays within its bounds.

What can only be tried at the sans-IO core (a source port 0, an IPv4-mapped address on a
dual-stack socket, the passing of time) is tried there, at the end.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
from collections import Counter
from collections.abc import Iterable, Iterator

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_utracker._client import open_tracker_client
from bip_utracker._codec import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Response,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_response,
)
from bip_utracker._server import TrackerServer, serve_tracker
from bip_utracker._server_core import (
    BAD_CONNECTION_ID,
    DEFAULT_MAX_RESPONSE_SIZE,
    Address,
    ServerConfig,
    TrackerServerCore,
)

PEER_ID = b"-XX0001-" + bytes(12)
HONEST_HOSTS = ("127.0.0.200", "127.0.0.201")
CHUNK = 32  # datagrams sent before the server must have read them all
_EVENT_AT, _IP_AT, _KEY_AT, _NUM_WANT_AT, _PORT_AT = 80, 84, 88, 92, 96


class Attacker:
    """A raw UDP socket on one loopback address, counting what it sends and gets back."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.host = host
        self.target = target
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.bytes_out = 0
        self.bytes_in = 0
        self.replies: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)
        self.bytes_out += len(data)

    def drain(self) -> list[bytes]:
        got: list[bytes] = []
        for _ in range(100_000):  # bounded: a reply per datagram sent at most
            try:
                data = self.sock.recv(65_536)
            except BlockingIOError:
                break
            got.append(data)
            self.bytes_in += len(data)
        self.replies.extend(got)
        return got


class Campaign:
    """Attackers against one server, and the bookkeeping to know when it has read everything."""

    def __init__(self, server: TrackerServer) -> None:
        self.server = server
        self.expected = server.statistics().datagrams
        self.attackers: list[Attacker] = []

    def attacker(self, host: str) -> Attacker:
        one = Attacker(host, self.server.address)
        self.attackers.append(one)
        return one

    async def settle(self) -> None:
        """Wait until the server has read every datagram sent, then collect the replies."""
        with trio.fail_after(10):
            while self.server.statistics().datagrams < self.expected:
                await trio.lowlevel.checkpoint()
        for one in self.attackers:
            one.drain()

    async def send(
        self, attacker: Attacker, packets: Iterable[bytes], *, honest: bytes | None = None
    ) -> None:
        """Send *packets* from *attacker* in chunks the server drains before the next.

        With *honest*, two honest clients announce that torrent after the first chunk, while
        the server is in the middle of the campaign (see :func:`honest_exchange`).
        """
        pending = 0
        for packet in packets:
            attacker.send(packet)
            self.expected += 1
            pending += 1
            if pending == CHUNK:
                await self.settle()
                pending = 0
                if honest is not None:
                    await honest_exchange(self.server, honest)
                    self.expected = self.server.statistics().datagrams  # theirs counted too
                    honest = None
        await self.settle()

    async def request(self, attacker: Attacker, packet: bytes) -> Response:
        """One request and its one reply."""
        before = len(attacker.replies)
        await self.send(attacker, [packet])
        (reply,) = attacker.replies[before:]
        return decode_response(reply, family=6 if ":" in attacker.host else 4)

    async def connect(self, attacker: Attacker) -> int:
        response = await self.request(attacker, ConnectRequest(1).encode())
        assert isinstance(response, ConnectResponse)
        return response.connection_id

    def close(self) -> None:
        for one in self.attackers:
            one.sock.close()


def announce_packet(
    cid: int,
    info_hash: bytes,
    *,
    port: int = 6881,
    left: int = 1,
    event: int = AnnounceEvent.STARTED,
    num_want: int = -1,
    ip: int = 0,
    key: int = 0,
    transaction_id: int = 7,
) -> bytes:
    packet = bytearray(
        AnnounceRequest(
            cid,
            transaction_id,
            info_hash,
            PEER_ID,
            0,
            left,
            0,
            AnnounceEvent.NONE,
            ip,
            key,
            num_want,
            port,
        ).encode()
    )
    struct.pack_into(">I", packet, _EVENT_AT, event)  # any value, in range or not
    return bytes(packet)


def hashes(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    return (rng.randbytes(20) for _ in range(count))


async def honest_exchange(server: TrackerServer, info_hash: bytes) -> None:
    """Two bip_utracker clients announce one torrent; the second gets the first, in time (or,
    in a swarm too large to be answered whole, is answered and the first is in the swarm)."""
    url = f"udp://127.0.0.1:{server.address[1]}/announce"
    with trio.fail_after(10):
        async with (
            open_tracker_client(bind_v4=HONEST_HOSTS[0], bind_v6=None) as first,
            open_tracker_client(bind_v4=HONEST_HOSTS[1], bind_v6=None) as second,
        ):
            await first.announce(url, info_hash, peer_id=PEER_ID, port=1111, left=0)
            answer = await second.announce(url, info_hash, peer_id=PEER_ID, port=2222, left=5)
    honest = PeerAddress.parse(f"{HONEST_HOSTS[0]}:1111")
    if answer.seeders + answer.leechers <= server.core.config.default_num_want:
        assert honest in answer.peers
    else:
        assert len(answer.peers) == server.core.config.default_num_want
        assert server.store is not None
        assert honest in server.store.peers(info_hash)


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No error, no traceback, and no record per datagram: thousands of them were sent."""
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == []
    assert len(caplog.records) < 40


def limiter_size(server: TrackerServer) -> int:
    limiter = server.core._limiter
    return 0 if limiter is None else len(limiter)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")


# -- connection ids ---------------------------------------------------------------------------


async def test_forged_and_foreign_connection_ids_are_refused_without_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ServerConfig(rate_limit=None)
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        campaign = Campaign(server)
        owner, thief = campaign.attacker("127.0.0.2"), campaign.attacker("127.0.0.3")
        stolen = await campaign.connect(owner)
        # Another address's id, and a thousand guessed ones, for announces and scrapes.
        rng = random.Random(1)
        forged = [stolen] + [rng.getrandbits(64) for _ in range(1000)]
        packets: list[bytes] = []
        for n, cid in enumerate(forged):
            info_hash = n.to_bytes(20, "big")
            packets.append(announce_packet(cid, info_hash, transaction_id=n))
            packets.append(ScrapeRequest(cid, n, (info_hash,)).encode())
        await campaign.send(thief, packets, honest=b"\xa0" * 20)
        assert len(thief.replies) == len(packets)
        for packet, reply in zip(packets, thief.replies, strict=True):
            assert isinstance(decode_response(reply), ErrorResponse)
            assert decode_response(reply).message == BAD_CONNECTION_ID  # type: ignore[union-attr]
            assert len(reply) <= len(packet)  # no amplification, even for a 36-byte scrape
        stats = server.statistics()
        assert stats.bad_connection_id == len(packets)
        assert (stats.swarms, stats.peers) == (1, 2)  # the honest clients' swarm only
        # The owner's id still works for the owner.
        response = await campaign.request(owner, announce_packet(stolen, b"\x01" * 20))
        assert isinstance(response, AnnounceResponse)
        campaign.close()
        await honest_exchange(server, b"\xaa" * 20)
    assert_quiet(caplog)


async def test_connect_flood_keeps_no_state(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_tracker(("127.0.0.1", 0)) as server:
        campaign = Campaign(server)
        sizes: list[int] = []
        for round_ in range(3):
            for n in range(10):
                one = campaign.attacker(f"127.0.{round_ + 1}.{n + 1}")
                await campaign.send(
                    one,
                    (ConnectRequest(t).encode() for t in range(100)),
                    honest=b"\xa1" * 20 if round_ == n == 0 else None,
                )
            sizes.append(limiter_size(server))
        stats = server.statistics()
        assert stats.connects == 3000 + 2
        assert all(len(reply) == 16 for one in campaign.attackers for reply in one.replies)
        assert (stats.swarms, stats.peers) == (1, 2)
        # The ids are MACs (nothing per client); the rate limiter holds one float per address
        # and forgets beyond its bound.
        assert max(sizes) <= 32 <= server.core.config.max_rate_limited_addresses
        assert not hasattr(server.core._ids, "__dict__")
        campaign.close()
        await honest_exchange(server, b"\xab" * 20)
    assert_quiet(caplog)


async def test_one_address_flooding_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    config = ServerConfig(rate_limit=1.0, rate_burst=50)
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        campaign = Campaign(server)
        flooder = campaign.attacker("127.0.0.4")
        await campaign.send(
            flooder, (ConnectRequest(t).encode() for t in range(600)), honest=b"\xa2" * 20
        )
        stats = server.statistics()
        assert len(flooder.replies) + stats.rate_limited == 600
        assert 50 <= len(flooder.replies) < 100  # the burst, and what refilled meanwhile
        campaign.close()
        await honest_exchange(server, b"\xac" * 20)  # other addresses are not affected
    assert_quiet(caplog)


# -- announces --------------------------------------------------------------------------------


async def test_distinct_info_hash_flood_stays_within_the_swarm_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ServerConfig(rate_limit=None, max_swarms=300, max_peers=2000, max_peers_per_swarm=100)
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        campaign = Campaign(server)
        swarms: list[int] = []
        for n in range(10):
            one = campaign.attacker(f"127.0.0.{10 + n}")
            cid = await campaign.connect(one)
            await campaign.send(
                one,
                (announce_packet(cid, h) for h in hashes(n, 150)),
                honest=b"\xa3" * 20 if n == 0 else None,
            )
            swarms.append(server.statistics().swarms)
        assert swarms[1:] == [300] * 9  # full after two attackers, and no further
        assert server.store is not None
        store = server.store.statistics()
        # The flood's swarms evicted one another on probation; the honest swarm made during the
        # flood was announced by two hosts, so it was promoted out of their way and stays.
        assert (store.swarms, store.peers, store.evicted_swarms) == (300, 301, 1201)
        assert (store.protected_swarms, store.evicted_protected_swarms) == (1, 0)
        assert b"\xa3" * 20 in server.store
        # Every announce was answered, each reply within the bound.
        replies = [r for one in campaign.attackers for r in one.replies]
        assert len(replies) == 1510
        assert max(len(r) for r in replies) <= DEFAULT_MAX_RESPONSE_SIZE
        campaign.close()
        await honest_exchange(server, b"\xad" * 20)
    assert_quiet(caplog)


async def test_crowded_swarm_is_bounded_and_answers_are_capped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ServerConfig(rate_limit=None, max_peers_per_swarm=1000)
    crowded = b"\x33" * 20
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        campaign = Campaign(server)
        peers: list[int] = []
        for n in range(50):  # 50 addresses, 30 ports each: 1500 peers
            one = campaign.attacker(f"127.0.1.{n + 1}")
            cid = await campaign.connect(one)
            await campaign.send(
                one,
                (announce_packet(cid, crowded, port=10_000 + p) for p in range(30)),
                honest=crowded if n == 0 else None,
            )
            assert server.store is not None
            peers.append(len(server.store.peers(crowded)))
        assert max(peers) == 1000 == peers[-1]
        probe = campaign.attacker("127.0.0.5")
        cid = await campaign.connect(probe)
        for num_want, expected in ((-1, 50), (-(2**31), 50), (0, 0), (7, 7), (2**31 - 1, 200)):
            response = await campaign.request(
                probe, announce_packet(cid, crowded, num_want=num_want, port=5)
            )
            assert isinstance(response, AnnounceResponse)
            assert len(response.peers) == expected
            assert response.leechers == 1000
        campaign.close()
        await honest_exchange(server, crowded)
        assert server.statistics().peers == 1000
    assert_quiet(caplog)


async def test_one_address_cannot_push_a_swarm_out_with_ports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The regression: peers are keyed by address and port, so one IP announcing a thousand
    ports was a thousand peers, each new one evicting the swarm's oldest: every honest peer
    was gone. Now one address keeps at most ``max_peers_per_host`` entries in a swarm; its
    further ports are answered but not recorded."""
    config = ServerConfig(rate_limit=None, max_peers_per_swarm=100)
    torrent = b"\x34" * 20
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        assert server.store is not None
        campaign = Campaign(server)
        honest = [campaign.attacker(f"127.0.4.{n + 1}") for n in range(20)]
        for one in honest:
            await campaign.request(one, announce_packet(await campaign.connect(one), torrent))
        flooder = campaign.attacker("127.0.3.1")
        cid = await campaign.connect(flooder)
        await campaign.send(
            flooder,
            (announce_packet(cid, torrent, port=1 + p) for p in range(1000)),
            honest=torrent,
        )
        assert len(flooder.replies) == 1 + 1000  # every announce answered
        present = set(server.store.peers(torrent))
        assert {PeerAddress.parse(f"127.0.4.{n + 1}:6881") for n in range(20)} <= present
        flooded = [p for p in present if str(p.host) == "127.0.3.1"]
        assert len(flooded) == config.max_peers_per_host == 32
        assert server.store.statistics().unrecorded_peers == 1000 - 32
        # A port it stops frees a place for another.
        await campaign.request(flooder, announce_packet(cid, torrent, port=1, event=3))
        await campaign.request(flooder, announce_packet(cid, torrent, port=5000))
        assert PeerAddress.parse("127.0.3.1:5000") in server.store.peers(torrent)
        campaign.close()
        await honest_exchange(server, torrent)
    assert_quiet(caplog)


async def test_announce_fields_cannot_hurt_others(caplog: pytest.LogCaptureFixture) -> None:
    config = ServerConfig(rate_limit=None)
    torrent = b"\x44" * 20
    victim_ip = int.from_bytes(socket.inet_aton("127.0.0.6"), "big")
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        assert server.store is not None
        campaign = Campaign(server)
        victim, attacker = campaign.attacker("127.0.0.6"), campaign.attacker("127.0.0.7")
        victim_cid, cid = await campaign.connect(victim), await campaign.connect(attacker)
        await campaign.request(victim, announce_packet(victim_cid, torrent, port=6881))
        victim_peer = PeerAddress.parse("127.0.0.6:6881")
        # Events out of range are regular announces of the sender's own address (4 is BEP
        # 21's paused; the others are counted as unknown), never a stop of anybody's.
        before = server.statistics()
        for event in (4, 5, 255, 2**32 - 1):
            response = await campaign.request(attacker, announce_packet(cid, torrent, event=event))
            assert isinstance(response, AnnounceResponse)
        after = server.statistics()
        assert after.malformed == before.malformed
        assert after.unknown_events == before.unknown_events + 3
        assert server.store.peers(torrent) == (victim_peer, PeerAddress.parse("127.0.0.7:6881"))
        # The ip field naming the victim, with "stopped": the attacker's own entry goes; the
        # victim stays.
        for key in range(5):
            await campaign.request(
                attacker,
                announce_packet(cid, torrent, port=6881, ip=victim_ip, key=key, event=3),
            )
        assert server.store.peers(torrent) == (victim_peer,)
        # The ip field naming the victim on a normal announce records the sender, and key
        # changes do not make new peers.
        for key in range(5):
            await campaign.request(
                attacker, announce_packet(cid, torrent, port=7000, ip=victim_ip, key=key)
            )
        assert server.store.peers(torrent) == (victim_peer, PeerAddress.parse("127.0.0.7:7000"))
        # Port 0 listens nowhere: answered with peers, never recorded, creates no swarm.
        response = await campaign.request(attacker, announce_packet(cid, torrent, port=0))
        assert isinstance(response, AnnounceResponse)
        assert victim_peer in response.peers
        assert len(server.store.peers(torrent)) == 2
        response = await campaign.request(attacker, announce_packet(cid, b"\x45" * 20, port=0))
        assert response == AnnounceResponse(7, 1800, 0, 0, ())
        assert b"\x45" * 20 not in server.store
        campaign.close()
        await honest_exchange(server, torrent)
    assert_quiet(caplog)


# -- scrapes ----------------------------------------------------------------------------------


async def test_scrape_abuse(caplog: pytest.LogCaptureFixture) -> None:
    config = ServerConfig(rate_limit=None)
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        campaign = Campaign(server)
        one = campaign.attacker("127.0.0.8")
        cid = await campaign.connect(one)
        many = list(hashes(5, 200))
        header = struct.pack(">QII", cid, 2, 9)
        garbage = [
            header,  # no info-hash
            header + many[0][:19],  # truncated
            header + many[0] + b"\x00",  # a byte over
        ]
        before = server.statistics().malformed
        await campaign.send(one, garbage)
        assert server.statistics().malformed == before + len(garbage)
        assert len(one.replies) == 1  # the connect reply only
        # Over BEP 15's 74: the first 74 answered (as opentracker), smaller than the request.
        for count in (75, 200):
            request = header + b"".join(many[:count])
            response = await campaign.request(one, request)
            assert response == ScrapeResponse(9, (ScrapeStats(0, 0, 0),) * 74)
            assert len(one.replies[-1]) < len(request)
        # 74 unknown info-hashes: zeros, no swarm made, and a reply smaller than the request.
        request = ScrapeRequest(cid, 9, tuple(many[:74])).encode()
        response = await campaign.request(one, request)
        assert response == ScrapeResponse(9, (ScrapeStats(0, 0, 0),) * 74)
        assert len(one.replies[-1]) < len(request)
        assert server.statistics().swarms == 0
        campaign.close()
        await honest_exchange(server, b"\xae" * 20)
    assert_quiet(caplog)


# -- framing ----------------------------------------------------------------------------------


def _framing_garbage(cid: int) -> Iterator[bytes]:
    connect = ConnectRequest(1).encode()
    announce = announce_packet(cid, b"\x55" * 20)
    scrape = ScrapeRequest(cid, 1, (b"\x55" * 20,)).encode()
    for packet in (connect, announce):
        for size in range(len(packet)):  # every truncation
            yield packet[:size]
    yield connect + b"\x00"  # a connect is exactly 16 bytes
    yield bytes(65_507)  # the largest UDP datagram
    yield connect[:8] + b"\x00\x00\x00\x00" + connect[12:] + bytes(65_000)
    for action in (3, 4, 255, 2**31, 2**32 - 1):  # unknown actions
        yield struct.pack(">QII", cid, action, 1) + bytes(98)
    yield scrape[:8] + struct.pack(">I", 0) + scrape[12:]  # a connect with a connection id
    # BEP 41 options with bad lengths: a type without its length byte, a length past the end
    # (an URL-data option longer than the datagram), more than 256 options of NOPs.
    yield announce + b"\x02"
    yield announce + b"\x02\xff" + b"/announce"
    yield announce + b"\x09\x05abc"
    yield announce + b"\x01" * 300
    yield announce + b"\x01" * 65_000
    yield announce + (b"\x02\x01/" * 257)


async def test_framing_garbage_gets_no_answer(caplog: pytest.LogCaptureFixture) -> None:
    config = ServerConfig(rate_limit=None)
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        campaign = Campaign(server)
        one = campaign.attacker("127.0.0.9")
        cid = await campaign.connect(one)
        garbage = list(_framing_garbage(cid))
        before = server.statistics()
        await campaign.send(one, garbage, honest=b"\xa4" * 20)
        after = server.statistics()
        assert after.malformed - before.malformed == len(garbage)
        assert after.datagrams - before.datagrams == len(garbage) + 4  # and the honest four
        assert len(one.replies) == 1  # the connect reply only
        assert (after.swarms, after.peers) == (1, 2)  # the honest clients' swarm only
        # Options that are well formed pass: padding after EndOfOptions, 256 NOPs, long URL
        # data over several options.
        accepted = [
            announce_packet(cid, b"\x56" * 20) + b"\x01\x00" + bytes(60_000),
            announce_packet(cid, b"\x56" * 20) + b"\x01" * 256,
            announce_packet(cid, b"\x56" * 20) + (b"\x02\xff" + b"x" * 255) * 4,
        ]
        for packet in accepted:
            assert isinstance(await campaign.request(one, packet), AnnounceResponse)
        campaign.close()
        await honest_exchange(server, b"\xaf" * 20)
    assert_quiet(caplog)


# -- amplification ----------------------------------------------------------------------------


def _forged_requests(rng: random.Random) -> Iterator[bytes]:
    """What an attacker can send without ever receiving at its source address: every kind of
    request, with a guessed connection id, in its smallest and largest forms."""
    for n in range(200):
        cid = rng.getrandbits(64)
        info_hash = rng.randbytes(20)
        yield ConnectRequest(n).encode()
        yield announce_packet(cid, info_hash, num_want=2**31 - 1)
        yield ScrapeRequest(cid, n, (info_hash,)).encode()  # 36 bytes: the smallest
        yield ScrapeRequest(cid, n, tuple(rng.randbytes(20) for _ in range(74))).encode()
        yield struct.pack(">QII", cid, rng.randrange(3, 2**32), n) + rng.randbytes(
            rng.randrange(40)
        )


async def test_a_forged_source_gets_no_amplification(caplog: pytest.LogCaptureFixture) -> None:
    """BEP 15's connection ids exist so that a tracker cannot be a reflector: whatever a sender
    that does not receive at its address sends, no reply is larger than its request."""
    config = ServerConfig(rate_limit=None)
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        campaign = Campaign(server)
        # A swarm with peers to hand out, should a forged announce get through.
        for n in range(20):
            peer = campaign.attacker(f"127.0.2.{n + 1}")
            await campaign.request(
                peer, announce_packet(await campaign.connect(peer), b"\x66" * 20)
            )
        reflector = campaign.attacker("127.0.0.10")
        packets = list(_forged_requests(random.Random(2)))
        per_request: list[tuple[int, int]] = []
        for n, packet in enumerate(packets):
            if n == len(packets) // 2:
                await honest_exchange(server, b"\xa5" * 20)
                campaign.expected = server.statistics().datagrams
            before = len(reflector.replies)
            await campaign.send(reflector, [packet])
            out = sum(len(r) for r in reflector.replies[before:])
            per_request.append((len(packet), out))
        assert all(out <= size for size, out in per_request)
        ratio = reflector.bytes_in / reflector.bytes_out
        assert ratio < 0.1  # measured 0.06: connects (16 for 16) and short errors only
        assert server.statistics().peers == 20 + 2
        campaign.close()
        await honest_exchange(server, b"\x66" * 20)
    assert_quiet(caplog)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_over_ipv6_answers_fit_and_forged_ids_reflect_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ServerConfig(rate_limit=None, max_peers_per_host=1000)
    torrent = b"\x67" * 20
    async with serve_tracker(("::1", 0), config=config) as server:
        campaign = Campaign(server)
        one = campaign.attacker("::1")
        cid = await campaign.connect(one)
        await campaign.send(one, (announce_packet(cid, torrent, port=1 + p) for p in range(300)))
        response = await campaign.request(
            one, announce_packet(cid, torrent, port=9999, num_want=2**31 - 1)
        )
        assert isinstance(response, AnnounceResponse)
        # IPv6's header is 20 bytes longer than the IPv4 one the size counts: 79 peers.
        assert len(response.peers) == (DEFAULT_MAX_RESPONSE_SIZE - 20 - 20) // 18
        assert all(peer.family == 6 for peer in response.peers)
        assert max(len(r) for r in one.replies) <= DEFAULT_MAX_RESPONSE_SIZE - 20
        before = len(one.replies)
        forged = list(_forged_requests(random.Random(3)))[:250]
        await campaign.send(one, forged)
        assert sum(len(r) for r in one.replies[before:]) <= sum(len(p) for p in forged)
        campaign.close()
    assert_quiet(caplog)


# -- what only the core can be shown ----------------------------------------------------------

SECRET = b"k" * 32


def _core(config: ServerConfig | None = None) -> TrackerServerCore:
    return TrackerServerCore(config or ServerConfig(rate_limit=None), secret=SECRET)


def _exchange(core: TrackerServerCore, data: bytes, addr: Address, now: float) -> list[bytes]:
    core.receive_datagram(data, addr, now)
    return [packet for packet, _ in core.datagrams_to_send()]


def _cid(core: TrackerServerCore, addr: Address, now: float) -> int:
    (packet,) = _exchange(core, ConnectRequest(1).encode(), addr, now)
    response = decode_response(packet)
    assert isinstance(response, ConnectResponse)
    return response.connection_id


def test_datagrams_from_port_0_are_dropped() -> None:
    core = _core()
    cid = _cid(core, ("10.0.0.1", 1), 0.0)
    for packet in (
        ConnectRequest(1).encode(),
        announce_packet(cid, b"\x77" * 20),
        ScrapeRequest(cid, 1, (b"\x77" * 20,)).encode(),
    ):
        assert _exchange(core, packet, ("10.0.0.1", 0), 0.0) == []
        assert _exchange(core, packet, ("2001:db8::1", 0, 0, 0), 0.0) == []
    stats = core.statistics()
    assert (stats.malformed, stats.swarms, stats.connects) == (6, 0, 1)


def test_an_id_replayed_after_expiry_is_refused() -> None:
    core = _core(ServerConfig(rate_limit=None, connection_id_window=60.0))
    addr: Address = ("10.0.0.2", 6881)
    cid = _cid(core, addr, 30.0)
    for now, valid in ((30.0, True), (119.0, True), (120.0, False), (10_000.0, False)):
        (packet,) = _exchange(core, announce_packet(cid, b"\x78" * 20), addr, now)
        response = decode_response(packet)
        assert isinstance(response, AnnounceResponse) is valid
        if not valid:
            assert response == ErrorResponse(7, BAD_CONNECTION_ID)
    # A stale id is refused again and again without any growth; a new connect works.
    for n in range(1000):
        _exchange(core, announce_packet(cid, n.to_bytes(20, "big")), addr, 20_000.0)
    assert core.statistics().swarms == 1
    fresh = _cid(core, addr, 20_000.0)
    (packet,) = _exchange(core, announce_packet(fresh, b"\x78" * 20), addr, 20_000.0)
    assert isinstance(decode_response(packet), AnnounceResponse)


def test_ipv4_mapped_addresses_are_the_ipv4_peer() -> None:
    """On a dual-stack socket an IPv4 client arrives as ``::ffff:a.b.c.d``: it is that IPv4
    peer (6-byte entries, IPv4 answers), and its stopped removes only its own entry."""
    core = _core()
    mapped: Address = ("::ffff:10.0.0.3", 5000, 0, 0)
    plain: Address = ("10.0.0.4", 5000)
    for addr in (mapped, plain):
        (packet,) = _exchange(core, announce_packet(_cid(core, addr, 0.0), b"\x79" * 20), addr, 0.0)
    response = decode_response(packet, family=4)
    assert isinstance(response, AnnounceResponse)
    assert response.peers == (PeerAddress.parse("10.0.0.3:6881"),)
    # A stopped from 10.0.0.4 for port 6881 leaves 10.0.0.3's entry in place.
    (packet,) = _exchange(
        core, announce_packet(_cid(core, plain, 0.0), b"\x79" * 20, event=3), plain, 0.0
    )
    assert core.store is not None
    assert core.store.peers(b"\x79" * 20) == (PeerAddress.parse("10.0.0.3:6881"),)


def test_an_error_to_an_unproven_sender_is_never_larger_than_its_request() -> None:
    """The regression: a 36-byte scrape with a guessed id was answered with 55 bytes (the old
    47-character message), a 1.5x reflector for anyone forging a victim's source address."""
    core = _core()
    victim: Address = ("10.0.0.5", 6881)
    for packet in (
        ScrapeRequest(12345, 1, (b"\x7a" * 20,)).encode(),
        announce_packet(12345, b"\x7a" * 20),
    ):
        (reply,) = _exchange(core, packet, victim, 0.0)
        assert len(reply) <= len(packet)
        assert decode_response(reply) == ErrorResponse(
            struct.unpack_from(">I", packet, 12)[0], BAD_CONNECTION_ID
        )


def test_sample_compact_answers_without_recording() -> None:
    from bip_utracker._swarm import SwarmStore

    store = SwarmStore(rng=random.Random(4))
    torrent = b"\x7b" * 20
    members = [bytes([10, 0, 0, n, 0x1A, 0xE1]) for n in range(1, 31)]
    for n, member in enumerate(members):
        store.announce_compact(torrent, member, n % 2, 2, 0, 0.0)
    asker = bytes([10, 0, 0, 99, 0, 0])
    assert store.sample_compact(b"\x7c" * 20, asker, 50, 1.0) == (0, 0, [])
    assert b"\x7c" * 20 not in store
    for num_want in (0, 1, 7, 29, 30, 31, 500):
        seeders, leechers, chosen = store.sample_compact(torrent, asker, num_want, 1.0)
        assert (seeders, leechers) == (15, 15)
        assert len(chosen) == min(num_want, 30)
        assert len(set(chosen)) == len(chosen)
        assert set(chosen) <= set(members)
    # A recorded asker is never named to itself.
    _, _, chosen = store.sample_compact(torrent, members[0], 30, 1.0)
    assert members[0] not in chosen
    assert len(chosen) == 29
    # The store's own rule, whoever calls it: a port-0 announce is answered, not recorded,
    # and creates no swarm.
    assert store.announce_compact(torrent, asker, 1, 2, 5, 2.0)[:2] == (15, 15)
    assert store.announce_compact(b"\x7d" * 20, asker, 1, 2, 5, 2.0) == (0, 0, [])
    assert b"\x7d" * 20 not in store
    assert asker not in store.sample_compact(torrent, members[1], 500, 3.0)[2]
    # IPv6 askers get IPv6 peers: there are none.
    assert store.sample_compact(torrent, bytes(16) + b"\x00\x00", 10, 1.0) == (15, 15, [])
    assert store.statistics().peers == 30
    # Expired peers are trimmed first.
    assert store.sample_compact(torrent, asker, 10, 1e9) == (0, 0, [])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # swarm
            st.integers(0, 3),  # host
            st.integers(1, 6),  # port
            st.sampled_from([0, 1, 2, 3]),  # event
            st.integers(0, 30),  # seconds later
        ),
        max_size=120,
    )
)
def test_property_host_counts_follow_every_removal(
    steps: list[tuple[int, int, int, int, int]],
) -> None:
    """Whatever announces, stops, evictions and expiry happen, each swarm's count per host is
    exactly its entries of that host, and never over the bound."""
    from bip_utracker._swarm import SwarmStore

    store = SwarmStore(
        peer_lifetime=40.0,
        max_swarms=2,
        max_peers_per_swarm=5,
        max_peers=8,
        max_peers_per_host=3,
        rng=random.Random(0),
    )
    now = 0.0
    for swarm, host, port, event, later in steps:
        now += later
        peer = bytes([10, 0, 0, host]) + port.to_bytes(2, "big")
        store.announce_compact(bytes([swarm]) * 20, peer, 1, event, 5, now)
        if later > 25:
            store.expire(now)
        for info_hash in store.info_hashes():
            found = store._find(info_hash)
            assert found is not None
            expected = Counter(key[:-2] for key in found.peers)
            assert found.hosts == dict(expected)
            assert all(count <= 3 for count in expected.values())
    stats = store.statistics()
    assert stats.peers == sum(len(store.peers(h)) for h in store.info_hashes())


def test_replies_fed_back_as_requests_get_no_answer() -> None:
    """A source forged to be another tracker (or this one) must not start a ping-pong: every
    reply this server sends is garbage to a tracker, so nothing comes back."""
    core = _core()
    addr: Address = ("10.0.0.6", 6881)
    cid = _cid(core, addr, 0.0)
    for n in range(30):
        _exchange(core, announce_packet(cid, b"\x7d" * 20, port=1000 + n), ("10.0.1.1", 1), 0.0)
    replies: list[bytes] = []
    for tid in (0, 1, 0x41727101980 & 0xFFFFFFFF, 2**32 - 1):
        replies += _exchange(core, ConnectRequest(tid).encode(), addr, 0.0)
        replies += _exchange(
            core, announce_packet(cid, b"\x7d" * 20, transaction_id=tid), addr, 0.0
        )
        replies += _exchange(
            core, ScrapeRequest(cid, tid, (b"\x7d" * 20,) * 74).encode(), addr, 0.0
        )
        replies += _exchange(core, ScrapeRequest(1, tid, (b"\x7d" * 20,)).encode(), addr, 0.0)
    assert len(replies) == 16
    other = _core()
    for reply in replies:
        for target in (core, other):
            assert _exchange(target, reply, ("10.0.0.7", 6969), 0.0) == []


def _accepts(data: bytes) -> bool:
    from bip_utracker._errors import MalformedPacketError
    from bip_utracker._options import parse_options

    try:
        parse_options(data)
    except MalformedPacketError:
        return False
    return True


_option_streams = st.lists(
    st.one_of(
        st.just(b"\x00"),
        st.integers(0, 300).map(lambda n: b"\x01" * n),
        st.tuples(st.integers(2, 255), st.binary(max_size=20)).map(
            lambda t: bytes([t[0], len(t[1])]) + t[1]
        ),
        st.binary(max_size=4),  # anything, truncated options included
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=600), _option_streams))
def test_property_the_quick_option_check_agrees_with_the_parser(data: bytes) -> None:
    """The server tells well-formed options from garbage without parsing them (a datagram of
    NOPs cost a hundred microseconds to parse, before the sender was proven); the verdict is
    the parser's, for every input, in every buffer type."""
    from bip_utracker._options import options_are_well_formed

    expected = _accepts(data)
    assert options_are_well_formed(data) is expected
    assert options_are_well_formed(memoryview(bytearray(b"\x00" + data))[1:]) is expected


@pytest.mark.parametrize(
    ("tail", "accepted"),
    [
        (b"\x01" * 256, True),
        (b"\x01" * 256 + b"\x00" + b"\x01" * 1000, True),
        (b"\x01" * 257, False),
        (b"\x01" * 65_000, False),
        (b"\x01" * 255 + b"\x02\x00", True),
        (b"\x01" * 256 + b"\x02\x00", False),
        ((b"\x02\xff" + b"x" * 255) * 4, True),
        (b"\x02\xff" + b"x" * 254, False),
    ],
)
def test_option_counts_at_the_bound(tail: bytes, accepted: bool) -> None:
    from bip_utracker._options import options_are_well_formed

    assert options_are_well_formed(tail) is accepted is _accepts(tail)


def test_stopped_announces_keep_no_swarm_alive() -> None:
    """Anybody may send ``stopped`` for a port it never announced: that used to make the swarm
    the most recently announced, so a trickle of them kept an emptied swarm from expiry and any
    swarm from eviction."""
    from bip_utracker._swarm import SwarmStore

    store = SwarmStore(peer_lifetime=10.0, max_swarms=2, rng=random.Random(5))
    a, b, c = (bytes([n]) * 20 for n in (1, 2, 3))
    peer = bytes([10, 0, 0, 1, 0x1A, 0xE1])
    store.announce_compact(a, peer, 1, 2, 50, 0.0)
    store.announce_compact(a, peer, 1, 3, 50, 1.0)  # its only peer leaves
    for n in range(9):
        stranger = bytes([10, 0, 1, n, 0x1A, 0xE1])
        assert store.announce_compact(a, stranger, 1, 3, 50, 2.0 + n) == (0, 0, [])
    assert store.expire(10.0) is False
    assert a not in store  # quiet since 0.0
    # Nor does it protect a live swarm from eviction: b is still the least recent.
    store.announce_compact(b, peer, 1, 2, 50, 20.0)
    store.announce_compact(a, peer, 1, 2, 50, 21.0)
    store.announce_compact(b, bytes([10, 0, 2, 1, 0, 1]), 1, 3, 50, 22.0)
    store.announce_compact(c, peer, 1, 2, 50, 23.0)
    assert list(store.info_hashes()) == [a, c]
