"""Mends in serving metadata and piece layers.

``MetadataExchange.serve`` reads a dictionary's BEP 27 ``private`` flag without decoding a
public one (a byte search rules it out; a caller that parsed it already passes it), and a
piece-layer fetch whose layers cannot be served ends with ``PieceLayerServeError``, the
terminal kind of ``PieceLayerFetchError``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing
from _managers import node
from hypothesis import given, settings
from hypothesis import strategies as st

import bip_peer._exchange
from bip_bencode import Value, decode, encode
from bip_handshake import PeerAddress
from bip_metainfo import Info, InfoHash, pieces_root
from bip_peer._errors import PieceLayerFetchError
from bip_peer._exchange import MetadataExchange, _is_private_info
from bip_peer._layers import PieceLayerExchange, PieceLayerServeError

BLOCK = 16384


def make_info(extra: dict[bytes, Any] | None = None, *, files: int = 1) -> bytes:
    fields: dict[bytes, Any] = {
        b"name": b"x",
        b"piece length": BLOCK,
        # One byte a file: the pieces that many bytes take.
        b"pieces": random.Random(0).randbytes(20 * -(-files // BLOCK)),
        b"files": [{b"length": 1, b"path": [b"d%06d" % i, b"f"]} for i in range(files)],
        **(extra or {}),
    }
    return encode(fields)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every dictionary the exchange decodes, from now on."""
    sizes: list[int] = []
    real: Callable[..., Value] = decode

    def counting(data: bytes, **options: Any) -> Value:
        sizes.append(len(data))
        return real(data, **options)

    monkeypatch.setattr(bip_peer._exchange, "decode", counting)
    return sizes


def test_a_large_public_dictionary_is_served_without_a_decode(decodes: list[int]) -> None:
    info = make_info(files=20_000)  # about 600 kB: tenths of a second to decode
    info_hash = InfoHash.from_info_bytes(info, v1=True)
    exchange = MetadataExchange()
    exchange.serve(info_hash, info)
    assert exchange.serving(info_hash)
    assert decodes == []


@pytest.mark.parametrize(
    ("extra", "served"),
    [
        ({b"private": 1}, False),
        ({b"private": -3}, False),  # non-zero: private, as libtorrent reads it
        ({b"private": 0}, True),  # the search matches, the decode says public
        ({b"comment": b"7:privatei1e"}, True),  # in a string: matched, decoded, public
    ],
)
def test_a_dictionary_that_may_be_private_is_decoded(
    decodes: list[int], extra: dict[bytes, Any], served: bool
) -> None:
    info = make_info(extra)
    info_hash = InfoHash.from_info_bytes(info, v1=True)
    exchange = MetadataExchange()
    exchange.serve(info_hash, info)
    assert exchange.serving(info_hash) is served
    assert decodes == [len(info)]


def test_the_flag_the_caller_parsed_is_taken(decodes: list[int]) -> None:
    private = make_info({b"private": 1})
    private_hash = InfoHash.from_info_bytes(private, v1=True)
    public = make_info()
    public_hash = InfoHash.from_info_bytes(public, v1=True)
    exchange = MetadataExchange()
    exchange.serve(public_hash, public, private=False)
    assert exchange.serving(public_hash)
    exchange.serve(private_hash, private, private=True)
    assert not exchange.serving(private_hash)
    exchange.serve(public_hash, public, private=True)  # found private since: served no more
    assert not exchange.serving(public_hash)
    assert decodes == []
    with pytest.raises(ValueError, match="does not hash"):
        exchange.serve(public_hash, private, private=False)  # still checked against the hash


_values = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=9), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from([b"name", b"private", b"privatei", b"a"]), _values),
)
def test_the_byte_search_misses_no_private_dictionary(fields: dict[bytes, Value]) -> None:
    """What the search rules out is what a decode says is not private."""
    info = encode(fields)
    flag = fields.get(b"private")
    assert _is_private_info(info) is (type(flag) is int and flag != 0)
    if b"7:privatei" not in info:
        assert type(flag) is not int


# ---------------------------------------------------------------- piece layers


def _v2_info() -> Info:
    data = bytes(3 * BLOCK)  # 3 pieces: a layer to fetch
    root = pieces_root(data)
    assert root is not None
    tree: dict[bytes, Any] = {b"f": {b"": {b"length": len(data), b"pieces root": root}}}
    return Info.from_bytes(
        encode({b"name": b"t", b"piece length": BLOCK, b"meta version": 2, b"file tree": tree})
    )


async def test_a_fetch_that_times_out_is_not_a_serve_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The layers not fetched in time: the plain error, which asks to try again."""
    exchange = PieceLayerExchange()
    async with trio.open_nursery() as nursery:
        async with node(nursery, PeerAddress(IPv4Address("10.0.0.1"), 6881), [exchange]) as one:
            with pytest.raises(PieceLayerFetchError, match="within 5") as caught:
                await exchange.fetch(one.manager, _v2_info(), timeout=5)
            assert not isinstance(caught.value, PieceLayerServeError)
        nursery.cancel_scope.cancel()
