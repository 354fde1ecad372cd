"""Whole-torrent file operations the DiskManager runs on a worker thread.

Creating a torrent's empty files and links once it is checked, deleting its files
when it is removed with its data, and copying them when its storage moves. All
synchronous; each returns or raises :class:`~bip_disk.StorageError` (an
:class:`OSError` from a third-party FileSystem is turned into one).
"""

from __future__ import annotations

import errno
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from ._errors import PathError, StorageError
from ._filesystem import FileSystem
from ._layout import StorageLayout, create_stored_files

__all__ = [
    "as_storage_error",
    "copy_files",
    "create_files",
    "delete_files",
    "same_storage",
    "storage_faults",
]

_COPY_CHUNK = 4 * 1024 * 1024
_ZEROS = bytes(_COPY_CHUNK)


def as_storage_error(error: BaseException, path: str | None = None) -> StorageError:
    """``error`` as a :class:`StorageError` (unchanged if it already is one)."""
    if isinstance(error, StorageError):
        return error
    code = error.errno if isinstance(error, OSError) else None
    return StorageError(f"{type(error).__name__}: {error}", errno=code, path=path)


@contextmanager
def storage_faults(path: str | None = None) -> Iterator[None]:
    """Turn an ``OSError`` or ``PathError`` raised inside into a :class:`StorageError`.

    A FileSystem must raise StorageError only, but one from a third party may let
    an ``OSError`` through; it is a storage fault all the same, never a crash.
    """
    try:
        yield
    except (OSError, PathError) as error:
        raise as_storage_error(error, path) from error


def create_files(
    fs: FileSystem,
    layout: StorageLayout,
    allocate: Literal["none", "sparse", "full"] = "none",
) -> list[StorageError]:
    """Create the torrent's zero-length files (and allocate the others if asked), then links.

    Returns the errors creating links (a backend that cannot store them: the torrent
    works without them); a failure to create or allocate a file is raised.

    Raises:
        StorageError: a file could not be created or allocated (disk full, ...).
    """
    with storage_faults():
        create_stored_files(fs, layout, allocate=allocate)
    warnings = []
    for link in layout.symlinks:
        assert link.symlink_target is not None  # symlinks holds links only
        try:
            with storage_faults(link.path):
                fs.symlink(link.path, link.symlink_target)
        except StorageError as error:
            warnings.append(error)
    return warnings


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(len(parts) - 1, 0, -1)]


def delete_files(fs: FileSystem, layout: StorageLayout) -> list[StorageError]:
    """Delete the torrent's files and links, then the directories they leave empty.

    Directories that still hold something (files not of this torrent) stay.
    Returns the errors met; deleting goes on past each.
    """
    errors: list[StorageError] = []
    directories: set[str] = set()
    for file in layout.files:
        if file.is_pad:
            continue
        directories.update(_parents(file.path))
        try:
            with storage_faults(file.path):
                fs.remove(file.path)
        except StorageError as error:
            errors.append(error)
    # Deepest first, so a directory is empty by the time its turn comes.
    for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
        try:
            with storage_faults(directory):
                fs.remove(directory)
        except StorageError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                errors.append(error)
    return errors


def copy_files(
    source: FileSystem, destination: FileSystem, layout: StorageLayout
) -> list[StorageError]:
    """Copy the torrent's stored files from ``source`` to ``destination``, then sync it.

    Each file is copied up to its current size in 4 MiB chunks; runs of zeros are
    not written but allocated (sparse), so a sparse download stays sparse. Missing
    files are skipped. Links and empty files are created as :func:`create_files`
    does; the errors creating links are returned.

    Raises:
        StorageError: reading, writing or syncing failed.
    """
    for file in layout.stored_files:
        with storage_faults(file.path):
            stat = source.stat(file.path)
            if stat is None:
                continue
            offset = 0
            while offset < stat.size:
                chunk = source.read(file.path, offset, min(_COPY_CHUNK, stat.size - offset))
                if not chunk:
                    break  # the file shrank under us: copy what there is
                if chunk != _ZEROS[: len(chunk)]:
                    destination.write(file.path, offset, chunk)
                offset += len(chunk)
            destination.allocate(file.path, offset)
    warnings = create_files(destination, layout)
    with storage_faults():
        destination.sync()
    return warnings


def same_storage(first: FileSystem, second: FileSystem) -> bool:
    """Whether two FileSystems store their files in the same place (two views of one root).

    Moving a torrent from one to the other must then copy nothing and, above all,
    delete nothing. Found out by writing a uniquely named marker file through
    ``second`` and looking for it through ``first``; the marker is removed.

    Raises:
        StorageError: the marker could not be written.
    """
    marker = f".bip-disk-move-{uuid.uuid4().hex}"
    with storage_faults(marker):
        second.write(marker, 0, b"bip_disk")
    try:
        with storage_faults(marker):
            return first.stat(marker) is not None
    except StorageError:
        return False
    finally:
        try:
            with storage_faults(marker):
                second.remove(marker)
        except StorageError:
            pass  # a stray marker file is harmless
