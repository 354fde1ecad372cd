"""Where a torrent's resume data and fetched metadata live between runs: ``SAVE_DIR/.bip/``.

Two files per torrent, named by its info-hash (hex of the v1 hash, else of the v2 hash):

- ``HASH.resume``: bip_disk's resume data (pieces verified, files' sizes and times), rewritten
  atomically (a temporary file renamed over the old one), so a kill at any moment leaves the
  old record or the new one, never half of one;
- ``HASH.torrent``: for a magnet link, the info dictionary fetched from peers, wrapped as a
  .torrent, with the BEP 52 ``piece layers`` once they were fetched too (a v2 torrent), so a
  restart needs no peer to serve the metadata or the layers again.

Kept next to the data, as aria2 keeps its ``.aria2`` control files: moving the directory moves
the record with it, and two downloads into different directories never share one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import trio

from bip_bencode import encode
from bip_metainfo import Info, InfoHash, Metainfo, MetainfoError

from ._config import RESUME_DIRECTORY

__all__ = ["ResumeStore", "names_same_torrent"]


def names_same_torrent(partial: InfoHash, full: InfoHash) -> bool:
    """Whether every hash ``partial`` has (a magnet's) equals the one ``full`` has (metadata's)."""
    return (partial.v1 is None or partial.v1 == full.v1) and (
        partial.v2 is None or partial.v2 == full.v2
    )


def _hash_name(info_hash: InfoHash) -> str:
    digest = info_hash.v1 if info_hash.v1 is not None else info_hash.v2
    assert digest is not None  # an InfoHash has one or both
    return digest.hex()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


class ResumeStore:
    """The resume files of one torrent under ``save_dir/.bip/``."""

    def __init__(self, save_dir: Path, info_hash: InfoHash) -> None:
        """The store of ``info_hash``'s files in ``save_dir``."""
        self.directory = save_dir / RESUME_DIRECTORY
        name = _hash_name(info_hash)
        self.resume_path = self.directory / f"{name}.resume"
        self.torrent_path = self.directory / f"{name}.torrent"
        self._info_hash = info_hash

    async def load_resume(self) -> bytes | None:
        """The last resume data saved, or ``None`` if there is none or it cannot be read."""
        try:
            return await trio.to_thread.run_sync(self.resume_path.read_bytes)
        except OSError:
            return None

    async def save_resume(self, data: bytes) -> None:
        """Replace the resume data (atomically).

        Raises:
            OSError: the file could not be written.
        """
        await trio.to_thread.run_sync(_write_atomically, self.resume_path, data)

    async def forget_resume(self) -> None:
        """Delete the resume data (it was refused: of another torrent or malformed)."""
        with contextlib.suppress(OSError):
            await trio.to_thread.run_sync(self.resume_path.unlink)

    async def load_info(self) -> Info | None:
        """The info dictionary saved by :meth:`save_info`, if it is there and matches."""
        saved = await self.load_metadata()
        return None if saved is None else saved[0]

    async def load_metadata(self) -> tuple[Info, dict[bytes, bytes]] | None:
        """The info dictionary and BEP 52 piece layers (by pieces root) saved by
        :meth:`save_info`, if the file is there and names this torrent; the layers are ``{}``
        if none were saved."""
        try:
            data = await trio.to_thread.run_sync(self.torrent_path.read_bytes)
        except OSError:
            return None
        # The file is ours, but a disk may corrupt it: it must parse, hash right, and every
        # layer must hash to its file's root (Metainfo checks them), else it is fetched again.
        try:
            torrent = Metainfo.from_bytes(data)
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
        await trio.to_thread.run_sync(_write_atomically, self.torrent_path, data)
