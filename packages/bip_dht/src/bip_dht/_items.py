"""BEP 44 items: arbitrary data stored in the DHT, immutable or signed and mutable.

- An immutable item is a bencoded value ``v``; its target is ``SHA-1(v)``.
- A mutable item is ``v`` signed with an ed25519 key ``k`` under a sequence number ``seq``
  and an optional ``salt``; its target is ``SHA-1(k + salt)``. The signature covers
  exactly ``[4:salt<len>:<salt>]3:seqi<seq>e1:v<v>`` (the salt part only when the salt is
  not empty). A node keeps the highest ``seq`` it has seen; ``cas`` makes a put conditional
  on the stored ``seq`` (compare-and-swap).

Limits (BEP 44): ``v`` at most 1000 bytes bencoded, ``salt`` at most 64 bytes, ``seq`` in
0 .. 2**63 - 1 (the BEP allows rejecting negative numbers and says not to exceed this).

API (sans-IO: time is passed in as ``now``):

- :func:`immutable_target`, :func:`mutable_target`, :func:`signed_buffer`,
  :func:`sign`, :func:`verify_signature` -- the primitives.
- :class:`ImmutableItem` ``(value)`` and :class:`MutableItem` ``(value, public_key, seq,
  signature, salt=b"")`` -- frozen and checked on construction (the signature too), so an
  item object is always valid; :meth:`MutableItem.create` signs with an
  ``Ed25519PrivateKey``; ``.target`` gives the 20-byte target. ``value`` is the bencoded
  bytes of ``v`` exactly as on the wire (the signature covers those bytes).
- :class:`ItemStore` ``(max_items=700, lifetime=7200.0, node_id=None)`` -- what a node
  stores for others: ``put(item, now, cas=None, source=None)``, ``get(target, now)``,
  ``expire(now)``, ``len()``; ``node_id`` (settable: the node sets it again when its id
  changes). At most ``max_items`` items, each kept ``lifetime`` seconds after its last put
  (libtorrent: 700 and 2 hours). When full, a new target evicts the least important item,
  scored as libtorrent's ``immutable_item_comparator`` does: popularity (distinct source
  IPs, counted up to 8) less distance, where each bit of the XOR distance between the target
  and our id weighs as much as five sources. Honest puts go to the nodes closest to their
  target, so the items near our id are the ones we are meant to keep; a flood of puts to
  random targets (mostly 158 or 159 bits away) cannot evict them without grinding targets
  near our id. Among equal scores the most recently *stored* (first put, not refreshed)
  goes first, so a flood of one-off puts churns among itself while items stored earlier,
  and refreshed by their owners, stay.
- :class:`ItemRejectedError` (an :class:`~bip_dht._errors.ItemError`) with ``.code`` an
  :class:`ItemProblem`, whose values are the KRPC error codes to answer with (203, 205,
  206, 207, 301, 302).

>>> item = ImmutableItem(b"12:Hello World!")
>>> item.target.hex()
'e5f96f6f38320f0f33959cb4d3d656452117aadb'
>>> signed_buffer(b"12:Hello World!", 1, b"foobar")
b'4:salt6:foobar3:seqi1e1:v12:Hello World!'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bip_bencode import BencodeDecodeError, decode

from ._errors import ItemError, LocalProtocolError
from ._ip import unmapped_ip

__all__ = [
    "DEFAULT_ITEM_LIFETIME",
    "DEFAULT_MAX_ITEMS",
    "MAX_SALT_SIZE",
    "MAX_SEQ",
    "MAX_VALUE_SIZE",
    "ImmutableItem",
    "ItemProblem",
    "ItemRejectedError",
    "ItemStore",
    "MutableItem",
    "immutable_target",
    "mutable_target",
    "sign",
    "signed_buffer",
    "verify_signature",
]

MAX_VALUE_SIZE = 1000
"""The largest bencoded ``v`` of a BEP 44 item, in bytes (BEP 44: 1000; error 205 above)."""

MAX_SALT_SIZE = 64
"""The longest salt of a BEP 44 mutable item, in bytes (BEP 44: 64; error 207 above)."""

MAX_SEQ = 2**63 - 1
"""The largest sequence number of a mutable item (a signed 64-bit integer, as libtorrent)."""

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
DEFAULT_MAX_ITEMS = 700
"""How many BEP 44 items an :class:`ItemStore` keeps by default (libtorrent's
``dht_max_dht_items``)."""

DEFAULT_ITEM_LIFETIME = 2 * 60 * 60.0
"""Seconds a stored BEP 44 item lives without being put again (BEP 44: about two hours)."""


class ItemProblem(IntEnum):
    """Why an item or a put was refused; each value is the KRPC error code to reply with."""

    INVALID = 203
    VALUE_TOO_BIG = 205
    INVALID_SIGNATURE = 206
    SALT_TOO_BIG = 207
    CAS_MISMATCH = 301
    SEQUENCE_TOO_LOW = 302


class ItemRejectedError(ItemError):
    """An item is invalid or a put conflicts with the stored one.

    >>> ImmutableItem(b"x" * 1001)
    Traceback (most recent call last):
    ...
    bip_dht._items.ItemRejectedError: v is 1001 bytes bencoded, more than 1000

    Attributes:
        code: what went wrong, as the KRPC error code to answer the put with.
    """

    def __init__(self, code: ItemProblem, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes):
        raise ItemRejectedError(ItemProblem.INVALID, f"{name} is bytes, got {type(value).__name__}")
    return value


def _check_value(value: object) -> bytes:
    raw = _check_bytes("v", value)
    if len(raw) > MAX_VALUE_SIZE:
        raise ItemRejectedError(
            ItemProblem.VALUE_TOO_BIG, f"v is {len(raw)} bytes bencoded, more than {MAX_VALUE_SIZE}"
        )
    try:
        decode(raw)
    except BencodeDecodeError as error:
        raise ItemRejectedError(ItemProblem.INVALID, f"v is not valid bencoding: {error}") from None
    return raw


def _check_salt(salt: object) -> bytes:
    raw = _check_bytes("salt", salt)
    if len(raw) > MAX_SALT_SIZE:
        raise ItemRejectedError(
            ItemProblem.SALT_TOO_BIG, f"salt is {len(raw)} bytes, more than {MAX_SALT_SIZE}"
        )
    return raw


def _check_seq(seq: object) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ItemRejectedError(ItemProblem.INVALID, f"seq is an int, got {seq!r}")
    if not 0 <= seq <= MAX_SEQ:
        raise ItemRejectedError(ItemProblem.INVALID, f"seq is in 0..2**63-1, got {seq}")
    return seq


def immutable_target(value: bytes) -> bytes:
    """The target of an immutable item: SHA-1 of its bencoded value."""
    return hashlib.sha1(value).digest()


def mutable_target(public_key: bytes, salt: bytes = b"") -> bytes:
    """The target of a mutable item: SHA-1 of the public key followed by the salt.

    >>> mutable_target(bytes(32)).hex() == hashlib.sha1(bytes(32)).hexdigest()
    True
    """
    return hashlib.sha1(public_key + salt).digest()


def signed_buffer(value: bytes, seq: int, salt: bytes = b"") -> bytes:
    """The bytes a mutable item's signature covers (BEP 44).

    ``value`` is the bencoded ``v``; the salt part is left out when the salt is empty.

    >>> signed_buffer(b"12:Hello World!", 1)
    b'3:seqi1e1:v12:Hello World!'
    """
    salt_part = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    return b"%s3:seqi%de1:v%s" % (salt_part, seq, value)


def sign(private_key: Ed25519PrivateKey, value: bytes, seq: int, salt: bytes = b"") -> bytes:
    """The 64-byte ed25519 signature of a mutable item."""
    return private_key.sign(signed_buffer(value, seq, salt))


def verify_signature(
    public_key: bytes, signature: bytes, value: bytes, seq: int, salt: bytes = b""
) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of the item; never raises."""
    if not (isinstance(public_key, bytes) and len(public_key) == PUBLIC_KEY_SIZE):
        return False
    if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_SIZE):
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
        key.verify(signature, signed_buffer(value, seq, salt))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class ImmutableItem:
    """An immutable BEP 44 item: a bencoded value, found by its SHA-1.

    Attributes:
        value: the bencoded ``v`` (valid bencoding, at most 1000 bytes).
    """

    value: bytes

    def __post_init__(self) -> None:
        _check_value(self.value)

    @property
    def target(self) -> bytes:
        """SHA-1 of the bencoded value."""
        return immutable_target(self.value)


@dataclass(frozen=True, slots=True)
class MutableItem:
    """A signed, mutable BEP 44 item; construction checks every limit and the signature.

    Attributes:
        value: the bencoded ``v`` (valid bencoding, at most 1000 bytes).
        public_key: the 32-byte ed25519 public key ``k``.
        seq: the sequence number, 0 to 2**63 - 1; a newer version has a higher one.
        signature: the 64-byte ed25519 signature of :func:`signed_buffer`.
        salt: up to 64 bytes that let one key publish several items (``b""``: none).
    """

    value: bytes
    public_key: bytes
    seq: int
    signature: bytes
    salt: bytes = b""

    def __post_init__(self) -> None:
        _check_value(self.value)
        _check_salt(self.salt)
        _check_seq(self.seq)
        if not (isinstance(self.public_key, bytes) and len(self.public_key) == PUBLIC_KEY_SIZE):
            raise ItemRejectedError(ItemProblem.INVALID, "k is a 32-byte ed25519 public key")
        if not (isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_SIZE):
            raise ItemRejectedError(
                ItemProblem.INVALID_SIGNATURE, "sig is a 64-byte ed25519 signature"
            )
        if not verify_signature(self.public_key, self.signature, self.value, self.seq, self.salt):
            raise ItemRejectedError(ItemProblem.INVALID_SIGNATURE, "the signature does not verify")

    @classmethod
    def create(
        cls, private_key: Ed25519PrivateKey, value: bytes, seq: int, salt: bytes = b""
    ) -> MutableItem:
        """Sign ``value`` (bencoded) as version ``seq`` under ``private_key``.

        >>> key = Ed25519PrivateKey.from_private_bytes(bytes(32))
        >>> item = MutableItem.create(key, b"i5e", seq=3, salt=b"s")
        >>> item.target == mutable_target(item.public_key, b"s")
        True
        """
        if not isinstance(private_key, Ed25519PrivateKey):
            raise LocalProtocolError(
                f"a mutable item is signed with an Ed25519PrivateKey, got {private_key!r}"
            )
        _check_value(value)
        _check_salt(salt)
        _check_seq(seq)
        public_key = private_key.public_key().public_bytes_raw()
        return cls(value, public_key, seq, sign(private_key, value, seq, salt), salt)

    @property
    def target(self) -> bytes:
        """SHA-1 of the public key followed by the salt."""
        return mutable_target(self.public_key, self.salt)


Item = ImmutableItem | MutableItem


# Distinct source IPs remembered per item: enough to rank popularity, bounded in memory.
_MAX_SOURCES = 8


# Sources worth one bit of distance in the eviction score (libtorrent's num_announcers / 5).
_SOURCES_PER_BIT = 5


def _distance_exp(target: bytes, node_id: bytes | None) -> int:
    """libtorrent's ``distance_exp``: the bit length of the XOR distance less one (0 to 159);
    0 for every target while we know no id of ours (popularity alone then decides)."""
    if node_id is None:
        return 0
    return max((int.from_bytes(target, "big") ^ int.from_bytes(node_id, "big")).bit_length() - 1, 0)


class _Stored:
    __slots__ = ("born", "distance", "item", "sources", "stored_at")

    def __init__(
        self, item: Item, stored_at: float, sources: frozenset[bytes], distance: int, born: int
    ) -> None:
        self.item = item
        self.stored_at = stored_at
        self.sources = sources
        self.distance = distance  # _distance_exp(target, our id), kept for eviction
        self.born = born  # the store's count of new targets when this one came: its age rank

    def keep_score(self) -> tuple[int, int]:
        """Eviction order: the smallest goes first (see the module docstring)."""
        return (len(self.sources) - _SOURCES_PER_BIT * self.distance, -self.born)


class ItemStore:
    """The BEP 44 items a node stores for others, bounded in count and in time.

    Memory is bounded: at most ``max_items`` items of at most about 1,200 bytes each.

    >>> store = ItemStore(max_items=2)
    >>> item = ImmutableItem(b"3:abc")
    >>> store.put(item, now=0.0)
    >>> store.get(item.target, now=60.0) == item
    True
    >>> store.get(item.target, now=7201.0) is None
    True

    Args:
        max_items: how many items at most.
        lifetime: seconds an item is kept after its last put.
        node_id: our node id (20 bytes), or None while unknown: eviction keeps the items
            nearest it (see the module docstring).

    Attributes:
        max_items: how many items at most.
        lifetime: seconds an item is kept after its last put.
    """

    __slots__ = ("_born", "_items", "_node_id", "lifetime", "max_items")

    def __init__(
        self,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        lifetime: float = DEFAULT_ITEM_LIFETIME,
        node_id: bytes | None = None,
    ) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise LocalProtocolError(f"max_items is a positive int, got {max_items!r}")
        if not lifetime > 0:
            raise LocalProtocolError(f"lifetime must be positive, got {lifetime}")
        self.max_items = max_items
        self.lifetime = float(lifetime)
        # Insertion order is the order of last puts: a put moves its item to the end, so the
        # front holds the next to expire.
        self._items: dict[bytes, _Stored] = {}
        self._born = 0
        self._node_id: bytes | None = None
        self.node_id = node_id

    @property
    def node_id(self) -> bytes | None:
        """Our node id, which eviction measures distances from (None: unknown)."""
        return self._node_id

    @node_id.setter
    def node_id(self, value: bytes | None) -> None:
        if value is not None and not (isinstance(value, bytes) and len(value) == 20):
            raise LocalProtocolError(f"node_id is 20 bytes or None, got {value!r}")
        self._node_id = value
        for target, stored in self._items.items():
            stored.distance = _distance_exp(target, value)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, target: object) -> bool:
        return target in self._items

    def get(self, target: bytes, now: float) -> Item | None:
        """The live item stored under ``target``, or None."""
        stored = self._items.get(target)
        if stored is None:
            return None
        if now - stored.stored_at >= self.lifetime:
            del self._items[target]
            return None
        return stored.item

    def put(
        self,
        item: Item,
        now: float,
        cas: int | None = None,
        source: IPv4Address | IPv6Address | None = None,
    ) -> None:
        """Store (or refresh) ``item``; raise :class:`ItemRejectedError` if the put must be refused.

        ``source`` is the IP the put came from (the node checked its token); distinct
        sources make an item popular, which protects it from eviction when the store is full.

        For a mutable item already stored under the same target: ``cas`` (when given) must
        equal the stored ``seq`` (else CAS_MISMATCH); a lower ``seq`` than the stored one is
        SEQUENCE_TOO_LOW, and so is the same ``seq`` with a different value (the signer
        must bump ``seq`` to change ``v``); the same ``seq`` and value only refreshes the
        item's lifetime. A ``cas`` with nothing stored is accepted (there is nothing to
        compare with), as libtorrent does. Nothing changes when a put is refused.
        """
        if not isinstance(item, ImmutableItem | MutableItem):
            raise LocalProtocolError(
                f"an ItemStore holds ImmutableItem or MutableItem, got {item!r}"
            )
        if cas is not None and (isinstance(cas, bool) or not isinstance(cas, int)):
            raise ItemRejectedError(ItemProblem.INVALID, f"cas is an int, got {cas!r}")
        source_key = None if source is None else unmapped_ip(source, "a put's source").packed
        target = item.target
        existing = self.get(target, now)
        if isinstance(item, MutableItem) and isinstance(existing, MutableItem):
            if cas is not None and cas != existing.seq:
                raise ItemRejectedError(
                    ItemProblem.CAS_MISMATCH, f"cas {cas} but the stored seq is {existing.seq}"
                )
            if item.seq < existing.seq or (item.seq == existing.seq and item != existing):
                raise ItemRejectedError(
                    ItemProblem.SEQUENCE_TOO_LOW,
                    f"seq {item.seq} is not newer than the stored {existing.seq}",
                )
        elif existing is not None and type(existing) is not type(item):
            # The kinds meet only when k + salt are the very bytes of v: a signer who grinds
            # keys until one reads as a bencoded prefix could try to shadow an immutable item.
            raise ItemRejectedError(ItemProblem.INVALID, "an item of another kind has this target")
        sources: frozenset[bytes] = frozenset()
        if existing is not None:
            kept = self._items.pop(target)
            sources, born = kept.sources, kept.born
        else:
            self._expire_front(now)
            while len(self._items) >= self.max_items:
                del self._items[self._least_important()]
            self._born += 1
            born = self._born
        if source_key is not None and len(sources) < _MAX_SOURCES:
            sources = sources | {source_key}
        distance = _distance_exp(target, self._node_id)
        self._items[target] = _Stored(item, now, sources, distance, born)

    def _least_important(self) -> bytes:
        # A scan of at most max_items entries, run only when a new target meets a full store.
        items = self._items
        return min(items, key=lambda target: items[target].keep_score())

    def _expire_front(self, now: float) -> int:
        removed = 0
        while self._items:
            target = next(iter(self._items))
            if now - self._items[target].stored_at < self.lifetime:
                break
            del self._items[target]
            removed += 1
        return removed

    def expire(self, now: float) -> int:
        """Drop every item not put again within ``lifetime``; return how many."""
        return self._expire_front(now)

    def targets(self) -> list[bytes]:
        """The targets stored (live or not yet expired by :meth:`expire`), oldest put first."""
        return list(self._items)
