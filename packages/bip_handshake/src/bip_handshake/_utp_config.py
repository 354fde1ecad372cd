"""uTP settings and errors, shared by the sans-IO connection and the trio socket."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Final

from ._errors import HandshakeError

__all__ = [
    "DATAGRAM_SIZE",
    "MAX_PAYLOAD",
    "MIN_DATAGRAM",
    "PACKET_OVERHEAD",
    "UtpConfig",
    "UtpConnectError",
    "UtpError",
]

PACKET_OVERHEAD: Final = 20 + 2 + 32
"""Bytes of a datagram that are not payload, at most: the header and our largest selective ack."""
DATAGRAM_SIZE: Final = 1232
"""The datagram size every path carries: IPv6's 1280-byte minimum MTU less the IPv6 and UDP
headers. The default path MTU floor (``UtpConfig.min_datagram``), and the unit window
arithmetic counts in.

Packets grow past it as far as the path carries them: each connection discovers its path
MTU between ``UtpConfig.min_datagram`` and ``UtpConfig.max_datagram_v4`` /
``max_datagram_v6``. This size sets :data:`MAX_PAYLOAD`, the unit of the initial and
smallest congestion window, of pacing bursts and of buffer minimums.
"""
MAX_PAYLOAD: Final = DATAGRAM_SIZE - PACKET_OVERHEAD
"""The payload of a :data:`DATAGRAM_SIZE` datagram: the unit windows and buffers count in."""
MIN_DATAGRAM: Final = 548
"""The smallest datagram size a connection ever falls back to: IPv4's 576-byte minimum
datagram every host must take, less the IPv4 and UDP headers (libtorrent's floor)."""
_MAX_DATAGRAM: Final = {4: 65507, 6: 65527}
"""The largest UDP payload per IP version."""
_INT_FIELDS: Final = frozenset(
    (
        "max_connections",
        "max_pending_accepts",
        "receive_buffer",
        "send_buffer",
        "max_buffered",
        "max_timeouts",
        "syn_retries",
        "min_datagram",
        "max_datagram_v4",
        "max_datagram_v6",
    )
)


class UtpError(HandshakeError):
    """A uTP connection failed: reset by the peer, timed out, or refused.

    Streams report it as the ``__cause__`` of :class:`trio.BrokenResourceError`.
    """


class UtpConnectError(UtpError, OSError):
    """A uTP connect failed: no answer in time, a RESET, too many connections, a closed socket.

    Also an :class:`OSError`, as a failed TCP connect is: a dialer's caller (the
    :class:`~bip_handshake.Handshaker`) counts it as a failed connect like any other.

    >>> isinstance(UtpConnectError("refused"), OSError)
    True
    """


@dataclass(frozen=True, slots=True)
class UtpConfig:
    """Settings of a :class:`~bip_handshake._utp_socket.UtpSocket` and its connections.

    >>> UtpConfig().max_connections
    1024
    >>> UtpConfig().max_datagram_v6
    1452
    >>> UtpConfig(idle_timeout=0)
    Traceback (most recent call last):
    ...
    ValueError: idle_timeout must be positive, got 0

    Attributes:
        max_connections: connections (in any state) at once; a SYN beyond it is refused
            with a RESET, a connect beyond it raises :class:`UtpConnectError`.
        max_pending_accepts: accepted connections waiting in
            :meth:`~bip_handshake.UtpSocket.incoming`; a SYN beyond them is
            refused with a RESET (a SYN flood costs at most this many connections).
        connect_timeout: seconds a connect may take (the SYN is resent meanwhile). An
            accepted connection whose initiator sent nothing but one SYN for
            ``keepalive_interval + connect_timeout`` is given up (half-open: a SYN flood's).
        idle_timeout: seconds without any packet from the peer before a connection is
            declared dead (keepalives keep an idle one open: ours every ~29 s,
            libtorrent's BitTorrent keep-alives after a minute of idleness); also the
            longest written bytes may wait without the peer acknowledging any of them (a
            peer that keeps answering with a shut window fails then, with a RESET).
        receive_buffer: bytes a connection buffers for the reader, in order and out of
            order; this is the window we advertise, so it bounds what a peer can make
            us hold.
        send_buffer: bytes written but not yet packetised, per connection; a writer
            waits when it is full.
        max_buffered: bytes received and not yet read (in order, or waiting out of
            order) over every connection of one socket together, 64 MiB by default;
            ``receive_buffer`` alone would let ``max_connections`` peers make us hold
            about 1 GiB. When it runs short, connections advertise smaller windows and
            drop data they cannot afford (the peer resends it); out-of-order data may
            take at most half of it, so that in-order data always finds room.
        keepalive_interval: seconds of our silence after which we send an ST_STATE, so
            that NATs and the peer's idle timer keep the connection.
        max_timeouts: consecutive retransmission timeouts (1 s, 2 s, 4 s... as BEP 29)
            after which a connection is declared dead.
        syn_retries: how often a SYN is resent before the connect fails.
        close_timeout: seconds a closed connection lingers, delivering what was written
            and waiting for the peer's FIN, before it is forgotten.
        resets_per_second: RESETs we answer packets for unknown connections with, at most,
            so that spoofed packets cannot turn us into a reflector.
        min_datagram: the path MTU floor, in UDP payload bytes: every connection starts
            with datagrams no larger than this, and sends larger ones only once a probe
            showed that the path carries them. 1232 by default: IPv6's 1280-byte minimum
            MTU less the IPv6 and UDP headers, which every IPv6 path and any sane IPv4
            path (tunnels included: WireGuard's 1420, VPNs' 1280 to 1400) carries.
            At least :data:`MIN_DATAGRAM`.
        max_datagram_v4: the path MTU ceiling over IPv4, in UDP payload bytes: 1472, a
            1500-byte Ethernet MTU less the IPv4 and UDP headers. Probes search between
            the floor and this; a lost probe, or EMSGSIZE from the socket, lowers it.
        max_datagram_v6: the same over IPv6: 1452 (1500 less 40 + 8 header bytes).
    """

    max_connections: int = 1024
    max_pending_accepts: int = 64
    connect_timeout: float = 10.0
    idle_timeout: float = 120.0
    receive_buffer: int = 1024 * 1024
    send_buffer: int = 1024 * 1024
    max_buffered: int = 64 * 1024 * 1024
    keepalive_interval: float = 29.0
    max_timeouts: int = 6
    syn_retries: int = 3
    close_timeout: float = 30.0
    resets_per_second: float = 20.0
    min_datagram: int = DATAGRAM_SIZE
    max_datagram_v4: int = 1472
    max_datagram_v6: int = 1452

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{field.name} must be a finite number, got {value!r}")
            if field.name in _INT_FIELDS and not isinstance(value, int):
                raise ValueError(f"{field.name} must be an int, got {value!r}")
            if field.name in ("syn_retries", "resets_per_second"):
                if value < 0:
                    raise ValueError(f"{field.name} must not be negative, got {value}")
            elif not value > 0:
                raise ValueError(f"{field.name} must be positive, got {value}")
        if self.receive_buffer < MAX_PAYLOAD or self.send_buffer < MAX_PAYLOAD:
            raise ValueError(f"buffers must hold at least one packet ({MAX_PAYLOAD} bytes)")
        if self.max_buffered < 2 * MAX_PAYLOAD:
            # Half of it is the out-of-order share: each half must hold a packet.
            raise ValueError(f"max_buffered must hold two packets ({2 * MAX_PAYLOAD} bytes)")
        if self.min_datagram < MIN_DATAGRAM:
            raise ValueError(
                f"min_datagram must be at least {MIN_DATAGRAM}, got {self.min_datagram}"
            )
        for family in (4, 6):
            name = f"max_datagram_v{family}"
            value = getattr(self, name)
            if not self.min_datagram <= value <= _MAX_DATAGRAM[family]:
                raise ValueError(
                    f"{name} must be between min_datagram ({self.min_datagram}) and "
                    f"{_MAX_DATAGRAM[family]}, got {value}"
                )
        if self.receive_buffer >= 1 << 31:
            raise ValueError("receive_buffer must be below 2 GiB (a 32-bit window)")

    def max_datagram(self, family: int) -> int:
        """The path MTU ceiling for IP version ``family`` (4 or 6), in UDP payload bytes.

        >>> UtpConfig().max_datagram(4), UtpConfig().max_datagram(6)
        (1472, 1452)
        """
        if family not in _MAX_DATAGRAM:
            raise ValueError(f"family must be 4 or 6, got {family!r}")
        return self.max_datagram_v6 if family == 6 else self.max_datagram_v4
