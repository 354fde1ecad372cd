"""Our trio Handshaker against aria2, rtorrent and qBittorrent, in both directions.

- We dial each client seeding a small v1 torrent, with ``PREFER_ENCRYPTED`` and
  ``PLAINTEXT_ONLY`` (test_handshake_dial.py drives the sans-IO cores by hand against the same
  seeders; here the Handshaker itself does it).
- rtorrent, a downloader with an empty directory, finds our Handshaker through opentracker and
  dials it (test_handshaker_inbound.py has libtorrent, qBittorrent and aria2 dialling us).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio

from bip_handshake import (
    EncryptionPolicy,
    Extensions,
    PeerId,
    open_handshaker,
)

from ._helpers import StartProcess, free_port, require_client
from ._inbound import (
    EXTENDED,
    HOST,
    announce_udp,
    check_handshake,
    expect_inbound,
    first_message_id,
    listening_handshaker,
)
from ._inbound import OUR_EXTENSIONS as OURS
from ._seeders import (
    ARIA2,
    QBITTORRENT,
    RTORRENT,
    Identity,
    Seeder,
    SmallTorrent,
    dial_until_complete,
    make_torrent,
    make_tracked_torrent,
    start_aria2,
    start_qbittorrent,
    start_rtorrent,
    start_rtorrent_process,
)

pytestmark = pytest.mark.interop

OUR_PEER_ID = PeerId(b"-BP0001-clientstest1")
# A seeder's port may accept before it serves the torrent (aria2 and rtorrent check the data
# first): a dial that fails is redialled until this deadline.
DIAL_DEADLINE = 15.0

PREFER = EncryptionPolicy.PREFER_ENCRYPTED
PLAINTEXT = EncryptionPolicy.PLAINTEXT_ONLY
POLICIES = pytest.mark.parametrize("policy", [PREFER, PLAINTEXT], ids=["prefer-mse", "plaintext"])


# ------------------------------------------------------------------------ 1. we dial the seeders


async def dial_seeder(
    seeder: Seeder,
    torrent: SmallTorrent,
    policy: EncryptionPolicy,
    identity: Identity,
) -> str:
    """Our Handshaker dials `seeder`; checks the handshake and returns the negotiated encryption.

    A seeder that is not ready yet (rtorrent still loading the torrent) may end our first MSE
    handshake, and the Handshaker then falls back to plaintext, as it should: such a dial is
    made again with a fresh Handshaker (at most twice), so that what is measured is the
    encryption the seeder picks."""
    for attempt in range(3):
        async with open_handshaker(
            peer_id=OUR_PEER_ID, listen=[], extensions=OURS, encryption=policy, handshake_timeout=10
        ) as handshaker:
            handshaker.register(torrent.info_hash)
            peer = await dial_until_complete(handshaker, torrent, seeder, deadline=DIAL_DEADLINE)
            try:
                check_handshake(
                    peer,
                    torrent,
                    direction="outbound",
                    identity=identity,
                    extensions=Extensions.EXTENSION_PROTOCOL,
                )
                assert await first_message_id(peer) == EXTENDED
            finally:
                await peer.aclose()
            stats = handshaker.statistics()
        if not (policy is PREFER and stats.plaintext_fallback and attempt < 2):
            break
    assert stats.outbound_completed == 1, stats
    assert stats.inbound_attempts == 0, stats
    if policy is PLAINTEXT:
        assert stats.plaintext_fallback == 0, stats
    assert stats.encrypted == (1 if peer.encryption == "rc4" else 0), stats
    if policy is PLAINTEXT:
        assert peer.encryption == "plaintext"
    return peer.encryption


@POLICIES
async def test_handshaker_dials_aria2(
    policy: EncryptionPolicy, tmp_path: Path, start_process: StartProcess
) -> None:
    torrent = make_torrent(tmp_path)
    seeder = await trio.to_thread.run_sync(start_aria2, start_process, tmp_path, torrent)
    encryption = await dial_seeder(seeder, torrent, policy, ARIA2)
    # Measured: offered RC4 and plaintext in MSE, aria2 1.36.0 (--bt-require-crypto=false) selects
    # plaintext, on the first dial (no fallback: stats.plaintext_fallback stays 0).
    assert encryption == "plaintext"


@POLICIES
async def test_handshaker_dials_rtorrent(
    policy: EncryptionPolicy, tmp_path: Path, start_process: StartProcess
) -> None:
    # rtorrent loads no torrent without a tracker: give it one where nothing listens.
    torrent = make_torrent(tmp_path, trackers=(f"http://{HOST}:{free_port()}/announce",))
    seeder = await trio.to_thread.run_sync(
        functools.partial(
            start_rtorrent,
            start_process,
            tmp_path,
            torrent,
            encryption="allow_incoming,try_outgoing,enable_retry",
        )
    )
    encryption = await dial_seeder(seeder, torrent, policy, RTORRENT)
    # Offered RC4 and plaintext in MSE, rtorrent picks RC4.
    assert encryption == ("rc4" if policy is PREFER else "plaintext")


@POLICIES
async def test_handshaker_dials_qbittorrent(
    policy: EncryptionPolicy, tmp_path: Path, start_process: StartProcess
) -> None:
    torrent = make_torrent(tmp_path)
    seeder = await trio.to_thread.run_sync(start_qbittorrent, start_process, tmp_path, torrent)
    encryption = await dial_seeder(seeder, torrent, policy, QBITTORRENT)
    # Measured: unlike a bare libtorrent session (prefer_rc4 off: test_handshaker_libtorrent.py),
    # qBittorrent's default encryption mode ("prefer encryption") selects RC4 when offered both.
    assert encryption == ("rc4" if policy is PREFER else "plaintext")


# ------------------------------------------------------------------ 2. rtorrent dials us


OUR_HOST = "127.0.0.2"  # a loopback address of our own, distinct from the clients'


async def test_rtorrent_finds_our_handshaker_through_opentracker(
    tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("rtorrent")
    torrent, tracker = await trio.to_thread.run_sync(
        functools.partial(make_tracked_torrent, start_process, tmp_path, http=True)
    )
    # Our own loopback address: the tracker also hands rtorrent its own 127.0.0.1
    # address, and after dialling itself rtorrent tends to skip other peers there.
    async with listening_handshaker(torrent, PREFER, OUR_PEER_ID, host=OUR_HOST) as (
        handshaker,
        port,
    ):
        await trio.to_thread.run_sync(
            functools.partial(
                announce_udp,
                (tracker.host, tracker.port),
                torrent.v1,
                OUR_PEER_ID.value,
                port,
                left=0,
                source=OUR_HOST,
            )
        )
        workdir = tmp_path / "torrent"
        await trio.to_thread.run_sync(
            functools.partial(
                start_rtorrent_process,
                start_process,
                workdir,
                torrent,
                download_to=workdir / "rtorrent-download",
                encryption="allow_incoming,try_outgoing,enable_retry",
                debug_log=workdir / "rtorrent.log",
                name="rtorrent-downloader",
            )
        )
        # try_outgoing: it dials with MSE, offering RC4 and plaintext; we prefer RC4.
        await expect_inbound(
            handshaker,
            torrent,
            RTORRENT,
            extensions=Extensions.EXTENSION_PROTOCOL,
            encryption="rc4",
            timeout=20,
        )
        stats = handshaker.statistics()
    assert stats.inbound_completed == 1, stats
    assert stats.outbound_attempts == 0, stats
