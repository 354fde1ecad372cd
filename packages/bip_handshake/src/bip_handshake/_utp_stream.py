"""The trio stream of one uTP connection: :class:`UtpStream`.

A :class:`UtpStream` is a :class:`trio.abc.HalfCloseableStream` over a
:class:`~bip_handshake._utp_connection.UtpConnection` that its
:class:`~bip_handshake._utp_socket.UtpSocket` pumps: the socket feeds packets and
timer ticks into the connection and wakes the stream; the stream writes into and
reads from the connection and asks the socket to flush.

Errors, as trio streams have them: a connection reset by the peer, timed out, or
cut by the socket closing raises :class:`trio.BrokenResourceError` whose ``__cause__``
is the :class:`~bip_handshake._utp_config.UtpError`; using the stream after
:meth:`UtpStream.aclose` raises :class:`trio.ClosedResourceError`; two tasks sending
(or receiving) at once raise :class:`trio.BusyResourceError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from ._compact import PeerAddress
from ._utp_connection import UtpConnection, UtpConnectionStatistics

if TYPE_CHECKING:
    from ._utp_socket import _Connection

__all__ = ["UtpStream"]

DEFAULT_RECEIVE_SIZE: Final = 64 * 1024
"""What :meth:`UtpStream.receive_some` returns at most when no size is given."""


class UtpStream(trio.abc.HalfCloseableStream):
    """A reliable, ordered byte stream over uTP, made by a :class:`~._utp_socket.UtpSocket`.

    Usable as a :data:`~bip_handshake.Dialer` result and with
    :meth:`~bip_handshake.Handshaker.accept_stream`.
    """

    def __init__(self, connection: _Connection) -> None:
        """Made by the socket; not for users."""
        self._connection = connection
        self._closed = False
        self._sending = False
        self._receiving = False

    @property
    def remote_address(self) -> PeerAddress:
        """The peer's address (for inbound streams, the port it sent from)."""
        return self._connection.address

    @property
    def _core(self) -> UtpConnection:
        return self._connection.core

    def statistics(self) -> UtpConnectionStatistics:
        """The connection's counters (packets, retransmissions, window, round trip)."""
        return self._core.statistics()

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the uTP stream was closed")
        error = self._core.error
        if error is not None:
            raise trio.BrokenResourceError(f"uTP connection failed: {error}") from error

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``; returns once it is buffered (not when it is acknowledged).

        Raises:
            trio.BrokenResourceError: the connection failed (``__cause__``: the UtpError).
            trio.ClosedResourceError: the stream was closed, or :meth:`send_eof` was called.
            trio.BusyResourceError: another task is sending.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this uTP stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            view = memoryview(data).cast("B")
            offset = 0
            while True:
                self._check_usable()
                if self._core.write_shut:
                    raise trio.ClosedResourceError("send_eof was called on this uTP stream")
                if offset >= len(view):
                    return
                taken = self._core.write(view[offset:])
                if taken:
                    offset += taken
                    self._connection.flush()
                    continue
                await self._connection.wait_changed()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until :meth:`send_all` can buffer at least one byte (or would raise)."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this uTP stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            while not self._closed and self._core.error is None and not self._core.writable:
                if self._core.write_shut:
                    return
                await self._connection.wait_changed()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Bytes from the peer, or ``b""`` once it sent its FIN and everything was read.

        Raises:
            trio.BrokenResourceError: the connection failed (``__cause__``: the UtpError).
            trio.ClosedResourceError: the stream was closed.
            trio.BusyResourceError: another task is receiving.
        """
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes < 1):
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this uTP stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the uTP stream was closed")
                core = self._core
                if core.readable:
                    data = core.read(max_bytes or DEFAULT_RECEIVE_SIZE)
                    self._connection.flush()  # a window update, if reading reopened it
                    return data
                if core.eof_received:
                    return b""
                self._check_usable()
                await self._connection.wait_changed()
        finally:
            self._receiving = False

    async def send_eof(self) -> None:
        """Send a FIN after the buffered data: the peer reads EOF; we may still receive."""
        await trio.lowlevel.checkpoint()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this uTP stream")
        self._check_usable()
        self._core.shutdown_write()
        self._connection.flush()

    async def aclose(self) -> None:
        """Close the stream: buffered data and a FIN are still delivered in the background.

        Idempotent. Tasks blocked in the stream's methods get
        :class:`trio.ClosedResourceError`.
        """
        if not self._closed:
            self._closed = True
            self._connection.close()
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._core.state.value
        return f"<UtpStream {self.remote_address} {state}>"
