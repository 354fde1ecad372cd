"""KRPC message classes' shape: shared fields declared once, checks chained, ClassVars per class.

The round trip of every message kind under hypothesis lives in test_krpc.py; these tests pin the
class layout (so a message cannot quietly re-declare ``transaction_id`` or lose a check) and
check that the shared fields behave the same in every class.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_dht._errors import LocalProtocolError
from bip_dht._krpc import (
    AnnouncePeer,
    ErrorCode,
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    Ping,
    Put,
    Response,
    SampleInfohashes,
    UnknownQuery,
    decode_message,
)
from bip_dht._krpc_base import Envelope, NodeMessage
from bip_dht._krpc_queries import QUERY_TYPES, QueryBase, TargetQuery
from bip_handshake._compact import PeerAddress

ID = b"abcdefghij0123456789"
TARGET = b"mnopqrstuvwxyz123456"

ENVELOPE_FIELDS = ("transaction_id", "version", "ip", "read_only")
NODE_FIELDS = (*ENVELOPE_FIELDS, "node_id", "extra")

# Every concrete message class: the fields it adds (in order) and the smallest valid arguments
# for them beside the shared ones.
OWN: dict[type[Envelope], tuple[tuple[str, ...], dict[str, Any]]] = {
    Ping: ((), {}),
    FindNode: (("target", "want"), {"target": TARGET}),
    GetPeers: (("info_hash", "want", "noseed", "scrape"), {"info_hash": TARGET}),
    AnnouncePeer: (
        ("info_hash", "port", "token", "implied_port", "seed"),
        {"info_hash": TARGET, "port": 6881, "token": b"tok"},
    ),
    Get: (("target", "seq", "want"), {"target": TARGET}),
    Put: (("token", "v", "k", "sig", "seq", "cas", "salt"), {"token": b"tok", "v": b"value"}),
    SampleInfohashes: (("target", "want"), {"target": TARGET}),
    UnknownQuery: (("name",), {"name": b"vote"}),
    Response: (
        (
            "nodes",
            "nodes6",
            "values",
            "token",
            "samples",
            "num",
            "interval",
            "v",
            "k",
            "sig",
            "seq",
            "bfsd",
            "bfpe",
            "ignored",
        ),
        {},
    ),
    ErrorReply: (("code", "message"), {"code": 201}),
}

# One invalid value of one field each class adds: its own check must still run.
BAD_OWN: dict[type[Envelope], dict[str, Any]] = {
    FindNode: {"target": b"short"},
    GetPeers: {"noseed": 1},
    AnnouncePeer: {"port": -1},
    Get: {"want": [b"n4"]},
    Put: {"k": b"k" * 32},
    SampleInfohashes: {"target": b"short"},
    UnknownQuery: {"name": b"ping"},
    Response: {"num": -1},
    ErrorReply: {"message": b"bytes"},
}

CLASSES = list(OWN)
NODE_CLASSES = [cls for cls in CLASSES if issubclass(cls, NodeMessage)]


def _shared(cls: type[Envelope]) -> tuple[str, ...]:
    return NODE_FIELDS if issubclass(cls, NodeMessage) else ENVELOPE_FIELDS


def _build(cls: type[Envelope], **changes: Any) -> Any:
    kwargs: dict[str, Any] = {"transaction_id": b"tx", **OWN[cls][1]}
    if issubclass(cls, NodeMessage):
        kwargs["node_id"] = ID
    kwargs.update(changes)
    return cls(**kwargs)


def _declared(cls: type) -> set[str]:
    """The instance fields a class's own body declares (ClassVars excluded)."""
    fields = {field.name for field in dataclasses.fields(cls)}  # ClassVars are not fields
    return {name for name in vars(cls).get("__annotations__", {}) if name in fields}


# --- layout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_fields_are_the_shared_ones_then_the_own_ones(cls: type[Envelope]) -> None:
    names = tuple(field.name for field in dataclasses.fields(cls))
    assert names == _shared(cls) + OWN[cls][0]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_no_class_re_declares_a_shared_field(cls: type[Envelope]) -> None:
    for klass in cls.__mro__[:-1]:  # object aside
        if klass in (Envelope, NodeMessage):
            continue
        assert not _declared(klass) & set(NODE_FIELDS), klass
    assert _declared(Envelope) == set(ENVELOPE_FIELDS)
    assert _declared(NodeMessage) == {"node_id", "extra"}


def test_find_node_and_sample_infohashes_share_their_fields_not_their_class() -> None:
    assert _declared(TargetQuery) == {"target", "want"}
    assert not _declared(FindNode)
    assert not _declared(SampleInfohashes)
    assert not issubclass(SampleInfohashes, FindNode)
    assert not issubclass(FindNode, SampleInfohashes)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_is_frozen_slotted_and_keyword_only(cls: type[Envelope]) -> None:
    message = _build(cls)
    for klass in cls.__mro__[:-1]:  # object aside
        assert "__slots__" in vars(klass), klass
        params = vars(klass)["__dataclass_params__"]
        assert params.frozen, klass
    assert not hasattr(message, "__dict__")
    assert all(field.kw_only for field in dataclasses.fields(cls))
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.transaction_id = b"other"


@pytest.mark.parametrize("cls", NODE_CLASSES, ids=lambda cls: cls.__name__)
def test_extra_is_unhashed_and_fresh_per_message(cls: type[NodeMessage]) -> None:
    extra = next(field for field in dataclasses.fields(cls) if field.name == "extra")
    assert extra.hash is False
    assert extra.compare is True
    first, second = _build(cls), _build(cls)
    assert first.extra == {}
    assert first.extra is not second.extra


def test_method_and_known_stay_per_class() -> None:
    assert {cls.method: cls for cls in QUERY_TYPES.values()} == QUERY_TYPES
    assert FindNode.method == b"find_node"
    assert SampleInfohashes.method == b"sample_infohashes"
    assert all(b"id" in cls.known for cls in NODE_CLASSES)
    assert b"nodes" in Response.known
    assert b"nodes" not in Ping.known
    assert all(issubclass(cls, QueryBase) for cls in QUERY_TYPES.values())


# --- checks chain: the shared fields' in every class, then the class's own ---------------------


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize(
    "change",
    [
        {"transaction_id": "tx"},
        {"version": "LT01"},
        {"ip": "127.0.0.1:1"},
        {"read_only": 1},
    ],
    ids=["transaction_id", "version", "ip", "read_only"],
)
def test_shared_fields_are_checked_in_every_class(
    cls: type[Envelope], change: dict[str, Any]
) -> None:
    with pytest.raises(LocalProtocolError):
        _build(cls, **change)


@pytest.mark.parametrize("cls", NODE_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize(
    "change",
    [{"node_id": b"short"}, {"extra": {b"id": ID}}, {"extra": [(b"x", 1)]}],
    ids=["node_id", "extra-known-key", "extra-not-a-mapping"],
)
def test_node_fields_are_checked_in_every_node_message(
    cls: type[NodeMessage], change: dict[str, Any]
) -> None:
    with pytest.raises(LocalProtocolError):
        _build(cls, **change)


@pytest.mark.parametrize("cls", list(BAD_OWN), ids=lambda cls: cls.__name__)
def test_own_fields_are_still_checked(cls: type[Envelope]) -> None:
    _build(cls)  # valid as it is
    with pytest.raises(LocalProtocolError):
        _build(cls, **BAD_OWN[cls])


def test_error_reply_still_normalises_known_codes() -> None:
    assert _build(ErrorReply, code=202).code is ErrorCode.SERVER
    assert type(_build(ErrorReply, code=999).code) is int


# --- the shared fields behave alike everywhere (hypothesis) ------------------------------------

ports = st.integers(0, 0xFFFF)
addresses = st.builds(PeerAddress, st.integers(0, 2**32 - 1).map(IPv4Address), ports) | st.builds(
    PeerAddress, st.integers(0, 2**128 - 1).map(IPv6Address), ports
)
shared = st.fixed_dictionaries(
    {
        "transaction_id": st.binary(max_size=8),
        "version": st.none() | st.binary(max_size=4),
        "ip": st.none() | addresses,
        "read_only": st.booleans(),
    }
)


@settings(max_examples=200, deadline=None)
@given(cls=st.sampled_from(CLASSES), common=shared, other=shared)
def test_shared_fields_round_trip_and_compare_in_every_class(
    cls: type[Envelope], common: dict[str, Any], other: dict[str, Any]
) -> None:
    message = _build(cls, **common)
    for name, value in common.items():
        assert getattr(message, name) == value
    decoded = decode_message(message.encode())
    assert type(decoded) is cls
    assert decoded == message
    assert hash(decoded) == hash(message)
    twin = _build(cls, **other)
    assert (twin == message) == (common == other)
    assert dataclasses.replace(message, **other) == twin
    if isinstance(message, NodeMessage):
        # extra is compared but not hashed: same hash, different message.
        with_extra = _build(cls, **common, extra={b"zz": [1]})
        assert hash(with_extra) == hash(message)
        assert with_extra != message
