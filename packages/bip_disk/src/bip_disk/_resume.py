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
                  and ``mtime`` (nanoseconds) of the stored file; empty for a
                  file that is missing, a pad file or a symlink
``saved``         when the data was made (nanoseconds since the epoch)
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

>>> from bip_metainfo import InfoHash
>>> data = ResumeData(InfoHash(v1=bytes(20)), 10, frozenset({0, 9}), (None,), 0)
>>> ResumeData.from_bytes(data.to_bytes()) == data
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

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
"""The largest resume data accepted (a 2-million-piece, 100 000-file torrent fits)."""

_MAX_INT: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class ResumeData:
    """Parsed fast resume data (see the module documentation for the format).

    Attributes:
        info_hash: the torrent it belongs to.
        num_pieces: the torrent's number of pieces.
        have: the pieces verified and written when the data was made.
        files: for each file of ``Info.files``, its size and mtime then, or None
            (missing, a pad file, a symlink).
        saved_ns: when the data was made, in nanoseconds since the epoch.
    """

    info_hash: InfoHash
    num_pieces: int
    have: frozenset[int]
    files: tuple[FileStat | None, ...]
    saved_ns: int

    def to_bytes(self) -> bytes:
        """Bencode the resume data."""
        document: dict[bytes, Any] = {
            b"format": RESUME_FORMAT,
            b"version": RESUME_VERSION,
            b"pieces": self.num_pieces,
            b"have": PieceSet(self.num_pieces, self.have).to_bitfield(),
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
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ResumeData:
        """Parse and validate resume data.

        Raises:
            ResumeDataError: the data is not valid bip_disk resume data.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ResumeDataError(f"resume data must be bytes, not {type(data).__name__}")
        if memoryview(data).nbytes > MAX_RESUME_DATA_SIZE:
            raise ResumeDataError(f"resume data larger than {MAX_RESUME_DATA_SIZE} bytes")
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
        num_pieces = _integer(document, b"pieces")
        if num_pieces < 1:
            raise ResumeDataError(f"'pieces' is {num_pieces}, not a positive count")
        field = document.get(b"have")
        if type(field) is not bytes:
            raise ResumeDataError("'have' is not a byte string")
        try:
            have = frozenset(PieceSet.from_bitfield(field, num_pieces))
        except ValueError as error:
            raise ResumeDataError(f"the have bitfield: {error}") from None
        files_node = document.get(b"files")
        if type(files_node) is not list:
            raise ResumeDataError("'files' is not a list")
        files = tuple(_file(node, index) for index, node in enumerate(files_node))
        saved = _integer(document, b"saved")
        return cls(InfoHash(v1=v1, v2=v2), num_pieces, have, files, saved)

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
            raise ResumeDataError(
                f"the resume data counts {self.num_pieces} pieces, the torrent {num_pieces}"
            )
        if len(self.files) != num_files:
            raise ResumeDataError(
                f"the resume data lists {len(self.files)} files, the torrent {num_files}"
            )

    def is_racy(self, file_index: int) -> bool:
        """Whether file ``file_index``'s recorded mtime is too close to ``saved`` to trust.

        Raises:
            IndexError: there is no such file.
        """
        stat = self.files[file_index]
        return stat is not None and stat.mtime_ns + RACY_WINDOW_NS > self.saved_ns


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
    if not 0 <= size <= _MAX_INT or not 0 <= mtime <= _MAX_INT:
        raise ResumeDataError(f"files[{index}] has a size or mtime out of range")
    return FileStat(size, mtime)
