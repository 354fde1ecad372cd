"""What the tests of joining share (test_keep_finding_bootstrap.py, test_join_if_needed.py):
a router and a node on loopback, an address that never answers, and a node behind a SOCKS5
proxy whose bootstrap name leads nowhere, for the rule that no join starts beside another.

Imported by name (``from _joining import ...``): tests/bip_dht/conftest.py puts this folder on
``sys.path``. Real nodes on 127.0.0.x; the tests run them on the autojump clock.
"""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace

import trio
import trio.testing
from _loopback import FAST
from tests._socks_server import serve_socks5

from bip_dht._shell import DHT, open_dht
from bip_dht._shell_proxy import PROBE_ATTEMPTS
from bip_handshake import PeerAddress, ProxyConfig

__all__ = [
    "ASKED",
    "QUICK",
    "Sink",
    "black_hole",
    "proxied_with_a_dead_and_a_live_name",
    "proxied_with_a_dead_name",
    "router_and_node",
]

QUICK = replace(FAST, query_timeout=0.4, slow_after=0.1, bootstrap_retry_interval=60.0)
"""Shorter still: a dead name's asking through the proxy costs :data:`ASKED` seconds."""

ASKED = PROBE_ATTEMPTS * QUICK.query_timeout
"""Seconds one asking of a dead name through the proxy takes (its probes, each timed out)."""


class Sink:
    """A PeerSink that keeps nothing (keep_finding needs somewhere for the peers to go)."""

    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        """Drop ``addresses``."""


@asynccontextmanager
async def black_hole() -> AsyncIterator[PeerAddress]:
    """An address (on 127.0.0.20) that never answers and sends no ICMP error back: a bound
    socket nobody reads (a query to it waits for its timeout)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.20", 0))
        yield PeerAddress.parse(f"127.0.0.20:{sock.getsockname()[1]}")


@asynccontextmanager
async def router_and_node(*, joined: bool = True) -> AsyncIterator[tuple[DHT, DHT]]:
    """A router on 127.0.0.2 and a node on .3 (:data:`FAST`): joined through the router, or
    knowing nobody (its table empty, no bootstrap address)."""
    async with open_dht("127.0.0.2:0", config=FAST, rng=random.Random(0)) as router:
        given = [router.addresses[0]] if joined else []
        async with open_dht(
            "127.0.0.3:0", given, config=FAST, peer_sink=Sink(), rng=random.Random(1)
        ) as node:
            if joined:
                with trio.fail_after(5):
                    await node.bootstrap()
            yield router, node


@asynccontextmanager
async def proxied_with_a_dead_name(
    clock: trio.testing.MockClock,
) -> AsyncIterator[tuple[DHT, PeerAddress]]:
    """A node behind a proxy with remote DNS whose one bootstrap name leads to a black hole
    (also yielded): each asking of it takes :data:`ASKED` seconds, and the table stays empty.
    Yielded once the first join's asking ended and the name is due again."""
    clock.autojump_threshold = 0.03  # real seconds: the proxy's loopback I/O is done by then
    async with serve_socks5() as server, black_hole() as dead:
        proxy = ProxyConfig("127.0.0.1", server.port, remote_dns=True)
        async with open_dht(
            "127.0.0.1:0",
            [f"localhost:{dead.port}"],  # the proxy resolves it to 127.0.0.1: nobody there
            config=QUICK,
            peer_sink=Sink(),
            rng=random.Random(2),
            proxy=proxy,
        ) as dht:
            with trio.fail_after(10):
                await dht.bootstrap()  # waits for the first join's asking
            await trio.sleep(1.0)  # past the spacing of askings: the name is due again
            assert dht._pending_names
            yield dht, dead


@asynccontextmanager
async def proxied_with_a_dead_and_a_live_name(
    clock: trio.testing.MockClock,
) -> AsyncIterator[tuple[DHT, PeerAddress, PeerAddress]]:
    """:func:`proxied_with_a_dead_name` with a second pending name, at which a node answers
    (as one not asked yet: the relay was down): an asking still takes :data:`ASKED` seconds
    (the dead name's probes), and gives that node's address (yielded last)."""
    async with (
        open_dht("127.0.0.1:0", config=QUICK, rng=random.Random(5)) as live,
        proxied_with_a_dead_name(clock) as (dht, dead),
    ):
        dht._pending_names.add("localhost", live.addresses[0].port)
        yield dht, dead, live.addresses[0]
