"""PieceLayerExchange given an Info whose files share a ``pieces root`` at different lengths.

bip_metainfo refuses such an info dictionary; these tests build one past that check (the
exchange must not rely on it): what a fetch verifies and what is served are the tree of the
first such file larger than one piece, and layers that cannot be served fail the fetch with
its own, terminal error (``PieceLayerServeError``), never a peer that answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

import _managers
import pytest
import trio
import trio.testing
from _managers import node

import bip_metainfo._info
from bip_bencode import encode
from bip_handshake import Extensions, PeerAddress
from bip_metainfo import Info, MetainfoError, block_hashes, piece_layer, pieces_root
from bip_peer._errors import PieceLayerFetchError
from bip_peer._layers import PieceLayerExchange, PieceLayerServeError

BLOCK = 16384
EXT_V2 = Extensions.EXTENSION_PROTOCOL | Extensions.FAST | Extensions.V2_UPGRADE
DATA = bytes(range(256)) * (5 * BLOCK // 256)  # 5 pieces of one block


def _root(data: bytes) -> bytes:
    root = pieces_root(data)
    assert root is not None  # data is not empty
    return root


ROOT = _root(DATA)
LAYER = piece_layer(block_hashes(DATA), BLOCK)  # 5 hashes
# File "a" first at the root's true length; "b" then claims the same root at 3 pieces.
FIELDS: dict[bytes, Any] = {
    b"name": b"t",
    b"piece length": BLOCK,
    b"meta version": 2,
    b"file tree": {
        b"a": {b"": {b"length": 5 * BLOCK, b"pieces root": ROOT}},
        b"b": {b"": {b"length": 3 * BLOCK, b"pieces root": ROOT}},
    },
}
RAW = encode(FIELDS)


@pytest.fixture
def shared_root_info(monkeypatch: pytest.MonkeyPatch) -> Info:
    """The info dictionary as an Info, past the check that refuses it."""
    with pytest.raises(MetainfoError):
        Info.from_bytes(RAW)
    monkeypatch.setattr(bip_metainfo._info, "_check_shared_roots", lambda files: None)
    return Info.from_bytes(RAW)


def addr(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881)


def test_serve_takes_the_first_file_with_the_root(shared_root_info: Info) -> None:
    exchange = PieceLayerExchange()
    exchange.serve(shared_root_info, {ROOT: LAYER})  # the first file's 5 hashes
    assert exchange.serving(shared_root_info.info_hash)
    with pytest.raises(ValueError, match="piece layer"):
        exchange.serve(shared_root_info, {ROOT: LAYER[: 3 * 32]})  # "b"'s length: not served


async def _fetch(
    info: Info, seed_ex: PieceLayerExchange, leech_ex: PieceLayerExchange
) -> tuple[dict[bytes, bytes] | PieceLayerFetchError, list[str]]:
    """Fetch ``info``'s layers from a seed; the result (or error), and the leech's removals."""
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            _managers.connect(
                leech,
                seed,
                info_hash=info.info_hash,
                swarm_id=info.info_hash.v2_truncated,
                extensions=EXT_V2,
            )
            result: dict[bytes, bytes] | PieceLayerFetchError
            with trio.fail_after(5):
                try:
                    result = await leech_ex.fetch(leech.manager, info, timeout=3)
                except PieceLayerFetchError as error:
                    result = error
            removed = [str(event.error) for event in leech.removed()]
        nursery.cancel_scope.cancel()
    return result, removed


async def test_fetch_and_serve_agree_on_the_first_file(
    shared_root_info: Info, autojump_clock: trio.testing.MockClock
) -> None:
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    seed_ex.serve(shared_root_info, {ROOT: LAYER})
    result, removed = await _fetch(shared_root_info, seed_ex, leech_ex)
    # Asked, verified and served as the first file's 5 hashes: the seed stays.
    assert result == {ROOT: LAYER}
    assert removed == []
    assert leech_ex.serving(shared_root_info.info_hash)


async def test_layers_that_cannot_be_served_fail_the_fetch_not_the_peer(
    shared_root_info: Info,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    seed_ex.serve(shared_root_info, {ROOT: LAYER})

    def refuse(info: Info, piece_layers: Mapping[bytes, bytes]) -> None:
        raise ValueError("a layer of the wrong size")

    monkeypatch.setattr(leech_ex, "serve", refuse)
    result, removed = await _fetch(shared_root_info, seed_ex, leech_ex)
    # Terminal: a PieceLayerFetchError (as before), of the kind fetching again cannot mend.
    assert isinstance(result, PieceLayerServeError)
    assert "cannot be served: a layer of the wrong size" in str(result)
    assert removed == []  # the seed answered truly: never dropped as an internal error
    assert not leech_ex.serving(shared_root_info.info_hash)
    assert leech_ex.statistics().fetching == 0  # the fetch is over, not retried
    assert "cannot be served" in caplog.text
