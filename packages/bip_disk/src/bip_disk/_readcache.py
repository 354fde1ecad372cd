"""The read cache: lines of pieces recently read, least recently used evicted first.

A block a peer asks for is read with the **line** that holds it: lines of
libtorrent 1.x's ``read_cache_line_size`` (32 blocks, ``LINE_BYTES`` = 512 KiB),
aligned in the piece (libtorrent reads ahead from the block). Lines start at
multiples of the line size within their piece (the last line of a piece may be
short), so a 16 KiB-aligned block is always inside one line. The following blocks
of the line cost no read and no thread crossing, and a block never costs a read of
its whole piece: with pieces of several MiB and more peers than the cache holds
pieces, reading the whole piece per miss read the piece again for every block.

Blocks asked for while their line is read wait for that read (a ``LineRead``)
and take their bytes from it, not from the cache: when more lines finish at once
than the cache holds, the first ones are evicted before their waiters run.

The line size shrinks (by halves, down to one block) until a quarter of the cache
holds a line, so that a small cache still keeps several; a line still larger
than that (a cache smaller than four blocks) is not cached at all: its blocks
are read one by one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

import trio

from ._errors import StorageError

__all__ = ["BLOCK_BYTES", "LINE_BYTES", "LineCache", "LineRead"]

BLOCK_BYTES: Final = 16 * 1024
"""The block size peers ask for, and the smallest line."""
LINE_BYTES: Final = 32 * BLOCK_BYTES
"""The largest line: what one read on a cache miss reads at most."""


def _line_size(limit: int) -> int:
    """The line size for a cache of ``limit`` bytes (see the module documentation)."""
    line = LINE_BYTES
    while line > BLOCK_BYTES and line > limit // 4:
        line //= 2
    return line


class LineCache:
    """Lines of pieces recently read, bounded in bytes, least recently used evicted first.

    Keys are (torrent id, piece, line index in the piece); every torrent of a
    manager shares the one bound.

    Attributes:
        limit: the bound, in bytes.
        bytes: bytes of the lines kept.
        line: the line size (see the module documentation).
    """

    __slots__ = ("_entries", "bytes", "limit", "line")

    def __init__(self, limit: int) -> None:
        """An empty cache of at most ``limit`` bytes."""
        self.limit = limit
        self.bytes = 0
        self.line = _line_size(limit)
        self._entries: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()

    def span(self, piece_size: int, begin: int, length: int) -> tuple[int, int, int] | None:
        """The line holding bytes ``begin`` to ``begin + length`` of a piece of ``piece_size``.

        Returns (line index, its first byte, its end) in the piece, or None when
        the block is to be read alone: it crosses a line boundary, or the cache is
        too small to keep the line.
        """
        line = self.line
        index = begin // line
        start = index * line
        end = min(start + line, piece_size)
        if begin + length > end or end - start > self.limit // 4:
            return None
        return index, start, end

    def get(self, torrent: int, piece: int, line: int) -> bytes | None:
        """The line's bytes if cached (now the most recently used), else None."""
        key = (torrent, piece, line)
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, torrent: int, piece: int, line: int, data: bytes) -> None:
        """Cache a line, evicting the least recently used ones past the limit."""
        if len(data) > self.limit:
            return
        key = (torrent, piece, line)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._entries[key] = data
        self.bytes += len(data)
        while self.bytes > self.limit:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted)

    def discard(self, torrent: int, piece: int, piece_size: int) -> None:
        """Forget every line of a piece of ``piece_size`` bytes (it was lost)."""
        # One lookup per line the piece can have: never a walk of the whole cache,
        # which a fault losing thousands of pieces would repeat for each of them.
        for line in range(-(-piece_size // self.line)):
            old = self._entries.pop((torrent, piece, line), None)
            if old is not None:
                self.bytes -= len(old)

    def drop_torrent(self, torrent: int) -> None:
        """Forget every line of a torrent (removed, moved or rechecked)."""
        for key in [key for key in self._entries if key[0] == torrent]:
            self.bytes -= len(self._entries.pop(key))


class LineRead:
    """A read of a line on a thread now, and what it gave: the blocks of the line asked
    for meanwhile wait for it and slice its bytes (see the module documentation).

    Attributes:
        done: set once the read is over (read, failed, or given up by a cancelled caller
            before it started: neither ``data`` nor ``error`` then).
        data: the line's bytes, once read.
        error: why the read failed.
    """

    __slots__ = ("data", "done", "error")

    def __init__(self) -> None:
        """A read under way."""
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: StorageError | None = None
