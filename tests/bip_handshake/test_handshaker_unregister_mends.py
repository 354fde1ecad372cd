"""Handshaker.unregister ends the torrent's dials in flight at once (hunt: churn, F2).

A torrent removed or paused unregisters its hashes. Its queued dials were dropped, but dials
already connecting kept their socket, their outbound slot and their task until the handshake
timeout (20 s by default): other torrents' dials waited behind them, and a dial that failed
after the torrent was added back was reported (``on_dial_failed``) as the new torrent's.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from ipaddress import IPv4Address

import trio
import trio.testing

from bip_handshake import DialFailure, EncryptionPolicy, PeerAddress, PeerId
from bip_handshake._handshaker import (
    DEFAULT_MAX_CONCURRENT,
    DialFailureCallback,
    Handshaker,
    open_handshaker,
)
from bip_metainfo import InfoHash

TORRENT = InfoHash(v1=b"\x11" * 20)
OTHER = InfoHash(v1=b"\x22" * 20)
PEER_ID = PeerId(b"-BP0100-aaaaaaaaaaaa")


def addr(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881)


class HangingNetwork:
    """A dialler whose connects hang until released, then fail (or hang for ever)."""

    def __init__(self) -> None:
        self.dialled: list[PeerAddress] = []
        self.active = 0
        self.release = trio.Event()

    async def dial(self, address: PeerAddress) -> trio.abc.Stream:
        self.dialled.append(address)
        self.active += 1
        try:
            await self.release.wait()
            raise OSError("refused")
        finally:
            self.active -= 1


def hanging_handshaker(
    net: HangingNetwork,
    *,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    on_dial_failed: DialFailureCallback | None = None,
) -> AbstractAsyncContextManager[Handshaker]:
    return open_handshaker(
        listen=[],
        peer_id=PEER_ID,
        encryption=EncryptionPolicy.PLAINTEXT_ONLY,
        dial=net.dial,
        # Far beyond the test's own bound: only unregister may end the dials.
        connect_timeout=60.0,
        handshake_timeout=60.0,
        max_concurrent=max_concurrent,
        on_dial_failed=on_dial_failed,
    )


async def test_unregister_frees_the_slots_of_dials_in_flight_at_once() -> None:
    net = HangingNetwork()
    with trio.fail_after(5):
        async with hanging_handshaker(net, max_concurrent=2) as hs:
            hs.register(TORRENT)
            hs.register(OTHER)
            hs.discovered(TORRENT, [addr(1), addr(2)], "tracker")
            await trio.testing.wait_all_tasks_blocked()
            assert net.active == 2  # both slots held by the torrent's connects
            hs.discovered(OTHER, [addr(3)], "tracker")
            await trio.testing.wait_all_tasks_blocked()
            assert addr(3) not in net.dialled  # waiting for a slot

            hs.unregister(TORRENT)
            # At once: the pairs and the slots are free.
            assert not hs.is_dialling(TORRENT, addr(1))
            assert not hs.is_dialling(TORRENT, addr(2))
            # One slot went at once to the other torrent's dial waiting for it.
            assert hs.statistics().outbound_in_flight == 1
            await trio.testing.wait_all_tasks_blocked()
            # The other torrent's dial went ahead; the cancelled connects are gone.
            assert addr(3) in net.dialled
            assert net.active == 1
            stats = hs.statistics()
            assert stats.outbound_in_flight == 1
            assert stats.unregistered == 2
            assert stats.failures == 0  # cancelled by us, no failure of the peers'


async def test_a_cancelled_dial_reports_nothing_to_the_next_registration() -> None:
    net = HangingNetwork()
    failures: list[DialFailure] = []
    with trio.fail_after(5):
        async with hanging_handshaker(net, on_dial_failed=failures.append) as hs:
            hs.register(TORRENT)
            assert hs.connect(TORRENT, addr(1))
            await trio.testing.wait_all_tasks_blocked()
            hs.unregister(TORRENT)
            hs.register(TORRENT)  # added back at once
            net.release.set()  # the old connect would fail now
            await trio.testing.wait_all_tasks_blocked()
            assert failures == []
            assert hs.statistics().connect_failed == 0
            # The new registration dials the address afresh, and hears of its own failure.
            assert hs.connect(TORRENT, addr(1))
            await trio.testing.wait_all_tasks_blocked()
            assert [failure.address for failure in failures] == [addr(1)]
            assert failures[0].torrent == TORRENT


async def test_the_pair_is_free_for_a_new_registration_at_once() -> None:
    net = HangingNetwork()
    with trio.fail_after(5):
        async with hanging_handshaker(net, max_concurrent=1) as hs:
            hs.register(TORRENT)
            assert hs.connect(TORRENT, addr(1))
            await trio.testing.wait_all_tasks_blocked()
            hs.unregister(TORRENT)
            hs.register(TORRENT)
            # Not refused as a duplicate of the cancelled dial, and it gets the only slot.
            assert hs.connect(TORRENT, addr(1))
            await trio.testing.wait_all_tasks_blocked()
            assert net.dialled == [addr(1), addr(1)]
            assert net.active == 1
            assert hs.is_dialling(TORRENT, addr(1))
            assert hs.statistics().dropped_duplicate == 0


async def test_other_torrents_dials_are_left_alone() -> None:
    net = HangingNetwork()
    with trio.fail_after(5):
        async with hanging_handshaker(net) as hs:
            hs.register(TORRENT)
            hs.register(OTHER)
            hs.discovered(TORRENT, [addr(1)], "tracker")
            hs.discovered(OTHER, [addr(1), addr(2)], "tracker")
            await trio.testing.wait_all_tasks_blocked()
            assert net.active == 3
            hs.unregister(TORRENT)
            await trio.testing.wait_all_tasks_blocked()
            assert net.active == 2
            assert hs.is_dialling(OTHER, addr(1))
            assert hs.is_dialling(OTHER, addr(2))
            assert not hs.is_dialling(TORRENT, addr(1))


async def test_queued_dials_are_the_old_registrations_only() -> None:
    net = HangingNetwork()
    with trio.fail_after(5):
        async with hanging_handshaker(net, max_concurrent=1) as hs:
            hs.register(TORRENT)
            assert hs.connect(TORRENT, addr(1))  # in flight
            assert hs.connect(TORRENT, addr(2))  # queued behind it
            await trio.testing.wait_all_tasks_blocked()
            hs.unregister(TORRENT)
            hs.register(TORRENT)
            assert not hs.is_dialling(TORRENT, addr(2))
            # The new registration dials it afresh; the old queued dial is dropped, not run as
            # the new registration's.
            assert hs.connect(TORRENT, addr(2))
            await trio.testing.wait_all_tasks_blocked()
            assert net.dialled == [addr(1), addr(2)]
            assert net.active == 1
            stats = hs.statistics()
            assert stats.unregistered == 2
            assert stats.queued == 0
