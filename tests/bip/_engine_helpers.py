"""Shared by the engine tests: content on disk, torrents of it, and sessions on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import trio

from bip._client import (
    ClientConfig,
    Session,
    Torrent,
    TorrentOptions,
    TorrentPhase,
    open_session,
)
from bip_handshake import EncryptionPolicy, PeerAddress
from bip_metainfo import Info, Metainfo, create_torrent

LOOPBACK = "127.0.0.1"


def write_content(root: Path, sizes: Sequence[int], *, seed: int = 1) -> Path:
    """``root/album`` with one file of random bytes per size (``f0.bin``, ``sub/f1.bin``...)."""
    rng = random.Random(seed)
    folder = root / "album"
    for index, size in enumerate(sizes):
        path = folder / ("sub" if index % 2 else "") / f"f{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return folder


Version = Literal["v1", "v2", "hybrid"]


def make_torrent(folder: Path, version: Version, *, piece_length: int = 32768) -> Metainfo:
    """A torrent of ``folder`` (``"v1"``, ``"v2"`` or ``"hybrid"``), no trackers, no date."""
    return create_torrent(
        folder, version=version, piece_length=piece_length, creation_date=None, created_by=None
    )


def loopback_config(**changes: object) -> ClientConfig:
    """A session config on 127.0.0.1, any port, no trackers, fast resume saves, and no
    listening for a NAT gateway's announcements on the real multicast group."""
    settings: dict[str, object] = {
        "listen": ((LOOPBACK, 0),),
        "trackers": False,
        "natpmp_announce_address": None,
        "resume_interval": 0.5,
        "redial_interval": 1.0,
        "encryption": EncryptionPolicy.PREFER_ENCRYPTED,
        "seed_rng": 7,
    }
    settings.update(changes)
    return ClientConfig(**settings)  # type: ignore[arg-type]


def address_of(session: Session) -> PeerAddress:
    """Where ``session`` accepts peers."""
    [address] = session.handshaker.listen_addresses
    return address


@contextlib.asynccontextmanager
async def seeder_and_leecher(
    torrent: Metainfo, folder: Path, **changes: object
) -> AsyncIterator[tuple[Session, Session]]:
    """Two loopback sessions (``loopback_config(**changes)``): the first already seeding
    ``torrent``, whose data is ``folder`` (from :func:`write_content`), the second empty."""
    async with (
        open_session(loopback_config(**changes)) as seeder,
        open_session(loopback_config(**changes)) as leecher,
    ):
        seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
        await seeding.wait_complete()
        assert seeding.status().phase is TorrentPhase.SEEDING
        yield seeder, leecher


def same_files(a: Path, b: Path) -> bool:
    """Whether two trees hold the same files with the same bytes (``.bip`` ignored)."""

    def files(root: Path) -> dict[Path, bytes]:
        return {
            path.relative_to(root): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and ".bip" not in path.relative_to(root).parts
        }

    return files(a) == files(b)


def piece_bytes(info: Info, save_dir: Path, piece: int) -> bytes | None:
    """The bytes of a v1 piece as stored under ``save_dir`` (``None`` if a file is short)."""
    out = bytearray()
    for part in info.piece_slices(piece):
        entry = info.files[part.file_index]
        if entry.is_pad:  # never stored: zeros by definition
            out += bytes(part.length)
            continue
        path = save_dir.joinpath(*entry.path)
        try:
            with path.open("rb") as file:
                file.seek(part.offset)
                data = file.read(part.length)
        except OSError:
            return None
        if len(data) != part.length:
            return None
        out += data
    return bytes(out)


def good_pieces(info: Info, save_dir: Path) -> frozenset[int]:
    """The v1 pieces whose bytes under ``save_dir`` hash right."""
    good = set()
    for piece in range(info.num_pieces):
        data = piece_bytes(info, save_dir, piece)
        if data is not None and hashlib.sha1(data).digest() == info.piece_hash(piece):
            good.add(piece)
    return frozenset(good)


def spoil_pieces(info: Info, save_dir: Path, pieces: Sequence[int]) -> None:
    """Overwrite the bytes of ``pieces`` under ``save_dir`` with zeros."""
    for piece in pieces:
        for part in info.piece_slices(piece):
            path = save_dir.joinpath(*info.files[part.file_index].path)
            with path.open("r+b") as file:
                file.seek(part.offset)
                file.write(bytes(part.length))


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, looking every 10 ms (the caller bounds the wait)."""
    while not condition():
        await trio.sleep(0.01)


async def download_from(
    seeder: Session, leecher: Session, torrent: Metainfo, save_dir: Path, **options: Any
) -> Torrent:
    """``torrent`` added to ``leecher``, saved in ``save_dir``, with ``seeder`` as its peer
    (``options``: the other :class:`TorrentOptions` fields)."""
    return await leecher.add_torrent(
        torrent, TorrentOptions(save_dir, peers=(address_of(seeder),), **options)
    )
