"""The UDP tracker client through a SOCKS5 proxy's UDP relay (``open_tracker_client(proxy=)``):
against bip_utracker's server on 127.0.0.1 behind the in-test proxy (tests/_socks_server.py),
remote DNS, a refusing proxy, a lost association, BEP 15's peer size by the tracker's family
through an IPv4 relay, oversized announces and unwritable datagrams (the client lives on),
a dual-stack tracker name sent to at the relay's family, and the relay socket's family by the
proxy's name (``proxy_udp_family``; a one-association proxy on ::1). The sans-IO part
(trackers named by host name) is tested on the core alone."""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
import trio
import trio.testing
from tests._resolvers import FixedResolver, has_ipv6_loopback
from tests._socks_server import (
    SocksServer,
    decode_datagram,
    decode_greeting,
    encode_datagram,
    encode_method,
    encode_reply,
    serve_socks5,
)
from tests._socks_server import decode_request as decode_socks_request

from bip_handshake import PeerAddress, PeerId, SocksError
from bip_handshake._socks_shell import ProxyConfig
from bip_handshake._socks_udp import proxy_udp_family
from bip_utracker._client import open_tracker_client
from bip_utracker._client_core import (
    AnnounceParams,
    AnnounceResult,
    RequestFailed,
    TrackerClientCore,
)
from bip_utracker._codec import (
    AnnounceEvent,
    AnnounceResponse,
    ConnectResponse,
    decode_request,
)
from bip_utracker._errors import LocalProtocolError, TrackerError
from bip_utracker._server import serve_tracker
from bip_utracker._server_core import TrackerServerCore

LOOPBACK = "127.0.0.1"
DEADLINE = 5.0
JUMP_AFTER = 0.03
"""Real seconds of idleness before a MockClock jumps: loopback I/O is done well before."""
SWARM = b"\x42" * 20
PEER_ID = PeerId(b"-BP0001-proxyproxy00")
PEERS6 = (PeerAddress(IPv6Address("2001:db8::7"), 6881), PeerAddress(IPv6Address("::1"), 51413))


def proxy_of(server: SocksServer, *, remote_dns: bool = False) -> ProxyConfig:
    return ProxyConfig(LOOPBACK, server.port, remote_dns=remote_dns)


@pytest.fixture
def tracker_sources(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every source address bip_utracker's server reads a datagram from, in order."""
    seen: list[tuple[str, int]] = []
    original = TrackerServerCore.receive_datagram

    def spy(self: TrackerServerCore, data: Any, addr: Any, now: float) -> None:
        seen.append((addr[0], addr[1]))
        original(self, data, addr, now)

    monkeypatch.setattr(TrackerServerCore, "receive_datagram", spy)
    return seen


async def test_announce_and_scrape_through_the_relay(
    tracker_sources: list[tuple[str, int]],
) -> None:
    with trio.fail_after(DEADLINE):
        async with serve_tracker((LOOPBACK, 0)) as tracker, serve_socks5() as proxy:
            url = f"udp://{LOOPBACK}:{tracker.address[1]}/announce"
            # A seed announced directly: the proxied leecher must hear of it.
            async with open_tracker_client(bind_v4=LOOPBACK, bind_v6=None) as direct:
                await direct.announce(url, SWARM, peer_id=PEER_ID, port=7001, left=0)
            tracker_sources.clear()
            async with open_tracker_client(
                bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy)
            ) as client:
                result = await client.announce(
                    url, SWARM, peer_id=PEER_ID, port=7002, left=5, event=AnnounceEvent.STARTED
                )
                scrape = await client.scrape(url, [SWARM])
                [ours] = client.local_addresses
                relayed = client.proxy_statistics
                stats = client.statistics()
                assert client.proxy == proxy_of(proxy)
    assert result.peers == (PeerAddress(IPv4Address(LOOPBACK), 7001),)
    assert (result.seeders, result.leechers) == (1, 1)
    assert result.tracker == PeerAddress(IPv4Address(LOOPBACK), tracker.address[1])
    assert scrape.stats(SWARM).seeders == 1
    # The tracker heard the relay only (connect, announce, scrape), never our socket.
    [association] = proxy.associations
    assert tracker_sources == [(LOOPBACK, association.relay_port)] * 3
    assert ours.port != association.relay_port
    assert association.relayed == association.returned == 3
    assert relayed is not None
    assert (relayed.sent, relayed.received, relayed.associations) == (3, 3, 1)
    assert (stats.datagrams_sent, stats.datagrams_received, stats.completed) == (3, 3, 2)


async def test_a_name_goes_to_a_proxy_that_resolves_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[object] = []
    original = trio.socket.getaddrinfo

    async def spy(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        return await original(host, *args, **kwargs)

    with trio.fail_after(DEADLINE):
        async with serve_tracker((LOOPBACK, 0)) as tracker, serve_socks5() as proxy:
            monkeypatch.setattr(trio.socket, "getaddrinfo", spy)
            port = tracker.address[1]
            async with open_tracker_client(
                bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy, remote_dns=True)
            ) as client:
                # Any spelling: one connection id serves the name.
                result = await client.announce(
                    f"udp://LocalHost:{port}/announce", SWARM, peer_id=PEER_ID, port=7003
                )
                scrape = await client.scrape(("localhost", port), [SWARM])
                stats = client.statistics()
    assert "localhost" not in {str(host).lower() for host in asked}
    # The answers came from where the proxy sent the name: as its relay reported it.
    assert result.tracker == scrape.tracker == PeerAddress(IPv4Address(LOOPBACK), port)
    assert stats.connects == 1
    assert stats.ignored_wrong_address == 0


async def test_a_proxy_refusing_udp_fails_requests_after_the_proxy_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = JUMP_AFTER
    with trio.fail_after(60):
        async with serve_socks5() as proxy:
            proxy.refuse_udp = True
            async with open_tracker_client(
                bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy), proxy_timeout=3.0
            ) as client:
                start = trio.current_time()
                with pytest.raises(TrackerError, match="command not supported") as raised:
                    await client.announce(
                        f"udp://{LOOPBACK}:6969", SWARM, peer_id=PEER_ID, port=7004
                    )
                assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)
                assert f"proxy {LOOPBACK}:{proxy.port}" in str(raised.value)
                with pytest.raises(TrackerError, match="no UDP association"):
                    await client.scrape(f"udp://{LOOPBACK}:6969", [SWARM])
                relayed = client.proxy_statistics
                stats = client.statistics()
    assert not proxy.associations
    assert relayed is not None
    assert relayed.sent == 0
    assert stats.datagrams_sent == 0  # nothing was even queued, let alone sent directly


async def test_a_request_waits_for_the_association_to_come_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = JUMP_AFTER
    with trio.fail_after(60):
        async with serve_tracker((LOOPBACK, 0)) as tracker, serve_socks5() as proxy:
            url = f"udp://{LOOPBACK}:{tracker.address[1]}"
            async with open_tracker_client(
                bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy)
            ) as client:
                await client.scrape(url, [SWARM])
                proxy.associations[0].close()
                await trio.sleep(0.5)
                lost = trio.current_time()
                # The socket associates again after its retry interval (5 s): within the
                # proxy timeout, so the request waits and goes through.
                await client.scrape(url, [SWARM])
                assert 4.0 < trio.current_time() - lost < 6.0
    assert len(proxy.associations) == 2


async def test_a_lost_association_fails_requests_in_flight_at_their_next_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = JUMP_AFTER
    with trio.fail_after(60):
        async with (
            serve_socks5() as proxy,
            open_tracker_client(bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy)) as client,
        ):
            failure: list[BaseException] = []

            async def announce() -> None:
                # 192.0.2.1 (TEST-NET): the in-test relay drops it, nobody answers.
                try:
                    await client.announce("udp://192.0.2.1:6969", SWARM, peer_id=PEER_ID, port=7005)
                except TrackerError as error:
                    failure.append(error)

            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                nursery.start_soon(announce)
                while not proxy.associations or proxy.associations[0].client is None:
                    await trio.sleep(0.01)
                proxy.refuse_udp = True
                proxy.associations[0].close()
            sent = client.send_errors
    # Failed at the first retransmission (15 s), not after BEP 15's hour of them.
    [error] = failure
    assert "no UDP association" in str(error)
    assert trio.current_time() - start == pytest.approx(15.0, abs=0.5)
    assert sent == 1


async def test_an_ipv6_trackers_answer_holds_18_byte_peers_through_an_ipv4_relay() -> None:
    class Recording(random.Random):
        """Remembers the transaction ids (and the key) it hands out."""

        drawn: list[int]

        def getrandbits(self, k: int) -> int:
            value = super().getrandbits(k)
            self.drawn.append(value)
            return value

    rng = Recording(3)
    rng.drawn = []
    # 2001:db8::1 is no loopback: the in-test relay drops what we send it, and the test
    # answers from the relay in the tracker's name.
    tracker = PeerAddress(IPv6Address("2001:db8::1"), 6969)
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as proxy,
            open_tracker_client(
                bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy), rng=rng
            ) as client,
            trio.open_nursery() as nursery,
        ):
            results: list[AnnounceResult] = []

            async def announce() -> None:
                results.append(await client.announce(tracker, SWARM, peer_id=PEER_ID, port=7006))

            nursery.start_soon(announce)
            while not proxy.associations or proxy.associations[0].dropped < 1:
                await trio.sleep(0.01)
            association = proxy.associations[0]
            # Each drawn number answered as a connect: only the connect's counts.
            for transaction_id in rng.drawn:
                reply = ConnectResponse(transaction_id, 99).encode()
                await association.send_to_client(encode_datagram(*tracker_of(tracker), reply))
            while association.dropped < 2:  # the announce, sent through the relay
                await trio.sleep(0.01)
            for transaction_id in rng.drawn:
                reply = AnnounceResponse(transaction_id, 1800, 1, 2, PEERS6).encode()
                await association.send_to_client(encode_datagram(*tracker_of(tracker), reply))
    [result] = results
    assert result.peers == PEERS6
    assert result.tracker == tracker


def tracker_of(address: PeerAddress) -> tuple[IPv4Address | IPv6Address, int]:
    return address.host, address.port


async def test_bad_proxy_settings() -> None:
    with pytest.raises(LocalProtocolError, match="ProxyConfig"):
        async with open_tracker_client(proxy="socks5://127.0.0.1:1"):  # type: ignore[arg-type]
            pass
    for timeout in (0, -1.0, float("inf"), True):
        with pytest.raises(LocalProtocolError, match="proxy_timeout"):
            async with open_tracker_client(
                proxy=ProxyConfig(LOOPBACK, 1),
                proxy_timeout=timeout,
            ):
                pass
    with pytest.raises(OSError, match="cannot bind"):
        async with open_tracker_client(bind_v4="not an address", proxy=ProxyConfig(LOOPBACK, 1)):
            pass


# -- the core: trackers named by host name ------------------------------------------------------


def named_announce(core: TrackerClientCore, name: tuple[str, int]) -> tuple[int, bytes]:
    """Start an announce to ``name``; the connect's transaction id and the datagram."""
    core.announce(name, AnnounceParams(SWARM, PEER_ID.value, port=6881), now=0.0)
    [(connect, to)] = core.datagrams_to_send(0.0)
    assert to == (name[0].lower(), name[1])
    return decode_request(connect).transaction_id, connect


@pytest.mark.parametrize(
    ("source", "peers"),
    [
        (PeerAddress(IPv6Address("2001:db8::5"), 6969), PEERS6),
        (
            PeerAddress(IPv4Address("192.0.2.5"), 6969),
            (PeerAddress(IPv4Address("192.0.2.9"), 1), PeerAddress(IPv4Address("10.0.0.1"), 2)),
        ),
        # A dual-stack proxy's view of an IPv4 tracker: 6-byte peers all the same.
        (
            PeerAddress(IPv6Address("::ffff:192.0.2.5"), 6969),
            (PeerAddress(IPv4Address("192.0.2.9"), 1),),
        ),
    ],
)
def test_a_named_trackers_answer_is_read_by_its_sources_family(
    source: PeerAddress, peers: tuple[PeerAddress, ...]
) -> None:
    core = TrackerClientCore(rng=random.Random(2))
    connect_id, _ = named_announce(core, ("Tracker.Example", 6969))
    core.receive_datagram(ConnectResponse(connect_id, 5).encode(), source, now=0.1)
    [(announce, to)] = core.datagrams_to_send(0.1)
    assert to == ("tracker.example", 6969)
    request = decode_request(announce)
    reply = AnnounceResponse(request.transaction_id, 1800, 0, 1, peers).encode()
    core.receive_datagram(reply, source, now=0.2)
    result = core.next_event()
    assert isinstance(result, AnnounceResult)
    assert result.peers == peers
    assert result.tracker == source.normalized()


def test_a_named_tracker_still_needs_the_transaction_id() -> None:
    core = TrackerClientCore(rng=random.Random(4))
    connect_id, _ = named_announce(core, ("tracker.example", 6969))
    anywhere = PeerAddress(IPv4Address("192.0.2.5"), 6969)
    core.receive_datagram(ConnectResponse(connect_id ^ 1, 5).encode(), anywhere, now=0.1)
    assert core.datagrams_to_send(0.1) == []
    assert core.statistics().ignored_unknown_transaction == 1
    # A tracker named by address keeps the address check.
    address = PeerAddress(IPv4Address("192.0.2.7"), 6969)
    core.announce(address, AnnounceParams(SWARM, PEER_ID.value, port=6881), now=0.0)
    [(connect, _)] = core.datagrams_to_send(0.0)
    reply = ConnectResponse(decode_request(connect).transaction_id, 5).encode()
    core.receive_datagram(reply, anywhere, now=0.1)
    assert core.statistics().ignored_wrong_address == 1


def test_fail_tracker_fails_its_requests_only() -> None:
    core = TrackerClientCore(rng=random.Random(5))
    named_announce(core, ("a.example", 1))
    core.announce(("a.example", 1), AnnounceParams(SWARM, PEER_ID.value, port=1), now=0.0)
    other = core.announce(("b.example", 1), AnnounceParams(SWARM, PEER_ID.value, port=1), 0.0)
    core.datagrams_to_send(0.0)
    assert core.fail_tracker(("a.example", 1), TrackerError("no association")) == 2
    events = [core.next_event(), core.next_event()]
    assert all(isinstance(event, RequestFailed) for event in events)
    assert core.next_event() is None
    assert core.statistics().requests_in_flight == 1
    assert core.statistics().failed == 2
    assert core.cancel(other)


@pytest.mark.parametrize(
    "name",
    [("127.0.0.1", 1), ("::1", 1), ("", 1), ("x" * 256, 1), ("é.example", 1), ("a", 0), ("a",)],
)
def test_bad_tracker_names(name: tuple[str, int]) -> None:
    core = TrackerClientCore(rng=random.Random(6))
    with pytest.raises(LocalProtocolError):
        core.announce(name, AnnounceParams(SWARM, PEER_ID.value, port=1), now=0.0)


# -- review of 4cb196f: oversized announces, tracker and proxy names by family -----------------


@pytest.mark.parametrize("proxied", [True, False], ids=["proxy", "direct"])
async def test_an_oversized_announce_is_refused_at_once_and_the_client_lives_on(
    proxied: bool,
) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_tracker((LOOPBACK, 0)) as tracker,
            serve_socks5() as proxy,
            open_tracker_client(
                bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy) if proxied else None
            ) as client,
        ):
            url = f"udp://{LOOPBACK}:{tracker.address[1]}/announce"
            # 65,300 bytes of URLData: past what SOCKS5's header leaves of a UDP datagram.
            with pytest.raises(LocalProtocolError, match="URLData"):
                await client.announce(url, SWARM, peer_id=PEER_ID, port=7010, url_data=b"x" * 65300)
            scrape = await client.scrape(url, [SWARM])
            stats = client.statistics()
    assert scrape.stats(SWARM).seeders == 0
    assert (stats.completed, stats.failed, stats.datagrams_sent) == (1, 0, 2)


async def test_a_datagram_the_relay_cannot_write_fails_its_request_not_the_client() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_tracker((LOOPBACK, 0)) as tracker,
            serve_socks5() as proxy,
            open_tracker_client(bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy)) as client,
        ):
            relay = client._relay
            assert relay is not None
            send = relay.sendto
            refusals = [ValueError("the datagram is too long"), TypeError("not a destination")]

            async def refusing(
                payload: bytes | bytearray | memoryview, destination: PeerAddress | tuple[str, int]
            ) -> None:
                if refusals:
                    raise refusals.pop(0)
                await send(payload, destination)

            relay.sendto = refusing  # type: ignore[method-assign]
            url = f"udp://{LOOPBACK}:{tracker.address[1]}"
            for _ in range(2):
                with pytest.raises(TrackerError, match="cannot reach tracker"):
                    await client.scrape(url, [SWARM])
            result = await client.announce(url, SWARM, peer_id=PEER_ID, port=7011)
            errors = client.send_errors
    assert result.leechers == 0
    assert errors == 2


@pytest.fixture
async def names() -> AsyncIterator[FixedResolver]:
    """A resolver of test names installed for the test's trio run: the names a test adds,
    their addresses in order whatever family is asked (the client must pick its family)."""
    resolver = FixedResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        yield resolver
    finally:
        trio.socket.set_custom_hostname_resolver(None)


async def test_a_dual_stack_tracker_is_sent_to_at_the_relays_family(names: FixedResolver) -> None:
    with trio.fail_after(DEADLINE):
        async with serve_tracker((LOOPBACK, 0)) as tracker, serve_socks5() as proxy:
            port = tracker.address[1]
            # AAAA first, as a resolver preferring IPv6 lists them: our relay socket is IPv4.
            names.names["dual.tracker.test"] = ("2001:db8::1", LOOPBACK)
            names.names["v6.tracker.test"] = ("2001:db8::1",)
            async with open_tracker_client(
                bind_v4=LOOPBACK, bind_v6=None, proxy=proxy_of(proxy)
            ) as client:
                result = await client.announce(
                    f"udp://dual.tracker.test:{port}/announce", SWARM, peer_id=PEER_ID, port=7012
                )
                # An IPv6-only tracker is still sent to: the proxy may route it.
                only, _ = await client._resolve(("v6.tracker.test", port))
    assert result.tracker == PeerAddress(IPv4Address(LOOPBACK), port)
    assert proxy.associations[0].dropped == 0
    assert only == PeerAddress(IPv6Address("2001:db8::1"), port)


@pytest.mark.parametrize(
    ("host", "remote_dns", "family"),
    [
        ("192.0.2.1", False, 4),
        ("2001:db8::1", False, 6),
        ("[2001:db8::1]", True, 6),
        ("v6.proxy.test", False, 6),
        ("v6.proxy.test", True, 6),  # the proxy's own name: resolved even with socks5h://
        ("dual.proxy.test", False, 4),  # an IPv4 address: IPv4, listed first or not
        ("dual4.proxy.test", True, 4),
    ],
)
async def test_proxy_udp_family(
    names: FixedResolver, host: str, remote_dns: bool, family: int
) -> None:
    names.names.update(
        {
            "v6.proxy.test": ("2001:db8::2",),
            "dual.proxy.test": ("2001:db8::2", "192.0.2.2"),
            "dual4.proxy.test": ("192.0.2.2", "2001:db8::2"),
        }
    )
    assert await proxy_udp_family(ProxyConfig(host, 1080, remote_dns=remote_dns)) == family
    assert names.asked == ([] if "test" not in host else [host])


async def test_proxy_udp_family_failures(names: FixedResolver) -> None:
    names.names["empty.proxy.test"] = ()
    with pytest.raises(SocksError, match=r"cannot resolve the proxy 'unknown\.proxy\.test'"):
        await proxy_udp_family(ProxyConfig("unknown.proxy.test"))
    with pytest.raises(SocksError, match="no IP address") as raised:
        await proxy_udp_family(ProxyConfig("empty.proxy.test"))
    assert raised.value.errno == errno.EHOSTUNREACH
    with pytest.raises(TypeError, match="ProxyConfig"):
        await proxy_udp_family("socks5://192.0.2.1")  # type: ignore[arg-type]


async def test_an_unresolvable_proxy_name_still_opens_a_client(
    names: FixedResolver, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = JUMP_AFTER
    with trio.fail_after(30):
        async with open_tracker_client(
            bind_v4=LOOPBACK, bind_v6="::1", proxy=ProxyConfig("gone.proxy.test"), proxy_timeout=1
        ) as client:
            # Tried over IPv4, as before names were looked at; the association says why not.
            [ours] = client.local_addresses
            with pytest.raises(TrackerError, match="cannot resolve the proxy"):
                await client.scrape(f"udp://{LOOPBACK}:6969", [SWARM])
    assert ours.family == 4


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 on this host")
async def test_a_proxy_named_with_ipv6_addresses_only_associates(names: FixedResolver) -> None:
    """A name with ::1 alone: the relay socket is IPv6 (it was IPv4 and never associated),
    the control connection reaches the proxy on ::1, and a scrape to a tracker on ::1 goes
    through its IPv6 relay."""
    relayed: list[tuple[str, int]] = []

    async def serve(stream: trio.SocketStream) -> None:
        # A SOCKS5 proxy of one association: no authentication, UDP ASSOCIATE, a relay on ::1
        # between the first address that writes to it (our client) and anyone else.
        async with stream:
            greeting = await stream.receive_some(2)
            assert 0 in decode_greeting(greeting + await stream.receive_some(greeting[1]))
            await stream.send_all(encode_method(0))
            request = decode_socks_request(await stream.receive_some(22))  # [::]:0
            assert request.command == 3
            with trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as relay:
                await relay.bind(("::1", 0))
                await stream.send_all(encode_reply(0, IPv6Address("::1"), relay.getsockname()[1]))
                client: tuple[str, int] | None = None
                for _ in range(4):  # connect and scrape, there and back
                    data, sockaddr = await relay.recvfrom(65_535)
                    source = (str(sockaddr[0]), int(sockaddr[1]))
                    if client in (None, source):
                        client = source
                        host, port, payload = decode_datagram(data)
                        relayed.append((str(host), port))
                        await relay.sendto(payload, (str(host), port))
                    else:
                        assert client is not None
                        wrapped = encode_datagram(IPv6Address(source[0]), source[1], data)
                        await relay.sendto(wrapped, client)
                await stream.receive_some(1)  # held until the client leaves

    with trio.fail_after(DEADLINE):
        async with serve_tracker(("::1", 0)) as tracker, trio.open_nursery() as nursery:
            [listener] = await trio.open_tcp_listeners(0, host="::1")
            names.names["v6.proxy.test"] = ("::1",)
            proxy = ProxyConfig("v6.proxy.test", listener.socket.getsockname()[1])
            nursery.start_soon(trio.serve_listeners, serve, [listener])
            async with open_tracker_client(bind_v4=LOOPBACK, bind_v6="::1", proxy=proxy) as client:
                [ours] = client.local_addresses
                scrape = await client.scrape(f"udp://[::1]:{tracker.address[1]}", [SWARM])
                stats = client.proxy_statistics
            nursery.cancel_scope.cancel()
    assert ours.family == 6
    assert scrape.tracker == PeerAddress(IPv6Address("::1"), tracker.address[1])
    assert relayed == [("::1", tracker.address[1])] * 2
    assert stats is not None
    assert stats.associations == 1
