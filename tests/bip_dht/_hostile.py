"""What every hostile campaign against a running node checks at its end."""

from __future__ import annotations

import logging
import random

import pytest

from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_handshake import PeerAddress


async def honest_still_served(dht: DHT, config: DHTConfig, info_hash: bytes) -> None:
    """Two honest nodes (127.0.0.3 and .4, with ``config``) join through ``dht``: ping (both
    ways), find_node, announce and get_peers of ``info_hash`` work."""
    entry = dht.addresses[0]
    async with (
        open_dht("127.0.0.3:0", [entry], config=config, rng=random.Random(3)) as one,
        open_dht("127.0.0.4:0", [entry], config=config, rng=random.Random(4)) as two,
    ):
        assert await one.ping(entry) is not None
        # dht hands out only nodes that have answered it (libtorrent's rule), and one has
        # only queried it so far: its answer to this ping (what dht's maintenance would do
        # within a few ticks) lets two find it through dht
        assert await dht.ping(one.addresses[0]) is not None
        await one.bootstrap()
        await two.bootstrap()
        found = await two.find_node(one.node_id)
        assert one.node_id.value in {node.node_id for node in found}
        announced = await one.announce(info_hash, 6881)
        assert announced.announced_to >= 1
        async with two.get_peers(info_hash) as search:
            peers = [peer async for peer in search]
        assert PeerAddress.parse("127.0.0.3:6881") in peers


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR record and no traceback was logged."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info is not None]
    assert not bad, [r.getMessage() for r in bad]
