"""Where a torrent's bytes are on a BEP 19 web seed: one URL per file, and byte ranges.

No I/O. :func:`web_seed_layout` turns a web seed URL and a torrent's
:class:`~bip_metainfo.Info` (or the :class:`WebSeedFiles` its web seeds share) into a
:class:`WebSeedLayout`, which maps a run of the torrent's piece space to the file ranges to
fetch (:meth:`WebSeedLayout.ranges`). BEP 19's rules, as libtorrent applies them:

- a single-file torrent: the URL is the file, or, when it ends with ``/``, a directory holding
  a file of the torrent's name;
- a multi-file torrent: the URL names a directory (a ``/`` is added if missing) holding the
  torrent's name as a directory, then each file's path, every component percent-encoded;
- a ``#fragment`` of the URL is dropped (never sent, and no part of the path files are
  appended to);
- BEP 47 pad files are zeros by definition: never fetched.

The names are the torrent's own bytes (``name.utf-8``/``name``, ``path.utf-8``/``path``, the v2
``file tree`` keys), not the sanitised paths the files are saved under: a server holds the
files under the names the torrent was made from (``a?.txt`` is stored as ``a_.txt``, but asked
for as ``a%3F.txt``). When the raw entries cannot be matched to the files one for one, the
sanitised paths are used.

What it costs: the url-list is outside the info dictionary (and a magnet adds ``ws=``), so
whoever hands out a torrent chooses its web seeds, up to a few dozen, for a torrent of up to
500,000 files. As libtorrent (``web_peer_connection::write_request``), a file's URL is made
when a request needs it (:meth:`WebSeedLayout.file_url`), never held per file and web seed.
What is needed per file (the torrent's names for its files, where each starts) is made once
per torrent, shared by its web seeds (:class:`WebSeedFiles`), and for a large torrent in a
worker thread (:meth:`WebSeedFiles.ready`): seconds of Python at the bound, and at most
:data:`BUILDERS` such tables made at once in the process. The table keeps
the longest escaped path, so that a web seed any of whose file URLs would pass our bound is
refused whole, at once (:meth:`WebSeedLayout.check`), as when every URL was made up front.

v1, v2 and hybrid torrents alike: the layout follows :attr:`FileEntry.offset
<bip_metainfo.FileEntry.offset>`, which places every file in the piece space (a v2 file starts
on a piece boundary, with no pad entry before it).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, overload
from urllib.parse import quote, urlsplit, urlunsplit

import trio

from bip_metainfo import FileEntry, Info
from bip_utracker import LocalProtocolError

from ._http_tracker_codec import (
    MAX_URL_LENGTH,
    HttpTrackerUrl,
    parse_http_tracker_url,
    shown_url,
)

__all__ = [
    "BUILDERS",
    "INLINE_FILES",
    "FileRange",
    "WebSeedFiles",
    "WebSeedFilesError",
    "WebSeedLayout",
    "WebSeedUrlError",
    "shown_url",
    "web_seed_layout",
]

# What may stay as it is in a URL's path: a base URL already escaped keeps its escapes (as
# bip_metainfo escapes ``url-list``), a magnet's ``ws`` with a space in it gains one.
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"
# What ``quote(component, safe="")`` leaves as it is (every other byte becomes ``%XX``).
_UNRESERVED: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"

INLINE_FILES: Final = 10_000
"""Files of a torrent whose table (:class:`WebSeedFiles`) is made on the event loop (some
15 ms at most); a larger torrent's is made in a worker thread."""

BUILDERS: Final = 2
"""Worker threads making tables (:meth:`WebSeedFiles.ready`) at once, for the whole process:
each table holds its torrent's names while it is made (100 torrents of 100,000 files made at
once held 1.2 GiB, in 60 threads); the others wait their turn."""


class WebSeedUrlError(ValueError):
    """A web seed URL we cannot use (not http or https, credentials in it, no host, too
    long...)."""


class WebSeedFilesError(RuntimeError):
    """A torrent's file table (:class:`WebSeedFiles`) could not be made (the cause is
    chained): none of its web seeds can be used."""


# Not frozen: a frozen dataclass is made ~4 times slower, and a run of 1 MiB may cross
# 100,000 one-byte files.
@dataclass(slots=True)
class FileRange:
    """A run of one file's bytes inside a run of the piece space.

    Attributes:
        file_index: the file's index in :attr:`Info.files <bip_metainfo.Info.files>`.
        offset: where the run starts in the file.
        length: how many bytes it has.
        is_pad: whether the file is a pad file (zeros, never fetched).
        layout: the layout it is in, which makes its URL (:attr:`url`).
    """

    file_index: int
    offset: int
    length: int
    is_pad: bool
    layout: WebSeedLayout = field(repr=False, compare=False)

    @property
    def url(self) -> HttpTrackerUrl | None:
        """Where the file is, split for a request (made now); ``None`` for a pad file.

        Raises:
            WebSeedUrlError: the file's URL is one we cannot request (too long).
        """
        return None if self.is_pad else self.layout.file_url(self.file_index)


def _escaped(url: str) -> str:
    parts = urlsplit(url)
    # A fragment is never sent (it is the client's), and file paths are appended to the
    # base: kept, every file's path would land after its "#", all files one URL.
    return urlunsplit(parts._replace(path=quote(parts.path, safe=_PATH_SAFE), fragment=""))


def _file_url(base: str, path: tuple[str | bytes, ...]) -> str:
    encoded = "/".join(quote(component, safe="") for component in path)
    if len(path) > 1:  # a multi-file torrent: its name is the first component
        return base + ("" if base.endswith("/") else "/") + encoded
    return base + encoded if base.endswith("/") else base


def _escaped_length(joined: bytes, components: int) -> int:
    """The length :func:`_file_url` gives a path of ``components`` names joined by ``/``
    (as UTF-8), without escaping it."""
    # One translate (a C loop) rather than a quote per name: every byte but the unreserved
    # ones becomes 3 characters, but the slashes put between the names (a slash in a name
    # is escaped).
    return len(joined) + 2 * len(joined.translate(None, _UNRESERVED)) - 2 * (components - 1)


def _has_bytes(entry: FileEntry) -> bool:
    """Whether a web seed serves the file: not a pad file, a symlink or an empty file."""
    return not (entry.is_pad or entry.is_symlink or entry.length == 0)


class _FileTable:
    """What every web seed of a torrent needs per file, made once (O(files)).

    Attributes:
        raw: each file's path as the torrent names it (``None``: the sanitised paths).
        starts: where each file starts in the piece space (the entries' own ints).
        ends: where each ends: read per file by :meth:`WebSeedLayout.ranges`.
        pads: 1 for a pad file, 0 for any other, per file.
        fetchable: how many files have bytes a web seed serves.
        longest: the longest escaped path of a file with bytes, of two names or more (a
            multi-file torrent), and of one name (a single-file torrent); -1 if none: so
            that a web seed's longest file URL is known without making any (O(1)).
    """

    __slots__ = ("ends", "fetchable", "longest", "pads", "raw", "starts")

    def __init__(self, info: Info) -> None:
        files = info.files
        raw = _raw_paths(info)
        self.raw = raw
        self.starts = [entry.offset for entry in files]
        self.ends = [entry.offset + entry.length for entry in files]  # not .end: a call each
        self.pads = bytes(entry.is_pad for entry in files)
        fetched = [index for index, entry in enumerate(files) if _has_bytes(entry)]
        self.fetchable = len(fetched)
        longest = [-1, -1]  # [several names, one name]
        for index in fetched:
            if raw is None:
                names = len(files[index].path)
                joined = "/".join(files[index].path).encode("utf-8", "replace")
            else:
                names = len(raw[index])
                joined = b"/".join(raw[index])
            kind = int(names == 1)
            longest[kind] = max(longest[kind], _escaped_length(joined, names))
        self.longest = (longest[0], longest[1])


class _Builders:
    """At most ``limit`` worker threads making tables, for every trio run of the process:
    they take the tables to make from one queue, oldest first, and end when it is empty.

    Not trio's thread limiter: a thread of :func:`trio.to_thread.run_sync` is its task's, and
    a cancelled task's is abandoned, result and all, whereas a table is made once whoever
    still waits for it (see :meth:`WebSeedFiles.ready`); and a limiter is one run's.
    """

    __slots__ = ("_jobs", "_limit", "_lock", "_threads")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._jobs: deque[Callable[[], None]] = deque()
        self._threads = 0

    @property
    def waiting(self) -> int:
        """How many tables wait for a thread."""
        return len(self._jobs)

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` (which never raises) in a builder thread, when one is free.

        Raises:
            RuntimeError: no thread could be started, and none runs to take the job.
        """
        with self._lock:
            self._jobs.append(job)
            if self._threads >= self._limit:
                return  # a builder takes it once done with those before it
            self._threads += 1
        try:
            # A daemon: a process ending does not wait for tables nobody will read.
            threading.Thread(target=self._serve, name="bip web seed files", daemon=True).start()
        except BaseException:
            with self._lock:
                self._threads -= 1
                if self._threads > 0:
                    return  # a builder that runs takes it
                self._jobs.remove(job)  # else it would wait for ever
            raise

    def _serve(self) -> None:
        while True:
            with self._lock:  # taken and counted out under one lock: no job left behind
                if not self._jobs:
                    self._threads -= 1
                    return
                job = self._jobs.popleft()
            job()


_builders: Final = _Builders(BUILDERS)


class WebSeedFiles:
    """A torrent's files as its web seeds name and place them: one for all of its web seeds.

    Made at once (it holds the torrent's :class:`~bip_metainfo.Info` only). Its table (each
    file's path as the torrent names it, where each file starts and ends: about 130 bytes a
    file) is made the first time a web seed needs it, once: :meth:`ready` makes a large
    torrent's in a worker thread; read before that, it is made on the spot. A table that
    could not be made is not tried again by :meth:`ready`.
    """

    __slots__ = ("_failure", "_made", "_table", "info")

    def __init__(self, info: Info) -> None:
        """The files of ``info`` (nothing is made per file yet)."""
        self.info = info
        self._table: _FileTable | None = None
        self._made: trio.Event | None = None  # set when the worker thread is done
        self._failure: BaseException | None = None  # what stopped it, if it failed

    async def ready(self) -> None:
        """Make the table unless it is made: in a worker thread for a torrent of more than
        :data:`INLINE_FILES` files (seconds of Python for the largest), so that the session
        goes on meanwhile; at most :data:`BUILDERS` at once in the process, the others
        wait their turn. One thread for all the web seeds that wait: each may be cancelled
        meanwhile (the table is still made, and kept for the next to ask).

        Raises:
            WebSeedFilesError: the table could not be made (the cause is chained), now or
                before, on the spot or in a thread alike.
        """
        if self._table is not None:
            return
        if self._failure is None:
            if len(self.info.files) <= INLINE_FILES:
                try:
                    self._make()
                except Exception as failure:  # as a thread's: not the caller's to handle
                    self._failure = failure
            else:
                if self._made is None:
                    self._made = trio.Event()
                    try:
                        _builders.submit(
                            self._builder(trio.lowlevel.current_trio_token(), self._made)
                        )
                    except Exception as failure:  # no thread to make it: said to all
                        self._failure = failure
                        self._made.set()
                await self._made.wait()
        if self._table is None:
            message = "the web seeds' file table could not be made"
            raise WebSeedFilesError(message) from self._failure

    def _builder(self, token: trio.lowlevel.TrioToken, made: trio.Event) -> Callable[[], None]:
        """What a builder thread runs: make the table, then wake the waiters (if the session
        still runs). It never raises: a failure is handed to the waiters."""

        def build() -> None:
            try:
                self._make()
            except BaseException as failure:  # a thread has nobody else to tell
                self._failure = failure
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(made.set)

        return build

    def _make(self) -> None:
        if self._table is None:
            self._table = _FileTable(self.info)

    @property
    def table(self) -> _FileTable:
        """The table (made now if :meth:`ready` has not made it)."""
        if self._table is None:
            self._make()
        assert self._table is not None
        return self._table

    @property
    def fetchable(self) -> int:
        """How many files a web seed serves (not pad files, symlinks or empty files)."""
        return self.table.fetchable

    @property
    def is_made(self) -> bool:
        """Whether the table is made (:meth:`ready` returns at once)."""
        return self._table is not None

    def path(self, file_index: int) -> tuple[str | bytes, ...]:
        """File ``file_index``'s path as the torrent names it (name first in a multi-file
        torrent)."""
        raw = self.table.raw
        return self.info.files[file_index].path if raw is None else raw[file_index]

    def longest_url(self, base: str) -> int:
        """The length of the longest URL of a file with bytes on the web seed at ``base``
        (escaped), 0 if there is none: as :func:`_file_url` would make them (O(1))."""
        several, one = self.table.longest
        slash = not base.endswith("/")
        return max(
            len(base) + slash + several if several >= 0 else 0,
            (len(base) if slash else len(base) + one) if one >= 0 else 0,
        )


class _Urls(Sequence["HttpTrackerUrl | None"]):
    """A layout's file URLs, each made when read (see :attr:`WebSeedLayout.urls`)."""

    __slots__ = ("_layout",)

    def __init__(self, layout: WebSeedLayout) -> None:
        self._layout = layout

    def __len__(self) -> int:
        return len(self._layout.files.info.files)

    @overload
    def __getitem__(self, index: int) -> HttpTrackerUrl | None: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[HttpTrackerUrl | None]: ...

    def __getitem__(
        self, index: int | slice
    ) -> HttpTrackerUrl | Sequence[HttpTrackerUrl | None] | None:
        indexes = range(len(self))
        if isinstance(index, slice):
            return [self[i] for i in indexes[index]]
        file_index = indexes[index]  # IndexError past the end, as a sequence's
        if not _has_bytes(self._layout.files.info.files[file_index]):
            return None
        return self._layout.file_url(file_index)


class WebSeedLayout:
    """The files of one torrent on one web seed (see the module docstring).

    Built by :func:`web_seed_layout`. It holds its base URL and the torrent's shared
    :class:`WebSeedFiles`, nothing per file: :meth:`file_url` makes a file's URL.
    """

    __slots__ = ("base", "files")

    def __init__(self, base: str, files: WebSeedFiles) -> None:
        """Internal: use :func:`web_seed_layout`."""
        self.base = base
        self.files = files

    @property
    def urls(self) -> Sequence[HttpTrackerUrl | None]:
        """One URL per file of the torrent, each made when read: ``None`` for a pad file, a
        symlink or an empty file (nothing to fetch).

        Raises:
            WebSeedUrlError: on reading a file's URL that we cannot request (too long).
        """
        return _Urls(self)

    @property
    def fetchable(self) -> int:
        """How many files this web seed may serve (those with bytes, pad files aside)."""
        return self.files.fetchable

    async def ready(self) -> None:
        """Make the torrent's file table (:meth:`WebSeedFiles.ready`) before the first
        request, off the event loop for a large torrent, then check this web seed's URLs
        against it (:meth:`check`).

        Raises:
            WebSeedUrlError: a file's URL would be longer than our bound.
            WebSeedFilesError: the torrent's file table could not be made (the cause is
                chained).
        """
        await self.files.ready()
        self.check()

    def check(self) -> None:
        """Refuse the web seed as a whole if any file's URL would be longer than our bound
        (as before a file's URL was made per request): O(1), the table knows the longest
        path. Finding each file too long only when a request reached it made a busy loop of
        the brain's requests, for a web seed of thousands of such files.

        Raises:
            WebSeedUrlError: the longest file's URL would pass the bound.
        """
        longest = self.files.longest_url(self.base)
        if longest > MAX_URL_LENGTH:
            raise WebSeedUrlError(
                f"web seed {shown_url(self.base)!r}: a file's URL would have {longest}"
                f" characters, more than {MAX_URL_LENGTH}"
            )

    def file_url(self, file_index: int) -> HttpTrackerUrl:
        """Where file ``file_index`` is, split for a request (made now: nothing is kept).

        Raises:
            WebSeedUrlError: the file has nothing to fetch (a pad file, a symlink or an empty
                file), or its URL is one we cannot request (longer than our bound: a web
                seed :meth:`check` passed has none).
        """
        entry = self.files.info.files[file_index]
        if not _has_bytes(entry):
            raise WebSeedUrlError(f"file {file_index} has nothing to fetch")
        try:
            return parse_http_tracker_url(_file_url(self.base, self.files.path(file_index)))
        except LocalProtocolError as error:
            # The reader's wording names trackers: say what it is about here.
            reason = str(error).replace("tracker URL", "URL")
            raise WebSeedUrlError(f"{shown_url(self.base)}: file {file_index}: {reason}") from None

    def file_pieces(self, file_index: int) -> range:
        """The pieces holding bytes of file ``file_index``."""
        return self.files.info.geometry.file_pieces(file_index)

    def piece_files(self, piece: int) -> list[int]:
        """The files piece ``piece`` holds bytes of that a web seed serves (pad files, zeros
        by definition, aside), in order.

        Raises:
            IndexError: there is no such piece.
        """
        entries = self.files.info.files
        return [
            part.file_index
            for part in self.files.info.geometry.slices(piece)
            if not entries[part.file_index].is_pad
        ]

    def ranges(self, start: int, length: int) -> list[FileRange]:
        """The file ranges of ``length`` bytes of the piece space from ``start``, in order.

        Raises:
            ValueError: the run is not wholly inside the torrent's files (a gap between two v2
                files, or past the end): the caller coalesced blocks that are not neighbours.
        """
        # The table's flat lists, not the entries' properties: a run of 1 MiB may cross
        # 100,000 one-byte files.
        table = self.files.table
        starts, ends, pads = table.starts, table.ends, table.pads
        count = len(starts)
        result: list[FileRange] = []
        position = start
        end = start + length
        index = max(bisect.bisect_right(starts, position) - 1, 0)
        while position < end:
            # Skip empty files and symlinks sharing this offset.
            while index < count and ends[index] <= position:
                index += 1
            if index >= count or starts[index] > position:
                raise ValueError(f"bytes {position}..{end} are not in the torrent's files")
            stop = min(end, ends[index])
            result.append(
                FileRange(index, position - starts[index], stop - position, pads[index] != 0, self)
            )
            position = stop
            index += 1
        return result


def _first(fields: Any, *keys: bytes) -> Any:
    for key in keys:
        if key in fields:
            return fields[key]
    return None


def _raw_paths(info: Info) -> list[tuple[bytes, ...]] | None:
    """Each file's path as the torrent's own bytes, name first for a multi-file torrent, in
    :attr:`Info.files` order; ``None`` when they cannot be matched one for one."""
    fields = info.fields
    name = _first(fields, b"name.utf-8", b"name")
    if type(name) is not bytes:
        return None
    paths: list[tuple[bytes, ...]] = []
    lengths: list[int] = []
    files = fields.get(b"files")
    tree = fields.get(b"file tree")
    if type(files) is list:
        for entry in files:
            components = _first(entry, b"path.utf-8", b"path")
            if type(components) is not list or not all(type(c) is bytes for c in components):
                components = []  # an unnamed pad file: never fetched
            paths.append((name, *components))
            lengths.append(entry.get(b"length", 0))
    elif type(tree) is dict and b"length" not in fields:
        # Depth first in key order, as bip_metainfo lists a v2 tree's files.
        stack: list[tuple[list[tuple[bytes, Any]], tuple[bytes, ...]]] = [
            (list(tree.items())[::-1], (name,))
        ]
        single = len(tree) == 1
        while stack:
            items, prefix = stack[-1]
            if not items:
                stack.pop()
                continue
            key, node = items.pop()
            if type(node) is not dict:
                return None
            if len(node) == 1 and b"" in node and type(node[b""]) is dict:
                leaf = node[b""]
                paths.append((key,) if single and len(prefix) == 1 else (*prefix, key))
                lengths.append(leaf.get(b"length", 0))
            else:
                stack.append((list(node.items())[::-1], (*prefix, key)))
    else:
        paths.append((name,))
        lengths.append(fields.get(b"length", 0))
    entries = info.files
    if len(paths) != len(entries):
        # A v2 tree lists no pad files, which bip_metainfo places between the files: align
        # the tree's files with the others.
        real = [index for index, entry in enumerate(entries) if not entry.is_pad]
        if len(real) != len(paths):
            return None
        aligned: list[tuple[bytes, ...]] = [()] * len(entries)
        aligned_lengths = [0] * len(entries)
        for index, path, length in zip(real, paths, lengths, strict=True):
            aligned[index] = path
            aligned_lengths[index] = length
        paths, lengths = aligned, aligned_lengths
    if any(
        entry.length != length or len(entry.path) != len(path)
        for entry, path, length in zip(entries, paths, lengths, strict=True)
        if not entry.is_pad
    ):
        return None
    return paths


def web_seed_layout(base: str, torrent: Info | WebSeedFiles) -> WebSeedLayout:
    """The layout of a torrent's files on the web seed at ``base``: ``torrent`` is its
    :class:`~bip_metainfo.Info`, or the :class:`WebSeedFiles` its web seeds share (what a
    torrent with several web seeds gives: the per-file table is then made once).

    Only the base URL is checked here, and the length of its files' URLs if the torrent's
    table is made already (:meth:`WebSeedLayout.check`; else :meth:`WebSeedLayout.ready`
    checks it): a file's URL is made when a request needs it.

    Raises:
        WebSeedUrlError: ``base`` is not an ``http://`` or ``https://`` URL we can request,
            or (the table made) a file's URL would be longer than our bound.
    """
    files = torrent if isinstance(torrent, WebSeedFiles) else WebSeedFiles(torrent)
    try:
        escaped = _escaped(base)
    except ValueError as error:
        raise WebSeedUrlError(f"not a URL: {shown_url(base)!r} ({error})") from None
    try:
        # What a file's URL adds to the base is unreserved characters and escapes, after
        # its host, port and scheme: the base is refused if and only if every file's URL
        # would be (but for their length, checked against the longest: check).
        parse_http_tracker_url(escaped)
    except LocalProtocolError as error:
        # The reader's wording names trackers: say what it is about here.
        reason = str(error).replace("tracker URL", "URL")
        raise WebSeedUrlError(f"web seed {shown_url(base)!r}: {reason}") from None
    layout = WebSeedLayout(escaped, files)
    if files.is_made:
        layout.check()
    return layout
