"""BEP 52 hash requests: answer them from a file's piece layer, check the answers.

A v2 peer that lacks a file's piece layer (it started from a magnet link, so its
info dictionary has only each file's ``pieces root``) asks another for it with a
``hash request``: ``length`` consecutive nodes of one level of the file's merkle
tree (the *base layer*), from ``index`` on, and ``proof_layers`` levels of proof
above them. The ``hashes`` reply carries those nodes, padding nodes past the
file's end included, then the *uncle* hashes, lowest first, that take the root
of the requested nodes up towards the ``pieces root``.

Layers count up from the 16 KiB leaves (layer 0); the piece layer is layer
``log2(piece_length / 16 KiB)``; the root is at the tree's depth,
``ceil(log2(number of blocks))``. A torrent (or a seeder) keeps the piece layer,
not the leaves, so :class:`PieceLayerTree` answers requests on the piece layer
and the layers above it, and declines (``None``) those below, which need block
hashes.

The geometry a request must have is BEP 52's and libtorrent's
(``validate_hash_request``): a base layer below the root, ``length`` a power of
two, ``index`` a multiple of ``length``, the range inside the padded layer, and
fewer proof layers than there are levels above the base layer. BEP 52 asks for
``length >= 2``, but libtorrent asks for a single hash when a file's last chunk
of 512 piece hashes holds one piece, so a length of 1 is accepted too. The
number of uncle hashes is ``max(0, proof_layers - log2(length) + 1)``: the
requested nodes prove their own subtree's levels. With the largest
``proof_layers`` the proof reaches the ``pieces root``, and :func:`verify_hashes`
checks such a reply against it.

>>> from bip_metainfo._merkle import block_hashes, piece_layer, pieces_root
>>> data = bytes(5 * 16384)
>>> layer = piece_layer(block_hashes(data), 16384)       # five pieces of one block
>>> tree = PieceLayerTree(layer, piece_length=16384, file_length=len(data))
>>> request = dict(base_layer=0, index=4, length=2, proof_layers=full_proof_layers(len(data), 0, 2))
>>> reply = tree.hashes(**request)
>>> len(reply) // 32                                      # two hashes, two uncles
4
>>> verify_hashes(reply, pieces_root=pieces_root(data), file_length=len(data), **request)
True
"""

from __future__ import annotations

from ._merkle import (
    BLOCK_SIZE,
    HASH_SIZE,
    HashRequestError,
    _check_tree_request,
    _pad,
    _parents,
    _piece_levels,
    _uncle_count,
    root_from_proof,
)

__all__ = [
    "HashRequestError",
    "PieceLayerTree",
    "check_hash_request",
    "full_proof_layers",
    "hash_reply_count",
    "tree_depth",
    "verify_hashes",
]

Buffer = bytes | bytearray | memoryview


def tree_depth(file_length: int) -> int:
    """The level of a file's ``pieces root``: ``ceil(log2(blocks))``, 0 for one block.

    >>> tree_depth(16384), tree_depth(16385), tree_depth(5 * 16384)
    (0, 1, 3)

    Raises:
        ValueError: ``file_length`` is not a positive integer (an empty file has no tree).
    """
    if type(file_length) is not int or file_length <= 0:
        raise ValueError(f"file length must be a positive integer, not {file_length!r}")
    blocks = -(-file_length // BLOCK_SIZE)
    return (blocks - 1).bit_length()


def hash_reply_count(length: int, proof_layers: int) -> int:
    """How many hashes a ``hashes`` reply carries: ``length`` plus the uncles.

    >>> hash_reply_count(512, 3), hash_reply_count(2, 3), hash_reply_count(1, 0)
    (512, 5, 2)

    Raises:
        HashRequestError: ``length`` is not a positive power of two, or
            ``proof_layers`` is negative.
    """
    return length + _uncle_count(length, proof_layers, min_length=1)


def full_proof_layers(file_length: int, base_layer: int, length: int) -> int:
    """The ``proof_layers`` whose uncles reach the ``pieces root`` (the largest allowed).

    >>> full_proof_layers(5 * 16384, 0, 2)      # depth 3: proof layers 0, 1, 2
    2

    Raises:
        HashRequestError: ``base_layer`` is not below the root, or ``length`` is
            not a power of two that fits the layer.
        ValueError: ``file_length`` is not positive.
    """
    depth = tree_depth(file_length)
    check_hash_request(file_length, base_layer, 0, length, 0)
    return depth - base_layer - 1


def check_hash_request(
    file_length: int, base_layer: int, index: int, length: int, proof_layers: int
) -> None:
    """Refuse a hash request whose geometry does not fit a file of ``file_length`` bytes.

    >>> check_hash_request(5 * 16384, 0, 4, 2, 2)
    >>> check_hash_request(5 * 16384, 0, 3, 2, 2)
    Traceback (most recent call last):
    ...
    bip_metainfo._merkle.HashRequestError: index 3 is not a multiple of length 2

    Raises:
        HashRequestError: the base layer is not below the root, ``length`` is not
            a positive power of two, ``index`` is not a multiple of it, the range
            passes the end of the padded layer, or ``proof_layers`` reaches past
            the level below the root.
        ValueError: ``file_length`` is not positive.
    """
    _check_tree_request(tree_depth(file_length), base_layer, index, length, proof_layers)


class PieceLayerTree:
    """A file's merkle tree from its piece layer up, to answer hash requests.

    It keeps every level from the piece layer to the root: about twice the piece
    layer's size. Requests on those levels are answered; requests below the piece
    layer need the block hashes, which a piece layer cannot give:
    :meth:`hashes` returns ``None`` for them.

    Args:
        layer: the file's piece layer (one 32-byte hash per piece, concatenated),
            as a torrent's ``piece layers`` holds it.
        piece_length: the torrent's piece length.
        file_length: the file's length; it must be larger than one piece (a
            smaller file has no piece layer).

    Raises:
        ValueError: the piece length is not a power of two of at least 16 KiB, the
            file is no larger than one piece, or the layer does not hold exactly
            one hash per piece.
    """

    __slots__ = ("_depth", "_file_length", "_levels", "_piece_level")

    def __init__(self, layer: Buffer, *, piece_length: int, file_length: int) -> None:
        piece_level = _piece_levels(piece_length)
        depth = tree_depth(file_length)
        if file_length <= piece_length:
            raise ValueError(
                f"a file of {file_length} bytes fits one piece of {piece_length}: it has no "
                "piece layer"
            )
        pieces = -(-file_length // piece_length)
        nodes = bytes(layer)
        if len(nodes) != pieces * HASH_SIZE:
            raise ValueError(
                f"a file of {file_length} bytes in pieces of {piece_length} has a piece layer "
                f"of {pieces} hashes ({pieces * HASH_SIZE} bytes), not {len(nodes)} bytes"
            )
        levels = [nodes]
        for level in range(piece_level, depth):
            levels.append(_parents(levels[-1], _pad(level)))
        self._levels = levels
        self._piece_level = piece_level
        self._depth = depth
        self._file_length = file_length

    @property
    def root(self) -> bytes:
        """The file's ``pieces root``, as the piece layer gives it."""
        return self._levels[-1]

    @property
    def depth(self) -> int:
        """The root's layer (the leaves are layer 0)."""
        return self._depth

    @property
    def piece_level(self) -> int:
        """The piece layer's number: ``log2(piece_length / 16 KiB)``."""
        return self._piece_level

    @property
    def file_length(self) -> int:
        """The file's length in bytes."""
        return self._file_length

    def _node(self, level: int, index: int) -> bytes:
        nodes = self._levels[level - self._piece_level]
        start = index * HASH_SIZE
        if start < len(nodes):
            return nodes[start : start + HASH_SIZE]
        return _pad(level)

    def hashes(self, base_layer: int, index: int, length: int, proof_layers: int) -> bytes | None:
        """The concatenated hashes of the ``hashes`` reply to this request, or ``None``.

        ``length`` nodes of ``base_layer`` from ``index`` on (padding nodes past the
        file's end are the root of an all-zero subtree of that height, as BEP 52
        pads the tree), then the uncle hashes of the levels above them, lowest
        first (:func:`hash_reply_count` says how many in all). ``None`` when
        ``base_layer`` is below the piece layer: answering needs block hashes.

        Raises:
            HashRequestError: the request's geometry does not fit the file
                (:func:`check_hash_request`).
        """
        check_hash_request(self._file_length, base_layer, index, length, proof_layers)
        if base_layer < self._piece_level:
            return None
        span = length.bit_length() - 1
        uncles = hash_reply_count(length, proof_layers) - length
        nodes = self._levels[base_layer - self._piece_level]
        start = index * HASH_SIZE
        real = nodes[start : start + length * HASH_SIZE]
        parts = [real]
        if len(real) < length * HASH_SIZE:
            parts.append(_pad(base_layer) * (length - len(real) // HASH_SIZE))
        top = index >> span
        level = base_layer + span
        for j in range(uncles):
            parts.append(self._node(level + j, (top >> j) ^ 1))
        return b"".join(parts)


def verify_hashes(
    hashes: Buffer,
    *,
    pieces_root: Buffer,
    file_length: int,
    base_layer: int,
    index: int,
    length: int,
    proof_layers: int,
) -> bool:
    """Whether a ``hashes`` reply is consistent with the file's ``pieces root``.

    The requested nodes are hashed up to their subtree's root, the uncles take it
    the rest of the way, and the result must be ``pieces_root``. A reply of the
    wrong size (a peer's count is never trusted) gives False. The padding nodes
    are checked too, since they are part of the path to the root.

    Raises:
        HashRequestError: the request's geometry does not fit the file, or its
            proof stops below the root (``proof_layers`` smaller than
            :func:`full_proof_layers`), so the root alone cannot check it.
        ValueError: ``file_length`` is not positive.
    """
    check_hash_request(file_length, base_layer, index, length, proof_layers)
    depth = tree_depth(file_length)
    if proof_layers != depth - base_layer - 1:
        raise HashRequestError(
            f"a proof of {proof_layers} layers from layer {base_layer} stops below the root "
            f"(layer {depth}); ask for {depth - base_layer - 1} to check against it"
        )
    view = memoryview(hashes).cast("B")
    count = hash_reply_count(length, proof_layers)
    root = bytes(pieces_root)
    if len(view) != count * HASH_SIZE or len(root) != HASH_SIZE:
        return False
    data = bytes(view)
    base = [data[i : i + HASH_SIZE] for i in range(0, length * HASH_SIZE, HASH_SIZE)]
    uncles = [data[i : i + HASH_SIZE] for i in range(length * HASH_SIZE, len(data), HASH_SIZE)]
    return root_from_proof(base, index, uncles) == root
