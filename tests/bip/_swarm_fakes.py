"""What the swarm give-back tests share (test_swarm_give_back.py,
test_refused_request_taken_back.py): a stand-in for the peer manager around real
:class:`~bip_peer.PeerConnection` objects, so that the refusals are bip_peer's own, and our
side of a connection that takes lt_donthave."""

from __future__ import annotations

from bip_handshake import Extensions
from bip_metainfo import InfoHash
from bip_peer import (
    NEED_DATA,
    ConnectionLimits,
    DontHave,
    Extended,
    ExtendedHandshake,
    Message,
    PeerConnection,
    Request,
    StaleSendError,
)

__all__ = [
    "DONTHAVE_ID",
    "FAST",
    "PLAIN",
    "FakeManager",
    "FakePeer",
    "connection",
    "donthave",
    "read",
]

FAST = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
PLAIN = Extensions.EXTENSION_PROTOCOL
DONTHAVE_ID = 7  # the id under which our side takes lt_donthave


class FakePeer:
    """What :class:`Swarm` reads of bip_peer's :class:`~bip_peer.Peer` handle: its connection."""

    def __init__(self, connection: PeerConnection) -> None:
        self.connection = connection


class FakeManager:
    """The peer manager as :class:`Swarm` uses it, around real connections: a message is
    checked (and refused) by the peer's connection, as ``send_nowait`` does.

    Attributes:
        peers: the peers connected.
        attempts: requests the swarm tried to send.
        refused: the connection's refusals, in order.
    """

    def __init__(self) -> None:
        self.peers: set[FakePeer] = set()
        self.attempts = 0
        self.refused: list[StaleSendError] = []

    def send_nowait(self, peer: FakePeer, message: Message) -> bool:
        """Send ``message`` on the peer's connection, noting a refusal before raising it."""
        if isinstance(message, Request):
            self.attempts += 1
        try:
            peer.connection.send(message)
        except StaleSendError as error:
            self.refused.append(error)
            raise
        return True

    def send_control(self, peer: FakePeer, message: Message) -> bool:
        """As :meth:`send_nowait` (control messages take no room the tests fill)."""
        return self.send_nowait(peer, message)

    def is_connected(self, peer: FakePeer) -> bool:
        """Whether ``peer`` is connected."""
        return peer in self.peers

    def remove_peer(self, peer: FakePeer, reason: str) -> None:
        """Disconnect ``peer``."""
        self.peers.discard(peer)


def connection(num_pieces: int, extensions: Extensions = FAST, **limits: int) -> PeerConnection:
    """Our side of a connection that takes lt_donthave, for a torrent of ``num_pieces``,
    under ``limits`` (:class:`~bip_peer.ConnectionLimits` fields)."""
    ours = PeerConnection(
        num_pieces=num_pieces,
        info_hash=InfoHash(v1=bytes(20)),
        our_extensions=extensions,
        their_extensions=extensions,
        limits=ConnectionLimits(**limits),
    )
    ours.send(ExtendedHandshake(m={"lt_donthave": DONTHAVE_ID}))
    return ours


def read(ours: PeerConnection, *messages: Message) -> None:
    """The connection reads what the peer sent (the brain hears none of it)."""
    ours.receive_data(b"".join(message.encode() for message in messages))
    while ours.next_event() is not NEED_DATA:
        pass


def donthave(piece: int) -> Extended:
    """The lt_donthave message for ``piece``, as our side takes it."""
    return Extended(DONTHAVE_ID, DontHave(piece).encode_payload())
