"""What a DHT node saves across restarts, and the strict reading of it back.

:meth:`~bip_dht._node.DHTNode.save_state` gives one bencoded dictionary:

- ``v``: the format version (1);
- ``id``: our node id (20 bytes);
- ``tables``: each family's :meth:`~bip_dht.RoutingTable.save` bytes (its nodes, to ping);
- ``bootstrap``: the bootstrap addresses, each in compact form (6 or 18 bytes).

State files come from disk, which may be damaged or edited: :func:`decode_state` checks every
field and bounds every size before it allocates, and raises
:class:`~bip_dht.RoutingStateError` (a :class:`~bip_dht.DHTError`) for anything malformed.
Unknown keys are ignored, for newer versions.

>>> from bip_handshake import PeerAddress
>>> data = encode_state(NodeId(bytes(20)), [], [PeerAddress.parse("10.0.0.1:6881")])
>>> decode_state(data, max_bootstrap=8).bootstrap
(PeerAddress(host=IPv4Address('10.0.0.1'), port=6881),)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bip_bencode import BencodeError, decode, encode
from bip_handshake import Family, PeerAddress

from ._errors import LocalProtocolError
from ._node_id import NodeId
from ._routing import RoutingStateError

__all__ = ["STATE_VERSION", "SavedState", "decode_state", "encode_state"]

STATE_VERSION = 1
# A saved table holds at most 160 buckets of 2 * k nodes (k <= 64) of 38 bytes.
_MAX_TABLE_BYTES = 160 * 2 * 64 * 38 + 256


@dataclass(frozen=True, slots=True)
class SavedState:
    """A decoded state: the id, each family's saved table bytes, the bootstrap addresses."""

    node_id: NodeId
    tables: Mapping[Family, bytes]
    bootstrap: tuple[PeerAddress, ...]


def encode_state(
    node_id: NodeId, tables: Iterable[bytes], bootstrap: Iterable[PeerAddress]
) -> bytes:
    """The bencoded state (see the module docstring)."""
    return encode(
        {
            b"v": STATE_VERSION,
            b"id": node_id.value,
            b"tables": list(tables),
            b"bootstrap": [address.to_compact() for address in bootstrap],
        }
    )


def decode_state(data: bytes, *, max_bootstrap: int) -> SavedState:
    """Read :func:`encode_state` bytes back; keep at most *max_bootstrap* addresses.

    Raises:
        RoutingStateError: the bytes are not a valid state.
        LocalProtocolError: *data* is not bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"state is bytes, got {type(data).__name__}")
    limit = 2 * _MAX_TABLE_BYTES + max_bootstrap * 24 + 1024
    if len(data) > limit:
        raise RoutingStateError(f"node state is over {limit} bytes")
    try:
        top = decode(bytes(data))
    except BencodeError as exc:
        raise RoutingStateError(f"node state is not bencoded: {exc}") from None
    if not isinstance(top, dict):
        raise RoutingStateError("node state is not a dictionary")
    raw_id = top.get(b"id")
    if not isinstance(raw_id, bytes) or len(raw_id) != 20:
        raise RoutingStateError("node state 'id' is a 20-byte string")
    raw_tables = top.get(b"tables", [])
    if not isinstance(raw_tables, list) or len(raw_tables) > 2:
        raise RoutingStateError("node state 'tables' is a list of at most 2 tables")
    tables: dict[Family, bytes] = {}
    for blob in raw_tables:
        if not isinstance(blob, bytes):
            raise RoutingStateError("node state 'tables' holds byte strings")
        try:
            saved = decode(blob)
        except BencodeError:
            raise RoutingStateError("a saved table is not bencoded") from None
        family = saved.get(b"family") if isinstance(saved, dict) else None
        if family not in (4, 6) or isinstance(family, bool):
            raise RoutingStateError("a saved table has no family 4 or 6")
        if (4 if family == 4 else 6) in tables:
            raise RoutingStateError(f"node state has two IPv{family} tables")
        tables[4 if family == 4 else 6] = blob
    raw_boot = top.get(b"bootstrap", [])
    if not isinstance(raw_boot, list):
        raise RoutingStateError("node state 'bootstrap' is a list of compact addresses")
    addresses: list[PeerAddress] = []
    for compact in raw_boot[:max_bootstrap]:
        if not isinstance(compact, bytes) or len(compact) not in (6, 18):
            raise RoutingStateError("node state 'bootstrap' holds malformed addresses")
        addresses.append(PeerAddress.from_compact(compact))
    return SavedState(NodeId(raw_id), tables, tuple(addresses))
