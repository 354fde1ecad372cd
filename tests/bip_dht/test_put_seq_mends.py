"""Mends of ``put_mutable`` with ``seq=None``: the update goes out without compare-and-swap, so
the storers that still hold an older version (the very ones an update must reach) take it.

libtorrent's ``put_data::invoke`` sends ``v``, ``token``, ``k``, ``seq``, ``sig`` and ``salt``,
never ``cas``: a storer's own rule (302 for a lower ``seq``) keeps an older item from replacing
a newer one. A ``cas`` goes out only where a caller asks for it (``DHT.put(item, cas=...)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from _loopback import loopback_swarm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_bencode import encode
from bip_dht import DHT, ErrorCode, MutableItem, MutableTorrent, PutFinished, mutable_torrent_value
from bip_metainfo import InfoHash

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SALT = b"room"
OLD = InfoHash(v1=bytes.fromhex("aa" * 20))
NEW = InfoHash(v1=bytes.fromhex("bb" * 20))

# How a test publishes the old (False) or the new (True) version, always with seq=None.
Publish = Callable[[DHT, bool], Awaitable[PutFinished]]


def _plain_value(newest: bool) -> bytes:
    """The bencoded value of the old or the new version."""
    return encode(b"three" if newest else b"one")


async def _put_plain(dht: DHT, newest: bool) -> PutFinished:
    return await dht.put_mutable(KEY, b"three" if newest else b"one", salt=SALT)


def _torrent_value(newest: bool) -> bytes:
    """The bencoded BEP 46 value of the old or the new version."""
    return encode(mutable_torrent_value(NEW if newest else OLD))


async def _put_torrent(dht: DHT, newest: bool) -> PutFinished:
    return await dht.put_mutable_torrent(KEY, NEW if newest else OLD, salt=SALT)


def _serves(dht: DHT, target: bytes) -> MutableItem | None:
    """The item *dht*'s own store holds under *target* now."""
    item = dht.node._items.get(target, trio.current_time())
    assert item is None or isinstance(item, MutableItem)
    return item


@pytest.mark.parametrize(
    ("publish", "value_of"),
    [(_put_plain, _plain_value), (_put_torrent, _torrent_value)],
    ids=["put_mutable", "put_mutable_torrent"],
)
async def test_seq_none_update_reaches_storers_holding_an_older_seq(
    publish: Publish, value_of: Callable[[bool], bytes]
) -> None:
    with trio.fail_after(20):
        async with loopback_swarm(6) as nodes:
            publisher = nodes[5]
            first = await publish(publisher, False)
            assert first.errors == ()
            holders = [d for d in nodes if _serves(d, first.target) is not None]
            assert len(holders) >= 3
            # One storer got seq 1 that the others missed (a datagram lost on the way to
            # them): the next get finds seq 1, the others still hold seq 0.
            newer = MutableItem.create(KEY, value_of(False), 1, SALT)
            holders[0].node._items.put(newer, trio.current_time())

            update = await publish(publisher, True)

            assert update.errors == ()  # was four 301s: cas=1 sent to nodes holding seq 0
            assert update.stored_at >= len(holders)
            for dht in holders:
                item = _serves(dht, update.target)
                assert item is not None
                assert (item.seq, item.value) == (2, value_of(True))
            resolved = await nodes[1].get_mutable(KEY.public_key().public_bytes_raw(), SALT)
            assert resolved is not None
            assert resolved.seq == 2
            if publish is _put_torrent:
                assert MutableTorrent.from_item(resolved).info_hash == NEW


async def test_seq_none_update_does_not_replace_a_newer_item() -> None:
    """Without cas, a storer's own rule still keeps its newer item: a put below it is refused
    with 302 and the newer one stays."""
    with trio.fail_after(20):
        async with loopback_swarm(6) as nodes:
            publisher = nodes[5]
            first = await publisher.put_mutable(KEY, b"one", salt=SALT)
            holders = [d for d in nodes if _serves(d, first.target) is not None]
            assert len(holders) >= 3
            ahead = MutableItem.create(KEY, encode(b"ahead"), 9, SALT)
            holders[0].node._items.put(ahead, trio.current_time())
            stale = MutableItem.create(KEY, encode(b"stale"), 5, SALT)

            refused = await publisher.put(stale)

            assert (holders[0].addresses[0], ErrorCode.SEQUENCE_TOO_LOW) in {
                (node.address, code) for node, code in refused.errors
            }
            item = _serves(holders[0], first.target)
            assert item is not None
            assert item.seq == 9


async def test_explicit_cas_still_goes_out() -> None:
    """``DHT.put(item, cas=...)`` keeps compare-and-swap: storers holding another seq refuse
    with 301 and keep their item."""
    with trio.fail_after(20):
        async with loopback_swarm(6) as nodes:
            publisher = nodes[5]
            first = await publisher.put_mutable(KEY, b"one", salt=SALT)
            holders = [d for d in nodes if _serves(d, first.target) is not None]
            assert len(holders) >= 3
            second = MutableItem.create(KEY, encode(b"two"), 1, SALT)

            refused = await publisher.put(second, cas=7)

            assert refused.stored_at == 0
            assert {code for _, code in refused.errors} == {ErrorCode.CAS_MISMATCH}
            for dht in holders:
                item = _serves(dht, first.target)
                assert item is not None
                assert item.seq == 0
