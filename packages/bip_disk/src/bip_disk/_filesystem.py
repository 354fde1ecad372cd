"""The ``FileSystem`` protocol: where a torrent's bytes are stored.

A :class:`FileSystem` stores files under one root and is addressed with
*torrent-relative POSIX paths* such as ``"name/dir/file.bin"``, made of components
that bip_metainfo's sanitiser already produced (:class:`~bip_disk.StorageLayout`
does that). Every implementation refuses, with :class:`~bip_disk.PathError`, a
path that is absolute, has an empty, ``.`` or ``..`` component, or holds NUL or a
backslash, before touching anything; so no path can name something outside the
root. The native implementation also refuses to follow a symlink on disk out of
the root.

All methods are synchronous and thread-safe: the trio ``DiskManager`` calls them
from worker threads, several at a time. Every failure of the backend (disk full,
permission denied, an I/O error, a file deleted behind our back) is raised as
:class:`~bip_disk.StorageError` carrying the ``errno`` and the relative path, never
as a bare :class:`OSError`.

Implementations: :class:`~bip_disk.NativeFileSystem` (positional I/O on a local
directory), :class:`~bip_disk.MemoryFileSystem` and
:class:`~bip_disk.FsspecFileSystem` (any fsspec backend: S3, GCS, HDFS, ...).

One optional capability, outside the protocol: a FileSystem with a
``create_executable(path)`` method gets the torrent's BEP 47 executable files (attribute
``x``) created through it, empty, before anything else creates them: before the first
write touching one, or with the torrent's other files when it is empty or allocated (see
:meth:`NativeFileSystem.create_executable <bip_disk.NativeFileSystem.create_executable>`).
:class:`~bip_disk.MemoryFileSystem` and :class:`~bip_disk.FsspecFileSystem` store no
file modes and have none: the attribute is ignored there.
"""

from __future__ import annotations

import errno as errno_codes
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._errors import PathError, StorageError

__all__ = [
    "Buffer",
    "FileStat",
    "FileSystem",
    "check_offset",
    "errno_error",
    "missing",
    "split_path",
    "storage_error",
]

Buffer = bytes | bytearray | memoryview
"""What :meth:`FileSystem.write` accepts."""


@dataclass(frozen=True, slots=True)
class FileStat:
    """What fast resume remembers about a stored file.

    Attributes:
        size: the file's size in bytes.
        mtime_ns: its modification time in nanoseconds since the epoch (negative
            before 1970), as precise as the backend keeps it (``0`` when the backend
            keeps none: fast resume then never vouches for the file, and a restart
            hashes all its pieces again).
    """

    size: int
    mtime_ns: int


@runtime_checkable
class FileSystem(Protocol):
    """Positional storage of files under one root (see the module documentation).

    Paths are torrent-relative POSIX strings; an empty or absolute path, an empty,
    ``.`` or ``..`` component, NUL and backslash are refused. Every method is
    thread-safe and raises
    :class:`~bip_disk.StorageError` (with ``errno`` and ``path``) when the backend
    fails, :class:`~bip_disk.PathError` for a path that is not a safe relative
    path.
    """

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``.

        The result is shorter than ``length`` only when the file ends first (and
        empty at or past the end). A missing file raises ``StorageError`` with
        ``errno.ENOENT``.
        """
        ...

    def write(self, path: str, offset: int, data: Buffer) -> bool | None:
        """Write all of ``data`` at ``offset``, creating the file and its parents.

        Writing past the end extends the file; the gap reads as zeros. Writing
        nothing creates the file but never extends it (as POSIX ``write``). Either
        every byte is written or ``StorageError`` is raised (``ENOSPC``, ``EACCES``,
        ...).

        Returns:
            Whether the file had to be created (it was not there): True for the write
            that created it, False for the others. The DiskManager learns so that a
            file deleted behind its back is gone, not re-created full of holes that
            pass for the pieces it held (they are lost:
            :class:`~bip_disk.PieceLost`). ``None`` (a FileSystem written before this
            was asked, whose ``write`` returns nothing) tells nothing: such a file is
            noticed only when a read of it fails. A write that created the file and then
            raised leaves the telling to the next write of the path that returns.
        """
        ...

    def size(self, path: str) -> int | None:
        """The file's size in bytes, or ``None`` if it does not exist."""
        ...

    def stat(self, path: str) -> FileStat | None:
        """The file's size and modification time, or ``None`` if it does not exist."""
        ...

    def allocate(self, path: str, size: int, *, sparse: bool = True) -> None:
        """Create the file if needed and extend it to at least ``size`` bytes.

        A file already that large is left alone (never shrunk). ``sparse=False``
        asks the backend to reserve the space now, so that a full disk shows up
        here instead of in the middle of a download.
        """
        ...

    def truncate(self, path: str, size: int) -> None:
        """Set an existing file's size to exactly ``size`` (shrinking or extending).

        A missing file raises ``StorageError`` with ``errno.ENOENT``.
        """
        ...

    def sync(self, path: str | None = None) -> None:
        """Make what was written durable: one file, or everything written so far.

        Syncing a missing file raises ``StorageError`` with ``errno.ENOENT``. With no
        path, a file written and removed (or moved) since is no error: nothing is left
        there to make durable.
        """
        ...

    def remove(self, path: str) -> None:
        """Remove a file, a symlink or an empty directory; a missing path is no error."""
        ...

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` to ``new`` (creating ``new``'s parents, replacing a file there)."""
        ...

    def symlink(self, path: str, target: str) -> None:
        """Create a BEP 47 symlink at ``path`` pointing at ``target``.

        ``target`` is a path relative to the root, like ``path`` (not relative to
        the link's directory); the backend stores whatever relative form it needs.
        An existing link at ``path`` is replaced. Backends that cannot store links
        raise ``StorageError`` with ``errno.ENOTSUP``.
        """
        ...

    def close(self) -> None:
        """Flush what the backend buffers and release every open handle.

        Idempotent. The filesystem stays usable: handles reopen on demand, as
        after libtorrent's ``release_files``.
        """
        ...


_FORBIDDEN_CHARACTERS = ("\x00", "\\")


def split_path(path: str) -> tuple[str, ...]:
    """Check a torrent-relative path and split it into its components.

    Shared by every :class:`FileSystem` so that they refuse exactly the same paths.

    Raises:
        PathError: ``path`` is not a ``str``, is empty or absolute, has an empty,
            ``.`` or ``..`` component, or holds NUL or a backslash (a separator on
            Windows, never produced by the sanitiser).

    >>> split_path("name/dir/file.bin")
    ('name', 'dir', 'file.bin')
    >>> split_path("a/../../etc/passwd")
    Traceback (most recent call last):
    ...
    bip_disk._errors.PathError: '..' in 'a/../../etc/passwd' is not a valid path component
    """
    if not isinstance(path, str):
        raise PathError(f"a path must be a str, not {type(path).__name__}")
    if not path:
        raise PathError("a path must not be empty")
    if path.startswith("/"):
        raise PathError(f"{path!r} is absolute; paths are relative to the storage root")
    for character in _FORBIDDEN_CHARACTERS:
        if character in path:
            raise PathError(f"{path!r} holds {character!r}")
    parts = tuple(path.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise PathError(f"{part!r} in {path!r} is not a valid path component")
    if os.name == "nt" and ":" in parts[0]:
        raise PathError(f"{path!r} names a drive")  # pragma: no cover - Windows only
    return parts


def check_offset(path: str, offset: int, what: str = "offset") -> None:
    """Refuse a negative offset, length or size (a caller bug, not a disk fault)."""
    if offset < 0:
        raise ValueError(f"{what} {offset} for {path!r} is negative")


def storage_error(exc: OSError, path: str, action: str) -> StorageError:
    """Turn an :class:`OSError` from the backend into a :class:`StorageError`.

    The message names the action and the relative path, never the absolute path
    under the root, so it can be shown to a user or logged without leaking where
    the storage lives.
    """
    code = exc.errno
    reason = os.strerror(code) if code is not None else (str(exc) or type(exc).__name__)
    return StorageError(f"cannot {action} {path!r}: {reason}", errno=code, path=path)


def errno_error(code: int, path: str, action: str) -> StorageError:
    """The ``StorageError`` a backend raises itself for the failure ``code`` (an errno)."""
    return StorageError(f"cannot {action} {path!r}: {os.strerror(code)}", errno=code, path=path)


def missing(path: str, action: str) -> StorageError:
    """The ``StorageError`` for a file that does not exist."""
    return errno_error(errno_codes.ENOENT, path, action)
