"""The UDP tracker protocol (BEP 15) as values: every packet, its bytes and back.

Requests (client to tracker) start with the 64-bit connection id (the protocol id for a connect)
and the 32-bit action; responses start with the action. All integers are big-endian. Every
datagram that is not a valid packet raises :class:`MalformedPacketError`: lengths are exact for
the fixed-size packets, and only an announce request may carry more bytes (the BEP 41 options).

Announce responses hold compact peers of the address family the request was sent over (BEP 15's
IPv6 extension): 6-byte entries over IPv4, 18-byte entries over IPv6. The packet does not say
which, so :func:`decode_response` takes the family.

Encoding checks field ranges and raises :class:`LocalProtocolError` for values that do not fit;
decoding builds values straight from the packet without re-checking them (they fit by
construction), which keeps a tracker's hot path cheap.

The announce event is strict one way and lenient the other, as trackers read it: we send only
BEP 15's 0 to 3, but read any value. libtorrent sends 4, its BEP 21 ``paused``, for every regular
announce of a partial seed, and opentracker serves any value but 1 (completed) and 3 (stopped) as
a regular announce. So :func:`decode_request` reads 4 as ``none`` with
:attr:`AnnounceRequest.paused` set, and any other unknown value as ``none``; no value makes the
datagram malformed.

>>> request = ConnectRequest(transaction_id=0x12345678)
>>> request.encode().hex()
'00000417271019800000000012345678'
>>> decode_request(request.encode()) == request
True
>>> decode_response(bytes.fromhex("000000031234567878"))
ErrorResponse(transaction_id=305419896, message='x')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from bip_handshake import (
    CompactError,
    Family,
    PeerAddress,
    encode_compact_peers,
    parse_compact_peers,
)

from ._errors import LocalProtocolError, MalformedPacketError
from ._options import Option, encode_options, parse_options, url_data_of, url_data_options

__all__ = [
    "ANNOUNCE_REQUEST_SIZE",
    "MAX_SCRAPE_HASHES",
    "PAUSED_EVENT",
    "PROTOCOL_ID",
    "Action",
    "AnnounceEvent",
    "AnnounceRequest",
    "AnnounceResponse",
    "ConnectRequest",
    "ConnectResponse",
    "ErrorResponse",
    "Request",
    "Response",
    "ScrapeRequest",
    "ScrapeResponse",
    "ScrapeStats",
    "decode_request",
    "decode_response",
]

PROTOCOL_ID = 0x41727101980
"""The magic constant a connect request carries in place of a connection id."""

MAX_SCRAPE_HASHES = 74
"""The most info-hashes one scrape request carries (BEP 15: "up to about 74")."""

ANNOUNCE_REQUEST_SIZE = 98
"""The size of an announce request without BEP 41 options."""

PAUSED_EVENT = 4
"""The event value libtorrent sends for BEP 21's ``paused`` (its ``event_t::paused``): read as
a regular announce of a partial seed (:attr:`AnnounceRequest.paused`), never sent."""

_HASH_SIZE = 20

# Fixed layouts, as BEP 15 types them (int32_t counters, uint32_t key and address, int64_t
# byte counts); the transaction id and connection id are opaque, so unsigned.
_CONNECT_REQUEST = struct.Struct(">QII")
_CONNECT_RESPONSE = struct.Struct(">IIQ")
_ANNOUNCE_REQUEST = struct.Struct(">QII20s20sqqqiIIiH")
_ANNOUNCE_RESPONSE = struct.Struct(">IIiii")
_SCRAPE_HEADER = struct.Struct(">QII")
_SCRAPE_STATS = struct.Struct(">iii")
_RESPONSE_HEADER = struct.Struct(">II")
_ACTION_AT_8 = struct.Struct(">8xI")

_PEER_SIZE = {4: 6, 6: 18}


class Action(IntEnum):
    """The action field of every packet."""

    CONNECT = 0
    ANNOUNCE = 1
    SCRAPE = 2
    ERROR = 3


class AnnounceEvent(IntEnum):
    """The event of an announce request: BEP 15's wire values, 0 to 3.

    BEP 21's ``paused`` (a partial seed's regular announce) is no member: BEP 15 defines no
    value for it, and a tracker that checks the field would drop a 4 as malformed (aquatic
    answers it with an error), so we never send it: an :class:`Announcer` tells it as
    ``partial_seed`` in its :class:`AnnounceProgress`, and a UDP tracker hears ``none``. Read
    from the wire, libtorrent's 4 is ``none`` with :attr:`AnnounceRequest.paused` set.
    """

    NONE = 0
    COMPLETED = 1
    STARTED = 2
    STOPPED = 3


def _pack(layout: struct.Struct, what: str, *values: object) -> bytes:
    """Pack *values*, turning an out-of-range field into our error."""
    try:
        return layout.pack(*values)
    except struct.error as error:
        raise LocalProtocolError(f"cannot encode {what}: {error}") from None


def _check_hash(value: object, what: str) -> None:
    # struct's "20s" would silently pad or cut a wrong-sized value: refuse it instead.
    if not isinstance(value, bytes) or len(value) != _HASH_SIZE:
        raise LocalProtocolError(f"{what} is {_HASH_SIZE} bytes, got {value!r:.60}")


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A connect request: the first packet to a tracker, asking for a connection id.

    Attributes:
        transaction_id: chosen by the client at random, echoed in the response.
    """

    transaction_id: int

    def encode(self) -> bytes:
        """The 16-byte packet."""
        return _pack(
            _CONNECT_REQUEST, "connect request", PROTOCOL_ID, Action.CONNECT, self.transaction_id
        )


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """A connect response, granting a connection id.

    Attributes:
        transaction_id: the transaction id of the connect request.
        connection_id: the 64-bit id to put in announce and scrape requests.
    """

    transaction_id: int
    connection_id: int

    def encode(self) -> bytes:
        """The 16-byte packet."""
        return _pack(
            _CONNECT_RESPONSE,
            "connect response",
            Action.CONNECT,
            self.transaction_id,
            self.connection_id,
        )


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """An announce request (BEP 15) with its BEP 41 options.

    Attributes:
        connection_id: from a connect response.
        transaction_id: chosen by the client, echoed in the response.
        info_hash: the 20-byte info-hash (for a v2 torrent, the truncated SHA-256).
        peer_id: the client's 20-byte peer id.
        downloaded: bytes downloaded this session.
        left: bytes left to download.
        uploaded: bytes uploaded this session.
        event: what happened (started, completed, stopped) or nothing.
        ip: an IPv4 address as an unsigned 32-bit integer, or 0 to use the sender's.
        key: a per-client random number that lets a tracker recognise it across addresses.
        num_want: how many peers the client wants; -1 lets the tracker decide.
        port: the client's TCP listen port.
        url_data: the BEP 41 URLData (path and query of the tracker URL), concatenated.
        options: every BEP 41 option as found in the packet, in order (NOPs and unknown
            types included). When encoding, an empty tuple means "the URLData options
            that carry *url_data*"; a non-empty one is written as is and its URLData
            must concatenate to *url_data*.
        paused: the packet's event was 4, libtorrent's BEP 21 ``paused``: a regular announce
            (``event`` is ``none``) of a partial seed, a peer that has every piece it wants
            but not all (``left`` > 0) and downloads no more. Decoding only: :meth:`encode`
            refuses it, as BEP 15 has no such value.
    """

    connection_id: int
    transaction_id: int
    info_hash: bytes
    peer_id: bytes
    downloaded: int
    left: int
    uploaded: int
    event: AnnounceEvent
    ip: int
    key: int
    num_want: int
    port: int
    url_data: bytes = b""
    options: tuple[Option, ...] = ()
    paused: bool = False

    def encode(self) -> bytes:
        """The 98-byte packet followed by the options.

        >>> request = AnnounceRequest(1, 2, b"i" * 20, b"p" * 20, 0, 0, 0,
        ...                           AnnounceEvent.STARTED, 0, 7, -1, 6881, b"/announce")
        >>> len(request.encode()), decode_request(request.encode()).url_data
        (109, b'/announce')
        """
        _check_hash(self.info_hash, "an info-hash")
        _check_hash(self.peer_id, "a peer id")
        event: object = self.event  # checked at run time, as the field type is not
        # 4 (libtorrent's "paused") or any other value BEP 15 does not define is refused: a
        # tracker that checks the field drops it as malformed, or answers it with an error.
        if (
            isinstance(event, bool)
            or not isinstance(event, int)
            or not 0 <= event <= AnnounceEvent.STOPPED
        ):
            raise LocalProtocolError(f"an announce event is 0..3 (BEP 15), got {event!r:.40}")
        if self.paused:
            raise LocalProtocolError("BEP 15 has no paused event: a UDP announce says none")
        if not isinstance(self.url_data, bytes):
            raise LocalProtocolError(f"url_data is bytes, got {type(self.url_data).__name__}")
        options = self.options
        if not options:
            options = url_data_options(self.url_data)
        elif url_data_of(options) != self.url_data:
            raise LocalProtocolError("the URLData options do not concatenate to url_data")
        head = _pack(
            _ANNOUNCE_REQUEST,
            "announce request",
            self.connection_id,
            Action.ANNOUNCE,
            self.transaction_id,
            self.info_hash,
            self.peer_id,
            self.downloaded,
            self.left,
            self.uploaded,
            self.event,
            self.ip,
            self.key,
            self.num_want,
            self.port,
        )
        return head + encode_options(options)

    @property
    def ip_address(self) -> IPv4Address | None:
        """The ``ip`` field as an address, or None when it is 0 (use the sender's address).

        >>> AnnounceRequest(1, 2, bytes(20), bytes(20), 0, 0, 0, AnnounceEvent.NONE,
        ...                 0x7F000001, 0, -1, 1).ip_address
        IPv4Address('127.0.0.1')
        """
        return IPv4Address(self.ip) if self.ip else None


@dataclass(frozen=True, slots=True)
class ScrapeRequest:
    """A scrape request for 1 to :data:`MAX_SCRAPE_HASHES` info-hashes.

    Attributes:
        connection_id: from a connect response.
        transaction_id: chosen by the client, echoed in the response.
        info_hashes: the 20-byte info-hashes, in the order the response answers them.
    """

    connection_id: int
    transaction_id: int
    info_hashes: tuple[bytes, ...]

    def encode(self) -> bytes:
        """The packet: 16 bytes and 20 per info-hash."""
        count = len(self.info_hashes)
        if not 1 <= count <= MAX_SCRAPE_HASHES:
            raise LocalProtocolError(
                f"a scrape asks for 1..{MAX_SCRAPE_HASHES} info-hashes, got {count}"
            )
        for info_hash in self.info_hashes:
            _check_hash(info_hash, "an info-hash")
        head = _pack(
            _SCRAPE_HEADER, "scrape request", self.connection_id, Action.SCRAPE, self.transaction_id
        )
        return head + b"".join(self.info_hashes)


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    """An announce response.

    Attributes:
        transaction_id: the transaction id of the announce request.
        interval: seconds the client should wait before announcing again.
        leechers: peers in the swarm that are still downloading.
        seeders: peers in the swarm that have everything.
        peers: some peers of the swarm, all of the family the request came over.
    """

    transaction_id: int
    interval: int
    leechers: int
    seeders: int
    peers: tuple[PeerAddress, ...] = ()

    def encode(self) -> bytes:
        """The packet: 20 bytes and 6 (IPv4) or 18 (IPv6) per peer."""
        head = _pack(
            _ANNOUNCE_RESPONSE,
            "announce response",
            Action.ANNOUNCE,
            self.transaction_id,
            self.interval,
            self.leechers,
            self.seeders,
        )
        try:
            return head + encode_compact_peers(self.peers)
        except (CompactError, AttributeError) as error:
            raise LocalProtocolError(f"cannot encode the peers: {error}") from None


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """What a scrape says about one swarm.

    Attributes:
        seeders: peers that have everything.
        completed: how many times the torrent was downloaded completely.
        leechers: peers still downloading.
        downloaders: of the leechers, those still downloading (BEP 21's ``downloaders``:
            the others are partial seeds, which have every piece they want); None when the
            tracker did not say, as a UDP tracker never does (BEP 15's scrape has no such
            field, so :meth:`ScrapeResponse.encode` leaves it out).
    """

    seeders: int
    completed: int
    leechers: int
    downloaders: int | None = None


@dataclass(frozen=True, slots=True)
class ScrapeResponse:
    """A scrape response: one :class:`ScrapeStats` per requested info-hash, in request order.

    Attributes:
        transaction_id: the transaction id of the scrape request.
        files: the statistics, in the order of the request's info-hashes.
    """

    transaction_id: int
    files: tuple[ScrapeStats, ...]

    def encode(self) -> bytes:
        """The packet: 8 bytes and 12 per info-hash."""
        head = _pack(_RESPONSE_HEADER, "scrape response", Action.SCRAPE, self.transaction_id)
        body = [
            _pack(
                _SCRAPE_STATS, "scrape statistics", stats.seeders, stats.completed, stats.leechers
            )
            for stats in self.files
        ]
        return head + b"".join(body)


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An error response: the tracker refuses a request and says why.

    Attributes:
        transaction_id: the transaction id of the refused request.
        message: the tracker's message (UTF-8; decoded with replacement, trailing NULs dropped).
    """

    transaction_id: int
    message: str

    def encode(self) -> bytes:
        """The packet: 8 bytes and the UTF-8 message."""
        head = _pack(_RESPONSE_HEADER, "error response", Action.ERROR, self.transaction_id)
        if not isinstance(self.message, str):
            raise LocalProtocolError(f"an error message is a str, got {self.message!r:.60}")
        return head + self.message.encode("utf-8", "replace")


Request = ConnectRequest | AnnounceRequest | ScrapeRequest
"""Any packet a client sends."""

Response = ConnectResponse | AnnounceResponse | ScrapeResponse | ErrorResponse
"""Any packet a tracker sends."""


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    """Decode a datagram sent to a tracker.

    A connect request is exactly 16 bytes and carries the protocol id; an announce request is
    at least 98 bytes (the rest is BEP 41 options); a scrape request is 16 bytes plus 1 to
    :data:`MAX_SCRAPE_HASHES` info-hashes of 20 bytes. Anything else raises
    :class:`MalformedPacketError`. An announce's event outside BEP 15's 0 to 3 is read as
    ``none``: 4 (libtorrent's BEP 21 ``paused``) with :attr:`AnnounceRequest.paused` set, any
    other value as opentracker reads it (see the module's notes).

    >>> decode_request(bytes.fromhex("00000000000000000000000200000000"))
    Traceback (most recent call last):
    ...
    bip_utracker._errors.MalformedPacketError: a scrape request names no info-hash
    """
    raw = bytes(data)
    size = len(raw)
    if size < 16:
        raise MalformedPacketError(f"a request is at least 16 bytes, got {size}")
    (action,) = _ACTION_AT_8.unpack_from(raw)
    if action == Action.CONNECT:
        if size != 16:
            raise MalformedPacketError(f"a connect request is 16 bytes, got {size}")
        protocol_id, _, transaction_id = _CONNECT_REQUEST.unpack(raw)
        if protocol_id != PROTOCOL_ID:
            raise MalformedPacketError(f"a connect request has protocol id {protocol_id:#x}")
        return ConnectRequest(transaction_id)
    if action == Action.ANNOUNCE:
        if size < ANNOUNCE_REQUEST_SIZE:
            raise MalformedPacketError(
                f"an announce request is at least {ANNOUNCE_REQUEST_SIZE} bytes, got {size}"
            )
        fields = _ANNOUNCE_REQUEST.unpack_from(raw)
        event = fields[8]
        paused = event == PAUSED_EVENT
        if not 0 <= event <= AnnounceEvent.STOPPED:
            event = AnnounceEvent.NONE
        options = parse_options(raw[ANNOUNCE_REQUEST_SIZE:]) if size > ANNOUNCE_REQUEST_SIZE else ()
        return AnnounceRequest(
            connection_id=fields[0],
            transaction_id=fields[2],
            info_hash=fields[3],
            peer_id=fields[4],
            downloaded=fields[5],
            left=fields[6],
            uploaded=fields[7],
            event=AnnounceEvent(event),
            ip=fields[9],
            key=fields[10],
            num_want=fields[11],
            port=fields[12],
            url_data=url_data_of(options),
            options=options,
            paused=paused,
        )
    if action == Action.SCRAPE:
        count, extra = divmod(size - 16, _HASH_SIZE)
        if extra:
            raise MalformedPacketError(
                f"a scrape request is 16 + 20*n bytes, got {size} ({extra} stray bytes)"
            )
        if count == 0:
            raise MalformedPacketError("a scrape request names no info-hash")
        if count > MAX_SCRAPE_HASHES:
            raise MalformedPacketError(
                f"a scrape request names {count} info-hashes, at most {MAX_SCRAPE_HASHES}"
            )
        connection_id, _, transaction_id = _SCRAPE_HEADER.unpack_from(raw)
        hashes = tuple(raw[start : start + _HASH_SIZE] for start in range(16, size, _HASH_SIZE))
        return ScrapeRequest(connection_id, transaction_id, hashes)
    raise MalformedPacketError(f"a request has action {action}, expected 0, 1 or 2")


def decode_response(data: bytes | bytearray | memoryview, *, family: Family = 4) -> Response:
    """Decode a datagram sent by a tracker; *family* (4 or 6) sizes an announce's peers.

    A connect response is exactly 16 bytes; an announce response 20 bytes plus whole compact
    peers; a scrape response 8 bytes plus whole 12-byte statistics; an error response 8 bytes
    plus the message. Anything else raises :class:`MalformedPacketError`.

    >>> raw = bytes.fromhex("000000010000000700000708000000000000000" "17f0000011ae1")
    >>> response = decode_response(raw)
    >>> response.interval, [str(peer) for peer in response.peers]
    (1800, ['127.0.0.1:6881'])
    """
    if family not in _PEER_SIZE:
        raise LocalProtocolError(f"an address family is 4 or 6, got {family!r}")
    raw = bytes(data)
    size = len(raw)
    if size < 8:
        raise MalformedPacketError(f"a response is at least 8 bytes, got {size}")
    action, transaction_id = _RESPONSE_HEADER.unpack_from(raw)
    if action == Action.CONNECT:
        if size != 16:
            raise MalformedPacketError(f"a connect response is 16 bytes, got {size}")
        return ConnectResponse(transaction_id, _CONNECT_RESPONSE.unpack(raw)[2])
    if action == Action.ANNOUNCE:
        if size < _ANNOUNCE_RESPONSE.size:
            raise MalformedPacketError(
                f"an announce response is at least {_ANNOUNCE_RESPONSE.size} bytes, got {size}"
            )
        peer_size = _PEER_SIZE[family]
        if (size - _ANNOUNCE_RESPONSE.size) % peer_size:
            raise MalformedPacketError(
                f"an IPv{family} announce response is 20 + {peer_size}*n bytes, got {size}"
            )
        _, _, interval, leechers, seeders = _ANNOUNCE_RESPONSE.unpack_from(raw)
        return AnnounceResponse(
            transaction_id,
            interval,
            leechers,
            seeders,
            # The length is checked above; a datagram bounds the count (no more than ~11,000).
            tuple(parse_compact_peers(raw[_ANNOUNCE_RESPONSE.size :], family, limit=size)),
        )
    if action == Action.SCRAPE:
        if (size - 8) % _SCRAPE_STATS.size:
            raise MalformedPacketError(f"a scrape response is 8 + 12*n bytes, got {size}")
        files = tuple(
            ScrapeStats(*_SCRAPE_STATS.unpack_from(raw, start))
            for start in range(8, size, _SCRAPE_STATS.size)
        )
        return ScrapeResponse(transaction_id, files)
    if action == Action.ERROR:
        # Some trackers terminate the message C-style; the NULs are not part of it.
        message = raw[8:].rstrip(b"\x00").decode("utf-8", "replace")
        return ErrorResponse(transaction_id, message)
    raise MalformedPacketError(f"a response has action {action}, expected 0..3")
