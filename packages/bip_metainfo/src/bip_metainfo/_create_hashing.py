"""Creating torrents: reading runs of files and hashing them, on a hashing thread.

A job of :mod:`._create_pipeline` is a list of runs (:data:`_Run`: a stretch of
one file's bytes) holding whole pieces; :func:`_hash_v1` gives the SHA-1 of each
piece of their concatenation, :func:`_hash_v2` the BEP 52 merkle hash of each
piece of each file (and, for hybrid torrents, the SHA-1s of the same pieces,
padded, from the same read). Both read through a :class:`_Reader`, which opens
the files in turn (regular files only, and the very files the walk found:
:func:`_open_regular`) and raises :class:`OSError` if one changed size while it
was hashed, into a buffer of this
thread's own (:func:`_buffer`), a chunk at a time, so each chunk is hashed while
it is still in the CPU's cache; they check ``stop`` before each chunk and raise
:class:`_StoppedError` when it says so.
Nothing here knows about threads, jobs or the torrent.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Sequence
from hashlib import sha1, sha256
from typing import Any, TypeAlias

from ._errors import CreateError
from ._merkle import BLOCK_SIZE, subtree_root

_Stop: TypeAlias = Callable[[], bool]
# A file as the walk saw it: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns).
_Identity: TypeAlias = tuple[int, int, int, int, int]
# A run of one file's bytes: (source, offset, length, the file's length, zeros that
# follow the file in the v1 piece space, the file's identity, or None where the walk got
# no inode number).
_Run: TypeAlias = tuple[str, int, int, int, int, _Identity | None]

_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # Windows: none (and no FIFOs in a folder)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


class _StoppedError(Exception):
    """A hashing thread saw the stop flag."""


_local = threading.local()


def _buffer(size: int) -> memoryview:
    """This thread's read buffer, of ``size`` bytes."""
    buffer: bytearray | None = getattr(_local, "buffer", None)
    if buffer is None or len(buffer) != size:
        buffer = _local.buffer = bytearray(size)
    return memoryview(buffer)


def _open_regular(source: str, identity: _Identity | None) -> Any:
    """Open ``source`` for reading, unbuffered, refusing anything but the regular file
    the walk found.

    The walk saw a regular file, but it may have been replaced since (hashing can take
    hours): a FIFO swapped in would block a plain ``open`` until a writer comes, and
    then every read, pinning a hashing thread for ever, beyond the reach of ``cancel``
    (the pool waits for its threads). So the file is opened with ``O_NONBLOCK``, which
    never waits, checked with ``fstat``, and only then made blocking again. Another
    regular file put in its place (a rename over it, as editors and downloaders save)
    would be hashed in its stead, under the length the walk found: so the opened file
    must also be the walk's, by ``identity`` (``_Identity``; None where the walk had
    no inode number, as ``DirEntry.stat`` on Windows, and then no check). Some mounts
    give one file a new inode number now and then (FUSE file systems without
    ``use_ino``, as sshfs; CIFS with ``noserverino``): so another inode number is
    another file only if the size, the modification time or the inode change time
    differs too. A file renamed over this one has a later change time (set by the
    kernel as the file is made, changed or renamed, where no program can set it), even
    when its size and modification time were copied, as rsync copies them.

    Raises:
        CreateError: ``source`` is no longer a regular file, or another file than the
            walk's.
        OSError: it cannot be opened.
    """
    fd = os.open(source, os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CreateError(
                f"{source!r} is no longer a regular file: it was replaced while the torrent "
                "was being created"
            )
        if (
            identity is not None
            and (info.st_dev, info.st_ino) != identity[:2]
            and (info.st_size, info.st_mtime_ns, info.st_ctime_ns) != identity[2:]
        ):
            raise CreateError(
                f"{source!r} is another file than the one the torrent was planned from: it "
                "was replaced while the torrent was being created"
            )
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        return open(fd, "rb", buffering=0)  # the caller closes it
    except BaseException:
        os.close(fd)
        raise


class _Reader:
    """Reads runs of files one after another, checking that no file changed size."""

    __slots__ = ("_file", "_left", "_run", "_runs")

    def __init__(self, runs: Sequence[_Run]) -> None:
        self._runs = iter(runs)
        self._file: Any = None
        self._left = 0
        self._run: _Run = ("", 0, 0, 0, 0, None)

    def _next(self) -> None:
        self.close()
        self._run = run = next(self._runs)
        source, offset, length, _, _, identity = run
        self._file = file = _open_regular(source, identity)
        if offset:
            file.seek(offset)
        elif hasattr(os, "posix_fadvise"):
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self._left = length

    def readinto(self, view: memoryview) -> None:
        """Fill ``view`` from the runs, opening the next file as one ends."""
        while view:
            if not self._left:
                self._next()
            part = view[: self._left]
            while part:
                count = self._file.readinto(part)
                if not count:
                    self._changed(f"it shrank to {self._file.tell()} bytes")
                part = part[count:]
            count = min(len(view), self._left)
            self._left -= count
            view = view[count:]
            if not self._left:
                _, offset, length, file_length, _, _ = self._run
                if offset + length == file_length:
                    size = os.fstat(self._file.fileno()).st_size
                    if size != file_length:
                        self._changed(f"it is now {size} bytes")

    def _changed(self, how: str) -> None:
        source, _, _, file_length, _, _ = self._run
        raise OSError(
            errno.EIO,
            f"the file changed while it was hashed: it had {file_length} bytes and {how}",
            source,
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _hash_v1(runs: list[_Run], size: int, piece_length: int, chunk: int, stop: _Stop) -> bytes:
    """The SHA-1 of each piece of ``size`` bytes of the files' concatenation."""
    view = _buffer(chunk)
    reader = _Reader(runs)
    digests = []
    try:
        if piece_length <= chunk:
            step = chunk // piece_length * piece_length
            for start in range(0, size, step):
                if stop():
                    raise _StoppedError
                data = view[: min(step, size - start)]
                reader.readinto(data)
                digests += [
                    sha1(data[i : i + piece_length]).digest()
                    for i in range(0, len(data), piece_length)
                ]
        else:
            for start in range(0, size, piece_length):
                hasher = sha1()
                end = min(start + piece_length, size)
                for position in range(start, end, chunk):
                    if stop():
                        raise _StoppedError
                    data = view[: min(chunk, end - position)]
                    reader.readinto(data)
                    hasher.update(data)
                digests.append(hasher.digest())
    finally:
        reader.close()
    return b"".join(digests)


def _hash_v2(
    runs: list[_Run], piece_length: int, chunk: int, v1: bool, stop: _Stop
) -> tuple[bytes, list[bytes]]:
    """BEP 52 piece hashes of runs of whole pieces (and their SHA-1s if ``v1``).

    Each run starts at a piece boundary of its file. A file of one piece gets its
    pieces root (its tree spans only its own blocks); for v1 the file's last piece
    is followed by the zeros of its pad file.
    """
    view = _buffer(chunk)
    zeros = memoryview(bytes(max(run[4] for run in runs)))  # calloc: untouched until read
    width = piece_length // BLOCK_SIZE
    block = BLOCK_SIZE
    sha1s: list[bytes] = []
    nodes: list[bytes] = []
    reader = _Reader(runs)
    try:
        for _, offset, length, file_length, pad, _ in runs:
            whole = file_length <= piece_length
            leaves: list[bytes] = []
            hasher = sha1()
            for start in range(0, length, chunk):
                if stop():
                    raise _StoppedError
                data = view[: min(chunk, length - start)]
                reader.readinto(data)
                # Chunks and pieces are powers of two: one holds whole others.
                for i in range(0, len(data), piece_length):
                    piece = data[i : i + piece_length]
                    if v1:
                        hasher.update(piece)
                    leaves += [
                        sha256(piece[j : j + block]).digest() for j in range(0, len(piece), block)
                    ]
                    end = offset + start + i + len(piece)
                    if len(leaves) < width and end < offset + length:
                        continue  # a piece larger than a chunk: more to come
                    if whole:  # the tree spans the file's own blocks only
                        nodes.append(subtree_root(leaves, 1 << (len(leaves) - 1).bit_length()))
                    else:
                        nodes.append(subtree_root(leaves, width))
                    leaves = []
                    if v1:
                        if end == file_length and pad:
                            hasher.update(zeros[:pad])
                        sha1s.append(hasher.digest())
                        hasher = sha1()
    finally:
        reader.close()
    return b"".join(sha1s), nodes
