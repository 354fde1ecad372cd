"""Looking a torrent up in the DHT for as long as it runs (:meth:`DHT.keep_finding`), and the
rule by which it and the other periodic lookups join the DHT (:meth:`DHT.join_if_needed`).

Every client repeats the same round: join the DHT if there is nobody to look up with, look
the torrent up (or announce it, which looks it up on the way: one walk, not two), hand the
peers to the handshaker, wait, again. libtorrent does it every 15 minutes per torrent
(``dht_announce_interval``); this is ours, on top of the shell's operations.

"Nobody to look up with" is no routing table of any family holding a node that answered us
in this run and that we could still query (bad nodes stay in their buckets: after an outage,
a table that is not empty may have nobody to ask; the nodes restored from a saved state have
answered nobody yet, and may all be gone: open_dht's bootstrap is waited for). A family
with no such node beside one that has some is the core's own business
(:meth:`DHTNode.needs_bootstrap`: it bootstraps again by itself, at most once per
``bootstrap_retry_interval``): a dual-stack node on a host whose IPv6 reaches nobody must not
bootstrap in every round of every torrent. And a round never bootstraps beside another
bootstrap of the node: one under way or about to start (the core's own re-bootstrap, a
caller's still asking names, the proxied shell's rejoin) is waited for and its outcome taken,
and the rounds of several torrents that need a join at once share one (:class:`_Join`),
rather than each sending its own find_node flood. The proxied rejoin starts none beside a
round's join either, and the names a join asked reach the core whatever it does next. That
rule is public (:meth:`DHT.join_if_needed`): a caller's own periodic lookups (a BEP 46
follower's) share the rounds' joins rather than bootstrapping beside them.
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
from ._node_events import AnnounceFinished, LookupFinished
from ._routing import NodeState

if TYPE_CHECKING:
    from ._shell import DHT

__all__ = ["DEFAULT_FIND_INTERVAL", "join_if_needed", "keep_finding"]

_log = logging.getLogger("bip_dht.node")

DEFAULT_FIND_INTERVAL: Final = 900.0
"""Seconds between two rounds of :meth:`DHT.keep_finding` (libtorrent's 15 minutes)."""
_JOIN_RETRY: Final = 10.0  # first wait after a bootstrap that reached nobody; doubled
_REFUSED_RETRY: Final = 5.0
"""Seconds (jittered by half either way) before a round the node refused is tried again;
doubled while refused, up to :data:`_REFUSED_RETRY_MAX` (and the round's interval)."""
_REFUSED_RETRY_MAX: Final = 120.0
_ROUND_SPACING: Final = 0.1
"""Seconds at least between two rounds' starts on one DHT, whatever their torrents: a session
resuming hundreds of torrents starts their lookups over a while rather than at once (past the
node's ``max_lookups`` running and ``max_queued`` waiting, the rest are refused), and their
later rounds stay spread. libtorrent spreads its torrents' announces one per tick the same
way (``dht_announce_interval``)."""


class _Join:
    """A join of :func:`join_if_needed`'s under way on one DHT: the callers (keep_finding's
    rounds, others) that need one meanwhile wait for it and take its outcome instead of
    bootstrapping beside it."""

    __slots__ = ("done", "ended", "refused")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ended = False  # ran to its end (a cancelled one decides nothing for the others)
        # the node refused its bootstrap: those that shared it are told so too (DHTBusyError)
        self.refused = False


# The join under way per DHT, if any (weak: a DHT dropped takes its entry along).
_joins: weakref.WeakKeyDictionary[DHT, _Join] = weakref.WeakKeyDictionary()


class _Turns:
    """The line of one DHT's rounds waiting to start (:data:`_ROUND_SPACING` apart)."""

    def __init__(self) -> None:
        # fair (first come, first served), and a round cancelled while it waits leaves the
        # line at once: it reserves no time, so the rounds behind it do not wait for it
        self.line = trio.Lock()
        self.last_start = -math.inf


# The line per DHT (weak, as _joins).
_turns: weakref.WeakKeyDictionary[DHT, _Turns] = weakref.WeakKeyDictionary()


async def _wait_for_turn(dht: DHT) -> None:
    """Wait for this round's turn to start: the rounds of every torrent on *dht* start at
    least :data:`_ROUND_SPACING` apart, in the order they asked; a round cancelled while it
    waits takes no turn."""
    turns = _turns.get(dht)
    if turns is None:
        turns = _turns[dht] = _Turns()
    async with turns.line:
        await trio.sleep_until(turns.last_start + _ROUND_SPACING)
        turns.last_start = trio.current_time()


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
    from ._shell import DHTBusyError, _swarm_id, _Waiter  # noqa: PLC0415 - the shell imports this module

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
    refused_retry = min(_REFUSED_RETRY, interval)
    while True:
        try:
            joined = await join_if_needed(dht, timeout=interval)
        except DHTBusyError:
            # The join's bootstrap never ran: soon again, as a refused round (below).
            await _after_refusal(dht, refused_retry)
            refused_retry = min(refused_retry * 2, _REFUSED_RETRY_MAX, interval)
            continue
        if not joined:
            # Nobody answered (the shell logs a warning): try again, less and less often.
            _log.debug("no DHT node to look %s up with: joining again in %g s", raw.hex(), retry)
            await trio.sleep(retry)
            retry = min(retry * 2, interval)
            continue
        retry = min(_JOIN_RETRY, interval)
        await _wait_for_turn(dht)
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
        finished = waiter.finished
        if isinstance(finished, LookupFinished | AnnounceFinished) and finished.refused:
            # Never ran (every lookup slot taken, max_queued waiting): no round done, so
            # not the whole interval before the next.
            await _after_refusal(dht, refused_retry)
            refused_retry = min(refused_retry * 2, _REFUSED_RETRY_MAX, interval)
            continue
        refused_retry = min(_REFUSED_RETRY, interval)
        await trio.sleep(interval)


async def _after_refusal(dht: DHT, retry: float) -> None:
    """Wait about *retry* seconds after the node refused a round or its join: jittered by
    half either way, so that the rounds refused together do not come back together."""
    await trio.sleep(retry * dht._rng.uniform(0.5, 1.5))


async def join_if_needed(dht: DHT, *, timeout: float) -> bool:
    """The work of :meth:`DHT.join_if_needed` (see there): :func:`_join` when no family's
    routing table has a node to look up with; whether one has then.

    Raises:
        LocalProtocolError: *timeout* is not a finite number of seconds >= 0.
        DHTBusyError: the node refused the join's bootstrap (this caller's or the one it
            shared) and nobody is there to look up with.
        DHTError: the DHT closed while this waited for another's bootstrap.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        raise LocalProtocolError(f"timeout is a finite number of seconds >= 0, got {timeout!r}")
    from ._shell import DHTBusyError  # noqa: PLC0415 - the shell imports this module

    node = dht.node
    if _can_look_up(node, trio.current_time()):
        return True
    try:
        await _join(dht, wait=timeout)
    except DHTBusyError:
        if _can_look_up(node, trio.current_time()):  # somebody answered meanwhile after all
            return True
        raise
    return _can_look_up(node, trio.current_time())


async def _join(dht: DHT, *, wait: float) -> None:
    """Join for a caller with nobody to look up with (a round of keep_finding's, ...), never
    beside another bootstrap: start one (:meth:`DHT._bootstrap`) unless one of the node's
    runs or a caller's is about to start, decided at the moment of starting; else wait for
    those to end (and for those that begin meanwhile) and take their outcome. Callers that
    come while a join of this function's runs wait for it instead (or, when the one that ran
    was cancelled, join themselves if there is still nobody to look up with). Waiting for
    others (their joins, their bootstraps) ends within *wait* seconds of the call (the
    caller's own bound, a round's interval, not the holder's); the caller's own bootstrap,
    when it starts one, is bounded by its own steps instead
    (``PROXY_WAIT`` for the relay, ``PROBE_ATTEMPTS`` query timeouts per name, the core's
    query timeouts and limits for the lookup): a join cut at a short interval would never
    end. Cancelling leaves no join behind.

    Raises:
        DHTBusyError: the node refused the join's bootstrap, this caller's or the one it
            waited for.
        DHTError: the DHT closed while this waited for a bootstrap.
    """
    from ._shell import DHTBusyError  # noqa: PLC0415 - the shell imports this module

    node = dht.node
    deadline = trio.current_time() + wait
    while (running := _joins.get(dht)) is not None:
        with trio.move_on_at(deadline):
            await running.done.wait()
        if not running.done.is_set():  # past our own bound: the round goes on without
            return
        if running.refused:  # its outcome is ours: nothing was asked
            raise DHTBusyError("the DHT node refused the bootstrap of the join this one shared")
        if running.ended or _can_look_up(node, trio.current_time()):
            return
    join = _joins[dht] = _Join()  # before any checkpoint: no other round can slip in
    try:
        try:
            started = await dht._bootstrap(unless_running=True)
        except DHTBusyError:
            join.refused = join.ended = True
            raise
        if not started:
            query_timeout = node.config.query_timeout
            with trio.move_on_at(deadline):
                # Those that began meanwhile too: one ended need not mean we may start ours.
                while dht._bootstrap_under_way() and not dht._closed:
                    # Closing the DHT wakes nobody waiting here: look every query timeout.
                    with trio.move_on_after(query_timeout):
                        await dht._bootstraps_ended()
                        await dht._bootstrap_starts_ended()
            if dht._closed:  # its bootstraps stay "under way" for ever: no outcome to take
                raise DHTError("the DHT closed while waiting for a bootstrap to join through")
        join.ended = True
    finally:
        del _joins[dht]
        join.done.set()


def _can_look_up(node: DHTNode, now: float) -> bool:
    """Whether a routing table, of any family, holds a node that answered us in this run and
    that we could still query (not bad): a lookup has a node to start from, and the round
    joins only when not. A node that never answered does not count: the nodes restored from
    a saved state come back unconfirmed, and when they are all gone a lookup started from
    them alone finds nothing, while open_dht's bootstrap (through its bootstrap addresses
    too) would have found the network: waiting for that bootstrap is worth it. Not the
    opposite of :meth:`DHTNode.needs_bootstrap`: a node that runs two families looks up
    through one while the other's table has no live node (the core bootstraps that one
    again by itself)."""
    # A walk of the tables at worst (every node unconfirmed or bad), once per round: the
    # first node that answered ends it in a table that works.
    return any(
        entry.in_bucket and entry.last_response is not None and entry.state is not NodeState.BAD
        for family in node.families
        for entry in node.table(family).entries(now)
    )
