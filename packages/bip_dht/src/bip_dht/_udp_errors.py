"""What the system learns about our datagrams that went nowhere: Linux's socket error queue.

Private to :mod:`bip_dht._shell`. A datagram to a port nobody listens on comes back as an ICMP
port unreachable (a dead host or network as host or network unreachable). libtorrent hands
such an error to its DHT (``dht_tracker::incoming_error``), which fails the query to that node
at once instead of waiting for its timeout, so a lookup moves on to the next node sooner.

An unconnected UDP socket hears of ICMP errors on Linux only with ``IP_RECVERR``
(``IPV6_RECVERR``). With it, every error is queued on the socket's *error queue* and read with
``recvmsg(MSG_ERRQUEUE)``: the original destination in ``msg_name``, the head of the original
datagram as data, and one control message holding a ``struct sock_extended_err``
(``<linux/errqueue.h>``: ``ee_errno``, ``ee_origin``, ``ee_type``, ``ee_code``...). Two side
effects the shell must handle, both seen on a real kernel:

- while entries wait in the queue the socket polls as in error (``EPOLLERR``), which wakes a
  reader without a datagram to read: a reader that does not drain the queue would spin;
- each ICMP error also sets the socket's pending error, which the *next* ``recvfrom`` or
  ``sendto`` reports instead of doing its job (the send sends nothing), whatever its
  destination; the queue entry stays. A send failing so is tried once more.

Elsewhere (macOS, Windows) nothing here is used and the shell reads as before.

This module parses the queue's entries (defensively: :func:`parse_error_report` raises
:class:`ErrorReportError` on anything but a well-formed entry) and reads them in bounded
batches (:class:`ErrorQueue`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket as stdlib_socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Final

import trio

from bip_handshake import CompactError, PeerAddress

from ._errors import DHTError

__all__ = [
    "IS_LINUX",
    "MAX_REPORTS_PER_WAKE",
    "PENDING_ERRNOS",
    "UNREACHABLE_ERRNOS",
    "ErrorQueue",
    "ErrorReportError",
    "UDPErrorReport",
    "enable_error_queue",
    "parse_error_report",
]

_log = logging.getLogger("bip_dht.node")

IS_LINUX: Final = sys.platform.startswith("linux")

# <linux/in.h> and <linux/in6.h>: Python's socket module exports neither (3.11).
IP_RECVERR: Final = 11
IPV6_RECVERR: Final = 25
MSG_ERRQUEUE: Final = 0x2000  # <bits/socket.h>
# ee_origin values (<linux/errqueue.h>).
SO_EE_ORIGIN_LOCAL: Final = 1
SO_EE_ORIGIN_ICMP: Final = 2
SO_EE_ORIGIN_ICMP6: Final = 3
_ICMP_ORIGINS: Final = frozenset({SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6})
# The (cmsg_level, cmsg_type) pairs that carry a sock_extended_err.
_RECVERR_CMSGS: Final = frozenset(
    {(stdlib_socket.IPPROTO_IP, IP_RECVERR), (stdlib_socket.IPPROTO_IPV6, IPV6_RECVERR)}
)

UNREACHABLE_ERRNOS: Final = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
"""The errors that say the destination is not there: port (ICMP port unreachable), host and
network unreachable. Others (a path MTU report, a parameter problem, local errors) say nothing
about the node."""

PENDING_ERRNOS: Final = frozenset(
    {
        *UNREACHABLE_ERRNOS,
        errno.EHOSTDOWN,  # host unknown
        errno.ENONET,  # host isolated
        errno.ENOPROTOOPT,  # protocol unreachable
        errno.EOPNOTSUPP,  # source route failed
        errno.EMSGSIZE,  # fragmentation needed, packet too big
        errno.EPROTO,  # parameter problem
        errno.EACCES,  # administratively prohibited (ICMPv6; a firewall's usual reject)
    }
)
"""Every error Linux makes of an ICMP or ICMPv6 error (``icmp_err_convert``,
``icmpv6_err_convert``). With the option on, each report also leaves its error pending on the
socket, so the next ``recvfrom`` or ``sendto`` raises it whatever that call's datagram: none
of them says anything about the socket, and a reader that stopped on one would let anybody
who forges an ICMP parameter problem to our port end the DHT."""

MAX_REPORTS_PER_WAKE: Final = 64
"""Queue entries read per wake-up of a socket's reader: a flood of ICMP errors (forged, or a
burst of dead peers) costs bounded work between two datagrams; what is left keeps the socket
readable and is read at the next wake-up."""

# struct sock_extended_err: u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad; u32 ee_info;
# u32 ee_data, in the host's byte order; the offender's sockaddr follows (unused).
_EXTENDED_ERR: Final = struct.Struct("=IBBBBII")
# Of the original datagram, as much as the ICMP message quoted, up to this: enough to reach a
# query's "t" after its arguments (quoted_krpc), and tells KRPC ('d') from another protocol.
# Linux quotes up to 576 bytes of IPv4 packet (548 of it after the headers), IPv6 up to 1280.
PAYLOAD_HEAD: Final = 512
# Room for the one control message: the struct and the largest offender (sockaddr_in6, 28).
_ANCILLARY_SIZE: Final = 128


class ErrorReportError(DHTError):
    """An error queue entry is not what Linux writes (the reader ignores and counts it)."""


@dataclass(frozen=True, slots=True)
class UDPErrorReport:
    """One entry of a socket's error queue.

    Attributes:
        destination: where the datagram that failed was going (IPv4-mapped is IPv4).
        errno: the error (``ee_errno``): ``ECONNREFUSED`` for port unreachable...
        origin: who reported it (``ee_origin``): 2 ICMP, 3 ICMPv6, 1 the local stack.
        icmp_type: the ICMP type (``ee_type``; 0 for local errors).
        icmp_code: the ICMP code (``ee_code``).
        payload: the head of the datagram that failed, as much as the ICMP message quoted (up
            to :data:`PAYLOAD_HEAD` bytes; empty when it quoted none of it).
    """

    destination: PeerAddress
    errno: int
    origin: int
    icmp_type: int
    icmp_code: int
    payload: bytes

    @property
    def unreachable(self) -> bool:
        """Whether a router or the destination said nobody is there (ICMP, not a local
        error, and port, host or network unreachable)."""
        return self.origin in _ICMP_ORIGINS and self.errno in UNREACHABLE_ERRNOS


def _destination(address: object) -> PeerAddress:
    # recvmsg gives (host, port) for IPv4 and (host, port, flowinfo, scope_id) for IPv6.
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ErrorReportError(f"no destination address: {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        raise ErrorReportError(f"bad destination address: {address!r}")
    try:
        return PeerAddress(ip_address(host), port).normalized()
    except (ValueError, CompactError) as error:
        # a scoped (link-local) destination: the node never sends to one
        raise ErrorReportError(f"bad destination address {address!r}: {error}") from None


def parse_error_report(payload: object, ancdata: object, address: object) -> UDPErrorReport:
    """The report in one error queue entry, as ``recvmsg(MSG_ERRQUEUE)`` returns it: the
    datagram's head, the control messages, the destination.

    Raises:
        ErrorReportError: no single well-formed extended error, or no usable destination.
    """
    if not isinstance(payload, bytes):
        raise ErrorReportError(f"the payload is not bytes: {type(payload).__name__}")
    if not isinstance(ancdata, Sequence) or isinstance(ancdata, str | bytes):
        raise ErrorReportError(f"the control data is not a list: {type(ancdata).__name__}")
    found: bytes | None = None
    for item in ancdata:
        if not isinstance(item, tuple) or len(item) != 3:
            raise ErrorReportError(f"a control message is not (level, type, data): {item!r}")
        level, kind, data = item
        if not isinstance(level, int) or not isinstance(kind, int) or not isinstance(data, bytes):
            raise ErrorReportError(f"a control message is not (level, type, data): {item!r}")
        if (level, kind) not in _RECVERR_CMSGS:
            continue  # another option's message (a timestamp...): not ours to read
        if found is not None:
            raise ErrorReportError("two extended errors in one entry")
        found = data
    if found is None:
        raise ErrorReportError("no extended error in the entry")
    if len(found) < _EXTENDED_ERR.size:
        raise ErrorReportError(f"an extended error is {_EXTENDED_ERR.size} bytes, got {len(found)}")
    code, origin, icmp_type, icmp_code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(found)
    return UDPErrorReport(
        destination=_destination(address),
        errno=code,
        origin=origin,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        payload=payload[:PAYLOAD_HEAD],
    )


def _option(family: int) -> tuple[int, int]:
    if family == stdlib_socket.AF_INET6:
        return stdlib_socket.IPPROTO_IPV6, IPV6_RECVERR
    return stdlib_socket.IPPROTO_IP, IP_RECVERR


def enable_error_queue(sock: stdlib_socket.socket) -> bool:
    """Turn on ``IP_RECVERR`` / ``IPV6_RECVERR`` on *sock*; whether it is on (never off
    Linux, and off when the system refuses: the caller reads as without it)."""
    if not IS_LINUX:
        return False
    level, option = _option(sock.family)
    try:
        sock.setsockopt(level, option, 1)
    except OSError as error:
        _log.debug("cannot receive ICMP errors on the DHT socket: %s", error)
        return False
    return True


class ErrorQueue:
    """One socket's error queue, read in batches.

    *sock* is a non-blocking stdlib socket with the option on; :meth:`open` makes one from a
    trio socket. A read that fails other than "empty" (which Linux never does) turns the
    option off, which also empties the queue, so a broken queue can never keep the reader
    awake in a loop.

    Attributes:
        socket: the stdlib socket (reads that must not wait go through it).
        enabled: whether the option is still on.
        read: entries read.
        malformed: entries that :func:`parse_error_report` refused (ignored).
    """

    __slots__ = ("enabled", "malformed", "read", "socket")

    def __init__(self, sock: stdlib_socket.socket) -> None:
        self.socket = sock
        self.enabled = True
        self.read = 0
        self.malformed = 0

    @classmethod
    def open(cls, sock: trio.socket.SocketType) -> ErrorQueue | None:
        """The error queue of *sock* with the option turned on, read through a duplicate of
        its descriptor (the same socket: the option set on it is the socket's, and closing it
        leaves *sock* open); None off Linux, or when the system refuses (then the shell reads
        as elsewhere). Call it before the first send: errors before are not queued."""
        if not IS_LINUX:
            return None
        try:
            fd = os.dup(sock.fileno())
        except OSError as error:
            _log.debug("cannot read the DHT socket's error queue: %s", error)
            return None
        try:
            raw = stdlib_socket.socket(fileno=fd)
        except OSError as error:
            os.close(fd)  # the duplicate is ours until a socket owns it
            _log.debug("cannot read the DHT socket's error queue: %s", error)
            return None
        # non-blocking, whatever socket.setdefaulttimeout says: trio does the waiting
        raw.setblocking(False)
        if not enable_error_queue(raw):
            raw.close()
            return None
        return cls(raw)

    def close(self) -> None:
        """Close the duplicate (not the socket it duplicates)."""
        self.enabled = False
        self.socket.close()

    def drain(self, limit: int = MAX_REPORTS_PER_WAKE) -> list[UDPErrorReport]:
        """Read up to *limit* entries; the well-formed ones (never raises)."""
        reports: list[UDPErrorReport] = []
        for _ in range(limit if self.enabled else 0):
            try:
                payload, ancdata, _flags, address = self.socket.recvmsg(
                    PAYLOAD_HEAD, _ANCILLARY_SIZE, MSG_ERRQUEUE
                )
            except BlockingIOError:
                break  # empty
            except OSError as error:
                _log.debug("the DHT socket's error queue failed (%s): ICMP errors ignored", error)
                self.disable()
                break
            self.read += 1
            try:
                reports.append(parse_error_report(payload, ancdata, address))
            except ErrorReportError as error:
                self.malformed += 1
                _log.debug("ignored an error report of the DHT socket: %s", error)
        return reports

    def disable(self) -> None:
        """Turn the option off (Linux drops what the queue holds); never raises."""
        self.enabled = False
        level, option = _option(self.socket.family)
        with contextlib.suppress(OSError):  # a socket that took the option gives it back
            self.socket.setsockopt(level, option, 0)
