"""A bip leecher dials a bip seed over uTP through the real Dante SOCKS5 server's UDP relay
(Debian's ``dante-server``, ``/usr/sbin/danted``).

Dante listens on 127.0.0.1 and relays from 127.0.0.1 (its ``external``); the seed listens on
127.0.0.4 and refuses the leecher's listening address (127.0.0.6) with its IP filter, and
every peer it saw came from Dante's address and a port other than the leecher's relay
socket's: what arrived went through the relay. The leecher prefers uTP: every byte comes
over uTP through the relay, none over TCP. Dante runs as its own process, stopped
by PID at teardown (tests/interop/_dante.py); the sessions run in this process. A missing
binary skips the test, or fails it in CI.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip._client import Session, TorrentOptions, open_session
from bip_handshake import PeerAddress

from ._dante import start_dante
from ._helpers import StartProcess
from ._proxied import PAYLOAD_FILES, refusing, seed_payload, session_config

pytestmark = pytest.mark.interop

DEADLINE = 20.0
HOST = "127.0.0.1"  # Dante, and where it relays from
SEED_HOST = "127.0.0.4"
LEECH_HOST = "127.0.0.6"  # refused by the seed: a direct dial would fail


async def _peers_seen(seeder: Session, seen: set[tuple[PeerAddress, str]]) -> None:
    """Note the address and transport of every peer ``seeder`` has, until cancelled."""
    while True:  # cancelled by the test
        seen.update((peer.address, peer.transport) for peer in seeder.manager.peers)
        await trio.sleep(0.005)


async def test_bip_dials_utp_through_dantes_relay(
    tmp_path: Path, start_process: StartProcess
) -> None:
    port = start_dante(start_process, tmp_path / "dante", internal=HOST, external=HOST)

    folder, torrent = seed_payload(tmp_path, size=400_000, seed=11)
    seen: set[tuple[PeerAddress, str]] = set()
    with trio.fail_after(DEADLINE):
        async with (
            open_session(session_config(SEED_HOST, ip_filter=refusing(LEECH_HOST))) as seeder,
            open_session(
                session_config(LEECH_HOST, proxy=f"socks5://{HOST}:{port}", prefer_utp=True)
            ) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            assert leecher.dialer is not None
            [relayed] = leecher.dialer.utp_sockets
            # Dialled before the association is up, uTP would fail at once and TCP go
            # first: wait for it (Dante answers at once on loopback).
            while not leecher.dialer._utp_ready(4):
                await trio.sleep(0.01)  # bounded by the deadline
            [seed] = seeder.handshaker.listen_addresses
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_peers_seen, seeder, seen)
                download = await leecher.add_torrent(
                    torrent, TorrentOptions(tmp_path / "down", peers=(seed,))
                )
                await download.wait_complete()
                nursery.cancel_scope.cancel()
            stats = leecher.dialer.statistics()
            assert stats.utp_connected >= 1
            assert stats.tcp_attempts == 0
            assert relayed.statistics().bytes_received >= 400_000
    # The seed saw the relay (Dante's address), over uTP, never the leecher itself (whose
    # address it refuses). Not the port: Dante binds its outside socket to our port number
    # when it can, which it can now that our socket and its own differ in address alone.
    assert {(peer.host, transport) for peer, transport in seen} == {(IPv4Address(HOST), "utp")}
    assert relayed.local_address.host == IPv4Address(LEECH_HOST)
    for name in PAYLOAD_FILES:
        assert (tmp_path / "down" / "payload" / name).read_bytes() == (folder / name).read_bytes()
