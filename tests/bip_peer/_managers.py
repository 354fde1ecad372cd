"""Two real PeerManagers joined over trio memory streams, for the bip_peer service tests.

:func:`node` runs a :class:`~bip_peer._manager.PeerManager` whose events a background task
drains into :attr:`Node.events` (an undrained manager would block once its event channel
fills), and :func:`connect` joins two of them as if one had dialled the other and both
handshakes had completed, so tests exercise the peer wire protocol and the services without
sockets. ``tests/bip_peer/conftest.py`` puts this folder on ``sys.path``: ``from _managers
import Node, connect, node``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from typing import Any

import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId, Transport
from bip_metainfo import InfoHash
from bip_peer._manager import (
    ManagerEvent,
    Peer,
    PeerManager,
    PeerManagerConfig,
    PeerRemoved,
    PeerService,
    open_peer_manager,
)

#: The reserved bits both sides advertise unless a test says otherwise: BEP 10 and BEP 6.
EXT = Extensions.EXTENSION_PROTOCOL | Extensions.FAST


@dataclass
class Node:
    """A PeerManager with its events drained (and kept) by a background task.

    Attributes:
        manager: the running manager.
        address: where it listens: what a peer that dialled it knows it by.
        events: every event the manager has emitted so far, in order.
    """

    manager: PeerManager
    address: PeerAddress
    events: list[ManagerEvent] = field(default_factory=list)

    def removed(self) -> list[PeerRemoved]:
        """The :class:`PeerRemoved` events so far."""
        return [event for event in self.events if isinstance(event, PeerRemoved)]


@asynccontextmanager
async def node(
    nursery: trio.Nursery,
    address: PeerAddress,
    services: Iterable[PeerService] = (),
    **options: Any,
) -> AsyncIterator[Node]:
    """Run a PeerManager with ``services`` listening (nominally) on ``address.port``.

    Args:
        nursery: runs the task that drains the events; it outlives the manager, so the
            caller cancels it when done.
        address: the node's address (its port becomes the manager's ``listen_port``).
        services: the peer services, in the order the manager consults them.
        options: other :class:`PeerManagerConfig` fields, which win over the two above
            (``listen_port=None``: a node with no port to tell its peers).

    Yields:
        The node; the manager closes when the block exits.
    """
    config = replace(
        PeerManagerConfig(services=list(services), listen_port=address.port), **options
    )
    async with open_peer_manager(config) as manager:
        result = Node(manager, address)

        async def drain() -> None:
            async for event in manager.events():
                result.events.append(event)

        nursery.start_soon(drain)
        yield result


def connect(
    dialler: Node,
    listener: Node,
    *,
    info_hash: InfoHash,
    swarm_id: bytes | None = None,
    ephemeral: int = 50000,
    transport: Transport = "tcp",
    extensions: Extensions = EXT,
    dialler_id: bytes = b"D",
    listener_id: bytes = b"L",
) -> tuple[Peer, Peer]:
    """Join two managers: ``dialler`` dialled ``listener`` (which sees an ephemeral port).

    Args:
        dialler: the side that opened the connection (its peer is outbound).
        listener: the side that accepted it; it knows the dialler as
            ``dialler.address.host`` at port ``ephemeral``.
        info_hash: the torrent both handshakes completed for.
        swarm_id: the 20-byte id on the wire (by default ``info_hash``'s first swarm id).
        ephemeral: the dialler's source port as the listener sees it.
        transport: what both sides believe carries the connection.
        extensions: the reserved bits both sides advertised.
        dialler_id: one byte, repeated to the dialler's 20-byte peer id.
        listener_id: one byte, repeated to the listener's 20-byte peer id.

    Returns:
        The listener as the dialler's peer, and the dialler as the listener's.
    """
    ours, theirs = trio.testing.memory_stream_pair()
    wire = info_hash.swarm_ids()[0] if swarm_id is None else swarm_id

    def handshake(
        stream: trio.abc.Stream, address: PeerAddress, peer_id: bytes, outbound: bool
    ) -> CompletedHandshake:
        return CompletedHandshake(
            stream=stream,
            trailing=b"",
            peer_id=PeerId(peer_id * 20),
            extensions=extensions,
            our_extensions=extensions,
            info_hash=info_hash,
            swarm_id=wire,
            address=address,
            direction="outbound" if outbound else "inbound",
            transport=transport,
        )

    inbound_from = PeerAddress(dialler.address.host, ephemeral)
    a = dialler.manager.add_peer(handshake(ours, listener.address, listener_id, True))
    b = listener.manager.add_peer(handshake(theirs, inbound_from, dialler_id, False))
    return a, b


def handshake_with(
    stream: trio.abc.Stream,
    host: str,
    n: int,
    *,
    info_hash: InfoHash,
    extensions: Extensions = EXT,
) -> CompletedHandshake:
    """A completed outbound handshake with peer number ``n`` at ``host``:6881 over ``stream``,
    for a single manager whose far end the test drives itself."""
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-" + f"{n:012d}".encode()),
        extensions=extensions,
        our_extensions=extensions,
        info_hash=info_hash,
        swarm_id=info_hash.swarm_ids()[0],
        address=PeerAddress(ip_address(host), 6881),
        direction="outbound",
    )
