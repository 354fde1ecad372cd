"""Sharing the DHT's UDP socket with another protocol (uTP), as libtorrent shares one port.

Private to :mod:`bip_dht._shell`. Peers expect a client's uTP (BEP 29) on the same UDP port as
its DHT node (BEP 5's habit: both on the TCP listen port), so libtorrent runs one UDP socket
per address and tells the protocols apart by the first byte: a KRPC message is a bencoded
dictionary (``d``), a uTP packet starts with ``(type << 4) | 1`` (0x01, 0x11 ... 0x41), so no
byte value is claimed by both. This module holds the two halves of that:

- :class:`ForeignDatagrams` hands every datagram that cannot be KRPC to the owner's callback,
  counting them and surviving a callback that raises (the DHT must outlive a bug upstream).
- :class:`DatagramSender` serialises the sends of one socket, so the node's own queries and
  the owner's datagrams can go out of it from different tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, TypeAlias

import trio

from bip_handshake import Family, FragmentControl, PeerAddress

__all__ = [
    "MAX_PAYLOAD",
    "WARN_EVERY",
    "DatagramSender",
    "ForeignDatagrams",
    "OtherDatagrams",
    "is_krpc_candidate",
]

_log = logging.getLogger("bip_dht.node")

OtherDatagrams: TypeAlias = Callable[[bytes, PeerAddress], None]
"""The callback of ``open_dht(other_datagrams=...)``: a datagram and its sender."""

MAX_PAYLOAD: Final[dict[Family, int]] = {4: 65507, 6: 65527}
"""The largest UDP payload per family (65535 less the UDP header, and the IPv4 header)."""

WARN_EVERY: Final = 1000
"""A raising callback is logged at WARNING on its first failure and every this many after
(with the traceback); the others at DEBUG. A bug that fails on every packet of a transfer
would otherwise write a warning per datagram."""


def is_krpc_candidate(data: bytes) -> bool:
    """Whether *data* may be a KRPC message: every one is a bencoded dictionary.

    >>> is_krpc_candidate(b"d1:y1:qe"), is_krpc_candidate(bytes([0x41, 1]))
    (True, False)
    """
    return data[:1] == b"d"


class ForeignDatagrams:
    """Where the shell's reader sends the datagrams that are not KRPC candidates.

    The callback runs synchronously in the reader task: while it runs, the socket is not read,
    so it must not block (queue the datagram, or feed a sans-IO core, and return). A callback
    that raises ``Exception`` loses that datagram and nothing else: the failure is counted and
    logged (see :data:`WARN_EVERY`) and the reader goes on.

    Attributes:
        callback: the owner's function.
        received: datagrams handed to it.
        failures: how many of those calls raised.
    """

    __slots__ = ("callback", "failures", "received")

    def __init__(self, callback: OtherDatagrams) -> None:
        self.callback = callback
        self.received = 0
        self.failures = 0

    def deliver(self, data: bytes, source: PeerAddress) -> None:
        """Hand one datagram to the callback; never raises what the callback raised."""
        self.received += 1
        try:
            self.callback(data, source)
        except Exception:
            self.failures += 1
            if self.failures % WARN_EVERY == 1:
                _log.warning(
                    "the DHT's other_datagrams callback raised (%d times so far; logged once "
                    "per %d); the datagram from %s is dropped",
                    self.failures,
                    WARN_EVERY,
                    source,
                    exc_info=True,
                )
            else:
                _log.debug(
                    "the DHT's other_datagrams callback raised on a datagram from %s", source
                )


class DatagramSender:
    """One UDP socket's sends, one at a time.

    trio lets only one task at a time wait for a socket to become writable (another gets
    :class:`trio.BusyResourceError`), and a UDP send waits when the kernel's buffer is full,
    which a fast uTP transfer reaches. Sends take a lock; the lock is taken without a
    checkpoint when free (``acquire_nowait``), so an uncontended send costs what a bare
    ``sendto`` does (an awaited acquire adds two trips through the scheduler, ~40% of a
    loopback send). trio's lock is fair: neither the node nor the owner can starve the other.
    """

    __slots__ = ("_fragments", "_lock", "socket")

    def __init__(
        self, sock: trio.socket.SocketType, fragments: FragmentControl | None = None
    ) -> None:
        """``fragments``: the socket's "don't fragment" control, where the system has one."""
        self.socket = sock
        self._fragments = fragments
        self._lock = trio.Lock()

    async def send(
        self,
        data: bytes | bytearray | memoryview,
        address: PeerAddress,
        *,
        dont_fragment: bool = False,
    ) -> None:
        """Send *data* to *address* (of the socket's family); the system's ``OSError``
        propagates. ``dont_fragment``: a path MTU probe (uTP's), sent with "don't fragment"
        where the system lets us choose; the switch happens within this send's turn, so no
        other datagram goes out with it."""
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        fragments = self._fragments if dont_fragment else None
        try:
            if fragments is not None:
                fragments.dont_fragment()
            try:
                await self.socket.sendto(data, (str(address.host), address.port))
            finally:
                if fragments is not None:
                    fragments.allow_fragment()
        finally:
            self._lock.release()
