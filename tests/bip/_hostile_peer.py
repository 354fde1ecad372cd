"""A scripted hostile peer for the campaign tests: a real BitTorrent handshake over loopback TCP,
then whatever frames the script sends, well formed (bip_peer's codecs) or not (raw bytes).

It reads everything the session sends back (decoded with bip_peer's MessageDecoder, so that the
script can wait for a reply) and notices when the session closes the connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from ipaddress import ip_address
from typing import Final

import trio

from bip_bencode import encode
from bip_handshake import HANDSHAKE_LENGTH, Extensions, Handshake, PeerAddress
from bip_metainfo import InfoHash
from bip_peer import (
    NEED_DATA,
    Extended,
    ExtendedHandshake,
    Message,
    MessageDecoder,
    RemoteProtocolError,
)

ATTACKER_EXTENSIONS: Final = Extensions.FAST | Extensions.EXTENSION_PROTOCOL | Extensions.DHT
"""What the attacker claims to speak: BEP 6, BEP 10 and BEP 5."""

# The ids under which the attacker asks the session to send it extension messages.
ATTACKER_IDS: Final = {"ut_metadata": 3, "ut_pex": 1, "ut_holepunch": 4, "upload_only": 5}

ATTACKER_HANDSHAKE: Final = ExtendedHandshake(m=ATTACKER_IDS)
"""The attacker's BEP 10 handshake unless told otherwise: the extensions it can be sent."""

_READ_SIZE: Final = 65536


class HostilePeer:
    """One connection of the attacker to a session (made by :func:`hostile_peer`).

    Attributes:
        received: every message the session sent so far, in order.
        their_handshake: the session's BEP 10 handshake, once it came.
        closed: set when the session closed (or reset) the connection.
        decode_error: why the session's stream could not be decoded, if it could not.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._decoder = MessageDecoder()
        self._changed = trio.Event()
        self.received: list[Message] = []
        self.their_handshake: ExtendedHandshake | None = None
        self.closed = trio.Event()
        self.decode_error: str | None = None
        self._reading = trio.CancelScope()

    @property
    def local_address(self) -> PeerAddress:
        """The attacker's own address."""
        host, port = self._stream.socket.getsockname()[:2]
        return PeerAddress(ip_address(host), port)

    async def send_raw(self, data: bytes) -> bool:
        """Write ``data``; whether it went (``False``: the session already hung up)."""
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed.set()
            return False
        return True

    async def send(self, *messages: Message) -> bool:
        """Encode and write ``messages`` in one write; whether they went."""
        return await self.send_raw(b"".join(message.encode() for message in messages))

    async def send_extended(self, extended_id: int, payload: bytes | dict[bytes, object]) -> bool:
        """An extended message (BEP 10) with a raw or bencoded payload."""
        raw = payload if isinstance(payload, bytes) else encode(payload)  # type: ignore[arg-type]
        return await self.send(Extended(extended_id, raw))

    async def send_many(self, messages: Iterable[Message], *, batch: int = 512) -> bool:
        """Write many messages in batches of ``batch``; whether they all went."""
        chunk: list[bytes] = []
        for message in messages:
            chunk.append(message.encode())
            if len(chunk) >= batch:
                if not await self.send_raw(b"".join(chunk)):
                    return False
                chunk = []
        return await self.send_raw(b"".join(chunk)) if chunk else True

    async def wait_for(self, predicate: Callable[[Message], bool]) -> Message:
        """The first message (already received or to come) for which ``predicate`` holds.

        Raises:
            trio.BrokenResourceError: the connection closed before such a message came.
        """
        seen = 0
        while True:
            for message in self.received[seen:]:
                if predicate(message):
                    return message
            seen = len(self.received)
            if self.closed.is_set():
                raise trio.BrokenResourceError("the session closed the connection")
            changed = self._changed
            await changed.wait()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked after each read.

        Raises:
            trio.BrokenResourceError: the connection closed before it held.
        """
        while not condition():
            if self.closed.is_set():
                raise trio.BrokenResourceError("the session closed the connection")
            await self._changed.wait()

    async def wait_closed(self, timeout: float) -> bool:
        """Whether the session closes the connection within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self.closed.wait()
        return self.closed.is_set()

    async def still_open(self, timeout: float = 0.5) -> bool:
        """Whether the connection stays up for ``timeout`` seconds (a keep-alive probes it)."""
        await self.send_raw(bytes(4))
        return not await self.wait_closed(timeout)

    def stop_reading(self) -> None:
        """Read nothing more: what the session sends piles up in the socket buffers, then
        in the session (a peer that asks for data and never takes it)."""
        self._reading.cancel()

    async def _read(self) -> None:
        with self._reading:
            await self._read_all()

    async def _read_all(self) -> None:
        try:
            while True:
                data = await self._stream.receive_some(_READ_SIZE)
                if not data:
                    break
                if self.decode_error is not None:
                    continue
                try:
                    self._decoder.receive_data(data)
                    while (message := self._decoder.next_message()) is not NEED_DATA:
                        assert isinstance(message, Message)
                        self._note(message)
                except RemoteProtocolError as error:
                    self.decode_error = str(error)
                self._wake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.closed.set()
            self._wake()

    def _note(self, message: Message) -> None:
        self.received.append(message)
        if isinstance(message, Extended) and message.extended_id == 0:
            with contextlib.suppress(RemoteProtocolError, ValueError):
                self.their_handshake = ExtendedHandshake.decode_payload(message.payload)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def extension_id(self, name: str) -> int | None:
        """The id the session wants ``name`` under (from its extended handshake)."""
        return None if self.their_handshake is None else self.their_handshake.extension_id(name)


@contextlib.asynccontextmanager
async def hostile_peer(
    address: PeerAddress,
    info_hash: InfoHash,
    *,
    local_host: str | None = None,
    extensions: Extensions = ATTACKER_EXTENSIONS,
    extended_handshake: ExtendedHandshake | None = ATTACKER_HANDSHAKE,
    peer_id: bytes | None = None,
) -> AsyncIterator[HostilePeer]:
    """Connect to ``address`` (plaintext), shake hands for ``info_hash`` and yield the peer.

    Sends the attacker's extended handshake first unless ``extended_handshake`` is ``None``.
    ``peer_id`` is a random one unless given (another peer's, to impersonate it). The
    connection is closed when the block ends.
    """
    stream = await trio.open_tcp_stream(str(address.host), address.port, local_address=local_host)
    try:
        await stream.send_all(
            Handshake(extensions, info_hash.swarm_ids()[0], peer_id or os.urandom(20)).to_bytes()
        )
        reply = bytearray()
        while len(reply) < HANDSHAKE_LENGTH:
            chunk = await stream.receive_some(HANDSHAKE_LENGTH - len(reply))
            if not chunk:
                raise trio.BrokenResourceError("the session refused the handshake")
            reply += chunk
        Handshake.from_bytes(reply)
        peer = HostilePeer(stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer._read)
            if extended_handshake is not None:
                await peer.send(Extended(0, extended_handshake.encode_payload()))
            try:
                yield peer
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


def bad_records(records: Iterable[logging.LogRecord]) -> list[str]:
    """The records no campaign may cause: errors, and warnings that carry an exception."""
    return [
        record.getMessage()
        for record in records
        if record.levelno >= logging.ERROR
        or (record.levelno >= logging.WARNING and record.exc_info)
    ]


class BadRecords(logging.Handler):
    """Keeps :func:`bad_records` as they are logged (for hypothesis tests, where pytest's
    function-scoped ``caplog`` cannot be used)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.bad.extend(bad_records([record]))
