"""PeerDialer through a proxy: a relay that refuses leaves TCP alone with the whole
deadline; a TCP connect through the proxy gets its share of the time, not 3 s, and is cut
there only if uTP can be tried then; a uTP failure while the relay's association was lost
or replaced is not remembered."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress, SocksUnavailableError
from bip_handshake._dialers import PeerDialer, Transport
from bip_handshake._utp_socket import UtpSocket, open_utp_over

A = PeerAddress(IPv4Address("10.0.0.1"), 6881)
B = PeerAddress(IPv4Address("10.0.0.2"), 6882)
DEADLINE = 10.0  # the session's connect_timeout


@asynccontextmanager
async def utp_pair(*, answer: bool = True) -> AsyncIterator[tuple[UtpSocket, UtpSocket]]:
    """Two uTP sockets over an in-memory link; with ``answer=False`` B hears nothing."""
    sockets: dict[PeerAddress, UtpSocket] = {}

    def sender(source: PeerAddress) -> Callable[[bytes, PeerAddress], Awaitable[None]]:
        async def send(data: bytes, address: PeerAddress) -> None:
            await trio.lowlevel.checkpoint()
            target = sockets.get(address)
            if target is not None and (answer or address != B):
                target.datagram_received(data, source)

        return send

    async with open_utp_over(sender(A), A) as a, open_utp_over(sender(B), B) as b:
        sockets[A], sockets[B] = a, b
        yield a, b


class Relay:
    """Stands in for the relay socket's check: up or not, and which association."""

    def __init__(self, *, up: bool = True) -> None:
        self.up = up
        self.associations = 1

    def check(self) -> int:
        if not self.up:
            raise SocksUnavailableError("no UDP association (test)")
        return self.associations

    def renew(self) -> None:
        """The association was lost and a new one came up."""
        self.up = True
        self.associations += 1


class ProxiedTcp:
    """Stands in for a SocksDialer: each call takes its delay (None: hangs), then connects,
    or raises ``error``; ``before`` runs at the start of each call."""

    def __init__(
        self,
        *delays: float | None,
        error: OSError | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.delays = list(delays)
        self.error = error
        self.before = before
        self.calls = 0

    async def __call__(self, address: PeerAddress) -> trio.abc.Stream:
        delay = self.delays[min(self.calls, len(self.delays) - 1)]
        self.calls += 1
        if self.before is not None:
            self.before()
        if delay is None:
            await trio.sleep_forever()
        await trio.sleep(delay)
        if self.error is not None:
            raise self.error
        return trio.testing.memory_stream_pair()[0]


async def test_a_refusing_relay_leaves_tcp_alone_with_the_whole_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A Tor-like proxy: no UDP, and a CONNECT that takes 7 s (more than the 3 s cap, and
    # more than half of the deadline).
    async with utp_pair() as (a, _):
        prefers: tuple[Transport, ...] = ("tcp", "utp")
        for prefer in prefers:
            dialer = PeerDialer(prefer=prefer, connect_tcp=ProxiedTcp(7.0))
            dialer.add_utp(a, check=Relay(up=False).check)
            assert dialer.transports(B) == ("tcp",)
            with trio.fail_after(DEADLINE):
                stream = await dialer(B)
            assert getattr(stream, "transport", None) == "tcp"
            stats = dialer.statistics()
            assert (stats.tcp_attempts, stats.utp_attempts, stats.fallbacks) == (1, 0, 0)
            assert (stats.failed, stats.remembered) == (0, 0)
        # TCP's own error is the dial's, not the relay's refusal.
        refused = ConnectionRefusedError(111, "the proxy: connection refused")
        dialer = PeerDialer(connect_tcp=ProxiedTcp(0.1, error=refused))
        dialer.add_utp(a, check=Relay(up=False).check)
        with trio.fail_after(DEADLINE), pytest.raises(ConnectionRefusedError, match="proxy"):
            await dialer(B)
        stats = dialer.statistics()
        assert (stats.utp_attempts, stats.fallbacks, stats.failed) == (0, 0, 1)


async def test_a_proxied_tcp_connect_gets_its_share_not_three_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with utp_pair() as (a, b):
        # Up to half of the deadline: a 4 s CONNECT wins.
        dialer = PeerDialer(connect_tcp=ProxiedTcp(4.0))
        dialer.add_utp(a, check=Relay().check)
        with trio.fail_after(DEADLINE):
            stream = await dialer(B)
        assert getattr(stream, "transport", None) == "tcp"
        assert dialer.statistics().utp_attempts == 0
        # A silent one is cut at half of it, and uTP through the relay has the rest.
        dialer = PeerDialer(connect_tcp=ProxiedTcp(None))
        dialer.add_utp(a, check=Relay().check)
        with trio.fail_after(DEADLINE):
            start = trio.current_time()
            stream = await dialer(B)
            assert 5.0 <= trio.current_time() - start < 5.5
        assert getattr(stream, "transport", None) == "utp"
        await stream.aclose()
        await (await b.incoming().receive()).aclose()


async def test_a_relay_lost_during_the_tcp_leg(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair() as (a, _):
        relay = Relay()

        def lose() -> None:
            relay.up = False

        # TCP refused after the association went: TCP's error as itself (its cause kept),
        # no uTP refusal instead.
        refused = ConnectionRefusedError(111, "the proxy: connection refused")
        reason = OSError(111, "refused by the peer (test)")
        refused.__cause__ = reason
        dialer = PeerDialer(connect_tcp=ProxiedTcp(0.1, error=refused, before=lose))
        dialer.add_utp(a, check=relay.check)
        assert dialer.transports(B) == ("tcp", "utp")
        with trio.fail_after(DEADLINE), pytest.raises(ConnectionRefusedError) as raised:
            await dialer(B)
        assert raised.value is refused
        assert raised.value.__cause__ is reason
        stats = dialer.statistics()
        assert (stats.utp_attempts, stats.fallbacks, stats.failed) == (0, 0, 1)
        # The association gone as a 6 s CONNECT starts: no uTP to fall back on at its
        # share (5 s), so the same CONNECT runs on and wins within the deadline.
        relay.up = True
        tcp = ProxiedTcp(6.0, before=lose)
        dialer = PeerDialer(connect_tcp=tcp)
        dialer.add_utp(a, check=relay.check)
        with trio.fail_after(DEADLINE):
            start = trio.current_time()
            stream = await dialer(B)
            assert 6.0 <= trio.current_time() - start < 6.5
        assert getattr(stream, "transport", None) == "tcp"
        stats = dialer.statistics()
        assert (tcp.calls, stats.utp_attempts, stats.fallbacks, stats.failed) == (1, 0, 0, 0)
        assert stats.remembered == 0
        # A silent CONNECT with the relay down all along ends at the caller's deadline,
        # cancelled with one Cancelled (not a group), as a dial without the cut.
        relay.up = True
        tcp = ProxiedTcp(None, before=lose)
        dialer = PeerDialer(connect_tcp=tcp)
        dialer.add_utp(a, check=relay.check)
        start = trio.current_time()
        seen: list[BaseException] = []
        with trio.move_on_after(DEADLINE) as scope:
            try:
                await dialer(B)
            except BaseException as exc:
                seen.append(exc)
                raise
        assert scope.cancelled_caught
        assert [type(exc) for exc in seen] == [trio.Cancelled]
        assert trio.current_time() - start == pytest.approx(DEADLINE)
        stats = dialer.statistics()
        assert (tcp.calls, stats.utp_attempts, stats.fallbacks) == (1, 0, 0)


async def test_a_relay_back_at_the_share_deadline_cuts_the_tcp_leg(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Lost as the CONNECT starts, a new association 2 s later: at the share (5 s) uTP can
    # be tried, so the silent CONNECT is cut there and uTP has the rest.
    async with utp_pair() as (a, b):
        relay = Relay()

        def lose() -> None:
            relay.up = False

        async def renew_later() -> None:
            await trio.sleep(2.0)
            relay.renew()

        dialer = PeerDialer(connect_tcp=ProxiedTcp(None, before=lose))
        dialer.add_utp(a, check=relay.check)
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(renew_later)
                start = trio.current_time()
                stream = await dialer(B)
                assert 5.0 <= trio.current_time() - start < 5.5
        assert getattr(stream, "transport", None) == "utp"
        stats = dialer.statistics()
        assert (stats.tcp_attempts, stats.utp_attempts, stats.fallbacks) == (1, 1, 1)
        await stream.aclose()
        await (await b.incoming().receive()).aclose()


async def test_a_syn_lost_with_the_association_is_not_remembered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with utp_pair(answer=False) as (a, _):
        for change in ("lost", "renewed", None):
            relay = Relay()
            dialer = PeerDialer(prefer="utp", connect_tcp=ProxiedTcp(0.1))
            dialer.add_utp(a, check=relay.check)

            async def meanwhile(relay: Relay = relay, change: str | None = change) -> None:
                await trio.sleep(0.5)  # while the SYN waits for an answer
                if change == "lost":
                    relay.up = False
                elif change == "renewed":
                    relay.renew()

            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(meanwhile)
                    stream = await dialer(B)
            assert getattr(stream, "transport", None) == "tcp"
            relay.up = True
            stats = dialer.statistics()
            assert (stats.utp_attempts, stats.fallbacks) == (1, 1)
            if change is None:  # the same association all along: the peer's fault
                assert stats.remembered == 1
                assert dialer.transports(B) == ("tcp", "utp")
            else:
                assert stats.remembered == 0, change
                assert dialer.transports(B) == ("utp", "tcp")


async def test_a_utp_connection_ended_with_its_association_is_not_remembered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with utp_pair() as (a, b):
        for change in ("renewed", "lost", None):
            relay = Relay()
            dialer = PeerDialer(prefer="utp", connect_tcp=ProxiedTcp(0.1))
            dialer.add_utp(a, check=relay.check)
            with trio.fail_after(DEADLINE):
                stream = await dialer(B)
                assert getattr(stream, "transport", None) == "utp"
                # The connection outlived its association (replaced, or gone).
                if change == "renewed":
                    relay.renew()
                elif change == "lost":
                    relay.up = False
                await (await b.incoming().receive()).aclose()
                # A FIN, or a RESET when the close overtakes the handshake: both end the
                # stream before the peer's first byte.
                with contextlib.suppress(trio.BrokenResourceError):
                    assert await stream.receive_some() == b""
            await stream.aclose()
            relay.up = True
            stats = dialer.statistics()
            if change is not None:
                assert (stats.closed_silent, stats.remembered) == (0, 0), change
                assert dialer.transports(B) == ("utp", "tcp")
            else:
                assert (stats.closed_silent, stats.remembered) == (1, 1)
                assert dialer.transports(B) == ("tcp", "utp")
