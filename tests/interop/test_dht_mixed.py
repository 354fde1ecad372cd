"""A mixed 30-node DHT on loopback: 20 of our nodes (``open_dht``) and 10 libtorrent nodes.

Each libtorrent node is its own process (_lt_dht.py; measured here: ten one-session processes
are ready in under 3 s on a loaded 2-core machine and take about 35 MB each, so no need to pack
sessions), each node of either kind on its own 127.0.0.X. The network is wired sparsely, so
lookups must travel: each of ours bootstraps from two random libtorrent nodes and one earlier
node of ours; each libtorrent node is told about two of ours and the next libtorrent node.

Then hashes announced by three libtorrent nodes are found by get_peers lookups of three of
ours, and hashes three of ours announce are found by three libtorrent nodes' lookups; a
libtorrent node's mutable item is got by one of ours and one of ours' immutable item by a
libtorrent node: routing tables, ``nodes`` answers, tokens and stores of both implementations
working in one network. No node of ours changes its id on the way (loopback is exempt from
BEP 42, whatever ``ip`` the others report).
"""

from __future__ import annotations

import contextlib
import random
import secrets
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_bencode import Value, encode
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_handshake import PeerAddress

from ._dht_nodes import loopback_host, open_libtorrent_dhts, wire_problems

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
        # A node that only queried one of ours enters its table once it has answered that
        # node's refresh query (as in libtorrent): within a maintenance tick or two.
        with trio.fail_after(20):
            while not all(dht.statistics().nodes[4] >= 3 for dht in ours):
                await trio.sleep(0.2)

        ids = [dht.node_id for dht in ours]

        # Three libtorrent nodes announce, three of ours find them (all at once). libtorrent's
        # announce ends with no alert, so each seeker looks until its peer shows up.
        async def seek(seeker: DHT, info_hash: bytes, wanted: PeerAddress) -> None:
            with trio.fail_after(20):
                while wanted not in [peer async for peer in seeker.get_peers(info_hash)]:
                    await trio.sleep(0.2)

        async with trio.open_nursery() as nursery:
            for announcer, seeker in ((1, 17), (3, 2), (6, 11)):
                info_hash = secrets.token_bytes(20)
                await lts[announcer].announce(0, info_hash, port=6881)
                wanted = PeerAddress(lt_addresses[announcer].host, 6881)
                nursery.start_soon(seek, ours[seeker], info_hash, wanted)

        # Three of ours announce, three libtorrent nodes find them.
        async def announce_and_find(announcer: int, seeker: int) -> None:
            info_hash = secrets.token_bytes(20)
            with trio.fail_after(20):
                finished = await ours[announcer].announce(info_hash, 7000 + announcer)
            assert finished.announced_to >= 4
            found = await lts[seeker].get_peers(0, info_hash, timeout=20)
            assert PeerAddress(our_addresses[announcer].host, 7000 + announcer) in found

        async with trio.open_nursery() as nursery:
            for announcer, seeker in ((5, 8), (12, 0), (19, 4)):
                nursery.start_soon(announce_and_find, announcer, seeker)

        # BEP 44 across the network: a libtorrent node's mutable item got by one of ours, and
        # one of ours' immutable item got by a libtorrent node.
        seed = secrets.token_bytes(32)
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        put = await lts[2].put_mutable(0, seed, b"mixed", b"net")
        assert put["num_success"] >= 4
        with trio.fail_after(20):
            item = await ours[9].get_mutable(public, b"net")
            assert item is not None
            assert item.seq == put["seq"]
            assert item.value == encode(b"mixed")
            value: Value = [b"from", b"bip", secrets.token_bytes(4)]
            stored = await ours[14].put_immutable(value)
        assert stored.stored_at >= 4
        assert await lts[7].get_immutable(0, stored.target) == encode(value)

        # Every response carried our address as libtorrent and our nodes saw it (BEP 42 ``ip``);
        # a loopback address is exempt, so no node of ours changed its id.
        assert [dht.node_id for dht in ours] == ids
        problems = {
            str(dht.addresses[0]): found
            for dht in ours
            if (found := wire_problems(dht.statistics()))
        }
        assert not problems, problems
