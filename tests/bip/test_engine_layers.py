"""v2-only magnet links: the piece layers (BEP 52) fetched from the peers after the metadata,
kept with it for the next run, and served on to other peers; hybrids do not wait for them."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)

from bip._client import Torrent, TorrentOptions, TorrentPhase, open_session
from bip._client._resume import ResumeStore
from bip._client._torrent import layers_missing, must_fetch_layers
from bip_metainfo import InfoHash, MagnetLink, Metainfo

# Three files over one 32 KiB piece (a layer each, of 10, 3 and 5 hashes), one file of exactly
# one piece and a tiny one (their roots are their piece hashes: no layer).
SIZES = (300_000, 70_000, 32768, 5, 140_000)
DEADLINE = 30.0


def v2_magnet(torrent: Metainfo, *peers: tuple[str, int]) -> MagnetLink:
    """A magnet link with the v2 hash alone (``xt=urn:btmh:1220...``) and ``x.pe`` peers."""
    v2 = torrent.info.info_hash.v2
    assert v2 is not None
    return MagnetLink.from_info_hash(InfoHash(v2=v2), peers=list(peers))


def assert_complete(download: Torrent, torrent: Metainfo) -> None:
    status = download.status()
    assert status.complete
    assert status.pieces == status.num_pieces == torrent.info.num_pieces
    assert status.bad_pieces == 0


def test_which_torrents_wait_for_layers(tmp_path: Path) -> None:
    folder = write_content(tmp_path, SIZES)
    v2 = make_torrent(folder, "v2")
    assert len(v2.piece_layers) == 3  # the sizes make layers to fetch
    assert must_fetch_layers(v2.info, {})
    assert not must_fetch_layers(v2.info, v2.piece_layers)
    hybrid = make_torrent(folder, "hybrid")
    assert layers_missing(hybrid.info, {})  # not served...
    assert not must_fetch_layers(hybrid.info, {})  # ...but SHA-1 checks it: no wait
    assert not layers_missing(make_torrent(folder, "v1").info, {})
    small = make_torrent(write_content(tmp_path / "small", (32768, 100)), "v2")
    assert not small.piece_layers
    assert not must_fetch_layers(small.info, {})  # its roots are its pieces' hashes


async def test_store_keeps_layers_with_the_metadata(tmp_path: Path) -> None:
    torrent = make_torrent(write_content(tmp_path, SIZES), "v2")
    store = ResumeStore(tmp_path / "down", torrent.info.info_hash)
    await store.save_info(torrent.info, torrent.piece_layers)
    saved = await store.load_metadata()
    assert saved is not None
    assert saved[0].info_hash == torrent.info.info_hash
    assert saved[1] == torrent.piece_layers
    # The file is a .torrent any reader takes, layers included.
    assert Metainfo.from_file(store.torrent_path).piece_layers == torrent.piece_layers
    # A layer spoilt on disk is not trusted: the metadata and layers are fetched again.
    layer = next(iter(torrent.piece_layers.values()))
    data = store.torrent_path.read_bytes()
    store.torrent_path.write_bytes(data.replace(layer, bytes(len(layer))))
    assert await store.load_metadata() is None


async def test_store_refuses_a_foreign_or_damaged_file(tmp_path: Path) -> None:
    """Whatever sits at ``.bip/HASH.torrent`` is checked, never trusted: another torrent's
    file, a cut one or garbage gives None, and the metadata is fetched again."""
    torrent = make_torrent(write_content(tmp_path / "one", SIZES), "v2")
    other = make_torrent(write_content(tmp_path / "two", (*SIZES, 1)), "v2")
    store = ResumeStore(tmp_path / "down", torrent.info.info_hash)
    await ResumeStore(tmp_path / "down", other.info.info_hash).save_info(
        other.info, other.piece_layers
    )
    foreign = ResumeStore(tmp_path / "down", other.info.info_hash).torrent_path.read_bytes()
    await store.save_info(torrent.info, torrent.piece_layers)
    good = store.torrent_path.read_bytes()
    for data in (foreign, good[: len(good) // 2], good[:-1], b"", b"garbage", b"d4:infoi1ee"):
        store.torrent_path.write_bytes(data)
        assert await store.load_metadata() is None
        assert await store.load_info() is None
    store.torrent_path.unlink()
    assert await store.load_metadata() is None


async def test_v2_only_magnet_downloads_and_keeps_layers(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v2")
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            assert seeder.layers.serving(torrent.info.info_hash)
            address = address_of(seeder)
            magnet = v2_magnet(torrent, (str(address.host), address.port))
            download = await leecher.add_torrent(magnet, TorrentOptions(down))
            await download.wait_complete()
            assert_complete(download, torrent)
            assert download.info_hash == torrent.info.info_hash
            # Now it serves the layers it fetched, as a seed from the .torrent does.
            assert leecher.layers.serving(torrent.info.info_hash)
    assert same_files(folder, down / "album")
    saved = await ResumeStore(down, torrent.info.info_hash).load_metadata()
    assert saved is not None
    info, layers = saved
    assert info.info_hash == torrent.info.info_hash
    assert layers == torrent.piece_layers

    # A new run knows the torrent and its layers from the saved file: with no peer at all to
    # ask, it checks the data (v2, every file) and finds it complete.
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as again:
            restarted = await again.add_torrent(v2_magnet(torrent), TorrentOptions(down))
            await restarted.wait_complete()
            assert_complete(restarted, torrent)
            assert again.layers.serving(torrent.info.info_hash)


async def test_layers_saved_without_metadata_fetch(tmp_path: Path) -> None:
    """Metadata kept by a run that stopped before the layers came: only the layers are
    fetched, and the file is rewritten with them."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v2")
    down = tmp_path / "down"
    store = ResumeStore(down, torrent.info.info_hash)
    await store.save_info(torrent.info)
    saved = await store.load_metadata()
    assert saved is not None
    assert saved[1] == {}
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await leecher.add_torrent(
                v2_magnet(torrent), TorrentOptions(down, peers=(address_of(seeder),))
            )
            await download.wait_complete()
            assert_complete(download, torrent)
            assert leecher.metadata.statistics().pieces_fetched == 0
    saved = await store.load_metadata()
    assert saved is not None
    assert saved[1] == torrent.piece_layers


async def test_fetched_layers_are_served_on(tmp_path: Path) -> None:
    """A chain: the seed has the .torrent; the first download has only the magnet and the seed;
    the second has only the magnet and the first download, which must serve both the metadata
    and the layers it fetched."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v2")
    with trio.fail_after(DEADLINE):
        async with (
            seeder_and_leecher(torrent, folder) as (seeder, middle),
            open_session(loopback_config()) as last,
        ):
            first = await middle.add_torrent(
                v2_magnet(torrent), TorrentOptions(tmp_path / "one", peers=(address_of(seeder),))
            )
            await first.wait_complete()
            second = await last.add_torrent(
                v2_magnet(torrent), TorrentOptions(tmp_path / "two", peers=(address_of(middle),))
            )
            await second.wait_complete()
            assert_complete(second, torrent)
            # The second got its layers from the first, which answered from fetched ones.
            assert last.layers.statistics().chunks_fetched > 0
            assert middle.layers.statistics().requests_answered > 0
            assert middle.layers.statistics().requests_rejected == 0
    assert same_files(folder, tmp_path / "two" / "album")


@pytest.mark.parametrize("hashes", ["v1", "v2"])
async def test_hybrid_magnet_does_not_wait_for_layers(tmp_path: Path, hashes: str) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid")
    full = torrent.info.info_hash
    known = InfoHash(**{hashes: getattr(full, hashes)})
    magnet = MagnetLink.from_info_hash(known)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await leecher.add_torrent(
                magnet, TorrentOptions(down, peers=(address_of(seeder),))
            )
            await download.wait_complete()
            assert_complete(download, torrent)
            assert download.info_hash == full
    assert same_files(folder, down / "album")
    saved = await ResumeStore(down, known).load_metadata()  # named by the magnet's hash
    assert saved is not None
    assert saved[1] == {}


async def test_closed_torrent_stops_serving_layers(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v2")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            assert seeding.status().phase is TorrentPhase.SEEDING
            assert session.layers.serving(torrent.info.info_hash)
            await seeding.close()
            assert not session.layers.serving(torrent.info.info_hash)
