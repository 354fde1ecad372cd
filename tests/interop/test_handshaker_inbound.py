"""Real clients dial our Handshaker and complete an inbound handshake.

libtorrent is told to ``connect_peer`` us, qBittorrent gets us through its Web API's addPeers, and
aria2 finds us through opentracker. With MSE required on our side, libtorrent (whose default policy
tries MSE first on outgoing connections) still connects, over RC4.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio

from bip_handshake import (
    CompletedHandshake,
    EncryptionPolicy,
    Extensions,
    Handshaker,
    PeerId,
    open_handshaker,
)

from ._helpers import StartProcess, require_client, start_opentracker
from ._inbound import (
    HOST,
    announce_udp,
    first_message_id,
    start_aria2_downloader,
    start_libtorrent_downloader,
    start_qbittorrent_downloader,
)
from ._seeders import SmallTorrent, make_torrent

pytestmark = pytest.mark.interop

OURS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
# What libtorrent, qBittorrent and aria2 set (INTEROP.md: reserved bytes ...100005).
THEIRS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST | Extensions.DHT
OUR_PEER_ID = PeerId(b"-BP0001-inboundtest1")


async def first_inbound(handshaker: Handshaker, timeout: float) -> CompletedHandshake:
    """The first completed handshake, within `timeout` seconds."""
    with trio.fail_after(timeout):
        return await handshaker.completed().receive()


EXTENDED = 20


def check_inbound(
    peer: CompletedHandshake, torrent: SmallTorrent, client: str, version: str
) -> None:
    assert peer.direction == "inbound"
    assert peer.info_hash == torrent.info_hash
    assert peer.swarm_id == torrent.v1
    info = peer.peer_id.client
    assert info is not None, peer.peer_id
    assert (info.name, info.version) == (client, version)
    assert str(peer.address.host) == HOST
    assert THEIRS in peer.extensions, peer.extensions
    assert peer.our_extensions == OURS


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
    async with open_handshaker(
        peer_id=OUR_PEER_ID,
        listen=[(HOST, 0)],
        extensions=OURS,
        encryption=ours,
        handshake_timeout=10,
    ) as handshaker:
        handshaker.register(torrent.info_hash)
        (listening,) = handshaker.listen_addresses
        await trio.to_thread.run_sync(
            functools.partial(
                start_libtorrent_downloader,
                start_process,
                tmp_path,
                torrent,
                listening.port,
                enc_policy=theirs,
            )
        )
        peer = await first_inbound(handshaker, 15)
        try:
            check_inbound(peer, torrent, "libtorrent", "2.1.1")
            assert peer.encryption == expected
            # The stream carries its first message, decrypted: the extended handshake (BEP 10).
            assert await first_message_id(peer) == EXTENDED
        finally:
            await peer.aclose()
        stats = handshaker.statistics()
    assert stats.inbound_completed >= 1, stats
    assert stats.outbound_attempts == 0, stats
    if expected == "rc4":
        assert stats.encrypted >= 1, stats
    if ours is EncryptionPolicy.PLAINTEXT_ONLY and theirs == "enabled":
        # Its MSE attempt came first and counts as a protocol error; the plaintext redial won.
        assert stats.protocol_error >= 1, stats
        assert stats.inbound_attempts >= 2, stats


async def test_qbittorrent_add_peers_reaches_our_handshaker(
    tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("qbittorrent-nox")
    torrent = make_torrent(tmp_path)
    async with open_handshaker(
        peer_id=OUR_PEER_ID,
        listen=[(HOST, 0)],
        extensions=OURS,
        encryption=EncryptionPolicy.PREFER_ENCRYPTED,
        handshake_timeout=10,
    ) as handshaker:
        handshaker.register(torrent.info_hash)
        (listening,) = handshaker.listen_addresses
        qbt = await trio.to_thread.run_sync(
            start_qbittorrent_downloader, start_process, tmp_path, torrent
        )
        await trio.to_thread.run_sync(qbt.add_peers, torrent.v1.hex(), [f"{HOST}:{listening.port}"])
        peer = await first_inbound(handshaker, 15)
        try:
            check_inbound(peer, torrent, "qBittorrent", "4.5.2")
            assert peer.peer_id.value.startswith(b"-qB4520-")
            # It offers RC4 and plaintext in MSE; we prefer RC4.
            assert peer.encryption == "rc4"
            assert await first_message_id(peer) == EXTENDED
        finally:
            await peer.aclose()


async def test_aria2_finds_our_handshaker_through_opentracker(
    tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("aria2c")
    require_client("opentracker")
    # The torrent names the tracker, and the tracker must whitelist the torrent before we know its
    # port: the announce URL is outside the info dictionary (BEP 3), so the same content made
    # without a tracker has the same info-hash.
    probe = make_torrent(tmp_path / "probe")
    tracker = await trio.to_thread.run_sync(
        start_opentracker, start_process, tmp_path / "opentracker", [probe.v1]
    )
    torrent = make_torrent(tmp_path / "torrent", trackers=(tracker.udp_url,))
    assert torrent.info_hash == probe.info_hash
    async with open_handshaker(
        peer_id=OUR_PEER_ID,
        listen=[(HOST, 0)],
        extensions=OURS,
        encryption=EncryptionPolicy.PREFER_ENCRYPTED,
        handshake_timeout=10,
    ) as handshaker:
        handshaker.register(torrent.info_hash)
        (listening,) = handshaker.listen_addresses
        # We announce as a seed, so aria2's announce gets us back.
        await trio.to_thread.run_sync(
            functools.partial(
                announce_udp,
                (tracker.host, tracker.port),
                torrent.v1,
                OUR_PEER_ID.value,
                listening.port,
                left=0,
            )
        )
        await trio.to_thread.run_sync(
            start_aria2_downloader, start_process, tmp_path / "torrent", torrent
        )
        peer = await first_inbound(handshaker, 20)
        try:
            check_inbound(peer, torrent, "aria2", "1.36.0")
            assert peer.peer_id.value.startswith(b"A2-1-36-")
            # It offers RC4 and plaintext in MSE; we prefer RC4.
            assert peer.encryption == "rc4"
            assert await first_message_id(peer) == EXTENDED
        finally:
            await peer.aclose()


async def test_libtorrent_without_mse_is_refused_when_we_require_it(
    tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("libtorrent")
    torrent = make_torrent(tmp_path)
    async with open_handshaker(
        peer_id=OUR_PEER_ID,
        listen=[(HOST, 0)],
        extensions=OURS,
        encryption=EncryptionPolicy.REQUIRE_ENCRYPTED,
        handshake_timeout=10,
    ) as handshaker:
        handshaker.register(torrent.info_hash)
        (listening,) = handshaker.listen_addresses
        await trio.to_thread.run_sync(
            functools.partial(
                start_libtorrent_downloader,
                start_process,
                tmp_path,
                torrent,
                listening.port,
                enc_policy="disabled",
            )
        )
        with trio.fail_after(15):
            while handshaker.statistics().refused_plaintext < 1:
                await trio.sleep(0.05)
        stats = handshaker.statistics()
    assert stats.completed == 0, stats
    assert stats.inbound_attempts >= 1, stats
