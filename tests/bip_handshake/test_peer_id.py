"""PeerId: generation, validation, display and client identification."""

from __future__ import annotations

import dataclasses
import importlib.metadata
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake._peer_id import (
    DEFAULT_PEER_ID_PREFIX,
    ClientInfo,
    PeerId,
    PeerIdError,
    azureus_prefix,
)


def _pad(prefix: bytes) -> PeerId:
    return PeerId(prefix + b"x" * (20 - len(prefix)))


# The peer ids of the programs in INTEROP.md, and what they should be shown as.
INTEROP_IDS = [
    (b"-LT2110-", "libtorrent", "2.1.1"),
    (b"-LT2080-", "libtorrent", "2.0.8"),
    (b"-qB4520-", "qBittorrent", "4.5.2"),
    (b"A2-1-36-0-", "aria2", "1.36.0"),
    (b"A2-1-36-", "aria2", "1.36.0"),
    (b"-lt0D80-", "rTorrent (libtorrent)", "0.13.8"),
    (b"-TR3000-", "Transmission", "3.00"),
    (b"-CD0303-", "Enhanced CTorrent", "3.3"),
]

OTHER_IDS = [
    (b"-BP0100-", "bip", "0.1.0"),
    (b"-DE13F0-", "Deluge", "1.3.15"),
    (b"-DE2000-", "Deluge", "2.0.0"),
    (b"-AZ2504-", "Azureus", "2.5.0.4"),
    (b"-AZ5750-", "Vuze", "5.7.5.0"),
    (b"-UT355W-", "µTorrent", "3.5.5"),
    (b"-UT220B-", "µTorrent", "2.2.0 beta"),
    (b"-TR0072-", "Transmission", "0.72"),
    (b"-TR294Z-", "Transmission", "2.94+"),
    (b"-TR400B-", "Transmission", "4.0.0 beta"),
    (b"-TR4050-", "Transmission", "4.0.5"),
    (b"-LT1234-", "libtorrent", "1.2.3.4"),
    (b"-XY1234-", "XY", "1.2.3.4"),
    (b"S58B-----", "Shadow", "5.8.11"),
    (b"T03I-----", "BitTornado", "0.3.18"),
    (b"M7-4-3--", "BitTorrent", "7.4.3"),
    (b"M4-20-8-", "BitTorrent", "4.20.8"),
    (b"-ML2.7.2-", "MLDonkey", "2.7.2"),
    (b"XBT054d-", "XBT Client", "0.5.4 debug"),
    (b"exbc\x00\x32", "BitComet", "0.50"),
    (b"AZ2500BT", "BitTyrant", ""),
]


@pytest.mark.parametrize(("prefix", "name", "version"), INTEROP_IDS + OTHER_IDS)
def test_identifies_clients(prefix: bytes, name: str, version: str) -> None:
    assert _pad(prefix).client == ClientInfo(name, version)


@pytest.mark.parametrize(
    "raw",
    [
        bytes(20),
        b"\xff" * 20,
        b"-\xff\xff1234-" + bytes(12),  # code not printable
        b"-LT21!0-" + bytes(12),  # version character outside 0-9A-Z
        b"-LT2110x" + bytes(12),  # no closing dash
        b"-TR30Q0-" + bytes(12),  # Transmission wants digits
        b"-TR300Q-" + bytes(12),  # ... and a known build character
        b"-CD03A3-" + bytes(12),
        b"-UT!!!0-" + bytes(12),
        b"S58B--x--" + bytes(11),  # Shadow wants "---" after the version
        b"S------" + bytes(13),  # ... and at least one version character
        b"S5-8---" + bytes(13),  # ... and no dash inside it
        b"S5\xff------" + bytes(11),
        b"X7-4-3--" + bytes(12),  # unknown Mainline letter
        b"0123456789abcdefghij",
    ],
)
def test_unknown_styles_give_none(raw: bytes) -> None:
    assert PeerId(raw).client is None


def test_client_info_str() -> None:
    assert str(ClientInfo("aria2", "1.36.0")) == "aria2 1.36.0"
    assert str(ClientInfo("BitTyrant", "")) == "BitTyrant"


@pytest.mark.parametrize("raw", [b"", b"x" * 19, b"x" * 21])
def test_wrong_length_is_our_error(raw: bytes) -> None:
    with pytest.raises(PeerIdError, match="20 bytes"):
        PeerId(raw)


def test_wrong_type_is_our_error() -> None:
    with pytest.raises(PeerIdError, match="bytes"):
        PeerId("-BP0100-abcdefghijkl")  # type: ignore[arg-type]
    assert issubclass(PeerIdError, ValueError)


@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_bytes_like_values_become_bytes(wrap: type[bytearray] | type[memoryview]) -> None:
    peer_id = PeerId(wrap(b"a" * 20))  # type: ignore[arg-type]
    assert type(peer_id.value) is bytes
    assert peer_id == PeerId(b"a" * 20)
    assert hash(peer_id) == hash(PeerId(b"a" * 20))


def test_frozen() -> None:
    peer_id = PeerId(bytes(20))
    with pytest.raises(dataclasses.FrozenInstanceError):
        peer_id.value = b"y" * 20  # type: ignore[misc]


def test_default_prefix_follows_package_version() -> None:
    assert DEFAULT_PEER_ID_PREFIX == b"-BP0100-"
    major, minor, revision = (
        int(part) for part in importlib.metadata.version("bip-handshake").split(".")
    )
    assert azureus_prefix("BP", major, minor, revision) == DEFAULT_PEER_ID_PREFIX


def test_generate_with_rng_is_reproducible() -> None:
    first = PeerId.generate(rng=Random(42))
    assert first == PeerId.generate(rng=Random(42))
    assert first != PeerId.generate(rng=Random(43))
    assert first.value.startswith(b"-BP0100-")
    assert first.client == ClientInfo("bip", "0.1.0")


def test_generate_with_secrets() -> None:
    ids = {PeerId.generate() for _ in range(20)}
    assert len(ids) == 20
    assert all(peer_id.value.startswith(DEFAULT_PEER_ID_PREFIX) for peer_id in ids)


def test_generate_prefix_bounds() -> None:
    assert PeerId.generate(b"z" * 20).value == b"z" * 20
    assert len(PeerId.generate(b"", rng=Random(0)).value) == 20
    assert PeerId.generate(bytearray(b"-XX0001-"), rng=Random(0)).value[:8] == b"-XX0001-"
    with pytest.raises(PeerIdError):
        PeerId.generate(b"z" * 21)
    with pytest.raises(PeerIdError):
        PeerId.generate("-BP0100-")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "parts"),
    [("B", (0, 1, 0, 0)), ("BPX", (0, 1, 0, 0)), ("B\n", (0, 1, 0, 0)), ("BP", (36, 0, 0, 0))],
)
def test_azureus_prefix_rejects(code: str, parts: tuple[int, int, int, int]) -> None:
    with pytest.raises(PeerIdError):
        azureus_prefix(code, *parts)


def test_display_forms() -> None:
    peer_id = PeerId(b"-LT2110-\x00\x01abcdefghij")
    assert str(peer_id) == "-LT2110-..abcdefghij"
    assert repr(peer_id) == "PeerId(b'-LT2110-\\x00\\x01abcdefghij')"
    assert peer_id.hex() == peer_id.value.hex()
    assert bytes(peer_id) == peer_id.value
    assert PeerId.from_hex(peer_id.hex()) == peer_id
    assert PeerId.from_hex(peer_id.hex().upper()) == peer_id


@pytest.mark.parametrize("text", ["", "zz" * 20, "00" * 19, "00" * 21])
def test_from_hex_rejects(text: str) -> None:
    with pytest.raises(PeerIdError):
        PeerId.from_hex(text)


@given(st.binary(min_size=20, max_size=20))
def test_any_twenty_bytes_identify_or_none(raw: bytes) -> None:
    peer_id = PeerId(raw)
    info = peer_id.client
    assert info is None or isinstance(info, ClientInfo)
    assert len(str(peer_id)) == 20
    assert str(peer_id).isprintable()
    assert PeerId.from_hex(peer_id.hex()) == peer_id
    assert eval(repr(peer_id)) == peer_id


@given(st.binary(max_size=40))
def test_any_bytes_give_peer_id_or_our_error(raw: bytes) -> None:
    try:
        peer_id = PeerId(raw)
    except PeerIdError:
        assert len(raw) != 20
    else:
        assert peer_id.value == raw


@given(st.binary(min_size=12, max_size=12), st.lists(st.integers(0, 35), min_size=3, max_size=3))
def test_generated_azureus_ids_decode_back(tail: bytes, parts: list[int]) -> None:
    prefix = azureus_prefix("LT", *parts)
    peer_id = PeerId(prefix + tail)
    assert peer_id.client == ClientInfo("libtorrent", ".".join(map(str, parts)))


@given(st.integers(0, 2**32 - 1))
def test_generate_is_always_bip(seed: int) -> None:
    peer_id = PeerId.generate(rng=Random(seed))
    assert peer_id.client == ClientInfo("bip", "0.1.0")
