"""Torrent geometry as the swarm brain sees it: pieces, their sizes, their blocks.

API (everything else in bip_select builds on it):

- ``BLOCK_SIZE = 16384``: the size of a request (BEP 3 convention; every client
  asks for 16 KiB blocks and many refuse bigger ones).
- ``Block(piece, begin, length)``: a ``NamedTuple`` naming one request; hashable,
  cheap, and equal to the ``(piece, begin, length)`` triple a wire message carries.
- ``TorrentGeometry(num_pieces, piece_length, total_length=None)``: a torrent whose
  pieces are all ``piece_length`` bytes but the last; ``TorrentGeometry.from_info(info)``
  reads a bip_metainfo ``Info`` (sizes as ``Info.piece_size``: what peers transfer,
  pad bytes included; a v2 or hybrid torrent's files each start on a piece boundary,
  which ``file_pieces`` reflects; BEP 47 pad files' bytes are noted per piece).
  Queries: ``piece_size(p)``, ``blocks_in_piece(p)``, ``block(p, i)``, ``blocks(p)``,
  ``block_index(block)``, ``is_block(block)``, ``file_pieces(f)``, ``num_files``,
  ``piece_data_size(p)`` (the piece's bytes that are file data, not padding),
  ``bytes_left(have)`` (a tracker announce's ``left``: the missing pieces' file data,
  pad bytes excluded), and ``piece_priorities(file_priorities)`` (a piece takes the
  highest priority of its files).
  Lengths: ``total_length`` is the v1 view, every piece's bytes as peers send them (pad
  bytes included); ``data_length`` is the file data a download wants, pad bytes
  excluded (``bytes_left(())``, bip_metainfo's ``Info.total_size``).

Pieces whose size is not ``piece_length`` are few (the last one, and in v2 the last of
each file), and so are pieces holding pad bytes (in a hybrid or padded v1 torrent the last
piece of each file): both are kept in small dicts (one entry per such piece) and every
query is O(1).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ._errors import LocalProtocolError

if TYPE_CHECKING:
    from bip_metainfo import Info

__all__ = ["BLOCK_SIZE", "Block", "TorrentGeometry"]

BLOCK_SIZE = 16384
"""Bytes per block request (the last block of a piece may be shorter)."""


class Block(NamedTuple):
    """One block of one piece: what a request, a piece message or a cancel names.

    >>> Block(3, 16384, 16384)
    Block(piece=3, begin=16384, length=16384)
    """

    piece: int
    begin: int
    length: int


class TorrentGeometry:
    """The pieces of a torrent and the blocks they split into.

    >>> g = TorrentGeometry(3, 32768, 70000)
    >>> [g.piece_size(p) for p in range(3)]
    [32768, 32768, 4464]
    >>> g.blocks(2)
    (Block(piece=2, begin=0, length=4464),)
    >>> g.blocks_in_piece(0)
    2

    A hybrid torrent's pad bytes travel in pieces but are no file's data, so they are
    never part of what is left to download:

    >>> h = TorrentGeometry(3, 32768, pad_bytes={0: 768, 1: 32000})
    >>> h.total_length, h.data_length
    (98304, 65536)
    >>> h.piece_size(1), h.piece_data_size(1)
    (32768, 768)
    >>> h.bytes_left({2})
    32768
    """

    __slots__ = (
        "_file_pieces",
        "_full_blocks",
        "_last_block",
        "_pad",
        "_short",
        "data_length",
        "num_pieces",
        "piece_length",
        "total_length",
    )

    def __init__(
        self,
        num_pieces: int,
        piece_length: int,
        total_length: int | None = None,
        *,
        piece_sizes: Mapping[int, int] | None = None,
        file_pieces: Sequence[range] | None = None,
        pad_bytes: Mapping[int, int] | None = None,
    ) -> None:
        """Describe ``num_pieces`` pieces of ``piece_length`` bytes.

        Args:
            num_pieces: how many pieces the torrent has (at least one).
            piece_length: the nominal piece size (positive).
            total_length: the bytes on the wire; defaults to ``num_pieces *
                piece_length``. Without ``piece_sizes`` the last piece holds what is
                left: ``total_length - (num_pieces - 1) * piece_length``.
            piece_sizes: the sizes of the pieces that are not ``piece_length`` long
                (v2 torrents: the last piece of each file). When given, it is the
                whole truth about short pieces and ``total_length`` is their sum.
            file_pieces: for each file (indexed as the torrent lists them), the range
                of pieces holding its bytes; empty for empty files and pad files.
            pad_bytes: for the pieces that hold BEP 47 pad bytes, how many (at most
                the piece's size; a 0 is ignored). Pad bytes are sent like any other
                (they count in ``piece_size``) but are never stored nor wanted, so they
                count in ``total_length`` and not in ``data_length``. A piece may be all
                pad: libtorrent accepts pad files that span pieces, and so do we. Without
                it, no piece holds pad bytes.

        Raises:
            LocalProtocolError: the numbers do not describe a torrent.
        """
        if type(num_pieces) is not int or num_pieces <= 0:
            raise LocalProtocolError(f"a torrent has at least one piece, not {num_pieces!r}")
        if type(piece_length) is not int or piece_length <= 0:
            raise LocalProtocolError(f"piece length must be positive, not {piece_length!r}")
        short: dict[int, int] = {}
        if piece_sizes is not None:
            for piece, size in piece_sizes.items():
                if not 0 <= piece < num_pieces or not 0 < size <= piece_length:
                    raise LocalProtocolError(f"piece {piece} cannot hold {size} bytes")
                if size != piece_length:
                    short[piece] = size
            computed = num_pieces * piece_length - sum(piece_length - s for s in short.values())
            if total_length is not None and total_length != computed:
                raise LocalProtocolError(
                    f"total length {total_length} is not the pieces' sum {computed}"
                )
            total_length = computed
        else:
            if total_length is None:
                total_length = num_pieces * piece_length
            if not (num_pieces - 1) * piece_length < total_length <= num_pieces * piece_length:
                raise LocalProtocolError(
                    f"{total_length} bytes do not make {num_pieces} pieces of {piece_length}"
                )
            last = total_length - (num_pieces - 1) * piece_length
            if last != piece_length:
                short[num_pieces - 1] = last
        ranges: tuple[range, ...] = ()
        if file_pieces is not None:
            for r in file_pieces:
                if len(r) and not (r.start >= 0 and r.stop <= num_pieces and r.step == 1):
                    raise LocalProtocolError(f"file pieces {r} are outside the torrent")
            ranges = tuple(file_pieces)
        pad: dict[int, int] = {}
        if pad_bytes is not None:
            for piece, count in pad_bytes.items():
                if type(piece) is not int or not 0 <= piece < num_pieces:
                    raise LocalProtocolError(f"pad bytes in piece {piece!r}, which is not one")
                size = short.get(piece, piece_length)
                if type(count) is not int or not 0 <= count <= size:
                    raise LocalProtocolError(
                        f"piece {piece} of {size} bytes cannot hold {count!r} pad bytes"
                    )
                if count:
                    pad[piece] = count
        data_length = total_length - sum(pad.values())
        if data_length <= 0:
            # bip_metainfo refuses such a torrent too: there would be nothing to share.
            raise LocalProtocolError("the pieces hold only pad bytes: a torrent needs data")
        self.num_pieces = num_pieces
        """How many pieces the torrent has."""
        self.piece_length = piece_length
        """The nominal piece size."""
        self.total_length = total_length
        """The bytes that travel on the wire: the sum of every piece's size, pad bytes
        included (the v1 view, what bip_disk hashes)."""
        self.data_length = data_length
        """The bytes of file data: ``total_length`` without pad bytes. What a download
        wants and stores, and so a tracker's ``left`` before any piece is had."""
        self._short = short
        self._pad = pad
        self._file_pieces = ranges
        self._full_blocks = -(-piece_length // BLOCK_SIZE)
        self._last_block = piece_length - (self._full_blocks - 1) * BLOCK_SIZE

    @classmethod
    def from_info(cls, info: Info) -> TorrentGeometry:
        """The geometry of a bip_metainfo ``Info`` (v1, v2 or hybrid).

        Piece sizes are ``Info.piece_size``: the bytes peers transfer, pad bytes
        included (bip_disk's ``piece_size`` agrees). In a v2 or hybrid torrent every
        file starts on a piece boundary, so a piece never mixes two files' data and
        file priorities map onto whole pieces. Pad files get an empty piece range so
        that their priority never matters, and their bytes are noted as each piece's
        ``pad_bytes``: every ``FileEntry.is_pad`` file's, aligned or not, as bip_disk
        never stores any of them (libtorrent counts a pad file that does not end on a
        piece boundary as data; such torrents are malformed anyway).
        """
        n = info.num_pieces
        pl = info.piece_length
        # Only a file's last piece, or the torrent's, can be short: look at those only.
        candidates = {n - 1}
        ranges: list[range] = []
        pad: dict[int, int] = {}
        for index, entry in enumerate(info.files):
            pieces = info.geometry.file_pieces(index)
            if len(pieces):
                candidates.add(pieces[-1])
            if entry.is_pad:
                ranges.append(range(0))
                # A pad file's bytes, piece by piece: one step per piece it touches, and
                # files never overlap, so this is bounded by the number of pieces.
                for piece in pieces:
                    start = max(entry.offset, piece * pl)
                    end = min(entry.end, (piece + 1) * pl)
                    pad[piece] = pad.get(piece, 0) + end - start
            else:
                ranges.append(pieces)
        sizes = {p: info.piece_size(p) for p in sorted(candidates)}
        return cls(n, pl, piece_sizes=sizes, file_pieces=ranges, pad_bytes=pad)

    def __repr__(self) -> str:
        """Pieces, piece length, total length."""
        return (
            f"TorrentGeometry({self.num_pieces}, {self.piece_length}, {self.total_length}"
            f"{', ' + str(len(self._short)) + ' short pieces' if len(self._short) > 1 else ''})"
        )

    def check_piece(self, piece: int) -> None:
        """Raise :class:`LocalProtocolError` unless ``piece`` is a piece index."""
        if type(piece) is not int or not 0 <= piece < self.num_pieces:
            raise LocalProtocolError(f"piece {piece!r} is not in 0..{self.num_pieces - 1}")

    def piece_size(self, piece: int) -> int:
        """The bytes of piece ``piece``.

        Raises:
            LocalProtocolError: there is no such piece.
        """
        self.check_piece(piece)
        return self._short.get(piece, self.piece_length)

    def piece_data_size(self, piece: int) -> int:
        """The bytes of piece ``piece`` that are file data: its size less its pad bytes.

        This, not :meth:`piece_size`, is what having the piece takes off ``left``.

        Raises:
            LocalProtocolError: there is no such piece.
        """
        return self.piece_size(piece) - self._pad.get(piece, 0)

    def blocks_in_piece(self, piece: int) -> int:
        """How many blocks piece ``piece`` splits into."""
        size = self._short.get(piece)
        if size is None:
            self.check_piece(piece)
            return self._full_blocks
        return -(-size // BLOCK_SIZE)

    def block(self, piece: int, index: int) -> Block:
        """Block number ``index`` of piece ``piece``.

        Raises:
            LocalProtocolError: there is no such piece or block.
        """
        size = self.piece_size(piece)
        begin = index * BLOCK_SIZE
        if type(index) is not int or index < 0 or begin >= size:
            raise LocalProtocolError(f"piece {piece} has no block {index!r}")
        return Block(piece, begin, min(BLOCK_SIZE, size - begin))

    def blocks(self, piece: int) -> tuple[Block, ...]:
        """Every block of piece ``piece``, in order."""
        size = self.piece_size(piece)
        return tuple(
            Block(piece, begin, min(BLOCK_SIZE, size - begin))
            for begin in range(0, size, BLOCK_SIZE)
        )

    def block_index(self, block: Block) -> int:
        """The position of ``block`` in its piece.

        Raises:
            LocalProtocolError: ``block`` is not one of the torrent's blocks.
        """
        if not self.is_block(block):
            raise LocalProtocolError(f"{block!r} is not a block of this torrent")
        return block.begin // BLOCK_SIZE

    def is_block(self, block: object) -> bool:
        """Whether ``block`` is exactly one of the blocks :meth:`blocks` lists (never raises)."""
        if not isinstance(block, tuple) or len(block) != 3:
            return False
        piece, begin, length = block
        if type(piece) is not int or not 0 <= piece < self.num_pieces:
            return False
        size = self._short.get(piece, self.piece_length)
        return (
            type(begin) is int
            and type(length) is int
            and 0 <= begin < size
            and begin % BLOCK_SIZE == 0
            and length == min(BLOCK_SIZE, size - begin)
        )

    def bytes_left(self, have: Iterable[int]) -> int:
        """The file data of the pieces not in ``have``: what a tracker announce calls ``left``.

        BEP 3's ``left`` is what this client still has to download; pad bytes are never
        wanted nor stored, so they do not count (libtorrent and anacrolix/torrent leave
        them out too): a torrent with nothing had is ``data_length`` from its tracker's
        point of view, and a complete one 0. ``have`` is the verified pieces (a set, a
        :class:`bip_metainfo.PieceSet`, a brain's or bip_disk's ``have``); a piece listed
        twice counts once.

        >>> TorrentGeometry(3, 32768, 70000).bytes_left({0, 2})
        32768
        >>> TorrentGeometry(2, 32768, pad_bytes={0: 100}).bytes_left({1})
        32668

        Raises:
            LocalProtocolError: a piece of ``have`` is not one of the torrent's.
        """
        done = 0
        pad = self._pad
        for piece in set(have):
            done += self.piece_size(piece) - pad.get(piece, 0)
        return self.data_length - done

    @property
    def num_files(self) -> int:
        """How many files the geometry knows (0 when built without files)."""
        return len(self._file_pieces)

    def file_pieces(self, file_index: int) -> range:
        """The pieces holding bytes of file ``file_index`` (empty for empty and pad files).

        Raises:
            LocalProtocolError: there is no such file.
        """
        if type(file_index) is not int or not 0 <= file_index < len(self._file_pieces):
            raise LocalProtocolError(f"there is no file {file_index!r}")
        return self._file_pieces[file_index]

    def piece_priorities(self, file_priorities: Sequence[int]) -> list[int]:
        """Piece priorities from per-file priorities (one per file, 0..7).

        A piece shared by two files takes the higher priority: a piece is
        downloaded whenever any of its files is wanted (libtorrent does the same).
        Pieces that belong to no listed file (pad-only gaps) get 0.

        Raises:
            LocalProtocolError: the list does not have one valid priority per file.
        """
        if len(file_priorities) != len(self._file_pieces):
            raise LocalProtocolError(
                f"{len(file_priorities)} file priorities for {len(self._file_pieces)} files"
            )
        result = [0] * self.num_pieces
        for pieces, priority in zip(self._file_pieces, file_priorities, strict=True):
            if type(priority) is not int or not 0 <= priority <= 7:
                raise LocalProtocolError(f"priority {priority!r} is not in 0..7")
            if not priority:
                continue
            for piece in pieces:
                result[piece] = max(result[piece], priority)
        return result

    def iter_blocks(self, piece: int, start: int = 0) -> Iterator[Block]:
        """The blocks of ``piece`` from block number ``start`` on, lazily."""
        size = self.piece_size(piece)
        for begin in range(start * BLOCK_SIZE, size, BLOCK_SIZE):
            yield Block(piece, begin, min(BLOCK_SIZE, size - begin))
