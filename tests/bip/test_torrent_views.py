"""Snapshots for a user interface: each peer (PeerInfo) and each file's verified bytes."""

from __future__ import annotations

from pathlib import Path

import trio
from _engine_helpers import make_torrent, seeder_and_leecher, until, write_content

from bip._client import TorrentOptions
from bip._client._views import PeerInfo, file_progress, peer_infos
from bip_metainfo import Info, InfoHash, MagnetLink

SIZES = (40_000, 0, 70_000, 5_000)
PIECE = 16_384


def _by_name(info: Info, counts: tuple[int, ...]) -> dict[str, int]:
    """``counts`` (in file order) by file name, pad files left out."""
    return {
        entry.path[-1]: count
        for entry, count in zip(info.files, counts, strict=True)
        if not entry.is_pad
    }


def test_file_progress_counts_the_bytes_in_verified_pieces(tmp_path: Path) -> None:
    info = make_torrent(write_content(tmp_path, SIZES), "v1", piece_length=PIECE).info
    # v1 order: album/f0.bin (40,000), album/f2.bin (70,000), then sub/f1.bin and sub/f3.bin.
    assert file_progress(info, []) == (0, 0, 0, 0)
    assert file_progress(info, range(info.num_pieces)) == (40_000, 70_000, 0, 5_000)
    # Piece 2 holds the end of f0.bin (32,768..40,000) and the start of f2.bin.
    assert file_progress(info, [2]) == (40_000 - 2 * PIECE, 3 * PIECE - 40_000, 0, 0)
    # Pieces outside the torrent are ignored.
    assert file_progress(info, [-1, info.num_pieces, 10**9]) == (0, 0, 0, 0)


def test_file_progress_of_a_v2_torrent_counts_each_file_alone(tmp_path: Path) -> None:
    info = make_torrent(write_content(tmp_path, SIZES), "v2", piece_length=PIECE).info
    done = _by_name(info, file_progress(info, range(info.num_pieces)))
    assert done == {"f0.bin": 40_000, "f1.bin": 0, "f2.bin": 70_000, "f3.bin": 5_000}
    # A v2 piece belongs to one file: f0.bin's first piece counts for f0.bin alone.
    [f0] = [index for index, entry in enumerate(info.files) if entry.path[-1] == "f0.bin"]
    partial = _by_name(info, file_progress(info, [info.geometry.file_pieces(f0)[0]]))
    assert partial == {"f0.bin": PIECE, "f1.bin": 0, "f2.bin": 0, "f3.bin": 0}


async def test_peer_infos_of_a_download(tmp_path: Path) -> None:
    """Looked at while the download runs (limited to 512 KiB/s): once complete, two seeds
    close their connection (BEP 21), and a new one may have carried nothing yet."""
    folder = write_content(tmp_path / "seed", (400_000,))
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(30):
        async with seeder_and_leecher(
            torrent, folder, download_rate_limit=512 * 1024, limit_local_peers=True
        ) as (seeder, leecher):
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(tmp_path / "down", peers=(seeder.handshaker.listen_addresses[0],)),
            )
            await until(lambda: download.status().done >= 100_000)
            [seeding] = seeder.torrents
            [info] = download.peer_info()
            assert isinstance(info, PeerInfo)
            assert info.address == seeder.handshaker.listen_addresses[0]
            assert info.client.startswith("bip")
            assert info.direction == "outbound"
            assert info.transport in ("tcp", "utp")
            assert info.encrypted  # both prefer MSE
            assert info.seed
            assert info.pieces == torrent.info.num_pieces
            assert not info.peer_choking
            assert info.am_interested
            assert info.downloaded >= 100_000
            assert info.connected_for > 0
            [theirs] = seeding.peer_info()
            assert theirs.direction == "inbound"
            assert theirs.uploaded >= 100_000
            assert theirs.peer_interested
            assert 0 < sum(download.file_progress()) < 400_000
            await download.wait_complete()
            assert download.file_progress() == (400_000,)
            # A peer the statistics no longer list shows no traffic.
            [gone] = peer_infos(download.peers, {})
            assert (gone.downloaded, gone.upload_rate) == (0, 0.0)
            # A magnet link before its metadata: no files to count, no peers.
            unknown = MagnetLink.from_info_hash(InfoHash(v1=bytes(20)))
            waiting = await leecher.add_torrent(unknown, TorrentOptions(tmp_path / "m"))
            assert waiting.file_progress() == ()
            assert waiting.peer_info() == ()
