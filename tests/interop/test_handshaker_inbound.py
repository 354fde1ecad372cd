"""Real clients dial our Handshaker and complete an inbound handshake.

libtorrent is told to ``connect_peer`` us, qBittorrent gets us through its Web API's addPeers, and
aria2 finds us through opentracker; qBittorrent and aria2 against a ``PREFER_ENCRYPTED`` and a
``PLAINTEXT_ONLY`` Handshaker. With MSE required on our side, libtorrent (whose default policy
tries MSE first on outgoing connections) still connects, over RC4.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio

from bip_handshake import EncryptionPolicy, Extensions, PeerId

from ._helpers import StartProcess, require_client
from ._inbound import (
    HOST,
    announce_udp,
    expect_inbound,
    listening_handshaker,
    start_aria2_downloader,
    start_libtorrent_downloader,
    start_qbittorrent_downloader,
)
from ._seeders import ARIA2, LIBTORRENT, QBITTORRENT, make_torrent, make_tracked_torrent

pytestmark = pytest.mark.interop

# What libtorrent, qBittorrent and aria2 set (INTEROP.md: reserved bytes ...100005).
THEIRS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST | Extensions.DHT
OUR_PEER_ID = PeerId(b"-BP0001-inboundtest1")
PREFER = EncryptionPolicy.PREFER_ENCRYPTED
PLAINTEXT = EncryptionPolicy.PLAINTEXT_ONLY
# Both offer RC4 and plaintext in MSE: we pick RC4 when we prefer it.
POLICIES = pytest.mark.parametrize(
    ("policy", "expected"), [(PREFER, "rc4"), (PLAINTEXT, "plaintext")], ids=["prefer", "plaintext"]
)


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [
        # libtorrent's default: MSE first on outgoing; we require it, so RC4.
        (EncryptionPolicy.REQUIRE_ENCRYPTED, "enabled", "rc4"),
        (EncryptionPolicy.REQUIRE_ENCRYPTED, "forced", "rc4"),
        (EncryptionPolicy.PREFER_ENCRYPTED, "enabled", "rc4"),
        (EncryptionPolicy.PREFER_ENCRYPTED, "disabled", "plaintext"),
        (EncryptionPolicy.PLAINTEXT_ONLY, "disabled", "plaintext"),
        # It tries MSE first, we hang up, and it redials in plaintext about a second later.
        (EncryptionPolicy.PLAINTEXT_ONLY, "enabled", "plaintext"),
    ],
    ids=[
        "require-enabled",
        "require-forced",
        "prefer-enabled",
        "prefer-disabled",
        "plaintext-disabled",
        "plaintext-enabled",
    ],
)
async def test_libtorrent_connect_peer_reaches_our_handshaker(
    ours: EncryptionPolicy,
    theirs: str,
    expected: str,
    tmp_path: Path,
    start_process: StartProcess,
) -> None:
    require_client("libtorrent")
    torrent = make_torrent(tmp_path)
    async with listening_handshaker(torrent, ours, OUR_PEER_ID) as (handshaker, port):
        await trio.to_thread.run_sync(
            functools.partial(
                start_libtorrent_downloader,
                start_process,
                tmp_path,
                torrent,
                port,
                enc_policy=theirs,
            )
        )
        await expect_inbound(
            handshaker,
            torrent,
            LIBTORRENT,
            extensions=THEIRS,
            encryption=expected,
            timeout=15,
        )
        stats = handshaker.statistics()
    assert stats.inbound_completed >= 1, stats
    assert stats.outbound_attempts == 0, stats
    if expected == "rc4":
        assert stats.encrypted >= 1, stats
    if ours is EncryptionPolicy.PLAINTEXT_ONLY and theirs == "enabled":
        # Its MSE attempt came first and counts as a protocol error; the plaintext redial won.
        assert stats.protocol_error >= 1, stats
        assert stats.inbound_attempts >= 2, stats


@POLICIES
async def test_qbittorrent_add_peers_reaches_our_handshaker(
    policy: EncryptionPolicy, expected: str, tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("qbittorrent-nox")
    torrent = make_torrent(tmp_path)
    async with listening_handshaker(torrent, policy, OUR_PEER_ID) as (handshaker, port):
        qbt = await trio.to_thread.run_sync(
            start_qbittorrent_downloader, start_process, tmp_path, torrent
        )
        await trio.to_thread.run_sync(qbt.add_peers, torrent.v1.hex(), [f"{HOST}:{port}"])
        await expect_inbound(
            handshaker,
            torrent,
            QBITTORRENT,
            extensions=THEIRS,
            encryption=expected,
            timeout=20,
        )
        stats = handshaker.statistics()
    if policy is PLAINTEXT:
        assert stats.inbound_completed == 1, stats
        assert stats.encrypted == 0, stats
        # libtorrent inside tries MSE first on outgoing connections: we refuse it (a protocol
        # error for a plaintext-only handshaker) and it redials in plaintext.
        assert stats.protocol_error >= 1, stats
        assert stats.inbound_attempts >= 2, stats


@POLICIES
async def test_aria2_finds_our_handshaker_through_opentracker(
    policy: EncryptionPolicy, expected: str, tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("aria2c")
    torrent, tracker = await trio.to_thread.run_sync(make_tracked_torrent, start_process, tmp_path)
    async with listening_handshaker(torrent, policy, OUR_PEER_ID) as (handshaker, port):
        # We announce as a seed, so aria2's announce gets us back.
        await trio.to_thread.run_sync(
            functools.partial(
                announce_udp,
                (tracker.host, tracker.port),
                torrent.v1,
                OUR_PEER_ID.value,
                port,
                left=0,
            )
        )
        await trio.to_thread.run_sync(
            start_aria2_downloader, start_process, tmp_path / "torrent", torrent
        )
        await expect_inbound(
            handshaker,
            torrent,
            ARIA2,
            extensions=THEIRS,
            encryption=expected,
            timeout=20,
        )
        stats = handshaker.statistics()
    if policy is PLAINTEXT:
        assert stats.inbound_completed == 1, stats
        assert stats.encrypted == 0, stats


async def test_libtorrent_without_mse_is_refused_when_we_require_it(
    tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("libtorrent")
    torrent = make_torrent(tmp_path)
    async with listening_handshaker(torrent, EncryptionPolicy.REQUIRE_ENCRYPTED, OUR_PEER_ID) as (
        handshaker,
        port,
    ):
        await trio.to_thread.run_sync(
            functools.partial(
                start_libtorrent_downloader,
                start_process,
                tmp_path,
                torrent,
                port,
                enc_policy="disabled",
            )
        )
        with trio.fail_after(15):
            while handshaker.statistics().refused_plaintext < 1:
                await trio.sleep(0.05)
        stats = handshaker.statistics()
    assert stats.completed == 0, stats
    assert stats.inbound_attempts >= 1, stats
