"""PeerDialer: TCP, uTP, fallback orders, the first transport's share of the time, local address."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, ip_address

import pytest
import trio
import trio.testing

from bip_handshake import EncryptionPolicy, PeerAddress, _dialers
from bip_handshake._dialers import DialerStatistics, PeerDialer
from bip_handshake._handshaker import CompletedHandshake, HasTransport, open_handshaker
from bip_handshake._utp_config import UtpConfig, UtpConnectError, UtpError
from bip_handshake._utp_socket import UtpSocket, open_utp_over, open_utp_socket
from bip_metainfo import InfoHash

A = PeerAddress(IPv4Address("10.0.0.1"), 6881)
B = PeerAddress(IPv4Address("10.0.0.2"), 6882)


@asynccontextmanager
async def utp_pair(
    *, answer: bool = True, config: UtpConfig | None = None
) -> AsyncIterator[tuple[UtpSocket, UtpSocket]]:
    """Two uTP sockets over an in-memory link; with ``answer=False`` B hears nothing."""
    sockets: dict[PeerAddress, UtpSocket] = {}

    def sender(source: PeerAddress) -> Callable[[bytes, PeerAddress], Awaitable[None]]:
        async def send(data: bytes, address: PeerAddress) -> None:
            await trio.lowlevel.checkpoint()
            target = sockets.get(address)
            if target is not None and (answer or address != B):
                target.datagram_received(data, source)

        return send

    async with (
        open_utp_over(sender(A), A, config=config) as a,
        open_utp_over(sender(B), B, config=config) as b,
    ):
        sockets[A], sockets[B] = a, b
        yield a, b


class FakeTcp:
    """Stands in for the TCP connect: refuses, hangs, or connects (a memory stream)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls: list[PeerAddress] = []
        self.remotes: list[trio.abc.Stream] = []  # the peer's ends of the connections

    async def __call__(self, address: PeerAddress) -> trio.abc.Stream:
        self.calls.append(address)
        if self.mode == "refuse":
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError(111, "Connection refused")
        if self.mode == "hang":
            await trio.sleep_forever()
        left, right = trio.testing.memory_stream_pair()
        self.remotes.append(right)
        return left


def with_tcp(dialer: PeerDialer, fake: FakeTcp) -> PeerDialer:
    dialer._connect_tcp = fake  # type: ignore[method-assign]
    return dialer


# ------------------------------------------------------------------------------ orders


async def test_tcp_preferred_connects_over_tcp(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair() as (a, _):
        dialer = with_tcp(PeerDialer(utp=[a]), FakeTcp("connect"))
        assert dialer.transports(B) == ("tcp", "utp")
        await dialer(B)
        assert dialer.statistics() == DialerStatistics(dials=1, tcp_attempts=1, tcp_connected=1)


async def test_tcp_refused_falls_back_to_utp(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair() as (a, b):
        dialer = with_tcp(PeerDialer(utp=[a]), FakeTcp("refuse"))
        with trio.fail_after(10):
            start = trio.current_time()
            stream = await dialer(B)
            assert trio.current_time() - start < 1  # no waiting on a refused connect
        accepted = await b.incoming().receive()
        await stream.send_all(b"over utp")
        assert await accepted.receive_some() == b"over utp"
        assert dialer.statistics() == DialerStatistics(
            dials=1, tcp_attempts=1, utp_attempts=1, utp_connected=1, fallbacks=1, remembered=1
        )
        await stream.aclose()
        await accepted.aclose()


async def test_silent_tcp_gets_its_share_then_utp(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair() as (a, _):
        dialer = with_tcp(PeerDialer(utp=[a]), FakeTcp("hang"))
        with trio.fail_after(10):
            start = trio.current_time()
            await dialer(B)
        # The first transport had min(3 s, half of the 10 s left).
        assert 3.0 <= trio.current_time() - start < 3.5
        assert dialer.statistics().utp_connected == 1


async def test_utp_preferred_falls_back_to_tcp(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair(answer=False) as (a, _):
        fake = FakeTcp("connect")
        dialer = with_tcp(PeerDialer(utp=[a], prefer="utp"), fake)
        assert dialer.prefer == "utp"
        assert dialer.transports(B) == ("utp", "tcp")
        with trio.fail_after(10):
            start = trio.current_time()
            await dialer(B)
            assert 3.0 <= trio.current_time() - start < 3.5
        assert fake.calls == [B]
        assert dialer.statistics() == DialerStatistics(
            dials=1, tcp_attempts=1, utp_attempts=1, tcp_connected=1, fallbacks=1, remembered=1
        )
        assert a.statistics().connect_failures == 1  # the uTP connect was abandoned cleanly


async def test_utp_preferred_connects_over_utp(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair() as (a, b):
        fake = FakeTcp("connect")
        dialer = with_tcp(PeerDialer(utp=[a], prefer="utp"), fake)
        stream = await dialer(B)
        assert fake.calls == []
        assert dialer.statistics().utp_connected == 1
        await stream.aclose()
        await (await b.incoming().receive()).aclose()


async def test_utp_reset_falls_back_at_once(autojump_clock: trio.testing.MockClock) -> None:
    # B refuses every SYN (no room for a pending accept): a RESET, not a timeout.
    async with utp_pair(config=UtpConfig(max_pending_accepts=1)) as (a, b):
        unclaimed = await a.connect(B)
        dialer = with_tcp(PeerDialer(utp=[a], prefer="utp"), FakeTcp("connect"))
        with trio.fail_after(10):
            start = trio.current_time()
            await dialer(B)
            assert trio.current_time() - start < 1
        assert b.statistics().refused == 1
        assert dialer.statistics().fallbacks == 1
        await unclaimed.aclose()


# ---------------------------------------------------------------------------- memory


async def test_silent_close_makes_the_other_transport_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that accepts TCP and closes before a byte (libtorrent with TCP off): the next
    dial to it tries uTP first; a byte over a connection forgets that."""
    async with utp_pair() as (a, b):
        fake = FakeTcp("connect")
        dialer = with_tcp(PeerDialer(utp=[a]), fake)
        stream = await dialer(B)
        await fake.remotes[-1].aclose()
        assert await stream.receive_some() == b""
        assert await stream.receive_some() == b""  # reported once
        await stream.aclose()
        assert dialer.transports(B) == ("utp", "tcp")
        assert dialer.statistics().closed_silent == 1
        stream = await dialer(B)  # over uTP now, at once
        accepted = await b.incoming().receive()
        await accepted.send_all(b"speaks")
        assert await stream.receive_some() == b"speaks"
        assert dialer.transports(B) == ("utp", "tcp")  # it speaks uTP: stay with it
        stats = dialer.statistics()
        assert (stats.reordered, stats.utp_connected, stats.remembered) == (1, 1, 1)
        await stream.aclose()
        await accepted.aclose()
        # Once uTP fails too and TCP works and speaks, TCP is forgotten as failing.
        tcp_speaks = FakeTcp("connect")
        dialer._connect_tcp = tcp_speaks  # type: ignore[method-assign]
        dialer.remove_utp(a)
        stream = await dialer(B)
        await tcp_speaks.remotes[-1].send_all(b"hi")
        assert await stream.receive_some() == b"hi"
        assert dialer.statistics().remembered == 0
        await stream.aclose()


async def test_fallback_remembers_the_failed_transport(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with utp_pair() as (a, b):
        fake = FakeTcp("hang")
        dialer = with_tcp(PeerDialer(utp=[a]), fake)
        with trio.fail_after(10):
            first = await dialer(B)
        with trio.fail_after(10):
            start = trio.current_time()
            second = await dialer(B)
            assert trio.current_time() - start < 0.5  # no second wait on the silent TCP port
        assert len(fake.calls) == 1
        assert dialer.statistics().reordered == 1
        for stream in (first, second):
            await stream.aclose()
        for _ in range(2):
            await (await b.incoming().receive()).aclose()


async def test_reset_before_a_byte_is_remembered_and_our_close_is_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with utp_pair() as (a, _):
        dialer = PeerDialer(utp=[a])

        async def reset(address: PeerAddress) -> trio.abc.Stream:
            left, _ = trio.testing.memory_stream_pair()

            async def broken(max_bytes: int | None = None) -> bytes:
                await trio.lowlevel.checkpoint()
                raise trio.BrokenResourceError("reset")

            left.receive_some = broken  # type: ignore[method-assign]
            return left

        dialer._connect_tcp = reset  # type: ignore[method-assign]
        stream = await dialer(B)
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        await stream.wait_send_all_might_not_block()
        assert dialer.transports(B) == ("utp", "tcp")
        # Closed by us before reading: the peer is not blamed.
        other = PeerAddress(IPv4Address("10.0.0.3"), 1)
        stream = await dialer(other)
        await stream.aclose()
        assert dialer.transports(other) == ("tcp", "utp")


async def test_memory_is_bounded(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(_dialers, "_MEMORY", 3)
    async with utp_pair() as (a, _):
        fake = FakeTcp("connect")
        dialer = with_tcp(PeerDialer(utp=[a]), fake)
        addresses = [PeerAddress(IPv4Address("10.1.0.1"), port) for port in range(1, 6)]
        for address in addresses:
            stream = await dialer(address)
            await fake.remotes[-1].aclose()
            assert await stream.receive_some() == b""
        assert dialer.statistics().remembered == 3
        assert dialer.transports(addresses[0]) == ("tcp", "utp")  # the oldest forgotten
        assert dialer.transports(addresses[-1]) == ("utp", "tcp")
        # Without a choice there is nothing to remember.
        tcp_only = with_tcp(PeerDialer(), fake)
        stream = await tcp_only(addresses[0])
        await fake.remotes[-1].aclose()
        assert await stream.receive_some() == b""
        assert tcp_only.statistics().remembered == 0


# ---------------------------------------------------------------------------- timing


@pytest.mark.parametrize(
    ("deadline", "share", "expected"),
    [
        (10.0, 0.5, 3.0),  # first_timeout caps it
        (4.0, 0.5, 2.0),  # half of what is left
        (4.0, 0.25, 1.0),
        (None, 0.5, 3.0),  # no deadline: first_timeout alone
    ],
)
async def test_first_transport_budget(
    deadline: float | None,
    share: float,
    expected: float,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with utp_pair() as (a, _):
        dialer = with_tcp(PeerDialer(utp=[a], first_share=share), FakeTcp("hang"))
        start = trio.current_time()
        if deadline is None:  # no deadline at all: first_timeout is the only bound
            await dialer(B)
        else:
            with trio.fail_after(deadline):
                await dialer(B)
        # The uTP connect over memory takes no virtual time: what passed is the TCP share.
        assert trio.current_time() - start == pytest.approx(expected, abs=0.01)


async def test_whole_dial_within_the_handshaker_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    torrent = InfoHash(v1=b"\x22" * 20)
    async with utp_pair(answer=False) as (a, _):
        dialer = with_tcp(PeerDialer(utp=[a]), FakeTcp("hang"))
        async with open_handshaker(
            listen=[], dial=dialer, connect_timeout=5.0, encryption=EncryptionPolicy.PLAINTEXT_ONLY
        ) as handshaker:
            handshaker.register(torrent)
            start = trio.current_time()
            assert handshaker.connect(torrent, B)
            with trio.fail_after(60):
                while handshaker.statistics().failures < 1:
                    await trio.sleep(0.1)
            assert trio.current_time() - start == pytest.approx(5.0, abs=0.2)
            assert handshaker.statistics().connect_timeout == 1
            stats = dialer.statistics()
            assert (stats.tcp_attempts, stats.utp_attempts, stats.fallbacks) == (1, 1, 1)


async def test_both_fail_raises_the_last_error(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair(config=UtpConfig(max_pending_accepts=1)) as (a, _):
        unclaimed = await a.connect(B)
        dialer = with_tcp(PeerDialer(utp=[a]), FakeTcp("refuse"))
        with pytest.raises(UtpConnectError):
            await dialer(B)
        dialer = with_tcp(PeerDialer(utp=[a], prefer="utp"), FakeTcp("refuse"))
        with pytest.raises(ConnectionRefusedError):
            await dialer(B)
        assert dialer.statistics().failed == 1
        await unclaimed.aclose()


async def test_one_transport_and_none(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair() as (a, b):
        utp_only = PeerDialer(tcp=False, utp=[a])
        assert utp_only.transports(B) == ("utp",)
        stream = await utp_only(B)
        await stream.aclose()
        await (await b.incoming().receive()).aclose()
        # No uTP socket of the peer's family, TCP off: nothing can reach it.
        v6 = PeerAddress(ip_address("2001:db8::1"), 6881)
        assert utp_only.transports(v6) == ()
        with pytest.raises(UtpConnectError, match="no transport"):
            await utp_only(v6)
        assert utp_only.statistics().failed == 1
        # Removed: gone from the order; removing an unknown one is harmless.
        utp_only.remove_utp(a)
        utp_only.remove_utp(b)
        assert utp_only.utp_sockets == ()
        assert utp_only.transports(B) == ()
        refused = with_tcp(PeerDialer(), FakeTcp("refuse"))
        with pytest.raises(ConnectionRefusedError):
            await refused(B)
        assert refused.statistics() == DialerStatistics(dials=1, tcp_attempts=1, failed=1)


async def test_socket_removed_during_the_first_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with utp_pair() as (a, _):
        fake = FakeTcp("refuse")
        dialer = PeerDialer(utp=[a])

        async def refuse_and_remove(address: PeerAddress) -> trio.abc.Stream:
            dialer.remove_utp(a)
            return await fake(address)

        dialer._connect_tcp = refuse_and_remove  # type: ignore[method-assign]
        with pytest.raises(UtpConnectError, match="no uTP socket"):
            await dialer(B)


async def test_handshaker_counts_utp_errors_as_failed_connects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    torrent = InfoHash(v1=b"\x33" * 20)

    async def broken(address: PeerAddress) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        raise UtpError("reset by the peer")

    async def no_answer(address: PeerAddress) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        raise UtpConnectError("no answer")

    for dial in (broken, no_answer):
        async with open_handshaker(listen=[], dial=dial) as handshaker:
            handshaker.register(torrent)
            assert handshaker.connect(torrent, B)
            with trio.fail_after(5):
                while handshaker.statistics().failures < 1:
                    await trio.sleep(0.1)
            assert handshaker.statistics().connect_failed == 1


# --------------------------------------------------------------------- transport field


async def test_dialled_streams_say_their_transport(autojump_clock: trio.testing.MockClock) -> None:
    async with utp_pair() as (a, b):
        tcp = await with_tcp(PeerDialer(utp=[a]), FakeTcp("connect"))(B)
        utp = await with_tcp(PeerDialer(utp=[a], prefer="utp"), FakeTcp("connect"))(B)
        fallback = await with_tcp(PeerDialer(utp=[a]), FakeTcp("refuse"))(B)
        assert isinstance(tcp, HasTransport)
        assert tcp.transport == "tcp"
        assert isinstance(utp, HasTransport)
        assert utp.transport == "utp"
        assert isinstance(fallback, HasTransport)
        assert fallback.transport == "utp"
        with pytest.raises(AttributeError):
            tcp.transport = "utp"  # type: ignore[misc]
        for stream in (tcp, utp, fallback):
            await stream.aclose()
        for _ in range(2):
            await (await b.incoming().receive()).aclose()


@pytest.mark.parametrize(
    "encryption", [EncryptionPolicy.PREFER_ENCRYPTED, EncryptionPolicy.PLAINTEXT_ONLY]
)
async def test_handshakes_over_utp_are_marked_utp_on_both_sides(
    autojump_clock: trio.testing.MockClock, encryption: EncryptionPolicy
) -> None:
    """The dialer's wrapper and MSE's stream hide the uTP stream; the field still tells."""
    torrent = InfoHash(v1=b"\x44" * 20)
    async with (
        utp_pair() as (a, b),
        open_handshaker(
            listen=[], dial=PeerDialer(utp=[a], tcp=False), encryption=encryption
        ) as dialling,
        open_handshaker(listen=[], encryption=encryption) as accepting,
    ):
        dialling.register(torrent)
        accepting.register(torrent)
        assert dialling.connect(torrent, B)
        with trio.fail_after(10):
            accepting.accept_stream(
                await b.incoming().receive(), PeerAddress(A.host, A.port), transport="utp"
            )
            ours = await dialling.completed().receive()
            theirs = await accepting.completed().receive()
        assert (ours.direction, ours.transport) == ("outbound", "utp")
        assert (theirs.direction, theirs.transport) == ("inbound", "utp")
        expected = "rc4" if encryption is EncryptionPolicy.PREFER_ENCRYPTED else "plaintext"
        assert ours.encryption == theirs.encryption == expected
        await ours.aclose()
        await theirs.aclose()


async def test_custom_dialers_transport(autojump_clock: trio.testing.MockClock) -> None:
    """A bare UtpStream from a user's dialer is uTP; any other stream is TCP."""
    torrent = InfoHash(v1=b"\x55" * 20)
    async with utp_pair() as (a, b):

        async def bare_utp(address: PeerAddress) -> trio.abc.Stream:
            return await a.connect(address)

        fake = FakeTcp("connect")
        for dial, expected in ((bare_utp, "utp"), (fake, "tcp")):
            async with (
                open_handshaker(
                    listen=[], dial=dial, encryption=EncryptionPolicy.PLAINTEXT_ONLY
                ) as dialling,
                open_handshaker(listen=[], encryption=EncryptionPolicy.PLAINTEXT_ONLY) as accepting,
            ):
                dialling.register(torrent)
                accepting.register(torrent)
                assert dialling.connect(torrent, B)
                with trio.fail_after(10):
                    if expected == "utp":
                        remote: trio.abc.Stream = await b.incoming().receive()
                    else:
                        while not fake.remotes:
                            await trio.sleep(0.01)
                        remote = fake.remotes.pop()
                    accepting.accept_stream(remote, A)  # the default: TCP
                    ours = await dialling.completed().receive()
                    theirs = await accepting.completed().receive()
                assert ours.transport == expected
                assert theirs.transport == "tcp"
                await ours.aclose()
                await theirs.aclose()


async def test_accept_stream_rejects_an_unknown_transport() -> None:
    async with open_handshaker(listen=[]) as handshaker:
        left, right = trio.testing.memory_stream_pair()
        with pytest.raises(ValueError, match="transport"):
            handshaker.accept_stream(left, A, transport="sctp")  # type: ignore[arg-type]
        await left.aclose()
        await right.aclose()


def test_a_completed_handshake_defaults_to_tcp() -> None:
    assert CompletedHandshake.__dataclass_fields__["transport"].default == "tcp"


def test_validation() -> None:
    with pytest.raises(ValueError, match="prefer"):
        PeerDialer(prefer="sctp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local_address"):
        PeerDialer(local_address="localhost")
    with pytest.raises(ValueError, match="first_timeout"):
        PeerDialer(first_timeout=0)
    with pytest.raises(ValueError, match="first_timeout"):
        PeerDialer(first_timeout=float("inf"))
    for share in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="first_share"):
            PeerDialer(first_share=share)
    with pytest.raises(TypeError, match="UtpSocket"):
        PeerDialer().add_utp(object())  # type: ignore[arg-type]


# --------------------------------------------------------------------- real loopback


async def test_loopback_refused_tcp_reaches_a_utp_only_peer() -> None:
    """A real refused TCP port, then real uTP on the same port number."""
    with trio.fail_after(20):
        async with open_utp_socket(("127.0.0.1", 0)) as server, open_utp_socket() as client:
            dialer = PeerDialer(utp=[client], local_address="127.0.0.1")
            stream = await dialer(server.local_address)  # nobody listens on that TCP port
            accepted = await server.incoming().receive()
            await stream.send_all(b"hello")
            assert await accepted.receive_some() == b"hello"
            stats = dialer.statistics()
            assert (stats.tcp_attempts, stats.fallbacks, stats.utp_connected) == (1, 1, 1)
            await stream.aclose()
            await accepted.aclose()


async def test_loopback_tcp_from_the_local_address() -> None:
    with trio.fail_after(20):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        port = listener.socket.getsockname()[1]
        target = PeerAddress(ip_address("127.0.0.1"), port)
        try:
            for local, seen in (("127.0.0.2", "127.0.0.2"), ("0.0.0.0", None), (None, None)):
                dialer = PeerDialer(local_address=local)
                stream = await dialer(target)
                try:
                    accepted = await listener.accept()
                    peer_host = accepted.socket.getpeername()[0]
                    if seen is not None:
                        assert peer_host == seen
                    await accepted.send_all(b"x")
                    assert await stream.receive_some() == b"x"
                    await accepted.aclose()
                finally:
                    await stream.aclose()
                assert dialer.statistics().tcp_connected == 1
        finally:
            await listener.aclose()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_loopback_local_address_of_another_family_is_not_used() -> None:
    with trio.fail_after(20):
        listener = (await trio.open_tcp_listeners(0, host="::1"))[0]
        port = listener.socket.getsockname()[1]
        try:
            dialer = PeerDialer(local_address="127.0.0.2")
            stream = await dialer(PeerAddress(ip_address("::1"), port))
            accepted = await listener.accept()
            assert accepted.socket.getpeername()[0] == "::1"
            await stream.aclose()
            await accepted.aclose()
        finally:
            await listener.aclose()
