"""A trio :class:`~trio.abc.Stream` that runs the payload stream through an established MSE core."""

from __future__ import annotations

import trio

from ._mse import MSEInitiator, MSEReceiver

__all__ = ["MSEStream"]


class MSEStream(trio.abc.Stream):
    """Encrypts what is sent and decrypts what is received over ``inner`` (RC4 after MSE).

    ``cipher`` is an established :class:`~bip_handshake.MSEInitiator` or
    :class:`~bip_handshake.MSEReceiver`. The RC4 keystreams are stateful, so, like trio's
    own streams, two concurrent ``send_all`` (or ``receive_some``) calls raise
    :class:`trio.BusyResourceError` instead of interleaving. Closing closes ``inner``.
    """

    def __init__(self, inner: trio.abc.Stream, cipher: MSEInitiator | MSEReceiver) -> None:
        self.inner = inner
        self._cipher = cipher
        self._sending = False
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await self.inner.send_all(self._cipher.encrypt(data))
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await self.inner.wait_send_all_might_not_block()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            data = await self.inner.receive_some(max_bytes)
            return self._cipher.decrypt(data) if data else b""
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        await self.inner.aclose()
