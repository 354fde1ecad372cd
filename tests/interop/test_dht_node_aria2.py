"""Our DHT node (``open_dht``) with aria2 1.36's DHT on loopback.

aria2 seeds a small torrent so that its DHT runs (_dht_nodes.start_aria2_dht), knowing nobody.
Our node bootstraps from it, pings it, looks its torrent up, and announces to it (an explicit
port, then implied_port); a raw KRPC get_peers then shows aria2 storing our address.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import trio

from bip_dht import Response
from bip_dht._node_config import DHTConfig
from bip_dht._shell import open_dht
from bip_handshake import PeerAddress

from ._dht_nodes import (
    Aria2DHT,
    KRPCNode,
    loopback_host,
    open_krpc_node,
    start_aria2_dht,
    wait_answering,
    wire_problems,
)
from ._helpers import StartProcess

pytestmark = pytest.mark.interop

LOOPBACK = DHTConfig(
    restrict_routing_ips=False, restrict_search_ips=False, query_timeout=2.0, slow_after=0.5
)


async def _stored(raw: KRPCNode, aria2: Aria2DHT, info_hash: bytes) -> tuple[PeerAddress, ...]:
    reply = await raw.get_peers(aria2.address, info_hash)
    assert isinstance(reply, Response), reply
    return reply.values or ()


async def test_our_node_with_aria2(start_process: StartProcess, tmp_path: Path) -> None:
    aria2 = start_aria2_dht(start_process, tmp_path)
    async with (
        open_dht((loopback_host(), 0), [aria2.address], config=LOOPBACK) as ours,
        open_krpc_node() as raw,
    ):
        await wait_answering(raw, aria2.address)
        with trio.fail_after(20):
            assert await ours.bootstrap([aria2.address]) >= 1
            pong = await ours.ping(aria2.address)
            assert pong is not None
            assert pong.address == aria2.address
            # get_peers for aria2's own torrent: the lookup ends (aria2 answers with a token).
            async with ours.get_peers(aria2.torrent.v1) as search:
                async for _ in search:
                    pass
            assert search.result().nodes

            info_hash = secrets.token_bytes(20)
            finished = await ours.announce(info_hash, 7010)
            assert finished.announced_to >= 1
            me = ours.addresses[0]
            assert PeerAddress(me.host, 7010) in await _stored(raw, aria2, info_hash)

            # implied_port: aria2 1.36 ignores it and drops an announce whose ``port`` is 0
            # (test_dht_krpc_aria2), so ours must carry our real UDP port in ``port`` as well,
            # as libtorrent's does.
            implied = secrets.token_bytes(20)
            finished = await ours.announce(implied)
            assert finished.announced_to >= 1
            assert me in await _stored(raw, aria2, implied)
        problems = wire_problems(ours.statistics())
        assert not problems, problems
