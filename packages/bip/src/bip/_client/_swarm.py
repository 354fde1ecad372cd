"""One torrent's swarm brain (bip_select) wired to the peer manager (bip_peer).

:class:`Swarm` is the adapter between the two libraries' vocabularies: bip_peer's messages
become bip_select inputs (bip_select's :func:`~bip_select.handle_message`), and the brain's
actions become bip_peer messages (:func:`~bip_select.message_for`) queued on the manager
(:meth:`Swarm.carry_out`). It is synchronous: every method runs between
two checkpoints of the task that calls it, so the brain never sees a half-applied change.

Peers join the brain late, on purpose: a peer connected before the brain exists (while a magnet
link's metadata is fetched, or the data on disk checked) is joined when the brain is made, and
its availability, choke and interest are then read from its connection state
(:meth:`Swarm.join`, with :func:`~bip_select.join_inputs`), which bip_peer kept up to date
meanwhile. Messages of a peer not joined
are not fed to the brain.

BEP 19 web seeds join the same brain as virtual peers (:class:`~bip._client._webseed.WebSeed`,
:meth:`Swarm.join_web_seed`): the brain's actions for one go to it rather than to the manager.

BEP 6 allowed fast, as libtorrent: each fast peer is offered the first ``allowed_fast_set_size``
pieces of its allowed-fast set when it joins (:func:`~bip_select.join_inputs`), and the brain
grants them at its first interest (:class:`~bip_select.SendAllowedFast`, carried out as any
other action). The connection then takes its requests for them while we choke it, and the
torrent serves them; :meth:`Swarm.fast_request` bounds what a choked peer takes of its
grants (libtorrent's three times each piece).

Messages go out without waiting: the brain's decisions must not wait for one slow peer.
Requests, cancels and the bitfield go with :meth:`~bip_peer.PeerManager.send_nowait`: the
session gives every peer a send queue deep enough for the largest request queue the brain
builds (the peer's ``reqq``, capped at :data:`MAX_OUT_REQUESTS` by the brains'
:data:`QUEUEING`: the peer's number is untrusted) and for our answers to its requests. The
rest (haves, chokes, interest, allowed fast) go with :meth:`~bip_peer.PeerManager.send_control`,
past that count: they are bounded by the protocol (a have per piece), not by the peer's pace,
and while we download fast a have per piece piles up behind each block a slow but honest
peer takes seconds to read. Either refused means the peer stopped reading: it is dropped.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Final, cast

import trio

from bip_peer import LocalProtocolError, Peer, PeerManager, StaleSendError
from bip_select import (
    MAX_ALLOWED_FAST,
    REASON_BAD_DATA,
    REASON_BANNED,
    Action,
    Block,
    BlockRejected,
    DropPeer,
    Input,
    PeerChokedUs,
    PeerDontHave,
    PeerKey,
    PeerLeft,
    PeerQueues,
    QueueConfig,
    SendBitfield,
    SendCancel,
    SendRequest,
    SwarmBrain,
    Tick,
    handle_message,
    join_inputs,
    message_for,
)

from ._webseed import WebSeed

__all__ = [
    "FAST_PIECE_REPEATS",
    "MAX_OUT_REQUESTS",
    "QUEUEING",
    "REASON_FAST_ABUSED",
    "REASON_STALLED",
    "Swarm",
    "brain_queueing",
    "trust_identity",
]

logger = logging.getLogger("bip.client")

MAX_OUT_REQUESTS: Final = 500
"""Requests we keep open to one peer at most, whatever ``reqq`` it advertises: libtorrent's
``max_out_request_queue``. The peer's number is untrusted, and our send queue is sized for it."""

QUEUEING: Final = QueueConfig(max_queue=MAX_OUT_REQUESTS)
"""The brains' request queueing: bip_select's defaults, the queue depth capped at
:data:`MAX_OUT_REQUESTS` whatever a peer's ``reqq`` says."""

REASON_STALLED = "send queue full"
"""Why a peer whose send queue stayed full is dropped: it stopped reading."""

REASON_FAST_ABUSED = "too many requests when choked"
"""Why a choked peer that took its allowed-fast pieces over and over is dropped (libtorrent's
``too_many_requests_when_choked``)."""

FAST_PIECE_REPEATS: Final = 3
"""How many times over a choked peer may request the blocks of one allowed-fast piece
before it is dropped: libtorrent's ``3 * blocks_per_piece`` requests per piece."""

_COUNTED: Final = frozenset({SendRequest, SendCancel, SendBitfield})
"""The actions whose messages count in the peer's send queue (``send_nowait``); the others'
are control messages (``send_control``)."""


def trust_identity(key: PeerKey) -> Hashable:
    """Whose trust a brain's peer key counts toward: a peer's host (IPv4 in IPv6 form as
    IPv4), as libtorrent keeps trust on the peer list's entry and bans by IP address, so a
    liar that reconnects (from another port) takes up its trust where it left it; a web
    seed's URL (tagged, so no host can share it), since a restart makes a new
    :class:`WebSeed` for the same URL and its trust must carry over; any other key itself."""
    if isinstance(key, Peer):
        return key.address.normalized().host
    if isinstance(key, WebSeed):
        return ("web seed", key.layout.base)
    return key


def brain_queueing() -> PeerQueues:
    """A fresh request queueing policy for one brain: :data:`QUEUEING`'s knobs, trust kept
    per host (:func:`trust_identity`; departed hosts' up to bip_select's ``MAX_DEPARTED``)."""
    return PeerQueues(QUEUEING, identity=trust_identity)


class Swarm:
    """The brain of one torrent and the peers joined to it.

    Args:
        manager: the peer manager the peers live in.
        brain: the torrent's brain.
        on_banned: told the peer the brain dropped for bad data (to refuse it later).
        allowed_fast_set_size: allowed-fast pieces offered to each fast peer (BEP 6;
            libtorrent's ``allowed_fast_set_size``); 0: none.

    Raises:
        ValueError: ``allowed_fast_set_size`` is not an int in
            0..:data:`~bip_select.MAX_ALLOWED_FAST`.
    """

    def __init__(
        self,
        manager: PeerManager,
        brain: SwarmBrain,
        *,
        on_banned: Callable[[Peer], None],
        allowed_fast_set_size: int = 0,
    ) -> None:
        size = allowed_fast_set_size
        if type(size) is not int or not 0 <= size <= MAX_ALLOWED_FAST:
            raise ValueError(
                f"allowed_fast_set_size must be an int in 0..{MAX_ALLOWED_FAST}, not {size!r}"
            )
        self.manager = manager
        self.brain = brain
        self._on_banned = on_banned
        self._num_pieces = brain.geometry.num_pieces
        self._allowed_fast_set_size = size
        # Blocks of each allowed-fast piece a choked peer requested (fast_request). Weak: the
        # counts go with the peer's handle however it left. At most one entry per piece granted.
        self._fast_requests: weakref.WeakKeyDictionary[Peer, dict[int, int]] = (
            weakref.WeakKeyDictionary()
        )
        # libtorrent's bound: three times the blocks of a whole piece.
        self._fast_request_limit = FAST_PIECE_REPEATS * brain.geometry.blocks_in_piece(0)
        self._refused = 0  # sends the connection refused for a reason other than staleness
        # Requests the connection refused that the peer never saw, waiting to go back to the
        # brain (True: a fast peer's choke refused it; False: the peer took the piece back),
        # and whether they are being given back now (see _give_back: carry_out must not
        # recurse into it).
        self._unsent: deque[tuple[Peer, Block, bool]] = deque()
        self._giving_back = False
        self.joined: set[Peer] = set()
        self.web_seeds: set[WebSeed] = set()
        """The web seeds joined to the brain (BEP 19 virtual peers, :class:`WebSeed`)."""

    def join(self, peer: Peer, now: float) -> None:
        """Join ``peer`` to the brain, with what its connection learnt so far."""
        if peer in self.joined or peer not in self.manager.peers:
            return
        self.joined.add(peer)
        for event in join_inputs(peer, allowed_fast_set_size=self._allowed_fast_set_size):
            self.feed(event, now)
            if peer not in self.joined:  # the brain refused it (banned)
                return

    def fast_request(self, peer: Peer, piece: int) -> bool:
        """A request of ``peer`` for a block of ``piece``, a piece we granted it (BEP 6
        allowed fast), came while we choke it: whether to serve it.

        The caller asks only for a granted piece (the connection refuses the others while
        we choke, and rejects those still open at our choke), so at most one entry per
        granted piece. A choked peer may take each granted piece a few times over (a block
        lost, a piece that failed its hash), as libtorrent lets it:
        :data:`FAST_PIECE_REPEATS` times the blocks of a whole piece; past that it is taking
        our upload for free, and it is dropped (``False``; the caller drops it), as
        libtorrent disconnects it. Counted only while choked (with a request made just
        before our choke that reached the torrent after it: a queue's worth at most): what
        it takes unchoked is its due. O(1).
        """
        counts = self._fast_requests.get(peer)
        if counts is None:
            counts = self._fast_requests[peer] = {}
        count = counts.get(piece, 0)
        if count >= self._fast_request_limit:
            return False
        counts[piece] = count + 1
        return True

    def join_web_seed(self, seed: WebSeed, now: float) -> None:
        """Join a web seed to the brain: a peer with every piece that never chokes us."""
        if seed in self.web_seeds or not seed.usable:
            return
        self.web_seeds.add(seed)
        for event in seed.join_inputs():
            self.feed(event, now)
            if seed not in self.web_seeds:  # pragma: no cover - a web seed is never banned early
                return

    def web_seed_input(self, seed: WebSeed, event: Input, now: float) -> None:
        """Feed what a joined web seed did (a rejected block, a choke, leaving...)."""
        if seed not in self.web_seeds:
            return
        if isinstance(event, PeerLeft):
            self.web_seeds.discard(seed)
        self.feed(event, now)

    def leave(self, peer: Peer, now: float) -> None:
        """``peer`` is gone: its requests go back to the pool."""
        if peer in self.joined:
            self.joined.discard(peer)
            self.feed(PeerLeft(peer), now)

    def message(self, peer: Peer, message: object, now: float) -> None:
        """Feed what a joined peer's message means to the brain."""
        if peer in self.joined:
            self.carry_out(handle_message(self.brain, peer, message, now))

    def feed(self, event: Input, now: float) -> None:
        """Give the brain an input and carry out what it decides."""
        self.carry_out(self.brain.handle(event, now))

    def tick(self, now: float) -> None:
        """Run the brain's timers if they are due."""
        deadline = self.brain.next_deadline()
        if deadline is not None and now >= deadline:
            self.carry_out(self.brain.handle(Tick(now), now))

    def carry_out(self, actions: Iterable[Action]) -> None:
        """Send the messages the brain asked for; drop the peers it gave up on."""
        manager = self.manager
        stalled: list[Peer] = []
        for action in actions:
            key: PeerKey = action.peer
            if isinstance(key, WebSeed):
                if isinstance(action, DropPeer):
                    self.web_seeds.discard(key)  # the brain already forgot it
                if key in self.web_seeds or isinstance(action, DropPeer):
                    key.act(action)
                continue
            peer = cast(Peer, key)  # the brain's other keys are the manager's Peer handles
            if isinstance(action, DropPeer):
                # The brain already forgot it. It may have left already (a source of a bad
                # piece that hung up before the verdict): removing it again does nothing,
                # but its host is banned all the same.
                self.joined.discard(peer)
                logger.debug("dropping %s: %s", peer, action.reason)
                if action.reason in (REASON_BAD_DATA, REASON_BANNED):
                    self._on_banned(peer)
                manager.remove_peer(peer, action.reason)
                continue
            if peer not in self.joined:
                continue
            send = manager.send_nowait if type(action) in _COUNTED else manager.send_control
            try:
                sent = send(peer, message_for(action, self._num_pieces))
            except StaleSendError as error:
                # The brain's view lags the connection's (a cancel for a block that just
                # arrived, a request meeting a choke or a piece taken back): the connection
                # refused it. Refused requests go back to the brain, which would otherwise
                # wait 60 s for them (the peer never saw them, so nothing answers them): those
                # of a piece the peer took back (lt_donthave, a bitfield replacing what it
                # said), with or without BEP 6 (the brain keeps its requests across a
                # dont-have, for the ones the peer saw), and those a fast peer's choke
                # refused. Without BEP 6 the choke's own event frees every request (given
                # back earlier, the choke would overtake blocks already read, and they would
                # be asked again).
                logger.debug("not sent to %s: %s", peer, error)
                if isinstance(action, SendRequest):
                    if error.choked:
                        if peer.connection.fast:
                            self._unsent.append((peer, action.block, True))
                    elif action.block.piece not in peer.connection.peer_pieces:
                        self._unsent.append((peer, action.block, False))
                continue
            except LocalProtocolError as error:  # pragma: no cover - a bug of ours
                # Said loudly (on the 1st, 2nd, 4th... only: a bug may repeat per block), but
                # one refused message must not stop the whole session.
                self._refused += 1
                loud = self._refused & (self._refused - 1) == 0
                level = logging.WARNING if loud else logging.DEBUG
                logger.log(level, "not sent to %s (refusal %d): %s", peer, self._refused, error)
                continue
            if not sent and manager.is_connected(peer):  # (O(1); one being removed is not)
                stalled.append(peer)
        for peer in stalled:
            manager.remove_peer(peer, REASON_STALLED)
        if self._unsent and not self._giving_back:
            self._give_back()

    def _give_back(self) -> None:
        """Requests the connection refused for news the brain has not heard yet go back to
        the brain, else it would wait for them (60 s): the peer never saw them, so it never
        answers or rejects them.

        - A fast peer's choke (read by the connection before the brain heard of it): with
          the fast extension a choke keeps requests pending until the peer rejects them
          (BEP 6), and these the peer never saw (a super-seed chokes a peer between two
          pieces, as it says not interested, while the next piece's have is on its way).
          The brain hears the choke first, so that it asks the peer nothing more until its
          unchoke but its allowed fast pieces (the choke's own event, later, is no news).
        - A piece the peer took back (lt_donthave, or a bitfield replacing what it said):
          the brain hears that the peer lacks it first, so that it does not ask that peer
          for it again (it would be refused again) but another peer that has it, at once
          (the peer's own message, later, is no news).

        What the brain decides meanwhile is carried out by nested :meth:`carry_out` calls,
        whose own refusals join the queue this loop empties instead of recursing (a peer
        could otherwise make the stack overflow). Each (peer, block) goes back once per
        pass, so the loop ends even if the brain asked the same block again and again: one
        refused twice stays pending, as any request the peer leaves unanswered.
        """
        now = trio.current_time()
        unsent = self._unsent
        given: set[tuple[Peer, Block]] = set()
        choked: set[Peer] = set()  # the brain hears a peer's choke once a pass
        lacking: set[tuple[Peer, int]] = set()  # and that it lacks a piece once a pass
        self._giving_back = True
        try:
            while unsent:
                peer, block, by_choke = unsent.popleft()
                entry = (peer, block)
                if entry in given or peer not in self.joined:
                    continue
                given.add(entry)
                if by_choke:
                    if peer not in choked:
                        choked.add(peer)
                        self.feed(PeerChokedUs(peer), now)
                elif (peer, block.piece) not in lacking:
                    lacking.add((peer, block.piece))
                    self.feed(PeerDontHave(peer, block.piece), now)
                if peer in self.joined:
                    self.feed(BlockRejected(peer, block), now)
        finally:
            self._giving_back = False
            unsent.clear()  # (only if the brain raised: nothing of a failed pass is kept)
