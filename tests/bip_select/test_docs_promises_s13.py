"""What bip_select's docs promise and the code did not keep.

- :func:`~bip_select.message_for` refuses an action it cannot send with
  :class:`~bip_select.LocalProtocolError`: a request or cancel of a piece outside
  ``num_pieces``, or a block that is not one, as it refuses a bad have or bitfield.
- :meth:`SwarmBrain.handle <bip_select.SwarmBrain.handle>`: a refused input changes nothing,
  not even :meth:`~bip_select.SwarmBrain.next_deadline`.
"""

from __future__ import annotations

import random

import pytest

from bip_peer import Cancel, Request
from bip_select import (
    Action,
    Block,
    Input,
    LocalProtocolError,
    PeerHave,
    PeerJoined,
    PieceVerified,
    SendCancel,
    SendRequest,
    StrategyChanged,
    SwarmBrain,
    TorrentGeometry,
    message_for,
)

BAD_ACTIONS: list[tuple[str, Action]] = [
    ("request of piece 9 of 4", SendRequest("p", Block(9, 0, 16384))),
    ("cancel of piece 9 of 4", SendCancel("p", Block(9, 0, 16384))),
    ("request of piece -1", SendRequest("p", Block(-1, 0, 16384))),
    ("request begin -1", SendRequest("p", Block(0, -1, 16384))),
    ("cancel length 2**32", SendCancel("p", Block(0, 0, 2**32))),
    ("request piece True", SendRequest("p", Block(True, 0, 16384))),
    ("request of a str", SendRequest("p", "xyz")),  # type: ignore[arg-type]
    ("request of a short tuple", SendRequest("p", (0, 0))),  # type: ignore[arg-type]
    ("cancel of None", SendCancel("p", None)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("label", "action"), BAD_ACTIONS, ids=[a for a, _ in BAD_ACTIONS])
def test_message_for_refuses_a_block_it_cannot_send(label: str, action: Action) -> None:
    with pytest.raises(LocalProtocolError):
        message_for(action, num_pieces=4)


def test_message_for_still_sends_a_good_request_and_cancel() -> None:
    request = message_for(SendRequest("p", Block(3, 16384, 16384)), num_pieces=4)
    cancel = message_for(SendCancel("p", Block(0, 0, 100)), num_pieces=4)
    assert request == Request(3, 16384, 16384)
    assert cancel == Cancel(0, 0, 100)


REFUSED: list[Input] = [
    PeerHave("nobody", 0),
    PieceVerified(99, True),
    StrategyChanged("nope"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("event", REFUSED, ids=repr)
def test_a_refused_input_leaves_next_deadline_alone(event: Input) -> None:
    brain = SwarmBrain(TorrentGeometry(4, 32768), rng=random.Random(1))
    assert brain.next_deadline() is None
    with pytest.raises(LocalProtocolError):
        brain.handle(event, 1234.5)
    assert brain.next_deadline() is None


def test_the_first_input_taken_still_sets_the_first_tick() -> None:
    brain = SwarmBrain(TorrentGeometry(4, 32768), rng=random.Random(1))
    brain.handle(PeerJoined("p", reqq=250, fast=True), 7.0)
    deadline = brain.next_deadline()
    assert deadline is not None
    assert deadline <= 7.0
