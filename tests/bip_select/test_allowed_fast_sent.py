"""The brain grants BEP 6 allowed-fast pieces as libtorrent does (peer_connection.cpp
``send_allowed_set``, called by bt_peer_connection.cpp ``on_interested``).

The client computes the set from the peer's address (bip_peer's ``allowed_fast_set``) and hands
it over in :class:`PeerJoined`; the brain sends it once, at the peer's first interest, only to a
peer that speaks the fast extension, leaving out the pieces the peer has, and not at all to a
peer that only uploads (BEP 21, or a seed) or while we super-seed.
"""

from __future__ import annotations

import random

import pytest

from bip_select import (
    MAX_ALLOWED_FAST,
    LocalProtocolError,
    PeerBitfield,
    PeerHaveAll,
    PeerInterested,
    PeerJoined,
    PeerNotInterested,
    PeerUploadOnly,
    SendAllowedFast,
    SuperSeeding,
    SwarmBrain,
    Tick,
    TorrentGeometry,
)
from bip_select._actions import Action

NUM_PIECES = 40
GEOMETRY = TorrentGeometry(NUM_PIECES, 16384)
OFFER = (7, 3, 30, 12, 25)


def granted(actions: list[Action], peer: str) -> list[int]:
    """The pieces allowed fast to ``peer``, in order."""
    return [a.piece for a in actions if isinstance(a, SendAllowedFast) and a.peer == peer]


def seeder(**kwargs: object) -> SwarmBrain:
    return SwarmBrain(GEOMETRY, rng=random.Random(1), have=range(NUM_PIECES), **kwargs)  # type: ignore[arg-type]


def test_sent_once_at_first_interest_without_the_peers_pieces() -> None:
    brain = seeder()
    assert granted(brain.handle(PeerJoined("p", fast=True, allowed_fast=OFFER), 0.0), "p") == []
    actions = brain.handle(PeerBitfield("p", frozenset({3, 25, 39})), 0.0)
    assert granted(actions, "p") == []  # not before the peer says it is interested
    actions = brain.handle(PeerInterested("p"), 0.0)
    assert granted(actions, "p") == [7, 30, 12]  # BEP 6 order, without what it has
    # Before the unchoke the interest may bring (libtorrent sends the set first).
    assert all(isinstance(a, SendAllowedFast) for a in actions[:3])
    # Once per connection: interest lost and regained grants nothing more.
    brain.handle(PeerNotInterested("p"), 1.0)
    assert granted(brain.handle(PeerInterested("p"), 2.0), "p") == []


def test_a_duplicate_in_the_offer_is_sent_once() -> None:
    brain = seeder()
    brain.handle(PeerJoined("p", fast=True, allowed_fast=(5, 5, 6)), 0.0)
    assert granted(brain.handle(PeerInterested("p"), 0.0), "p") == [5, 6]


def test_sent_by_a_leecher_too_whatever_pieces_it_has() -> None:
    # libtorrent does not look at its own pieces: a grant of a piece it lacks lets the peer
    # ask for it once it is announced.
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1), have={7})
    brain.handle(PeerJoined("p", fast=True, allowed_fast=OFFER), 0.0)
    assert granted(brain.handle(PeerInterested("p"), 0.0), "p") == list(OFFER)


def test_none_without_the_fast_extension() -> None:
    brain = seeder()
    brain.handle(PeerJoined("p", fast=False, allowed_fast=OFFER), 0.0)
    assert granted(brain.handle(PeerInterested("p"), 0.0), "p") == []


def test_none_to_a_peer_that_only_uploads() -> None:
    brain = seeder()
    brain.handle(PeerJoined("p", fast=True, allowed_fast=OFFER), 0.0)
    brain.handle(PeerUploadOnly("p", True), 0.0)
    assert granted(brain.handle(PeerInterested("p"), 0.0), "p") == []
    brain.handle(PeerJoined("s", fast=True, allowed_fast=OFFER), 0.0)
    brain.handle(PeerHaveAll("s"), 0.0)
    assert granted(brain.handle(PeerInterested("s"), 0.0), "s") == []


def test_none_while_super_seeding() -> None:
    have = frozenset(range(NUM_PIECES))
    brain = seeder(revelation=SuperSeeding(NUM_PIECES, have, rng=random.Random(2)))
    brain.handle(PeerJoined("p", fast=True, allowed_fast=OFFER), 0.0)
    assert granted(brain.handle(PeerInterested("p"), 0.0), "p") == []


def test_a_bad_offer_is_the_clients_mistake_and_joins_nothing() -> None:
    brain = seeder()
    for offer in ((NUM_PIECES,), (-1,), ("1",), tuple(range(MAX_ALLOWED_FAST + 1))):
        with pytest.raises(LocalProtocolError):
            brain.handle(PeerJoined("p", fast=True, allowed_fast=offer), 0.0)  # type: ignore[arg-type]
        assert "p" not in brain.peers
    # The most it takes.
    big = SwarmBrain(TorrentGeometry(100, 16384), rng=random.Random(1), have=range(100))
    big.handle(PeerJoined("p", fast=True, allowed_fast=tuple(range(MAX_ALLOWED_FAST))), 0.0)
    assert len(granted(big.handle(PeerInterested("p"), 0.0), "p")) == MAX_ALLOWED_FAST


def test_a_bad_offer_is_refused_also_for_a_peer_without_the_fast_extension() -> None:
    """The offer is checked whatever the peer speaks (review of the allowed-fast mend): a bad
    one is the client's mistake even when it would not be used."""
    brain = seeder()
    for bad in (("x",), (NUM_PIECES,), None, tuple(range(MAX_ALLOWED_FAST + 1))):
        with pytest.raises(LocalProtocolError):
            brain.handle(PeerJoined("p", fast=False, allowed_fast=bad), 0.0)  # type: ignore[arg-type]
    brain.handle(PeerJoined("p", fast=False, allowed_fast=(1, 2)), 0.0)


def test_a_first_tick_keeps_the_deadline_it_set() -> None:
    """A Tick as the brain's first input sets the next tick itself: the first-input rule
    must not make it due at once again."""
    brain = seeder()
    brain.handle(Tick(100.0), 100.0)
    deadline = brain.next_deadline()
    assert deadline is None or deadline > 100.0
