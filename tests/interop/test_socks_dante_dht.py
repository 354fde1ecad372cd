"""bip's DHT node through the real Dante SOCKS5 server's UDP relay (``open_dht(proxy=...)``).

A bip node behind Dante (``danted``, listening and relaying on 127.0.0.1, see ``_dante``)
pings, looks up, announces and finds peers through a direct bip node, which sees Dante's
address and port only; with remote DNS (``socks5h``) it bootstraps from the name
``localhost``, which Dante resolves. Dante runs as its own process, stopped by PID.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip_dht import DHTConfig, NodeId, open_dht
from bip_handshake import ProxyConfig

from ._dante import start_dante
from ._helpers import StartProcess

pytestmark = pytest.mark.interop

DEADLINE = 10.0
HOST = "127.0.0.1"  # Dante takes datagrams from its control connection's host: ours
DIRECT = "127.0.0.3"
CONFIG = DHTConfig(query_timeout=2.0, slow_after=0.5)
INFO_HASH = bytes(range(20))


async def test_a_dht_node_through_dantes_relay(tmp_path: Path, start_process: StartProcess) -> None:
    port = start_dante(start_process, tmp_path / "dante")
    with trio.fail_after(DEADLINE):
        async with (
            open_dht(f"{DIRECT}:0", config=CONFIG, rng=random.Random(1)) as direct,
            open_dht(
                f"{HOST}:0", config=CONFIG, rng=random.Random(2), proxy=ProxyConfig(HOST, port)
            ) as proxied,
        ):
            await proxied.wait_associated()
            answered = await proxied.ping(direct.addresses[0])
            assert answered is not None
            assert answered.node_id == direct.node_id.value
            found = await proxied.find_node(NodeId(bytes(20)))
            assert direct.node_id.value in [node.node_id for node in found]
            assert (await proxied.announce(INFO_HASH)).announced_to == 1  # implied_port
            async with proxied.get_peers(INFO_HASH) as search:
                [peer] = [peer async for peer in search]
            # The direct node stored what it saw: Dante's address and port, not our socket.
            assert peer.host == IPv4Address(HOST)
            assert peer != proxied.addresses[0]
            now = trio.current_time()
            seen = [entry.node.address for entry in direct.node.table(4).entries(now)]
            assert proxied.addresses[0] not in seen
            assert proxied.statistics().send_errors == 0

        # Remote DNS: the bootstrap name goes to Dante, which resolves it.
        remote = ProxyConfig(HOST, port, remote_dns=True)
        async with open_dht(f"{HOST}:0", config=CONFIG, rng=random.Random(3)) as named:
            name = ("localhost", named.addresses[0].port)
            async with open_dht(f"{HOST}:0", [name], config=CONFIG, proxy=remote) as proxied:
                while proxied.node.statistics().table_size == 0:  # bounded by the deadline
                    await trio.sleep(0.01)
                assert proxied.node.bootstrap_addresses == (named.addresses[0],)
