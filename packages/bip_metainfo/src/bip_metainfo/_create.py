"""Creating torrents from a file or a directory: v1, v2 (BEP 52) or hybrid.

:func:`create_torrent` walks the files, hashes them on every core with a bounded
amount of memory, and returns the parsed :class:`~bip_metainfo.Metainfo`; write
it with :meth:`~bip_metainfo.Metainfo.to_bytes`.

**Layout.** The info dictionary is laid out as libtorrent 2.1 lays it out, so for
the same files, piece length and options the .torrent is byte for byte
libtorrent's (and so qBittorrent's, which creates torrents through it). Where
libtorrent's file order differs, ours is deliberate:

- libtorrent lists a v1-only torrent's files in directory order, which varies from
  one file system to another; here they are always sorted, so the same files give
  the same torrent (libtorrent given our order makes the same torrent).
- libtorrent sorts a hybrid torrent's v1 file list by the whole path as one
  string, which puts ``b.txt`` before the directory ``b``, while the v2 ``file
  tree`` (a bencoded dictionary, sorted per path component) has ``b/...`` first;
  libtorrent 2.1.1 then refuses its own torrent ("the v1 and v2 file metadata
  does not match"). Here both lists are in the file tree's order, which
  libtorrent accepts.

Everything here except the hashing pool runs on the calling thread; to create a
torrent from trio, run it with ``trio.to_thread.run_sync`` and cancel it through
a :class:`threading.Event`.

**Modules.** This module checks the arguments and builds the torrent;
:mod:`._create_walk` finds the files, :mod:`._create_pipeline` runs the hashing
threads and :mod:`._create_hashing` reads and hashes the files' data on them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from bip_bencode import encode

from . import _info
from ._create_pipeline import CreateCancelled, Progress, _default_threads, _hash_files
from ._create_walk import _check_names, _check_utf8, _Entry, _output, _scan
from ._errors import CreateError
from ._info import DEFAULT_MAX_FILES, DEFAULT_MAX_PIECES, MAX_CREATE_PIECE_LENGTH
from ._merkle import BLOCK_SIZE
from ._metainfo import MAX_URLS, Metainfo
from ._tokens import DEFAULT_MAX_VALUES

__all__ = ["CreateCancelled", "auto_piece_length", "create_torrent"]

# DEBUG: the caller gets the torrent (or the exception) and reports it; progress goes to
# its ``progress`` callback. One record as hashing starts, one when it ends. One WARNING,
# before hashing, when only hashing can tell whether the torrent is refused for its size:
# the caller learns it hours before the refusal would come.
_log = logging.getLogger("bip_metainfo.create")

Version: TypeAlias = Literal["v1", "v2", "hybrid"]

DEFAULT_MAX_BUFFERED_BYTES: Final = 64 * 1024 * 1024
"""How much file data :func:`create_torrent` holds in memory at most, by default
(each hashing thread reads 1 MiB at a time, so with fewer than 64 threads less)."""

MAX_AUTO_PIECE_LENGTH: Final = 16 * 1024 * 1024
"""The largest piece length :func:`auto_piece_length` chooses."""

# libtorrent's table: the largest total size for which 16 KiB << i is the automatic
# piece length. Entry i is (2 * piece_length / 20) ** 2, rounded: the size at which
# the list of SHA-1 piece hashes (20 bytes each) is twice the square root of the
# total size, so hashes and pieces grow together.
_AUTO_SIZES: Final = (
    2684355,  # -> 16 KiB
    10737418,  # -> 32 KiB
    42949673,  # -> 64 KiB
    171798692,  # -> 128 KiB
    687194767,  # -> 256 KiB
    2748779069,  # -> 512 KiB
    10995116278,  # -> 1 MiB
    43980465111,  # -> 2 MiB
    175921860444,  # -> 4 MiB
    703687441777,  # -> 8 MiB; anything larger gets 16 MiB
)


def auto_piece_length(total_size: int) -> int:
    """The piece length :func:`create_torrent` chooses for ``total_size`` bytes of files.

    The rule is libtorrent's (so an automatic torrent matches one libtorrent or
    qBittorrent makes of the same files): the smallest power of two from 16 KiB
    up to 16 MiB that is at least about ten times the square root of the total
    size. The torrent then has at most about ``sqrt(total_size) / 10`` pieces and
    its v1 piece hashes take about twice the square root of the total size:
    1 GiB gets 512 KiB pieces (2048 of them), 100 GiB 4 MiB pieces, and from
    about 655 GiB on every torrent gets 16 MiB pieces.

    >>> auto_piece_length(1_000_000), auto_piece_length(2**30) // 1024
    (16384, 512)
    >>> auto_piece_length(2**50) == MAX_AUTO_PIECE_LENGTH
    True

    Raises:
        ValueError: ``total_size`` is negative.
    """
    if type(total_size) is not int or total_size < 0:
        raise ValueError(f"total size must be a non-negative integer, not {total_size!r}")
    shift = 0
    for size in _AUTO_SIZES:
        if size >= total_size:
            break
        shift += 1
    return BLOCK_SIZE << shift


def _check_piece_length(piece_length: int, version: Version) -> None:
    if type(piece_length) is not int or piece_length <= 0:
        raise ValueError(f"piece length must be a positive integer, not {piece_length!r}")
    if version == "v1":
        if piece_length % BLOCK_SIZE:
            raise CreateError(
                f"a v1 piece length must be a multiple of {BLOCK_SIZE} bytes, not {piece_length}"
            )
    elif piece_length < BLOCK_SIZE or piece_length & (piece_length - 1):
        raise CreateError(
            f"a {version} piece length must be a power of two of at least {BLOCK_SIZE} bytes, "
            f"not {piece_length}"
        )
    # libtorrent 2.1.1 refuses to load a torrent of larger pieces; readers (ours included)
    # take up to INT_MAX / 2, as older libtorrents did, but no torrent made here needs them.
    if piece_length > MAX_CREATE_PIECE_LENGTH:
        raise CreateError(
            f"piece length {piece_length} is above {MAX_CREATE_PIECE_LENGTH} (512 MiB less "
            "16 KiB, 256 MiB as a power of two), the largest libtorrent 2.1 loads"
        )


def _check_text(value: str, what: str) -> None:
    """Refuse text a torrent cannot hold: its strings are UTF-8, and a lone surrogate (what
    Python makes of bytes that are not UTF-8 in a command line) has no UTF-8 form. Checked
    before any hashing, naming the argument, rather than failing as the torrent is encoded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        # A comment may be long: the message shows the text around the first bad character.
        start, end = max(0, error.start - 40), error.start + 40
        shown = f"{'...' if start else ''}{value[start:end]!r}{'...' if end < len(value) else ''}"
        raise CreateError(
            f"{what}: {shown} is not valid UTF-8, which a torrent cannot hold"
        ) from None


def _tiers(trackers: Sequence[str | Sequence[str]]) -> list[list[str]]:
    if isinstance(trackers, str):
        raise TypeError("trackers must be a sequence of URLs or of tiers, not one string")
    tiers = []
    for item in trackers:
        tier = [item] if isinstance(item, str) else list(item)
        for url in tier:
            if not isinstance(url, str) or not url.strip():
                raise ValueError(f"a tracker URL must be a non-empty string, not {url!r}")
            _check_text(url, "trackers")
        if tier:
            tiers.append(tier)
    return tiers


def _strings(values: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a sequence of strings, not one string")
    for value in values:
        if not isinstance(value, str) or not value:
            raise ValueError(f"each of {what} must be a non-empty string, not {value!r}")
        _check_text(value, what)
    return list(values)


def _v1_files(files: list[_Entry]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for entry in files:
        item: dict[str, Any] = {"length": entry.length, "path": list(entry.path)}
        if entry.attr:
            item["attr"] = entry.attr
        if entry.symlink is not None:
            item["symlink path"] = list(entry.symlink)
        result.append(item)
        if entry.pad:
            result.append({"attr": "p", "length": entry.pad, "path": [".pad", str(entry.pad)]})
    return result


def _file_tree(files: list[_Entry], name: str, *, placeholder: bool = False) -> dict[str, Any]:
    """The v2 ``file tree``; with ``placeholder``, before hashing (for ``_measure``)."""
    tree: dict[str, Any] = {}
    for entry in files:
        path = entry.path or (name,)
        node = tree
        for component in path[:-1]:
            node = node.setdefault(component, {})
        leaf: dict[str, Any] = {}
        if entry.symlink is None:
            leaf["length"] = entry.length  # libtorrent writes none for a link
        else:
            leaf["symlink path"] = list(entry.symlink)
        root = bytes(32) if placeholder and entry.length else entry.pieces_root
        if root is not None:
            leaf["pieces root"] = root
        if entry.attr:
            leaf["attr"] = entry.attr
        node[path[-1]] = {"": leaf}
    return tree


def _check_urls(tiers: list[list[str]], *groups: tuple[Sequence[object], str]) -> None:
    """Refuse more URLs (or nodes) than readers keep (:data:`MAX_URLS`): they drop the rest."""
    counts = [(len({url for tier in tiers for url in tier}), "tracker URLs")]
    # Written as given, duplicates too (readers keep the first MAX_URLS entries, not values).
    counts += [(len(values), what) for values, what in groups]
    for count, what in counts:
        if count > MAX_URLS:
            raise CreateError(
                f"{count} {what} is more than the {MAX_URLS} a torrent's readers keep"
            )


# libtorrent 2.1.1's defaults for loading a .torrent file (load_torrent_limits), measured
# with its Python wheel: a file of more than 10,000,000 bytes is "metadata too large", and
# bdecode takes at most 3,000,000 tokens: one per string, integer, list and dictionary, and
# one more per list and dictionary, for its end. Torrents within DEFAULT_MAX_FILES and
# DEFAULT_MAX_PIECES can pass either: about 100,000 files of a hybrid torrent make 3,000,000
# tokens, 500,000 v1 piece hashes 10,000,000 bytes. qBittorrent raises both (100 MiB,
# 10,000,000 tokens), but programs that keep libtorrent's defaults do not load such a
# torrent: so one made here stays within them (DEFAULT_MAX_VALUES, our readers' bound,
# is the looser one: every value is a token).
_LIBTORRENT_MAX_BYTES = 10_000_000
_LIBTORRENT_MAX_TOKENS = 3_000_000


class _Blob:
    """Hashes not computed yet: a bencoded string of ``size`` bytes, for ``_measure``."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class _Measure(NamedTuple):
    """What readers bound of a torrent: its bencoded values (``DEFAULT_MAX_VALUES``), its
    bdecode tokens (the values, and the end of each list and dictionary: libtorrent's
    ``max_decode_tokens``) and its size in bytes (libtorrent's ``max_buffer_size``)."""

    values: int
    tokens: int
    size: int


def _string_size(value: object) -> int:
    if isinstance(value, _Blob):
        length = value.size
    elif isinstance(value, str):
        length = len(value.encode())
    elif isinstance(value, bytes):
        length = len(value)
    else:  # the torrent is built here: nothing else is in it
        raise TypeError(f"not a bencoded value: {value!r}")
    return len(str(length)) + 1 + length


def _measure(value: object) -> _Measure:
    """``_Measure`` of ``value`` (strings may be ``_Blob`` placeholders), bencoded."""
    values = tokens = size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        values += 1
        tokens += 1
        if isinstance(item, dict):
            values += len(item)  # the keys, strings
            tokens += len(item) + 1
            size += 2 + sum(_string_size(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            tokens += 1
            size += 2
            stack.extend(item)
        elif isinstance(item, int):
            size += len(str(item)) + 2
        else:
            size += _string_size(item)
    return _Measure(values, tokens, size)


def _too_large(measure: _Measure) -> str | None:
    """Why readers would refuse a torrent of ``measure``, or None."""
    if measure.values > DEFAULT_MAX_VALUES:
        return (
            f"the torrent would hold {measure.values} bencoded values, more than the "
            f"{DEFAULT_MAX_VALUES} its readers accept: share fewer files"
        )
    if measure.tokens > _LIBTORRENT_MAX_TOKENS:
        return (
            f"the torrent would hold {measure.tokens} bencoded tokens (its values, and the end "
            f"of each list and dictionary), more than the {_LIBTORRENT_MAX_TOKENS} libtorrent "
            "loads by default: share fewer files"
        )
    if measure.size > _LIBTORRENT_MAX_BYTES:
        return (
            f"the torrent would be {measure.size} bytes, more than the {_LIBTORRENT_MAX_BYTES} "
            "libtorrent loads by default: use a larger piece length, or share fewer files"
        )
    return None


# How many directories deep (the torrent's top directory included) a file may lie, so that
# libtorrent 2.1.1 loads the torrent. A v1 ``path`` (and any ``symlink path``) may have 100
# components (libtorrent refuses 101: its error 219; our reader's bound). A v2 file tree is
# bounded by its bencoding depth limit instead (100 nested lists and dictionaries, measured):
# the .torrent file, its info dict, the tree, the directories below it, the file's name, its
# "" dict, and a symlink's target list; so a file at most 94 directories below the tree's
# root, 93 for a symlink. Our reader takes deeper trees (MAX_FILE_TREE_DEPTH), which
# libtorrent cannot load.
_MAX_V1_PATH = _info._MAX_PATH_COMPONENTS
_MAX_V2_DEPTH = 95
_MAX_V2_LINK_DEPTH = 94


def _check_limits(
    files: list[_Entry],
    data: list[_Entry],
    torrent: dict[str, Any],
    *,
    v1: bool,
    v2: bool,
    more_layers: list[int],
) -> None:
    """Refuse, before any hashing, a torrent its readers would refuse for its size.

    ``torrent`` is the torrent as it will be, with every hash a placeholder (``_Blob``,
    and one piece layer for each length of file that has one, the fewest there can be):
    readers count pad files among the files, take no file larger than ``MAX_FILE_SIZE``
    (about 16 TiB, libtorrent's limit), no v1 ``path`` or ``symlink path`` of more than
    100 components, no v2 file tree deeper than libtorrent's bencoding depth limit allows
    (a file 94 directories below the top one, a symlink 93), decode no more than
    :data:`DEFAULT_MAX_VALUES` bencoded values, and libtorrent loads no .torrent file of
    more than ``_LIBTORRENT_MAX_TOKENS`` tokens or ``_LIBTORRENT_MAX_BYTES`` bytes.
    ``more_layers`` are the sizes of the piece layers files of a length already counted
    may add: if they can push the torrent over, only hashing will tell, and a warning
    says so now.
    """
    count = len(files) + sum(1 for entry in data if entry.pad)
    if count > DEFAULT_MAX_FILES:
        raise CreateError(
            f"{count} files (pad files included) is more than the {DEFAULT_MAX_FILES} a torrent "
            "may hold"
        )
    # Read through the module, not imported by name, so that tests can lower the bound.
    max_size = _info.MAX_FILE_SIZE
    for entry in files:
        if entry.length > max_size:
            raise CreateError(
                f"{entry.source!r} is {entry.length} bytes, more than the {max_size} a torrent's "
                "readers (libtorrent's among them) accept for one file"
            )
        # Directories deep, the torrent's top one included: a v1 path's component count.
        depth = len(entry.path)
        limits = [_MAX_V1_PATH] if v1 else []
        if v2:
            limits.append(_MAX_V2_LINK_DEPTH if entry.symlink is not None else _MAX_V2_DEPTH)
        if limits and depth > min(limits):
            raise CreateError(
                f"{entry.source!r} is {depth} directories deep (the torrent's top one included), "
                f"more than the {min(limits)} libtorrent loads in a "
                f"{'v2 or hybrid' if v2 else 'v1'} torrent"
            )
        if entry.symlink is not None and len(entry.symlink) > _MAX_V1_PATH:
            raise CreateError(
                f"the symlink {entry.source!r} points {len(entry.symlink)} components deep, more "
                f"than the {_MAX_V1_PATH} a torrent's readers take"
            )
    fewest = _measure(torrent)
    problem = _too_large(fewest)
    if problem is not None:
        raise CreateError(problem)
    # Each layer more: its key (a 32-byte pieces root) and the layer, two values.
    most = fewest._replace(
        values=fewest.values + 2 * len(more_layers),
        tokens=fewest.tokens + 2 * len(more_layers),
        size=fewest.size + sum(35 + len(str(size)) + 1 + size for size in more_layers),
    )
    problem = _too_large(most)
    if problem is not None:
        _log.warning(
            "the torrent %r may be refused after hashing, as files of one length that differ "
            "add piece layers (identical ones share one): with %d more, %s",
            torrent["info"]["name"],
            len(more_layers),
            problem,
        )


def create_torrent(
    path: str | os.PathLike[str],
    *,
    version: Version = "hybrid",
    piece_length: int | None = None,
    trackers: Sequence[str | Sequence[str]] = (),
    web_seeds: Sequence[str] = (),
    http_seeds: Sequence[str] = (),
    nodes: Sequence[tuple[str, int]] = (),
    private: bool = False,
    source: str | None = None,
    comment: str | None = None,
    creation_date: int | Literal["now"] | None = "now",
    created_by: str | None = "bip_metainfo/{version}",
    name: str | None = None,
    similar: Sequence[bytes] = (),
    collections: Sequence[str] = (),
    include_hidden: bool = True,
    symlinks: Literal["store", "follow"] = "store",
    portable_names: bool = True,
    output: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    threads: int | None = None,
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
) -> Metainfo:
    """Create a torrent of a file or a directory.

    A regular file gives a single-file torrent named like it; a directory gives
    a multi-file torrent of every regular file beneath it (empty ones included;
    empty directories, FIFOs, sockets and devices have nothing to share and are
    left out).

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     album = pathlib.Path(tmp, "album")
    ...     album.mkdir()
    ...     _ = (album / "b.flac").write_bytes(b"b" * 100_000)
    ...     _ = (album / "a.txt").write_bytes(b"liner notes")
    ...     torrent = create_torrent(album, trackers=["udp://tracker.example:6969"],
    ...                              creation_date=None)
    >>> torrent.info.is_hybrid, torrent.info.piece_length, torrent.trackers
    (True, 16384, (('udp://tracker.example:6969',),))
    >>> for file in torrent.files:           # pad files align each file to a piece
    ...     print(file.path_str(), file.length, file.offset)
    album/a.txt 11 0
    album/.pad/16373 16373 11
    album/b.flac 100000 16384
    album/.pad/14688 14688 116384
    >>> data = torrent.to_bytes()          # the .torrent file's bytes

    **Versions.** ``"v1"`` (BEP 3: SHA-1 of each piece over the files'
    concatenation, no pad files), ``"v2"`` (BEP 52: a merkle tree of 16 KiB
    SHA-256 leaves per file, and the ``piece layers``) or ``"hybrid"`` (both, the
    default, as in libtorrent: every client can use it). A hybrid torrent's v1
    file list has a BEP 47 pad file (``.pad/<size>``, attribute ``p``) after
    every non-empty file that does not end on a piece boundary, the last file
    included unless it is the only one, so every file starts a piece in both
    views. Both hashes come from one read of the data.

    **Files.** They are listed in the order of the v2 file tree: path components
    compared one by one, as their UTF-8 bytes (a directory's files come
    together, ``a/b`` and ``a/c`` before ``a.txt`` and ``b``), the same order in
    every version, so equal inputs give equal torrents. A name that is not
    valid UTF-8 is refused, and so is any name the torrent's readers would
    change (see :func:`~bip_metainfo.sanitize_path` and
    :func:`~bip_metainfo.resolve_duplicates`: ``a:b.txt``, ``con.txt``,
    ``trail.``, ``README`` beside ``Readme``), since the torrent could then not
    be checked or seeded from these files; ``portable_names=False`` keeps them (as
    libtorrent does: its readers on Linux and macOS take ``:`` and ``?`` as they
    are, ours and those on Windows rename them). Files whose owner may execute them get the BEP 47
    attribute ``x``, and on Windows hidden files ``h``, as libtorrent gives them.
    With ``include_hidden=False`` files and directories whose name starts with
    ``.`` (or hidden on Windows) are left out (the top ``path`` itself is always
    used). BEP 52 cannot tell a directory of one file from the file alone: a
    v2-only torrent of such a directory is read (by libtorrent too) as a
    single-file torrent named after the file.

    **Symbolic links.** ``symlinks="store"`` (the default) stores each link as
    BEP 47 describes (attribute ``l``, a ``symlink path`` from the torrent's
    root, no data) when its target, taken lexically from the link's directory,
    stays inside the torrent (dangling links included); a link that leads out
    of the torrent, or to its top directory, is left out, as libtorrent leaves
    it out: nothing outside the directory is ever shared. Like libtorrent, the
    link's own permission bits give it ``x`` as well (``xl`` on Linux).
    ``symlinks="follow"`` shares what links point to as ordinary files and
    directories; a dangling link raises :class:`FileNotFoundError`, a link
    back to a directory it is in raises :class:`OSError` (``ELOOP``) and one
    to a directory already reached (through another link, or directly) raises
    :class:`CreateError`: its files would be shared twice. A
    ``path`` that is itself a link is always followed.

    **Output.** ``output``, where the caller will write the torrent (nothing is
    written here), is refused if the torrent would share it: if it is a file
    the walk shares (writing it would replace that file, or an earlier torrent
    written there would be hashed into this one), or if it lies in a directory
    the walk enters, however it is reached (a followed link, a bind mount), so
    that the next torrent made of these files would share this one and then
    replace it, failing its own check. A name starting with ``.`` is no
    concern with ``include_hidden=False``. Files and directories are told
    apart by ``(st_dev, st_ino)``, not by name; its directory is found as the
    OS finds it (``link/..`` is the parent of the link's target).

    **Piece length.** ``None`` picks :func:`auto_piece_length` of the total
    size (libtorrent's rule: 16 KiB to 16 MiB, at most about
    ``sqrt(total) / 10`` pieces). An explicit v2 or hybrid piece length must be
    a power of two of at least 16 KiB; a v1 one a multiple of 16 KiB. None may be
    above 512 MiB less 16 KiB (so 256 MiB for v2 and hybrid), the most
    libtorrent 2.1.1 loads.

    **Text** (``comment``, ``source``, ``created_by``, URLs, node hosts,
    ``collections``, the name) must be valid UTF-8, as every string in a
    torrent: a lone surrogate, which Python makes of bytes that are not UTF-8
    in a command line, is refused naming its argument.

    **Hashing** runs on ``threads`` threads (default: every core this process
    may use). The calling thread cuts the data into jobs of whole pieces (about
    16 MiB each), keeps at most two jobs per thread in flight and collects their
    results in order; each hashing thread reads its job's files itself, 1 MiB at
    a time, and hashes each chunk while it is still in the CPU's cache (SHA-1 and
    SHA-256 from the same read for a hybrid torrent). So at most
    ``max_buffered_bytes`` of file data (and at least 16 KiB a thread) is in
    memory at once, whatever the size of the files; the result holds 20 bytes a
    piece for v1 and 32 for v2. ``progress`` is called on the calling thread
    with ``(bytes hashed, total bytes)``: once with 0, at most 20 times a second
    as jobs complete, and a last time with the total. Setting ``cancel`` (from
    any thread) stops every thread within a chunk and raises
    :class:`CreateCancelled`; an exception from ``progress`` stops the work
    likewise and propagates. To create torrents from trio, run this function
    with ``trio.to_thread.run_sync`` and set ``cancel`` when the task is
    cancelled.

    Args:
        path: the file or directory to share.
        version: ``"v1"``, ``"v2"`` or ``"hybrid"``.
        piece_length: bytes per piece, or None for automatic.
        trackers: announce URLs; a string is a tier of its own, a sequence of
            strings one tier (BEP 12). The first URL is also ``announce``;
            ``announce-list`` is written when there is more than one URL.
        web_seeds: BEP 19 ``url-list`` URLs (a string when there is one, as
            libtorrent writes it).
        http_seeds: BEP 17 ``httpseeds`` URLs.
        nodes: BEP 5 DHT bootstrap nodes as ``(host, port)``.
        private: set the BEP 27 private flag.
        source: the ``source`` string in the info dict (private trackers use it to
            give each site its own info-hash).
        comment: free text.
        creation_date: seconds since the epoch; ``"now"`` (the default) for the
            current time; None to leave it out, for reproducible output.
        created_by: the program named as creator, ``{version}`` replaced by this
            library's version; None to leave it out.
        name: the torrent's name (by default the file's or directory's name).
        similar: BEP 38 info-hashes (20 bytes each) of torrents with shared files.
        collections: BEP 38 collection names.
        include_hidden: include files and directories whose name starts with ``.``.
        symlinks: ``"store"`` or ``"follow"``, as above.
        portable_names: refuse names readers would change, as above.
        output: the path the torrent will be written to, as above; None to
            check nothing.
        progress: called with ``(bytes hashed, total bytes)``.
        cancel: set it (from any thread) to stop.
        threads: hashing threads; by default the number of usable cores.
        max_buffered_bytes: the bound on file data held in memory.

    Returns:
        The parsed torrent: :meth:`~bip_metainfo.Metainfo.to_bytes` gives the
        file to write, ``.info.info_hash`` its identity.

    Raises:
        FileNotFoundError: ``path`` or the directory of ``output`` does not
            exist, or a followed link points nowhere.
        OSError: a file cannot be read, changed size while it was hashed, or
            (following links) a link loops.
        CreateError: the content or the choices cannot make a torrent: a piece length
            that is invalid for the version or above what libtorrent 2.1.1 loads, text
            that is not UTF-8 (the message names the argument), a name that is not a
            file name or one readers would change, no files or only empty ones, more
            pieces, files (pad files included) or bencoded values than readers accept, a
            .torrent larger than libtorrent 2.1.1 loads by default (more than 10,000,000
            bytes, or 3,000,000 bencoded tokens: its values and the end of each list and
            dictionary; qBittorrent raises both, other programs may not), a file of 16
            TiB less 16 KiB or more (libtorrent's limit), a file deeper than libtorrent
            loads (100 directories, the top one included, in a v1 torrent, 95 in a v2 or
            hybrid one, 94 for a symlink) or a symlink's target of more than 100
            components, more than :data:`~bip_metainfo.MAX_URLS` trackers (or web seeds,
            HTTP seeds, nodes), a directory reached twice through followed links, an
            ``output`` the torrent would share, or a path that is neither a file nor a
            directory (or no longer a regular file, or another file, when it is read).
            All of these but the last are found before any hashing, but for a size or
            count pushed over a limit by files of one length that turn out to differ
            (identical files share one piece layer): when that may happen, a warning is
            logged (logger ``bip_metainfo.create``) before hashing.
        ValueError: other invalid arguments (a bad ``version``, ``threads``...).
        CreateCancelled: ``cancel`` was set.
    """
    if version not in ("v1", "v2", "hybrid"):
        raise ValueError(f"version must be 'v1', 'v2' or 'hybrid', not {version!r}")
    if symlinks not in ("store", "follow"):
        raise ValueError(f"symlinks must be 'store' or 'follow', not {symlinks!r}")
    if type(portable_names) is not bool:
        raise ValueError(f"portable_names must be a bool, not {portable_names!r}")
    if piece_length is not None:
        _check_piece_length(piece_length, version)
    threads = _default_threads() if threads is None else threads
    if type(threads) is not int or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    if type(max_buffered_bytes) is not int or max_buffered_bytes < 1:
        raise ValueError(f"max_buffered_bytes must be positive, not {max_buffered_bytes!r}")
    tiers = _tiers(trackers)
    seeds = _strings(web_seeds, "web_seeds")
    http = _strings(http_seeds, "http_seeds")
    groups = _strings(collections, "collections")
    for item in similar:
        if not isinstance(item, bytes) or len(item) != 20:
            raise ValueError(f"similar info-hashes must be 20 bytes each, not {item!r}")
    for node in nodes:
        host, port = node
        if not isinstance(host, str) or not host or type(port) is not int or not 0 < port < 65536:
            raise ValueError(f"a DHT node must be (host, port), not {node!r}")
        _check_text(host, "nodes")
    for text, what in ((source, "source"), (comment, "comment"), (created_by, "created_by")):
        if isinstance(text, str):
            _check_text(text, what)
    if creation_date == "now":
        creation_date = int(time.time())
    elif creation_date is not None and (type(creation_date) is not int or creation_date < 0):
        raise ValueError(f"creation date must be seconds since the epoch, not {creation_date!r}")
    _check_urls(tiers, (seeds, "web seeds"), (http, "HTTP seeds"), (nodes, "DHT nodes"))

    root = os.fspath(path)
    if name is None:
        name = os.path.basename(os.path.normpath(os.path.abspath(root)))
    separators = {"/", os.sep, os.altsep} - {None}
    if not isinstance(name, str) or name in ("", ".", "..") or separators & set(name):
        raise CreateError(f"the torrent needs a name (a non-empty file name), not {name!r}")
    _check_utf8(name, name)
    files, single = _scan(
        root,
        include_hidden=include_hidden,
        follow_symlinks=symlinks == "follow",
        output=None if output is None else _output(os.fspath(output)),
    )
    if not files:
        raise CreateError(f"{root!r} holds no files to share")
    v1 = version != "v2"
    v2 = version != "v1"
    _check_names(name, files, v1=v1, portable=portable_names)
    total = sum(entry.length for entry in files)
    if total == 0:
        raise CreateError(f"the files under {root!r} are all empty: a torrent needs some data")
    if piece_length is None:
        piece_length = auto_piece_length(total)

    data = [entry for entry in files if entry.length]
    if v2:
        for entry in data:
            # Every file starts a piece; in a hybrid torrent's v1 list pad files fill
            # the gaps, the last file's too unless it is the only file (libtorrent).
            entry.pad = -entry.length % piece_length if v1 and len(files) > 1 else 0
        num_pieces = sum(-(-entry.length // piece_length) for entry in data)
    else:
        num_pieces = -(-total // piece_length)
    if num_pieces > DEFAULT_MAX_PIECES:
        raise CreateError(
            f"{num_pieces} pieces of {piece_length} bytes is more than the {DEFAULT_MAX_PIECES} "
            f"a torrent may have: use a larger piece length"
        )

    info: dict[str, Any] = {"name": name, "piece length": piece_length}
    if v1:
        info["pieces"] = _Blob(20 * num_pieces)  # the hashes come below
        if single:
            info["length"] = files[0].length
            if files[0].attr:
                info["attr"] = files[0].attr
        else:
            info["files"] = _v1_files(files)
    if v2:
        info["meta version"] = 2
        info["file tree"] = _file_tree(files, name, placeholder=True)
    if private:
        info["private"] = 1
    if source is not None:
        info["source"] = source
    if similar:
        info["similar"] = list(similar)
    if groups:
        info["collections"] = groups

    torrent: dict[str, Any] = {"info": info}
    urls = [url for tier in tiers for url in tier]
    if urls:
        torrent["announce"] = urls[0]
    if len(urls) > 1:
        torrent["announce-list"] = tiers
    if comment is not None:
        torrent["comment"] = comment
    if created_by is not None:
        from . import __version__  # noqa: PLC0415 - the package is whole by now

        torrent["created by"] = created_by.replace("{version}", __version__)
    if creation_date is not None:
        torrent["creation date"] = creation_date
    if nodes:
        torrent["nodes"] = [[host, port] for host, port in nodes]
    if seeds:
        torrent["url-list"] = seeds[0] if len(seeds) == 1 else seeds
    if http:
        torrent["httpseeds"] = http
    more_layers: list[int] = []  # the sizes of layers that files of a length counted may add
    if v2:
        # ``piece layers`` is keyed by pieces root, and identical files share one root
        # (one layer), which only hashing finds. Files of different lengths never do:
        # one placeholder per length of more than one piece is the fewest layers the
        # torrent can have, so what this refuses the real torrent is refused for too.
        layers: dict[bytes, Any] = {}
        for entry in data:
            if entry.length > piece_length:
                key = entry.length.to_bytes(32, "big")
                layer = _Blob(32 * -(-entry.length // piece_length))
                if layers.setdefault(key, layer) is not layer:
                    more_layers.append(layer.size)
        torrent["piece layers"] = layers
    # Everything a reader could refuse the torrent for is known now (its size and counts
    # as lower bounds, exact but for files of one length): checked before hashing, which
    # can take hours, rather than by parsing the result.
    _check_limits(files, data, torrent, v1=v1, v2=v2, more_layers=more_layers)

    _log.debug(
        "creating %s torrent %r from %r: %d files, %d bytes in %d pieces of %d bytes, "
        "hashed on %d threads",
        version,
        name,
        root,
        len(files),
        total,
        num_pieces,
        piece_length,
        threads,
    )
    started = time.monotonic()
    try:
        pieces, _ = _hash_files(
            data,
            piece_length=piece_length,
            v1=v1,
            v2=v2,
            threads=threads,
            max_buffered_bytes=max_buffered_bytes,
            progress=progress,
            cancel=cancel,
        )
    except CreateCancelled:
        _log.debug("creating torrent %r cancelled after %.2f s", name, time.monotonic() - started)
        raise

    if v1:
        info["pieces"] = pieces
    if v2:
        info["file tree"] = _file_tree(files, name)
        # Written even when empty (every file fits in a piece), as libtorrent does.
        torrent["piece layers"] = {entry.pieces_root: entry.layer for entry in data if entry.layer}
        # Exactly now: files of one length that differ each have a layer of their own.
        problem = _too_large(_measure(torrent))
        if problem is not None:
            raise CreateError(problem)
    metainfo = Metainfo.from_bytes(encode(torrent))
    _log.debug(
        "created torrent %s (%r) in %.2f s",
        metainfo.info.info_hash,
        name,
        time.monotonic() - started,
    )
    return metainfo
