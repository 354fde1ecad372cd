"""DHT nodes on loopback for the shell's tests: each binds its own 127.0.0.x address, since
the routing table keeps one node per IP and the rate limiter counts per IP, as on the real
network."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from bip_dht import DHT, DHTConfig, open_dht

FAST = DHTConfig(query_timeout=2.0, slow_after=0.5)
"""Short timeouts (a dead address costs two seconds, not eight), still far above loopback's
round trip on a busy machine."""


@asynccontextmanager
async def loopback_swarm(
    count: int, config: DHTConfig = FAST, **options: Any
) -> AsyncIterator[list[DHT]]:
    """``count`` nodes on 127.0.0.2, .3, ... (node i's randomness seeded with i, ``options``
    passed to every ``open_dht``): the first joined through the second and pinged every other,
    which then joined through the first."""
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_dht(f"127.0.0.{i + 2}:0", config=config, rng=random.Random(i), **options)
            )
            for i in range(count)
        ]
        await nodes[0].bootstrap([nodes[1].addresses[0]])
        # The first node is everyone's entry, and it hands out only nodes that have answered
        # it (libtorrent's rule): it pings them first, as its maintenance would in a few
        # ticks, so the joiners learn of each other through it at once.
        async with trio.open_nursery() as nursery:
            for dht in nodes[2:]:
                nursery.start_soon(nodes[0].ping, dht.addresses[0])
        async with trio.open_nursery() as nursery:
            for dht in nodes[1:]:
                nursery.start_soon(dht.bootstrap, [nodes[0].addresses[0]])
        yield nodes
