"""Hypothesis strategies for bip_peer wire messages, shared by the bip_peer tests.

Any bip_peer test may ``from strategies import messages`` (``tests/bip_peer/conftest.py`` puts
this folder on ``sys.path``; the tests run with ``--import-mode=importlib``):

- :func:`messages`: any :class:`bip_peer._messages.Message`, every class reachable;
- one strategy per message class (``pieces``, ``requests``, ...), and ``u32``;
- :func:`handshakes`: any ``bip_peer._extended.ExtendedHandshake`` (``extra`` included);
- :func:`extension_messages`: any ut_metadata / ut_pex / lt_donthave / upload_only message;
- ``ipv4_peers`` / ``ipv6_peers``: ``bip_handshake.PeerAddress`` of either family.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_peer._extended import (
    HANDSHAKE_FIELDS,
    MAX_METADATA_TOTAL_SIZE,
    METADATA_PIECE_SIZE,
    DontHave,
    ExtendedHandshake,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    PexMessage,
    UploadOnly,
)
from bip_peer._messages import (
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
    UnknownMessage,
)

KNOWN_IDS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 20, 21, 22, 23})
"""The message ids bip_peer decodes into their own classes."""

u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
"""Any uint32."""

roots = st.binary(min_size=32, max_size=32)
"""A BEP 52 pieces root."""

no_payload: st.SearchStrategy[Message] = st.sampled_from(
    [KeepAlive(), Choke(), Unchoke(), Interested(), NotInterested(), HaveAll(), HaveNone()]
)
"""The messages without fields."""


def _view(data: bytes) -> memoryview:
    return memoryview(data)


haves = st.builds(Have, u32)
suggests = st.builds(Suggest, u32)
allowed_fasts = st.builds(AllowedFast, u32)
bitfields = st.builds(Bitfield, st.binary(max_size=64))
requests = st.builds(Request, u32, u32, u32)
cancels = st.builds(Cancel, u32, u32, u32)
rejects = st.builds(RejectRequest, u32, u32, u32)
pieces = st.builds(Piece, u32, u32, st.binary(max_size=300) | st.binary(max_size=300).map(_view))
ports = st.builds(Port, st.integers(min_value=0, max_value=0xFFFF))
extendeds = st.builds(Extended, st.integers(min_value=0, max_value=255), st.binary(max_size=100))
hash_requests = st.builds(HashRequest, roots, u32, u32, u32, u32)
hash_rejects = st.builds(HashReject, roots, u32, u32, u32, u32)
hashes = st.builds(
    Hashes,
    roots,
    u32,
    u32,
    u32,
    u32,
    st.integers(min_value=0, max_value=6).flatmap(
        lambda n: st.binary(min_size=32 * n, max_size=32 * n)
    ),
)
unknowns = st.builds(
    UnknownMessage,
    st.integers(min_value=0, max_value=255).filter(lambda mid: mid not in KNOWN_IDS),
    st.binary(max_size=50),
)


def messages() -> st.SearchStrategy[Message]:
    """Any peer wire message, every class reachable."""
    return st.one_of(
        no_payload,
        haves,
        suggests,
        allowed_fasts,
        bitfields,
        requests,
        cancels,
        rejects,
        pieces,
        ports,
        extendeds,
        hash_requests,
        hash_rejects,
        hashes,
        unknowns,
    )


# ---------------------------------------------------------------------------- extensions

ports16 = st.integers(min_value=0, max_value=0xFFFF)
ipv4_peers = st.builds(PeerAddress, st.integers(0, 2**32 - 1).map(IPv4Address), ports16)
ipv6_peers = st.builds(PeerAddress, st.integers(0, 2**128 - 1).map(IPv6Address), ports16)
flags = st.integers(min_value=0, max_value=255)

_bencode_values: st.SearchStrategy[Any] = st.recursive(
    st.integers(-(2**64), 2**64) | st.binary(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.binary(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_extra_keys = st.binary(max_size=12).filter(
    lambda key: key not in {name.encode() for name in HANDSHAKE_FIELDS}
)


def handshakes() -> st.SearchStrategy[ExtendedHandshake]:
    """Any valid extended handshake, every field present or absent."""
    return st.builds(
        ExtendedHandshake,
        m=st.dictionaries(st.text(max_size=12), st.integers(0, 255), max_size=5),
        v=st.none() | st.text(max_size=20),
        p=st.none() | st.integers(1, 0xFFFF),
        yourip=st.none() | st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
        ipv4=st.none() | st.binary(min_size=4, max_size=4),
        ipv6=st.none() | st.binary(min_size=16, max_size=16),
        reqq=st.none() | st.integers(1, 2**32 - 1),
        metadata_size=st.none() | st.integers(1, MAX_METADATA_TOTAL_SIZE),
        upload_only=st.none() | st.booleans(),
        extra=st.dictionaries(_extra_keys, _bencode_values, max_size=3),
    )


@st.composite
def _metadata_data(draw: st.DrawFn) -> MetadataData:
    total_size = draw(st.integers(1, 4 * METADATA_PIECE_SIZE))
    piece = draw(st.integers(0, (total_size - 1) // METADATA_PIECE_SIZE))
    room = min(METADATA_PIECE_SIZE, total_size - piece * METADATA_PIECE_SIZE)
    data = draw(st.binary(max_size=min(room, 200)))
    return MetadataData(piece, total_size, data)


@st.composite
def _pex(draw: st.DrawFn) -> PexMessage:
    added = draw(st.lists(ipv4_peers, max_size=5))
    added6 = draw(st.lists(ipv6_peers, max_size=5))
    added_flags = draw(st.just([]) | st.lists(flags, min_size=len(added), max_size=len(added)))
    added6_flags = draw(st.just([]) | st.lists(flags, min_size=len(added6), max_size=len(added6)))
    return PexMessage(
        added=tuple(added),
        added_flags=tuple(added_flags),
        added6=tuple(added6),
        added6_flags=tuple(added6_flags),
        dropped=tuple(draw(st.lists(ipv4_peers, max_size=5))),
        dropped6=tuple(draw(st.lists(ipv6_peers, max_size=5))),
    )


_pieces = st.integers(0, MAX_METADATA_TOTAL_SIZE // METADATA_PIECE_SIZE)


def extension_messages() -> st.SearchStrategy[
    MetadataRequest | MetadataData | MetadataReject | PexMessage | DontHave | UploadOnly
]:
    """Any ut_metadata, ut_pex, lt_donthave or upload_only message."""
    return st.one_of(
        st.builds(MetadataRequest, _pieces),
        st.builds(MetadataReject, _pieces),
        _metadata_data(),
        _pex(),
        st.builds(DontHave, u32),
        st.builds(UploadOnly, st.booleans()),
    )
