"""PeerExchange's own addresses are one set, shared by every peer's inbox: no inbox drifts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address

import trio
import trio.testing
from _managers import connect, node

from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_peer._exchange import PeerExchange
from bip_peer._extended import PexMessage
from bip_peer._manager import Peer, PeerManager
from bip_peer._pex import MAX_OUR_ADDRESSES, PexInbox, _OurAddresses

IH = InfoHash.from_info_bytes(b"d4:name1:xe", v1=True, v2=False)


def learnt(n: int) -> PeerAddress:
    """The ``n``-th external address the client learns (public, so never filtered as local)."""
    return PeerAddress(IPv4Address("81.2.69.160"), 10000 + n)


class _Sink:
    def __init__(self) -> None:
        self.addresses: list[PeerAddress] = []

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        self.addresses.extend(addresses)


class _Lister:
    """Sends one PEX message listing ``listed`` once the extended handshakes are done."""

    def __init__(self, listed: tuple[PeerAddress, ...]) -> None:
        self.listed = listed
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
                manager.send_nowait(peer, PexMessage(added=self.listed))


async def test_a_late_peer_forgets_an_address_pex_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = _Sink()
    pex = PeerExchange(sink)
    for n in range(MAX_OUR_ADDRESSES):  # learnt before the peer comes: the set is full
        pex.add_our_address(learnt(n))
    late_address = PeerAddress(IPv4Address("93.184.216.34"), 6881)
    stranger = PeerAddress(IPv4Address("93.184.216.99"), 6881)
    # The late peer lists the first address learnt (about to be evicted), the last one (still
    # ours), one learnt after it joined, and a stranger.
    last = MAX_OUR_ADDRESSES - 1
    lister = _Lister((learnt(0), learnt(last), learnt(last + 1), stranger))
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, PeerAddress(IPv4Address("81.2.69.1"), 6881), [pex]) as us,
            node(nursery, late_address, [lister]) as late,
        ):
            # Its inbox starts now, with the set full.
            connect(us, late, info_hash=IH, dialler_id=b"O", listener_id=b"T")
            pex.add_our_address(learnt(last + 1))  # one more: the oldest is dropped
            assert learnt(0) not in pex.our_addresses
            with trio.fail_after(10):
                while not lister.sent or pex.statistics().messages_received == 0:
                    await trio.sleep(0.5)
            # learnt(0) is no longer ours for anyone: a peer listing it is taken at its word.
            assert sink.addresses == [learnt(0), stranger]
        nursery.cancel_scope.cancel()


def test_an_inbox_given_the_set_shares_it() -> None:
    ours = _OurAddresses([learnt(0)])
    inbox = PexInbox(our_addresses=ours)
    ours.add(learnt(1))
    ours.add(learnt(5))
    ours.discard(learnt(5))
    ours.discard(learnt(0))  # given at construction (a listening address): stays ours
    assert inbox.our_addresses == {learnt(0), learnt(1)}
    inbox.add_our_address(learnt(2))  # one set: the owner sees it too
    assert ours.all() == {learnt(0), learnt(1), learnt(2)}
    # An iterable is still copied into a set of the inbox's own.
    listed = [learnt(3)]
    own = PexInbox(our_addresses=listed)
    listed.append(learnt(4))
    assert own.our_addresses == {learnt(3)}
