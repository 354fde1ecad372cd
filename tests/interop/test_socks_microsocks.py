"""A bip leecher downloads from a bip seed through the real ``microsocks`` SOCKS5 proxy
(Debian's package), without and with RFC 1929 username/password.

microsocks listens on 127.0.0.1 only (``-i``) and makes its outgoing connections from
127.0.0.5 (``-b``); the seed refuses the leecher's own address (127.0.0.6) with its IP
filter, so only connections that went through the proxy can deliver a byte. microsocks runs
as its own process and is stopped by PID at teardown; the sessions run in this process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bip._client import TorrentOptions, open_session

from ._helpers import StartProcess, free_port, require_client, tcp_listening
from ._proxied import PAYLOAD_FILES, refusing, seed_payload, session_config

pytestmark = pytest.mark.interop

DEADLINE = 20.0
PROXY_HOST = "127.0.0.1"
PROXY_OUT = "127.0.0.5"  # where microsocks connects from
SEED_HOST = "127.0.0.4"
LEECH_HOST = "127.0.0.6"  # refused by the seed: a direct dial would fail


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "username-password"])
async def test_bip_downloads_through_microsocks(
    tmp_path: Path, start_process: StartProcess, auth: bool
) -> None:
    binary = require_client("microsocks")
    port = free_port(PROXY_HOST)
    argv = [binary, "-i", PROXY_HOST, "-p", str(port), "-b", PROXY_OUT]
    credentials = ""
    if auth:
        argv += ["-u", "bip", "-P", "s3cret"]
        credentials = "bip:s3cret@"
    start_process(argv, ready=tcp_listening(PROXY_HOST, port))

    folder, torrent = seed_payload(tmp_path, size=600_000, seed=5)
    with trio.fail_after(DEADLINE):
        async with (
            open_session(session_config(SEED_HOST, ip_filter=refusing(LEECH_HOST))) as seeder,
            open_session(
                session_config(LEECH_HOST, proxy=f"socks5://{credentials}{PROXY_HOST}:{port}")
            ) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            [seed] = seeder.handshaker.listen_addresses
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(seed,))
            )
            await download.wait_complete()
            assert leecher.dialer is not None  # microsocks refuses UDP: no uTP dial connects
            assert leecher.dialer.statistics().utp_connected == 0
    for name in PAYLOAD_FILES:
        assert (tmp_path / "down" / "payload" / name).read_bytes() == (folder / name).read_bytes()
