"""bip_disk: pluggable BitTorrent storage.

A :class:`FileSystem` protocol with native (:class:`NativeFileSystem`), in-memory
(:class:`MemoryFileSystem`) and fsspec (:class:`FsspecFileSystem`, the
``bip-disk[fsspec]`` extra) implementations; :class:`StorageLayout`, which maps a
torrent's pieces onto safe relative paths; and the trio :class:`DiskManager`
that writes and reads blocks with bounded memory, verifies pieces (v1, v2 and
hybrid) as soon as their blocks are in, keeps fast resume data, and turns
storage faults into events instead of crashes.
"""

import logging

from ._errors import (
    DestinationExistsError,
    DiskError,
    PathError,
    ResumeDataError,
    StorageError,
    TorrentStateError,
)
from ._events import (
    CheckFinished,
    CheckProgress,
    DiskEvent,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    StorageMoved,
    StorageProblem,
    TorrentFailed,
    TorrentHandle,
    TorrentRemoved,
    TorrentState,
)
from ._fileops import (
    ExistingFiles,
)
from ._filesystem import (
    FileStat,
    FileSystem,
)
from ._fsspec import (
    DEFAULT_MAX_STAGED_BYTES,
    FsspecFileSystem,
)
from ._hashing import (
    PieceHasher,
    PieceVerifier,
    V2Target,
)
from ._layout import (
    Span,
    StorageLayout,
    StoredFile,
    create_files,
    read_piece,
    read_span_data,
    write_span_data,
)
from ._manager import (
    DEFAULT_EVENT_BUFFER,
    DEFAULT_IO_THREADS,
    DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_READ_CACHE_BYTES,
    DiskManager,
    DiskStatistics,
    open_disk_manager,
)
from ._memory import (
    MemoryFileSystem,
)
from ._native import (
    NativeFileSystem,
)
from ._resume import (
    RACY_WINDOW_NS,
    ResumeData,
)
from ._torrent import (
    TorrentStatus,
)

__all__ = [
    "DEFAULT_EVENT_BUFFER",
    "DEFAULT_IO_THREADS",
    "DEFAULT_MAX_IN_FLIGHT_BYTES",
    "DEFAULT_MAX_STAGED_BYTES",
    "DEFAULT_READ_CACHE_BYTES",
    "RACY_WINDOW_NS",
    "CheckFinished",
    "CheckProgress",
    "DestinationExistsError",
    "DiskError",
    "DiskEvent",
    "DiskManager",
    "DiskStatistics",
    "ExistingFiles",
    "FileStat",
    "FileSystem",
    "FsspecFileSystem",
    "MemoryFileSystem",
    "NativeFileSystem",
    "PathError",
    "PieceDiscarded",
    "PieceHasher",
    "PieceLost",
    "PieceVerified",
    "PieceVerifier",
    "ResumeData",
    "ResumeDataError",
    "Span",
    "StorageError",
    "StorageLayout",
    "StorageMoved",
    "StorageProblem",
    "StoredFile",
    "TorrentFailed",
    "TorrentHandle",
    "TorrentRemoved",
    "TorrentState",
    "TorrentStateError",
    "TorrentStatus",
    "V2Target",
    "create_files",
    "open_disk_manager",
    "read_piece",
    "read_span_data",
    "write_span_data",
]

__version__ = "0.1.0"

# The application decides where log records go; without this, Python's last-resort handler
# would print our warnings to stderr in an application that configured no logging at all.
logging.getLogger("bip_disk").addHandler(logging.NullHandler())
