"""The PeerManager's send queue bounded in bytes, :meth:`PeerManager.wait_writable` and
:meth:`PeerManager.is_connected`: in-memory lockstep streams, where a write waits for the
far end to read, so queued bytes stay queued until the test reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._connection import PeerConnection
from bip_peer._manager import (
    DEFAULT_SEND_QUEUE_BYTES,
    Peer,
    PeerClosedError,
    PeerManager,
    PeerManagerConfig,
    open_peer_manager,
)
from bip_peer._messages import NEED_DATA, Have

TORRENT = InfoHash(v1=b"\x22" * 20)
NUM_PIECES = 64
HAVE = 9  # bytes of a have message on the wire


class Remote:
    """The far end: reads what the manager writes, when the test says so."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.connection = PeerConnection(
            num_pieces=NUM_PIECES,
            info_hash=TORRENT,
            our_extensions=Extensions.FAST,
            their_extensions=Extensions.FAST,
        )

    async def receive(self) -> object:
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            data = await self.stream.receive_some()
            assert data
            self.connection.receive_data(data)


@asynccontextmanager
async def lockstep_peer(
    config: PeerManagerConfig, host: str = "10.0.0.1"
) -> AsyncIterator[tuple[PeerManager, Peer, Remote]]:
    local, far = trio.testing.lockstep_stream_pair()  # send_all waits for the reader
    handshake = CompletedHandshake(
        stream=local,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-remoteremote"),
        extensions=Extensions.FAST,
        our_extensions=Extensions.FAST,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address(host), 6881),
        direction="outbound",
    )
    async with open_peer_manager(config) as manager:
        peer = manager.add_peer(handshake, num_pieces=NUM_PIECES)
        yield manager, peer, Remote(far)


# -- the config ---------------------------------------------------------------------------------


def test_the_default_bound_is_two_mib() -> None:
    assert PeerManagerConfig().send_queue_bytes == DEFAULT_SEND_QUEUE_BYTES == 2 * 1024 * 1024


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "1"])
def test_send_queue_bytes_must_be_a_positive_int_or_none(value: object) -> None:
    with pytest.raises(ValueError, match="send_queue_bytes"):
        PeerManagerConfig(send_queue_bytes=value)  # type: ignore[arg-type]


# -- the bound ----------------------------------------------------------------------------------


async def test_send_nowait_refuses_at_the_byte_bound_and_send_waits_for_a_write() -> None:
    config = PeerManagerConfig(send_queue_size=100, send_queue_bytes=4 * HAVE)
    async with lockstep_peer(config) as (manager, peer, remote):
        accepted = 0
        while manager.send_nowait(peer, Have(accepted)):
            accepted += 1
            assert accepted < 10, "the byte bound never refused"
        # The message that reaches the bound is taken; none after it (count far from full).
        assert accepted == 4
        assert manager.queued_bytes(peer) == 4 * HAVE
        sent = trio.Event()

        async def sender() -> None:
            await manager.send(peer, Have(40))
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            # The writer took everything queued in one batch: reading it completes the
            # write, and the bytes drop below the bound.
            with trio.fail_after(5):
                assert [await remote.receive() for _ in range(4)] == [Have(i) for i in range(4)]
                await sent.wait()
            assert await remote.receive() == Have(40)


async def test_one_message_is_taken_whatever_its_size_while_below_the_bound() -> None:
    async with lockstep_peer(PeerManagerConfig(send_queue_bytes=1)) as (manager, peer, remote):
        assert manager.send_nowait(peer, Have(1))  # 9 bytes, more than the bound
        assert not manager.send_nowait(peer, Have(2))
        assert manager.queued_bytes(peer) == HAVE
        with trio.fail_after(5):
            assert await remote.receive() == Have(1)
            await manager.send(peer, Have(2))
            assert await remote.receive() == Have(2)


async def test_none_leaves_the_message_count_as_the_only_bound() -> None:
    config = PeerManagerConfig(send_queue_size=20, send_queue_bytes=None)
    async with lockstep_peer(config) as (manager, peer, _remote):
        accepted = 0
        while manager.send_nowait(peer, Have(accepted % NUM_PIECES)):
            accepted += 1
            assert accepted < 100
        # 20 queued, and the writer may hold its first batch in a write meanwhile.
        assert accepted >= 20


async def test_a_sender_waiting_for_bytes_raises_when_the_peer_goes() -> None:
    config = PeerManagerConfig(send_queue_bytes=HAVE)
    async with lockstep_peer(config) as (manager, peer, _remote):
        assert manager.send_nowait(peer, Have(0))
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def remove_soon() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    manager.remove_peer(peer, "test")

                nursery.start_soon(remove_soon)
                with pytest.raises(PeerClosedError):
                    await manager.send(peer, Have(1))


# -- wait_writable and is_connected -------------------------------------------------------------


async def test_wait_writable_returns_at_once_below_the_limit() -> None:
    async with lockstep_peer(PeerManagerConfig()) as (manager, peer, _remote):
        assert manager.queued_bytes(peer) == 0
        with trio.fail_after(5):
            await manager.wait_writable(peer, 1)
        assert manager.send_nowait(peer, Have(0))
        with trio.fail_after(5):
            await manager.wait_writable(peer, HAVE + 1)


async def test_wait_writable_waits_for_the_write_to_complete() -> None:
    async with lockstep_peer(PeerManagerConfig()) as (manager, peer, remote):
        for index in range(3):
            assert manager.send_nowait(peer, Have(index))
        drained = trio.Event()

        async def waiter() -> None:
            await manager.wait_writable(peer, 2 * HAVE)
            drained.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not drained.is_set()
            with trio.fail_after(5):
                for index in range(3):
                    assert await remote.receive() == Have(index)
                await drained.wait()
        assert manager.queued_bytes(peer) < 2 * HAVE


async def test_wait_writable_wakes_under_an_upload_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Limited, the writer writes what each grant allows: the waiter wakes per granted write.
    config = PeerManagerConfig(upload_rate_limit=1000, limit_local_peers=True)
    async with lockstep_peer(config) as (manager, peer, remote):
        for index in range(20):
            assert manager.send_nowait(peer, Have(index))

        async def read_all() -> None:
            for index in range(20):
                assert await remote.receive() == Have(index)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                await manager.wait_writable(peer, 1)
        assert manager.queued_bytes(peer) == 0


async def test_wait_writable_raises_when_the_peer_goes() -> None:
    async with lockstep_peer(PeerManagerConfig()) as (manager, peer, _remote):
        assert manager.send_nowait(peer, Have(0))
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def remove_soon() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    manager.remove_peer(peer, "test")

                nursery.start_soon(remove_soon)
                with pytest.raises(PeerClosedError):
                    await manager.wait_writable(peer, 1)
            with pytest.raises(PeerClosedError):
                await manager.wait_writable(peer, 1)


@pytest.mark.parametrize("limit", [0, -5, True, 1.0])
async def test_wait_writable_refuses_a_limit_that_is_not_a_positive_int(limit: object) -> None:
    async with lockstep_peer(PeerManagerConfig()) as (manager, peer, _remote):
        with pytest.raises(ValueError, match="limit"):
            await manager.wait_writable(peer, limit)  # type: ignore[arg-type]


async def test_is_connected_until_removed() -> None:
    async with lockstep_peer(PeerManagerConfig()) as (manager, peer, _remote):
        assert manager.is_connected(peer)
        manager.remove_peer(peer, "test")
        assert not manager.is_connected(peer)  # at once, before its tasks have ended
        with trio.fail_after(5):
            while peer in manager.peers:
                await trio.sleep(0)
        assert not manager.is_connected(peer)
