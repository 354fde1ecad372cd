"""The session's PeerList is its per-host policy: the handshaker's own bound on dials per
host is off in a session, so the addresses the list deliberately leaves uncapped (the user's
peers, here three on one host) are all dialled at once, none left to wait out the reconnect
time."""

from __future__ import annotations

from pathlib import Path

import trio
from _engine_helpers import loopback_config, make_torrent, write_content

from bip._client import TorrentOptions, open_session
from bip_handshake import DEFAULT_MAX_PER_HOST, PeerAddress

DEADLINE = 5.0


async def test_three_user_peers_on_one_host_are_dialled_at_once(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", [1000])
    torrent = make_torrent(folder, "v1")
    users = tuple(PeerAddress.parse(f"127.0.0.1:{port}") for port in (40001, 40002, 40003))
    assert len(users) > DEFAULT_MAX_PER_HOST
    dialled: list[PeerAddress] = []
    all_dialled = trio.Event()

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        dialled.append(address)
        if len(set(dialled)) == len(users):
            all_dialled.set()
        await trio.sleep_forever()  # in flight: the host's dials stay pending
        raise AssertionError("unreachable")

    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config(dial=dial, utp=False, listen=())) as session:
            await session.add_torrent(torrent, TorrentOptions(tmp_path / "down", peers=users))
            # Well before min_reconnect_time (60 s): the third is not held back.
            with trio.fail_after(2):
                await all_dialled.wait()
            assert set(dialled) == set(users)
            assert session.handshaker.statistics().dropped_per_host == 0
