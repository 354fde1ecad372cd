"""Failed dials: the Handshaker's ``on_dial_failed`` hook, and PeerDialer's uTP hints
(``prefer_utp_for``), the two pieces a client needs for a BEP 55 holepunch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address

import pytest
import trio
import trio.testing

from bip_handshake import EncryptionPolicy, Extensions, Handshake, PeerAddress, PeerId
from bip_handshake._dialers import MAX_UTP_HINTS, PeerDialer
from bip_handshake._handshaker import DialFailure, Handshaker, open_handshaker
from bip_handshake._utp_config import UtpConnectError
from bip_handshake._utp_socket import UtpSocket, open_utp_over
from bip_metainfo import InfoHash

TORRENT = InfoHash(v1=b"\x11" * 20)
HYBRID = InfoHash(v1=b"\x33" * 20, v2=b"\x44" * 32)
A = PeerAddress(IPv4Address("10.0.0.1"), 6881)
B = PeerAddress(IPv4Address("10.0.0.2"), 6882)
MAPPED_B = PeerAddress(IPv6Address("::ffff:10.0.0.2"), 6882)
V6 = PeerAddress(IPv6Address("2001:db8::7"), 6881)
REMOTE = PeerId(b"-XX0000-remoteremote")


async def refuse(address: PeerAddress) -> trio.abc.Stream:
    await trio.lowlevel.checkpoint()
    raise ConnectionRefusedError(111, "Connection refused")


async def hang(address: PeerAddress) -> trio.abc.Stream:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll ``predicate`` on the (virtual) clock until it holds; bounded in time."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


@asynccontextmanager
async def failing(
    dial: Callable[[PeerAddress], Awaitable[trio.abc.Stream]],
    failures: list[DialFailure],
    **options: object,
) -> AsyncIterator[Handshaker]:
    """A plaintext handshaker with no listener that dials with ``dial`` and records failures."""
    async with open_handshaker(
        listen=[],
        dial=dial,
        encryption=EncryptionPolicy.PLAINTEXT_ONLY,
        on_dial_failed=failures.append,
        **options,  # type: ignore[arg-type]
    ) as handshaker:
        handshaker.register(TORRENT)
        yield handshaker


# ------------------------------------------------------------------------- the hook


async def test_a_refused_dial_is_reported_with_the_torrent_address_and_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failures: list[DialFailure] = []
    async with failing(refuse, failures) as handshaker:
        assert handshaker.connect(TORRENT, MAPPED_B)
        await wait_for(lambda: bool(failures))
        [failure] = failures
        assert failure == DialFailure(TORRENT, B, "connect_failed", failure.detail)
        assert failure.address == B  # normalised: the IPv4-mapped form is gone
        assert "refused" in failure.detail.lower()
        assert handshaker.statistics().connect_failed == 1


async def test_a_dial_past_the_connect_timeout_is_reported_as_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failures: list[DialFailure] = []
    async with failing(hang, failures, connect_timeout=4.0) as handshaker:
        start = trio.current_time()
        assert handshaker.connect(TORRENT, B)
        await wait_for(lambda: bool(failures))
        assert failures == [DialFailure(TORRENT, B, "connect_timeout", "4.0 s")]
        assert trio.current_time() - start == pytest.approx(4.0, abs=0.1)


async def test_the_address_is_free_when_the_callback_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The callback may dial the address again at once (a holepunch does): the pair is no
    longer taken, so the dial is queued, not dropped as a duplicate."""
    queued: list[bool] = []
    running: list[Handshaker] = []

    def again(failure: DialFailure) -> None:
        if len(queued) < 2:  # bounded: the redial fails too
            queued.append(running[0].connect(failure.torrent, failure.address))

    async with open_handshaker(listen=[], dial=refuse, on_dial_failed=again) as handshaker:
        running.append(handshaker)
        handshaker.register(TORRENT)
        assert handshaker.connect(TORRENT, B)
        await wait_for(lambda: handshaker.statistics().connect_failed == 3)
        assert queued == [True, True]
        assert handshaker.statistics().dropped_duplicate == 0


async def test_a_connected_peer_that_fails_the_handshake_is_not_a_dial_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Reachable is what matters: a peer that accepts and closes is not reported."""

    async def accept_and_close(address: PeerAddress) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.aclose()
        return ours

    failures: list[DialFailure] = []
    async with failing(accept_and_close, failures) as handshaker:
        assert handshaker.connect(TORRENT, B)
        await wait_for(lambda: handshaker.statistics().failures == 1)
        assert handshaker.statistics().connection_lost == 1
        assert failures == []


async def test_the_plaintext_redial_that_fails_is_not_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PREFER_ENCRYPTED: the peer closes the MSE handshake, and the plaintext redial is
    refused: the first connect succeeded (the peer is reachable), so the attempt fails once,
    as a failed encryption handshake, and is no dial that never connected."""
    calls: list[PeerAddress] = []

    async def close_then_refuse(address: PeerAddress) -> trio.abc.Stream:
        calls.append(address)
        if len(calls) > 1:
            return await refuse(address)
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.aclose()
        return ours

    failures: list[DialFailure] = []
    async with open_handshaker(
        listen=[], dial=close_then_refuse, on_dial_failed=failures.append
    ) as handshaker:
        handshaker.register(TORRENT)
        assert handshaker.connect(TORRENT, B)
        await wait_for(lambda: handshaker.statistics().failures == 1)
        assert handshaker.statistics().plaintext_fallback == 1
        assert handshaker.statistics().mse_failed == 1
        assert failures == []


async def test_dropped_dials_are_not_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Only a dial that was made and never connected is reported, not one dropped before it
    (unknown torrent, unconnectable address)."""
    failures: list[DialFailure] = []
    async with failing(hang, failures, connect_timeout=50.0) as handshaker:
        assert not handshaker.connect(InfoHash(v1=b"\x99" * 20), B)
        assert not handshaker.connect(TORRENT, PeerAddress(IPv4Address("10.0.0.2"), 0))
        await trio.sleep(1)
        assert failures == []


async def test_a_failing_callback_is_logged_and_the_handshaker_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(failure: DialFailure) -> None:
        raise RuntimeError("bug in the owner's callback")

    with caplog.at_level(logging.ERROR, logger="bip_handshake.handshaker"):
        async with open_handshaker(listen=[], dial=refuse, on_dial_failed=broken) as handshaker:
            handshaker.register(TORRENT)
            for address in (A, B):
                assert handshaker.connect(TORRENT, address)
            await wait_for(lambda: handshaker.statistics().connect_failed == 2)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all("on_dial_failed" in r.getMessage() for r in errors)
    assert all(r.exc_info is not None for r in errors)


async def test_the_callback_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_dial_failed must be callable"):
        async with open_handshaker(listen=[], on_dial_failed="log"):  # type: ignore[arg-type]
            pass  # pragma: no cover


def test_dial_failure_is_frozen() -> None:
    failure = DialFailure(HYBRID, B, "connect_timeout")
    assert failure.detail == ""
    with pytest.raises(AttributeError):
        failure.reason = "connect_failed"  # type: ignore[misc]


# ------------------------------------------------------------- simultaneous opens


def remote_handshake() -> bytes:
    return Handshake(Extensions.FAST, TORRENT.v1 or b"", REMOTE.value).to_bytes()


class HeldDial:
    """A dial that waits for ``release``, then connects to a peer that answers at once."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.dialled: list[PeerAddress] = []

    async def __call__(self, address: PeerAddress) -> trio.abc.Stream:
        self.dialled.append(address)
        await self.release.wait()
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.send_all(remote_handshake())
        return ours


async def inbound_from(handshaker: Handshaker, address: PeerAddress) -> trio.abc.Stream:
    """The remote end of an inbound connection from ``address``, handshake sent."""
    ours, theirs = trio.testing.memory_stream_pair()
    handshaker.accept_stream(theirs, address, transport="utp")
    await ours.send_all(remote_handshake())
    return ours


async def test_an_inbound_connection_while_our_dial_is_in_flight_is_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A simultaneous open (a holepunch's two uTP dials): the peer's connection comes from
    the address we are dialling. Refusing it on both sides would fail both; it is taken,
    both connections are delivered, and the owner keeps one."""
    dial = HeldDial()
    async with open_handshaker(
        listen=[], dial=dial, encryption=EncryptionPolicy.PLAINTEXT_ONLY
    ) as handshaker:
        handshaker.register(TORRENT)
        assert handshaker.connect(TORRENT, B)
        await wait_for(lambda: dial.dialled == [B])
        remote = await inbound_from(handshaker, B)
        with trio.fail_after(5):
            first = await handshaker.completed().receive()
        assert (first.direction, first.address, first.transport) == ("inbound", B, "utp")
        assert not handshaker.connect(TORRENT, B)  # still taken: not dialled twice
        dial.release.set()
        with trio.fail_after(5):
            second = await handshaker.completed().receive()
        assert (second.direction, second.address) == ("outbound", B)
        stats = handshaker.statistics()
        assert (stats.inbound_completed, stats.outbound_completed) == (1, 1)
        assert stats.dropped_duplicate == 1  # the connect() above, nothing else
        # An inbound one while a connection of the pair is open is still refused.
        late = await inbound_from(handshaker, B)
        await wait_for(lambda: handshaker.statistics().failures == 1)
        assert handshaker.statistics().dropped_duplicate == 2
        # The pair is free once both connections are closed, not before.
        await first.aclose()
        assert not handshaker.connect(TORRENT, B)
        await second.aclose()
        assert handshaker.connect(TORRENT, B)
        for stream in (remote, late):
            await stream.aclose()


async def test_a_queued_dial_to_a_peer_that_connected_meanwhile_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Another dial holds the only outbound slot; our dial to B waits for it, and once B's
    inbound handshake (inbound handshakes have slots of their own) is delivered, the dial is
    dropped, never made."""
    dial = HeldDial()
    async with open_handshaker(
        listen=[], dial=dial, encryption=EncryptionPolicy.PLAINTEXT_ONLY, max_concurrent=1
    ) as handshaker:
        handshaker.register(TORRENT)
        assert handshaker.connect(TORRENT, A)  # connecting until released: holds the slot
        await wait_for(lambda: dial.dialled == [A])
        assert handshaker.connect(TORRENT, B)  # queued, waiting for the slot
        ours, theirs = trio.testing.memory_stream_pair()
        handshaker.accept_stream(theirs, B, transport="utp")
        await trio.sleep(1)
        await ours.send_all(remote_handshake())
        with trio.fail_after(5):
            peer = await handshaker.completed().receive()
        assert peer.direction == "inbound"
        dial.release.set()  # A connects and frees the slot: B's dial takes it, and is dropped
        with trio.fail_after(5):
            to_a = await handshaker.completed().receive()
        assert to_a.address == A
        await wait_for(lambda: handshaker.statistics().dropped_duplicate == 1)
        await trio.sleep(1)
        assert dial.dialled == [A]
        stats = handshaker.statistics()
        assert (stats.outbound_attempts, stats.in_flight, stats.queued) == (1, 0, 0)
        await to_a.aclose()
        await peer.aclose()
        assert handshaker.connect(TORRENT, B)  # released: dialled now
        with trio.fail_after(5):
            await (await handshaker.completed().receive()).aclose()
        assert dial.dialled == [A, B]
        await ours.aclose()


# ------------------------------------------------------------------------ uTP hints


@asynccontextmanager
async def quiet_utp() -> AsyncIterator[UtpSocket]:
    """A uTP socket whose datagrams go nowhere (its SYNs are never answered)."""

    async def nowhere(data: bytes, address: PeerAddress) -> None:
        await trio.lowlevel.checkpoint()

    async with open_utp_over(nowhere, A) as utp:
        yield utp


class CountingTcp:
    """Stands in for the TCP connect: records the addresses and refuses them."""

    def __init__(self) -> None:
        self.calls: list[PeerAddress] = []

    async def __call__(self, address: PeerAddress) -> trio.abc.Stream:
        self.calls.append(address)
        return await refuse(address)


async def test_a_hint_puts_utp_first_or_alone_until_it_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with quiet_utp() as utp:
        dialer = PeerDialer(utp=[utp])
        assert dialer.transports(B) == ("tcp", "utp")
        dialer.prefer_utp_for(MAPPED_B, 30.0)
        assert dialer.transports(B) == ("utp",)  # normalised: one address
        dialer.prefer_utp_for(B, 30.0, only=False)  # replaces the first hint
        assert dialer.transports(B) == ("utp", "tcp")
        assert dialer.transports(A) == ("tcp", "utp")  # other addresses keep the order
        assert dialer.statistics().hints == 1
        await trio.sleep(30.0)
        assert dialer.transports(B) == ("tcp", "utp")
        assert dialer.statistics().hints == 0


async def test_a_utp_only_hint_never_touches_tcp(autojump_clock: trio.testing.MockClock) -> None:
    async with quiet_utp() as utp:
        dialer = PeerDialer(utp=[utp], first_timeout=2.0)
        tcp = CountingTcp()
        dialer._connect_tcp = tcp  # type: ignore[method-assign]
        dialer.prefer_utp_for(B, 60.0)
        with trio.fail_after(20), pytest.raises(UtpConnectError):
            await dialer(B)
        stats = dialer.statistics()
        assert tcp.calls == []
        assert (stats.utp_attempts, stats.tcp_attempts, stats.hinted) == (1, 0, 1)
        assert stats.reordered == 0  # a hint is not the failure memory's reordering
        assert stats.fallbacks == 0


async def test_a_utp_first_hint_falls_back_to_tcp(autojump_clock: trio.testing.MockClock) -> None:
    async with quiet_utp() as utp:
        dialer = PeerDialer(utp=[utp], first_timeout=2.0)
        tcp = CountingTcp()
        dialer._connect_tcp = tcp  # type: ignore[method-assign]
        dialer.prefer_utp_for(B, 60.0, only=False)
        with trio.fail_after(20), pytest.raises(ConnectionRefusedError):
            await dialer(B)
        stats = dialer.statistics()
        assert tcp.calls == [B]
        assert (stats.utp_attempts, stats.tcp_attempts, stats.fallbacks) == (1, 1, 1)
        assert (stats.hinted, stats.reordered) == (1, 0)


async def test_a_hint_without_a_utp_socket_of_the_family_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with quiet_utp() as utp:
        dialer = PeerDialer(utp=[utp])  # IPv4 only
        tcp = CountingTcp()
        dialer._connect_tcp = tcp  # type: ignore[method-assign]
        dialer.prefer_utp_for(V6, 60.0)
        assert dialer.transports(V6) == ("tcp",)
        with pytest.raises(ConnectionRefusedError):
            await dialer(V6)
        assert tcp.calls == [V6]
        assert dialer.statistics().hinted == 0
    no_tcp = PeerDialer(tcp=False)
    no_tcp.prefer_utp_for(B, 60.0)
    assert no_tcp.transports(B) == ()


async def test_a_utp_first_hint_without_tcp_is_utp_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with quiet_utp() as utp:
        dialer = PeerDialer(tcp=False, utp=[utp])
        dialer.prefer_utp_for(B, 60.0, only=False)
        assert dialer.transports(B) == ("utp",)


async def test_hints_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with quiet_utp() as utp:
        dialer = PeerDialer(utp=[utp])
        first = PeerAddress(IPv4Address("10.1.0.0"), 1)
        dialer.prefer_utp_for(first, 600.0)
        for n in range(MAX_UTP_HINTS + 10):
            dialer.prefer_utp_for(PeerAddress(IPv4Address(0x0A020000 + n), 1), 600.0)
        assert dialer.statistics().hints == MAX_UTP_HINTS
        assert dialer.transports(first) == ("tcp", "utp")  # the oldest was forgotten
        newest = PeerAddress(IPv4Address(0x0A020000 + MAX_UTP_HINTS + 9), 1)
        assert dialer.transports(newest) == ("utp",)


@pytest.mark.parametrize("ttl", [0, -1.0, float("inf"), float("nan"), True, "5"])
async def test_a_hint_needs_a_positive_finite_ttl(ttl: object) -> None:
    dialer = PeerDialer()
    with pytest.raises(ValueError, match="ttl"):
        dialer.prefer_utp_for(B, ttl)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PeerAddress"):
        dialer.prefer_utp_for("10.0.0.2:6882", 5.0)  # type: ignore[arg-type]
    assert dialer.statistics().hints == 0


async def test_a_hinted_dial_connects_over_utp_through_the_handshaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """End to end: the handshaker's dial follows the hint, and a uTP peer answers."""
    sockets: dict[PeerAddress, UtpSocket] = {}

    def sender(source: PeerAddress) -> Callable[[bytes, PeerAddress], Awaitable[None]]:
        async def send(data: bytes, address: PeerAddress) -> None:
            await trio.lowlevel.checkpoint()
            target = sockets.get(address)
            if target is not None:
                target.datagram_received(data, source)

        return send

    async with (
        open_utp_over(sender(A), A) as a,
        open_utp_over(sender(B), B) as b,
        trio.open_nursery() as nursery,
    ):
        sockets[A], sockets[B] = a, b
        dialer = PeerDialer(utp=[a])
        tcp = CountingTcp()
        dialer._connect_tcp = tcp  # type: ignore[method-assign]
        async with (
            open_handshaker(listen=[], dial=dialer, peer_id=REMOTE) as remote,
            open_handshaker(listen=[], dial=dialer) as handshaker,
        ):
            remote.register(TORRENT)
            handshaker.register(TORRENT)

            async def accept() -> None:
                async for stream in b.incoming():
                    remote.accept_stream(stream, stream.remote_address, transport="utp")

            nursery.start_soon(accept)
            dialer.prefer_utp_for(B, 60.0)
            assert handshaker.connect(TORRENT, B)
            with trio.fail_after(30):
                peer = await handshaker.completed().receive()
            assert (peer.transport, peer.peer_id) == ("utp", REMOTE)
            assert tcp.calls == []
            await peer.aclose()
            nursery.cancel_scope.cancel()
