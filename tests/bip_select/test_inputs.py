"""The brain's inputs and actions: frozen values that say what happened and what to do."""

from __future__ import annotations

import dataclasses

import pytest

from bip_select._actions import (
    REASON_BAD_DATA,
    REASON_SNUBBED,
    Action,
    DropPeer,
    SendAllowedFast,
    SendBitfield,
    SendCancel,
    SendChoke,
    SendHave,
    SendHaveAll,
    SendHaveNone,
    SendInterested,
    SendNotInterested,
    SendRequest,
    SendUnchoke,
)
from bip_select._geometry import Block
from bip_select._inputs import (
    AllowedFast,
    BlockReceived,
    BlockRejected,
    BlockSent,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerLeft,
    PeerNotInterested,
    PeerUnchokedUs,
    PieceVerified,
    PrioritiesChanged,
    RequestTimedOut,
    Tick,
)

BLOCK = Block(1, 16384, 16384)

INPUTS: list[Input] = [
    PeerJoined("p", reqq=250, fast=True, upload_only=True),
    PeerLeft("p"),
    PeerBitfield("p", frozenset({1, 2})),
    PeerHave("p", 3),
    PeerHaveAll("p"),
    PeerHaveNone("p"),
    PeerDontHave("p", 3),
    PeerChokedUs("p"),
    PeerUnchokedUs("p"),
    PeerInterested("p"),
    PeerNotInterested("p"),
    AllowedFast("p", 4),
    BlockReceived("p", BLOCK),
    BlockRejected("p", BLOCK),
    RequestTimedOut("p", BLOCK),
    BlockSent("p", BLOCK),
    PieceVerified(3, good=False),
    PrioritiesChanged(piece_priorities={1: 0}),
    Tick(5.0),
]

ACTIONS: list[Action] = [
    SendInterested("p"),
    SendNotInterested("p"),
    SendRequest("p", BLOCK),
    SendCancel("p", BLOCK),
    SendHave("p", 1),
    SendBitfield("p", frozenset({1})),
    SendHaveAll("p"),
    SendHaveNone("p"),
    SendChoke("p"),
    SendUnchoke("p"),
    SendAllowedFast("p", 1),
    DropPeer("p", REASON_BAD_DATA),
]


@pytest.mark.parametrize("value", [*INPUTS, *ACTIONS], ids=lambda v: type(v).__name__)
def test_values_are_frozen_hashable_and_equal_by_value(value: object) -> None:
    assert dataclasses.is_dataclass(value)
    field = dataclasses.fields(value)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)
    assert not hasattr(value, "__dict__")  # slots
    assert value == dataclasses.replace(value)  # type: ignore[type-var]
    if not isinstance(value, PrioritiesChanged):
        hash(value)


def test_every_input_and_action_has_its_base() -> None:
    assert all(isinstance(i, Input) for i in INPUTS)
    assert all(isinstance(a, Action) for a in ACTIONS)


def test_peer_joined_defaults() -> None:
    joined = PeerJoined(1)
    assert (joined.reqq, joined.fast, joined.upload_only) == (None, False, False)


def test_priorities_are_copied_so_later_edits_do_not_leak_in() -> None:
    pieces = {0: 7}
    files = [1, 2]
    deadlines = {3: 10.0}
    change = PrioritiesChanged(piece_priorities=pieces, file_priorities=files, deadlines=deadlines)
    pieces[0] = 0
    files.append(3)
    deadlines[4] = 1.0
    assert change.piece_priorities == {0: 7}
    assert change.file_priorities == (1, 2)
    assert change.deadlines == {3: 10.0}
    with pytest.raises(TypeError):
        change.piece_priorities[0] = 1  # type: ignore[index]


def test_priorities_changed_defaults_change_nothing() -> None:
    change = PrioritiesChanged()
    assert change.piece_priorities is None
    assert change.file_priorities is None
    assert change.deadlines is None


def test_drop_reasons_are_distinct() -> None:
    assert len({REASON_BAD_DATA, REASON_SNUBBED}) == 2
