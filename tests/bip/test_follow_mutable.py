"""``bip download`` of a BEP 46 link follows the publisher's updates.

A newer version put to the DHT while version 1 runs has its metadata fetched first (version 1
runs on meanwhile); then version 1 is removed, its data kept, and only then version 2 added
into the same directory: it checks the files both list (not fetched again) and downloads the
rest. Two versions never run at once on the same paths, and going back to an earlier version
checks its data afresh. An update nobody serves is dropped after a bounded wait, one that
fails gives way to the version before it; older items and failed lookups change nothing; each
said once in the log. The seeding limits follow the version running.

Everything runs in-process on loopback: a DHT of our own nodes, a seeding session with the
versions, and the command's follower and its status loop
(:func:`bip._cmd_download.follow_versions`) on a session of their own; once, the whole
command path (``_download``) with a patched floor for ``--follow-interval``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
from _engine_helpers import LOOPBACK, Version, address_of, loopback_config, make_torrent, until
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip import _arguments
from bip._arguments import DEFAULT_FOLLOW_INTERVAL, follow_interval
from bip._cli import build_parser, main
from bip._client import Session, Torrent, TorrentError, TorrentOptions, open_session
from bip._cmd_dht import lookup_mutable_torrent
from bip._cmd_download import (
    _download,
    config_from_args,
    follow_interval_of,
    follow_versions,
    resolve_mutable_torrent,
)
from bip._errors import CLIError, find_expected
from bip._follow_mutable import MAX_METADATA_WAIT, MutableFollower, same_torrent
from bip_dht import DHT, DHTConfig, MutableTorrent, open_dht
from bip_handshake import NodeInfo, PeerAddress
from bip_metainfo import InfoHash, MagnetLink, Metainfo, MutableTorrentLink

DEADLINE = 20.0
PIECE = 32768
SALT = b"album"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_KEY = KEY.public_key().public_bytes_raw()
_DATA = random.Random(9)
SHARED = _DATA.randbytes(100_000)  # a.bin of both versions: 3 whole pieces, and a piece's start
OLD = _DATA.randbytes(40_000)  # old.bin, version 1 only
NEW = _DATA.randbytes(30_000)  # new.bin, version 2 only
# The bytes version 2 needs beyond what version 1 left: from the last whole piece of a.bin.
NEW_PART = len(SHARED) + len(NEW) - (len(SHARED) // PIECE) * PIECE
NOBODY = InfoHash(v1=bytes(range(20)))  # a version no peer has


def _album(root: Path, files: dict[str, bytes]) -> Path:
    folder = root / "album"
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


@dataclass
class Swarm:
    """The publisher's two versions, a session seeding them, the DHT they are put in, and
    the downloader's session, whose every add is recorded."""

    router: DHT
    publisher: DHT
    downloader_dht: DHT
    seeder: Session
    session: Session
    v1: Metainfo
    v2: Metainfo
    link: MutableTorrentLink
    down: Path
    adds: list[tuple[InfoHash, bool, tuple[InfoHash, ...]]]
    """Each add to ``session``: (info-hash, a probe, the torrents there before it)."""

    async def publish(self, torrent: Metainfo | InfoHash) -> None:
        info_hash = torrent if isinstance(torrent, InfoHash) else torrent.info.info_hash
        await self.publisher.put_mutable_torrent(KEY, info_hash, salt=SALT)

    def item(self, torrent: Metainfo | InfoHash, seq: int) -> MutableTorrent:
        info_hash = torrent if isinstance(torrent, InfoHash) else torrent.info.info_hash
        return MutableTorrent(info_hash, seq, PUBLIC_KEY, SALT)

    def follower(self, *, resume: bool = True, **changes: Any) -> MutableFollower:
        settings: dict[str, Any] = {"interval": 600.0, "timeout": 5.0}
        settings.update(changes)
        options = TorrentOptions(self.down, peers=(address_of(self.seeder),), resume=resume)
        return MutableFollower(self.session, self.downloader_dht, self.link, options, **settings)

    def real_adds(self, torrent: Metainfo | InfoHash) -> list[tuple[InfoHash, ...]]:
        """What was in the session at each add of ``torrent`` that was not a probe."""
        info_hash = torrent if isinstance(torrent, InfoHash) else torrent.info.info_hash
        return [
            present
            for added, probe, present in self.adds
            if not probe and same_torrent(added, info_hash)
        ]


@contextlib.asynccontextmanager
async def swarm(
    tmp_path: Path,
    v1_files: dict[str, bytes] | None = None,
    v2_files: dict[str, bytes] | None = None,
    *,
    serve: tuple[bool, bool] = (True, True),
    v2_kind: Version = "v1",
) -> AsyncIterator[Swarm]:
    """``serve``: whether the seeder has version 1, version 2; ``v2_kind``: version 2's
    metadata (version 1 is a v1 torrent)."""
    v1_folder = _album(tmp_path / "seed1", v1_files or {"a.bin": SHARED, "old.bin": OLD})
    v2_folder = _album(tmp_path / "seed2", v2_files or {"a.bin": SHARED, "new.bin": NEW})
    v1, v2 = make_torrent(v1_folder, "v1"), make_torrent(v2_folder, v2_kind)
    link = MutableTorrentLink(PUBLIC_KEY, salt=SALT)
    async with open_dht(LOOPBACK, rng=random.Random(1)) as router:
        [router_address] = router.addresses
        async with (
            open_dht(LOOPBACK, [router_address], rng=random.Random(2)) as publisher,
            open_dht(LOOPBACK, [router_address], rng=random.Random(3)) as downloader_dht,
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as session,
        ):
            await publisher.bootstrap()
            await downloader_dht.bootstrap()
            for torrent, folder, served in ((v1, v1_folder, serve[0]), (v2, v2_folder, serve[1])):
                if served:
                    seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                    await seeding.wait_complete()
            adds: list[tuple[InfoHash, bool, tuple[InfoHash, ...]]] = []
            add_torrent = session.add_torrent

            async def recorded(source: Metainfo | MagnetLink, options: TorrentOptions) -> Torrent:
                info_hash = source.info_hash if isinstance(source, MagnetLink) else None
                info_hash = info_hash or cast(Metainfo, source).info.info_hash
                present = tuple(torrent.info_hash for torrent in session.torrents)
                adds.append((info_hash, options.storage is not None, present))
                return await add_torrent(source, options)

            session.add_torrent = recorded  # type: ignore[method-assign]
            yield Swarm(
                router,
                publisher,
                downloader_dht,
                seeder,
                session,
                v1,
                v2,
                link,
                tmp_path / "down",
                adds,
            )


def _args(**changes: object) -> argparse.Namespace:
    """What ``follow_versions`` reads of ``bip download``'s options: seed until cancelled."""
    values: dict[str, object] = {"seed": True, "seed_ratio": None, "seed_time": None}
    values["quiet"] = True
    values.update(changes)
    return argparse.Namespace(**values)


def _only(session: Session) -> Torrent:
    [torrent] = session.torrents
    return torrent


def _messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bip" and r.levelno == level]


async def _returns(job: Callable[[], Awaitable[int]], into: list[int]) -> None:
    into.append(await job())


async def test_a_seeding_download_takes_the_next_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bip")
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net:
            await net.publish(net.v1)
            first = await resolve_mutable_torrent(net.downloader_dht, net.link)
            assert first.info_hash == net.v1.info.info_hash
            follower = net.follower(interval=0.1)
            await follower.start(first)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_versions, follower, _args())
                await until(follower.current.completed.is_set)
                v1 = follower.current
                assert v1.status().downloaded >= len(SHARED) + len(OLD)
                await net.publish(net.v2)  # seq 1, found by the next poll
                await until(lambda: follower.current is not v1)
                v2 = follower.current
                await until(v2.completed.is_set)
                assert _only(net.session) is v2
                assert same_torrent(v2.info_hash, net.v2.info.info_hash)
                assert follower.seq == 1  # the first put is seq 0
                # The shared pieces were checked, not fetched: only the new part came.
                assert NEW_PART <= v2.status().downloaded < NEW_PART + PIECE
                nursery.cancel_scope.cancel()
    # Version 1 ran while version 2's metadata came (the probe's add), and was gone before
    # version 2 was added for real.
    [(_, _probe, present)] = [add for add in net.adds if add[1]]
    assert present == (v1.info_hash,)
    assert net.real_adds(net.v2) == [()]
    album = net.down / "album"
    assert (album / "a.bin").read_bytes() == SHARED
    assert (album / "new.bin").read_bytes() == NEW
    assert (album / "old.bin").read_bytes() == OLD  # the user's: kept, and said so
    messages = _messages(caplog)
    key = f"key {net.link.public_key.hex()}: "
    assert f"{key}version 1 names {net.v2.info.info_hash}: fetching its metadata" in "\n".join(
        messages
    )
    assert any(
        m.startswith(f"{key}version 1 ({net.v2.info.info_hash}): metadata known") for m in messages
    )
    assert any("stay on disk" in message and "album/old.bin" in message for message in messages)


async def test_a_shared_path_changed_and_a_flap_back_are_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 2 writes a.bin with other bytes: version 1 no longer seeds by then; an item
    naming version 1 again adds it afresh, whose check finds a.bin changed and fetches it."""
    caplog.set_level(logging.INFO, logger="bip")
    rng = random.Random(5)
    x, y = rng.randbytes(100_000), rng.randbytes(100_000)
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path, {"a.bin": x}, {"a.bin": y}) as net:
            follower = net.follower()
            v1 = await follower.start(net.item(net.v1, 0))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_versions, follower, _args())
                await v1.wait_complete()
                await follower.offer(net.item(net.v2, 1))
                v2 = follower.current
                assert v2 is not v1
                await v2.wait_complete()
                assert (net.down / "album" / "a.bin").read_bytes() == y
                await follower.offer(net.item(net.v1, 2))  # the publisher goes back
                again = follower.current
                assert again is not v1  # a fresh add, not the old torrent trusted
                await again.wait_complete()
                assert again.status().downloaded >= len(x)  # checked: every piece was bad
                assert _only(net.session) is again
                nursery.cancel_scope.cancel()
    assert (net.down / "album" / "a.bin").read_bytes() == x
    # No version was ever added beside another (a probe aside).
    assert net.real_adds(net.v2) == [()]
    assert net.real_adds(net.v1) == [(), ()]


async def test_an_update_nobody_serves_leaves_the_running_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While an update waits for its metadata, the running version downloads, completes and
    seeds to its limit (the command ends, 0); the wait is bounded, the update then dropped
    once and not tried again before a newer item."""
    caplog.set_level(logging.INFO, logger="bip")
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net:
            follower = net.follower(metadata_wait=30.0)
            v1 = await follower.start(net.item(net.v1, 0))
            returned: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follower.offer, net.item(NOBODY, 1))  # before v1 completes
                await until(lambda: follower.updating is not None)
                await _returns(lambda: follow_versions(follower, _args(seed_time=0.2)), returned)
                assert returned == [0]
                assert follower.current is v1
                assert v1.completed.is_set()
                assert follower.updating is not None  # still waiting: cancelled with the command
                nursery.cancel_scope.cancel()
            assert _only(net.session) is v1  # the probe went with it
            assert not any("dropped" in m for m in _messages(caplog, logging.WARNING))

            # Bounded: dropped after the wait, said once; as old an item is not tried again.
            follower = net.follower(metadata_wait=0.1)
            await net.session.remove_torrent(v1)
            v1 = await follower.start(net.item(net.v1, 0))
            for seq in (1, 1, 0):
                await follower.offer(net.item(NOBODY, seq))
            assert follower.current is v1
            assert len([add for add in net.adds if add[1]]) == 2  # the first run's, this one
            await follower.offer(net.item(NOBODY, 2))  # a newer item: tried again
            assert len([add for add in net.adds if add[1]]) == 3
            assert _only(net.session) is v1
    dropped = [m for m in _messages(caplog, logging.WARNING) if "dropped" in m]
    assert len(dropped) == 2, dropped
    assert f"version 1 ({NOBODY}) dropped: no peer sent its metadata within" in dropped[0]
    assert "version 0 carries on" in dropped[0]
    assert any("version 1 was given up" in m for m in _messages(caplog))


async def test_a_failing_update_gives_way_to_the_version_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 2 writes album/x/y where version 1 left a file album/x: it fails, is removed,
    and version 1 is added back (checked: complete) and seeds on; version 2 is not tried
    again at the same seq."""
    caplog.set_level(logging.INFO, logger="bip")
    common = {"a.bin": SHARED}
    with trio.fail_after(DEADLINE):
        async with swarm(
            tmp_path, {**common, "x": b"z" * 10}, {**common, "x/y": b"w" * 40_000}
        ) as net:
            follower = net.follower()
            v1 = await follower.start(net.item(net.v1, 0))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_versions, follower, _args())
                await v1.wait_complete()
                await follower.offer(net.item(net.v2, 1))
                v2 = follower.current
                await until(lambda: follower.current is not v2)
                back = follower.current
                assert same_torrent(back.info_hash, net.v1.info.info_hash)
                assert back is not v1
                await back.wait_complete()
                assert back.status().downloaded == 0  # its data checked: all there
                assert _only(net.session) is back
                await follower.offer(net.item(net.v2, 1))  # as old: ignored
                assert _only(net.session) is back
                await trio.sleep(0.05)
                assert not nursery.cancel_scope.cancel_called  # the command runs on
                nursery.cancel_scope.cancel()
    [warning] = _messages(caplog, logging.WARNING)
    assert f"version 1 ({net.v2.info.info_hash}) failed: " in warning
    assert "Not a directory" in warning
    assert "Version 0 " in warning
    assert net.real_adds(net.v1) == [(), ()]


@pytest.mark.parametrize("resume", [True, False])
async def test_a_version_restored_needs_no_peer_for_its_metadata(
    tmp_path: Path, resume: bool
) -> None:
    """The publisher seeds version 2 only; version 2 fails (album/x/y where album/x is a
    file): version 1 comes back from the metadata kept, with or without --no-resume (was:
    fetched from peers again, with no end), is complete, and the command ends."""
    common = {"a.bin": SHARED}
    with trio.fail_after(DEADLINE):
        async with swarm(
            tmp_path, {**common, "x": b"z" * 10}, {**common, "x/y": b"w" * 40_000}
        ) as net:
            follower = net.follower(resume=resume)
            v1 = await follower.start(net.item(net.v1, 0))
            returned: list[int] = []
            # Version 1 seeds until the update takes its place (was 0.1 s from its completion:
            # under load the update's metadata came later, the command ended with version 1,
            # and nobody was left to put it back when version 2 failed); the version put back
            # seeds 0.1 s, then the command ends. seed_on reads the limit as it starts.
            args = _args(seed_time=DEADLINE)
            async with trio.open_nursery() as nursery:
                job = lambda: follow_versions(follower, args)  # noqa: E731
                nursery.start_soon(_returns, job, returned)
                await v1.wait_complete()
                [old] = [t for t in net.seeder.torrents if same_torrent(t.info_hash, v1.info_hash)]
                await net.seeder.remove_torrent(old)  # the publisher moved on
                await follower.offer(net.item(net.v2, 1))
                v2 = follower.current
                assert not same_torrent(v2.info_hash, v1.info_hash)  # swapped in
                args.seed_time = 0.1
                await until(lambda: follower.current is not v2)
                back = follower.current
                await until(lambda: bool(returned))
            assert returned == [0]
            assert same_torrent(back.info_hash, net.v1.info.info_hash)
            assert back.completed.is_set()
            # Version 1's once (its first add), version 2's once (the probe): no more.
            assert net.session.metadata.statistics().pieces_fetched == 2
            assert not (net.down / ".bip" / f"{net.v2.info.info_hash.hex()}.torrent").exists()


async def test_a_v2_update_fetches_its_metadata_and_layers_once(tmp_path: Path) -> None:
    """A v2-only version (--no-resume): the probe fetches its info dictionary and its piece
    layers; the version added after it asks for neither again (was: both, with no end)."""
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path, v2_kind="v2") as net:
            follower = net.follower(resume=False)
            v1 = await follower.start(net.item(net.v1, 0))
            await v1.wait_complete()
            await follower.offer(net.item(net.v2, 1))
            v2 = follower.current
            await v2.wait_complete()
            assert NEW_PART <= v2.status().downloaded < NEW_PART + PIECE
            assert (net.down / "album" / "new.bin").read_bytes() == NEW
            # One metadata piece per version (version 1's add, version 2's probe), and one
            # layer (a.bin's: new.bin fits a piece) requested once.
            assert net.session.metadata.statistics().pieces_fetched == 2
            assert net.session.layers.statistics().chunks_fetched == 1
            assert v2.metainfo is not None  # added from the probe's metadata
            assert v2.metainfo.piece_layers == net.v2.piece_layers != {}


async def test_a_version_refused_leaves_no_metadata_file(tmp_path: Path) -> None:
    """The session refuses version 2 after its metadata was saved under DIR/.bip: the file
    goes with it, and version 1 comes back."""
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net:
            follower = net.follower()
            v1 = await follower.start(net.item(net.v1, 0))
            await v1.wait_complete()
            add_torrent = net.session.add_torrent
            saved = net.down / ".bip" / f"{net.v2.info.info_hash.hex()}.torrent"
            seen: list[bool] = []

            async def refuse(source: Metainfo | MagnetLink, options: TorrentOptions) -> Torrent:
                if isinstance(source, Metainfo) and source.info.info_hash == net.v2.info.info_hash:
                    seen.append(saved.exists())
                    raise TorrentError("the session is closing")
                return await add_torrent(source, options)

            net.session.add_torrent = refuse  # type: ignore[method-assign]
            await follower.offer(net.item(net.v2, 1))
            assert seen == [True]  # saved before the add
            assert not saved.exists()
            back = follower.current
            assert same_torrent(back.info_hash, net.v1.info.info_hash)
            await back.wait_complete()


async def test_the_first_version_failing_is_fatal(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net:
            net.down.mkdir()
            (net.down / "album").write_bytes(b"a file where the torrent's folder goes")
            follower = net.follower()
            await follower.start(net.item(net.v1, 0))
            with pytest.raises(BaseExceptionGroup) as caught:
                await follow_versions(follower, _args())
    error = find_expected(caught.value)
    assert isinstance(error, CLIError), caught.value
    assert "Not a directory" in str(error)


async def test_the_seeding_limits_follow_the_new_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--seed-time counts from the new version's completion, --seed-ratio its uploads."""
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net:
            follower = net.follower()
            v1 = await follower.start(net.item(net.v1, 0))
            returned: list[int] = []
            async with trio.open_nursery() as nursery:
                job = lambda: follow_versions(follower, _args(seed_time=0.4))  # noqa: E731
                nursery.start_soon(_returns, job, returned)
                await v1.wait_complete()
                await follower.offer(net.item(net.v2, 1))
                swapped = trio.current_time()  # the new version is added, not complete yet
                await until(lambda: bool(returned))
                ended = trio.current_time()
            assert returned == [0]
            assert ended >= swapped + 0.4
            assert follower.current.completed.is_set()

            # The ratio: version 2 complete, seeding, ends only once it uploaded its size.
            await net.session.remove_torrent(_only(net.session))
            follower = net.follower()
            v1 = await follower.start(net.item(net.v1, 0))
            returned.clear()
            capsys.readouterr()
            async with (
                trio.open_nursery() as nursery,
                open_session(loopback_config()) as leecher,
            ):
                job = lambda: follow_versions(follower, _args(seed_ratio=1.0, quiet=False))  # noqa: E731
                nursery.start_soon(_returns, job, returned)
                await v1.wait_complete()
                await follower.offer(net.item(net.v2, 1))
                v2 = follower.current
                await v2.wait_complete()
                await trio.sleep(0.1)
                assert not returned  # version 1's uploads (none) or version 2's: not yet
                options = TorrentOptions(tmp_path / "leech", peers=(address_of(net.session),))
                fetch = await leecher.add_torrent(net.v2, options)
                await fetch.wait_complete()
                await until(lambda: bool(returned))
            assert returned == [0]
            assert v2.status().uploaded >= v2.status().total
            assert "seed ratio 1 reached" in capsys.readouterr().err


async def test_the_command_follows_a_bep46_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The whole ``bip download LINK`` path: version 1, which nobody serves, gives way to
    version 2 put to the DHT while the command runs; the command ends once it is complete."""
    caplog.set_level(logging.INFO, logger="bip")
    monkeypatch.setattr(_arguments, "MIN_FOLLOW_INTERVAL", 0.05)
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path, serve=(False, True)) as net:
            await net.publish(net.v1)
            [router] = net.router.addresses
            argv = ["download", str(net.link), "--dir", str(net.down), "--bind", LOOPBACK]
            argv += ["--port", "0", "--no-trackers", "--dht-bootstrap", str(router), "-q"]
            argv += ["--peer", str(address_of(net.seeder)), "--follow-interval", "0.5"]
            args = build_parser().parse_args(argv)
            returned: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _returns, lambda: _download(args, config_from_args(args)), returned
                )
                resolved = f"names {net.v1.info.info_hash} (version 0)"
                await until(lambda: any(resolved in m for m in _messages(caplog)))
                await net.publish(net.v2)
                await until(lambda: bool(returned))
    assert returned == [0]
    assert (net.down / "album" / "new.bin").read_bytes() == NEW
    assert (net.down / "album" / "a.bin").read_bytes() == SHARED


async def test_older_items_and_failed_lookups_keep_the_running_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip")  # the repeated failures: DEBUG only
    with trio.fail_after(DEADLINE):
        async with swarm(tmp_path) as net:
            # Nothing is published under this salt: every lookup fails.
            gone = MutableTorrentLink(net.link.public_key, salt=b"withdrawn")
            options = TorrentOptions(net.down, peers=(address_of(net.seeder),))
            follower = MutableFollower(
                net.session, net.downloader_dht, gone, options, interval=0.05, timeout=5.0
            )
            v1_hash = net.v1.info.info_hash
            await follower.start(net.item(net.v1, 5))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_versions, follower, _args())
                await until(follower.current.completed.is_set)
                v1 = follower.current
                await until(lambda: _lookups(caplog) >= 3)
                # Older, or as old with another torrent, or the running one: all ignored,
                # each said once however many polls find it.
                for seq, info_hash in ((4, net.v2.info.info_hash), (5, net.v2.info.info_hash)):
                    for _ in range(3):
                        await follower.offer(net.item(info_hash, seq))
                for _ in range(3):
                    await follower.offer(net.item(v1_hash, 7))
                assert follower.seq == 7  # the running version's own newer item
                assert _only(net.session) is v1
                assert follower.current is v1
                assert not follower.changed.is_set()
                nursery.cancel_scope.cancel()
    warnings = _messages(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings  # once, not per poll
    assert "no DHT node returned an item for key" in warnings[0]
    assert "version 5 carries on" in warnings[0]
    key = f"key {net.link.public_key.hex()}: version "
    ignored = [m for m in _messages(caplog) if m.startswith(key)]
    assert len(ignored) == 3, ignored
    assert all("ignored" in m for m in ignored)


def _lookups(caplog: pytest.LogCaptureFixture) -> int:
    """Failed lookups so far: the first warned, the next ones logged at DEBUG only."""
    return sum("no DHT node returned an item" in r.getMessage() for r in caplog.records)


def test_follow_interval_option(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bip")
    for off in ("off", " 0 ", "0s", "0.0", "0m0s", "OFF"):
        assert follow_interval(off) == 0.0, off
    assert follow_interval("1h") == 3600.0
    assert follow_interval("10") == 10.0
    link = "magnet:?xs=urn:btpk:" + "ab" * 32
    assert main(["download", link, "--follow-interval", "2s"]) == 2
    assert "at least 10 seconds" in capsys.readouterr().err
    assert main(["download", "--help"]) == 0
    assert "--follow-interval" in capsys.readouterr().out
    # Not given: the default, for a BEP 46 link only; 0: not followed.
    mutable = MutableTorrentLink(PUBLIC_KEY)
    parse = build_parser().parse_args
    assert follow_interval_of(parse(["download", link]), mutable) == DEFAULT_FOLLOW_INTERVAL
    assert follow_interval_of(parse(["download", link, "--follow-interval", "0s"]), mutable) is None
    assert follow_interval_of(parse(["download", link, "--follow-interval", "1m"]), mutable) == 60
    caplog.clear()
    assert follow_interval_of(parse(["download", "x.torrent"]), None) is None
    assert not caplog.records  # nothing to say
    plain = parse(["download", "x.torrent", "--follow-interval", "1m"])
    assert follow_interval_of(plain, None) is None
    [record] = caplog.records
    assert record.getMessage().startswith("--follow-interval applies to BEP 46 links")
    # The wait for an update's metadata: 10 minutes, or the interval if shorter.
    nothing = cast(Any, None)
    options = TorrentOptions(Path("down"))
    long = MutableFollower(nothing, nothing, mutable, options, interval=3600.0, timeout=5.0)
    short = MutableFollower(nothing, nothing, mutable, options, interval=60.0, timeout=5.0)
    assert (long.metadata_wait, short.metadata_wait) == (MAX_METADATA_WAIT, 60.0) == (600.0, 60.0)
    with pytest.raises(ValueError, match="metadata_wait"):
        MutableFollower(nothing, nothing, mutable, options, interval=60, timeout=5, metadata_wait=0)


def test_same_torrent() -> None:
    hybrid = InfoHash(v1=bytes(20), v2=b"\x01" * 32)
    assert same_torrent(InfoHash(v1=bytes(20)), hybrid)
    assert same_torrent(InfoHash(v2=b"\x01" * 32), hybrid)
    assert not same_torrent(InfoHash(v1=b"\x02" * 20), hybrid)


@contextlib.asynccontextmanager
async def published(
    item: InfoHash, *, joined: bool = True
) -> AsyncIterator[tuple[DHT, MutableFollower]]:
    """A router holding the publisher's item for ``item`` (put before the follower's DHT
    joined, so that only the network has it), and a follower whose DHT knows the router:
    yields the follower's DHT and the follower (no session: only its lookups run). With
    ``joined``, the DHT's bootstrap has ended; else open_dht's own is under way."""
    async with open_dht(LOOPBACK, rng=random.Random(1)) as router:
        [router_address] = router.addresses
        async with open_dht(LOOPBACK, [router_address], rng=random.Random(2)) as publisher:
            await publisher.bootstrap()
            await publisher.put_mutable_torrent(KEY, item, salt=SALT)
        async with open_dht(LOOPBACK, [router_address], rng=random.Random(3)) as dht:
            if joined:
                await dht.bootstrap()
            link = MutableTorrentLink(PUBLIC_KEY, salt=SALT)
            nothing = cast(Any, None)
            options = TorrentOptions(Path("down"))
            follower = MutableFollower(nothing, dht, link, options, interval=600.0, timeout=5.0)
            yield dht, follower


def _spy_bootstraps(dht: DHT, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bootstraps the DHT's core starts from now on: how many ran beside each."""
    node = dht.node
    bootstrap = node.bootstrap
    beside: list[int] = []

    def spy(addresses: Iterable[PeerAddress], now: float) -> int:
        beside.append(len(node.bootstrap_ops))
        return bootstrap(addresses, now)

    monkeypatch.setattr(node, "bootstrap", spy)
    return beside


async def test_a_table_of_bad_nodes_makes_the_follower_join_again(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # After an outage every known node is bad, but they stay in their buckets: the table is
    # not empty. Before, the follower joined only an empty table: its lookup had nobody to
    # ask (it said "no torrent published" then) until the core's own retry a minute later.
    caplog.set_level(logging.INFO, logger="bip")
    with trio.fail_after(DEADLINE):
        async with published(NOBODY) as (dht, follower):
            node = dht.node
            now = trio.current_time()
            table = node.table(4)
            entries = list(table.entries(now))
            assert entries
            for entry in entries:  # every query to them failed
                for _ in range(node.config.max_failures):
                    table.failed(entry.node, now)
            assert dht.statistics().table_size == len(entries)
            assert node.needs_bootstrap(now)
            beside = _spy_bootstraps(dht, monkeypatch)
            found = await follower._look_up()
    assert beside == [0]  # one join, beside nothing
    assert found is not None
    assert found.info_hash == NOBODY
    assert not _messages(caplog, logging.WARNING)


async def _follower_looks_up(dht: DHT, follower: MutableFollower) -> MutableTorrent | None:
    """The follower's own periodic lookup."""
    return await follower._look_up()


async def _first_resolve(dht: DHT, follower: MutableFollower) -> MutableTorrent | None:
    """`bip download`'s first resolve of the follower's link."""
    return await resolve_mutable_torrent(dht, follower._link)


@pytest.mark.parametrize(
    "look_up", [_follower_looks_up, _first_resolve], ids=["follower", "first_resolve"]
)
async def test_a_look_up_waits_for_a_bootstrap_under_way_instead_of_joining_beside(
    look_up: Callable[[DHT, MutableFollower], Awaitable[MutableTorrent | None]],
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its table is empty while a bootstrap of the node runs (open_dht's own here; the core's
    # re-bootstrap, keep_finding's join alike): before, the follower, and the first resolve
    # (`bip download` resolves the link as soon as the DHT is open), started a second one
    # beside it (two find_node floods); now they wait for that one's end and take its outcome.
    with trio.fail_after(DEADLINE):
        async with published(NOBODY, joined=False) as (dht, follower):
            assert dht.node.bootstrapping
            assert dht.statistics().table_size == 0
            beside = _spy_bootstraps(dht, monkeypatch)
            found = await look_up(dht, follower)
    assert beside == []
    assert found is not None
    assert found.info_hash == NOBODY


async def test_the_follower_says_no_node_answered_when_its_join_found_nobody(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bip")
    with trio.fail_after(DEADLINE):
        async with open_dht(LOOPBACK, rng=random.Random(4)) as dht:  # knows nobody
            link = MutableTorrentLink(PUBLIC_KEY, salt=SALT)
            nothing = cast(Any, None)
            follower = MutableFollower(
                nothing, dht, link, TorrentOptions(Path("down")), interval=600.0, timeout=5.0
            )
            assert await follower._look_up() is None
    [warning] = _messages(caplog, logging.WARNING)
    assert "no DHT node answered" in warning


async def test_the_first_resolve_says_no_node_answered_when_nobody_did(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_dht(LOOPBACK, rng=random.Random(4)) as dht:  # knows nobody
            link = MutableTorrentLink(PUBLIC_KEY, salt=SALT)
            with pytest.raises(CLIError, match="no DHT node answered"):
                await resolve_mutable_torrent(dht, link)


async def test_the_first_resolve_waits_for_the_bootstrap_when_the_saved_nodes_are_dead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The nodes an earlier run saved come back unconfirmed: before, they counted as nodes to
    # look up with, the resolve started at once from them, and with all of them gone it
    # found nothing and said "no torrent published"; now it waits for open_dht's bootstrap
    # through the router, which has the item.
    config = DHTConfig(restrict_routing_ips=False, restrict_search_ips=False)
    with trio.fail_after(DEADLINE):
        async with open_dht(LOOPBACK, config=config) as d1, open_dht(LOOPBACK, config=config) as d2:
            known = [*d1.addresses, *d2.addresses]
            async with open_dht(LOOPBACK, known, config=config, rng=random.Random(5)) as earlier:
                await earlier.bootstrap()
                assert earlier.statistics().table_size == 2
                saved = earlier.save_state()
        async with open_dht(LOOPBACK, rng=random.Random(1)) as router:
            [router_address] = router.addresses
            async with open_dht(LOOPBACK, [router_address], rng=random.Random(2)) as publisher:
                await publisher.bootstrap()
                await publisher.put_mutable_torrent(KEY, NOBODY, salt=SALT)
            async with open_dht(LOOPBACK, [router_address], state=saved, config=config) as dht:
                assert dht.statistics().table_size == 2  # the dead ones, unconfirmed
                found = await resolve_mutable_torrent(
                    dht, MutableTorrentLink(PUBLIC_KEY, salt=SALT)
                )
    assert found.info_hash == NOBODY


async def test_a_lookup_nobody_answered_says_so_rather_than_nothing_published(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A table whose every node is gone since it answered (a dead DHT's address here): the
    # lookup gets no answer at all, which says nothing of what is published.
    with trio.fail_after(DEADLINE):
        async with open_dht(LOOPBACK, rng=random.Random(6)) as gone:
            [address] = gone.addresses
            dead = NodeInfo(gone.node_id.value, address)
        async with open_dht(LOOPBACK, rng=random.Random(4)) as dht:
            assert dht.node.warm_table([dead], trio.current_time()) == 1
            assert await dht.join_if_needed(timeout=0)  # it answered, as far as we know
            link = MutableTorrentLink(PUBLIC_KEY, salt=SALT)
            with pytest.raises(CLIError, match=r"^no DHT node answered the lookup for key "):
                await lookup_mutable_torrent(dht, link)
