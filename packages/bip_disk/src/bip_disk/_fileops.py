"""Whole-torrent file operations the DiskManager runs on a worker thread.

Creating a torrent's empty files and links once it is checked, deleting its files
when it is removed with its data, and copying them when its storage moves (what
becomes of the torrent's files already at the destination: :class:`ExistingFiles`;
a copy stopped half way: ``CopyStopped``). All synchronous; each returns or
raises :class:`~bip_disk.StorageError` (any other exception from a third-party
FileSystem is turned into one).
"""

from __future__ import annotations

import enum
import errno
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from ._errors import DestinationExistsError, DiskError, StorageError
from ._filesystem import FileStat, FileSystem
from ._layout import StorageLayout, StoredFile, create_stored_files, executable_creator

__all__ = [
    "Copied",
    "CopyStopped",
    "ExistingFiles",
    "as_storage_error",
    "copy_files",
    "create_files",
    "delete_files",
    "refuse_existing",
    "refuse_nested",
    "same_storage",
    "stat_stored",
    "storage_faults",
]


class ExistingFiles(enum.Enum):
    """What :meth:`~bip_disk.DiskManager.move_storage` does with the torrent's files that
    exist at the destination already (libtorrent's ``move_flags_t``).

    Attributes:
        REPLACE: the torrent's copies replace them (libtorrent's
            ``always_replace_files``); one the torrent's old storage lacks is left as
            it is, as libtorrent leaves it (it may be the user's own copy).
        FAIL: the move is refused, before anything is copied, with a
            :class:`~bip_disk.DestinationExistsError` naming the first; each file is
            looked for again just before it is copied, so one that appears during the
            copy stops it too (libtorrent's ``fail_if_exist``).
        KEEP: they are neither copied over nor written, the torrent's own copies of them
            stay in the old storage, and the pieces that touch them are hashed again from
            the new storage (libtorrent's ``dont_replace``).

    >>> ExistingFiles("keep") is ExistingFiles.KEEP
    True
    """

    REPLACE = "replace"
    FAIL = "fail"
    KEEP = "keep"


@dataclass(frozen=True, slots=True)
class Copied:
    """What :func:`copy_files` did.

    Attributes:
        kept: the files found at the destination and left alone (``KEEP`` only), in the
            torrent's order.
        warnings: the links that could not be created.
    """

    kept: tuple[StoredFile, ...]
    warnings: list[StorageError]


class CopyStopped(DiskError):  # noqa: N818 - named for what happened, like trio.Cancelled
    """``copy_files`` was told to stop before it was done; what it had written to the
    destination is deleted (what was there before and left alone stays, but for an empty
    folder of the torrent's left empty again: see ``copy_files``).

    Attributes:
        problems: the errors deleting that met (deleting goes on past each).
    """

    def __init__(self, problems: list[StorageError]) -> None:
        super().__init__(
            "the copy was stopped"
            + (f"; deleting what it wrote failed {len(problems)} times" if problems else "")
        )
        self.problems = problems


_log = logging.getLogger("bip_disk.manager")  # what it finds are the manager's torrents' faults

_COPY_CHUNK = 4 * 1024 * 1024
# What a storage answers when it is not to be written at all (read-only, not allowed):
# the only failures ``refuse_nested`` takes as "that half cannot be looked at".
_REFUSED = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_ZEROS = bytes(_COPY_CHUNK)


def as_storage_error(error: BaseException, path: str | None = None) -> StorageError:
    """``error`` as a :class:`StorageError` (unchanged if it already is one).

    A new one keeps ``error`` as its ``__cause__``.
    """
    if isinstance(error, StorageError):
        return error
    code = error.errno if isinstance(error, OSError) else None
    converted = StorageError(f"{type(error).__name__}: {error}", errno=code, path=path)
    converted.__cause__ = error
    return converted


@contextmanager
def storage_faults(path: str | None = None) -> Iterator[None]:
    """Turn any exception raised inside into a :class:`StorageError` (its ``__cause__``).

    A FileSystem must raise StorageError only, but one from a third party may let
    anything through (an ``OSError``, its backend's own ``ValueError``, our
    ``PathError``); it is a storage fault all the same, never a crash. A
    ``StorageError`` passes unchanged, and so does what is not an ``Exception``
    (``trio.Cancelled``, ``KeyboardInterrupt``). One that is neither an ``OSError`` nor
    one of ours (a bug, ours or the plugin's) is logged at DEBUG with its traceback,
    which the fault loses (its frames are dropped to free the buffers they hold).
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        if not isinstance(error, (OSError, DiskError)):  # PathError: a fault, not a bug
            _log.debug(
                "a storage call on %r raised %s, taken as a storage fault",
                path,
                type(error).__name__,
                exc_info=error,
            )
        raise as_storage_error(error, path) from error


def create_files(
    fs: FileSystem,
    layout: StorageLayout,
    allocate: Literal["none", "sparse", "full"] = "none",
) -> list[StorageError]:
    """Create the torrent's zero-length files (and allocate the others if asked), then links.

    Executable files (BEP 47 ``x``) among these are created executable first, in a
    FileSystem that can (see ``bip_disk._layout.create_stored_files``); a non-empty one
    left to grow (``allocate`` ``"none"``) is created by its first write instead.

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


def delete_files(
    fs: FileSystem, layout: StorageLayout, *, keep: Collection[str] = ()
) -> list[StorageError]:
    """Delete the torrent's files and links (but those at the paths in ``keep``), then the
    directories they leave empty.

    Directories that still hold something (files not of this torrent, kept ones) stay.
    Returns the errors met; deleting goes on past each.
    """
    return _delete_paths(
        fs, (file.path for file in layout.files if not file.is_pad and file.path not in keep)
    )


def _delete_paths(fs: FileSystem, paths: Iterable[str]) -> list[StorageError]:
    """Delete the files or links at ``paths``, then the directories they leave empty; the
    errors met (deleting goes on past each). A parent directory of theirs that is empty is
    removed whoever made it: one that was there, empty, before the files were (a user's
    own folder) goes too, as nothing tells the two apart."""
    errors: list[StorageError] = []
    directories: set[str] = set()
    for path in paths:
        directories.update(_parents(path))
        try:
            with storage_faults(path):
                fs.remove(path)
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


def refuse_existing(destination: FileSystem, layout: StorageLayout) -> None:
    """Raise if any of the torrent's stored files exists in ``destination`` (before a move
    with :attr:`ExistingFiles.FAIL` copies anything).

    Raises:
        DestinationExistsError: naming the first such file (and how many more there are).
        StorageError: a file could not be looked at.
    """
    found: list[str] = []
    for file in layout.stored_files:
        with storage_faults(file.path):
            if destination.stat(file.path) is not None:
                found.append(file.path)
    if found:
        more = len(found) - 1
        raise DestinationExistsError(
            f"{found[0]} exists at the destination"
            + (f" (and {more} more of the torrent's files)" if more else ""),
            path=found[0],
        )


def stat_stored(fs: FileSystem, file: StoredFile) -> FileStat | None:
    """``fs.stat`` of a torrent's stored file, None for a zero-length one that cannot be
    stat'ed (a directory the user made at its path): it holds no piece, so it stops
    nothing (as the check passes over it), and ``create_files`` makes it where nothing is.

    Raises:
        StorageError: stat'ing a file that holds bytes failed.
    """
    if file.length:
        return fs.stat(file.path)
    try:
        return fs.stat(file.path)
    except (StorageError, OSError):  # OSError: a third party's, not wrapped yet
        return None


def copy_files(
    source: FileSystem,
    destination: FileSystem,
    layout: StorageLayout,
    existing: ExistingFiles = ExistingFiles.REPLACE,
    *,
    stop: Callable[[], bool] | None = None,
) -> Copied:
    """Copy the torrent's stored files from ``source`` to ``destination``, then sync it.

    Each file is copied up to its current size in 4 MiB chunks; runs of zeros are
    not written but allocated (sparse), so a sparse download stays sparse. A file
    already in ``destination`` is removed first (``REPLACE``), so that the copy is
    the source's byte for byte. Files missing from the source are skipped, and what
    ``destination`` has at their paths stays, as libtorrent leaves it (it may be the
    user's own copy; the torrent had none of its bytes to copy). Links and empty
    files are created as :func:`create_files` does; a copied executable file (BEP 47
    ``x``) is created executable, in a FileSystem that can, before its bytes are copied
    (one the source lacks is not created). With ``existing`` other than
    ``REPLACE``, each file is looked for in ``destination`` just before it is
    copied: ``FAIL`` raises, ``KEEP`` leaves it alone (a file appearing between that
    look and the first write is still replaced: the FileSystem protocol has no
    exclusive create).

    ``stop`` (called on this thread; it must be quick and thread-safe) is asked before
    each file is touched, before each further chunk and before the links and the sync:
    once it answers true, the files this copy created or wrote over are deleted, with
    the directories that leaves empty, and :class:`CopyStopped` is raised. So whoever
    stops a copy waits for one chunk at most (and the deletion). Files it had not
    reached and those ``KEEP`` left alone stay as they were; one ``REPLACE`` removed
    before copying it is not brought back (its copy is deleted with the others), and
    a folder of the torrent's that was at the destination already, empty (the user's
    own), goes too when it is empty again: the FileSystem does not tell who made a
    folder.

    Raises:
        CopyStopped: ``stop`` answered true.
        DestinationExistsError: ``FAIL``, and a file of the torrent is in ``destination``.
        StorageError: reading, writing or syncing failed.
    """
    kept: list[StoredFile] = []
    # What a stopped copy deletes: the files it created or wrote over, in order.
    written: list[str] = []
    create_executable = executable_creator(destination)
    for file in layout.stored_files:
        if stop is not None and stop():
            raise CopyStopped(_delete_paths(destination, written))
        whole = True
        with storage_faults(file.path):
            if existing is not ExistingFiles.REPLACE and destination.stat(file.path) is not None:
                if existing is ExistingFiles.FAIL:
                    raise DestinationExistsError(
                        f"{file.path} exists at the destination (it appeared during the copy)",
                        path=file.path,
                    )
                kept.append(file)
                continue
            stat = stat_stored(source, file)
            if stat is None:
                # Nothing to copy: what the destination has there (the user's own copy,
                # or a folder) stays, as libtorrent's move_storage leaves it, and is not
                # even looked at (a folder there must not fail the move).
                continue
            if existing is ExistingFiles.REPLACE and destination.stat(file.path) is not None:
                # The copy below skips runs of zeros and never shrinks: written over, the
                # old file would keep its bytes there and its tail, under pieces still
                # had (served, trusted by the resume data). Removed, not truncated: a
                # staged fsspec view would load the whole old file to truncate it, and a
                # link there is replaced rather than followed.
                destination.remove(file.path)
            written.append(file.path)
            if file.executable and create_executable is not None:
                # Created executable before the copy writes it, as the DiskManager's first
                # write of it does.
                create_executable(file.path)
            whole = _copy_file(source, destination, file.path, stat.size, stop)
        if not whole:
            # Out of storage_faults: deleting collects its own errors.
            raise CopyStopped(_delete_paths(destination, written))
    if stop is not None and stop():
        raise CopyStopped(_delete_paths(destination, written))
    # An empty kept file is not touched by this either: allocating never shrinks a file.
    warnings = create_files(destination, layout)
    with storage_faults():
        destination.sync()
    return Copied(tuple(kept), warnings)


def _copy_file(
    source: FileSystem,
    destination: FileSystem,
    path: str,
    size: int,
    stop: Callable[[], bool] | None,
) -> bool:
    """Copy ``path`` up to ``size`` bytes (see ``copy_files``); False when ``stop`` answered
    true before a chunk after the first (the copy of the file is then partial, or missing
    if its chunks so far were zeros)."""
    offset = 0
    while offset < size:
        if offset and stop is not None and stop():
            return False
        chunk = source.read(path, offset, min(_COPY_CHUNK, size - offset))
        if not chunk:
            break  # the file shrank under us: copy what there is
        if chunk != _ZEROS[: len(chunk)]:
            destination.write(path, offset, chunk)
        offset += len(chunk)
    destination.allocate(path, offset)
    return True


def same_storage(first: FileSystem, second: FileSystem) -> bool:
    """Whether two FileSystems store their files in the same place (two views of one root).

    Moving a torrent from one to the other must then copy nothing and, above all,
    delete nothing. Found out by writing a uniquely named marker file through
    ``second``, syncing it, and looking for it through ``first``; the marker is removed.
    The sync is what makes the marker visible to another view: a staged
    :class:`~bip_disk.FsspecFileSystem` keeps a write in memory until then (and any
    FileSystem may buffer writes until its sync), so without it two views of one
    bucket would look like two storages.

    Raises:
        StorageError: the marker could not be written, synced, or looked for through
            ``first``. Never answered "different" then: a move would copy each file
            onto itself and delete the old files, the only copy.
    """
    marker = f".bip-disk-move-{uuid.uuid4().hex}"
    try:
        with storage_faults(marker):
            second.write(marker, 0, b"bip_disk")
            second.sync(marker)
            return first.stat(marker) is not None
    except StorageError as error:
        raise StorageError(
            "cannot tell whether the two storages are one (writing the marker "
            f"{marker!r} through the destination and looking for it failed: {error}): "
            "nothing was moved",
            errno=error.errno,
            path=marker,
        ) from error
    finally:
        # Removed from wherever it got to: a staged copy that failed to upload is
        # dropped, an uploaded one is deleted from the backend; missing is no error.
        try:
            with storage_faults(marker):
                second.remove(marker)
        except StorageError:
            pass  # a stray marker file is harmless


def refuse_nested(source: FileSystem, destination: FileSystem, layout: StorageLayout) -> None:
    """Raise if one storage's root lies inside the other's where the torrent's paths meet
    (before a move touches anything; two views of one root are :func:`same_storage`).

    With ``destination``'s root at ``folder`` inside ``source``'s (or the other way
    round), a file's new place is ``folder/path`` in the other's terms: if that is one
    of the torrent's own paths, the copy would replace a file it has yet to read and
    deleting the old files would delete a new one. Whether that can happen at all
    depends on the torrent's paths only: the folders ``F`` such that ``F/path`` is one
    of its paths for another of its paths are found first, and a torrent with none
    (nearly every torrent) costs no storage call. Only those folders are looked at: a
    marker file written (and synced) through one storage is looked for under each
    through the other, and removed. A root nested elsewhere, or whose paths do not
    meet (``root/name/name/...`` to ``root/name/...``), moves. libtorrent's
    ``move_storage`` checks nothing of the kind.
    A source that refuses writing (``EROFS``, ``EACCES``, ``EPERM``) cannot be looked
    for in the destination: that half is left out (a source that cannot be written is
    no part of the writable destination). Any other failure writing it is "cannot tell".

    Raises:
        StorageError: ``EINVAL``, the roots are nested where the paths meet; or a marker
            could not be looked for (never answered "not nested" then).
    """
    names = {file.path for file in layout.stored_files + layout.symlinks}
    # Folders F with F/name among the names: only a root at one of them can make a file's
    # new place another's old one. Pure computation, before any storage call.
    folders = sorted(
        {
            "/".join(parts[:depth])
            for name in names
            for parts in [name.split("/")]
            for depth in range(1, len(parts))
            if "/".join(parts[depth:]) in names
        }
    )
    if not folders:
        return  # no path of the torrent is another's inside a folder: they cannot meet
    for outer, inner, inward in ((source, destination, True), (destination, source, False)):
        folder = _nested_at(outer, inner, folders, written_through_source=not inward)
        if folder is None:
            continue
        met = sorted(name for name in names if f"{folder}/{name}" in names)
        if met:
            inside = ("new", "old") if inward else ("old", "new")
            where = "the {} storage lies inside the {} one".format(*inside)
            raise StorageError(
                f"cannot move: {where} at the torrent's folder {folder!r}, so "
                f"{met[0]!r} would land on {folder + '/' + met[0]!r}, a file of the torrent "
                "still needed: nothing was moved",
                errno=errno.EINVAL,
                path=met[0],
            )


def _nested_at(
    outer: FileSystem, inner: FileSystem, folders: list[str], *, written_through_source: bool
) -> str | None:
    """The folder of ``outer`` that is ``inner``'s root, among ``folders`` (or None).

    A marker written through ``inner`` shows through ``outer`` at ``folder/marker``.
    """
    marker = f".bip-disk-move-{uuid.uuid4().hex}"
    try:
        try:
            with storage_faults(marker):
                inner.write(marker, 0, b"bip_disk")
                inner.sync(marker)
        except StorageError as error:
            if written_through_source and error.errno in _REFUSED:
                return None  # a source that refuses writing (see refuse_nested)
            raise
        for folder in folders:
            probe = f"{folder}/{marker}"
            try:
                with storage_faults(probe):
                    if outer.stat(probe) is not None:
                        return folder
            except StorageError as error:
                if error.errno != errno.ENOTDIR:  # a file of that name: not a folder there
                    raise
        return None
    except StorageError as error:
        raise StorageError(
            "cannot tell whether one storage lies inside the other (writing the marker "
            f"{marker!r} through one and looking for it through the other failed: {error}): "
            "nothing was moved",
            errno=error.errno,
            path=marker,
        ) from error
    finally:
        try:
            with storage_faults(marker):
                inner.remove(marker)
        except StorageError:
            pass  # a stray marker file is harmless
