"""Whether a UDP socket's datagrams may be fragmented: "don't fragment" for path MTU probes only.

uTP finds each connection's path MTU with probes (:mod:`bip_handshake._utp_connection`): a
probe must go with "don't fragment" set, so that a path too small for it drops it (or the
system refuses it at once with ``EMSGSIZE``), while every other datagram may be fragmented,
so that one sent before the path shrank still arrives. libtorrent does the same. Linux names
the choice per socket (``IP_MTU_DISCOVER`` / ``IPV6_MTU_DISCOVER``); Python's socket module
does not export those names, so their values from ``<linux/in.h>`` and ``<linux/in6.h>`` are
here. Elsewhere the system's default stands and :meth:`FragmentControl.open` gives ``None``.

The owner of a socket that uTP shares (bip_dht's, through ``DHT.send_datagram``) uses the
same control, so that probes over a shared socket are probes too.
"""

from __future__ import annotations

import socket
import sys
from typing import Final, Protocol

__all__ = ["FragmentControl"]

_IP_MTU_DISCOVER: Final = 10
_IPV6_MTU_DISCOVER: Final = 23
_PMTUDISC_DONT: Final = 0
"""Never set "don't fragment": the system fragments a datagram bigger than the path."""
_PMTUDISC_DO: Final = 2
"""Always set it: a datagram bigger than the known path MTU is refused (``EMSGSIZE``)."""


class _OptionSocket(Protocol):
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


class FragmentControl:
    """Switches "don't fragment" on one UDP socket, where the system lets us (Linux).

    Made by :meth:`open`, which also lets the socket's datagrams be fragmented from then on;
    :meth:`dont_fragment` and :meth:`allow_fragment` go around the send of one probe.
    """

    __slots__ = ("_level", "_option", "_socket")

    def __init__(self, sock: _OptionSocket, level: int, option: int) -> None:
        """Made by :meth:`open`."""
        self._socket = sock
        self._level = level
        self._option = option

    @classmethod
    def open(cls, sock: _OptionSocket, family: int) -> FragmentControl | None:
        """Let ``sock`` (a UDP socket of IP ``family`` 4 or 6: a plain or a trio socket)
        fragment its datagrams; the control of its "don't fragment" flag, or ``None`` where
        the system has no such option (then nothing changed).

        >>> import socket
        >>> with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        ...     control = FragmentControl.open(udp, 4)
        ...     print(control is not None or sys.platform != "linux")
        True
        """
        if sys.platform != "linux":
            return None
        if family == 6:
            level, option = socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER
        else:
            level, option = socket.IPPROTO_IP, _IP_MTU_DISCOVER
        try:
            sock.setsockopt(level, option, _PMTUDISC_DONT)
        except OSError:
            return None
        return cls(sock, level, option)

    def dont_fragment(self) -> None:
        """Set "don't fragment" for the datagrams sent until :meth:`allow_fragment`.

        Raises:
            OSError: the system refused the option (a closed socket).
        """
        self._socket.setsockopt(self._level, self._option, _PMTUDISC_DO)

    def allow_fragment(self) -> None:
        """Let datagrams be fragmented again (the state :meth:`open` left).

        Raises:
            OSError: the system refused the option (a closed socket).
        """
        self._socket.setsockopt(self._level, self._option, _PMTUDISC_DONT)
