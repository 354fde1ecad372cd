"""BEP 44 items: the shared vectors, the limits, signatures and the bounded ItemStore."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from bip_bencode import BencodeDecodeError, decode, encode
from bip_dht._errors import ItemError, LocalProtocolError
from bip_dht._items import (
    DEFAULT_ITEM_LIFETIME,
    MAX_SALT_SIZE,
    MAX_SEQ,
    MAX_VALUE_SIZE,
    ImmutableItem,
    ItemProblem,
    ItemRejectedError,
    ItemStore,
    MutableItem,
    immutable_target,
    mutable_target,
    sign,
    signed_buffer,
    verify_signature,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "dht"
_DATA: dict[str, Any] = json.loads((VECTORS / "bep44_dht_store.json").read_text(encoding="utf-8"))
PUBLIC_KEY = bytes.fromhex(_DATA["key_material"]["public_key_hex"])
MUTABLE = [vector for vector in _DATA["vectors"] if vector["type"] == "mutable"]
IMMUTABLE = [vector for vector in _DATA["vectors"] if vector["type"] == "immutable"]

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _salt(vector: dict[str, Any]) -> bytes:
    return b"" if vector["salt"] is None else vector["salt"].encode()


def _string(size: int) -> bytes:
    """A bencoded byte string of exactly ``size`` bytes in all."""
    for digits in range(1, 5):
        payload = size - digits - 1
        if len(str(payload)) == digits:
            return encode(b"x" * payload)
    raise AssertionError(size)


def _bencoded(value: Any) -> bytes:
    return encode(value)


@pytest.mark.parametrize("vector", MUTABLE, ids=lambda vector: vector["name"])
def test_mutable_vectors(vector: dict[str, Any]) -> None:
    value = vector["v_bencoded"].encode()
    salt = _salt(vector)
    signature = bytes.fromhex(vector["signature_hex"])
    assert value == encode(vector["v_decoded"].encode())
    assert signed_buffer(value, vector["seq"], salt) == vector["signed_buffer"].encode()
    assert mutable_target(PUBLIC_KEY, salt).hex() == vector["target_id_hex"]
    assert verify_signature(PUBLIC_KEY, signature, value, vector["seq"], salt)
    item = MutableItem(value, PUBLIC_KEY, vector["seq"], signature, salt)
    assert item.target.hex() == vector["target_id_hex"]


@pytest.mark.parametrize("vector", MUTABLE, ids=lambda vector: vector["name"])
def test_mutable_vectors_tampered_fail(vector: dict[str, Any]) -> None:
    value = vector["v_bencoded"].encode()
    salt = _salt(vector)
    signature = bytes.fromhex(vector["signature_hex"])
    tampered = [
        (value, vector["seq"] + 1, salt, signature),
        (b"12:Hello World?", vector["seq"], salt, signature),
        (value, vector["seq"], salt + b"x", signature),
        (value, vector["seq"], salt, signature[:-1] + bytes([signature[-1] ^ 1])),
    ]
    for bad_value, seq, bad_salt, bad_signature in tampered:
        assert not verify_signature(PUBLIC_KEY, bad_signature, bad_value, seq, bad_salt)
        with pytest.raises(ItemRejectedError) as caught:
            MutableItem(bad_value, PUBLIC_KEY, seq, bad_signature, bad_salt)
        assert caught.value.code is ItemProblem.INVALID_SIGNATURE


@pytest.mark.parametrize("vector", IMMUTABLE, ids=lambda vector: vector["name"])
def test_immutable_vectors(vector: dict[str, Any]) -> None:
    value = vector["v_bencoded"].encode()
    assert immutable_target(value).hex() == vector["target_id_hex"]
    assert ImmutableItem(value).target.hex() == vector["target_id_hex"]


def test_spec_example_buffers() -> None:
    first, second = _DATA["rules"]["spec_text_example_buffers"]
    assert signed_buffer(b"12:Hello world!", 4) == first.encode()
    assert signed_buffer(b"12:Hello world!", 4, b"foobar") == second.encode()


def test_value_size_limit() -> None:
    assert len(_string(MAX_VALUE_SIZE)) == MAX_VALUE_SIZE
    ImmutableItem(_string(MAX_VALUE_SIZE))
    MutableItem.create(KEY, _string(MAX_VALUE_SIZE), 0)
    for build in (
        lambda: ImmutableItem(_string(MAX_VALUE_SIZE + 1)),
        lambda: MutableItem.create(KEY, _string(MAX_VALUE_SIZE + 1), 0),
    ):
        with pytest.raises(ItemRejectedError) as caught:
            build()
        assert caught.value.code is ItemProblem.VALUE_TOO_BIG
        assert int(caught.value.code) == 205


def test_salt_size_limit() -> None:
    MutableItem.create(KEY, b"i1e", 0, b"s" * MAX_SALT_SIZE)
    with pytest.raises(ItemRejectedError) as caught:
        MutableItem.create(KEY, b"i1e", 0, b"s" * (MAX_SALT_SIZE + 1))
    assert caught.value.code is ItemProblem.SALT_TOO_BIG
    # An oversized salt on a received item is refused too, before any signature check.
    with pytest.raises(ItemRejectedError) as caught:
        MutableItem(b"i1e", PUBLIC_KEY, 0, bytes(64), b"s" * 200)
    assert caught.value.code is ItemProblem.SALT_TOO_BIG


@pytest.mark.parametrize("value", [b"", b"i01e", b"12:short", b"d1:bi1e1:ai2ee", b"i1ei2e", b"x"])
def test_invalid_bencoding_is_refused(value: bytes) -> None:
    for build in (lambda: ImmutableItem(value), lambda: MutableItem.create(KEY, value, 0)):
        with pytest.raises(ItemRejectedError) as caught:
            build()
        assert caught.value.code is ItemProblem.INVALID


@pytest.mark.parametrize("seq", [-1, MAX_SEQ + 1, True, 1.0])
def test_seq_out_of_range_is_refused(seq: Any) -> None:
    with pytest.raises(ItemRejectedError) as caught:
        MutableItem.create(KEY, b"i1e", seq)
    assert caught.value.code is ItemProblem.INVALID


def test_bad_key_and_signature_shapes_are_item_errors() -> None:
    with pytest.raises(ItemError):
        MutableItem(b"i1e", b"short", 0, bytes(64))
    with pytest.raises(ItemError):
        MutableItem(b"i1e", PUBLIC_KEY, 0, bytes(63))
    with pytest.raises(ItemError):
        MutableItem("i1e", PUBLIC_KEY, 0, bytes(64))  # type: ignore[arg-type]
    assert not verify_signature(b"short", bytes(64), b"i1e", 0)
    assert not verify_signature(PUBLIC_KEY, b"short", b"i1e", 0)
    with pytest.raises(LocalProtocolError):
        MutableItem.create(b"not a key", b"i1e", 0)  # type: ignore[arg-type]


def test_max_seq_is_accepted() -> None:
    item = MutableItem.create(KEY, b"i1e", MAX_SEQ)
    assert item.seq == MAX_SEQ


values = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.binary(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
).map(_bencoded)


@given(values, st.integers(0, MAX_SEQ), st.binary(max_size=MAX_SALT_SIZE))
def test_create_then_verify_round_trip(value: bytes, seq: int, salt: bytes) -> None:
    item = MutableItem.create(KEY, value, seq, salt)
    assert item.target == mutable_target(KEY.public_key().public_bytes_raw(), salt)
    assert item.signature == sign(KEY, value, seq, salt)
    again = MutableItem(item.value, item.public_key, item.seq, item.signature, item.salt)
    assert again == item
    assert not verify_signature(
        OTHER_KEY.public_key().public_bytes_raw(), item.signature, value, seq, salt
    )


@given(st.binary(max_size=70), st.binary(max_size=70))
def test_salt_changes_the_buffer_unambiguously(salt_a: bytes, salt_b: bytes) -> None:
    if salt_a != salt_b:
        assert signed_buffer(b"i1e", 1, salt_a) != signed_buffer(b"i1e", 1, salt_b)


# -- ItemStore ----------------------------------------------------------------------------


def test_store_put_and_get() -> None:
    store = ItemStore()
    immutable = ImmutableItem(b"5:hello")
    mutable = MutableItem.create(KEY, b"5:hello", 1)
    store.put(immutable, now=0.0)
    store.put(mutable, now=0.0)
    assert len(store) == 2
    assert store.get(immutable.target, now=1.0) == immutable
    assert store.get(mutable.target, now=1.0) == mutable
    assert store.get(b"\x00" * 20, now=1.0) is None
    assert immutable.target in store


def test_store_sequence_numbers_only_go_forward() -> None:
    store = ItemStore()
    store.put(MutableItem.create(KEY, b"i2e", 2), now=0.0)
    with pytest.raises(ItemRejectedError) as caught:
        store.put(MutableItem.create(KEY, b"i1e", 1), now=1.0)
    assert caught.value.code is ItemProblem.SEQUENCE_TOO_LOW
    # The same seq with another value is refused: the signer must bump seq.
    with pytest.raises(ItemRejectedError) as caught:
        store.put(MutableItem.create(KEY, b"i9e", 2), now=1.0)
    assert caught.value.code is ItemProblem.SEQUENCE_TOO_LOW
    newer = MutableItem.create(KEY, b"i3e", 3)
    store.put(newer, now=2.0)
    assert store.get(newer.target, now=2.0) == newer


def test_store_same_item_refreshes_its_lifetime() -> None:
    store = ItemStore()
    item = MutableItem.create(KEY, b"i2e", 2)
    store.put(item, now=0.0)
    store.put(item, now=DEFAULT_ITEM_LIFETIME - 1)
    assert store.get(item.target, now=DEFAULT_ITEM_LIFETIME + 10) == item
    assert store.get(item.target, now=2 * DEFAULT_ITEM_LIFETIME) is None


def test_store_compare_and_swap() -> None:
    store = ItemStore()
    first = MutableItem.create(KEY, b"i1e", 5)
    # Nothing stored: nothing to compare with, the put goes through.
    store.put(first, now=0.0, cas=3)
    with pytest.raises(ItemRejectedError) as caught:
        store.put(MutableItem.create(KEY, b"i2e", 6), now=1.0, cas=4)
    assert caught.value.code is ItemProblem.CAS_MISMATCH
    assert store.get(first.target, now=1.0) == first  # unchanged by the refused put
    second = MutableItem.create(KEY, b"i2e", 6)
    store.put(second, now=1.0, cas=5)
    assert store.get(first.target, now=1.0) == second
    with pytest.raises(ItemRejectedError) as caught:
        store.put(MutableItem.create(KEY, b"i3e", 7), now=1.0, cas=True)
    assert caught.value.code is ItemProblem.INVALID


def test_store_expiry() -> None:
    store = ItemStore(lifetime=100.0)
    old, new = ImmutableItem(b"3:old"), ImmutableItem(b"3:new")
    store.put(old, now=0.0)
    store.put(new, now=50.0)
    assert store.expire(now=120.0) == 1
    assert len(store) == 1
    assert store.get(new.target, now=120.0) == new
    assert store.targets() == [new.target]


def test_store_cap_evicts_the_most_recently_stored_among_equals() -> None:
    store = ItemStore(max_items=3)
    items = [ImmutableItem(encode(index)) for index in range(5)]
    for now, item in enumerate(items[:3]):
        store.put(item, now=float(now))
    store.put(items[0], now=3.0)  # refreshed: still the first stored
    store.put(items[3], now=4.0)
    assert len(store) == 3
    assert store.get(items[2].target, now=4.0) is None  # the newest stored: a flood churns
    assert all(store.get(item.target, now=4.0) == item for item in (items[0], items[1], items[3]))
    store.put(items[4], now=5.0)
    assert items[3].target not in store
    assert items[0].target in store
    assert items[1].target in store


def test_store_cap_evicts_the_least_popular() -> None:
    store = ItemStore(max_items=3)
    popular, plain, other, new = (ImmutableItem(encode(index)) for index in range(4))
    for index in range(5):  # five distinct sources, then the same one again
        store.put(popular, now=0.0, source=IPv4Address(0x0A000000 + index))
    store.put(popular, now=0.0, source=IPv6Address("::ffff:10.0.0.0"))
    assert len(store._items[popular.target].sources) == 5
    store.put(plain, now=1.0, source=IPv4Address("10.1.0.1"))
    store.put(plain, now=1.5, source=IPv6Address("2001:db8::1"))
    store.put(other, now=2.0)
    store.put(new, now=3.0, source=IPv4Address("10.2.0.1"))
    assert other.target not in store  # no source at all: the least popular
    store.put(ImmutableItem(b"i99e"), now=4.0)
    assert new.target not in store  # one source, against two and five
    assert popular.target in store
    assert plain.target in store


def test_store_sources_are_bounded() -> None:
    store = ItemStore()
    item = ImmutableItem(b"i1e")
    for index in range(100):
        store.put(item, now=0.0, source=IPv4Address(index + 1))
    assert len(store._items[item.target].sources) == 8
    with pytest.raises(LocalProtocolError):
        store.put(item, now=0.0, source="10.0.0.1")  # type: ignore[arg-type]


def test_store_memory_is_bounded_under_a_flood() -> None:
    store = ItemStore(max_items=100)
    honest = MutableItem.create(KEY, b"6:honest", 1)
    for index in range(3):
        store.put(honest, now=0.0, source=IPv4Address(f"192.0.2.{index}"))
    for index in range(5000):
        attacker = IPv4Address(0x50000000 + index)
        store.put(ImmutableItem(encode(index)), now=float(index) / 10, source=attacker)
        assert len(store) <= 100
    # The item several nodes put survives a flood of one-off puts.
    assert store.get(honest.target, now=500.0) == honest


def test_store_rejects_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        ItemStore(max_items=0)
    with pytest.raises(LocalProtocolError):
        ItemStore(lifetime=0.0)
    with pytest.raises(LocalProtocolError):
        ItemStore().put(b"i1e", now=0.0)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3)), max_size=40))
def test_store_keeps_the_highest_seq(puts: list[tuple[int, int]]) -> None:
    store = ItemStore()
    best: MutableItem | None = None
    for seq, value in puts:
        item = MutableItem.create(KEY, encode(value), seq)
        if best is not None and (seq < best.seq or (seq == best.seq and item != best)):
            with pytest.raises(ItemRejectedError) as caught:
                store.put(item, now=0.0)
            assert caught.value.code is ItemProblem.SEQUENCE_TOO_LOW
        else:
            store.put(item, now=0.0)
            best = item
        assert store.get(item.target, now=0.0) == best


@given(st.binary(max_size=1100))
def test_arbitrary_values_give_an_item_or_our_error(value: bytes) -> None:
    try:
        decode(value)
    except BencodeDecodeError:
        valid = False
    else:
        valid = True
    if len(value) > MAX_VALUE_SIZE or not valid:
        with pytest.raises(ItemRejectedError) as caught:
            ImmutableItem(value)
        expected = ItemProblem.VALUE_TOO_BIG if len(value) > MAX_VALUE_SIZE else ItemProblem.INVALID
        assert caught.value.code is expected
    else:
        assert ImmutableItem(value).target == immutable_target(value)


@given(
    st.binary(max_size=40),
    st.binary(min_size=30, max_size=34),
    st.integers(-5, 2**64),
    st.binary(min_size=62, max_size=66),
    st.binary(max_size=70),
)
def test_arbitrary_mutable_fields_give_our_error(
    value: bytes, key: bytes, seq: int, signature: bytes, salt: bytes
) -> None:
    # Random bytes never carry a valid signature, so every combination is refused, with
    # an ItemError and nothing else.
    with pytest.raises(ItemError):
        MutableItem(value, key, seq, signature, salt)
