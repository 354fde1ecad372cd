"""One torrent's swarm brain (bip_select) wired to the peer manager (bip_peer).

:class:`Swarm` is the adapter between the two libraries' vocabularies: bip_peer's messages
become bip_select inputs (:func:`input_for`), and the brain's actions become bip_peer messages
queued on the manager (:meth:`Swarm.carry_out`). It is synchronous: every method runs between
two checkpoints of the task that calls it, so the brain never sees a half-applied change.

Peers join the brain late, on purpose: a peer connected before the brain exists (while a magnet
link's metadata is fetched, or the data on disk checked) is joined when the brain is made, and
its availability, choke and interest are then read from its connection state
(:meth:`Swarm.join`), which bip_peer kept up to date meanwhile. Messages of a peer not joined
are not fed to the brain.

Messages go out with :meth:`~bip_peer.PeerManager.send_nowait`: the brain's decisions must not
wait for one slow peer. The session gives every peer a send queue deep enough for the largest
request queue the brain builds (the peer's ``reqq``, capped at :data:`MAX_OUT_REQUESTS`: the
peer's number is untrusted) plus the control messages, so a full
queue means the peer stopped reading: it is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Final

from bip_metainfo import PieceSet
from bip_peer import (
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    DontHave,
    ExtendedHandshake,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    LocalProtocolError,
    NotInterested,
    Peer,
    PeerManager,
    RejectRequest,
    Request,
    Unchoke,
    UploadOnly,
)
from bip_select import (
    REASON_BAD_DATA,
    REASON_BANNED,
    Action,
    Block,
    DropPeer,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerLeft,
    PeerNotInterested,
    PeerUnchokedUs,
    PeerUploadOnly,
    SendAllowedFast,
    SendBitfield,
    SendCancel,
    SendChoke,
    SendHave,
    SendHaveAll,
    SendHaveNone,
    SendInterested,
    SendNotInterested,
    SendRequest,
    SendUnchoke,
    SwarmBrain,
    Tick,
)
from bip_select import (
    AllowedFast as AllowedFastInput,
)
from bip_select import (
    BlockRejected as BlockRejectedInput,
)

__all__ = ["MAX_OUT_REQUESTS", "REASON_STALLED", "Swarm", "input_for"]

logger = logging.getLogger("bip.client")

MAX_OUT_REQUESTS: Final = 500
"""Requests we keep open to one peer at most, whatever ``reqq`` it advertises: libtorrent's
``max_out_request_queue``. The peer's number is untrusted, and our send queue is sized for it."""

REASON_STALLED = "send queue full"
"""Why a peer whose send queue stayed full is dropped: it stopped reading."""


def _capped(reqq: int | None) -> int | None:
    return None if reqq is None else min(reqq, MAX_OUT_REQUESTS)


def input_for(peer: Peer, message: object) -> Input | None:
    """The brain input a message from ``peer`` stands for, if any.

    Pieces and requests are not here: they go through the disk first (see the torrent).
    """
    if isinstance(message, Have):
        return PeerHave(peer, message.index)
    if isinstance(message, Bitfield):
        # The connection's set, not the message's bits: it already holds the piece count
        # check, and haves that followed in the same read only repeat what the brain learns.
        return PeerBitfield(peer, peer.connection.peer_pieces)
    if isinstance(message, HaveAll):
        return PeerHaveAll(peer)
    if isinstance(message, HaveNone):
        return PeerHaveNone(peer)
    if isinstance(message, DontHave):
        return PeerDontHave(peer, message.index)
    if isinstance(message, Choke):
        return PeerChokedUs(peer)
    if isinstance(message, Unchoke):
        return PeerUnchokedUs(peer)
    if isinstance(message, Interested):
        return PeerInterested(peer)
    if isinstance(message, NotInterested):
        return PeerNotInterested(peer)
    if isinstance(message, AllowedFast):
        return AllowedFastInput(peer, message.index)
    if isinstance(message, RejectRequest):
        return BlockRejectedInput(peer, Block(message.index, message.begin, message.length))
    if isinstance(message, UploadOnly):
        # The connection's flag, which the message already set (BEP 21).
        return PeerUploadOnly(peer, peer.connection.peer_upload_only)
    return None


def _message_for(action: Action, num_pieces: int) -> object:
    """The bip_peer message an action sends (not for :class:`DropPeer`)."""
    if isinstance(action, SendRequest):
        block = action.block
        return Request(block.piece, block.begin, block.length)
    if isinstance(action, SendCancel):
        block = action.block
        return Cancel(block.piece, block.begin, block.length)
    if isinstance(action, SendHave):
        return Have(action.piece)
    if isinstance(action, SendInterested):
        return Interested()
    if isinstance(action, SendNotInterested):
        return NotInterested()
    if isinstance(action, SendChoke):
        return Choke()
    if isinstance(action, SendUnchoke):
        return Unchoke()
    if isinstance(action, SendBitfield):
        pieces = PieceSet(num_pieces)
        for piece in action.pieces:
            pieces.add(piece)
        return Bitfield(pieces.to_bitfield())
    if isinstance(action, SendHaveAll):
        return HaveAll()
    if isinstance(action, SendHaveNone):
        return HaveNone()
    if isinstance(action, SendAllowedFast):
        return AllowedFast(action.piece)
    raise TypeError(f"not a message action: {action!r}")


class Swarm:
    """The brain of one torrent and the peers joined to it.

    Args:
        manager: the peer manager the peers live in.
        brain: the torrent's brain.
        on_banned: told the peer the brain dropped for bad data (to refuse it later).
    """

    def __init__(
        self,
        manager: PeerManager,
        brain: SwarmBrain,
        *,
        on_banned: Callable[[Peer], None],
    ) -> None:
        self.manager = manager
        self.brain = brain
        self._on_banned = on_banned
        self._num_pieces = brain.geometry.num_pieces
        self.joined: set[Peer] = set()

    def join(self, peer: Peer, now: float) -> None:
        """Join ``peer`` to the brain, with what its connection learnt so far."""
        if peer in self.joined or peer not in self.manager.peers:
            return
        connection = peer.connection
        self.joined.add(peer)
        fast = connection.fast
        self.feed(
            PeerJoined(
                peer,
                reqq=_capped(connection.peer_reqq),
                fast=fast,
                upload_only=connection.peer_upload_only,
            ),
            now,
        )
        if peer not in self.joined:  # the brain refused it (banned)
            return
        # What the connection saw before the join, in protocol order: availability first.
        if connection.peer_has_all:
            self.feed(PeerHaveAll(peer), now)
        elif len(connection.peer_pieces):
            self.feed(PeerBitfield(peer, connection.peer_pieces), now)
        for piece in sorted(connection.allowed_fast_from_peer):
            self.feed(AllowedFastInput(peer, piece), now)
        if not connection.peer_choking:
            self.feed(PeerUnchokedUs(peer), now)
        if connection.peer_interested:
            self.feed(PeerInterested(peer), now)

    def leave(self, peer: Peer, now: float) -> None:
        """``peer`` is gone: its requests go back to the pool."""
        if peer in self.joined:
            self.joined.discard(peer)
            self.feed(PeerLeft(peer), now)

    def message(self, peer: Peer, message: object, now: float) -> None:
        """Feed what a joined peer's message means to the brain."""
        if peer not in self.joined:
            return
        if isinstance(message, ExtendedHandshake):
            # The BEP 10 handshake usually comes after the join: its reqq bounds our queue,
            # and its upload_only (BEP 21) may differ from what the join said.
            self.brain.queues.set_reqq(peer, _capped(message.reqq))
            upload_only = peer.connection.peer_upload_only
            if upload_only != self.brain.is_upload_only(peer):
                self.feed(PeerUploadOnly(peer, upload_only), now)
            return
        event = input_for(peer, message)
        if event is not None:
            self.feed(event, now)

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
            peer = action.peer  # type: ignore[attr-defined]
            if isinstance(action, DropPeer):
                self.joined.discard(peer)  # the brain already forgot it
                logger.debug("dropping %s: %s", peer, action.reason)
                if action.reason in (REASON_BAD_DATA, REASON_BANNED):
                    self._on_banned(peer)
                manager.remove_peer(peer, action.reason)
                continue
            if peer not in self.joined:
                continue
            try:
                sent = manager.send_nowait(peer, _message_for(action, self._num_pieces))
            except LocalProtocolError as error:
                # The brain's view and the connection's crossed (a cancel for a block that
                # just arrived, a have racing a choke): harmless, the connection refused it.
                logger.debug("not sent to %s: %s", peer, error)
                continue
            if not sent and peer in manager.peers:
                stalled.append(peer)
        for peer in stalled:
            manager.remove_peer(peer, REASON_STALLED)
