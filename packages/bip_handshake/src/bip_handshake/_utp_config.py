"""uTP settings and errors, shared by the sans-IO connection and the trio socket."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Final

from ._errors import HandshakeError

__all__ = [
    "DATAGRAM_SIZE",
    "MAX_PAYLOAD",
    "UtpConfig",
    "UtpConnectError",
    "UtpError",
]

DATAGRAM_SIZE: Final = 1400
"""The largest datagram we send: a fixed, conservative MTU (no path MTU discovery).

1400 bytes fit the usual 1500-byte Ethernet MTU with room for IPv6, PPPoE and VPN
headers; libtorrent starts at about this size before probing upwards.
"""
MAX_PAYLOAD: Final = DATAGRAM_SIZE - 20 - 2 - 32
"""Payload bytes per DATA packet: the datagram less the header and our largest selective ack."""
_INT_FIELDS: Final = frozenset(
    (
        "max_connections",
        "max_pending_accepts",
        "receive_buffer",
        "send_buffer",
        "max_buffered",
        "max_timeouts",
        "syn_retries",
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
        connect_timeout: seconds a connect may take (the SYN is resent meanwhile).
        idle_timeout: seconds without any packet from the peer before a connection is
            declared dead (the peer's keepalives every ~29 s keep it open).
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
        if self.receive_buffer >= 1 << 31:
            raise ValueError("receive_buffer must be below 2 GiB (a 32-bit window)")
