"""The Handshaker dials a libtorrent seed on loopback and completes a handshake."""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import trio

from bip_handshake import EncryptionPolicy, Extensions, PeerAddress
from bip_handshake._handshaker import open_handshaker
from bip_metainfo import InfoHash

from ._helpers import StartProcess
from ._seeders import make_torrent, start_libtorrent, start_libtorrent_hybrid

pytestmark = pytest.mark.interop

HERE = Path(__file__).parent


def start_seed(tmp_path: Path, start_process: StartProcess) -> tuple[dict[str, Any], PeerAddress]:
    info: dict[str, Any] = start_libtorrent_hybrid(start_process, tmp_path / "libtorrent")
    port = int(info["port"])
    return info, PeerAddress(IPv4Address("127.0.0.1"), port)


@pytest.mark.parametrize(
    "how",
    [
        "v1 torrent",
        "hybrid via v2 swarm",
        pytest.param("hybrid via v1 swarm"),
    ],
)
@pytest.mark.parametrize(
    "encryption",
    [EncryptionPolicy.PLAINTEXT_ONLY, EncryptionPolicy.PREFER_ENCRYPTED],
    ids=["plaintext", "prefer-mse"],
)
async def test_handshaker_dials_libtorrent(
    how: str, encryption: EncryptionPolicy, tmp_path: Path, start_process: StartProcess
) -> None:
    info, seed = start_seed(tmp_path, start_process)
    v1 = bytes.fromhex(info["info_hash"])
    v2 = bytes.fromhex(info["info_hash_v2"])
    torrent = InfoHash(v1=v1) if how == "v1 torrent" else InfoHash(v1=v1, v2=v2)
    found_under = v2[:20] if how == "hybrid via v2 swarm" else v1
    unknown = InfoHash(v1=hashlib.sha1(b"not this torrent").digest())
    ours = Extensions.EXTENSION_PROTOCOL | Extensions.FAST

    async with open_handshaker(
        listen=[], extensions=ours, encryption=encryption, handshake_timeout=10
    ) as handshaker:
        handshaker.register(torrent)
        handshaker.register(unknown)
        handshaker.discovered(found_under, [seed], "test")
        handshaker.connect(unknown, seed)
        with trio.fail_after(15):
            while handshaker.statistics().failures + handshaker.statistics().completed < 2:
                await trio.sleep(0.05)
            stats = handshaker.statistics()
            assert stats.outbound_completed == 1, stats
            peer = await handshaker.completed().receive()
        try:
            assert peer.direction == "outbound"
            assert peer.info_hash == torrent
            # Dialled under a hybrid torrent's v1 id with the upgrade bit, libtorrent
            # answers with the truncated v2 id (BEP 52), and the connection is v2;
            # through MSE it keeps the swarm id it found the torrent by (the SKEY).
            upgraded = (
                how == "hybrid via v1 swarm" and encryption is EncryptionPolicy.PLAINTEXT_ONLY
            )
            answered_under = v2[:20] if upgraded else found_under
            # libtorrent's default (pe_enabled, prefer_rc4 off) selects plaintext in MSE.
            assert peer.encryption == "plaintext"
            assert peer.swarm_id == answered_under
            assert peer.peer_id.value.startswith(info["peer_id_prefix"].encode())
            assert Extensions.EXTENSION_PROTOCOL in peer.extensions
            assert Extensions.FAST in peer.extensions
            assert (Extensions.V2_UPGRADE in peer.our_extensions) == (torrent.v2 is not None)
        finally:
            await peer.aclose()
    # libtorrent hangs up on a torrent it does not have (under MSE, hangs up on the
    # unknown SKEY, and again on the plaintext redial).
    assert stats.connection_lost == 1
    assert stats.failures == 1
    assert stats.plaintext_fallback == (encryption is EncryptionPolicy.PREFER_ENCRYPTED)


EXTENDED = 20


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [
        (EncryptionPolicy.REQUIRE_ENCRYPTED, "forced", "rc4"),
        # libtorrent's pe_enabled without prefer_rc4 picks plaintext when offered both.
        (EncryptionPolicy.PREFER_ENCRYPTED, "enabled", "plaintext"),
        (EncryptionPolicy.PREFER_ENCRYPTED, "disabled", "plaintext"),
        (EncryptionPolicy.REQUIRE_ENCRYPTED, "disabled", "mse_failed"),
    ],
    ids=["require-forced", "prefer-enabled", "prefer-disabled", "require-disabled"],
)
async def test_handshaker_encryption_with_libtorrent(
    ours: EncryptionPolicy, theirs: str, expected: str, tmp_path: Path, start_process: StartProcess
) -> None:
    torrent = make_torrent(tmp_path)
    seeder = start_libtorrent(start_process, tmp_path, torrent, enc_policy=theirs)
    address = PeerAddress(IPv4Address(seeder.host), seeder.port)
    extensions = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
    async with open_handshaker(
        listen=[], extensions=extensions, encryption=ours, handshake_timeout=10
    ) as handshaker:
        handshaker.register(torrent.info_hash)
        assert handshaker.connect(torrent.info_hash, address)
        with trio.fail_after(25):
            while handshaker.statistics().failures + handshaker.statistics().completed < 1:
                await trio.sleep(0.05)
        stats = handshaker.statistics()
        if expected == "mse_failed":
            assert stats.mse_failed == stats.failures == 1, stats
            assert stats.plaintext_fallback == 0
            return
        assert stats.outbound_completed == 1, stats
        peer = await handshaker.completed().receive()
        try:
            assert peer.encryption == expected
            assert peer.peer_id.value.startswith(b"-LT")
            # Its first message, decrypted: the extended handshake (BEP 10).
            data = peer.trailing
            with trio.fail_after(10):
                while len(data) < 5:
                    chunk = await peer.stream.receive_some()
                    assert chunk, "libtorrent closed the connection"
                    data += chunk
            assert 0 < int.from_bytes(data[:4], "big") < 16 * 1024
            assert data[4] == EXTENDED
        finally:
            await peer.aclose()
    assert stats.failures == 0
    assert stats.encrypted == (expected == "rc4")
    assert stats.plaintext_fallback == (theirs == "disabled")
    assert stats.mse_failed == 0
