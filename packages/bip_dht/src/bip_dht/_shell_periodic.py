"""Looking a torrent up in the DHT for as long as it runs: :meth:`DHT.keep_finding`.

Every client repeats the same round: join the DHT if the routing table is empty, look the
torrent up (or announce it, which looks it up on the way: one walk, not two), hand the peers
to the handshaker, wait, again. libtorrent does it every 15 minutes per torrent
(``dht_announce_interval``); this is ours, on top of the shell's operations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from bip_handshake import PeerSink
from bip_metainfo import InfoHash

from ._errors import DHTError, LocalProtocolError
from ._node import DHTNode

if TYPE_CHECKING:
    from ._shell import DHT

__all__ = ["DEFAULT_FIND_INTERVAL", "keep_finding"]

_log = logging.getLogger("bip_dht.node")

DEFAULT_FIND_INTERVAL: Final = 900.0
"""Seconds between two rounds of :meth:`DHT.keep_finding` (libtorrent's 15 minutes)."""
_JOIN_RETRY: Final = 10.0  # first wait after a bootstrap that reached nobody; doubled


async def keep_finding(
    dht: DHT,
    info_hash: bytes | InfoHash,
    *,
    interval: float,
    announce: bool,
    port: int | None,
    seed: bool,
    sink: PeerSink | None,
) -> NoReturn:
    """The loop behind :meth:`DHT.keep_finding` (see there)."""
    from ._shell import _swarm_id, _Waiter  # noqa: PLC0415 - the shell imports this module

    raw = _swarm_id(info_hash)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or interval <= 0
    ):
        raise LocalProtocolError(f"interval is a finite number of seconds > 0, got {interval!r}")
    if port is not None:
        if not announce:
            raise LocalProtocolError("a port is only for announcing: pass announce=True")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 0xFFFF:
            raise LocalProtocolError(f"a port is 1..65535, got {port!r}")
    if seed and not announce:
        raise LocalProtocolError("seed is only for announcing: pass announce=True")
    if not announce and sink is None and dht._sink is None:
        raise LocalProtocolError(
            "the peers found would go nowhere: open the DHT with a peer_sink, or pass sink"
        )
    start: Callable[[DHTNode, float], int]
    if announce:
        start = lambda node, now: node.announce(raw, now, port=port, seed=seed)  # noqa: E731
    else:
        start = lambda node, now: node.get_peers(raw, now)  # noqa: E731
    retry = min(_JOIN_RETRY, interval)
    while True:
        if dht.node.statistics().table_size == 0 and await dht.bootstrap() == 0:
            # Nobody answered (the shell logs a warning): try again, less and less often.
            _log.debug("no DHT node to look %s up with: joining again in %g s", raw.hex(), retry)
            await trio.sleep(retry)
            retry = min(retry * 2, interval)
            continue
        retry = min(_JOIN_RETRY, interval)
        waiter = _Waiter()
        operation = dht._begin(start, waiter)
        try:
            while True:
                if waiter.peers and sink is not None:
                    # The DHT's own peer sink had them already (the shell's dispatch).
                    sink.discovered(info_hash, list(waiter.peers), "dht")
                waiter.peers.clear()
                if waiter.finished is not None:
                    break
                if waiter.closed:
                    raise DHTError("the DHT closed while looking the torrent up")
                await waiter.wait_changed()
        finally:
            if waiter.finished is None:
                dht._cancel(operation)
        await trio.sleep(interval)
