"""Checking existing data: which pieces to trust, which to hash, and hashing them.

A check runs in two steps, both synchronous (the manager runs them on worker
threads):

1. :func:`plan_check` stats every stored file once and sorts the pieces into
   *trusted* (listed in resume data and touching only files that are unchanged
   since), *to hash* (every piece whose files are all there and long enough, and
   that resume data does not settle), and *missing* (a file is absent or too short
   for it: it cannot be good, so it is never read). A piece made only of pad bytes
   (BEP 47) touches no stored file: its bytes are zeros fixed by the torrent, so
   unless resume data lists it, it is *pad only*, settled by
   :func:`check_pad_pieces` without reading or hashing it (else nothing would ever
   settle it). The work is done per file with ``bytearray`` slices, not per piece,
   so a torrent of two million pieces is planned in milliseconds.
2. :func:`check_pieces` reads and verifies a batch of pieces. A piece whose file
   vanished or shrank since the plan is simply not good; any other storage failure
   (permission denied, an I/O error) is raised, and stops the check. A piece larger
   than 4 MiB is read and hashed 4 MiB at a time, so a hashing thread never holds
   more (a whole 256 MiB piece per thread would ignore the manager's memory bound).
   :func:`check_pad_pieces` judges the pad-only pieces: each one's v1 hash against
   the SHA-1 of zeros of its size, computed once per size (a piece's or the last
   piece's), so a pad of a hundred gigabytes costs two hashes of one piece, not a
   hundred gigabytes of hashing.

Resume data trusts a file whose size and modification time are unchanged; a
file whose mtime was too close to the moment the data was made (*racy*, see
:mod:`._resume`) keeps its listed pieces, and its unlisted pieces are hashed again.
A file whose backend keeps no modification time (``mtime_ns`` 0) is never
trusted: all its pieces are hashed again on every start.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import StorageError
from ._filesystem import FileStat, FileSystem
from ._hashing import PieceVerifier
from ._layout import StorageLayout, StoredFile, read_piece, read_span_data
from ._resume import ResumeData, have_flags

__all__ = [
    "CheckPlan",
    "check_pad_pieces",
    "check_pieces",
    "pieces_cut_short",
    "plan_check",
    "stat_files",
]

_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, None})  # the file vanished or shrank
_ZEROS_CHUNK = 1 << 20  # zeros are hashed from a buffer of at most this, whatever the piece size
_READ_CHUNK = 4 << 20  # bytes of a piece read and hashed at a time (whole 16 KiB blocks)


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """What a check must do.

    Attributes:
        trusted: pieces resume data vouches for, good without reading.
        to_hash: pieces to read and hash, in order (never a piece of pad bytes only).
        pad_only: pieces of pad bytes only that resume data does not vouch for, in
            order: :func:`check_pad_pieces` settles them, with no read.
        stats: each file's stat now (by index of ``Info.files``; None when missing,
            for pad files, links and zero-length files).
        changed_files: files that differ from the resume data (all stored files
            without resume data).
    """

    trusted: frozenset[int]
    to_hash: tuple[int, ...]
    pad_only: tuple[int, ...]
    stats: tuple[FileStat | None, ...]
    changed_files: frozenset[int]


def stat_files(fs: FileSystem, layout: StorageLayout) -> tuple[FileStat | None, ...]:
    """Stat every stored file of ``layout`` (None for missing files, pads, links and
    zero-length files).

    A zero-length file holds no piece, so it is not stat'ed at all: whatever is at its
    path (a directory the user made there, a file it cannot stat) never stops the
    torrent, as libtorrent's check passes over it.

    Raises:
        StorageError: the FileSystem failed (other than the file being missing).
    """
    return tuple(
        fs.stat(file.path) if file.is_stored and file.length else None for file in layout.files
    )


def pieces_cut_short(layout: StorageLayout, file: StoredFile, size: int) -> range:
    """The pieces of ``file`` that cannot be good while it holds only ``size`` bytes.

    Those from the one holding the file's first missing byte on; none when the
    file is whole.
    """
    pieces = layout.file_pieces(file.index)
    if size >= file.length:
        return range(pieces.stop, pieces.stop)
    first_missing = (file.offset + size) // layout.piece_length
    return range(max(pieces.start, first_missing), pieces.stop)


def plan_check(
    fs: FileSystem,
    layout: StorageLayout,
    resume: ResumeData | None,
) -> CheckPlan:
    """Sort the torrent's pieces into trusted, to hash and missing (see the module doc).

    ``resume`` must already have been checked against the torrent
    (:meth:`ResumeData.check_torrent`).

    Raises:
        StorageError: a file could not be stat'ed.
    """
    num_pieces = layout.num_pieces
    stats = stat_files(fs, layout)
    possible = bytearray(b"\x01") * num_pieces
    changed = bytearray(num_pieces)  # touches a file that changed since the resume data
    racy = bytearray(num_pieces)  # touches a file that may have changed unseen
    # Pieces holding bytes of some stored file; the others are pad bytes only.
    stored = bytearray(num_pieces)
    changed_files = set()
    for file in layout.stored_files:
        if file.length == 0:
            continue
        pieces = layout.file_pieces(file.index)
        stored[pieces.start : pieces.stop] = b"\x01" * len(pieces)
        stat = stats[file.index]
        size = 0 if stat is None else stat.size
        cut = pieces_cut_short(layout, file, size)
        possible[cut.start : cut.stop] = bytes(len(cut))
        if resume is None or resume.files[file.index] != stat or _mtime_unknown(stat):
            changed_files.add(file.index)
            changed[pieces.start : pieces.stop] = b"\x01" * len(pieces)
        elif resume.is_racy(file.index):
            racy[pieces.start : pieces.stop] = b"\x01" * len(pieces)
    trusted = set()
    to_hash = []
    pad_only = []
    # One byte per piece: the loop below indexes it in C (see have_flags).
    have = have_flags(resume) if resume is not None else bytes(num_pieces)
    for piece in range(num_pieces):
        if not possible[piece]:
            continue
        if not stored[piece]:
            # Pad bytes only: nothing on disk can change them, so resume data that had
            # the piece still holds. Without it the piece is not read nor hashed (a
            # pad may span any number of pieces): check_pad_pieces compares its hash
            # with that of zeros, which also tells a torrent whose hash is not of zeros.
            if have[piece]:
                trusted.add(piece)
            else:
                pad_only.append(piece)
        elif changed[piece]:
            to_hash.append(piece)
        elif have[piece]:
            trusted.add(piece)
        elif racy[piece]:
            to_hash.append(piece)
        # Otherwise: unchanged files, and the piece was not had when the data was made.
    return CheckPlan(
        frozenset(trusted), tuple(to_hash), tuple(pad_only), stats, frozenset(changed_files)
    )


def _mtime_unknown(stat: FileStat | None) -> bool:
    """Whether the backend keeps no modification time for the file (``mtime_ns`` 0).

    Then equal sizes say nothing: the file may have been rewritten in place any
    number of times since the resume data was made, so nothing of it is trusted.
    """
    return stat is not None and stat.mtime_ns == 0


def check_pieces(
    fs: FileSystem,
    layout: StorageLayout,
    verifier: PieceVerifier,
    pieces: Sequence[int],
    stop: list[bool] | None = None,
) -> list[bool]:
    """Read and verify each of ``pieces``; the result says which are good.

    A piece whose file is missing or shorter than the torrent says is not good.
    ``stop`` is a one-item list the caller sets to ``[True]`` to end the batch
    early (the remaining pieces are reported not good).

    Raises:
        StorageError: the FileSystem failed for another reason (``EACCES``,
            ``EIO``, ...): the check cannot go on.
    """
    results = []
    for piece in pieces:
        if stop is not None and stop[0]:
            results.append(False)
            continue
        try:
            good = _check_piece(fs, layout, verifier, piece)
        except StorageError as error:
            if error.errno in _GONE_ERRNOS:
                results.append(False)
                continue
            raise
        results.append(good)
    return results


def _check_piece(
    fs: FileSystem, layout: StorageLayout, verifier: PieceVerifier, piece: int
) -> bool:
    """Read and verify one piece, at most ``_READ_CHUNK`` bytes of it held at a time."""
    size = layout.piece_size(piece)
    if size <= _READ_CHUNK:
        return verifier.verify(piece, read_piece(fs, layout, piece))
    hasher = verifier.hasher(piece)
    for begin in range(0, size, _READ_CHUNK):
        hasher.update(read_span_data(fs, layout, piece, begin, min(_READ_CHUNK, size - begin)))
    return hasher.verify()


def check_pad_pieces(verifier: PieceVerifier, pieces: Sequence[int]) -> list[bool]:
    """Judge each of ``pieces``, made only of pad bytes (zeros); the result says which are good.

    A piece is good when its v1 hash is the SHA-1 of zeros of its size. That hash is
    computed once per distinct size (at most two: a whole piece's and the last
    piece's), so the cost does not grow with the number of pieces. A torrent
    checked without v1 hashes has no hash for such a piece (v2 file trees hold no
    pads): it is not good, as :meth:`PieceVerifier.verify` says.

    Raises:
        IndexError: one of ``pieces`` is not a piece of the torrent.
    """
    info = verifier.info
    zeros_hash: dict[int, bytes] = {}
    results = []
    for piece in pieces:
        size = verifier.piece_size(piece)
        expected = zeros_hash.get(size)
        if expected is None:
            expected = zeros_hash[size] = _zeros_sha1(size)
        results.append(verifier.checks_v1 and info.piece_hash(piece) == expected)
    return results


def _zeros_sha1(size: int) -> bytes:
    """The SHA-1 of ``size`` zero bytes, hashed from a buffer of at most ``_ZEROS_CHUNK``."""
    zeros = memoryview(bytes(min(size, _ZEROS_CHUNK)))
    digest = hashlib.sha1()
    left = size
    while left > 0:
        step = min(left, len(zeros))
        digest.update(zeros[:step])
        left -= step
    return digest.digest()
