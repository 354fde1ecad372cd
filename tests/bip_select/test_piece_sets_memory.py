"""Every piece set bip_select keeps per peer costs at most ``num_pieces / 8`` bytes: what a
peer has (its bitfield is the peer's to fill: every piece, for all we can check), for
super-seeding and for honest revelation that skips redundant haves, what we have, and the
availability's own record of each peer."""

from __future__ import annotations

import random
import sys
import tracemalloc
from collections.abc import Callable

from bip_metainfo import PieceSet
from bip_select._availability import Availability
from bip_select._revelation import HonestRevelation, RevelationStrategy, SuperSeeding

BIG = 100_000  # pieces: a 100 GB torrent of 1 MB pieces
EVERY = frozenset(range(BIG))
PEERS = 2
PER_PEER = BIG // 8 + 1024  # the bitset and the bookkeeping around it


def _held_by(
    join: Callable[[int], object], make: Callable[[], object] = tuple, peers: int = PEERS
) -> int:
    """Bytes still held once ``peers`` peers joined through ``join`` (their messages gone).

    ``make`` builds what they join under the trace too: the ints a strategy replaces in its
    per-piece lists as the peers' copies move them are then counted out as well as in."""
    tracemalloc.start()
    try:
        make()
        before, _ = tracemalloc.get_traced_memory()
        for peer in range(peers):
            join(peer)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def _assert_bitsets(strategy: RevelationStrategy, peers: int = PEERS) -> None:
    for peer in range(peers):
        pieces = strategy._peers[peer].pieces
        assert pieces._few is None
        assert len(pieces) == BIG
        assert sys.getsizeof(pieces._bits) <= BIG // 8 + 128


def test_honest_revelation_skipping_haves_keeps_a_bitset_per_peer() -> None:
    strategy = HonestRevelation(BIG, redundant_haves=False)

    def join(peer: int) -> None:
        strategy.peer_joined(peer, 0.0)
        strategy.peer_bitfield(peer, EVERY, 0.0)

    # As sets: over 4 MB a peer (8 MB here).
    assert _held_by(join) <= PEERS * PER_PEER
    _assert_bitsets(strategy)
    assert strategy.peer_have(0, 5, 1.0) == []  # behaviour unchanged: it has it
    assert strategy.piece_added(5, 1.0) == []  # nobody lacks it: no have
    strategy.peer_dont_have(1, 5, 1.0)
    assert 5 not in strategy._peers[1].pieces
    assert len(strategy._peers[1].pieces) == BIG - 1


def test_super_seeding_keeps_a_bitset_per_peer_and_for_what_we_have() -> None:
    made: list[SuperSeeding] = []

    def make() -> None:
        made.append(SuperSeeding(BIG, range(BIG), rng=random.Random(1)))

    def join(peer: int) -> None:
        made[0].peer_joined(peer, 0.0)
        made[0].peer_bitfield(peer, EVERY, 0.0)

    # One peer (a peer's every piece moves each piece's count: slow under the trace). Its
    # copies move each piece one bucket up in the strategy's own lists: a list's slack.
    assert _held_by(join, make, peers=1) <= PER_PEER + 8 * BIG
    strategy = made[0]
    _assert_bitsets(strategy, peers=1)
    assert strategy._have._few is None
    assert sys.getsizeof(strategy._have._bits) <= BIG // 8 + 128
    assert strategy.have == EVERY


def test_a_peer_told_have_all_then_losing_a_piece_keeps_a_bitset() -> None:
    strategy = HonestRevelation(BIG, redundant_haves=False)
    strategy.peer_joined("s", 0.0)
    strategy.peer_have_all("s", 0.0)
    assert len(strategy._peers["s"].pieces) == 0  # a seed: nothing kept per piece
    strategy.peer_dont_have("s", 7, 1.0)
    pieces = strategy._peers["s"].pieces
    assert len(pieces) == BIG - 1
    assert sys.getsizeof(pieces._bits) <= BIG // 8 + 128
    strategy.peer_have_none("s", 2.0)
    assert len(pieces) == 0


def test_availability_keeps_a_bitmap_per_peer() -> None:
    availability = Availability(BIG, random.Random(1))
    # Every piece makes a seed (nothing kept per piece); one short does not. As the client
    # passes it: a PieceSet decoded from the wire.
    all_but_one = PieceSet.from_bitfield(b"\x7f" + b"\xff" * (BIG // 8 - 1), BIG)

    def join(peer: int) -> None:
        availability.add_peer(peer)
        availability.bitfield(peer, all_but_one)

    assert _held_by(join) <= PEERS * PER_PEER
    assert availability.count(1) == PEERS
