"""BEP 55 end to end with libtorrent as the relay: two bip sessions behind simulated NATs meet.

libtorrent 2.1 (_lt_utp.py: uTP only, downloading a torrent nobody has, so that every
connection stays) is the relay R. A and B are bip sessions whose UDP goes through a
port-restricted cone NAT each (tests/_nat.py, as in the bip-only holepunch tests: B's datagrams
leave from a public port, and only datagrams from addresses B has sent to come back in), uTP
only, nothing listening on TCP at the NATs' addresses. C, a public bip session without
holepunching, joins first, so that libtorrent's first PEX message to A (about C) is sent before
B joins: A then hears of B only a minute later, B of A within seconds. B's dial to A dies in
A's NAT; B's client asks libtorrent (which flagged A 0x08 in its PEX) for a rendezvous;
libtorrent sends both a connect; both dial over uTP at once, and they are connected.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
from tests._nat import session_behind_nat

from bip._client import ClientConfig, Session, TorrentOptions, open_session
from bip._client._torrent import Torrent
from bip_handshake import EncryptionPolicy, PeerAddress
from bip_metainfo import Metainfo
from bip_peer import Peer, PexFlags

from ._helpers import StartProcess
from ._seeders import HOST, make_torrent
from .test_utp_libtorrent import start_libtorrent_utp

pytestmark = pytest.mark.interop

DEADLINE = 45.0  # libtorrent spaces its PEX messages 3 s apart; the uTP dial that fails, 3 s


def config(host: str, port: int = 0, **changes: object) -> ClientConfig:
    settings: dict[str, object] = {
        "listen": ((host, port),),
        "trackers": False,
        "prefer_utp": True,
        "redial_interval": 1.0,
        "encryption": EncryptionPolicy.PREFER_ENCRYPTED,
    }
    settings.update(changes)
    return ClientConfig(**settings)  # type: ignore[arg-type]


def met(here: Torrent, other: Session) -> list[Peer]:
    return [p for p in here.peers if p.peer_id == other.peer_id]


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll every 50 ms (the caller bounds the whole test in time)."""
    while not predicate():
        await trio.sleep(0.05)


async def test_libtorrent_introduces_two_bip_peers_behind_nats(
    start_process: StartProcess, tmp_path: Path
) -> None:
    torrent = make_torrent(tmp_path)
    metainfo = Metainfo.from_bytes(torrent.torrent_path.read_bytes())
    info = start_libtorrent_utp(start_process, tmp_path, torrent, download_to=tmp_path / "lt")
    relay = PeerAddress(IPv4Address(HOST), int(info["port"]))
    with trio.fail_after(DEADLINE):
        async with (
            open_session(config(HOST, holepunch=False)) as public,
            session_behind_nat("127.0.0.4", "127.0.0.5", config) as (a, nat_a),
            session_behind_nat("127.0.0.2", "127.0.0.3", config) as (b, nat_b),
        ):
            await public.add_torrent(metainfo, TorrentOptions(tmp_path / "c", peers=(relay,)))
            at_a = await a.add_torrent(metainfo, TorrentOptions(tmp_path / "a", peers=(relay,)))
            # libtorrent's first PEX message to A (about C): its next one is a minute away.
            await wait_until(lambda: a.pex.statistics().messages_received >= 1)
            at_b = await b.add_torrent(metainfo, TorrentOptions(tmp_path / "b", peers=(relay,)))
            await wait_until(lambda: bool(met(at_a, b)) and bool(met(at_b, a)))
            await trio.sleep(0.5)  # a duplicate of the simultaneous open is settled by then
            [a_to_b] = met(at_a, b)
            [b_to_a] = met(at_b, a)
            assert a_to_b.transport == b_to_a.transport == "utp"
            assert a_to_b.address == nat_b.public
            assert b_to_a.address == nat_a.public
            assert nat_a.dropped  # B's SYNs before the holepunch
            # libtorrent listed A flagged as speaking ut_holepunch, and relayed B's rendezvous.
            listed = b.pex.relay_for(metainfo.info.info_hash, nat_a.public)
            assert listed is not None
            assert listed.peer.address == relay
            assert PexFlags.HOLEPUNCH in listed.flags
            assert listed.can_relay
            assert at_b.status().holepunch_rendezvous == 1
            assert at_a.status().holepunch_connects == at_b.status().holepunch_connects == 1
            assert at_a.status().holepunch_peers == at_b.status().holepunch_peers == 1
