"""The trio shell of the peer wire protocol: :class:`PeerManager` runs many connections.

A :class:`PeerManager` only exists inside ``async with open_peer_manager(...)``. It takes
completed handshakes (:class:`~bip_handshake.CompletedHandshake`, from a
:class:`~bip_handshake.Handshaker` or anything else), wraps each in a
:class:`~bip_peer.PeerConnection` (the sans-IO protocol state) and runs, per peer, one
reader and one writer task under the manager's own nursery. Leaving the block closes every
peer.

What the manager does for every peer:

- sends our BEP 10 extended handshake first when both sides set the BEP 10 bit (its fields
  come from :class:`PeerManagerConfig` and from every :class:`PeerService`);
- queues what the owner sends in a send queue bounded in messages and in bytes
  (:meth:`PeerManager.send` waits while it is full, :meth:`PeerManager.send_nowait` returns
  ``False``) and writes queued messages in batches, one ``send_all`` per batch
  (:meth:`PeerManager.queued_bytes` says how much waits, :meth:`PeerManager.wait_writable`
  waits for it to drain); small control messages the protocol bounds in number (haves,
  chokes, interest, rejects...) go past both bounds with :meth:`PeerManager.send_control`,
  joined while consecutive in the queue, under a byte bound of their own per peer (9 bytes
  a piece, plus rejects and 64 KiB), so a slow but honest peer is not taken for one that
  stopped reading;
- sends a keep-alive after ``keepalive_interval`` seconds without sending anything, and
  drops the peer after ``idle_timeout`` seconds without receiving anything;
- decodes what arrives and reports each message as a :class:`MessageReceived` event on the
  manager's one bounded event stream (:meth:`PeerManager.events`), between a
  :class:`PeerAdded` and a :class:`PeerRemoved` for that peer;
- counts bytes and messages both ways, with rates (:meth:`PeerManager.statistics`);
- holds every peer together to an upload and a download rate limit, if given
  (:attr:`PeerManagerConfig.upload_rate_limit`, :meth:`PeerManager.set_rate_limits`),
  peers on local networks excepted unless told otherwise (as libtorrent);
- takes a magnet's piece count once the metadata is known (:meth:`PeerManager.set_num_pieces`).

A peer that breaks the protocol (garbage, an oversized message, a forbidden message) or
whose transport fails costs that one connection: it is removed with a reason and the error.

Backpressure goes all the way: a consumer that does not read events stops the readers
(and so, through TCP, the peers); a consumer whose own sink is behind (a torrent's disk)
stops the readers of chosen peers with :meth:`PeerManager.pause_reading` while it goes on
reading the events of the others; a peer that does not read makes its send queue fill up
and :meth:`PeerManager.send` block. The replies a peer's own messages earn (rejects of
requests beyond ``reqq`` or before the metadata, hash rejects) are queued whatever the
queue holds, and never stop the reader: a reader waiting on its own send queue ties the
peer's reads to our writes, and two peers doing so wait for each other. They are bounded
instead, as libtorrent bounds a flood: it queues its rejects and does not look at its send
buffer to decide whether to read, but disconnects a peer over a budget (too many requests
while choked...). Here a peer with more reply bytes unwritten than ``send_queue_bytes``
(1 MiB without one; never less than 64 KiB, nor than four times the rejects the ``reqq`` we
advertise can earn, which an honest peer cancelling all its requests at once reaches) floods
requests it cannot be served, and is removed for it (:data:`REASON_PROTOCOL`).

Copies. Reads are large (``receive_size``, 512 KiB by default) and go to the decoder
uncopied; a piece message wholly inside one read reaches the consumer as a memoryview slice
of it (a block straddling two reads is assembled once by the decoder). Writes: the queued
messages of a peer are joined into one buffer of up to 256 KiB and written with one
``send_all``; a block given as ``bytes`` or a memoryview is copied once, by that join. A
``send_all`` per block instead (the writev-like alternative without access to the socket,
which MSE and the handshaker's stream wrapper stand in front of) costs a system call and a
scheduler round trip per block, far more than copying 16 KiB (about 0.35 µs here).

Rate limits. Two :class:`~bip_peer.BandwidthLimiter` objects, one per direction, are shared
by every peer of the manager; peers take turns on each (first come, first served, at most
one quantum a turn), so none starves the others. What is counted is every byte of the wire,
payload and protocol alike (length prefixes, requests, haves, keep-alives, extension
messages), as libtorrent's default does (its ``rate_limit_ip_overhead`` adds TCP/IP headers
on top; we cannot see those). Protocol messages are not let through the limit: libtorrent
does not either (a peer's send buffer, protocol messages and blocks alike, waits for upload
quota), and the turns keep them from starving: a keep-alive or a request waits behind at most
one quantum per waiting peer, about a tenth of a second of the rate in all. The bytes the
handshaker read past the handshake (``trailing``) are not counted: they were read before
the peer was ours.

- Upload: the writer sizes a batch to one quantum and takes tokens for its bytes before the
  ``send_all``; what the limiter grants short of the whole batch is written first and the
  rest after the next grant (a bitfield or metadata piece bigger than a quantum goes in
  slices).
- Download: the reader takes tokens before each ``receive_some`` and asks for no more bytes
  than it holds, so unread bytes stay in the kernel and TCP's window slows the peer (as
  libtorrent does); nothing is read and then dropped. How many it takes is what it expects
  (its outstanding block requests, plus 1 KiB for whatever else the peer sends): an idle
  peer holds almost nothing while its reader waits for data. Tokens a reader holds when the
  limit changes, or when its peer goes, are given back.
- Waiting on our own limit is not the peer being idle, nor a send timing out.
- Unlimited (the default) costs one attribute test per read and per write.

Local peers are not limited by default, as in libtorrent, whose "local" peer class has no
limit: a limit shares the slow link to the internet, which a peer on loopback or on our LAN
does not use. Whether a peer is local is decided once, when it is added, from its address
(:func:`~bip_peer.is_local_address`: private IPv4 ranges, link-local, loopback, IPv6
unique-local). Such a peer's reader and writer never call the limiters (they take no turn
and no token from the others); their bytes are only counted
(:attr:`LimiterStatistics.exempt <bip_peer.LimiterStatistics.exempt>`).
:attr:`PeerManagerConfig.limit_local_peers` holds them to the limits too, and
:meth:`PeerManager.set_rate_limits` switches it while running: local peers waiting for
tokens when exempted go at once (having taken nothing, and handing back the download tokens
they held); exempted peers limited again are from their next read and write on (one read
or batch already under way finishes unlimited).

Services (:class:`PeerService`: the BEP 9 metadata exchange, BEP 11 PEX...) plug into the
manager: they add fields to the extended handshake, see peers come and go, may consume
received messages before they become events, and get a tick about once a second.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

from bip_handshake import (
    CompletedHandshake,
    Direction,
    EncryptionMethod,
    PeerAddress,
    PeerId,
    Transport,
)
from bip_handshake import Extensions as _Extensions
from bip_metainfo import InfoHash

from ._bandwidth import BandwidthLimiter, check_rate, is_local_address
from ._connection import ConnectionLimits, PeerConnection, UnknownExtended
from ._errors import PeerError, RemoteProtocolError
from ._extended import (
    DEFAULT_EXTENSION_IDS,
    DontHave,
    ExtendedHandshake,
    MetadataData,
    PexMessage,
    UploadOnly,
)
from ._messages import (
    BLOCK_SIZE,
    NEED_DATA,
    AllowedFast,
    Bitfield,
    Choke,
    Hashes,
    HashReject,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Port,
    RejectRequest,
    Suggest,
    Unchoke,
    UnknownMessage,
)
from ._stats import (
    DEFAULT_RATE_WINDOW,
    ManagerStatistics,
    PeerStatistics,
    TrafficCounter,
)

__all__ = [
    "DEFAULT_EVENT_BUFFER",
    "DEFAULT_EVENT_BUFFER_BYTES",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_KEEPALIVE_INTERVAL",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_RECEIVE_SIZE",
    "DEFAULT_SEND_QUEUE_BYTES",
    "DEFAULT_SEND_QUEUE_SIZE",
    "DEFAULT_TICK_INTERVAL",
    "REASON_CLOSED",
    "REASON_CLOSING",
    "REASON_IDLE",
    "REASON_INTERNAL",
    "REASON_PROTOCOL",
    "REASON_REPLACED",
    "REASON_SEND_TIMEOUT",
    "REASON_TRANSPORT",
    "ManagerEvent",
    "MessageReceived",
    "Peer",
    "PeerAdded",
    "PeerClosedError",
    "PeerManager",
    "PeerManagerConfig",
    "PeerManagerFullError",
    "PeerRemoved",
    "PeerService",
    "open_peer_manager",
]

DEFAULT_MAX_PEERS: Final = 200
"""Peers a manager holds at once by default (libtorrent's ``connections_limit``)."""
DEFAULT_SEND_QUEUE_SIZE: Final = 128
"""Messages a peer's send queue holds by default (2 MiB of 16 KiB blocks)."""
DEFAULT_SEND_QUEUE_BYTES: Final = 2 * 1024 * 1024
"""Bytes a peer's send queue holds by default before :meth:`PeerManager.send` waits.

The message count alone does not bound memory: a queue sized for a thousand small messages
(requests, haves) holds 16 MiB of blocks or metadata pieces for a peer that stops reading,
and a manager holds 200 such peers. 2 MiB is what the default message count holds in
blocks, four times libtorrent's send buffer watermark (500 KiB): room for a sender to keep
a fast peer busy (benchmarks/peer_throughput.py moves blocks as fast with 1 MiB as with no
byte bound at all).
"""
DEFAULT_EVENT_BUFFER: Final = 256
"""Events buffered for :meth:`PeerManager.events` by default before the readers wait."""
DEFAULT_EVENT_BUFFER_BYTES: Final = 16 * 1024 * 1024
"""Payload bytes buffered for :meth:`PeerManager.events` by default before the readers wait.

The event count alone does not bound memory: a bitfield, a BEP 52 ``hashes`` reply, an
unknown message or an unknown extension message may each carry up to ``max_message_length``
(1 MiB), and 256 of them from one peer were 256 MiB held for a consumer busy elsewhere.
16 MiB is 64 bitfields of the largest torrent libtorrent opens (2**21 pieces), far more than
a consumer that keeps up ever has queued. Piece blocks do not count: they answer our own
requests, at most ``max_block_length`` each. Decoded messages count what they hold: a
``ut_pex`` message no service consumed (up to 4,000 addresses, some 0.7 MB as objects), an
extended handshake, a ``ut_metadata`` piece.
"""
DEFAULT_KEEPALIVE_INTERVAL: Final = 60.0
"""Seconds without sending after which a keep-alive is sent: libtorrent's (half its
``peer_timeout``). BEP 3's "every two minutes" races libtorrent's 120 s inactivity timeout,
which checks once a second for more than 120 s without a byte: a quiet peer keeping to two
minutes was dropped about half the time (a choked, interested leecher has nothing else to
send)."""
DEFAULT_IDLE_TIMEOUT: Final = 180.0
"""Seconds without receiving anything after which a peer is dropped, by default.

libtorrent's ``peer_timeout`` is 120 s, but libtorrent sends its own keep-alives well
before that; peers that wait the full two minutes of BEP 3 (rtorrent, aria2) would race a
120 s timeout, so the default leaves them a minute more, as aria2 does (two minutes of
keep-alive, three of inactivity).
"""
DEFAULT_RECEIVE_SIZE: Final = 512 * 1024
"""Bytes asked of ``receive_some`` per read by default.

Large reads keep the per-message cost low (benchmarks/peer_throughput.py: about 10% faster
than 256 KiB, 2.5 times faster than 64 KiB). Received blocks are views into these reads:
a consumer that keeps blocks should copy them, or it pins whole reads.
"""
DEFAULT_TICK_INTERVAL: Final = 1.0
"""Seconds between the manager's housekeeping ticks (keep-alives, idle peers, services)."""
_WRITE_BATCH: Final = 256 * 1024
"""Queued bytes joined into one ``send_all`` at most (a bigger single message goes alone)."""
_MAX_BATCH_MESSAGES: Final = 512
_UNBOUNDED: Final = 1 << 62
"""The byte capacity of a send queue with ``send_queue_bytes=None``: never reached."""
_REPLY_BOUND_WITHOUT_BYTES: Final = 1024 * 1024
"""Reply bytes a peer may leave unwritten when ``send_queue_bytes`` is ``None``.

The owner chose no byte bound for what it sends, but the rejects a peer's requests earn are
the peer's choice. An honest peer's unwritten rejects answer requests within the ``reqq`` we
advertise, or requests it cancelled: at once, at most the rejects of a whole ``reqq`` (17
bytes each: it cancels every request it has out, the endgame), a few times that for a peer
that frees a request's slot as it cancels it and asks again (bip does: ``_send_cancel``
forgets the request at once; what keeps bip's own rejects small is bip_select's queue, sized
by the peer's rate). :func:`_reply_bound` allows four times a ``reqq``'s rejects whatever
this is; 1 MiB (61,680 rejects) covers that up to a ``reqq`` of 15,220 (the hash rejects
counted), thirty times the default, and is half what the default byte bound lets a queue hold.
"""
_REJECT_SIZE: Final = len(RejectRequest(0, 0, BLOCK_SIZE).encode())
"""Bytes of one reject request on the wire (17)."""
_HASH_REJECT_SIZE: Final = len(HashReject(bytes(32), 0, 0, 2, 0).encode())
"""Bytes of one BEP 52 hash reject on the wire (53)."""
_REPLY_ROUNDS: Final = 4
"""How many times the rejects the ``reqq`` we advertise can earn a peer may leave unwritten."""
_REPLY_FLOOR: Final = 64 * 1024
"""Reply bytes a peer may always leave unwritten (3,855 rejects), whatever the bounds."""


def _reply_bound(send_queue_bytes: int | None, limits: ConnectionLimits) -> int:
    """The reply bytes (rejects, hash rejects) a peer may leave unwritten before it is
    removed as a flood: ``send_queue_bytes`` (:data:`_REPLY_BOUND_WITHOUT_BYTES` when
    ``None``), raised to what an honest peer can reach when that is more.

    The ``reqq`` we advertise (``max_peer_requests``) is the peer's to fill: it may have that
    many requests out and cancel all of them in one burst (the endgame), which earns a
    reject each, all queued by one read; hash requests earn hash rejects beyond
    ``max_peer_hash_requests``, which we advertise nowhere. :data:`_REPLY_ROUNDS` (4) times
    both leaves room for a peer that frees a slot as it cancels and asks again before our
    writer has caught up (three more full ``reqq`` cancelled meanwhile). :data:`_REPLY_FLOOR`
    (64 KiB) covers a small ``reqq``: a peer pipelines requests to its own queue depth
    (hundreds) before it has read our extended handshake, and those beyond our ``reqq`` earn
    rejects too. A flood is still removed once past the bound: what it can make us hold is
    this plus one read's rejects, per peer.

    >>> _reply_bound(16384, ConnectionLimits(max_peer_requests=1000))
    81568
    >>> _reply_bound(16384, ConnectionLimits(max_peer_requests=10))
    65536
    >>> _reply_bound(None, ConnectionLimits())
    1048576
    """
    bound = _REPLY_BOUND_WITHOUT_BYTES if send_queue_bytes is None else send_queue_bytes
    reqq = _REJECT_SIZE * limits.max_peer_requests
    hashes = _HASH_REJECT_SIZE * limits.max_peer_hash_requests
    return max(bound, _REPLY_FLOOR, _REPLY_ROUNDS * (reqq + hashes))


_CONTROL_MESSAGES: Final[frozenset[type]] = frozenset(
    {
        Choke,
        Unchoke,
        Interested,
        NotInterested,
        Have,
        HaveAll,
        HaveNone,
        Suggest,
        AllowedFast,
        RejectRequest,
        Port,
        DontHave,
        UploadOnly,
    }
)
"""The messages :meth:`PeerManager.send_control` takes: small, of a fixed size, and bounded in
number by the protocol itself (a have or a suggest per piece, a reject per request, a choke,
an unchoke or an interest per change of state...), not by how fast the peer reads."""
_HAVE_SIZE: Final = len(Have(0).encode())
"""Bytes of one have on the wire (9)."""
_CONTROL_FLOOR: Final = 64 * 1024
"""Control bytes a peer may always leave unwritten beyond its haves and rejects: some 13,000
chokes, unchokes and changes of interest, far more than pile up behind an honest peer's
blocks (a choke round comes every 10 s; the send timeout drops a write stuck for 180 s)."""
_CONTROL_CHUNK: Final = 4096
"""Control bytes coalesced into one send queue entry at most (about 450 haves): the entry's
own cost (some 120 bytes) is then a few percent of what it holds."""


def _control_bound(num_pieces: int | None, limits: ConnectionLimits) -> int:
    """The control bytes (:meth:`PeerManager.send_control`) a peer may leave unwritten before
    it counts as no longer reading: a have for every piece of the torrent (BEP 3 tells every
    peer of every piece we get; 0 while a magnet's piece count is unknown), the rejects a
    choke or a refusal owes for :data:`_REPLY_ROUNDS` (4) times the ``reqq`` we advertise, and
    :data:`_CONTROL_FLOOR` (64 KiB) for the rest.

    An honest peer never reaches it however slowly it reads: each of these messages is sent
    once per piece, per request or per change of state, not once per unit of time.

    >>> _control_bound(1000, ConnectionLimits(max_peer_requests=500))
    108536
    >>> _control_bound(None, ConnectionLimits(max_peer_requests=500))
    99536
    """
    pieces = 0 if num_pieces is None else num_pieces
    return (
        _CONTROL_FLOOR
        + _HAVE_SIZE * pieces
        + _REPLY_ROUNDS * _REJECT_SIZE * limits.max_peer_requests
    )


class _ControlEntry(list[bytearray]):
    """A send queue entry of coalesced control messages (:meth:`PeerManager.send_control`):
    one buffer, extended in place while it is the last entry, so that a have queued right
    after other control messages costs its 9 bytes rather than a list and a bytes object
    (some 120 bytes), as in libtorrent's send buffer. A control message queued after any
    other message starts a new entry: the entries never outnumber the other messages queued
    plus one. Its own type tells the writer it does not count in ``send_queue_size``, and
    ``messages`` how many it holds (for :attr:`PeerStatistics.messages_sent`)."""

    __slots__ = ("messages",)

    def __init__(self, buffer: bytearray) -> None:
        super().__init__((buffer,))
        self.messages = 1


class _Unwritten:
    """Bytes of one kind queued for a peer and not known written, as spans of its stream.

    Each push is a span, known by where it ends in the bytes ever queued (written plus
    queued); spans the written bytes have passed are dropped. A push right after the
    previous one of its kind (nothing else queued in between: a flood's rejects, read after
    read; haves as pieces come in) extends its span, so the spans never outnumber the other
    messages queued between them plus one.
    """

    __slots__ = ("size", "spans")

    def __init__(self) -> None:
        self.spans: deque[tuple[int, int]] = deque()  # (end, size), in bytes ever queued
        self.size = 0  # the sizes' sum

    def unwritten(self, sent: int) -> int:
        """The bytes of this kind not yet written, ``sent`` bytes of the stream written."""
        spans = self.spans
        while spans and spans[0][0] <= sent:
            self.size -= spans.popleft()[1]
        if not spans:
            return 0
        end, first = spans[0]
        # The first span may be partly written (a batch ended inside it).
        return self.size - max(0, sent - (end - first))

    def add(self, start: int, size: int, sent: int) -> int:
        """Count ``size`` bytes queued at ``start`` of the stream (``sent`` bytes of it
        written); return the bytes of this kind not yet written, these included."""
        spans = self.spans
        self.size += size
        end = start + size
        if spans and spans[-1][0] == start:
            size += spans.pop()[1]
        spans.append((end, size))
        return self.unwritten(sent)


_PIECE_MESSAGE: Final = BLOCK_SIZE + 13
"""A piece message of a full block: what a reader expects per outstanding request."""
_READ_FLOOR: Final = 1024
"""Download tokens a limited reader takes beyond its outstanding blocks (libtorrent: 30).

Enough for a burst of haves, requests, a PEX message or an extended handshake in one read;
larger unrequested messages (a bitfield, a metadata piece) take a few reads. It is also what
every idle peer's reader holds while it waits for data, so it stays small.
"""

REASON_CLOSED: Final = "closed by peer"
"""Removal reason: the peer closed the connection."""
REASON_PROTOCOL: Final = "protocol error"
"""Removal reason: the peer broke the protocol (the error is a ``RemoteProtocolError``)."""
REASON_TRANSPORT: Final = "transport error"
"""Removal reason: reading or writing the stream failed (reset, broken pipe...)."""
REASON_IDLE: Final = "idle timeout"
"""Removal reason: nothing received for ``idle_timeout`` seconds."""
REASON_SEND_TIMEOUT: Final = "send timeout"
"""Removal reason: a write did not complete for ``idle_timeout`` seconds (the peer stopped
reading)."""
REASON_INTERNAL: Final = "internal error"
"""Removal reason: an unexpected exception in a service hook or in bip_peer itself."""
REASON_REPLACED: Final = "replaced"
"""Removal reason of a peer :meth:`PeerManager.replace_peer` put another connection in place
of, unless the caller gives its own."""
REASON_CLOSING: Final = "manager closed"
"""Removal reason of peers still connected when the manager closes (not reported as events)."""


class _Keep(enum.Enum):
    """The default of :meth:`PeerManager.set_rate_limits`'s arguments: leave it as it is."""

    KEEP = "keep"


_KEEP: Final = _Keep.KEEP

_TRANSPORT_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

_log = logging.getLogger("bip_peer.manager")


class PeerManagerFullError(PeerError):
    """:meth:`PeerManager.add_peer` was called with ``max_peers`` peers connected, or with
    ``max_peers_per_host`` of the torrent's peers at the handshake's host.

    The caller still owns the handshake's stream and should close it.
    """


class PeerClosedError(PeerError):
    """The peer was removed (or the manager closed) before or while a message was sent."""


def _declared_types(service: PeerService) -> tuple[type, ...] | None:
    """``service``'s ``message_types`` (``None``: it has none), checked.

    Raises:
        TypeError: they are not a tuple of classes.
    """
    declared = getattr(service, "message_types", None)
    if declared is None:
        return None
    if not isinstance(declared, tuple) or not all(isinstance(kind, type) for kind in declared):
        raise TypeError(f"a service's message_types must be a tuple of classes, not {declared!r}")
    for kind in declared:
        try:  # a class issubclass() refuses (a Protocol) would fail every peer's first message
            issubclass(object, kind)
        except TypeError:
            raise TypeError(f"a service's message_types cannot hold {kind!r}") from None
    return declared


class PeerService(Protocol):
    """Something that rides along every connection of a :class:`PeerManager`.

    Every hook runs synchronously in a manager task and must not block; to send, use
    :meth:`PeerManager.send_nowait`. An exception raised by :meth:`message_received`
    removes the peer it was called for (a :class:`~bip_peer.PeerError` with
    :data:`REASON_PROTOCOL`, anything else with :data:`REASON_INTERNAL`); see
    :meth:`PeerManager.add_peer` for :meth:`handshake_fields` and :meth:`peer_added`. One
    raised by :meth:`peer_removed` or :meth:`tick` is a bug that ends the manager.

    A service may say which messages it takes, in a class attribute ``message_types``: a
    tuple of message classes (``(PexMessage,)``; a class stands for its subclasses too).
    :meth:`message_received` is then called for messages of those classes alone, and ``()``
    means for none (a service that only adds handshake fields or watches peers come and go).
    A service without it is asked about every message. Declaring spares the manager a call
    per service for every block, which no service takes (as libtorrent's session plugins
    name the hooks they implement in ``implemented_features``, and are called for those
    alone). Services are asked in their order either way; one that is not a tuple of classes
    is refused with :class:`TypeError` (by :class:`PeerManager` and
    :meth:`PeerManager.add_service`).
    """

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """Fields to merge into our BEP 10 extended handshake to ``peer``.

        Keys are the handshake's field names (``"metadata_size"``, ``"upload_only"``...);
        an ``"m"`` mapping is merged into ours (``{"ut_metadata": 2}``); unknown keys go
        into the handshake's ``extra`` dictionary.
        """
        ...

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """``peer`` was added (called from :meth:`PeerManager.add_peer`)."""
        ...

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """``peer`` sent ``message`` (of a class in ``message_types``, if the service has
        them); return ``True`` to consume it (no event is emitted, and the services after
        this one are not asked)."""
        ...

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """``peer`` is gone; forget it."""
        ...

    def tick(self, manager: PeerManager, now: float) -> None:
        """Called about once a second with ``trio.current_time()``."""
        ...


@dataclass(frozen=True, slots=True)
class PeerManagerConfig:
    """How a :class:`PeerManager` behaves.

    >>> PeerManagerConfig(max_peers=50).keepalive_interval
    60.0

    Attributes:
        max_peers: peers held at once; :meth:`PeerManager.add_peer` refuses more.
        max_peers_per_host: peers of one torrent held at once from one host (IP address);
            :meth:`PeerManager.add_peer` refuses more, so that one machine cannot take every
            slot (libtorrent allows one unless ``allow_multiple_connections_per_ip``).
            ``None``: no limit of its own (``max_peers`` only).
        send_queue_size: messages queued per peer before :meth:`PeerManager.send` waits.
        send_queue_bytes: bytes queued per peer (not yet written) before
            :meth:`PeerManager.send` waits and :meth:`PeerManager.send_nowait` refuses;
            one message is always taken while fewer are queued, so a queue holds at most
            this plus one message, the control messages of :meth:`PeerManager.send_control`
            (which have a bound of their own), and the replies the peer's own messages earn
            (rejects, queued whatever the queue holds). It also bounds the replies: a peer
            with more reply bytes unwritten than this (it requests faster than it reads the
            rejects) is removed with :data:`REASON_PROTOCOL`, so they add at most this plus
            one read's replies. That bound is never below 64 KiB, nor below four times the
            rejects the ``reqq`` we advertise (``limits.max_peer_requests``) can earn: an
            honest peer that cancels all its requests at once must not be taken for a flood.
            ``None``: bounded by ``send_queue_size`` only (the replies still by 1 MiB, since
            a peer must not decide how much we queue for it).
        event_buffer: events buffered before the readers wait for the consumer. A peer's
            :class:`PeerAdded` is queued by :meth:`PeerManager.add_peer` itself, even past
            this (so that every peer added is announced, and later removed); a removed
            peer holds its place in ``max_peers`` until its :class:`PeerRemoved` is queued,
            so the queue holds at most ``max_peers`` events more than this.
        event_buffer_bytes: payload bytes buffered before the readers wait for the
            consumer: those of bitfields, BEP 52 ``hashes`` replies, unknown messages and
            unknown extension messages, ``ut_metadata`` pieces, and what decoded ``ut_pex``
            messages and extended handshakes hold (an estimate per address and per field,
            measured); not piece blocks, which answer our requests. One event is always
            taken while fewer are queued, so the queue holds at most this plus one
            message's payload.
        keepalive_interval: seconds without sending after which a keep-alive goes out.
        idle_timeout: seconds without receiving after which a peer is dropped.
        receive_size: bytes asked per read from a stream.
        tick_interval: seconds between housekeeping ticks (and :meth:`PeerService.tick`).
        rate_window: seconds the statistics' rates are averaged over.
        limits: the per-connection protocol limits (``None``: bip_peer's defaults).
        client_version: our ``v`` in the extended handshake (``None`` to leave it out).
        listen_port: our ``p`` in the extended handshake, the port we accept peers on.
        extension_ids: the BEP 10 extensions the connection itself understands, with the
            ids we give them (services add theirs through :meth:`PeerService.handshake_fields`).
        services: services to run on every connection.
        upload_rate_limit: bytes per second written to all peers together (every byte
            of the wire, protocol included); ``None`` or ``0``: unlimited, as libtorrent's
            ``upload_rate_limit``. :meth:`PeerManager.set_rate_limits` changes it later.
        download_rate_limit: bytes per second read from all peers together, likewise.
        limit_local_peers: hold peers on local networks (loopback, private IPv4 ranges,
            link-local, IPv6 unique-local: :func:`~bip_peer.is_local_address`) to the rate
            limits too. Off by default: as libtorrent's "local" peer class, they are not
            limited (their bytes do not cross the link the limits share), and do not count
            against the limits of the others. :meth:`PeerManager.set_rate_limits` switches
            it later.
    """

    max_peers: int = DEFAULT_MAX_PEERS
    max_peers_per_host: int | None = None
    send_queue_size: int = DEFAULT_SEND_QUEUE_SIZE
    send_queue_bytes: int | None = DEFAULT_SEND_QUEUE_BYTES
    event_buffer: int = DEFAULT_EVENT_BUFFER
    event_buffer_bytes: int = DEFAULT_EVENT_BUFFER_BYTES
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    receive_size: int = DEFAULT_RECEIVE_SIZE
    tick_interval: float = DEFAULT_TICK_INTERVAL
    rate_window: float = DEFAULT_RATE_WINDOW
    limits: ConnectionLimits | None = None
    client_version: str | None = "bip 0.1.0"
    listen_port: int | None = None
    extension_ids: Mapping[str, int] = field(
        default_factory=lambda: {
            name: DEFAULT_EXTENSION_IDS[name] for name in ("lt_donthave", "upload_only")
        }
    )
    services: Sequence[PeerService] = ()
    upload_rate_limit: float | None = None
    download_rate_limit: float | None = None
    limit_local_peers: bool = False

    def __post_init__(self) -> None:
        """Check the numbers.

        Raises:
            ValueError: a count or an interval out of range; a rate limit negative, NaN or
                infinite.
            TypeError: a rate limit that is not a number (or is a bool);
                ``limit_local_peers`` not a bool.
        """
        for name in (
            "max_peers",
            "send_queue_size",
            "receive_size",
            "event_buffer",
            "event_buffer_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        for name in ("max_peers_per_host", "send_queue_bytes"):  # None: no such bound
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
        for name in ("keepalive_interval", "idle_timeout", "tick_interval", "rate_window"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, not {value!r}")
        if self.listen_port is not None and not 0 < self.listen_port <= 0xFFFF:
            raise ValueError(f"listen_port must be in 1..65535, not {self.listen_port}")
        check_rate(self.upload_rate_limit, "upload_rate_limit")
        check_rate(self.download_rate_limit, "download_rate_limit")
        _check_flag(self.limit_local_peers, "limit_local_peers")


def _check_flag(value: object, name: str) -> None:
    """Refuse a switch that is not a bool (``1`` or ``"no"`` would be read as a wish)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")


class Peer:
    """A connected peer: a hashable handle, valid after the peer is removed.

    Identity is the handle itself: two connections to the same address are two peers.
    """

    __slots__ = ("__weakref__", "_connection", "_handshake")

    def __init__(self, handshake: CompletedHandshake, connection: PeerConnection) -> None:
        self._handshake = handshake
        self._connection = connection

    @property
    def address(self) -> PeerAddress:
        """The peer's address (for inbound peers, its ephemeral source port)."""
        return self._handshake.address

    @property
    def peer_id(self) -> PeerId:
        """The peer's id from its handshake."""
        return self._handshake.peer_id

    @property
    def info_hash(self) -> InfoHash:
        """The torrent this connection is for."""
        return self._handshake.info_hash

    @property
    def swarm_id(self) -> bytes:
        """The 20-byte id the handshake used on the wire: the v1 info-hash, or the v2 one truncated.

        For a hybrid torrent it tells which swarm the connection is in: one met on the
        truncated v2 hash is a v2 connection (BEP 52), whatever the reserved bits say.
        """
        return self._handshake.swarm_id

    @property
    def direction(self) -> Direction:
        """``"outbound"`` if we dialled, ``"inbound"`` if the peer did."""
        return self._handshake.direction

    @property
    def encryption(self) -> EncryptionMethod:
        """``"rc4"`` (MSE) or ``"plaintext"``."""
        return self._handshake.encryption

    @property
    def transport(self) -> Transport:
        """What carries the connection: ``"tcp"`` or ``"utp"`` (from the handshake)."""
        return self._handshake.transport

    @property
    def extensions(self) -> _Extensions:
        """The reserved bits both sides set (the extensions this connection may use)."""
        return self._handshake.common

    @property
    def connection(self) -> PeerConnection:
        """The protocol state (choking, interest, pieces, requests...): read it, don't drive it.

        A magnet's piece count, once known, goes in through :meth:`PeerManager.set_num_pieces`.
        """
        return self._connection

    @property
    def extended_handshake(self) -> ExtendedHandshake | None:
        """What the peer's BEP 10 extended handshakes said, once one is received: a later
        handshake's fields replace the earlier ones, those it leaves out are kept
        (:attr:`~bip_peer.PeerConnection.their_handshake`)."""
        return self._connection.their_handshake

    def __repr__(self) -> str:
        return f"<Peer {self.address} {self.direction} {self.peer_id.value[:8]!r}>"


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagerEvent:
    """Base class of what :meth:`PeerManager.events` yields."""


@dataclass(frozen=True, slots=True)
class PeerAdded(ManagerEvent):
    """``peer`` was added; its messages follow."""

    peer: Peer


@dataclass(frozen=True, slots=True, init=False)
class MessageReceived(ManagerEvent):
    """``peer`` sent ``message`` (a ``_messages`` or ``_extended`` object; never a keep-alive).

    A :class:`~bip_peer.Piece`'s ``block`` may be a memoryview into the read buffer: copy it
    (``bytes(block)``) or write it out before keeping it.
    """

    peer: Peer
    message: object

    def __init__(self, peer: Peer, message: object) -> None:
        """The event for ``message`` from ``peer``."""
        # Written out: one is made per message received, and the __init__ dataclass generates
        # for a frozen class (object.__setattr__ per field) costs twice as much.
        _set_received_peer(self, peer)
        _set_received_message(self, message)


def _slot_setter(cls: type, name: str) -> Callable[[MessageReceived, object], None]:
    """A slot's setter: the way into a frozen dataclass but object.__setattr__, and faster."""
    setter: Callable[[MessageReceived, object], None] = getattr(cls, name).__set__
    return setter


_new_event: Final = object.__new__
_set_received_peer: Final = _slot_setter(MessageReceived, "peer")
_set_received_message: Final = _slot_setter(MessageReceived, "message")


@dataclass(frozen=True, slots=True)
class PeerRemoved(ManagerEvent):
    """``peer`` is gone: the last event about it.

    Attributes:
        peer: the peer.
        reason: why, one of the ``REASON_*`` constants or the reason given to
            :meth:`PeerManager.remove_peer`.
        error: the exception behind it, if any.
    """

    peer: Peer
    reason: str
    error: BaseException | None = None


# -- per-peer machinery ------------------------------------------------------------------------


class _PeerTask:
    """Everything the manager keeps about one peer."""

    __slots__ = (
        "added_at",
        "announced",
        "connection",
        "control",
        "control_coalesced",
        "control_entries",
        "control_entry",
        "counter",
        "download_quota",
        "drained",
        "error",
        "exempt",
        "held",
        "last_receive",
        "last_send",
        "limit_waits",
        "local",
        "peer",
        "place_given",
        "queue",
        "queue_byte_capacity",
        "queue_capacity",
        "queued_bytes",
        "quota_generation",
        "reading_paused",
        "reason",
        "removed",
        "replies",
        "resumed",
        "scope",
        "sending_since",
        "space",
        "stream",
        "trailing",
        "writer_idle",
        "writer_waiting",
    )

    def __init__(
        self,
        peer: Peer,
        handshake: CompletedHandshake,
        capacity: int,
        now: float,
        rate_window: float,
        *,
        byte_capacity: int,
        local: bool,
        exempt: bool,
    ) -> None:
        self.peer = peer
        self.connection = peer.connection
        self.stream = handshake.stream
        self.trailing = handshake.trailing
        # One entry per message, but control messages, coalesced (_ControlEntry).
        self.queue: deque[Sequence[bytes | bytearray | memoryview]] = deque()
        self.queue_capacity = capacity  # counted without the control entries
        # send waits while queued_bytes, control bytes aside, reaches it (bytes_full)
        self.queue_byte_capacity = byte_capacity
        # Bytes accepted for this peer and not yet written (queued, or in the write under
        # way): kept up to date per message, so queued_bytes() need not walk the queue.
        self.queued_bytes = 0
        # The replies queued for the peer's own messages (rejects) and not known written.
        self.replies = _Unwritten()
        # The control messages (PeerManager.send_control) not known written, the entries of
        # the queue holding them, and the last one made (extended while it is the last).
        self.control = _Unwritten()
        self.control_entries = 0
        # The messages those entries hold beyond one each: queued messages are the queue's
        # entries plus these (PeerStatistics.queued counts messages, not entries).
        self.control_coalesced = 0
        self.control_entry: _ControlEntry | None = None
        self.space = trio.lowlevel.ParkingLot()  # senders waiting for room in the queue
        # Waiting for written bytes (send's byte bound, wait_writable): woken after each write.
        self.drained = trio.lowlevel.ParkingLot()
        self.writer_idle = trio.lowlevel.ParkingLot()  # the writer waiting for messages
        self.writer_waiting = False  # cheaper to test than the parking lot, per message
        self.scope = trio.CancelScope()
        self.counter = TrafficCounter(now=now, window=rate_window)
        self.added_at = now
        self.last_send = now
        self.last_receive = now
        self.sending_since: float | None = None  # when the write in progress began
        self.held = False  # the reader waits for the consumer, for download tokens, or paused
        # The owner paused the reader (pause_reading): it reads nothing until resumed.
        self.reading_paused = False
        self.resumed = trio.lowlevel.ParkingLot()  # the reader waiting for resume_reading
        self.download_quota = 0  # download tokens the reader took and has not read yet
        self.quota_generation = 0  # the download limiter's generation they were taken in
        self.local = local  # on a local network (decided once, from the address)
        self.exempt = exempt  # local, and local peers are not limited now: bypass the limiters
        # The waits for tokens under way of a local peer (its reader's and its writer's),
        # cancelled when it is exempted meanwhile. Only local peers make any.
        self.limit_waits: set[trio.CancelScope] = set()
        self.announced = False
        # Its place in max_peers went to the connection that replaced it (replace_peer):
        # it no longer counts in places_in_use, and frees none when it leaves.
        self.place_given = False
        self.removed = False
        self.reason: str | None = None
        self.error: BaseException | None = None

    def push(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Queue one message's encoded parts and wake the writer."""
        self.queue.append(parts)
        self.queued_bytes += sum(map(len, parts))
        if self.writer_waiting:
            self.writer_waiting = False
            self.writer_idle.unpark_all()

    def push_replies(self, replies: bytes) -> int:
        """Queue the replies the peer's messages earned (rejects); return the reply bytes
        not yet written, these included.

        Replies are queued whatever the queue holds (the connection has answered already),
        so the reader bounds them by this count rather than by waiting for the writer
        (:class:`_Unwritten` keeps it, in spans of the stream however many reads the
        replies come in).
        """
        sent = self.counter.bytes_sent
        start = sent + self.queued_bytes
        self.push([replies])
        return self.replies.add(start, len(replies), sent)

    def messages_full(self) -> bool:
        """Whether the queue holds ``send_queue_size`` messages (control entries aside)."""
        return len(self.queue) - self.control_entries >= self.queue_capacity

    def bytes_full(self) -> bool:
        """Whether ``send_queue_bytes`` bytes are unwritten, control bytes aside: those have
        their own bound (:meth:`control_bound`), so, the peer's replies aside, the queue's
        bytes stay below the two together plus a message each."""
        unwritten = self.queued_bytes - self.control.unwritten(self.counter.bytes_sent)
        return unwritten >= self.queue_byte_capacity

    def control_bound(self) -> int:
        """The control bytes this peer may leave unwritten (:func:`_control_bound`)."""
        return _control_bound(self.connection.num_pieces, self.connection.limits)

    def took(self, entry: Sequence[bytes | bytearray | memoryview]) -> int:
        """Account for the writer taking ``entry`` out of the queue; return the messages
        it holds beyond one (those a control entry joined)."""
        if type(entry) is not _ControlEntry:
            return 0
        self.control_entries -= 1
        joined = entry.messages - 1
        self.control_coalesced -= joined
        return joined

    def push_control(self, parts: list[bytes | memoryview]) -> None:
        """Queue a control message's parts past the message and byte capacities, coalesced
        into the last entry when that is a control entry with room (:class:`_ControlEntry`)."""
        sent = self.counter.bytes_sent
        start = sent + self.queued_bytes
        size = sum(map(len, parts))
        entry = self.control_entry
        queue = self.queue
        if entry is not None and queue and queue[-1] is entry and len(entry[0]) < _CONTROL_CHUNK:
            # Not the writer's yet (it takes entries out of the queue before writing them),
            # and the writer is busy: it only waits for an empty queue.
            buffer = entry[0]
            for part in parts:
                buffer += part
            entry.messages += 1
            self.control_coalesced += 1
            self.queued_bytes += size
        else:
            entry = _ControlEntry(bytearray().join(parts))
            self.control_entry = entry
            self.control_entries += 1
            self.push(entry)
        self.control.add(start, size, sent)

    def fail(self, reason: str, error: BaseException | None) -> None:
        """Remove the peer for ``reason`` (the first reason given wins).

        From now on the peer counts as removed: nothing more is queued for it, and
        waiting senders are woken (to raise), even before its tasks have finished.
        """
        if self.reason is None:
            self.reason = reason
            self.error = error
        self.removed = True
        self.space.unpark_all()
        self.drained.unpark_all()
        self.scope.cancel()


def _payload_size(message: object) -> int:
    """The payload bytes an event's ``message`` holds, as the event queue counts them: those
    of the messages that may carry up to ``max_message_length``, 0 for the others."""
    size = _PAYLOAD_SIZES.get(type(message))
    return 0 if size is None else size(message)


_PEX_ADDRESS_COST: Final = 180
"""Bytes a decoded ``ut_pex`` address holds, as the event queue counts it: a
:class:`~bip_handshake.PeerAddress` and its ip object, measured (tracemalloc, CPython 3.11)
at 153 bytes for IPv4 and 177 for IPv6. A flag byte is an int slot of a tuple (8 bytes)."""
_HANDSHAKE_COST: Final = 768
"""Bytes a decoded extended handshake holds before its ``m`` and ``extra`` entries (some 740
measured for one with a single ``m`` entry)."""
_HANDSHAKE_FIELD_COST: Final = 160
"""Bytes per ``m`` or ``extra`` entry of a decoded extended handshake: a name of up to 64
characters, its value and the dictionary slot (some 145 measured at the decoder's limits)."""


def _pex_size(message: PexMessage) -> int:
    addresses = (
        len(message.added) + len(message.added6) + len(message.dropped) + len(message.dropped6)
    )
    return addresses * _PEX_ADDRESS_COST + 8 * (
        len(message.added_flags) + len(message.added6_flags)
    )


def _handshake_size(message: ExtendedHandshake) -> int:
    fields = len(message.m) + len(message.extra)
    return _HANDSHAKE_COST + fields * _HANDSHAKE_FIELD_COST + len(message.v or "")


_PAYLOAD_SIZES: Final[dict[type, Callable[[object], int]]] = {
    Bitfield: lambda message: len(message.bits),  # type: ignore[attr-defined]
    Hashes: lambda message: len(message.hashes),  # type: ignore[attr-defined]
    UnknownMessage: lambda message: len(message.payload),  # type: ignore[attr-defined]
    UnknownExtended: lambda message: len(message.payload),  # type: ignore[attr-defined]
    MetadataData: lambda message: len(message.data),  # type: ignore[attr-defined]
    PexMessage: _pex_size,  # type: ignore[dict-item]
    ExtendedHandshake: _handshake_size,  # type: ignore[dict-item]
}
"""The messages the event queue counts the bytes of, and how (subclasses of the messages
are not counted: the decoder makes none). Those decoded into objects count what the objects
hold, estimated: a ``ut_pex`` message no service consumed holds some 0.7 MB at the
decoder's limits (4,000 addresses) for 50 KB of payload, an extended handshake some 24 KB."""


class _EventQueue:
    """The manager's bounded event queue, and the async iterator of :meth:`PeerManager.events`.

    A deque with two parking lots rather than a trio memory channel: the readers put and the
    consumer takes without a trip through the scheduler while there is room (or there are
    events), which is most of the time at full speed; they park only when full (or empty).

    Bounded in events and in payload bytes (``_payload_size`` of each message): a producer
    waits while either is reached (one whose message carries no payload, for room in events
    only), so the bytes queued stay under the bound plus one message's payload. A producer
    only parks while events are queued, and each one taken wakes a producer (who wakes the
    next while there is room), so none is left waiting on an empty queue.
    """

    __slots__ = (
        "_byte_capacity",
        "_bytes",
        "_capacity",
        "_closed",
        "_consumer_waiting",
        "_consumers",
        "_items",
        "_producers",
        "_producers_waiting",
    )

    def __init__(self, capacity: int, byte_capacity: int) -> None:
        self._items: deque[ManagerEvent] = deque()
        self._capacity = capacity
        self._byte_capacity = byte_capacity
        self._bytes = 0  # the payload bytes of the queued events
        self._consumers = trio.lowlevel.ParkingLot()
        self._producers = trio.lowlevel.ParkingLot()
        # Plain counters mirror the parking lots: tested per event, they cost less.
        self._consumer_waiting = False
        self._producers_waiting = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def _full(self, size: int) -> bool:
        """No room for an event of ``size`` payload bytes (one without any waits for room
        in events only)."""
        return len(self._items) >= self._capacity or (
            size > 0 and self._bytes >= self._byte_capacity
        )

    async def put(self, event: ManagerEvent, size: int = 0) -> None:
        """Add ``event``, whose message holds ``size`` payload bytes, waiting while the queue
        is full (dropped once closed)."""
        while self._full(size) and not self._closed:
            self._producers_waiting += 1
            try:
                await self._producers.park()
            except BaseException:
                # Cancelled (its peer removed), maybe after a wake-up meant for it: the room
                # goes to the next producer instead.
                if not self._full(1):
                    self._producers.unpark()
                raise
            finally:
                self._producers_waiting -= 1
        if self._closed:
            return
        self._items.append(event)
        self._bytes += size
        if self._consumer_waiting:
            self._consumer_waiting = False
            self._consumers.unpark()
        if self._producers_waiting and not self._full(1):
            self._producers.unpark()  # a big event taken may leave room for several

    def put_sized_nowait(self, event: ManagerEvent, size: int) -> bool:
        """Add ``event`` (``size`` payload bytes) if the byte bound has room; the caller
        has counted the room in events. The consumer is not woken (``wake_consumer``)."""
        if self._bytes >= self._byte_capacity:
            return False
        self._items.append(event)
        self._bytes += size
        return True

    def announce(self, event: ManagerEvent) -> None:
        """Add a peer's :class:`PeerAdded` whatever the queue holds (bounded by
        ``max_peers``: see :meth:`PeerManager.add_peer`); dropped once closed."""
        if self._closed:
            return
        self._items.append(event)
        if self._consumer_waiting:
            self._consumer_waiting = False
            self._consumers.unpark()

    def wake_consumer(self) -> None:
        """Wake the consumer if it waits and there are events (after appending to ``_items``)."""
        if self._consumer_waiting and self._items:
            self._consumer_waiting = False
            self._consumers.unpark()

    def close(self) -> None:
        """No more events: the consumer gets what is buffered, then the iteration ends."""
        self._closed = True
        self._consumers.unpark_all()
        self._producers.unpark_all()

    def __aiter__(self) -> _EventQueue:
        return self

    async def __anext__(self) -> ManagerEvent:
        items = self._items
        while not items:
            if self._closed:
                raise StopAsyncIteration
            self._consumer_waiting = True
            await self._consumers.park()
        event = items.popleft()
        if self._bytes and type(event) is MessageReceived:
            self._bytes -= _payload_size(event.message)
        if self._producers_waiting:
            self._producers.unpark()
        return event


# -- the manager -------------------------------------------------------------------------------


class PeerManager:
    """Runs peer wire connections: create it with :func:`open_peer_manager`."""

    def __init__(self, nursery: trio.Nursery, config: PeerManagerConfig) -> None:
        self._nursery = nursery
        self._config = config
        declared = [_declared_types(service) for service in config.services]
        self._services: list[PeerService] = list(config.services)
        # Each service's message_types (None: it declares none, and is asked about all).
        self._declared: list[tuple[type, ...] | None] = declared
        # The services asked about a message, by its class, in the services' order: filled
        # as classes arrive (a bounded set: those the connection decodes), emptied when the
        # services change. A block finds none there, and costs no call.
        self._takers: dict[type, tuple[PeerService, ...]] = {}
        self._peers: dict[Peer, _PeerTask] = {}
        self._events = _EventQueue(config.event_buffer, config.event_buffer_bytes)
        # Peers removed (no longer in _peers) whose PeerRemoved is not queued yet: they keep
        # their place in max_peers, which bounds the PeerAdded events add_peer queues past
        # event_buffer (replace_peer may take one's place).
        self._leaving: dict[Peer, _PeerTask] = {}
        # The peers of _peers and _leaving whose place went to a replacing connection.
        self._given = 0
        self._closed = False
        now = trio.current_time()
        self._counter = TrafficCounter(now=now, window=config.rate_window)
        self._peers_added = 0
        self._peers_removed = 0
        self._rejected_full = 0
        # Peers per (host, torrent), for max_peers_per_host; an entry goes when it reaches 0.
        self._per_host: Counter[tuple[object, InfoHash]] = Counter()
        self._internal_errors = 0  # peers dropped by a bug: how many ERROR records to write
        self._removed_reasons: Counter[str] = Counter()
        self._upload_limiter = BandwidthLimiter(config.upload_rate_limit)
        self._download_limiter = BandwidthLimiter(config.download_rate_limit)
        self._limit_local = config.limit_local_peers

    # -- public API ----------------------------------------------------------------------------

    @property
    def config(self) -> PeerManagerConfig:
        """The configuration the manager runs with."""
        return self._config

    @property
    def rate_limits(self) -> tuple[float | None, float | None]:
        """The upload and download limits now, in bytes per second (``None``: unlimited).

        :attr:`config` keeps the limits the manager started with; these follow
        :meth:`set_rate_limits`.
        """
        return self._upload_limiter.rate, self._download_limiter.rate

    @property
    def limit_local_peers(self) -> bool:
        """Whether peers on local networks are held to the rate limits now.

        :attr:`config` keeps the setting the manager started with; this follows
        :meth:`set_rate_limits`.
        """
        return self._limit_local

    def set_rate_limits(
        self,
        *,
        upload: float | _Keep | None = _KEEP,
        download: float | _Keep | None = _KEEP,
        limit_local_peers: bool | _Keep = _KEEP,
    ) -> None:
        """Change the upload and/or download limit (bytes per second, all peers together).

        ``None`` or ``0`` lifts a limit; a limit left out stays as it is. The new rate
        applies at once: to writers and readers waiting for tokens, and to tokens a reader
        holds (given back). A limit lifted releases every waiter.

        ``limit_local_peers`` switches whether peers on local networks are held to the
        limits (:attr:`PeerManagerConfig.limit_local_peers`). Exempted, the local peers
        waiting for tokens go at once and give back the download tokens they hold; limited
        again, they ask for tokens from their next read and write on.

        >>> manager.set_rate_limits(upload=50_000)  # doctest: +SKIP
        >>> manager.set_rate_limits(download=None)  # doctest: +SKIP
        >>> manager.set_rate_limits(limit_local_peers=True)  # doctest: +SKIP

        Raises:
            TypeError: a limit is not a number (or is a bool); ``limit_local_peers`` is
                not a bool.
            ValueError: a limit is negative, NaN or infinite. Nothing is changed then,
                not even the other settings.
        """
        new_upload = new_download = None
        if not isinstance(upload, _Keep):
            new_upload = check_rate(upload, "upload")
        if not isinstance(download, _Keep):
            new_download = check_rate(download, "download")
        if not isinstance(limit_local_peers, _Keep):
            _check_flag(limit_local_peers, "limit_local_peers")
        if not isinstance(upload, _Keep):
            self._upload_limiter.set_rate(new_upload)
        if not isinstance(download, _Keep):
            self._download_limiter.set_rate(new_download)
        if not isinstance(limit_local_peers, _Keep) and limit_local_peers != self._limit_local:
            self._limit_local = limit_local_peers
            for task in self._peers.values():
                if task.local:
                    self._set_exempt(task, not limit_local_peers)

    @property
    def peers(self) -> frozenset[Peer]:
        """The peers connected now."""
        return frozenset(self._peers)

    @property
    def places_in_use(self) -> int:
        """The places of ``max_peers`` in use, in O(1): what :meth:`add_peer` refuses by.

        Each peer connected holds one, and so does each peer removed until its
        :class:`PeerRemoved` is queued (see :meth:`add_peer`), whereas :attr:`peers`
        forgets it at once; a peer whose place went to the connection that replaced it
        (:meth:`replace_peer`) holds none. A client that dials while under ``max_peers``
        counts these, not :attr:`peers`: a dial for a place still held by a peer leaving
        ends in :class:`PeerManagerFullError`, a wasted connection.
        """
        return len(self._peers) + len(self._leaving) - self._given

    @property
    def services(self) -> tuple[PeerService, ...]:
        """The services running on every connection."""
        return tuple(self._services)

    def add_service(self, service: PeerService) -> None:
        """Run ``service`` on every connection from now on (peers connected already are
        announced to it through :meth:`PeerService.peer_added`).

        Raises:
            TypeError: its ``message_types`` is not a tuple of classes (it is not added).
        """
        declared = _declared_types(service)
        self._services.append(service)
        self._declared.append(declared)
        self._takers.clear()  # rebuilt as messages arrive
        for peer in list(self._peers):
            service.peer_added(self, peer)

    def add_peer(
        self,
        handshake: CompletedHandshake,
        *,
        num_pieces: int | None = None,
    ) -> Peer:
        """Take over a connection whose handshake is complete; returns its handle.

        The manager owns the stream from now on and closes it when the peer is removed.
        When both sides set the BEP 10 bit, our extended handshake is queued as the first
        message. :class:`PeerAdded` is queued here, before any message of the peer, even
        when the event queue is full (``event_buffer``): every peer this returns gets its
        :class:`PeerAdded` and, once removed, its :class:`PeerRemoved` (unless the manager
        closes first). A removed peer counts against ``max_peers`` until its
        :class:`PeerRemoved` is queued (:attr:`places_in_use`), which bounds what a consumer
        that does not read the events can be sent past ``event_buffer``.

        Services hear of the peer (:meth:`PeerService.peer_added`) before its
        :class:`PeerAdded` is queued. One that raises fails the add: the exception reaches
        the caller, who gets no handle, and no event about the peer is queued (neither
        :class:`PeerAdded` nor :class:`PeerRemoved`); the manager, which owns the stream,
        closes it, and every service hears :meth:`PeerService.peer_removed`.

        Args:
            handshake: the completed handshake with its open stream.
            num_pieces: the torrent's piece count, if known (``None`` for a magnet link
                whose metadata is still missing).

        Raises:
            PeerManagerFullError: ``max_peers`` places are in use (:attr:`places_in_use`:
                peers connected, or removed with their :class:`PeerRemoved` not queued yet),
                or ``max_peers_per_host`` of this torrent's peers are from the handshake's
                host (the caller still owns the stream).
            trio.ClosedResourceError: the manager is closed (the caller still owns the
                stream).
            Exception: whatever a service's :meth:`PeerService.handshake_fields` raised
                (the caller still owns the stream) or its :meth:`PeerService.peer_added`
                raised (the manager closes the stream; see above).
        """
        return self._add(handshake, num_pieces, None, "")

    def replace_peer(
        self,
        old: Peer,
        handshake: CompletedHandshake,
        *,
        reason: str = REASON_REPLACED,
        num_pieces: int | None = None,
    ) -> Peer:
        """Take over ``handshake``'s connection in place of ``old``, which is removed with
        ``reason``; returns the new handle.

        For a client that settles a duplicate connection (two connections to one peer, of
        which both sides keep the same one): :meth:`remove_peer` then :meth:`add_peer` would
        be refused at ``max_peers`` (or at ``max_peers_per_host`` for the old peer's host),
        since ``old`` holds its place until its :class:`PeerRemoved` is queued, and both
        connections would be lost. Here the new peer takes ``old``'s place in both, as
        libtorrent's duplicate rule frees it at once. ``old`` may be removed already (its
        place is taken while it still holds one); its :class:`PeerRemoved` may come after
        the new peer's :class:`PeerAdded`.

        A place is given once (a peer that was replaced has none left to give), and not
        when the new peer's :class:`PeerAdded` would hold the queue more than ``max_peers``
        events past ``event_buffer`` (a consumer that reads nothing while a peer replaces
        its own connections again and again), nor while ``max_peers`` places given are not
        freed yet; then the new peer needs a free place, as in :meth:`add_peer`. Otherwise
        this is :meth:`add_peer`, with its events and errors.

        Raises:
            PeerManagerFullError: no place for the new peer, ``old``'s included (the caller
                still owns the stream, and ``old`` is not removed).
            trio.ClosedResourceError: the manager is closed (likewise).
            Exception: as :meth:`add_peer`; ``old`` is removed only once the new peer is
                added and every :meth:`PeerService.peer_added` has returned.
        """
        return self._add(handshake, num_pieces, old, reason)

    def _add(
        self,
        handshake: CompletedHandshake,
        num_pieces: int | None,
        replacing: Peer | None,
        reason: str,
    ) -> Peer:
        """:meth:`add_peer`, or :meth:`replace_peer` when ``replacing`` is given."""
        if self._closed:
            raise trio.ClosedResourceError("the peer manager is closed")
        # One host however its socket shows it (an IPv4 peer on a dual-stack listener is
        # ::ffff:a.b.c.d).
        host_key = _host_key(handshake.address, handshake.info_hash)
        given = self._place_to_give(replacing)
        if given is None and self.places_in_use >= self._config.max_peers:
            self._rejected_full += 1
            _log.debug(
                "peer %s refused: %d peers connected already, %d leaving",
                handshake.address,
                len(self._peers),
                len(self._leaving),
            )
            raise PeerManagerFullError(
                f"{len(self._peers)} peers connected and {len(self._leaving)} leaving, "
                f"the limit is {self._config.max_peers}"
            )
        per_host = self._config.max_peers_per_host
        from_host = self._per_host[host_key]
        if (
            given is not None
            and given.peer in self._peers  # its host still counts it
            and _host_key(given.peer.address, given.peer.info_hash) == host_key
        ):
            from_host -= 1  # the new peer takes its place there too
        if per_host is not None and from_host >= per_host:
            self._rejected_full += 1
            _log.debug(
                "peer %s refused: %d peers of its torrent from that host already",
                handshake.address,
                per_host,
            )
            raise PeerManagerFullError(
                f"{per_host} peers of this torrent from {handshake.address.host} already"
            )
        limits = self._config.limits if self._config.limits is not None else ConnectionLimits()
        connection = PeerConnection(
            num_pieces=num_pieces,
            info_hash=handshake.info_hash,
            peer_address=handshake.address,
            our_extensions=handshake.our_extensions,
            their_extensions=handshake.extensions,
            limits=limits,
        )
        peer = Peer(handshake, connection)
        now = trio.current_time()
        # Local or not is decided here, once: the limited paths then test a plain attribute.
        local = is_local_address(handshake.address.host)
        task = _PeerTask(
            peer,
            handshake,
            self._config.send_queue_size,
            now,
            self._config.rate_window,
            byte_capacity=(
                _UNBOUNDED
                if self._config.send_queue_bytes is None
                else self._config.send_queue_bytes
            ),
            local=local,
            exempt=local and not self._limit_local,
        )
        if _Extensions.EXTENSION_PROTOCOL in handshake.common:
            task.push(connection.send_parts(self._extended_handshake(peer, limits)))
        self._peers[peer] = task
        self._per_host[host_key] += 1
        self._peers_added += 1
        self._nursery.start_soon(self._run_peer, task, name=f"bip_peer {peer.address}")
        try:
            for service in self._services:
                service.peer_added(self, peer)
        except Exception as exc:
            # The caller gets no handle: no PeerAdded (nor PeerRemoved) for this peer. The
            # manager owns the stream now: the peer's task closes it.
            task.fail(REASON_INTERNAL, exc)
            raise
        if replacing is not None:
            old = self._peers.get(replacing)
            if old is not None:
                old.fail(reason, None)  # the first reason given wins
            if given is not None:
                given.place_given = True
                self._given += 1
        # Queued now, not by the peer's task when the queue has room: the owner holds the
        # handle from now on, and a peer removed before its PeerAdded was queued would
        # never have been announced, nor its removal. (Before any message of the peer:
        # its task has not run yet.)
        self._events.announce(PeerAdded(peer))
        task.announced = True
        _log.debug(
            "peer %s added: %s, %s, torrent %s, peer id %s%s",
            peer.address,
            peer.direction,
            peer.encryption,
            peer.info_hash,
            peer.peer_id,
            "" if replacing is None else f", in place of {replacing.address}",
        )
        return peer

    def _place_to_give(self, old: Peer | None) -> _PeerTask | None:
        """The task of ``old`` if a peer replacing it may take its place, else ``None``.

        Its place must still be held (connected, or removed with its PeerRemoved not queued
        yet) and not given already. The new peer's PeerAdded is queued whatever the queue
        holds: given only while that keeps the queue within ``max_peers`` events past
        ``event_buffer`` (every PeerAdded past it is some place's, and a place given adds
        one without a place more), and while fewer than ``max_peers`` places given wait to
        be freed (they bound the peers leaving).
        """
        if old is None:
            return None
        task = self._peers.get(old)
        if task is None:
            task = self._leaving.get(old)
        if (
            task is None
            or task.place_given
            or self._given >= self._config.max_peers
            or len(self._events) >= self._config.event_buffer + self.places_in_use
        ):
            return None
        return task

    async def add_peers_from(
        self,
        handshakes: AsyncIterable[CompletedHandshake],
        num_pieces: int | Callable[[CompletedHandshake], int | None] | None = None,
    ) -> None:
        """Add every handshake ``handshakes`` yields, until it ends or the manager closes.

        The accept loop every client needs, in a task of its own:
        ``nursery.start_soon(manager.add_peers_from, handshaker.completed(), num_pieces)``.
        A handshake the manager cannot take (``max_peers`` connected, or the manager closed)
        has its stream closed at once, so nothing waits on it; one handshake is handled at a
        time, so the source's own bound (the handshaker's queue) is the only buffer.

        Args:
            handshakes: completed handshakes, such as
                :meth:`Handshaker.completed <bip_handshake.Handshaker.completed>`.
            num_pieces: the torrent's piece count; ``None`` for a magnet link whose metadata
                is missing (then :meth:`set_num_pieces` later), or a function of the
                handshake, asked for each one: a client serving several torrents, or a magnet
                whose count becomes known meanwhile.

        Raises:
            Exception: what ``num_pieces`` raised, or a service's hook (as :meth:`add_peer`
                does; the handshake's stream is closed first if the manager does not own it).
        """
        async for handshake in handshakes:
            try:
                count = num_pieces(handshake) if callable(num_pieces) else num_pieces
                self.add_peer(handshake, num_pieces=count)
            except PeerManagerFullError:
                await _close_stream(handshake)
            except trio.ClosedResourceError:
                await _close_stream(handshake)
                return
            except BaseException:
                if not any(task.stream is handshake.stream for task in self._peers.values()):
                    await _close_stream(handshake)  # refused before the manager took it
                raise

    async def send(self, peer: Peer, message: Message | object) -> None:
        """Queue ``message`` for ``peer``, waiting while its send queue is full (it holds
        ``send_queue_size`` messages, or ``send_queue_bytes`` bytes not yet written).

        The protocol state is updated (and checked) when the message is queued; it goes
        out in order with everything queued before. A send that finds room returns at
        once, like :meth:`send_nowait`, without a trip through the scheduler (this is the
        per-block hot path); it is a checkpoint only when it has to wait.

        Raises:
            StaleSendError: the message was overtaken by one the peer sent, which the
                connection has read and the events may not have shown yet (a cancel for a
                block that arrived, a request meeting a choke): nothing was sent, nothing
                is wrong.
            LocalProtocolError: the protocol forbids sending it now.
            PeerClosedError: the peer was removed (before or while waiting).
        """
        task = self._peers.get(peer)
        if task is None or task.removed:
            await trio.lowlevel.checkpoint()
            raise PeerClosedError(f"{peer!r} was removed")
        queue = task.queue
        while task.messages_full() or task.bytes_full():
            # Messages leave the queue before their write; bytes count until it completes.
            await (task.space if task.messages_full() else task.drained).park()
            if task.removed:
                raise PeerClosedError(f"{peer!r} was removed")
        try:
            parts = task.connection.send_parts(message)  # type: ignore[arg-type]
        except RemoteProtocolError as exc:  # the peer failed; its removal is under way
            raise PeerClosedError(f"{peer!r} is being removed") from exc
        queue.append(parts)  # task.push, inlined: this runs once per block
        task.queued_bytes += sum(map(len, parts))
        if task.writer_waiting:
            task.writer_waiting = False
            task.writer_idle.unpark_all()

    def send_nowait(self, peer: Peer, message: Message | object) -> bool:
        """Queue ``message`` for ``peer`` if its send queue has room.

        Returns ``False`` (and drops the message, leaving the state untouched) when the
        queue is full (in messages or in bytes, as :meth:`send` waits) or the peer was
        removed.

        A client whose decisions lag the connection (the events are a queue: the connection
        has read messages its owner has not seen yet) catches :class:`StaleSendError`, and
        only that: every other :class:`LocalProtocolError` is a bug of its own.

        Raises:
            StaleSendError: the message was overtaken by one the peer sent (a cancel for a
                block that arrived, a request meeting a choke): nothing was queued.
            LocalProtocolError: the protocol forbids sending it now.
        """
        task = self._peers.get(peer)
        if task is None or task.removed or task.messages_full() or task.bytes_full():
            return False
        return _queue(task, message, task.push)

    def send_control(self, peer: Peer, message: Message | object) -> bool:
        """Queue a small control message for ``peer`` whatever its send queue holds, unless
        the peer left too many of them unwritten.

        Control messages: :class:`~bip_peer.Choke`, :class:`~bip_peer.Unchoke`,
        :class:`~bip_peer.Interested`, :class:`~bip_peer.NotInterested`,
        :class:`~bip_peer.Have`, :class:`~bip_peer.HaveAll`, :class:`~bip_peer.HaveNone`,
        :class:`~bip_peer.Suggest`, :class:`~bip_peer.AllowedFast`,
        :class:`~bip_peer.RejectRequest`, :class:`~bip_peer.Port`,
        :class:`~bip_peer.DontHave` and :class:`~bip_peer.UploadOnly`.

        These messages are bounded in number by the protocol, not by how fast the peer
        reads: a have per piece we get (BEP 3 tells every peer of each), a reject per
        request (BEP 6 answers every request), a choke, an unchoke or an interest per change
        of state. A slow but honest peer may leave many of them unwritten behind a block
        (while we download fast, a have per piece piles up behind each block it takes
        seconds to read), so they do not count in ``send_queue_size`` nor in
        ``send_queue_bytes`` (:meth:`send` does not wait for them, nor does
        :meth:`send_nowait` refuse because of them; :meth:`queued_bytes` does count them):
        libtorrent does not disconnect a peer for small messages waiting either. They have
        a bound of their own per peer: 9 bytes per piece of the torrent, four ``reqq`` of
        rejects and 64 KiB (108,536 bytes for 1,000 pieces and the default ``reqq``), which
        an honest peer never reaches, plus one message (a choke with the rejects it owes);
        so a peer's queue holds at most that bound plus ``send_queue_bytes`` (and the
        replies its own messages earn). Control messages queued one after the other are
        joined into one entry of up to 4 KiB, about their wire size in memory; one between
        other messages makes an entry of its own (some 150 bytes), so there are never more
        such entries than other messages queued plus one. Each still counts in
        :attr:`PeerStatistics.messages_sent <bip_peer.PeerStatistics.messages_sent>`. The
        peer that stops reading altogether is still dropped by the send timeout
        (``idle_timeout``).

        Returns ``False`` (and drops the message, leaving the state untouched) when the peer
        was removed or has as many control bytes unwritten as its bound: it has stopped
        reading (the caller drops it).

        Raises:
            TypeError: ``message`` is not a control message (nothing queued).
            StaleSendError: the message was overtaken by one the peer sent (a reject for a
                request the peer cancelled): nothing was queued.
            LocalProtocolError: the protocol forbids sending it now.
        """
        if type(message) not in _CONTROL_MESSAGES:
            raise TypeError(f"not a control message: {message!r}")
        task = self._peers.get(peer)
        if (
            task is None
            or task.removed
            or task.control.unwritten(task.counter.bytes_sent) >= task.control_bound()
        ):
            return False
        return _queue(task, message, task.push_control)

    def set_num_pieces(self, peer: Peer, num_pieces: int) -> bool:
        """Tell ``peer``'s connection the torrent's piece count, once a magnet's metadata is in.

        A peer added with ``num_pieces=None`` has its bitfield, have all and haves kept until
        now; they are checked here (see :attr:`PeerConnection.num_pieces`). A peer whose
        pieces do not fit the count broke the protocol: it is removed with
        :data:`REASON_PROTOCOL` and the error, as if the error had come from its reader.
        Setting the count a connection already has does nothing.

        Returns:
            Whether the peer is still connected, with the count set (``False`` if it was
            removed, now or before).

        Raises:
            TypeError: ``num_pieces`` is not an int.
            ValueError: ``num_pieces`` is not a uint32, or the connection already has
                another count (nothing is changed).
        """
        task = self._peers.get(peer)
        if task is None or task.removed:
            return False
        try:
            task.connection.num_pieces = num_pieces
        except RemoteProtocolError as exc:
            task.fail(REASON_PROTOCOL, exc)
            return False
        return True

    def queued_bytes(self, peer: Peer) -> int:
        """Bytes queued for ``peer`` and not yet written to its stream, in O(1).

        The message being written counts until its write completes, like libtorrent's
        send buffer; it is the cheap way to bound what is queued per peer (the
        :meth:`statistics` snapshot copies every peer's counters). 0 for a peer that is
        gone.
        """
        task = self._peers.get(peer)
        return 0 if task is None or task.removed else task.queued_bytes

    def is_connected(self, peer: Peer) -> bool:
        """Whether ``peer`` is still connected (not removed, nor being removed), in O(1).

        :attr:`peers` answers too, but builds a set of every peer.
        """
        task = self._peers.get(peer)
        return task is not None and not task.removed

    async def wait_writable(self, peer: Peer, limit: int) -> None:
        """Wait until fewer than ``limit`` bytes are queued for ``peer`` (see :meth:`queued_bytes`).

        A sender that keeps a peer's queue near a watermark (libtorrent's
        ``send_buffer_watermark``: read the next block only below it) waits here instead of
        holding a block in a full queue. Woken as writes complete; always a checkpoint.

        Raises:
            ValueError: ``limit`` is not a positive int.
            PeerClosedError: the peer was removed (before or while waiting).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, not {limit!r}")
        task = self._peers.get(peer)
        if task is None or task.removed:
            await trio.lowlevel.checkpoint()
            raise PeerClosedError(f"{peer!r} was removed")
        if task.queued_bytes < limit:
            await trio.lowlevel.checkpoint()
            return
        while task.queued_bytes >= limit:
            await task.drained.park()
            if task.removed:
                raise PeerClosedError(f"{peer!r} was removed")

    def pause_reading(self, peer: Peer) -> None:
        """Stop reading from ``peer`` until :meth:`resume_reading`, without waiting.

        Its reader finishes the read under way (the messages of at most one
        ``receive_size`` read still become events) and then reads nothing: unread bytes
        stay in the kernel and the transport's window slows the peer, as libtorrent stops
        reading a peer while its disk queue is over the limit. Writing to the peer goes on
        (keep-alives included), and a paused peer is not idle (``idle_timeout``). Does
        nothing for a peer that is gone, or paused already.
        """
        task = self._peers.get(peer)
        if task is not None and not task.removed:
            task.reading_paused = True

    def resume_reading(self, peer: Peer) -> None:
        """Read from ``peer`` again after :meth:`pause_reading`, without waiting. Does
        nothing for a peer that is gone or was not paused."""
        task = self._peers.get(peer)
        if task is not None and task.reading_paused:
            task.reading_paused = False
            task.resumed.unpark_all()

    def is_reading_paused(self, peer: Peer) -> bool:
        """Whether :meth:`pause_reading` paused ``peer``'s reader (``False`` once it is gone)."""
        task = self._peers.get(peer)
        return task is not None and not task.removed and task.reading_paused

    def remove_peer(self, peer: Peer, reason: str) -> None:
        """Close the connection to ``peer``; :class:`PeerRemoved` carries ``reason``.

        Does nothing if the peer is already gone.
        """
        task = self._peers.get(peer)
        if task is not None:
            task.fail(reason, None)

    def events(self) -> AsyncIterator[ManagerEvent]:
        """The manager's one event stream: iterate it in one task, and keep up.

        Events are buffered up to ``event_buffer``; beyond that the readers wait (and,
        through TCP flow control, the peers). The iteration ends when the manager closes.
        """
        return self._events

    def statistics(self) -> ManagerStatistics:
        """A snapshot of the counters, overall and per connected peer."""
        now = trio.current_time()
        peers = {
            peer: PeerStatistics(
                bytes_sent=task.counter.bytes_sent,
                bytes_received=task.counter.bytes_received,
                messages_sent=task.counter.messages_sent,
                messages_received=task.counter.messages_received,
                send_rate=task.counter.send_rate(now),
                receive_rate=task.counter.receive_rate(now),
                queued=len(task.queue) + task.control_coalesced,
                connected_for=now - task.added_at,
                idle_for=now - task.last_receive,
            )
            for peer, task in self._peers.items()
        }
        counter = self._counter
        return ManagerStatistics(
            bytes_sent=counter.bytes_sent,
            bytes_received=counter.bytes_received,
            messages_sent=counter.messages_sent,
            messages_received=counter.messages_received,
            send_rate=counter.send_rate(now),
            receive_rate=counter.receive_rate(now),
            peers_added=self._peers_added,
            peers_removed=self._peers_removed,
            rejected_full=self._rejected_full,
            removed_reasons=dict(self._removed_reasons),
            peers=peers,
            upload_limiter=self._upload_limiter.statistics(),
            download_limiter=self._download_limiter.statistics(),
        )

    # -- internals -----------------------------------------------------------------------------

    def _extended_handshake(self, peer: Peer, limits: ConnectionLimits) -> ExtendedHandshake:
        """Our BEP 10 handshake to ``peer``: config fields, then each service's."""
        config = self._config
        m: dict[str, int] = dict(config.extension_ids)
        fields: dict[str, object] = {
            "v": config.client_version,
            "p": config.listen_port,
            "reqq": limits.max_peer_requests,
            "yourip": peer.address.host.packed,
        }
        extra: dict[bytes, object] = {}
        for service in self._services:
            for key, value in service.handshake_fields(peer).items():
                if key == "m":
                    if not isinstance(value, Mapping):
                        raise TypeError(f"a service's 'm' must be a mapping, not {value!r}")
                    m.update(value)
                elif key in _HANDSHAKE_FIELDS:
                    fields[key] = value
                else:
                    extra[key.encode()] = value
        return ExtendedHandshake(m=m, extra=extra, **fields)  # type: ignore[arg-type]

    async def _emit(self, event: ManagerEvent) -> None:
        await self._events.put(event)

    def _set_exempt(self, task: _PeerTask, exempt: bool) -> None:
        """Exempt a local peer from the limits, or hold it to them again."""
        task.exempt = exempt
        if exempt:
            self._release_quota(task)
            for scope in task.limit_waits:
                scope.cancel()  # the wait takes no token; the task goes on unlimited

    def _release_quota(self, task: _PeerTask) -> None:
        """Give back the download tokens ``task``'s reader holds and has not read."""
        # Whatever the generation they were taken in: tokens taken before a rate change
        # would otherwise go back in the reader's next _download_tokens, but they are
        # zeroed here; zeroed without going back, they would be lost to every peer.
        if task.download_quota > 0:
            self._download_limiter.give_back(task.download_quota)
        task.download_quota = 0

    async def _acquire(self, task: _PeerTask, limiter: BandwidthLimiter, amount: int) -> int:
        """``limiter.acquire(amount)`` for ``task``; 0 if it was exempted while it waited.

        A peer that is not local can never be exempted: it waits as it is, at no extra cost.
        """
        if not task.local:
            return await limiter.acquire(amount)
        granted = 0  # stays 0 if _set_exempt cancels the wait: acquire took nothing then
        with trio.CancelScope() as scope:
            task.limit_waits.add(scope)
            try:
                granted = await limiter.acquire(amount)
            finally:
                task.limit_waits.discard(scope)
        return granted

    async def _run_peer(self, task: _PeerTask) -> None:
        """One peer's life: writer and reader under the peer's cancel scope, then cleanup."""
        try:
            await self._serve_peer(task)
            if task.announced and not self._closed:
                await self._emit(PeerRemoved(task.peer, task.reason or REASON_CLOSING, task.error))
        finally:
            # Its PeerRemoved is queued (or never will be): a free place, unless it was
            # given to the connection that replaced it.
            self._leaving.pop(task.peer, None)
            if task.place_given:
                self._given -= 1

    async def _serve_peer(self, task: _PeerTask) -> None:
        """Run the peer until it is removed, then forget it (it is departing from then on)."""
        try:
            with task.scope:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._write_loop, task)
                        await self._read_loop(task)
                except Exception as exc:  # a bug (ours or a service's): this peer only
                    if isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
                        exc = exc.exceptions[0]
                    task.fail(REASON_INTERNAL, exc)
                    # Nobody else sees the traceback: the PeerRemoved event has only the error.
                    # A bug that fails every peer must not flood the log: the 1st, 2nd, 4th,
                    # 8th... are ERROR records, the others DEBUG (as bip_utracker's server).
                    self._internal_errors += 1
                    count = self._internal_errors
                    _log.log(
                        logging.ERROR if count & (count - 1) == 0 else logging.DEBUG,
                        "peer %s dropped after an internal error (a bug in bip_peer or a service)",
                        task.peer.address,
                        exc_info=exc,
                    )
        finally:
            task.removed = True
            task.space.unpark_all()
            task.drained.unpark_all()
            self._leaving[task.peer] = task  # until its PeerRemoved is queued: see add_peer
            if self._peers.pop(task.peer, None) is not None:
                key = _host_key(task.peer.address, task.peer.info_hash)
                self._per_host[key] -= 1
                if self._per_host[key] <= 0:
                    del self._per_host[key]
            self._release_quota(task)  # tokens never read: others use them
            if task.reason is None:
                task.reason = REASON_CLOSING
            self._peers_removed += 1
            self._removed_reasons[task.reason] += 1
            if task.error is not None:
                _log.debug(
                    "peer %s removed: %s: %s", task.peer.address, task.reason, _describe(task.error)
                )
            else:
                _log.debug("peer %s removed: %s", task.peer.address, task.reason)
            await trio.aclose_forcefully(task.stream)
            for service in self._services:
                service.peer_removed(self, task.peer)

    async def _read_loop(self, task: _PeerTask) -> None:
        """Read, decode, dispatch; returns (after failing the peer) when the peer is done."""
        stream = task.stream
        connection = task.connection
        next_event = connection.next_event
        peer = task.peer
        receive_size = self._config.receive_size
        counter = task.counter
        total = self._counter
        takers = self._takers
        events = self._events
        event_items = events._items
        event_capacity = events._capacity
        sized = _PAYLOAD_SIZES  # the messages whose payload bytes the event queue counts
        download = self._download_limiter
        # The replies the peer's own messages earn (rejects) bypass send's wait; the reader
        # never waits for them either (it would tie the peer's reads to our writes, and two
        # peers doing so wait for each other): a peer leaving more of them unwritten than
        # the queue's byte capacity, or than an honest peer can earn with the reqq we
        # advertise, floods requests it cannot be served.
        reply_bound = _reply_bound(self._config.send_queue_bytes, connection.limits)
        data: bytes | bytearray = task.trailing
        task.trailing = b""
        if data:  # read by the handshaker, but peer wire bytes: count them
            counter.received(len(data), task.added_at)
            total.received(len(data), task.added_at)
        try:
            while True:
                if data:
                    connection.receive_data(data)
                    count = 0
                    # events.put_nowait, inlined for the messages of this read: the room in
                    # the queue is counted down, and a waiting consumer is woken once, before
                    # this task next waits (nothing else runs in between).
                    # Never below 0: add_peer's PeerAdded events may hold the queue past its
                    # bound, and a negative room is true (every message would be taken).
                    room = 0 if events._closed else max(0, event_capacity - len(event_items))
                    try:
                        while (message := next_event()) is not NEED_DATA:
                            count += 1
                            kind = type(message)
                            if kind is KeepAlive:
                                continue  # counted, not surfaced
                            asked = takers.get(kind)
                            if asked is None:
                                asked = self._takers_of(kind)
                            if asked and self._consumed(asked, peer, message):
                                continue
                            # MessageReceived(peer, message), inlined: this runs once per block.
                            event = _new_event(MessageReceived)
                            _set_received_peer(event, peer)
                            _set_received_message(event, message)
                            if kind not in sized:
                                size = 0
                                if room:
                                    event_items.append(event)
                                    room -= 1
                                    continue
                            else:  # a payload of up to max_message_length: the bytes count
                                size = sized[kind](message)
                                if room and events.put_sized_nowait(event, size):
                                    room -= 1
                                    continue
                            # No room (in events, or in bytes): wait for it.
                            events.wake_consumer()
                            # Waiting for our consumer is not the peer being idle.
                            task.held = True
                            await events.put(event, size)
                            task.held = False
                            task.last_receive = trio.current_time()
                            room = (
                                0 if events._closed else max(0, event_capacity - len(event_items))
                            )
                    finally:
                        events.wake_consumer()
                        counter.messages_received += count
                        total.messages_received += count
                    if replies := connection.data_to_send():
                        unwritten = task.push_replies(replies)
                        if unwritten > reply_bound:
                            raise RemoteProtocolError(
                                "the peer floods requests it cannot be served: "
                                f"{unwritten} bytes of rejects unwritten (limit {reply_bound})"
                            )
                if task.reading_paused:
                    await self._wait_resumed(task)
                if download.limited:
                    data = await self._receive_limited(task)
                else:
                    data = await stream.receive_some(receive_size)
                if not data:
                    task.fail(REASON_CLOSED, None)
                    return
                now = trio.current_time()
                task.last_receive = now
                size = len(data)
                counter.received(size, now)
                total.received(size, now)
        except PeerError as exc:
            task.fail(REASON_PROTOCOL, exc)
        except _TRANSPORT_ERRORS as exc:
            task.fail(REASON_TRANSPORT, exc)

    @staticmethod
    async def _wait_resumed(task: _PeerTask) -> None:
        """The reader, paused by its owner, waits for :meth:`resume_reading` (removing the
        peer cancels the wait). Waiting for our owner is not the peer being idle."""
        task.held = True
        try:
            while task.reading_paused:
                await task.resumed.park()
        finally:
            task.held = False
        task.last_receive = trio.current_time()

    async def _receive_limited(self, task: _PeerTask) -> bytes | bytearray:
        """The reader's next read while there is a download limit (an exempt peer's too)."""
        if not task.exempt:
            size = await self._download_tokens(task)
            if size:
                data = await task.stream.receive_some(size)
                self._count_limited_read(task, len(data))
                return data
            # Exempted while it waited: this read and the next go as an unlimited peer's.
        data = await task.stream.receive_some(self._config.receive_size)
        self._download_limiter.count_exempt(len(data))
        return data

    def _count_limited_read(self, task: _PeerTask, size: int) -> None:
        """Pay for ``size`` bytes read on the reader's tokens (a debt if it read more)."""
        if task.exempt:
            # Exempted during the read: its tokens went back to the limiter then, and the
            # bytes went past the limit (a debt now would slow the peer once limited again).
            self._download_limiter.count_exempt(size)
        else:
            task.download_quota -= size

    async def _download_tokens(self, task: _PeerTask) -> int:
        """Download tokens for the reader's next read: how many bytes it may ask for.

        Tops the reader's quota up to what it expects (its outstanding blocks and
        :data:`_READ_FLOOR`), waiting its turn on the limiter if it holds less; returns
        the quota (at least 1, at most ``receive_size``), or 0 if the peer was exempted
        from the limits meanwhile (then it holds no tokens).
        """
        limiter = self._download_limiter
        if task.quota_generation != limiter.generation:
            # Taken at another rate: hand them back so that the new one governs them too
            # (a debt, bytes read beyond the tokens, is still to be paid).
            if task.download_quota > 0:
                limiter.give_back(task.download_quota)
                task.download_quota = 0
            task.quota_generation = limiter.generation
        connection = task.connection
        expected = len(connection.our_requests) + len(connection.cancelled_requests)
        want = min(self._config.receive_size, expected * _PIECE_MESSAGE + _READ_FLOOR)
        if task.download_quota < want:
            # Waiting on our own limit is not the peer being idle (as waiting for events).
            task.held = True
            try:
                # Not ``quota += await ...``: that reads the quota before the wait, and
                # _set_exempt may give it back and zero it meanwhile (it would then be
                # given back twice). The grant is added to the quota as it is after the wait.
                granted = await self._acquire(task, limiter, want - task.download_quota)
                task.download_quota += granted
                # A stream that returned more than it was asked for left a debt: pay it
                # before reading again (receive_some needs a positive size anyway).
                while task.download_quota < 1 and not task.exempt:
                    granted = await self._acquire(task, limiter, 1 - task.download_quota)
                    task.download_quota += granted
            finally:
                task.held = False
            task.last_receive = trio.current_time()
            if task.exempt:  # set by _set_exempt meanwhile, which gave back what it held
                self._release_quota(task)  # and any grant that came in the same instant
                return 0
        return task.download_quota

    def _takers_of(self, kind: type) -> tuple[PeerService, ...]:
        """The services asked about messages of class ``kind``, in order (kept until the
        services change): those that declare it, or a base of it, and those that declare
        nothing."""
        asked = tuple(
            service
            for service, declared in zip(self._services, self._declared, strict=True)
            if declared is None or issubclass(kind, declared)
        )
        self._takers[kind] = asked
        return asked

    def _consumed(self, asked: tuple[PeerService, ...], peer: Peer, message: object) -> bool:
        """Whether one of ``asked`` (the services that take ``message``'s class) took it, the
        first to do so ending the round (then it is not emitted)."""
        return any(service.message_received(self, peer, message) for service in asked)

    async def _write_loop(self, task: _PeerTask) -> None:
        """Write queued messages in batches; returns (after failing the peer) on an error."""
        stream = task.stream
        queue = task.queue
        counter = task.counter
        total = self._counter
        upload = self._upload_limiter
        try:
            while True:
                if not queue:
                    task.writer_waiting = True
                    await task.writer_idle.park()
                    continue
                control_entries = task.control_entries
                first = queue.popleft()
                coalesced = task.took(first)  # the messages of control entries beyond one each
                # An exempt (local) peer batches as an unlimited one, but still goes through
                # _send_limited while there is a limit, to be counted.
                limiter_on = upload.limited
                limited = limiter_on and not task.exempt
                if not queue and len(first) == 1:
                    data: bytes | bytearray | memoryview = first[0]
                    count = 1
                else:
                    # Coalesce: one send_all for many small messages and blocks. Joining
                    # copies each block once, which costs less than a write per block.
                    # The batch is sized by each message's last part: a block, or the
                    # whole of any other message (a choke's trailing rejects are tiny).
                    parts = list(first)
                    size = len(first[-1])
                    count = 1
                    # Limited, a batch is one quantum: one grant, one write, and the
                    # messages after it stay queued (and hold back the senders) meanwhile.
                    batch = (
                        min(upload.quantum or _WRITE_BATCH, _WRITE_BATCH)
                        if limited
                        else _WRITE_BATCH
                    )
                    while queue and size < batch and count < _MAX_BATCH_MESSAGES:
                        message = queue.popleft()
                        coalesced += task.took(message)
                        parts += message
                        size += len(message[-1])
                        count += 1
                    data = b"".join(parts)
                # Room again: let waiting senders refill while this batch is written, one
                # per entry taken that counted (control entries never took any room).
                freed = count - (control_entries - task.control_entries)
                if freed and task.space:
                    task.space.unpark(count=freed)
                if limiter_on:
                    await self._send_limited(task, data)
                else:
                    task.sending_since = trio.current_time()
                    await stream.send_all(data)
                    task.sending_since = None
                    now = trio.current_time()
                    task.last_send = now
                    size = len(data)
                    task.queued_bytes -= size
                    counter.sent(size, now)
                    total.sent(size, now)
                    if task.drained:
                        task.drained.unpark_all()
                counter.messages_sent += count + coalesced
                total.messages_sent += count + coalesced
        except _TRANSPORT_ERRORS as exc:
            task.fail(REASON_TRANSPORT, exc)

    async def _send_limited(self, task: _PeerTask, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` under the upload limit: tokens first, then as much as granted.

        An exempt peer's bytes go without tokens (they are only counted), including the
        rest of ``data`` when the peer is exempted while it waits.
        """
        limiter = self._upload_limiter
        stream = task.stream
        counter = task.counter
        total = self._counter
        size = len(data)
        offset = 0
        while offset < size:
            if task.exempt:
                granted = size - offset
                limiter.count_exempt(granted)
            else:
                granted = await self._acquire(task, limiter, size - offset)
                if not granted:
                    continue  # exempted while it waited: the rest goes unlimited
            # Waiting for tokens is our limit, not the peer: only the write can time out.
            task.sending_since = trio.current_time()
            chunk = data if granted == size else memoryview(data)[offset : offset + granted]
            await stream.send_all(chunk)
            task.sending_since = None
            now = trio.current_time()
            task.last_send = now
            task.queued_bytes -= granted
            counter.sent(granted, now)
            total.sent(granted, now)
            offset += granted
            if task.drained:
                task.drained.unpark_all()

    def _tick(self, now: float) -> None:
        """Housekeeping: keep-alives, idle peers; then the services' ticks."""
        config = self._config
        for task in list(self._peers.values()):
            if task.removed:
                continue
            if not task.held and now - task.last_receive >= config.idle_timeout:
                task.fail(REASON_IDLE, None)
                continue
            if task.sending_since is not None and now - task.sending_since >= config.idle_timeout:
                task.fail(REASON_SEND_TIMEOUT, None)  # the peer stopped reading
                continue
            if not task.queue and now - task.last_send >= config.keepalive_interval:
                task.push(task.connection.send_parts(KeepAlive()))
        for service in list(self._services):
            service.tick(self, now)

    async def _ticker(self) -> None:
        interval = self._config.tick_interval
        while True:
            await trio.sleep(interval)
            self._tick(trio.current_time())

    def _close(self) -> None:
        self._closed = True
        self._events.close()


async def _close_stream(handshake: CompletedHandshake) -> None:
    """Close a handshake's stream the manager did not take; even while being cancelled."""
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(handshake.stream)


def _describe(error: BaseException) -> str:
    """An error as a log line reads it: its message, or its type when it has none."""
    text = str(error)
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    elif not text and error.__cause__ is not None:
        text = str(error.__cause__)
    return text or type(error).__name__


_HANDSHAKE_FIELDS: Final = frozenset(
    {"v", "p", "yourip", "ipv4", "ipv6", "reqq", "metadata_size", "upload_only"}
)


@asynccontextmanager
async def open_peer_manager(
    config: PeerManagerConfig | None = None,
) -> AsyncIterator[PeerManager]:
    """Run a :class:`PeerManager` for the duration of an ``async with`` block.

    >>> async def main(handshaker, num_pieces):  # doctest: +SKIP
    ...     async with open_peer_manager() as manager:
    ...         async with trio.open_nursery() as nursery:
    ...             nursery.start_soon(
    ...                 manager.add_peers_from, handshaker.completed(), num_pieces
    ...             )
    ...             async for event in manager.events():
    ...                 ...

    Leaving the block closes every peer (no :class:`PeerRemoved` events are emitted for
    them then) and ends :meth:`PeerManager.events`.
    """
    config = config if config is not None else PeerManagerConfig()
    manager: PeerManager | None = None
    try:
        async with trio.open_nursery() as nursery:
            manager = PeerManager(nursery, config)
            nursery.start_soon(manager._ticker, name="bip_peer ticker")
            try:
                yield manager
            finally:
                manager._closed = True
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Our tasks raise nothing but bugs; unwrap the body's own exception.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if manager is not None:
            manager._close()
            _log.debug(
                "peer manager closed: %d peers added, %d removed",
                manager._peers_added,
                manager._peers_removed,
            )


def _host_key(address: PeerAddress, info_hash: InfoHash) -> tuple[object, InfoHash]:
    """What ``max_peers_per_host`` counts by: the peer's IP (IPv4 in IPv6 form as IPv4) and
    its torrent."""
    return (address.normalized().host, info_hash)


def _queue(
    task: _PeerTask, message: Message | object, push: Callable[[list[bytes | memoryview]], None]
) -> bool:
    """Encode ``message`` on ``task``'s connection and ``push`` its parts (False: the peer
    failed, its removal under way, nothing queued)."""
    try:
        parts = task.connection.send_parts(message)  # type: ignore[arg-type]
    except RemoteProtocolError:  # the peer failed; its removal is under way
        return False
    push(parts)
    return True
