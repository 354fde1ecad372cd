"""The trio shell of uTP: one UDP socket carrying many connections (:class:`UtpSocket`).

A :class:`UtpSocket` routes each datagram to the
:class:`~bip_handshake._utp_connection.UtpConnection` its ``(address, connection id)``
names, runs one timer task per connection, and sends what the connections produce
(through one sender task when the socket cannot take it at once). It either owns a
UDP socket (:func:`open_utp_socket`) or shares one with its owner
(:func:`open_utp_over`: libtorrent runs the DHT and uTP on one port; a uTP datagram's
first byte is ``(type << 4) | 1``, a KRPC message's ``d``).

Outbound, :meth:`UtpSocket.connect` returns a connected
:class:`~bip_handshake._utp_stream.UtpStream` (so ``dial=utp.connect`` makes a
:data:`~bip_handshake.Dialer`); inbound, every accepted connection arrives in
:meth:`UtpSocket.incoming`, ready for :meth:`~bip_handshake.Handshaker.accept_stream`.

With its own socket (:func:`open_utp_socket`) the reader drains every datagram queued
(up to a batch) per wakeup and pumps each connection they touched once: a burst of DATA
is acknowledged by one ST_STATE, as libtorrent defers its acks to the end of a receive
burst, and a burst of acks opens the window once. The connections send at once on the
non-blocking socket (the sender task only takes what the kernel refused for now), so
datagrams leave when the connection's pacing says. A shared socket's owner feeds
datagrams one at a time; each is answered at once.

What an untrusted sender can make us hold is bounded: ``max_connections``
connections, ``max_pending_accepts`` unclaimed accepts (a SYN beyond either is
answered with a RESET), each connection's receive window, the bytes all
connections hold for their readers together (``max_buffered``: one
:class:`~bip_handshake._utp_connection.UtpReceiveBudget` they share), and a queue of
datagrams to send; and for how long: a half-open accept (a spoofed SYN is never
followed by anything) ends after ``keepalive_interval + connect_timeout``, or at once
when its stream is closed. A packet for no known connection is answered with a RESET, as libtorrent
does, but at most ``resets_per_second`` of them, so that spoofed packets cannot make
us a reflector. Leaving the context manager resets every connection: their streams
raise :class:`trio.BrokenResourceError`.

A socket made with ``accept_incoming=False`` (a session whose port was taken dials
from an ephemeral one nobody was told of) answers every SYN with a RESET, counted in
``refused``, and keeps no state for it, as libtorrent ignores SYNs with
``enable_incoming_utp`` off (we answer, so that the sender fails at once).

A SYN naming a connection we accepted (same address, same connection id):

- with the sequence number of the SYN that opened it, it is a resend (our ST_STATE was
  lost): answered again;
- with another one, the peer has lost that connection (it restarted, and drew the same
  id again). The SYN replaces ours when ours is over or looks dead: nothing arrived
  after its SYN (libtorrent fails such an unconfirmed connection at its first timeout),
  it only lingers after a clean close, or our bytes wait and a packet of ours (the first
  we sent after the peer's last packet: a resend, a probe of its shut window) has gone
  unanswered for a second (four round trips, if longer). A peer that answers our probes
  is alive, though its packets come more than a second apart while its window stays
  shut (we probe a timeout after its last, backing off). A peer that is merely
  quiet, with nothing of ours to ack, counts as alive however long it has been quiet:
  libtorrent sends no uTP keepalives (its BitTorrent keep-alive comes after a minute or
  more of idleness; BEP 29 defines none), and a silent connection fails on its own after
  ``idle_timeout``. The old connection fails with a :class:`UtpError` saying so (its
  stream raises :class:`trio.BrokenResourceError`), without a RESET, which would name the
  id the new connection uses; the new one is accepted as any other (counted in
  ``replaced``). Otherwise the SYN is refused with a RESET (counted in ``refused``): a
  live connection is never given up for a packet anyone who guessed its id could send.

libtorrent has no rule here (such a SYN matches no receive id, so it makes a second
connection beside the first, which keeps the packets; libutp drops it, and the peer times
out). Ours is closer to TCP's half-open recovery (RFC 793, 3.4): stale state gives way to
the restarted peer, and a RESET tells a peer whose id is still in use to draw another at
once instead of after its connect timeout. (A forged SYN's RESET reaches the real peer,
whose connection receives on that id, and may end it there. libtorrent takes a RESET
whose ack number passes its ack check, from three behind the latest of its packets
acknowledged to its latest sequence number, and whose sequence number is not beyond its
reorder window ahead of the last it received. Ours acks the forged SYN's sequence number:
a blind forger hits those few numbers of 65,536 by chance only (one that knows them ends
the connection); and ours has a random sequence number, about half of which pass. That
is no more than a RESET forged to the peer directly, which needs the same addresses, id
and ack number, could do.)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import secrets
import socket as _stdlib_socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address
from typing import Final

import trio

from ._compact import CompactError, PeerAddress
from ._fragmentation import FragmentControl
from ._handshaker import ListenError
from ._utp_config import UtpConfig, UtpConnectError, UtpError
from ._utp_connection import UtpConnection, UtpReceiveBudget, UtpState, is_mtu_probe
from ._utp_packet import UtpPacket, UtpPacketError, UtpPacketType
from ._utp_stream import UtpStream

__all__ = ["UtpSocket", "UtpStatistics", "open_utp_over", "open_utp_socket"]

_log = logging.getLogger("bip_handshake.utp")
_MAX_DATAGRAM: Final = 65536
_READ_BATCH: Final = 256
"""Datagrams read per wakeup at most before they are processed (and others may run)."""
_SOCKET_BUFFER: Final = 4 * 1024 * 1024
"""SO_RCVBUF / SO_SNDBUF asked for our own socket (the kernel may grant less)."""
_REFUSALS_PER_PUMP: Final = 4
"""Batches one pump sends again after the system refused one as too big: each refusal
lowers the connection's MTU, so a few are enough; a later pump sends the rest."""
_ADDRESS_CACHE: Final = 4096
"""Source addresses remembered as PeerAddress (parsing one per datagram is costly)."""
_MAX_SEND_QUEUE: Final = 8192
"""Datagrams waiting for the sender task at most; more are dropped, as a full NIC queue would."""
_SEQ_MASK: Final = 0xFFFF
_WARN_EVERY: Final = 1000
"""A failing shared-socket sender is logged at WARNING for the first failure of each thousand."""
_ID_DRAWS: Final = 64
"""Random connection ids drawn at most: with at most max_connections taken, 64 misses
in a row mean the ids for that peer are (nearly) all in use."""

Sender = Callable[[bytes, PeerAddress], Awaitable[None]]
"""How a shared socket's owner sends one datagram for us."""
SendNow = Callable[[bytes, PeerAddress], bool]
"""Sends one datagram without blocking: ``False`` when the socket's buffer is full."""


@dataclass(frozen=True, slots=True)
class UtpStatistics:
    """Counters of a :class:`UtpSocket` since it opened.

    Attributes:
        connections: connections now (connecting, open, or lingering after a close).
        connects: outbound connections attempted.
        connect_failures: of those, the ones that failed (timeout, RESET, cancelled).
        accepted: inbound connections accepted (delivered to :meth:`UtpSocket.incoming`).
        refused: SYNs refused (with a RESET, rate-limited): beyond ``max_connections`` or
            ``max_pending_accepts``, on a socket made with ``accept_incoming=False``, or
            naming a live connection's id with a new sequence number.
        failed: connections that ended with an error (reset, timed out, socket closed).
        datagrams_received: datagrams fed in.
        datagrams_sent: datagrams handed to the network.
        datagrams_dropped: datagrams not sent (queue full, the network refused them, or
            the socket closed before they could leave).
        invalid_datagrams: datagrams that are not uTP packets.
        unknown_connection: packets for no known connection.
        resets_sent: RESETs sent for unknown connections and refused SYNs.
        resets_suppressed: RESETs not sent because of ``resets_per_second``.
        retransmits: packets resent, over every connection.
        bytes_sent: payload bytes sent, over every connection (first transmissions).
        bytes_received: payload bytes received in order, over every connection.
        buffered: bytes received and not yet read now, over every connection (in order
            or out of order, each packet held out of order charged a fixed cost beyond
            its payload for the memory it takes); at most ``max_buffered``.
        replaced: accepted connections given up for a SYN that reused their id with a
            new sequence number (the peer restarted), the old one dead or over.
        too_big: datagrams the system refused as too big for the path (EMSGSIZE): the
            connection lowered its path MTU and sent their bytes again in smaller packets.
    """

    connections: int
    connects: int
    connect_failures: int
    accepted: int
    refused: int
    failed: int
    datagrams_received: int
    datagrams_sent: int
    datagrams_dropped: int
    invalid_datagrams: int
    unknown_connection: int
    resets_sent: int
    resets_suppressed: int
    retransmits: int
    bytes_sent: int
    bytes_received: int
    buffered: int = 0
    replaced: int = 0
    too_big: int = 0


def _reset_burst(rate: float) -> float:
    """RESETs the rate limit's bucket holds: one at least, so that a rate below one per
    second (0.2: one every five seconds) still reaches a whole token; none when it is 0."""
    return max(1.0, rate) if rate > 0 else 0.0


def _now_us() -> int:
    # round, not int: a deadline converted to seconds and back must compare as reached.
    return round(trio.current_time() * 1e6)


class _Connection:
    """A connection's core, its address, its waiters and its timer."""

    __slots__ = (
        "_changed",
        "address",
        "core",
        "key",
        "socket",
        "stream",
        "timer_scope",
    )

    def __init__(
        self,
        socket: UtpSocket,
        core: UtpConnection,
        address: PeerAddress,
        key: _Key,
    ) -> None:
        self.socket = socket
        self.core = core
        self.address = address
        self.key = key
        self.stream = UtpStream(self)
        self.timer_scope: trio.CancelScope | None = None
        # A parking lot, not an Event: waking nobody (most pumps) allocates nothing.
        self._changed = trio.lowlevel.ParkingLot()

    def flush(self) -> None:
        """Send what the core has to send, rearm its timer, wake the stream; then the
        window updates of other connections this one's read (or close) made room for."""
        self.socket._pump(self)
        self.socket._pump_woken()

    def close(self) -> None:
        """The stream was closed: FIN after the written data, then linger."""
        self.core.close(_now_us())
        self.flush()

    def wake(self) -> None:
        if self._changed:
            self._changed.unpark_all()

    async def wait_changed(self) -> None:
        """Wait until the core may have changed (a packet, a timer, a close)."""
        await self._changed.park()


_Key = tuple[PeerAddress, int]


class UtpSocket:
    """uTP connections over one UDP port.

    Made by :func:`open_utp_socket` or :func:`open_utp_over`; lives as long as their block.
    """

    def __init__(
        self,
        send: Sender,
        local_address: PeerAddress,
        config: UtpConfig,
        nursery: trio.Nursery,
        family: int | None = None,
        *,
        send_now: SendNow | None = None,
        accept_incoming: bool = True,
    ) -> None:
        """Made by the context managers; not for users."""
        self._accept_incoming = accept_incoming
        self._send = send
        self._send_now = send_now
        self._local_address = local_address
        self._config = config
        # Received bytes held over every connection: a thousand peers each filling a
        # 1 MiB window would otherwise make this socket hold a gibibyte.
        self._budget = UtpReceiveBudget(config.max_buffered)
        self._nursery = nursery
        self._family = family
        self._connections: dict[_Key, _Connection] = {}
        self._by_core: dict[UtpConnection, _Connection] = {}  # the same, by core
        self._incoming_send, self._incoming_receive = trio.open_memory_channel[UtpStream](
            config.max_pending_accepts
        )
        if not accept_incoming:
            self._incoming_send.close()  # iterating incoming() ends at once
        # Each datagram with the connection that sent it (None: a RESET to a stranger), so
        # that one the system refuses as too big goes back to its connection.
        self._queue: deque[tuple[bytes, PeerAddress, _Connection | None]] = deque()
        self._queue_ready = trio.Event()
        # Whether the sender task holds a datagram it is writing, and the event _shutdown
        # waits on for it to go (made only then). One task writes at a time: trio lets
        # only one wait for a full socket buffer.
        self._sending = False
        self._sender_done: trio.Event | None = None
        self._closed = False
        self._send_failures = 0
        self._reset_tokens = _reset_burst(config.resets_per_second)
        self._reset_refill = trio.current_time()
        self._counters = dict.fromkeys(
            (
                "connects",
                "connect_failures",
                "accepted",
                "refused",
                "failed",
                "datagrams_received",
                "datagrams_sent",
                "datagrams_dropped",
                "invalid_datagrams",
                "unknown_connection",
                "resets_sent",
                "resets_suppressed",
                "retransmits",
                "bytes_sent",
                "bytes_received",
                "replaced",
                "too_big",
            ),
            0,
        )

    @property
    def local_address(self) -> PeerAddress:
        """The address and port this socket receives on."""
        return self._local_address

    @property
    def config(self) -> UtpConfig:
        """The settings."""
        return self._config

    @property
    def accept_incoming(self) -> bool:
        """Whether peers may open connections to us (False: every SYN gets a RESET)."""
        return self._accept_incoming

    def incoming(self) -> trio.MemoryReceiveChannel[UtpStream]:
        """Connections peers opened to us, connected and ready; the receiver owns them.

        At most ``max_pending_accepts`` wait here; SYNs beyond are refused. Without
        ``accept_incoming`` nothing ever arrives: the channel is closed from the start,
        so iterating it ends at once.
        """
        return self._incoming_receive

    def statistics(self) -> UtpStatistics:
        """A snapshot of the counters."""
        totals = dict(self._counters)
        for connection in self._connections.values():
            stats = connection.core.statistics()
            totals["retransmits"] += stats.retransmits
            totals["bytes_sent"] += stats.bytes_sent
            totals["bytes_received"] += stats.bytes_received
        return UtpStatistics(
            connections=len(self._connections), buffered=self._budget.used, **totals
        )

    # Outbound.

    async def connect(self, address: PeerAddress) -> UtpStream:
        """Open a uTP connection to ``address``; a :data:`~bip_handshake.Dialer`.

        Raises:
            UtpConnectError: no answer within ``connect_timeout``, the peer answered
                with a RESET, too many connections, an address this socket cannot reach
                (another IP family, port 0), or the socket is closed.
        """
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise UtpConnectError("the uTP socket is closed")
        if not isinstance(address, PeerAddress):
            raise TypeError(f"address must be a PeerAddress, not {type(address).__name__}")
        if address.port == 0 or (self._family is not None and address.family != self._family):
            raise UtpConnectError(f"cannot reach {address} from {self._local_address}")
        if len(self._connections) >= self._config.max_connections:
            raise UtpConnectError(f"too many uTP connections ({len(self._connections)})")
        self._counters["connects"] += 1
        recv_id = self._free_id(address)
        core = UtpConnection.connect(
            recv_id,
            secrets.randbelow(0x10000),
            now_us=_now_us(),
            config=self._config,
            budget=self._budget,
            family=address.family,
        )
        connection = self._register(core, address, (address, recv_id))
        _log.debug("uTP connecting to %s (id %d)", address, recv_id)
        try:
            with trio.move_on_after(self._config.connect_timeout):
                while core.state is UtpState.SYN_SENT:
                    await connection.wait_changed()
        except BaseException:
            self._connect_failed(connection, UtpConnectError("connect cancelled"))
            raise
        if core.state is UtpState.SYN_SENT:
            error = UtpConnectError(
                f"no answer from {address} within {self._config.connect_timeout} s"
            )
            self._connect_failed(connection, error)
            raise error
        if core.error is not None:
            self._connect_failed(connection, core.error)
            if isinstance(core.error, UtpConnectError):
                raise core.error
            raise UtpConnectError(str(core.error)) from core.error
        _log.debug("uTP connected to %s (id %d)", address, recv_id)
        return connection.stream

    def _connect_failed(self, connection: _Connection, error: UtpError) -> None:
        self._counters["connect_failures"] += 1
        connection.core.abort(error)
        self._pump(connection)
        _log.debug("uTP connect to %s failed: %s", connection.address, error)

    def _free_id(self, address: PeerAddress) -> int:
        # Random ids make blind injection harder; the table is at most max_connections
        # long, so a few draws find a free one (65536 ids per address). Our send id
        # (recv_id + 1) must not be one we already send with to this peer either: an
        # accepted connection keyed recv_id + 2 sends recv_id + 1, the peer's own receive
        # id, and the peer would route our SYN to its connection and ignore it.
        for _ in range(_ID_DRAWS):
            recv_id = secrets.randbelow(0x10000)
            if (address, recv_id) in self._connections:
                continue
            neighbour = self._connections.get((address, (recv_id + 2) & _SEQ_MASK))
            if neighbour is not None and neighbour.core.send_id == (recv_id + 1) & _SEQ_MASK:
                continue
            return recv_id
        raise UtpConnectError(f"no free uTP connection id for {address}")

    # Inbound.

    def datagram_received(self, data: bytes, address: PeerAddress) -> None:
        """Feed one datagram that arrived from ``address`` (the shared socket's owner calls this).

        Never raises for bad data: garbage is counted and dropped.
        """
        connection = self._dispatch(data, address)
        if connection is not None:
            self._pump(connection)
            self._pump_woken()

    def _datagrams_received(self, batch: list[tuple[bytes, PeerAddress]]) -> None:
        """Feed datagrams read in one burst, then pump each connection they touched once.

        So a burst of DATA is acknowledged by one ST_STATE (libtorrent's deferred ack),
        and a burst of acks opens the window once; nothing waits past the burst's end.
        """
        touched: dict[_Key, _Connection] = {}
        for data, address in batch:
            connection = self._dispatch(data, address)
            if connection is not None:
                touched[connection.key] = connection
        for connection in touched.values():
            self._pump(connection)
        # A connection that failed or finished gave its bytes back: the windows that
        # reopened are announced now, not at the next read (there may be none).
        self._pump_woken()

    def _dispatch(self, data: bytes, address: PeerAddress) -> _Connection | None:
        """Route one datagram; return the connection that now needs pumping, if any."""
        if self._closed:
            return None
        self._counters["datagrams_received"] += 1
        try:
            packet = UtpPacket.decode(data)
        except UtpPacketError as error:
            self._counters["invalid_datagrams"] += 1
            _log.debug("not a uTP packet from %s: %s", address, error)
            return None
        if packet.type is UtpPacketType.SYN:
            self._syn_received(packet, address)
            return None
        connection = self._connections.get((address, packet.connection_id))
        if connection is None and packet.type is UtpPacketType.RESET:
            # The id of a RESET may be either of ours (libutp looks up both neighbours).
            for candidate in (packet.connection_id + 1, packet.connection_id - 1):
                other = self._connections.get((address, candidate & _SEQ_MASK))
                if other is not None and other.core.send_id == packet.connection_id:
                    connection = other
                    break
        if connection is None:
            self._counters["unknown_connection"] += 1
            if packet.type is not UtpPacketType.RESET:
                self._send_reset(packet, address)
            return None
        connection.core.receive_packet(packet, _now_us())
        return connection

    def _syn_received(self, syn: UtpPacket, address: PeerAddress) -> None:
        if not self._accept_incoming:
            # Nobody was told this port: a RESET makes the sender fail at once, and no
            # state is kept (a SYN flood here costs nothing but rate-limited RESETs).
            self._counters["refused"] += 1
            _log.debug("uTP SYN from %s refused: this socket accepts no connections", address)
            self._send_reset(syn, address)
            return
        key = (address, (syn.connection_id + 1) & _SEQ_MASK)
        existing = self._connections.get(key)
        if existing is not None and existing.core.initiator:
            # The peer picked a receive id whose send id is one we receive on already (our
            # own dial to it): refuse, so that it fails at once and draws another id,
            # instead of waiting for its connect timeout. Our connection is not touched.
            self._counters["refused"] += 1
            self._send_reset(syn, address)
            return
        now = _now_us()
        if existing is not None:
            if existing.core.is_resent_syn(syn):
                existing.core.receive_packet(syn, now)  # ack it again
                self._pump(existing)
                return
            if not existing.core.replaceable(now):
                self._counters["refused"] += 1
                _log.debug(
                    "uTP SYN from %s refused: id %d belongs to a live connection",
                    address,
                    key[1],
                )
                self._send_reset(syn, address)
                return
        # A connection the SYN replaces leaves room for the new one.
        others = len(self._connections) - (existing is not None)
        if (
            others >= self._config.max_connections
            or self._incoming_send.statistics().current_buffer_used
            >= self._config.max_pending_accepts
        ):
            self._counters["refused"] += 1
            _log.debug("uTP SYN from %s refused: too many connections", address)
            self._send_reset(syn, address)
            return
        if existing is not None:
            self._replace(existing, now)
        core = UtpConnection.accept(
            syn,
            secrets.randbelow(0x10000),
            now_us=now,
            config=self._config,
            budget=self._budget,
            family=address.family,
        )
        connection = self._register(core, address, key)
        try:
            self._incoming_send.send_nowait(connection.stream)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._counters["refused"] += 1
            core.abort(UtpError("accept queue full"))
            self._pump(connection)
            return
        self._counters["accepted"] += 1
        _log.debug("uTP connection from %s accepted (id %d)", address, key[1])

    def _replace(self, old: _Connection, now_us: int) -> None:
        """Fail ``old`` (its stream raises) for a new connection of the same id, quietly."""
        old.core.abort(
            UtpError("replaced: the peer opened a new connection with this id (it restarted?)")
        )
        # Its RESET would carry the connection id the peer's new dial receives on, and
        # kill it: the peer has forgotten the old connection anyway. Drop it unsent.
        old.core.datagrams_to_send(now_us)
        self._counters["replaced"] += 1
        _log.debug("uTP connection from %s (id %d) replaced by a new SYN", old.address, old.key[1])
        self._pump(old)  # wakes its stream, forgets it, stops its timer

    def _send_reset(self, packet: UtpPacket, address: PeerAddress) -> None:
        now = trio.current_time()
        rate = self._config.resets_per_second
        self._reset_tokens = min(
            _reset_burst(rate), self._reset_tokens + (now - self._reset_refill) * rate
        )
        self._reset_refill = now
        if self._reset_tokens < 1:
            self._counters["resets_suppressed"] += 1
            return
        self._reset_tokens -= 1
        self._counters["resets_sent"] += 1
        reset = UtpPacket(
            UtpPacketType.RESET,
            packet.connection_id,
            _now_us() & 0xFFFFFFFF,
            0,
            0,
            secrets.randbelow(0x10000),
            packet.seq_nr,
        )
        self._enqueue(reset.encode(), address)

    # Pumping.

    def _register(self, core: UtpConnection, address: PeerAddress, key: _Key) -> _Connection:
        connection = _Connection(self, core, address, key)
        self._connections[key] = connection
        self._by_core[core] = connection
        self._nursery.start_soon(self._run_timer, connection)
        self._pump(connection)
        return connection

    def _pump(self, connection: _Connection) -> None:
        core = connection.core
        now = _now_us()
        for _ in range(_REFUSALS_PER_PUMP):
            datagrams = core.datagrams_to_send(now)
            refused = self._send_batch(datagrams, connection)
            if refused is None:
                break
            # Too big for the path (EMSGSIZE): the core lowers its MTU; the rest of the
            # batch never left either, so their bytes can be cut again at the new size.
            core.datagram_too_big(datagrams[refused])
            for unsent in datagrams[refused + 1 :]:
                core.datagram_not_sent(unsent)
        connection.wake()
        scope = connection.timer_scope
        if core.finished:
            self._forget(connection)
            if scope is not None:
                scope.cancel()
            return
        if scope is not None:
            deadline = core.next_deadline()
            when = math.inf if deadline is None else deadline / 1e6
            if scope.deadline != when:
                scope.deadline = when

    def _send_batch(self, datagrams: list[bytes], connection: _Connection) -> int | None:
        """Send or queue ``datagrams``; the index of one refused as too big, if any."""
        address = connection.address
        for index, datagram in enumerate(datagrams):
            if not self._enqueue(datagram, address, connection):
                return index
        return None

    def _pump_woken(self) -> None:
        """Pump the connections whose window a read reopened (the budget is shared)."""
        for core in self._budget.take_woken():
            connection = self._by_core.get(core)
            if connection is not None:
                self._pump(connection)

    def _forget(self, connection: _Connection) -> None:
        if self._connections.get(connection.key) is not connection:
            return
        del self._connections[connection.key]
        core = connection.core
        del self._by_core[core]
        stats = core.statistics()
        self._counters["retransmits"] += stats.retransmits
        self._counters["bytes_sent"] += stats.bytes_sent
        self._counters["bytes_received"] += stats.bytes_received
        if core.error is not None:
            self._counters["failed"] += 1
            _log.debug("uTP connection to %s ended: %s", connection.address, core.error)
        else:
            _log.debug("uTP connection to %s closed", connection.address)

    async def _run_timer(self, connection: _Connection) -> None:
        core = connection.core
        while True:
            if core.finished:
                break
            deadline = core.next_deadline()
            with trio.CancelScope(
                deadline=math.inf if deadline is None else deadline / 1e6
            ) as scope:
                connection.timer_scope = scope
                await trio.sleep_forever()
            connection.timer_scope = None
            now = _now_us()
            core.handle_timer(now)
            self._pump(connection)
            self._pump_woken()  # a connection that timed out gave its bytes back
            following = core.next_deadline()
            if following is not None and following <= now:
                # Never spin: a deadline that did not move waits a millisecond.
                await trio.sleep(0.001)
        self._forget(connection)

    def _enqueue(
        self, datagram: bytes, address: PeerAddress, connection: _Connection | None = None
    ) -> bool:
        """Send ``datagram`` now or queue it; ``False`` only when the system refused it as
        too big for the path (EMSGSIZE) and ``connection`` must hear of it."""
        if self._send_now is not None and not self._queue:
            # Our own socket: send at once, so that the datagram leaves when the core
            # (its pacing) says, not in a burst with others when the sender task runs.
            try:
                sent = self._send_now(datagram, address)
            except OSError as error:
                if error.errno == errno.EMSGSIZE and connection is not None:
                    self._counters["too_big"] += 1
                    return False
                self._counters["datagrams_dropped"] += 1
                _log.debug("uTP send to %s failed: %s", address, error)
                return True
            if sent:
                self._counters["datagrams_sent"] += 1
                return True
        if len(self._queue) >= _MAX_SEND_QUEUE:
            self._counters["datagrams_dropped"] += 1
            return True
        self._queue.append((datagram, address, connection))
        self._queue_ready.set()
        return True

    async def _run_sender(self) -> None:
        while True:
            await self._queue_ready.wait()
            self._queue_ready = trio.Event()
            # Once closed, _shutdown sends what is left: it waits for our datagram in hand.
            while self._queue and not self._closed:
                datagram, address, connection = self._queue.popleft()
                self._sending = True
                try:
                    await self._send_one(datagram, address, connection)
                except BaseException:
                    # Cancelled while the send waited (the socket or its owner closing):
                    # it never left. (_send_one counts the errors it catches itself.)
                    self._counters["datagrams_dropped"] += 1
                    raise
                finally:
                    self._sending = False
                    if self._sender_done is not None:
                        self._sender_done.set()

    async def _send_one(
        self, datagram: bytes, address: PeerAddress, connection: _Connection | None = None
    ) -> None:
        try:
            await self._send(datagram, address)
        except OSError as error:
            if (
                error.errno == errno.EMSGSIZE
                and connection is not None
                and self._connections.get(connection.key) is connection
            ):
                # Too big for the path: the connection lowers its MTU and sends again.
                self._counters["too_big"] += 1
                connection.core.datagram_too_big(datagram)
                self._pump(connection)
                return
            # UDP send errors (unreachable, no buffer space...) are losses to uTP.
            self._counters["datagrams_dropped"] += 1
            _log.debug("uTP send to %s failed: %s", address, error)
        except Exception as error:
            # A shared socket's owner has errors of its own (the DHT's, for an address family
            # it runs no socket for): a loss too, never the end of every connection.
            self._counters["datagrams_dropped"] += 1
            self._send_failures += 1
            if self._send_failures % _WARN_EVERY == 1:
                _log.warning(
                    "uTP send to %s failed (%d failures so far): %r",
                    address,
                    self._send_failures,
                    error,
                )
        else:
            self._counters["datagrams_sent"] += 1

    async def _shutdown(self) -> None:
        """Reset every connection, send the RESETs (briefly), fail the streams."""
        self._closed = True
        for connection in list(self._connections.values()):
            connection.core.abort(UtpError("the uTP socket was closed"))
            self._pump(connection)
        self._incoming_send.close()
        with trio.move_on_after(0.5) as scope:
            scope.shield = True
            if self._sending:
                # The sender task waits to write (a full socket buffer): a second writer
                # would fail at once (trio's BusyResourceError) and lose the RESETs.
                self._sender_done = trio.Event()
                await self._sender_done.wait()
            while self._queue:
                datagram, address, _connection = self._queue[0]
                await self._send_one(datagram, address)  # no resends now: RESETs only
                self._queue.popleft()  # only once sent: a send cut short never left
        # Whatever the half second left unsent (a buffer that never drained) is lost.
        self._counters["datagrams_dropped"] += len(self._queue)
        self._queue.clear()


@asynccontextmanager
async def open_utp_over(
    send: Sender,
    local_address: PeerAddress,
    *,
    config: UtpConfig | None = None,
    accept_incoming: bool = True,
) -> AsyncIterator[UtpSocket]:
    """uTP over a UDP socket someone else owns (the DHT's, as libtorrent shares one port).

    We send through ``send``; the owner feeds every uTP datagram to
    :meth:`UtpSocket.datagram_received` (a uTP datagram's first byte is
    ``(type << 4) | 1``; a KRPC message starts with ``b"d"``). Whatever ``send``
    raises is a lost datagram (counted in ``datagrams_dropped``; an exception other
    than :class:`OSError` is also logged at WARNING, once per thousand): the
    connections retransmit or time out.

    Args:
        send: sends one datagram to an address.
        local_address: the shared socket's address (for :attr:`UtpSocket.local_address`).
        config: the settings (defaults: :class:`UtpConfig`).
        accept_incoming: accept connections peers open (False: for dialling out only;
            every SYN is answered with a RESET and counted in ``refused``, and
            :meth:`UtpSocket.incoming` is closed from the start).
    """
    async with trio.open_nursery() as nursery:
        utp = UtpSocket(
            send,
            local_address,
            config or UtpConfig(),
            nursery,
            accept_incoming=accept_incoming,
        )
        nursery.start_soon(utp._run_sender)
        try:
            yield utp
        finally:
            await utp._shutdown()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_utp_socket(
    bind: tuple[str, int] = ("127.0.0.1", 0),
    *,
    config: UtpConfig | None = None,
    accept_incoming: bool = True,
) -> AsyncIterator[UtpSocket]:
    """A UDP socket of our own carrying uTP connections.

    An IPv6 socket is IPv6-only (``IPV6_V6ONLY``), as the Handshaker's listeners are:
    open one of each family to reach both.

    Args:
        bind: the host and port to bind (port 0: any free port).
        config: the settings (defaults: :class:`UtpConfig`).
        accept_incoming: accept connections peers open (False: for dialling out only;
            every SYN is answered with a RESET and counted in ``refused``, and
            :meth:`UtpSocket.incoming` is closed from the start).

    Raises:
        ListenError: the socket cannot be bound (port taken, no such address...).
    """
    host, port = bind
    try:
        family = 6 if isinstance(ip_address(host), IPv6Address) else 4
    except ValueError as error:
        raise ListenError(f"cannot bind uTP to {host!r}: not an IP address") from error
    # A plain non-blocking socket, not trio's: the reader drains every queued datagram per
    # wakeup and the connections send at once, with no checkpoint per datagram.
    sock = _stdlib_socket.socket(
        _stdlib_socket.AF_INET6 if family == 6 else _stdlib_socket.AF_INET,
        _stdlib_socket.SOCK_DGRAM,
    )
    with sock:
        sock.setblocking(False)
        for option in (_stdlib_socket.SO_RCVBUF, _stdlib_socket.SO_SNDBUF):
            # Room for bursts while Python is busy elsewhere (the kernel caps it at
            # rmem_max / wmem_max); a refusal only leaves the default.
            with contextlib.suppress(OSError):
                sock.setsockopt(_stdlib_socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        try:
            if family == 6:
                sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))  # a numeric address: nothing to resolve, never blocks
        except OSError as error:
            raise ListenError(f"cannot bind uTP to {host}:{port}: {error}") from error
        bound = sock.getsockname()
        local = PeerAddress(ip_address(bound[0]), bound[1])
        fragments = FragmentControl.open(sock, family)
        sockaddrs: dict[PeerAddress, tuple[str, int]] = {}

        def sockaddr(address: PeerAddress) -> tuple[str, int]:
            found = sockaddrs.get(address)
            if found is None:
                if len(sockaddrs) >= _ADDRESS_CACHE:
                    sockaddrs.clear()
                found = sockaddrs[address] = (str(address.host), address.port)
            return found

        def sendto(datagram: bytes, target: tuple[str, int]) -> None:
            if fragments is None or not is_mtu_probe(datagram):
                sock.sendto(datagram, target)
                return
            # A probe: "don't fragment" for this one, so that a path too small for it
            # drops it (or the system refuses it at once: EMSGSIZE), then back.
            fragments.dont_fragment()
            try:
                sock.sendto(datagram, target)
            finally:
                fragments.allow_fragment()

        def send_now(datagram: bytes, address: PeerAddress) -> bool:
            try:
                sendto(datagram, sockaddr(address))
            except BlockingIOError:
                return False
            return True

        async def send(datagram: bytes, address: PeerAddress) -> None:
            target = sockaddr(address)
            while True:
                try:
                    sendto(datagram, target)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                else:
                    await trio.lowlevel.checkpoint()
                    return

        async with trio.open_nursery() as nursery:
            utp = UtpSocket(
                send,
                local,
                config or UtpConfig(),
                nursery,
                family,
                send_now=send_now,
                accept_incoming=accept_incoming,
            )
            nursery.start_soon(utp._run_sender)
            nursery.start_soon(_run_reader, sock, utp)
            try:
                yield utp
            finally:
                await utp._shutdown()
                nursery.cancel_scope.cancel()


async def _run_reader(sock: _stdlib_socket.socket, utp: UtpSocket) -> None:
    addresses: dict[object, PeerAddress] = {}
    while True:
        await trio.lowlevel.wait_readable(sock)
        batch: list[tuple[bytes, PeerAddress]] = []
        while len(batch) < _READ_BATCH:
            try:
                data, source = sock.recvfrom(_MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as error:
                # ICMP errors surface here on some systems (ECONNREFUSED for a closed port):
                # they concern one datagram we sent, not this socket.
                if error.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH):
                    continue
                raise
            address = addresses.get(source)
            if address is None:
                try:
                    address = PeerAddress(ip_address(source[0]), source[1])
                except (CompactError, ValueError):
                    continue  # a scoped IPv6 source: nothing we could answer in compact form
                if len(addresses) >= _ADDRESS_CACHE:
                    addresses.clear()
                addresses[source] = address
            batch.append((data, address))
        # One pump per connection per burst: one ack for many DATA, one send for many acks.
        utp._datagrams_received(batch)
