"""What :meth:`Torrent.move_storage <bip._client.Torrent.move_storage>` does with files
already at the destination: libtorrent's ``move_flags_t``.

bip_disk's :meth:`~bip_disk.DiskManager.move_storage` copies every file of the torrent to the
new storage, replacing what is there. The two other ways are built on it here:

- ``FAIL_IF_EXIST``: :func:`existing_files` looks for the torrent's files at the destination
  first, and the move is refused before anything is copied if one is there;
- ``DONT_REPLACE``: the destination is handed to bip_disk behind :class:`KeepExisting`, a
  :class:`~bip_disk.FileSystem` that leaves the files found there alone (bip_disk's copy of
  them is dropped), so the destination's files stay, and the torrent hashes their pieces
  again afterwards.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from bip_disk import FileStat, FileSystem, StorageLayout
from bip_metainfo import Info

__all__ = ["KeepExisting", "MoveFlags", "existing_files"]


class MoveFlags(enum.Enum):
    """What :meth:`~bip._client.Torrent.move_storage` does with the torrent's files that
    already exist at the destination (libtorrent's ``move_flags_t``).

    Attributes:
        ALWAYS_REPLACE_FILES: replace them with the torrent's (the default).
        FAIL_IF_EXIST: refuse the move, before anything is copied, if any of them exists.
            As libtorrent's, the look and the copy are not atomic: a file created at the
            destination in between is replaced.
        DONT_REPLACE: keep the destination's files (the torrent's copies of them are
            deleted with the rest of the old storage) and use them: the pieces they hold
            are hashed again, the others stay verified.
    """

    ALWAYS_REPLACE_FILES = "always_replace_files"
    FAIL_IF_EXIST = "fail_if_exist"
    DONT_REPLACE = "dont_replace"


def existing_files(filesystem: FileSystem, info: Info) -> list[tuple[int, str]]:
    """The torrent's stored files (not its pad files nor links) that exist in
    ``filesystem``, as ``(index in info.files, path in the storage)``, in file order.

    Blocking (a stat per file): run it in a thread.

    Raises:
        StorageError: a file could not be looked at.
        PathError: the torrent's names are not usable (as when it was added).
    """
    layout = StorageLayout.from_info(info)
    return [
        (file.index, file.path)
        for file in layout.stored_files
        if filesystem.stat(file.path) is not None
    ]


class KeepExisting:
    """A :class:`~bip_disk.FileSystem` over ``inner`` that changes none of ``kept`` (paths in
    the storage): writes, allocations, truncations, removals and links at those paths are
    dropped; everything else, and every read, goes to ``inner``.

    What bip_disk's move copies onto a destination behind it: the destination's own files
    survive the copy. Used for the move only (the torrent then goes on with ``inner``
    itself); closing it closes nothing (``inner`` is its owner's to close).
    """

    def __init__(self, inner: FileSystem, kept: Iterable[str]) -> None:
        """Guard ``kept`` in ``inner``."""
        self.inner = inner
        self.kept = frozenset(kept)

    def __repr__(self) -> str:
        return f"KeepExisting({self.inner!r}, {len(self.kept)} kept)"

    def read(self, path: str, offset: int, length: int) -> bytes:
        """``inner``'s bytes."""
        return self.inner.read(path, offset, length)

    def write(self, path: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write to ``inner``, unless ``path`` is kept."""
        if path not in self.kept:
            self.inner.write(path, offset, data)

    def size(self, path: str) -> int | None:
        """``inner``'s size of the file."""
        return self.inner.size(path)

    def stat(self, path: str) -> FileStat | None:
        """``inner``'s stat of the file."""
        return self.inner.stat(path)

    def allocate(self, path: str, size: int, *, sparse: bool = True) -> None:
        """Allocate in ``inner``, unless ``path`` is kept."""
        if path not in self.kept:
            self.inner.allocate(path, size, sparse=sparse)

    def truncate(self, path: str, size: int) -> None:
        """Truncate in ``inner``, unless ``path`` is kept."""
        if path not in self.kept:
            self.inner.truncate(path, size)

    def sync(self, path: str | None = None) -> None:
        """Sync ``inner``."""
        self.inner.sync(path)

    def remove(self, path: str) -> None:
        """Remove from ``inner``, unless ``path`` is kept."""
        if path not in self.kept:
            self.inner.remove(path)

    def rename(self, old: str, new: str) -> None:
        """Rename in ``inner``, unless either path is kept."""
        if old not in self.kept and new not in self.kept:
            self.inner.rename(old, new)

    def symlink(self, path: str, target: str) -> None:
        """Make the link in ``inner``, unless ``path`` is kept."""
        if path not in self.kept:
            self.inner.symlink(path, target)

    def close(self) -> None:
        """Nothing: ``inner`` is not ours to close."""
