"""Metainfo: a whole .torrent file (BEP 3, 5, 12, 17, 19, 27, 38, 47, 52)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from bip_bencode import BencodeDecodeError, Document, decode_prefix, encode

from ._errors import MagnetError, MetainfoError, MetainfoErrorKind
from ._files import FileEntry
from ._info import _MAX_INFO_DEPTH, DEFAULT_MAX_FILES, DEFAULT_MAX_PIECES, Info
from ._magnet import MagnetLink, _is_tracker_url, fits
from ._merkle import verify_piece_layer
from ._tokens import check_value_count

__all__ = ["DEFAULT_MAX_TORRENT_SIZE", "MAX_URLS", "Metainfo"]

K = MetainfoErrorKind

# Soft problems tolerated in torrents from the wild, at DEBUG, at most one record of each kind
# per torrent; the info dictionary's are logged by _info under the same name.
_log = logging.getLogger("bip_metainfo.torrent")

DEFAULT_MAX_TORRENT_SIZE = 100 * 1024 * 1024
"""The largest .torrent file read by default (v2 piece layers make big ones)."""

MAX_URLS = 1000
"""The most tracker URLs (``announce-list``), web seeds, HTTP seeds or DHT nodes kept of
one torrent; the rest are dropped (and of web seeds and HTTP seeds, no more than ten times
as many distinct entries are looked at). Real torrents list a few dozen at most; thousands
only cost memory and time, and would make every client of a hostile torrent announce to
thousands of hosts of its author's choosing."""

# The most distinct entries of a web seed list looked at. MAX_URLS bounds what is kept, but
# entries that are no URL (or repeat one once escaped) are never kept, and each costs an
# escape: a 10 MB list of them took seconds (libtorrent: a tenth of one). Ten times what can
# be kept leaves room for any real torrent's junk.
_MAX_URL_ENTRIES = 10 * MAX_URLS

# Bencode nesting: a v2 file tree nests one level per directory. One level more than a bare
# info dictionary may nest (Info.from_bytes), for the top-level dictionary holding it.
_MAX_DEPTH = _MAX_INFO_DEPTH + 1


class Metainfo:
    """A .torrent file: the info dictionary plus trackers, web seeds and the rest.

    >>> from bip_bencode import encode
    >>> info = {"name": "x", "piece length": 16384, "length": 5, "pieces": bytes(20)}
    >>> torrent = Metainfo.from_bytes(encode({"announce": "udp://t.example:80", "info": info}))
    >>> torrent.info.name, torrent.trackers
    ('x', (('udp://t.example:80',),))

    Attributes:
        raw: the file's bytes up to the end of its top-level dictionary (anything
            after it is ignored, as libtorrent ignores it).
        fields: the decoded top-level dictionary, unknown keys included.
        info: the parsed info dictionary (files, pieces, info-hash).
        announce: the BEP 3 ``announce`` URL, if any.
        announce_list: the BEP 12 tiers, in order, without empty URLs.
        url_list: BEP 19 web seeds (``url-list``, a string or a list).
        httpseeds: BEP 17 HTTP seeds.
        nodes: BEP 5 DHT bootstrap nodes as ``(host, port)``.
        comment: the free-text comment.
        created_by: the program that made the torrent.
        creation_date: seconds since the epoch, if given.
        encoding: the legacy ``encoding`` field (names are read as UTF-8 anyway).
        similar: top-level BEP 38 ``similar`` info-hashes (20 bytes each).
        collections: top-level BEP 38 ``collections`` names.
        piece_layers: BEP 52 piece layers, keyed by ``pieces root``; each was
            checked against its root.
    """

    __slots__ = (
        "announce",
        "announce_list",
        "collections",
        "comment",
        "created_by",
        "creation_date",
        "encoding",
        "fields",
        "httpseeds",
        "info",
        "nodes",
        "piece_layers",
        "raw",
        "similar",
        "url_list",
    )

    def __init__(
        self,
        data: bytes,
        *,
        max_pieces: int = DEFAULT_MAX_PIECES,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        """Parse and validate a .torrent file's bytes (see :meth:`from_bytes`)."""
        check_value_count(data)  # before decoding builds an object per value
        try:
            # Bytes after the top-level dictionary are ignored, as libtorrent does
            # (real .torrent files end in a stray newline or worse).
            value, end = decode_prefix(data, lenient=True, max_depth=_MAX_DEPTH)
        except BencodeDecodeError as error:
            raise MetainfoError(K.INVALID_BENCODING, str(error)) from None
        if type(value) is not dict:
            raise MetainfoError(K.NOT_A_DICT, "the torrent is not a dictionary")
        document = Document(data[:end], value)
        fields: dict[bytes, Any] = value
        if type(fields.get(b"info")) is not dict:
            raise MetainfoError(K.MISSING_INFO, "no 'info' dictionary")
        self.raw = document.data
        self.fields = fields
        self.info = Info(
            document.raw(b"info"), fields[b"info"], max_pieces=max_pieces, max_files=max_files
        )
        if end < len(data):
            _log.debug(
                "torrent %s: ignored %d bytes after its dictionary",
                self.info.info_hash,
                len(data) - end,
            )
        self.piece_layers = _piece_layers(fields, self.info)

        self.announce = (_text(fields.get(b"announce")) or "").lstrip() or None
        self.announce_list = _tiers(fields.get(b"announce-list"))
        # BEP 19: a multi-file torrent's web seed names a directory.
        directory = len([entry for entry in self.info.files if not entry.is_pad]) > 1
        self.url_list = _urls(fields.get(b"url-list"), directory=directory)
        self.httpseeds = _urls(fields.get(b"httpseeds"), directory=False)
        self.nodes = _nodes(fields.get(b"nodes"))
        self.comment = _text(_first(fields, b"comment.utf-8", b"comment"))
        self.created_by = _text(fields.get(b"created by"))
        date = fields.get(b"creation date")
        self.creation_date = date if type(date) is int and date >= 0 else None
        self.encoding = _text(fields.get(b"encoding"))
        similar = fields.get(b"similar")
        self.similar = tuple(
            item for item in (similar if type(similar) is list else ()) if _is_sha1(item)
        )
        collections = fields.get(b"collections")
        self.collections = tuple(
            item.decode("utf-8", "replace")
            for item in (collections if type(collections) is list else ())
            if type(item) is bytes
        )

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        max_pieces: int = DEFAULT_MAX_PIECES,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> Metainfo:
        """Parse a .torrent file from its bytes.

        Raises:
            MetainfoError: the torrent is malformed, or holds more than ``max_pieces``
                pieces or ``max_files`` files; its ``kind`` says how.
        """
        return cls(bytes(data), max_pieces=max_pieces, max_files=max_files)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        max_size: int = DEFAULT_MAX_TORRENT_SIZE,
        max_pieces: int = DEFAULT_MAX_PIECES,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> Metainfo:
        """Read and parse a .torrent file, refusing one larger than ``max_size`` bytes.

        Raises:
            MetainfoError: the torrent is malformed or too large.
            OSError: the file cannot be read.
        """
        with open(path, "rb") as file:
            data = file.read(max_size + 1)
        if len(data) > max_size:
            raise MetainfoError(K.TOO_LARGE, f"{os.fspath(path)!r} is larger than {max_size} bytes")
        return cls(data, max_pieces=max_pieces, max_files=max_files)

    def to_bytes(self) -> bytes:
        """Bencode the torrent, with the info dictionary's original bytes unchanged.

        Every other field is written canonically (sorted keys), so the result may
        differ from :attr:`raw` outside the info dictionary, but the info-hash never
        changes.
        """
        parts = [b"d"]
        for key in sorted(self.fields):
            parts.append(b"%d:%s" % (len(key), key))
            parts.append(self.info.raw if key == b"info" else encode(self.fields[key]))
        parts.append(b"e")
        return b"".join(parts)

    @property
    def trackers(self) -> tuple[tuple[str, ...], ...]:
        """Tracker tiers: ``announce-list`` if it has any URL, else ``announce`` alone."""
        if self.announce_list:
            return self.announce_list
        return ((self.announce,),) if self.announce else ()

    @property
    def files(self) -> tuple[FileEntry, ...]:
        """The torrent's files (:attr:`Info.files`)."""
        return self.info.files

    def magnet(self, *, select_only: Iterable[int | tuple[int, int]] | None = None) -> MagnetLink:
        """The magnet link for this torrent: its info-hash(es), name, trackers and web seeds.

        ``select_only`` (BEP 53) takes file indices and inclusive ``(first, last)``
        ranges; None selects every file and writes no ``so``, an empty one none
        (``so=``). Trackers a magnet link
        cannot carry (not http, https, udp, ws or wss, as torrents in the wild have) are
        left out, as a magnet reader would drop them.

        The link's URI is always one :meth:`MagnetLink.parse` reads back: within
        :attr:`MagnetLink.MAX_LENGTH` characters and :attr:`MagnetLink.MAX_PARAMETERS`
        parameters. A torrent with more trackers and web seeds than that holds (a
        thousand long URLs) keeps the first ones that fit, trackers before web seeds.

        Raises:
            MagnetError: ``select_only`` names a file past
                :attr:`MagnetLink.MAX_FILE_INDEX` (which libtorrent would skip), or alone
                makes the link too long.
        """
        ranges = None if select_only is None else list(select_only)
        trackers = [url for tier in self.trackers for url in tier if _is_tracker_url(url)]
        web_seeds = self.url_list

        def link(urls: int) -> MagnetLink:
            return MagnetLink.from_info_hash(
                self.info.info_hash,
                display_name=self.info.name,
                trackers=trackers[:urls],
                web_seeds=web_seeds[: max(0, urls - len(trackers))],
                select_only=ranges,
            )

        low, high = 0, len(trackers) + len(web_seeds)
        whole = link(high)
        if fits(whole):
            return whole
        if not fits(link(0)):
            raise MagnetError("so", "the selected files make the link too long to be read back")
        while low < high:  # the most URLs that fit: a few dozen links made at most
            middle = (low + high + 1) // 2
            if fits(link(middle)):
                low = middle
            else:
                high = middle - 1
        _log.debug(
            "torrent %s: its magnet link keeps %d of its %d trackers and web seeds",
            self.info.info_hash,
            low,
            len(trackers) + len(web_seeds),
        )
        return link(low)

    def piece_layer(self, file_index: int) -> bytes | None:
        """The verified BEP 52 piece layer of a file, or None if the torrent lacks it."""
        root = self.info.files[file_index].pieces_root
        return None if root is None else self.piece_layers.get(root)

    def __repr__(self) -> str:
        """A short description: name, size, version."""
        return f"<Metainfo {self.info!r}>"


def _first(fields: Mapping[bytes, Any], *keys: bytes) -> Any:
    for key in keys:
        if key in fields:
            return fields[key]
    return None


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if type(value) is bytes else None


def _is_sha1(value: Any) -> bool:
    return type(value) is bytes and len(value) == 20


def _tiers(value: Any) -> tuple[tuple[str, ...], ...]:
    """BEP 12 tiers: leading spaces stripped, empty URLs, empty tiers and repeats dropped."""
    if type(value) is not list:
        return ()
    seen: set[str] = set()
    tiers = []
    for tier in value:
        if len(seen) >= MAX_URLS:
            break
        if type(tier) is not list:
            continue
        urls = []
        for item in tier:
            if len(seen) >= MAX_URLS:
                break
            url = (_text(item) or "").lstrip()
            if url and url not in seen:
                seen.add(url)
                urls.append(url)
        if urls:
            tiers.append(tuple(urls))
    return tuple(tiers)


def _urls(value: Any, *, directory: bool) -> tuple[str, ...]:
    """Web seed URLs (a string or a list), escaped, each once; directories end in '/'.

    Each distinct entry is escaped once, and no more than ``_MAX_URL_ENTRIES`` of them
    are: a repeated entry costs a set lookup, not an escape.
    """
    items = [value] if type(value) is bytes else value if type(value) is list else []
    unique: dict[str, None] = {}
    looked_at: set[bytes] = set()
    for item in items:
        if len(unique) >= MAX_URLS or len(looked_at) >= _MAX_URL_ENTRIES:
            break
        if type(item) is not bytes or not item or item in looked_at:
            continue
        looked_at.add(item)
        url = _escape_url(item.decode("utf-8", "replace"))
        if url is None:
            continue
        if directory and not url.endswith("/"):
            url += "/"
        unique.setdefault(url, None)
    return tuple(unique)


def _escape_url(url: str) -> str | None:
    """Percent-escape what may not stand in a URL's path (spaces, for one), as libtorrent does.

    None for a URL that cannot be split (an unclosed ``[`` host): no request could be made
    to it, and a bad optional web seed must not cost the whole torrent.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return url
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~")
    return urlunsplit(parts._replace(path=path))


def _nodes(value: Any) -> tuple[tuple[str, int], ...]:
    if type(value) is not list:
        return ()
    nodes: list[tuple[str, int]] = []
    for node in value:
        if len(nodes) >= MAX_URLS:
            break
        if (
            type(node) is list
            and len(node) >= 2
            and type(node[0]) is bytes
            and type(node[1]) is int
            and 0 < node[1] < 65536
        ):
            nodes.append((node[0].decode("utf-8", "replace"), node[1]))
    return tuple(nodes)


def _piece_layers(fields: Mapping[bytes, Any], info: Info) -> dict[bytes, bytes]:
    """Check the BEP 52 ``piece layers`` against the files' roots; return them."""
    layers = fields.get(b"piece layers")
    if not info.is_v2 or layers is None:
        return {}
    if type(layers) is not dict:
        raise MetainfoError(K.INVALID_PIECE_LAYER, "'piece layers' is not a dictionary")
    # Files sharing a root have one length (Info refuses others), so the layer that fits
    # the first of them fits them all.
    by_root: dict[bytes, FileEntry] = {}
    for file in info.files:
        if file.pieces_root:
            by_root.setdefault(file.pieces_root, file)
    checked = {}
    for root, layer in layers.items():
        entry = by_root.get(root)
        if entry is None:
            raise MetainfoError(
                K.INVALID_PIECE_LAYER, f"a piece layer for {root.hex()}, which is no file's root"
            )
        if type(layer) is not bytes or not verify_piece_layer(
            layer, root, info.piece_length, entry.length
        ):
            raise MetainfoError(
                K.INVALID_PIECE_LAYER,
                f"the piece layer of {'/'.join(entry.path)!r} does not hash to its pieces root",
            )
        checked[root] = layer
    return checked
