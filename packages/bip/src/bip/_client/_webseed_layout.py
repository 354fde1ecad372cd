"""Where a torrent's bytes are on a BEP 19 web seed: one URL per file, and byte ranges.

No I/O. :func:`web_seed_layout` turns a web seed URL and a torrent's
:class:`~bip_metainfo.Info` (or the :class:`WebSeedFiles` its web seeds share) into a
:class:`WebSeedLayout`, which maps a run of the torrent's piece space to the file ranges to
fetch (:meth:`WebSeedLayout.ranges`). BEP 19's rules, as libtorrent applies them:

- a single-file torrent: the URL is the file, or, when it ends with ``/``, a directory holding
  a file of the torrent's name;
- a multi-file torrent: the URL names a directory (a ``/`` is added if missing) holding the
  torrent's name as a directory, then each file's path, every component percent-encoded;
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
worker thread (:meth:`WebSeedFiles.ready`): seconds of Python at the bound.

v1, v2 and hybrid torrents alike: the layout follows :attr:`FileEntry.offset
<bip_metainfo.FileEntry.offset>`, which places every file in the piece space (a v2 file starts
on a piece boundary, with no pad entry before it).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, overload
from urllib.parse import quote, urlsplit, urlunsplit

import trio

from bip_metainfo import FileEntry, Info
from bip_utracker import LocalProtocolError

from ._http_tracker_codec import HttpTrackerUrl, parse_http_tracker_url, shown_url

__all__ = [
    "INLINE_FILES",
    "FileRange",
    "WebSeedFiles",
    "WebSeedLayout",
    "WebSeedUrlError",
    "shown_url",
    "web_seed_layout",
]

# What may stay as it is in a URL's path: a base URL already escaped keeps its escapes (as
# bip_metainfo escapes ``url-list``), a magnet's ``ws`` with a space in it gains one.
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"

INLINE_FILES: Final = 10_000
"""Files of a torrent whose table (:class:`WebSeedFiles`) is made on the event loop (about
10 ms at most); a larger torrent's is made in a worker thread."""


class WebSeedUrlError(ValueError):
    """A web seed URL we cannot use (not http or https, credentials in it, no host, too
    long...)."""


@dataclass(frozen=True, slots=True)
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
    return urlunsplit(parts._replace(path=quote(parts.path, safe=_PATH_SAFE)))


def _file_url(base: str, path: tuple[str | bytes, ...]) -> str:
    encoded = "/".join(quote(component, safe="") for component in path)
    if len(path) > 1:  # a multi-file torrent: its name is the first component
        return base + ("" if base.endswith("/") else "/") + encoded
    return base + encoded if base.endswith("/") else base


def _has_bytes(entry: FileEntry) -> bool:
    """Whether a web seed serves the file: not a pad file, a symlink or an empty file."""
    return not (entry.is_pad or entry.is_symlink or entry.length == 0)


class _FileTable:
    """What every web seed of a torrent needs per file, made once (O(files))."""

    __slots__ = ("fetchable", "raw", "starts")

    def __init__(self, info: Info) -> None:
        files = info.files
        self.raw = _raw_paths(info)
        self.starts = [entry.offset for entry in files]  # the entries' own ints: a pointer each
        self.fetchable = sum(1 for entry in files if _has_bytes(entry))


class WebSeedFiles:
    """A torrent's files as its web seeds name and place them: one for all of its web seeds.

    Made at once (it holds the torrent's :class:`~bip_metainfo.Info` only). Its table (each
    file's path as the torrent names it, where each file starts: about 90 bytes a file) is
    made the first time a web seed needs it, once: :meth:`ready` makes a large torrent's in a
    worker thread; read before that, it is made on the spot.
    """

    __slots__ = ("_lock", "_table", "info")

    def __init__(self, info: Info) -> None:
        """The files of ``info`` (nothing is made per file yet)."""
        self.info = info
        self._table: _FileTable | None = None
        self._lock = trio.Lock()  # one worker thread for all the web seeds waiting

    async def ready(self) -> None:
        """Make the table unless it is made: in a worker thread for a torrent of more than
        :data:`INLINE_FILES` files (seconds of Python for the largest), so that the session
        goes on meanwhile."""
        if self._table is not None:
            return
        if len(self.info.files) <= INLINE_FILES:
            self._make()
            return
        async with self._lock:
            if self._table is None:
                # Abandoned if cancelled (a removal need not wait for it): the thread only
                # reads the Info and sets the table, which the next reader then finds.
                await trio.to_thread.run_sync(self._make, abandon_on_cancel=True)

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

    def path(self, file_index: int) -> tuple[str | bytes, ...]:
        """File ``file_index``'s path as the torrent names it (name first in a multi-file
        torrent)."""
        raw = self.table.raw
        return self.info.files[file_index].path if raw is None else raw[file_index]


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
        request, off the event loop for a large torrent."""
        await self.files.ready()

    def file_url(self, file_index: int) -> HttpTrackerUrl:
        """Where file ``file_index`` is, split for a request (made now: nothing is kept).

        Raises:
            WebSeedUrlError: the file has nothing to fetch (a pad file, a symlink or an empty
                file), or its URL is one we cannot request (longer than our bound).
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

    def ranges(self, start: int, length: int) -> list[FileRange]:
        """The file ranges of ``length`` bytes of the piece space from ``start``, in order.

        Raises:
            ValueError: the run is not wholly inside the torrent's files (a gap between two v2
                files, or past the end): the caller coalesced blocks that are not neighbours.
        """
        files = self.files.info.files
        starts = self.files.table.starts
        result: list[FileRange] = []
        position = start
        end = start + length
        index = max(bisect.bisect_right(starts, position) - 1, 0)
        while position < end:
            # Skip empty files and symlinks sharing this offset.
            while index < len(files) and files[index].end <= position:
                index += 1
            if index >= len(files) or starts[index] > position:
                raise ValueError(f"bytes {position}..{end} are not in the torrent's files")
            entry = files[index]
            take = min(end, entry.end) - position
            result.append(FileRange(index, position - entry.offset, take, entry.is_pad, self))
            position += take
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

    Only the base URL is checked here (once): a file's URL is made when a request needs it,
    and one longer than our bound is refused then (:meth:`WebSeedLayout.file_url`).

    Raises:
        WebSeedUrlError: ``base`` is not an ``http://`` or ``https://`` URL we can request.
    """
    files = torrent if isinstance(torrent, WebSeedFiles) else WebSeedFiles(torrent)
    try:
        escaped = _escaped(base)
    except ValueError as error:
        raise WebSeedUrlError(f"not a URL: {shown_url(base)!r} ({error})") from None
    try:
        # What a file's URL adds to the base is unreserved characters and escapes, after
        # its host, port and scheme: the base is refused if and only if every file's URL
        # would be (but for its length, checked per file).
        parse_http_tracker_url(escaped)
    except LocalProtocolError as error:
        # The reader's wording names trackers: say what it is about here.
        reason = str(error).replace("tracker URL", "URL")
        raise WebSeedUrlError(f"web seed {shown_url(base)!r}: {reason}") from None
    return WebSeedLayout(escaped, files)
