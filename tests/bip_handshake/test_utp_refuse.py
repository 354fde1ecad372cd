"""SYNs a uTP socket does not simply accept: an outgoing-only socket's (``accept_incoming=False``),
and a SYN reusing the id of a connection we accepted (a resend, a restarted peer, or a forgery)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing
from test_utp_socket import A, B, Link, read_all

from bip_handshake import PeerAddress
from bip_handshake._utp_config import UtpConfig, UtpConnectError, UtpError
from bip_handshake._utp_packet import UtpPacket, UtpPacketType
from bip_handshake._utp_socket import UtpSocket, open_utp_over, open_utp_socket
from bip_handshake._utp_stream import UtpStream

PEER = PeerAddress(IPv4Address("10.9.9.9"), 7000)
ID = 1000  # the peer's receive id: its SYNs carry it; we receive on ID + 1


@asynccontextmanager
async def acceptor(
    config: UtpConfig | None = None, *, accept_incoming: bool = True
) -> AsyncIterator[tuple[UtpSocket, list[UtpPacket]]]:
    """A shared-socket uTP socket at B whose every datagram out is decoded into a list."""
    sent: list[UtpPacket] = []

    async def send(data: bytes, address: PeerAddress) -> None:
        assert address == PEER
        sent.append(UtpPacket.decode(data))
        await trio.lowlevel.checkpoint()

    async with open_utp_over(send, B, config=config, accept_incoming=accept_incoming) as utp:
        yield utp, sent


def syn(seq: int, connection_id: int = ID) -> bytes:
    return UtpPacket(UtpPacketType.SYN, connection_id, 0, 0, 1 << 20, seq, 0).encode()


def data_from_peer(seq: int, ack: int, payload: bytes = b"hi") -> bytes:
    """A DATA packet on the connection the peer opened with id ID."""
    return UtpPacket(UtpPacketType.DATA, ID + 1, 0, 0, 1 << 20, seq, ack, payload=payload).encode()


async def settle() -> None:
    await trio.sleep(0.01)


# ------------------------------------------------------------------ accept_incoming=False


async def test_outgoing_only_socket_resets_a_syn_and_keeps_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with acceptor(accept_incoming=False) as (utp, sent):
        assert not utp.accept_incoming
        utp.datagram_received(syn(77), PEER)
        await settle()
        assert [(p.type, p.connection_id, p.ack_nr) for p in sent] == [
            (UtpPacketType.RESET, ID, 77)
        ]
        stats = utp.statistics()
        assert (stats.refused, stats.accepted, stats.connections) == (1, 0, 0)
        assert stats.unknown_connection == 0
        # Nothing will ever be accepted: iterating incoming() ends at once.
        with trio.fail_after(1):
            assert [stream async for stream in utp.incoming()] == []


async def test_outgoing_only_resets_are_rate_limited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = UtpConfig(resets_per_second=5)
    async with acceptor(config, accept_incoming=False) as (utp, sent):
        for index in range(200):
            utp.datagram_received(syn(index, connection_id=index * 2), PEER)
        await settle()
        stats = utp.statistics()
        assert stats.refused == 200
        assert stats.resets_sent == len(sent) == 5
        assert stats.resets_suppressed == 195
        assert stats.connections == 0
        await trio.sleep(1)  # the bucket refills
        utp.datagram_received(syn(1), PEER)
        await settle()
        assert utp.statistics().resets_sent == 6


async def test_outgoing_only_socket_still_dials(autojump_clock: trio.testing.MockClock) -> None:
    link = Link()
    async with (
        open_utp_over(link.sender(A), A, accept_incoming=False) as dialler,
        open_utp_over(link.sender(B), B) as server,
    ):
        link.sockets.update({A: dialler, B: server})

        async def serve() -> None:
            stream = await server.incoming().receive()
            assert await read_all(stream) == b"ping"
            await stream.send_all(b"pong")
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            stream = await dialler.connect(B)
            await stream.send_all(b"ping")
            await stream.send_eof()
            assert await read_all(stream) == b"pong"
            await stream.aclose()
        # The other way round is refused at once, not left to time out.
        with trio.fail_after(1), pytest.raises(UtpConnectError, match="refused"):
            await server.connect(A)
        assert dialler.statistics().refused == 1
        assert dialler.statistics().accepted == 0


async def test_outgoing_only_loopback_socket() -> None:
    with trio.fail_after(10):
        async with (
            open_utp_socket(accept_incoming=False) as outgoing,
            open_utp_socket() as stray,
        ):
            assert not outgoing.accept_incoming
            assert stray.accept_incoming
            with pytest.raises(UtpConnectError, match="refused"):
                await stray.connect(outgoing.local_address)
            assert outgoing.statistics().refused == 1
            assert outgoing.statistics().connections == 0


# ------------------------------------------------------- a SYN reusing an accepted id


async def accept_raw(utp: UtpSocket, sent: list[UtpPacket], seq: int) -> tuple[UtpStream, int]:
    """The peer's SYN accepted: the stream, and our first sequence number (from the ST_STATE)."""
    before = len(sent)
    utp.datagram_received(syn(seq), PEER)
    await settle()
    stream = utp.incoming().receive_nowait()
    [state] = sent[before:]
    assert state.type is UtpPacketType.STATE
    return stream, state.seq_nr


async def test_resent_syn_is_answered_again_even_after_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with acceptor() as (utp, sent):
        stream, ours = await accept_raw(utp, sent, 500)
        utp.datagram_received(data_from_peer(501, (ours - 1) & 0xFFFF), PEER)
        assert await stream.receive_some() == b"hi"
        await settle()  # the DATA's ack is out
        before = len(sent)
        utp.datagram_received(syn(500), PEER)
        await settle()
        assert [p.type for p in sent[before:]] == [UtpPacketType.STATE]
        stats = utp.statistics()
        assert (stats.accepted, stats.replaced, stats.refused, stats.connections) == (1, 0, 0, 1)


async def test_new_syn_replaces_an_unconfirmed_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The peer restarted right after its SYN: nothing but the SYN ever came on the old one.
    async with acceptor() as (utp, sent):
        old, _ = await accept_raw(utp, sent, 500)
        woken: list[BaseException] = []

        async def reader() -> None:
            try:
                await old.receive_some()
            except trio.BrokenResourceError as error:
                woken.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await settle()
            new, _ = await accept_raw(utp, sent, 9000)
        [error] = woken  # the reader was woken, with the reason
        assert isinstance(error.__cause__, UtpError)
        assert "replaced" in str(error.__cause__)
        # No RESET went out: it would carry the id the peer's new connection receives on.
        assert all(p.type is not UtpPacketType.RESET for p in sent)
        stats = utp.statistics()
        assert (stats.accepted, stats.replaced, stats.connections) == (2, 1, 1)
        assert stats.failed == 1
        assert new._connection.key == old._connection.key
        await old.aclose()  # harmless: the new connection is not touched
        assert utp.statistics().connections == 1


async def test_new_syn_for_a_live_connection_gets_a_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with acceptor() as (utp, sent):
        stream, ours = await accept_raw(utp, sent, 500)
        utp.datagram_received(data_from_peer(501, (ours - 1) & 0xFFFF), PEER)
        assert await stream.receive_some() == b"hi"
        await trio.sleep(5)  # quiet for a while, but well within a keepalive interval
        before = len(sent)
        utp.datagram_received(syn(9000), PEER)
        await settle()
        assert [(p.type, p.connection_id, p.ack_nr) for p in sent[before:]] == [
            (UtpPacketType.RESET, ID, 9000)
        ]
        stats = utp.statistics()
        assert (stats.accepted, stats.replaced, stats.refused, stats.connections) == (1, 0, 1, 1)
        # The connection lives on.
        utp.datagram_received(data_from_peer(502, (ours - 1) & 0xFFFF, b"more"), PEER)
        assert await stream.receive_some() == b"more"


async def test_an_idle_live_connection_survives_a_new_syn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # libtorrent sends no uTP keepalives (its BitTorrent keep-alive comes after a minute or
    # more of idleness): a peer silent for longer than our keepalive interval, with nothing
    # of ours to ack, may be a live one. A SYN reusing its id (forged from its address by
    # anyone who guessed the id) is refused; the connection is not given up.
    async with acceptor() as (utp, sent):
        stream, ours = await accept_raw(utp, sent, 500)
        utp.datagram_received(data_from_peer(501, (ours - 1) & 0xFFFF), PEER)
        assert await stream.receive_some() == b"hi"
        await stream.send_all(b"ho")
        await settle()
        [data] = [p for p in sent if p.type is UtpPacketType.DATA]
        utp.datagram_received(
            UtpPacket(UtpPacketType.STATE, ID + 1, 0, 0, 1 << 20, 502, data.seq_nr).encode(),
            PEER,
        )
        # Idle both ways for a minute: two of our keepalive intervals, half the idle timeout.
        await trio.sleep(60)
        before = len(sent)
        utp.datagram_received(syn(9000), PEER)
        await settle()
        assert [(p.type, p.connection_id, p.ack_nr) for p in sent[before:]] == [
            (UtpPacketType.RESET, ID, 9000)
        ]
        stats = utp.statistics()
        assert (stats.accepted, stats.replaced, stats.refused, stats.connections) == (1, 0, 1, 1)
        assert stats.failed == 0
        # The connection lives on, both ways.
        utp.datagram_received(data_from_peer(502, data.seq_nr, b"more"), PEER)
        assert await stream.receive_some() == b"more"
        await stream.send_all(b"back")


async def test_a_connection_silent_past_the_idle_timeout_is_gone_for_a_new_syn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Silence is dealt with by the idle timeout alone: the connection fails on its own, and
    # a SYN after that opens a new one (nothing is left to replace).
    async with acceptor(UtpConfig(idle_timeout=40.0)) as (utp, sent):
        old, ours = await accept_raw(utp, sent, 500)
        utp.datagram_received(data_from_peer(501, (ours - 1) & 0xFFFF), PEER)
        assert await old.receive_some() == b"hi"
        await trio.sleep(39.5)
        utp.datagram_received(syn(9000), PEER)  # not yet: the peer may be idle, not gone
        await settle()
        assert sent[-1].type is UtpPacketType.RESET
        await trio.sleep(0.5)
        with pytest.raises(trio.BrokenResourceError):
            await old.receive_some()
        await accept_raw(utp, sent, 9001)
        stats = utp.statistics()
        assert (stats.accepted, stats.replaced, stats.connections) == (2, 0, 1)


async def test_new_syn_replaces_a_connection_whose_acks_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # We were sending; the peer fell silent (it crashed): a second later, it is dead to us.
    async with acceptor() as (utp, sent):
        old, ours = await accept_raw(utp, sent, 500)
        utp.datagram_received(data_from_peer(501, (ours - 1) & 0xFFFF), PEER)
        assert await old.receive_some() == b"hi"
        await old.send_all(b"x" * 5000)
        await trio.sleep(0.5)
        utp.datagram_received(syn(9000), PEER)  # too soon: a live peer's ack may be late
        await settle()
        assert sent[-1].type is UtpPacketType.RESET
        await trio.sleep(0.6)
        await accept_raw(utp, sent, 9001)
        assert utp.statistics().replaced == 1
        with pytest.raises(trio.BrokenResourceError):
            await old.send_all(b"more")


async def test_new_syn_replaces_a_connection_lingering_after_a_clean_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with acceptor() as (utp, sent):
        old, ours = await accept_raw(utp, sent, 500)
        utp.datagram_received(data_from_peer(501, (ours - 1) & 0xFFFF), PEER)
        await old.aclose()  # our FIN
        await settle()
        fin = sent[-1]
        assert fin.type is UtpPacketType.FIN
        # The peer acks our FIN and sends its own: CLOSED, lingering to re-ack it.
        utp.datagram_received(
            UtpPacket(UtpPacketType.FIN, ID + 1, 0, 0, 1 << 20, 502, fin.seq_nr).encode(), PEER
        )
        await settle()
        assert old._connection.core.state.name == "CLOSED"
        assert utp.statistics().connections == 1
        await accept_raw(utp, sent, 9000)
        stats = utp.statistics()
        assert (stats.replaced, stats.connections, stats.failed) == (1, 1, 1)


async def test_replacing_needs_no_room_but_the_old_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with acceptor(UtpConfig(max_connections=1)) as (utp, sent):
        await accept_raw(utp, sent, 500)
        await accept_raw(utp, sent, 9000)  # the limit counts the one it replaces as gone
        assert utp.statistics().replaced == 1
        # Another id while the one slot is taken: refused as before.
        utp.datagram_received(syn(1, connection_id=ID + 10), PEER)
        await settle()
        assert sent[-1].type is UtpPacketType.RESET
        assert utp.statistics().refused == 1


@contextmanager
def drawing(*values: int) -> Iterator[None]:
    """secrets.randbelow gives ``values`` first (connection id, sequence number...)."""
    real = secrets.randbelow
    queue = list(values)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(secrets, "randbelow", lambda n: queue.pop(0) if queue else real(n))
        yield


async def test_a_restarted_peer_reconnects_with_the_same_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # a dials b, a crashes mid-transfer (its RESETs never leave), a "restarts" at the same
    # address and draws the same receive id: too soon, it is refused; once b's packets have
    # gone unacknowledged for a while, its SYN replaces the dead connection.
    link = Link()
    async with open_utp_over(link.sender(B), B) as b:
        link.sockets[B] = b
        async with open_utp_over(link.sender(A), A) as a:
            link.sockets[A] = a
            with drawing(ID, 100):
                dialled = await a.connect(B)
            accepted = b.incoming().receive_nowait()
            await dialled.send_all(b"hello")
            assert await accepted.receive_some() == b"hello"
            link.cut = True  # the crash: nothing of a's leaves any more
        link.cut = False
        # b's data is lost (were it to reach the restarted a, a's RESET for a connection it
        # does not know would end b's first, TCP's way: that path is not the one under test).
        link.drop_if = lambda data: UtpPacket.decode(data).type is UtpPacketType.DATA
        await accepted.send_all(b"x" * 3000)
        async with open_utp_over(link.sender(A), A, config=UtpConfig(syn_retries=0)) as a2:
            link.sockets[A] = a2
            await trio.sleep(0.2)
            with drawing(ID, 200), pytest.raises(UtpConnectError, match="refused"):
                await a2.connect(B)
            await trio.sleep(1.5)
            link.drop_if = None
            with drawing(ID, 300):
                again = await a2.connect(B)
            fresh = b.incoming().receive_nowait()
            with pytest.raises(trio.BrokenResourceError):
                await accepted.send_all(b"more")
            await again.send_all(b"back")
            assert await fresh.receive_some() == b"back"
            stats = b.statistics()
            assert (stats.accepted, stats.replaced, stats.refused) == (2, 1, 1)
            await again.aclose()
            await fresh.aclose()
