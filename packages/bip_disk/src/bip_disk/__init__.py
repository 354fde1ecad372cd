"""bip_disk: pluggable BitTorrent storage.

A ``FileSystem`` protocol with native, in-memory and fsspec implementations, and
the trio ``DiskManager`` that writes and reads blocks with bounded memory,
verifies pieces (v1, v2 and hybrid) as soon as their blocks are in, keeps fast
resume data, and turns storage faults into events instead of crashes.
"""

from ._errors import DiskError, PathError, ResumeDataError, StorageError, TorrentStateError

__all__ = ["DiskError", "PathError", "ResumeDataError", "StorageError", "TorrentStateError"]

__version__ = "0.1.0"
