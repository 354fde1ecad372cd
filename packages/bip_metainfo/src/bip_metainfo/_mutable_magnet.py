"""BEP 46 magnet links: a torrent named by its publisher's key instead of its info-hash.

``magnet:?xs=urn:btpk:<public key, 64 hex>&s=<salt, hex>`` names a BEP 44 mutable item in
the DHT, signed by the publisher, whose value names the torrent's current info-hash; a new
version of the torrent is a new item with a higher sequence number under the same key. This
module reads and writes such links; resolving one is the DHT's work (bip_dht's
``DHT.get_mutable_torrent``), after which :meth:`MutableTorrentLink.resolved` gives the
ordinary :class:`~bip_metainfo.MagnetLink` to download.

Reading is :class:`~bip_metainfo.MagnetLink`'s (the same tolerance of malformed optional
parameters, the same bounds, the same ``.<number>`` suffixes ignored: ``s.1`` is ``s``),
and the hints a download needs are kept: ``dn``, ``tr``, ``ws``, ``x.pe``, ``dht`` and
``so``. The key and the salt are never optional: a malformed one is always an error. Other
parameters (``xt`` among them: the DHT, not the link, says which version is current) are
dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import MagnetError
from ._infohash import InfoHash
from ._magnet import (
    _BTPK,
    _COMPONENT_SAFE,
    _PREFIX,
    MagnetLink,
    _ascii_lower,
    _format_endpoint,
    _format_range,
    _quote,
    _quote_words,
    _show,
    check_hints,
    parameter_key,
    read_parameters,
)

__all__ = ["MutableTorrentLink"]

_PUBLIC_KEY_SIZE = 32  # an ed25519 public key (BEP 44)
_MAX_SALT_SIZE = 64  # BEP 44's limit on a mutable item's salt
_HEX = re.compile(r"[0-9A-Fa-f]*")
_SALT = "s"  # BEP 46: the salt, in hex


@dataclass(frozen=True, slots=True)
class MutableTorrentLink:
    """A BEP 46 magnet link: the publisher's ed25519 public key and salt, plus hints.

    >>> key = "8543d3e6115f0f98c944077a4493dcd543e49c739fd998550a1f614ab36ed63e"
    >>> link = MutableTorrentLink.parse(f"magnet:?xs=urn:btpk:{key}&s=6e&dn=Nightly")
    >>> link.public_key.hex()[:8], link.salt, link.display_name
    ('8543d3e6', b'n', 'Nightly')
    >>> magnet = link.resolved(InfoHash(v1=bytes(20)))  # what the DHT said
    >>> magnet.info_hash.hex(), magnet.display_name
    ('0000000000000000000000000000000000000000', 'Nightly')
    >>> MutableTorrentLink.parse(str(link)) == link
    True

    Attributes:
        public_key: the publisher's 32-byte ed25519 public key (``xs=urn:btpk:``).
        salt: ``s``, up to 64 bytes that let one key publish several torrents (``b""``: none).
        display_name: ``dn``.
        trackers: ``tr`` and ``tr.N`` (http, https, udp, ws, wss), each its own tier.
        web_seeds: ``ws``, BEP 19 web seeds.
        peers: ``x.pe``, peers to ask for the metadata, as ``(host, port)``.
        dht_nodes: ``dht``, DHT nodes to bootstrap from (the key is looked up through them).
        select_only: BEP 53 ``so`` ranges, or None for every file (``()``: none).
    """

    public_key: bytes
    salt: bytes = b""
    display_name: str | None = None
    trackers: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    peers: tuple[tuple[str, int], ...] = ()
    dht_nodes: tuple[tuple[str, int], ...] = ()
    select_only: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        """Check every field can be written and read back, and normalise it.

        Raises:
            MagnetError: a value the link cannot carry (naming the parameter).
            TypeError: a field of the wrong type.
        """
        if not isinstance(self.public_key, bytes):
            raise TypeError(f"public_key: want bytes, not {type(self.public_key).__name__}")
        if len(self.public_key) != _PUBLIC_KEY_SIZE:
            raise MagnetError(
                "xs",
                f"an ed25519 public key is {_PUBLIC_KEY_SIZE} bytes, not {len(self.public_key)}",
            )
        if not isinstance(self.salt, bytes):
            raise TypeError(f"salt: want bytes, not {type(self.salt).__name__}")
        if len(self.salt) > _MAX_SALT_SIZE:
            raise MagnetError(
                _SALT, f"a salt is at most {_MAX_SALT_SIZE} bytes, not {len(self.salt)}"
            )
        normalised = check_hints(
            display_name=self.display_name,
            trackers=self.trackers,
            web_seeds=self.web_seeds,
            peers=self.peers,
            dht_nodes=self.dht_nodes,
            select_only=self.select_only,
        )
        for field, value in normalised.items():
            object.__setattr__(self, field, value)

    @classmethod
    def parse(cls, uri: str, *, strict: bool = False) -> MutableTorrentLink:
        """Read a BEP 46 link (see the module's notes; ``strict`` as
        :meth:`MagnetLink.parse`'s).

        Raises:
            MagnetError: the link is malformed as a magnet link, has no
                ``xs=urn:btpk:`` or two different keys, a key that is not 64 hex digits,
                or an ``s`` that is not hex or longer than 64 bytes.
            TypeError: ``uri`` is not a str.
        """
        parser = read_parameters(uri, strict=strict)
        keys = {
            _ascii_lower(source[len(_BTPK) :])
            for source in parser.texts["xs"]
            if _ascii_lower(source[: len(_BTPK)]) == _BTPK
        }
        if not keys:
            raise MagnetError("xs", "no publisher key (xs=urn:btpk:...): not a BEP 46 link")
        if len(keys) > 1:
            raise MagnetError("xs", "two different publisher keys (xs=urn:btpk:)")
        (key_text,) = keys
        if len(key_text) != 2 * _PUBLIC_KEY_SIZE or not _HEX.fullmatch(key_text):
            raise MagnetError(
                "xs", f"a urn:btpk: key is 64 hex digits (32 bytes), not {_show(key_text)}"
            )
        salts = {
            _ascii_lower(value) for name, value in parser.extra if parameter_key(name) == _SALT
        }
        if len(salts) > 1:
            raise MagnetError(_SALT, "two different salts")
        salt_text = salts.pop() if salts else ""
        if len(salt_text) % 2 or not _HEX.fullmatch(salt_text):
            raise MagnetError(_SALT, f"a salt is written in hex, not {_show(salt_text)}")
        link = cls(
            bytes.fromhex(key_text),
            salt=bytes.fromhex(salt_text),
            display_name=parser.display_name,
            trackers=tuple(parser.texts["tr"]),
            web_seeds=tuple(parser.texts["ws"]),
            peers=tuple(parser.endpoints["x.pe"]),
            dht_nodes=tuple(parser.endpoints["dht"]),
            select_only=None if parser.ranges is None else tuple(parser.ranges),
        )
        parser.log_skipped(f"key {key_text}")
        return link

    def to_uri(self) -> str:
        """Write the link: ``xs``, ``s``, ``dn``, ``tr``, ``ws``, ``x.pe``, ``dht``, ``so``,
        in that order, escaped as :meth:`MagnetLink.to_uri` escapes them."""
        parts = [f"xs={_BTPK}{self.public_key.hex()}"]
        if self.salt:
            parts.append(f"{_SALT}={self.salt.hex()}")
        if self.display_name is not None:
            parts.append(f"dn={_quote_words(self.display_name)}")
        parts.extend(f"tr={_quote(url, _COMPONENT_SAFE)}" for url in self.trackers)
        parts.extend(f"ws={_quote(url, _COMPONENT_SAFE)}" for url in self.web_seeds)
        parts.extend(f"x.pe={_format_endpoint(peer)}" for peer in self.peers)
        parts.extend(f"dht={_format_endpoint(node)}" for node in self.dht_nodes)
        if self.select_only is not None:
            parts.append("so=" + ",".join(_format_range(r) for r in self.select_only))
        return _PREFIX + "&".join(parts)

    def __str__(self) -> str:
        """The link as a URI: see :meth:`to_uri`."""
        return self.to_uri()

    def resolved(self, info_hash: InfoHash) -> MagnetLink:
        """The ordinary magnet link of the version ``info_hash`` (what the DHT item names):
        this link's hints, with its key (``xs``) and salt (``s``) so that the origin is not lost.

        Raises:
            TypeError: ``info_hash`` is not an :class:`~bip_metainfo.InfoHash`.
        """
        if not isinstance(info_hash, InfoHash):
            raise TypeError(f"info_hash: want an InfoHash, not {type(info_hash).__name__}")
        return MagnetLink(
            info_hash,
            display_name=self.display_name,
            trackers=self.trackers,
            web_seeds=self.web_seeds,
            exact_sources=(f"{_BTPK}{self.public_key.hex()}",),
            peers=self.peers,
            dht_nodes=self.dht_nodes,
            select_only=self.select_only,
            extra=((_SALT, self.salt.hex()),) if self.salt else (),
        )
