"""Mends of the handshaker's dials: the plaintext redial after a failed MSE attempt, and
dials that reach ourselves."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import EncryptionPolicy, IPFilter, IPRange, PeerAddress
from bip_handshake._handshaker import MAX_SELF_ADDRESSES, DialFailure, open_handshaker
from bip_metainfo import InfoHash

TORRENT = InfoHash(v1=b"\x21" * 20)
PEER = PeerAddress(IPv4Address("10.0.0.9"), 6881)


async def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll ``predicate`` on the (virtual) clock until it holds; bounded in time."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_a_filter_set_during_mse_blocks_the_plaintext_redial(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PREFER_ENCRYPTED: the user blocks the peer while MSE is in flight, then the peer hangs
    up. No plaintext redial may carry our info-hash and peer id to the blocked address."""
    dialled: list[PeerAddress] = []
    remote: list[trio.abc.Stream] = []

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        dialled.append(address)
        ours, theirs = trio.testing.memory_stream_pair()
        remote.append(theirs)
        return ours

    failures: list[DialFailure] = []
    async with open_handshaker(
        listen=[],
        dial=dial,
        encryption=EncryptionPolicy.PREFER_ENCRYPTED,
        on_dial_failed=failures.append,
    ) as handshaker:
        handshaker.register(TORRENT)
        assert handshaker.connect(TORRENT, PEER)
        await wait_for(lambda: bool(remote))
        [theirs] = remote
        assert await theirs.receive_some()  # MSE is under way (our Ya and PadA)
        handshaker.set_ip_filter(IPFilter.blocking([IPRange(PEER.host, PEER.host)]))
        await theirs.aclose()  # the peer hangs up: MSE failed
        await wait_for(lambda: handshaker.statistics().failures == 1)
        await trio.testing.wait_all_tasks_blocked()
        stats = handshaker.statistics()
    assert dialled == [PEER]  # no second connection to the blocked address
    assert stats.filtered_ip == 1
    assert stats.outbound_in_flight == 0
    assert failures == []  # it connected: not a dial that never connected


@pytest.mark.parametrize("redial", ["refused", "silent"])
async def test_a_redial_that_fails_after_mse_connected_is_no_dial_failure(
    autojump_clock: trio.testing.MockClock, redial: str
) -> None:
    """The MSE dial connected, the peer hung up and stopped listening: the plaintext redial
    fails to connect, but the peer was reachable. ``on_dial_failed`` (every dial that never
    connected: holepunch asks relays for those) is not told, and no connect failure is
    counted: the attempt ends as the failed encryption handshake it is."""
    calls: list[PeerAddress] = []

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        calls.append(address)
        if len(calls) > 1:
            if redial == "refused":
                await trio.lowlevel.checkpoint()
                raise ConnectionRefusedError(111, "Connection refused")
            await trio.sleep_forever()
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.aclose()
        return ours

    failures: list[DialFailure] = []
    async with open_handshaker(
        listen=[], dial=dial, connect_timeout=5.0, on_dial_failed=failures.append
    ) as handshaker:
        handshaker.register(TORRENT)
        assert handshaker.connect(TORRENT, PEER)
        await wait_for(lambda: handshaker.statistics().failures == 1)
        await trio.testing.wait_all_tasks_blocked()
        stats = handshaker.statistics()
        assert not handshaker.is_dialling(TORRENT, PEER)
    assert len(calls) == 2
    assert failures == []
    assert stats.plaintext_fallback == 1
    assert (stats.connect_failed, stats.connect_timeout) == (0, 0)
    assert stats.mse_failed == 1


async def test_a_dial_that_reached_ourselves_is_remembered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A dial answered with our own peer id (``self_connection``) tells the owner the address
    is ours (``is_self_address``), so that it stops dialling it; bounded, oldest forgotten."""
    dialled: list[PeerAddress] = []
    async with trio.open_nursery() as nursery:

        async def dial(address: PeerAddress) -> trio.abc.Stream:
            dialled.append(address)
            ours, theirs = trio.testing.memory_stream_pair()

            async def echo() -> None:
                data = b""
                while len(data) < 68:
                    chunk = await theirs.receive_some()
                    if not chunk:
                        return
                    data += chunk
                await theirs.send_all(data[:68])

            nursery.start_soon(echo)
            return ours

        async with open_handshaker(
            listen=[], dial=dial, encryption=EncryptionPolicy.PLAINTEXT_ONLY
        ) as handshaker:
            handshaker.register(TORRENT)
            mapped = PeerAddress.parse(f"[::ffff:{PEER.host}]:{PEER.port}")
            assert not handshaker.is_self_address(PEER)
            assert handshaker.connect(TORRENT, PEER)
            await wait_for(lambda: not handshaker.is_dialling(TORRENT, PEER))
            assert handshaker.statistics().self_connection == 1
            assert handshaker.is_self_address(PEER)
            assert handshaker.is_self_address(mapped)  # normalised
            assert not handshaker.is_self_address(PeerAddress(PEER.host, PEER.port + 1))
            # Bounded: the oldest address is forgotten once the bound is passed.
            for port in range(1, MAX_SELF_ADDRESSES + 1):
                other = PeerAddress(IPv4Address("10.1.0.1"), port)
                assert handshaker.connect(TORRENT, other)
                await wait_for(lambda: not handshaker.is_dialling(TORRENT, other))  # noqa: B023
            assert handshaker.statistics().self_connection == MAX_SELF_ADDRESSES + 1
            assert not handshaker.is_self_address(PEER)
            assert handshaker.is_self_address(PeerAddress(IPv4Address("10.1.0.1"), 1))
        nursery.cancel_scope.cancel()


async def test_a_closed_handshaker_listens_nowhere() -> None:
    """Once the handshaker is closed its listeners are gone: ``listen_addresses`` is empty,
    not a bare ``OSError`` (EBADF) from the closed sockets."""
    with trio.fail_after(10):
        async with open_handshaker(listen=[("127.0.0.1", 0)]) as handshaker:
            [address] = handshaker.listen_addresses
            assert address.port != 0
        assert handshaker.listen_addresses == []
