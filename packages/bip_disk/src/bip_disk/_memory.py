"""``MemoryFileSystem``: a :class:`~bip_disk.FileSystem` that keeps files in memory.

For tests, for streaming a torrent without touching the disk, and as the model the
other filesystems are checked against.

**Memory use.** Files are sparse: a file holds only the 16 KiB chunks something
was written to, so a sparse :meth:`~MemoryFileSystem.allocate` of a 4 GiB torrent
costs nothing, and reads of chunks never written return zeros. What you write is
what it holds, until you remove the file: nothing is evicted. An optional
``capacity`` bounds the bytes held (counted in whole chunks); a write or full
allocation that would exceed it fails with ``ENOSPC`` before changing anything,
which is also a handy way to test what happens when a disk fills up.

Directories exist implicitly (a file's parents) and explicitly once created; a
symlink stores its root-relative target and is followed, link by link, when a
path passes through it, at most 40 times per lookup (``ELOOP`` after), as a
POSIX kernel does.
"""

from __future__ import annotations

import errno
import threading
import time

from ._errors import StorageError
from ._filesystem import Buffer, FileStat, check_offset, errno_error, missing, split_path

__all__ = ["CHUNK_SIZE", "MemoryFileSystem", "SparseBuffer"]

CHUNK_SIZE = 16 * 1024
"""The granularity at which memory is used: one BitTorrent block."""

_MAX_HOPS = 40  # symlinks followed in one lookup, as Linux's MAXSYMLINKS


class SparseBuffer:
    """A growable byte string that stores only the chunks that were written.

    Chunks never written read as zeros. Not thread-safe: the owner locks. Bytes of
    a chunk past :attr:`size` are always zero, so growing the buffer again shows
    zeros, as a file would.
    """

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        """An empty buffer."""
        self.chunks: dict[int, bytearray] = {}
        self.size = 0

    @property
    def held(self) -> int:
        """Bytes of memory held by the chunks."""
        return len(self.chunks) * CHUNK_SIZE

    def new_chunks(self, offset: int, length: int) -> int:
        """How many chunks writing ``length`` bytes at ``offset`` would add."""
        if length <= 0:
            return 0
        first, last = offset // CHUNK_SIZE, (offset + length - 1) // CHUNK_SIZE
        return sum(1 for index in range(first, last + 1) if index not in self.chunks)

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (short only at the end)."""
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        out = bytearray(end - offset)
        position = offset
        while position < end:
            index, start = divmod(position, CHUNK_SIZE)
            take = min(CHUNK_SIZE - start, end - position)
            chunk = self.chunks.get(index)
            if chunk is not None:
                out[position - offset : position - offset + take] = chunk[start : start + take]
            position += take
        return bytes(out)

    def write(self, offset: int, data: Buffer) -> None:
        """Write ``data`` at ``offset``, growing the buffer if needed."""
        view = memoryview(data).cast("B")
        position = offset
        done = 0
        while done < len(view):
            index, start = divmod(position, CHUNK_SIZE)
            take = min(CHUNK_SIZE - start, len(view) - done)
            chunk = self.chunks.get(index)
            if chunk is None:
                chunk = self.chunks[index] = bytearray(CHUNK_SIZE)
            chunk[start : start + take] = view[done : done + take]
            position += take
            done += take
        if view:  # as POSIX: writing nothing never extends a file
            self.size = max(self.size, offset + len(view))

    def materialise(self, end: int) -> None:
        """Hold a chunk for every byte below ``end`` (a full allocation)."""
        for index in range(-(-end // CHUNK_SIZE)):
            if index not in self.chunks:
                self.chunks[index] = bytearray(CHUNK_SIZE)

    def resize(self, size: int) -> None:
        """Set the size, dropping and zeroing what lies past a smaller one."""
        if size < self.size:
            keep = -(-size // CHUNK_SIZE)
            for index in [index for index in self.chunks if index >= keep]:
                del self.chunks[index]
            tail = size % CHUNK_SIZE
            chunk = self.chunks.get(size // CHUNK_SIZE)
            if tail and chunk is not None:
                chunk[tail:] = bytes(CHUNK_SIZE - tail)
        self.size = size


class _File:
    __slots__ = ("data", "mtime_ns")

    def __init__(self) -> None:
        self.data = SparseBuffer()
        self.mtime_ns = time.time_ns()


class MemoryFileSystem:
    """A :class:`~bip_disk.FileSystem` held in memory (see the module documentation).

    >>> fs = MemoryFileSystem()
    >>> fs.write("t/a.bin", 3, b"xyz")  # the file had to be created
    True
    >>> fs.read("t/a.bin", 0, 10)
    b'\\x00\\x00\\x00xyz'
    >>> fs.size("t/missing") is None
    True
    """

    def __init__(self, *, capacity: int | None = None) -> None:
        """An empty filesystem holding at most ``capacity`` bytes (``None``: no bound)."""
        if capacity is not None and capacity < 0:
            raise ValueError(f"capacity must not be negative, not {capacity}")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._files: dict[tuple[str, ...], _File] = {}
        self._links: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._dirs: set[tuple[str, ...]] = set()
        self._held = 0

    @property
    def held(self) -> int:
        """Bytes of memory the files hold now."""
        with self._lock:
            return self._held

    # -- lookups (the lock is held) -------------------------------------------

    def _resolve(self, path: str, parts: tuple[str, ...], follow: bool) -> tuple[str, ...]:
        """Follow the links on ``parts`` (and on its last component if ``follow``)."""
        hops = 0
        resolved: tuple[str, ...] = ()
        pending = list(parts)
        while pending:
            part = pending.pop(0)
            candidate = (*resolved, part)
            target = self._links.get(candidate)
            if target is not None and (pending or follow):
                hops += 1
                if hops > _MAX_HOPS:
                    raise errno_error(errno.ELOOP, path, "resolve")
                pending[:0] = target
                resolved = ()
                continue
            if pending and candidate in self._files:
                raise errno_error(errno.ENOTDIR, path, "resolve")
            resolved = candidate
        return resolved

    def _file(self, path: str, action: str) -> _File:
        parts = self._resolve(path, split_path(path), True)
        found = self._files.get(parts)
        if found is None:
            if parts in self._dirs:
                raise errno_error(errno.EISDIR, path, action)
            raise missing(path, action)
        return found

    def _make_parents(self, path: str, parts: tuple[str, ...], action: str) -> None:
        for depth in range(1, len(parts)):
            prefix = parts[:depth]
            if prefix in self._files or prefix in self._links:
                raise errno_error(errno.ENOTDIR, path, action)
        for depth in range(1, len(parts)):
            self._dirs.add(parts[:depth])

    def _file_or_create(self, path: str, action: str) -> _File:
        parts = self._resolve(path, split_path(path), True)
        found = self._files.get(parts)
        if found is not None:
            return found
        if parts in self._dirs:
            raise errno_error(errno.EISDIR, path, action)
        self._make_parents(path, parts, action)
        found = self._files[parts] = _File()
        return found

    def _reserve(self, path: str, chunks: int, action: str) -> None:
        wanted = chunks * CHUNK_SIZE
        if self._capacity is not None and self._held + wanted > self._capacity:
            raise errno_error(errno.ENOSPC, path, action)

    # -- the FileSystem protocol ----------------------------------------------

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset`` (see :class:`~bip_disk.FileSystem`)."""
        check_offset(path, offset)
        check_offset(path, length, "length")
        with self._lock:
            return self._file(path, "read").data.read(offset, length)

    def write(self, path: str, offset: int, data: Buffer) -> bool | None:
        """Write all of ``data`` at ``offset``; whether the file had to be created (see
        :class:`~bip_disk.FileSystem`; never None, typed so for subclasses)."""
        check_offset(path, offset)
        length = memoryview(data).nbytes
        with self._lock:
            parts = self._resolve(path, split_path(path), True)
            existing = self._files.get(parts)
            current = existing.data if existing is not None else SparseBuffer()
            chunks = current.new_chunks(offset, length)
            self._reserve(path, chunks, "write")
            entry = self._file_or_create(path, "write")
            entry.data.write(offset, data)
            entry.mtime_ns = time.time_ns()
            self._held += chunks * CHUNK_SIZE
            return existing is None

    def size(self, path: str) -> int | None:
        """The file's size, or ``None`` if it does not exist."""
        found = self.stat(path)
        return None if found is None else found.size

    def stat(self, path: str) -> FileStat | None:
        """The file's size and modification time, or ``None`` if it does not exist."""
        with self._lock:
            try:
                entry = self._file(path, "stat")
            except StorageError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise
            return FileStat(entry.data.size, entry.mtime_ns)

    def allocate(self, path: str, size: int, *, sparse: bool = True) -> None:
        """Extend the file to at least ``size`` bytes; ``sparse=False`` holds the memory now."""
        check_offset(path, size, "size")
        with self._lock:
            parts = self._resolve(path, split_path(path), True)
            existing = self._files.get(parts)
            current = existing.data if existing is not None else SparseBuffer()
            chunks = 0 if sparse else current.new_chunks(0, size)
            self._reserve(path, chunks, "allocate")
            entry = self._file_or_create(path, "allocate")
            if size > entry.data.size:
                entry.data.resize(size)
                entry.mtime_ns = time.time_ns()
            if not sparse:
                entry.data.materialise(size)
            self._held += chunks * CHUNK_SIZE

    def truncate(self, path: str, size: int) -> None:
        """Set an existing file's size to exactly ``size``."""
        check_offset(path, size, "size")
        with self._lock:
            entry = self._file(path, "truncate")
            before = entry.data.held
            entry.data.resize(size)
            entry.mtime_ns = time.time_ns()
            self._held -= before - entry.data.held

    def sync(self, path: str | None = None) -> None:
        """Nothing to flush in memory; a missing ``path`` still raises ``ENOENT``."""
        if path is not None:
            with self._lock:
                self._file(path, "sync")

    def remove(self, path: str) -> None:
        """Remove a file, a symlink or an empty directory; missing is no error."""
        with self._lock:
            parts = self._resolve(path, split_path(path), False)
            if parts in self._links:
                del self._links[parts]
            elif parts in self._files:
                self._held -= self._files.pop(parts).data.held
            elif parts in self._dirs:
                if any(self._under(parts)):
                    raise errno_error(errno.ENOTEMPTY, path, "remove")
                self._dirs.discard(parts)

    def _under(self, parts: tuple[str, ...]) -> list[tuple[str, ...]]:
        depth = len(parts)
        return [
            key
            for table in (self._files, self._links, self._dirs)
            for key in table
            if len(key) > depth and key[:depth] == parts
        ]

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` (a file, a link or a directory) to ``new``."""
        with self._lock:
            source = self._resolve(old, split_path(old), False)
            destination = self._resolve(new, split_path(new), False)
            if source == destination:
                if not (source in self._files or source in self._links or source in self._dirs):
                    raise missing(old, "rename")
                return
            if destination[: len(source)] == source:
                raise errno_error(errno.EINVAL, old, "rename")
            if source in self._dirs:
                if destination in self._files or destination in self._links:
                    raise errno_error(errno.ENOTDIR, new, "rename")
                if any(self._under(destination)):
                    raise errno_error(errno.ENOTEMPTY, new, "rename")
                self._make_parents(new, destination, "rename")
                moved = {source, *self._under(source)}
                cut = len(source)
                for key in [key for key in self._files if key in moved]:
                    self._files[destination + key[cut:]] = self._files.pop(key)
                for key in [key for key in self._links if key in moved]:
                    self._links[destination + key[cut:]] = self._links.pop(key)
                for key in [key for key in self._dirs if key in moved]:
                    self._dirs.discard(key)
                    self._dirs.add(destination + key[cut:])
                return
            if source not in self._files and source not in self._links:
                raise missing(old, "rename")
            if destination in self._dirs:
                raise errno_error(errno.EISDIR, new, "rename")
            self._make_parents(new, destination, "rename")
            if destination in self._files:
                self._held -= self._files.pop(destination).data.held
            self._links.pop(destination, None)
            if source in self._files:
                self._files[destination] = self._files.pop(source)
            else:
                self._links[destination] = self._links.pop(source)

    def symlink(self, path: str, target: str) -> None:
        """Create (or replace) a link at ``path`` to the root-relative ``target``."""
        with self._lock:
            goal = split_path(target)
            parts = self._resolve(path, split_path(path), False)
            if parts in self._files or parts in self._dirs:
                raise errno_error(errno.EEXIST, path, "create a symlink at")
            self._make_parents(path, parts, "create a symlink at")
            self._links[parts] = goal

    def close(self) -> None:
        """Nothing to release; the files stay (remove them to free the memory)."""
