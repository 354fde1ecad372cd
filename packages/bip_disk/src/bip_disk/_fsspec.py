"""``FsspecFileSystem``: a :class:`~bip_disk.FileSystem` over any fsspec filesystem.

So torrents can be stored on S3, GCS, Azure, HDFS, SFTP... through fsspec's own
backends (``pip install bip-disk[fsspec]`` plus the backend's package). fsspec is
imported only when this class is used, so bip_disk works without it.

**Two ways of writing**, chosen per backend (``random_writes``):

- *In place*, for backends whose files can be opened ``"r+b"`` and written at
  any offset: fsspec's local and memory filesystems (and any other when you pass
  ``random_writes=True``). Every write opens the file, seeks, writes and closes
  it, so nothing is buffered by this adapter.
- *Staged*, for everything else (object stores cannot change a byte of an
  object without rewriting it): the first write to a file loads it whole into
  memory (as sparse 16 KiB chunks), writes and reads go to that copy, and
  :meth:`~FsspecFileSystem.sync` or :meth:`~FsspecFileSystem.close` uploads it
  whole (``pipe_file``) and drops the copy. To bound memory, once more than
  ``max_staged_bytes`` are held the largest staged files are uploaded early; a
  file written again after that is loaded again, so each upload costs the whole
  file: torrents with files much larger than the bound are better downloaded to
  a :class:`~bip_disk.NativeFileSystem` and copied up afterwards. An early
  upload that fails leaves the file staged, for its sync to report, and is not
  tried early again by every write (each try copies the whole file): while only
  such files are held past the bound, a write tries one upload, of the smallest,
  at most once a second, and while these tries fail at most once per wait, the
  wait doubling up to a minute; if one goes through the backend works again, the
  others are tried too and the waits start over. Once uploads fail and new data
  would take what is held past twice the bound, writes fail (with a failed
  file's error) before taking the data: the same try is made first, if its time
  has come, and if it goes through the write goes on. New data is what memory
  grows by: the chunks a write adds, and the whole file when a write loads it (a
  file not staged yet is judged by its size before it is loaded); writing over
  staged bytes is never refused. The check and the write are made under one
  lock, so concurrent writers cannot pass the bound together (until the first
  early upload has failed nothing says uploads fail, and writes go on: one per
  thread, as each writer then tries an early upload of its own).

**Staying inside the root.** Paths are checked by
:func:`~bip_disk._filesystem.split_path`, so no path names anything outside
``root`` in the backend's namespace. On the local backend, where symlinks exist,
each call also checks with :func:`~bip_metainfo.is_within` that the resolved path
is still inside the root; unlike :class:`~bip_disk.NativeFileSystem` this is a
check before the call, so a link swapped in between could still be followed:
prefer NativeFileSystem for local storage.

**Errors.** fsspec backends raise their own exception types; every exception
from the backend (not only :class:`OSError`) becomes a
:class:`~bip_disk.StorageError`: ``errno`` is the OS error number when there is
one, else inferred from the type (``FileNotFoundError`` is ``ENOENT``,
``PermissionError`` ``EACCES``, ``NotImplementedError`` ``ENOTSUP``), else
``EIO``.

Thread safety: calls on one path are serialised by one of 64 striped locks
(fsspec file objects are not thread-safe); calls on different paths run in
parallel; renames and removals take every stripe.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bip_metainfo import is_within

from ._errors import DiskError, PathError, StorageError
from ._filesystem import Buffer, FileStat, check_offset, errno_error, split_path
from ._memory import CHUNK_SIZE, SparseBuffer

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

__all__ = ["DEFAULT_MAX_STAGED_BYTES", "FsspecFileSystem"]

DEFAULT_MAX_STAGED_BYTES = 256 * 1024 * 1024
"""How much staged data a :class:`FsspecFileSystem` holds before uploading early."""

_STRIPES = 64
_ZERO_CHUNK = 1 << 20
_RANDOM_WRITE_PROTOCOLS = frozenset({"file", "local", "memory"})
# The info() keys backends put a modification time under.
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified")
# Backends whose modified() a write in place leaves alone: fsspec's memory one sets it
# when a file is made whole (created, uploaded), never on an "r+b" write.
_NO_IN_PLACE_MTIME_PROTOCOLS = frozenset({"memory"})
# A blind try of a failed upload (nothing says the backend is back) is made at most once
# per wait: the first, then doubled after each failed try, up to the longest.
_RECOVER_FIRST = 1.0
_RECOVER_MAX = 60.0
_monotonic = time.monotonic  # the clock of those waits (a test replaces it)

# DEBUG only, and only what costs a round trip of a whole file: a staged file
# uploaded before its sync because the staging bound was reached (or failing to be).
_log = logging.getLogger("bip_disk.fsspec")

_ERRNO_BY_TYPE: tuple[tuple[type[BaseException], int], ...] = (
    (FileNotFoundError, errno.ENOENT),
    (FileExistsError, errno.EEXIST),
    (IsADirectoryError, errno.EISDIR),
    (NotADirectoryError, errno.ENOTDIR),
    (PermissionError, errno.EACCES),
    (NotImplementedError, errno.ENOTSUP),
    (TimeoutError, errno.ETIMEDOUT),
)


def _error(exc: BaseException, path: str, action: str) -> StorageError:
    """A StorageError for whatever the backend raised.

    The message names the relative path only (fsspec's own messages carry the
    backend's full path or URL).
    """
    if isinstance(exc, OSError) and exc.errno:
        code = exc.errno
        reason = os.strerror(code)
    else:
        code = next((number for kind, number in _ERRNO_BY_TYPE if isinstance(exc, kind)), errno.EIO)
        reason = os.strerror(code) if isinstance(exc, OSError) else type(exc).__name__
    return StorageError(f"cannot {action} {path!r}: {reason}", errno=code, path=path)


def _protocols(fs: AbstractFileSystem) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)


class _Staged:
    __slots__ = ("data", "dirty", "failed", "mtime_ns")

    def __init__(self, data: SparseBuffer) -> None:
        self.data = data
        self.dirty = False
        self.mtime_ns = time.time_ns()
        # Why its last early upload failed (no traceback: its frames would hold the
        # data); while set, early uploads pass it by. Sync and rename still try it.
        self.failed: StorageError | None = None


class FsspecFileSystem:
    """A :class:`~bip_disk.FileSystem` stored through fsspec (see the module documentation).

    >>> import fsspec
    >>> fs = FsspecFileSystem(fsspec.filesystem("memory"), "/doctest-bucket")
    >>> created = fs.write("t/a.bin", 0, b"hello")  # whether the file had to be created
    >>> fs.read("t/a.bin", 1, 3)
    b'ell'
    """

    def __init__(
        self,
        fs: AbstractFileSystem,
        root: str,
        *,
        random_writes: bool | None = None,
        max_staged_bytes: int = DEFAULT_MAX_STAGED_BYTES,
    ) -> None:
        """Store files under ``root`` in ``fs``.

        Args:
            fs: any fsspec filesystem instance (``fsspec.filesystem("s3")``, ...).
            root: the storage directory in ``fs``'s namespace (a bucket and prefix
                for object stores); created on the first write where the backend
                has directories.
            random_writes: whether files can be written in place (``"r+b"``);
                ``None`` decides by protocol (local and memory: yes).
            max_staged_bytes: in staged mode, how many bytes to hold before
                uploading early.
        """
        if max_staged_bytes < 0:
            raise ValueError(f"max_staged_bytes must not be negative, not {max_staged_bytes}")
        self.fs = fs
        protocols = _protocols(fs)
        self._local = bool(protocols & {"file", "local"})
        if self._local:
            root = os.path.abspath(root)
        self.root = root.rstrip("/") or "/"
        """The storage directory in the backend's namespace."""
        self.random_writes = (
            bool(protocols & _RANDOM_WRITE_PROTOCOLS) if random_writes is None else random_writes
        )
        """Whether files are written in place (else staged; see the module documentation)."""
        self.max_staged_bytes = max_staged_bytes
        self._stripes = tuple(threading.RLock() for _ in range(_STRIPES))
        # Guards _staged (the dict, and each entry's data as counted) and the counts.
        self._state = threading.Lock()
        self._staged: dict[str, _Staged] = {}
        # Files written in place that a write created and has not told yet: one whose
        # write failed after creating the file leaves it to the next write of the path
        # that returns (see write). Changed under the path's lock.
        self._created: set[str] = set()
        # Kept with _staged, in every place an entry or its data changes: what the
        # staged copies hold (summing them under the lock on every write costs O(files)),
        # and how many of them are marked failed.
        self._held_bytes = 0
        self._failures = 0
        # No blind recovery try before this monotonic time; the wait after the next one.
        self._recover_at = -math.inf
        self._recover_wait = _RECOVER_FIRST

    def __repr__(self) -> str:
        """The backend's protocol and the root."""
        mode = "in place" if self.random_writes else "staged"
        return f"<FsspecFileSystem {self.fs.protocol!r} {self.root!r} ({mode})>"

    # -- plumbing ---------------------------------------------------------------

    def _full(self, path: str, parts: tuple[str, ...], *, follow_last: bool = True) -> str:
        """The backend path; on the local backend, checked to resolve inside the root.

        Without ``follow_last`` only the parent is checked: for calls that act on
        a link itself (remove, rename, symlink), never on what it points at.
        Called outside every call's ``try``: it raises our errors only (a symlink
        loop already in the folder is ``StorageError`` with ``ELOOP``).
        """
        full = posixpath.join(self.root, *parts)
        checked = full if follow_last else posixpath.dirname(full)
        if not self._local:
            return full
        try:
            inside = is_within(self.root, checked)
        except RuntimeError:  # Python < 3.13's Path.resolve on a symlink loop
            raise errno_error(errno.ELOOP, path, "resolve") from None
        except OSError as exc:  # Python 3.13+ raises ELOOP as an OSError
            raise _error(exc, path, "resolve") from None
        if not inside:
            raise PathError(f"{path!r} leads through a symlink out of the storage root")
        return full

    def _lock(self, path: str) -> threading.RLock:
        return self._stripes[hash(path) % _STRIPES]

    @contextmanager
    def _everything(self) -> Iterator[None]:
        """Hold every stripe (in one order, so two callers cannot deadlock)."""
        taken = []
        try:
            for lock in self._stripes:
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()

    def _exists_file(self, full: str) -> bool:
        return bool(self.fs.isfile(full))

    def _make_parent(self, full: str) -> None:
        parent = posixpath.dirname(full)
        if parent and parent != full:
            self.fs.makedirs(parent, exist_ok=True)

    def _held(self) -> int:
        with self._state:
            return self._held_bytes

    def _drop_locked(self, path: str) -> None:
        """Drop ``path``'s staged copy, if any, from the staged files and the counts
        (``_state`` held)."""
        self._created.discard(path)  # removed or renamed by our own hand
        staged = self._staged.pop(path, None)
        if staged is not None:
            self._held_bytes -= staged.data.held
            if staged.failed is not None:
                self._failures -= 1

    def _load(self, path: str, full: str, create: bool) -> tuple[SparseBuffer, bool]:
        """A new copy of ``path``'s backend file, and whether there is one (lock held).

        Not staged yet: the caller stages it once the bound lets it in.
        """
        data = SparseBuffer()
        if self._exists_file(full):
            data.write(0, self.fs.cat_file(full))
            return data, True
        if self.fs.isdir(full) or self._staged_under(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not create:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        # Refuse now what the upload would refuse later: a file as a parent.
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            with self._state:
                staged_parent = parent in self._staged
            if staged_parent or self._exists_file(posixpath.join(self.root, parent)):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        return data, False

    def _change_staged(
        self,
        path: str,
        full: str,
        action: str,
        change: Callable[[_Staged], None],
        *,
        create: bool,
        grows: tuple[int, int] = (0, 0),
    ) -> bool:
        """Make ``change`` to ``path``'s staged copy, loading the file first if need be;
        whether the file was created (neither staged nor in the backend).

        ``grows`` is the ``(offset, length)`` span of the chunks the change may add.
        What memory would grow by (those of its chunks not held yet, plus the whole
        file when it is loaded now) is checked against the bound, and the change
        made, under ``_state``: two writers cannot both pass the check on what was
        held before either wrote. While uploads fail, a file not staged yet is first
        judged by its size, so that one refused is not loaded at all. Refused, one
        upload is tried with no lock held (``_recover``, if its time has come) and,
        only if it went through, the check made once more; refused still, the failed
        file's error is raised and nothing was changed.
        """
        refusal: StorageError | None = None
        for attempt in range(2):
            # Outside every lock (it takes another file's); nothing uploaded, nothing
            # changed: the refusal stands, and the file is not loaded again.
            if attempt and not self._recover():
                break
            with self._lock(path):
                try:
                    with self._state:
                        staged = self._staged.get(path)
                        failing = staged is None and self._failures > 0
                    if failing:
                        refusal = self._load_refusal(full, grows)
                        if refusal is not None:
                            continue
                    loaded, existed = (
                        (None, True) if staged is not None else self._load(path, full, create)
                    )
                    with self._state:
                        data = loaded if staged is None else staged.data
                        assert data is not None  # one of the two is there
                        adding = data.new_chunks(*grows) * CHUNK_SIZE
                        if staged is None:
                            adding += data.held
                        refusal = self._refusal(adding)
                        if refusal is None:
                            before = 0 if staged is None else staged.data.held
                            if staged is None:
                                staged = self._staged[path] = _Staged(data)
                                staged.dirty = not existed  # a new file must be uploaded
                            try:
                                change(staged)
                            finally:
                                self._held_bytes += staged.data.held - before
                            return not existed
                except StorageError:
                    raise
                except Exception as exc:  # any backend's failure
                    raise _error(exc, path, action) from None
        assert refusal is not None  # only a refusal gets here
        raise refusal

    def _load_refusal(self, full: str, grows: tuple[int, int]) -> StorageError | None:
        """While uploads fail, the refusal loading ``full`` and making a change over
        ``grows`` would meet, told by the file's size (one metadata call) rather than
        by loading it whole; None to go on and load it (``path``'s lock held).

        Loaded, a file holds a chunk for each of its bytes' chunks, so the size tells
        exactly; the check after the load is still the one that counts (the file may
        change in between).
        """
        try:
            info = self.fs.info(full)
        except FileNotFoundError:
            return None  # nothing to load: a new file, judged as any write
        if info.get("type") == "directory":
            return None  # the load says what is wrong
        loaded = -(-int(info.get("size") or 0) // CHUNK_SIZE)
        offset, length = grows
        new = 0
        if length > 0:  # the change's chunks past the file's (as SparseBuffer.new_chunks)
            first, last = offset // CHUNK_SIZE, (offset + length - 1) // CHUNK_SIZE
            new = max(0, last + 1 - max(first, loaded))
        with self._state:
            return self._refusal((loaded + new) * CHUNK_SIZE)

    def _refusal(self, adding: int) -> StorageError | None:
        """The error refusing ``adding`` more staged bytes, or None to let them in
        (``_state`` held).

        Refused only while uploads fail (an early upload failed) and what would be
        held is more than twice the bound: until then the bound is kept by early
        uploads after each write.
        """
        limit = 2 * self.max_staged_bytes
        if adding <= 0 or self._held_bytes + adding <= limit:
            return None
        if not self._failures:
            return None  # nothing says the backend fails: stage, then upload early
        failure = next(item.failed for item in self._staged.values() if item.failed is not None)
        # A new one each time: raised, each keeps the frames it passes through.
        return StorageError(
            f"{failure} (uploads fail and {limit} staged bytes would be exceeded)",
            errno=failure.errno,
            path=failure.path,
        )

    def _staged_under(self, path: str) -> list[str]:
        """The staged files inside directory ``path``."""
        prefix = path + "/"
        with self._state:
            return [key for key in self._staged if key.startswith(prefix)]

    def _upload(self, path: str, full: str) -> None:
        """Upload ``path``'s staged copy if it changed, and drop it (lock held)."""
        with self._state:
            staged = self._staged.get(path)
        if staged is None:
            return
        if staged.dirty:
            self._make_parent(full)
            self.fs.pipe_file(full, staged.data.read(0, staged.data.size))
        with self._state:
            self._drop_locked(path)

    def _relieve(self, *, recover: bool = True) -> None:
        """Upload the largest staged files while more than the bound is held.

        A file whose upload fails stays staged (nothing is lost: its sync reports
        the failure) and is marked, so that neither this pass nor a later one tries
        it again (each try copies the whole file: on a dead backend every write
        would retry every staged file). A pass left with only marked files past the
        bound tries one of them (``_recover``, if ``recover``): at once when an
        upload of this pass went through (the backend works), else when it tried
        nothing and the wait since the last such blind try is over (on a dead
        backend, one upload per wait, however many writes), so memory does not stay
        past the bound for long once the backend works again. Never raises: a write
        fails only in ``_change_staged``, before its data is taken.
        """
        tried: set[str] = set()  # bounds the pass even if files are staged meanwhile
        uploaded = False
        while self._held() > self.max_staged_bytes:
            with self._state:
                candidates = [
                    key
                    for key, item in self._staged.items()
                    if item.failed is None and key not in tried
                ]
                path = max(candidates, key=lambda key: self._staged[key].data.held, default=None)
            if path is None:
                # Only failed files left past the bound: try one if this pass tried
                # nothing (is the backend back?) or an upload went through (it is).
                if recover and (uploaded or not tried):
                    self._recover(blind=not uploaded)
                return
            tried.add(path)
            _log.debug(
                "%r: more than %d bytes staged, uploading %r before its sync",
                self,
                self.max_staged_bytes,
                path,
            )
            uploaded = self._try_upload(path) is None or uploaded

    def _try_upload(self, path: str) -> StorageError | None:
        """Upload ``path`` early; its failure, also kept on its staged entry (or None)."""
        try:
            with self._lock(path):
                self._upload(path, self._full(path, split_path(path)))
            return None
        except StorageError as exc:
            failure = exc
        except DiskError as exc:  # a PathError: a link now leads out of the root
            failure = StorageError(f"cannot upload {path!r}: {exc}", path=path)
        except Exception as exc:  # any backend's failure
            failure = _error(exc, path, "upload")
        failure.__traceback__ = None
        failure.__cause__ = failure.__context__ = None
        with self._state:
            staged = self._staged.get(path)
            if staged is not None:
                if staged.failed is None:
                    self._failures += 1
                staged.failed = failure
        _log.debug("%r: the early upload of %r failed: %s", self, path, failure)
        return failure

    def _recover(self, *, blind: bool = True) -> bool:
        """Try one upload of the smallest failed file (the cheapest copy): if it goes
        through, the backend works again, every failed file may be tried again, and
        the largest are uploaded while more than the bound is held. Called, with no
        lock held, after a refusal and by a ``_relieve`` pass left with failed files.

        A ``blind`` try (nothing says the backend is back) is made only once the wait
        since the last one is over, the time taken under ``_state`` so that
        concurrent writers make one try: ``_RECOVER_FIRST`` seconds, doubled after
        each, up to ``_RECOVER_MAX``; both start over once an upload goes through.

        Returns:
            Whether a change refused may be checked again: the upload went through
            (or no file is marked failed any more); False when it failed or, its
            time not come, was not tried.
        """
        with self._state:
            if not self._failures:
                return True  # found back meanwhile: nothing says uploads fail
            if blind:
                now = _monotonic()
                if now < self._recover_at:
                    return False
                self._recover_at = now + self._recover_wait
                self._recover_wait = min(2 * self._recover_wait, _RECOVER_MAX)
            failed = [
                (item.data.held, key)
                for key, item in self._staged.items()
                if item.failed is not None
            ]
        if not failed:
            return True  # (kept with the count: cannot happen)
        if self._try_upload(min(failed)[1]) is not None:
            return False
        with self._state:
            for item in self._staged.values():
                item.failed = None
            self._failures = 0
            self._recover_at = -math.inf
            self._recover_wait = _RECOVER_FIRST
        self._relieve(recover=False)
        return True

    # -- the FileSystem protocol ----------------------------------------------

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset`` (see :class:`~bip_disk.FileSystem`)."""
        parts = split_path(path)
        check_offset(path, offset)
        check_offset(path, length, "length")
        full = self._full(path, parts)
        with self._lock(path):
            try:
                with self._state:
                    staged = self._staged.get(path)
                if staged is not None:
                    return staged.data.read(offset, length)
                if length == 0:
                    if not self._exists_file(full):
                        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
                    return b""
                # One request, no existence check first: on an object store every
                # call is a round trip.
                return bytes(self.fs.cat_file(full, start=offset, end=offset + length))
            except FileNotFoundError:
                code = errno.EISDIR if self.fs.isdir(full) else errno.ENOENT
                raise errno_error(code, path, "read") from None
            except StorageError:
                raise
            except Exception as exc:  # any backend's failure
                raise _error(exc, path, "read") from None

    def write(self, path: str, offset: int, data: Buffer) -> bool | None:
        """Write all of ``data`` at ``offset``; whether the file had to be created (see
        :class:`~bip_disk.FileSystem`).

        Staged, a file is created when it is neither staged nor in the backend: one
        deleted from the backend while staged is uploaded again whole by its sync. Never
        None (typed so for subclasses, see :meth:`NativeFileSystem.write
        <bip_disk.NativeFileSystem.write>`).
        """
        parts = split_path(path)
        check_offset(path, offset)
        view = memoryview(data).cast("B")
        full = self._full(path, parts)
        if not self.random_writes:

            def change(staged: _Staged) -> None:
                staged.data.write(offset, view)
                staged.dirty = True
                staged.mtime_ns = time.time_ns()

            created = self._change_staged(
                path, full, "write", change, create=True, grows=(offset, view.nbytes)
            )
            self._relieve()
            return created
        with self._lock(path):
            try:
                if self._create_in_place(full):
                    self._created.add(path)
                with self.fs.open(full, "r+b") as file:
                    if view:
                        file.seek(offset)
                        file.write(view)
            except StorageError:
                raise
            except Exception as exc:
                raise _error(exc, path, "write") from None
            # Told once, by this write or, if the one that created the file failed after
            # that, by this next one: the DiskManager must learn the file is new.
            created = path in self._created
            self._created.discard(path)
        return created

    def forget_created(self, paths: Iterable[str]) -> None:
        """Forget the creations of ``paths`` that no in-place write has told yet (see
        :meth:`write`).

        For the DiskManager's check, which reads the files as they are: what it finds in
        one that a failed write created is there, and the next write must not tell the
        file new. Not part of the :class:`~bip_disk.FileSystem` protocol: an optional
        capability (see :meth:`NativeFileSystem.forget_created
        <bip_disk.NativeFileSystem.forget_created>`).
        """
        if not self._created:  # nothing pending (nearly always): ``paths`` is not walked
            return
        for path in paths:
            if path in self._created:  # a path's lock only for the few pending
                with self._lock(path):
                    self._created.discard(path)

    def _create_in_place(self, full: str) -> bool:
        """Create ``full`` if it is not there; whether it was not (``path``'s lock held)."""
        if self._exists_file(full):
            return False
        if self.fs.isdir(full):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        self._make_parent(full)
        with self.fs.open(full, "ab"):
            pass  # creates it without truncating what a racing writer put there
        return True

    @contextmanager
    def _open_in_place(self, full: str, *, create: bool) -> Iterator[Any]:
        if create:
            self._create_in_place(full)
        elif not self._exists_file(full):
            if self.fs.isdir(full):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        with self.fs.open(full, "r+b") as file:
            yield file

    def size(self, path: str) -> int | None:
        """The file's size, or ``None`` if it does not exist."""
        found = self.stat(path)
        return None if found is None else found.size

    def stat(self, path: str) -> FileStat | None:
        """The file's size and modification time, or ``None`` if it does not exist.

        ``mtime_ns`` is what the backend reports (``0`` if it reports nothing, so
        that fast resume never vouches for the file); a creation time counts only
        staged, where every upload makes the object again, and fsspec's memory
        backend written in place reports ``0`` (its times never change with such a
        write); a staged file reports the time of its last write.
        """
        parts = split_path(path)
        full = self._full(path, parts)
        with self._lock(path):
            try:
                with self._state:
                    staged = self._staged.get(path)
                if staged is not None:
                    return FileStat(staged.data.size, staged.mtime_ns)
                try:
                    info = self.fs.info(full)
                except FileNotFoundError:
                    return None
                if info.get("type") == "directory":
                    raise errno_error(errno.EISDIR, path, "stat")
                return FileStat(int(info.get("size") or 0), self._mtime_ns(full, info))
            except StorageError:
                raise
            except Exception as exc:
                raise _error(exc, path, "stat") from None

    def _mtime_ns(self, full: str, info: dict[str, Any]) -> int:
        """The backend's modification time of ``full``, or 0 if it keeps none that
        changes with every write (fast resume then never trusts the file).

        A creation time is one only staged, where every upload makes a new object; a
        write in place changes the object without making it again.
        """
        keys = _MTIME_KEYS if self.random_writes else (*_MTIME_KEYS, "created")
        for key in keys:
            value = info.get(key)
            if value is not None:
                converted = _to_ns(value)
                if converted is not None:
                    return converted
        if self.random_writes and _protocols(self.fs) & _NO_IN_PLACE_MTIME_PROTOCOLS:
            return 0
        try:
            return _to_ns(self.fs.modified(full)) or 0
        except Exception:  # the backend keeps no modification time
            return 0

    def allocate(self, path: str, size: int, *, sparse: bool = True) -> None:
        """Extend the file to at least ``size`` bytes (zeros written where needed)."""
        parts = split_path(path)
        check_offset(path, size, "size")
        full = self._full(path, parts)
        if not self.random_writes:

            def change(staged: _Staged) -> None:
                if size > staged.data.size:
                    staged.data.resize(size)
                    staged.dirty = True
                    staged.mtime_ns = time.time_ns()
                if not sparse:
                    staged.data.materialise(size)

            grows = (0, 0 if sparse else size)  # a sparse file holds no new chunk
            self._change_staged(path, full, "allocate", change, create=True, grows=grows)
            self._relieve()
            return
        with self._lock(path):
            try:
                with self._open_in_place(full, create=True) as file:
                    _extend(file, size)
            except StorageError:
                raise
            except Exception as exc:
                raise _error(exc, path, "allocate") from None

    def truncate(self, path: str, size: int) -> None:
        """Set an existing file's size to exactly ``size``."""
        parts = split_path(path)
        check_offset(path, size, "size")
        full = self._full(path, parts)
        if not self.random_writes:

            def change(staged: _Staged) -> None:
                staged.data.resize(size)  # sparse: growing holds no new chunk
                staged.dirty = True
                staged.mtime_ns = time.time_ns()

            self._change_staged(path, full, "truncate", change, create=False)
            self._relieve()  # loading the file may have taken memory past the bound
            return
        with self._lock(path):
            try:
                with self._open_in_place(full, create=False) as file:
                    file.seek(0, os.SEEK_END)
                    if size < file.tell():
                        file.truncate(size)
                    else:
                        _extend(file, size)
            except StorageError:
                raise
            except Exception as exc:
                raise _error(exc, path, "truncate") from None

    def sync(self, path: str | None = None) -> None:
        """Upload staged files (one, or all); in-place writes are already with the backend.

        Syncing a missing file raises ``StorageError`` with ``ENOENT``. With no
        path every staged file is uploaded even if one fails; the first failure is
        raised at the end. One removed by another thread's call meanwhile is passed
        over (a sync raising for it would fail a save of every torrent sharing this
        filesystem).
        """
        if path is not None:
            parts = split_path(path)
            full = self._full(path, parts)
            with self._lock(path):
                try:
                    with self._state:
                        staged = path in self._staged
                    if not staged and not self._exists_file(full):
                        raise errno_error(errno.ENOENT, path, "sync")
                    self._upload(path, full)
                except StorageError:
                    raise
                except Exception as exc:
                    raise _error(exc, path, "sync") from None
            return
        with self._state:
            pending = sorted(self._staged)
        first: StorageError | None = None
        for item in pending:
            try:
                self.sync(item)
            except StorageError as exc:
                if exc.errno == errno.ENOENT:
                    with self._state:
                        if item not in self._staged:
                            continue  # removed since listed: nothing left to upload
                first = first or exc
        if first is not None:
            raise first

    def remove(self, path: str) -> None:
        """Remove a file, a symlink or an empty directory; missing is no error."""
        parts = split_path(path)
        full = self._full(path, parts, follow_last=False)
        with self._everything():
            if self._staged_under(path):
                raise errno_error(errno.ENOTEMPTY, path, "remove")
            try:
                if self._local and os.path.islink(full):
                    os.unlink(full)  # never what it points at
                elif self.fs.isdir(full):
                    if self.fs.ls(full, detail=False):
                        raise errno_error(errno.ENOTEMPTY, path, "remove")
                    self.fs.rmdir(full)
                elif self._exists_file(full):
                    self.fs.rm_file(full)
            except StorageError:
                raise
            except FileNotFoundError:
                pass
            except Exception as exc:
                raise _error(exc, path, "remove") from None
            # Only now: a removal that failed keeps the unsaved data (as memory and
            # native storage do).
            with self._state:
                self._drop_locked(path)

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` to ``new``, creating ``new``'s parents and replacing a file there."""
        old_full = self._full(old, split_path(old), follow_last=False)
        new_full = self._full(new, split_path(new), follow_last=False)
        prefix = old + "/"
        with self._everything():
            try:
                with self._state:
                    staged = [
                        key
                        for key in self._staged
                        if key == old or key.startswith((prefix, new + "/"))
                    ]
                for key in staged:  # upload first: the backend moves what it has
                    self._upload(key, self._full(key, split_path(key)))
                if not self.fs.exists(old_full):
                    raise errno_error(errno.ENOENT, old, "rename")
                if self.fs.isfile(new_full):
                    self.fs.rm_file(new_full)
                    with self._state:
                        kept = self._staged.get(new)
                    if kept is not None:
                        kept.dirty = True  # its backend file is gone: a sync must upload it
                self._make_parent(new_full)
                self.fs.mv(old_full, new_full, recursive=self.fs.isdir(old_full))
                # Replaced: its copy must not shadow the moved file. Only now, so a
                # rename that fails keeps the unsaved data of ``new``.
                with self._state:
                    self._drop_locked(new)
            except StorageError:
                raise
            except Exception as exc:
                raise _error(exc, old, "rename") from None

    def symlink(self, path: str, target: str) -> None:
        """Create (or replace) a link at ``path`` to the root-relative ``target``.

        Only the local backend has links; others raise ``StorageError`` with
        ``ENOTSUP``.
        """
        parts = split_path(path)
        goal = split_path(target)
        full = self._full(path, parts, follow_last=False)
        if not self._local:
            raise errno_error(errno.ENOTSUP, path, "create a symlink at")
        text = posixpath.relpath("/" + "/".join(goal), "/" + "/".join(parts[:-1]))
        with self._everything():
            try:
                if os.path.islink(full):
                    os.unlink(full)
                elif os.path.lexists(full):
                    raise errno_error(errno.EEXIST, path, "create a symlink at")
                self._make_parent(full)
                os.symlink(text, full)
            except StorageError:
                raise
            except Exception as exc:
                raise _error(exc, path, "create a symlink at") from None

    def close(self) -> None:
        """Upload every staged file (see :meth:`sync`); the adapter stays usable."""
        self.sync()


def _extend(file: Any, size: int) -> None:
    """Grow an open file to ``size`` bytes with zeros (never shrink it)."""
    end = file.seek(0, os.SEEK_END)
    if end >= size:
        return
    with suppress(Exception):  # some file objects cannot grow this way
        file.truncate(size)  # real files grow sparsely
    end = file.seek(0, os.SEEK_END)
    zeros = bytes(min(_ZERO_CHUNK, max(size - end, 0)))
    while end < size:
        take = min(len(zeros), size - end)
        file.write(zeros[:take])
        end += take


def _to_ns(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000_000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1_000_000_000)
    return None
