"""The exceptions bip_metainfo raises, and the defects a torrent can have."""

from __future__ import annotations

import enum
from typing import Any

__all__ = [
    "CreateError",
    "InfoHashError",
    "MagnetError",
    "MetainfoBaseError",
    "MetainfoError",
    "MetainfoErrorKind",
]


class MetainfoErrorKind(enum.Enum):
    """What is wrong with a torrent.

    Finer-grained than libtorrent's error codes; :attr:`libtorrent` names the
    libtorrent ``error_code`` each kind corresponds to, so results can be compared
    with libtorrent's (and with the public test vectors, which cite them).
    """

    INVALID_BENCODING = "invalid_bencoding"
    """The file is not bencoding, or a v2 info dict is not canonical bencoding."""
    NOT_A_DICT = "not_a_dict"
    """The top-level value is not a dictionary."""
    MISSING_INFO = "missing_info"
    """No ``info`` dictionary."""
    MISSING_PIECE_LENGTH = "missing_piece_length"
    """``piece length`` is missing or not an integer."""
    INVALID_PIECE_LENGTH = "invalid_piece_length"
    """``piece length`` is not a power of two of at least 16 KiB (v2), or not positive."""
    MISSING_PIECES = "missing_pieces"
    """A v1 torrent has no ``pieces`` string."""
    INVALID_PIECES = "invalid_pieces"
    """``pieces`` is not a whole number of SHA-1 hashes, or not one per piece."""
    MISSING_NAME = "missing_name"
    """No ``name``, or a file without a ``path``."""
    INVALID_PATH = "invalid_path"
    """A ``path`` or ``symlink path`` component is not a string."""
    INVALID_LENGTH = "invalid_length"
    """A file length is missing, negative or not an integer, or the torrent is empty."""
    NO_FILES = "no_files"
    """A ``files`` list or ``file tree`` holding no files."""
    TOO_MANY_PIECES = "too_many_pieces"
    """More pieces, or a larger total size, than any sane torrent has."""
    TOO_MANY_VALUES = "too_many_values"
    """More bencoded values than the reader's limit (:data:`~bip_metainfo.DEFAULT_MAX_VALUES`)."""
    TOO_MANY_FILES = "too_many_files"
    """More files than the reader's limit (:data:`~bip_metainfo.DEFAULT_MAX_FILES`)."""
    TOO_MANY_DUPLICATE_NAMES = "too_many_duplicate_names"
    """So many files with the same path that they cannot be told apart."""
    INCONSISTENT_FILES = "inconsistent_files"
    """A hybrid torrent whose v1 file list and v2 file tree disagree."""
    INVALID_FILE_TREE = "invalid_file_tree"
    """A v2 ``file tree`` entry is malformed (no ``""`` file dict, empty name, ...), or
    files of the tree share a ``pieces root`` but differ in length."""
    INVALID_PAD_FILE = "invalid_pad_file"
    """A file of a v2 ``file tree`` is flagged a pad file (``attr`` ``p``), or a v1 file's
    ``attr`` makes it both a pad file and a symlink."""
    FILE_TREE_TOO_DEEP = "file_tree_too_deep"
    """A v2 ``file tree`` nests directories deeper than the limit, or a ``path`` or a
    ``symlink path`` has more than 100 components."""
    MISSING_PIECES_ROOT = "missing_pieces_root"
    """A non-empty v2 file has no ``pieces root``, or an all-zero one."""
    INVALID_PIECE_LAYER = "invalid_piece_layer"
    """A v2 piece layer is missing, the wrong size, keyed by an unknown root, or does
    not hash up to its file's ``pieces root``."""
    INVALID_META_VERSION = "invalid_meta_version"
    """``meta version`` is present but not 2."""
    TOO_LARGE = "too_large"
    """The .torrent file is larger than the reader's limit."""
    INVALID_FIELD = "invalid_field"
    """An optional field has the wrong type (``announce-list`` not a list, ...)."""

    @property
    def libtorrent(self) -> str:
        """The libtorrent ``error_code`` name that corresponds to this kind."""
        return _LIBTORRENT[self]


_LIBTORRENT = {
    MetainfoErrorKind.INVALID_BENCODING: "invalid_bencoding",
    MetainfoErrorKind.NOT_A_DICT: "torrent_is_no_dict",
    MetainfoErrorKind.MISSING_INFO: "torrent_missing_info",
    MetainfoErrorKind.MISSING_PIECE_LENGTH: "torrent_missing_piece_length",
    MetainfoErrorKind.INVALID_PIECE_LENGTH: "torrent_missing_piece_length",
    MetainfoErrorKind.MISSING_PIECES: "torrent_missing_pieces",
    MetainfoErrorKind.INVALID_PIECES: "torrent_invalid_hashes",
    MetainfoErrorKind.MISSING_NAME: "torrent_missing_name",
    MetainfoErrorKind.INVALID_PATH: "torrent_invalid_name",
    MetainfoErrorKind.INVALID_LENGTH: "torrent_invalid_length",
    MetainfoErrorKind.NO_FILES: "no_files_in_torrent",
    MetainfoErrorKind.TOO_MANY_PIECES: "too_many_pieces_in_torrent",
    MetainfoErrorKind.TOO_MANY_VALUES: "limit_exceeded",  # bdecode's max_decode_tokens
    MetainfoErrorKind.TOO_MANY_FILES: "limit_exceeded",  # bdecode's max_decode_tokens
    MetainfoErrorKind.TOO_MANY_DUPLICATE_NAMES: "too_many_duplicate_filenames",
    MetainfoErrorKind.INCONSISTENT_FILES: "torrent_inconsistent_files",
    MetainfoErrorKind.INVALID_FILE_TREE: "torrent_file_parse_failed",
    MetainfoErrorKind.INVALID_PAD_FILE: "torrent_invalid_pad_file",
    # libtorrent 2.1.1 refuses a path of more than 100 components with its error 219
    # ("directory structure in torrent file exceeds depth limit"), whose name no source at
    # hand gives; its tree depth check (depth > 100) gives torrent_file_parse_failed.
    MetainfoErrorKind.FILE_TREE_TOO_DEEP: "torrent_file_parse_failed",
    MetainfoErrorKind.MISSING_PIECES_ROOT: "torrent_missing_pieces_root",
    MetainfoErrorKind.INVALID_PIECE_LAYER: "torrent_invalid_piece_layer",
    MetainfoErrorKind.INVALID_META_VERSION: "torrent_unknown_version",
    MetainfoErrorKind.TOO_LARGE: "metadata_too_large",
    MetainfoErrorKind.INVALID_FIELD: "torrent_file_parse_failed",
}


class MetainfoBaseError(ValueError):
    """Base class of every error bad input can make bip_metainfo raise.

    ``except MetainfoBaseError`` catches a malformed torrent (:class:`MetainfoError`), magnet
    link (:class:`MagnetError`), info-hash (:class:`InfoHashError`) or BEP 52 hash request
    (:class:`~bip_metainfo.HashRequestError`), what :func:`~bip_metainfo.create_torrent`
    cannot make a torrent of (:class:`CreateError`), and a received bitfield
    :meth:`PieceSet.from_bitfield <bip_metainfo.PieceSet.from_bitfield>` refuses (raised as
    this class itself). A :class:`ValueError`, as each of them always was.
    :class:`~bip_metainfo.CreateCancelled` is not one: it is no error of the input.

    >>> issubclass(MagnetError, MetainfoBaseError), issubclass(MetainfoError, MetainfoBaseError)
    (True, True)
    """


class MetainfoError(MetainfoBaseError):
    """A torrent (or a bare info dict) is malformed.

    Attributes:
        kind: what is wrong, as a :class:`MetainfoErrorKind`.
        reason: a human-readable description of the defect.
    """

    def __init__(self, kind: MetainfoErrorKind, reason: str) -> None:
        super().__init__(f"{reason} ({kind.value})")
        self.kind = kind
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (and copied) with the arguments ``__init__`` takes, not the message."""
        return (type(self), (self.kind, self.reason))


class MagnetError(MetainfoBaseError):
    """A magnet link is malformed.

    Attributes:
        parameter: the query parameter at fault (``"xt"``, ``"tr.1"``, ``"x.pe"``,
            ...), or ``""`` when the link as a whole is not a magnet link.
        reason: a human-readable description of the defect.
    """

    def __init__(self, parameter: str, reason: str) -> None:
        where = f"parameter {parameter!r}: " if parameter else ""
        super().__init__(f"{where}{reason}")
        self.parameter = parameter
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (and copied) with the arguments ``__init__`` takes, not the message."""
        return (type(self), (self.parameter, self.reason))


class MutableLinkError(MagnetError):
    """The magnet link names no info-hash but a publisher's key (BEP 46,
    ``xs=urn:btpk:``): :meth:`MagnetLink.parse <bip_metainfo.MagnetLink.parse>` cannot make
    a :class:`~bip_metainfo.MagnetLink` of it; read it with
    :meth:`MutableTorrentLink.parse <bip_metainfo.MutableTorrentLink.parse>` and resolve it
    through the DHT. Its ``parameter`` is ``"xt"``."""


class CreateError(MetainfoBaseError):
    """What was given to :func:`~bip_metainfo.create_torrent` cannot become a torrent.

    The content or the choices are at fault, not the program: the path is neither a file nor
    a directory, it holds no files or only empty ones, a name is not a file name, a name or
    other text (a comment, a URL) is not UTF-8, or the piece length is invalid, larger than
    libtorrent loads or too small for the data (too many pieces). A tool shows its message
    to the user as it is.
    """


class InfoHashError(MetainfoBaseError):
    """Text given to :meth:`~bip_metainfo.InfoHash.parse` is not an info-hash."""
