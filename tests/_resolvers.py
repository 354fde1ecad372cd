"""A trio hostname resolver of fixed answers, and whether this host has an IPv6 loopback.

Imported as ``tests._resolvers`` (the root conftest puts the repository's root on
``sys.path``). :class:`FixedResolver` answers test names from a table (addresses, or an
exception to raise) and knows no other name, so no lookup of a test ever leaves the process;
it can also answer late, or late whatever cancels it, and counts what it was asked. Install
one with ``trio.socket.set_custom_hostname_resolver(resolver)``: trio keeps it per run (a
``RunVar``), so every test's run starts again with the system's resolver.

:func:`has_ipv6_loopback` says whether ``::1`` can be bound here (containers often have no
IPv6): tests of IPv6 sockets skip without it.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import trio

__all__ = ["Answer", "FixedResolver", "has_ipv6_loopback"]

Answer: TypeAlias = Sequence[str | tuple[str, int]] | OSError
"""What a name resolves to: its addresses in order (an address alone takes the port asked
for, an ``(address, port)`` pair keeps its own: one name may lead to two listeners), or the
resolver's failure, raised as it is."""


class FixedResolver(trio.abc.HostnameResolver):
    """Test names to fixed answers (:data:`Answer`); a name not in ``names`` gets ``default``,
    and without one is unknown (``EAI_NONAME``, glibc's "Name or service not known").

    The answer lists its addresses as given, of both families whatever family is asked (the
    code under test must pick its own, as it must from a resolver that lists IPv6 first), unless
    ``by_family``: then a lookup of one family answers that family's addresses alone, and a name
    without any is unknown, as glibc answers from ``/etc/hosts``.

    ``delay`` seconds pass before each answer (``math.inf``: never answered); a cancel ends
    the wait, unless ``outlives_cancel``, which lets it run its course as a lookup in a worker
    thread does, then takes the cancel. ``names`` may be changed between lookups; ``asked``
    lists the names asked for, in order, ``running`` the lookups under way and ``most`` the
    most there were at once.
    """

    def __init__(
        self,
        names: Mapping[str, Answer] | None = None,
        *,
        default: Answer | None = None,
        by_family: bool = False,
        delay: float = 0.0,
        outlives_cancel: bool = False,
    ) -> None:
        self.names: dict[str, Answer] = dict(names or {})
        self.default = default
        self.by_family = by_family
        self.delay = delay
        self.outlives_cancel = outlives_cancel
        self.asked: list[str] = []
        self.running = 0
        self.most = 0

    async def getaddrinfo(  # noqa: PLR0917 (trio's HostnameResolver signature)
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        """The fixed answer for ``host``, after ``delay``, with ``port`` where it has none."""
        name = host.decode("ascii") if isinstance(host, bytes) else str(host)
        self.asked.append(name)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.delay > 0:
                with trio.CancelScope(shield=self.outlives_cancel):
                    await trio.sleep(self.delay)
        finally:
            self.running -= 1
        await trio.lowlevel.checkpoint()  # a cancel the shield held off lands here
        answer = self.names.get(name, self.default)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if isinstance(answer, OSError):
            raise answer
        number = int(port) if port is not None else 0
        kind = socket.SocketKind(type) if type else socket.SOCK_STREAM
        protocol = {socket.SOCK_STREAM: socket.IPPROTO_TCP, socket.SOCK_DGRAM: socket.IPPROTO_UDP}
        infos: list[Any] = []
        for entry in answer:
            address, entry_port = (entry, number) if isinstance(entry, str) else entry
            entry_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if self.by_family and family not in {0, entry_family}:
                continue
            sockaddr = (address, entry_port, 0, 0) if ":" in address else (address, entry_port)
            infos.append((entry_family, kind, protocol.get(kind, 0), "", sockaddr))
        if self.by_family and family and not infos:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return infos

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        """The numeric host and port, as the system's answer with ``NI_NUMERICHOST`` and
        ``NI_NUMERICSERV`` (never a reverse lookup off this process)."""
        await trio.lowlevel.checkpoint()
        numeric = flags | socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        return socket.getnameinfo(sockaddr, numeric)


@functools.cache
def has_ipv6_loopback() -> bool:
    """Whether a UDP socket can be bound on ``::1`` here (asked once a process)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
