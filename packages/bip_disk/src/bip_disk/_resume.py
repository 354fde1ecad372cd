"""Fast resume data: which pieces were verified, and what the files looked like then.

A restart with resume data skips hashing what has not changed. The data is a
bencoded dictionary:

================  ===========================================================
``format``        ``b"bip-disk resume"``
``version``       1
``info-hash``     the v1 info-hash (20 bytes), when the torrent has one
``info-hash2``    the v2 info-hash (32 bytes), when the torrent has one
``pieces``        the number of pieces
``have``          a BEP 3 bitfield of the pieces verified *and written*: high bit
                  first, spare bits zero
``files``         one dictionary per file of ``Info.files``, in order: ``size``
                  and ``mtime`` (nanoseconds, signed: before 1970 is negative) of
                  the stored file; empty for a file that is missing, a pad file, a
                  symlink or an empty file, for every file until a check of the
                  torrent has completed, and for a file a failed write touched
                  since
``saved``         when the data was made (nanoseconds since the epoch); earlier
                  after a start with ``check=False``, so that the files holding
                  a piece it left unhashed are racy
================  ===========================================================

On load a file is *unchanged* when its size and modification time are those
recorded (never when its storage keeps no modification time: ``mtime`` 0);
pieces touching only unchanged files keep their recorded state, the others are
hashed again. A file whose recorded ``mtime`` lies within
:data:`RACY_WINDOW_NS` of ``saved`` is *racy*, as in git's index: a write right
after the data was made may have left the modification time as it was (file
systems keep it with a granularity, jiffies on Linux, 2 s on FAT), so the pieces
of a racy file that the data does not list are hashed again on load, while those
it does list (written before the data was made) are trusted.

Everything is validated strictly: anything malformed, or describing another
torrent, raises :class:`~bip_disk.ResumeDataError` before anything is used.
Keys this version does not know are ignored (as libtorrent does), so that data
written by a later version loads. Resume data is untrusted input (a file anyone
may have edited): given the torrent's counts, :meth:`ResumeData.from_bytes`
refuses data longer than any that :meth:`ResumeData.to_bytes` writes for them
before decoding it, so that loading costs what a real file of that torrent
costs; and ``have`` is kept as a bitfield, never as a set of ints.

>>> from bip_metainfo import InfoHash
>>> data = ResumeData(InfoHash(v1=bytes(20)), 10, frozenset({0, 9}), (None,), 0)
>>> ResumeData.from_bytes(data.to_bytes()) == data
True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final, cast

from bip_bencode import BencodeDecodeError, decode, encode
from bip_metainfo import InfoHash, PieceSet

from ._errors import ResumeDataError
from ._filesystem import FileStat

__all__ = [
    "MAX_RESUME_DATA_SIZE",
    "RACY_WINDOW_NS",
    "RESUME_FORMAT",
    "RESUME_VERSION",
    "ResumeData",
]

RESUME_FORMAT: Final = b"bip-disk resume"
"""The ``format`` value of bip_disk resume data."""
RESUME_VERSION: Final = 1
"""The ``version`` written; other versions are refused."""
RACY_WINDOW_NS: Final = 2_000_000_000
"""How close to ``saved`` a file's mtime makes it racy (FAT's 2 s granularity)."""
MAX_RESUME_DATA_SIZE: Final = 64 * 1024 * 1024
"""The largest resume data accepted without the torrent's counts (a 2-million-piece,
100 000-file torrent takes 6 MB)."""

_MAX_INT: Final = (1 << 63) - 1
# A file's mtime is signed: one dated before 1970 has a negative st_mtime_ns, and the
# data we write for it must read back (as libtorrent's signed 64-bit file times).
_MIN_MTIME: Final = -(1 << 63)
# What a file entry and the rest of a document take at most, derived from the
# format: to_bytes writes canonical bencoding, so a document's length is the sum of
# these and of the digits of its counts (see _max_size).
_LONGEST_FILE: Final = len(encode({b"size": _MAX_INT, b"mtime": _MIN_MTIME}))
_FIXED_SIZE: Final = len(
    encode(
        {
            b"format": RESUME_FORMAT,
            b"version": RESUME_VERSION,
            b"info-hash": bytes(20),
            b"info-hash2": bytes(32),
            b"pieces": 0,  # its digits are counted apart,
            b"have": b"",  # and so are the length and digits of the bitfield
            b"files": [],
            b"saved": _MAX_INT,
        }
    )
) - len(b"0" + b"0")
_FLAGS: Final = bytes.maketrans(b"01", b"\x00\x01")
_ROOM_FOR_NEW_KEYS: Final = 4096
"""Allowed beyond what to_bytes writes: keys a later version adds are ignored, not
refused for the length. Decoded, 4 KiB of the worst bencoding (empty dictionaries)
cost some 150 KB."""


class _Have(AbstractSet[int]):
    """A read-only set of pieces over a :class:`~bip_metainfo.PieceSet` that no one
    else holds: ``num_pieces / 8`` bytes, where a ``frozenset`` costs some 60 per piece.

    >>> have = _Have(PieceSet(10, {0, 9}))
    >>> 9 in have, 5 in have, len(have), sorted(have), have == {0, 9}, have - {0}
    (True, False, 2, [0, 9], True, frozenset({9}))
    """

    __slots__ = ("_pieces",)

    def __init__(self, pieces: PieceSet) -> None:
        """Wrap ``pieces``, which must not be changed after."""
        self._pieces = pieces

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> frozenset[Any]:
        # What the operators of Set (``-``, ``&``, ``|``, ``^``) return.
        return frozenset(it)

    @property
    def num_pieces(self) -> int:
        """The torrent's number of pieces (the bitfield's bits)."""
        return self._pieces.num_pieces

    def to_bitfield(self) -> bytes:
        """The BEP 3 bitfield: high bit first, spare bits zero."""
        return self._pieces.to_bitfield()

    def __contains__(self, piece: object) -> bool:
        """Whether ``piece`` is in the set (False for anything not a valid index)."""
        return piece in self._pieces

    def __len__(self) -> int:
        """How many pieces are in the set."""
        return len(self._pieces)

    def __iter__(self) -> Iterator[int]:
        """The pieces in the set, in increasing order."""
        return iter(self._pieces)

    def __eq__(self, other: object) -> bool:
        """Equal to any set of the same pieces (compared as bitfields when it can be)."""
        if isinstance(other, _Have):
            return self._pieces == other._pieces
        return AbstractSet.__eq__(self, other)

    __hash__ = AbstractSet._hash  # a frozenset's hash, as equality with one requires

    def __repr__(self) -> str:
        """``_Have(<count>/<num_pieces>)``."""
        return f"_Have({len(self._pieces)}/{self._pieces.num_pieces})"


@dataclass(frozen=True, slots=True)
class ResumeData:
    """Parsed fast resume data (see the module documentation for the format).

    Attributes:
        info_hash: the torrent it belongs to.
        num_pieces: the torrent's number of pieces.
        have: the pieces verified and written when the data was made: any set of
            ints when constructing, kept as a read-only set backed by a bitfield
            (its ``-``, ``&``, ``|`` give frozensets).
        files: for each file of ``Info.files``, its size and mtime then, or None
            (missing, a pad file, a symlink).
        saved_ns: when the data was made, in nanoseconds since the epoch.

    Raises:
        ResumeDataError: a piece of ``have`` is not below ``num_pieces``.
    """

    info_hash: InfoHash
    num_pieces: int
    have: AbstractSet[int]
    files: tuple[FileStat | None, ...]
    saved_ns: int

    def __post_init__(self) -> None:
        """Keep ``have`` as a bitfield (see the class documentation)."""
        have = self.have
        if isinstance(have, _Have) and have.num_pieces == self.num_pieces:
            return
        try:
            pieces = PieceSet(self.num_pieces, have)
        except (TypeError, ValueError) as error:
            raise ResumeDataError(f"'have' of {self.num_pieces} pieces: {error}") from None
        object.__setattr__(self, "have", _Have(pieces))

    def to_bytes(self) -> bytes:
        """Bencode the resume data."""
        document: dict[bytes, Any] = {
            b"format": RESUME_FORMAT,
            b"version": RESUME_VERSION,
            b"pieces": self.num_pieces,
            # __post_init__ made it a _Have.
            b"have": cast(_Have, self.have).to_bitfield(),
            b"files": [
                {} if stat is None else {b"size": stat.size, b"mtime": stat.mtime_ns}
                for stat in self.files
            ],
            b"saved": self.saved_ns,
        }
        if self.info_hash.v1 is not None:
            document[b"info-hash"] = self.info_hash.v1
        if self.info_hash.v2 is not None:
            document[b"info-hash2"] = self.info_hash.v2
        return encode(document)

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        *,
        num_pieces: int | None = None,
        num_files: int | None = None,
    ) -> ResumeData:
        """Parse and validate resume data.

        Give the torrent's ``num_pieces`` and ``num_files`` when the data is
        untrusted: decoded bencoding costs up to 40 times its size in Python
        objects, so given both, data longer than any :meth:`to_bytes` writes for them
        (plus a little room for keys of later versions) is refused before it is
        decoded, and data of other counts before its bitfield is built
        (:meth:`check_torrent` still compares the info-hash). Without them the
        data is bounded by ``MAX_RESUME_DATA_SIZE`` (64 MiB) only.

        Raises:
            ResumeDataError: the data is not valid bip_disk resume data, or is not
                of the counts given.
            ValueError: ``num_pieces`` or ``num_files`` is not a count.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ResumeDataError(f"resume data must be bytes, not {type(data).__name__}")
        size = memoryview(data).nbytes
        if size > MAX_RESUME_DATA_SIZE:
            raise ResumeDataError(f"resume data larger than {MAX_RESUME_DATA_SIZE} bytes")
        _check_count("num_pieces", num_pieces)
        _check_count("num_files", num_files)
        if num_pieces is not None and num_files is not None:
            limit = _max_size(num_pieces, num_files) + _ROOM_FOR_NEW_KEYS
            if size > limit:
                raise ResumeDataError(
                    f"resume data of {size} bytes, more than the {limit} of any for a"
                    f" torrent of {num_pieces} pieces and {num_files} files"
                )
        try:
            document = decode(data, max_depth=4)
        except BencodeDecodeError as error:
            raise ResumeDataError(f"resume data is not valid bencoding: {error}") from None
        if type(document) is not dict:
            raise ResumeDataError("resume data is not a dictionary")
        if document.get(b"format") != RESUME_FORMAT:
            raise ResumeDataError("not bip_disk resume data (no 'format' of b'bip-disk resume')")
        version = _integer(document, b"version")
        if version != RESUME_VERSION:
            raise ResumeDataError(f"resume data version {version} is not {RESUME_VERSION}")
        v1 = document.get(b"info-hash")
        v2 = document.get(b"info-hash2")
        if v1 is not None and (type(v1) is not bytes or len(v1) != 20):
            raise ResumeDataError("'info-hash' is not 20 bytes")
        if v2 is not None and (type(v2) is not bytes or len(v2) != 32):
            raise ResumeDataError("'info-hash2' is not 32 bytes")
        if v1 is None and v2 is None:
            raise ResumeDataError("resume data names no info-hash")
        pieces = _integer(document, b"pieces")
        if pieces < 1:
            raise ResumeDataError(f"'pieces' is {pieces}, not a positive count")
        if num_pieces is not None and pieces != num_pieces:
            raise ResumeDataError(_pieces_mismatch(pieces, num_pieces))
        field = document.get(b"have")
        if type(field) is not bytes:
            raise ResumeDataError("'have' is not a byte string")
        files_node = document.get(b"files")
        if type(files_node) is not list:
            raise ResumeDataError("'files' is not a list")
        if num_files is not None and len(files_node) != num_files:
            raise ResumeDataError(_files_mismatch(len(files_node), num_files))
        try:
            have = PieceSet.from_bitfield(field, pieces)
        except ValueError as error:
            raise ResumeDataError(f"the have bitfield: {error}") from None
        files = tuple(_file(node, index) for index, node in enumerate(files_node))
        saved = _integer(document, b"saved")
        return cls(InfoHash(v1=v1, v2=v2), pieces, _Have(have), files, saved)

    def check_torrent(self, info_hash: InfoHash, num_pieces: int, num_files: int) -> None:
        """Check that this data describes the torrent with these properties.

        Raises:
            ResumeDataError: it belongs to another torrent.
        """
        if self.info_hash != info_hash:
            raise ResumeDataError(
                f"the resume data is for torrent {self.info_hash.hex()}, not {info_hash.hex()}"
            )
        if self.num_pieces != num_pieces:
            raise ResumeDataError(_pieces_mismatch(self.num_pieces, num_pieces))
        if len(self.files) != num_files:
            raise ResumeDataError(_files_mismatch(len(self.files), num_files))

    def is_racy(self, file_index: int) -> bool:
        """Whether file ``file_index``'s recorded mtime is too close to ``saved`` to trust.

        Raises:
            IndexError: there is no such file.
        """
        stat = self.files[file_index]
        return stat is not None and stat.mtime_ns + RACY_WINDOW_NS > self.saved_ns

    def racy_until_ns(self) -> int | None:
        """When the last racy file of the record stops being racy (its recorded mtime plus
        :data:`RACY_WINDOW_NS`, nanoseconds since the epoch): a record saved again after
        that trusts every file as it is then. None: no file is racy."""
        ends = [
            stat.mtime_ns + RACY_WINDOW_NS
            for stat in self.files
            if stat is not None and stat.mtime_ns + RACY_WINDOW_NS > self.saved_ns
        ]
        return max(ends, default=None)


def have_flags(resume: ResumeData) -> bytes:
    """One byte per piece: 1 for those of ``resume.have``, 0 for the others.

    For a loop over every piece (:func:`~._check.plan_check`): indexing bytes is
    done in C, ``in`` on ``have`` is two Python calls (0.26 s against 0.66 s for 2
    million pieces).
    """
    bits = cast(_Have, resume.have).to_bitfield()  # __post_init__ made it a _Have
    # The bitfield as a big int, written in binary: high bit first, as in BEP 3.
    digits = format(int.from_bytes(bits, "big"), f"0{len(bits) * 8}b")
    return digits.encode().translate(_FLAGS)[: resume.num_pieces]


def _max_size(num_pieces: int, num_files: int) -> int:
    """The length of the longest document :meth:`ResumeData.to_bytes` writes for a
    torrent of these counts: both info-hashes, and every integer of 19 digits."""
    have = (num_pieces + 7) // 8
    return _FIXED_SIZE + len(str(num_pieces)) + len(str(have)) + have + num_files * _LONGEST_FILE


def _check_count(name: str, count: int | None) -> None:
    if count is not None and (type(count) is not int or not 0 <= count <= _MAX_INT):
        raise ValueError(f"{name} must be None or a count, not {count!r}")


def _pieces_mismatch(found: int, expected: int) -> str:
    return f"the resume data counts {found} pieces, the torrent {expected}"


def _files_mismatch(found: int, expected: int) -> str:
    return f"the resume data lists {found} files, the torrent {expected}"


def _integer(document: dict[bytes, Any], key: bytes) -> int:
    value = document.get(key)
    if type(value) is not int:
        raise ResumeDataError(f"{key.decode()!r} is missing or not an integer")
    if not 0 <= value <= _MAX_INT:
        raise ResumeDataError(f"{key.decode()!r} is {value}, out of range")
    return value


def _file(node: object, index: int) -> FileStat | None:
    if type(node) is not dict:
        raise ResumeDataError(f"files[{index}] is not a dictionary")
    if not node:
        return None
    if set(node) != {b"size", b"mtime"}:
        raise ResumeDataError(f"files[{index}] must hold exactly 'size' and 'mtime'")
    size, mtime = node[b"size"], node[b"mtime"]
    if type(size) is not int or type(mtime) is not int:
        raise ResumeDataError(f"files[{index}] has a size or mtime that is not an integer")
    if not 0 <= size <= _MAX_INT or not _MIN_MTIME <= mtime <= _MAX_INT:
        raise ResumeDataError(f"files[{index}] has a size or mtime out of range")
    return FileStat(size, mtime)
