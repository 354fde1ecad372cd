"""A magnet link with nothing but an info-hash, resolved through a loopback DHT of our nodes:
the seed announces itself in the DHT, the leecher finds it there, fetches the metadata from it
(BEP 9) and downloads everything."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import trio
from _engine_helpers import LOOPBACK, loopback_config, make_torrent, same_files, write_content
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip._client import RESUME_DIRECTORY, TorrentOptions, open_session
from bip_dht import open_dht
from bip_handshake import Extensions
from bip_metainfo import InfoHash, MagnetLink, MutableTorrentLink

SIZES = (120_000, 50_000)
DEADLINE = 60.0


async def test_magnet_through_the_dht(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid")
    config = loopback_config(dht_interval=0.5)
    with trio.fail_after(DEADLINE):
        # A third node both know: the seed's announce is stored there, the leecher asks it.
        async with open_dht(LOOPBACK, rng=random.Random(1)) as router:
            [router_address] = router.addresses
            async with (
                open_dht(LOOPBACK, [router_address], rng=random.Random(2)) as seed_dht,
                open_dht(LOOPBACK, [router_address], rng=random.Random(3)) as leech_dht,
            ):
                await seed_dht.bootstrap()
                await leech_dht.bootstrap()
                async with (
                    open_session(config, dht=seed_dht) as seeder,
                    open_session(config, dht=leech_dht) as leecher,
                ):
                    seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                    await seeding.wait_complete()
                    magnet = MagnetLink.from_info_hash(torrent.info.info_hash)
                    download = await leecher.add_torrent(magnet, TorrentOptions(tmp_path / "down"))
                    await download.wait_complete()
                    assert Extensions.DHT in leecher.handshaker.extensions
    assert same_files(folder, tmp_path / "down" / "album")


async def test_magnet_commands_through_the_dht(tmp_path: Path) -> None:
    """``bip seed`` and ``bip download MAGNET`` (an info-hash, nothing else) meet in the DHT
    through a node both bootstrap from (``--dht-bootstrap``); the download saves its DHT
    state for the next run."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    torrent_path = tmp_path / "album.torrent"
    torrent_path.write_bytes(torrent.to_bytes())
    bip = [sys.executable, "-m", "bip"]
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with open_dht(LOOPBACK, rng=random.Random(4)) as router:
            [router_address] = router.addresses
            common = ["--no-trackers", "-q", "--port", "0", "--dht-bootstrap", str(router_address)]
            seed_argv = [*bip, "seed", str(torrent_path), str(folder.parent), *common]
            seed = await trio.lowlevel.open_process([*seed_argv, "--bind", "127.0.0.2"])
            try:
                while router.statistics().peers == 0:  # the seed announced itself
                    await trio.sleep(0.05)
                magnet = str(MagnetLink.from_info_hash(torrent.info.info_hash))
                download = await trio.run_process(
                    [*bip, "download", magnet, "--dir", str(down), *common, "--bind", "127.0.0.3"],
                    capture_stderr=True,
                    check=False,
                )
            finally:
                seed.kill()
                await seed.wait()
    assert download.returncode == 0, download.stderr.decode()
    assert same_files(folder, down / "album")
    assert (down / RESUME_DIRECTORY / "dht.state").is_file()


async def test_bep46_link_through_the_dht(tmp_path: Path) -> None:
    """``bip download magnet:?xs=urn:btpk:...``: the publisher's item names the torrent's
    current version (BEP 46); the download resolves it through the DHT, then finds the seed
    there as for any magnet link."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    torrent_path = tmp_path / "album.torrent"
    torrent_path.write_bytes(torrent.to_bytes())
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    link = MutableTorrentLink(key.public_key().public_bytes_raw(), salt=b"album")
    bip = [sys.executable, "-m", "bip"]
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with open_dht(LOOPBACK, rng=random.Random(5)) as router:
            [router_address] = router.addresses
            async with open_dht(LOOPBACK, [router_address], rng=random.Random(6)) as publisher:
                await publisher.bootstrap()
                # An older version first: the download must take the newest.
                await publisher.put_mutable_torrent(key, InfoHash(v1=bytes(20)), salt=b"album")
                stored = await publisher.put_mutable_torrent(
                    key, torrent.info.info_hash, salt=b"album"
                )
                assert stored.stored_at == 1  # at the router
            common = ["--no-trackers", "-q", "--port", "0", "--dht-bootstrap", str(router_address)]
            seed_argv = [*bip, "seed", str(torrent_path), str(folder.parent), *common]
            seed = await trio.lowlevel.open_process([*seed_argv, "--bind", "127.0.0.2"])
            try:
                while router.statistics().peers == 0:  # the seed announced itself
                    await trio.sleep(0.05)
                download = await trio.run_process(
                    [
                        *bip,
                        "download",
                        str(link),
                        "--dir",
                        str(down),
                        *common,
                        "--bind",
                        "127.0.0.3",
                    ],
                    capture_stderr=True,
                    check=False,
                )
                # Without the DHT the link cannot be resolved: a one-line error.
                refused = await trio.run_process(
                    [*bip, "download", str(link), "--dir", str(down), "--no-dht", "-q"],
                    capture_stderr=True,
                    check=False,
                )
            finally:
                seed.kill()
                await seed.wait()
    assert download.returncode == 0, download.stderr.decode()
    assert same_files(folder, down / "album")
    assert refused.returncode == 1
    assert b"drop --no-dht" in refused.stderr
