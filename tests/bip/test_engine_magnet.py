"""Magnet links: metadata fetched from our seeder (BEP 9), peers from ``x.pe``, file selection
from ``so`` (BEP 53), metadata kept for the next run, and a v2-only magnet waiting for its piece
layers (BEP 52; the rest of that story is in test_engine_layers.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    Version,
    address_of,
    good_pieces,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)

from bip._client import TorrentOptions, TorrentPhase, open_session
from bip_metainfo import InfoHash, MagnetLink

SIZES = (100_000, 70_000, 40_000)
DEADLINE = 30.0


@pytest.mark.parametrize(
    ("version", "hashes"),
    [("v1", "v1"), ("hybrid", "v1"), ("hybrid", "v2"), ("hybrid", "both")],
)
async def test_magnet_with_x_pe(tmp_path: Path, version: Version, hashes: str) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, version)
    full = torrent.info.info_hash
    known = full if hashes == "both" else InfoHash(**{hashes: getattr(full, hashes)})
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            address = address_of(seeder)
            magnet = MagnetLink.from_info_hash(known, peers=[(str(address.host), address.port)])
            download = await leecher.add_torrent(magnet, TorrentOptions(down))
            assert download.status().phase is TorrentPhase.METADATA
            await download.wait_complete()
            assert download.info_hash == full  # the metadata told the other half
    assert same_files(folder, down / "album")

    # The metadata was kept: a new run needs no peer to know the torrent, and finds it done.
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as again:
            torrent_again = await again.add_torrent(
                MagnetLink.from_info_hash(known), TorrentOptions(down)
            )
            await torrent_again.wait_complete()
            assert torrent_again.status().name == "album"


async def test_magnet_select_only(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            magnet = MagnetLink.from_info_hash(torrent.info.info_hash, select_only=[1])
            download = await leecher.add_torrent(
                magnet, TorrentOptions(down, peers=(address_of(seeder),))
            )
            await download.wait_complete()
            status = download.status()
    wanted = set(torrent.info.geometry.file_pieces(1))
    assert status.total == sum(torrent.info.piece_size(p) for p in wanted)
    assert good_pieces(torrent.info, down) == wanted  # nothing else fetched
    [selected] = [e for i, e in enumerate(torrent.info.files) if i == 1]
    assert (down.joinpath(*selected.path)).read_bytes() == folder.parent.joinpath(
        *selected.path
    ).read_bytes()


async def test_v2_only_magnet_waits_for_piece_layers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Files over one piece need their piece layers, which a magnet does not carry: the download
    # asks its peers (BEP 52 hash requests) and, while none answers, says so and asks again.
    caplog.set_level(logging.INFO, logger="bip.client")
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v2")
    v2 = torrent.info.info_hash.v2
    assert v2 is not None
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder, metadata_timeout=0.5) as (seeder, leecher):
            seeder.layers.stop_serving(torrent.info.info_hash)  # it rejects hash requests now
            download = await leecher.add_torrent(
                MagnetLink.from_info_hash(InfoHash(v2=v2)),
                TorrentOptions(down, peers=(address_of(seeder),)),
            )
            while "piece layers not found yet" not in caplog.text:
                await trio.sleep(0.05)
            status = download.status()
            assert status.phase is TorrentPhase.METADATA
            assert status.name == "album"  # the metadata came; the layers did not
            seeder.layers.serve(torrent.info, torrent.piece_layers)
            await download.wait_complete()
            assert download.status().bad_pieces == 0
    assert same_files(folder, down / "album")
