"""SwarmBrain: deadlines held by an inner Streaming layer of the given strategy.

A strategy such as ``Streaming(then=Streaming(then=Sequential()))`` may bring deadlines in any
of its layers. The brain used to see only the outermost layer's: a deadline an inner layer held
was not listed, not cleared by PieceDeadlineCleared or PieceDeadlinesCleared (the piece stayed
urgent), not replaced by PrioritiesChanged, not carried over by StrategyChanged and not dropped
for a piece had. Sans-IO, every call at the same ``now``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from _brains import requests_to, starved_slow_peer

from bip_select._brain import SwarmBrain
from bip_select._geometry import TorrentGeometry
from bip_select._inputs import (
    PeerHave,
    PieceDeadlineCleared,
    PieceDeadlinesCleared,
    PieceVerified,
    PrioritiesChanged,
    StrategyChanged,
)
from bip_select._selection import Sequential, Streaming

GEOMETRY = TorrentGeometry(32, 32768)


def nested(have: Sequence[int] = ()) -> tuple[SwarmBrain, Streaming, Streaming]:
    """A brain on ``Streaming(then=Streaming())``: the brain, the outer and the inner layer."""
    inner = Streaming()
    outer = Streaming(then=inner)
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1), have=have, selection=outer)
    return brain, outer, inner


def test_clearing_a_deadline_an_inner_layer_holds_makes_the_piece_ordinary() -> None:
    # "a" (one block a second) has pieces 10 and 11 asked of it: starved. Piece 20, due at
    # 3 s by the inner layer, is refused to it (it would deliver at 5 s, "f" is faster).
    # Once the deadline is cleared the piece is ordinary: "a" is asked for it at once.
    inner = Streaming()
    brain = starved_slow_peer(GEOMETRY, Streaming(then=inner))
    inner.set_deadline(20, 3.0)
    assert requests_to(brain.handle(PeerHave("a", 20), 0.0), "a") == []  # too slow
    actions = brain.handle(PieceDeadlineCleared(20), 0.0)
    assert brain.strategy.deadline(20) is None
    assert inner.deadlines() == {}
    assert {block.piece for block in requests_to(actions, "a")} == {20}
    brain.check()


def test_a_deadline_both_layers_hold_is_cleared_from_both() -> None:
    brain, outer, inner = nested()
    outer.set_deadline(5, 1.0)
    inner.set_deadline(5, 2.0)
    brain.handle(PieceDeadlineCleared(5), 0.0)
    assert brain.strategy.deadline(5) is None
    assert outer.deadlines() == inner.deadlines() == {}


def test_deadlines_lists_every_layer_the_outermost_winning() -> None:
    brain, outer, inner = nested()
    outer.set_deadline(1, 5.0)
    inner.set_deadline(1, 9.0)
    inner.set_deadline(2, 7.0)
    # The outer layer's deadline is the one the picker goes by (Streaming.deadline).
    assert brain.deadlines() == {1: 5.0, 2: 7.0}
    assert brain.strategy.deadline(1) == 5.0
    assert brain.picker.has_deadlines()


def test_every_layer_forgets_the_deadline_of_a_piece_had() -> None:
    inner = Streaming()
    inner.set_deadline(3, 1.0)
    inner.set_deadline(4, 2.0)
    inner.set_deadline(6, 2.0)
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1), have=[3], selection=Streaming(then=inner))
    assert inner.deadlines() == {4: 2.0, 6: 2.0}  # had when given
    brain.handle(PieceVerified(4, good=True), 0.0)
    assert inner.deadlines() == {6: 2.0}  # verified later
    assert brain.deadlines() == {6: 2.0}
    brain.check()


def test_check_sees_an_inner_layer_deadline_for_a_piece_had() -> None:
    brain, _, inner = nested(have=[3])
    brain.check()
    inner.set_deadline(3, 1.0)  # behind the brain's back
    with pytest.raises(AssertionError):
        brain.check()


def test_every_deadline_cleared_includes_the_inner_layers() -> None:
    brain, outer, inner = nested()
    outer.set_deadline(2, 1.0)
    inner.set_deadline(3, 1.0)
    brain.handle(PieceDeadlinesCleared(), 0.0)
    assert brain.deadlines() == {}
    assert brain.strategy.deadline(3) is None
    assert not brain.picker.has_deadlines()


def test_priorities_changed_deadlines_replace_the_inner_layers_too() -> None:
    brain, outer, inner = nested()
    inner.set_deadline(3, 1.0)
    brain.handle(PrioritiesChanged(deadlines={5: 2.0}), 0.0)
    assert brain.deadlines() == {5: 2.0}
    assert outer.deadlines() == {5: 2.0}
    assert inner.deadlines() == {}


def test_a_strategy_switch_carries_every_layer_s_deadlines_over() -> None:
    brain, outer, inner = nested()
    outer.set_deadline(4, 2.0)
    inner.set_deadline(3, 1.0)
    brain.handle(StrategyChanged(Sequential()), 0.0)
    assert brain.deadlines() == {3: 1.0, 4: 2.0}
    brain.check()


def test_a_new_strategy_s_inner_deadline_wins_over_one_carried_over() -> None:
    brain, _, inner = nested()
    inner.set_deadline(3, 1.0)
    new_inner = Streaming()
    new_inner.set_deadline(3, 9.0)
    new = Streaming(then=new_inner)
    brain.handle(StrategyChanged(new), 0.0)
    assert brain.strategy is new
    assert brain.strategy.deadline(3) == 9.0
    assert brain.deadlines() == {3: 9.0}
    assert new.deadlines() == {}


def test_a_strategy_switch_moves_the_deadlines_so_a_cleared_one_never_comes_back() -> None:
    # The deadlines were copied to the new strategy but stayed in the old one's layers:
    # cleared meanwhile, piece 4 was urgent again once the old strategy came back.
    brain, outer, inner = nested()
    inner.set_deadline(4, 7.0)
    outer.set_deadline(3, 2.0)
    brain.handle(StrategyChanged(Sequential()), 0.0)
    assert brain.deadlines() == {3: 2.0, 4: 7.0}
    assert outer.deadlines() == {}
    assert inner.deadlines() == {}
    brain.handle(PieceDeadlineCleared(4), 0.0)
    brain.handle(StrategyChanged(outer), 0.0)
    assert brain.deadlines() == {3: 2.0}
    assert brain.strategy.deadline(4) is None
    brain.check()


def test_a_strategy_switch_keeps_the_deadlines_of_a_layer_both_chains_share() -> None:
    brain, outer, inner = nested()
    inner.set_deadline(1, 9.0)
    outer.set_deadline(1, 1.0)
    outer.set_deadline(2, 5.0)
    brain.handle(StrategyChanged(inner), 0.0)  # unwrapped: the inner layer is the new chain
    # The deadline in force (the outer 1.0) goes before the 9.0 it hid in the shared layer.
    assert inner.deadlines() == {1: 1.0, 2: 5.0}
    assert outer.deadlines() == {}
    brain.check()
    wrapper = Streaming(then=inner)
    brain.handle(StrategyChanged(wrapper), 0.0)  # wrapped again: the inner layer stays
    assert inner.deadlines() == {1: 1.0, 2: 5.0}
    assert brain.deadlines() == {1: 1.0, 2: 5.0}
    brain.check()
    # Back to the first strategy: the deadline in force is still 1.0, not the stale 9.0.
    brain.handle(StrategyChanged(outer), 0.0)
    assert brain.strategy.deadline(1) == 1.0
    brain.check()
