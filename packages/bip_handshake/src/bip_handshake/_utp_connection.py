"""One uTP (BEP 29) connection, sans-IO: reliability, ordering and LEDBAT congestion control.

A :class:`UtpConnection` is fed decoded packets (:meth:`~UtpConnection.receive_packet`)
and timer ticks (:meth:`~UtpConnection.handle_timer`), takes bytes to send
(:meth:`~UtpConnection.write`) and hands out bytes received (:meth:`~UtpConnection.read`);
:meth:`~UtpConnection.datagrams_to_send` says what to put on the wire. Time is always an
argument, in integer microseconds; nothing here reads a clock or draws random numbers
(the caller picks connection ids and initial sequence numbers).

How it behaves, following BEP 29 and libtorrent:

- Connection ids: the initiator receives on ``recv_id`` and sends ``recv_id + 1``; its
  SYN carries ``recv_id``. The receiver mirrors it. Sequence and ack numbers are 16 bits
  and wrap; every comparison is modular.
- Path MTU discovery, as libtorrent: datagrams are at most the *floor*
  (``UtpConfig.min_datagram``, 1232 bytes, which every path carries) until a probe shows
  that the path carries more. One probe at a time is in flight: a full DATA packet padded
  to the middle of the floor and the *ceiling* (``max_datagram_v4`` / ``_v6``) with an
  extension every uTP implementation skips (type :data:`PADDING_EXTENSION`, behind
  libutp's 8-byte "extension bits", the first type libutp lets a packet name); its ack
  raises the floor, its loss lowers the ceiling (a binary search, over in about eight
  round trips). A packet is the probe only if its datagram leaves at exactly that size:
  one whose selective ack leaves too little room for the padding (12 bytes at least) goes
  as an ordinary packet, uncounted, and its loss is an ordinary loss (the next full packet
  may be the probe). A lost probe is no sign of congestion: the window is not cut, and the
  packet goes again unpadded, so that its data never depends on the larger size; acked
  before that copy left (a late ack), it undoes its loss (the size arrived). EMSGSIZE
  from the socket (:meth:`UtpConnection.datagram_too_big`, and
  :meth:`UtpConnection.datagram_not_sent` for the rest of the batch) lowers the ceiling at
  once; packets that never left the host are cut again to the new size. Two timeouts with
  no ack of ours in between (the peer's own packets may still arrive) restart the search
  from the floor (the path may have shrunk). Small writes are
  coalesced, Nagle-like: a packet shorter than a full one leaves only when nothing else is
  in flight, or when the stream is being closed.
- Sending is bounded by ``min(cwnd, peer's advertised window)``. A closed peer window is
  probed with one packet after a retransmission timeout.
- Pacing: once a round trip is measured, packets leave at most
  :data:`_PACING_BURST` bytes back to back, then at ``gain * cwnd / rtt`` (gain 2 in slow
  start, 1.25 after); :meth:`~UtpConnection.next_deadline` says when the next may go. A
  window that opens at once (a burst of acks, a write after an idle spell) would otherwise
  leave in one burst and overflow the receiver's UDP socket buffer: on loopback, where
  the delay never builds, that was every retransmission seen against libtorrent.
- Retransmission: a timeout of ``max(rtt + 4 * rtt_var, 500 ms)`` (1 s before any
  sample; samples only from packets sent once, after the last resend, acked by a new
  ack), doubled on each expiry in a row, at most 60 s. As libtorrent, every packet from
  the peer that passes the ack check ends the backoff (the path works again) and brings
  a backed-off deadline in to one plain timeout from then: after an outage the next loss
  is resent within a second, not after the 32 s the backoff reached (during which the
  peer's keepalive would arrive first and time a 29 s round trip). After
  ``max_timeouts`` expiries without a packet from the peer in between the connection
  fails (a peer that answers but takes nothing fails after ``idle_timeout``, below).
  Three duplicate acks, or three selectively acked packets past a hole, resend the hole
  at once.
- LEDBAT: the peer echoes our one-way delay in ``timestamp_difference``; the base delay
  is the minimum over the last two minutes, the queuing delay the smallest of the last
  three samples above it. The window grows by at most
  :data:`MAX_CWND_INCREASE_PER_RTT` bytes per round trip scaled by how far the delay is
  below the 100 ms target (and shrinks above it), after a slow start that ends at the
  first loss or when the target is reached. A loss halves it (once per round trip), a
  timeout drops it to one packet. It only grows while the window is the limit.
- Window updates: when the window we last advertised was under one packet and reading
  (ours, or another connection's, for the socket-wide budget) opens it to at least one
  packet, or past half the buffer, an ST_STATE says so at once, instead of the peer
  waiting for its zero-window probe; once per opening (the update is the new advertised
  window).
- Receiving: out-of-order packets wait in a reorder buffer bounded by the window we
  advertise (``receive_buffer`` less what is buffered) and by a reorder bound of one
  packet per KiB of ``receive_buffer``, from :data:`MAX_REORDER_DISTANCE` (the default
  1 MiB's, and the floor) to 4096; we acknowledge them with selective acks. A DATA, FIN
  or ST_STATE further ahead (an ST_STATE shows the peer's next number: one more), or more
  than the bound plus one behind (older than any packet the peer may still resend), is
  dropped whole, before its acks, window and timestamps count (libtorrent drops those ahead so):
  forged, or from a connection that lost more than that. A DATA or FIN behind still gets
  our ack, as any duplicate does.
- Every connection of a socket draws on one :class:`UtpReceiveBudget`
  (``max_buffered`` bytes): the window we advertise never exceeds what it has left,
  out-of-order data takes at most half of it, and a packet it cannot afford is dropped
  (the peer resends it). A packet held out of order costs its payload and
  ``_REORDER_PACKET_COST`` bytes more, the memory holding it takes, so that empty or tiny
  ones count too (the window, a promise in payload bytes, counts payloads only). An
  in-order packet that fills the hole before a connection's own out-of-order data is
  taken even when the budget is full (that data was selectively acked: the peer no longer
  has it, so it cannot be dropped, and it leaves only once the hole is filled), so
  ``max_buffered`` may be passed by one packet per connection holding out-of-order data:
  only while that connection's reader holds nothing in order, so that the next such
  packet waits for the reader to take it.
- Acks are validated, as libtorrent does: a packet acking a sequence number we never
  sent is dropped whole, and so is one acking more than three behind our latest ack
  (libtorrent's duplicate-ack slack: a peer's acks only grow, so an older one is a packet
  reordered behind later ones, or a keepalive's ``ack_nr - 1``); one a little behind is
  taken, its ack ignored. A blind forger must hit the few numbers of our flight, not half
  of them. An accepted connection is confirmed only by an ack of our latest, of a packet
  in flight, or a keepalive's one behind it. A RESET that acks nothing we sent is ignored
  too (libtorrent): while we connect it must ack our SYN; after, a packet we sent or one
  up to three behind, or 0 from an initiator that never confirmed (it knew none of our
  numbers): a RESET forged blind needs a plausible ack number as well as the connection
  id. A FIN fixes the last sequence number; nothing past it is taken. A FIN's payload is
  ignored (libtorrent reads data from ST_DATA only).
- A keepalive ST_STATE goes out after ``keepalive_interval`` of our silence (with
  ``ack_nr - 1``, as libtorrent, so that it never counts as a duplicate ack), and a
  connection that hears nothing for ``idle_timeout`` fails. So does one whose written
  bytes wait ``idle_timeout`` without any of ours acknowledged (a peer that keeps
  answering with its window shut: alive, but never taking anything), with a RESET.
- Half-open accepts: a connection whose initiator sent nothing but its SYN fails after
  ``keepalive_interval + connect_timeout`` (a resent SYN shows a live initiator: then
  only the idle timeout applies), and closing it ends it at once with a RESET when
  nothing written waits, instead of lingering: a SYN flood's connections free their
  slots (libtorrent, too, fails an unconfirmed connection at its first timeout).
"""

from __future__ import annotations

import enum
import math
import weakref
from dataclasses import dataclass
from typing import Final

from ._errors import LocalProtocolError
from ._utp_config import (
    MAX_PAYLOAD,
    MIN_DATAGRAM,
    PACKET_OVERHEAD,
    UtpConfig,
    UtpConnectError,
    UtpError,
)
from ._utp_packet import (
    HEADER_SIZE,
    MAX_EXTENSIONS,
    UtpPacket,
    UtpPacketType,
    encode_packet,
    sack_from_offsets,
    sack_offsets,
)

__all__ = [
    "CCONTROL_TARGET_US",
    "MAX_CWND_INCREASE_PER_RTT",
    "MAX_REORDER_DISTANCE",
    "PADDING_EXTENSION",
    "UtpConnection",
    "UtpConnectionStatistics",
    "UtpReceiveBudget",
    "UtpState",
    "is_mtu_probe",
]

CCONTROL_TARGET_US: Final = 100_000
"""LEDBAT's target queuing delay: 100 ms, as BEP 29 and libtorrent."""
MAX_CWND_INCREASE_PER_RTT: Final = 3000
"""Most bytes the congestion window grows by per round trip outside slow start (BEP 29)."""
MAX_REORDER_DISTANCE: Final = 1024
"""Packets past the last in-order one that a connection with the default 1 MiB
``receive_buffer`` (or a smaller one) buffers at most; a larger buffer buffers one packet
per KiB of it, up to 4096 (``_reorder_distance``)."""
MIN_TIMEOUT_US: Final = 500_000
INITIAL_TIMEOUT_US: Final = 1_000_000
MAX_TIMEOUT_US: Final = 60_000_000
_MAX_BACKOFF: Final = 7
"""Doublings of the retransmission timeout that count: 500 ms << 7 is past 60 s already."""
_BASE_DELAY_BUCKET_US: Final = 60_000_000
"""The base delay is the minimum of two one-minute buckets: about two minutes of history."""
_BASE_DELAY_BUCKETS: Final = 2
_CURRENT_DELAY_SAMPLES: Final = 3
_MAX_CWND: Final = 16 * 1024 * 1024
_INITIAL_CWND: Final = 2 * MAX_PAYLOAD
_OWN_SACK_BYTES: Final = 32
"""Our selective acks cover 256 packets; PACKET_OVERHEAD leaves room for them in every packet."""
_DUP_ACK_THRESHOLD: Final = 3
_MAX_OUTSTANDING: Final = 4096
"""Sequence numbers past the last cumulative ack in use at most (selectively acked ones
included), far below half the 16-bit space, so that every comparison stays unambiguous."""
_PACING_BURST: Final = 32 * 1346
"""Bytes sent back to back at most before pacing spaces packets out: far below the ~90
datagrams a default Linux socket buffer (208 KiB) holds on the receiving side. 32 packets
of 1346 bytes (about 30 at a 1472-byte MTU): fewer would mean more pacing wake-ups."""
_PACING_GAIN_SLOW_START: Final = 2.0
_PACING_GAIN: Final = 1.25
"""Pacing runs ahead of ``cwnd / rtt`` (as Linux's fq pacing: 200 % in slow start, more
than 100 % after), so that it smooths bursts without becoming the limit itself."""
PADDING_EXTENSION: Final = 0x50
"""The extension type of an MTU probe's padding: no uTP implementation knows it, and all of
them (libtorrent, libutp, ours) skip extensions they do not know *inside* the chain."""
_EXTENSION_BITS: Final = 2
"""libutp's "extension bits" extension (exactly 8 bytes), which a probe's chain starts with:
libutp takes a packet whose header names an extension type of 3 or more for a uTP version 0
packet and drops it (Transmission 3.00 answered our first probes with a v0 RESET), so the
header must name a type it knows. libtorrent skips type 2; type 1 (selective ack) and 3
(libtorrent's close reason) would be read."""
_EXTENSION_BITS_LINK: Final = 2 + 8
_MAX_PADDING: Final = _EXTENSION_BITS_LINK + (MAX_EXTENSIONS - 3) * (2 + 255)
"""Padding bytes a probe carries at most: the extension bits and links of 255 bytes, leaving
two of the links a receiver walks (ours: :data:`~bip_handshake._utp_packet.MAX_EXTENSIONS`)
for a selective ack and a spare."""
_SEQ_MASK: Final = 0xFFFF
_STALLED_US: Final = 1_000_000
"""How long, in µs, a packet of ours may go unanswered (the first we sent after the peer's
last packet) before an accepted connection with bytes waiting counts as dead to a SYN
reusing its id: past the 500 ms floor of a retransmission timeout, the time libtorrent's
``m_num_timeouts`` starts counting."""
_STALLED_RTTS: Final = 4
"""...or this many smoothed round trips, when that is longer (a slow path is not a dead one)."""
_HALF: Final = 0x8000
_REORDER_PACKET_COST: Final = 128
"""Bytes each packet held out of order is charged beyond its payload, in the connection's
count and the socket's budget: what holding it costs (the bytes object's header, its int
key and dict slot: 70 to 110 bytes measured on CPython), rounded up. Charged its payload
alone, an empty or 1-byte DATA cost nothing or one byte: 50 connections held 51,150 of them
(5 MB) at a budget of 0, ``max_connections`` of them some 100 MiB past ``max_buffered``."""


def _reorder_distance(receive_buffer: int) -> int:
    """Packets past the last in-order one that a connection with ``receive_buffer`` bytes
    buffers at most; a packet further ahead is dropped, as is one more than this plus one
    behind (older than any resend).

    One per KiB of the buffer: the packets of at least 1 KiB a peer can have in flight in
    the window we advertise, so that a large buffer's peer is not cut off at 1024 packets
    (libtorrent scales its bound so: ``max(16, receive buffer / 1100)``). Never below
    :data:`MAX_REORDER_DISTANCE`, the bound before it scaled: a small window may still
    hold many small packets (its bytes, not this count, bound what we hold). At most
    ``_MAX_OUTSTANDING``, the bound our own sending keeps to, far below half the sequence
    space, so that ahead and behind stay unambiguous (the bytes of a larger buffer are for
    larger packets).

    >>> _reorder_distance(64 * 1024), _reorder_distance(1024 * 1024)
    (1024, 1024)
    >>> _reorder_distance(3 * 1024 * 1024), _reorder_distance(1 << 30)
    (3072, 4096)
    """
    return max(MAX_REORDER_DISTANCE, min(receive_buffer // 1024, _MAX_OUTSTANDING))


_TS_MASK: Final = 0xFFFFFFFF


def seq_distance(older: int, newer: int) -> int:
    """``newer - older`` modulo 2**16: how many sequence numbers lie between them.

    >>> seq_distance(65535, 2)
    3
    """
    return (newer - older) & _SEQ_MASK


class UtpState(enum.Enum):
    """Where a connection is in its life."""

    SYN_SENT = "syn-sent"
    """We sent a SYN and wait for the peer's ST_STATE."""
    CONNECTED = "connected"
    """Data flows both ways (the peer may already have sent its FIN)."""
    FIN_SENT = "fin-sent"
    """We sent our FIN: we may still receive."""
    CLOSED = "closed"
    """Both FINs are acknowledged; the connection lingers to re-ack a resent FIN."""
    FAILED = "failed"
    """Reset, timed out or aborted: :attr:`UtpConnection.error` says why."""


class UtpReceiveBudget:
    """Received bytes that every connection of one socket may hold together.

    Connections count what they hold for their readers (``used``) and, of that, what
    waits out of order (``reorder_used``, at most half the limit; each packet there costs
    a fixed charge beyond its payload, the memory that holding it takes); a connection
    asks :meth:`free` before it takes a packet and advertises no more than that.

    >>> budget = UtpReceiveBudget(4096)
    >>> budget.free(), budget.reorder_free()
    (4096, 2048)
    >>> UtpReceiveBudget(0)
    Traceback (most recent call last):
    ...
    ValueError: a receive budget must be a positive int, got 0
    """

    __slots__ = (
        "_starved",
        "_wake_floor",
        "_woken",
        "limit",
        "reorder_limit",
        "reorder_used",
        "used",
    )

    def __init__(self, limit: int) -> None:
        """A budget of ``limit`` bytes (a socket makes one of ``UtpConfig.max_buffered``)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"a receive budget must be a positive int, got {limit!r}")
        self.limit: Final = limit
        """Bytes held at most, in order and out of order."""
        self.reorder_limit: Final = limit // 2
        """Of those, bytes waiting out of order at most: the rest is kept for in-order
        data, which readers drain, so that hostile reorder buffers cannot starve it."""
        self.used = 0
        """Bytes held now."""
        self.reorder_used = 0
        """Of those, bytes waiting out of order."""
        # Connections whose last advertised window was under one packet, and those of them
        # whose window reopened since (weak: a forgotten connection leaves on its own).
        self._starved: weakref.WeakSet[UtpConnection] = weakref.WeakSet()
        self._woken: weakref.WeakSet[UtpConnection] = weakref.WeakSet()
        # The least free room that could reopen a starved connection's window (the lowest of
        # their reopening thresholds): below it, waking would walk them all for nothing.
        self._wake_floor = limit

    def wake(self) -> None:
        """Bytes were freed: connections whose window reopened owe their peer an update.

        Cheap while too little is free to reopen any starved window (every read calls it):
        a starved connection's window is at most the free room, and it reopens only at one
        packet or half its buffer.
        """
        if not self._starved or self.free() < self._wake_floor:
            return
        floor = self.limit
        for connection in tuple(self._starved):
            if connection.state is UtpState.FAILED or connection.finished:
                self._starved.discard(connection)
            elif connection._window_update():  # the budget and its connections are partners
                self._starved.discard(connection)
                self._woken.add(connection)
            else:
                floor = min(floor, connection._reopening_window())
        self._wake_floor = floor

    def starve(self, connection: UtpConnection) -> None:
        """``connection`` advertised a window the budget cut: it is woken (its window
        announced again) once reads or failures free room."""
        self._starved.add(connection)
        self._wake_floor = min(self._wake_floor, connection._reopening_window())

    def take_woken(self) -> list[UtpConnection]:
        """The connections with a window update to send since the last call.

        Reading on one connection can reopen another's window (the budget is shared): the
        socket calls this after a read and pumps each one (``datagrams_to_send``).
        """
        if not self._woken:  # nearly always: the socket asks after every packet
            return []
        woken = list(self._woken)
        self._woken.clear()
        return woken

    def free(self) -> int:
        """Bytes that may still be taken."""
        return self.limit - self.used

    def reorder_free(self) -> int:
        """Bytes that may still be taken out of order."""
        return min(self.reorder_limit - self.reorder_used, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class UtpConnectionStatistics:
    """Counters of one connection.

    Attributes:
        packets_sent: datagrams sent, retransmissions included.
        packets_received: packets fed in.
        retransmits: packets sent again (timeouts, fast retransmits).
        timeouts: retransmission timer expiries.
        fast_retransmits: holes resent after duplicate or selective acks.
        bytes_sent: payload bytes sent for the first time.
        bytes_received: payload bytes delivered in order.
        cwnd: the congestion window now, in bytes.
        rtt_ms: the smoothed round-trip time, or ``None`` before a sample.
        mtu: the largest datagram the connection sends now (UDP payload bytes): the
            path MTU floor, raised by each probe that arrived.
        mtu_probes: path MTU probes sent.
        mtu_probes_lost: of those, the ones lost or refused by the socket (EMSGSIZE);
            not one acked after its loss was declared (before it went again).
    """

    packets_sent: int
    packets_received: int
    retransmits: int
    timeouts: int
    fast_retransmits: int
    bytes_sent: int
    bytes_received: int
    cwnd: int
    rtt_ms: float | None
    mtu: int = 0
    mtu_probes: int = 0
    mtu_probes_lost: int = 0


@dataclass(slots=True)
class _Outgoing:
    """A packet that consumed a sequence number and waits for its ack."""

    seq: int
    type: UtpPacketType
    payload: bytes
    first_sent_us: int = 0
    transmissions: int = 0
    need_send: bool = True
    """Not on the wire now: never sent, or declared lost."""
    fast_resent: bool = False
    pad_to: int = 0
    """The datagram size this packet is padded to as the MTU probe; 0 for other packets
    (and once it stops being the probe: lost, or unable to carry its padding)."""
    too_big: int = 0
    """Transmissions the socket refused (EMSGSIZE) or dropped unsent: when all were, the
    peer never saw it."""
    probed: int = 0
    """The datagram size it left at as the MTU probe (0: never): an ack while that is the
    only transmission that left shows the path carries the size, even after its loss was
    declared."""
    probed_ceiling: int = 0
    """The path MTU ceiling when it left as the probe."""
    probed_epoch: int = 0
    """The connection's ``_mtu_epoch`` when it left as the probe."""


class UtpConnection:
    """The state of one uTP connection; use :meth:`connect` or :meth:`accept` to make one.

    >>> config = UtpConfig()
    >>> a = UtpConnection.connect(100, 1, now_us=0, config=config)
    >>> syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    >>> syn.type.name, syn.connection_id
    ('SYN', 100)
    >>> b = UtpConnection.accept(syn, 5000, now_us=10, config=config)
    >>> for data in b.datagrams_to_send(10):
    ...     a.receive_packet(UtpPacket.decode(data), 20)
    >>> a.state.name, a.send_id, b.recv_id
    ('CONNECTED', 101, 101)
    """

    def __init__(
        self,
        *,
        recv_id: int,
        send_id: int,
        seq_nr: int,
        ack_nr: int,
        initiator: bool,
        now_us: int,
        config: UtpConfig,
        budget: UtpReceiveBudget | None = None,
        family: int = 4,
    ) -> None:
        """Prefer :meth:`connect` and :meth:`accept`, which pick the right ids.

        ``budget`` is shared by every connection of a socket; without one, the
        connection gets its own of ``config.max_buffered`` bytes. ``family`` (4 or 6),
        the peer's IP version, picks the path MTU ceiling.
        """
        for name, value in (
            ("recv_id", recv_id),
            ("send_id", send_id),
            ("seq_nr", seq_nr),
            ("ack_nr", ack_nr),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} must be a 16-bit int, got {value!r}")
        self.recv_id: Final = recv_id
        """The connection id our peer puts in the packets it sends us."""
        self.send_id: Final = send_id
        """The connection id we put in our packets."""
        self.initiator: Final = initiator
        """Whether we sent the SYN."""
        self._config = config
        self._budget = budget if budget is not None else UtpReceiveBudget(config.max_buffered)
        # Path MTU discovery, in datagram (UDP payload) bytes: packets are at most the
        # floor; a probe (one at a time, _probe_seq, its size the entry's ``probed``) tests
        # more.
        self._family = family
        self._mtu_ceiling: int
        self._mtu_floor: int
        self._payload_size: int
        # Bumped when the search restarts or the socket refuses a datagram: a probe sent
        # before that news says nothing the search may still use.
        self._mtu_epoch = 0
        self._restart_mtu_search()  # sets the three from the configuration
        self._probe_seq: int | None = None
        self._mtu_probes = 0
        self._mtu_probes_lost = 0
        # The peer's largest payload (its MTU is ours, at most): a window under it is
        # "closed" for window updates, and a zero-window probe of it is taken.
        self._peer_packet = self._mtu_ceiling - HEADER_SIZE
        self._update_threshold = min(config.receive_buffer, self._peer_packet)
        self._advertised = config.receive_buffer  # the window our last packet carried
        self.state = UtpState.SYN_SENT if initiator else UtpState.CONNECTED
        """The :class:`UtpState` now."""
        self.error: UtpError | None = None
        """Why the connection failed, once :attr:`state` is FAILED."""
        # Sending.
        self._seq_nr = seq_nr  # the next sequence number to use
        self._acked = (seq_nr - 1) & _SEQ_MASK  # every packet up to here is acknowledged
        self._outgoing: dict[int, _Outgoing] = {}  # in sequence order (insertion order)
        self._unsent = 0  # entries of _outgoing with need_send set: none, no scan of them
        self._pending = bytearray()  # written, not yet packetised
        self._in_flight = 0  # payload bytes on the wire, unacknowledged
        self._fin_requested = False
        self._fin_seq: int | None = None
        self._fin_acked = False
        self._peer_wnd = self._payload_size
        self._cwnd = float(_INITIAL_CWND)
        self._ssthresh = float(_MAX_CWND)
        self._slow_start = True
        self._loss_boundary = self._acked  # losses of packets up to here were already answered
        self._dup_acks = 0
        self._rtt_us: int | None = None
        self._rtt_var_us = 0
        # The timeout the round trip estimate gives, before the backoff of timeouts in a row.
        self._base_rto_us = INITIAL_TIMEOUT_US
        self._rto_us = INITIAL_TIMEOUT_US  # the timeout now: the base doubled per timeout
        self._rto_deadline: int | None = None
        self._probe_deadline: int | None = None
        # Since when our written bytes wait, unsent or unacknowledged, without any ack
        # progress (None: nothing waits). A peer that answers (keeping the idle timer and
        # the retransmission count at bay: "alive, only full") but never takes anything, a
        # window shut forever, fails after idle_timeout of it instead of holding the writer
        # forever.
        self._progress_us: int | None = None
        # The last sequence number judged for a fast resend by selective acks (None: none);
        # forgotten when packets become eligible again (a timeout, EMSGSIZE).
        self._sack_scanned: int | None = None
        # Retransmission timeouts in a row without a packet from the peer in between: the
        # backoff's exponent, and what max_timeouts (syn_retries) bounds.
        self._timeouts = 0
        # ...and without an ack of ours in between: two restart the MTU search, even while
        # the peer's packets get through (a path shrunk below our datagrams only).
        self._unacked_timeouts = 0
        self._last_resend_us = -1
        self._pace_tokens = float(_PACING_BURST)  # bytes that may leave now, back to back
        self._pace_stamp = now_us
        self._pace_deadline: int | None = None  # when pacing lets the next packet go
        self._base_delays: list[int] = []
        self._base_bucket_start = now_us
        self._current_delays: list[int] = []
        # Receiving.
        self._ack_nr = ack_nr  # the last sequence number received in order
        self._reorder: dict[int, bytes] = {}
        self._reorder_limit = _reorder_distance(config.receive_buffer)
        # Sequence numbers behind our ack_nr a packet of the peer's may show at most (older
        # ones are dropped before their acks count). The peer resends only packets we have
        # not acked, all sent while its oldest unacked one was: a resend lies behind our
        # ack_nr by fewer than the packets it has in flight, which its send window
        # (min(cwnd, our window), in bytes) bounds, as it does the reorder bound: the
        # default 1 MiB in full packets of about 1,400 bytes is some 750. An ST_STATE shows
        # the peer's last number, at or ahead of our ack_nr but for one delayed behind the
        # peer's later packets, or one behind after libtorrent's FIN (which does not move
        # its number on). A peer with more in flight (a small MTU, a larger window) loses
        # no data to the bound: its far resend still gets our ack.
        self._max_behind = self._reorder_limit + 1
        # Out-of-order payload bytes held (the budget charges more: _reorder_bytes).
        self._reorder_payload = 0
        self._inbound = bytearray()
        self._eof_seq: int | None = None
        self.eof_received = False
        """Whether every byte up to the peer's FIN was read into the buffer: after them, EOF."""
        self._reader_closed = False
        self._reply_micro = 0  # the one-way delay of the peer's last packet, echoed back
        self._ack_pending = False
        self._keepalive_pending = False
        self._reset_pending = False
        # Timers and lifetime.
        self._last_sent_us = now_us
        self._last_received_us = now_us
        # When the first packet of ours asking for an answer (DATA, FIN) left after the
        # peer's last packet (None: none has). How long the peer leaves us unanswered, not
        # how long it is silent, tells a dead peer from a live one with a shut window:
        # that one's packets come a timeout (backed off) apart, as we probe it, yet it
        # answers each probe within a round trip.
        self._unanswered_since_us: int | None = None
        self._close_deadline: int | None = None
        self._linger_deadline: int | None = None
        self._finished = False
        # Counters.
        self._packets_sent = 0
        self._packets_received = 0
        self._retransmits = 0
        self._timeout_count = 0
        self._fast_retransmits = 0
        self._bytes_sent = 0
        self._bytes_received = 0

    # Construction.

    @classmethod
    def connect(
        cls,
        recv_id: int,
        seq_nr: int,
        *,
        now_us: int,
        config: UtpConfig,
        budget: UtpReceiveBudget | None = None,
        family: int = 4,
    ) -> UtpConnection:
        """A connection we open: its first datagram is the SYN.

        Args:
            recv_id: our receive id (random, and free for the peer's address); we send
                ``recv_id + 1``.
            seq_nr: the SYN's sequence number (random, as libtorrent).
            now_us: the time, in microseconds.
            config: the settings.
            budget: the socket's shared receive budget (default: one of its own).
            family: the peer's IP version, 4 or 6 (the path MTU ceiling differs).
        """
        connection = cls(
            recv_id=recv_id,
            send_id=(recv_id + 1) & _SEQ_MASK,
            seq_nr=seq_nr,
            ack_nr=0,
            initiator=True,
            now_us=now_us,
            config=config,
            budget=budget,
            family=family,
        )
        connection._queue(UtpPacketType.SYN, b"")
        return connection

    @classmethod
    def accept(
        cls,
        syn: UtpPacket,
        seq_nr: int,
        *,
        now_us: int,
        config: UtpConfig,
        budget: UtpReceiveBudget | None = None,
        family: int = 4,
    ) -> UtpConnection:
        """A connection the peer opened with ``syn``; its first datagram acknowledges it.

        Args:
            syn: the peer's SYN.
            seq_nr: our first sequence number (random).
            now_us: the time, in microseconds.
            config: the settings.
            budget: the socket's shared receive budget (default: one of its own).
            family: the peer's IP version, 4 or 6 (the path MTU ceiling differs).
        """
        if syn.type is not UtpPacketType.SYN:
            raise LocalProtocolError(f"accept needs a SYN, not {syn.type.name}")
        connection = cls(
            recv_id=(syn.connection_id + 1) & _SEQ_MASK,
            send_id=syn.connection_id,
            seq_nr=seq_nr,
            ack_nr=syn.seq_nr,
            initiator=False,
            now_us=now_us,
            config=config,
            budget=budget,
            family=family,
        )
        connection._syn_seq = syn.seq_nr
        connection._peer_wnd = syn.wnd_size
        connection._reply_micro = (now_us - syn.timestamp_us) & _TS_MASK
        connection._ack_pending = True
        connection._packets_received = 1
        # Our data waits until the initiator shows it got our ST_STATE (any packet but a
        # SYN): were that ST_STATE lost, the initiator would take the number of the first
        # DATA of ours it sees as our first, and miss what came before. After one initial
        # timeout without a word (the initiator may be waiting for us to speak), one packet
        # goes: the one with that first number, so whichever copy of it arrives first tells
        # the right one; the rest follow once the initiator acks it.
        connection._confirmed = False
        connection._confirm_deadline = now_us + INITIAL_TIMEOUT_US
        # Half-open until then: a SYN from a spoofed address is never followed by anything,
        # while an honest initiator confirms within a round trip (a BitTorrent one sends its
        # handshake, and resends it until acked), or, idle and its confirmation lost, sends
        # a keepalive within keepalive_interval. A resent SYN (our ST_STATE was lost) is
        # answered again but is no confirmation: a flooder resending its SYNs would keep
        # the slot for the whole idle timeout, while an initiator that hears our answer
        # confirms soon after. Past that, the connection is given up (see handle_timer).
        connection._half_open_deadline = now_us + int(
            (config.keepalive_interval + config.connect_timeout) * 1e6
        )
        connection._first_seq = seq_nr
        return connection

    _confirmed: bool = True
    _confirm_deadline: int | None = None
    _half_open_deadline: int | None = None
    """When an accepted connection the initiator never confirmed is given up."""
    _first_seq: int | None = None
    """An accepted connection's first sequence number, while only it may be sent (after
    the confirmation timeout, before the initiator confirmed)."""

    _syn_seq: int = -1  # the SYN we accepted (a resent copy is answered again)

    def is_resent_syn(self, syn: UtpPacket) -> bool:
        """Whether ``syn`` is a copy of the SYN this accepted connection answered (its ack
        was lost: :meth:`receive_packet` answers it again)."""
        return not self.initiator and syn.type is UtpPacketType.SYN and syn.seq_nr == self._syn_seq

    def replaceable(self, now_us: int) -> bool:
        """Whether this accepted connection is over or looks dead, so that a SYN with its id
        and another sequence number (the peer restarted) may take its place.

        It is when the peer never sent anything but its SYN, when it only lingers after a
        clean close, or when our bytes wait and a packet of ours (the first we sent after
        the peer's last packet: a resend, a probe of its shut window) has gone unanswered
        for a second (or four round trips, if longer). A quiet peer with nothing of ours to
        ack may be a live one, however long it has been quiet: libtorrent sends no uTP
        keepalives (only BitTorrent keep-alives, after a minute or more of idleness), and
        BEP 29 defines none. A silent one fails on its own after ``idle_timeout``. Nor is
        a peer that answers our probes of its shut window dead, though its packets come
        more than a second apart (we probe a timeout after the last, backing off).
        """
        if not self._confirmed or self.state is UtpState.CLOSED:
            return True
        if self.all_sent or self._unanswered_since_us is None:
            return False
        unanswered = now_us - self._unanswered_since_us
        return unanswered >= max(_STALLED_US, _STALLED_RTTS * (self._rtt_us or 0))

    # The reader and writer.

    @property
    def mtu(self) -> int:
        """The largest datagram this connection sends now: the path MTU it has confirmed."""
        return self._mtu_floor

    @property
    def readable(self) -> int:
        """Bytes waiting for :meth:`read`."""
        return len(self._inbound)

    @property
    def writable(self) -> int:
        """Bytes :meth:`write` takes now (0 when the buffer is full or writing is over)."""
        if self._fin_requested or self.state in (UtpState.FAILED, UtpState.CLOSED):
            return 0
        return max(0, self._config.send_buffer - len(self._pending))

    @property
    def finished(self) -> bool:
        """Nothing left to do: the owner may forget the connection."""
        return self._finished

    @property
    def write_shut(self) -> bool:
        """Whether the write side was shut down (:meth:`shutdown_write` or :meth:`close`)."""
        return self._fin_requested

    @property
    def is_open(self) -> bool:
        """Whether the handshake is done and the connection has not failed."""
        return self.state in (UtpState.CONNECTED, UtpState.FIN_SENT, UtpState.CLOSED)

    @property
    def all_sent(self) -> bool:
        """Whether every byte written (and the FIN, if requested) was acknowledged."""
        return not self._pending and not self._outgoing

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Take as much of ``data`` as the send buffer holds; return how much was taken.

        Raises:
            LocalProtocolError: the write side was shut down, or the connection failed.
        """
        if self._fin_requested:
            raise LocalProtocolError("write after the write side was shut down")
        if self.state is UtpState.FAILED:
            raise LocalProtocolError("write on a failed connection")
        taken = min(len(data), self.writable)
        self._pending += memoryview(data)[:taken]
        return taken

    def read(self, max_bytes: int | None = None) -> bytes:
        """Take up to ``max_bytes`` (default: all) received bytes, in order.

        Reading opens our window again; when the window we last advertised was under one
        packet (or half the buffer) and now is not, the next :meth:`datagrams_to_send`
        tells the peer. It may reopen other connections' windows too: see
        :meth:`UtpReceiveBudget.take_woken`.
        """
        size = len(self._inbound) if max_bytes is None else min(max_bytes, len(self._inbound))
        data = bytes(self._inbound[:size])
        del self._inbound[:size]
        self._release(size)
        self._window_update()
        return data

    def _release(self, size: int, *, reorder: int = 0) -> None:
        """Give ``size`` bytes back to the socket's budget (``reorder`` of them from its
        out-of-order share) and wake the connections whose window that reopens.

        Every release goes through here: freed bytes that woke nobody (a hole filled for a
        closed reader, the reorder buffer cleared at the FIN) left a connection whose window
        the budget shut waiting for its peer's zero-window probe, or for another read.
        """
        budget = self._budget
        budget.used -= size
        budget.reorder_used -= reorder
        budget.wake()

    def _reopening_window(self) -> int:
        """The least window that :meth:`_window_update` calls reopened."""
        threshold: int = self._update_threshold  # fixed at the start
        return min(threshold, self._config.receive_buffer // 2)

    def _window_update(self) -> bool:
        """Owe the peer an ST_STATE if our window reopened since we last advertised it.

        Opened means from under one packet to at least one, or past half the buffer: once
        per opening, as the update itself becomes the advertised window.
        """
        window = self._window()
        advertised = self._advertised
        threshold = self._update_threshold
        half = self._config.receive_buffer // 2
        if (advertised < threshold <= window) or (advertised < half <= window):
            self._ack_pending = True
            return True
        return False

    def shutdown_write(self) -> None:
        """Send a FIN after everything written: the peer reads EOF (half close)."""
        if self.state is UtpState.FAILED or self._fin_requested:
            return
        self._fin_requested = True

    def close(self, now_us: int) -> None:
        """Stop reading and writing: the FIN follows what was written, later data is dropped.

        The connection lingers (``close_timeout`` at most) to deliver what was
        written and to hear the peer's FIN; then it is :attr:`finished`.
        """
        self._reader_closed = True
        held = len(self._inbound)
        self._inbound.clear()
        self._release(held)
        self.shutdown_write()
        if self.state is UtpState.SYN_SENT:
            self.abort()
        elif not self._confirmed and not self._pending and not self._outgoing:
            # Accepted, and the peer never spoke after its SYN (a flood's SYNs, from spoofed
            # addresses, never do): nothing to deliver and nobody known to hear a FIN, so no
            # lingering for close_timeout in a slot an honest peer could use. The RESET
            # tells a real initiator at once.
            self.abort(UtpError("closed before the peer confirmed the connection"))
        elif self.state is not UtpState.FAILED and self._close_deadline is None:
            self._close_deadline = now_us + int(self._config.close_timeout * 1e6)

    def abort(self, error: UtpError | None = None) -> None:
        """Reset the connection: a RESET goes out and the connection is over."""
        if self.state is UtpState.FAILED:
            return
        self._reset_pending = True
        self._fail(error or UtpError("connection aborted"))

    # Packets in.

    def receive_packet(self, packet: UtpPacket, now_us: int) -> None:
        """Take one packet that the socket routed to this connection.

        Garbage from the peer never raises: a packet that makes no sense is dropped.
        """
        if self.state is UtpState.FAILED:
            return
        self._packets_received += 1
        kind = packet.type
        if kind is UtpPacketType.RESET:
            if self._reset_acceptable(packet.ack_nr):
                self._on_reset()
            return
        if kind is UtpPacketType.SYN:
            # A resent SYN: our ST_STATE was lost. Anything else with a SYN is bogus. The
            # half-open deadline stands (see accept): only a packet after the SYN confirms.
            if not self.initiator and packet.seq_nr == self._syn_seq:
                self._last_received_us = now_us
                self._ack_pending = True
            return
        if self.state is UtpState.SYN_SENT:
            if packet.ack_nr != self._acked_next():
                return
            # Our SYN is acked: the peer's sequence numbers start at its packet's (an
            # ST_STATE carries the number its first DATA will use).
            self._ack_nr = (packet.seq_nr - 1) & _SEQ_MASK
            self.state = UtpState.CONNECTED
            self._ack_pending = True  # tells the receiver we are connected (see accept)
        ack_distance = seq_distance(self._acked, packet.ack_nr)
        outstanding = seq_distance(self._acked, self._seq_nr) - 1
        if ack_distance > outstanding and not self._ack_behind_acceptable(packet.ack_nr):
            # An ack for a packet we never sent, or far behind our latest ack (older than
            # any reordering delays): not to be trusted. Dropped whole, as libtorrent does,
            # so that a blind forger must hit the few numbers of our flight, not half of all.
            return
        # The last number the packet shows the peer used: its own for DATA and FIN; an
        # ST_STATE carries the peer's next one (BEP 29), unused yet, so one less (a peer
        # that sent up to our reorder bound says so with an ST_STATE one past it; after
        # its FIN, whose number libtorrent does not move on, one behind our ack_nr).
        shown = packet.seq_nr if kind is not UtpPacketType.STATE else packet.seq_nr - 1
        distance = seq_distance(self._ack_nr, shown & _SEQ_MASK)
        if self._reorder_limit < distance < _SEQ_MASK + 1 - self._max_behind:
            # Too far ahead for the reorder buffer, or too far behind for any packet the
            # peer may still resend (see _max_behind): forged, or from a connection that
            # lost more than we buffer. Dropped whole before its acks, window and
            # timestamps count (libtorrent drops those ahead so): it could otherwise ack
            # our packets in flight (lost for good), shut the window or feed the RTT; a
            # blind forger now has to hit twice the bound plus two of the 65,536 numbers
            # (2,050 at the default buffer) as well as an ack in our flight (or just
            # behind it: checked above). Its type
            # counts for nothing either: a FIN out there does not fix the end.
            if distance >= _HALF and kind is not UtpPacketType.STATE:
                # Behind: the resend of a packet we hold, from a peer with more packets
                # in flight than the bound (a small MTU, a larger window) whose acks we
                # sent were all lost. It gets our ack, as any duplicate does (this is
                # all it needs to stop resending), but tells us nothing.
                self._ack_pending = True
            return
        self._last_received_us = now_us
        self._unanswered_since_us = None
        self._reply_micro = (now_us - packet.timestamp_us) & _TS_MASK
        self._peer_wnd = packet.wnd_size
        self._confirm()
        if self._timeouts:
            self._end_backoff(now_us)
        if self._peer_wnd >= self._payload_size:
            self._probe_deadline = None
        flight_before = self._in_flight
        acked_bytes = 0
        if 0 < ack_distance <= outstanding:
            acked_bytes += self._ack_through(packet.ack_nr, now_us)
        elif (
            ack_distance == 0
            and kind is UtpPacketType.STATE
            and packet.selective_ack is None
            and self._outgoing
        ):
            self._dup_acks += 1
            if self._dup_acks == _DUP_ACK_THRESHOLD:
                self._lost(self._acked_next(), fast=True)
        if packet.selective_ack is not None and ack_distance < _HALF:
            acked_bytes += self._selective_ack(packet.ack_nr, packet.selective_ack, now_us)
        if acked_bytes:
            # A difference of 0 means "no measurement" (BEP 29): the last delay stands.
            sample = packet.timestamp_difference_us or None
            self._congestion_control(acked_bytes, flight_before, sample, now_us)
        if kind is UtpPacketType.DATA or kind is UtpPacketType.FIN:
            self._incoming(packet.seq_nr, packet.payload, kind is UtpPacketType.FIN)
        self._check_closed(now_us)

    def _ack_behind_acceptable(self, ack_nr: int) -> bool:
        """Whether a packet acking ``ack_nr``, which is behind our latest ack, is taken.

        As libtorrent (``incoming_packet``: ``ack_nr`` below its ``m_acked_seq_nr`` less
        its ``dup_ack_limit`` of 3 is dropped): a peer's acks only grow, so an older one
        is a packet reordered behind later ones, or a keepalive (``ack_nr - 1``, ours and
        libtorrent's). Anything further back is forged (half of all numbers passed before).

        An accepted connection the initiator has not confirmed takes only a keepalive's
        ``_acked - 1`` behind: the initiator knows our first number from our ST_STATE (it
        acks the one before it), and a confirmation lets the connection out of the
        half-open rules, so a blind forger must hit one of the two or three numbers.
        """
        slack = _DUP_ACK_THRESHOLD if self._confirmed else 1
        return seq_distance(ack_nr, self._acked) <= slack

    def _confirm(self) -> None:
        self._confirmed = True
        self._confirm_deadline = None
        self._half_open_deadline = None
        self._first_seq = None

    def _unconfirmed_hold(self) -> bool:
        """Whether a new packet must wait for the initiator's confirmation: always before
        the confirmation timeout, and after it every packet but the first."""
        if self._confirmed:
            return False
        return self._confirm_deadline is not None or self._seq_nr != self._first_seq

    def _acked_next(self) -> int:
        return (self._acked + 1) & _SEQ_MASK

    def _end_backoff(self, now_us: int) -> None:
        """A packet from the peer passed the ack check: the path works, the backoff ends.

        As libtorrent (``m_num_timeouts = 0`` for every valid packet): kept after the
        outage, a timeout doubled to 32 s would hold the next loss that long, and the
        peer's keepalive (acking ``ack_nr - 1``, after 29 s of its silence) would arrive
        first and feed a 29 s round trip to the estimate, keeping the timeout high: a
        lossy link crawled. The deadline comes in to one plain timeout from now, never
        later than it was: libtorrent re-arms it at every packet, but a peer streaming
        data at us would then hold back the resend of a lost packet of ours for as long.
        """
        self._timeouts = 0
        self._update_rto()
        if self._rto_deadline is not None:
            self._rto_deadline = min(self._rto_deadline, now_us + self._rto_us)

    def _update_rto(self) -> None:
        """The timeout now: the estimate doubled per timeout in a row, at most 60 s."""
        backoff = min(self._timeouts, _MAX_BACKOFF)
        self._rto_us = min(self._base_rto_us << backoff, MAX_TIMEOUT_US)

    def _reset_acceptable(self, ack_nr: int) -> bool:
        """Whether a RESET acking ``ack_nr`` may end the connection (libtorrent ignores one
        acking a packet it never sent): a blind forger knows the connection id, not our
        sequence numbers."""
        if self.state is UtpState.SYN_SENT:
            # The refusal of our SYN acks it (ours, libtorrent's and libutp's RESETs for
            # an unknown connection ack the packet they answer).
            return ack_nr == self._acked_next()
        # A genuine RESET acks what the peer last received in order: a packet of ours still
        # in flight, the number our ST_STATEs carry (the next, unsent one: a peer that forgot
        # the connection answers our acks and keepalives so, as ours, libtorrent's and
        # libutp's sockets do), or, reordered behind a later ack, one a little older than our
        # latest ack (libtorrent's duplicate-ack slack). A blind forger hits that window with
        # odds of its size in 65,536.
        behind = seq_distance(ack_nr, self._acked)
        if behind <= _DUP_ACK_THRESHOLD:
            return True
        if seq_distance(self._acked, ack_nr) <= seq_distance(self._acked, self._seq_nr):
            return True
        # An initiator that gives up before it heard our ST_STATE knows none of our
        # numbers: its RESET acks 0 (ours from SYN_SENT, and libtorrent's, do).
        return not self._confirmed and ack_nr == 0

    def _on_reset(self) -> None:
        if self.state is UtpState.CLOSED:
            self._finished = True
            self.state = UtpState.FAILED
            self.error = UtpError("connection reset by peer after close")
            return
        if self.state is UtpState.SYN_SENT:
            self._fail(UtpConnectError("connection refused (reset by peer)"))
        else:
            self._fail(UtpError("connection reset by peer"))

    def _ack_through(self, ack_nr: int, now_us: int) -> int:
        """Everything up to ``ack_nr`` arrived; return the payload bytes newly acked."""
        acked_bytes = 0
        seq = self._acked
        while seq != ack_nr:
            seq = (seq + 1) & _SEQ_MASK
            entry = self._outgoing.pop(seq, None)
            if entry is not None:
                # Only the newest packet times the round trip: older ones may have waited
                # in the peer's reorder buffer for a hole to be filled.
                acked_bytes += self._acknowledged(entry, now_us, sample=seq == ack_nr)
        self._acked = ack_nr
        self._dup_acks = 0
        self._unacked_timeouts = 0
        self._rto_deadline = now_us + self._rto_us if self._outgoing else None
        return acked_bytes

    def _mark_unsent(self, entry: _Outgoing) -> None:
        """``entry`` must go again: out of the bytes in flight, into the resend count (once)."""
        if not entry.need_send:
            entry.need_send = True
            self._unsent += 1
            self._in_flight -= len(entry.payload)

    def _uncount(self, entry: _Outgoing) -> None:
        """``entry`` leaves the outgoing table: out of whichever count holds it."""
        if entry.need_send:
            self._unsent -= 1
        else:
            self._in_flight -= len(entry.payload)

    def _acknowledged(self, entry: _Outgoing, now_us: int, *, sample: bool = True) -> int:
        self._uncount(entry)
        self._progress_us = now_us
        # Karn: never time a resent packet, nor one sent before a resend (its ack may
        # have been lost and the resend's ack cover it late).
        if sample and entry.transmissions == 1 and entry.first_sent_us >= self._last_resend_us:
            self._rtt_sample(now_us - entry.first_sent_us)
        if entry.seq == self._fin_seq:
            self._fin_acked = True
        if entry.seq == self._probe_seq:
            # The padded probe arrived: the path carries datagrams of its size.
            self._probe_seq = None
            self._set_floor(max(self._mtu_floor, min(entry.probed, self._mtu_ceiling)))
        elif entry.probed and entry.transmissions - entry.too_big == 1:
            self._probe_acked_late(entry)
        return len(entry.payload) if entry.type is not UtpPacketType.SYN else 1

    def _selective_ack(self, ack_nr: int, bitmask: bytes, now_us: int) -> int:
        acked_bytes = 0
        outstanding = seq_distance(self._acked, self._seq_nr) - 1
        # Bits past our next sequence number name packets never sent: only the bytes that
        # can name a packet in flight are read (a 255-byte mask of ones names 2040 packets,
        # each a step, in every datagram of a flood).
        reach = seq_distance((ack_nr + 2) & _SEQ_MASK, self._seq_nr)
        if reach >= _HALF:
            return 0  # ack_nr is our last packet: the mask names only packets never sent
        bitmask = bitmask[: (reach + 7) // 8]
        sacked: list[int] = []  # distances from self._acked, ascending
        for offset in sack_offsets(bitmask):
            seq = (ack_nr + 2 + offset) & _SEQ_MASK
            distance = seq_distance(self._acked, seq)
            if not 0 < distance <= outstanding:
                continue  # acks for packets never sent (or long acked) are ignored
            sacked.append(distance)
            entry = self._outgoing.pop(seq, None)
            if entry is not None:
                acked_bytes += self._acknowledged(entry, now_us)
        if len(sacked) >= _DUP_ACK_THRESHOLD:
            # A packet with three acknowledged packets after it is lost (libtorrent's rule):
            # every one below the third-highest selectively acked. Those below the scan
            # mark were judged by an earlier selective ack (each is fast-resent once at
            # most), so a peer repeating large masks costs a walk of the new ones only.
            limit = sacked[-_DUP_ACK_THRESHOLD]
            start = 1
            if self._sack_scanned is not None:
                scanned = seq_distance(self._acked, self._sack_scanned)
                if scanned < _HALF:
                    start = scanned + 1
            for distance in range(start, limit):
                entry = self._outgoing.get((self._acked + distance) & _SEQ_MASK)
                if entry is not None and not entry.fast_resent and not entry.need_send:
                    self._lost(entry.seq, fast=True)
            if start < limit:
                self._sack_scanned = (self._acked + limit - 1) & _SEQ_MASK
        return acked_bytes

    def _lost(self, seq: int, *, fast: bool) -> None:
        entry = self._outgoing.get(seq)
        if entry is None or entry.need_send:
            return
        if fast:
            if entry.fast_resent:
                return
            entry.fast_resent = True
            self._fast_retransmits += 1
        self._mark_unsent(entry)
        if seq == self._probe_seq:
            self._probe_lost(entry)
            return  # too big for the path, not a sign of congestion: the window stays
        # Halve the window once per round trip: only for a packet sent after the last cut.
        if 0 < seq_distance(self._loss_boundary, seq) < _HALF:
            self._cwnd = max(self._cwnd / 2, float(self._payload_size))
            self._ssthresh = self._cwnd
            self._slow_start = False
            self._loss_boundary = (self._seq_nr - 1) & _SEQ_MASK

    def _probe_lost(self, entry: _Outgoing) -> None:
        """The MTU probe ``entry`` was lost: the path's MTU is below its size.

        It goes again unpadded, as an ordinary packet (its payload fits the floor).
        """
        self._probe_seq = None
        entry.pad_to = 0
        self._mtu_probes_lost += 1
        self._mtu_ceiling = max(self._mtu_floor, min(self._mtu_ceiling, entry.probed - 1))

    def _probe_acked_late(self, entry: _Outgoing) -> None:
        """``entry``, a probe whose loss was declared (a timeout, selective acks past it),
        is acked before any other copy of it left: its padded datagram arrived.

        The loss is undone: the floor rises to its size, and the ceiling, if that loss or
        a later one put it below, goes back to what it was when the probe left (a smaller
        datagram lost after a bigger one arrived was no proof either). Not when the search
        restarted or the socket refused a datagram since: that news is newer.
        """
        if entry.probed_epoch != self._mtu_epoch:
            return
        size = entry.probed
        self._mtu_probes_lost -= 1
        if self._mtu_ceiling < size:
            self._mtu_ceiling = max(entry.probed_ceiling, size)
        self._set_floor(max(self._mtu_floor, size))

    def _set_floor(self, size: int) -> None:
        self._mtu_floor = size
        self._payload_size = size - PACKET_OVERHEAD

    def _restart_mtu_search(self) -> None:
        """Search the path MTU again from the configured floor (the path may have shrunk)."""
        # UtpConfig keeps min_datagram within both ceilings.
        self._mtu_epoch += 1
        self._mtu_ceiling = self._config.max_datagram(self._family)
        self._set_floor(self._config.min_datagram)

    def datagram_too_big(self, datagram: bytes) -> None:
        """The socket could not send ``datagram``, one of ours: EMSGSIZE, too big to leave.

        The path MTU ceiling drops below its size at once (and the floor with it, when the
        floor was too big: never below :data:`~bip_handshake._utp_config.MIN_DATAGRAM`).
        A refused probe is resent unpadded. When a refused packet and every packet after
        it never left the host (the peer never saw their sequence numbers), their bytes
        are cut again into packets of the new size; otherwise it is resent whole after a
        retransmission timeout. The window is not cut: nothing was lost to congestion.
        Call :meth:`datagrams_to_send` after.
        """
        size = len(datagram)
        if size < HEADER_SIZE or self.state is UtpState.FAILED or self._finished:
            return
        ceiling = self._mtu_ceiling = max(MIN_DATAGRAM, min(self._mtu_ceiling, size - 1))
        self._mtu_epoch += 1  # what the interface takes now outranks an older probe's ack
        if self._mtu_floor > ceiling:
            # What we took for the floor is not: back to the configured floor, or to the
            # size every host takes when even that is too big (a refusal only says what
            # does not pass), and the search finds the exact size again from there.
            floor = self._config.min_datagram
            self._set_floor(floor if floor <= ceiling else MIN_DATAGRAM)
        entry = self._refused_entry(datagram)
        if entry is None:
            return
        if entry.seq == self._probe_seq:
            self._mark_unsent(entry)
            # Its resend leaves after the packets that follow it: their selective acks say
            # nothing about it, and must not make it a loss (a real one waits for a timeout).
            entry.fast_resent = True
            self._probe_lost(entry)
        else:
            # Cut again if the peer cannot have it; if it might (a packet after it left),
            # it waits for its retransmission timeout like a lost one: resending it at
            # once would only be refused again, in a loop.
            self._repacketise()

    def datagram_not_sent(self, datagram: bytes) -> None:
        """The socket dropped ``datagram``, one of ours, before sending it.

        The socket calls this for the datagrams of a batch it did not send after one was
        refused (:meth:`datagram_too_big`): they never left either, so that the packets
        refused before them can be cut again (a packet after them that left would pin
        their sequence numbers). They go again with the next :meth:`datagrams_to_send`.
        """
        if len(datagram) < HEADER_SIZE or self.state is UtpState.FAILED or self._finished:
            return
        entry = self._refused_entry(datagram)
        if entry is None:
            return
        self._mark_unsent(entry)
        if entry.seq == self._probe_seq:
            entry.fast_resent = True  # as in datagram_too_big: its resend comes late
        self._repacketise()

    def _refused_entry(self, datagram: bytes) -> _Outgoing | None:
        """The packet whose latest transmission ``datagram`` was, now counted as refused."""
        self._sack_scanned = None  # it goes again, unjudged
        if datagram[0] >> 4 not in (UtpPacketType.DATA, UtpPacketType.FIN):
            return None  # acks and SYNs: nothing waits for them
        if int.from_bytes(datagram[2:4]) != self.send_id:
            return None
        entry = self._outgoing.get(int.from_bytes(datagram[16:18]))
        if entry is None or entry.transmissions <= entry.too_big:
            return None  # acked since, or a report we already had
        entry.too_big += 1
        return entry

    def _repacketise(self) -> None:
        """Cut the packets at the end that never left the host again, to the floor's size.

        Only packets the peer cannot have seen are cut: the longest run of sequence
        numbers up to the last one used whose every transmission the socket refused (or
        dropped unsent). Their sequence numbers are reused and their bytes go back in front
        of what waits to be sent.
        """
        suffix: list[_Outgoing] = []
        # Down from the last sequence number used: one selectively acked (gone from
        # _outgoing) ends the run, as the peer holds it.
        seq = (self._seq_nr - 1) & _SEQ_MASK
        while seq != self._acked:
            entry = self._outgoing.get(seq)
            if (
                entry is None
                or entry.too_big < entry.transmissions
                or entry.type is UtpPacketType.SYN
            ):
                break
            suffix.append(entry)
            seq = (seq - 1) & _SEQ_MASK
        if not any(len(entry.payload) > self._payload_size for entry in suffix):
            return
        suffix.reverse()
        for entry in suffix:
            del self._outgoing[entry.seq]
            self._uncount(entry)
            if entry.transmissions:
                self._bytes_sent -= len(entry.payload)  # counted again when they go
            if entry.seq == self._fin_seq:
                self._fin_seq = None  # _send_new queues the FIN again after the data
            if entry.seq == self._probe_seq:
                self._forget_probe()  # cut again: it never left
        first = suffix[0].seq
        self._pending[:0] = b"".join(entry.payload for entry in suffix)
        self._seq_nr = first
        last = (first - 1) & _SEQ_MASK
        if 0 < seq_distance(last, self._loss_boundary) < _HALF:
            self._loss_boundary = last
        if not self._outgoing:
            self._rto_deadline = None
            self._progress_us = None

    def _rtt_sample(self, sample_us: int) -> None:
        sample_us = max(0, sample_us)
        if self._rtt_us is None:
            self._rtt_us = sample_us
            self._rtt_var_us = sample_us // 2
        else:
            delta = self._rtt_us - sample_us
            self._rtt_var_us += (abs(delta) - self._rtt_var_us) // 4
            self._rtt_us += (sample_us - self._rtt_us) // 8
        self._base_rto_us = min(
            max(self._rtt_us + 4 * self._rtt_var_us, MIN_TIMEOUT_US), MAX_TIMEOUT_US
        )
        self._update_rto()

    def _delay_sample(self, sample: int, now_us: int) -> None:
        """Record the one-way delay the peer measured for our packets."""
        # The base delay: the minimum over about two minutes, in one-minute buckets (the
        # two clocks are unrelated, so only differences of these values mean anything).
        if not self._base_delays or now_us - self._base_bucket_start >= _BASE_DELAY_BUCKET_US:
            self._base_delays.append(sample)
            self._base_bucket_start = now_us
            del self._base_delays[:-_BASE_DELAY_BUCKETS]
        elif _ts_less(sample, self._base_delays[-1]):
            self._base_delays[-1] = sample
        base = self._base_delays[0]
        for value in self._base_delays[1:]:
            if _ts_less(value, base):
                base = value
        # The sample is in the newest bucket, so it is never below the base: no wrap here.
        self._current_delays.append((sample - base) & _TS_MASK)
        del self._current_delays[:-_CURRENT_DELAY_SAMPLES]

    def _congestion_control(
        self, acked_bytes: int, flight_before: int, sample: int | None, now_us: int
    ) -> None:
        if sample is not None:
            self._delay_sample(sample, now_us)
        delay = min(self._current_delays, default=0)
        delay_factor = max(-1.0, (CCONTROL_TARGET_US - delay) / CCONTROL_TARGET_US)
        cwnd = self._cwnd
        window_limited = flight_before + self._payload_size > cwnd
        if self._slow_start and delay_factor > 0:
            gain = float(acked_bytes)
            if cwnd + gain >= self._ssthresh:
                self._slow_start = False
        else:
            self._slow_start = False
            window_factor = min(acked_bytes, cwnd) / max(cwnd, acked_bytes)
            gain = MAX_CWND_INCREASE_PER_RTT * delay_factor * window_factor
        if gain > 0 and not window_limited:
            gain = 0.0  # an application-limited sender learns nothing about the path
        self._cwnd = min(max(cwnd + gain, float(self._payload_size)), float(_MAX_CWND))

    def _incoming(self, seq: int, payload: bytes, fin: bool) -> None:
        self._ack_pending = True
        if self._eof_seq is not None and 0 < seq_distance(self._eof_seq, seq) < _HALF:
            return  # past the peer's FIN
        distance = seq_distance(self._ack_nr, seq)
        if distance == 0 or distance >= _HALF:
            return  # a duplicate: the ack above tells the peer again
        # Never past _reorder_limit: receive_packet drops those before their acks.
        if fin:
            if self._eof_seq is not None and seq != self._eof_seq:
                return  # a second end: the first one stands
            # A FIN's payload is no data: libtorrent never sends any and reads data from
            # ST_DATA only, taking such a FIN as a bare one. So do we: were it dropped, the
            # peer would resend it until a timeout ended the connection.
            payload = b""
        size = len(payload)
        budget = self._budget
        if distance == 1:
            if size + self._buffered() > self._config.receive_buffer + self._peer_packet:
                return  # beyond the window we advertised (a zero-window probe fits)
            if (
                size > budget.free()
                and not self._reader_closed
                and not self._hole_fill_over_budget()
            ):
                # The socket's budget is spent: the peer resends it. Not so for the packet
                # that fills the hole before our out-of-order data: that data was
                # selectively acked (the peer dropped it: evicting it would lose it for
                # good) and it leaves only through this packet, so it is taken over budget.
                return
            if fin:
                self._eof_seq = seq  # only now: a FIN dropped above leaves nothing behind
            self._deliver(seq, payload, reordered=False)
            reorder = self._reorder
            freed = freed_reorder = 0
            while (nxt := (self._ack_nr + 1) & _SEQ_MASK) in reorder:
                data = reorder.pop(nxt)
                self._reorder_payload -= len(data)
                cost = len(data) + _REORDER_PACKET_COST
                freed_reorder += cost
                # The payload stays counted, now in order; a closed reader's is dropped.
                freed += cost if self._reader_closed else _REORDER_PACKET_COST
                self._deliver(nxt, data, reordered=True)
            if freed:
                self._release(freed, reorder=freed_reorder)  # once, after the walk
            return
        if seq in self._reorder:
            return  # held already (a FIN at the seq of held data is bogus: it fixes nothing)
        if size + self._buffered() > self._config.receive_buffer:
            return
        cost = size + _REORDER_PACKET_COST  # however small, a held packet costs memory
        if cost > budget.reorder_free():
            return  # out-of-order data the socket cannot afford: the peer resends it
        if fin:
            self._eof_seq = seq  # held: the stream ends once the hole before it fills
        self._reorder[seq] = payload
        self._reorder_payload += size
        budget.used += cost
        budget.reorder_used += cost

    def _deliver(self, seq: int, payload: bytes, *, reordered: bool) -> None:
        """``seq`` is next in order; ``reordered``: its payload is counted already."""
        self._ack_nr = seq
        if payload:
            self._bytes_received += len(payload)
            # A closed reader's data is dropped (_incoming releases a reordered packet's).
            if not self._reader_closed:
                self._inbound += payload
                if not reordered:
                    self._budget.used += len(payload)
        if seq == self._eof_seq:
            self.eof_received = True
            self._clear_reorder()

    def _clear_reorder(self) -> None:
        held = self._reorder_bytes
        self._reorder.clear()
        self._reorder_payload = 0
        self._release(held, reorder=held)

    def _buffered(self) -> int:
        """Payload bytes held, in order and out of order: what the window we advertise
        counts.

        Not the per-packet charge of the reorder buffer (:data:`_REORDER_PACKET_COST`):
        the window is a promise in payload bytes, so that an honest peer filling it while
        one packet is lost has every packet past the hole held (charged, the last few
        would be refused, and resent only after a timeout). The reorder bound caps the
        packets, and so their charge, per connection; the socket's budget counts it.
        """
        return len(self._inbound) + self._reorder_payload

    @property
    def _reorder_bytes(self) -> int:
        """What the socket's budget counts for the reorder buffer: its payload bytes and
        :data:`_REORDER_PACKET_COST` per packet held."""
        return self._reorder_payload + len(self._reorder) * _REORDER_PACKET_COST

    def _hole_fill_over_budget(self) -> bool:
        """Whether the next in-order packet is taken even when the socket's budget is spent.

        Only with out-of-order data waiting behind it, and only while our reader holds
        nothing in order: one packet over the budget per connection at a time, until the
        reader takes it. Were every in-order packet before a hole taken over budget, one
        packet held far ahead would let a peer fill its whole window past the budget.
        """
        return bool(self._reorder) and not self._inbound

    def _window(self) -> int:
        budget = self._budget
        own = self._config.receive_buffer - self._buffered()
        window = min(own, budget.free())
        if window < self._peer_packet and self._hole_fill_over_budget():
            # The packet that fills the hole before our out-of-order data is taken over a
            # full budget (see _incoming): say there is room for it, or the peer would
            # send it only after a zero-window probe's timeout, one hole at a time. Not
            # while our reader holds data: _incoming would drop it (the read says when).
            window = min(own, self._peer_packet)
        return max(0, window)

    def _check_closed(self, now_us: int) -> None:
        if (
            self.state in (UtpState.CONNECTED, UtpState.FIN_SENT)
            and self._fin_acked
            and not self._outgoing  # a selectively acked FIN is not the end yet
            and self.eof_received
        ):
            self.state = UtpState.CLOSED
            self._rto_deadline = None
            # Closed cleanly: close_timeout no longer applies (it would reset the lingering
            # connection, a RESET to the peer and a failure for a clean close).
            self._close_deadline = None
            # Linger to re-ack the peer's FIN should our ack be lost.
            self._linger_deadline = now_us + 3 * self._rto_us

    def _fail(self, error: UtpError) -> None:
        self.state = UtpState.FAILED
        self.error = error
        self._pending.clear()
        self._outgoing.clear()
        self._unsent = 0
        self._in_flight = 0
        self._ack_pending = self._keepalive_pending = False
        self._finished = not self._reset_pending
        self._clear_reorder()  # gives its bytes back, and wakes (a failed one is let go)

    # Timers.

    def next_deadline(self) -> int | None:
        """When :meth:`handle_timer` must run next (microseconds), or ``None``."""
        if self.finished:
            return None
        if self.state is UtpState.FAILED:
            return None
        candidates = [
            self._confirm_deadline,
            self._half_open_deadline,
            self._rto_deadline,
            self._pace_deadline,
            self._probe_deadline,
            self._close_deadline,
            self._linger_deadline,
        ]
        if self.state is not UtpState.CLOSED:
            candidates.append(self._last_received_us + int(self._config.idle_timeout * 1e6))
            candidates.append(self._stalled_deadline())
            if self.state is not UtpState.SYN_SENT:
                candidates.append(self._last_sent_us + int(self._config.keepalive_interval * 1e6))
        return min(value for value in candidates if value is not None)

    def _stalled_deadline(self) -> int | None:
        """When an open connection whose written data waits without any ack progress fails."""
        if self._progress_us is None or self.state not in (
            UtpState.CONNECTED,
            UtpState.FIN_SENT,
        ):
            return None
        return self._progress_us + int(self._config.idle_timeout * 1e6)

    def handle_timer(self, now_us: int) -> None:
        """Run whatever timers expired at ``now_us``."""
        if self.finished or self.state is UtpState.FAILED:
            return
        if self._linger_deadline is not None and now_us >= self._linger_deadline:
            self._finished = True
            return
        if self._close_deadline is not None and now_us >= self._close_deadline:
            # Closed locally and the peer never finished: give up quietly.
            self._reset_pending = True
            self._fail(UtpError("connection closed"))
            return
        if self.state is UtpState.CLOSED:
            return
        if self._half_open_deadline is not None and now_us >= self._half_open_deadline:
            # Nothing but one SYN from the peer for keepalive_interval + connect_timeout: a
            # spoofed SYN, or a peer that gave up. Half-open connections must not hold their
            # slot for the whole idle timeout (a SYN flood would lock honest peers out).
            self._reset_pending = True
            self._fail(UtpError("the peer never confirmed the connection (half-open)"))
            return
        if self._confirm_deadline is not None and now_us >= self._confirm_deadline:
            # Unconfirmed still: our first packet may go alone (see accept).
            self._confirm_deadline = None
        idle = int(self._config.idle_timeout * 1e6)
        if now_us >= self._last_received_us + idle:
            error_type = UtpConnectError if self.state is UtpState.SYN_SENT else UtpError
            self._fail(error_type(f"no packet from the peer for {self._config.idle_timeout} s"))
            return
        stalled = self._stalled_deadline()
        if stalled is not None and now_us >= stalled:
            # The peer is alive (it keeps sending) but takes nothing: tell it, and give up.
            self._reset_pending = True
            self._fail(
                UtpError(f"nothing we sent was acknowledged for {self._config.idle_timeout} s")
            )
            return
        rto_expired = self._rto_deadline is not None and now_us >= self._rto_deadline
        if rto_expired and not self._on_timeout(now_us):
            return
        if self._probe_deadline is not None and now_us >= self._probe_deadline:
            # The peer's window stayed shut for a whole timeout: probe it with one packet,
            # whatever its size (a resend cut before the MTU search restarted can be bigger
            # than today's payload: a probe smaller than it would never let it go).
            self._probe_deadline = None
            waiting = next((e for e in self._outgoing.values() if e.need_send), None)
            resend = 0 if waiting is None else len(waiting.payload)
            self._peer_wnd = max(self._peer_wnd, self._payload_size, resend)
        keepalive = int(self._config.keepalive_interval * 1e6)
        if self.state is not UtpState.SYN_SENT and now_us >= self._last_sent_us + keepalive:
            self._keepalive_pending = True

    def _on_timeout(self, now_us: int) -> bool:
        """Resend after a retransmission timeout; ``False`` when the connection gave up."""
        self._sack_scanned = None  # every packet goes again: each may be judged again
        self._timeouts += 1
        self._unacked_timeouts += 1
        self._timeout_count += 1
        if self.state is UtpState.SYN_SENT:
            if self._timeouts > self._config.syn_retries:
                self._fail(UtpConnectError("connection timed out (no answer to the SYN)"))
                return False
        elif self._timeouts > self._config.max_timeouts:
            self._fail(UtpError(f"connection timed out ({self._timeouts - 1} retransmissions)"))
            return False
        probe = None if self._probe_seq is None else self._outgoing.get(self._probe_seq)
        if probe is not None and not probe.need_send:
            self._probe_lost(probe)
            if len(self._outgoing) == 1:
                # Only the probe was out: it was too big, the path is fine. Resend it
                # unpadded without cutting the window or counting a timeout.
                self._timeouts -= 1
                self._unacked_timeouts -= 1
                self._mark_unsent(probe)
                self._rto_deadline = now_us + self._rto_us
                return True
        if self._unacked_timeouts >= 2 and self._mtu_floor > self._config.min_datagram:
            # Loss that lasts: the path may have shrunk below what probes found. New
            # packets go at the floor again, and the search starts over.
            self._restart_mtu_search()
        self._update_rto()  # doubled: one more timeout in a row
        self._ssthresh = max(self._cwnd / 2, 2.0 * self._payload_size)
        self._cwnd = float(self._payload_size)
        self._slow_start = True
        for entry in self._outgoing.values():
            entry.need_send = True
        self._unsent = len(self._outgoing)
        self._in_flight = 0
        self._loss_boundary = (self._seq_nr - 1) & _SEQ_MASK
        self._rto_deadline = now_us + self._rto_us if self._outgoing else None
        return True

    # Packets out.

    def datagrams_to_send(self, now_us: int) -> list[bytes]:
        """The datagrams to send now, in order; call after every input and timer."""
        out: list[bytes] = []
        if self._reset_pending:
            self._reset_pending = False
            out.append(self._packet(UtpPacketType.RESET, self._seq_nr, now_us))
            self._finished = True
            return out
        if self.state is UtpState.FAILED or self.finished:
            return out
        if not self._pending and not self._outgoing:
            self._progress_us = None
        elif self._progress_us is None:
            self._progress_us = now_us  # bytes start waiting: for the peer's window, or acks
        self._pace_deadline = None
        # Resends first, in sequence order; new data only once none is left waiting. The
        # count of entries to resend stops the scan at the last one (usually the first).
        resends = (entry for entry in self._outgoing.values() if entry.need_send)
        while self._unsent:
            entry = next(resends)
            if not self._fits(len(entry.payload), now_us):
                break
            out.append(self._send(entry, now_us))
        if not self._unsent:
            self._send_new(out, now_us)
        if out:
            self._ack_pending = self._keepalive_pending = False
        elif self._ack_pending or self._keepalive_pending:
            # A keepalive acks ack_nr - 1 so that it never counts as a duplicate ack.
            ack = self._ack_nr if self._ack_pending else (self._ack_nr - 1) & _SEQ_MASK
            # Until the initiator confirmed, every ST_STATE answers its SYN as the first did,
            # with the number our first DATA has, even once that DATA exists: the initiator
            # starts our stream at the number of the first packet of ours it sees.
            seq = self._seq_nr if self._first_seq is None else self._first_seq
            out.append(self._packet(UtpPacketType.STATE, seq, now_us, ack_nr=ack))
            self._packets_sent += 1
            self._last_sent_us = now_us
            self._ack_pending = self._keepalive_pending = False
        return out

    def _fits(self, size: int, now_us: int) -> bool:
        """Whether a packet of ``size`` payload bytes may go on the wire now."""
        if not size:
            return True  # SYN and FIN
        if self._in_flight:
            window = min(self._cwnd, self._peer_wnd, self._config.send_buffer)
            return self._in_flight + size <= window and self._paced(size, now_us)
        if size > self._peer_wnd:
            # The peer's window is shut: wait for an update, or probe after a timeout.
            if self._probe_deadline is None:
                self._probe_deadline = now_us + self._rto_us
            return False
        return True  # one packet may always be in flight

    def _paced(self, size: int, now_us: int) -> bool:
        """Whether pacing lets ``size`` bytes go now; if not, when it will (the deadline).

        Without pacing, a window opened at once (a burst of acks, a write after the
        application was the limit) leaves as one burst of up to ``cwnd`` bytes; on loopback
        that overflows the receiver's socket buffer (libtorrent's, at its OS default) and
        every packet past it is lost. A token bucket refilled at ``gain * cwnd / rtt`` and
        holding :data:`_PACING_BURST` bytes spreads the window over the round trip instead.
        """
        rtt = self._rtt_us
        if rtt is None:
            return True  # no round trip measured yet: the small initial window is the limit
        gain = _PACING_GAIN_SLOW_START if self._slow_start else _PACING_GAIN
        rate = gain * self._cwnd / max(rtt, 1)  # bytes per microsecond
        elapsed = max(0, now_us - self._pace_stamp)
        tokens = min(self._pace_tokens + elapsed * rate, float(_PACING_BURST))
        self._pace_tokens = tokens
        self._pace_stamp = now_us
        if tokens >= size:
            return True
        self._pace_deadline = now_us + max(1, math.ceil((size - tokens) / rate))
        return False

    def _send_new(self, out: list[bytes], now_us: int) -> None:
        """Cut written bytes into packets as the windows allow (Nagle-like), then the FIN."""
        if self.state is UtpState.SYN_SENT or self._unconfirmed_hold():
            return
        pending = self._pending
        full = self._payload_size
        while pending:
            if seq_distance(self._acked, self._seq_nr) > _MAX_OUTSTANDING:
                return  # sequence numbers in flight stay far below half the space
            if self._unconfirmed_hold():
                return  # the first packet went; the rest wait for the initiator
            size = min(len(pending), full)
            if size < full and not self._fin_requested and self._in_flight:
                return  # coalesce: a short packet waits for the in-flight data's ack
            if not self._fits(size, now_us):
                return
            chunk = bytes(pending[:size])
            del pending[:size]
            entry = self._queue(UtpPacketType.DATA, chunk)
            if (
                self._probe_seq is None
                and size == full
                and self._mtu_floor < self._mtu_ceiling
                and self._in_flight
                and self._cwnd >= 3 * full
                and self.state is UtpState.CONNECTED
            ):
                # A full packet is picked for the probe: padded to the middle of the search
                # range (larger by at most the padding a receiver walks). Never the first
                # packet in flight and only in a window of three packets or more
                # (libtorrent's rule), so that packets after it tell its loss by selective
                # acks. Whether it is the probe, _send decides once its datagram exists.
                #
                # No end to the search short of floor == ceiling: a full packet's datagram
                # without a selective ack is 34 bytes under the floor (PACKET_OVERHEAD keeps
                # room for our largest one), more than the 12 bytes of the least padding, so
                # that every size above the floor can be probed; only a large selective ack
                # stops a given packet from being padded, and a later one may be.
                middle = (self._mtu_floor + self._mtu_ceiling + 1) // 2
                entry.pad_to = min(middle, self._mtu_floor + _MAX_PADDING - PACKET_OVERHEAD)
            out.append(self._send(entry, now_us))
        if self._fin_requested and self._fin_seq is None and not self._unconfirmed_hold():
            self._fin_seq = self._seq_nr
            out.append(self._send(self._queue(UtpPacketType.FIN, b""), now_us))
            if self.state is UtpState.CONNECTED:
                self.state = UtpState.FIN_SENT

    def _queue(self, kind: UtpPacketType, payload: bytes) -> _Outgoing:
        seq = self._seq_nr
        entry = self._outgoing[seq] = _Outgoing(seq, kind, payload)
        self._unsent += 1
        self._seq_nr = (seq + 1) & _SEQ_MASK
        return entry

    def _send(self, entry: _Outgoing, now_us: int) -> bytes:
        entry.need_send = False
        self._unsent -= 1
        entry.transmissions += 1
        if entry.transmissions == 1:
            entry.first_sent_us = now_us
            self._bytes_sent += len(entry.payload)
        else:
            self._retransmits += 1
            self._last_resend_us = now_us
        self._in_flight += len(entry.payload)
        self._pace_tokens -= len(entry.payload)
        if self._rto_deadline is None:
            self._rto_deadline = now_us + self._rto_us
        self._packets_sent += 1
        self._last_sent_us = now_us
        if self._unanswered_since_us is None:
            self._unanswered_since_us = now_us
        if entry.type is UtpPacketType.SYN:
            return encode_packet(
                UtpPacketType.SYN, self.recv_id, now_us & _TS_MASK, 0, self._window(), entry.seq, 0
            )
        datagram = self._packet(entry.type, entry.seq, now_us, payload=entry.payload)
        if entry.pad_to:
            datagram = self._as_probe(entry, datagram)
        return datagram

    def _as_probe(self, entry: _Outgoing, datagram: bytes) -> bytes:
        """``datagram``, of the packet picked for the MTU probe, padded to the probe size;
        or as it is, an ordinary packet, when it cannot leave at exactly that size.

        The probe is what leaves: as libtorrent marks a packet a probe only once it is
        built and larger than the floor. Counting one that left unpadded would take its
        loss for the path's refusal of a size never sent (the search would end at the
        floor) and spare the window a real loss.
        """
        size = entry.pad_to
        padded = _pad(datagram, size)
        if len(padded) != size or not self._mtu_floor < size <= self._mtu_ceiling:
            # Its selective ack leaves less room than the extension bits and a link take,
            # or, on a resend after the socket dropped it unsent, the range moved past it.
            entry.pad_to = entry.probed = 0
            if entry.seq == self._probe_seq:
                # Only a probe that never left is resent as one (every other resend comes
                # after _probe_lost): it tested nothing, and is no longer counted.
                self._forget_probe()
            return datagram
        if entry.seq != self._probe_seq:
            # Counted once: a resend of a probe the socket dropped unsent is the same probe.
            self._probe_seq = entry.seq
            self._mtu_probes += 1
        entry.probed = size
        entry.probed_ceiling = self._mtu_ceiling
        entry.probed_epoch = self._mtu_epoch
        return padded

    def _forget_probe(self) -> None:
        """The probe stops being one without ever leaving the host (every transmission
        of it refused or dropped unsent): it counts neither as sent nor as lost."""
        self._probe_seq = None
        self._mtu_probes -= 1

    def _packet(
        self,
        kind: UtpPacketType,
        seq: int,
        now_us: int,
        *,
        payload: bytes = b"",
        ack_nr: int | None = None,
    ) -> bytes:
        sack = None
        if ack_nr is None:
            ack_nr = self._ack_nr
        if self._reorder:
            # Relative to the ack_nr this packet carries: a keepalive's is one less, and a
            # bitmask relative to ours would acknowledge the packets next to the ones we hold.
            offsets = [seq_distance(ack_nr, s) - 2 for s in self._reorder]
            sack = sack_from_offsets(offsets, _OWN_SACK_BYTES)
        window = self._advertised = self._window()
        if window < self._update_threshold:
            budget = self._budget
            if budget.free() < self._config.receive_buffer - self._buffered():
                # Shut by the socket's budget, not by our own reader (whose reads tell):
                # other connections' reads wake it.
                budget.starve(self)
        # Every field is in range by construction (16-bit numbers masked, the window
        # below 2 GiB by UtpConfig): the unchecked encoder.
        return encode_packet(
            kind,
            self.send_id,
            now_us & _TS_MASK,
            self._reply_micro,
            window,
            seq,
            ack_nr,
            sack,
            payload,
        )

    def statistics(self) -> UtpConnectionStatistics:
        """A snapshot of this connection's counters."""
        return UtpConnectionStatistics(
            packets_sent=self._packets_sent,
            packets_received=self._packets_received,
            retransmits=self._retransmits,
            timeouts=self._timeout_count,
            fast_retransmits=self._fast_retransmits,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            cwnd=int(self._cwnd),
            rtt_ms=None if self._rtt_us is None else self._rtt_us / 1000,
            mtu=self._mtu_floor,
            mtu_probes=self._mtu_probes,
            mtu_probes_lost=self._mtu_probes_lost,
        )


def is_mtu_probe(datagram: bytes) -> bool:
    """Whether ``datagram`` (one a :class:`UtpConnection` sent) is a path MTU probe.

    A socket sends probes with "don't fragment" set, so that a path too small for them
    drops them (or the host refuses them: :meth:`UtpConnection.datagram_too_big`), and
    every other datagram with it clear, so that one sent before the path shrank still
    arrives, fragmented, as libtorrent does.

    >>> is_mtu_probe(bytes(20))
    False
    """
    return (
        len(datagram) > HEADER_SIZE + _EXTENSION_BITS_LINK
        and datagram[1] == _EXTENSION_BITS
        and datagram[HEADER_SIZE] == PADDING_EXTENSION
    )


def _pad(datagram: bytes, size: int) -> bytes:
    """``datagram`` grown to ``size`` bytes by an extension bits link (8 zero bytes, see
    :data:`_EXTENSION_BITS`) and a chain of :data:`PADDING_EXTENSION` links in front of its
    own extensions, which receivers skip.

    The padding fills the gap exactly. A gap smaller than the extension bits and one link
    (12 bytes) cannot be filled: the datagram is returned as it is.
    """
    missing = size - len(datagram) - _EXTENSION_BITS_LINK
    if missing < 2:
        return datagram
    lengths: list[int] = []
    while missing > 0:
        # Never leave a single byte for the last link: it could not hold it.
        length = missing - 2 if missing <= 257 else min(255, missing - 4)
        lengths.append(length)
        missing -= 2 + length
    # Each link names the type of the next; the last one names the packet's first extension.
    kinds = [PADDING_EXTENSION] * (len(lengths) - 1) + [datagram[1]]
    chain = b"".join(
        bytes((kind, length)) + bytes(length) for kind, length in zip(kinds, lengths, strict=True)
    )
    return b"".join(
        (
            datagram[:1],
            bytes((_EXTENSION_BITS,)),
            datagram[2:HEADER_SIZE],
            bytes((PADDING_EXTENSION, 8)) + bytes(8),
            chain,
            datagram[HEADER_SIZE:],
        )
    )


def _ts_less(a: int, b: int) -> bool:
    """Whether 32-bit timestamp ``a`` comes before ``b``, modulo 2**32."""
    return a != b and (b - a) & _TS_MASK < 1 << 31
