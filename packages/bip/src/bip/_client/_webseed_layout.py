"""Where a torrent's bytes are on a BEP 19 web seed: one URL per file, and byte ranges.

Pure: no I/O. :func:`web_seed_layout` turns a web seed URL and a torrent's
:class:`~bip_metainfo.Info` into a :class:`WebSeedLayout`, which maps a run of the torrent's
piece space to the file ranges to fetch (:meth:`WebSeedLayout.ranges`). BEP 19's rules, as
libtorrent applies them:

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

v1, v2 and hybrid torrents alike: the layout follows :attr:`FileEntry.offset
<bip_metainfo.FileEntry.offset>`, which places every file in the piece space (a v2 file starts
on a piece boundary, with no pad entry before it).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from bip_metainfo import Info
from bip_utracker import LocalProtocolError

from ._http_tracker_codec import HttpTrackerUrl, parse_http_tracker_url, shown_url

__all__ = ["FileRange", "WebSeedLayout", "WebSeedUrlError", "shown_url", "web_seed_layout"]

# What may stay as it is in a URL's path: a base URL already escaped keeps its escapes (as
# bip_metainfo escapes ``url-list``), a magnet's ``ws`` with a space in it gains one.
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"


class WebSeedUrlError(ValueError):
    """A web seed URL we cannot use (not http or https, credentials in it, no host...)."""


@dataclass(frozen=True, slots=True)
class FileRange:
    """A run of one file's bytes inside a run of the piece space.

    Attributes:
        file_index: the file's index in :attr:`Info.files <bip_metainfo.Info.files>`.
        url: where the file is, split for a request; ``None`` for a pad file (zeros).
        offset: where the run starts in the file.
        length: how many bytes it has.
    """

    file_index: int
    url: HttpTrackerUrl | None
    offset: int
    length: int


def _escaped(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=quote(parts.path, safe=_PATH_SAFE)))


def _file_url(base: str, path: tuple[str | bytes, ...]) -> str:
    encoded = "/".join(quote(component, safe="") for component in path)
    if len(path) > 1:  # a multi-file torrent: its name is the first component
        return base + ("" if base.endswith("/") else "/") + encoded
    return base + encoded if base.endswith("/") else base


class WebSeedLayout:
    """The files of one torrent on one web seed (see the module docstring).

    Built by :func:`web_seed_layout`. :attr:`urls` has one entry per file of the torrent:
    ``None`` for a pad file, a symlink or an empty file (nothing to fetch).
    """

    __slots__ = ("_ends", "_info", "_starts", "base", "urls")

    def __init__(self, base: str, info: Info, urls: tuple[HttpTrackerUrl | None, ...]) -> None:
        """Internal: use :func:`web_seed_layout`."""
        self.base = base
        self._info = info
        self.urls = urls
        files = info.files
        self._starts = [entry.offset for entry in files]
        self._ends = [entry.end for entry in files]

    def file_pieces(self, file_index: int) -> range:
        """The pieces holding bytes of file ``file_index``."""
        return self._info.geometry.file_pieces(file_index)

    def ranges(self, start: int, length: int) -> list[FileRange]:
        """The file ranges of ``length`` bytes of the piece space from ``start``, in order.

        Raises:
            ValueError: the run is not wholly inside the torrent's files (a gap between two v2
                files, or past the end): the caller coalesced blocks that are not neighbours.
        """
        files = self._info.files
        result: list[FileRange] = []
        position = start
        end = start + length
        index = max(bisect.bisect_right(self._starts, position) - 1, 0)
        while position < end:
            # Skip empty files and symlinks sharing this offset.
            while index < len(files) and self._ends[index] <= position:
                index += 1
            if index >= len(files) or self._starts[index] > position:
                raise ValueError(f"bytes {position}..{end} are not in the torrent's files")
            entry = files[index]
            take = min(end, entry.end) - position
            url = None if entry.is_pad else self.urls[index]
            if url is None and not entry.is_pad:  # pragma: no cover - a file with bytes has one
                raise ValueError(f"file {index} has no URL")
            result.append(FileRange(index, url, position - entry.offset, take))
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


def web_seed_layout(base: str, info: Info) -> WebSeedLayout:
    """The layout of ``info``'s files on the web seed at ``base``.

    Raises:
        WebSeedUrlError: ``base`` (or a file's URL made from it) is not an ``http://`` or
            ``https://`` URL we can request.
    """
    try:
        escaped = _escaped(base)
    except ValueError as error:
        raise WebSeedUrlError(f"not a URL: {shown_url(base)!r} ({error})") from None
    urls: list[HttpTrackerUrl | None] = []
    raw = _raw_paths(info)
    for index, entry in enumerate(info.files):
        if entry.is_pad or entry.is_symlink or entry.length == 0:
            urls.append(None)
            continue
        path: tuple[str | bytes, ...] = entry.path if raw is None else raw[index]
        try:
            urls.append(parse_http_tracker_url(_file_url(escaped, path)))
        except LocalProtocolError as error:
            # The reader's wording names trackers: say what it is about here.
            reason = str(error).replace("tracker URL", "URL")
            raise WebSeedUrlError(f"web seed {shown_url(base)!r}: {reason}") from None
    return WebSeedLayout(escaped, info, tuple(urls))
