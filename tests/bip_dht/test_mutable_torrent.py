"""BEP 46: publishing and resolving a torrent's version through BEP 44 mutable items."""

from __future__ import annotations

import pytest
import trio
from _loopback import loopback_swarm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from bip_bencode import encode
from bip_dht import (
    INFO_HASH_KEY,
    ItemError,
    MutableItem,
    MutableTorrent,
    mutable_torrent_value,
)
from bip_metainfo import InfoHash, MutableTorrentLink

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key().public_bytes_raw()
V1 = InfoHash(v1=bytes.fromhex("aa" * 20))
V2 = InfoHash(v2=bytes.fromhex("bb" * 32))
HYBRID = InfoHash(v1=bytes.fromhex("cc" * 20), v2=bytes.fromhex("dd" * 32))


def _item(value: bytes, seq: int = 7, salt: bytes = b"") -> MutableItem:
    return MutableItem.create(KEY, value, seq, salt)


def test_value_is_the_v1_hash_when_there_is_one() -> None:
    assert mutable_torrent_value(V1) == {INFO_HASH_KEY: V1.v1}
    assert mutable_torrent_value(HYBRID) == {INFO_HASH_KEY: HYBRID.v1}
    assert mutable_torrent_value(V2) == {INFO_HASH_KEY: V2.v2}
    with pytest.raises(TypeError):
        mutable_torrent_value(bytes(20))  # type: ignore[arg-type]


@pytest.mark.parametrize("info_hash", [V1, V2])
def test_an_item_reads_back(info_hash: InfoHash) -> None:
    item = _item(encode(mutable_torrent_value(info_hash)), seq=7, salt=b"nightly")
    torrent = MutableTorrent.from_item(item)
    assert torrent == MutableTorrent(info_hash, 7, PUBLIC, b"nightly")


def test_other_keys_are_ignored() -> None:
    item = _item(encode({b"ih": bytes(20), b"name": b"x", b"z": 1}))
    assert MutableTorrent.from_item(item).info_hash == InfoHash(v1=bytes(20))


@pytest.mark.parametrize(
    "value",
    [
        b"i5e",
        b"le",
        b"de",
        encode({b"ih": bytes(19)}),
        encode({b"ih": bytes(21)}),
        encode({b"ih": 5}),
        encode({b"IH": bytes(20)}),
    ],
)
def test_items_that_name_no_torrent_are_our_error(value: bytes) -> None:
    with pytest.raises(ItemError):
        MutableTorrent.from_item(_item(value))


@given(st.binary(max_size=40))
def test_any_ih_is_a_torrent_or_our_error(digest: bytes) -> None:
    item = _item(encode({b"ih": digest}), seq=0)
    try:
        torrent = MutableTorrent.from_item(item)
    except ItemError:
        assert len(digest) not in (20, 32)
    else:
        assert digest in (torrent.info_hash.v1, torrent.info_hash.v2)


async def test_publish_update_and_resolve_on_loopback() -> None:
    link = MutableTorrentLink(PUBLIC, salt=b"nightly", display_name="Nightly")
    with trio.fail_after(20):
        async with loopback_swarm(8) as nodes:
            assert await nodes[5].get_mutable_torrent(link.public_key, link.salt) is None
            first = await nodes[1].put_mutable_torrent(KEY, V1, salt=b"nightly")
            assert first.stored_at >= 5
            found = await nodes[6].get_mutable_torrent(link.public_key, link.salt)
            assert found == MutableTorrent(V1, 0, PUBLIC, b"nightly")
            # A new version: one above the stored seq, found by every consumer.
            await nodes[2].put_mutable_torrent(KEY, HYBRID, salt=b"nightly")
            found = await nodes[7].get_mutable_torrent(link.public_key, link.salt)
            assert found is not None
            assert (found.seq, found.info_hash) == (1, InfoHash(v1=HYBRID.v1))
            magnet = link.resolved(found.info_hash)
            assert magnet.info_hash.v1 == HYBRID.v1
            assert magnet.display_name == "Nightly"
            # Another salt is another torrent; a non-torrent item under the key is refused.
            assert await nodes[7].get_mutable_torrent(PUBLIC, b"other") is None
            await nodes[3].put_mutable(KEY, {b"msg": b"not a torrent"}, salt=b"chat")
            with pytest.raises(ItemError):
                await nodes[4].get_mutable_torrent(PUBLIC, b"chat")
