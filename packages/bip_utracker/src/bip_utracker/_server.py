"""The trio shell around :class:`~bip_utracker.TrackerServerCore`: a UDP tracker service.

``async with serve_tracker(("0.0.0.0", 6969)) as server:`` binds one UDP socket (IPv4 or IPv6,
by the host given) and runs one task that pumps datagrams through the sans-IO core until the
block ends. The hot loop is tight on purpose: it waits until the socket is readable, then drains
up to :data:`RECEIVE_BATCH` datagrams with plain non-blocking ``recvfrom_into`` calls into one
reused buffer (no trio checkpoint and no allocation per datagram beyond the reply), hands each to
the core and sends its reply at once (so that the client side works on it while we read on),
and looks at the clock and the expiry timer once per batch.

An IPv6 socket takes IPv6 clients only (``IPV6_V6ONLY``, as every other socket of bip and
libtorrent's), whatever the system's default: serve ``0.0.0.0`` and ``::`` on one port, two
trackers sharing a handler, for both families (a dual-stack ``::`` would claim IPv4's port
and make that second bind fail). The core still reads an IPv4-mapped client address as IPv4.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import trio

from bip_metainfo import InfoHash

from ._errors import TrackerError
from ._server_core import Address, ServerConfig, ServerStatistics, TrackerHandler, TrackerServerCore
from ._swarm import SwarmStore

__all__ = ["RECEIVE_BATCH", "TrackerServer", "serve_tracker"]

_log = logging.getLogger("bip_utracker.server")

RECEIVE_BATCH = 256
"""Datagrams handled per wake-up at most, before the loop lets other trio tasks run."""

_MAX_DATAGRAM = 65_535
_SOCKET_BUFFER = 4 * 1024 * 1024  # absorbs bursts while the loop is busy; the OS may cap it
# Errors a UDP socket reports about *earlier* datagrams (ICMP unreachable and the like) or a
# transient lack of buffers: they concern one peer or one moment, never the service.
_TRANSIENT = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.ENOBUFS,
        errno.EPERM,  # a firewall rule refused one destination
        errno.EACCES,
        errno.EMSGSIZE,
        errno.EINVAL,  # e.g. a reply to a port-0 or otherwise unsendable source address
    }
)


class TrackerServer:
    """A running UDP tracker; only :func:`serve_tracker` makes one.

    Attributes:
        address: the bound ``(host, port)``.
    """

    def __init__(self, sock: socket.socket, core: TrackerServerCore) -> None:
        self._sock = sock
        self._core = core
        host, port = sock.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)
        self._send_failures = 0

    @property
    def core(self) -> TrackerServerCore:
        """The sans-IO core it runs (its configuration and lists)."""
        return self._core

    @property
    def store(self) -> SwarmStore | None:
        """The swarm store, when the handler is one (the default)."""
        return self._core.store

    @property
    def send_failures(self) -> int:
        """Replies the operating system refused to send (unreachable peers and the like)."""
        return self._send_failures

    def statistics(self) -> ServerStatistics:
        """A snapshot of the counters (:class:`~bip_utracker.ServerStatistics`)."""
        return self._core.statistics()

    def set_allowed_info_hashes(self, hashes: Iterable[bytes | InfoHash] | None) -> None:
        """Replace the allow list (None: serve every torrent not denied); effective at once."""
        self._core.set_allowed_info_hashes(hashes)

    def set_denied_info_hashes(self, hashes: Iterable[bytes | InfoHash]) -> None:
        """Replace the deny list; effective at once."""
        self._core.set_denied_info_hashes(hashes)

    def _send(self, replies: list[tuple[bytes, Address]]) -> list[tuple[bytes, Address]]:
        """Send what the socket takes now; return what must wait for it to be writable."""
        sendto = self._sock.sendto
        for position, (data, addr) in enumerate(replies):
            try:
                sendto(data, addr)
            except BlockingIOError:
                return replies[position:]
            except OSError as error:
                if error.errno not in _TRANSIENT:
                    raise
                self._send_failures += 1
        return []

    async def _run(self) -> None:
        try:
            await self._serve()
        except OSError as error:
            # Not a peer's doing (those errors are _TRANSIENT): the socket itself failed.
            # serve_tracker raises it to the caller, so it is not logged above DEBUG here.
            _log.debug("the UDP tracker socket on %s failed: %s", _show(self.address), error)
            raise TrackerError(f"the tracker socket on {self.address} failed: {error}") from error

    async def _serve(self) -> None:
        sock = self._sock
        core = self._core
        receive = core.receive_datagram
        take = core.datagrams_to_send
        send = self._send
        sendto = sock.sendto
        recvfrom_into = sock.recvfrom_into
        buffer = bytearray(_MAX_DATAGRAM)
        view = memoryview(buffer)
        clock = trio.current_time
        core.handle_timer(clock())
        while True:
            deadline = core.next_deadline()
            if deadline is None:  # pragma: no cover - handle_timer always sets one
                deadline = clock() + 60.0
            with trio.move_on_at(deadline):
                await trio.lowlevel.wait_readable(sock)
            now = clock()
            drained = False
            pending: list[tuple[bytes, Address]] = []
            for _ in range(RECEIVE_BATCH):
                try:
                    size, addr = recvfrom_into(buffer)
                except BlockingIOError:
                    drained = True
                    break
                except OSError as error:
                    if error.errno not in _TRANSIENT:
                        raise
                    continue
                receive(view[:size], addr, now)
                # Reply at once rather than after the batch: the client side (or the next
                # hop) works on this reply while we read the next request, on another core.
                replies = take()
                if len(replies) == 1:  # the usual case, without a call of _send
                    data, destination = replies[0]
                    try:
                        sendto(data, destination)
                    except BlockingIOError:
                        pending = replies
                        break
                    except OSError as error:
                        if error.errno not in _TRANSIENT:
                            raise
                        self._send_failures += 1
                elif replies:
                    pending = send(replies)
                    if pending:
                        break
            if now >= deadline:
                core.handle_timer(now)  # (expiry queues no datagram)
                if _log.isEnabledFor(logging.DEBUG):  # once per expiry interval, not per datagram
                    self._log_statistics()
            while pending:
                await trio.lowlevel.wait_writable(sock)
                pending = send(pending)
            if not drained:
                # A full batch: more is waiting. Let other tasks run, then go on at once.
                await trio.lowlevel.checkpoint()

    def _log_statistics(self) -> None:
        stats = self._core.statistics()
        _log.debug(
            "UDP tracker on %s: %d swarms, %d peers; so far %d connects, %d announces "
            "(%d of an unknown event, served as none), %d scrapes, %d malformed, "
            "%d rate limited, %d refused, %d replies unsent",
            _show(self.address),
            stats.swarms,
            stats.peers,
            stats.connects,
            stats.announces,
            stats.unknown_events,
            stats.scrapes,
            stats.malformed,
            stats.rate_limited,
            stats.refused,
            self._send_failures,
        )


def _show(address: tuple[str, int]) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _open_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6 and not _is_mapped(host):
            # Before the bind: a dual-stack "::" would take IPv4's port too (Linux's default),
            # and the IPv4 socket of a server on both families could not be bound. (A mapped
            # IPv4 address serves IPv4 only, which an IPv6-only socket cannot bind.)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # a smaller buffer still works
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _is_mapped(host: str) -> bool:
    """Whether *host* is an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a scoped address (fe80::1%eth0) is no mapped one either
        return False
    return isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None


@asynccontextmanager
async def serve_tracker(
    address: tuple[str, int] = ("127.0.0.1", 6969),
    *,
    config: ServerConfig | None = None,
    handler: TrackerHandler | SwarmStore | None = None,
    secret: bytes | None = None,
) -> AsyncIterator[TrackerServer]:
    """Run a UDP tracker on *address* for the duration of the ``async with`` block.

    Args:
        address: ``(host, port)`` to bind; an IPv6 host (``"::"``, ``"::1"``) gives an IPv6
            socket, for IPv6 clients only (serve ``("0.0.0.0", port)`` too, with the same
            ``handler``, for IPv4 ones); port 0 picks a free port (see
            :attr:`TrackerServer.address`).
        config: limits and policies (:class:`~bip_utracker.ServerConfig`).
        handler: None for the built-in :class:`~bip_utracker.SwarmStore`, a store of one's own,
            or any :class:`~bip_utracker.TrackerHandler`.
        secret: the connection id key (16 to 64 bytes); random when None.

    Raises:
        TrackerError: the address cannot be bound (its ``__cause__`` is the system's error).

    >>> async def main():  # doctest: +SKIP
    ...     async with serve_tracker(("127.0.0.1", 0)) as server:
    ...         print(server.address)
    ...         await trio.sleep_forever()
    """
    core = TrackerServerCore(config, handler=handler, secret=secret)
    host, port = address
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
        bound_host: Any = infos[0][4][0]
        sock = _open_socket(bound_host, port)
    except OSError as error:
        raise TrackerError(f"cannot bind a UDP tracker to {host}:{port}: {error}") from error
    server = TrackerServer(sock, core)
    _log.info("UDP tracker listening on %s", _show(server.address))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._run)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
                stats = core.statistics()
                _log.info(
                    "UDP tracker on %s stopped after %d announces and %d scrapes",
                    _show(server.address),
                    stats.announces,
                    stats.scrapes,
                )
    except BaseExceptionGroup as group:
        # One failure (the body's own exception, or our TrackerError) comes out unwrapped.
        if len(group.exceptions) == 1:
            only = group.exceptions[0]
            raise only from only.__cause__
        raise
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()
