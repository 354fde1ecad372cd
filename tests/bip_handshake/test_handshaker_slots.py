"""The Handshaker's two bounds: dials (``max_concurrent``, the half-open bound) and inbound
handshakes (``max_inbound``) never take each other's slots, so dials that hang for the
whole connect timeout cannot lock honest inbound peers out; on a virtual clock."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing

from bip_handshake import EncryptionPolicy, Extensions, Handshake, PeerAddress, PeerId
from bip_handshake._handshaker import (
    DEFAULT_MAX_CONCURRENT,
    Handshaker,
    HandshakerStatistics,
    open_handshaker,
)
from bip_metainfo import InfoHash

TORRENT = InfoHash(v1=b"\x11" * 20)
US = PeerId(b"-BP0100-aaaaaaaaaaaa")
REMOTE = PeerId(b"-XX0000-remoteremote")


def addr(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.1.{n // 250}.{n % 250 + 1}"), 6881)


def remote_handshake() -> bytes:
    return Handshake(Extensions.NONE, TORRENT.v1 or b"", REMOTE.value).to_bytes()


async def hang(address: PeerAddress) -> trio.abc.Stream:
    """A dead address: the connect never answers (the connect timeout ends it)."""
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def wait_for(predicate: Callable[[], bool], *, timeout: float = 60.0) -> None:
    """Poll ``predicate`` on the virtual clock until it holds; bounded in time."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


def handshaker(**kwargs: Any) -> Any:
    """A plaintext handshaker with no listener (inbound streams are handed over)."""
    kwargs.setdefault("peer_id", US)
    kwargs.setdefault("encryption", EncryptionPolicy.PLAINTEXT_ONLY)
    return open_handshaker(listen=[], **kwargs)


async def handshake_inbound(hs: Handshaker, address: PeerAddress, *, close: bool = True) -> bool:
    """An honest peer dials us and handshakes; whether it was answered and delivered.

    With ``close=False`` the delivered connection stays open (its pair stays taken)."""
    ours, theirs = trio.testing.memory_stream_pair()
    hs.accept_stream(theirs, address)
    await ours.send_all(remote_handshake())
    answer = await ours.receive_some()
    if not answer:  # closed at once: refused
        await trio.aclose_forcefully(ours)
        return False
    with trio.fail_after(5):
        peer = await hs.completed().receive()
    assert peer.direction == "inbound"
    if close:
        await peer.aclose()
        await trio.aclose_forcefully(ours)
    return True


async def test_dead_dials_filling_the_half_open_bound_leave_inbound_handshakes_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The PEX flood: more dead addresses than the bound; every outbound slot hangs in connect.
    async with handshaker(dial=hang, connect_timeout=10) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [addr(n) for n in range(200)], "pex")
        await wait_for(lambda: hs.statistics().outbound_in_flight == DEFAULT_MAX_CONCURRENT)
        for n in range(3):
            assert await handshake_inbound(hs, addr(1000 + n))
        stats = hs.statistics()
        assert stats.over_limit == 0
        assert stats.inbound_completed == 3
        assert stats.outbound_in_flight == DEFAULT_MAX_CONCURRENT
        assert stats.inbound_in_flight == 0
        assert stats.in_flight == DEFAULT_MAX_CONCURRENT
        # The dials over the bound wait in the queue, counted as such (not refused).
        assert stats.queued == 200 - DEFAULT_MAX_CONCURRENT - 1  # one waits in the dispatcher
        assert stats.outbound_waited == 1
        assert stats.dropped_queue_full == 0


async def test_inbound_handshakes_over_their_bound_are_refused_without_touching_dials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with handshaker(dial=hang, max_concurrent=2, max_inbound=3) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [addr(n) for n in range(2)], "dht")
        silent = []
        for n in range(3):  # three peers that connect and never speak hold the inbound slots
            ours, theirs = trio.testing.memory_stream_pair()
            hs.accept_stream(theirs, addr(100 + n))
            silent.append(ours)
        await trio.testing.wait_all_tasks_blocked()
        stats = hs.statistics()
        assert (stats.outbound_in_flight, stats.inbound_in_flight, stats.in_flight) == (2, 3, 5)
        assert not await handshake_inbound(hs, addr(200))
        stats = hs.statistics()
        assert stats.over_limit == 1
        assert stats.outbound_waited == 0  # the refusal is the inbound bound's alone
        for stream in silent:
            await trio.aclose_forcefully(stream)
        await wait_for(lambda: hs.statistics().inbound_in_flight == 0)
        assert await handshake_inbound(hs, addr(201))  # the slots are back
        assert hs.statistics().outbound_in_flight == 2


async def test_max_inbound_follows_max_concurrent_when_not_given(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Backwards compatibility: max_concurrent=2 alone still lets two inbound handshakes in.
    async with handshaker(max_concurrent=2) as hs:
        hs.register(TORRENT)
        held = []
        for n in range(3):
            ours, theirs = trio.testing.memory_stream_pair()
            hs.accept_stream(theirs, addr(n))
            held.append(ours)
        await trio.testing.wait_all_tasks_blocked()
        stats = hs.statistics()
        assert (stats.inbound_in_flight, stats.over_limit) == (2, 1)
        for stream in held:
            await trio.aclose_forcefully(stream)


async def test_busy_inbound_slots_do_not_hold_back_dials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dialled: list[PeerAddress] = []

    async def record(address: PeerAddress) -> trio.abc.Stream:
        dialled.append(address)
        return await hang(address)

    async with handshaker(dial=record, max_concurrent=4, max_inbound=1) as hs:
        hs.register(TORRENT)
        ours, theirs = trio.testing.memory_stream_pair()
        hs.accept_stream(theirs, addr(50))
        hs.discovered(TORRENT, [addr(n) for n in range(4)], "tracker")
        await trio.testing.wait_all_tasks_blocked()
        assert len(dialled) == 4
        stats = hs.statistics()
        assert (stats.outbound_in_flight, stats.inbound_in_flight) == (4, 1)
        await trio.aclose_forcefully(ours)


async def test_waiting_dials_run_as_outbound_slots_free_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with handshaker(dial=hang, max_concurrent=2, connect_timeout=10) as hs:
        hs.register(TORRENT)
        start = trio.current_time()
        hs.discovered(TORRENT, [addr(n) for n in range(5)], "pex")
        await wait_for(lambda: hs.statistics().connect_timeout == 5)
        stats = hs.statistics()
        # Two by two, each pair the whole connect timeout: 3 rounds.
        assert 30 <= trio.current_time() - start < 31
        assert stats.outbound_attempts == 5
        # The 3rd and the 5th found both slots taken at the head of the queue (the 4th
        # started as soon as the 3rd did: the first pair freed both slots at once).
        assert stats.outbound_waited == 2
        assert (stats.in_flight, stats.queued) == (0, 0)


async def test_a_queued_dial_to_a_peer_that_connected_meanwhile_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A dial waits behind another dial holding the only outbound slot; the peer dials us
    meanwhile (an inbound slot of its own) and is delivered: the queued dial is dropped."""
    async with handshaker(dial=hang, max_concurrent=1, connect_timeout=10) as hs:
        hs.register(TORRENT)
        assert hs.connect(TORRENT, addr(1))  # hangs in connect, holding the only slot
        assert hs.connect(TORRENT, addr(2))  # waits for it
        await wait_for(lambda: hs.statistics().outbound_in_flight == 1)
        assert await handshake_inbound(hs, addr(2), close=False)
        await wait_for(lambda: hs.statistics().dropped_duplicate == 1)
        stats = hs.statistics()
        assert stats.outbound_attempts == 1  # addr(2) was never dialled


async def test_statistics_add_up(autojump_clock: trio.testing.MockClock) -> None:
    async with handshaker(dial=hang, max_concurrent=3, max_inbound=2) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [addr(n) for n in range(3)], "dht")
        ours, theirs = trio.testing.memory_stream_pair()
        hs.accept_stream(theirs, addr(9))
        await trio.testing.wait_all_tasks_blocked()
        stats: HandshakerStatistics = hs.statistics()
        assert stats.in_flight == stats.outbound_in_flight + stats.inbound_in_flight == 4
        await trio.aclose_forcefully(ours)


@pytest.mark.parametrize("value", [0, -1])
async def test_max_inbound_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match="max_inbound"):
        async with handshaker(max_inbound=value):
            pass  # pragma: no cover
