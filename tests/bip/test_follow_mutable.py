"""``bip download`` of a BEP 46 link follows the publisher's updates: a newer version put to
the DHT while version 1 seeds is downloaded into the same directory (the files both list are
checked, not fetched again), then replaces version 1, whose data stays on disk. An older item
is ignored, and lookups that fail leave version 1 seeding; each said once in the log.

Everything runs in-process on loopback: a DHT of two nodes (a router and the publisher) plus
the downloader's, a seeding session with both versions, and the command's follower and its
status loop (:func:`bip._cmd_download.follow_versions`) on a session of their own."""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from _engine_helpers import LOOPBACK, address_of, loopback_config, make_torrent, until
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip._arguments import DEFAULT_FOLLOW_INTERVAL, follow_interval
from bip._cli import main
from bip._client import Session, Torrent, TorrentOptions, TorrentPhase, open_session
from bip._cmd_download import follow_versions, resolve_mutable_torrent
from bip._follow_mutable import MutableFollower, same_torrent
from bip_dht import DHT, MutableTorrent, open_dht
from bip_metainfo import InfoHash, Metainfo, MutableTorrentLink

DEADLINE = 20.0
SHARED = 100_000  # a.bin, in both versions: 3 whole pieces of 32 KiB, and a piece's start
OLD = 40_000  # old.bin, version 1 only
NEW = 30_000  # new.bin, version 2 only
SALT = b"album"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
# The bytes version 2 needs beyond what version 1 left: from the last whole piece of a.bin.
NEW_PART = SHARED + NEW - (SHARED // 32768) * 32768


def _album(root: Path, files: dict[str, int]) -> Path:
    rng = random.Random(9)
    data = {"a.bin": rng.randbytes(SHARED), "old.bin": rng.randbytes(OLD)}
    data["new.bin"] = rng.randbytes(NEW)
    folder = root / "album"
    folder.mkdir(parents=True)
    for name, size in files.items():
        (folder / name).write_bytes(data[name][:size])
    return folder


@dataclass
class Swarm:
    """The publisher's two versions, a session seeding both, and the DHT they are put in."""

    publisher: DHT
    downloader_dht: DHT
    seeder: Session
    v1: Metainfo
    v2: Metainfo
    link: MutableTorrentLink

    async def publish(self, torrent: Metainfo) -> None:
        await self.publisher.put_mutable_torrent(KEY, torrent.info.info_hash, salt=SALT)


@contextlib.asynccontextmanager
async def swarm(tmp_path: Path) -> AsyncIterator[Swarm]:
    v1_folder = _album(tmp_path / "seed1", {"a.bin": SHARED, "old.bin": OLD})
    v2_folder = _album(tmp_path / "seed2", {"a.bin": SHARED, "new.bin": NEW})
    v1, v2 = make_torrent(v1_folder, "v1"), make_torrent(v2_folder, "v1")
    link = MutableTorrentLink(KEY.public_key().public_bytes_raw(), salt=SALT)
    async with open_dht(LOOPBACK, rng=random.Random(1)) as router:
        [router_address] = router.addresses
        async with (
            open_dht(LOOPBACK, [router_address], rng=random.Random(2)) as publisher,
            open_dht(LOOPBACK, [router_address], rng=random.Random(3)) as downloader_dht,
            open_session(loopback_config()) as seeder,
        ):
            await publisher.bootstrap()
            await downloader_dht.bootstrap()
            for torrent, folder in ((v1, v1_folder), (v2, v2_folder)):
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
            yield Swarm(publisher, downloader_dht, seeder, v1, v2, link)


def _args(**changes: object) -> argparse.Namespace:
    """What ``follow_versions`` reads of ``bip download``'s options: seed until cancelled."""
    values: dict[str, object] = {
        "seed": True,
        "seed_ratio": None,
        "seed_time": None,
        "quiet": True,
    }
    values.update(changes)
    return argparse.Namespace(**values)


def _only(session: Session) -> Torrent:
    [torrent] = session.torrents
    return torrent


async def test_a_seeding_download_takes_the_next_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bip")
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net, open_session(loopback_config()) as session:
            await net.publish(net.v1)
            first = await resolve_mutable_torrent(net.downloader_dht, net.link)
            assert first.info_hash == net.v1.info.info_hash
            options = TorrentOptions(down, peers=(address_of(net.seeder),))
            follower = MutableFollower(
                session, net.downloader_dht, net.link, options, interval=0.1, timeout=5.0
            )
            await follower.start(first)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_versions, follower, _args())
                await until(follower.current.completed.is_set)
                v1 = follower.current
                assert v1.status().downloaded >= SHARED + OLD
                await net.publish(net.v2)  # seq 1
                await until(lambda: follower.current is not v1)
                await until(lambda: follower.previous is None)  # settled: v2 complete
                v2 = _only(session)
                assert same_torrent(v2.info_hash, net.v2.info.info_hash)
                assert v2.completed.is_set()
                assert follower.seq == 1  # the first put is seq 0
                # The shared pieces were checked, not fetched: only the new part came.
                assert NEW_PART <= v2.status().downloaded < NEW_PART + 32768
                nursery.cancel_scope.cancel()
    album = down / "album"
    for name in ("a.bin", "new.bin"):
        assert (album / name).read_bytes() == (tmp_path / "seed2" / "album" / name).read_bytes()
    # The file version 2 no longer lists is the user's: kept, and said so.
    assert (album / "old.bin").read_bytes() == (
        tmp_path / "seed1" / "album" / "old.bin"
    ).read_bytes()
    messages = [record.getMessage() for record in caplog.records]
    # Version 1 seeded while version 2 downloaded beside it.
    seeds_on = f"version 1 names {net.v2.info.info_hash}: downloading it into {down}"
    assert any(
        message.startswith(f"key {net.link.public_key.hex()}: {seeds_on} (") for message in messages
    )
    assert any("stay on disk" in message and "album/old.bin" in message for message in messages)


async def test_older_items_and_failed_lookups_keep_the_running_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip")  # the repeated failures: DEBUG only
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net, open_session(loopback_config()) as session:
            # Nothing is published under this salt: every lookup fails.
            gone = MutableTorrentLink(net.link.public_key, salt=b"withdrawn")
            options = TorrentOptions(down, peers=(address_of(net.seeder),))
            follower = MutableFollower(
                session, net.downloader_dht, gone, options, interval=0.05, timeout=5.0
            )
            public_key = net.link.public_key
            v1_hash = net.v1.info.info_hash
            await follower.start(MutableTorrent(v1_hash, 5, public_key, SALT))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_versions, follower, _args())
                await until(follower.current.completed.is_set)
                v1 = follower.current
                await until(lambda: _lookups(caplog) >= 3)
                # Older, or as old with another torrent, or the running one: all ignored,
                # each said once however many polls find it.
                v2_hash = net.v2.info.info_hash
                for seq, info_hash in ((4, v2_hash), (5, v2_hash), (7, v1_hash)):
                    for _ in range(3):
                        await follower.offer(MutableTorrent(info_hash, seq, public_key, SALT))
                assert follower.seq == 7  # the running version's own newer item
                assert _only(session) is v1
                assert follower.current is v1
                assert not follower.changed.is_set()
                nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once, not per poll
    assert "no torrent published" in warnings[0].getMessage()
    assert "version 5 carries on" in warnings[0].getMessage()
    key = f"key {public_key.hex()}: version "
    ignored = [r for r in caplog.records if r.getMessage().startswith(key)]
    assert len(ignored) == 3, [r.getMessage() for r in ignored]
    assert all(r.levelno == logging.INFO and "ignored" in r.getMessage() for r in ignored)


async def test_a_version_still_downloading_gives_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A newer version replaces one still downloading at once (never two writing the same
    files), and an item naming the version that still seeds drops the update under way."""
    caplog.set_level(logging.INFO, logger="bip")
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net, open_session(loopback_config()) as session:
            key = net.link.public_key
            v1_hash, v2_hash = net.v1.info.info_hash, net.v2.info.info_hash
            # Nobody serves version 1: it stays downloading (waiting for its metadata).
            seeding_v1 = net.seeder.find(v1_hash)
            assert seeding_v1 is not None
            await net.seeder.remove_torrent(seeding_v1)
            options = TorrentOptions(tmp_path / "down", peers=(address_of(net.seeder),))
            follower = MutableFollower(
                session, net.downloader_dht, net.link, options, interval=60.0, timeout=5.0
            )
            v1 = await follower.start(MutableTorrent(v1_hash, 0, key, SALT))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_versions, follower, _args())
                await follower.offer(MutableTorrent(v2_hash, 1, key, SALT))
                v2 = _only(session)  # version 1 removed before version 2 came in
                assert v2 is follower.current
                assert v1.status().phase is not TorrentPhase.FAILED
                assert _previous(follower) is None
                await until(v2.completed.is_set)
                # Version 1 again, and nobody serves it: version 2 seeds meanwhile...
                await follower.offer(MutableTorrent(v1_hash, 2, key, SALT))
                assert _previous(follower) is v2
                assert len(session.torrents) == 2
                # ... and an item naming version 2 again drops the update under way.
                await follower.offer(MutableTorrent(v2_hash, 3, key, SALT))
                assert _only(session) is v2
                assert follower.current is v2
                assert _previous(follower) is None
                await trio.sleep(0.05)  # the status loop goes on with version 2
                assert v2.status().phase is TorrentPhase.SEEDING
                nursery.cancel_scope.cancel()
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"version 3 names {v2_hash} again, seeding it" in m for m in messages)


def _previous(follower: MutableFollower) -> Torrent | None:
    """``follower.previous``, read afresh (no narrowing from an earlier assert)."""
    return follower.previous


def _lookups(caplog: pytest.LogCaptureFixture) -> int:
    """Failed lookups so far: the first warned, the next ones logged at DEBUG only."""
    return sum("no torrent published" in r.getMessage() for r in caplog.records)


def test_follow_interval_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert follow_interval("off") is None
    assert follow_interval(" 0 ") is None
    assert follow_interval("1h") == 3600.0
    assert follow_interval("10") == 10.0
    assert DEFAULT_FOLLOW_INTERVAL == 1800.0
    link = "magnet:?xs=urn:btpk:" + "ab" * 32
    assert main(["download", link, "--follow-interval", "2s"]) == 2
    assert "at least 10 seconds" in capsys.readouterr().err
    assert main(["download", "--help"]) == 0
    assert "--follow-interval" in capsys.readouterr().out


def test_same_torrent() -> None:
    hybrid = InfoHash(v1=bytes(20), v2=b"\x01" * 32)
    assert same_torrent(InfoHash(v1=bytes(20)), hybrid)
    assert same_torrent(InfoHash(v2=b"\x01" * 32), hybrid)
    assert not same_torrent(InfoHash(v1=b"\x02" * 20), hybrid)
