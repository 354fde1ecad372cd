"""Hypothesis strategies for bip_peer wire messages, shared by the bip_peer tests.

Any bip_peer test may ``from strategies import messages`` (``tests/bip_peer/conftest.py`` puts
this folder on ``sys.path``; the tests run with ``--import-mode=importlib``):

- :func:`messages`: any :class:`bip_peer._messages.Message`, every class reachable;
- one strategy per message class (``pieces``, ``requests``, ...), and ``u32``.
"""

from __future__ import annotations

from hypothesis import strategies as st

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
