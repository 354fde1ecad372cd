"""PeerManager.add_peers_from (the accept loop) and StaleSendError (a send overtaken by the peer).

In-memory stream pairs and a remote PeerConnection driven by hand, as in test_manager.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._connection import PeerConnection
from bip_peer._errors import LocalProtocolError, StaleSendError
from bip_peer._manager import (
    MessageReceived,
    Peer,
    PeerAdded,
    PeerManager,
    PeerManagerConfig,
    open_peer_manager,
)
from bip_peer._messages import (
    NEED_DATA,
    Cancel,
    Choke,
    Have,
    HaveAll,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
)

TORRENT = InfoHash(v1=b"\x22" * 20)
BOTH = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
N = 8
LIMIT = 10.0  # seconds of real time any test may wait, at most


def handshake(stream: trio.abc.Stream, n: int = 1) -> CompletedHandshake:
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-" + b"%012d" % n),
        extensions=BOTH,
        our_extensions=BOTH,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881),
        direction="inbound",
    )


async def closed(stream: trio.abc.Stream) -> bool:
    """Whether the far end of ``stream`` was closed (reads until EOF)."""
    with trio.fail_after(LIMIT):
        try:
            while await stream.receive_some():
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    return True


async def test_every_handshake_becomes_a_peer_until_the_source_ends() -> None:
    send, receive = trio.open_memory_channel[CompletedHandshake](0)
    fars = []
    async with open_peer_manager() as manager:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.add_peers_from, receive, N)
            async with send:
                for n in range(1, 4):
                    local, far = trio.testing.memory_stream_pair()
                    fars.append(far)
                    with trio.fail_after(LIMIT):
                        await send.send(handshake(local, n))
            # The source ended: add_peers_from returned, and the nursery closes.
        events = manager.events()
        added = [await events.__anext__() for _ in range(3)]
        assert all(isinstance(e, PeerAdded) for e in added)
        assert {e.peer.address.host for e in added if isinstance(e, PeerAdded)} == {
            IPv4Address(f"10.0.0.{n}") for n in range(1, 4)
        }
        assert all(peer.connection.num_pieces == N for peer in manager.peers)


async def test_a_full_manager_closes_the_stream_and_goes_on() -> None:
    send, receive = trio.open_memory_channel[CompletedHandshake](0)
    async with open_peer_manager(PeerManagerConfig(max_peers=1)) as manager:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.add_peers_from, receive, N)
            first, _far1 = trio.testing.memory_stream_pair()
            second, far2 = trio.testing.memory_stream_pair()
            third, _far3 = trio.testing.memory_stream_pair()
            with trio.fail_after(LIMIT):
                await send.send(handshake(first, 1))
                await send.send(handshake(second, 2))
                assert await closed(far2)  # refused: its stream is closed at once
                [peer] = manager.peers
                manager.remove_peer(peer, "make room")
                await trio.testing.wait_all_tasks_blocked()
                await send.send(handshake(third, 3))  # the loop went on
                await send.aclose()
        assert manager.statistics().rejected_full == 1
        assert [p.address.host for p in manager.peers] == [IPv4Address("10.0.0.3")]


async def test_the_piece_count_may_be_unknown_or_asked_per_handshake() -> None:
    """A magnet: peers come before the metadata (no count), then with the count known."""
    answers = iter([None, N])  # no metadata for the first peer; then it arrived
    asked: list[CompletedHandshake] = []

    def count(done: CompletedHandshake) -> int | None:
        asked.append(done)
        return next(answers)

    send, receive = trio.open_memory_channel[CompletedHandshake](0)
    async with open_peer_manager() as manager:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: manager.add_peers_from(receive, num_pieces=count))
            early, _far1 = trio.testing.memory_stream_pair()
            late, _far2 = trio.testing.memory_stream_pair()
            with trio.fail_after(LIMIT):
                await send.send(handshake(early, 1))
                await send.send(handshake(late, 2))
                await send.aclose()
        counts = {p.address.host.packed[-1]: p.connection.num_pieces for p in manager.peers}
        assert counts == {1: None, 2: N}
        assert len(asked) == 2


async def test_a_closed_manager_closes_the_stream_and_returns() -> None:
    async with open_peer_manager() as manager:
        pass
    send, receive = trio.open_memory_channel[CompletedHandshake](1)
    local, far = trio.testing.memory_stream_pair()
    send.send_nowait(handshake(local))
    with trio.fail_after(LIMIT):
        await manager.add_peers_from(receive, num_pieces=N)  # returns: the source is still open
        assert await closed(far)


class RefusingService:
    """A service whose extended-handshake fields fail: the manager never takes the stream."""

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        raise RuntimeError("no fields")

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Never reached."""

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to forget."""

    def tick(self, manager: PeerManager, now: float) -> None:
        """No timers."""


async def test_a_failing_service_propagates_and_the_stream_is_closed() -> None:
    send, receive = trio.open_memory_channel[CompletedHandshake](1)
    local, far = trio.testing.memory_stream_pair()
    send.send_nowait(handshake(local))
    async with open_peer_manager(PeerManagerConfig(services=[RefusingService()])) as manager:
        with pytest.raises(RuntimeError, match="no fields"):
            await manager.add_peers_from(receive, num_pieces=N)
        assert await closed(far)
        assert not manager.peers


async def test_a_failing_piece_count_propagates_and_the_stream_is_closed() -> None:
    def count(done: CompletedHandshake) -> int | None:
        raise LookupError("which torrent?")

    send, receive = trio.open_memory_channel[CompletedHandshake](1)
    local, far = trio.testing.memory_stream_pair()
    send.send_nowait(handshake(local))
    async with open_peer_manager() as manager:
        with pytest.raises(LookupError, match="which torrent"):
            await manager.add_peers_from(receive, num_pieces=count)
        assert await closed(far)
        assert not manager.peers


# -- StaleSendError ------------------------------------------------------------------------


def pair() -> tuple[PeerConnection, PeerConnection]:
    def one() -> PeerConnection:
        return PeerConnection(
            num_pieces=N, info_hash=TORRENT, our_extensions=BOTH, their_extensions=BOTH
        )

    return one(), one()


def move(sender: PeerConnection, receiver: PeerConnection, message: object) -> None:
    receiver.receive_data(sender.send(message))  # type: ignore[arg-type]
    while receiver.next_event() is not NEED_DATA:
        pass


def test_a_cancel_for_a_block_that_arrived_is_stale() -> None:
    us, them = pair()
    move(them, us, HaveAll())
    move(them, us, Unchoke())
    move(us, them, Request(0, 0, 100))
    move(them, us, Piece(0, 0, bytes(100)))
    with pytest.raises(StaleSendError, match="not outstanding"):
        us.send(Cancel(0, 0, 100))


def test_a_request_meeting_a_choke_is_stale() -> None:
    us, them = pair()
    move(them, us, HaveAll())
    move(them, us, Unchoke())
    move(them, us, Choke())
    with pytest.raises(StaleSendError, match="while choked"):
        us.send(Request(1, 0, 100))


def test_a_block_or_a_reject_for_a_cancelled_request_is_stale() -> None:
    us, them = pair()
    move(us, them, HaveAll())
    move(us, them, Unchoke())
    move(them, us, Request(2, 0, 100))
    move(them, us, Request(2, 100, 100))
    move(them, us, Cancel(2, 0, 100))
    with pytest.raises(StaleSendError, match="no pending request"):
        us.send(Piece(2, 0, bytes(100)))
    move(them, us, Cancel(2, 100, 100))
    with pytest.raises(StaleSendError, match="has not requested"):
        us.send(RejectRequest(2, 100, 100))


def test_a_request_for_a_piece_the_peer_lacks_is_stale() -> None:
    us, them = pair()
    move(them, us, Have(3))
    move(them, us, Unchoke())
    with pytest.raises(StaleSendError, match="does not have"):
        us.send(Request(4, 0, 100))


def test_other_mistakes_are_not_stale() -> None:
    us, them = pair()
    move(them, us, HaveAll())
    with pytest.raises(LocalProtocolError) as info:
        us.send(Have(N))  # past the end: a bug of the caller's, never a race
    assert not isinstance(info.value, StaleSendError)
    us.send(HaveAll())
    with pytest.raises(LocalProtocolError) as info:
        us.send(HaveAll())  # availability twice
    assert not isinstance(info.value, StaleSendError)


async def test_send_nowait_raises_stale_and_queues_nothing() -> None:
    local, far = trio.testing.memory_stream_pair()
    them = PeerConnection(
        num_pieces=N, info_hash=TORRENT, our_extensions=BOTH, their_extensions=BOTH
    )
    async with open_peer_manager() as manager:
        peer = manager.add_peer(handshake(local), num_pieces=N)
        await far.send_all(them.send(HaveAll()) + them.send(Unchoke()) + them.send(Choke()))
        events = manager.events()
        with trio.fail_after(LIMIT):
            while not (
                isinstance(event := await events.__anext__(), MessageReceived)
                and isinstance(event.message, Choke)
            ):
                pass
        before = manager.queued_bytes(peer)
        with pytest.raises(StaleSendError):
            manager.send_nowait(peer, Request(0, 0, 100))
        with pytest.raises(StaleSendError):
            await manager.send(peer, Request(0, 0, 100))
        assert manager.queued_bytes(peer) == before
