"""What :meth:`Torrent.move_storage <bip._client.Torrent.move_storage>` does with files
already at the destination: libtorrent's ``move_flags_t``, carried out by bip_disk's
:meth:`~bip_disk.DiskManager.move_storage` (:class:`~bip_disk.ExistingFiles`).
"""

from __future__ import annotations

import enum

from bip_disk import ExistingFiles

__all__ = ["MoveFlags"]


class MoveFlags(enum.Enum):
    """What :meth:`~bip._client.Torrent.move_storage` does with the torrent's files that
    already exist at the destination (libtorrent's ``move_flags_t``).

    Attributes:
        ALWAYS_REPLACE_FILES: replace them with the torrent's (the default).
        FAIL_IF_EXIST: refuse the move, before anything is copied, if any of them exists;
            one that appears during the copy stops it too (never replaced).
        DONT_REPLACE: keep the destination's files and use them: they are neither copied
            over nor written, the torrent's own copies of them stay where they were (as
            libtorrent leaves them in the old save path), and the pieces they hold are
            hashed again (the others stay verified).

    >>> MoveFlags.DONT_REPLACE.existing
    <ExistingFiles.KEEP: 'keep'>
    """

    ALWAYS_REPLACE_FILES = "always_replace_files"
    FAIL_IF_EXIST = "fail_if_exist"
    DONT_REPLACE = "dont_replace"

    @property
    def existing(self) -> ExistingFiles:
        """The same choice in bip_disk's terms (its ``move_storage`` does the work)."""
        return _EXISTING[self]


_EXISTING = {
    MoveFlags.ALWAYS_REPLACE_FILES: ExistingFiles.REPLACE,
    MoveFlags.FAIL_IF_EXIST: ExistingFiles.FAIL,
    MoveFlags.DONT_REPLACE: ExistingFiles.KEEP,
}
