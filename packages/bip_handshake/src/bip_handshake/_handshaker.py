"""The trio shell around :class:`~bip_handshake.HandshakeConnection`: the :class:`Handshaker`.

A :class:`Handshaker` is the front door of a client. It listens on TCP (IPv4 and
IPv6), takes peer addresses from discovery sources (the DHT, trackers, PEX) through
the small :class:`PeerSink` protocol, dials them with a bound on the number of
handshakes in flight, answers peers that dial us, and hands every completed
handshake to its owner as a :class:`CompletedHandshake` carrying the open stream.

Bounds: dials and inbound handshakes have separate bounds, ``max_concurrent`` (dials
connecting or handshaking: libtorrent's half-open limit, which applies to outgoing
connects only) and ``max_inbound`` (inbound handshakes in progress). Sharing one pool let
the dials starve the inbound side: a PEX message listing dead addresses fills every
slot with connects that each take the whole connect timeout, and honest peers dialling
us meanwhile were refused. A dial over its bound waits in the dial queue (itself
bounded by ``max_queued``) for a slot; an inbound connection over its bound is closed at
once (``over_limit``), since the peer will dial again and holding an idle socket for it
costs a file descriptor. One host (an IPv4 address, an IPv6 /64) may hold at most
``max_inbound_per_host`` of the inbound handshakes in progress (a quarter of
``max_inbound`` by default): a flood of silent connections from one host, each held until
the handshake timeout, would otherwise take every inbound slot and lock honest peers out
for as long as it goes on. When every slot is taken, a new connection takes the slot of the
oldest inbound handshake if that one has run for a quarter of the handshake timeout (it is
closed and counted in ``over_limit``): a flood from many addresses must then renew itself
four times as fast to keep honest peers out.

One host (one IP address) may likewise hold at most ``max_outbound_per_host`` of one
torrent's dials queued or in flight (2 by default, the :class:`~bip_handshake.PeerList`'s
``max_per_host``; libtorrent keeps one connection per IP unless
``allow_multiple_connections_per_ip``): one PEX message or tracker reply naming one host
under thousands of ports would otherwise fill the dial queue with dials to that host, making
us flood a third party and leaving no room for honest peers. The ports over the bound are
dropped (``dropped_per_host``); a source that repeats them gets them dialled once the
host's dials end.

Everything a remote party can do wrong (garbage, a wrong protocol string, an
unknown info-hash, a truncated handshake, a peer that sends one byte a minute)
costs that one connection: it is closed and counted in :meth:`Handshaker.statistics`.

Ownership: a :class:`Handshaker` only exists inside ``async with open_handshaker(...)``;
its tasks live in a nursery that the context manager owns, and leaving the block
cancels them and closes every stream that was not yet delivered. A delivered
:class:`CompletedHandshake`'s stream belongs to the receiver, who must close it.

Deduplication: the handshaker never dials twice the same peer for the same torrent.
A ``(torrent, address)`` pair is taken while a dial to it is queued or in flight and,
once a handshake is delivered (in either direction), until the delivered stream is
closed (:meth:`CompletedHandshake.aclose` or ``stream.aclose()``) or the handshaker
shuts down. Meanwhile the pair is not dialled again (``dropped_duplicate``), and while
a delivered connection of the pair is open, an inbound handshake for it (same address,
same torrent) is refused (``dropped_duplicate`` too). An inbound handshake that arrives
while our dial to its address is only in flight is taken: that is a simultaneous open,
both peers dialling each other at once (uTP peers dial from their listening port, so the
inbound address is the one we dial; a BEP 55 holepunch does it on purpose), and refusing
it on both sides would fail both connections. Both may then be delivered, and the owner
keeps one (by peer id, as libtorrent). TCP peers dial from an ephemeral port, so for
them only an exact address match is caught.

Encryption: an :class:`~bip_handshake.EncryptionPolicy` selects MSE/PE, as libtorrent
does it. Outbound, :meth:`Handshaker._secure` runs the MSE initiator with the swarm id
we dial as SKEY and our BEP 3 handshake as the initial payload; with
``PREFER_ENCRYPTED`` (the default) a peer that closes or garbles the MSE handshake is
dialled once more in plaintext (counted in ``plaintext_fallback``), unless the IP filter
blocks it by then (``filtered_ip``); a redial that cannot connect ends the attempt as the
failed MSE handshake (``mse_failed``): the peer was reachable. Inbound, the first
bytes tell: ``\x13BitTorrent protocol`` is plaintext (refused and counted in
``refused_plaintext`` under ``REQUIRE_ENCRYPTED``), anything else runs the MSE receiver
with the registered swarm ids as SKEYs. With RC4 negotiated the delivered stream is an
:class:`~bip_handshake._mse_stream.MSEStream` that encrypts and decrypts;
:attr:`CompletedHandshake.encryption` says which method was negotiated.

IP filter: ``open_handshaker(ip_filter=...)`` takes an :class:`~bip_handshake.IPFilter` (a
blocklist), as libtorrent's ``session::set_ip_filter``: a blocked address is never queued nor
dialled (however it was discovered), an inbound connection from it is closed before a byte is
read, and :meth:`Handshaker.set_ip_filter` replaces the filter while running (queued dials and
handshakes in flight are judged again before they go on). The owner of delivered connections
closes those a new filter blocks. Each refusal counts in ``filtered_ip``.

Failed dials: ``open_handshaker(on_dial_failed=...)`` is told of every dial that never
connected (refused, unreachable or silent over every transport tried) with a
:class:`DialFailure`, once the address is free to be dialled again. A client uses it as
libtorrent does, to ask a peer that told it about the address for a BEP 55 holepunch.

Listening: every ``listen`` entry whose port is 0 gets the same port (the system picks one
for the first of them, the others bind it; when it is taken on another address, the whole set
is opened again on a new one, a bounded number of times). A client tells peers, trackers and
the DHT one port: listeners on their own ports would send the peers of every address but the
first to a dead port (libtorrent announces one port per listen socket; we announce one, so they
are equal). Explicit ports are bound as given, even when they differ between entries. Entries of
port 0 that overlap fail at once with a :class:`ListenError` before anything is bound: the same
address twice, or an address and the unspecified address of its family (``0.0.0.0`` covers
every IPv4 address, ``::`` every IPv6 one but not IPv4: its socket is IPv6-only), IPv4-mapped
IPv6 addresses counting as the IPv4 address they map. Each on a port of its own would be
told to nobody; on the one port, the system refuses the second of them. The rule is Linux's,
stricter than BSD and macOS allow: there ``SO_REUSEADDR`` (which trio sets on listeners) lets an
address share a port with its family's unspecified address, yet the pair is refused everywhere,
so that one ``listen`` means the same on every system. Only TCP is retried: a
client that binds UDP sockets beside its listeners afterwards and finds the port taken over UDP
has no new try (bip's uTP then logs a warning and that address accepts peers over TCP only)."""

from __future__ import annotations

import errno
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from typing import TYPE_CHECKING, Final, Literal, Protocol, runtime_checkable

import trio

from bip_metainfo import InfoHash

from ._compact import PeerAddress, host_network
from ._errors import HandshakeError, RemoteProtocolError
from ._extensions import Extensions
from ._handshake import (
    DEFAULT_MAX_TRAILING,
    NEED_DATA,
    PAUSED,
    HandshakeComplete,
    HandshakeConnection,
    InfoHashReceived,
)
from ._ip_filter import IPFilter
from ._mse import EncryptionPolicy, MSEEstablished, MSEInitiator, MSEReceiver, SkeyTable
from ._mse_stream import MSEStream
from ._peer_id import PeerId
from ._peer_list import DEFAULT_MAX_PER_HOST
from ._utp_config import UtpError
from ._utp_stream import UtpStream

if TYPE_CHECKING:
    # Only for annotations: _dialers imports _utp_socket, which imports this module.
    from ._dialers import Transport

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MAX_QUEUED",
    "CompletedHandshake",
    "DialFailure",
    "DialFailureCallback",
    "DialFailureReason",
    "Dialer",
    "Direction",
    "EncryptionMethod",
    "HandshakeFilters",
    "Handshaker",
    "HandshakerStatistics",
    "HasTransport",
    "ListenError",
    "PeerSink",
    "open_handshaker",
]

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Seconds a TCP connect may take by default."""
DEFAULT_HANDSHAKE_TIMEOUT: Final = 20.0
"""Seconds the whole handshake exchange may take by default, once connected."""
DEFAULT_MAX_CONCURRENT: Final = 64
"""How many dials may be connecting or handshaking at once by default (the half-open bound)."""
DEFAULT_MAX_QUEUED: Final = 1024
"""How many discovered addresses may wait for a dial by default; more are dropped."""
MAX_SELF_ADDRESSES: Final = 64
"""How many addresses found to be ours (:meth:`Handshaker.is_self_address`) are remembered;
the oldest is forgotten first."""
_RECEIVE_SIZE: Final = 16 * 1024
_PSTR: Final = b"\x13BitTorrent protocol"
_ACCEPT_BACKOFF: Final = 0.1
_ACCEPT_WARN_INTERVAL: Final = 60.0
"""Seconds between two warnings about failing accepts on one listener."""
_SHARED_PORT_ATTEMPTS: Final = 8
"""How many ports the system may pick for the ``listen`` entries of port 0 before we give up:
each try fails only if another program holds the port picked on another of the addresses."""
_ADDRESS_IN_USE: Final = frozenset(
    code
    for code in (getattr(errno, "EADDRINUSE", None), getattr(errno, "WSAEADDRINUSE", None))
    if code is not None
)
_EVICT_SHARE: Final = 0.25
"""An inbound handshake in progress for this share of the handshake timeout may be closed to
make room for a new connection when every inbound slot is taken."""
_log = logging.getLogger("bip_handshake.handshaker")
_RESOURCE_ERRNOS: Final = frozenset(
    code
    for code in (
        getattr(errno, "EMFILE", None),
        getattr(errno, "ENFILE", None),
        getattr(errno, "ENOMEM", None),
        getattr(errno, "ENOBUFS", None),
    )
    if code is not None
)

Direction = Literal["inbound", "outbound"]
"""Who opened the connection: ``"inbound"`` (the peer dialled us) or ``"outbound"`` (we did)."""

Dialer = Callable[[PeerAddress], Awaitable[trio.abc.Stream]]
"""How outbound connections are opened: an address in, a connected stream out.

The default opens a TCP stream; :class:`~bip_handshake.PeerDialer` dials TCP, uTP, or
both with a fallback. Pass another to go through a proxy, or to run many handshakers in
memory (tests, simulations). A dialer fails with an :class:`OSError` (a
:class:`~bip_handshake.UtpConnectError` is one) or a :class:`~bip_handshake.UtpError`:
both count as ``connect_failed``.
"""


class ListenError(HandshakeError):
    """A listening socket could not be opened (the port is taken, the address is absent...).

    The operating system's error is the ``__cause__``.
    """


EncryptionMethod = Literal["rc4", "plaintext"]
"""How a delivered connection is protected."""

DialFailureReason = Literal["connect_failed", "connect_timeout"]
"""Why a dial never connected, named as its :class:`HandshakerStatistics` counter."""


@dataclass(frozen=True, slots=True)
class DialFailure:
    """An outbound dial that never connected (``open_handshaker(on_dial_failed=...)``).

    Only the connect counts: a peer that accepted the connection and then failed the
    handshake (closed it, sent garbage, was too slow) is reachable, and is not reported, even
    when the plaintext redial after its failed MSE handshake cannot connect.

    Attributes:
        torrent: the torrent the dial was for.
        address: the peer's address (normalised), free to be dialled again.
        reason: ``"connect_failed"`` (refused or unreachable over every transport tried,
            a uTP SYN unanswered within the uTP connect timeout included) or
            ``"connect_timeout"`` (the handshaker's ``connect_timeout`` ran out first).
        detail: what the system or the dialer said, for logs (may be empty).
    """

    torrent: InfoHash
    address: PeerAddress
    reason: DialFailureReason
    detail: str = ""


DialFailureCallback = Callable[[DialFailure], None]
"""Told of each failed dial; runs in the handshaker's task, so it must be cheap and never
block (queue work elsewhere). An exception it raises is logged and otherwise ignored."""


@runtime_checkable
class HasTransport(Protocol):
    """A dialled stream that says what carries it (:class:`~bip_handshake.PeerDialer`'s
    streams do): the :class:`Handshaker` copies it to :attr:`CompletedHandshake.transport`."""

    @property
    def transport(self) -> Transport:
        """``"tcp"`` or ``"utp"``."""
        ...


def _transport_of(stream: trio.abc.Stream) -> Transport:
    """What carries a dialled ``stream``: its own word, uTP for a bare :class:`UtpStream`
    (a custom dialer's), TCP otherwise (the default dialer's, or a user's TCP dialer)."""
    if isinstance(stream, HasTransport):
        return "utp" if stream.transport == "utp" else "tcp"
    return "utp" if isinstance(stream, UtpStream) else "tcp"


class PeerSink(Protocol):
    """Where discovery sources (the DHT, trackers, PEX, the user) send the peers they find.

    :class:`Handshaker` implements it; a user may plug in their own (to log, to
    fan out to several handshakers, ...).
    """

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        """Take peers for a torrent; must not block (queue them and return).

        Args:
            info_hash: the torrent, as an :class:`~bip_metainfo.InfoHash` or as the
                20-byte swarm id (or 32-byte v2 hash) the source used.
            addresses: the peers' TCP addresses.
            source: a short name of the source (``"dht"``, ``"tracker"``, ``"pex"``...).
        """
        ...


@dataclass(frozen=True, slots=True)
class HandshakeFilters:
    """Which peers a :class:`Handshaker` talks to; each test runs as early as possible.

    Every callable gets the value and the :data:`Direction` and returns ``True`` to
    allow. ``None`` allows everything.

    - ``address``: before dialling (outbound; already when the address is
      discovered) or right after accepting (inbound), before any byte is read.
    - ``info_hash``: outbound when the address is discovered; inbound as soon as the
      peer's first 48 bytes name a registered torrent, before we answer.
    - ``extensions``: as soon as the peer's reserved bytes arrive (both directions).
    - ``peer_id``: once the peer's handshake is complete.
    - ``inbound`` / ``outbound``: whether connections in that direction are made at all.

    >>> no_v6 = HandshakeFilters(address=lambda address, direction: address.family == 4)
    >>> no_v6.inbound, no_v6.outbound
    (True, True)
    """

    address: Callable[[PeerAddress, Direction], bool] | None = None
    info_hash: Callable[[InfoHash, Direction], bool] | None = None
    peer_id: Callable[[PeerId, Direction], bool] | None = None
    extensions: Callable[[Extensions, Direction], bool] | None = None
    inbound: bool = True
    outbound: bool = True


@dataclass(frozen=True, slots=True)
class CompletedHandshake:
    """A connection whose handshake is done: the peer wire protocol starts here.

    The receiver owns :attr:`stream` and must close it (:meth:`aclose`).

    Attributes:
        stream: the connected stream (the decrypting stream once MSE exists).
        trailing: bytes the peer sent after its handshake, to be read before the stream.
        peer_id: the remote peer id.
        extensions: the remote reserved bytes.
        our_extensions: the reserved bytes we sent (``extensions & our_extensions``
            are the ones the connection may use).
        info_hash: the torrent.
        swarm_id: the 20-byte id used on the wire (v1 or truncated v2 hash).
        address: the peer's address (for inbound ones, its ephemeral source port).
        direction: who opened the connection.
        encryption: how the connection is protected: ``"rc4"`` (MSE negotiated RC4;
            :attr:`stream` encrypts and decrypts) or ``"plaintext"`` (no MSE, or MSE
            that selected plaintext).
        transport: what carries the connection, ``"tcp"`` or ``"utp"`` (the stream
            wrappers hide it; PEX flag 0x04 and status counts need it).
    """

    stream: trio.abc.Stream
    trailing: bytes
    peer_id: PeerId
    extensions: Extensions
    our_extensions: Extensions
    info_hash: InfoHash
    swarm_id: bytes
    address: PeerAddress
    direction: Direction
    encryption: EncryptionMethod = "plaintext"
    transport: Transport = "tcp"

    @property
    def common(self) -> Extensions:
        """The extensions both sides set."""
        return self.extensions & self.our_extensions

    async def aclose(self) -> None:
        """Close the stream."""
        await self.stream.aclose()


@dataclass(frozen=True, slots=True)
class HandshakerStatistics:
    """A snapshot of a :class:`Handshaker`'s counters (:meth:`Handshaker.statistics`).

    Every attempt (a dial started, or an inbound connection past the address and
    direction filters) ends exactly once: delivered (``*_completed``), failed
    (``failures``, plus the counter of its reason), or, for a dial, cancelled by
    :meth:`Handshaker.unregister` (``unregistered`` alone). So ``outbound_attempts +
    inbound_attempts == completed + failures + in_flight`` (give or take handshakes
    waiting in the backlog, and the dials unregister cancelled).

    Attributes:
        discovered: addresses offered through :meth:`Handshaker.discovered` / ``connect``.
        dropped_duplicate: offered while a dial to the same (torrent, address) was pending
            or its connection was open; queued dials whose peer connected to us meanwhile;
            also inbound handshakes refused because a connection of their pair is open
            (those are failures too).
        dropped_queue_full: offered while the dial queue was full.
        dropped_per_host: offered while ``max_outbound_per_host`` dials of the same torrent
            to the same host (IP address, any port) were queued or in flight.
        dropped_unknown_torrent: offered for an info-hash that is not registered.
        dropped_unconnectable: offered with port 0, or an unspecified or multicast host.
        outbound_attempts: dials started.
        inbound_attempts: connections accepted and past the direction, IP and address
            filters.
        outbound_completed: handshakes we dialled that completed and were delivered.
        inbound_completed: handshakes the peer dialled that completed and were delivered.
        connect_failed: dials refused or unreachable (over TCP or uTP: a dialer's
            :class:`OSError` or :class:`~bip_handshake.UtpError`).
        connect_timeout: dials that took longer than the connect timeout.
        handshake_timeout: handshakes that took longer than the handshake timeout.
        protocol_error: peers that sent garbage (wrong protocol string, wrong
            info-hash in an answer, too much data).
        connection_lost: peers that closed or reset the connection mid-handshake.
        unknown_info_hash: inbound handshakes for a torrent that is not registered.
        self_connection: handshakes with our own peer id (a dial's address is remembered
            as ours: :meth:`Handshaker.is_self_address`).
        over_limit: inbound connections closed at once because ``max_inbound`` inbound
            handshakes were in progress, or ``max_inbound_per_host`` from the same host (an
            IPv4 address, an IPv6 /64), and inbound handshakes closed after a quarter of the
            handshake timeout to make room for a new one; dials never count here: they
            have their own bound.
        outbound_waited: dials that reached the head of the dial queue while all the
            ``max_concurrent`` outbound slots were taken, and waited there for one (the
            outbound bound never refuses: they ran once a slot freed, unless dropped
            meanwhile; the dials behind them waited too, and show in ``queued``).
            Inbound handshakes never wait and never take these slots.
        filtered_direction: refused by :attr:`HandshakeFilters.inbound` / ``outbound``.
        filtered_address: refused by :attr:`HandshakeFilters.address`.
        filtered_ip: blocked by the IP filter (:meth:`Handshaker.set_ip_filter`): offered
            addresses not queued, queued dials dropped, inbound connections closed before
            any byte is read (all of them not attempts), and handshakes refused at the end
            or plaintext redials not made because a filter set meanwhile blocks them
            (those are failures).
        filtered_info_hash: refused by :attr:`HandshakeFilters.info_hash`.
        filtered_extensions: refused by :attr:`HandshakeFilters.extensions`.
        filtered_peer_id: refused by :attr:`HandshakeFilters.peer_id`.
        unregistered: dials (queued, or in flight: cancelled by :meth:`Handshaker.unregister`,
            and counted when it runs) and inbound handshakes dropped because their torrent
            was unregistered meanwhile (only the inbound ones are failures).
        accept_errors: transient errors accepting connections (out of file descriptors...).
        encrypted: delivered handshakes protected by RC4 (MSE).
        plaintext_fallback: outbound MSE handshakes that failed (the peer closed or
            garbled them) and were redialled in plaintext (``PREFER_ENCRYPTED``); the
            redial ends like any attempt. Not a failure by itself.
        refused_plaintext: inbound plaintext handshakes refused because encryption is
            required.
        mse_failed: MSE handshakes that failed and ended the attempt (garbage, no
            acceptable method, an outbound peer closing under ``REQUIRE_ENCRYPTED``, or
            under ``PREFER_ENCRYPTED`` one whose plaintext redial could not connect).
            An inbound MSE handshake for a torrent that is not registered counts as
            ``unknown_info_hash``, a peer closing an inbound one as ``connection_lost``,
            and one sent to a ``PLAINTEXT_ONLY`` handshaker as ``protocol_error``.
        failures: attempts that ended without a delivered handshake.
        in_flight: connections connecting or handshaking now, in both directions
            (``outbound_in_flight + inbound_in_flight``).
        outbound_in_flight: dials connecting or handshaking now (at most ``max_concurrent``).
        inbound_in_flight: inbound handshakes in progress now (at most ``max_inbound``).
        queued: addresses waiting for a dial now.
    """

    discovered: int = 0
    dropped_duplicate: int = 0
    dropped_queue_full: int = 0
    dropped_per_host: int = 0
    dropped_unknown_torrent: int = 0
    dropped_unconnectable: int = 0
    outbound_attempts: int = 0
    inbound_attempts: int = 0
    outbound_completed: int = 0
    inbound_completed: int = 0
    connect_failed: int = 0
    connect_timeout: int = 0
    handshake_timeout: int = 0
    protocol_error: int = 0
    connection_lost: int = 0
    unknown_info_hash: int = 0
    self_connection: int = 0
    over_limit: int = 0
    outbound_waited: int = 0
    filtered_direction: int = 0
    filtered_address: int = 0
    filtered_ip: int = 0
    filtered_info_hash: int = 0
    filtered_extensions: int = 0
    filtered_peer_id: int = 0
    unregistered: int = 0
    accept_errors: int = 0
    encrypted: int = 0
    plaintext_fallback: int = 0
    refused_plaintext: int = 0
    mse_failed: int = 0
    failures: int = 0
    in_flight: int = 0
    outbound_in_flight: int = 0
    inbound_in_flight: int = 0
    queued: int = 0

    @property
    def completed(self) -> int:
        """Handshakes completed in both directions."""
        return self.outbound_completed + self.inbound_completed


_GAUGES: Final = frozenset({"in_flight", "outbound_in_flight", "inbound_in_flight", "queued"})
"""The statistics that are current values, not counters."""
_COUNTERS: Final = frozenset(f.name for f in fields(HandshakerStatistics)) - _GAUGES
_DIAL_FAILURES: Final = frozenset({"connect_failed", "connect_timeout"})
"""The failure counters of a dial that never connected (what ``on_dial_failed`` hears of)."""


_REASONS: Final = {
    "dropped_duplicate": "already connected to this peer for this torrent",
    "connect_failed": "connection refused or unreachable",
    "connect_timeout": "connection timed out",
    "handshake_timeout": "handshake timed out",
    "protocol_error": "the peer broke the protocol",
    "connection_lost": "the peer closed the connection",
    "unknown_info_hash": "the peer asked for a torrent we do not serve",
    "self_connection": "connected to ourselves",
    "over_limit": "too many inbound handshakes in progress",
    "filtered_ip": "blocked by the IP filter",
    "filtered_info_hash": "refused by the info-hash filter",
    "filtered_extensions": "refused by the extensions filter",
    "filtered_peer_id": "refused by the peer id filter",
    "unregistered": "the torrent was unregistered meanwhile",
    "refused_plaintext": "plaintext refused, encryption is required",
    "mse_failed": "the encryption handshake (MSE) failed",
}
"""What each failure counter means, for the log."""


class _RefusedError(Exception):
    """A connection ends without a handshake; ``reason`` is the counter to bump.

    ``detail`` says more for the log (the peer's protocol error, the OS error...).
    """

    def __init__(self, reason: str, detail: object = None) -> None:
        assert reason in _COUNTERS, reason
        super().__init__(reason)
        self.reason = reason
        self.detail = detail

    def describe(self) -> str:
        """The reason as a user reads it, with the detail if there is one."""
        text = _REASONS.get(self.reason, self.reason)
        detail = str(self.detail) if self.detail is not None else ""
        return f"{text} ({detail})" if detail else text


class _MSEFailedError(Exception):
    """An outbound MSE handshake failed: the caller may redial in plaintext."""


class _SkeyProbe(SkeyTable):
    """One receiver's view of the handshaker's shared :class:`SkeyTable`; records a miss."""

    def __init__(self, table: SkeyTable) -> None:
        super().__init__()
        self._table = table
        self.missed = False

    def lookup(self, req2_hash: bytes) -> bytes | None:
        skey = self._table.lookup(req2_hash)
        if skey is None:
            self.missed = True
        return skey


def _os_detail(exc: BaseException) -> str | None:
    """What an OS error says (``connection reset by peer``...), for the log; None if nothing."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return None


def _listener_name(listener: trio.SocketListener) -> str:
    """A listener's address as ``host:port``, for the log."""
    try:
        address = _address_of(listener.socket.getsockname())
    except OSError:
        address = None
    return str(address) if address is not None else "a closed socket"


def _address_of(sockaddr: object) -> PeerAddress | None:
    """A :class:`PeerAddress` from a socket address tuple, or None if it is not IP."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return None
    host, port = sockaddr[0], sockaddr[1]
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    try:
        parsed: IPv4Address | IPv6Address = ip_address(host.partition("%")[0])
    except ValueError:
        return None
    return PeerAddress(parsed, port).normalized()


async def _dial_tcp(address: PeerAddress) -> trio.abc.Stream:
    return await trio.open_tcp_stream(str(address.host), address.port)


class _InboundRun:
    """One inbound handshake holding a slot: when it started, and how to close it early."""

    __slots__ = ("evicted", "scope", "started")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.started = trio.current_time()
        self.evicted = False  # closed to make room: its slot passed to the newcomer


class _Registration:
    """One registration of a torrent (until it is unregistered): its dials in flight. A dial
    queued under it is dropped once it is over, even if the torrent was registered again
    meanwhile: that registration's dials are its own."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: set[_OutboundRun] = set()


class _OutboundRun:
    """One dial holding an outbound slot: its pair, its registration, and how to end it early
    (its torrent unregistered). ``ended``: its slot and pair are released (by the dial, or by
    :meth:`Handshaker.unregister` at once), so that whichever comes second does nothing."""

    __slots__ = ("address", "ended", "registration", "scope", "torrent")

    def __init__(
        self, torrent: InfoHash, address: PeerAddress, registration: _Registration
    ) -> None:
        self.torrent = torrent
        self.address = address
        self.registration = registration
        self.scope = trio.CancelScope()
        self.ended = False


class _TrackedStream(trio.abc.Stream):
    """A delivered stream that reports its closing: ``on_close`` runs once, in :meth:`aclose`."""

    def __init__(self, inner: trio.abc.Stream, on_close: Callable[[], None]) -> None:
        self.inner = inner
        self._on_close: Callable[[], None] | None = on_close

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class Handshaker:
    """Runs BitTorrent handshakes in both directions; build it with :func:`open_handshaker`.

    Implements :class:`PeerSink`. Register the torrents to serve with
    :meth:`register`, feed addresses with :meth:`discovered` or :meth:`connect`, and
    take the results from :meth:`completed`::

        async with open_handshaker(peer_id=PeerId.generate()) as handshaker:
            handshaker.register(torrent)
            handshaker.discovered(torrent, addresses, "tracker")
            async for peer in handshaker.completed():
                nursery.start_soon(serve_peer, peer)
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        peer_id: PeerId,
        extensions: Extensions,
        max_concurrent: int,
        max_queued: int,
        max_inbound: int,
        connect_timeout: float,
        max_inbound_per_host: int,
        handshake_timeout: float,
        max_outbound_per_host: int | None,
        filters: HandshakeFilters,
        encryption: EncryptionPolicy,
        dial: Dialer,
        backlog: int,
        listeners: list[trio.SocketListener],
        on_dial_failed: DialFailureCallback | None = None,
        ip_filter: IPFilter | None = None,
    ) -> None:
        """Internal: use :func:`open_handshaker`."""
        self._ip_filter = ip_filter
        self._on_dial_failed = on_dial_failed
        self._nursery = nursery
        self._peer_id = peer_id
        self._extensions = extensions
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._filters = filters
        self._encryption = encryption
        self._dial = dial
        self._listeners = listeners
        # Two pools, never shared: dials may not starve inbound handshakes (see the module
        # docstring), and inbound peers may not hold back our dials.
        self._slots = trio.Semaphore(max_concurrent)  # outbound: held by a dial in flight
        self._max_concurrent = max_concurrent
        self._max_inbound = max_inbound
        self._inbound_slots = trio.Semaphore(self._max_inbound)
        # Inbound handshakes in progress per remote host (host_network: the port, and the low
        # 64 bits of an IPv6 address, are the peer's to pick).
        self._max_per_host = max_inbound_per_host
        self._inbound_hosts: Counter[IPv4Address | IPv6Network] = Counter()
        # Inbound handshakes in progress, oldest first (dicts keep insertion order).
        self._inbound_runs: dict[_InboundRun, None] = {}
        self._torrents: dict[bytes, InfoHash] = {}
        self._skeys = SkeyTable()
        self._registered: dict[InfoHash, _Registration] = {}
        # (torrent, normalised address) pairs taken: queued or in flight, or delivered and
        # open (a count: a simultaneous open may deliver two). A pair in neither is free.
        self._dialling: set[tuple[InfoHash, PeerAddress]] = set()  # queued or in flight
        self._open: Counter[tuple[InfoHash, PeerAddress]] = Counter()  # delivered, open
        # The pairs of _dialling per (torrent, host): a source naming one host under many
        # ports may not fill the queue with it (see the module docstring). None: no bound.
        self._max_outbound_per_host = max_outbound_per_host
        self._outbound_hosts: Counter[tuple[InfoHash, IPv4Address | IPv6Address]] = Counter()
        self._queue_send, self._queue_receive = trio.open_memory_channel[
            tuple[InfoHash, PeerAddress, bytes | None, _Registration]
        ](max_queued)
        self._done_send, self._done_receive = trio.open_memory_channel[CompletedHandshake](backlog)
        self._counts: Counter[str] = Counter()
        # Addresses our dials found to be ourselves (our own peer id answered), oldest first;
        # bounded: a peer echoing our peer id back under many ports adds one each.
        self._self_addresses: dict[PeerAddress, None] = {}

    # -- public API ----------------------------------------------------------------

    @property
    def peer_id(self) -> PeerId:
        """Our peer id."""
        return self._peer_id

    @property
    def extensions(self) -> Extensions:
        """The reserved bytes we send (plus V2_UPGRADE for hybrid torrents)."""
        return self._extensions

    @property
    def listen_addresses(self) -> list[PeerAddress]:
        """The addresses we listen on, with the actual ports; none once the handshaker is
        closed (its listeners with it)."""
        result = []
        for listener in self._listeners:
            # A closed socket has no address (getsockname fails with EBADF): it listens nowhere.
            if listener.socket.fileno() < 0:
                continue
            address = _address_of(listener.socket.getsockname())
            if address is not None:
                result.append(address)
        return result

    @property
    def torrents(self) -> frozenset[InfoHash]:
        """The registered torrents."""
        return frozenset(self._registered)

    def register(self, torrent: InfoHash) -> None:
        """Serve ``torrent``: accept its inbound handshakes and dial its peers.

        Registering twice is harmless.
        """
        if not isinstance(torrent, InfoHash):
            raise TypeError(f"a torrent is an InfoHash, not {torrent!r}")
        if torrent not in self._registered:
            _log.debug("handshaking for torrent %s", torrent)
            self._registered[torrent] = _Registration()
        for swarm_id in torrent.swarm_ids():
            self._torrents[swarm_id] = torrent
            self._skeys.add(swarm_id)

    def unregister(self, torrent: InfoHash) -> None:
        """Stop serving ``torrent``: queued dials are dropped, dials in flight are cancelled,
        inbound handshakes in flight fail.

        A dial in flight (connecting, or handshaking) ends at once, as libtorrent closes a
        removed torrent's half-open connections: its outbound slot goes to the next dial
        (another torrent's need not wait out its timeouts), its socket is closed, and it is
        neither delivered nor reported to ``on_dial_failed``. Every dial dropped or cancelled
        is counted in ``unregistered`` at once, and nowhere else (not as a failure, even one
        whose connect failed in the same scheduling step), so an owner keeping its own dial
        book can tell them from failed ones. The ``(torrent, address)`` pairs of the queued
        and cancelled dials are free at once: a torrent registered again at once, with the
        same hash, may dial those addresses afresh, and hears only of its own dials. One
        exception: a dial whose handshake is complete and waits for its hand-over (the
        ``backlog`` of :meth:`completed` full) holds its pair until its task has run once more
        (the next scheduling step: it is cancelled, and takes nothing of the new
        registration's). A hand-over the receiver took in the same step as this call counts
        as cancelled too, not as delivered (the receiver holds a handshake of a torrent no
        longer registered, to close). Connections already delivered are not touched. Unknown
        torrents are ignored.
        """
        registration = self._registered.pop(torrent, None)
        if registration is None:
            return
        _log.debug("no longer handshaking for torrent %s", torrent)
        for swarm_id in torrent.swarm_ids():
            if self._torrents.get(swarm_id) == torrent:
                del self._torrents[swarm_id]
                self._skeys.discard(swarm_id)
        for run in list(registration.runs):
            run.scope.cancel()
            self._count("unregistered")
            self._end_outbound(run)
        # The torrent's pairs left are queued dials (or one waiting for a slot): dropped when
        # their turn comes (their registration is over), their pairs released and counted now
        # (the dispatcher may reach them much later, behind other torrents' dials waiting for
        # a slot; an owner's dial book reads the count meanwhile).
        for key in [key for key in self._dialling if key[0] == torrent]:
            self._count("unregistered")
            self._dial_ended(*key)

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        """Queue dials to ``addresses`` for a registered torrent (:class:`PeerSink`).

        Never blocks. Unregistered torrents, unconnectable or filtered addresses,
        addresses with a dial already pending, addresses of a host with
        ``max_outbound_per_host`` dials of the torrent pending and addresses beyond the
        queue's bound are dropped and counted. ``source`` is informational.

        Given as a 20-byte swarm id (or a 32-byte v2 hash), the peers are dialled
        with that id: a peer found in a hybrid torrent's v2 swarm hears the
        truncated v2 hash, one found in its v1 swarm the v1 hash.
        """
        torrent, swarm_id = self._lookup(info_hash)
        for address in addresses:
            self._count("discovered")
            if torrent is None:
                self._count("dropped_unknown_torrent")
                continue
            self._enqueue(torrent, address, swarm_id)

    def connect(
        self, torrent: InfoHash, address: PeerAddress, *, swarm_id: bytes | None = None
    ) -> bool:
        """Queue one dial; returns whether it was queued (see :meth:`discovered`).

        The result comes out of :meth:`completed` like any other. ``swarm_id`` is the
        20-byte id to dial with, one of ``torrent.swarm_ids()`` (a hybrid torrent's v2
        swarm: its truncated v2 hash); ``None`` dials with the default (the v1 hash).

        Raises:
            ValueError: ``swarm_id`` is not one of the torrent's swarm ids.
        """
        if swarm_id is not None and swarm_id not in torrent.swarm_ids():
            raise ValueError(f"{swarm_id!r} is not a swarm id of {torrent}")
        self._count("discovered")
        if torrent not in self._registered:
            self._count("dropped_unknown_torrent")
            return False
        return self._enqueue(torrent, address, swarm_id)

    def is_dialling(self, torrent: InfoHash, address: PeerAddress) -> bool:
        """Whether a dial to ``address`` for ``torrent`` is queued or in flight, or its
        connection was delivered and is still open; O(1).

        Only failed connects are told to ``on_dial_failed``: this is how an owner keeping
        its own dial book (the bip client's peer lists) learns that a dial ended otherwise
        (a failed handshake), without a connection.
        """
        key = (torrent, address.normalized())
        return key in self._dialling or key in self._open

    def is_self_address(self, address: PeerAddress) -> bool:
        """Whether a dial to ``address`` reached ourselves (answered with our own peer id,
        ``self_connection``): a tracker or the DHT listing our address, or a NAT looping it
        back. An owner keeping its own dial book stops dialling it (libtorrent bans the
        peer). The last ``MAX_SELF_ADDRESSES`` such addresses are remembered; O(1).
        """
        return address.normalized() in self._self_addresses

    def accept_stream(
        self, stream: trio.abc.Stream, address: PeerAddress, *, transport: Transport = "tcp"
    ) -> None:
        """Handshake as the receiver on a stream the caller accepted (uTP, a proxy, tests).

        Never blocks; the handshaker owns ``stream`` from now on, and the result
        comes out of :meth:`completed` with ``transport`` as its
        :attr:`CompletedHandshake.transport` (``"utp"`` for a uTP accept).

        Raises:
            ValueError: ``transport`` is neither ``"tcp"`` nor ``"utp"``.
        """
        if transport not in ("tcp", "utp"):
            raise ValueError(f"transport must be 'tcp' or 'utp', not {transport!r}")
        self._nursery.start_soon(self._run_inbound, stream, address.normalized(), transport)

    @property
    def ip_filter(self) -> IPFilter | None:
        """The IP filter in force (``None``: none)."""
        return self._ip_filter

    def set_ip_filter(self, ip_filter: IPFilter | None) -> None:
        """Replace the IP filter (``None`` removes it), at once, as libtorrent's
        ``session::set_ip_filter``.

        From now on blocked addresses are not queued, queued dials to them are dropped
        when their turn comes, inbound connections from them are closed unread, and
        handshakes in flight with them are refused before delivery (``filtered_ip``).
        Connections already delivered are the owner's: it closes those the new filter
        blocks (the bip client's ``Session.set_ip_filter`` does).

        Raises:
            TypeError: ``ip_filter`` is not an :class:`~bip_handshake.IPFilter` or ``None``.
        """
        if ip_filter is not None and not isinstance(ip_filter, IPFilter):
            raise TypeError(f"ip_filter must be an IPFilter or None, not {ip_filter!r}")
        self._ip_filter = ip_filter
        _log.debug("IP filter set: %r", ip_filter)

    def completed(self) -> trio.MemoryReceiveChannel[CompletedHandshake]:
        """The completed handshakes, to iterate with ``async for``.

        A handshake waits here (holding its slot, outbound or inbound) until
        received; the receiver owns the stream.
        """
        return self._done_receive

    def statistics(self) -> HandshakerStatistics:
        """A frozen snapshot of the counters."""
        counts = {name: self._counts[name] for name in _COUNTERS}
        # Every handshake in flight holds one slot of its direction, so the slots taken
        # count them.
        outbound = self._max_concurrent - self._slots.value
        inbound = self._max_inbound - self._inbound_slots.value
        return HandshakerStatistics(
            **counts,
            in_flight=outbound + inbound,
            outbound_in_flight=outbound,
            inbound_in_flight=inbound,
            queued=self._queue_send.statistics().current_buffer_used,
        )

    # -- internals -----------------------------------------------------------------

    def _count(self, name: str) -> None:
        assert name in _COUNTERS, name
        self._counts[name] += 1

    def _fail(self, reason: str) -> None:
        self._count(reason)
        self._count("failures")

    def _lookup(self, info_hash: InfoHash | bytes) -> tuple[InfoHash | None, bytes | None]:
        """The registered torrent, and the swarm id to dial with (None: the default)."""
        if isinstance(info_hash, InfoHash):
            return (info_hash if info_hash in self._registered else None), None
        if isinstance(info_hash, bytes | bytearray | memoryview):
            swarm_id = bytes(info_hash[:20])
            return self._torrents.get(swarm_id), swarm_id
        raise TypeError(f"an info-hash is an InfoHash or bytes, not {info_hash!r}")

    def _enqueue(
        self, torrent: InfoHash, address: PeerAddress, swarm_id: bytes | None = None
    ) -> bool:
        """Queue a dial for ``torrent`` (registered: the callers looked it up)."""
        registration = self._registered.get(torrent)
        if registration is None:
            self._count("dropped_unknown_torrent")
            return False
        address = address.normalized()
        if not address.is_connectable:
            self._count("dropped_unconnectable")
            return False
        if not self._allowed_early(torrent, address, "outbound"):
            return False
        key = (torrent, address)
        if key in self._dialling or key in self._open:
            self._count("dropped_duplicate")
            return False
        bound = self._max_outbound_per_host
        if bound is not None and self._outbound_hosts[torrent, address.host] >= bound:
            self._count("dropped_per_host")
            _log.debug("%d dials to %s pending: dropped %s", bound, address.host, address)
            return False
        try:
            self._queue_send.send_nowait((torrent, address, swarm_id, registration))
        except trio.WouldBlock:
            self._count("dropped_queue_full")
            _log.debug("dial queue full: dropped %s for %s", address, torrent)
            return False
        except trio.ClosedResourceError:  # the handshaker is closing
            return False
        self._dialling.add(key)
        self._outbound_hosts[torrent, address.host] += 1
        return True

    def _dial_ended(self, torrent: InfoHash, address: PeerAddress) -> None:
        """The dial of ``(torrent, address)`` left the queue or ended: its pair is free, and
        its host has one dial pending less."""
        key = (torrent, address)
        if key not in self._dialling:  # released already (or by the shutdown)
            return
        self._dialling.discard(key)
        host = (torrent, address.host)
        self._outbound_hosts[host] -= 1
        if self._outbound_hosts[host] <= 0:
            del self._outbound_hosts[host]

    @property
    def _taken(self) -> set[tuple[InfoHash, PeerAddress]]:
        """The pairs not to be dialled now (a pending dial, or an open connection)."""
        return self._dialling | self._open.keys()

    def _opened(self, key: tuple[InfoHash, PeerAddress]) -> None:
        self._open[key] += 1

    def _closed(self, key: tuple[InfoHash, PeerAddress]) -> None:
        if key not in self._open:  # released by the shutdown already
            return
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]

    def _allowed_early(self, torrent: InfoHash | None, address: PeerAddress, d: Direction) -> bool:
        """Direction, IP, address and info-hash filters; counts a refusal."""
        filters = self._filters
        if not (filters.outbound if d == "outbound" else filters.inbound):
            self._count("filtered_direction")
            return False
        if self._ip_blocked(address):
            self._count("filtered_ip")
            return False
        if filters.address is not None and not filters.address(address, d):
            self._count("filtered_address")
            return False
        if torrent is not None and filters.info_hash and not filters.info_hash(torrent, d):
            self._count("filtered_info_hash")
            return False
        return True

    def _ip_blocked(self, address: PeerAddress) -> bool:
        """Whether the IP filter in force blocks ``address`` (read each time: replaceable)."""
        ip_filter = self._ip_filter
        return ip_filter is not None and ip_filter.blocks(address.host)

    async def _dispatch(self) -> None:
        """Take queued dials one by one as outbound slots free up (inbound ones never)."""
        async for torrent, address, swarm_id, registration in self._queue_receive:
            # Its registration is over (unregister released its pair and counted it): dropped,
            # even if the torrent was registered again since.
            if self._registered.get(torrent) is not registration:
                continue
            if self._slots.value == 0:
                # Over the half-open bound: the dial waits for a slot, it is not refused.
                self._count("outbound_waited")
            await self._slots.acquire()
            if self._registered.get(torrent) is not registration:
                # Unregistered while it waited for the slot (its pair released and counted
                # then).
                self._slots.release()
                continue
            # The peer dialled us while this dial waited for a slot (connected already), or a
            # filter set meanwhile blocks it (checked once the slot is ours: the filter may
            # change while the dial waits for one).
            dropped = (
                "dropped_duplicate"
                if self._open.get((torrent, address))
                else "filtered_ip"
                if self._ip_blocked(address)
                else None
            )
            if dropped is not None:
                self._slots.release()
                self._dial_ended(torrent, address)
                self._count(dropped)
                continue
            run = _OutboundRun(torrent, address, registration)
            registration.runs.add(run)
            self._nursery.start_soon(self._run_outbound, run, swarm_id)

    async def _serve(self, listener: trio.SocketListener) -> None:
        """Accept connections forever (like ``trio.serve_listeners``)."""
        warned_at = -math.inf
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                self._count("accept_errors")
                # Out of file descriptors lasts: warn once a minute, not every retry.
                now = trio.current_time()
                level = logging.DEBUG
                if now - warned_at >= _ACCEPT_WARN_INTERVAL:
                    level, warned_at = logging.WARNING, now
                _log.log(
                    level,
                    "cannot accept peer connections on %s: %s; retrying",
                    _listener_name(listener),
                    exc.strerror or exc,
                )
                await trio.sleep(_ACCEPT_BACKOFF)
                continue
            try:
                address = _address_of(stream.socket.getpeername())
            except OSError:
                address = None
            if address is None:
                self._count("inbound_attempts")
                self._fail("connection_lost")
                await trio.aclose_forcefully(stream)
                continue
            self._nursery.start_soon(self._run_inbound, stream, address, "tcp")

    async def _run_outbound(self, run: _OutboundRun, swarm_id: bytes | None) -> None:
        """One dial; the caller acquired a slot for it. It runs under ``run.scope``, which
        :meth:`unregister` cancels (releasing the slot and the pair itself then)."""
        torrent, address = run.torrent, run.address
        self._count("outbound_attempts")
        stream: trio.abc.Stream | None = None
        delivered = False
        failure: _RefusedError | None = None
        policy = self._encryption
        try:
            with run.scope:
                stream = await self._connect(address)
                try:
                    peer = await self._handshake(
                        stream,
                        address,
                        "outbound",
                        torrent,
                        swarm_id,
                        policy=policy,
                        transport=_transport_of(stream),
                    )
                except _MSEFailedError as exc:
                    if policy is not EncryptionPolicy.PREFER_ENCRYPTED:
                        raise _RefusedError("mse_failed", exc) from None
                    # As libtorrent does: the peer may not speak MSE; redial once in plaintext.
                    self._count("plaintext_fallback")
                    _log.debug(
                        "encryption handshake with %s failed (%s); redialling in plaintext",
                        address,
                        exc,
                    )
                    await trio.aclose_forcefully(stream)
                    stream = None
                    # Its torrent unregistered meanwhile (counted there), or a filter set
                    # while MSE ran blocks the peer: no fresh connection, which would carry
                    # our info-hash and peer id to it in the clear.
                    if run.ended:
                        raise _RefusedError("unregistered") from None
                    if self._ip_blocked(address):
                        raise _RefusedError("filtered_ip") from None
                    try:
                        stream = await self._connect(address)
                    except _RefusedError as redial:
                        # The first connect succeeded: the peer was reachable, so this is
                        # the failed encryption handshake, not a dial that never connected
                        # (on_dial_failed, holepunch, must not hear of it).
                        raise _RefusedError(
                            "mse_failed", f"{exc}; the plaintext redial: {redial.describe()}"
                        ) from None
                    peer = await self._handshake(
                        stream,
                        address,
                        "outbound",
                        torrent,
                        swarm_id,
                        policy=EncryptionPolicy.PLAINTEXT_ONLY,
                        transport=_transport_of(stream),
                    )
                await self._deliver(peer)
                delivered = True
                if run.ended:
                    # Handed over in the step unregister ran in (the receiver took it before
                    # this task resumed): unregister counted it cancelled, and its word
                    # stands (the count an owner reads to tell cancelled dials never goes
                    # back); the delivery's counts are taken back, as a failed hand-over's.
                    self._counts["outbound_completed"] -= 1
                    if peer.encryption == "rc4":
                        self._counts["encrypted"] -= 1
        except _RefusedError as refused:
            if refused.reason == "self_connection":
                self._remember_self(address)
            if run.ended:
                # Its connect or handshake failed in the step unregister ran in, before this
                # task resumed: unregister counted it (in ``unregistered``), once is enough.
                _log.debug("outbound handshake with %s for %s cancelled", address, torrent)
            else:
                self._fail(refused.reason)
                _log.debug(
                    "outbound handshake with %s for %s failed: %s",
                    address,
                    torrent,
                    refused.describe(),
                )
                failure = refused
        finally:
            # A delivered pair stays taken until its stream closes (_open counts it).
            self._end_outbound(run)
            if stream is not None and not delivered:
                await trio.aclose_forcefully(stream)
        # Told after the pair is free: the callback may dial the address again at once. Only
        # while its registration lasts: one unregister ended (cancelled, or failed just before
        # and closing its socket) is no news for a later registration of the same hash.
        if (
            failure is not None
            and failure.reason in _DIAL_FAILURES
            and self._registered.get(torrent) is run.registration
        ):
            self._report_dial_failure(torrent, address, failure)

    def _remember_self(self, address: PeerAddress) -> None:
        """``address`` (normalised) is ours: remembered before the dial's pair is free, so
        that an owner finding the dial gone finds the address here."""
        self._self_addresses.pop(address, None)  # the newest again
        self._self_addresses[address] = None
        if len(self._self_addresses) > MAX_SELF_ADDRESSES:
            del self._self_addresses[next(iter(self._self_addresses))]

    def _end_outbound(self, run: _OutboundRun) -> None:
        """``run``'s dial is over (or cancelled by :meth:`unregister`): its slot and its pair
        are free. Once: whichever of the dial and unregister comes second does nothing (the
        pair may be a new registration's by then)."""
        if run.ended:
            return
        run.ended = True
        run.registration.runs.discard(run)
        self._dial_ended(run.torrent, run.address)
        self._slots.release()

    def _report_dial_failure(
        self, torrent: InfoHash, address: PeerAddress, failure: _RefusedError
    ) -> None:
        callback = self._on_dial_failed
        if callback is None:
            return
        reason: DialFailureReason = (
            "connect_timeout" if failure.reason == "connect_timeout" else "connect_failed"
        )
        detail = "" if failure.detail is None else str(failure.detail)
        try:
            callback(DialFailure(torrent, address, reason, detail))
        except Exception:
            # The callback is the owner's; a bug there must not take down every connection
            # of the handshaker (its nursery), only be seen.
            _log.exception("the on_dial_failed callback failed for %s", address)

    async def _connect(self, address: PeerAddress) -> trio.abc.Stream:
        try:
            with trio.fail_after(self._connect_timeout):
                return await self._dial(address)
        except trio.TooSlowError:
            raise _RefusedError("connect_timeout", f"{self._connect_timeout} s") from None
        except (OSError, UtpError) as exc:
            # A uTP dialer fails with UtpConnectError (an OSError too, as a refused TCP
            # connect is); any other UtpError from a dialer of the user's is a failed connect
            # as well, never a crash of the handshaker.
            raise _RefusedError("connect_failed", _os_detail(exc) or exc) from None

    async def _run_inbound(
        self, stream: trio.abc.Stream, address: PeerAddress, transport: Transport
    ) -> None:
        """One accepted connection; takes an inbound slot (a free one, or the oldest
        handshake's when it ran long enough: :meth:`_make_room`) or closes at once."""
        address = address.normalized()
        delivered = False
        acquired = False
        run: _InboundRun | None = None
        try:
            if not self._allowed_early(None, address, "inbound"):
                return
            self._count("inbound_attempts")
            host = host_network(address.normalized().host)
            if self._inbound_hosts[host] >= self._max_per_host:
                raise _RefusedError("over_limit", f"{self._max_per_host} in progress from {host}")
            try:
                self._inbound_slots.acquire_nowait()
            except trio.WouldBlock:
                if not self._make_room():
                    raise _RefusedError("over_limit", f"{self._max_inbound} in progress") from None
            acquired = True
            self._inbound_hosts[host] += 1
            run = _InboundRun()
            self._inbound_runs[run] = None
            peer: CompletedHandshake | None = None
            with run.scope:
                # MSE: within the handshake timeout, _handshake looks at the first bytes
                # (_receive_secure) and speaks BEP 3 over the (maybe) encrypted stream.
                peer = await self._handshake(stream, address, "inbound", None, transport=transport)
            self._inbound_runs.pop(run, None)
            if peer is None:
                raise _RefusedError("over_limit", "closed to make room for a new connection")
            # Connected already: checked again here (a dial of ours to this address that is
            # only in flight is a simultaneous open, and does not refuse it).
            if self._open.get((peer.info_hash, address)):
                raise _RefusedError("dropped_duplicate")
            await self._deliver(peer)
            delivered = True
        except _RefusedError as refused:
            self._fail(refused.reason)
            _log.debug("inbound handshake from %s failed: %s", address, refused.describe())
        finally:
            if run is not None:
                self._inbound_runs.pop(run, None)
            if acquired:
                if run is None or not run.evicted:  # an evicted one's slot was passed on
                    self._inbound_slots.release()
                self._inbound_hosts[host] -= 1
                if self._inbound_hosts[host] <= 0:
                    del self._inbound_hosts[host]
            if not delivered:
                await trio.aclose_forcefully(stream)

    def _make_room(self) -> bool:
        """Every inbound slot is taken: close the oldest handshake in progress if it has run
        for a quarter of the handshake timeout, and pass its slot on; False if none has.

        Honest handshakes take a round trip or two; connections that hold a slot for
        seconds without finishing are the ones a flood from many addresses is made of
        (the per-host bound stops a flood from one). Without this, such a flood kept
        every honest peer out for as long as it went on, at ``max_inbound`` connections
        per handshake timeout; now it must open that many every quarter of the timeout.
        """
        oldest = next(iter(self._inbound_runs), None)
        if oldest is None:
            return False
        if trio.current_time() - oldest.started < self._handshake_timeout * _EVICT_SHARE:
            return False
        del self._inbound_runs[oldest]
        oldest.evicted = True
        oldest.scope.cancel()
        return True

    async def _secure(
        self,
        stream: trio.abc.Stream,
        handshake: bytes,
        skey: bytes,
        policy: EncryptionPolicy,
    ) -> tuple[trio.abc.Stream, bytes, EncryptionMethod]:
        """Outbound: send our ``handshake``, through MSE unless plaintext only.

        Returns the stream to go on with (an :class:`MSEStream` for RC4), the peer's
        bytes already received and decrypted (the start of its handshake), and the
        method. Raises :class:`_MSEFailedError` if the MSE handshake fails.
        """
        if policy is EncryptionPolicy.PLAINTEXT_ONLY:
            await stream.send_all(handshake)
            return stream, b"", "plaintext"
        initiator = MSEInitiator(skey, policy, initial_payload=handshake)
        try:
            await stream.send_all(initiator.data_to_send())
            while True:
                initiator.receive_data(await stream.receive_some(_RECEIVE_SIZE))
                event = initiator.next_event()
                if out := initiator.data_to_send():
                    await stream.send_all(out)
                if isinstance(event, MSEEstablished):
                    break
        except (RemoteProtocolError, trio.BrokenResourceError, OSError) as exc:
            raise _MSEFailedError(str(exc) or type(exc).__name__) from exc
        if event.method == "rc4":
            return MSEStream(stream, initiator), event.data, "rc4"
        return stream, event.data, "plaintext"

    async def _receive_secure(
        self, stream: trio.abc.Stream
    ) -> tuple[trio.abc.Stream, bytes, EncryptionMethod, bytes | None]:
        """Inbound: plaintext or MSE by the first bytes; like :meth:`_secure`'s result, plus
        the swarm id MSE named (its SKEY; None without MSE), which the handshake inside must
        name too."""
        policy = self._encryption
        if policy is EncryptionPolicy.PLAINTEXT_ONLY:
            return stream, b"", "plaintext", None
        probe = _SkeyProbe(self._skeys)
        receiver = MSEReceiver(probe, policy)
        head = b""
        closed = False
        try:
            while True:
                data = await stream.receive_some(_RECEIVE_SIZE)
                closed = not data
                head += data[: len(_PSTR) - len(head)]
                receiver.receive_data(data)
                event = receiver.next_event()
                if out := receiver.data_to_send():
                    await stream.send_all(out)
                if isinstance(event, MSEEstablished):
                    break
        except RemoteProtocolError as exc:
            if head == _PSTR:
                raise _RefusedError("refused_plaintext") from None
            if probe.missed:
                raise _RefusedError("unknown_info_hash", "encrypted") from None
            if closed:
                raise _RefusedError("connection_lost") from None
            raise _RefusedError("mse_failed", exc) from None
        if event.method == "rc4":
            return MSEStream(stream, receiver), event.data, "rc4", event.skey
        return stream, event.data, "plaintext", event.skey

    async def _deliver(self, peer: CompletedHandshake) -> None:
        """Hand ``peer`` over; its (torrent, address) pair, taken, is released on close."""
        if peer.info_hash not in self._registered:
            raise _RefusedError("unregistered")
        if self._ip_blocked(peer.address):
            # A filter set while the handshake ran blocks the peer.
            raise _RefusedError("filtered_ip")
        key = (peer.info_hash, peer.address)
        peer = replace(peer, stream=_TrackedStream(peer.stream, lambda: self._closed(key)))
        # Counted before the hand-over: the receiver may run (and read statistics(), or
        # close the stream) before this task resumes from send(). Taken back if the
        # hand-over fails. No checkpoint since the caller's duplicate check: atomic.
        counters = [f"{peer.direction}_completed"] + (
            ["encrypted"] if peer.encryption == "rc4" else []
        )
        for name in counters:
            self._count(name)
        self._opened(key)
        _log.debug(
            "%s handshake with %s for %s complete: %s, peer id %s",
            peer.direction,
            peer.address,
            peer.info_hash,
            peer.encryption,
            peer.peer_id,
        )
        try:
            await self._done_send.send(peer)
        except BaseException:
            for name in counters:
                self._counts[name] -= 1
            self._closed(key)
            raise

    async def _handshake(
        self,
        stream: trio.abc.Stream,
        address: PeerAddress,
        direction: Direction,
        torrent: InfoHash | None,
        swarm_id: bytes | None = None,
        *,
        policy: EncryptionPolicy | None = None,
        transport: Transport = "tcp",
    ) -> CompletedHandshake:
        """Run the handshake (MSE first) within the timeout; raises :class:`_RefusedError`.

        Outbound, an MSE failure raises :class:`_MSEFailedError` instead.
        """
        skey: bytes | None = None  # the torrent an inbound MSE handshake named
        if torrent is None:
            # Inbound MSE hands the peer's initial payload (up to 65,535 bytes: the
            # handshake and what follows it) and the bytes read with its end over at once:
            # the IA's own bytes must not count against the bound on what follows.
            connection = HandshakeConnection.receiver(
                peer_id=self._peer_id.value,
                extensions=self._extensions,
                max_trailing=DEFAULT_MAX_TRAILING + 0xFFFF,
            )
        else:
            connection = HandshakeConnection.initiator(
                torrent,
                peer_id=self._peer_id.value,
                extensions=self._extensions,
                info_hash=swarm_id,
            )
        try:
            with trio.fail_after(self._handshake_timeout):
                if torrent is not None:
                    stream, received, method = await self._secure(
                        stream,
                        connection.send_handshake(),
                        swarm_id if swarm_id is not None else torrent.swarm_ids()[0],
                        policy if policy is not None else self._encryption,
                    )
                else:
                    stream, received, method, skey = await self._receive_secure(stream)
                if received:
                    connection.receive_data(received)
                done = await self._pump(stream, connection, direction, address, skey=skey)
        except trio.TooSlowError:
            raise _RefusedError("handshake_timeout", f"{self._handshake_timeout} s") from None
        except RemoteProtocolError as exc:
            _, closed = connection.trailing_data
            if closed:
                raise _RefusedError("connection_lost") from None
            raise _RefusedError("protocol_error", exc) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise _RefusedError("connection_lost", _os_detail(exc)) from None
        peer_id = PeerId(done.peer_id)
        if peer_id == self._peer_id:
            raise _RefusedError("self_connection")
        if self._filters.peer_id is not None and not self._filters.peer_id(peer_id, direction):
            raise _RefusedError("filtered_peer_id")
        trailing, _ = connection.trailing_data
        return CompletedHandshake(
            stream=stream,
            trailing=trailing,
            peer_id=peer_id,
            extensions=done.extensions,
            our_extensions=done.our_extensions,
            info_hash=done.torrent,
            swarm_id=done.info_hash,
            address=address,
            direction=direction,
            encryption=method,
            transport=transport,
        )

    async def _pump(
        self,
        stream: trio.abc.Stream,
        connection: HandshakeConnection,
        direction: Direction,
        address: PeerAddress,
        *,
        skey: bytes | None,
    ) -> HandshakeComplete:
        while True:
            event = connection.next_event()
            if event is NEED_DATA:
                connection.receive_data(await stream.receive_some(_RECEIVE_SIZE))
            elif isinstance(event, InfoHashReceived):
                await self._on_info_hash(stream, connection, event, direction, address, skey=skey)
            elif isinstance(event, HandshakeComplete):
                return event
            else:  # pragma: no cover - PAUSED cannot happen: we always act at once
                assert event is PAUSED
                raise AssertionError("handshake paused unexpectedly")

    async def _on_info_hash(
        self,
        stream: trio.abc.Stream,
        connection: HandshakeConnection,
        event: InfoHashReceived,
        direction: Direction,
        connection_address: PeerAddress,
        *,
        skey: bytes | None,
    ) -> None:
        """The peer's first 48 bytes: look the torrent up (inbound) and run the filters.

        ``skey`` is the swarm id an inbound MSE handshake named (None: plaintext).
        """
        filters = self._filters
        torrent = connection.torrent  # the initiator's; the receiver looks it up
        if direction == "inbound":
            torrent = self._torrents.get(event.info_hash)
            if torrent is None:
                connection.reject()
                raise _RefusedError("unknown_info_hash", event.info_hash.hex())
            if skey is not None and self._torrents.get(skey) != torrent:
                # The RC4 keys were made for the torrent MSE named: a handshake for another
                # one inside is a lie (libtorrent refuses it too), not a second chance.
                connection.reject()
                raise _RefusedError(
                    "protocol_error",
                    f"the handshake names {event.info_hash.hex()}, MSE named {skey.hex()}",
                )
            if self._open.get((torrent, connection_address)):
                connection.reject()
                raise _RefusedError("dropped_duplicate")
            if filters.info_hash is not None and not filters.info_hash(torrent, direction):
                connection.reject()
                raise _RefusedError("filtered_info_hash")
        if filters.extensions is not None and not filters.extensions(event.extensions, direction):
            raise _RefusedError("filtered_extensions")
        if direction == "inbound":
            assert torrent is not None
            await stream.send_all(connection.accept(torrent))

    async def _close(self) -> None:
        """Close the queues and every undelivered stream (on exit, shielded)."""
        self._queue_send.close()
        self._done_send.close()
        # Delivered connections no longer block anything.
        self._dialling.clear()
        self._outbound_hosts.clear()
        self._open.clear()
        while True:
            try:
                peer = self._done_receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            await trio.aclose_forcefully(peer.stream)
        _close_listeners(self._listeners)


class _SharedPortTakenError(Exception):
    """Internal: the port picked for the ``listen`` entries of port 0 is taken on one of the
    other addresses (the listeners opened so far are closed); the ``__cause__`` says so."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"{host} port {port}")
        self.host = host
        self.port = port


def _port_of(listener: trio.SocketListener) -> int:
    """The port ``listener`` is bound to."""
    port = listener.socket.getsockname()[1]
    assert isinstance(port, int)
    return port


async def _open_listeners(listen: list[tuple[str, int]]) -> list[trio.SocketListener]:
    """Listeners on every ``(host, port)`` of ``listen``, in order: those of port 0 all on
    the one port the system picks for the first of them (see the module's docstring).

    Raises:
        ListenError: an address cannot be listened on, two entries of port 0 overlap, or every
            port picked for the entries of port 0 was taken on one of their addresses.
    """
    await _check_overlaps([host for host, port in listen if port == 0])
    attempt = 1
    while True:
        try:
            return await _open_listener_set(listen)
        except _SharedPortTakenError as taken:
            if attempt == _SHARED_PORT_ATTEMPTS:
                hosts = ", ".join(host for host, port in listen if port == 0)
                raise ListenError(
                    f"cannot listen on one port for {hosts}: each of the {attempt} ports the"
                    f" system picked was taken on another of them (last: {taken}:"
                    f" {taken.__cause__})"
                ) from taken.__cause__
            _log.debug(
                "port %d is taken on %s (try %d of %d): opening every listener again",
                taken.port,
                taken.host,
                attempt,
                _SHARED_PORT_ATTEMPTS,
            )
            attempt += 1


async def _open_listener_set(listen: list[tuple[str, int]]) -> list[trio.SocketListener]:
    """One try of :func:`_open_listeners`; every listener it opened is closed if it fails.

    Raises:
        ListenError: an address cannot be listened on.
        _SharedPortTakenError: the port picked is taken on another entry's address.
    """
    listeners: list[trio.SocketListener] = []
    shared = 0  # the port the system picked for the first entry of port 0, once it has
    try:
        for host, port in listen:
            if port == 0 and shared == 0:
                opened = await _open_tcp_listeners(host, 0)
                shared = _port_of(opened[0])
                if all(_port_of(listener) == shared for listener in opened):
                    listeners.extend(opened)
                    continue
                # A name with addresses of both families: trio bound each on a port of its
                # own. Again, every one on the first one's port.
                _close_listeners(opened)
            try:
                listeners.extend(await trio.open_tcp_listeners(port or shared, host=host))
            except OSError as exc:
                if port == 0 and exc.errno in _ADDRESS_IN_USE:
                    raise _SharedPortTakenError(host, shared) from exc
                # Port 0 as the user gave it: the shared port is ours, said as the one tried.
                asked = f"{port}" if port else f"0 (tried {shared}, shared by the entries of 0)"
                raise ListenError(f"cannot listen on {host} port {asked}: {exc}") from exc
    except BaseException:
        _close_listeners(listeners)
        raise
    return listeners


def _close_listeners(listeners: Iterable[trio.SocketListener]) -> None:
    """Close every one of ``listeners`` now. Synchronously: awaiting each one's ``aclose``
    in a cancelled scope would raise ``Cancelled`` at the first and leave the others open and
    bound (trio's ``SocketListener.aclose`` does no more than close the socket and checkpoint).
    """
    for listener in listeners:
        listener.socket.close()


_ListenAddress = IPv4Address | IPv6Address


def _listen_address(sockaddr: tuple[object, ...]) -> _ListenAddress:
    """The address a listener on ``sockaddr`` (a ``getaddrinfo`` answer's) is bound to, as
    :func:`_overlaps` compares them: an IPv4-mapped IPv6 address as its IPv4 one, an IPv6
    address with its scope (``fe80::1`` on two links is two addresses).

    Raises:
        ListenError: ``sockaddr`` holds no IP address.
    """
    host = sockaddr[0] if sockaddr else None
    scope = sockaddr[3] if len(sockaddr) >= 4 else 0
    try:
        address = ip_address(str(host))
        if isinstance(address, IPv6Address) and isinstance(scope, int) and scope:
            address = IPv6Address(f"{str(host).partition('%')[0]}%{scope}")
    except ValueError as exc:
        raise ListenError(f"cannot listen on {host!r}: not an IP address") from exc
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _overlaps(first: _ListenAddress, second: _ListenAddress) -> bool:
    """Whether listeners on ``first`` and ``second`` cannot share one port: the same address,
    or either is the unspecified address of the other's family (an IPv6 listener is
    IPv6-only: ``::`` leaves ``0.0.0.0`` free)."""
    if first.version != second.version:
        return False
    return first == second or first.is_unspecified or second.is_unspecified


def _first_overlap(
    entries: Iterable[tuple[str, Iterable[_ListenAddress]]],
) -> tuple[str, _ListenAddress, str, _ListenAddress] | None:
    """The first ``(host, address, earlier_host, earlier_address)`` where an address of an
    entry of ``entries`` (``(host, its addresses)``, in order) overlaps one of an earlier
    entry (:func:`_overlaps`); ``None`` if no two entries overlap."""
    earlier: list[tuple[str, _ListenAddress]] = []
    for host, addresses in entries:
        mine = list(addresses)
        for address in mine:
            for other_host, other in earlier:
                if _overlaps(address, other):
                    return host, address, other_host, other
        earlier.extend((host, address) for address in mine)
    return None


async def _check_overlaps(hosts: list[str]) -> None:
    """Fail if two of ``hosts`` (the ``listen`` entries of port 0, which get one port) overlap,
    before anything is bound: the system would refuse the second listener on every port tried.
    Each host is resolved as ``trio.open_tcp_listeners`` resolves it (a literal address with no
    lookup); nothing is resolved for fewer than two.

    Raises:
        ListenError: two of them overlap, or a name cannot be resolved.
    """
    if len(hosts) < 2:
        return
    entries: list[tuple[str, list[_ListenAddress]]] = []
    for host in hosts:
        try:
            infos = await trio.socket.getaddrinfo(
                host, 0, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ListenError(f"cannot listen on {host} port 0: {exc}") from exc
        entries.append((host, [_listen_address(tuple(info[4])) for info in infos]))
    found = _first_overlap(entries)
    if found is None:
        return
    host, address, other_host, other = found
    same = (host, other_host) == (str(address), str(other))
    named = "" if same else f" (as {address} and {other})"
    raise ListenError(
        f"{host} port 0 overlaps {other_host}{named}: every listen entry of port 0 gets the"
        " same port, which cannot be listened on twice there; drop one"
    )


async def _open_tcp_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """trio's listeners on ``host`` (each of its addresses) and ``port``.

    Raises:
        ListenError: the operating system's error as its ``__cause__``.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host} port {port}: {exc}") from exc
    if not listeners:  # pragma: no cover - trio raises instead; guards our callers' [0]
        raise ListenError(f"cannot listen on {host} port {port}: it names no address")
    return listeners


@asynccontextmanager
async def open_handshaker(
    *,
    peer_id: PeerId | bytes | None = None,
    listen: Iterable[tuple[str, int]] = (("127.0.0.1", 0),),
    extensions: Extensions = Extensions.NONE,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    max_queued: int = DEFAULT_MAX_QUEUED,
    max_inbound: int | None = None,
    max_inbound_per_host: int | None = None,
    max_outbound_per_host: int | None = DEFAULT_MAX_PER_HOST,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    filters: HandshakeFilters | None = None,
    encryption: EncryptionPolicy = EncryptionPolicy.PREFER_ENCRYPTED,
    dial: Dialer | None = None,
    backlog: int = 16,
    on_dial_failed: DialFailureCallback | None = None,
    ip_filter: IPFilter | None = None,
) -> AsyncIterator[Handshaker]:
    """Run a :class:`Handshaker` for the duration of an ``async with`` block.

    >>> async def main(torrent, peers):  # doctest: +SKIP
    ...     async with open_handshaker(listen=[("0.0.0.0", 6881), ("::", 6881)]) as handshaker:
    ...         handshaker.register(torrent)
    ...         handshaker.discovered(torrent, peers, "tracker")
    ...         async for peer in handshaker.completed():
    ...             ...

    Args:
        peer_id: our peer id; a fresh :meth:`PeerId.generate` one by default.
        listen: ``(host, port)`` pairs to listen on (port 0 picks one, the same for every
            pair of port 0, so two of them must not overlap: see the module's docstring and
            :attr:`Handshaker.listen_addresses`); empty to only dial.
        extensions: the reserved bytes we send.
        max_concurrent: dials connecting or handshaking at once (the half-open bound,
            outbound only); further dials wait in the queue for a slot. Inbound
            handshakes do not count against it (``max_inbound`` bounds them).
        max_queued: discovered addresses waiting for a dial; more are dropped.
        max_inbound: inbound handshakes in progress at once (accepted over TCP or
            handed over with :meth:`Handshaker.accept_stream`); connections beyond it
            are closed at once and counted in ``over_limit``. ``None`` (the default):
            the same number as ``max_concurrent`` (64 with the defaults), so a caller
            that bounded both directions with ``max_concurrent`` keeps that bound on
            each direction (the total may now reach twice it).
        max_inbound_per_host: inbound handshakes in progress at once from one host (an
            IPv4 address or an IPv6 /64, any port); more are closed at once
            (``over_limit``). ``None`` (the default): a quarter of ``max_inbound``, at
            least 1, so that one host flooding us with silent connections leaves the
            other slots to honest peers.
        max_outbound_per_host: dials of one torrent queued or in flight at once to one
            host (an IP address, any port; 2 by default, as the
            :class:`~bip_handshake.PeerList`'s ``max_per_host``); more are dropped
            (``dropped_per_host``), so a source listing one host under thousands of ports
            cannot fill the dial queue with it. ``None``: no bound (libtorrent's
            ``allow_multiple_connections_per_ip``).
        connect_timeout: seconds a dial may take.
        handshake_timeout: seconds the handshake may take once connected (a peer
            that dribbles bytes is cut off at this deadline).
        filters: which peers to talk to.
        encryption: the MSE/PE policy; ``PREFER_ENCRYPTED`` (dial with MSE, redial
            in plaintext if the peer rejects it; accept both) by default.
        dial: how to open outbound connections (TCP by default).
        backlog: completed handshakes held until :meth:`Handshaker.completed` takes them.
        on_dial_failed: told of every dial that never connected (a :class:`DialFailure`),
            after the address is free to be dialled again; must not block.
        ip_filter: the addresses never to talk to, in either direction (a blocklist;
            replace it with :meth:`Handshaker.set_ip_filter`). Blocked peers are counted
            in ``filtered_ip``, before the ``filters.address`` callable runs.

    Raises:
        ListenError: a listening socket could not be opened, or two ``listen`` pairs of port 0
            overlap.
    """
    if isinstance(peer_id, bytes):
        peer_id = PeerId(peer_id)
    elif peer_id is None:
        peer_id = PeerId.generate()
    if not isinstance(peer_id, PeerId):
        raise TypeError(f"peer_id must be a PeerId or 20 bytes, not {peer_id!r}")
    if not isinstance(extensions, Extensions):
        raise TypeError(f"extensions must be Extensions, not {extensions!r}")
    if max_concurrent < 1 or max_queued < 0 or backlog < 0:
        raise ValueError("max_concurrent must be positive; max_queued and backlog not negative")
    if max_inbound is not None and max_inbound < 1:
        raise ValueError(f"max_inbound must be positive, not {max_inbound}")
    if max_inbound_per_host is not None and max_inbound_per_host < 1:
        raise ValueError(f"max_inbound_per_host must be positive, not {max_inbound_per_host}")
    if max_outbound_per_host is not None:
        if isinstance(max_outbound_per_host, bool) or not isinstance(max_outbound_per_host, int):
            raise TypeError(f"max_outbound_per_host must be an int, not {max_outbound_per_host!r}")
        if max_outbound_per_host < 1:
            raise ValueError(f"max_outbound_per_host must be positive, not {max_outbound_per_host}")
    for timeout in (connect_timeout, handshake_timeout):
        if math.isnan(timeout) or timeout <= 0:
            raise ValueError(f"a timeout must be positive, not {timeout}")
    if not isinstance(encryption, EncryptionPolicy):
        raise TypeError(f"encryption must be an EncryptionPolicy, not {encryption!r}")
    if on_dial_failed is not None and not callable(on_dial_failed):
        raise TypeError(f"on_dial_failed must be callable, not {on_dial_failed!r}")
    if ip_filter is not None and not isinstance(ip_filter, IPFilter):
        raise TypeError(f"ip_filter must be an IPFilter or None, not {ip_filter!r}")
    inbound = max_concurrent if max_inbound is None else max_inbound
    listeners = await _open_listeners(list(listen))
    handshaker: Handshaker | None = None
    try:
        async with trio.open_nursery() as nursery:
            handshaker = Handshaker(
                nursery,
                peer_id=peer_id,
                extensions=extensions,
                max_concurrent=max_concurrent,
                max_queued=max_queued,
                max_inbound=inbound,
                max_inbound_per_host=(
                    max(1, inbound // 4) if max_inbound_per_host is None else max_inbound_per_host
                ),
                max_outbound_per_host=max_outbound_per_host,
                connect_timeout=connect_timeout,
                handshake_timeout=handshake_timeout,
                filters=filters if filters is not None else HandshakeFilters(),
                encryption=encryption,
                dial=dial if dial is not None else _dial_tcp,
                backlog=backlog,
                listeners=listeners,
                on_dial_failed=on_dial_failed,
                ip_filter=ip_filter,
            )
            nursery.start_soon(handshaker._dispatch)
            for listener in listeners:
                nursery.start_soon(handshaker._serve, listener)
            if listeners:
                _log.info(
                    "accepting peer connections on %s",
                    ", ".join(_listener_name(listener) for listener in listeners),
                )
            else:
                _log.debug("handshaker started without listening (outbound only)")
            try:
                yield handshaker
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Our tasks raise nothing but bugs; unwrap the body's own exception.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True):
            if handshaker is not None:
                stats = handshaker.statistics()
                _log.debug(
                    "handshaker closed: %d handshakes completed, %d failed",
                    stats.completed,
                    stats.failures,
                )
                await handshaker._close()
            else:
                _close_listeners(listeners)
