"""InfoHash: construction, text forms, the wire forms of v2."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_metainfo import InfoHash, InfoHashError

V1 = bytes(range(20))
V2 = bytes(range(100, 132))


def test_from_info_bytes_hashes_the_bytes_given() -> None:
    raw = b"d4:name1:xe"
    both = InfoHash.from_info_bytes(raw, v1=True, v2=True)
    assert both.v1 == hashlib.sha1(raw).digest()
    assert both.v2 == hashlib.sha256(raw).digest()
    assert both.is_hybrid
    assert InfoHash.from_info_bytes(raw, v1=True).v2 is None
    assert InfoHash.from_info_bytes(raw, v2=True).v1 is None


@pytest.mark.parametrize(
    ("v1", "v2"),
    [(None, None), (b"short", None), (None, bytes(20)), (bytes(32), None), ("00" * 20, None)],
)
def test_bad_hashes_are_refused(v1: object, v2: object) -> None:
    with pytest.raises(ValueError, match=r"InfoHash|must be"):
        InfoHash(v1=v1, v2=v2)  # type: ignore[arg-type]


def test_wire_forms() -> None:
    hybrid = InfoHash(v1=V1, v2=V2)
    assert hybrid.v2_truncated == V2[:20]
    assert hybrid.swarm_ids() == (V1, V2[:20])
    assert hybrid.matches(V1)
    assert hybrid.matches(V2[:20])
    assert not hybrid.matches(V2)
    assert hybrid.best == V2
    assert InfoHash(v1=V1).best == V1
    assert InfoHash(v2=V2).swarm_ids() == (V2[:20],)
    assert InfoHash(v1=V1).v2_truncated is None


def test_text_forms() -> None:
    assert InfoHash(v1=V1).hex() == V1.hex()
    assert InfoHash(v2=V2).hex() == V2.hex()
    assert InfoHash(v1=V1).base32() == base64.b32encode(V1).decode()
    assert str(InfoHash(v1=V1, v2=V2)) == f"{V1.hex()}+{V2.hex()}"
    assert InfoHash(v2=V2).multihash() == b"\x12\x20" + V2
    with pytest.raises(ValueError, match="v2-only"):
        InfoHash(v2=V2).base32()
    with pytest.raises(ValueError, match="v1-only"):
        InfoHash(v1=V1).multihash()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (V1.hex(), InfoHash(v1=V1)),
        (V1.hex().upper(), InfoHash(v1=V1)),
        (base64.b32encode(V1).decode(), InfoHash(v1=V1)),
        (base64.b32encode(V1).decode().lower(), InfoHash(v1=V1)),
        (V2.hex(), InfoHash(v2=V2)),
        ("1220" + V2.hex(), InfoHash(v2=V2)),
    ],
)
def test_parse(text: str, expected: InfoHash) -> None:
    assert InfoHash.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "zz" * 20, "00" * 19, "1320" + "00" * 32, "00" * 21, "!" * 32]
)
def test_parse_refuses_what_is_not_a_hash(text: str) -> None:
    with pytest.raises(InfoHashError, match="not an info-hash"):
        InfoHash.parse(text)


@given(st.text(max_size=80))
def test_parse_gives_a_hash_or_value_error(text: str) -> None:
    try:
        result = InfoHash.parse(text)
    except ValueError:
        return
    assert result.v1 is not None or result.v2 is not None


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=32, max_size=32))
def test_text_round_trips(v1: bytes, v2: bytes) -> None:
    assert InfoHash.parse(InfoHash(v1=v1).hex()) == InfoHash(v1=v1)
    assert InfoHash.parse(InfoHash(v1=v1).base32()) == InfoHash(v1=v1)
    assert InfoHash.parse(InfoHash(v2=v2).hex()) == InfoHash(v2=v2)
    assert InfoHash.parse(InfoHash(v2=v2).multihash().hex()) == InfoHash(v2=v2)
    assert hash(InfoHash(v1=v1, v2=v2)) == hash(InfoHash(v1=v1, v2=v2))
