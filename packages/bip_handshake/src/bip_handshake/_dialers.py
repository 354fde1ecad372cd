"""How a :class:`~bip_handshake.Handshaker` reaches peers: TCP, uTP, or both (:class:`PeerDialer`).

A peer may accept TCP only, uTP only (libtorrent with TCP off), or both; a
:class:`PeerDialer` tries the preferred transport first and falls back to the other
when it fails, as libtorrent does (it prefers uTP; we prefer TCP by default because our
uTP runs in Python and costs far more CPU per byte than the kernel's TCP).

Timing: the whole dial must fit in the caller's deadline (the Handshaker's
``connect_timeout`` wraps every dial in :func:`trio.fail_after`). When both transports
may be tried, the first gets at most ``first_timeout`` seconds (3 s by default:
libtorrent's ``utp_connect_timeout``) and at most ``first_share`` of the time left
before that deadline (half by default), so that the fallback always has time of its
own (a TCP connect through a proxy: its share only, see below). A refused TCP connect or
a uTP RESET fails at once and leaves the fallback nearly the whole budget.

Memory: a peer may accept a transport and close it at once (libtorrent with TCP off still
listens on TCP, and closes every connection), or not answer it. The dialer remembers, for a
bounded number of addresses, the transport whose last attempt failed that way (the connect
failed and the other transport worked, or the connection ended before the peer sent a
byte), and tries the other one first next time, as libtorrent remembers a peer's transport.
A byte received over the remembered transport (tried when the other failed) clears it.

Hints: :meth:`PeerDialer.prefer_utp_for` makes the dials to one address try uTP first, or
only uTP, for a while. A BEP 55 holepunch needs it: both peers dial each other over uTP at
once, from the UDP socket the relay saw, and those outgoing packets are what open each NAT
for the other's; a TCP attempt first would spend the moment the holes are open. The hints
are bounded (the oldest is forgotten first) and expire.

Local address: a TCP connect is made from ``local_address`` when it is a specific
address of the peer's family (``--bind 127.0.0.2``), as libtorrent binds its connects to
its ``outgoing_interfaces``: peers see us where we accept them, and a peer that refuses
connections from its own address (ctorrent) can be reached. Given one address of each
family (``local_address=("10.8.0.2", "fd00::2")``, a VPN with both), each connect leaves
from the one of the peer's family; a peer of a family with none is dialled from the
system's choice. That choice per family is ours, on purpose: libtorrent rotates through
its ``outgoing_interfaces`` one connect after another whatever the peer's family, so an
entry of the other family fails that connect; here none fails for its source address. A
uTP connect leaves from its :class:`~bip_handshake.UtpSocket`, bound where the owner chose.

Through a proxy: ``connect_tcp`` replaces the direct TCP connect (a
:class:`~bip_handshake.SocksDialer`), and a uTP socket over the proxy's UDP relay is added
with a ``check`` (:meth:`PeerDialer.add_utp`) that refuses a connect at once while the relay
cannot carry it (no UDP association: :class:`~bip_handshake.SocksUnavailableError`). While
it refuses, a dial goes over TCP alone, with the whole deadline and its own error (a proxy
that never relays UDP, as Tor or microsocks, costs nothing). A TCP connect through the
proxy tried first is not held to the 3 s of a direct one, only to its share of the time
left (half by default): a proxy's CONNECT takes the proxy's own connect too. A TCP connect
tried first is cut at its share only if uTP can be tried then: when the relay was lost
meanwhile, the same connect runs on to the caller's deadline (a fresh one would throw the
proxy's work away), and its error, if it fails, is the dial's. A uTP
failure is the peer's, and remembered, only when the check still passes after it and
returns what it returned before (the same association): a relay lost during a SYN, or
under a connection that then died before its first byte, says nothing about the peer (the
fault was ours).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import trio

from ._compact import PeerAddress
from ._socks_shell import _specific_locals
from ._utp_config import UtpConnectError
from ._utp_socket import UtpSocket

__all__ = [
    "DEFAULT_FIRST_SHARE",
    "DEFAULT_FIRST_TIMEOUT",
    "MAX_UTP_HINTS",
    "DialerStatistics",
    "PeerDialer",
    "Transport",
]

_log = logging.getLogger("bip_handshake.dialer")

Transport = Literal["tcp", "utp"]
"""A transport a :class:`PeerDialer` can connect over."""

DEFAULT_FIRST_TIMEOUT: Final = 3.0
"""Seconds the first of two transports may take at most (libtorrent's ``utp_connect_timeout``)."""
DEFAULT_FIRST_SHARE: Final = 0.5
"""The share of the time left before the caller's deadline that the first of two transports
may take at most: the fallback keeps the rest."""
_REFUSED: Final = object()
"""What :meth:`PeerDialer._utp_path` says when a uTP socket's check refuses a connect."""
_MEMORY: Final = 4096
"""Addresses whose failing transport is remembered, at most (the oldest is forgotten first)."""
MAX_UTP_HINTS: Final = 1024
"""Addresses with a :meth:`PeerDialer.prefer_utp_for` hint at once, at most (the oldest set is
forgotten first): each one comes from a peer's message, so their number must be bounded."""


@dataclass(frozen=True, slots=True)
class DialerStatistics:
    """Counters of a :class:`PeerDialer` since it was made (:meth:`PeerDialer.statistics`).

    Every dial ends once: connected over one transport (``tcp_connected`` or
    ``utp_connected``), failed (``failed``), or cancelled (the caller's timeout; counted
    nowhere but in the attempts).

    Attributes:
        dials: dials started.
        tcp_attempts: TCP connects started (first or fallback).
        utp_attempts: uTP connects started (first or fallback).
        tcp_connected: dials that connected over TCP.
        utp_connected: dials that connected over uTP.
        fallbacks: dials whose first transport failed (refused, unreachable, out of its
            share of time) and that tried the other.
        failed: dials where every transport tried failed (the error raised is the last one).
        closed_silent: connections the peer closed before sending a byte (its transport is
            then remembered as failing for that address). A uTP connection whose relay
            association was lost or replaced before it ended is not counted: the fault
            was ours.
        reordered: dials that tried the other transport first because the preferred one
            failed with that address last time.
        hinted: dials that followed a :meth:`PeerDialer.prefer_utp_for` hint (uTP first,
            or only).
        remembered: addresses whose failing transport is remembered now.
        hints: addresses with a uTP hint now (expired ones included until next looked at).
    """

    dials: int = 0
    tcp_attempts: int = 0
    utp_attempts: int = 0
    tcp_connected: int = 0
    utp_connected: int = 0
    fallbacks: int = 0
    failed: int = 0
    closed_silent: int = 0
    reordered: int = 0
    hinted: int = 0
    remembered: int = 0
    hints: int = 0


class PeerDialer:
    """A :data:`~bip_handshake.Dialer` over TCP, uTP, or both with a fallback.

    Pass it as ``open_handshaker(dial=...)``; uTP sockets may be added later (a socket
    listening on the port the Handshaker picked), and removed before they close.

    For up to 4096 addresses it remembers the transport that failed last (its connect
    failed and the other one worked, or the peer closed it before sending a byte) and tries
    the other first next time. The streams it returns wrap the transport's own (a TCP
    ``SocketStream``, a :class:`~bip_handshake.UtpStream`) to see that first read; their
    read-only ``transport`` attribute (``"tcp"`` or ``"utp"``) says which one connected, and
    the Handshaker copies it to :attr:`~bip_handshake.CompletedHandshake.transport`.
    :meth:`prefer_utp_for` makes one address's dials take uTP first or alone for a while
    (a BEP 55 holepunch).

    >>> dialer = PeerDialer(prefer="utp")
    >>> dialer.transports(PeerAddress.parse("10.0.0.1:6881"))  # no uTP socket yet
    ('tcp',)

    Args:
        tcp: whether to connect over TCP at all.
        utp: uTP sockets to connect from, one per IP family (a later one of a family
            replaces an earlier one).
        prefer: the transport tried first when both can reach the peer. ``"tcp"``: uTP
            is the fallback for peers whose TCP port is refused or silent. ``"utp"``:
            libtorrent's order.
        local_address: an IP address to make TCP connects from, for peers of its family;
            or several (``("10.8.0.2", "fd00::2")``): a connect leaves from the first listed
            of the peer's family. A family with none, or whose first is unspecified, lets
            the system pick (``None`` or an empty sequence: for both). Read as
            :func:`~bip_handshake.local_addresses_by_family` reads it (an IPv4-mapped
            address is IPv4).
        first_timeout: seconds the first of two transports may take at most (not a TCP
            connect through ``connect_tcp``: it is held to ``first_share`` only).
        first_share: the share (0 to 1) of the time left before the caller's deadline the
            first of two transports may take at most.
        connect_tcp: how a TCP connect is made (a :class:`~bip_handshake.SocksDialer`:
            through a proxy); ``None``: directly, from ``local_address``, which is then
            not used.

    Raises:
        ValueError: ``prefer`` is not a transport, ``local_address`` is not an IP address
            nor a sequence of them, ``first_timeout`` is not positive or ``first_share`` not
            in (0, 1].
        TypeError: ``connect_tcp`` is not callable.
    """

    def __init__(
        self,
        *,
        tcp: bool = True,
        utp: Iterable[UtpSocket] = (),
        prefer: Transport = "tcp",
        local_address: str | Sequence[str] | None = None,
        first_timeout: float = DEFAULT_FIRST_TIMEOUT,
        first_share: float = DEFAULT_FIRST_SHARE,
        connect_tcp: Callable[[PeerAddress], Awaitable[trio.abc.Stream]] | None = None,
    ) -> None:
        if prefer not in ("tcp", "utp"):
            raise ValueError(f"prefer is 'tcp' or 'utp', not {prefer!r}")
        if not (math.isfinite(first_timeout) and first_timeout > 0):
            raise ValueError(f"first_timeout must be positive and finite, not {first_timeout!r}")
        if not (math.isfinite(first_share) and 0 < first_share <= 1):
            raise ValueError(f"first_share must be in (0, 1], not {first_share!r}")
        if connect_tcp is not None and not callable(connect_tcp):
            raise TypeError(f"connect_tcp must be a dialer (callable), not {connect_tcp!r}")
        self._connect_tcp_via = connect_tcp
        # IP version -> the address TCP connects to peers of that family leave from.
        self._local: dict[int, str] = {
            version: str(address) for version, address in _specific_locals(local_address).items()
        }
        self._tcp = tcp
        self._prefer: Transport = prefer
        self._first_timeout = first_timeout
        self._first_share = first_share
        self._utp: dict[int, UtpSocket] = {}
        # family -> the check of that family's socket (added with one).
        self._utp_checks: dict[int, Callable[[], object]] = {}
        for socket in utp:
            self.add_utp(socket)
        # address -> the transport that failed with it last time (bounded, oldest first).
        self._failing: OrderedDict[PeerAddress, Transport] = OrderedDict()
        # address -> (when the hint expires, uTP only?); bounded, oldest set first.
        self._hints: OrderedDict[PeerAddress, tuple[float, bool]] = OrderedDict()
        self._counts = dict.fromkeys(
            (
                "dials",
                "tcp_attempts",
                "utp_attempts",
                "tcp_connected",
                "utp_connected",
                "fallbacks",
                "failed",
                "closed_silent",
                "reordered",
                "hinted",
            ),
            0,
        )

    @property
    def prefer(self) -> Transport:
        """The transport tried first when both can reach a peer."""
        return self._prefer

    @property
    def local_addresses(self) -> tuple[str, ...]:
        """The addresses direct TCP connects leave from, one per IP family at most, in the
        order given (a peer of a family with none: the system picks).

        >>> PeerDialer(local_address=("fd00::2", "10.8.0.2")).local_addresses
        ('fd00::2', '10.8.0.2')
        """
        return tuple(self._local.values())

    @property
    def utp_sockets(self) -> tuple[UtpSocket, ...]:
        """The uTP sockets connects leave from, one per IP family."""
        return tuple(self._utp.values())

    def add_utp(self, socket: UtpSocket, *, check: Callable[[], object] | None = None) -> None:
        """Connect over ``socket`` to peers of its IP family (replacing that family's socket).

        Args:
            socket: the uTP socket.
            check: called when a dial picks its transports and before each connect over
                ``socket``; it raises an :class:`OSError` when the socket cannot carry one
                now (a uTP socket over a SOCKS5 relay with no UDP association:
                :class:`~bip_handshake.SocksUnavailableError`). A dial that can go over TCP
                then goes over TCP alone, with the whole deadline; one that cannot fails
                at once with that error. What it returns names the path the connects take
                (the relay's association: any value that compares equal while the path is
                the same one): a uTP connect that failed, or a uTP connection that ended
                before the peer's first byte, is remembered against the address only when
                the check still passes afterwards and returns an equal value.

        Raises:
            TypeError: ``socket`` is not a :class:`~bip_handshake.UtpSocket`, or ``check``
                is not callable.
        """
        if not isinstance(socket, UtpSocket):
            raise TypeError(f"a uTP socket is a UtpSocket, not {socket!r}")
        if check is not None and not callable(check):
            raise TypeError(f"check must be callable, not {check!r}")
        family = socket.local_address.family
        self._utp[family] = socket
        if check is None:
            self._utp_checks.pop(family, None)
        else:
            self._utp_checks[family] = check

    def remove_utp(self, socket: UtpSocket) -> None:
        """Stop connecting over ``socket`` (before it closes); unknown sockets are ignored."""
        family = socket.local_address.family
        if self._utp.get(family) is socket:
            del self._utp[family]
            self._utp_checks.pop(family, None)

    def prefer_utp_for(self, address: PeerAddress, ttl: float, *, only: bool = True) -> None:
        """Dial ``address`` over uTP first (``only``: over uTP alone) for ``ttl`` seconds.

        For a BEP 55 holepunch: both ends dial at once over uTP, and it is their outgoing
        uTP packets that open the NATs; a TCP attempt first would waste that moment, and
        TCP rarely passes such a NAT at all. The hint holds for every dial to the address
        until it expires (an encrypted dial redialled in plaintext goes through the same
        hole), and replaces an earlier one. At most :data:`MAX_UTP_HINTS` addresses have
        one (the oldest set is forgotten). A dial to an address of a family with no uTP
        socket ignores it. Reads trio's clock: call it from inside trio.

        Raises:
            ValueError: ``ttl`` is not a positive finite number of seconds.
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        if not isinstance(address, PeerAddress):
            raise TypeError(f"address must be a PeerAddress, not {address!r}")
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not (math.isfinite(ttl) and ttl > 0)
        ):
            raise ValueError(f"ttl must be a positive finite number of seconds, not {ttl!r}")
        key = address.normalized()
        self._hints[key] = (trio.current_time() + ttl, bool(only))
        self._hints.move_to_end(key)
        while len(self._hints) > MAX_UTP_HINTS:
            self._hints.popitem(last=False)

    def _hint(self, address: PeerAddress) -> bool | None:
        """The live hint for a normalised ``address``: uTP only (True), first (False), or None."""
        hint = self._hints.get(address)
        if hint is None:
            return None
        deadline, only = hint
        if trio.current_time() >= deadline:
            del self._hints[address]
            return None
        return only

    def transports(self, address: PeerAddress) -> tuple[Transport, ...]:
        """The transports a dial to ``address`` would try, in order (the preferred one last
        when it failed with this address last time; uTP first, or alone, while a
        :meth:`prefer_utp_for` hint holds)."""
        address = address.normalized()
        usable: list[Transport] = []
        if self._tcp:
            usable.append("tcp")
        if address.family in self._utp:
            if self._tcp and not self._utp_ready(address.family):
                # The socket cannot carry a connect now (no UDP association through the
                # proxy): its refusal would be no news about the peer, and TCP alone keeps
                # the whole deadline with no cut to wait for.
                return tuple(usable)
            hint = self._hint(address) if self._hints else None
            if hint is not None:
                return ("utp",) if hint or not self._tcp else ("utp", "tcp")
            usable.append("utp")
        if self._prefer == "utp":
            usable.reverse()
        if len(usable) == 2 and self._failing.get(address) == usable[0]:
            usable.reverse()
        return tuple(usable)

    def statistics(self) -> DialerStatistics:
        """A snapshot of the counters."""
        return DialerStatistics(
            **self._counts, remembered=len(self._failing), hints=len(self._hints)
        )

    def _remember(self, address: PeerAddress, transport: Transport) -> None:
        """``transport`` failed with ``address``: try the other first next time."""
        self._failing[address] = transport
        self._failing.move_to_end(address)
        while len(self._failing) > _MEMORY:
            self._failing.popitem(last=False)

    def _settled(
        self, address: PeerAddress, transport: Transport, path: object, spoke: bool
    ) -> None:
        """A connection's first read: the peer sent a byte (``spoke``), or closed first.

        ``path`` is what the uTP socket's check returned when the connect left: a uTP
        connection that ended while that path was lost or replaced died of our relay, and
        says nothing about the peer."""
        if spoke:
            if self._failing.get(address) == transport:
                del self._failing[address]
            return
        if transport == "utp" and not self._same_path(address.family, path):
            return
        self._counts["closed_silent"] += 1
        if self._tcp and address.family in self._utp:  # only worth it with a choice
            self._remember(address, transport)

    async def __call__(self, address: PeerAddress) -> trio.abc.Stream:
        """Connect to ``address``: the preferred transport, then the other if it fails.

        Raises:
            OSError: every transport tried failed (the last one's error: a refused TCP
                connect, a :class:`~bip_handshake.UtpConnectError`, what a uTP socket's
                ``check`` raised...), or none can reach the peer (a
                :class:`~bip_handshake.UtpConnectError` saying so).
        """
        address = address.normalized()
        order = self.transports(address)
        self._counts["dials"] += 1
        # transports() looked at the hint (and dropped an expired one) only with uTP there
        # and its check passing.
        hinted = "utp" in order and address in self._hints
        if hinted:
            self._counts["hinted"] += 1
        if not order:
            await trio.lowlevel.checkpoint()
            self._counts["failed"] += 1
            raise UtpConnectError(f"no transport reaches {address} (TCP off, no uTP socket)")
        if len(order) == 1:
            return await self._attempt(order[0], address)
        first, second = order
        if first != self._prefer and not hinted:
            self._counts["reordered"] += 1
        # The path a first uTP connect takes, read in the same step as the attempt's own
        # check (no checkpoint between): its failure is the peer's only if that path is
        # still up, and the same one, once it failed.
        path = self._utp_path(address.family) if first == "utp" else None
        budget = self._first_budget(first)
        try:
            if first == "tcp" and address.family in self._utp_checks:
                stream = await self._first_tcp(address, budget)
                if stream is not None:
                    return stream
            else:
                with trio.move_on_after(budget):
                    return await self._attempt(first, address, last=False)
            reason = "no answer in its share of the time"
        except OSError as failure:
            if second == "utp" and not self._utp_ready(address.family):
                # The relay was lost while TCP was tried: uTP would be refused at once, and
                # its refusal is no news about the peer. TCP's own error is the dial's.
                self._counts["failed"] += 1
                raise
            reason = str(failure) or type(failure).__name__
        peers_fault = first == "tcp" or self._same_path(address.family, path)
        self._counts["fallbacks"] += 1
        _log.debug("%s connect to %s failed (%s); trying %s", first, address, reason, second)
        stream = await self._attempt(second, address)
        if peers_fault:
            self._remember(address, first)
        return stream

    async def _first_tcp(self, address: PeerAddress, budget: float) -> trio.abc.Stream | None:
        """A TCP connect tried first, before a uTP socket with a check: cut after ``budget``
        seconds only if that check lets a uTP connect go then (``None``: it was cut).

        With the relay down at that moment, cutting would leave nothing to fall back on: the
        same connect runs on to the caller's deadline (a second one would start the proxy's
        work over, with half the time). The check is read once, at the cut: a relay back
        later finds the connect still running, and lets it finish.
        """
        connect = trio.CancelScope()
        cut_at = trio.current_time() + budget

        async def cut() -> None:
            await trio.sleep_until(cut_at)
            if self._utp_ready(address.family):
                connect.cancel()
            else:
                _log.debug("tcp connect to %s: no uTP at its share of the time, runs on", address)

        stream: trio.abc.Stream | None = None
        error: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cut)
                with connect:
                    try:
                        stream = await self._attempt("tcp", address, last=False)
                    except Exception as failure:  # raised below as itself, not in a group
                        error = failure
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The caller's deadline cancelled both tasks: one Cancelled, as a dial without
            # the cut raises (anything else is a bug of the check, left as trio reports it).
            cancelled, rest = group.split(trio.Cancelled)
            if rest is None and cancelled is not None:
                raise cancelled.exceptions[0] from None
            raise
        if error is not None:
            raise error  # as itself: its __cause__ (a proxy's reason) is kept
        return stream

    def _utp_ready(self, family: int) -> bool:
        """Whether the check of ``family``'s uTP socket (if any) lets a connect go now."""
        return self._utp_path(family) is not _REFUSED

    def _utp_path(self, family: int) -> object:
        """What the check of ``family``'s uTP socket returns now (None without a check), or
        ``_REFUSED`` when it refuses a connect."""
        check = self._utp_checks.get(family)
        if check is None:
            return None
        try:
            return check()
        except OSError:
            return _REFUSED

    def _same_path(self, family: int, path: object) -> bool:
        """Whether ``family``'s uTP socket can still carry a connect over ``path`` (what its
        check returned when a connect left): a failure since then is the peer's."""
        if path is _REFUSED:
            return False
        now = self._utp_path(family)
        return now is not _REFUSED and now == path

    def _first_budget(self, first: Transport) -> float:
        """Seconds the first of two transports may take.

        A TCP connect through a proxy (``connect_tcp``) gets its share of the time left
        (half by default: 5 s of the session's 10) but not the 3 s cap. That cap fits a
        direct connect, where a peer that answers does so within a SYN retry or two; a
        proxy's CONNECT also holds the proxy's own connect to the peer (and a circuit, for
        Tor), seconds as a rule, while a refused or unreachable peer is still reported at
        once by the proxy's reply (and it is cut there only if uTP can be tried then:
        :meth:`_first_tcp`). Cut at 3 s, a slow but working proxy lost every peer to a
        uTP fallback that then had to succeed. The whole budget (libtorrent never cancels a
        TCP connect to try uTP, but it tries uTP first) would leave no uTP at all for a peer
        whose TCP port drops SYNs: the proxy waits out its own connect timeout, tens of
        seconds. A proxy that does not relay UDP (Tor) is not concerned: its check refuses,
        and TCP is dialled alone with the whole deadline.
        """
        left = max(trio.current_effective_deadline() - trio.current_time(), 0.0)
        if first == "tcp" and self._connect_tcp_via is not None:
            return left * self._first_share
        return min(self._first_timeout, left * self._first_share)

    async def _attempt(
        self, transport: Transport, address: PeerAddress, *, last: bool = True
    ) -> trio.abc.Stream:
        """One connect; counts it, and the dial's failure when this is the ``last`` try."""
        self._counts[f"{transport}_attempts"] += 1
        path: object = None
        try:
            if transport == "tcp":
                stream = await self._connect_tcp(address)
            else:
                stream, path = await self._connect_utp(address)
        except OSError:
            if last:
                self._counts["failed"] += 1
            raise
        self._counts[f"{transport}_connected"] += 1
        return _FirstReadWatch(
            stream, transport, lambda spoke: self._settled(address, transport, path, spoke)
        )

    async def _connect_tcp(self, address: PeerAddress) -> trio.abc.Stream:
        if self._connect_tcp_via is not None:
            return await self._connect_tcp_via(address)
        local = self._local.get(address.family)
        if local is not None:
            return await trio.open_tcp_stream(str(address.host), address.port, local_address=local)
        return await trio.open_tcp_stream(str(address.host), address.port)

    async def _connect_utp(self, address: PeerAddress) -> tuple[trio.abc.Stream, object]:
        """A uTP connect, and the path it took (what the socket's check returned)."""
        socket = self._utp.get(address.family)
        if socket is None:  # removed while the first transport was tried
            await trio.lowlevel.checkpoint()
            raise UtpConnectError(f"no uTP socket reaches {address}")
        check = self._utp_checks.get(address.family)
        path: object = None
        if check is not None:
            try:
                path = check()
            except OSError:
                await trio.lowlevel.checkpoint()  # a dial is a checkpoint, refused or not
                raise
        return await socket.connect(address), path


class _FirstReadWatch(trio.abc.Stream):
    """A dialled stream that reports its first read: data (the peer speaks this transport) or
    the end of the stream (it accepted the connection only to close it).

    Its :attr:`transport` tells the :class:`~bip_handshake.Handshaker` (through
    :class:`~bip_handshake.HasTransport`) what carries the connection, which this wrapper
    would hide otherwise."""

    __slots__ = ("_inner", "_report", "_transport")

    def __init__(
        self, inner: trio.abc.Stream, transport: Transport, report: Callable[[bool], None]
    ) -> None:
        self._inner = inner
        self._transport: Transport = transport
        self._report: Callable[[bool], None] | None = report

    @property
    def transport(self) -> Transport:
        """The transport the dial connected over: ``"tcp"`` or ``"utp"``."""
        return self._transport

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        report = self._report
        if report is None:
            return await self._inner.receive_some(max_bytes)
        try:
            data = await self._inner.receive_some(max_bytes)
        except trio.BrokenResourceError:  # reset by the peer
            self._report = None
            report(False)
            raise
        self._report = None
        report(bool(data))
        return data

    async def aclose(self) -> None:
        self._report = None  # closed by us: says nothing about the peer
        await self._inner.aclose()
