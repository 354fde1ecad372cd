"""The exceptions bip_disk raises.

- :class:`DiskError` is the base of everything below.
- :class:`StorageError`: a :class:`~bip_disk.FileSystem` operation failed (disk full,
  permission denied, an I/O error, a file gone behind our back). It carries the
  ``errno`` when there is one and the torrent-relative path.
- :class:`DestinationExistsError`: a :class:`StorageError` raised by
  :meth:`~bip_disk.DiskManager.move_storage` with ``existing=ExistingFiles.FAIL``: a file
  of the torrent is at the destination already.
- :class:`PathError`: a path would leave the storage root, or is not a valid
  relative path.
- :class:`ResumeDataError`: resume data that is malformed or belongs to another torrent.
- :class:`TorrentStateError`: an operation the torrent's state forbids (a write to a
  stopped torrent, a block outside the torrent, a torrent added twice).
"""

from __future__ import annotations

import errno as _errno  # StorageError's ``errno`` attribute takes the plain name

__all__ = [
    "DestinationExistsError",
    "DiskError",
    "PathError",
    "ResumeDataError",
    "StorageError",
    "TorrentStateError",
]


class DiskError(Exception):
    """Base class of the errors raised by bip_disk.

    >>> issubclass(StorageError, DiskError)
    True
    """


class StorageError(DiskError):
    """A storage operation failed.

    Attributes:
        errno: the OS error number (``errno.ENOSPC``, ...) or ``None``.
        path: the torrent-relative path involved, or ``None``.
    """

    def __init__(self, message: str, *, errno: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.path = path


class DestinationExistsError(StorageError):
    """A file of the torrent exists at the destination of a move that must not replace it
    (:meth:`~bip_disk.DiskManager.move_storage` with ``existing=ExistingFiles.FAIL``).

    ``path`` is the first such file (torrent-relative) and ``errno`` is ``EEXIST``.

    >>> import errno
    >>> error = DestinationExistsError("album/a.bin exists at the destination", path="album/a.bin")
    >>> (error.path, error.errno == errno.EEXIST, isinstance(error, StorageError))
    ('album/a.bin', True, True)
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, errno=_errno.EEXIST, path=path)


class PathError(DiskError):
    """A path is not a safe relative path inside the storage root.

    >>> raise PathError("'../etc/passwd' leaves the storage root")
    Traceback (most recent call last):
    ...
    bip_disk._errors.PathError: '../etc/passwd' leaves the storage root
    """


class ResumeDataError(DiskError):
    """Resume data is malformed, or describes another torrent."""


class TorrentStateError(DiskError):
    """The torrent's state forbids the operation (stopped, removed, unknown, ...)."""
