"""Review of wave B in bip_peer: the accounting of local peers' exemption from rate limits.

Switching ``limit_local_peers`` while readers and writers wait in the limiters must neither
lose tokens nor count bytes twice. Under a download and an upload limit that stay on, a
local and a remote peer exchange messages while the switch flips at random moments; once all
is quiet, every byte moved was either paid for with tokens or counted as exempt, exactly once:

- upload: bytes written == tokens granted + bytes counted exempt;
- download: bytes read == tokens granted - tokens given back - tokens held unread (a debt is
  a negative holding) + bytes counted exempt.
"""

from __future__ import annotations

import math

import trio
import trio.testing
from _managers import handshake_with
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bip_handshake import Extensions
from bip_metainfo import InfoHash
from bip_peer._bandwidth import BandwidthLimiter
from bip_peer._connection import PeerConnection
from bip_peer._manager import MessageReceived, PeerManagerConfig, open_peer_manager
from bip_peer._messages import Have

TORRENT = InfoHash(v1=b"\x34" * 20)
NUM_PIECES = 64
BOTH = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
HOSTS = ("10.9.8.7", "::ffff:192.168.1.9", "203.0.113.9")  # local, local (mapped), remote
HAVE = 9  # bytes of a have message on the wire


_GIVEN_BACK: dict[int, int] = {}


class _CountingLimiter(BandwidthLimiter):
    """A limiter that sums the tokens given back to it."""

    __slots__ = ()

    def give_back(self, amount: int) -> None:
        _GIVEN_BACK[id(self)] = _GIVEN_BACK.get(id(self), 0) + amount
        super().give_back(amount)


# (seconds to wait, what to do): send haves from each far end, have the manager send haves to
# each peer, or flip the switch.
steps = st.lists(
    st.tuples(
        st.floats(0, 3),
        st.one_of(
            st.tuples(st.just("far"), st.integers(0, 2), st.integers(1, 2500)),
            st.tuples(st.just("near"), st.integers(0, 2), st.integers(1, 2500)),
            st.tuples(st.just("switch"), st.booleans(), st.just(0)),
        ),
    ),
    max_size=8,
)


async def _exchange(start_limited: bool, plan: list[tuple[float, tuple[str, object, int]]]) -> None:
    config = PeerManagerConfig(
        download_rate_limit=2000,
        upload_rate_limit=2000,
        limit_local_peers=start_limited,
        idle_timeout=1e6,  # the far ends never send on their own
    )
    async with open_peer_manager(config) as manager, trio.open_nursery() as nursery:
        down = manager._download_limiter
        down.__class__ = _CountingLimiter  # slots: the class, not the instance, changes
        _GIVEN_BACK[id(down)] = 0
        peers, fars, conns = [], [], []
        for n, host in enumerate(HOSTS, 1):
            ours, far = trio.testing.memory_stream_pair()
            peers.append(
                manager.add_peer(
                    handshake_with(ours, host, n, info_hash=TORRENT), num_pieces=NUM_PIECES
                )
            )
            fars.append(far)
            conns.append(
                PeerConnection(
                    num_pieces=NUM_PIECES,
                    info_hash=TORRENT,
                    our_extensions=BOTH,
                    their_extensions=BOTH,
                )
            )
        assert [manager._peers[peer].local for peer in peers] == [True, True, False]
        received = [0, 0, 0]  # bytes the far ends read
        have_events = [0]

        async def drain(index: int) -> None:
            while data := await fars[index].receive_some():
                received[index] += len(data)

        async def consume() -> None:
            async for event in manager.events():
                if isinstance(event, MessageReceived) and isinstance(event.message, Have):
                    have_events[0] += 1

        locks = [trio.Lock() for _ in HOSTS]

        async def send_far(index: int, data: bytes) -> None:
            async with locks[index]:  # one writer per stream, in the plan's order
                await fars[index].send_all(data)

        for index in range(len(HOSTS)):
            nursery.start_soon(drain, index)
        nursery.start_soon(consume)
        sent_far = 0
        for delay, (kind, which, count) in plan:
            await trio.sleep(delay)
            if kind == "switch":
                manager.set_rate_limits(limit_local_peers=bool(which))
            elif kind == "far":
                assert isinstance(which, int)
                data = b"".join(conns[which].send(Have(i % NUM_PIECES)) for i in range(count))
                nursery.start_soon(send_far, which, data)
                sent_far += count
            else:
                assert isinstance(which, int)
                for i in range(count):
                    await manager.send(peers[which], Have(i % NUM_PIECES))
        # Quiet: every far end's haves read, every queued message written (1500 B/s: the
        # largest plan moves ~33 kB each way, well within the wait).
        with trio.fail_after(3600):
            while have_events[0] < sent_far:
                await trio.sleep(1)
        await trio.sleep(300)
        await trio.testing.wait_all_tasks_blocked()
        assert all(not manager._peers[peer].queue for peer in peers)
        up_stats = manager._upload_limiter.statistics()
        assert sum(received) == up_stats.granted + up_stats.exempt
        # Held whatever the generation they were taken in: until given back, they are held.
        held = sum(task.download_quota for task in manager._peers.values())
        down_stats = down.statistics()
        given_back = _GIVEN_BACK[id(down)]
        assert sent_far * HAVE == down_stats.granted - given_back - held + down_stats.exempt
        nursery.cancel_scope.cancel()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start_limited=st.booleans(), plan=steps)
@example(
    start_limited=True,
    plan=[
        (0.0, ("far", 0, 180)),
        (0.0, ("far", 0, 194)),
        (1.5, ("far", 0, 1454)),
        (0.0625, ("switch", False, 0)),
    ],
)
def test_switching_local_limits_never_loses_or_doubles_a_byte(
    start_limited: bool, plan: list[tuple[float, tuple[str, object, int]]]
) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(_exchange, start_limited, plan, clock=clock)


def test_the_accounting_holds_through_a_busy_switching_plan() -> None:
    """One fixed plan with both directions busy while the switch flips back and forth."""
    plan: list[tuple[float, tuple[str, object, int]]] = [
        (0.0, ("far", 0, 2500)),
        (0.0, ("far", 2, 2500)),
        (0.0, ("near", 1, 2500)),
        (0.5, ("switch", False, 0)),
        (0.2, ("far", 1, 2500)),
        (0.1, ("switch", True, 0)),
        (0.0, ("near", 0, 2500)),
        (0.3, ("switch", False, 0)),
        (0.0, ("switch", True, 0)),
        (math.pi, ("far", 0, 50)),
    ]
    for start_limited in (False, True):
        clock = trio.testing.MockClock(autojump_threshold=0)
        trio.run(_exchange, start_limited, plan, clock=clock)


async def _release_after_a_rate_change() -> None:
    config = PeerManagerConfig(download_rate_limit=2000, limit_local_peers=True, idle_timeout=1e6)
    async with open_peer_manager(config) as manager:
        down = manager._download_limiter
        down.__class__ = _CountingLimiter
        _GIVEN_BACK[id(down)] = 0
        fars, peers = [], []
        for n, host in enumerate(HOSTS, 1):
            ours, far = trio.testing.memory_stream_pair()
            fars.append(far)  # kept open: the readers wait in receive_some, holding tokens
            peers.append(
                manager.add_peer(
                    handshake_with(ours, host, n, info_hash=TORRENT), num_pieces=NUM_PIECES
                )
            )
        await trio.testing.wait_all_tasks_blocked()
        tasks = [manager._peers[peer] for peer in peers]
        assert all(task.download_quota > 0 for task in tasks)
        manager.set_rate_limits(download=3000)  # the quotas are of the old generation now
        manager.set_rate_limits(limit_local_peers=False)  # the local readers release theirs
        manager.remove_peer(peers[2], "bye")  # the remote one releases its own
        await trio.testing.wait_all_tasks_blocked()
        assert all(task.download_quota == 0 for task in tasks)
        stats = down.statistics()
        assert stats.exempt == 0
        assert stats.granted == _GIVEN_BACK[id(down)] > 0  # nothing read: every token back


def test_tokens_taken_before_a_rate_change_go_back_when_released() -> None:
    """A reader's tokens of an older generation go back when it is exempted or removed.

    They used to be dropped there (only the reader's next read gave them back, and there
    was none): lost to every peer, the limit then let through less than its rate.
    """
    trio.run(_release_after_a_rate_change, clock=trio.testing.MockClock(autojump_threshold=0))
