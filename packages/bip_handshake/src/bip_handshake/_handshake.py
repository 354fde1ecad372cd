"""The BEP 3 / BEP 52 handshake, sans-IO, for both ends of a connection.

A handshake is 68 bytes: ``\\x13BitTorrent protocol``, 8 reserved bytes
(:class:`~bip_handshake.Extensions`), the 20-byte swarm id (a v1 SHA-1 info-hash or
a v2 SHA-256 info-hash truncated to 20 bytes) and a 20-byte peer id.

:class:`HandshakeConnection` is modelled on h11: feed it bytes with
:meth:`~HandshakeConnection.receive_data`, pull events with
:meth:`~HandshakeConnection.next_event` until it returns :data:`NEED_DATA` (read
more) or :data:`PAUSED` (the caller must act), and send with the methods that
return bytes. The local state machine is the table ``_TRANSITIONS`` below; any
(role, state, input) missing from it is a protocol error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from bip_metainfo import InfoHash

from ._errors import LocalProtocolError, RemoteProtocolError
from ._extensions import Extensions

__all__ = [
    "DEFAULT_MAX_TRAILING",
    "HANDSHAKE_LENGTH",
    "NEED_DATA",
    "PAUSED",
    "PROTOCOL_HEADER",
    "Handshake",
    "HandshakeComplete",
    "HandshakeConnection",
    "HandshakeEvent",
    "HandshakeState",
    "InfoHashReceived",
    "Pending",
    "Role",
]

PROTOCOL_HEADER: Final = b"\x13BitTorrent protocol"
"""The first 20 bytes of every handshake: the length byte 19 and the protocol string."""
_RESERVED_END: Final = len(PROTOCOL_HEADER) + 8
_INFO_HASH_END: Final = _RESERVED_END + 20
HANDSHAKE_LENGTH: Final = _INFO_HASH_END + 20
"""A whole handshake is 68 bytes."""
DEFAULT_MAX_TRAILING: Final = 64 * 1024
"""How many bytes after the peer's handshake are held for the next layer by default."""
_ID_SIZE: Final = 20


def _check_id(name: str, value: object) -> bytes:
    if type(value) is not bytes or len(value) != _ID_SIZE:
        raise ValueError(f"{name} must be {_ID_SIZE} bytes, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Handshake:
    """One side's 68-byte handshake message.

    >>> hs = Handshake(Extensions.FAST, b"\\xaa" * 20, b"a" * 20)
    >>> data = hs.to_bytes()
    >>> len(data), data[:20]
    (68, b'\\x13BitTorrent protocol')
    >>> Handshake.from_bytes(data) == hs
    True

    Attributes:
        extensions: the reserved bytes.
        info_hash: the 20-byte swarm id on the wire (v1 hash or truncated v2 hash).
        peer_id: the sender's 20-byte peer id.
    """

    extensions: Extensions
    info_hash: bytes
    peer_id: bytes

    def __post_init__(self) -> None:
        """Check the field types and sizes."""
        if not isinstance(self.extensions, Extensions):
            raise TypeError(f"extensions must be Extensions, not {self.extensions!r}")
        _check_id("info_hash", self.info_hash)
        _check_id("peer_id", self.peer_id)

    def to_bytes(self) -> bytes:
        """The 68 bytes of the message."""
        return PROTOCOL_HEADER + self.extensions.to_bytes() + self.info_hash + self.peer_id

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Handshake:
        """Parse exactly one 68-byte handshake.

        Raises:
            RemoteProtocolError: the bytes are not a handshake of 68 bytes.
        """
        raw = bytes(data)
        if len(raw) != HANDSHAKE_LENGTH:
            raise RemoteProtocolError(f"a handshake is {HANDSHAKE_LENGTH} bytes, not {len(raw)}")
        _check_header(raw)
        return cls(
            Extensions.from_bytes(raw[len(PROTOCOL_HEADER) : _RESERVED_END]),
            raw[_RESERVED_END:_INFO_HASH_END],
            raw[_INFO_HASH_END:],
        )


def _check_header(data: bytes | bytearray) -> None:
    """Raise unless ``data`` starts like :data:`PROTOCOL_HEADER` (it may be shorter)."""
    prefix = bytes(data[: len(PROTOCOL_HEADER)])
    if prefix != PROTOCOL_HEADER[: len(prefix)]:
        if prefix[0] != PROTOCOL_HEADER[0]:
            raise RemoteProtocolError(
                f"not a BitTorrent handshake: protocol length byte {prefix[0]}, expected 19"
            )
        raise RemoteProtocolError(f"not a BitTorrent handshake: protocol string {prefix[1:]!r}")


class Role(enum.Enum):
    """Which end of the connection we are."""

    INITIATOR = "initiator"
    """We opened the connection: we know the torrent and send our handshake first."""
    RECEIVER = "receiver"
    """The peer opened it: we learn the torrent from its handshake and accept or reject."""


class HandshakeState(enum.Enum):
    """Where a :class:`HandshakeConnection` is."""

    SEND_HANDSHAKE = "send_handshake"
    """Initiator only: the caller has yet to call :meth:`~HandshakeConnection.send_handshake`."""
    AWAITING_INFO_HASH = "awaiting_info_hash"
    """Waiting for the first 48 bytes of the peer's handshake."""
    AWAITING_DECISION = "awaiting_decision"
    """Receiver only: the caller must :meth:`~HandshakeConnection.accept` or ``reject``."""
    AWAITING_PEER_ID = "awaiting_peer_id"
    """Our handshake is sent; waiting for the peer id (the last 20 bytes)."""
    COMPLETE = "complete"
    """Both handshakes exchanged; :attr:`~HandshakeConnection.trailing_data` is the rest."""
    REJECTED = "rejected"
    """Receiver only: the caller rejected the info-hash; close the connection."""
    ERROR = "error"
    """The peer broke the protocol; close the connection."""


class _Input(enum.Enum):
    SEND = "send"
    ACCEPT = "accept"
    REJECT = "reject"
    INFO_HASH = "info_hash"
    PEER_ID = "peer_id"


_S = HandshakeState
_TRANSITIONS: Final[dict[tuple[Role, HandshakeState, _Input], HandshakeState]] = {
    (Role.INITIATOR, _S.SEND_HANDSHAKE, _Input.SEND): _S.AWAITING_INFO_HASH,
    (Role.INITIATOR, _S.AWAITING_INFO_HASH, _Input.INFO_HASH): _S.AWAITING_PEER_ID,
    (Role.INITIATOR, _S.AWAITING_PEER_ID, _Input.PEER_ID): _S.COMPLETE,
    (Role.RECEIVER, _S.AWAITING_INFO_HASH, _Input.INFO_HASH): _S.AWAITING_DECISION,
    (Role.RECEIVER, _S.AWAITING_DECISION, _Input.ACCEPT): _S.AWAITING_PEER_ID,
    (Role.RECEIVER, _S.AWAITING_DECISION, _Input.REJECT): _S.REJECTED,
    (Role.RECEIVER, _S.AWAITING_PEER_ID, _Input.PEER_ID): _S.COMPLETE,
}


class Pending(enum.Enum):
    """What :meth:`HandshakeConnection.next_event` returns when it has no event."""

    NEED_DATA = "NEED_DATA"
    """Feed more bytes with :meth:`~HandshakeConnection.receive_data`."""
    PAUSED = "PAUSED"
    """The caller must act first (send its handshake, or accept / reject)."""

    def __repr__(self) -> str:
        """The bare name (``NEED_DATA``), as h11's sentinels print."""
        return self.name


NEED_DATA: Final = Pending.NEED_DATA
PAUSED: Final = Pending.PAUSED


class HandshakeEvent:
    """Base class of the events :meth:`HandshakeConnection.next_event` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class InfoHashReceived(HandshakeEvent):
    """The first 48 bytes of the peer's handshake arrived (the peer id may follow later).

    A receiver answers this with :meth:`HandshakeConnection.accept` or
    :meth:`HandshakeConnection.reject`; an initiator has already checked the
    info-hash against its own.

    >>> InfoHashReceived(b"\\x01" * 20, Extensions.DHT).extensions.name
    'DHT'

    Attributes:
        info_hash: the 20-byte swarm id the peer sent.
        extensions: the peer's reserved bytes.
    """

    info_hash: bytes
    extensions: Extensions


@dataclass(frozen=True, slots=True)
class HandshakeComplete(HandshakeEvent):
    """Both handshakes are exchanged: the peer wire protocol starts.

    Bytes the peer sent after its handshake are in
    :attr:`HandshakeConnection.trailing_data`.

    >>> done = HandshakeComplete(InfoHash(v1=b"\\x01" * 20), b"\\x01" * 20,
    ...                          Extensions.FAST, Extensions.FAST, b"p" * 20)
    >>> done.v2
    False

    Attributes:
        torrent: the torrent the connection is for.
        info_hash: the 20-byte swarm id used on the wire.
        extensions: the peer's reserved bytes.
        our_extensions: the reserved bytes we sent.
        peer_id: the peer's 20-byte peer id.
    """

    torrent: InfoHash
    info_hash: bytes
    extensions: Extensions
    our_extensions: Extensions
    peer_id: bytes

    @property
    def common(self) -> Extensions:
        """The extensions both sides set, i.e. the ones the connection may use."""
        return self.extensions & self.our_extensions

    @property
    def v2(self) -> bool:
        """Whether the connection speaks v2 (BEP 52).

        True when the swarm id on the wire is the truncated v2 hash, or when the
        torrent is hybrid and both sides set :attr:`Extensions.V2_UPGRADE`.
        """
        if self.torrent.v2 is None:
            return False
        if self.info_hash == self.torrent.v2_truncated:
            return True
        return self.torrent.is_hybrid and Extensions.V2_UPGRADE in self.common


class HandshakeConnection:
    """A sans-IO BitTorrent handshake for one end of one connection.

    The initiator (we dialled) is built with the torrent, sends first with
    :meth:`send_handshake` and checks that the peer answers with the same swarm id.
    The receiver (the peer dialled) learns the swarm id from the peer: after 48
    bytes :meth:`next_event` returns :class:`InfoHashReceived` and then
    :data:`PAUSED` until the caller answers with :meth:`accept` (giving the
    :class:`~bip_metainfo.InfoHash` it serves under that id; the method returns our
    handshake's bytes) or :meth:`reject`. The caller can answer before the peer id
    arrives, as libtorrent does. Both ends end with :class:`HandshakeComplete`;
    whatever the peer sent after its handshake is :attr:`trailing_data`.

    For a hybrid torrent our reserved bytes get :attr:`Extensions.V2_UPGRADE`
    (BEP 52); for other torrents that bit is cleared.

    >>> torrent = InfoHash(v1=b"\\x11" * 20)
    >>> client = HandshakeConnection.initiator(torrent, peer_id=b"c" * 20)
    >>> server = HandshakeConnection.receiver(peer_id=b"s" * 20)
    >>> server.receive_data(client.send_handshake())
    >>> event = server.next_event()
    >>> event
    InfoHashReceived(info_hash=b'\\x11\\x11...', extensions=Extensions(0x0000000000000000: none))
    >>> server.next_event()
    PAUSED
    >>> client.receive_data(server.accept(torrent) + b"\\x00\\x00\\x00\\x00")  # + keep-alive
    >>> client.next_event()
    InfoHashReceived(...)
    >>> client.next_event()
    HandshakeComplete(...)
    >>> client.trailing_data
    (b'\\x00\\x00\\x00\\x00', False)
    >>> server.next_event()
    HandshakeComplete(...)

    Args:
        role: which end we are.
        peer_id: our 20-byte peer id.
        extensions: the reserved bytes we send.
        torrent: the torrent (initiator only).
        info_hash: the swarm id to send (initiator only): one of ``torrent.swarm_ids()``;
            by default the v1 hash if there is one, else the truncated v2 hash.
        max_trailing: how many bytes after the peer's handshake are held; more is a
            :class:`RemoteProtocolError`. Use :attr:`trailing_data` and move on.
    """

    def __init__(
        self,
        role: Role,
        *,
        peer_id: bytes,
        extensions: Extensions = Extensions.NONE,
        torrent: InfoHash | None = None,
        info_hash: bytes | None = None,
        max_trailing: int = DEFAULT_MAX_TRAILING,
    ) -> None:
        """Build one end; prefer :meth:`initiator` and :meth:`receiver`."""
        if not isinstance(role, Role):
            raise TypeError(f"role must be a Role, not {role!r}")
        if not isinstance(extensions, Extensions):
            raise TypeError(f"extensions must be Extensions, not {extensions!r}")
        if max_trailing < 0:
            raise ValueError(f"max_trailing must not be negative, not {max_trailing}")
        self._role = role
        self._peer_id = _check_id("peer_id", peer_id)
        self._extensions = extensions
        self._max_trailing = max_trailing
        self._buffer = bytearray()
        self._closed = False
        self._error: RemoteProtocolError | None = None
        self._torrent: InfoHash | None = None
        self._info_hash: bytes | None = None
        self._peer_extensions = Extensions.NONE
        if role is Role.INITIATOR:
            if not isinstance(torrent, InfoHash):
                raise TypeError("an initiator needs the torrent's InfoHash")
            if info_hash is None:
                info_hash = torrent.swarm_ids()[0]
            elif not torrent.matches(info_hash):
                raise ValueError(f"info_hash {info_hash!r} is not one of the torrent's swarm ids")
            self._adopt(torrent, info_hash)
            self._state = HandshakeState.SEND_HANDSHAKE
        else:
            if torrent is not None or info_hash is not None:
                raise TypeError("a receiver learns the torrent from the peer: pass it to accept()")
            self._state = HandshakeState.AWAITING_INFO_HASH

    @classmethod
    def initiator(
        cls,
        torrent: InfoHash,
        *,
        peer_id: bytes,
        extensions: Extensions = Extensions.NONE,
        info_hash: bytes | None = None,
        max_trailing: int = DEFAULT_MAX_TRAILING,
    ) -> HandshakeConnection:
        """The end that dialled the peer, for ``torrent``."""
        return cls(
            Role.INITIATOR,
            peer_id=peer_id,
            extensions=extensions,
            torrent=torrent,
            info_hash=info_hash,
            max_trailing=max_trailing,
        )

    @classmethod
    def receiver(
        cls,
        *,
        peer_id: bytes,
        extensions: Extensions = Extensions.NONE,
        max_trailing: int = DEFAULT_MAX_TRAILING,
    ) -> HandshakeConnection:
        """The end that accepted the peer's connection."""
        return cls(Role.RECEIVER, peer_id=peer_id, extensions=extensions, max_trailing=max_trailing)

    # -- properties --------------------------------------------------------------

    @property
    def role(self) -> Role:
        """Which end we are."""
        return self._role

    @property
    def state(self) -> HandshakeState:
        """Where the handshake is."""
        return self._state

    @property
    def torrent(self) -> InfoHash | None:
        """The torrent: known from the start (initiator) or after :meth:`accept`."""
        return self._torrent

    @property
    def our_extensions(self) -> Extensions:
        """The reserved bytes we send (or would send for the torrent known so far)."""
        return self._extensions

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """The bytes received after the peer's handshake, and whether the peer closed.

        Meaningful once :class:`HandshakeComplete` was returned: hand these bytes to
        the next layer (the peer wire protocol).
        """
        return bytes(self._buffer), self._closed

    # -- sending -----------------------------------------------------------------

    def _transition(self, event: _Input) -> None:
        key = (self._role, self._state, event)
        if key not in _TRANSITIONS:
            raise LocalProtocolError(
                f"cannot {event.value} as the {self._role.value} in state {self._state.value}"
            )
        self._state = _TRANSITIONS[key]

    def _adopt(self, torrent: InfoHash, info_hash: bytes) -> None:
        self._torrent = torrent
        self._info_hash = info_hash
        if torrent.is_hybrid:
            self._extensions |= Extensions.V2_UPGRADE
        else:
            self._extensions -= Extensions.V2_UPGRADE

    def _our_handshake(self) -> bytes:
        assert self._info_hash is not None
        return Handshake(self._extensions, self._info_hash, self._peer_id).to_bytes()

    def send_handshake(self) -> bytes:
        """Initiator: our handshake's 68 bytes, to write to the peer.

        Raises:
            LocalProtocolError: we are the receiver, or it was already sent.
        """
        self._transition(_Input.SEND)
        return self._our_handshake()

    def accept(self, torrent: InfoHash) -> bytes:
        """Receiver: serve ``torrent`` on this connection; returns our handshake's bytes.

        We answer with the same 20-byte swarm id the peer sent (the v1 or the
        truncated v2 hash of a hybrid torrent).

        Raises:
            LocalProtocolError: not waiting for a decision, or ``torrent`` does not
                match the swarm id the peer sent.
        """
        if self._state is HandshakeState.AWAITING_DECISION:
            assert self._info_hash is not None
            if not torrent.matches(self._info_hash):
                raise LocalProtocolError(
                    f"torrent {torrent} does not match the peer's info-hash {self._info_hash.hex()}"
                )
            self._adopt(torrent, self._info_hash)
        self._transition(_Input.ACCEPT)
        return self._our_handshake()

    def reject(self) -> None:
        """Receiver: we do not serve the peer's info-hash; close the connection.

        Raises:
            LocalProtocolError: not waiting for a decision.
        """
        self._transition(_Input.REJECT)

    # -- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed the connection.

        Raises:
            LocalProtocolError: the connection already failed, or data came after
                the end of the stream.
            RemoteProtocolError: the peer sent more than a handshake plus
                ``max_trailing`` bytes without the caller taking them.
        """
        if self._error is not None or self._state is HandshakeState.REJECTED:
            raise LocalProtocolError(f"no input is accepted in state {self._state.value}")
        if not data:
            self._closed = True
            return
        if self._closed:
            raise LocalProtocolError("data received after the end of the stream")
        limit = self._max_trailing
        if self._state is not HandshakeState.COMPLETE:
            limit += HANDSHAKE_LENGTH - self._consumed()
        if len(self._buffer) + len(data) > limit:
            self._fail(f"the peer sent more than {self._max_trailing} bytes after its handshake")
        self._buffer += data

    def _consumed(self) -> int:
        """How many handshake bytes have been taken out of the buffer."""
        if self._state in (HandshakeState.SEND_HANDSHAKE, HandshakeState.AWAITING_INFO_HASH):
            return 0
        return _INFO_HASH_END

    def _fail(self, reason: str) -> None:
        self._state = HandshakeState.ERROR
        self._error = RemoteProtocolError(reason)
        raise self._error

    def next_event(self) -> HandshakeEvent | Pending:
        """The next event, or :data:`NEED_DATA` / :data:`PAUSED`.

        Raises:
            RemoteProtocolError: the peer broke the protocol (then and every later call).
            LocalProtocolError: the caller rejected the connection.
        """
        if self._error is not None:
            raise self._error
        state = self._state
        if state is HandshakeState.REJECTED:
            raise LocalProtocolError("the connection was rejected: close it")
        if state is HandshakeState.COMPLETE or state is HandshakeState.AWAITING_DECISION:
            return PAUSED
        if state is HandshakeState.SEND_HANDSHAKE:
            if self._buffer:
                self._fail("the peer spoke before our handshake")
            return PAUSED
        if state is HandshakeState.AWAITING_INFO_HASH:
            return self._read_info_hash()
        return self._read_peer_id()

    def _need_data(self) -> Pending:
        if self._closed:
            self._fail("the peer closed the connection during the handshake")
        return NEED_DATA

    def _read_info_hash(self) -> HandshakeEvent | Pending:
        buffer = self._buffer
        if buffer:
            try:
                _check_header(buffer)
            except RemoteProtocolError as exc:
                self._fail(str(exc))
        if len(buffer) < _INFO_HASH_END:
            return self._need_data()
        extensions = Extensions.from_bytes(buffer[len(PROTOCOL_HEADER) : _RESERVED_END])
        info_hash = bytes(buffer[_RESERVED_END:_INFO_HASH_END])
        # BEP 52: a peer may answer a hybrid torrent's v1 id with its truncated v2 id
        # (the upgrade); any id of the same torrent is then accepted and adopted.
        upgraded = self._torrent is not None and self._torrent.is_hybrid
        if (
            self._role is Role.INITIATOR
            and info_hash != self._info_hash
            and not (upgraded and self._torrent is not None and self._torrent.matches(info_hash))
        ):
            self._fail(
                f"the peer answered with info-hash {info_hash.hex()}, "
                f"not {self._info_hash.hex() if self._info_hash else None}"
            )
        del buffer[:_INFO_HASH_END]
        self._info_hash = info_hash
        self._peer_extensions = extensions
        self._transition(_Input.INFO_HASH)
        return InfoHashReceived(info_hash, extensions)

    def _read_peer_id(self) -> HandshakeEvent | Pending:
        if len(self._buffer) < _ID_SIZE:
            return self._need_data()
        peer_id = bytes(self._buffer[:_ID_SIZE])
        del self._buffer[:_ID_SIZE]
        self._transition(_Input.PEER_ID)
        assert self._torrent is not None
        assert self._info_hash is not None
        return HandshakeComplete(
            self._torrent, self._info_hash, self._peer_extensions, self._extensions, peer_id
        )
