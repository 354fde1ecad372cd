"""FileEntry: one file of a torrent, as the rest of the suite sees it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FileEntry"]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a torrent.

    Attributes:
        path: the file's safe relative path, one component per item, as it is
            stored under the download directory: for a multi-file torrent the
            torrent's name comes first (``("album", "cd1", "01.flac")``), for a
            single-file torrent the path is just the name. Already sanitised (see
            :func:`~bip_metainfo.sanitize_path`): it never leaves the directory.
        length: the file's size in bytes (0 for a symlink).
        offset: where the file starts in the torrent's piece space: the byte
            offset in the concatenation of all files (pad files included). In a v2
            or hybrid torrent every non-empty file starts at a piece boundary.
        attributes: the BEP 47 ``attr`` string (``p`` pad, ``x`` executable, ``h``
            hidden, ``l`` symlink), as given.
        symlink_target: for a symlink, its target as a safe path from the
            torrent's root (BEP 47 ``symlink path``).
        sha1: the BEP 47 per-file SHA-1, if the torrent has one.
        md5sum: the per-file ``md5sum`` (32 hex digits), if the torrent has one.
        pieces_root: the BEP 52 merkle root of a non-empty file in a v2 or hybrid
            torrent.
        mtime: the optional modification time (seconds since the epoch).
    """

    path: tuple[str, ...]
    length: int
    offset: int
    attributes: str = ""
    symlink_target: tuple[str, ...] | None = None
    sha1: bytes | None = None
    md5sum: str | None = None
    pieces_root: bytes | None = None
    mtime: int | None = None

    @property
    def is_pad(self) -> bool:
        """A BEP 47 pad file: zeros that align the next file to a piece boundary."""
        return "p" in self.attributes

    @property
    def is_executable(self) -> bool:
        """The BEP 47 executable attribute."""
        return "x" in self.attributes

    @property
    def is_hidden(self) -> bool:
        """The BEP 47 hidden attribute."""
        return "h" in self.attributes

    @property
    def is_symlink(self) -> bool:
        """A BEP 47 symlink (it has a :attr:`symlink_target` and no data)."""
        return self.symlink_target is not None

    @property
    def end(self) -> int:
        """The offset just past the file in the piece space."""
        return self.offset + self.length

    def path_str(self, separator: str = "/") -> str:
        """The path as one string."""
        return separator.join(self.path)
