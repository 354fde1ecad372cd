"""Handshaker.unregister and its counts (review of 04ad6fa).

A dial that ended in the same scheduling step as its torrent's unregister (its connect
failed, or its hand-over went through, just before) was counted twice: ``unregistered`` and
its own outcome. Queued dials were counted in ``unregistered`` only when the dispatcher came to
them, which may be long after (behind other torrents' dials waiting for a slot): an owner
could not tell from the counts that unregister had ended them. And a dial waiting for its
hand-over keeps its pair until its task runs once more (documented, not "at once").
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from ipaddress import IPv4Address

import trio
import trio.testing

from bip_handshake import DialFailure, EncryptionPolicy, PeerAddress, PeerId
from bip_handshake._handshaker import Dialer, DialFailureCallback, Handshaker, open_handshaker
from bip_metainfo import InfoHash

TORRENT = InfoHash(v1=b"\x11" * 20)
OTHER = InfoHash(v1=b"\x22" * 20)
OURS = PeerId(b"-BP0100-aaaaaaaaaaaa")
THEIRS = PeerId(b"-BP0100-bbbbbbbbbbbb")


def addr(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881)


def handshaker(
    dial: Dialer,
    *,
    max_concurrent: int = 64,
    backlog: int = 16,
    on_dial_failed: DialFailureCallback | None = None,
) -> AbstractAsyncContextManager[Handshaker]:
    return open_handshaker(
        listen=[],
        peer_id=OURS,
        encryption=EncryptionPolicy.PLAINTEXT_ONLY,
        dial=dial,
        max_concurrent=max_concurrent,
        backlog=backlog,
        on_dial_failed=on_dial_failed,
        # Far beyond the tests' own bound: nothing ends by a timeout.
        connect_timeout=60.0,
        handshake_timeout=60.0,
    )


async def test_a_connect_failing_as_the_torrent_is_unregistered_counts_once() -> None:
    release = trio.Event()

    async def refused(address: PeerAddress) -> trio.abc.Stream:
        await release.wait()
        raise OSError("refused")

    failures: list[DialFailure] = []
    with trio.fail_after(5):
        async with handshaker(refused, on_dial_failed=failures.append) as hs:
            hs.register(TORRENT)
            assert hs.connect(TORRENT, addr(1))
            await trio.testing.wait_all_tasks_blocked()
            release.set()  # the dial's task is scheduled to fail its connect...
            hs.unregister(TORRENT)  # ...and unregister runs first, in the same step
            await trio.testing.wait_all_tasks_blocked()
            stats = hs.statistics()
            assert (stats.outbound_attempts, stats.unregistered) == (1, 1)
            assert (stats.connect_failed, stats.failures) == (0, 0)
            assert failures == []


async def test_a_dial_handed_over_as_the_torrent_is_unregistered_counts_once() -> None:
    # The hand-over went through (the receiver took the handshake) in the same step as the
    # unregister: it counts once, as cancelled (unregister's count never goes back).
    with trio.fail_after(5):
        async with open_handshaker(
            listen=[], peer_id=THEIRS, encryption=EncryptionPolicy.PLAINTEXT_ONLY
        ) as remote:
            remote.register(TORRENT)

            async def dial(address: PeerAddress) -> trio.abc.Stream:
                ours, theirs = trio.testing.memory_stream_pair()
                remote.accept_stream(theirs, addr(99))
                return ours

            async with handshaker(dial, backlog=0) as hs:
                hs.register(TORRENT)
                assert hs.connect(TORRENT, addr(1))
                await trio.testing.wait_all_tasks_blocked()  # waiting for its hand-over
                assert hs.statistics().outbound_in_flight == 1
                taken = hs.completed().receive_nowait()
                hs.unregister(TORRENT)
                await trio.testing.wait_all_tasks_blocked()
                stats = hs.statistics()
                assert (stats.outbound_completed, stats.unregistered, stats.failures) == (0, 1, 0)
                assert stats.outbound_in_flight == 0
                # Delivered: its pair is the receiver's until it closes the stream.
                assert hs.is_dialling(TORRENT, addr(1))
                await taken.aclose()
                assert not hs.is_dialling(TORRENT, addr(1))


async def test_queued_dials_are_counted_when_unregister_drops_them() -> None:
    async def hang(address: PeerAddress) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(5):
        async with handshaker(hang, max_concurrent=1) as hs:
            hs.register(OTHER)
            hs.register(TORRENT)
            assert hs.connect(OTHER, addr(9))  # holds the only slot for good
            await trio.testing.wait_all_tasks_blocked()
            for n in (1, 2, 3):
                assert hs.connect(TORRENT, addr(n))
            await trio.testing.wait_all_tasks_blocked()
            assert hs.statistics().queued >= 2  # none of the torrent's dials started
            hs.unregister(TORRENT)
            # At once, though the dispatcher reaches them only once a slot frees.
            assert hs.statistics().unregistered == 3
            hs.register(TORRENT)
            assert hs.connect(TORRENT, addr(1))  # the new registration's own dial
            hs.unregister(OTHER)  # the slot frees: the dispatcher drops the old dials
            await trio.testing.wait_all_tasks_blocked()
            stats = hs.statistics()
            assert stats.unregistered == 4  # three of TORRENT's, one of OTHER's: once each
            assert stats.failures == 0
            assert stats.outbound_in_flight == 1  # the new dial runs
            assert hs.is_dialling(TORRENT, addr(1))


async def test_a_dial_waiting_for_its_hand_over_frees_its_pair_when_its_task_runs() -> None:
    # What unregister's docstring says: the pair of a dial whose handshake is complete and
    # waits for the receiver is free once the dial's task has run, not in unregister itself.
    with trio.fail_after(5):
        async with open_handshaker(
            listen=[], peer_id=THEIRS, encryption=EncryptionPolicy.PLAINTEXT_ONLY
        ) as remote:
            remote.register(TORRENT)

            async def dial(address: PeerAddress) -> trio.abc.Stream:
                ours, theirs = trio.testing.memory_stream_pair()
                remote.accept_stream(theirs, addr(99))
                return ours

            async with handshaker(dial, backlog=0) as hs:
                hs.register(TORRENT)
                assert hs.connect(TORRENT, addr(1))
                await trio.testing.wait_all_tasks_blocked()  # waiting for its hand-over
                hs.unregister(TORRENT)
                hs.register(TORRENT)
                assert hs.is_dialling(TORRENT, addr(1))
                await trio.testing.wait_all_tasks_blocked()
                assert not hs.is_dialling(TORRENT, addr(1))
                assert hs.connect(TORRENT, addr(1))
                stats = hs.statistics()
                assert (stats.unregistered, stats.outbound_completed, stats.failures) == (1, 0, 0)
