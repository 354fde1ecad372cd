"""Where a torrent's resume data and fetched metadata live between runs: ``SAVE_DIR/.bip/``.

Up to five files per torrent, named by its info-hash (hex of the v1 hash, else of the v2
hash):

- ``HASH.resume``: bip_disk's resume data (pieces verified, files' sizes and times), rewritten
  atomically (a temporary file renamed over the old one), so a kill at any moment leaves the
  old record or the new one, never half of one;
- ``HASH.torrent``: for a magnet link, the info dictionary fetched from peers, wrapped as a
  .torrent, with the BEP 52 ``piece layers`` once they were fetched too (a v2 torrent), so a
  restart needs no peer to serve the metadata or the layers again;
- ``HASH.peers``: the torrent's best peers and the hosts it banned (libtorrent keeps them in
  its resume data as ``peers``, ``peers6``, ``banned_peers`` and ``banned_peers6``, compact,
  and reloads them as its ``resume_data`` source), so a restart reconnects to the swarm it
  knew without asking a tracker or the DHT first. Its own file: bip_disk's resume data is
  bip_disk's format. Written as the resume data is (unless unchanged), and read with bounds:
  a file that is not ours (too large, not bencoded, wrong types) is ignored, never an error;
- ``HASH.selection``: the files chosen with ``Torrent.set_files`` or
  ``Torrent.set_file_priorities`` (libtorrent keeps its ``file_priority`` in its resume
  data), bencoded ``{"files": [index, ...]}`` (the files selected) or ``{}`` for every file,
  and with ``set_file_priorities`` also ``"priorities": [0..7 per file]`` (which wins; older
  records have none, and older readers still find the files selected in ``files``); written
  only once one of them was called, read with bounds like the peers file (a record that is
  not ours is ignored). Absent: the options' selection;
- ``HASH.state``: the torrent's flags, whether it was paused, whether it super-seeds and
  whether the session's queue manages it, and its queue position (libtorrent's resume data
  ``paused``, ``super_seeding``, ``auto_managed`` and ``queue_position``), bencoded
  ``{"auto_managed": 0 or 1, "paused": 0 or 1, "queue_position": -1 or more,
  "super_seeding": 0 or 1}``; written once a flag was set, and when one changes. Only the
  user's pause is ``paused``: a torrent the queue holds back is not paused. With them, its
  counters over all its runs, libtorrent's resume data keys: ``total_uploaded`` and
  ``total_downloaded`` (payload bytes), ``active_time``, ``finished_time`` and
  ``seeding_time`` (whole seconds), each written when not 0; they change all the time, so
  they are written with a save of the resume data or of the flags, else once per
  ``resume_interval`` seconds when they changed (libtorrent's ``if_counters_changed``),
  and at the torrent's close: a crash loses those of the last interval. Read once, by
  ``Session.add_torrent``, before the torrent is made: the torrent's seeding goals and its
  status's times go on from them.
  Absent: not paused, not super-seeding, not auto-managed, every counter 0. Every key is
  optional, as in libtorrent's resume data: a record without ``super_seeding``,
  ``auto_managed``, ``queue_position`` or a counter (an older one) reads them as off, off,
  -1 and 0; a flag is set by any int but 0 (libtorrent's ``apply_flag``); a key whose value
  is not ours (a flag not an int, a position or a counter out of range) is ignored alone,
  with a DEBUG log, and the others are kept (the torrent writes the whole record again at
  its next save). Read with bounds; a file that is not ours at all (too large, not a
  bencoded dictionary) is ignored with a warning.

Each is read only if it is a regular file, opened without blocking: anything else at its path
(a FIFO, a device, a directory) counts as a file that cannot be read, never waited on.

Each is written to a new temporary file beside it, ``HASH.SUFFIX.RANDOM.tmp``, created for
the write (never one found there: a link planted at its name would be followed, a FIFO
would block), then renamed over it. A temporary left by a crash goes at the torrent's first
save of a later run once it is a minute old (a younger one may be a write under way), and in
any case when the torrent's files go (:meth:`ResumeStore.forget_all`, or a move to another
save directory).

Kept next to the data, as aria2 keeps its ``.aria2`` control files: moving the directory moves
the record with it, and two downloads into different directories never share one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Final

import trio

from bip_bencode import BencodeError, decode, encode
from bip_handshake import (
    CompactError,
    Family,
    PeerAddress,
    encode_compact_peers,
    parse_compact_peers,
)
from bip_metainfo import DEFAULT_MAX_TORRENT_SIZE, Info, InfoHash, Metainfo, MetainfoError

from ._config import RESUME_DIRECTORY

__all__ = [
    "MAX_SAVED_BANNED",
    "MAX_SAVED_PEERS",
    "ResumeStore",
    "SavedPeers",
    "SavedSelection",
    "SavedState",
    "decode_saved_paused",
    "decode_saved_peers",
    "decode_saved_selection",
    "decode_saved_state",
    "encode_saved_paused",
    "encode_saved_peers",
    "encode_saved_selection",
    "encode_saved_state",
    "names_same_torrent",
]

logger = logging.getLogger("bip.client")

MAX_SAVED_PEERS: Final = 200
"""Peers saved per torrent at most (the best: connected, then connected once; libtorrent
saves every connectable peer, up to its list's size): enough to find the swarm again, small
enough to write every few seconds."""
MAX_SAVED_BANNED: Final = 1000
"""Banned hosts saved per torrent at most (the first banned)."""
# A peers file larger than this is not one we wrote (every address of both bounds, both
# families, as 18-byte compact entries, is ~22 KB): not read at all.
_MAX_PEERS_FILE: Final = 64 * 1024

# A selection file larger than this is not one we wrote: a torrent lists 150,000 files at
# most in practice (bip_metainfo reads more, slowly), "i149999e" is 8 bytes each.
# (and "i7e" per file for the priorities).
_MAX_SELECTION_FILE: Final = 4 * 1024 * 1024
# A state file is "d12:auto_managedi1e6:pausedi1e14:queue_positioni9e13:super_seedingi1ee"
# and five counters of 19 digits at most (about 250 bytes): anything much larger is not ours.
_MAX_STATE_FILE: Final = 1024
# A queue position beyond this is not one we wrote (a session does not hold 2**31 torrents).
_MAX_QUEUE_POSITION: Final = 2**31 - 1
# A byte count or a time (seconds) beyond this is not one we wrote (libtorrent's int64).
_MAX_COUNTER: Final = 2**63 - 1
# The counters of HASH.state, libtorrent's resume data keys, as SavedState names them.
_COUNTERS: Final = (
    "total_uploaded",
    "total_downloaded",
    "active_time",
    "finished_time",
    "seeding_time",
)
# bip_disk refuses resume data larger than this (its MAX_RESUME_DATA_SIZE): not read past it.
_MAX_RESUME_FILE: Final = 64 * 1024 * 1024
# A kept .torrent (info dictionary and piece layers) larger than bip_metainfo reads from a file
# is not one we wrote: not read past it.
_MAX_TORRENT_FILE: Final = DEFAULT_MAX_TORRENT_SIZE
# The most of each file read (one byte more tells it is larger): a larger file is not one we
# wrote, and its loader ignores it.
_FILE_LIMITS: Final = {
    "resume": _MAX_RESUME_FILE,
    "torrent": _MAX_TORRENT_FILE,
    "peers": _MAX_PEERS_FILE,
    "selection": _MAX_SELECTION_FILE,
    "state": _MAX_STATE_FILE,
}
_SUFFIXES: Final = tuple(_FILE_LIMITS)
# Opening a FIFO for reading blocks until a writer comes, unless non-blocking (a regular
# file's reads ignore the flag). Neither flag exists everywhere.
_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
# A temporary file is made, never opened as found: O_EXCL fails on anything at its name (a
# link there would be followed, a FIFO would block the open for ever, in a thread no
# cancellation reaches), O_NOFOLLOW says so again where it exists.
_CREATE_FLAGS: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)
# Names drawn for a temporary file before giving up: 32 random bits each (8 hex digits: a
# path on Windows has 260 characters unless long paths are on), so a name is taken only by
# someone who saw it, and a second one drawn is not.
_TEMPORARY_ATTEMPTS: Final = 8
_TEMPORARY_RANDOM_BYTES: Final = 4
_TEMPORARY_SUFFIX: Final = ".tmp"
# A temporary file this old (seconds since it was last written) is one a crash left: a write
# under way (this process's, or another's on the same files) writes, syncs and renames in
# far less. A younger one is left alone.
_STALE_TEMPORARY_AGE: Final = 60.0

Host = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class SavedSelection:
    """The files a torrent was given with ``set_files`` or ``set_file_priorities``
    (``HASH.selection``).

    Attributes:
        files: the indices of the selected files; ``None``: every file.
        priorities: one priority (0..7) per file, when they were set one by one (then they
            win over ``files``); ``None``: ``files`` says it all (4 selected, 0 not).
    """

    files: frozenset[int] | None
    priorities: tuple[int, ...] | None = None


def encode_saved_selection(
    files: frozenset[int] | None, priorities: Sequence[int] | None = None
) -> bytes:
    """The bencoded ``HASH.selection`` file: ``{"files": [sorted indices]}``, or ``{}`` for
    every file; with ``priorities`` (one per file), ``"priorities"`` too, and ``files`` the
    indices of those above 0 (what a reader without priorities selects)."""
    if priorities is not None:
        selected = [index for index, priority in enumerate(priorities) if priority]
        return encode({b"files": selected, b"priorities": list(priorities)})
    return encode({} if files is None else {b"files": sorted(files)})


def decode_saved_selection(data: bytes) -> SavedSelection | None:
    """Read a ``HASH.selection`` file; ``None`` for one that is not ours (too large, not a
    bencoded dictionary, ``files`` not a list of non-negative ints, ``priorities`` not a
    list of ints in 0..7), never an error. Whether the indices and the number of priorities
    fit the torrent is for the torrent to check."""
    if len(data) > _MAX_SELECTION_FILE:
        return None
    try:
        document = decode(data)
    except BencodeError:
        return None
    if not isinstance(document, dict):
        return None
    listed = document.get(b"priorities")
    priorities: tuple[int, ...] | None = None
    if listed is not None:
        if not isinstance(listed, list):
            return None
        priorities = tuple(value for value in listed if type(value) is int and 0 <= value <= 7)
        if len(priorities) != len(listed):
            return None
    files = document.get(b"files")
    if files is None:
        return SavedSelection(None, priorities)
    if not isinstance(files, list):
        return None
    indices = [index for index in files if type(index) is int and index >= 0]
    if len(indices) != len(files):
        return None
    return SavedSelection(frozenset(indices), priorities)


@dataclass(frozen=True, slots=True)
class SavedState:
    """A torrent's flags as ``HASH.state`` keeps them, and its counters.

    Attributes:
        paused: the torrent was paused (``Torrent.pause``; never by the queue).
        super_seeding: the torrent super-seeds while it seeds (``Torrent.set_super_seeding``).
        auto_managed: the session's queue starts and stops it (``Torrent.set_auto_managed``).
        queue_position: its place in the session's queue (0 first), ``-1`` for none (a
            seed).
        ignored: the keys of the record read whose values were not ours (the default was
            taken for each instead); never written.
        total_uploaded: payload bytes sent over all its runs (libtorrent's resume data
            keys of the same names, these and the next four; 0 when unknown).
        total_downloaded: payload bytes received over all its runs.
        active_time: seconds it ran out of any hold (its checks included), all its runs.
        finished_time: seconds of those with every selected piece verified.
        seeding_time: seconds of those with every piece verified (a seed).

    The counters are not compared: two records of the same flags are equal (the torrent
    compares :meth:`counters` itself, when it decides whether to write).
    """

    paused: bool = False
    super_seeding: bool = False
    auto_managed: bool = False
    queue_position: int = -1
    ignored: frozenset[str] = frozenset()
    total_uploaded: int = field(default=0, compare=False)
    total_downloaded: int = field(default=0, compare=False)
    active_time: int = field(default=0, compare=False)
    finished_time: int = field(default=0, compare=False)
    seeding_time: int = field(default=0, compare=False)

    def counters(self) -> tuple[int, int, int, int, int]:
        """``(total_uploaded, total_downloaded, active_time, finished_time,
        seeding_time)``."""
        return (
            self.total_uploaded,
            self.total_downloaded,
            self.active_time,
            self.finished_time,
            self.seeding_time,
        )


def encode_saved_paused(paused: bool) -> bytes:
    """The bencoded ``HASH.state`` file of the first bip versions to write one, which knew
    only the pause: ``{"paused": 1}`` or ``{"paused": 0}`` (an older record, as
    :func:`decode_saved_state` still reads it)."""
    return encode({b"paused": int(paused)})


def encode_saved_state(state: SavedState) -> bytes:
    """The bencoded ``HASH.state`` file: ``{"auto_managed": 0 or 1, "paused": 0 or 1,
    "queue_position": -1 or more, "super_seeding": 0 or 1}`` (a reader that knows only
    ``paused`` still finds it), and each counter of the state that is not 0
    (``total_uploaded``, ``total_downloaded``, ``active_time``, ``finished_time``,
    ``seeding_time``; absent reads as 0), within 0..2**63 - 1."""
    document: dict[bytes, int] = {
        b"auto_managed": int(state.auto_managed),
        b"paused": int(state.paused),
        b"queue_position": max(-1, state.queue_position),
        b"super_seeding": int(state.super_seeding),
    }
    for name in _COUNTERS:
        value = min(max(0, getattr(state, name)), _MAX_COUNTER)
        if value:
            document[name.encode()] = value
    return encode(document)


def _state_document(data: bytes) -> Mapping[bytes, object] | None:
    """A ``HASH.state`` file's dictionary; ``None`` for a file that is not ours (too large,
    not a bencoded dictionary)."""
    if len(data) > _MAX_STATE_FILE:
        return None
    try:
        document = decode(data)
    except BencodeError:
        return None
    return document if isinstance(document, dict) else None


def decode_saved_paused(data: bytes) -> bool | None:
    """What a reader that knows only ``paused`` finds in a ``HASH.state`` file (the rule of
    the first bip versions to write one; the client reads :func:`decode_saved_state`):
    whether the torrent was paused; ``None`` for a file that is not ours (too large, not a
    bencoded dictionary, ``paused`` missing or not 0 or 1), never an error. Other keys are
    ignored."""
    document = _state_document(data)
    flag = None if document is None else document.get(b"paused")
    return bool(flag) if type(flag) is int and flag in (0, 1) else None


def decode_saved_state(data: bytes) -> SavedState | None:
    """Read a ``HASH.state`` file; ``None`` for a file that is not ours (too large, not a
    bencoded dictionary), never an error.

    One rule for every key, as libtorrent's resume data reader has for its optional fields:
    a key that is missing takes its default (a record written before ``super_seeding``,
    ``auto_managed`` or ``queue_position`` were saved: off, off and -1), and a key whose
    value is not ours (a flag not an int, a queue position not an int from -1 to
    2**31 - 1, a counter not an int from 0 to 2**63 - 1) is ignored alone: its default is
    taken, its name is in
    :attr:`SavedState.ignored`, and the other keys are kept. A flag is set by any int but 0,
    as libtorrent's ``apply_flag`` reads one (we write 0 or 1). Keys it does not know are
    ignored silently (a later version may add some)."""
    document = _state_document(data)
    if document is None:
        return None
    ignored: set[str] = set()

    def flag(key: str) -> bool:
        value = document.get(key.encode(), 0)
        if type(value) is not int:
            ignored.add(key)
            return False
        return value != 0  # libtorrent's apply_flag: any int but 0 sets it

    paused = flag("paused")
    super_seeding = flag("super_seeding")
    auto_managed = flag("auto_managed")
    position = document.get(b"queue_position", -1)
    if type(position) is not int or not -1 <= position <= _MAX_QUEUE_POSITION:
        ignored.add("queue_position")
        position = -1
    counters: dict[str, int] = {}
    for name in _COUNTERS:
        value = document.get(name.encode(), 0)
        if type(value) is not int or not 0 <= value <= _MAX_COUNTER:
            ignored.add(name)
            value = 0
        counters[name] = value
    return SavedState(paused, super_seeding, auto_managed, position, frozenset(ignored), **counters)


@dataclass(frozen=True, slots=True)
class SavedPeers:
    """What a torrent remembers of its swarm between runs (``HASH.peers``).

    Attributes:
        peers: addresses to dial at start, best first (at most :data:`MAX_SAVED_PEERS`).
        banned: hosts banned for sending bad data (at most :data:`MAX_SAVED_BANNED`).
    """

    peers: tuple[PeerAddress, ...] = ()
    banned: tuple[Host, ...] = ()


def encode_saved_peers(peers: Iterable[PeerAddress], banned: Iterable[Host]) -> bytes:
    """The bencoded ``HASH.peers`` file: ``peers`` / ``peers6`` compact (6 / 18 bytes each),
    ``banned_peers`` / ``banned_peers6`` compact with port 0; each bounded as
    :class:`SavedPeers` says (the first ones kept)."""
    kept = [address.normalized() for address in peers][:MAX_SAVED_PEERS]
    hosts = [address for host in banned if (address := _host_entry(host)) is not None]
    hosts = hosts[:MAX_SAVED_BANNED]
    return encode(
        {
            b"banned_peers": encode_compact_peers([a for a in hosts if a.family == 4], 4),
            b"banned_peers6": encode_compact_peers([a for a in hosts if a.family == 6], 6),
            b"peers": encode_compact_peers([a for a in kept if a.family == 4], 4),
            b"peers6": encode_compact_peers([a for a in kept if a.family == 6], 6),
        }
    )


def _host_entry(host: Host) -> PeerAddress | None:
    """``host`` as a compact entry with port 0 (a scoped IPv6 host has none: left out)."""
    try:
        return PeerAddress(host, 0).normalized()
    except CompactError:
        return None


def decode_saved_peers(data: bytes) -> SavedPeers:
    """Read a ``HASH.peers`` file; what cannot be read is left out, never an error.

    A file that is not a bencoded dictionary, or larger than any we write, gives nothing; a
    key missing, of the wrong type or of a malformed length gives nothing for that key;
    unconnectable addresses are dropped, and each list is cut at its bound.
    """
    if len(data) > _MAX_PEERS_FILE:
        return SavedPeers()
    try:
        document = decode(data)
    except BencodeError:
        return SavedPeers()
    if not isinstance(document, dict):
        return SavedPeers()

    def compact(key: bytes, family: Family, limit: int) -> list[PeerAddress]:
        value = document.get(key)
        if not isinstance(value, bytes):
            return []
        try:
            return parse_compact_peers(value, family, limit=limit)
        except CompactError:
            return []

    peers = [
        address.normalized()
        for address in (
            *compact(b"peers", 4, MAX_SAVED_PEERS),
            *compact(b"peers6", 6, MAX_SAVED_PEERS),
        )
        if address.is_connectable
    ]
    banned = [
        address.normalized().host
        for address in (
            *compact(b"banned_peers", 4, MAX_SAVED_BANNED),
            *compact(b"banned_peers6", 6, MAX_SAVED_BANNED),
        )
    ]
    return SavedPeers(
        tuple(dict.fromkeys(peers))[:MAX_SAVED_PEERS],
        tuple(dict.fromkeys(banned))[:MAX_SAVED_BANNED],
    )


def names_same_torrent(partial: InfoHash, full: InfoHash) -> bool:
    """Whether every hash ``partial`` has (a magnet's) equals the one ``full`` has (metadata's)."""
    return (partial.v1 is None or partial.v1 == full.v1) and (
        partial.v2 is None or partial.v2 == full.v2
    )


def _hash_name(info_hash: InfoHash) -> str:
    digest = info_hash.v1 if info_hash.v1 is not None else info_hash.v2
    assert digest is not None  # an InfoHash has one or both
    return digest.hex()


def _read_regular(path: Path, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``: all of them, or at most ``limit + 1`` (one byte
    past the limit tells a decoder the file is too long). Blocking: run it in a thread.

    Opened without blocking and looked at before anything is read: a FIFO (or a device, or a
    directory) where a resume file goes is refused at once. Read, a FIFO would wait for a
    writer forever, in a thread no cancellation reaches, and the torrent's start with it.

    Raises:
        OSError: the file cannot be opened or read, or is not a regular file.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        file = os.fdopen(fd, "rb")  # owns the descriptor from now on
    except BaseException:
        os.close(fd)
        raise
    with file:
        return file.read() if limit is None else file.read(limit + 1)


async def _read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path``, a regular file (:func:`_read_regular`), read
    in a thread.

    Raises:
        OSError: the file cannot be read, or is not a regular file.
    """
    return await trio.to_thread.run_sync(_read_regular, path, limit)


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a new temporary file beside it
    (:func:`_create_temporary`), synced, renamed over it, then its directory synced (as
    bip_disk's NativeFileSystem syncs a file and its directory). A kill or a power cut at
    any moment leaves the old file or the new one: without the first sync the rename can
    reach the disk before the bytes do (an empty or half file under the new name). A write
    that fails removes its temporary file. Blocking: run it in a thread.

    Raises:
        OSError: the file could not be written, synced or renamed.
    """
    _make_directories(path.parent)
    fd, temporary = _create_temporary(path)
    try:
        try:
            file = os.fdopen(fd, "wb")  # owns the descriptor from now on
        except BaseException:
            os.close(fd)
            raise
        with file:
            file.write(data)
            file.flush()
            _fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):  # already gone: nothing left behind
            os.unlink(temporary)
        raise
    _sync_directory(path.parent)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new empty file beside ``path``, ``NAME.RANDOM.tmp``, open for writing, and its path.
    Created here (``O_EXCL``), never opened as found: whatever someone put at a name drawn
    (a link, a FIFO) is left alone and another name is drawn. Mode 0o666 less the umask, as
    :func:`open` makes a file.

    Raises:
        OSError: no file could be created (every name drawn was taken: ``EEXIST``).
    """
    for _ in range(_TEMPORARY_ATTEMPTS):
        name = f"{path.name}.{secrets.token_hex(_TEMPORARY_RANDOM_BYTES)}{_TEMPORARY_SUFFIX}"
        temporary = path.with_name(name)
        try:
            return os.open(temporary, _CREATE_FLAGS, 0o666), temporary
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "every temporary name drawn was taken", str(path))


def _temporaries_of(directory: Path, names: Iterable[str], *, owned: bool) -> list[Path]:
    """The temporary copies of the files ``names`` in ``directory``, left by writes cut short
    (a crash, a power cut) or under way. Blocking: a directory listed.

    Only names bip makes: ``NAME.RANDOM.tmp``, RANDOM 8 lowercase hex digits (16 in older
    versions), and the fixed ``NAME.tmp`` of older versions only in a directory bip
    ``owned`` (a save directory's ``.bip``, as the caller knows: not its name alone). A file
    beside ``bip dht --state FILE`` is the user's (``FILE.old.tmp``, ``FILE.tmp``, even in a
    folder named ``.bip``): never taken for one, as its deletion would lose the user's data.
    """
    alternatives = "|".join(re.escape(name) for name in names)
    if not alternatives:
        return []
    random = r"\.(?:[0-9a-f]{8}|[0-9a-f]{16})"
    if owned:
        random = f"(?:{random})?"
    pattern = re.compile(f"(?:{alternatives}){random}{re.escape(_TEMPORARY_SUFFIX)}")
    try:
        listed = os.listdir(directory)
    except OSError:  # no directory (nothing saved yet), or not one we can list
        return []
    return [directory / name for name in listed if pattern.fullmatch(name)]


def _remove_stale_temporaries(directory: Path, names: Iterable[str], *, owned: bool) -> None:
    """Delete the temporary copies of the files ``names`` in ``directory``
    (:func:`_temporaries_of`, ``owned`` as it takes it) last written a minute ago or more:
    crashes left them, and
    each crash leaves a new one. A younger one may be a write under way (another process
    saving the same files): left alone, as is what cannot be deleted (logged at DEBUG). A
    link at such a name is deleted, never what it points to. Blocking: a directory listed."""
    now = time.time()
    for temporary in _temporaries_of(directory, names, owned=owned):
        try:
            if now - temporary.lstat().st_mtime < _STALE_TEMPORARY_AGE:
                continue
            temporary.unlink()
        except OSError as error:  # gone meanwhile, a directory, not ours to delete
            logger.debug("cannot delete %s: %s", temporary, error)
            continue
        logger.debug("%s: left by a write cut short; deleted", temporary)


def _same_file(first: Path, second: Path) -> bool:
    """Whether ``first`` and ``second`` name one file or directory (through a link, in
    another letter case on a disk that ignores case, on a bind mount); False if either
    cannot be looked at (missing). Blocking."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _make_directories(directory: Path) -> None:
    """Create ``directory`` and its missing parents, syncing the parent of each one created:
    a new directory's entry is in its parent, and a power cut could otherwise lose the
    directory with the synced files inside it (the first save into ``.bip``)."""
    missing: list[Path] = []
    ancestor = directory
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _sync_directory(created.parent)


def _fsync(fd: int) -> None:
    """``fsync``, or on macOS ``F_FULLFSYNC`` (its fsync leaves the data in the disk's cache)."""
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        import fcntl  # noqa: PLC0415 - macOS only; the module is missing on Windows

        with contextlib.suppress(OSError):  # not supported by this filesystem: plain fsync
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
    os.fsync(fd)


def _sync_directory(directory: Path) -> None:
    """Sync a directory's entries (a rename in it), where the platform can: Windows cannot
    open a directory (its renames are durable once its call returns), and some filesystems
    refuse to sync one (the file itself was synced)."""
    if os.name == "nt":  # pragma: no cover - Windows only
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        _fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS):
            raise
    finally:
        os.close(fd)


class ResumeStore:
    """The resume files of one torrent under ``save_dir/.bip/``."""

    def __init__(self, save_dir: Path, info_hash: InfoHash) -> None:
        """The store of ``info_hash``'s files in ``save_dir``."""
        self.directory = save_dir / RESUME_DIRECTORY
        self._info_hash = info_hash
        self.resume_path = self._path("resume")
        self.torrent_path = self._path("torrent")
        self.peers_path = self._path("peers")
        self.selection_path = self._path("selection")
        self.state_path = self._path("state")
        # What save_peers last wrote: the peers are saved with every resume save (every few
        # seconds) but mostly unchanged, and an identical file need not be written again.
        self._peers_written: bytes | None = None
        # Whether the temporaries that crashes left here were looked for (at the first write:
        # once, as a directory listed at every save would cost a .bip of many torrents).
        self._swept = False

    async def load_resume(self) -> bytes | None:
        """The last resume data saved, or ``None`` if there is none or it cannot be read."""
        try:
            return await _read_bounded(self.resume_path, _MAX_RESUME_FILE)
        except OSError:
            return None

    async def save_resume(self, data: bytes) -> None:
        """Replace the resume data (atomically).

        Raises:
            OSError: the file could not be written.
        """
        await self._write(self.resume_path, data)

    async def forget_resume(self) -> None:
        """Delete the resume data (it was refused: of another torrent or malformed)."""
        with contextlib.suppress(OSError):
            await trio.to_thread.run_sync(self.resume_path.unlink)

    async def load_peers(self) -> SavedPeers:
        """The peers and banned hosts saved by :meth:`save_peers`; none when there is no
        file, it cannot be read, or it is not ours (see :func:`decode_saved_peers`)."""

        try:
            data = await _read_bounded(self.peers_path, _MAX_PEERS_FILE)
        except OSError:
            return SavedPeers()
        saved = decode_saved_peers(data)
        if not saved.peers and not saved.banned and data:
            logger.debug("%s: no peers in it", self.peers_path)
        return saved

    async def save_peers(self, peers: Iterable[PeerAddress], banned: Iterable[Host]) -> None:
        """Replace the saved peers and banned hosts (atomically; bounded as
        :func:`encode_saved_peers` says). Nothing is written when the file would be the same
        as the one this store wrote last.

        Raises:
            OSError: the file could not be written.
        """
        data = encode_saved_peers(peers, banned)
        if data == self._peers_written:
            return
        # Forgotten first: a write that fails (or is cancelled) may have left anything.
        self._peers_written = None
        await self._write(self.peers_path, data)
        self._peers_written = data

    async def load_info(self) -> Info | None:
        """The info dictionary saved by :meth:`save_info`, if it is there and matches."""
        saved = await self.load_metadata()
        return None if saved is None else saved[0]

    async def load_metadata(self) -> tuple[Info, dict[bytes, bytes]] | None:
        """The info dictionary and BEP 52 piece layers (by pieces root) saved by
        :meth:`save_info`, if the file is there, no larger than bip_metainfo's
        ``DEFAULT_MAX_TORRENT_SIZE`` (not read past it), and names this torrent; the layers
        are ``{}`` if none were saved."""
        try:
            data = await _read_bounded(self.torrent_path, _MAX_TORRENT_FILE)
        except OSError:
            return None
        if len(data) > _MAX_TORRENT_FILE:
            logger.debug("%s: larger than %d bytes; ignored", self.torrent_path, _MAX_TORRENT_FILE)
            return None
        # The file is ours, but a disk may corrupt it: it must parse, hash right, and every
        # layer must hash to its file's root (Metainfo checks them), else it is fetched again.
        # Parsed off the event loop: 100,000 files take seconds, and the session's other
        # torrents go on meanwhile (as _fetch_info parses a fetched dictionary).
        try:
            torrent = await trio.to_thread.run_sync(Metainfo.from_bytes, data)
        except MetainfoError:
            return None
        info = torrent.info
        if not names_same_torrent(self._info_hash, info.info_hash):
            return None
        return info, dict(torrent.piece_layers)

    async def save_info(
        self, info: Info, piece_layers: Mapping[bytes, bytes] | None = None
    ) -> None:
        """Keep a fetched info dictionary as a minimal .torrent (``{"info": ...}``), with its
        BEP 52 ``piece layers`` (keyed by pieces root) when given.

        Raises:
            OSError: the file could not be written.
        """
        # The keys "info" < "piece layers" are in order, so this is canonical bencoding, and
        # the info's original bytes keep the info-hash.
        data = b"d4:info" + info.to_bytes()
        if piece_layers:
            data += encode(b"piece layers") + encode(dict(piece_layers))
        data += b"e"
        await self._write(self.torrent_path, data)

    async def load_selection(self) -> SavedSelection | None:
        """The selection saved by :meth:`save_selection`; ``None`` when there is no file, it
        cannot be read, or it is not ours (:func:`decode_saved_selection`)."""

        try:
            data = await _read_bounded(self.selection_path, _MAX_SELECTION_FILE)
        except OSError:
            return None
        saved = decode_saved_selection(data)
        if saved is None:
            logger.debug("%s: not a file selection; ignored", self.selection_path)
        return saved

    async def save_selection(
        self, files: frozenset[int] | None, priorities: Sequence[int] | None = None
    ) -> None:
        """Replace the saved file selection (atomically; ``None``: every file), or the
        priorities of the files (one per file, then ``files`` is not looked at).

        Raises:
            OSError: the file could not be written.
        """
        data = encode_saved_selection(files, priorities)
        await self._write(self.selection_path, data)

    async def load_state(self) -> SavedState | None:
        """The flags :meth:`save_state` last wrote: :class:`SavedState` ``()`` (none set)
        when there is no file; ``None`` (and a warning) when it cannot be read or is not
        ours at all; a key whose value is not ours is ignored alone, with a DEBUG log
        (:func:`decode_saved_state`)."""
        try:
            data = await _read_bounded(self.state_path, _MAX_STATE_FILE)
        except FileNotFoundError:
            return SavedState()
        except OSError as error:
            logger.warning("%s: cannot read it, ignored: %s", self.state_path, error)
            return None
        state = decode_saved_state(data)
        if state is None:
            logger.warning("%s: not a torrent state; ignored", self.state_path)
        elif state.ignored:
            # As libtorrent's resume data reader: a bad optional field costs only itself.
            logger.debug(
                "%s: %s not ours; ignored (the default taken)",
                self.state_path,
                ", ".join(sorted(state.ignored)),
            )
        return state

    async def save_state(self, state: SavedState) -> None:
        """Replace the saved flags (atomically).

        Raises:
            OSError: the file could not be written.
        """
        data = encode_saved_state(state)
        await self._write(self.state_path, data)

    async def _write(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` (:func:`_write_atomically`, in a thread). The store's
        first write deletes first the torrent's temporaries that crashes left here, a minute
        old at least (:func:`_remove_stale_temporaries`): a torrent's writes are one at a
        time (its save lock), and a younger temporary may be another's write under way.

        Raises:
            OSError: the file could not be written.
        """
        if not self._swept:
            names = [self._path(suffix).name for suffix in _SUFFIXES]
            await trio.to_thread.run_sync(
                functools.partial(_remove_stale_temporaries, self.directory, names, owned=True)
            )
            self._swept = True
        await trio.to_thread.run_sync(_write_atomically, path, data)

    def _paths(self) -> list[Path]:
        """Every file of the torrent's here (``_SUFFIXES``), and the temporary copies that
        writes cut short left (blocking: a directory listed)."""
        return [self._path(suffix) for suffix in _SUFFIXES] + self._temporaries()

    def _temporaries(self) -> list[Path]:
        """The temporary copies of the torrent's files here (``HASH.SUFFIX.RANDOM.tmp``, and
        ``HASH.SUFFIX.tmp`` of older versions), left by writes cut short (a crash, a power
        cut). Blocking: a directory listed."""
        names = [self._path(suffix).name for suffix in _SUFFIXES]
        return _temporaries_of(self.directory, names, owned=True)

    def _path(self, suffix: str) -> Path:
        return self.directory / f"{_hash_name(self._info_hash)}.{suffix}"

    async def forget_all(self) -> None:
        """Delete every file of the torrent's (the torrent left its session for good), and
        the ``.bip`` directory if nothing else is left in it. What cannot be deleted is
        logged, never raised."""

        def delete() -> None:
            for path in self._paths():
                try:
                    path.unlink(missing_ok=True)
                except OSError as error:
                    logger.warning("cannot delete %s: %s", path, error)
            with contextlib.suppress(OSError):  # not empty (another torrent's), or gone
                self.directory.rmdir()

        await trio.to_thread.run_sync(delete)

    def moved_to(self, save_dir: Path) -> ResumeStore:
        """The store of the same torrent under another save directory (nothing is moved:
        :meth:`take_files_of`)."""
        return ResumeStore(save_dir, self._info_hash)

    async def take_files_of(self, other: ResumeStore) -> None:
        """Move ``other``'s files (the same torrent, another directory) here, replacing
        ours; a file ``other`` does not have is not touched. One larger than its loader
        reads is not one we wrote: it is left where it is (with a warning), as one ``other``
        does not have, never read whole. The temporary copies that writes cut short left
        there are deleted. ``other``'s directory may be this one under another name (a link
        to it, another letter case on a disk that ignores case): nothing is done then, and a
        file that is already the one here is left as it is (never written over itself, then
        deleted as the source).

        Raises:
            OSError: a file could not be copied (those moved before stay moved; the rest
                stay where they were).
        """
        if other.directory == self.directory:
            return

        def move() -> None:
            if _same_file(other.directory, self.directory):
                return
            for suffix, limit in _FILE_LIMITS.items():
                source = other._path(suffix)
                target = self._path(suffix)
                if _same_file(source, target):  # a link, a hard link: already here
                    continue
                try:
                    data = _read_regular(source, limit)
                except FileNotFoundError:
                    continue
                if len(data) > limit:
                    # Not one we wrote (its loader ignores it), and anyone who could write
                    # there could make it any size: not read whole to be copied.
                    logger.warning("%s: larger than %d bytes; not moved", source, limit)
                    continue
                _write_atomically(target, data)  # across file systems too (no rename)
                source.unlink()
            for temporary in other._temporaries():  # writes cut short there: never finished
                with contextlib.suppress(OSError):
                    temporary.unlink()
            with contextlib.suppress(OSError):
                other.directory.rmdir()

        await trio.to_thread.run_sync(move)
        # Not what this store wrote: the next peers save writes its file again.
        self._peers_written = None
