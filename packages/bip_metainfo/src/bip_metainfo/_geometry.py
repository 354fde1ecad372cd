"""Piece geometry: which bytes of which files each piece covers.

The files of a torrent sit one after another in a *piece space*, each at its
``offset``. In a v1 torrent that space is simply the files concatenated (BEP 47
pad files included, as files). In a v2 torrent every non-empty file starts at a
piece boundary: the gap before the next file belongs to no file, so a file's last
piece is short. A hybrid torrent writes those gaps as v1 pad files, so both views
agree on where every piece starts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from ._files import FileEntry

__all__ = ["FileSlice", "PieceGeometry"]


@dataclass(frozen=True, slots=True)
class FileSlice:
    """A run of bytes of one file inside one piece.

    Attributes:
        file_index: the index of the file in :attr:`Info.files`.
        offset: where the run starts inside the file.
        length: how many bytes it has.
    """

    file_index: int
    offset: int
    length: int


class PieceGeometry:
    """Maps pieces to file byte ranges for a list of files and a piece length.

    Built once per torrent (:attr:`Info.geometry`); lookups are ``O(log files)``.
    """

    __slots__ = ("_files", "_starts", "num_pieces", "piece_length", "total_size")

    def __init__(self, files: Sequence[FileEntry], piece_length: int) -> None:
        """Index ``files`` (in piece-space order) for pieces of ``piece_length`` bytes."""
        if piece_length <= 0:
            raise ValueError(f"piece length must be positive, not {piece_length}")
        self._files = tuple(files)
        self._starts = [entry.offset for entry in self._files]
        self.piece_length = piece_length
        self.total_size = max((entry.end for entry in self._files), default=0)
        """The size of the piece space: the end of the last file."""
        self.num_pieces = -(-self.total_size // piece_length)
        """How many pieces cover the piece space."""

    def _check(self, index: int) -> None:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} is not in 0..{self.num_pieces - 1}")

    def slices(self, index: int) -> tuple[FileSlice, ...]:
        """The file byte ranges that piece ``index`` covers, in order (pad files included).

        Raises:
            IndexError: there is no such piece.
        """
        self._check(index)
        start = index * self.piece_length
        end = min(start + self.piece_length, self.total_size)
        result = []
        i = max(bisect_right(self._starts, start) - 1, 0)
        while i < len(self._files) and self._files[i].offset < end:
            entry = self._files[i]
            lo = max(start, entry.offset)
            hi = min(end, entry.end)
            if hi > lo:
                result.append(FileSlice(i, lo - entry.offset, hi - lo))
            i += 1
        return tuple(result)

    def piece_size(self, index: int, *, include_pad: bool = True) -> int:
        """How many bytes of file data piece ``index`` holds.

        With ``include_pad`` (the v1 view), pad files count, so in a v1 or hybrid
        torrent every piece but the last is full. Without it (the v2 view), only
        real file bytes count: the last piece of each file may be short.

        Raises:
            IndexError: there is no such piece.
        """
        return sum(
            part.length
            for part in self.slices(index)
            if include_pad or not self._files[part.file_index].is_pad
        )

    def file_pieces(self, file_index: int) -> range:
        """The pieces that hold bytes of file ``file_index`` (empty for an empty file)."""
        entry = self._files[file_index]
        if entry.length == 0:
            return range(0)
        return range(entry.offset // self.piece_length, -(-entry.end // self.piece_length))
