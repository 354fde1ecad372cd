"""Mends (hunt): a reconnecting peer jumping the round-robin queue; a late bitfield getting
around strict super-seeding."""

from __future__ import annotations

import random
from collections import Counter

from bip_select._actions import Action, SendHave
from bip_select._brain import SwarmBrain
from bip_select._choking import ChokeDecision, Choker
from bip_select._geometry import TorrentGeometry
from bip_select._inputs import PeerBitfield, PeerHaveNone, PeerInterested, PeerJoined
from bip_select._revelation import SuperSeeding


def haves(actions: list[Action]) -> list[tuple[object, int]]:
    return [(a.peer, a.piece) for a in actions if isinstance(a, SendHave)]


def rotating_seed(**options: object) -> Choker:
    """A seeding choker whose one regular slot rotates at every rechoke (share done at once)."""
    settings: dict[str, object] = {"regular_slots": 1, "round_robin_min_time": 0.0, **options}
    choker = Choker(
        rng=random.Random(1),
        optimistic_slots=0,
        round_robin_quota=0,
        **settings,  # type: ignore[arg-type]
    )
    choker.seeding = True
    return choker


class TestNewcomersQueueBehindThoseWhoWaited:
    def test_a_newcomer_waits_behind_a_peer_waiting_since_before_it_joined(self) -> None:
        choker = rotating_seed()
        for peer in ("a", "b", "c"):
            choker.add_peer(peer, 0.0)
        for peer in ("a", "b", "c"):
            choker.set_interested(peer, True, 0.0)
        assert choker.unchoked == {"a"}
        assert choker.tick(10.0) == ChokeDecision(choke=("a",), unchoke=("b",))
        assert choker.tick(20.0) == ChokeDecision(choke=("b",), unchoke=("c",))
        choker.add_peer("late", 25.0)
        choker.set_interested("late", True, 25.0)
        # Whoever was unchoked before the newcomer joined (at 0, 10 and 20 s) goes first: the
        # newcomer queues as if its turn had been at 25 s.
        assert choker.tick(30.0) == ChokeDecision(choke=("c",), unchoke=("a",))
        assert choker.tick(40.0) == ChokeDecision(choke=("a",), unchoke=("b",))
        assert choker.tick(50.0) == ChokeDecision(choke=("b",), unchoke=("c",))
        assert choker.tick(60.0) == ChokeDecision(choke=("c",), unchoke=("late",))

    def test_the_same_while_downloading_among_peers_sending_nothing(self) -> None:
        choker = Choker(rng=random.Random(1), regular_slots=1, optimistic_slots=0)
        for peer in ("a", "b"):
            choker.add_peer(peer, 0.0)
        for peer in ("a", "b"):
            choker.set_interested(peer, True, 0.0)
        # a took nothing for a whole interval: its slot goes to whoever waited longest.
        assert choker.tick(10.0) == ChokeDecision(choke=("a",), unchoke=("b",))
        choker.add_peer("late", 15.0)
        choker.set_interested("late", True, 15.0)
        assert choker.tick(20.0) == ChokeDecision(choke=("b",), unchoke=("a",))
        assert choker.tick(30.0) == ChokeDecision(choke=("a",), unchoke=("b",))  # (10 s)
        assert choker.tick(40.0) == ChokeDecision(choke=("b",), unchoke=("late",))

    def test_of_one_instant_who_joined_before_another_was_unchoked_goes_first(self) -> None:
        choker = rotating_seed()
        for peer in ("a", "b", "c"):
            choker.add_peer(peer, 0.0)  # all three wait from 0 s...
        choker.set_interested("a", True, 0.0)  # ...and a is unchoked then, after they joined
        choker.set_interested("b", True, 0.0)
        choker.set_interested("c", True, 0.0)
        assert choker.tick(10.0) == ChokeDecision(choke=("a",), unchoke=("b",))
        # a (unchoked at 0 s) and c (never, waiting from 0 s, joined before a's turn): c.
        assert choker.tick(20.0) == ChokeDecision(choke=("b",), unchoke=("c",))
        # A reconnection at the instant of a rechoke joins after that rechoke's unchokes.
        choker.add_peer("again", 20.0)
        choker.set_interested("again", True, 20.0)
        assert choker.tick(30.0) == ChokeDecision(choke=("c",), unchoke=("a",))
        assert choker.tick(40.0) == ChokeDecision(choke=("a",), unchoke=("b",))
        # c was unchoked at 20 s before the reconnection joined then: c first.
        assert choker.tick(50.0) == ChokeDecision(choke=("b",), unchoke=("c",))
        assert choker.tick(60.0) == ChokeDecision(choke=("c",), unchoke=("again",))

    def test_reconnecting_whenever_choked_earns_no_more_turns(self) -> None:
        # rr_reconnect.py, scaled down: 8 honest peers and one that drops and comes back as
        # a new connection each time it is choked, 2 regular slots. It had 2.6 times an
        # honest peer's turns.
        choker = rotating_seed(regular_slots=2, round_robin_min_time=20.0)
        honest = [("honest", n) for n in range(8)]
        gamer = ("gamer", 0)
        for peer in [*honest, gamer]:
            choker.add_peer(peer, 0.0)
            choker.set_interested(peer, True, 0.0)
        turns: Counter[object] = Counter()
        for step in range(200):
            now = step * 10.0
            decision = choker.tick(now)
            if gamer in decision.choke:
                choker.remove_peer(gamer, now)
                gamer = ("gamer", gamer[1] + 1)
                choker.add_peer(gamer, now)
                choker.set_interested(gamer, True, now)
            turns.update("gamer" if peer == gamer else peer for peer in choker.unchoked)
        fair = sum(turns[peer] for peer in honest) / len(honest)
        assert turns["gamer"] <= 1.1 * fair, (turns["gamer"], fair)


class TestStrictSuperSeedingLateBitfield:
    def test_a_lone_peer_resending_its_bitfield_gets_one_piece(self) -> None:
        # ss_bitfield.py: each late bitfield claiming the piece just revealed revealed
        # another, 50 of 50 with nobody else in the swarm.
        reveal = SuperSeeding(50, range(50), rng=random.Random(3), strict=True)
        ((_, piece),) = haves(reveal.peer_joined("lone", 0.0, fast=True))
        assert reveal.peer_have_none("lone", 0.0) == []  # its first message
        for step in range(1, 20):
            assert reveal.peer_bitfield("lone", [piece], float(step)) == []
            assert reveal.tick(float(step)) == []
        assert reveal.revealed("lone") == {piece}
        assert reveal.assigned("lone") == piece

    def test_only_the_first_bitfield_may_claim_it_had_the_piece(self) -> None:
        reveal = SuperSeeding(50, range(50), rng=random.Random(3), strict=True)
        ((_, piece),) = haves(reveal.peer_joined("lone", 0.0, fast=True))
        claimed = {piece}
        # Its first message may have crossed our have: it had the piece, gets another...
        ((_, second),) = haves(reveal.peer_bitfield("lone", sorted(claimed), 0.5))
        claimed.add(second)
        for step in range(1, 20):  # ...and no more, however often it claims the new one.
            assert reveal.peer_bitfield("lone", sorted(claimed), float(step)) == []
        assert reveal.revealed("lone") == claimed

    def test_a_late_bitfield_holds_the_piece_as_a_have_does(self) -> None:
        reveal = SuperSeeding(6, range(6), rng=random.Random(3), strict=True, stall_timeout=30.0)
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        assert reveal.peer_bitfield("a", [], 0.0) == []  # its first message: nothing yet
        assert reveal.peer_bitfield("a", [piece], 5.0) == []
        assert reveal.next_deadline() == 35.0  # held from the bitfield, as from a have
        ((_, other_piece),) = haves(reveal.peer_joined("b", 6.0))
        # Only its piece showing up at another peer earns it the next one (BEP 16).
        ((peer, following),) = haves(reveal.peer_have("b", piece, 7.0))
        assert peer == "a"
        assert following not in {piece, other_piece}

    def test_a_bitfield_after_a_have_is_late(self) -> None:
        reveal = SuperSeeding(6, range(6), rng=random.Random(3), strict=True)
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        other = (piece + 1) % 6
        assert reveal.peer_have("a", other, 0.5) == []  # (a piece it got elsewhere)
        assert reveal.peer_bitfield("a", [other, piece], 1.0) == []
        assert reveal.revealed("a") == {piece}

    def test_a_late_have_all_then_bitfield_gets_no_piece_each_round(self) -> None:
        # The same way round through have all: each have all let go of the piece, each
        # bitfield after it (lacking the rest) revealed a new one.
        reveal = SuperSeeding(30, range(30), rng=random.Random(3), strict=True)
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0, fast=True))
        assert reveal.peer_have_none("a", 0.0) == []  # its first message
        claimed: set[int] = set()
        for step in range(1, 20):
            claimed.update(reveal.revealed("a"))
            reveal.peer_have_all("a", float(step))
            reveal.peer_bitfield("a", sorted(claimed), float(step))
        assert reveal.revealed("a") == {piece}

    def test_the_first_bitfield_racing_our_second_reveal_still_counts(self) -> None:
        # Its first piece was released by another peer's bitfield before its own first
        # bitfield came: that bitfield, sent before it saw either have, shows the second
        # piece; it had it all along and gets another (it was held on it as on a have).
        reveal = SuperSeeding(8, range(8), rng=random.Random(1), strict=True)
        ((_, first),) = haves(reveal.peer_joined("a", 0.0))
        reveal.peer_joined("b", 0.0)
        second = next(
            p for peer, p in haves(reveal.peer_bitfield("b", [first], 0.05)) if peer == "a"
        )
        ((peer, third),) = haves(reveal.peer_bitfield("a", [second], 0.06))
        assert peer == "a"
        assert third not in {first, second}
        assert reveal.assigned("a") == third

    def test_the_first_bitfield_racing_our_first_reveal_still_counts(self) -> None:
        reveal = SuperSeeding(4, range(4), rng=random.Random(4), strict=True)
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        # Its bitfield crossed our have: it had the piece already, and gets another.
        ((_, other),) = haves(reveal.peer_bitfield("a", [piece], 0.1))
        assert other != piece
        assert reveal.assigned("a") == other

    def test_the_first_have_all_racing_our_first_reveal_still_counts(self) -> None:
        reveal = SuperSeeding(4, range(4), rng=random.Random(4), strict=True)
        ((_, to_a),) = haves(reveal.peer_joined("a", 0.0))
        ((_, piece),) = haves(reveal.peer_joined("s", 0.0, fast=True))
        # s is a seed: its piece and a's are seen elsewhere, a gets its next one.
        assert [peer for peer, _ in haves(reveal.peer_have_all("s", 0.1))] == ["a"]
        assert reveal.assigned("s") is None
        assert reveal.revealed("s") == {piece}
        assert reveal.assigned("a") != to_a

    def test_loose_mode_still_moves_on_at_a_late_bitfield(self) -> None:
        reveal = SuperSeeding(6, range(6), rng=random.Random(3), strict=False)
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        assert reveal.peer_bitfield("a", [], 0.0) == []
        ((_, following),) = haves(reveal.peer_bitfield("a", [piece], 1.0))
        assert following != piece

    def test_end_to_end_the_brain_serves_a_lone_peer_one_piece(self) -> None:
        # ss_bitfield_brain.py: may_upload was true for 40 of 40 pieces.
        n = 40
        reveal = SuperSeeding(n, range(n), rng=random.Random(5), strict=True)
        brain = SwarmBrain(
            TorrentGeometry(n, 16384, n * 16384),
            rng=random.Random(5),
            have=range(n),
            revelation=reveal,
        )
        told = haves(brain.handle(PeerJoined("lone", fast=True), 0.0))
        brain.handle(PeerHaveNone("lone"), 0.0)  # its first message
        brain.handle(PeerInterested("lone"), 0.0)
        for step in range(1, 12):
            claimed = frozenset(piece for _, piece in told)
            told += haves(brain.handle(PeerBitfield("lone", claimed), float(step)))
        assert len(told) == 1, told
        ((_, piece),) = told
        assert [p for p in range(n) if brain.may_upload("lone", p)] == [piece]


def test_a_late_have_all_moves_a_loose_super_seeding_peer_on() -> None:
    # Loose mode moves on at a late bitfield or have all holding the piece alike (the
    # have all kept it assigned, "on the way" to what is now a seed, until it stalled).
    for late in ("bitfield", "have_all"):
        reveal = SuperSeeding(4, range(4), rng=random.Random(0), strict=False, stall_timeout=60.0)
        reveal.peer_joined("a", 0.0, fast=True)
        assert reveal.peer_have_none("a", 0.0) == []  # its first message
        piece = reveal.assigned("a")
        assert piece is not None
        if late == "bitfield":
            reveal.peer_bitfield("a", [piece], 1.0)
        else:
            reveal.peer_have_all("a", 1.0)
        assert reveal.assigned("a") != piece, late
        assert reveal.next_deadline() is None, late
