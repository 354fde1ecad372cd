"""The glue between bip_peer's wire messages and the brain's inputs and actions.

The brain speaks its own vocabulary (:class:`~bip_select.PeerHave`,
:class:`~bip_select.SendRequest`...) so that a simulator or another peer library can drive
it; a client built on bip_peer translates both ways, and these functions are that
translation, once:

- :func:`join_inputs`: what to feed when a :class:`bip_peer.Peer` joins the brain (its
  :class:`~bip_select.PeerJoined`, then what its connection already learnt);
- :func:`input_for`: the input a received message stands for;
- :func:`handle_message`: feed one received message to a brain, the BEP 10 handshake
  included (its ``reqq`` is not an input: it goes to the brain's request queues);
- :func:`block_received`: the input for a block once the client stored it;
- :func:`message_for`: the message an action sends.

The peer key the brain sees is the :class:`bip_peer.Peer` handle itself. Where a message
changed the connection's state, the input is read from that state rather than from the
message (a bitfield as the connection checked it, BEP 21's flag as it stands): bip_peer
already applied and checked the message, and the two cannot disagree.

Blocks and requests are not translated by :func:`input_for`: a block becomes an input only
once the client stored it (:func:`block_received`), and a peer's request is served from
storage, which the brain has no part in.

>>> from bip_peer import Have
>>> from bip_select import SendHave
>>> message_for(SendHave("a peer", 3), num_pieces=10)
Have(index=3)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    Message,
    NotInterested,
    Peer,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
    UploadOnly,
)

from ._actions import (
    Action,
    DropPeer,
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
)
from ._errors import LocalProtocolError
from ._geometry import Block
from ._inputs import AllowedFast as AllowedFastInput
from ._inputs import (
    BlockReceived,
    BlockRejected,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerNotInterested,
    PeerUnchokedUs,
    PeerUploadOnly,
)
from ._selection import MAX_ALLOWED_FAST

if TYPE_CHECKING:
    from ._brain import SwarmBrain

__all__ = ["block_received", "handle_message", "input_for", "join_inputs", "message_for"]


def join_inputs(peer: Peer, *, allowed_fast_set_size: int = 0) -> list[Input]:
    """What to feed the brain, in order, when ``peer`` joins it.

    First :class:`~bip_select.PeerJoined` with what the handshakes said (BEP 6 fast, the BEP
    10 ``reqq`` if its extended handshake was read already, BEP 21 upload only) and, for a
    fast peer, the allowed-fast set to offer it: the first ``allowed_fast_set_size`` pieces
    of its BEP 6 set (:meth:`bip_peer.PeerConnection.allowed_fast_set`; libtorrent's
    ``allowed_fast_set_size``, 0: none), without those it has or was granted already (a peer
    joining a new brain after a recheck is not granted its set twice). Then what the
    connection learnt since: availability (have all, or the pieces it announced), the
    allowed-fast pieces, an unchoke, interest. A peer can thus join the brain any time after
    :class:`bip_peer.PeerAdded` (a magnet's peers join once the metadata is in); messages the
    connection read and the client has yet to see repeat some of this, which the brain takes
    as no change.

    Raises:
        LocalProtocolError: ``allowed_fast_set_size`` is not an int in
            0..:data:`~bip_select.MAX_ALLOWED_FAST`.
    """
    size = allowed_fast_set_size
    if type(size) is not int or not 0 <= size <= MAX_ALLOWED_FAST:
        raise LocalProtocolError(
            f"allowed_fast_set_size must be an int in 0..{MAX_ALLOWED_FAST}, not {size!r}"
        )
    connection = peer.connection
    offer: tuple[int, ...] = ()
    if size and connection.fast:
        granted = connection.allowed_fast_to_peer
        offer = tuple(p for p in connection.allowed_fast_set(size) if p not in granted)
    inputs: list[Input] = [
        PeerJoined(
            peer,
            reqq=connection.peer_reqq,
            fast=connection.fast,
            upload_only=connection.peer_upload_only,
            allowed_fast=offer,
        )
    ]
    # Availability first, as the protocol orders it: the rest is about pieces it has.
    if connection.peer_has_all:
        inputs.append(PeerHaveAll(peer))
    elif len(connection.peer_pieces):
        inputs.append(PeerBitfield(peer, connection.peer_pieces))
    inputs.extend(AllowedFastInput(peer, p) for p in sorted(connection.allowed_fast_from_peer))
    if not connection.peer_choking:
        inputs.append(PeerUnchokedUs(peer))
    if connection.peer_interested:
        inputs.append(PeerInterested(peer))
    return inputs


def input_for(peer: Peer, message: object) -> Input | None:
    """The brain input a message received from ``peer`` stands for; ``None`` if none.

    ========================== ===========================================
    bip_peer message           bip_select input
    ========================== ===========================================
    Have, DontHave (BEP 54)    PeerHave, PeerDontHave
    Bitfield                   PeerBitfield (the connection's checked set)
    HaveAll, HaveNone (BEP 6)  PeerHaveAll, PeerHaveNone
    Choke, Unchoke             PeerChokedUs, PeerUnchokedUs
    Interested, NotInterested  PeerInterested, PeerNotInterested
    AllowedFast (BEP 6)        AllowedFast
    RejectRequest (BEP 6)      BlockRejected
    UploadOnly (BEP 21)        PeerUploadOnly (the connection's flag)
    ========================== ===========================================

    Everything else gives ``None``: a :class:`~bip_peer.Piece` becomes an input once the
    client stored its block (:func:`block_received`), a :class:`~bip_peer.Request` is
    served from storage, the extended handshake is not an input (:func:`handle_message`
    applies it), and the rest (keep-alives, PEX, metadata, hashes...) is no business of the
    brain's.

    >>> from bip_peer import Have
    >>> input_for("a peer", Have(3))
    PeerHave(peer='a peer', piece=3)
    """
    kind = type(message)
    if kind is Have:
        assert isinstance(message, Have)
        return PeerHave(peer, message.index)
    if kind is Bitfield:
        # The connection's set, not the message's bits: it holds the piece count check, and
        # haves that followed in the same read only repeat what the brain then learns.
        return PeerBitfield(peer, peer.connection.peer_pieces)
    if kind is HaveAll:
        return PeerHaveAll(peer)
    if kind is HaveNone:
        return PeerHaveNone(peer)
    if kind is DontHave:
        assert isinstance(message, DontHave)
        return PeerDontHave(peer, message.index)
    if kind is Choke:
        return PeerChokedUs(peer)
    if kind is Unchoke:
        return PeerUnchokedUs(peer)
    if kind is Interested:
        return PeerInterested(peer)
    if kind is NotInterested:
        return PeerNotInterested(peer)
    if kind is AllowedFast:
        assert isinstance(message, AllowedFast)
        return AllowedFastInput(peer, message.index)
    if kind is RejectRequest:
        assert isinstance(message, RejectRequest)
        return BlockRejected(peer, Block(message.index, message.begin, message.length))
    if kind is UploadOnly:
        # The connection's flag, which the message already set (BEP 21).
        return PeerUploadOnly(peer, peer.connection.peer_upload_only)
    return None


def handle_message(brain: SwarmBrain, peer: Peer, message: object, now: float) -> list[Action]:
    """Feed a message received from ``peer`` (joined to ``brain``) and return the actions.

    Every message :func:`input_for` translates goes to :meth:`SwarmBrain.handle
    <bip_select.SwarmBrain.handle>`. The BEP 10 extended handshake, which usually arrives
    after the join, sets the peer's request limit when it has a ``reqq`` (the brain's
    :attr:`QueueConfig.max_queue <bip_select.QueueConfig.max_queue>` still caps the queue,
    so the peer's number cannot make us keep more requests open) and tells the brain its
    BEP 21 flag if that changed. Blocks and requests give no action: see :func:`input_for`.

    Raises:
        LocalProtocolError: ``peer`` never joined ``brain`` (or the brain dropped it).
    """
    if type(message) is ExtendedHandshake:
        assert isinstance(message, ExtendedHandshake)
        upload_only = peer.connection.peer_upload_only
        was_upload_only = brain.is_upload_only(peer)  # raises for a peer the brain does not know
        if message.reqq is not None:
            # A later handshake may carry only changes (BEP 10): one without reqq leaves the
            # peer's earlier reqq in place, as libtorrent does.
            brain.queues.set_reqq(peer, message.reqq)
        if upload_only != was_upload_only:
            return brain.handle(PeerUploadOnly(peer, upload_only), now)
        return []
    event = input_for(peer, message)
    return [] if event is None else brain.handle(event, now)


def block_received(peer: Peer, message: Piece) -> BlockReceived:
    """The input for a block ``peer`` sent, to feed once the client stored it.

    Only storage's verdict on the whole piece makes it ours (:class:`~bip_select.PieceVerified`);
    this tells the brain the request is answered, and measures the peer's rate.

    >>> from bip_peer import Piece
    >>> block_received("a peer", Piece(2, 16384, bytes(100)))
    BlockReceived(peer='a peer', block=Block(piece=2, begin=16384, length=100))
    """
    return BlockReceived(peer, Block(message.index, message.begin, len(message.block)))


def message_for(action: Action, num_pieces: int) -> Message:
    """The bip_peer message that carries out ``action``, for a torrent of ``num_pieces``.

    ===================================== ======================================
    bip_select action                     bip_peer message
    ===================================== ======================================
    SendRequest, SendCancel               Request, Cancel (the block's triple)
    SendHave, SendAllowedFast             Have, AllowedFast
    SendBitfield                          Bitfield (``num_pieces`` bits)
    SendHaveAll, SendHaveNone             HaveAll, HaveNone
    SendInterested, SendNotInterested     Interested, NotInterested
    SendChoke, SendUnchoke                Choke, Unchoke
    ===================================== ======================================

    Raises:
        LocalProtocolError: ``action`` is a :class:`~bip_select.DropPeer` (close the
            connection instead: :meth:`bip_peer.PeerManager.remove_peer`), not an action,
            names a piece outside ``num_pieces``, or a block that is no (piece, begin, length)
            triple of uint32s.
    """
    kind = type(action)
    try:
        # A request first: it goes once per block.
        if kind is SendRequest or kind is SendCancel:
            assert isinstance(action, (SendRequest, SendCancel))
            # A block is (piece, begin, length): the piece checked here, the two others by
            # the message (uint32), anything that is no triple by unpacking it.
            piece, begin, length = action.block
            _check_piece(piece, num_pieces)
            message = Request if kind is SendRequest else Cancel
            return message(piece, begin, length)
    except (TypeError, ValueError) as error:  # a block field out of range, or no triple
        raise LocalProtocolError(f"cannot send {action!r}: {error}") from None
    if kind is SendInterested:
        return Interested()
    if kind is SendNotInterested:
        return NotInterested()
    if kind is SendChoke:
        return Choke()
    if kind is SendUnchoke:
        return Unchoke()
    if kind is SendHaveAll:
        return HaveAll()
    if kind is SendHaveNone:
        return HaveNone()
    if isinstance(action, DropPeer):
        raise LocalProtocolError(f"{action!r} closes the connection: it is not a message")
    try:
        if kind is SendHave:
            assert isinstance(action, SendHave)
            _check_piece(action.piece, num_pieces)
            return Have(action.piece)
        if kind is SendAllowedFast:
            assert isinstance(action, SendAllowedFast)
            _check_piece(action.piece, num_pieces)
            return AllowedFast(action.piece)
        if kind is SendBitfield:
            assert isinstance(action, SendBitfield)
            return Bitfield(PieceSet(num_pieces, action.pieces).to_bitfield())
    except (TypeError, ValueError) as error:  # a piece, a block field or a count out of range
        raise LocalProtocolError(f"cannot send {action!r}: {error}") from None
    raise LocalProtocolError(f"not a message action: {action!r}")


def _check_piece(piece: int, num_pieces: int) -> None:
    if type(piece) is not int or not 0 <= piece < num_pieces:
        raise ValueError(f"piece {piece!r} is not in 0..{num_pieces - 1}")
