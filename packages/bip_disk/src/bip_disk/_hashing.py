"""Piece hashing: what each piece must hash to, and the worker threads that hash.

:class:`PieceVerifier` knows, for one torrent, the hashes every piece must match:
the v1 SHA-1 from ``pieces``, and for v2 and hybrid torrents the BEP 52 merkle
hash of the piece's file bytes against the file's piece layer (or, for a file of
one piece, against its ``pieces root``). A hybrid torrent's piece must match both:
a peer can only fool one hash function at a time if we check one.

A piece is always given in the *v1 view*: ``Info.piece_size(index)`` bytes, pad
file ranges holding zeros. In a v2 or hybrid torrent a piece holds bytes of one
file only, starting at the piece's start (files are piece-aligned), so its v2
data is a prefix of that view.

:class:`HashPool` runs batches of this work on worker threads with a
``CapacityLimiter`` of the core count: :mod:`hashlib` releases the GIL on buffers
of more than 2 KiB, so two threads hash on two cores. Callers batch: one thread
crossing per piece or per batch of pieces, never per 16 KiB block.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple, Unpack

import trio

from bip_metainfo import (
    BLOCK_SIZE,
    HASH_SIZE,
    Info,
    block_hashes,
    merkle_root,
    piece_hash,
    pieces_root,
    verify_piece_layer,
)

from ._errors import TorrentStateError
from ._filesystem import Buffer

__all__ = ["HashPool", "PieceHasher", "PieceVerifier", "V2Target", "default_hash_threads"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


def default_hash_threads() -> int:
    """The number of hashing threads by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class V2Target:
    """What a piece's v2 data must hash to.

    Attributes:
        length: how many bytes of the piece (from its start) are file data.
        expected: the 32-byte hash to match: the file's piece layer entry, or its
            ``pieces root`` when the file fits in one piece.
        whole_file: ``expected`` is the pieces root (the file is one piece or less).
    """

    length: int
    expected: bytes
    whole_file: bool


class PieceVerifier:
    """The hashes one torrent's pieces must match (see the module documentation).

    Build it once per torrent; it is immutable and safe to use from several
    threads at once.

    Raises:
        TorrentStateError: a v2-only torrent lacks the piece layer of a file
            larger than one piece (it could never verify that file), or a given
            layer does not hash to its file's root.
    """

    __slots__ = ("_check_v1", "_check_v2", "_info", "_last_piece", "_last_size", "_layers")

    def __init__(self, info: Info, piece_layers: Mapping[bytes, bytes] | None = None) -> None:
        """Collect ``info``'s hashes and the v2 ``piece_layers`` (keyed by pieces root)."""
        self._info = info
        self._last_piece = info.num_pieces - 1
        self._last_size = info.piece_size(self._last_piece)
        self._check_v1 = info.is_v1
        self._layers: dict[bytes, bytes] = {}
        layers = piece_layers or {}
        complete = True
        if info.is_v2:
            for entry in info.files:
                root = entry.pieces_root
                if root is None or entry.length <= info.piece_length:
                    continue
                layer = layers.get(root)
                if layer is None:
                    complete = False
                    continue
                if not verify_piece_layer(layer, root, info.piece_length, entry.length):
                    raise TorrentStateError(
                        f"the piece layer of {entry.path_str()!r} does not hash to its pieces root"
                    )
                self._layers[root] = bytes(layer)
        if info.is_v2 and not complete and not info.is_v1:
            raise TorrentStateError(
                "a v2 torrent needs the piece layers of its files larger than one piece "
                "(add it from the .torrent's Metainfo, or pass piece_layers)"
            )
        # A hybrid torrent without every layer is checked with SHA-1 alone.
        self._check_v2 = info.is_v2 and complete

    @property
    def info(self) -> Info:
        """The torrent's info dictionary."""
        return self._info

    @property
    def checks_v1(self) -> bool:
        """Whether pieces are checked against v1 SHA-1 hashes."""
        return self._check_v1

    @property
    def checks_v2(self) -> bool:
        """Whether pieces are checked against v2 merkle hashes."""
        return self._check_v2

    def v2_target(self, index: int) -> V2Target | None:
        """What piece ``index``'s file data must hash to in v2, or None for v1-only checks.

        None too for a piece of pad bytes only: a hybrid torrent's v1 list may hold
        a whole piece of padding, which no v2 file tree covers (pads are not in it),
        so its v1 hash alone settles it.

        Raises:
            IndexError: there is no such piece.
        """
        if not self._check_v2:
            return None
        info = self._info
        for part in info.geometry.slices(index):
            entry = info.files[part.file_index]
            if entry.is_pad or entry.length == 0 or entry.pieces_root is None:
                continue
            # v2 files start at piece boundaries: the file data is the piece's prefix.
            piece_length = info.piece_length
            in_file = part.offset // piece_length
            length = min(piece_length, entry.length - in_file * piece_length)
            if entry.length <= piece_length:
                return V2Target(length, entry.pieces_root, whole_file=True)
            layer = self._layers[entry.pieces_root]
            start = in_file * HASH_SIZE
            return V2Target(length, layer[start : start + HASH_SIZE], whole_file=False)
        return None  # pad bytes only (hybrid): v2 has no hash for them

    def piece_size(self, index: int) -> int:
        """The size of piece ``index`` in the v1 view (pad bytes included).

        Raises:
            IndexError: there is no such piece.
        """
        return self._info.piece_size(index)

    def verify(self, index: int, data: Buffer) -> bool:
        """Whether ``data`` (the piece in the v1 view, pads as zeros) is piece ``index``.

        Synchronous and CPU-bound; call it on a worker thread for anything but a
        small piece.

        Raises:
            IndexError: there is no such piece.
        """
        if not 0 <= index <= self._last_piece:
            raise IndexError(f"piece {index} is not in 0..{self._last_piece}")
        view = memoryview(data)
        size = self._last_size if index == self._last_piece else self._info.piece_length
        if view.nbytes != size:
            return False
        if self._check_v1 and hashlib.sha1(view).digest() != self._info.piece_hash(index):
            return False
        target = self.v2_target(index)
        if target is None:
            return self._check_v1
        file_data = view[: target.length]
        if target.whole_file:
            return pieces_root(file_data) == target.expected
        return piece_hash(file_data, self._info.piece_length) == target.expected

    def verify_many(self, pieces: Sequence[tuple[int, Buffer]]) -> list[bool]:
        """:meth:`verify` each ``(index, data)``: one batch for one worker thread."""
        return [self.verify(index, data) for index, data in pieces]

    def hasher(self, index: int) -> PieceHasher:
        """A :class:`PieceHasher` for piece ``index``: :meth:`verify` fed in parts.

        Raises:
            IndexError: there is no such piece.
        """
        if not 0 <= index <= self._last_piece:
            raise IndexError(f"piece {index} is not in 0..{self._last_piece}")
        return PieceHasher(self, index)


class PieceHasher:
    """Verifies one piece given in consecutive parts, holding at most one 16 KiB block of them.

    What :meth:`PieceVerifier.verify` says of the parts joined, for a piece too
    large to hold whole (a check of a torrent of 256 MiB pieces): SHA-1 streams,
    and v2's 16 KiB blocks are hashed as they come (only their 32-byte hashes are
    kept; a block split between two parts waits for its end). Get one from
    :meth:`PieceVerifier.hasher`; not thread-safe.

    >>> from bip_bencode import encode
    >>> data = b"x" * 40000
    >>> info = Info.from_bytes(encode({b"name": b"f", b"piece length": 65536,
    ...     b"length": len(data), b"pieces": hashlib.sha1(data).digest()}))
    >>> hasher = PieceVerifier(info).hasher(0)
    >>> for start in range(0, len(data), 3000):
    ...     hasher.update(data[start : start + 3000])
    >>> hasher.verify()
    True
    """

    __slots__ = (
        "_carry",
        "_expected_size",
        "_index",
        "_leaves",
        "_sha1",
        "_size",
        "_target",
        "_verifier",
    )

    def __init__(self, verifier: PieceVerifier, index: int) -> None:
        """Start hashing piece ``index`` of ``verifier``'s torrent (in range)."""
        self._verifier = verifier
        self._index = index
        self._expected_size = verifier.piece_size(index)
        self._sha1 = hashlib.sha1() if verifier.checks_v1 else None
        self._target = verifier.v2_target(index)
        self._leaves: list[bytes] = []
        self._carry = bytearray()  # the start of a v2 block split between two parts
        self._size = 0

    def update(self, data: Buffer) -> None:
        """Add the next part of the piece."""
        view = memoryview(data).cast("B")
        start = self._size
        self._size += view.nbytes
        if self._sha1 is not None:
            self._sha1.update(view)
        if self._target is None:
            return
        # The v2 file data is the piece's first ``length`` bytes.
        part = view[: max(0, self._target.length - start)]
        if self._carry:
            need = BLOCK_SIZE - len(self._carry)
            self._carry += part[:need]
            part = part[need:]
            if len(self._carry) < BLOCK_SIZE:
                return
            self._leaves.append(hashlib.sha256(self._carry).digest())
            self._carry.clear()
        whole = len(part) - len(part) % BLOCK_SIZE
        self._leaves.extend(block_hashes(part[:whole]))
        self._carry += part[whole:]

    def verify(self) -> bool:
        """Whether the parts given make the piece (the hasher is spent after this)."""
        if self._size != self._expected_size:
            return False
        sha1 = self._sha1
        if sha1 is not None and sha1.digest() != self._verifier.info.piece_hash(self._index):
            return False
        target = self._target
        if target is None:
            return self._verifier.checks_v1
        leaves = self._leaves
        if self._carry:
            leaves.append(hashlib.sha256(self._carry).digest())
            self._carry.clear()
        if not leaves:  # pragma: no cover - a v2 target always has file data
            return False
        if target.whole_file:  # the pieces root: padded to the file's own power of two
            return merkle_root(leaves) == target.expected
        blocks = self._verifier.info.piece_length // BLOCK_SIZE
        return merkle_root(leaves, leaves=blocks) == target.expected


class HashPool:
    """Runs CPU-bound work on at most ``threads`` worker threads at once.

    One pool is shared by every torrent of a :class:`~bip_disk.DiskManager`, so
    checking and downloading together never use more threads than there are cores.
    """

    __slots__ = ("_limiter",)

    def __init__(self, threads: int) -> None:
        """A pool of ``threads`` (at least 1) worker threads."""
        if type(threads) is not int or threads < 1:
            raise ValueError(f"threads must be a positive int, not {threads!r}")
        self._limiter = trio.CapacityLimiter(threads)

    @property
    def threads(self) -> int:
        """How many threads may work at once."""
        return int(self._limiter.total_tokens)

    @property
    def busy(self) -> int:
        """How many threads are working now."""
        return self._limiter.borrowed_tokens

    async def run(self, function: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        """Run ``function(*args)`` on a worker thread once one is free.

        Cancellation waits for the thread to finish (a write or hash is never
        abandoned half done).
        """
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    async def verify(
        self, verifier: PieceVerifier, pieces: Sequence[tuple[int, Buffer]]
    ) -> list[bool]:
        """Verify a batch of pieces on one worker thread."""
        return await self.run(verifier.verify_many, pieces)
