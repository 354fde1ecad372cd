"""``NativeFileSystem``: a :class:`~bip_disk.FileSystem` on a local directory.

**Positional I/O.** Reads and writes use ``os.pread`` / ``os.pwrite`` on file
descriptors shared by every thread, so concurrent blocks of the same file never
wait for one another and no file position is shared. (Where the OS has no
``pread``, Windows, each descriptor gets a lock around ``lseek`` + ``read``.)

**Open file handles** are kept in an LRU cache of at most ``max_open_files``
descriptors, so a torrent of 100 000 files does not exhaust the process's
descriptors and a busy file is not reopened per block. A descriptor is counted
while threads use it: one evicted meanwhile is closed by the last thread done
with it, never under it. So ``max_open_files`` bounds the idle descriptors; at
most one more per thread in the middle of a call can be open. Files are opened
read-only for reads (seeding read-only files works) and reopened read-write on
the first write.

**Staying inside the root.** Every path is checked by
:func:`~bip_disk._filesystem.split_path` first, then opened component by
component from a descriptor of the root (``openat`` with ``O_NOFOLLOW`` and
``O_DIRECTORY``), never as one string. A symlink found on the way is read and
resolved by hand: one that leads inside the root is followed (the torrent's own
BEP 47 links, or a user's), one that leads out of it (absolute, or with enough
``..``) is refused with :class:`~bip_disk.PathError`, at most 40 links are
followed per lookup (then ``ELOOP``). Because the final ``open`` is made with
``O_NOFOLLOW`` relative to a directory reached without following any link, a
link planted concurrently can make an open fail but never redirect it outside.
Where the OS has no ``dir_fd`` support or no ``O_NOFOLLOW`` (Windows) the same
walk is made with ``lstat`` on each prefix; a link swapped in between that check
and the ``open`` could then still be followed (a race this fallback cannot
close; use a directory other users cannot write to). Only regular files are
opened: each open is made with ``O_NONBLOCK`` and checked with ``fstat``, so a
FIFO or device swapped in for a file is refused (``EINVAL``) instead of blocking
a thread for ever.

**Preallocation.** :meth:`~NativeFileSystem.allocate` with ``sparse=True``
extends a file with ``ftruncate`` (a hole: no blocks used until written). With
``sparse=False``, or on a filesystem made with ``preallocate="full"``, blocks are
reserved with ``os.posix_fallocate`` over the whole file (filling holes too), so
a full disk shows up at once. Where ``posix_fallocate`` does not exist (macOS,
Windows) or the filesystem does not support it (``EOPNOTSUPP``), the part past
the current end is written with zeros instead; that is slower but reserves the
space just the same. glibc emulates ``posix_fallocate`` on filesystems without
``fallocate`` by writing a zero into each unallocated block, so do not allocate a
file while other threads write to it.

**Durability.** :meth:`~NativeFileSystem.sync` calls ``fsync`` (``F_FULLFSYNC``
on macOS) on the file and on its directory, so a newly created file survives a
power loss too. ``sync()`` with no path syncs every file written, allocated or
truncated since its last sync, even if its descriptor was evicted meanwhile, or
still being written while that sync ran (its bytes may have come after the fsync),
or renamed since (at its new path, writes in flight included). One no longer at
its path (removed, or deleted behind our back) is passed over: nothing is there to
make durable.

**Permissions.** Files are created with mode ``0o666`` and directories with
``0o777``, both reduced by the process umask. A torrent's BEP 47 executable files
(attribute ``x``) are created with ``0o777`` instead, reduced by the umask too, as
libtorrent creates them when it first opens them for writing (see
:meth:`~NativeFileSystem.create_executable`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

from ._errors import PathError, StorageError
from ._filesystem import Buffer, FileStat, check_offset, split_path, storage_error

__all__ = ["NativeFileSystem"]

_MAX_HOPS = 40  # symlinks followed in one lookup (Linux's MAXSYMLINKS)
_MAX_ATTEMPTS = 8  # retries when a link appears between the walk and the open
_ZERO_CHUNK = 1 << 20  # zeros written per call when fallocate is not available

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # Windows: none (and no FIFOs in a folder)

# The secure walk needs every call it makes to accept dir_fd, and O_NOFOLLOW.
_SECURE = bool(_O_NOFOLLOW and _O_DIRECTORY) and all(
    function in os.supports_dir_fd
    for function in (os.open, os.mkdir, os.stat, os.readlink, os.unlink, os.rmdir, os.rename)
)
_HAS_PREAD = hasattr(os, "pread") and hasattr(os, "pwrite")
_HAS_PWRITEV = hasattr(os, "pwritev")
try:  # buffers per pwritev call (Linux: 1024)
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - no sysconf
    _IOV_MAX = 16


class _Handle:
    """An open descriptor and the threads using it (guarded by the cache lock)."""

    __slots__ = ("fd", "lock", "retired", "users", "writable")

    def __init__(self, fd: int, writable: bool) -> None:
        self.fd = fd
        self.writable = writable
        self.users = 0
        self.retired = False  # out of the cache: the last user closes it
        # Only without pread: lseek + read must not interleave between threads.
        self.lock = None if _HAS_PREAD else threading.Lock()


class _Flight:
    """The writes in flight of one path (guarded by the cache lock).

    Registered in ``NativeFileSystem._writing`` under ``path`` from the path's first
    write until its dirty mark is dropped (``count`` 0 then: not made again per write).
    Each write holds the one it counted in until it is done, so that a rename moves the
    count with the file its bytes go to: to the new ``path``, or ``into`` the one of
    the writes in flight there already (the two counts then go on together).
    """

    __slots__ = ("count", "into", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self.into: _Flight | None = None


class NativeFileSystem:
    """A :class:`~bip_disk.FileSystem` on a local directory (see the module documentation).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     with NativeFileSystem(directory) as fs:
    ...         fs.write("t/a.bin", 2, b"xyz")  # the file had to be created
    ...         fs.read("t/a.bin", 0, 10)
    True
    b'\\x00\\x00xyz'
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_open_files: int = 64,
        preallocate: Literal["sparse", "full"] = "sparse",
    ) -> None:
        """A filesystem storing files under ``root`` (created on the first write).

        Args:
            root: the storage directory; relative paths are made absolute now.
                The root itself may be a symlink: it is the user's choice.
            max_open_files: how many idle descriptors to keep open (at least 1).
            preallocate: ``"full"`` makes every :meth:`allocate` reserve the space,
                whatever its ``sparse`` argument says; ``"sparse"`` honours it.
        """
        if max_open_files < 1:
            raise ValueError(f"max_open_files must be at least 1, not {max_open_files}")
        if preallocate not in ("sparse", "full"):
            raise ValueError(f"preallocate must be 'sparse' or 'full', not {preallocate!r}")
        self.root = Path(os.path.abspath(os.fspath(root)))
        """The storage directory."""
        self.max_open_files = max_open_files
        self.preallocate = preallocate
        self._secure = _SECURE
        self._lock = threading.Lock()
        self._handles: OrderedDict[str, _Handle] = OrderedDict()
        # Paths changed since their last sync, each with the serial number of its latest
        # marking: a sync drops a mark only if nothing marked the path again meanwhile.
        self._dirty: dict[str, int] = {}
        self._serial = 0
        # Writes (and allocations, truncations) between taking their handle and giving it
        # back, per path: a sync meanwhile keeps the path marked, as their bytes may land
        # after its fsync (see _sync_one).
        self._writing: dict[str, _Flight] = {}
        # Bumped by every _forget: an open that saw another value before it started may
        # hold a file removed or moved from its path since, so it is not cached.
        self._forgets = 0
        # Renames between their move and their moving the marks (see _sync_one).
        self._renaming = 0
        # Files a write created and has not told yet (see _take_created): set by the open
        # that creates one, so that a write failing after it leaves it for the next.
        self._created: set[str] = set()

    def __repr__(self) -> str:
        """The root and the cache bound."""
        return f"NativeFileSystem({str(self.root)!r}, max_open_files={self.max_open_files})"

    def __enter__(self) -> NativeFileSystem:
        """Use as a context manager: :meth:`close` on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Release every handle."""
        self.close()

    @property
    def open_files(self) -> int:
        """How many descriptors the cache holds now (in-use evicted ones excluded)."""
        with self._lock:
            return len(self._handles)

    # -- walking the tree -----------------------------------------------------

    def _open_root(self, path: str, create: bool) -> int | None:
        """A descriptor of the root in secure mode (``None`` in fallback mode)."""
        if create:
            os.makedirs(self.root, exist_ok=True)
        if not self._secure:
            if not self.root.is_dir():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            return None
        return os.open(self.root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)

    def _escape(self, path: str) -> PathError:
        return PathError(f"{path!r} leads through a symlink out of the storage root")

    def _link_target(self, path: str, text: str) -> tuple[bool, list[str]]:
        """A link's text as (relative to the root?, components to walk)."""
        if os.path.isabs(text):
            real_root = os.path.realpath(self.root)
            try:
                inside = os.path.commonpath([real_root, text]) == real_root
            except ValueError:  # another drive
                inside = False
            if not inside:
                raise self._escape(path)
            relative = os.path.relpath(text, real_root)
            return True, [] if relative == "." else relative.replace(os.sep, "/").split("/")
        return False, text.replace(os.sep, "/").split("/")

    def _walk(
        self, path: str, parts: tuple[str, ...], *, create: bool, follow_last: bool
    ) -> tuple[int | None, str]:
        """Reach the directory holding the last component of ``parts``.

        Returns ``(dir_fd, name)`` to use with the ``dir_fd`` argument of ``os``
        calls; in fallback mode ``dir_fd`` is ``None`` and ``name`` the full path.
        The caller closes ``dir_fd``. Links on the way (and on the last component
        with ``follow_last``) are followed while they stay inside the root.
        ``create`` makes missing directories.
        """
        if not self._secure:
            return None, self._walk_fallback(path, parts, create=create, follow_last=follow_last)
        root_fd = self._open_root(path, create)
        assert root_fd is not None
        stack = [root_fd]  # real directories from the root down, never links
        pending = list(parts)
        hops = 0
        try:
            while pending:
                name = pending.pop(0)
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) == 1:
                        raise self._escape(path)
                    os.close(stack.pop())
                    continue
                last = not pending
                if last and not follow_last:
                    return stack.pop(), name
                try:
                    if last:
                        mode = os.stat(name, dir_fd=stack[-1], follow_symlinks=False).st_mode
                        if not stat.S_ISLNK(mode):
                            return stack.pop(), name
                        fd = -1
                    else:
                        fd = self._open_directory(name, stack[-1], create)
                except FileNotFoundError:
                    if last:
                        return stack.pop(), name
                    raise
                if fd >= 0:
                    stack.append(fd)
                    continue
                # A symlink: continue with its target.
                hops += 1
                if hops > _MAX_HOPS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                absolute, target = self._link_target(path, os.readlink(name, dir_fd=stack[-1]))
                if absolute:
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending[:0] = target
                if not pending:  # a link to the root itself
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))  # only ".."s
        finally:
            for fd in stack:
                os.close(fd)

    @staticmethod
    def _open_directory(name: str, dir_fd: int, create: bool) -> int:
        """Open a directory without following a link (-1 if ``name`` is a link)."""
        flags = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
        for _ in range(_MAX_ATTEMPTS):
            try:
                return os.open(name, flags, dir_fd=dir_fd)
            except FileNotFoundError:
                if not create:
                    raise
                # Another thread may have made it (or a link appeared): look again.
                # ENOENT from mkdir means ``dir_fd`` itself was removed meanwhile: it
                # reaches _open, which walks again.
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise
                if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    return -1
                raise
        raise OSError(errno.EAGAIN, "the directory keeps changing")  # pragma: no cover

    def _walk_fallback(
        self, path: str, parts: tuple[str, ...], *, create: bool, follow_last: bool
    ) -> str:
        """The same walk with ``lstat`` on each prefix, for OSes without ``dir_fd``."""
        self._open_root(path, create)
        current: list[str] = []
        pending = list(parts)
        hops = 0
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if not current:
                    raise self._escape(path)
                current.pop()
                continue
            last = not pending
            full = os.path.join(self.root, *current, name)
            if last and not follow_last:
                return full
            try:
                info = os.lstat(full)
            except FileNotFoundError:
                if last:
                    return full
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(full, 0o777)
                pending.insert(0, name)  # look at what is there now
                continue
            if stat.S_ISLNK(info.st_mode) or _is_junction(full):
                hops += 1
                if hops > _MAX_HOPS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                absolute, target = self._link_target(path, os.readlink(full))
                if absolute:
                    current.clear()
                pending[:0] = target
                continue
            if last:
                return full
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            current.append(name)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))

    def _open(self, path: str, parts: tuple[str, ...], flags: int) -> tuple[int, bool]:
        """Open the file at ``path`` inside the root (see the module documentation).

        Returns the descriptor, and whether this open created the file. With
        ``O_CREAT`` the file is opened as it is first, and only if it is not there
        created with ``O_EXCL``: so a write knows it made the file (see
        :meth:`write`), and of two threads creating it at once one is told so.
        """
        flags |= _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
        create = bool(flags & os.O_CREAT)
        found = flags & ~os.O_CREAT
        gone: OSError | None = None  # why the last attempt failed, if a removal
        for _ in range(_MAX_ATTEMPTS):
            gone = None
            try:
                dir_fd, name = self._walk(path, parts, create=create, follow_last=True)
            except FileNotFoundError as exc:
                if not create:
                    raise
                gone = exc  # a directory removed while the walk made the next one in it
                continue
            try:
                try:
                    return _open_regular(path, name, found, dir_fd), False
                except FileNotFoundError:
                    if not create:
                        raise
                try:
                    return _open_regular(path, name, flags | os.O_EXCL, dir_fd), True
                except FileExistsError:
                    continue  # made meanwhile (or a link put there): the next walk opens it
                except FileNotFoundError as exc:
                    # Its directory was removed since the walk (another torrent deleted
                    # with its files, a move): walk again, making it, as libtorrent does.
                    gone = exc
                    continue
            except OSError as exc:
                # A link created since the walk looked: walk again (it is followed
                # then, or refused if it leads out).
                if exc.errno != errno.ELOOP or not _is_link(name, dir_fd):
                    raise
            finally:
                if dir_fd is not None:
                    os.close(dir_fd)
        raise gone or OSError(errno.ELOOP, os.strerror(errno.ELOOP))

    # -- the handle cache -----------------------------------------------------

    def _acquire(
        self, path: str, parts: tuple[str, ...], *, write: bool, create: bool, told: bool = False
    ) -> tuple[_Handle, _Flight | None]:
        """A handle for ``path``, counted as in use until :meth:`_release`.

        A write handle also marks the file as changed, for :meth:`sync` with no
        path, and counts the write in flight until :meth:`_release` (so that a sync
        meanwhile keeps the mark), in the :class:`_Flight` returned with the handle
        (None for a read); under the same lock, so a write costs one lock round trip
        here. A handle opened while :meth:`_forget` ran (a remove or rename of the
        path, which may have happened after the open) is used for this call only,
        never cached: it may hold a file no longer at ``path``. With ``told`` (a
        :meth:`write`'s open) a file it creates is kept for :meth:`_take_created`:
        only a write's own creation means a file was deleted behind our back. One
        :meth:`allocate` creates is made on purpose (the torrent's files at a start, a
        moved file none of whose chunks the copy had to write, all zeros): the next
        write must not take the pieces it holds for lost.
        """
        with self._lock:
            handle = self._handles.get(path)
            if handle is not None and (handle.writable or not write):
                self._handles.move_to_end(path)
                handle.users += 1
                return handle, self._start_write(path) if write else None
            forgets = self._forgets
        flags = (os.O_RDWR | (os.O_CREAT if create else 0)) if write else os.O_RDONLY
        fd, created = self._open(path, parts, flags)
        fresh = _Handle(fd, write)
        idle: list[int] = []  # descriptors to close once the lock is released
        with self._lock:
            flight = self._start_write(path) if write else None
            if created and told:
                self._created.add(path)
            handle = self._handles.get(path)
            if handle is not None and (handle.writable or not write):
                # Another thread opened it meanwhile: use theirs (opened after ours
                # created the file, if ours did: this call still made it).
                handle.users += 1
                self._handles.move_to_end(path)
                idle.append(fresh.fd)
            else:
                fresh.users = 1
                if self._forgets != forgets:
                    # A remove or rename ran meanwhile, perhaps after our open: what we
                    # opened may be gone from ``path``. Used by this call only, then closed.
                    fresh.retired = True
                else:
                    if handle is not None:
                        self._retire(path, idle)  # read-only, replaced by a writable one
                    self._handles[path] = fresh
                    while len(self._handles) > self.max_open_files:
                        self._retire(next(iter(self._handles)), idle)
                handle = fresh
        if idle:
            try:
                _close_all(idle)
            except OSError:
                # This call counts as a user (and a write in flight) already: given back,
                # or they would stay for ever.
                self._release(handle, flight)
                raise
        return handle, flight

    def _start_write(self, path: str) -> _Flight:
        """Mark ``path`` changed and count a write in flight on it (the lock is held)."""
        self._mark(path)
        flight = self._writing.get(path)
        if flight is None:
            flight = self._writing[path] = _Flight(path)
        flight.count += 1
        return flight

    def _mark(self, path: str) -> None:
        """Mark ``path`` changed, for :meth:`sync` with no path (the lock is held)."""
        self._serial += 1
        self._dirty[path] = self._serial

    def _release(self, handle: _Handle, flight: _Flight | None = None) -> None:
        """Give back a handle :meth:`_acquire` gave, with its write in flight (over now).

        Both counts drop first; the descriptor of a retired handle is closed after, once
        the lock is released: a close that fails (NFS and FUSE report deferred write
        errors there) raises, having left no count behind.
        """
        with self._lock:
            if flight is not None:
                while flight.into is not None:  # merged by a rename (see _move_marks)
                    flight = flight.into
                flight.count -= 1
                if not flight.count and flight.path not in self._dirty:
                    del self._writing[flight.path]  # its mark went meanwhile (a removal)
            handle.users -= 1
            last = handle.retired and not handle.users
        if last:
            os.close(handle.fd)

    def _retire(self, path: str, idle: list[int]) -> None:
        """Drop ``path``'s handle from the cache (the lock is held).

        Its descriptor goes onto ``idle`` if no call uses it, for the caller to close
        once the lock is released (see :func:`_close_all`); else its last user closes it.
        """
        handle = self._handles.pop(path)
        handle.retired = True
        if handle.users == 0:
            idle.append(handle.fd)

    def _forget(
        self, path: str, *, marks: bool = False, move_to: str | None = None, scan: bool = True
    ) -> None:
        """Drop the handles of ``path`` and of everything under it.

        With ``marks`` also their dirty marks and untold creations (a removal done), or
        with ``move_to`` move their dirty marks and writes in flight there (a rename
        done: the files are not synced yet under their new paths, and the writes' bytes
        may land after a sync there). Without ``scan`` only the dirty mark of ``path``
        itself is dropped, not those of every path under it: a file's removal, which
        must not look at every file not synced yet (removing a torrent's files would be
        quadratic). The handles (at most ``max_open_files``) and the untold creations
        (none but during a write) are looked at all the same. Opens running meanwhile
        are not cached (see :meth:`_acquire`), so a removal or rename calls this again
        once done.
        """
        prefix = path + "/"

        def under(key: str) -> bool:
            return key == path or key.startswith(prefix)

        idle: list[int] = []
        with self._lock:
            self._forgets += 1
            for key in [key for key in self._handles if under(key)]:
                self._retire(key, idle)
            if move_to is not None:
                self._move_marks(path, move_to, under)
            elif marks and scan:
                for key in [key for key in self._dirty if under(key)]:
                    self._drop_mark(key)
            elif marks:
                self._drop_mark(path)
            if (marks or move_to is not None) and self._created:
                # Gone by our own hand: a creation not told yet concerns a file no longer there.
                self._created = {key for key in self._created if not under(key)}
        _close_all(idle)

    def _move_marks(self, old: str, new: str, under: Callable[[str], bool]) -> None:
        """Move the dirty marks and writes in flight under ``old`` to ``new`` (the lock is
        held); ``under`` tells the paths under ``old``."""
        moved = [key for key in self._dirty if under(key)]
        for key in moved:
            del self._dirty[key]
        for key in moved:
            # Marked anew: a sync of the new path running now keeps the mark.
            self._mark(new + key[len(old) :])
        flights = [self._writing.pop(key) for key in list(self._writing) if under(key)]
        for flight in flights:
            target = new + flight.path[len(old) :]
            present = self._writing.get(target)
            if present is None:
                flight.path = target
                self._writing[target] = flight
            else:
                # Writes in flight there already (to the file replaced, or to this one
                # since it moved): counted together, their writes given back to it.
                present.count += flight.count
                flight.into = present

    # -- the FileSystem protocol ----------------------------------------------

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset`` (see :class:`~bip_disk.FileSystem`)."""
        parts = split_path(path)
        check_offset(path, offset)
        check_offset(path, length, "length")
        try:
            handle, _ = self._acquire(path, parts, write=False, create=False)
            try:
                return _pread_all(handle, offset, length)
            finally:
                self._release(handle)
        except (OSError, OverflowError) as exc:
            raise _error(exc, path, "read") from None

    def write(self, path: str, offset: int, data: Buffer) -> bool | None:
        """Write all of ``data`` at ``offset``; whether the file had to be created (see
        :class:`~bip_disk.FileSystem`).

        A file whose descriptor is cached is written through it: one deleted behind our
        back meanwhile is told created by the first write after its descriptor left the
        cache (until then the writes go to the deleted file, as any open descriptor's).
        A write that created the file and then failed (a full disk) tells nothing: the
        next write of the path that returns does.
        Never None: typed as the protocol's, so that a subclass whose ``write`` returns
        nothing (written before it returned anything) still type-checks.
        """
        parts = split_path(path)
        check_offset(path, offset)
        view = memoryview(data).cast("B")
        try:
            handle, flight = self._acquire(path, parts, write=True, create=True, told=True)
            try:
                _pwrite_all(handle, offset, view)
            finally:
                self._release(handle, flight)
        except (OSError, OverflowError) as exc:
            raise _error(exc, path, "write") from None
        return self._take_created(path)

    def _take_created(self, path: str) -> bool:
        """After a write of ``path`` returned: whether the file was created since a write
        last told so, cleared (told once).

        A write that created the file and then failed (a full disk) tells nothing: the
        next write of the path that returns does, or the DiskManager would take the new
        file's holes for the pieces the deleted one held. Of two writes at once, the one
        returning first tells it.
        """
        if not self._created:
            return False  # the common case, with no lock round trip
        with self._lock:
            if path not in self._created:
                return False
            self._created.discard(path)
            return True

    def forget_created(self, paths: Iterable[str]) -> None:
        """Forget the creations of ``paths`` that no write has told yet (see :meth:`write`).

        For the DiskManager's check, which reads the files as they are: what it finds in
        one that a failed write created is there, and the next write must not tell the
        file new (the pieces found would be taken for lost). Not part of the
        :class:`~bip_disk.FileSystem` protocol: an optional capability.
        """
        with self._lock:
            if self._created:  # else ``paths`` is not even walked (a check of many files)
                self._created.difference_update(paths)

    def _write_vectored(self, path: str, offset: int, buffers: Sequence[Buffer]) -> bool:
        """Write ``buffers`` one after another from ``offset``, in as few calls as the OS allows.

        :meth:`write` of their concatenation, without making it: the DiskManager
        writes consecutive pieces of a file this way, so a batch of pieces costs
        one ``pwritev`` (one release of the GIL to take back) instead of one
        ``pwrite`` each.
        """
        parts = split_path(path)
        check_offset(path, offset)
        views = [view for view in (memoryview(data).cast("B") for data in buffers) if view]
        try:
            handle, flight = self._acquire(path, parts, write=True, create=True, told=True)
            try:
                if _HAS_PWRITEV and handle.lock is None:
                    _pwritev_all(handle.fd, offset, views)
                else:  # pragma: no cover - OSes without pwritev
                    for view in views:
                        _pwrite_all(handle, offset, view)
                        offset += len(view)
            finally:
                self._release(handle, flight)
        except (OSError, OverflowError) as exc:
            raise _error(exc, path, "write") from None
        return self._take_created(path)

    def size(self, path: str) -> int | None:
        """The file's size, or ``None`` if it does not exist."""
        found = self.stat(path)
        return None if found is None else found.size

    def stat(self, path: str) -> FileStat | None:
        """The file's size and modification time, or ``None`` if it does not exist.

        Always looks at the path now, not at a cached descriptor, so a file deleted
        or replaced behind our back shows.
        """
        parts = split_path(path)
        try:
            dir_fd, name = self._walk(path, parts, create=False, follow_last=True)
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            finally:
                if dir_fd is not None:
                    os.close(dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _error(exc, path, "stat") from None
        if stat.S_ISDIR(info.st_mode):
            raise StorageError(
                f"cannot stat {path!r}: it is a directory", errno=errno.EISDIR, path=path
            )
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(
                f"cannot stat {path!r}: not a regular file", errno=errno.EINVAL, path=path
            )
        return FileStat(info.st_size, info.st_mtime_ns)

    def create_executable(self, path: str) -> bool | None:
        """Create ``path`` as an empty executable file, unless something is there already;
        whether it did.

        For a torrent's BEP 47 ``x`` files, which the DiskManager creates this way just
        before the first write touching one (an empty or allocated one with the
        torrent's other files, see :func:`~bip_disk.create_files`), so that a file
        nothing is written to is not created: mode ``0o777`` instead of ``0o666``,
        reduced by the umask, so that the execute bits come where the umask grants them
        (``rwxr-xr-x`` under the usual ``022``), as libtorrent opens such a file for
        writing. Only a file this call creates gets that mode, as libtorrent sets it
        only on creation:
        whatever is at ``path`` already (a file, with its mode and bytes, a directory, a
        link) is left as it is. Not part of the :class:`~bip_disk.FileSystem` protocol:
        an optional capability, which the other FileSystems lack (they store no modes).
        Returns True when it created the file (the DiskManager then knows a write did
        not find it there, as :meth:`write` tells), False when something was there; never
        None (typed so for subclasses, see :meth:`write`).
        """
        parts = split_path(path)
        try:
            if not self._create_exclusive(path, parts):
                return False
        except OSError as exc:
            raise _error(exc, path, "create") from None
        with self._lock:
            self._mark(path)  # its directory entry is new: sync() makes it durable
        return True

    def _create_exclusive(self, path: str, parts: tuple[str, ...]) -> bool:
        """Create ``path`` empty with mode ``0o777``; False if something is there."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
        gone: OSError | None = None  # why the last attempt failed
        for _ in range(_MAX_ATTEMPTS):
            try:
                # Not following a link at ``path``: it is left as it is, like anything.
                dir_fd, name = self._walk(path, parts, create=True, follow_last=False)
            except FileNotFoundError as exc:
                gone = exc  # a directory removed while the walk made the next one in it
                continue
            try:
                # O_EXCL: the mode applies to a file made now, never to one found there
                # (O_EXCL follows no link either, one put there since the walk included).
                os.close(os.open(name, flags, 0o777, dir_fd=dir_fd))
                return True
            except FileExistsError:
                return False
            except FileNotFoundError as exc:
                gone = exc  # its directory was removed since the walk (as in _open)
            finally:
                if dir_fd is not None:
                    os.close(dir_fd)
        raise gone or OSError(errno.EAGAIN, "the directory keeps changing")

    def allocate(self, path: str, size: int, *, sparse: bool = True) -> None:
        """Extend the file to at least ``size`` bytes (see the module documentation)."""
        parts = split_path(path)
        check_offset(path, size, "size")
        full = not sparse or self.preallocate == "full"
        try:
            handle, flight = self._acquire(path, parts, write=True, create=True)
            try:
                current = os.fstat(handle.fd).st_size
                if full and size:
                    _reserve(handle, current, size)
                elif size > current:
                    os.ftruncate(handle.fd, size)
            finally:
                self._release(handle, flight)
        except (OSError, OverflowError) as exc:
            raise _error(exc, path, "allocate") from None

    def truncate(self, path: str, size: int) -> None:
        """Set an existing file's size to exactly ``size``."""
        parts = split_path(path)
        check_offset(path, size, "size")
        try:
            handle, flight = self._acquire(path, parts, write=True, create=False)
            try:
                os.ftruncate(handle.fd, size)
            finally:
                self._release(handle, flight)
        except (OSError, OverflowError) as exc:
            raise _error(exc, path, "truncate") from None

    def sync(self, path: str | None = None) -> None:
        """Flush one file (and its directory), or every file changed since its last sync.

        With no path, every changed file is synced even if one fails; the first
        failure is raised at the end. A changed file no longer at its path then (removed
        or renamed by another thread's call meanwhile, or deleted behind our back) is
        passed over: nothing is there to make durable, and a renamed file is synced at
        its new path. (The DiskManager learns of a file deleted behind its back from its
        next read or write of it, or from the stat its resume data records.) ``sync`` of
        a path where nothing is raises ``StorageError`` with ``errno.ENOENT``.
        """
        if path is not None:
            self._sync_one(path, split_path(path), missing_ok=False)
            return
        with self._lock:
            pending = sorted(self._dirty)
        first: StorageError | None = None
        for item in pending:
            try:
                self._sync_one(item, split_path(item), missing_ok=True)
            except StorageError as exc:
                first = first or exc
        if first is not None:
            raise first

    def _sync_one(self, path: str, parts: tuple[str, ...], *, missing_ok: bool) -> None:
        """fsync the file at ``path`` and its directory, then drop its mark, unless the
        path was marked again meanwhile; ``missing_ok``: nothing there is no error."""
        with self._lock:
            # A write in flight may land after the fsync below: the next sync must sync
            # the file again, so its mark stays (None: kept whatever happens).
            flight = self._writing.get(path)
            mark = None if flight is not None and flight.count else self._dirty.get(path)
        try:
            dir_fd, name = self._walk(path, parts, create=False, follow_last=True)
            try:
                fd = _open_regular(
                    path,
                    name,
                    os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY,
                    dir_fd,
                    directory=True,  # a renamed directory is synced too
                )
                try:
                    _fsync(fd)
                finally:
                    os.close(fd)
                if dir_fd is not None:
                    _fsync(dir_fd)  # the file's entry, if it is new
            finally:
                if dir_fd is not None:
                    os.close(dir_fd)
        except (FileNotFoundError, NotADirectoryError) as exc:
            # Nothing there to make durable: the mark goes (kept, it would fail every
            # sync() from now on), unless a rename may have moved the file and not yet
            # its marks (the rename moves this one then, see rename).
            self._unmark(path, mark, gone=True)
            if missing_ok:
                return
            raise _error(exc, path, "sync") from None
        except PathError:
            self._unmark(path, mark)  # a link out of the root there now: none of ours
            raise
        except OSError as exc:
            raise _error(exc, path, "sync") from None  # still not durable: the mark stays
        self._unmark(path, mark)

    def _unmark(self, path: str, mark: int | None, *, gone: bool = False) -> None:
        """Drop ``path``'s dirty mark if it is still ``mark``, the one a sync started with
        (a write or rename marked it again since: the next sync's)."""
        with self._lock:
            if mark is None or self._dirty.get(path) != mark or (gone and self._renaming):
                return
            self._drop_mark(path)

    def _drop_mark(self, path: str) -> None:
        """Drop ``path``'s dirty mark, and its :class:`_Flight` if no write is in flight
        (the lock is held)."""
        self._dirty.pop(path, None)
        flight = self._writing.get(path)
        if flight is not None and not flight.count:
            del self._writing[path]

    def remove(self, path: str) -> None:
        """Remove a file, a symlink or an empty directory; missing is no error."""
        parts = split_path(path)
        try:
            # Its handle is closed first (Windows unlinks no open file). The marks stay
            # until the removal is made: one that fails (a directory still holding
            # another torrent's files) leaves the files under it to sync.
            self._forget(path)
            directory = self._remove(path, parts)
            # Again once gone, with the marks (every mark looked at for a directory only):
            # a handle opened before the unlink may have been cached meanwhile, and a
            # write racing it may have marked the path again.
            self._forget(path, marks=True, scan=directory)
        except OSError as exc:
            raise _error(exc, path, "remove") from None

    def _remove(self, path: str, parts: tuple[str, ...]) -> bool:
        """Unlink ``path``, or remove it if an empty directory; whether it was a directory."""
        try:
            dir_fd, name = self._walk(path, parts, create=False, follow_last=False)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            try:
                os.unlink(name, dir_fd=dir_fd)
                return False
            except (IsADirectoryError, PermissionError) as exc:
                # unlink refuses directories (EISDIR on Linux, EPERM elsewhere).
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode):
                    raise exc from None
            os.rmdir(name, dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            return False
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` to ``new``, creating ``new``'s parents and replacing a file there."""
        old_parts = split_path(old)
        new_parts = split_path(new)
        with self._lock:
            # Until the marks are moved too: a sync finding a file gone meanwhile keeps
            # its mark, for the move below (see _sync_one).
            self._renaming += 1
        try:
            # Dirty marks stay until the move is made: then those under ``old`` move along.
            self._forget(old)
            self._forget(new)
            self._move(old, old_parts, new, new_parts)
            try:
                # Again once moved: handles opened meanwhile hold what the paths named before.
                self._forget(old, move_to=new)
            finally:
                self._forget(new)
                with self._lock:
                    self._mark(new)  # the directory entries changed
        except OSError as exc:
            raise _error(exc, old, "rename") from None
        finally:
            with self._lock:
                self._renaming -= 1

    def _move(
        self, old: str, old_parts: tuple[str, ...], new: str, new_parts: tuple[str, ...]
    ) -> None:
        """``os.replace`` of ``old`` by ``new``, reached by walks (``new``'s parents made)."""
        old_fd, old_name = self._walk(old, old_parts, create=False, follow_last=False)
        try:
            new_fd, new_name = self._walk(new, new_parts, create=True, follow_last=False)
            try:
                os.replace(old_name, new_name, src_dir_fd=old_fd, dst_dir_fd=new_fd)
            finally:
                if new_fd is not None:
                    os.close(new_fd)
        finally:
            if old_fd is not None:
                os.close(old_fd)

    def symlink(self, path: str, target: str) -> None:
        """Create (or replace) a link at ``path`` to the root-relative ``target``.

        The link stores the target relative to its own directory, so the tree can
        be moved as a whole.
        """
        parts = split_path(path)
        goal = split_path(target)
        text = posixpath.relpath("/" + "/".join(goal), "/" + "/".join(parts[:-1]))
        changed = False
        try:
            try:
                # The marks under ``path`` stay until a link is made there: one that
                # cannot be (a directory or a file there) leaves them to sync.
                self._forget(path)
                changed = self._link(path, parts, text)
            finally:
                # Again: a handle opened through the old link meanwhile holds its target.
                self._forget(path, marks=changed)
        except (OSError, NotImplementedError) as exc:
            if isinstance(exc, NotImplementedError):
                exc = OSError(errno.ENOTSUP, os.strerror(errno.ENOTSUP))
            raise _error(exc, path, "create a symlink at") from None

    def _link(self, path: str, parts: tuple[str, ...], text: str) -> bool:
        """Make ``path`` a link holding ``text``; whether it made or replaced one (False:
        the same link was there)."""
        dir_fd, name = self._walk(path, parts, create=True, follow_last=False)
        try:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                os.symlink(text, name, dir_fd=dir_fd)
                return True
            if not stat.S_ISLNK(info.st_mode):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
            if os.readlink(name, dir_fd=dir_fd) == text:
                return False
            # Replace atomically: a new link beside it, renamed over it. Its name is
            # short whatever ``name``'s length (``name`` may take NAME_MAX by itself).
            temporary = os.path.join(
                os.path.dirname(name),  # "" but in fallback mode (a full path)
                f".bip-link-{os.getpid()}-{threading.get_ident()}",
            )
            os.symlink(text, temporary, dir_fd=dir_fd)
            try:
                os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError:
                os.unlink(temporary, dir_fd=dir_fd)
                raise
            return True
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def close(self) -> None:
        """Close every cached descriptor (ones in use close when their call ends).

        Every one is closed even if closing one fails (a write error NFS defers to the
        close); the first failure is raised then, as a :class:`StorageError`.
        """
        idle: list[int] = []
        with self._lock:
            for path in list(self._handles):
                self._retire(path, idle)
        try:
            _close_all(idle)
        except OSError as exc:
            raise _error(exc, ".", "close") from None


# -- helpers -------------------------------------------------------------------------


def _close_all(fds: list[int]) -> None:
    """Close every descriptor of ``fds``; the first failure is raised once all are closed.

    Called once the cache lock is released: a close may block (NFS flushes there), and
    one that fails must leave the cache's counts right.
    """
    first: OSError | None = None
    for fd in fds:
        try:
            os.close(fd)
        except OSError as exc:
            first = first or exc
    if first is not None:
        raise first


def _error(exc: OSError | OverflowError, path: str, action: str) -> StorageError:
    if isinstance(exc, OverflowError):  # an offset past what the OS can address
        exc = OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    return storage_error(exc, path, action)


def _open_regular(
    path: str, name: str, flags: int, dir_fd: int | None, *, directory: bool = False
) -> int:
    """``os.open`` that never blocks on, nor returns, anything but a regular file.

    Opened with ``O_NONBLOCK`` (a FIFO swapped in for a file would block the open,
    then every read, pinning a thread for ever), checked with ``fstat``, then made
    blocking again. A directory raises ``EISDIR`` (unless ``directory``: syncing
    one is fine), anything else a :class:`StorageError` with ``EINVAL``.
    """
    fd = os.open(name, flags | _O_NONBLOCK, 0o666, dir_fd=dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                if not directory:
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            else:
                raise StorageError(
                    f"cannot open {path!r}: not a regular file", errno=errno.EINVAL, path=path
                )
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _is_junction(full: str) -> bool:
    isjunction = getattr(os.path, "isjunction", None)  # Python 3.12+, Windows only
    return bool(isjunction(full)) if isjunction is not None else False


def _pread_all(handle: _Handle, offset: int, length: int) -> bytes:
    """Read until ``length`` bytes or the end of the file."""
    chunks = []
    remaining = length
    position = offset
    while remaining > 0:
        chunk = _pread(handle, remaining, position)
        if not chunk:
            break  # end of file
        chunks.append(chunk)
        remaining -= len(chunk)
        position += len(chunk)
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def _pread(handle: _Handle, length: int, offset: int) -> bytes:
    if handle.lock is None:
        return os.pread(handle.fd, length, offset)
    with handle.lock:  # pragma: no cover - OSes without pread
        os.lseek(handle.fd, offset, os.SEEK_SET)
        return os.read(handle.fd, length)


def _pwrite_all(handle: _Handle, offset: int, view: memoryview) -> None:
    """Write every byte (``pwrite`` may write fewer than asked)."""
    done = 0
    while done < len(view):
        written = _pwrite(handle, view[done:], offset + done)
        if written <= 0:  # pragma: no cover - POSIX reports an error instead
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        done += written


def _pwritev_all(fd: int, offset: int, views: list[memoryview]) -> None:
    """Write every byte of ``views`` from ``offset`` (``pwritev`` may write fewer than asked)."""
    start = 0  # views[:start] are written
    while start < len(views):
        written = os.pwritev(fd, views[start : start + _IOV_MAX], offset)
        if written <= 0:  # pragma: no cover - POSIX reports an error instead
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        offset += written
        while written:
            size = len(views[start])
            if written < size:  # a short write: the rest of this view next time
                views[start] = views[start][written:]
                break
            written -= size
            start += 1


def _pwrite(handle: _Handle, data: memoryview, offset: int) -> int:
    if handle.lock is None:
        return os.pwrite(handle.fd, data, offset)
    with handle.lock:  # pragma: no cover - OSes without pwrite
        os.lseek(handle.fd, offset, os.SEEK_SET)
        return os.write(handle.fd, data)


def _reserve(handle: _Handle, current: int, size: int) -> None:
    """Reserve blocks for bytes ``0 .. size`` (see "Preallocation" above)."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(handle.fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
                raise
    zeros = memoryview(bytes(min(_ZERO_CHUNK, max(size - current, 0))))
    position = current
    while position < size:
        take = min(len(zeros), size - position)
        _pwrite_all(handle, position, zeros[:take])
        position += take


def _fsync(fd: int) -> None:
    if sys.platform == "darwin":  # pragma: no cover - fsync leaves macOS's disk cache
        import fcntl  # noqa: PLC0415 - macOS only; the module is missing on Windows

        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError:
            pass  # not supported by this filesystem: plain fsync
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync a directory; the file itself was synced.
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS) or not _is_directory(fd):
            raise


def _is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)
