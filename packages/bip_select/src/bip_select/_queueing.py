"""Request queueing: how many requests each peer gets, timeouts, snubbing, trust and bans.

API:

- ``QueueConfig``: the knobs, with libtorrent's defaults: keep ``request_queue_time``
  = 3 s of data in flight, at least ``min_queue`` = 2 and at most ``max_queue`` = 500
  requests and never more than the peer's ``reqq`` (``default_reqq`` = 250 when it
  did not say); slow start from ``initial_queue`` = 4; snub after ``snub_timeout`` =
  60 s without a block while requests are pending; trust points -2 per bad piece,
  +1 per good one, ban at ``ban_trust`` = -7 (a fourth bad piece) or at once when a
  peer alone sent a bad piece.
- ``PeerQueues(config, identity=None)``: per-peer state; trust is kept per *identity*
  (``identity(peer)``: the key itself by default, a client passes the peer's host), so it
  outlives the connection, as libtorrent keeps it on the peer list's entry.

  - ``add_peer(peer, now, reqq=None)``, ``remove_peer(peer)``, ``set_reqq(peer, reqq)``.
  - ``block_received(peer, nbytes, now)``: measures the rate, ends a snub, grows the
    slow-start queue.
  - ``desired_depth(peer, now)``: how many requests to keep in flight;
    ``room(peer, outstanding, now)``: how many more to send now.
  - ``expired(book, now) -> list[(peer, block)]``: requests to give up on (the caller
    calls ``book.time_out`` and sends a cancel, then re-requests elsewhere); a peer
    that sent nothing for ``snub_timeout`` while asked for data is snubbed (queue depth
    1; the choker gives it only the optimistic slot).
  - ``request_timed_out(peer, now)``: the client's own timer fired: snub.
  - ``block_arrived(peer, block, now)`` / ``block_settled(peer, block, now)``: a block
    the peer delivered waits for our disk, then was stored or dropped. While one of its
    blocks waits, the peer's clocks are held: ``expired`` neither snubs it nor times out
    its requests (our disk is late, not the peer); ``is_waiting(peer, block)``.
  - ``piece_passed(sources)`` / ``piece_failed(sources, ban_sole_contributor=True) ->
    banned peers``: trust points; a peer that sent part of a bad piece is put on
    *parole* (give it whole pieces nobody else works on, so the next verdict is its
    alone). Sources that left
    before the verdict are judged too (and may be banned): a liar cannot escape by
    hanging up before the hash check. Penalties always go to the identity; rewards
    only to a source that is connected and its identity's *only* connection (see
    :meth:`PeerQueues.piece_passed`: a twin connection must not launder a liar).
  - ``download_rate(peer, now)``, ``is_snubbed``, ``on_parole``, ``is_banned``,
    ``trust(peer)``, ``hash_failures(peer)`` (the last four for departed peers too),
    ``refuses(peer)``, ``next_deadline(book)``; ``parole_peers``: the connected peers on
    parole (a set kept as parole starts and ends and peers come and go).

The trust of departed identities is remembered for the last :data:`MAX_DEPARTED` of them
(least recently seen forgotten first), and only of those that sent us a block or were
judged (one that never did is forgotten as it leaves: no verdict can be pending on it):
what peers that come and go can make us keep.

Rates are bip_peer's ``RateMeter`` (a sliding window that does not underestimate a
young peer), the one the choker uses too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Final, TypeAlias

from bip_peer import RateMeter

from ._errors import LocalProtocolError
from ._geometry import BLOCK_SIZE, Block
from ._requests import RequestBook

__all__ = ["MAX_DEPARTED", "PeerQueues", "QueueConfig"]

PeerKey: TypeAlias = Hashable

MAX_DEPARTED: Final = 4096
"""Departed identities whose trust :class:`PeerQueues` remembers, at most (least recently
seen forgotten first). Above libtorrent's ``max_peerlist_size`` (3000), whose entries carry
the trust there; a few hundred bytes each."""


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Knobs of :class:`PeerQueues` (defaults: libtorrent's).

    Attributes:
        request_queue_time: seconds of data to keep requested from each peer.
        min_queue: never fewer requests in flight (unless snubbed).
        max_queue: never more (libtorrent's ``max_out_request_queue``).
        initial_queue: the slow-start queue depth of a new peer.
        default_reqq: the peer's request limit when its handshake did not say.
        snub_timeout: seconds without a block, while requests are pending, before a
            peer is snubbed and its requests go to others.
        request_timeout: a single request pending this long while the peer sends
            other blocks is given up (a peer that silently drops requests).
        rate_window: seconds the download rates are averaged over.
        ban_trust: a peer whose trust points fall to this is banned.
        ban_sole_contributor: ban a peer that alone sent a piece that failed.
    """

    request_queue_time: float = 3.0
    min_queue: int = 2
    max_queue: int = 500
    initial_queue: int = 4
    default_reqq: int = 250
    snub_timeout: float = 60.0
    request_timeout: float = 60.0
    rate_window: float = 5.0
    ban_trust: int = -7
    ban_sole_contributor: bool = True

    def __post_init__(self) -> None:
        """Refuse knobs that cannot work."""
        if not 1 <= self.min_queue <= self.max_queue:
            raise LocalProtocolError("need 1 <= min_queue <= max_queue")
        if not (self.request_queue_time > 0 and self.snub_timeout > 0):
            raise LocalProtocolError("queue time and timeouts must be positive")
        if not (self.request_timeout > 0 and 0 < self.rate_window < float("inf")):
            raise LocalProtocolError("queue time and timeouts must be positive")
        if self.initial_queue < 1 or self.default_reqq < 1 or self.ban_trust >= 0:
            raise LocalProtocolError("bad initial_queue, default_reqq or ban_trust")


class _Record:
    """What outlives a connection: trust, hash failures, parole, ban (libtorrent keeps
    these on the peer list's ``torrent_peer``, not on the connection)."""

    __slots__ = ("banned", "connections", "failures", "parole", "sent", "trust")

    def __init__(self) -> None:
        self.trust = 0
        self.failures = 0
        self.parole = False
        self.banned = False
        self.connections = 0  # connected peers with this identity
        self.sent = False  # a block came from it: a hash verdict may still name it

    def pristine(self) -> bool:
        """Whether it never sent a block and was never judged: nothing to remember once it
        left (no verdict can be pending on it, no trust to take up)."""
        return not (self.sent or self.trust or self.failures or self.parole or self.banned)


class _Peer:
    __slots__ = (
        "held_until",
        "identity",
        "last_block",
        "meter",
        "record",
        "reqq",
        "slow_start",
        "slow_start_rate",
        "slow_start_tick",
        "snubbed",
        "waiting",
        "window",
    )

    def __init__(
        self, config: QueueConfig, now: float, reqq: int, identity: Hashable, record: _Record
    ) -> None:
        self.meter = RateMeter(config.rate_window, now=now)
        self.reqq = reqq
        self.last_block = now  # idle time counts from joining
        self.snubbed = False
        self.slow_start = True
        self.window = config.initial_queue
        self.slow_start_rate = 0.0
        self.slow_start_tick = now
        self.identity = identity
        self.record = record
        # Blocks it delivered that wait for our disk (block_arrived): its clocks are held
        # meanwhile. At most its requests in flight (only those are recorded), and every
        # one is settled by the client (stored or dropped) or goes with the peer.
        self.waiting: dict[Block, None] = {}
        # When its last waiting block was settled: its requests' clocks restart there (a
        # request sent before a disk stall is not the peer's fault for the stall's length).
        self.held_until = now


_MAX_TRUST = 8  # libtorrent caps good behaviour too, so old merit cannot hide new fraud


class PeerQueues:
    """Per-peer request queue depths, rates, timeouts, snubbing and trust.

    >>> q = PeerQueues()
    >>> q.add_peer("x", now=0.0, reqq=3)
    >>> q.desired_depth("x", now=0.0)
    3
    >>> for t in range(1, 21):
    ...     q.block_received("x", 16384, now=t / 2)
    >>> q.set_reqq("x", None); q.end_slow_start("x")
    >>> q.desired_depth("x", now=10.0)  # 32 KiB/s * 3 s = 6 blocks
    6
    """

    __slots__ = ("_config", "_departed", "_identity", "_parole", "_peers", "_records")

    def __init__(
        self,
        config: QueueConfig | None = None,
        *,
        identity: Callable[[PeerKey], Hashable] | None = None,
    ) -> None:
        """Start with no peers.

        Args:
            config: the knobs (default: libtorrent's).
            identity: whose trust a peer's deeds count toward: ``identity(peer)`` for a peer
                key, departed peers' keys included (default: the key itself). A client whose
                keys are connections passes the peer's host, so a liar that reconnects keeps
                its trust, as libtorrent bans by IP address.
        """
        self._config = config or QueueConfig()
        self._identity: Callable[[PeerKey], Hashable] = identity or _same
        self._peers: dict[PeerKey, _Peer] = {}
        # Every identity with a connected peer, and the departed ones remembered; those have
        # no connection left and are in ``_departed`` too, least recently seen first.
        self._records: dict[Hashable, _Record] = {}
        self._departed: OrderedDict[Hashable, None] = OrderedDict()
        # The connected peers whose identity is on parole: a parole peer's every pick asks
        # who else is (PiecePicker.pick's ``on_parole``), so it is kept, not gathered.
        self._parole: set[PeerKey] = set()

    @property
    def config(self) -> QueueConfig:
        """The knobs."""
        return self._config

    def _peer(self, peer: PeerKey) -> _Peer:
        try:
            return self._peers[peer]
        except KeyError:
            raise LocalProtocolError(f"peer {peer!r} never joined") from None

    def add_peer(self, peer: PeerKey, now: float, reqq: int | None = None) -> None:
        """Start tracking ``peer``; ``reqq`` is its BEP 10 request limit if it sent one.

        A peer whose identity was seen before takes up its trust, parole and ban.

        Raises:
            LocalProtocolError: the peer is already known.
        """
        if peer in self._peers:
            raise LocalProtocolError(f"peer {peer!r} joined twice")
        identity = self._identity(peer)
        record = self._records.get(identity)
        if record is None:
            record = self._records[identity] = _Record()
        else:
            self._departed.pop(identity, None)
        record.connections += 1
        self._peers[peer] = _Peer(self._config, now, self._reqq(reqq), identity, record)
        if record.parole:
            self._parole.add(peer)

    def _reqq(self, reqq: int | None) -> int:
        # A reqq of 0 or less is nonsense from the peer: fall back to the default.
        if reqq is None or type(reqq) is not int or reqq < 1:
            return self._config.default_reqq
        return reqq

    def set_reqq(self, peer: PeerKey, reqq: int | None) -> None:
        """The peer's request limit changed (a later BEP 10 handshake)."""
        self._peer(peer).reqq = self._reqq(reqq)

    def remove_peer(self, peer: PeerKey) -> None:
        """Forget ``peer``'s connection (not its identity's trust: see :data:`MAX_DEPARTED`).

        An identity left with no connection that never sent a block (:meth:`block_received`)
        and was never judged is forgotten at once: no verdict can be pending on it, there is
        nothing to take up if it comes back, and peers that merely come and go should cost
        no memory.
        """
        state = self._peers.pop(peer, None)
        if state is None:
            return
        self._parole.discard(peer)
        record = state.record
        record.connections -= 1
        if record.connections == 0:
            if record.pristine():
                del self._records[state.identity]
            else:
                self._remember(state.identity)

    def _remember(self, identity: Hashable) -> None:
        """``identity`` has no connection left, or a departed one was just judged: keep it
        as the most recently seen departed one, forgetting the least recent beyond the bound."""
        departed = self._departed
        departed[identity] = None
        departed.move_to_end(identity)
        while len(departed) > MAX_DEPARTED:
            oldest, _ = departed.popitem(last=False)
            del self._records[oldest]

    def __contains__(self, peer: object) -> bool:
        """Whether ``peer`` is tracked."""
        return peer in self._peers

    # -- rates and depth ---------------------------------------------------------------

    def block_received(self, peer: PeerKey, nbytes: int, now: float) -> None:
        """``peer`` delivered ``nbytes`` of block data at ``now``.

        Raises:
            LocalProtocolError: an unknown peer or a negative size.
        """
        if nbytes < 0:
            raise LocalProtocolError(f"a block has no negative size ({nbytes})")
        state = self._peer(peer)
        state.record.sent = True
        state.meter.add(nbytes, now)
        state.last_block = max(state.last_block, now)
        state.snubbed = False
        if state.slow_start:
            # One more request per block received: the window doubles every round
            # trip until the rate stops growing (TCP's slow start, as libtorrent does).
            state.window = min(state.window + 1, self._config.max_queue)
            if now - state.slow_start_tick >= 1.0:
                rate = state.meter.rate(now)
                if rate < state.slow_start_rate * 1.1:
                    state.slow_start = False
                state.slow_start_rate = rate
                state.slow_start_tick = now

    def end_slow_start(self, peer: PeerKey) -> None:
        """Size ``peer``'s queue from its measured rate only from now on."""
        self._peer(peer).slow_start = False

    def download_rate(self, peer: PeerKey, now: float) -> float:
        """``peer``'s measured download rate in bytes per second."""
        return self._peer(peer).meter.rate(now)

    def downloaded(self, peer: PeerKey) -> int:
        """Bytes of block data ``peer`` sent us."""
        return self._peer(peer).meter.total

    def desired_depth(self, peer: PeerKey, now: float) -> int:
        """How many requests to keep pending at ``peer``.

        ``rate * request_queue_time / BLOCK_SIZE``, at least ``min_queue`` (and the
        slow-start window while it lasts), at most ``max_queue`` and the peer's reqq.
        A snubbed peer gets 1.
        """
        state = self._peer(peer)
        if state.snubbed:
            return 1
        config = self._config
        depth = int(state.meter.rate(now) * config.request_queue_time / BLOCK_SIZE)
        if state.slow_start:
            depth = max(depth, state.window)
        depth = max(depth, config.min_queue)
        return max(1, min(depth, config.max_queue, state.reqq))

    def room(self, peer: PeerKey, outstanding: int, now: float) -> int:
        """How many more requests ``peer`` should get, with ``outstanding`` pending."""
        return max(0, self.desired_depth(peer, now) - outstanding)

    # -- timeouts and snubbing ---------------------------------------------------------

    def is_snubbed(self, peer: PeerKey) -> bool:
        """Whether ``peer`` stopped sending while asked for data (no block since)."""
        return self._peer(peer).snubbed

    def snub(self, peer: PeerKey) -> None:
        """Mark ``peer`` snubbed: one request at a time until it sends a block."""
        state = self._peer(peer)
        state.snubbed = True
        state.slow_start = False

    def request_timed_out(self, peer: PeerKey, now: float) -> None:
        """The client's own request timer for ``peer`` fired: snub it."""
        self.snub(peer)

    def block_arrived(self, peer: PeerKey, block: Block, now: float) -> None:
        """``peer`` delivered ``block`` (asked of it) at ``now``, and it waits for our disk.

        A snub ends (the peer is sending, as libtorrent's ``incoming_piece`` decides on the
        data's arrival, before its disk write). The peer's idle clock is refreshed, and held
        until every block of it that waits is settled (:meth:`block_settled`): meanwhile
        :meth:`expired` neither snubs it nor times out its requests. A client that stops
        reading a peer while its disk is behind holds up the peer's other requests itself;
        the peer is not to blame for them.
        The rate is measured when the block is stored (:meth:`block_received`).

        Raises:
            LocalProtocolError: an unknown peer.
        """
        state = self._peer(peer)
        state.last_block = max(state.last_block, now)
        state.snubbed = False
        state.waiting[block] = None

    def block_settled(self, peer: PeerKey, block: Block, now: float) -> None:
        """``block`` of ``peer`` no longer waits for the disk (stored, or dropped by the
        client): once none waits, the peer's clocks run again from ``now``. Nothing happens
        for a block that did not wait (or an unknown peer: it may have left)."""
        state = self._peers.get(peer)
        if state is None or not _waits(state, block):
            return
        del state.waiting[block]
        if not state.waiting:
            state.held_until = max(state.held_until, now)

    def is_waiting(self, peer: PeerKey, block: Block) -> bool:
        """Whether ``block`` of ``peer`` arrived and waits for the disk (:meth:`block_arrived`)."""
        state = self._peers.get(peer)
        return state is not None and _waits(state, block)

    def expired(self, book: RequestBook, now: float) -> list[tuple[PeerKey, Block]]:
        """The pending requests to give up on at ``now``.

        A peer with requests pending and no block for ``snub_timeout`` is snubbed and
        loses them all; a peer that is sending loses only requests older than
        ``request_timeout`` (it dropped them). The caller times them out in the book
        (``book.time_out``), sends cancels and requests the blocks elsewhere.

        A peer with a block waiting for our disk (:meth:`block_arrived`) loses nothing, and
        once none waits its clocks count from when the last one was settled: time our disk
        held it up is not the peer's.
        """
        config = self._config
        result: list[tuple[PeerKey, Block]] = []
        for peer in list(book.peers()):
            state = self._peers.get(peer)
            if state is None or state.waiting:
                continue
            pending = book.outstanding(peer)
            held_until = state.held_until
            oldest = max(next(iter(pending.values())), held_until)
            idle_since = max(state.last_block, oldest)
            if now - idle_since >= config.snub_timeout:
                self.snub(peer)
                result.extend((peer, block) for block in pending)
                continue
            for block, sent in pending.items():
                if now - max(sent, held_until) < config.request_timeout:
                    break  # insertion order: the rest are younger
                result.append((peer, block))
        return result

    def next_deadline(self, book: RequestBook) -> float | None:
        """When :meth:`expired` may next have something to say (None: nothing pending,
        or only at peers whose blocks wait for our disk: a settle comes first)."""
        config = self._config
        best: float | None = None
        for peer in book.peers():
            state = self._peers.get(peer)
            if state is None or state.waiting:
                continue
            oldest = max(next(iter(book.outstanding(peer).values())), state.held_until)
            when = min(
                max(state.last_block, oldest) + config.snub_timeout,
                oldest + config.request_timeout,
            )
            best = when if best is None else min(best, when)
        return best

    # -- trust, parole and bans ---------------------------------------------------------

    def _record(self, peer: PeerKey, judged: bool = False) -> _Record | None:
        """The record of ``peer``, connected or departed (None: never seen, or forgotten);
        a departed one being ``judged`` becomes the last to forget (a query changes nothing)."""
        state = self._peers.get(peer)
        if state is not None:
            return state.record
        identity = self._identity(peer)
        record = self._records.get(identity)
        if judged and record is not None and record.connections == 0:
            self._remember(identity)
        return record

    def _known(self, peer: PeerKey) -> _Record:
        record = self._record(peer)
        if record is None:
            raise LocalProtocolError(f"peer {peer!r} never joined (or is forgotten)")
        return record

    def _judged(
        self, sources: Collection[PeerKey]
    ) -> tuple[list[tuple[PeerKey, _Record]], dict[int, _Record], int]:
        """The sources with a record, their distinct records (two connections of one
        identity are one source, as libtorrent counts ``torrent_peer`` entries), and how
        many contributors that makes: a source with no record (never seen, or forgotten)
        counts as one too."""
        known: list[tuple[PeerKey, _Record]] = []
        records: dict[int, _Record] = {}
        unknown = 0
        for peer in sources:
            record = self._record(peer, judged=True)
            if record is None:
                unknown += 1
            else:
                known.append((peer, record))
                records.setdefault(id(record), record)
        return known, records, len(records) + unknown

    def piece_passed(self, sources: Collection[PeerKey]) -> None:
        """A piece that ``sources`` sent blocks of hashed good.

        An identity gains a trust point (and leaves parole, if it sent the piece alone)
        only through a source that is still connected and is the identity's *only*
        connection. Penalties (:meth:`piece_failed`) go to the identity whichever of its
        connections earned them, so rewards must not come from a twin: a host's second
        connection sending whole good pieces alone would otherwise pay for, and lift the
        parole of, its first connection lying in shared pieces, and the host would never
        reach ``ban_trust`` while the honest peers it shares pieces with would. A departed
        source earns nothing either (which connection of the host it was no longer tells).
        Conservative: an honest host with two connections gains no trust while it has both
        (it loses none for it either), and libtorrent's usual single connection per host
        is unaffected.
        """
        # Judged all (departed ones become the last to forget); rewarded as said above.
        _, _, contributors = self._judged(sources)
        rewarded: dict[int, tuple[PeerKey, _Record]] = {}
        for peer in sources:
            state = self._peers.get(peer)
            if state is not None and state.record.connections == 1:
                rewarded.setdefault(id(state.record), (peer, state.record))
        for peer, record in rewarded.values():
            if record.banned:
                continue  # a ban is final: no point in rewarding what is being dropped
            record.trust = min(record.trust + 1, _MAX_TRUST)
            if contributors == 1:
                record.parole = False  # it proved itself alone
                self._parole.discard(peer)  # its identity's only connection

    def piece_failed(
        self, sources: Collection[PeerKey], *, ban_sole_contributor: bool = True
    ) -> list[PeerKey]:
        """A piece that ``sources`` sent blocks of hashed bad; returns the peers to ban.

        Each loses two trust points (a bad piece weighs more than a good one) and goes
        on parole. A peer is banned at ``ban_trust`` points, or at once if it alone sent
        the piece (the config's ``ban_sole_contributor``, unless this call's is False: a
        source the client knows a kinder reason for, as libtorrent's web seeds): then
        there is no doubt whose data it was.
        Every source is blamed alike, whichever blocks it sent: without per-block hashes
        nobody knows which block was bad (parole sorts it out).

        Pass *every* source, departed peers included (what ``piece_failed`` of the
        picker or the book returns). A departed peer is judged as a connected one (its
        identity's trust is remembered) and returned if banned, so that the client bans
        what it came from: a liar gains nothing by hanging up before the verdict. Peers
        never seen (or forgotten) are skipped, but still count as contributors: filtering
        them out first would make an honest peer that shared a piece with a liar look like
        its sole author. The other connected peers of a banned identity are returned too,
        after the sources.
        """
        config = self._config
        known, records, contributors = self._judged(sources)
        newly: set[int] = set()
        paroled = False  # a connected identity newly on parole
        for key, record in records.items():
            if record.banned:
                continue
            record.trust = max(record.trust - 2, config.ban_trust)
            record.failures += 1
            paroled = paroled or (record.connections > 0 and not record.parole)
            record.parole = True
            if record.trust <= config.ban_trust or (
                config.ban_sole_contributor and ban_sole_contributor and contributors == 1
            ):
                record.banned = True
                newly.add(key)
        if paroled:
            # Every connection of the identity, not only the sources (rare: a scan is fine).
            self._parole.update(peer for peer, state in self._peers.items() if state.record.parole)
        if not newly:
            return []
        banned = dict.fromkeys(peer for peer, record in known if id(record) in newly)
        # Other connections of a banned identity go with it (rare: a scan is fine).
        for peer, state in self._peers.items():
            if id(state.record) in newly:
                banned.setdefault(peer, None)
        return list(banned)

    def on_parole(self, peer: PeerKey) -> bool:
        """Whether ``peer`` sent part of a bad piece and has not since sent a good one alone."""
        return self._known(peer).parole

    @property
    def parole_peers(self) -> AbstractSet[PeerKey]:
        """The connected peers on parole (:meth:`on_parole`): a live set, O(1) to ask, kept
        as parole starts and ends and peers join and leave (do not change it)."""
        return self._parole

    def is_banned(self, peer: PeerKey) -> bool:
        """Whether ``peer`` is to be dropped for bad data."""
        return self._known(peer).banned

    def refuses(self, peer: PeerKey) -> bool:
        """Whether ``peer``'s identity was banned: a peer not to let in. Unlike
        :meth:`is_banned`, a peer never seen is no error (it is not refused)."""
        record = self._records.get(self._identity(peer))
        return record is not None and record.banned

    def trust(self, peer: PeerKey) -> int:
        """``peer``'s trust points (-7..8)."""
        return self._known(peer).trust

    def hash_failures(self, peer: PeerKey) -> int:
        """How many bad pieces ``peer`` sent blocks of."""
        return self._known(peer).failures


def _waits(state: _Peer, block: Block) -> bool:
    """Whether ``block`` waits for the disk at ``state``'s peer (a malformed block, say one
    with an unhashable field from a client's input, does not: no TypeError from here)."""
    if not state.waiting:
        return False  # most peers, most of the time: no hashing
    try:
        return block in state.waiting
    except TypeError:
        return False


def _same(peer: PeerKey) -> Hashable:
    """The default identity: the peer key itself."""
    return peer
