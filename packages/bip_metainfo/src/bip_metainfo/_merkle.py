"""BEP 52 merkle trees: pieces roots, piece layers, piece hashes and proofs.

A v2 torrent hashes every file on its own. The file is cut into 16 KiB blocks;
the SHA-256 of each block is a leaf (the last block is hashed at its real,
shorter length); the leaves are padded with 32 zero bytes up to a power of two;
each parent is ``SHA-256(left || right)``. The root is the file's
``pieces root``. The *piece layer* is the layer whose nodes each cover one
``piece length`` of the file; the torrent carries it, in ``piece layers``, for
every file larger than one piece, and a downloader checks each piece against
it. Above the leaves a missing node is not 32 zero bytes but the root of an
all-zero subtree of that height (:func:`pad_hash`).

>>> data = bytes(40000)                       # three blocks, the last one short
>>> len(block_hashes(data))
3
>>> root = pieces_root(data)
>>> root == merkle_root(block_hashes(data))   # padded to four leaves
True
>>> layer = piece_layer(block_hashes(data), 16384)
>>> len(layer) // HASH_SIZE                   # one hash per 16 KiB piece
3
>>> verify_piece_layer(layer, root, 16384, len(data))
True

Levels are counted from the leaves: level 0 holds the block hashes, level
``log2(piece_length / 16 KiB)`` the piece layer, and the root sits at the
tree's :attr:`~MerkleTree.depth`.

Everything here is pure and synchronous; the hashing runs in :mod:`hashlib`,
which releases the GIL on 16 KiB blocks, so callers may hash on worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256
from typing import Final, TypeAlias

from ._errors import MetainfoBaseError

__all__ = [
    "BLOCK_SIZE",
    "HASH_SIZE",
    "MerkleFileHasher",
    "MerkleTree",
    "block_hashes",
    "merkle_root",
    "pad_hash",
    "piece_hash",
    "piece_layer",
    "pieces_root",
    "pieces_root_from_layer",
    "proof_uncle_count",
    "root_from_proof",
    "subtree_root",
    "verify_block",
    "verify_piece",
    "verify_piece_layer",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

BLOCK_SIZE: Final = 16384
"""Bytes per merkle leaf: every file is hashed in 16 KiB blocks."""
HASH_SIZE: Final = 32
"""Bytes per SHA-256 hash, and so per node of the tree."""

_PAIR: Final = 2 * HASH_SIZE
_ZERO: Final = bytes(HASH_SIZE)


def _zero_subtree_roots(count: int) -> tuple[bytes, ...]:
    roots = [_ZERO]
    while len(roots) < count:
        roots.append(sha256(roots[-1] * 2).digest())
    return tuple(roots)


# _PADS[k] is the root of an all-zero subtree of height k (2**k zero leaves). Computed
# once, up front, so that threads hashing in parallel never race to fill a cache.
_PADS: Final = _zero_subtree_roots(64)


def _pad(level: int) -> bytes:
    """The hash of a missing node at ``level`` (0 = leaves)."""
    if level < len(_PADS):
        return _PADS[level]
    pad = _PADS[-1]
    for _ in range(len(_PADS) - 1, level):
        pad = sha256(pad * 2).digest()
    return pad


def _height(count: int) -> int:
    """log2 of the smallest power of two that is at least ``count`` (>= 1)."""
    return (count - 1).bit_length()


def _bytes_view(data: Buffer) -> memoryview:
    """A flat, byte-addressed view of ``data`` (no copy)."""
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _parents(layer: Buffer, pad: bytes) -> bytes:
    """Hash a layer of concatenated hashes pairwise; an odd last node pairs with ``pad``."""
    view = _bytes_view(layer)
    end = len(view) - len(view) % _PAIR
    parents = b"".join([sha256(view[i : i + _PAIR]).digest() for i in range(0, end, _PAIR)])
    if end < len(view):
        parents += sha256(bytes(view[end:]) + pad).digest()
    return parents


def _layer_root(layer: Buffer, height: int, pad: bytes) -> bytes:
    """Root of ``layer`` (1..2**height concatenated hashes) padded to ``2**height`` nodes.

    ``pad`` is one missing node at the layer's own level; each level up pads
    with the hash of two of the previous level's pads.
    """
    for _ in range(height):
        layer = _parents(layer, pad)
        pad = sha256(pad * 2).digest()
    return bytes(layer)


def _leaf_layer(view: memoryview) -> bytes:
    """The concatenated SHA-256 of each 16 KiB block of ``view``."""
    return b"".join(
        [sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]
    )


def _piece_levels(piece_length: int) -> int:
    """log2(piece_length / 16 KiB), after checking the piece length is valid for v2."""
    if (
        type(piece_length) is not int
        or piece_length < BLOCK_SIZE
        or piece_length & (piece_length - 1)
    ):
        raise ValueError(
            f"piece length must be a power of two of at least {BLOCK_SIZE}, not {piece_length!r}"
        )
    return (piece_length // BLOCK_SIZE).bit_length() - 1


def _check_file_length(file_length: int) -> None:
    if type(file_length) is not int or file_length <= 0:
        raise ValueError(
            f"file length must be a positive integer (an empty file has no pieces root), "
            f"not {file_length!r}"
        )


def _num_pieces(file_length: int, piece_length: int) -> int:
    return -(-file_length // piece_length)


def _join_hashes(hashes: Sequence[Buffer], what: str) -> bytes:
    """Concatenate hashes after checking each is 32 bytes."""
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise ValueError(f"{what} must be {HASH_SIZE} bytes each, not {len(h)}")
    return b"".join(hashes)


def _is_buffer(value: object) -> bool:
    """Whether an untrusted value is bytes-like (a decoded torrent may hold anything)."""
    return isinstance(value, bytes | bytearray | memoryview)


def _is_hash(value: object) -> bool:
    """Whether an untrusted value is a 32-byte bytes-like value."""
    return (
        isinstance(value, bytes | bytearray | memoryview) and memoryview(value).nbytes == HASH_SIZE
    )


def pad_hash(leaves: int) -> bytes:
    """The root of a subtree of ``leaves`` zero leaves: a missing node at that height.

    ``pad_hash(1)`` is 32 zero bytes (a leaf past the end of a file); the piece
    layer of a torrent whose pieces span ``n`` blocks is padded with
    ``pad_hash(n)``. Values are cached.

    >>> pad_hash(1) == bytes(32)
    True
    >>> pad_hash(2).hex()[:16]
    'f5a5fd42d16a2030'

    Raises:
        ValueError: ``leaves`` is not a positive power of two.
    """
    if type(leaves) is not int or leaves < 1 or leaves & (leaves - 1):
        raise ValueError(f"leaves must be a positive power of two, not {leaves!r}")
    return _pad(leaves.bit_length() - 1)


def merkle_root(hashes: Sequence[bytes], *, leaves: int | None = None, pad: bytes = _ZERO) -> bytes:
    """The root of a layer of hashes, padded up to ``leaves`` nodes.

    Args:
        hashes: the layer's real nodes, left to right (at least one).
        leaves: the width of the padded layer, a power of two no smaller than
            ``len(hashes)``; by default the smallest such power.
        pad: the value of one missing node of this layer: 32 zero bytes for
            block hashes (the default), ``pad_hash(blocks_per_piece)`` for a piece
            layer. Higher up, padding is the hash of two pads of the level below.

    >>> a, b, c = (bytes([n]) * 32 for n in b"abc")
    >>> merkle_root([a]) == a
    True
    >>> ab = sha256(a + b).digest()
    >>> merkle_root([a, b, c]) == sha256(ab + sha256(c + bytes(32)).digest()).digest()
    True

    Raises:
        ValueError: no hashes, a hash or ``pad`` not 32 bytes, or ``leaves`` not a
            power of two at least ``len(hashes)``.
    """
    if not hashes:
        raise ValueError("a merkle root needs at least one hash")
    layer = _join_hashes(hashes, "hashes")
    if len(pad) != HASH_SIZE:
        raise ValueError(f"pad must be {HASH_SIZE} bytes, not {len(pad)}")
    if leaves is None:
        height = _height(len(hashes))
    else:
        if type(leaves) is not int or leaves < len(hashes) or leaves & (leaves - 1):
            raise ValueError(
                f"leaves must be a power of two of at least {len(hashes)}, not {leaves!r}"
            )
        height = leaves.bit_length() - 1
    return _layer_root(layer, height, bytes(pad))


# _ZERO_PADS[k]: the root of an all-zero subtree of 2**k leaves (a missing node at level k).
_ZERO_PADS: Final = [pad_hash(1 << level) for level in range(40)]


def subtree_root(leaves: list[bytes], width: int) -> bytes:
    """The root over block ``leaves`` padded with zero leaves to ``width`` (a power of two).

    The fast path of :func:`merkle_root` for trusted input (no argument checks),
    for callers that build a tree per piece while holding the GIL, such as
    torrent creation: it is about twice as fast.

    >>> leaves = block_hashes(bytes(40000))
    >>> subtree_root(leaves, 4) == merkle_root(leaves, leaves=4)
    True
    """
    nodes = leaves
    level = 0
    while width > 1:
        if len(nodes) & 1:
            nodes = [*nodes, _ZERO_PADS[level]]
        pairs = iter(nodes)
        nodes = [sha256(left + right).digest() for left, right in zip(pairs, pairs, strict=True)]
        level += 1
        width >>= 1
    return nodes[0]


def block_hashes(data: Buffer) -> list[bytes]:
    """The leaf hashes of a whole file: SHA-256 of each 16 KiB block.

    The last block is hashed at its real length; an empty file has no blocks.

    >>> [h.hex()[:8] for h in block_hashes(b"abc")]
    ['ba7816bf']
    >>> len(block_hashes(bytes(2 * BLOCK_SIZE + 1))), block_hashes(b"")
    (3, [])
    """
    view = _bytes_view(data)
    return [sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


def pieces_root(data: Buffer) -> bytes | None:
    """The ``pieces root`` of a whole file held in memory, or None if it is empty.

    For large files stream them through :class:`MerkleFileHasher` instead.

    >>> pieces_root(b"abc") == sha256(b"abc").digest()    # one block: the leaf itself
    True
    >>> pieces_root(b"") is None
    True
    """
    return _file_root(_bytes_view(data))


def _file_root(view: memoryview) -> bytes | None:
    leaves = _leaf_layer(view)
    if not leaves:
        return None
    return _layer_root(leaves, _height(len(leaves) // HASH_SIZE), _ZERO)


def piece_layer(block_hashes: Sequence[bytes], piece_length: int) -> bytes:
    """The piece layer a torrent carries for a file, from the file's block hashes.

    The result is one 32-byte hash per piece of the file, concatenated (the
    trailing nodes that only balance the tree are left out); each is the root
    of that piece's blocks padded with zero leaves to ``piece_length``, as
    :func:`piece_hash` computes from the data. A file no larger than one piece
    has no piece layer: the result is then ``b""``.

    >>> leaves = block_hashes(bytes(5 * BLOCK_SIZE))
    >>> len(piece_layer(leaves, 2 * BLOCK_SIZE)) // HASH_SIZE
    3
    >>> piece_layer(leaves, 8 * BLOCK_SIZE)
    b''

    Raises:
        ValueError: ``piece_length`` is not a power of two of at least 16 KiB, or
            a hash is not 32 bytes.
    """
    levels = _piece_levels(piece_length)
    leaves = _join_hashes(block_hashes, "block hashes")
    if len(block_hashes) <= 1 << levels:
        return b""
    return _reduce_levels(leaves, 0, levels)


def _reduce_levels(layer: Buffer, level: int, target: int) -> bytes:
    """Hash a layer of real nodes at ``level`` up to the real nodes at ``target``."""
    for k in range(level, target):
        layer = _parents(layer, _pad(k))
    return bytes(layer)


def pieces_root_from_layer(layer: Buffer, piece_length: int, file_length: int) -> bytes:
    """Recompute a file's ``pieces root`` from its piece layer.

    The layer is padded to a power of two with :func:`pad_hash` of one piece's
    blocks, then hashed up to the root. For a file no larger than one piece the
    only piece hash *is* the pieces root, so a one-hash layer is returned as is.

    >>> data = bytes(3 * BLOCK_SIZE)
    >>> layer = piece_layer(block_hashes(data), BLOCK_SIZE)
    >>> pieces_root_from_layer(layer, BLOCK_SIZE, len(data)) == pieces_root(data)
    True

    Raises:
        ValueError: ``piece_length`` is not a power of two of at least 16 KiB,
            ``file_length`` is not positive, or the layer does not hold exactly
            one hash per piece.
    """
    levels = _piece_levels(piece_length)
    _check_file_length(file_length)
    count = _num_pieces(file_length, piece_length)
    view = _bytes_view(layer)
    if len(view) != count * HASH_SIZE:
        raise ValueError(
            f"a file of {file_length} bytes in pieces of {piece_length} needs a piece layer "
            f"of {count} hashes ({count * HASH_SIZE} bytes), not {len(view)} bytes"
        )
    return _layer_root(view, _height(count), _pad(levels))


def verify_piece_layer(
    layer: Buffer, pieces_root: Buffer, piece_length: int, file_length: int
) -> bool:
    """Whether ``layer`` is the right piece layer for a file with ``pieces_root``.

    Both byte strings are untrusted: a layer of the wrong size, or a root that
    is not 32 bytes, gives False. A file no larger than one piece needs no
    layer: ``b""`` is accepted for it, and so is a one-hash layer equal to the
    root, as a one-hash layer hashes to its hash. BEP 52 gives layers only to
    files larger than a piece, and libtorrent 2.1.1 refuses a torrent whose
    ``piece layers`` hold one for a smaller file (``torrent_invalid_piece_layer``,
    a layer for no file that needs one; 2.0 ignored it): this function says only
    whether the layer fits the root, and :class:`~bip_metainfo.Metainfo` still
    accepts such a torrent, whose extra layer tells nothing wrong.

    >>> data = bytes(3 * BLOCK_SIZE)
    >>> layer = piece_layer(block_hashes(data), BLOCK_SIZE)
    >>> verify_piece_layer(layer, pieces_root(data), BLOCK_SIZE, len(data))
    True
    >>> verify_piece_layer(layer[:-1], pieces_root(data), BLOCK_SIZE, len(data))
    False

    Raises:
        ValueError: only for invalid arguments: ``piece_length`` not a power of
            two of at least 16 KiB, or ``file_length`` not positive.
    """
    _piece_levels(piece_length)
    _check_file_length(file_length)
    if not _is_hash(pieces_root) or not _is_buffer(layer):
        return False
    view = _bytes_view(layer)
    root = bytes(pieces_root)
    count = _num_pieces(file_length, piece_length)
    if count == 1 and not view:
        return True
    if len(view) != count * HASH_SIZE:
        return False
    return pieces_root_from_layer(view, piece_length, file_length) == root


def piece_hash(piece_data: Buffer, piece_length: int) -> bytes:
    """The hash of one piece: the root of its blocks padded with zero leaves to a piece.

    This is the piece's entry in the piece layer, the value a downloader checks
    a received piece against, the last (shorter) piece of a file included.
    For a file no larger than one piece the value to compare against is the
    pieces root, which pads only to the file's own power of two of blocks (use
    :func:`pieces_root`, or :func:`verify_piece` for either case).

    >>> piece_hash(bytes(BLOCK_SIZE), BLOCK_SIZE) == sha256(bytes(BLOCK_SIZE)).digest()
    True
    >>> leaf = sha256(b"abc").digest()
    >>> piece_hash(b"abc", 2 * BLOCK_SIZE) == sha256(leaf + bytes(32)).digest()
    True

    Raises:
        ValueError: ``piece_length`` is not a power of two of at least 16 KiB, or
            the data is empty or longer than a piece.
    """
    levels = _piece_levels(piece_length)
    view = _bytes_view(piece_data)
    if not 0 < len(view) <= piece_length:
        raise ValueError(f"a piece holds 1 to {piece_length} bytes, not {len(view)}")
    return _layer_root(_leaf_layer(view), levels, _ZERO)


def verify_piece(
    piece_data: Buffer,
    piece_index: int,
    *,
    pieces_root: Buffer,
    piece_layer: Buffer,
    piece_length: int,
    file_length: int,
) -> bool:
    """Whether ``piece_data`` is piece ``piece_index`` of a file (counted within the file).

    A file larger than one piece is checked against its piece layer (which
    must already have passed :func:`verify_piece_layer`); a file of one piece
    against its pieces root (its ``piece_layer`` is then ignored and may be
    ``b""``). Data of the wrong length, or a layer or root of the wrong size,
    give False.

    >>> data = bytes(3 * BLOCK_SIZE)
    >>> root, layer = pieces_root(data), piece_layer(block_hashes(data), BLOCK_SIZE)
    >>> verify_piece(bytes(BLOCK_SIZE), 2, pieces_root=root, piece_layer=layer,
    ...              piece_length=BLOCK_SIZE, file_length=len(data))
    True
    >>> verify_piece(b"x" * BLOCK_SIZE, 2, pieces_root=root, piece_layer=layer,
    ...              piece_length=BLOCK_SIZE, file_length=len(data))
    False

    Raises:
        ValueError: invalid arguments: ``piece_length`` not a power of two of at
            least 16 KiB, ``file_length`` not positive, or ``piece_index`` not a
            piece of the file.
    """
    _piece_levels(piece_length)
    _check_file_length(file_length)
    count = _num_pieces(file_length, piece_length)
    if type(piece_index) is not int or not 0 <= piece_index < count:
        raise ValueError(f"piece index must be in [0, {count}), not {piece_index!r}")
    view = _bytes_view(piece_data)
    if len(view) != min(piece_length, file_length - piece_index * piece_length):
        return False
    if count == 1:
        return _is_hash(pieces_root) and bytes(pieces_root) == _file_root(view)
    if not _is_buffer(piece_layer):
        return False
    layer = _bytes_view(piece_layer)
    if len(layer) != count * HASH_SIZE:
        return False
    start = piece_index * HASH_SIZE
    return piece_hash(view, piece_length) == layer[start : start + HASH_SIZE]


class MerkleFileHasher:
    """Streams a file of any size into its ``pieces root`` and piece layer.

    Feed the file's bytes with :meth:`update`, in chunks of any size, then read
    :attr:`root` and :meth:`piece_layer`. Whole blocks are hashed straight from
    the caller's buffer (no copy); only a partial block is buffered. Memory is
    32 bytes per ``piece_length`` of file: by default (16 KiB) every block hash
    is kept, so the piece layer can be had for any piece length; a hasher made
    with the torrent's piece length folds each piece as soon as it is complete
    and keeps one hash per piece.

    Reading results does not end the stream: more data may follow.

    >>> hasher = MerkleFileHasher()
    >>> for chunk in (b"x" * 10000, b"x" * 30000):
    ...     hasher.update(chunk)
    >>> hasher.root == pieces_root(b"x" * 40000)
    True
    >>> hasher.piece_layer(16384) == piece_layer(block_hashes(b"x" * 40000), 16384)
    True

    Raises:
        ValueError: ``piece_length`` is not a power of two of at least 16 KiB.
    """

    __slots__ = ("_layer", "_length", "_levels", "_pending", "_piece_length", "_tail")

    def __init__(self, piece_length: int = BLOCK_SIZE) -> None:
        self._levels = _piece_levels(piece_length)
        self._piece_length = piece_length
        self._layer = bytearray()  # the finished nodes at level _levels
        self._pending = bytearray()  # leaves of the unfinished piece: fewer than a piece's
        self._tail = bytearray()  # the unfinished block: fewer than BLOCK_SIZE bytes
        self._length = 0

    @property
    def piece_length(self) -> int:
        """The smallest piece length this hasher can give a piece layer for."""
        return self._piece_length

    @property
    def length(self) -> int:
        """How many bytes have been fed in."""
        return self._length

    @property
    def num_blocks(self) -> int:
        """How many 16 KiB blocks (leaves) the data so far makes, the last one partial."""
        return -(-self._length // BLOCK_SIZE)

    def update(self, data: Buffer) -> None:
        """Feed the next bytes of the file."""
        view = _bytes_view(data)
        size = len(view)
        if not size:
            return
        self._length += size
        tail = self._tail
        start = 0
        if tail:
            start = min(BLOCK_SIZE - len(tail), size)
            tail += view[:start]
            if len(tail) < BLOCK_SIZE:
                return
            self._add_leaves(sha256(tail).digest())
            tail.clear()
        end = start + (size - start) // BLOCK_SIZE * BLOCK_SIZE
        if end > start:
            self._add_leaves(_leaf_layer(view[start:end]))
        if end < size:
            tail += view[end:]

    def _add_leaves(self, leaves: bytes) -> None:
        if not self._levels:
            self._layer += leaves
            return
        piece_size = HASH_SIZE << self._levels
        pending = self._pending
        view = memoryview(leaves)
        start = 0
        if pending:
            start = min(piece_size - len(pending), len(view))
            pending += view[:start]
            if len(pending) < piece_size:
                return
            self._layer += _layer_root(pending, self._levels, _ZERO)
            pending.clear()
        end = start + (len(view) - start) // piece_size * piece_size
        for i in range(start, end, piece_size):
            self._layer += _layer_root(view[i : i + piece_size], self._levels, _ZERO)
        pending += view[end:]

    def _unfinished_leaves(self) -> bytes:
        """Leaf hashes of the unfinished piece, with the unfinished block hashed as is."""
        leaves = bytes(self._pending)
        if self._tail:
            leaves += sha256(self._tail).digest()
        return leaves

    def _kept_layer(self) -> Buffer:
        """Every node of level ``_levels`` so far, the unfinished piece's included.

        Without an unfinished piece this is a view of the hasher's own layer (no
        copy): use it before the next :meth:`update`.
        """
        unfinished = self._unfinished_leaves()
        if unfinished:
            return b"".join((self._layer, _layer_root(unfinished, self._levels, _ZERO)))
        return memoryview(self._layer)

    @property
    def root(self) -> bytes | None:
        """The ``pieces root`` of the data so far, or None while it is empty."""
        blocks = self.num_blocks
        if not blocks:
            return None
        if blocks <= 1 << self._levels:
            # Within the first piece: the tree only spans the file's own blocks.
            unfinished = self._unfinished_leaves()
            if not unfinished:
                return bytes(self._layer)
            return _layer_root(unfinished, _height(blocks), _ZERO)
        layer = self._kept_layer()
        return _layer_root(layer, _height(len(layer) // HASH_SIZE), _pad(self._levels))

    def piece_layer(self, piece_length: int | None = None) -> bytes:
        """The piece layer for ``piece_length`` (by default the hasher's own).

        ``b""`` when the data so far is no larger than one piece, as a torrent
        then has no piece layer for the file.

        Raises:
            ValueError: ``piece_length`` is not a power of two of at least 16 KiB,
                or is smaller than the hasher's own piece length.
        """
        levels = self._levels if piece_length is None else _piece_levels(piece_length)
        if levels < self._levels:
            raise ValueError(
                f"this hasher keeps one hash per {self._piece_length} bytes; it cannot give "
                f"a piece layer for pieces of {piece_length}"
            )
        if self.num_blocks <= 1 << levels:
            return b""
        return _reduce_levels(self._kept_layer(), self._levels, levels)


class MerkleTree:
    """A file's whole merkle tree with every level kept, to serve hashes and proofs.

    It holds about 64 bytes per 16 KiB block of the file. Levels count up from
    the leaves (level 0, the block hashes) to the root (level :attr:`depth`);
    each level is padded to ``2 ** (depth - level)`` nodes with :func:`pad_hash`
    of that level.

    >>> tree = MerkleTree.from_data(bytes(3 * BLOCK_SIZE))
    >>> tree.depth, tree.num_blocks, tree.num_leaves
    (2, 3, 4)
    >>> tree.root == pieces_root(bytes(3 * BLOCK_SIZE))
    True
    >>> tree.node(0, 3) == bytes(32)          # a padding leaf
    True
    >>> proof = tree.proof(0, 2)              # uncles of block 2, up to the root
    >>> verify_block(bytes(BLOCK_SIZE), 2, proof, pieces_root=tree.root,
    ...              file_length=3 * BLOCK_SIZE)
    True

    Raises:
        ValueError: no block hashes (an empty file has no tree), or one not 32 bytes.
    """

    __slots__ = ("_levels",)

    _levels: list[bytes]

    def __init__(self, block_hashes: Sequence[bytes]) -> None:
        if not block_hashes:
            raise ValueError("an empty file has no merkle tree")
        self._build(_join_hashes(block_hashes, "block hashes"))

    @classmethod
    def from_data(cls, data: Buffer) -> MerkleTree:
        """Build the tree of a whole file held in memory.

        Raises:
            ValueError: the data is empty.
        """
        leaves = _leaf_layer(_bytes_view(data))
        if not leaves:
            raise ValueError("an empty file has no merkle tree")
        tree = cls.__new__(cls)
        tree._build(leaves)
        return tree

    def _build(self, leaves: bytes) -> None:
        levels = [leaves]
        for k in range(_height(len(leaves) // HASH_SIZE)):
            levels.append(_parents(levels[-1], _pad(k)))
        self._levels = levels

    @property
    def root(self) -> bytes:
        """The file's ``pieces root``."""
        return self._levels[-1]

    @property
    def depth(self) -> int:
        """The root's level: log2 of the padded number of leaves."""
        return len(self._levels) - 1

    @property
    def num_blocks(self) -> int:
        """The number of real leaves: the file's 16 KiB blocks."""
        return len(self._levels[0]) // HASH_SIZE

    @property
    def num_leaves(self) -> int:
        """The number of leaves with padding: a power of two."""
        return 1 << self.depth

    def _check_level(self, level: int) -> None:
        if type(level) is not int or not 0 <= level <= self.depth:
            raise ValueError(f"level must be in [0, {self.depth}], not {level!r}")

    def layer(self, level: int) -> bytes:
        """The real (non-padding) nodes of ``level``, concatenated."""
        self._check_level(level)
        return self._levels[level]

    def node(self, level: int, index: int) -> bytes:
        """Node ``index`` of ``level``; past the real nodes, that level's padding.

        Raises:
            ValueError: the level or index is outside the padded tree.
        """
        self._check_level(level)
        width = 1 << (self.depth - level)
        if type(index) is not int or not 0 <= index < width:
            raise ValueError(f"index must be in [0, {width}) at level {level}, not {index!r}")
        layer = self._levels[level]
        start = index * HASH_SIZE
        if start < len(layer):
            return layer[start : start + HASH_SIZE]
        return _pad(level)

    def piece_layer(self, piece_length: int) -> bytes:
        """The piece layer a torrent carries for this file (``b""`` for one piece or less).

        Raises:
            ValueError: ``piece_length`` is not a power of two of at least 16 KiB.
        """
        levels = _piece_levels(piece_length)
        if self.num_blocks <= 1 << levels:
            return b""
        return self._levels[levels]

    def proof(self, level: int, index: int, count: int | None = None) -> list[bytes]:
        """The uncle hashes that prove node ``index`` of ``level``, lowest first.

        The first is the node's sibling, the next its parent's sibling, and so on:
        ``count`` of them, by default all the way up to the root.
        :func:`root_from_proof` recomputes the ancestor they lead to.

        Raises:
            ValueError: the node is outside the tree, or ``count`` goes past the root.
        """
        self.node(level, index)
        top = self.depth - level
        if count is None:
            count = top
        elif not 0 <= count <= top:
            raise ValueError(f"count must be in [0, {top}] at level {level}, not {count!r}")
        return [self.node(level + j, (index >> j) ^ 1) for j in range(count)]

    def hashes(self, base_layer: int, index: int, length: int, proof_layers: int) -> list[bytes]:
        """The hashes a BEP 52 ``hashes`` message answers a ``hash request`` with.

        ``length`` nodes of ``base_layer`` from ``index`` on (padding nodes
        included), then the uncle hashes of the ``proof_layers`` ancestor layers
        above it, lowest first, leaving out the layers the requested nodes
        prove by themselves (:func:`proof_uncle_count` gives how many remain).

        Raises:
            HashRequestError: (a ``ValueError``) a request BEP 52 forbids or this tree
                cannot answer:
                ``base_layer`` not below the root, ``length`` not a power of two
                of at least 2, ``index`` not a multiple of ``length``, the range
                past the end of the padded layer, or ``proof_layers`` reaching the
                root (it has no sibling).
        """
        uncles = _check_tree_request(
            self.depth, base_layer, index, length, proof_layers, min_length=2
        )
        span = length.bit_length() - 1
        base = [self.node(base_layer, index + i) for i in range(length)]
        return base + self.proof(base_layer + span, index >> span, uncles)


_MAX_FIELD: Final = 0xFFFFFFFF  # every hash request field is a uint32 on the wire


class HashRequestError(MetainfoBaseError):
    """A BEP 52 hash request whose geometry does not fit the file's merkle tree.

    A peer that sends one gets a ``hash reject``; a request of our own that raises
    it is a bug.

    Attributes:
        reason: what is wrong, for a log line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_field(name: str, value: object, low: int = 0) -> int:
    if type(value) is not int or not low <= value <= _MAX_FIELD:
        raise HashRequestError(f"{name} must be an integer in [{low}, {_MAX_FIELD}], not {value!r}")
    return value


def _uncle_count(length: int, proof_layers: int, *, min_length: int) -> int:
    """How many uncle hashes follow ``length`` requested ones (BEP 52), the two checked.

    The requested nodes prove the ``log2(length)`` levels of their own subtree, so the
    first ``log2(length) - 1`` proof layers need no uncle.
    """
    _check_field("length", length, min_length)
    _check_field("proof layers", proof_layers)
    if length & (length - 1):
        raise HashRequestError(f"length must be a power of two, not {length}")
    return max(0, proof_layers - (length.bit_length() - 1) + 1)


def _check_tree_request(
    depth: int, base_layer: int, index: int, length: int, proof_layers: int, *, min_length: int = 1
) -> int:
    """Refuse a hash request that does not fit a tree whose root is at level ``depth``.

    Returns how many uncle hashes the reply carries after the ``length`` requested ones.
    ``min_length`` is 2 for BEP 52's letter; libtorrent also asks for (and accepts) 1.

    Raises:
        HashRequestError: the base layer is not below the root, ``length`` is not a power
            of two of at least ``min_length``, ``index`` is not a multiple of it, the range
            passes the end of the padded layer, or ``proof_layers`` reaches past the level
            below the root (the root has no sibling).
    """
    _check_field("base layer", base_layer)
    _check_field("index", index)
    uncles = _uncle_count(length, proof_layers, min_length=min_length)
    if base_layer >= depth:
        raise HashRequestError(
            f"base layer {base_layer} is not below the root (layer {depth}) of the tree"
        )
    if index % length:
        raise HashRequestError(f"index {index} is not a multiple of length {length}")
    width = 1 << (depth - base_layer)
    if index + length > width:
        raise HashRequestError(
            f"hashes {index}..{index + length - 1} pass the end of layer {base_layer} "
            f"({width} nodes with padding)"
        )
    if proof_layers >= depth - base_layer:
        raise HashRequestError(
            f"proof layers must be below {depth - base_layer} for base layer {base_layer}, "
            f"not {proof_layers}"
        )
    return uncles


def proof_uncle_count(length: int, proof_layers: int) -> int:
    """How many uncle hashes follow the ``length`` base hashes of a ``hashes`` message.

    BEP 52: the first ``log2(length) - 1`` proof layers need no uncle (the
    requested hashes prove them), so this is ``proof_layers - log2(length) + 1``,
    or 0 if that is negative.

    >>> proof_uncle_count(2, 3), proof_uncle_count(512, 5), proof_uncle_count(512, 10)
    (3, 0, 2)

    Raises:
        ValueError: ``length`` is not a power of two of at least 2, or
            ``proof_layers`` is negative.
    """
    return _uncle_count(length, proof_layers, min_length=2)


def root_from_proof(hashes: Sequence[bytes], index: int, uncles: Sequence[bytes]) -> bytes:
    """Recompute an ancestor from a run of nodes of one level and their uncle hashes.

    ``hashes`` are ``len(hashes)`` consecutive nodes of one level (a power of
    two of them, padding nodes included) starting at ``index``, a multiple of
    that count. They hash up to the root of their subtree; each uncle in turn
    (the subtree root's sibling first) then takes one more step up. The result
    is the node at ``log2(len(hashes)) + len(uncles)`` levels above theirs, index
    ``index >> that``: compare it with a trusted hash there, the pieces root
    or a piece layer entry, to accept or reject the hashes.

    >>> tree = MerkleTree.from_data(bytes(5 * BLOCK_SIZE))
    >>> answer = tree.hashes(0, 4, 2, tree.depth - 1)   # blocks 4 and 5, proof to the root
    >>> base, uncles = answer[:2], answer[2:]
    >>> root_from_proof(base, 4, uncles) == tree.root
    True

    Raises:
        ValueError: no hashes or not a power of two of them, ``index`` not a
            non-negative multiple of their count, or a hash not 32 bytes.
    """
    count = len(hashes)
    if not count or count & (count - 1):
        raise ValueError(f"the number of hashes must be a power of two, not {count}")
    if type(index) is not int or index < 0 or index % count:
        raise ValueError(f"index must be a non-negative multiple of {count}, not {index!r}")
    span = count.bit_length() - 1
    node = _layer_root(_join_hashes(hashes, "hashes"), span, _ZERO)
    position = index >> span
    for uncle in uncles:
        if len(uncle) != HASH_SIZE:
            raise ValueError(f"uncle hashes must be {HASH_SIZE} bytes each, not {len(uncle)}")
        node = sha256(node + uncle if position % 2 == 0 else bytes(uncle) + node).digest()
        position >>= 1
    return node


def verify_block(
    block_data: Buffer,
    block_index: int,
    proof: Sequence[bytes],
    *,
    pieces_root: Buffer,
    file_length: int,
) -> bool:
    """Whether ``block_data`` is block ``block_index`` of a file, proven up to its root.

    ``proof`` holds the block's uncle hashes from its sibling up to the level
    below the root (as :meth:`MerkleTree.proof` gives them), one per level of
    the tree. A block of the wrong length, a proof of the wrong size, or a
    root that is not 32 bytes give False.

    Raises:
        ValueError: invalid arguments: ``file_length`` not positive, or
            ``block_index`` not a block of the file.
    """
    _check_file_length(file_length)
    blocks = -(-file_length // BLOCK_SIZE)
    if type(block_index) is not int or not 0 <= block_index < blocks:
        raise ValueError(f"block index must be in [0, {blocks}), not {block_index!r}")
    view = _bytes_view(block_data)
    if len(view) != min(BLOCK_SIZE, file_length - block_index * BLOCK_SIZE):
        return False
    if not _is_hash(pieces_root) or len(proof) != _height(blocks):
        return False
    if not all(_is_hash(uncle) for uncle in proof):
        return False
    return root_from_proof([sha256(view).digest()], block_index, proof) == bytes(pieces_root)
