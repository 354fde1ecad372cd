"""bip_handshake's logging: the records it emits, at which level, and how few."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing

from bip_handshake import EncryptionPolicy, Extensions, Handshake, PeerAddress, PeerId
from bip_handshake._handshaker import Handshaker, ListenError, open_handshaker
from bip_metainfo import InfoHash

LOGGER = "bip_handshake.handshaker"
TORRENT = InfoHash(v1=b"\x11" * 20)
REMOTE = PeerId(b"-XX0000-remoteremote")
OURS = PeerId(b"-BP0100-aaaaaaaaaaaa")


def addr(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.{n // 250}.{n % 250 + 1}"), port)


def remote_handshake(info_hash: bytes = TORRENT.swarm_ids()[0]) -> bytes:
    return Handshake(Extensions.FAST, info_hash, REMOTE.value).to_bytes()


def memory_handshaker(**kwargs: Any) -> Any:
    kwargs.setdefault("encryption", EncryptionPolicy.PLAINTEXT_ONLY)
    return open_handshaker(peer_id=OURS, listen=[], **kwargs)


@asynccontextmanager
async def inbound(handshaker: Handshaker, address: PeerAddress) -> AsyncIterator[Any]:
    ours, theirs = trio.testing.memory_stream_pair()
    handshaker.accept_stream(theirs, address)
    try:
        yield ours
    finally:
        await trio.aclose_forcefully(ours)


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= level]


async def test_listening_is_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake")
    async with open_handshaker(listen=[("127.0.0.1", 0)]) as hs:
        [address] = hs.listen_addresses
    [info] = records(caplog, logging.INFO)
    assert info.name == LOGGER
    assert info.levelno == logging.INFO
    assert info.getMessage() == f"accepting peer connections on {address}"


async def test_listen_error_is_raised_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake")
    async with open_handshaker(listen=[("127.0.0.1", 0)]) as hs:
        [address] = hs.listen_addresses
        caplog.clear()
        with pytest.raises(ListenError, match="cannot listen"):
            async with open_handshaker(listen=[("127.0.0.1", address.port)]):
                pass  # pragma: no cover - the port is taken
        assert not records(caplog, logging.INFO)


class _FailingSocket:
    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 6881)


class FailingListener:
    """A listener out of file descriptors for ``failures`` accepts, then quiet."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.socket = _FailingSocket()

    async def accept(self) -> trio.abc.Stream:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover


async def test_accept_errors_warn_once_a_minute(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake")
    async with trio.open_nursery() as nursery, memory_handshaker() as hs:
        listener = FailingListener(failures=700)  # 70 s of retries, 0.1 s apart
        nursery.start_soon(hs._serve, listener)
        await trio.sleep(100)
        assert listener.failures == 0
        assert hs.statistics().accept_errors == 700
        nursery.cancel_scope.cancel()
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 2  # at 0 s and at 60 s
    for record in warnings:
        assert record.name == LOGGER
        assert record.levelno == logging.WARNING
        assert record.getMessage() == (
            "cannot accept peer connections on 127.0.0.1:6881: Too many open files; retrying"
        )
    assert sum(1 for r in caplog.records if "cannot accept" in r.getMessage()) == 700


async def test_failures_are_debug_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake")
    async with memory_handshaker() as hs:
        hs.register(TORRENT)
        async with inbound(hs, addr(1)) as bad, inbound(hs, addr(2)) as unknown:
            await bad.send_all(b"GET / HTTP/1.1\r\n\r\n" + bytes(60))
            await unknown.send_all(remote_handshake(b"\x99" * 20))
            with trio.fail_after(5):
                while hs.statistics().failures < 2:
                    await trio.sleep(0.01)
    messages = {r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG}
    assert any(
        m.startswith("inbound handshake from 10.0.0.2:6881 failed: the peer broke the protocol (")
        for m in messages
    ), messages
    assert (
        "inbound handshake from 10.0.0.3:6881 failed: the peer asked for a torrent we do not "
        f"serve ({'99' * 20})" in messages
    )
    assert not records(caplog, logging.INFO)


async def test_plaintext_fallback_and_completion_are_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake")
    dials = 0

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        nonlocal dials
        dials += 1
        ours, theirs = trio.testing.memory_stream_pair()
        if dials == 1:
            await theirs.aclose()  # a peer that does not speak MSE hangs up
        else:
            await theirs.send_all(remote_handshake())
            nursery.start_soon(_hold, theirs)
        return ours

    async with trio.open_nursery() as nursery:
        async with open_handshaker(
            peer_id=OURS, listen=[], dial=dial, encryption=EncryptionPolicy.PREFER_ENCRYPTED
        ) as hs:
            hs.register(TORRENT)
            hs.connect(TORRENT, addr(1))
            with trio.fail_after(5):
                peer = await hs.completed().receive()
            await peer.aclose()
        nursery.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("encryption handshake with 10.0.0.2:6881 failed (")
        and m.endswith("); redialling in plaintext")
        for m in messages
    ), messages
    assert (
        f"outbound handshake with 10.0.0.2:6881 for {TORRENT} complete: plaintext, "
        f"peer id {REMOTE}" in messages
    )
    assert not records(caplog, logging.INFO)


async def _hold(stream: trio.abc.Stream) -> None:
    try:
        while await stream.receive_some():
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _many_handshakes(count: int) -> None:
    """``count`` outbound handshakes (a third fail) and ``count`` inbound ones, in memory."""
    remotes: list[trio.abc.Stream] = []

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        remotes.append(theirs)
        if address.port % 3:
            await theirs.send_all(remote_handshake())
        else:
            await theirs.send_all(b"\x13BitTorrent protocoX" + bytes(48))
        return ours

    # Every peer on one host (its ports tell the outcome): no bound on dials per host.
    async with memory_handshaker(dial=dial, max_queued=count, max_outbound_per_host=None) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [addr(0, 1000 + n) for n in range(count)], "tracker")
        good = sum(1 for n in range(count) if (1000 + n) % 3)
        with trio.fail_after(10):
            for _ in range(good):
                peer = await hs.completed().receive()
                await peer.aclose()
            for n in range(count):
                ours, theirs = trio.testing.memory_stream_pair()
                remotes.append(ours)
                hs.accept_stream(theirs, addr(1 + n))
                await ours.send_all(remote_handshake())
                peer = await hs.completed().receive()
                await peer.aclose()
            while hs.statistics().in_flight:
                await trio.sleep(0.01)
        stats = hs.statistics()
        assert stats.completed == good + count
        assert stats.failures == count - good
    for stream in remotes:
        await trio.aclose_forcefully(stream)


async def test_many_handshakes_log_nothing_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The noise test: per-connection records are DEBUG, whatever the number of peers."""
    caplog.set_level(logging.DEBUG)
    counts = []
    for count in (50, 200):
        caplog.clear()
        await _many_handshakes(count)
        assert caplog.records  # the DEBUG detail is there
        assert all(record.name.startswith("bip_handshake.") for record in caplog.records)
        counts.append(len(records(caplog, logging.INFO)))
    assert counts == [0, 0]
