"""bip_metainfo: .torrent files (v1, v2, hybrid), magnet links, and creating torrents."""

import logging

from ._create import CreateCancelled, auto_piece_length, create_torrent
from ._errors import (
    CreateError,
    InfoHashError,
    MagnetError,
    MetainfoBaseError,
    MetainfoError,
    MetainfoErrorKind,
    MutableLinkError,
)
from ._files import FileEntry
from ._geometry import FileSlice, PieceGeometry
from ._info import DEFAULT_MAX_FILES, DEFAULT_MAX_PIECES, Info
from ._infohash import InfoHash
from ._magnet import MagnetLink
from ._merkle import (
    BLOCK_SIZE,
    HASH_SIZE,
    MerkleFileHasher,
    MerkleTree,
    block_hashes,
    merkle_root,
    pad_hash,
    piece_hash,
    piece_layer,
    pieces_root,
    pieces_root_from_layer,
    proof_uncle_count,
    root_from_proof,
    subtree_root,
    verify_block,
    verify_piece,
    verify_piece_layer,
)
from ._merkle_proofs import (
    HashRequestError,
    PieceLayerTree,
    check_hash_request,
    full_proof_layers,
    hash_reply_count,
    tree_depth,
    verify_hashes,
)
from ._metainfo import DEFAULT_MAX_TORRENT_SIZE, MAX_URLS, Metainfo
from ._mutable_magnet import MutableTorrentLink
from ._paths import (
    DEFAULT_DUPLICATE_LIMIT,
    DEFAULT_SYMLINK_HOPS,
    break_link_cycles,
    follow_renames,
    is_within,
    resolve_duplicates,
    resolve_symlinks,
    sanitize_name,
    sanitize_path,
    sanitize_symlink_target,
)
from ._pieceset import PieceSet
from ._tokens import DEFAULT_MAX_VALUES

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_DUPLICATE_LIMIT",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_PIECES",
    "DEFAULT_MAX_TORRENT_SIZE",
    "DEFAULT_MAX_VALUES",
    "DEFAULT_SYMLINK_HOPS",
    "HASH_SIZE",
    "MAX_URLS",
    "CreateCancelled",
    "CreateError",
    "FileEntry",
    "FileSlice",
    "HashRequestError",
    "Info",
    "InfoHash",
    "InfoHashError",
    "MagnetError",
    "MagnetLink",
    "MerkleFileHasher",
    "MerkleTree",
    "Metainfo",
    "MetainfoBaseError",
    "MetainfoError",
    "MetainfoErrorKind",
    "MutableLinkError",
    "MutableTorrentLink",
    "PieceGeometry",
    "PieceLayerTree",
    "PieceSet",
    "auto_piece_length",
    "block_hashes",
    "break_link_cycles",
    "check_hash_request",
    "create_torrent",
    "follow_renames",
    "full_proof_layers",
    "hash_reply_count",
    "is_within",
    "merkle_root",
    "pad_hash",
    "piece_hash",
    "piece_layer",
    "pieces_root",
    "pieces_root_from_layer",
    "proof_uncle_count",
    "resolve_duplicates",
    "resolve_symlinks",
    "root_from_proof",
    "sanitize_name",
    "sanitize_path",
    "sanitize_symlink_target",
    "subtree_root",
    "tree_depth",
    "verify_block",
    "verify_hashes",
    "verify_piece",
    "verify_piece_layer",
]

__version__ = "0.1.0"

# The application decides where log records go; without this, Python's last-resort handler
# would print our warnings to stderr in an application that configured no logging at all.
logging.getLogger("bip_metainfo").addHandler(logging.NullHandler())
