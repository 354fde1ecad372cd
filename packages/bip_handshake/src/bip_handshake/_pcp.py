"""PCP (RFC 6887): the Port Control Protocol's packet codec, for what port mapping uses.

PCP replaced NAT-PMP (RFC 6886) on the same UDP port 5351 of the gateway; modern home
routers, many ISPs' carrier-grade NATs and IPv6 firewalls speak it. :class:`NatPmpClient`
(in ``_natpmp``) talks PCP first and falls back to NAT-PMP (RFC 6887 section 9); this
module holds only the packets it needs, pure and without state:

- :class:`PcpMapRequest` / :class:`PcpMapResponse`: opcode MAP (RFC 11.1): a 24-byte common
  header (version 2, the R bit telling a response, the opcode, a lifetime, the client's IP
  address in a request; the result code and the server's epoch time in a response) followed
  by the 36-byte MAP body (a 12-byte mapping nonce, the IANA protocol number, 6 for TCP and
  17 for UDP, the internal port, the suggested or assigned external port and address).
- :class:`PcpAnnounceResponse`: opcode ANNOUNCE (RFC 14.1), which a server sends unasked
  after it restarted (its epoch time tells the client to recreate its mappings).
- :class:`PcpErrorResponse`: a failure that carries the common header only (a server that
  does not speak our version answers so, its version field naming the one it speaks,
  RFC 9; a request too malformed to echo is answered so too). Such an answer names no
  nonce: the client takes it only as those two failures (see ``_natpmp``).
- :class:`PcpOption`: an option after the body (RFC 7.3), kept as code and bytes; a decoder
  walks them by their length fields, and a message is at most 1100 bytes (RFC 7), which
  bounds what a server can make us hold.

A message is 24 to 1100 bytes and a multiple of 4 (RFC 8.3: anything else is dropped); a
MAP response is the 24-byte header alone (a failure) or at least the 60 bytes of header and
body (libtorrent too drops a MAP answer of any other length).

Addresses are 16 bytes on the wire; an IPv4 address travels IPv4-mapped (``::ffff:a.b.c.d``,
RFC 5) and is given back as an :class:`~ipaddress.IPv4Address`. Decoding raises
:class:`PcpError` (a :class:`RemoteProtocolError`, beside NAT-PMP's own ``NatPmpError``:
the two protocols share a port, not a packet format), never another exception; building a
message with a bad field raises :class:`LocalProtocolError`.

Not here: the PEER opcode, and option semantics (THIRD_PARTY, PREFER_FAILURE, FILTER are
kept as bytes, never acted on). An IPv6 client address and mapping (a pinhole of an IPv6
firewall, which ``_natpmp``'s client asks for) travel as they are.

>>> from ipaddress import IPv4Address
>>> request = PcpMapRequest(
...     3600, IPv4Address("192.168.1.5"), bytes(12), MappingProtocol.TCP, 6881, 6881,
...     IPv4Address(0))
>>> len(request.encode()), decode_pcp_request(request.encode()) == request
(60, True)
>>> answer = PcpMapResponse(
...     PcpResult.SUCCESS, 3600, 1000, bytes(12), MappingProtocol.TCP, 6881, 40001,
...     IPv4Address("203.0.113.7"))
>>> decode_pcp_response(answer.encode()).external_address
IPv4Address('203.0.113.7')
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from ._errors import LocalProtocolError, RemoteProtocolError
from ._portmap import MappingProtocol

__all__ = [
    "PCP_MAX_MESSAGE",
    "PCP_NONCE_SIZE",
    "PCP_VERSION",
    "PcpAnnounceResponse",
    "PcpError",
    "PcpErrorResponse",
    "PcpMapRequest",
    "PcpMapResponse",
    "PcpMessage",
    "PcpOption",
    "PcpResult",
    "decode_pcp_request",
    "decode_pcp_response",
]

PCP_VERSION: Final = 2
"""The version field of PCP (RFC 6887 9: 0 is NAT-PMP, 1 was never standardised)."""

PCP_MAX_MESSAGE: Final = 1100
"""The most bytes a PCP message may have (RFC 7); anything longer is malformed."""

PCP_NONCE_SIZE: Final = 12
"""Bytes of a MAP request's mapping nonce (RFC 11.1)."""

_HEADER: Final = 24
_MAP_BODY: Final = 36
_RESPONSE_BIT: Final = 0x80
_OP_ANNOUNCE: Final = 0
_OP_MAP: Final = 1
_MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, IPv4-mapped IPv6 (RFC 4291)

# IANA protocol numbers (RFC 11.1), and back.
_IANA: Final = {MappingProtocol.TCP: 6, MappingProtocol.UDP: 17}
_FROM_IANA: Final = {number: protocol for protocol, number in _IANA.items()}

Address = IPv4Address | IPv6Address


class PcpError(RemoteProtocolError):
    """A PCP packet could not be decoded (raised by :func:`decode_pcp_response` and
    :func:`decode_pcp_request`; :class:`~bip_handshake.NatPmpClient` counts such packets
    instead).

    >>> decode_pcp_response(b"\\x02\\x81")
    Traceback (most recent call last):
    ...
    bip_handshake._pcp.PcpError: a PCP message has 24 to 1100 bytes, got 2
    """


class PcpResult(enum.IntEnum):
    """The result codes RFC 6887 7.4 defines. A response may carry others (kept as ints)."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


def _result(code: int) -> PcpResult | int:
    try:
        return PcpResult(code)
    except ValueError:
        return code


def _check_uint(name: str, value: object, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise LocalProtocolError(f"{name} is an int in 0..{(1 << bits) - 1}, got {value!r}")
    return value


def _check_address(name: str, value: object) -> Address:
    if not isinstance(value, IPv4Address | IPv6Address):
        raise LocalProtocolError(f"{name} is an IPv4Address or IPv6Address, got {value!r}")
    # An IPv4-mapped IPv6 address is the IPv4 address itself: keep one spelling of it, so
    # that what is decoded equals what was encoded.
    if isinstance(value, IPv6Address) and value.ipv4_mapped is not None:
        return value.ipv4_mapped
    return value


def _check_nonce(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != PCP_NONCE_SIZE:
        raise LocalProtocolError(f"a mapping nonce is {PCP_NONCE_SIZE} bytes, got {value!r}")
    return value


def _check_protocol(value: object) -> MappingProtocol:
    if not isinstance(value, MappingProtocol):
        raise LocalProtocolError(f"a protocol is a MappingProtocol, got {value!r}")
    return value


def _check_options(value: object) -> tuple[PcpOption, ...]:
    if not isinstance(value, tuple) or not all(isinstance(o, PcpOption) for o in value):
        raise LocalProtocolError(f"options are a tuple of PcpOption, got {value!r}")
    return value


def _check_size(body: int, options: tuple[PcpOption, ...]) -> None:
    size = _HEADER + body + sum(option.size for option in options)
    if size > PCP_MAX_MESSAGE:
        raise LocalProtocolError(f"a PCP message has at most {PCP_MAX_MESSAGE} bytes: {size}")


def _pack_address(address: Address) -> bytes:
    if isinstance(address, IPv4Address):
        return _MAPPED_PREFIX + address.packed
    return address.packed


def _unpack_address(data: bytes) -> Address:
    address = IPv6Address(data)
    return address.ipv4_mapped or address


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


@dataclass(frozen=True, slots=True)
class PcpOption:
    """One option after a message's body (RFC 7.3): a code and its data (padded on the wire
    to a multiple of 4 bytes, the padding not counted in its length).

    Attributes:
        code: the option code (0-127 must be understood by a server, 128-255 may be skipped).
        data: the option's data.
    """

    code: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_uint("an option code", self.code, 8)
        if not isinstance(self.data, bytes) or len(self.data) > PCP_MAX_MESSAGE:
            raise LocalProtocolError(f"option data is at most {PCP_MAX_MESSAGE} bytes")

    @property
    def size(self) -> int:
        """Bytes the option takes on the wire, header and padding included."""
        return 4 + -(-len(self.data) // 4) * 4

    def encode(self) -> bytes:
        """The option's bytes, padded."""
        padding = bytes(self.size - 4 - len(self.data))
        return bytes((self.code, 0)) + len(self.data).to_bytes(2, "big") + self.data + padding


def _decode_options(data: bytes, at: int) -> tuple[PcpOption, ...]:
    # The message is at most 1100 bytes (checked first), so this walk takes at most 275
    # steps and keeps at most that much.
    options: list[PcpOption] = []
    while at < len(data):
        if len(data) - at < 4:
            raise PcpError(f"{len(data) - at} stray bytes after the last PCP option")
        length = _u16(data, at + 2)
        end = at + 4 + length
        # RFC 7.3: the data is padded to a multiple of 4; the padding must be there too.
        if end + -length % 4 > len(data):
            raise PcpError(f"a PCP option of {length} bytes overruns the message")
        options.append(PcpOption(data[at], data[at + 4 : end]))
        at = end + -length % 4
    return tuple(options)


class PcpMessage:
    """Base class of the PCP packets (requests and responses)."""

    __slots__ = ()

    def encode(self) -> bytes:
        """The packet's bytes."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it


def _response_header(version: int, opcode: int, result: int, lifetime: int, epoch: int) -> bytes:
    return (
        bytes((version, _RESPONSE_BIT | opcode, 0, result))
        + lifetime.to_bytes(4, "big")
        + epoch.to_bytes(4, "big")
        + bytes(12)
    )


def _map_body(
    nonce: bytes, protocol: MappingProtocol, internal: int, external: int, address: Address
) -> bytes:
    return (
        nonce
        + bytes((_IANA[protocol], 0, 0, 0))
        + internal.to_bytes(2, "big")
        + external.to_bytes(2, "big")
        + _pack_address(address)
    )


@dataclass(frozen=True, slots=True)
class PcpMapRequest(PcpMessage):
    """Opcode MAP: forward an external port to ``internal_port`` (RFC 11.1).

    A renewal repeats the request with the same nonce; a lifetime of 0 deletes the mapping
    (RFC 15). An IPv4 client or suggestion goes IPv4-mapped; 0.0.0.0 suggests no address.

    Attributes:
        lifetime: seconds the mapping should live; 0 deletes it.
        client_address: our address as the server sees it (RFC 8.1: the source address).
        nonce: 12 random bytes naming the mapping; renewals and the deletion repeat them.
        protocol: UDP or TCP.
        internal_port: our port the server forwards to.
        suggested_external_port: the external port we would like; 0 lets the server pick.
        suggested_external_address: the external address we would like; 0.0.0.0 (or ``::``)
            lets the server pick.
        options: options after the body.
    """

    lifetime: int
    client_address: Address
    nonce: bytes
    protocol: MappingProtocol
    internal_port: int
    suggested_external_port: int
    suggested_external_address: Address
    options: tuple[PcpOption, ...] = ()

    def __post_init__(self) -> None:
        _check_uint("a lifetime", self.lifetime, 32)
        object.__setattr__(
            self, "client_address", _check_address("a client address", self.client_address)
        )
        _check_nonce(self.nonce)
        _check_protocol(self.protocol)
        _check_uint("an internal port", self.internal_port, 16)
        _check_uint("a suggested external port", self.suggested_external_port, 16)
        suggested = _check_address("a suggested address", self.suggested_external_address)
        object.__setattr__(self, "suggested_external_address", suggested)
        _check_size(_MAP_BODY, _check_options(self.options))

    def encode(self) -> bytes:
        """The request's bytes: 60, and its options."""
        return (
            bytes((PCP_VERSION, _OP_MAP, 0, 0))
            + self.lifetime.to_bytes(4, "big")
            + _pack_address(self.client_address)
            + _map_body(
                self.nonce,
                self.protocol,
                self.internal_port,
                self.suggested_external_port,
                self.suggested_external_address,
            )
            + b"".join(option.encode() for option in self.options)
        )


@dataclass(frozen=True, slots=True)
class PcpMapResponse(PcpMessage):
    """Opcode MAP with the R bit: what the server did with a MAP request (RFC 11.1).

    A server answers a failure with the request's body copied (so the nonce still tells
    which request it answers), the lifetime then saying how long the failure will last.

    Attributes:
        result: the result code.
        lifetime: seconds the mapping lives (0 after a deletion); after a failure, how long
            the server expects to refuse the same request.
        epoch: the server's epoch time, seconds since it last lost its state (RFC 8.5).
        nonce: the request's mapping nonce.
        protocol: UDP or TCP.
        internal_port: the request's internal port.
        external_port: the external port assigned.
        external_address: the external address assigned (IPv4 for an IPv4 mapping).
        options: options after the body.
    """

    result: PcpResult | int
    lifetime: int
    epoch: int
    nonce: bytes
    protocol: MappingProtocol
    internal_port: int
    external_port: int
    external_address: Address
    options: tuple[PcpOption, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", _result(_check_uint("a result", self.result, 8)))
        _check_uint("a lifetime", self.lifetime, 32)
        _check_uint("an epoch", self.epoch, 32)
        _check_nonce(self.nonce)
        _check_protocol(self.protocol)
        _check_uint("an internal port", self.internal_port, 16)
        _check_uint("an external port", self.external_port, 16)
        address = _check_address("an external address", self.external_address)
        object.__setattr__(self, "external_address", address)
        _check_size(_MAP_BODY, _check_options(self.options))

    def encode(self) -> bytes:
        """The response's bytes: 60, and its options."""
        return (
            _response_header(PCP_VERSION, _OP_MAP, int(self.result), self.lifetime, self.epoch)
            + _map_body(
                self.nonce,
                self.protocol,
                self.internal_port,
                self.external_port,
                self.external_address,
            )
            + b"".join(option.encode() for option in self.options)
        )


@dataclass(frozen=True, slots=True)
class PcpAnnounceResponse(PcpMessage):
    """Opcode ANNOUNCE with the R bit (RFC 14.1): the server's epoch time, sent unasked
    after a restart (or answering an ANNOUNCE request).

    Attributes:
        result: the result code (0 in an announcement).
        lifetime: 0 in an announcement.
        epoch: the server's epoch time (RFC 8.5).
        options: options after the header.
    """

    result: PcpResult | int
    lifetime: int
    epoch: int
    options: tuple[PcpOption, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", _result(_check_uint("a result", self.result, 8)))
        _check_uint("a lifetime", self.lifetime, 32)
        _check_uint("an epoch", self.epoch, 32)
        _check_size(0, _check_options(self.options))

    def encode(self) -> bytes:
        """The response's bytes: 24, and its options."""
        return _response_header(
            PCP_VERSION, _OP_ANNOUNCE, int(self.result), self.lifetime, self.epoch
        ) + b"".join(option.encode() for option in self.options)


@dataclass(frozen=True, slots=True)
class PcpErrorResponse(PcpMessage):
    """A failure answered with the common header only (RFC 7.2).

    A server that does not speak the request's version answers UNSUPP_VERSION this way,
    its version field naming the version it speaks (RFC 9): the one response decoded with
    another version than 2. A server may answer a request too malformed to echo this short
    too (MALFORMED_REQUEST). Naming no nonce, it may come from anyone who can send from the
    gateway's address: :class:`~bip_handshake.NatPmpClient` takes it for those two results
    alone, and never lets it clear a standing grant.

    Attributes:
        version: the version field (2, or the version the server speaks).
        opcode: the opcode (the R bit taken off).
        result: the (non-zero) result code.
        lifetime: how long the server expects the failure to last.
        epoch: the server's epoch time.
    """

    version: int
    opcode: int
    result: PcpResult | int
    lifetime: int
    epoch: int

    def __post_init__(self) -> None:
        _check_uint("a version", self.version, 8)
        _check_uint("an opcode", self.opcode, 7)
        object.__setattr__(self, "result", _result(_check_uint("a result", self.result, 8)))
        if self.result == PcpResult.SUCCESS:
            raise LocalProtocolError("a header-only response is a failure: its result is not 0")
        _check_uint("a lifetime", self.lifetime, 32)
        _check_uint("an epoch", self.epoch, 32)

    def encode(self) -> bytes:
        """The response's 24 bytes."""
        return _response_header(
            self.version, self.opcode, int(self.result), self.lifetime, self.epoch
        )


PcpResponse = PcpMapResponse | PcpAnnounceResponse | PcpErrorResponse


def _check_length(data: bytes) -> None:
    if not _HEADER <= len(data) <= PCP_MAX_MESSAGE:
        raise PcpError(f"a PCP message has {_HEADER} to {PCP_MAX_MESSAGE} bytes, got {len(data)}")
    if len(data) % 4:
        # RFC 8.3 (and 8.1 for a server): a message not a multiple of 4 bytes is dropped.
        raise PcpError(f"a PCP message is a multiple of 4 bytes long, got {len(data)}")


def _decode_map_body(data: bytes) -> tuple[bytes, MappingProtocol, int, int, Address]:
    protocol = _FROM_IANA.get(data[_HEADER + 12])
    if protocol is None:
        raise PcpError(f"not a TCP or UDP mapping: protocol {data[_HEADER + 12]}")
    return (
        data[_HEADER : _HEADER + 12],
        protocol,
        _u16(data, _HEADER + 16),
        _u16(data, _HEADER + 18),
        _unpack_address(data[_HEADER + 20 : _HEADER + 36]),
    )


def decode_pcp_response(data: bytes) -> PcpResponse:
    """Decode a packet a PCP server sent (MAP, ANNOUNCE, or a header-only failure).

    Raises:
        PcpError: not a PCP response: shorter than 24 bytes, longer than 1100 or not a
            multiple of 4, without the R bit, of another version than 2 (unless it is
            UNSUPP_VERSION naming the server's), a success of an opcode we do not use or
            too short for its body, a MAP response neither 24 bytes (a header-only failure)
            nor at least 60, a protocol other than TCP and UDP, or options that overrun the
            message.

    >>> answer = decode_pcp_response(bytes.fromhex("008000010000000000000010") + bytes(12))
    >>> answer.version, answer.result
    (0, <PcpResult.UNSUPP_VERSION: 1>)
    """
    data = bytes(data)
    _check_length(data)
    version, opcode = data[0], data[1] & 0x7F
    if not data[1] & _RESPONSE_BIT:
        raise PcpError("a PCP request, not a response")
    result = _result(data[3])
    lifetime, epoch = _u32(data, 4), _u32(data, 8)
    if version != PCP_VERSION:
        if result == PcpResult.UNSUPP_VERSION:
            return PcpErrorResponse(version, opcode, result, lifetime, epoch)
        raise PcpError(f"not a PCP version 2 response: version {version}")
    if opcode == _OP_MAP and len(data) >= _HEADER + _MAP_BODY:
        nonce, protocol, internal, external, address = _decode_map_body(data)
        options = _decode_options(data, _HEADER + _MAP_BODY)
        return PcpMapResponse(
            result, lifetime, epoch, nonce, protocol, internal, external, address, options
        )
    if opcode == _OP_MAP and len(data) != _HEADER:
        # Neither the header alone nor header and body: a truncated body is no answer.
        raise PcpError(f"a PCP MAP response has 24 or at least 60 bytes, got {len(data)}")
    if opcode == _OP_ANNOUNCE:
        return PcpAnnounceResponse(result, lifetime, epoch, _decode_options(data, _HEADER))
    if result == PcpResult.SUCCESS:
        raise PcpError(f"not a PCP response we use: opcode {opcode}, {len(data)} bytes")
    return PcpErrorResponse(version, opcode, result, lifetime, epoch)


def decode_pcp_request(data: bytes) -> PcpMapRequest:
    """Decode a MAP request a client sent (what a server, or a test's fake one, reads).

    Raises:
        PcpError: not a version-2 PCP MAP request of 60 to 1100 bytes (a multiple of 4)
            with well-formed options, or not for TCP or UDP.
    """
    data = bytes(data)
    _check_length(data)
    if data[0] != PCP_VERSION or data[1] != _OP_MAP or len(data) < _HEADER + _MAP_BODY:
        raise PcpError(f"not a PCP MAP request: version {data[0]}, opcode byte {data[1]}")
    nonce, protocol, internal, external, address = _decode_map_body(data)
    return PcpMapRequest(
        _u32(data, 4),
        _unpack_address(data[8:24]),
        nonce,
        protocol,
        internal,
        external,
        address,
        _decode_options(data, _HEADER + _MAP_BODY),
    )
