"""Info: a torrent's info dictionary (v1, v2 or hybrid), parsed and validated.

The checks follow libtorrent's ``parse_info_section`` in kind and in order, so a
torrent libtorrent refuses is refused here for the corresponding reason (see
:class:`~bip_metainfo.MetainfoErrorKind`). Where this module is stricter it says
so. Everything an untrusted torrent controls is bounded: the number of bencoded
values (checked before decoding), of files and of pieces, file sizes, the depth of a v2
file tree and of a v1 path or symlink target, the number of duplicate file names, the
length of symlink chains.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bip_bencode import BencodeDecodeError, decode

from ._errors import MetainfoError, MetainfoErrorKind
from ._files import FileEntry
from ._geometry import FileSlice, PieceGeometry
from ._infohash import InfoHash
from ._paths import (
    DEFAULT_DUPLICATE_LIMIT,
    break_link_cycles,
    follow_renames,
    resolve_duplicates,
    resolve_symlinks,
    sanitize_name,
    sanitize_path,
    sanitize_symlink_target,
)
from ._tokens import check_value_count

__all__ = ["DEFAULT_MAX_FILES", "DEFAULT_MAX_PIECES", "Info"]

K = MetainfoErrorKind

# Soft problems tolerated in torrents from the wild, at DEBUG, one record per kind per
# torrent (never per file: a torrent may list a million).
_log = logging.getLogger("bip_metainfo.torrent")

DEFAULT_MAX_PIECES = 0x200000
"""The most pieces a torrent may have by default (libtorrent's ``max_pieces``)."""

DEFAULT_MAX_FILES = 500_000
"""The most files (pad files and symlinks included) a torrent may list by default.

Each file costs about 15 microseconds to parse and 1.2 KiB of memory at the peak (0.8 KiB
kept); 100 directories deep in a v2 tree, 2.1 KiB (1.7 kept) for its path of 100
components, but no more time, as the tree states each directory only once (pad files
between the files and symlinks among them included). So a hostile torrent of a few MB
of tiny file entries would otherwise cost gigabytes and minutes; the count is checked
before any per-file work. libtorrent bounds the same thing indirectly: its
``max_decode_tokens`` (3,000,000) refuses a v1 torrent of more than about 375,000 files.
"""

MAX_PIECE_LENGTH = 2**31 // 2 - 1
"""The largest piece length a torrent read here may have: ``INT_MAX / 2``, the bound of
libtorrent up to 2.0 (and of other clients that load such torrents).

libtorrent 2.1 loads no piece length above :data:`MAX_CREATE_PIECE_LENGTH`, which is all
:func:`~bip_metainfo.create_torrent` makes. Reading keeps the looser bound so that a torrent
made elsewhere with larger pieces can still be shown and checked, not refused outright."""

MAX_CREATE_PIECE_LENGTH = 32767 * 16 * 1024
"""The largest piece length :func:`~bip_metainfo.create_torrent` makes: 512 MiB less 16 KiB,
the largest libtorrent 2.1.1 loads (its ``file_storage::max_piece_size``: its piece picker
counts a piece's 16 KiB blocks in 15 bits). As a power of two, 256 MiB for v2 and hybrid."""

MIN_V2_PIECE_LENGTH = 16 * 1024
"""BEP 52: a v2 piece length is a power of two and at least 16 KiB."""

MAX_FILE_SIZE = 16 * 1024 * ((2**31 - 1) // 2) - 1
"""The largest file size accepted, about 16 TiB: libtorrent 2.1.1 refuses a file of
``INT_MAX / 2`` blocks of 16 KiB or more (its merkle tree indices are ``int``), v1 or v2."""

MAX_FILE_TREE_DEPTH = 100
"""How many directories deep a v2 ``file tree`` may nest below its root in a torrent read
here (libtorrent's own tree check, ``depth > 100``).

libtorrent 2.1.1 cannot load a .torrent file whose tree is that deep, though: its bencoding
depth limit (100 nested lists and dictionaries) refuses a tree holding a file more than 94
directories below the root (a symlink: 93). :func:`~bip_metainfo.create_torrent` makes
nothing deeper than libtorrent loads. A v1 ``path`` and a ``symlink path`` may have at most
100 components (libtorrent 2.1.1 refuses 101)."""

# A v1 file whose path holds this is read as a pad file (BitComet names its pad files so
# rather than flagging them); create_torrent refuses such names for the same reason.
BITCOMET_PAD = "_____padding_file_"

# A v1 ``path`` or a BEP 47 ``symlink path`` (v1 or v2): libtorrent 2.1.1 takes 100
# components and refuses 101 (its error 219). Checked before any per-component work, as
# libtorrent's max_directory_depth is: a path of two million components costs seconds and
# tens of megabytes to sanitise otherwise.
_MAX_PATH_COMPONENTS = 100

# How deeply the bencoding of a bare info dictionary may nest: a .torrent file's limit
# (_metainfo) less the level of its top-level dictionary, so that an info dictionary loads
# as BEP 9 metadata exactly when it loads inside a .torrent file.
_MAX_INFO_DEPTH = 127

_SHA1_SIZE = 20
_SHA256_SIZE = 32
_ZERO_ROOT = bytes(_SHA256_SIZE)


def _fail(kind: MetainfoErrorKind, reason: str) -> MetainfoError:
    return MetainfoError(kind, reason)


@dataclass(frozen=True, slots=True)
class _ParsedFiles:
    v1: list[FileEntry] | None  # None: the info dict has no v1 file list (v2-only)
    v2: list[FileEntry] | None  # None: not a v2 torrent


class Info:
    """A torrent's info dictionary, parsed and validated.

    Build one with :meth:`from_bytes` (for example from BEP 9 metadata) or get it
    from :attr:`Metainfo.info <bip_metainfo.Metainfo.info>`.

    Attributes:
        raw: the info dictionary's bytes exactly as given; :meth:`to_bytes` returns
            them, and the info-hash is their hash.
        fields: the decoded dictionary, unknown keys included.
        info_hash: v1, v2 or both, per the torrent's version.
        name: the torrent's name, sanitised (the hex info-hash if nothing of it is
            left); for a multi-file torrent, the top directory.
        piece_length: bytes per piece.
        files: every file, in piece-space order (pad files included), each with a
            safe relative path.
        meta_version: 2 for v2 and hybrid torrents, None for v1.
        private: the BEP 27 private flag.
        source: the optional ``source`` string (private trackers use it to make
            info-hashes unique).
        similar: BEP 38 ``similar`` info-hashes (20 bytes each).
        collections: BEP 38 ``collections`` names.
        geometry: which file bytes each piece covers.
    """

    __slots__ = (
        "_pieces",
        "collections",
        "fields",
        "files",
        "geometry",
        "info_hash",
        "meta_version",
        "name",
        "piece_length",
        "private",
        "raw",
        "similar",
        "source",
    )

    def __init__(
        self,
        raw: bytes,
        fields: Any,
        *,
        max_pieces: int = DEFAULT_MAX_PIECES,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        """Validate a decoded info dictionary (``fields``) whose bytes are ``raw``.

        Prefer :meth:`from_bytes`; this is for callers that decoded the enclosing
        document themselves (raw must be exactly the dictionary's input bytes).
        ``max_pieces`` and ``max_files`` bound what the torrent may hold (see
        :data:`DEFAULT_MAX_PIECES`, :data:`DEFAULT_MAX_FILES`).

        Raises:
            MetainfoError: the info dictionary is malformed.
        """
        if type(fields) is not dict:
            raise _fail(K.MISSING_INFO, "the info entry is not a dictionary")
        self.raw = raw
        self.fields: dict[bytes, Any] = fields

        version = fields.get(b"meta version")
        version = version if type(version) is int else -1
        if version > 0:
            # v2 metadata must be canonical bencoding (libtorrent refuses its soft
            # errors, such as unsorted keys, once there is a version key).
            try:
                decode(raw, max_depth=MAX_FILE_TREE_DEPTH + 8)
            except BencodeDecodeError as error:
                raise _fail(K.INVALID_BENCODING, f"v2 info dictionary: {error}") from None
            if version > 2:
                raise _fail(K.INVALID_META_VERSION, f"unknown meta version {version}")
        self.meta_version = 2 if version == 2 else None

        piece_length = fields.get(b"piece length")
        if type(piece_length) is not int:
            raise _fail(K.MISSING_PIECE_LENGTH, "no integer 'piece length'")
        if not 0 < piece_length <= MAX_PIECE_LENGTH:
            raise _fail(K.INVALID_PIECE_LENGTH, f"piece length {piece_length} is out of range")
        if version >= 2 and (
            piece_length < MIN_V2_PIECE_LENGTH or piece_length & (piece_length - 1)
        ):
            raise _fail(
                K.INVALID_PIECE_LENGTH,
                f"v2 piece length {piece_length} is not a power of two of at least 16 KiB",
            )
        self.piece_length = piece_length

        raw_name = _first_string(fields, b"name.utf-8", b"name")
        if raw_name is None:
            raise _fail(K.MISSING_NAME, "no 'name'")
        hashes = InfoHash.from_info_bytes(raw, v1=True, v2=version >= 2)
        # Nothing of the name survives sanitising ("..", "/"): a directory is named by
        # the info-hash instead (libtorrent). A single file cannot be: _parse_files.
        name = sanitize_name(raw_name) or hashes.hex()
        self.name = name

        parsed = _parse_files(fields, raw_name, name, version, max_files)
        if (parsed.v1 is None and parsed.v2 is None) or not (parsed.v1 or parsed.v2):
            raise _fail(K.NO_FILES, "the torrent has no files")
        if parsed.v1 is not None and parsed.v2 is not None:
            files = _merge_hybrid(parsed.v1, parsed.v2, piece_length, name)
        elif parsed.v1 is not None:
            files = parsed.v1
        else:
            assert parsed.v2 is not None  # checked above: one of the two lists exists
            files = _v2_layout(parsed.v2, piece_length, name)
        # v2-only torrents have no v1 identity at all.
        self.info_hash = hashes if parsed.v1 is not None else InfoHash(v2=hashes.v2)
        if _log.isEnabledFor(logging.DEBUG) and name != raw_name.decode("utf-8", "replace"):
            _log.debug("torrent %s: its name %r became %r", self.info_hash, raw_name, name)

        geometry = PieceGeometry(files, piece_length)
        if geometry.total_size // piece_length >= 2**31 - 1 or geometry.num_pieces > max_pieces:
            raise _fail(
                K.TOO_MANY_PIECES,
                f"{geometry.num_pieces} pieces is more than the limit of {max_pieces}",
            )

        pieces = fields.get(b"pieces")
        if type(pieces) is not bytes:
            if parsed.v1 is not None:
                raise _fail(K.MISSING_PIECES, "no 'pieces' string of SHA-1 hashes")
            pieces = None
        elif len(pieces) != geometry.num_pieces * _SHA1_SIZE:
            raise _fail(
                K.INVALID_PIECES,
                f"'pieces' holds {len(pieces)} bytes, not {geometry.num_pieces} SHA-1 hashes",
            )
        self._pieces: bytes | None = pieces

        private = fields.get(b"private")
        self.private = type(private) is int and private != 0  # as libtorrent reads it
        source = fields.get(b"source")
        self.source = source.decode("utf-8", "replace") if type(source) is bytes else None
        self.similar = _similar(fields)
        self.collections = _strings(fields.get(b"collections"))

        if sum(entry.length for entry in files if not entry.is_pad) == 0:
            raise _fail(K.INVALID_LENGTH, "the torrent's files hold no data")

        # Links are checked against the paths as given (libtorrent's rule), then follow
        # the files they name through renaming, and loops are broken on the final paths.
        renamed = _rename_duplicates(files, self.info_hash)
        self.files = tuple(_resolve_links(files, renamed, self.name, self.info_hash))
        self.geometry = geometry  # renaming changes paths only, never offsets or sizes

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        max_pieces: int = DEFAULT_MAX_PIECES,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> Info:
        """Parse a bare bencoded info dictionary (BEP 9 metadata, for example).

        Raises:
            MetainfoError: the bytes are not a valid info dictionary, or it holds
                more than ``max_pieces`` pieces or ``max_files`` files.
        """
        data = bytes(data)
        check_value_count(data)  # before decoding builds an object per value
        try:
            fields = decode(data, lenient=True, max_depth=_MAX_INFO_DEPTH)
        except BencodeDecodeError as error:
            raise _fail(K.INVALID_BENCODING, str(error)) from None
        return cls(data, fields, max_pieces=max_pieces, max_files=max_files)

    def to_bytes(self) -> bytes:
        """The info dictionary's original bytes (so the info-hash never changes)."""
        return self.raw

    def __repr__(self) -> str:
        """A short description: name, size, version."""
        kind = "hybrid" if self.is_hybrid else "v2" if self.is_v2 else "v1"
        return f"<Info {self.name!r}: {len(self.files)} files, {self.total_size} bytes, {kind}>"

    @property
    def is_v1(self) -> bool:
        """Whether the torrent has v1 piece hashes (a v1 or hybrid torrent)."""
        return self.info_hash.v1 is not None

    @property
    def is_v2(self) -> bool:
        """Whether the torrent has a v2 file tree (a v2 or hybrid torrent)."""
        return self.meta_version == 2

    @property
    def is_hybrid(self) -> bool:
        """Whether the torrent is both v1 and v2."""
        return self.info_hash.is_hybrid

    @property
    def total_size(self) -> int:
        """The bytes of real file data, pad files excluded."""
        return sum(entry.length for entry in self.files if not entry.is_pad)

    @property
    def num_pieces(self) -> int:
        """How many pieces the torrent has."""
        return self.geometry.num_pieces

    def piece_hash(self, index: int) -> bytes:
        """The v1 SHA-1 hash of piece ``index``.

        Raises:
            IndexError: there is no such piece.
            ValueError: the torrent is v2-only (see :meth:`Metainfo.piece_layer`).
        """
        if self._pieces is None:
            raise ValueError("a v2-only torrent has no v1 piece hashes")
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} is not in 0..{self.num_pieces - 1}")
        return self._pieces[index * _SHA1_SIZE : (index + 1) * _SHA1_SIZE]

    def piece_size(self, index: int, *, include_pad: bool = True) -> int:
        """The number of bytes in piece ``index`` (see :meth:`PieceGeometry.piece_size`)."""
        return self.geometry.piece_size(index, include_pad=include_pad)

    def piece_slices(self, index: int) -> tuple[FileSlice, ...]:
        """Which byte ranges of which files piece ``index`` covers (pad files included)."""
        return self.geometry.slices(index)


# --- parsing helpers ----------------------------------------------------------------


def _first_string(fields: Mapping[bytes, Any], *keys: bytes) -> bytes | None:
    for key in keys:
        value = fields.get(key)
        if type(value) is bytes:
            return value
    return None


def _first_list(fields: Mapping[bytes, Any], *keys: bytes) -> list[Any] | None:
    for key in keys:
        value = fields.get(key)
        if type(value) is list:
            return value
    return None


def _strings(value: Any) -> tuple[str, ...]:
    if type(value) is not list:
        return ()
    return tuple(item.decode("utf-8", "replace") for item in value if type(item) is bytes)


def _similar(fields: Mapping[bytes, Any]) -> tuple[bytes, ...]:
    value = fields.get(b"similar")
    if type(value) is not list:
        return ()
    return tuple(item for item in value if type(item) is bytes and len(item) == _SHA1_SIZE)


def _attributes(entry: Mapping[bytes, Any]) -> str:
    attr = entry.get(b"attr")
    if type(attr) is not bytes:
        return ""
    # Each known letter once (they are flags), in the order given: a hostile torrent's attr
    # can be megabytes, and this is a few C-level scans, not a Python loop per byte.
    known = sorted((attr.find(letter), letter) for letter in (b"p", b"x", b"h", b"l"))
    return "".join(letter.decode() for at, letter in known if at >= 0)


class _TreeWhere:
    """Names a ``file tree`` entry in error messages, and is only formatted for one.

    The name holds the entry's whole path, as long as the tree is deep, and every file
    has one: building it for each file would cost files x depth x name length (24 KB a
    file for a tree of 240-byte names 100 deep) when almost no torrent needs it.
    """

    __slots__ = ("key", "prefix")

    def __init__(self, prefix: tuple[str, ...], key: bytes) -> None:
        self.prefix = prefix
        self.key = key

    def __str__(self) -> str:
        """``file tree entry <path>``: the sanitised directories, then the raw key."""
        return "file tree entry " + "/".join((*self.prefix, self.key.decode("utf-8", "replace")))


_Where = str | _TreeWhere  # how an error message names a file entry


def _length(entry: Mapping[bytes, Any], attributes: str, where: _Where) -> int:
    if "l" in attributes:
        return 0  # symlinks take no space in the piece space
    length = entry.get(b"length")
    if type(length) is not int or not 0 <= length <= MAX_FILE_SIZE:
        raise _fail(K.INVALID_LENGTH, f"{where} has no valid 'length' ({length!r})")
    return length


def _components(value: list[Any], where: _Where, what: str = "") -> list[bytes]:
    if len(value) > _MAX_PATH_COMPONENTS:
        raise _fail(
            K.FILE_TREE_TOO_DEEP,
            f"{where}{what} path has {len(value)} components, more than {_MAX_PATH_COMPONENTS}",
        )
    if not all(type(part) is bytes for part in value):
        raise _fail(K.INVALID_PATH, f"{where}{what} has a path component that is not a string")
    return value


def _symlink_target(entry: Mapping[bytes, Any], where: _Where) -> tuple[str, ...] | None:
    """A BEP 47 symlink's target, sanitised, relative to the torrent's root.

    None when there is none: libtorrent then treats the entry as an ordinary file.
    Whether the target exists in the torrent is settled by :func:`_resolve_links`.
    """
    target = entry.get(b"symlink path")
    if type(target) is not list:
        return None
    return sanitize_symlink_target(_components(target, where, " symlink"))


def _resolve_links(
    files: list[FileEntry], renamed: list[FileEntry], name: str, info_hash: InfoHash
) -> list[FileEntry]:
    """Point every symlink at a file or directory of the torrent, or at itself.

    ``files`` are as the torrent gives them, ``renamed`` the same after
    :func:`_rename_duplicates`: the targets are checked against the first (libtorrent's
    rule, which resolves them before renaming) and given in the second's paths. Also at
    itself: a link in a loop of links, or to a directory that holds it, on a disk that
    ignores case too.
    """
    targets = {i: entry.symlink_target for i, entry in enumerate(files) if entry.symlink_target}
    if not targets:
        return renamed
    multi_file = any(len(entry.path) > 1 and entry.path[0] == name for entry in files)
    paths = [entry.path for entry in renamed]
    resolved = resolve_symlinks(
        [entry.path for entry in files], targets, root=(name,) if multi_file else ()
    )
    follow_renames([entry.path for entry in files], paths, resolved)
    # Stricter than libtorrent: links that only lead to links in a loop, or to a
    # directory holding them, would be loops on disk; renaming compared paths as a disk
    # that ignores case would, and so must this.
    break_link_cycles(paths, resolved, case_insensitive=True)
    if _log.isEnabledFor(logging.DEBUG):
        broken = [i for i, target in resolved.items() if target == paths[i]]
        if broken:
            _log.debug(
                "torrent %s: %d symlinks point at nothing in the torrent and now at themselves "
                "(the first: %s)",
                info_hash,
                len(broken),
                "/".join(paths[broken[0]]),
            )
    return [
        replace(entry, symlink_target=resolved[i]) if i in resolved else entry
        for i, entry in enumerate(renamed)
    ]


def _digest(entry: Mapping[bytes, Any], key: bytes, size: int) -> bytes | None:
    value = entry.get(key)
    return value if type(value) is bytes and len(value) == size else None


def _md5(entry: Mapping[bytes, Any]) -> str | None:
    value = entry.get(b"md5sum")
    if type(value) is bytes and len(value) == 32:
        text = value.decode("ascii", "replace").lower()
        if all(c in "0123456789abcdef" for c in text):
            return text
    return None


def _mtime(entry: Mapping[bytes, Any]) -> int | None:
    value = entry.get(b"mtime")
    return value if type(value) is int and value >= 0 else None


def _too_many_files(max_files: int) -> MetainfoError:
    return _fail(K.TOO_MANY_FILES, f"more than {max_files} files (the limit)")


def _parse_files(
    fields: Mapping[bytes, Any], raw_name: bytes, name: str, version: int, max_files: int
) -> _ParsedFiles:
    files_node = fields.get(b"files")
    has_files_list = type(files_node) is list
    tree = fields.get(b"file tree")
    # Counted before any per-file work, so an oversized list costs nothing more.
    if has_files_list and len(files_node) > max_files:  # type: ignore[arg-type]
        raise _too_many_files(max_files)

    v2: list[FileEntry] | None = None
    if version >= 2:
        if type(tree) is not dict:
            raise _fail(K.INVALID_FILE_TREE, "a v2 torrent without a 'file tree' dictionary")
        v2 = _v2_files(tree, name, has_files_list, max_files)
        _check_shared_roots(v2)
    elif tree is not None:
        raise _fail(K.INVALID_META_VERSION, "a 'file tree' without 'meta version' 2")

    v1: list[FileEntry] | None = None
    if has_files_list:
        v1 = _v1_files(files_node, name)  # type: ignore[arg-type]
    elif version < 2 or b"length" in fields:
        attributes = _attributes(fields)
        length = _length(fields, attributes, "the torrent")
        # The name is the single file's own name here (of a hybrid torrent's v1 part too),
        # not a directory that "_" or the info-hash can stand for: libtorrent's
        # extract_single_file refuses an empty one or one that sanitises to nothing.
        if not raw_name or not sanitize_name(raw_name):
            raise _fail(K.MISSING_NAME, f"the name {raw_name!r} is not usable as a file name")
        v1 = [_v1_entry(fields, (name,), length, attributes, "the torrent")]
    return _ParsedFiles(v1, v2)


def _v1_entry(
    entry: Mapping[bytes, Any],
    path: tuple[str, ...],
    length: int,
    attributes: str,
    where: str,
) -> FileEntry:
    if "p" in attributes and "l" in attributes:
        # A pad file is bytes in the piece space, a symlink has none: libtorrent refuses the
        # pair (torrent_invalid_pad_file, since after 2.1.1, which took it as a symlink)
        # rather than guess which was meant.
        raise _fail(K.INVALID_PAD_FILE, f"{where} is both a pad file and a symlink")
    if (
        any(BITCOMET_PAD in part for part in path)
        and "p" not in attributes
        and "l" not in attributes
    ):
        attributes += "p"  # BitComet's pad files, named rather than flagged
    target = _symlink_target(entry, where) if "l" in attributes else None
    return FileEntry(
        path=path,
        length=length,
        offset=0,
        attributes=attributes,
        symlink_target=target,
        sha1=_digest(entry, b"sha1", _SHA1_SIZE),
        md5sum=_md5(entry),
        mtime=_mtime(entry),
    )


def _v1_files(files: list[Any], name: str) -> list[FileEntry]:
    result = []
    offset = 0
    for index, entry in enumerate(files):
        where = f"files[{index}]"
        if type(entry) is not dict:
            raise _fail(K.INVALID_FIELD, f"{where} is not a dictionary")
        attributes = _attributes(entry)
        length = _length(entry, attributes, where)
        components = _first_list(entry, b"path.utf-8", b"path")
        if components:
            path = (name, *(sanitize_path(_components(components, where)) or ("_",)))
        elif "p" in attributes:
            path = (".pad", str(length))  # where libtorrent keeps unnamed pad files
        else:
            raise _fail(K.MISSING_NAME, f"{where} has no path")
        file = _v1_entry(entry, path, length, attributes, where)
        result.append(replace(file, offset=offset))
        offset += length
    return result


def _v2_files(
    tree: dict[bytes, Any], name: str, has_files_list: bool, max_files: int
) -> list[FileEntry]:
    """The files of a BEP 52 file tree, depth first in key order, without recursion.

    Refused as soon as it holds more than ``max_files`` files (their pad files, one
    per file at most, are bounded by that too).
    """
    result: list[FileEntry] = []
    # Each frame: the remaining (key, node) pairs of a directory, its path, its depth.
    frames: list[tuple[Iterator[tuple[bytes, Any]], tuple[str, ...], int]] = [
        (iter(list(tree.items())), (name,), 0)
    ]
    single_file_root = not has_files_list and len(tree) == 1
    while frames:
        entries, prefix, depth = frames[-1]
        for key, node in entries:
            where = _TreeWhere(prefix, key)
            if type(node) is not dict or not key:
                raise _fail(K.INVALID_FILE_TREE, f"{where} is not a named dictionary")
            leaf = len(node) == 1 and b"" in node
            component = sanitize_path([key]) or ("_",)
            path = component if leaf and depth == 0 and single_file_root else (*prefix, *component)
            if leaf:
                if len(result) >= max_files:
                    raise _too_many_files(max_files)
                result.append(_v2_entry(node[b""], path, where))
                continue
            if depth + 1 > MAX_FILE_TREE_DEPTH:
                raise _fail(K.FILE_TREE_TOO_DEEP, f"{where} is nested too deeply")
            frames.append((iter(list(node.items())), path, depth + 1))
            break
        else:
            frames.pop()
    return result


def _v2_entry(entry: Any, path: tuple[str, ...], where: _TreeWhere) -> FileEntry:
    if type(entry) is not dict:
        raise _fail(K.INVALID_FILE_TREE, f"{where} has no file dictionary")
    attributes = _attributes(entry)
    if "p" in attributes:
        raise _fail(K.INVALID_PAD_FILE, f"{where} is a pad file, which a v2 tree cannot hold")
    length = _length(entry, attributes, where)
    target = _symlink_target(entry, where) if "l" in attributes else None
    root = entry.get(b"pieces root")
    if target is None and length > 0:
        if type(root) is not bytes or len(root) != _SHA256_SIZE or root == _ZERO_ROOT:
            raise _fail(K.MISSING_PIECES_ROOT, f"{where} has no valid 'pieces root'")
    else:
        root = None  # empty files and symlinks have no merkle tree
    return FileEntry(
        path=path,
        length=length,
        offset=0,
        attributes=attributes,
        symlink_target=target,
        pieces_root=root,
        mtime=_mtime(entry),
    )


def _check_shared_roots(files: list[FileEntry]) -> None:
    """Refuse a tree where one ``pieces root`` names files of different lengths.

    A root is the hash of a file's content, so files that share one are the same file:
    identical copies are legal, but a root with two lengths cannot be: its piece layer fits
    only one of them (libtorrent's ``parse_piece_layers`` refuses the ``piece layers`` of two
    such files larger than a piece; a magnet's peers would answer hash requests for one length
    or the other). Stricter than libtorrent, which takes such an info dictionary without
    layers (a magnet's) and uses the first file with the root.
    """
    first: dict[bytes, FileEntry] = {}
    for entry in files:
        if entry.pieces_root is None:
            continue
        seen = first.setdefault(entry.pieces_root, entry)
        if seen.length != entry.length:
            raise _fail(
                K.INVALID_FILE_TREE,
                f"pieces root {entry.pieces_root[:8].hex()}... names files of different lengths:"
                f" {_short_path(seen.path)!r} ({seen.length} bytes) and"
                f" {_short_path(entry.path)!r} ({entry.length} bytes)",
            )


def _short_path(path: tuple[str, ...], limit: int = 120) -> str:
    """A file's path for an error message: its end if long (a 100-deep path can be 24 KB)."""
    text = "/".join(path)
    return text if len(text) <= limit else "..." + text[-limit:]


# Where a v2 file lies in the piece space: (file, offset, length); file None for a pad file.
_Place = tuple[FileEntry | None, int, int]


def _v2_places(files: list[FileEntry], piece_length: int) -> list[_Place]:
    """Place v2 files in the piece space: each non-empty file at a piece boundary.

    A non-empty file that does not end on a piece boundary is followed by a pad file
    (the last one too), as libtorrent lays out v2 torrents and as hybrid torrents'
    v1 lists hold them.
    """
    places: list[_Place] = []
    offset = 0
    for entry in files:
        places.append((entry, offset, entry.length))
        offset += entry.length
        gap = -offset % piece_length
        if entry.length and gap:
            places.append((None, offset, gap))
            offset += gap
    return places


def _v2_layout(files: list[FileEntry], piece_length: int, name: str) -> list[FileEntry]:
    """A v2 torrent's files in the piece space, with their pad files (see ``_v2_places``).

    Pad files are named ``<name>/.pad/<size>`` as libtorrent names them, so the piece space
    is covered by files and file indices agree with other clients'.
    """
    return [
        FileEntry(path=(name, ".pad", str(length)), length=length, offset=offset, attributes="p")
        if entry is None
        else replace(entry, offset=offset)
        for entry, offset, length in _v2_places(files, piece_length)
    ]


def _merge_hybrid(
    v1: list[FileEntry], v2: list[FileEntry], piece_length: int, name: str
) -> list[FileEntry]:
    """Check that a hybrid torrent's v1 list lays its files out as its v2 tree does.

    This module numbers pieces by the v1 list; v2 peers number them by the v2 layout
    (``_v2_places``). So, as libtorrent's ``files_compatible`` requires, both hold as many
    entries (pad files included) and as many bytes, and at every index either both
    entries are non-empty files or neither is (pad files, empty files, symlinks); those
    that are agree in path, size and offset. A v1 list without the v2 layout's last pad
    file is accepted: libtorrent 2.0.0 to 2.0.7 made hybrids so (with each pad file
    before the file it aligns), and libtorrent accepts them.

    Returns:
        The v1 list, its non-empty files given their v2 ``pieces root``, and at every
        other index the v2 layout's entry (pad file, empty file or symlink: name,
        attributes, target), as libtorrent takes the v2 tree for the torrent's files; where
        the v1 list agrees with the layout entry by entry, the offsets are the v1 list's.
    """
    places = _v2_places(v2, piece_length)
    if len(places) == len(v1) + 1:
        places = _without_tail_pad(places)
    if len(places) != len(v1):
        raise _fail(
            K.INCONSISTENT_FILES,
            f"the v1 file list has {len(v1)} entries (pad files included), and the v2 file"
            f" tree lays out {len(places)}",
        )
    v1_size = sum(entry.length for entry in v1)
    v2_size = sum(length for _, _, length in places)
    if v1_size != v2_size:
        raise _fail(
            K.INCONSISTENT_FILES,
            f"the v1 file list spans {v1_size} bytes (pad files included), and the v2 file"
            f" tree {v2_size}",
        )
    merged = []
    for index, (entry, (other, offset, length)) in enumerate(zip(v1, places, strict=True)):
        data = entry.length > 0 and not entry.is_pad
        if other is None or length == 0:
            if data:
                raise _fail(
                    K.INCONSISTENT_FILES,
                    f"v1 file {_short_path(entry.path)!r} (files[{index}]) is where the v2"
                    " file tree lays out a pad file, an empty file or a symlink",
                )
            # The v2 tree is the authority for what is there (libtorrent keeps only its
            # files once the lists are found compatible); its place keeps the geometry
            # whole even where a v1 list swaps a pad file and an empty file.
            merged.append(
                FileEntry(
                    path=(name, ".pad", str(length)), length=length, offset=offset, attributes="p"
                )
                if other is None
                else replace(other, offset=offset)
            )
            continue
        if not data:
            raise _fail(
                K.INCONSISTENT_FILES,
                f"files[{index}] is a pad file, an empty file or a symlink where the v2 file"
                f" tree lays out {_short_path(other.path)!r}",
            )
        if entry.offset != offset or entry.path != other.path or entry.length != length:
            raise _fail(
                K.INCONSISTENT_FILES,
                f"v1 file {_short_path(entry.path)!r} (files[{index}], {entry.length} bytes at"
                f" byte {entry.offset}) is not where the v2 file tree lays out"
                f" {_short_path(other.path)!r} ({length} bytes at byte {offset})",
            )
        merged.append(replace(entry, pieces_root=other.pieces_root))
    return merged


def _without_tail_pad(places: list[_Place]) -> list[_Place]:
    """``places`` without the pad file after the last non-empty file, if there is one.

    Empty files and symlinks after it move back to the end of the data (libtorrent's
    ``remove_tail_padding``).
    """
    last = next((i for i in range(len(places) - 1, -1, -1) if places[i][2] > 0), -1)
    if last < 0 or places[last][0] is not None:
        return places
    size = places[last][2]
    return places[:last] + [
        (entry, offset - size, length) for entry, offset, length in places[last + 1 :]
    ]


def _rename_duplicates(files: list[FileEntry], info_hash: InfoHash) -> list[FileEntry]:
    """Rename files whose paths clash (see :func:`resolve_duplicates`).

    Pad files take no part: they are never written to disk, so their names can
    clash with nothing (a v2 single-file torrent's tail pad is ``<name>/.pad/<n>``,
    as libtorrent names it, which would otherwise make the file's own name a
    directory).
    """
    real = [i for i, entry in enumerate(files) if not entry.is_pad]
    paths = resolve_duplicates([files[i].path for i in real], limit=DEFAULT_DUPLICATE_LIMIT)
    renamed = list(files)
    first = -1
    count = 0
    for i, path in zip(real, paths, strict=True):
        if path != files[i].path:
            # Paths only: _resolve_links moves link targets along (follow_renames).
            renamed[i] = replace(files[i], path=path)
            count += 1
            if first < 0:
                first = i
    if count:
        _log.debug(
            "torrent %s: renamed %d files whose paths clash (the first: %s to %s)",
            info_hash,
            count,
            "/".join(files[first].path),
            "/".join(renamed[first].path),
        )
    return renamed
