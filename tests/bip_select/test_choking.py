"""The choker: tit-for-tat with optimistic unchoke, seeding by upload rate or round robin."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_select._choking import ChokeDecision, Choker, SeedChoking
from bip_select._errors import LocalProtocolError


def interested_swarm(count: int, now: float = 0.0, **options: object) -> Choker:
    """A choker with peers 0..count-1 joined and interested at ``now``."""
    choker = Choker(rng=random.Random(7), **options)  # type: ignore[arg-type]
    for peer in range(count):
        choker.add_peer(peer, now)
    for peer in range(count):
        choker.set_interested(peer, True, now)
    return choker


def regular(choker: Choker) -> frozenset[object]:
    return choker.unchoked - choker.optimistic


class TestSlots:
    def test_defaults_are_four_regular_and_one_optimistic(self) -> None:
        choker = interested_swarm(10)
        choker.tick(0.0)
        assert len(regular(choker)) == 4
        assert len(choker.optimistic) == 1
        assert len(choker.unchoked) == 5

    def test_free_slots_are_filled_as_peers_become_interested(self) -> None:
        choker = Choker(rng=random.Random(1))
        for peer in range(6):
            choker.add_peer(peer, 0.0)
        decisions = [choker.set_interested(peer, True, 0.0) for peer in range(6)]
        assert [d.unchoke for d in decisions] == [(0,), (1,), (2,), (3,), (4,), ()]
        assert choker.optimistic == {4}

    def test_tit_for_tat_keeps_the_fastest_senders(self) -> None:
        choker = interested_swarm(8)
        choker.tick(0.0)
        for peer, rate in enumerate([1, 9, 2, 8, 3, 7, 4, 6]):
            choker.downloaded(peer, rate * 10_000, 5.0)
        choker.tick(10.0)
        assert regular(choker) == {1, 3, 5, 7}

    @pytest.mark.parametrize(("slots", "optimistic"), [(0, 0), (1, 0), (2, 3), (8, 2)])
    def test_slot_counts_are_configurable(self, slots: int, optimistic: int) -> None:
        choker = interested_swarm(12, regular_slots=slots, optimistic_slots=optimistic)
        choker.tick(0.0)
        assert len(regular(choker)) == slots
        assert len(choker.optimistic) == optimistic

    def test_fewer_interested_peers_than_slots(self) -> None:
        choker = interested_swarm(3)
        choker.tick(0.0)
        assert choker.unchoked == {0, 1, 2}

    def test_uninterested_peers_take_no_slot(self) -> None:
        choker = Choker(rng=random.Random(2))
        for peer in range(8):
            choker.add_peer(peer, 0.0)
            choker.downloaded(peer, 100_000, 0.0)  # fast, but not interested
        choker.set_interested(7, True, 0.0)
        choker.tick(0.0)
        assert choker.unchoked == {7}

    def test_snubbed_peers_get_no_regular_slot(self) -> None:
        choker = interested_swarm(6, optimistic_slots=0)
        for peer in range(6):
            choker.downloaded(peer, (peer + 1) * 10_000, 1.0)
        choker.set_snubbed(5, True)
        choker.set_snubbed(4, True)
        choker.tick(10.0)
        assert regular(choker) == {0, 1, 2, 3}
        choker.set_snubbed(5, False)
        choker.downloaded(5, 10**6, 15.0)
        choker.tick(20.0)
        assert 5 in regular(choker)

    def test_a_snubbed_peer_can_win_the_optimistic_slot(self) -> None:
        choker = interested_swarm(5, regular_slots=4)
        choker.set_snubbed(4, True)
        for peer in range(4):
            choker.downloaded(peer, 10_000, 1.0)
        choker.tick(10.0)
        assert choker.optimistic == {4}

    def test_optimistic_peer_earning_a_regular_slot_frees_the_optimistic_one(self) -> None:
        choker = interested_swarm(6, regular_slots=2, optimistic_slots=1)
        choker.tick(0.0)
        (lucky,) = choker.optimistic
        choker.downloaded(lucky, 10**6, 5.0)
        choker.tick(10.0)
        assert lucky in regular(choker)
        assert len(choker.optimistic) == 1
        assert lucky not in choker.optimistic


class TestOptimisticRotation:
    def test_rotates_every_thirty_seconds(self) -> None:
        choker = interested_swarm(10)
        for peer in range(4):  # four clear winners keep the regular slots
            choker.downloaded(peer, 10**6, 0.0)
        holders: list[frozenset[object]] = []
        for step in range(31):
            now = step * 10.0
            for peer in range(4):
                choker.downloaded(peer, 10**6, now)
            choker.tick(now)
            holders.append(choker.optimistic)
            assert regular(choker) == {0, 1, 2, 3}
        changes = [i for i in range(1, len(holders)) if holders[i] != holders[i - 1]]
        assert changes == list(range(3, 31, 3))  # at 30 s, 60 s, ...

    def test_a_lone_candidate_keeps_the_slot(self) -> None:
        choker = interested_swarm(5)
        for peer in range(4):
            choker.downloaded(peer, 10**6, 0.0)
        choker.tick(0.0)
        assert choker.optimistic == {4}
        for step in range(1, 10):
            for peer in range(4):
                choker.downloaded(peer, 10**6, step * 10.0)
            assert not choker.tick(step * 10.0)
            assert choker.optimistic == {4}

    def test_no_rechoke_before_the_interval(self) -> None:
        choker = interested_swarm(10)
        choker.tick(0.0)
        assert choker.next_rechoke == 10.0
        for peer in range(10):
            choker.downloaded(peer, peer * 10**5, 1.0)
        assert choker.tick(9.99) == ChokeDecision()
        assert choker.tick(10.0)

    def test_new_peers_are_three_times_as_likely(self) -> None:
        rng = random.Random(2026)
        wins: Counter[str] = Counter()
        trials = 3000
        for _ in range(trials):
            choker = Choker(rng=rng, regular_slots=0, optimistic_slots=1)
            choker.add_peer("holder", 0.0)
            choker.set_interested("holder", True, 1000.0)
            for old in range(9):
                choker.add_peer(f"old{old}", 0.0)
                choker.set_interested(f"old{old}", True, 1000.0)
            choker.add_peer("new", 1000.0)
            choker.set_interested("new", True, 1000.0)
            assert choker.optimistic == {"holder"}
            choker.tick(1030.0)  # the holder's turn is over: a weighted draw among the ten
            (winner,) = choker.optimistic
            wins["new" if winner == "new" else "old"] += 1
        share = wins["new"] / trials
        assert 0.21 < share < 0.29  # 3 / (3 + 9) = 0.25; one old peer: 1/12


class TestBetweenRechokes:
    def test_losing_interest_chokes_and_refills_at_once(self) -> None:
        choker = interested_swarm(8, optimistic_slots=0)
        for peer in range(8):
            choker.downloaded(peer, (8 - peer) * 10_000, 1.0)
        choker.tick(2.0)
        assert regular(choker) == {0, 1, 2, 3}
        decision = choker.set_interested(1, False, 3.0)
        assert decision == ChokeDecision(choke=(1,), unchoke=(4,))

    def test_leaving_refills_at_once(self) -> None:
        choker = interested_swarm(8, optimistic_slots=0)
        for peer in range(8):
            choker.downloaded(peer, (8 - peer) * 10_000, 1.0)
        choker.tick(2.0)
        assert choker.remove_peer(0, 3.0) == ChokeDecision(unchoke=(4,))
        assert choker.remove_peer(7, 3.0) == ChokeDecision()
        assert 0 not in choker
        assert len(choker) == 6

    def test_rate_and_snub_changes_wait_for_the_rechoke(self) -> None:
        choker = interested_swarm(8)
        choker.tick(0.0)
        before = choker.unchoked
        for peer in range(8):
            choker.downloaded(peer, (peer + 1) * 10**6, 1.0)
            choker.set_snubbed(peer, peer < 4)
        assert not choker.tick(5.0)
        assert choker.unchoked == before
        assert choker.set_interested(0, True, 5.0) == ChokeDecision()  # already interested

    def test_a_choked_peer_losing_interest_changes_nothing(self) -> None:
        choker = interested_swarm(8)
        choker.tick(0.0)
        choked = min(peer for peer in range(8) if peer not in choker.unchoked)
        assert choker.set_interested(choked, False, 1.0) == ChokeDecision()


class TestSeeding:
    def test_fastest_upload_keeps_the_fastest_downloaders(self) -> None:
        choker = interested_swarm(8, seed_choking=SeedChoking.FASTEST_UPLOAD)
        choker.seeding = True
        choker.tick(0.0)
        assert regular(choker) == {0, 1, 2, 3}
        assert choker.optimistic == {4}
        for peer, rate in zip((0, 1, 2, 3, 4), (5, 1, 9, 7, 8), strict=True):
            choker.uploaded(peer, rate * 10_000, 5.0)
        choker.tick(10.0)
        # The optimistic peer out-ran 1, the slowest regular one, and takes its slot.
        assert regular(choker) == {0, 2, 3, 4}
        assert len(choker.optimistic) == 1

    def test_fastest_upload_rotates_idle_peers(self) -> None:
        choker = interested_swarm(8, optimistic_slots=0, seed_choking=SeedChoking.FASTEST_UPLOAD)
        choker.seeding = True
        assert not choker.tick(0.0)  # just unchoked: no time to show a rate yet
        for peer in (0, 1, 2):
            choker.uploaded(peer, 10_000, 5.0)
        decision = choker.tick(10.0)  # 3 took nothing in ten seconds
        assert decision == ChokeDecision(choke=(3,), unchoke=(4,))

    def test_round_robin_is_fair_over_many_rechokes(self) -> None:
        peers = 12
        choker = interested_swarm(peers, optimistic_slots=0, round_robin_quota=5 * 2**20)
        choker.seeding = True
        turns: Counter[object] = Counter()
        for step in range(600):
            now = step * 10.0
            for peer in choker.unchoked:
                choker.uploaded(peer, 2**20, now)  # 100 KiB/s each while unchoked
            choker.tick(now)
            assert len(choker.unchoked) == 4
            turns.update(choker.unchoked)
        assert set(turns) == set(range(peers))
        assert max(turns.values()) / min(turns.values()) < 1.1

    def test_round_robin_keeps_peers_until_their_share_is_done(self) -> None:
        choker = interested_swarm(8, optimistic_slots=0, round_robin_quota=10**6)
        choker.seeding = True
        choker.tick(0.0)
        first = choker.unchoked
        for step in range(1, 6):  # a minute at most: share not yet done
            for peer in first:
                choker.uploaded(peer, 10**6, step * 10.0)
            assert not choker.tick(step * 10.0)
        for peer in first:
            choker.uploaded(peer, 10**6, 60.0)
        decision = choker.tick(60.0)
        assert set(decision.choke) == first
        assert choker.unchoked == {4, 5, 6, 7}

    def test_snubbing_does_not_apply_when_seeding(self) -> None:
        choker = interested_swarm(4, optimistic_slots=0)
        for peer in range(4):
            choker.set_snubbed(peer, True)
        choker.seeding = True
        choker.tick(0.0)
        assert choker.unchoked == {0, 1, 2, 3}


class TestErrors:
    def test_unknown_peer(self) -> None:
        choker = Choker(rng=random.Random(0))
        with pytest.raises(LocalProtocolError, match="never added"):
            choker.set_interested(1, True, 0.0)
        with pytest.raises(LocalProtocolError):
            choker.remove_peer(1, 0.0)
        with pytest.raises(LocalProtocolError):
            choker.is_unchoked(1)

    def test_unhashable_peer(self) -> None:
        choker = Choker(rng=random.Random(0))
        with pytest.raises(LocalProtocolError, match="hashable"):
            choker.add_peer([1], 0.0)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="never added"):
            choker.set_snubbed([1], True)  # type: ignore[arg-type]

    def test_duplicate_peer(self) -> None:
        choker = Choker(rng=random.Random(0))
        choker.add_peer(1, 0.0)
        with pytest.raises(LocalProtocolError, match="already"):
            choker.add_peer(1, 0.0)

    def test_negative_bytes(self) -> None:
        choker = Choker(rng=random.Random(0))
        choker.add_peer(1, 0.0)
        with pytest.raises(LocalProtocolError):
            choker.downloaded(1, -1, 0.0)
        with pytest.raises(LocalProtocolError):
            choker.uploaded(1, True, 0.0)

    @pytest.mark.parametrize(
        "options",
        [
            {"regular_slots": -1},
            {"optimistic_slots": 1.5},
            {"rechoke_interval": 0.0},
            {"optimistic_interval": float("nan")},
            {"rate_window": -1.0},
            {"new_peer_weight": 0.5},
            {"new_peer_window": -1.0},
            {"round_robin_quota": -1},
        ],
    )
    def test_bad_configuration(self, options: dict[str, object]) -> None:
        with pytest.raises(LocalProtocolError):
            Choker(rng=random.Random(0), **options)  # type: ignore[arg-type]

    def test_rates_are_reported(self) -> None:
        choker = Choker(rng=random.Random(0), rate_window=10.0)
        choker.add_peer(1, 0.0)
        choker.downloaded(1, 50_000, 5.0)
        choker.uploaded(1, 20_000, 5.0)
        assert choker.download_rate(1, 10.0) == pytest.approx(5_000.0, rel=0.15)
        assert choker.upload_rate(1, 10.0) == pytest.approx(2_000.0, rel=0.15)
        assert not choker.is_unchoked(1)


# ---------------------------------------------------------------- properties

_operations = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "interested", "uninterested", "snub", "bytes", "tick"]),
        st.integers(0, 11),
        st.integers(0, 200_000),
        st.floats(0.0, 25.0),
    ),
    max_size=120,
)


_configurations = st.tuples(
    st.integers(0, 5),
    st.integers(0, 3),
    st.booleans(),
    st.sampled_from(list(SeedChoking)),
    st.integers(0, 2**32),
)


@settings(max_examples=150, deadline=None)
@given(_operations, _configurations)
def test_invariants(
    operations: list[tuple[str, int, int, float]],
    configuration: tuple[int, int, bool, SeedChoking, int],
) -> None:
    slots, optimistic, seeding, seed_choking, seed = configuration
    choker = Choker(
        rng=random.Random(seed),
        regular_slots=slots,
        optimistic_slots=optimistic,
        seed_choking=seed_choking,
    )
    choker.seeding = seeding
    now = 0.0
    interested: set[int] = set()
    snubbed: set[int] = set()
    model: set[object] = set()  # who the decisions say is unchoked

    def apply(decision: ChokeDecision, *, rechoke: bool, lost: int | None = None) -> None:
        assert not set(decision.choke) & set(decision.unchoke)
        assert set(decision.choke) <= model
        assert not set(decision.unchoke) & model
        if not rechoke:  # anti-fibrillation: only the peer that lost interest is choked
            assert set(decision.choke) <= ({lost} if lost is not None else set())
        model.difference_update(decision.choke)
        model.update(decision.unchoke)

    for name, peer, amount, step in operations:
        now += step
        known = peer in choker
        if name == "add":
            if not known:
                choker.add_peer(peer, now)
        elif not known:
            continue
        elif name == "remove":
            model.discard(peer)
            apply(choker.remove_peer(peer, now), rechoke=False)
            interested.discard(peer)
            snubbed.discard(peer)
        elif name == "interested":
            interested.add(peer)
            apply(choker.set_interested(peer, True, now), rechoke=False)
        elif name == "uninterested":
            interested.discard(peer)
            apply(choker.set_interested(peer, False, now), rechoke=False, lost=peer)
        elif name == "snub":
            snubbed.symmetric_difference_update({peer})
            choker.set_snubbed(peer, peer in snubbed)
        elif name == "bytes":
            choker.downloaded(peer, amount, now)
            choker.uploaded(peer, amount // 2, now)
        else:
            due = choker.next_rechoke is None or now >= choker.next_rechoke
            decision = choker.tick(now)
            apply(decision, rechoke=due)
            if due and not seeding:
                assert not regular(choker) & snubbed
        assert choker.unchoked == model
        assert len(regular(choker)) <= slots
        assert len(choker.optimistic) <= optimistic
        assert len(choker.unchoked) <= slots + optimistic
        assert choker.unchoked <= interested  # nobody uninterested holds any slot
        # Slots are never left empty while someone interested waits for one.
        waiting = interested - choker.unchoked
        if waiting:
            assert len(choker.optimistic) == optimistic
        if waiting - (set() if seeding else snubbed):
            assert len(regular(choker)) == slots
