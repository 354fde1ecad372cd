"""A PEX flood ends the connection (libtorrent's rule: a seventh message within 60 s) after a
few decodes, while messages at BEP 11's pace, or a few bunched behind a slow link, are taken."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from ipaddress import IPv4Address

import _managers
import pytest
import trio
import trio.testing
from _managers import node

from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_peer import _connection
from bip_peer._errors import RemoteProtocolError
from bip_peer._exchange import PeerExchange
from bip_peer._extended import PexMessage
from bip_peer._manager import REASON_PROTOCOL, Peer, PeerManager, PeerRemoved
from bip_peer._pex import PEX_FLOOD_ALLOWANCE, PEX_FLOOD_WINDOW, PexInbox

IH = InfoHash.from_info_bytes(b"d6:lengthi1e4:name1:xe", v1=True, v2=False)


def addr(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), port)


def pex(n: int) -> PexMessage:
    return PexMessage(added=(addr(100 + n % 100, 7000),))


class NullSink:
    def discovered(self, info_hash: object, addresses: object, source: str) -> None:
        pass


class BurstSender:
    """Sends ``count`` tiny PEX messages back to back, once, as soon as it may."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sent = False

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {"m": {"ut_pex": 1}}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        return isinstance(message, PexMessage)

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        for peer in manager.peers:
            if peer.extended_handshake is not None and not self.sent:
                self.sent = True
                for n in range(self.count):
                    manager.send_nowait(peer, PexMessage(added=(addr(100 + n % 100, 1),)))


async def test_burst_of_tiny_pex_ends_the_connection_after_the_allowance(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = 0
    classes, decode = _connection._EXTENSIONS["ut_pex"]

    def counting(payload: bytes) -> object:
        nonlocal decodes
        decodes += 1
        return decode(payload)

    decoder: tuple[tuple[type, ...], Callable[[bytes], object]] = (classes, counting)
    monkeypatch.setitem(_connection._EXTENSIONS, "ut_pex", decoder)
    exchange = PeerExchange(NullSink())
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [exchange]) as victim,
            node(nursery, addr(2), [BurstSender(500)]) as flooder,
        ):
            _managers.connect(victim, flooder, info_hash=IH)
            with trio.fail_after(10):
                while not any(isinstance(e, PeerRemoved) for e in victim.events):
                    await trio.sleep(0.5)
            (removed,) = [e for e in victim.events if isinstance(e, PeerRemoved)]
            assert removed.reason == REASON_PROTOCOL
            assert "ut_pex messages within" in str(removed.error)
            # The first six are taken (bunched messages lose nothing), the seventh ends it:
            # the other 493 are never decoded.
            assert decodes == PEX_FLOOD_ALLOWANCE + 1
            stats = exchange.statistics()
            assert (stats.messages_received, stats.messages_ignored) == (PEX_FLOOD_ALLOWANCE, 0)
        nursery.cancel_scope.cancel()


def test_seventh_message_within_a_minute_raises_before_it_is_used() -> None:
    inbox = PexInbox()
    for n in range(PEX_FLOOD_ALLOWANCE):
        inbox.receive(pex(n), now=float(n))
    with pytest.raises(RemoteProtocolError, match="ut_pex messages within 60 s"):
        inbox.receive(pex(99), now=PEX_FLOOD_WINDOW - 0.5)
    assert addr(199, 7000) not in inbox.known
    stats = inbox.statistics()
    assert (stats.messages, stats.ignored_too_soon) == (PEX_FLOOD_ALLOWANCE, 0)


def test_bep11_pace_and_a_bunched_backlog_are_untouched() -> None:
    inbox = PexInbox()
    # An hour at BEP 11's pace: every message taken.
    for n in range(60):
        assert inbox.receive(pex(n), now=60.0 * n) is not None
    # Six that queued behind a rate-limited connection arrive together: no flood, and each
    # is taken whole.
    for n in range(PEX_FLOOD_ALLOWANCE):
        assert inbox.receive(pex(60 + n), now=3600.0 + n * 0.01).addresses == (addr(160 + n, 7000),)
    # A minute after the first of them, the pace goes on.
    assert inbox.receive(pex(300), now=3660.0) is not None
    assert inbox.statistics().messages == 60 + PEX_FLOOD_ALLOWANCE + 1
