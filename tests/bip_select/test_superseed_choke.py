"""A super-seed keeps a leecher's upload slot between two pieces: the leecher's *not
interested* (it has every piece it was told of) crossed the have for its next piece, so a
choke would be undone by an unchoke a round trip later, for every piece. The slot still goes
to a peer that waits for one (a turn, as before), and unrevealed pieces are still refused."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from bip_select._actions import Action, SendChoke, SendHave, SendUnchoke
from bip_select._brain import SwarmBrain
from bip_select._choking import Choker
from bip_select._geometry import TorrentGeometry
from bip_select._inputs import (
    Input,
    PeerHave,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerNotInterested,
)
from bip_select._revelation import HonestRevelation, SuperSeeding
from bip_select.simulator import BrainContext, PeerSpec, SwarmConfig, SwarmTrace, simulate

PIECES = 6


def _seed(*, strict: bool = False, choker: Choker | None = None) -> SwarmBrain:
    geometry = TorrentGeometry(PIECES, 16384)
    rng = random.Random(7)
    revelation = SuperSeeding(PIECES, range(PIECES), rng=rng, strict=strict)
    return SwarmBrain(geometry, rng=rng, have=range(PIECES), revelation=revelation, choker=choker)


def _join(brain: SwarmBrain, peer: str) -> list[Action]:
    actions = brain.handle(PeerJoined(peer, fast=True), 0.0)
    actions += brain.handle(PeerHaveNone(peer), 0.0)
    return actions + brain.handle(PeerInterested(peer), 0.0)


def _chokes(actions: list[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, SendChoke | SendUnchoke)]


def _assigned(brain: SwarmBrain, peer: str) -> int:
    revelation = brain.revelation
    assert isinstance(revelation, SuperSeeding)
    piece = revelation.assigned(peer)
    assert piece is not None
    return piece


class TestNoChokeBetweenPieces:
    def test_a_leecher_is_never_choked_until_it_has_everything(self) -> None:
        brain = _seed()
        assert SendUnchoke("a") in _join(brain, "a")
        had: set[int] = set()
        for step in range(PIECES):
            piece = _assigned(brain, "a")
            assert brain.may_upload("a", piece)
            # What a leecher sends when it verified its piece: have, then not interested.
            actions = brain.handle(PeerHave("a", piece), 1.0 + step)
            had.add(piece)
            actions += brain.handle(PeerNotInterested("a"), 1.0 + step)
            if len(had) < PIECES:
                revealed = [a for a in actions if isinstance(a, SendHave)]
                assert len(revealed) == 1  # its next piece, and no choke
                assert _chokes(actions) == []
                # Still refused: every piece never revealed to it.
                hidden = set(range(PIECES)) - brain.revelation.revealed("a")
                assert not any(brain.may_upload("a", p) for p in hidden)
                # Its interest comes back with the have: nothing to undo.
                assert _chokes(brain.handle(PeerInterested("a"), 1.0 + step)) == []
                assert brain.choker.is_unchoked("a")
            else:
                assert actions == [SendChoke("a")]  # done: not interested for good
        brain.check()

    def test_a_peer_waiting_for_a_slot_takes_it_in_turn(self) -> None:
        brain = _seed(choker=Choker(rng=random.Random(1), regular_slots=1, optimistic_slots=0))
        assert SendUnchoke("a") in _join(brain, "a")
        assert _chokes(_join(brain, "b")) == []  # the one slot is a's
        piece = _assigned(brain, "a")
        actions = brain.handle(PeerHave("a", piece), 1.0)
        actions += brain.handle(PeerNotInterested("a"), 1.0)
        assert _chokes(actions) == [SendChoke("a"), SendUnchoke("b")]
        assert _chokes(brain.handle(PeerInterested("a"), 1.1)) == []  # a waits its turn

    def test_strict_mode_chokes_a_peer_left_with_nothing_to_ask_for(self) -> None:
        brain = _seed(strict=True)
        _join(brain, "a")
        piece = _assigned(brain, "a")
        # BEP 16's rule: no next piece until this one shows up elsewhere.
        assert brain.handle(PeerHave("a", piece), 1.0) == []
        assert brain.handle(PeerNotInterested("a"), 1.0) == [SendChoke("a")]

    def test_honest_seeding_chokes_a_peer_not_interested(self) -> None:
        geometry, rng = TorrentGeometry(PIECES, 16384), random.Random(2)
        brain = SwarmBrain(geometry, rng=rng, have=range(PIECES))
        assert isinstance(brain.revelation, HonestRevelation)
        brain.handle(PeerJoined("a", fast=True), 0.0)
        assert SendUnchoke("a") in brain.handle(PeerInterested("a"), 0.0)
        assert not brain.revelation.awaits_interest("a")
        assert brain.handle(PeerNotInterested("a"), 1.0) == [SendChoke("a")]


class TestChokerKeepSlot:
    @staticmethod
    def _choker(peers: int, slots: int = 1) -> Choker:
        choker = Choker(rng=random.Random(3), regular_slots=slots, optimistic_slots=0)
        for peer in range(peers):
            choker.add_peer(peer, 0.0)
        return choker

    def test_kept_while_nobody_waits_and_nothing_to_undo(self) -> None:
        choker = self._choker(1)
        assert choker.set_interested(0, True, 0.0).unchoke == (0,)
        assert not choker.set_interested(0, False, 1.0, keep_slot=True)
        assert choker.is_unchoked(0)
        assert not choker.set_interested(0, True, 1.1)
        assert choker.is_unchoked(0)

    def test_a_peer_becoming_interested_takes_the_kept_slot(self) -> None:
        choker = self._choker(2)
        choker.set_interested(0, True, 0.0)
        assert not choker.set_interested(0, False, 1.0, keep_slot=True)
        decision = choker.set_interested(1, True, 1.1)
        assert (decision.choke, decision.unchoke) == ((0,), (1,))
        assert not choker.set_interested(0, True, 1.2)  # its turn is over: it waits

    def test_the_next_rechoke_chokes_a_kept_peer_still_not_interested(self) -> None:
        choker = self._choker(1)
        choker.set_interested(0, True, 0.0)
        choker.tick(0.0)
        choker.set_interested(0, False, 1.0, keep_slot=True)
        assert choker.tick(choker.rechoke_interval).choke == (0,)
        assert not choker.set_interested(0, True, 20.0).choke

    def test_a_kept_peer_that_leaves_frees_its_slot(self) -> None:
        choker = self._choker(2)
        choker.set_interested(0, True, 0.0)
        choker.set_interested(0, False, 1.0, keep_slot=True)
        assert not choker.remove_peer(0, 2.0)
        assert choker.set_interested(1, True, 3.0).unchoke == (1,)


# ---------------------------------------------------------------- in the simulator


class _ChokingSuperSeeding(SuperSeeding):
    """The behaviour before: every *not interested* is taken at its word (a choke)."""

    def awaits_interest(self, peer: Any) -> bool:
        self._get(peer)
        return False


def _swarm(strategy: type[SuperSeeding], leechers: int, chokes: list[Input]) -> SwarmConfig:
    class Seed(SwarmBrain):
        def handle(self, event: Input, now: float) -> list[Action]:
            actions = super().handle(event, now)
            chokes.extend(event for a in actions if isinstance(a, SendChoke))
            return actions

    def brain(context: BrainContext) -> SwarmBrain:
        if not context.spec.seed:
            return SwarmBrain(context.geometry, have=context.have, rng=context.rng)
        revelation = strategy(
            context.geometry.num_pieces, context.have, rng=context.rng, strict=False
        )
        return Seed(context.geometry, have=context.have, rng=context.rng, revelation=revelation)

    rate = 100_000
    peers = [PeerSpec(upload=rate, download=rate, seed=True)]
    peers += [PeerSpec(upload=rate, download=rate) for _ in range(leechers)]
    return SwarmConfig(
        num_pieces=30, piece_length=65536, peers=peers, brain=brain, step=0.05, seed=5
    )


def _times(trace: SwarmTrace) -> list[float]:
    times = [trace.download_time(peer) for peer in trace.completion]
    done = [t for t in times if t is not None]
    assert len(done) == len(times), "a leecher never completed"
    return done


@pytest.mark.parametrize("leechers", [3, 8])
def test_super_seeded_swarms_finish_no_slower_with_fewer_chokes(leechers: int) -> None:
    before: list[Input] = []
    after: list[Input] = []
    old = simulate(_swarm(_ChokingSuperSeeding, leechers, before))
    new = simulate(_swarm(SuperSeeding, leechers, after))
    assert old.violations == new.violations == []
    old_times, new_times = _times(old), _times(new)
    assert statistics.mean(new_times) <= statistics.mean(old_times)
    assert max(new_times) <= max(old_times)
    not_interested = [e for e in after if isinstance(e, PeerNotInterested)]
    if leechers <= 5:  # a slot each (4 regular, 1 optimistic): nobody waits for a turn
        # Chokes for a stale not interested: one per piece before, none now (a leecher is
        # choked once, when it has everything).
        assert len([e for e in before if isinstance(e, PeerNotInterested)]) >= 30
        assert len(not_interested) <= leechers
    else:
        assert len(not_interested) <= len(before)
