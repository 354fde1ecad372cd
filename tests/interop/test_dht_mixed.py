"""A mixed 30-node DHT on loopback: 20 of our nodes (``open_dht``) and 10 libtorrent nodes.

Each libtorrent node is its own process (_lt_dht.py; measured here: ten one-session processes
are ready in under 3 s on a loaded 2-core machine and take about 35 MB each, so no need to pack
sessions), each node of either kind on its own 127.0.0.X. The network is wired sparsely, so
lookups must travel: each of ours bootstraps from two random libtorrent nodes and one earlier
node of ours; each libtorrent node is told about two of ours and the next libtorrent node.

Then a hash announced by one libtorrent node is found by a get_peers lookup of one of ours, and
a hash one of ours announces is found by a libtorrent node's lookup: routing tables, ``nodes``
answers, tokens and stores of both implementations working in one network.
"""

from __future__ import annotations

import contextlib
import random
import secrets
from pathlib import Path

import pytest
import trio

from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_handshake import PeerAddress

from ._dht_nodes import loopback_host, open_libtorrent_dhts

pytestmark = pytest.mark.interop

OURS = 20
LIBTORRENT = 10
LOOPBACK = DHTConfig(
    restrict_routing_ips=False, restrict_search_ips=False, query_timeout=2.0, slow_after=0.5
)


async def test_mixed_network_finds_announces_both_ways(tmp_path: Path) -> None:
    rng = random.Random(30)
    lt_hosts = [[loopback_host()] for _ in range(LIBTORRENT)]
    async with (
        open_libtorrent_dhts(tmp_path, lt_hosts, lifetime=50) as lts,
        contextlib.AsyncExitStack() as stack,
    ):
        lt_addresses = [process.sessions[0].address for process in lts]
        ours: list[DHT] = []
        # No timeout scope around entering the nodes: their nurseries outlive this block.
        for _ in range(OURS):
            boot = rng.sample(lt_addresses, 2)
            if ours:
                boot.append(rng.choice(ours).addresses[0])
            dht = await stack.enter_async_context(open_dht((loopback_host(), 0), config=LOOPBACK))
            with trio.fail_after(10):
                await dht.bootstrap(boot)
            ours.append(dht)
        our_addresses = [dht.addresses[0] for dht in ours]
        with trio.fail_after(20):
            for index, process in enumerate(lts):
                for node in [*rng.sample(our_addresses, 2), lt_addresses[(index + 1) % LIBTORRENT]]:
                    await process.add_node(0, node)
            for process in lts:
                await process.wait_routing_table(0, 3)
        assert all(dht.statistics().nodes[4] >= 3 for dht in ours)

        # libtorrent announces; one of ours finds it. libtorrent's announce ends with no alert,
        # so look until it shows up.
        announcer, seeker = lts[3], ours[17]
        info_hash = secrets.token_bytes(20)
        await announcer.announce(0, info_hash, port=6881)
        wanted = PeerAddress(announcer.sessions[0].address.host, 6881)
        with trio.fail_after(20):
            while wanted not in [peer async for peer in seeker.get_peers(info_hash)]:
                await trio.sleep(0.2)

        # One of ours announces; a libtorrent node finds it.
        info_hash = secrets.token_bytes(20)
        with trio.fail_after(20):
            finished = await ours[5].announce(info_hash, 7005)
        assert finished.announced_to >= 4
        found = await lts[8].get_peers(0, info_hash, timeout=20)
        assert PeerAddress(our_addresses[5].host, 7005) in found
