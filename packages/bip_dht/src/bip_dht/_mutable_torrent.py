"""BEP 46: a torrent's current version, published as a BEP 44 mutable item.

A publisher signs, under its ed25519 key (and an optional salt), a mutable item whose value
is ``{"ih": <info-hash>}``; a new version of the torrent is a new item with a higher
``seq``. A consumer with the key and salt (a ``magnet:?xs=urn:btpk:...&s=...`` link,
bip_metainfo's :class:`~bip_metainfo.MutableTorrentLink`) looks the item up and downloads
the info-hash it names. The signature is checked when the item is read off the wire, so
a :class:`MutableTorrent` only ever names what the key's holder published.

BEP 46 predates v2 torrents and names a 20-byte info-hash: a v1 or hybrid torrent is
published by its v1 info-hash. A v2-only torrent has none, so its 32-byte v2 info-hash is
published and accepted instead (no 20-byte form could name it: a magnet link needs the
whole hash).

>>> value = mutable_torrent_value(InfoHash(v1=bytes(20)))
>>> value == {b"ih": bytes(20)}
True
"""

from __future__ import annotations

from dataclasses import dataclass

from bip_bencode import BencodeDecodeError, Value, decode
from bip_metainfo import InfoHash

from ._errors import ItemError
from ._items import MutableItem

__all__ = ["INFO_HASH_KEY", "MutableTorrent", "mutable_torrent_value"]

INFO_HASH_KEY = b"ih"
"""The key of a BEP 46 item's value dictionary that holds the info-hash."""

_V1_SIZE = 20
_V2_SIZE = 32


def mutable_torrent_value(info_hash: InfoHash) -> dict[bytes, Value]:
    """The value a BEP 46 publisher stores for ``info_hash``: ``{"ih": <hash>}``, the v1
    hash when there is one (a v1 or hybrid torrent), else the 32-byte v2 hash.

    Raises:
        TypeError: ``info_hash`` is not an :class:`~bip_metainfo.InfoHash`.
    """
    if not isinstance(info_hash, InfoHash):
        raise TypeError(f"info_hash: want an InfoHash, not {type(info_hash).__name__}")
    digest = info_hash.v1 if info_hash.v1 is not None else info_hash.v2
    assert digest is not None  # an InfoHash has at least one
    return {INFO_HASH_KEY: digest}


@dataclass(frozen=True, slots=True)
class MutableTorrent:
    """A torrent's version as its publisher signed it (BEP 46).

    Attributes:
        info_hash: the version's info-hash (v1 for a 20-byte ``ih``, v2 for 32 bytes).
        seq: the item's sequence number: a later version has a higher one.
        public_key: the publisher's ed25519 public key.
        salt: the item's salt (``b""``: none).
    """

    info_hash: InfoHash
    seq: int
    public_key: bytes
    salt: bytes = b""

    @classmethod
    def from_item(cls, item: MutableItem) -> MutableTorrent:
        """Read a BEP 46 item (already verified: a :class:`MutableItem` always is).

        Other keys beside ``ih`` are allowed and ignored, so a publisher may add its own.

        Raises:
            ItemError: the value is not a dictionary with an ``ih`` of 20 or 32 bytes.
        """
        try:
            value = decode(item.value)
        except BencodeDecodeError as error:  # pragma: no cover - MutableItem checked it
            raise ItemError(f"a mutable item's value is not bencoded: {error}") from None
        digest = value.get(INFO_HASH_KEY) if isinstance(value, dict) else None
        if not isinstance(digest, bytes) or len(digest) not in (_V1_SIZE, _V2_SIZE):
            raise ItemError(
                "not a BEP 46 torrent item: its value must be a dictionary whose 'ih' is a"
                " 20-byte (v1) or 32-byte (v2) info-hash"
            )
        info_hash = InfoHash(v1=digest) if len(digest) == _V1_SIZE else InfoHash(v2=digest)
        return cls(info_hash, item.seq, item.public_key, item.salt)
