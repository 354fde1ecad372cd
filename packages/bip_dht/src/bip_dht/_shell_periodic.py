"""Looking a torrent up in the DHT for as long as it runs: :meth:`DHT.keep_finding`.

Every client repeats the same round: join the DHT if the node needs it, look the torrent up
(or announce it, which looks it up on the way: one walk, not two), hand the peers to the
handshaker, wait, again. libtorrent does it every 15 minutes per torrent
(``dht_announce_interval``); this is ours, on top of the shell's operations.

"Needs it" is the core's own rule (:meth:`DHTNode.needs_bootstrap`: a family whose routing
table has no node we could still query, bad nodes staying in their buckets), and a round never
bootstraps beside another bootstrap of the node: one under way (the core's own re-bootstrap,
a caller's, the proxied shell's rejoin) is waited for and its outcome taken, and the rounds of
several torrents that need a join at once share one (:class:`_Join`), rather than each sending
its own find_node flood.
"""

from __future__ import annotations

import logging
import math
import weakref
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


class _Join:
    """A join of keep_finding's under way on one DHT: the rounds that need one meanwhile wait
    for it and take its outcome instead of bootstrapping beside it."""

    __slots__ = ("done", "ended")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ended = False  # ran to its end (a cancelled one decides nothing for the others)


# The join under way per DHT, if any (weak: a DHT dropped takes its entry along).
_joins: weakref.WeakKeyDictionary[DHT, _Join] = weakref.WeakKeyDictionary()


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
    node = dht.node
    while True:
        if node.needs_bootstrap(trio.current_time()):
            await _join(dht, wait=interval)
        if not _can_look_up(node, trio.current_time()):
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


async def _join(dht: DHT, *, wait: float) -> None:
    """Join for a round whose node needs a bootstrap, never beside another: when one of the
    node's is under way or queued (:attr:`DHTNode.bootstrapping`), wait for it to end (at most
    *wait* seconds) and take its outcome; else bootstrap (:meth:`DHT.bootstrap`). Rounds that
    come while a join of keep_finding's runs wait for it instead (or, when the one that ran
    was cancelled, join themselves if the node still needs it). Cancelling leaves no join
    behind."""
    while (running := _joins.get(dht)) is not None:
        await running.done.wait()
        if running.ended or not dht.node.needs_bootstrap(trio.current_time()):
            return
    join = _joins[dht] = _Join()  # before any checkpoint: no other round can slip in
    try:
        node = dht.node
        if node.bootstrapping:
            query_timeout = node.config.query_timeout
            with trio.move_on_after(wait):
                # Those that began meanwhile too: one ended need not mean we may start ours.
                while node.bootstrapping and not dht._closed:
                    # Closing the DHT wakes nobody waiting here: look every query timeout.
                    with trio.move_on_after(query_timeout):
                        await dht._bootstraps_ended()
            if dht._closed:  # its bootstraps stay "under way" for ever: no outcome to take
                raise DHTError("the DHT closed while looking the torrent up")
        else:
            await dht.bootstrap()
        join.ended = True
    finally:
        del _joins[dht]
        join.done.set()


def _can_look_up(node: DHTNode, now: float) -> bool:
    """Whether a routing table, of any family, holds a node we could still query: a lookup has
    a node to start from. Not the opposite of :meth:`DHTNode.needs_bootstrap`: a node that
    runs two families looks up through one while the other's table has no live node."""
    return any(node.table(family).closest(node.node_id, now, 1) for family in node.families)
