"""A hostile-peer campaign against a running Handshaker's front door, over loopback TCP.

A real :class:`~bip_handshake.Handshaker` listens on 127.0.0.1 with a registered torrent;
attackers connect from other 127.0.0.X addresses and break the BEP 3 handshake and MSE/PE
at every step (degenerate keys, padding floods, wrong constants, unknown methods, lengths
out of bounds, unknown torrents, early closes, one byte at a time). After each attack:
no traceback or ERROR record, the statistics counter named after what happened moved,
the bounds held, and honest handshakes (both directions, plaintext and RC4) still complete.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import pytest
import trio
import trio.testing
from _streams import read_until_closed, read_up_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bip_handshake import EncryptionPolicy, Extensions, Handshake, PeerAddress, PeerId
from bip_handshake._handshaker import CompletedHandshake, Handshaker, open_handshaker
from bip_handshake._mse import MSEEstablished, MSEInitiator
from bip_handshake._mse_crypto import (
    DH_P,
    VC,
    RC4Stream,
    dh_public_key,
    dh_secret,
    hash_concat,
    stream_keys,
)
from bip_metainfo import InfoHash

TORRENT_ID = b"\x11" * 20
TORRENT = InfoHash(v1=TORRENT_ID)
OTHER_ID = b"\x22" * 20  # never registered
SERVER = PeerId(b"-BP0100-serverserver")
ATTACKER = PeerId(b"-XX0000-attackattack")
PREFER = EncryptionPolicy.PREFER_ENCRYPTED
PLAIN = EncryptionPolicy.PLAINTEXT_ONLY
# A fixed private key makes the attacker's Ya known and valid.
ATTACKER_KEY = 2**159 + 12345


def handshake(
    info_hash: bytes = TORRENT_ID,
    peer_id: bytes = ATTACKER.value,
    extensions: Extensions = Extensions.FAST,
) -> bytes:
    return Handshake(extensions, info_hash, peer_id).to_bytes()


# -- the arena -------------------------------------------------------------------------


@dataclass
class Arena:
    """The victim handshaker, and two honest peers (RC4 and plaintext) with listeners."""

    victim: Handshaker
    encrypted: Handshaker
    plain: Handshaker

    @property
    def port(self) -> int:
        return self.victim.listen_addresses[0].port


@asynccontextmanager
async def arena(
    *, handshake_timeout: float = 5.0, max_inbound: int | None = None
) -> AsyncIterator[Arena]:
    async with (
        open_handshaker(
            peer_id=SERVER,
            listen=[("127.0.0.1", 0)],
            encryption=PREFER,
            handshake_timeout=handshake_timeout,
            max_inbound=max_inbound,
        ) as victim,
        open_handshaker(
            listen=[("127.0.0.20", 0)], encryption=EncryptionPolicy.REQUIRE_ENCRYPTED
        ) as encrypted,
        open_handshaker(listen=[("127.0.0.21", 0)], encryption=PLAIN) as plain,
    ):
        for handshaker in (victim, encrypted, plain):
            handshaker.register(TORRENT)
        yield Arena(victim, encrypted, plain)


async def take(handshaker: Handshaker, n: int) -> list[CompletedHandshake]:
    peers = []
    with trio.fail_after(10):
        for _ in range(n):
            peers.append(await handshaker.completed().receive())
    return peers


async def honest_round(arena: Arena) -> None:
    """Both honest peers dial the victim and the victim dials both: all four complete."""
    victim_address = arena.victim.listen_addresses[0]
    assert arena.encrypted.connect(TORRENT, victim_address)
    assert arena.plain.connect(TORRENT, victim_address)
    assert arena.victim.connect(TORRENT, arena.encrypted.listen_addresses[0])
    assert arena.victim.connect(TORRENT, arena.plain.listen_addresses[0])
    on_victim = await take(arena.victim, 4)
    others = await take(arena.encrypted, 2) + await take(arena.plain, 2)
    try:
        methods = sorted((p.direction, p.encryption) for p in on_victim)
        assert methods == [
            ("inbound", "plaintext"),
            ("inbound", "rc4"),
            ("outbound", "plaintext"),
            ("outbound", "rc4"),
        ]
        # The RC4 stream works both ways after the handshake.
        inbound_rc4 = next(
            p for p in on_victim if (p.direction, p.encryption) == ("inbound", "rc4")
        )
        dialler = next(p for p in others if p.direction == "outbound" and p.encryption == "rc4")
        await dialler.stream.send_all(b"ping")
        with trio.fail_after(5):
            got = await read_up_to(inbound_rc4.stream, 4, inbound_rc4.trailing)
        assert got == b"ping"
    finally:
        for peer in on_victim + others:
            await peer.aclose()


async def connect_from(arena: Arena, host: str) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", arena.port, local_address=host)


async def drain(stream: trio.abc.Stream, limit: int = 1 << 20) -> bytes:
    """Everything the victim sends until it closes (bounded in bytes and time)."""
    with trio.fail_after(10):
        return await read_until_closed(stream, limit)


async def settled(handshaker: Handshaker) -> None:
    """Wait until no handshake is in flight and every attempt ended."""
    with trio.fail_after(10):
        while True:
            s = handshaker.statistics()
            if s.in_flight == 0 and s.completed + s.failures == (
                s.outbound_attempts + s.inbound_attempts
            ):
                return
            await trio.sleep(0.01)


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


# -- a hand-driven MSE initiator that can lie at every field -----------------------------


@dataclass
class Lie:
    """What a hostile MSE initiator sends at step 3 (``None``: the honest value)."""

    ya: bytes | None = None
    pad_a: bytes = b""
    req1_offset: int = 0  # garbage bytes between PadA and HASH('req1', S)
    send_req1: bool = True
    vc: bytes = VC
    skey: bytes = TORRENT_ID
    provide: int = 0x03
    pad_c_len: int | None = None
    pad_c: bytes = b""
    ia_len: int | None = None
    ia: bytes = b""
    ia_sent: int | None = None  # how many IA bytes are really sent (None: all)
    after: bytes = b""  # plaintext bytes encrypted and sent after IA
    close_after: str | None = None  # "ya", "req1", "skey", "provide", "pad_c", "ia"


async def hostile_mse(stream: trio.SocketStream, lie: Lie) -> tuple[bytes, RC4Stream | None]:
    """Run step 1 and 3 of MSE as ``lie`` says; returns what the victim sent and our
    decryptor (None if the victim never sent its key)."""
    ya = lie.ya if lie.ya is not None else dh_public_key(ATTACKER_KEY)
    await stream.send_all(ya + lie.pad_a)
    if lie.close_after == "ya":
        return await close_and_drain(stream), None
    received = bytearray()
    with trio.fail_after(5):
        while len(received) < 96:
            chunk = await stream.receive_some()
            if not chunk:
                return bytes(received), None
            received += chunk
    secret = dh_secret(ATTACKER_KEY, bytes(received[:96]))
    key_a, key_b = stream_keys(secret, lie.skey)
    encryptor, decryptor = RC4Stream(key_a), RC4Stream(key_b)
    out = bytes(lie.req1_offset)
    if lie.send_req1:
        out += hash_concat(b"req1", secret)
    await stream.send_all(out)
    if lie.close_after == "req1" or not lie.send_req1:
        return bytes(received) + await close_and_drain(stream), decryptor
    masked = bytes(
        x ^ y
        for x, y in zip(hash_concat(b"req2", lie.skey), hash_concat(b"req3", secret), strict=True)
    )
    await stream.send_all(masked)
    if lie.close_after == "skey":
        return bytes(received) + await close_and_drain(stream), decryptor
    pad_c_len = len(lie.pad_c) if lie.pad_c_len is None else lie.pad_c_len
    await stream.send_all(
        encryptor.process(lie.vc + lie.provide.to_bytes(4, "big") + pad_c_len.to_bytes(2, "big"))
    )
    if lie.close_after == "provide":
        return bytes(received) + await close_and_drain(stream), decryptor
    ia_len = len(lie.ia) if lie.ia_len is None else lie.ia_len
    await stream.send_all(encryptor.process(lie.pad_c + ia_len.to_bytes(2, "big")))
    if lie.close_after == "pad_c":
        return bytes(received) + await close_and_drain(stream), decryptor
    ia = lie.ia if lie.ia_sent is None else lie.ia[: lie.ia_sent]
    await stream.send_all(encryptor.process(ia + lie.after))
    if lie.close_after == "ia":
        return bytes(received) + await close_and_drain(stream), decryptor
    return bytes(received) + await drain(stream), decryptor


async def close_and_drain(stream: trio.SocketStream) -> bytes:
    await stream.send_eof()
    return await drain(stream)


# -- MSE initiator attacks on the victim (it is the receiver) -----------------------------


@pytest.mark.parametrize(
    "y",
    [0, 1, DH_P - 1, DH_P, DH_P + 1, 2**768 - 1],
    ids=["0", "1", "p-1", "p", "p+1", "max"],
)
async def test_degenerate_ya_is_refused_before_we_answer(
    y: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with arena() as a:
        stream = await connect_from(a, "127.0.0.2")
        await stream.send_all(y.to_bytes(96, "big"))
        # No Yb: a degenerate key would give a known secret.
        assert await drain(stream) == b""
        await stream.aclose()
        await settled(a.victim)
        stats = a.victim.statistics()
        assert stats.mse_failed == stats.failures == 1, stats
        await honest_round(a)
    no_errors(caplog)


@dataclass(frozen=True)
class Case:
    lie: Lie
    counter: str | None  # the failure counter; None: the handshake completes


MSE_CASES = {
    "pad_a_512_sync_at_last_byte": Case(Lie(pad_a=bytes(512), ia=handshake()), None),
    "pad_a_513_never_synced": Case(Lie(pad_a=bytes(513), ia=handshake()), "mse_failed"),
    "no_sync_hash_ever": Case(
        Lie(pad_a=bytes(400), req1_offset=200, send_req1=False), "mse_failed"
    ),
    "vc_wrong": Case(Lie(vc=b"\x00" * 7 + b"\x01", ia=handshake()), "mse_failed"),
    "provide_zero": Case(Lie(provide=0, ia=handshake()), "mse_failed"),
    "provide_unknown_bits": Case(Lie(provide=0xFFFF_FFFC, ia=handshake()), "mse_failed"),
    "provide_all_bits": Case(Lie(provide=0xFFFF_FFFF, ia=handshake()), None),
    "provide_plaintext_only": Case(Lie(provide=0x01, ia=handshake()), None),
    "pad_c_513": Case(Lie(pad_c_len=513, pad_c=bytes(513), ia=handshake()), "mse_failed"),
    "pad_c_512": Case(Lie(pad_c=bytes(512), ia=handshake()), None),
    "ia_empty_handshake_after": Case(Lie(after=handshake()), None),
    "ia_not_a_handshake": Case(Lie(ia=b"GET / HTTP/1.1\r\n\r\n"), "protocol_error"),
    "ia_huge_garbage": Case(Lie(ia=bytes(range(256)) * 255 + bytes(255)), "protocol_error"),
    "ia_huge_truncated": Case(
        Lie(ia_len=0xFFFF, ia=bytes(1000), close_after="ia"), "connection_lost"
    ),
    "ia_handshake_of_unknown_torrent": Case(
        Lie(ia=handshake(info_hash=OTHER_ID)), "unknown_info_hash"
    ),
    "skey_unknown": Case(Lie(skey=OTHER_ID, ia=handshake(info_hash=OTHER_ID)), "unknown_info_hash"),
    "own_peer_id": Case(Lie(ia=handshake(peer_id=SERVER.value)), "self_connection"),
    "close_after_ya": Case(Lie(close_after="ya"), "connection_lost"),
    "close_after_req1": Case(Lie(close_after="req1"), "connection_lost"),
    "close_after_skey": Case(Lie(close_after="skey"), "connection_lost"),
    "close_after_provide": Case(Lie(close_after="provide"), "connection_lost"),
    "close_after_pad_c": Case(Lie(close_after="pad_c", ia=handshake()), "connection_lost"),
    "close_mid_ia": Case(Lie(close_after="ia", ia=handshake(), ia_sent=30), "connection_lost"),
}


@pytest.mark.parametrize("name", list(MSE_CASES))
async def test_hostile_mse_initiator(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """Each lie costs its connection, counted under its reason, while honest peers complete
    beside it; the cases at the very edge of the bounds complete."""
    caplog.set_level(logging.DEBUG)
    case = MSE_CASES[name]
    async with arena() as a:
        stream = await connect_from(a, "127.0.0.3")
        async with trio.open_nursery() as nursery:

            async def attack() -> None:
                # The victim closes as soon as it sees the lie: later writes may break.
                with contextlib.suppress(trio.BrokenResourceError):
                    await hostile_mse(stream, case.lie)

            nursery.start_soon(attack)
            if case.counter is None:
                (peer,) = await take(a.victim, 1)
                assert peer.peer_id == ATTACKER
                assert peer.encryption == ("plaintext" if case.lie.provide == 1 else "rc4")
                await peer.aclose()
            else:
                await honest_round(a)
        await stream.aclose()
        await settled(a.victim)
        stats = a.victim.statistics()
        if case.counter is None:
            assert stats.inbound_completed == 1, stats
            assert stats.failures == 0, stats
        else:
            assert stats.failures == getattr(stats, case.counter) == 1, stats
        await honest_round(a)
    no_errors(caplog)


async def test_mse_trailing_stream_is_delivered_intact(caplog: pytest.LogCaptureFixture) -> None:
    """Bytes after IA (and after completion) reach the owner decrypted, in order."""
    caplog.set_level(logging.DEBUG)
    first = bytes(range(256)) * 40  # more than one read
    async with arena() as a:
        stream = await connect_from(a, "127.0.0.4")
        initiator = MSEInitiator(TORRENT_ID, PREFER, initial_payload=handshake() + first[:100])
        await stream.send_all(initiator.data_to_send())
        with trio.fail_after(5):
            while True:
                initiator.receive_data(await stream.receive_some())
                event = initiator.next_event()
                if out := initiator.data_to_send():
                    await stream.send_all(out)
                if isinstance(event, MSEEstablished):
                    break
        await stream.send_all(initiator.encrypt(first[100:]))
        (peer,) = await take(a.victim, 1)
        with trio.fail_after(5):
            got = await read_up_to(peer.stream, len(first), peer.trailing)
        assert got == first
        await peer.aclose()
        await stream.aclose()
    no_errors(caplog)


# -- plaintext attacks ------------------------------------------------------------------


PLAIN_CASES: dict[str, tuple[Callable[[], bytes], str | None]] = {
    "reserved_garbage": (lambda: handshake(extensions=Extensions.from_bytes(b"\xff" * 8)), None),
    "zero_peer_id": (lambda: handshake(peer_id=bytes(20)), None),
    "other_torrent": (lambda: handshake(info_hash=OTHER_ID), "unknown_info_hash"),
    "own_peer_id": (lambda: handshake(peer_id=SERVER.value), "self_connection"),
    "protocol_length_0_then_close": (lambda: b"\x00" + handshake()[1:], "connection_lost"),
    "protocol_length_255_then_close": (lambda: b"\xff" + handshake()[1:], "connection_lost"),
    "protocol_string_wrong": (lambda: b"\x13BitTorrent protocoX" + handshake()[20:], None),
    "truncated": (lambda: handshake()[:50], "connection_lost"),
}


@pytest.mark.parametrize("name", list(PLAIN_CASES))
async def test_hostile_plaintext(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    make, counter = PLAIN_CASES[name]
    async with arena() as a:
        stream = await connect_from(a, "127.0.0.5")
        await stream.send_all(make())
        if name == "protocol_string_wrong":
            # Not \x13BitTorrent protocol: read as an MSE key; the padding scan gives up.
            await stream.send_all(bytes(600))
            counter = "mse_failed"
        if counter is None:
            (peer,) = await take(a.victim, 1)
            assert peer.encryption == "plaintext"
            await peer.aclose()
        else:
            await stream.send_eof()
        answer = await drain(stream)
        if counter in ("unknown_info_hash",):
            assert answer == b""  # no answer for a torrent we do not serve
        await stream.aclose()
        await settled(a.victim)
        stats = a.victim.statistics()
        if counter is None:
            assert stats.inbound_completed == 1, stats
            assert stats.failures == 0, stats
        else:
            assert stats.failures == getattr(stats, counter) == 1, stats
        await honest_round(a)
    no_errors(caplog)


async def test_one_byte_writes_and_trailing_bytes_arrive_intact(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """68 one-byte writes, then a second handshake and more: all of it after the first
    handshake belongs to the peer wire protocol, and arrives in order."""
    caplog.set_level(logging.DEBUG)
    after = handshake() + bytes(range(256)) * 8
    async with arena() as a:
        stream = await connect_from(a, "127.0.0.6")
        stream.setsockopt(6, 1, 1)  # TCP_NODELAY: one byte per segment
        for byte in handshake():
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.001)
        await stream.send_all(after[:100])
        (peer,) = await take(a.victim, 1)
        await stream.send_all(after[100:])
        with trio.fail_after(5):
            got = await read_up_to(peer.stream, len(after), peer.trailing)
        assert got == after
        await peer.aclose()
        await stream.aclose()
    no_errors(caplog)


async def test_slowloris_hits_the_handshake_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """A peer dribbling a byte at a time, plaintext or MSE, is cut at the deadline."""
    caplog.set_level(logging.DEBUG)
    async with arena(handshake_timeout=1.0) as a:
        plain = await connect_from(a, "127.0.0.7")
        mse = await connect_from(a, "127.0.0.8")
        silent = await connect_from(a, "127.0.0.9")

        async def dribble(stream: trio.SocketStream, data: bytes) -> None:
            with trio.move_on_after(3), contextlib.suppress(trio.BrokenResourceError):
                for byte in data:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble, plain, handshake())
            nursery.start_soon(dribble, mse, dh_public_key(ATTACKER_KEY) + bytes(100))
            await honest_round(a)
        await settled(a.victim)
        stats = a.victim.statistics()
        assert stats.handshake_timeout == stats.failures == 3, stats
        for stream in (plain, mse, silent):
            await stream.aclose()
        await honest_round(a)
    no_errors(caplog)


# -- the victim dials an attacker (it is the MSE initiator) --------------------------------


Responder = Callable[[trio.SocketStream], Awaitable[None]]


async def answer_mse(
    stream: trio.SocketStream,
    *,
    yb: bytes | None = None,
    pad_b: bytes = b"",
    select: int = 0x02,
    pad_d_len: int = 0,
    vc: bytes = VC,
    hold: bool = False,
) -> None:
    """Be a hostile MSE receiver: read Ya, answer Yb + PadB, then lie in step 4."""
    with trio.fail_after(5):
        data = await read_up_to(stream, 96)
    if len(data) < 96:
        return  # closed before its Ya
    key = 2**159 + 999
    await stream.send_all((yb if yb is not None else dh_public_key(key)) + pad_b)
    if yb is not None or hold:
        await drain(stream)
        return
    secret = dh_secret(key, data[:96])
    _, key_b = stream_keys(secret, TORRENT_ID)
    encryptor = RC4Stream(key_b)
    await stream.send_all(
        encryptor.process(vc + select.to_bytes(4, "big") + pad_d_len.to_bytes(2, "big"))
        + encryptor.process(bytes(min(pad_d_len, 600)))
    )
    await drain(stream)


RECEIVER_CASES: dict[str, Callable[[trio.SocketStream], Awaitable[None]]] = {
    "yb_zero": lambda s: answer_mse(s, yb=bytes(96)),
    "yb_p": lambda s: answer_mse(s, yb=DH_P.to_bytes(96, "big")),
    "pad_b_forever": lambda s: answer_mse(s, pad_b=bytes(5000), hold=True),
    "vc_never_found": lambda s: answer_mse(s, vc=b"\x01" * 8, pad_d_len=600),
    "select_not_offered": lambda s: answer_mse(s, select=0x04),
    "select_both": lambda s: answer_mse(s, select=0x03),
    "pad_d_513": lambda s: answer_mse(s, pad_d_len=513),
}


@pytest.mark.parametrize("name", list(RECEIVER_CASES))
async def test_dialling_a_hostile_mse_receiver(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """Each lie fails the MSE attempt; PREFER_ENCRYPTED redials once in plaintext, which
    the attacker (closing at once) loses too."""
    caplog.set_level(logging.DEBUG)
    respond = RECEIVER_CASES[name]
    async with arena() as a:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.30")
        port = listeners[0].socket.getsockname()[1]
        connections = 0

        async def serve(stream: trio.SocketStream) -> None:
            nonlocal connections
            connections += 1
            async with stream:
                if connections == 1:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await respond(stream)
                # The plaintext redial: closed at once.

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, serve, listeners)
            assert a.victim.connect(TORRENT, PeerAddress(IPv4Address("127.0.0.30"), port))
            await honest_round(a)
            await settled(a.victim)
            nursery.cancel_scope.cancel()
        stats = a.victim.statistics()
        # One fallback for the attacker, one for the honest plaintext-only peer.
        assert stats.plaintext_fallback == 2, stats
        assert stats.failures == stats.connection_lost == 1, stats
        assert connections == 2
        await honest_round(a)
    no_errors(caplog)


# -- floods -------------------------------------------------------------------------------


async def test_a_flood_from_one_address_leaves_room_for_honest_peers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hundreds of silent connections from one address take at most their share of the
    ``max_inbound`` slots (the rest are closed at once: ``over_limit``); honest peers
    dialling us meanwhile complete, in both directions, plaintext and RC4."""
    caplog.set_level(logging.DEBUG)
    async with arena(handshake_timeout=3.0, max_inbound=16) as a:
        streams: list[trio.SocketStream] = []
        try:
            for _ in range(200):
                streams.append(await connect_from(a, "127.0.0.40"))
            with trio.fail_after(5):
                while a.victim.statistics().inbound_attempts < 200:
                    await trio.sleep(0.01)
            stats = a.victim.statistics()
            # A quarter of the slots for one address; the others keep the rest.
            assert stats.inbound_in_flight == 4, stats
            assert stats.over_limit == 196, stats
            await honest_round(a)
        finally:
            for stream in streams:
                await stream.aclose()
        await settled(a.victim)
    no_errors(caplog)


async def test_connection_flood_keeps_the_bound_and_honest_peers_complete(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hundreds of silent connections from many addresses: at most ``max_inbound``
    handshakes in flight, the rest closed at once (``over_limit``) or, once the oldest has
    held its slot for a quarter of the handshake timeout, closed to make room; our dials
    (their own slots) and honest peers dialling us complete during the flood."""
    caplog.set_level(logging.DEBUG)
    async with arena(handshake_timeout=2.0, max_inbound=16) as a:
        streams: list[trio.SocketStream] = []
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, a.victim.statistics().inbound_in_flight)
                await trio.sleep(0.005)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for i in range(300):
                    streams.append(await connect_from(a, f"127.0.{1 + i // 200}.{1 + i % 200}"))
                with trio.fail_after(5):
                    while a.victim.statistics().inbound_attempts < 300:
                        await trio.sleep(0.01)
                # Every slot is held by a silent connection, and none has timed out yet.
                assert a.victim.statistics().inbound_in_flight == 16
                assert a.victim.statistics().handshake_timeout == 0
                await trio.sleep(0.6)  # the oldest now ran for a quarter of the timeout
                await honest_round(a)
                assert a.victim.statistics().handshake_timeout == 0  # still the flood
                await settled(a.victim)
                nursery.cancel_scope.cancel()
        finally:
            for stream in streams:
                await stream.aclose()
        stats = a.victim.statistics()
        assert peak <= 16
        assert stats.inbound_attempts == 302
        assert stats.inbound_completed == 2
        assert stats.over_limit + stats.handshake_timeout == 300, stats
        await honest_round(a)
    no_errors(caplog)


async def test_a_full_house_makes_room_only_after_a_quarter_of_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every inbound slot taken by silent peers: a newcomer is refused while they are young,
    and takes the oldest one's slot once it ran for a quarter of the handshake timeout;
    the bound holds throughout."""
    async with open_handshaker(
        peer_id=SERVER, listen=[], encryption=PLAIN, max_inbound=2, handshake_timeout=20
    ) as hs:
        hs.register(TORRENT)
        streams = []

        async def arrive(n: int) -> trio.abc.Stream:
            ours, theirs = trio.testing.memory_stream_pair()
            hs.accept_stream(theirs, PeerAddress(IPv4Address(f"10.0.1.{n}"), 6881))
            streams.append(ours)
            await trio.testing.wait_all_tasks_blocked()
            return ours

        first = await arrive(1)
        await trio.sleep(1)
        await arrive(2)
        await arrive(3)  # both young: refused
        assert hs.statistics().over_limit == 1
        await trio.sleep(4)  # the first ran 5 s, a quarter of 20 s
        newcomer = await arrive(4)
        stats = hs.statistics()
        assert (stats.over_limit, stats.inbound_in_flight) == (2, 2)
        assert await first.receive_some() == b""  # the oldest was closed
        await newcomer.send_all(handshake())
        peer = await hs.completed().receive()
        assert peer.address.host == IPv4Address("10.0.1.4")
        await peer.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert hs.statistics().inbound_in_flight == 1
        for stream in streams:
            await trio.aclose_forcefully(stream)


async def take_and_close(handshaker: Handshaker, n: int) -> None:
    for peer in await take(handshaker, n):
        await peer.aclose()


async def test_skey_of_one_torrent_and_a_handshake_for_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The RC4 keys were made with one torrent's SKEY: the handshake inside must name the
    same torrent (libtorrent refuses another one, registered or not)."""
    caplog.set_level(logging.DEBUG)
    second = InfoHash(v1=b"\x33" * 20)
    async with arena() as a:
        a.victim.register(second)
        stream = await connect_from(a, "127.0.0.10")
        with contextlib.suppress(trio.BrokenResourceError):
            await hostile_mse(stream, Lie(ia=handshake(info_hash=b"\x33" * 20), close_after="ia"))
        await stream.aclose()
        await settled(a.victim)
        stats = a.victim.statistics()
        assert stats.failures == stats.protocol_error == 1, stats
        await honest_round(a)
    no_errors(caplog)


async def test_accept_errors_are_retried_and_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors (EMFILE) at accept: counted, warned once, retried; the
    listener serves the next peers."""
    import errno

    caplog.set_level(logging.DEBUG)
    failed: dict[int, int] = {}  # listener -> accepts failed so far
    original = trio.SocketListener.accept

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        if failed.setdefault(id(self), 0) < 5:
            failed[id(self)] += 1
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EMFILE, "Too many open files")
        return await original(self)

    monkeypatch.setattr(trio.SocketListener, "accept", accept)
    async with arena() as a:
        await honest_round(a)
        stats = a.victim.statistics()
        assert stats.accept_errors == 5, stats
        assert stats.failures == 0, stats
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # Once per listener per minute, not once per retry (three handshakers here).
    assert len(warnings) == 3, [r.getMessage() for r in warnings]
    no_errors(caplog)


async def test_max_inbound_per_host_counts_every_port_of_an_address() -> None:
    """The per-host bound is per IP (any port): a second silent connection from the same
    host is refused, one from another host is not, and the slot frees when the first ends."""
    async with open_handshaker(
        peer_id=SERVER, listen=[], encryption=PLAIN, max_inbound=8, max_inbound_per_host=1
    ) as hs:
        hs.register(TORRENT)
        streams = []
        for host, port in (("10.0.0.1", 1000), ("10.0.0.1", 2000), ("10.0.0.2", 1000)):
            ours, theirs = trio.testing.memory_stream_pair()
            hs.accept_stream(theirs, PeerAddress(IPv4Address(host), port))
            streams.append(ours)
            await trio.testing.wait_all_tasks_blocked()  # in this order
        stats = hs.statistics()
        assert (stats.inbound_in_flight, stats.over_limit) == (2, 1)
        await streams[0].send_all(handshake())
        peer = await hs.completed().receive()
        await peer.aclose()
        ours, theirs = trio.testing.memory_stream_pair()
        hs.accept_stream(theirs, PeerAddress(IPv4Address("10.0.0.1"), 3000))
        await trio.testing.wait_all_tasks_blocked()
        assert hs.statistics().over_limit == 1  # the first one's slot was free again
        for stream in [*streams, ours]:
            await trio.aclose_forcefully(stream)


@pytest.mark.parametrize("value", [0, -1])
async def test_max_inbound_per_host_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match="max_inbound_per_host"):
        async with open_handshaker(listen=[], max_inbound_per_host=value):
            pass  # pragma: no cover


async def test_dialling_a_slowloris_is_cut_at_the_handshake_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer we dial that answers MSE one byte at a time never holds the dial past the
    handshake timeout (no plaintext redial: it was too slow, not refusing MSE)."""
    caplog.set_level(logging.DEBUG)
    async with arena(handshake_timeout=1.0) as a:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.31")
        port = listeners[0].socket.getsockname()[1]

        async def serve(stream: trio.SocketStream) -> None:
            async with stream:
                with trio.move_on_after(3), contextlib.suppress(trio.BrokenResourceError):
                    for byte in dh_public_key(2**159 + 7) + bytes(200):
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, serve, listeners)
            assert a.victim.connect(TORRENT, PeerAddress(IPv4Address("127.0.0.31"), port))
            await honest_round(a)
            await settled(a.victim)
            nursery.cancel_scope.cancel()
        stats = a.victim.statistics()
        assert stats.failures == stats.handshake_timeout == 1, stats
        assert stats.plaintext_fallback == 1, stats  # the honest plaintext-only peer's
    no_errors(caplog)


# One virtual clock for every example: the timeouts of connections left open cost nothing.
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=4),
    prefix=st.sampled_from([b"", b"\x13BitTorrent protocol", dh_public_key(ATTACKER_KEY)]),
    close=st.booleans(),
)
async def test_garbage_costs_one_connection_and_is_counted(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    chunks: list[bytes],
    prefix: bytes,
    close: bool,
) -> None:
    """Any bytes, in any chunks, after any start (nothing, a plaintext header, a valid MSE
    key): the connection ends (a refusal or, left open, the timeout), counted once as a
    failure, and the handshaker goes on."""
    async with open_handshaker(
        peer_id=SERVER, listen=[], encryption=PREFER, handshake_timeout=0.5
    ) as hs:
        hs.register(TORRENT)
        ours, theirs = trio.testing.memory_stream_pair()
        hs.accept_stream(theirs, PeerAddress(IPv4Address("10.0.0.9"), 6881))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for chunk in [prefix, *chunks]:
                await ours.send_all(chunk)
            if close:
                await ours.aclose()
        with trio.fail_after(5):
            while hs.statistics().inbound_in_flight:
                await trio.sleep(0.01)
        stats = hs.statistics()
        assert stats.inbound_attempts == stats.failures == 1, stats
        await trio.aclose_forcefully(ours)
    no_errors(caplog)


async def test_max_inbound_per_host_counts_an_ipv6_64_as_one_host() -> None:
    """An IPv6 host picks any address of its /64: the bound counts the /64."""
    async with open_handshaker(
        peer_id=SERVER, listen=[], encryption=PLAIN, max_inbound=8, max_inbound_per_host=2
    ) as hs:
        hs.register(TORRENT)
        streams = []
        for host in ("2001:db8::1", "2001:db8::2:3", "2001:db8::ffff", "2001:db8:0:1::1"):
            ours, theirs = trio.testing.memory_stream_pair()
            hs.accept_stream(theirs, PeerAddress(IPv6Address(host), 6881))
            streams.append(ours)
            await trio.testing.wait_all_tasks_blocked()
        stats = hs.statistics()
        # Two of 2001:db8::/64 in progress, the third refused; another /64 is let in.
        assert (stats.inbound_in_flight, stats.over_limit) == (3, 1)
        for stream in streams:
            await trio.aclose_forcefully(stream)


async def test_one_byte_a_second_through_mse_meets_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An honest MSE handshake sent one byte a second (more than 96 + 512 + 68 seconds of
    it) is cut at the handshake timeout, whatever step it reached."""
    async with open_handshaker(
        peer_id=SERVER, listen=[], encryption=PREFER, handshake_timeout=20
    ) as hs:
        hs.register(TORRENT)
        ours, theirs = trio.testing.memory_stream_pair()
        hs.accept_stream(theirs, PeerAddress(IPv4Address("10.0.0.7"), 6881))
        initiator = MSEInitiator(TORRENT_ID, PREFER, initial_payload=handshake())
        start = trio.current_time()
        with contextlib.suppress(trio.BrokenResourceError):
            for byte in initiator.data_to_send():
                await ours.send_all(bytes([byte]))
                await trio.sleep(1)
        assert 20 <= trio.current_time() - start <= 22
        stats = hs.statistics()
        assert stats.failures == stats.handshake_timeout == 1, stats
        await trio.aclose_forcefully(ours)
