"""The node's saved state: round trips, and malformed bytes refused with our own error."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_dht._errors import LocalProtocolError
from bip_dht._node import DHTNode
from bip_dht._node_id import NodeId
from bip_dht._node_state import decode_state, encode_state
from bip_dht._routing import RoutingStateError, RoutingTable
from bip_handshake import NodeInfo, PeerAddress

OWN = NodeId(b"o" * 20)
BOOT = [PeerAddress.parse("10.0.0.1:6881"), PeerAddress.parse("[fd00::1]:6881")]


def tables() -> list[bytes]:
    out = []
    for family, address in ((4, "10.1.0.{}:6881"), (6, "[fd00::1:{}]:6881")):
        table = RoutingTable(OWN, family=family, rng=random.Random(1))  # type: ignore[arg-type]
        for i in range(1, 6):
            table.heard_from(
                NodeInfo(bytes([i]) * 20, PeerAddress.parse(address.format(i))), 0, True
            )
        out.append(table.save(0.0))
    return out


def test_round_trip() -> None:
    saved = decode_state(encode_state(OWN, tables(), BOOT), max_bootstrap=8)
    assert saved.node_id == OWN
    assert set(saved.tables) == {4, 6}
    assert saved.bootstrap == tuple(BOOT)
    assert decode_state(encode_state(OWN, [], BOOT), max_bootstrap=1).bootstrap == (BOOT[0],)


def test_a_node_keeps_only_its_families() -> None:
    state = encode_state(OWN, tables(), BOOT)
    node = DHTNode(rng=random.Random(1), now=0.0, state=state)
    assert node.families == (4,)
    assert len(node.table(4)) == 5
    assert node.bootstrap_addresses == (BOOT[0],)
    both = DHTNode(rng=random.Random(1), now=0.0, families=(4, 6), state=state)
    assert len(both.table(6)) == 5
    assert both.bootstrap_addresses == tuple(BOOT)
    assert decode_state(both.save_state(0.0), max_bootstrap=8).bootstrap == tuple(BOOT)


@pytest.mark.parametrize(
    "state",
    [
        b"",
        b"i1e",
        encode({b"id": b"short"}),
        encode({b"id": b"i" * 20, b"tables": b"x"}),
        encode({b"id": b"i" * 20, b"tables": [b"a", b"b", b"c"]}),
        encode({b"id": b"i" * 20, b"tables": [1]}),
        encode({b"id": b"i" * 20, b"tables": [b"junk"]}),
        encode({b"id": b"i" * 20, b"tables": [encode({b"family": 5})]}),
        encode({b"id": b"i" * 20, b"tables": [encode({b"family": 4})] * 2}),
        encode({b"id": b"i" * 20, b"bootstrap": b"x"}),
        encode({b"id": b"i" * 20, b"bootstrap": [b"12345"]}),
        b"d2:id20:" + b"i" * 20 + b"9:bootstrap" + b"l" + b"6:abcdef" * 100_000 + b"ee",
    ],
)
def test_malformed_state_is_refused(state: bytes) -> None:
    with pytest.raises(RoutingStateError):
        decode_state(state, max_bootstrap=8)


def test_a_bad_table_inside_is_refused_by_the_node() -> None:
    bad = encode({b"id": b"i" * 20, b"tables": [encode({b"family": 4, b"id": b"i" * 20})]})
    with pytest.raises(RoutingStateError):
        DHTNode(rng=random.Random(1), now=0.0, state=bad)
    with pytest.raises(LocalProtocolError):
        decode_state("text", max_bootstrap=8)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(lambda b: encode({b"id": b"i" * 20, b"tables": [b]}), st.binary(max_size=80))
)
def test_arbitrary_state_bytes_raise_only_our_error(data: bytes) -> None:
    with contextlib.suppress(RoutingStateError):
        DHTNode(rng=random.Random(1), now=0.0, state=data)
