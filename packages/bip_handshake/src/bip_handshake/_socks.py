"""A SOCKS5 client (RFC 1928, with RFC 1929 username/password), as a sans-IO codec.

:class:`Socks5Client` holds one conversation with a SOCKS5 proxy that ends with a TCP
connection to a target (the ``CONNECT`` command) or with a UDP association (``UDP
ASSOCIATE``, :class:`SocksCommand`: the proxy relays datagrams for us while the connection
stays open; the reply's bound address is its relay). It never touches a socket: the caller
sends what :meth:`~Socks5Client.data_to_send` gives, reads at most
:attr:`~Socks5Client.receive_size` bytes and feeds them to
:meth:`~Socks5Client.receive_data`, until :attr:`~Socks5Client.done`. The trio shell is
:mod:`bip_handshake._socks_shell`.

The conversation:

1. greeting: the methods we accept, no authentication and, when credentials are given,
   username/password (the proxy picks; offering both lets a proxy that needs none skip it,
   as curl does);
2. the proxy's choice (2 bytes); with username/password, RFC 1929's sub-negotiation (each
   field 1 to 255 bytes: refused before anything is sent) and its status (2 bytes);
3. the request (``CONNECT``, or ``UDP ASSOCIATE``), with an IPv4 address, an IPv6 address or
   a domain name (at most 255 bytes: the proxy resolves it, libtorrent's ``proxy_hostnames``,
   curl's ``socks5h://``);
4. the reply: ``VER REP RSV ATYP BND.ADDR BND.PORT``, at most 4 + 1 + 255 + 2 bytes.

Bounds: :attr:`~Socks5Client.receive_size` is exactly what the current message still needs,
so a caller that reads no more never takes a byte past the reply (the first bytes of the
target's own protocol); bytes beyond it fed to :meth:`~Socks5Client.receive_data` are the
proxy's error (:class:`SocksProtocolError`). Nothing the proxy says makes us keep more than
one reply.

Every failure is a :class:`SocksError` (an :class:`OSError` too, as a refused TCP connect
is, so that a dialer's caller counts it as a failed connect): :class:`SocksProtocolError`
(the proxy broke the protocol), :class:`SocksAuthError` (no method in common, credentials
refused) and :class:`SocksReplyError` (the proxy could not connect, or refused the
association; its ``code`` is the reply's, with the matching ``errno``);
:class:`SocksUnavailableError` is the UDP shell's (:mod:`bip_handshake._socks_udp`): no
association to send through.

Datagrams through a UDP association carry RFC 1928's header (section 7):
:func:`encode_socks5_datagram` wraps one for the relay, :func:`decode_socks5_datagram` unwraps
what the relay sends back (:class:`SocksDatagram`); a fragment, or anything malformed, is a
:class:`SocksProtocolError`.

>>> encode_socks5_datagram("10.0.0.1", 6881, b"hi").hex(" ")
'00 00 00 01 0a 00 00 01 1a e1 68 69'
>>> decode_socks5_datagram(bytes.fromhex("000000010a0000011ae16869"))
SocksDatagram(host=IPv4Address('10.0.0.1'), port=6881, payload=b'hi')

>>> client = Socks5Client("example.org", 6881)
>>> client.data_to_send().hex(" ")
'05 01 00'
>>> client.receive_size
2
>>> client.receive_data(bytes([5, 0]))  # no authentication
>>> client.data_to_send().hex(" ")
'05 01 00 03 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 1a e1'
>>> client.receive_size  # up to the first byte of the bound address: its type is known then
5
>>> client.receive_data(bytes([5, 0, 0, 1, 10]))
>>> client.receive_size
5
>>> client.receive_data(bytes([0, 0, 1, 0x1A, 0xE1]))
>>> client.done, client.bound
(True, ('10.0.0.1', 6881))
"""

from __future__ import annotations

import contextlib
import errno
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final, overload

from ._errors import HandshakeError

__all__ = [
    "MAX_REPLY_SIZE",
    "SOCKS_REPLY_REASONS",
    "Socks5Client",
    "SocksAuthError",
    "SocksCommand",
    "SocksDatagram",
    "SocksError",
    "SocksProtocolError",
    "SocksReplyError",
    "SocksState",
    "SocksUnavailableError",
    "decode_socks5_datagram",
    "encode_address",
    "encode_socks5_datagram",
]

SOCKS_VERSION: Final = 5
"""The protocol version of every SOCKS5 message but RFC 1929's."""
_AUTH_VERSION: Final = 1
"""RFC 1929's sub-negotiation version."""
METHOD_NO_AUTH: Final = 0x00
METHOD_USERNAME: Final = 0x02
METHOD_NONE_ACCEPTABLE: Final = 0xFF
CMD_CONNECT: Final = 0x01
CMD_UDP_ASSOCIATE: Final = 0x03
ATYP_IPV4: Final = 0x01
ATYP_DOMAIN: Final = 0x03
ATYP_IPV6: Final = 0x04
MAX_FIELD: Final = 255
"""Bytes of a username, a password or a domain name at most (one length byte each)."""
MAX_REPLY_SIZE: Final = 4 + 1 + MAX_FIELD + 2
"""Bytes of the longest reply (a domain name of 255 bytes): never read more."""
MAX_DATAGRAM_SIZE: Final = 0xFFFF
"""Bytes of a UDP datagram at most (a UDP length field's bound): header and payload together."""

SOCKS_REPLY_REASONS: Final[dict[int, tuple[str, int | None]]] = {
    0x01: ("general SOCKS server failure", errno.EIO),
    0x02: ("connection not allowed by ruleset", errno.EACCES),
    0x03: ("network unreachable", errno.ENETUNREACH),
    0x04: ("host unreachable", errno.EHOSTUNREACH),
    0x05: ("connection refused", errno.ECONNREFUSED),
    0x06: ("TTL expired", errno.ETIMEDOUT),
    0x07: ("command not supported", errno.EOPNOTSUPP),
    0x08: ("address type not supported", errno.EAFNOSUPPORT),
}
"""RFC 1928's failure codes: what each means, and the ``errno`` a :class:`SocksReplyError`
carries for it (codes 9 to 255 are unassigned: no errno)."""


class SocksCommand(IntEnum):
    """What a :class:`Socks5Client` asks the proxy for (RFC 1928, section 4: ``CMD``).

    BIND (2) is left out: nothing here waits for a peer to connect through a proxy (libtorrent
    does not either).
    """

    CONNECT = CMD_CONNECT
    """A TCP connection to the target: the stream carries the target's bytes afterwards."""
    UDP_ASSOCIATE = CMD_UDP_ASSOCIATE
    """A UDP relay: the target is where we will send from (``0.0.0.0:0``: anywhere), the
    reply's bound address is the relay, and the association lasts as long as the TCP
    connection."""


class SocksError(HandshakeError, OSError):
    """A SOCKS5 conversation failed: the base of this module's errors.

    Also an :class:`OSError`, as a failed TCP connect is: a
    :data:`~bip_handshake.Dialer`'s caller counts it as a failed connect, and ``strerror``
    holds the message for logs. A proxy that cannot be reached, or that does not answer in
    time, raises this class itself (from :func:`~bip_handshake.open_socks5_stream`).

    >>> isinstance(SocksReplyError(5), OSError)
    True
    """

    def __init__(self, message: str, *, errno_value: int | None = None) -> None:
        super().__init__(message)
        # Set by hand: OSError(errno, strerror) would prefix "[Errno n]" to the message.
        self.errno = errno_value
        self.strerror = message

    def __str__(self) -> str:
        """The message alone (an :class:`OSError` with an errno would prefix ``[Errno n]``)."""
        return str(self.strerror)


class SocksProtocolError(SocksError):
    """The proxy broke the protocol (another version, a method we did not offer, garbage,
    more bytes than a reply, or the end of the connection mid-conversation).

    >>> client = Socks5Client("10.0.0.1", 80)
    >>> client.receive_data(b"HTTP/1.1")
    Traceback (most recent call last):
    ...
    bip_handshake._socks.SocksProtocolError: the proxy sent 8 bytes where 2 were expected
    """


class SocksAuthError(SocksError):
    """The proxy accepts none of the methods we offered, or refused our credentials.

    >>> client = Socks5Client("10.0.0.1", 80)
    >>> client.receive_data(bytes([5, 0xFF]))
    Traceback (most recent call last):
    ...
    bip_handshake._socks.SocksAuthError: the proxy accepts none of our methods (no authentication)
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, errno_value=errno.EACCES)


class SocksReplyError(SocksError):
    """The proxy answered our request with a failure code (RFC 1928, section 6).

    Attributes:
        code: the reply's code, 1 to 255 (:data:`SOCKS_REPLY_REASONS`).
        reason: what the code means.
        command: the request it answered.

    >>> error = SocksReplyError(5)
    >>> str(error), error.errno == errno.ECONNREFUSED
    ('the proxy could not connect: connection refused (SOCKS5 reply 5)', True)
    >>> str(SocksReplyError(7, command=SocksCommand.UDP_ASSOCIATE))
    'the proxy refused a UDP association: command not supported (SOCKS5 reply 7)'
    """

    def __init__(self, code: int, *, command: SocksCommand = SocksCommand.CONNECT) -> None:
        reason, errno_value = SOCKS_REPLY_REASONS.get(code, ("unassigned failure code", None))
        what = (
            "could not connect" if command is SocksCommand.CONNECT else "refused a UDP association"
        )
        super().__init__(
            f"the proxy {what}: {reason} (SOCKS5 reply {code})", errno_value=errno_value
        )
        self.code = code
        self.reason = reason
        self.command = command


class SocksUnavailableError(SocksError):
    """No UDP association is up: a datagram cannot go through the proxy, and is not sent
    directly either (as libtorrent's ``permission_denied``: a proxy is there to hide us).

    ``errno`` is EACCES.

    >>> SocksUnavailableError("no UDP association").errno == errno.EACCES
    True
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, errno_value=errno.EACCES)


class SocksState(Enum):
    """Where a :class:`Socks5Client` conversation stands: what it waits for."""

    METHOD = "method"
    """The proxy's choice of method, after our greeting."""
    AUTH = "auth"
    """RFC 1929's status, after our username and password."""
    REPLY = "reply"
    """The reply to our request."""
    DONE = "done"
    """Connected: the stream carries the target's bytes from here (``UDP ASSOCIATE``: the
    association holds while the connection stays open)."""
    FAILED = "failed"
    """A :class:`SocksError` was raised: the connection is of no further use."""


def _field(name: str, value: str | bytes) -> bytes:
    """A username or password as bytes (UTF-8 for text), 1 to 255 of them, else ValueError."""
    if isinstance(value, str):
        raw = value.encode("utf-8")
    elif isinstance(value, bytes):
        raw = value
    else:
        raise TypeError(f"the SOCKS5 {name} is str or bytes, not {type(value).__name__}")
    if not 1 <= len(raw) <= MAX_FIELD:
        # The length alone: the value may be a secret.
        raise ValueError(f"the SOCKS5 {name} must be 1 to {MAX_FIELD} bytes, not {len(raw)}")
    return raw


def encode_address(host: str | IPv4Address | IPv6Address, port: int) -> bytes:
    """``ATYP DST.ADDR DST.PORT`` for ``host``: an IP address (literal or object) as itself, any
    other text as a domain name for the proxy to resolve (IDNA for non-ASCII).

    >>> encode_address("::1", 80).hex()
    '04000000000000000000000000000000010050'

    Raises:
        ValueError: ``port`` is not in 0..65535, or the name is empty, longer than 255
            bytes, or cannot be written in ASCII.
        TypeError: ``host`` is neither text nor an IP address.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"a port is 0..65535, not {port!r}")
    if isinstance(host, str):
        with contextlib.suppress(ValueError):  # not an address: a name
            host = ip_address(host.removeprefix("[").removesuffix("]"))
    if isinstance(host, IPv4Address):
        return bytes([ATYP_IPV4]) + host.packed + port.to_bytes(2, "big")
    if isinstance(host, IPv6Address):
        return bytes([ATYP_IPV6]) + host.packed + port.to_bytes(2, "big")
    if not isinstance(host, str):
        raise TypeError(f"a SOCKS5 target is a host name or an IP address, not {host!r}")
    try:
        name = host.encode("ascii") if host.isascii() else host.encode("idna")
    except UnicodeError:
        raise ValueError(f"cannot write host name {host!r:.80} in ASCII") from None
    if not 1 <= len(name) <= MAX_FIELD:
        raise ValueError(f"a SOCKS5 host name is 1 to {MAX_FIELD} bytes, not {len(name)}")
    return bytes([ATYP_DOMAIN, len(name)]) + name + port.to_bytes(2, "big")


class Socks5Client:
    """One SOCKS5 conversation, client side, without I/O: ``CONNECT`` or ``UDP ASSOCIATE``.

    Send :meth:`data_to_send` whenever it is not empty (the greeting at first); read at most
    :attr:`receive_size` bytes and pass them to :meth:`receive_data` (``b""`` for the end of
    the stream); stop once :attr:`done`. A :class:`SocksError` ends the conversation
    (:attr:`state` is then :attr:`SocksState.FAILED`).

    Args:
        host: the target: an IP address (text or object), or a host name the proxy resolves.
            For ``UDP ASSOCIATE``, the address we will send datagrams from (``0.0.0.0`` and
            port 0 when we do not know it, as libtorrent).
        port: the target's port.
        username: RFC 1929's username (text is sent as UTF-8); with ``password``, the
            greeting offers username/password besides no authentication.
        password: RFC 1929's password; both or neither.
        command: what to ask for: a TCP connection, or a UDP association (then
            :attr:`bound` is the proxy's relay).

    >>> client = Socks5Client("0.0.0.0", 0, command=SocksCommand.UDP_ASSOCIATE)
    >>> client.data_to_send().hex(" ")
    '05 01 00'
    >>> client.receive_data(bytes([5, 0]))
    >>> client.data_to_send().hex(" ")
    '05 03 00 01 00 00 00 00 00 00'

    Raises:
        ValueError: the target cannot be written (see ``encode_address``), only one of
            ``username`` and ``password`` is given, either is empty or longer than 255
            bytes, or ``command`` is no :class:`SocksCommand`.
    """

    __slots__ = (
        "_auth",
        "_bound",
        "_bound_host",
        "_buffer",
        "_command",
        "_outgoing",
        "_request",
        "_state",
        "_wanted",
    )

    # Two signatures for type checkers: a caller passing its credentials as ``**dict[str,
    # str]`` (as CONNECT's callers did before the command existed) still type-checks.
    @overload
    def __init__(
        self,
        host: str | IPv4Address | IPv6Address,
        port: int,
        *,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        host: str | IPv4Address | IPv6Address,
        port: int,
        *,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        command: SocksCommand,
    ) -> None: ...

    def __init__(
        self,
        host: str | IPv4Address | IPv6Address,
        port: int,
        *,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        command: SocksCommand = SocksCommand.CONNECT,
    ) -> None:
        try:
            self._command = SocksCommand(command)
        except ValueError:
            raise ValueError(
                f"a SOCKS5 command is CONNECT or UDP_ASSOCIATE, not {command!r}"
            ) from None
        self._request = bytes([SOCKS_VERSION, self._command, 0]) + encode_address(host, port)
        if (username is None) != (password is None):
            raise ValueError("SOCKS5 credentials need both a username and a password")
        self._auth: bytes | None = None
        methods = bytes([METHOD_NO_AUTH])
        if username is not None and password is not None:
            user, secret = _field("username", username), _field("password", password)
            self._auth = bytes([_AUTH_VERSION, len(user)]) + user + bytes([len(secret)]) + secret
            methods += bytes([METHOD_USERNAME])
        self._outgoing = bytes([SOCKS_VERSION, len(methods)]) + methods
        self._state = SocksState.METHOD
        self._buffer = b""
        self._wanted = 2
        self._bound: tuple[str, int] | None = None
        self._bound_host: IPv4Address | IPv6Address | str | None = None

    @property
    def command(self) -> SocksCommand:
        """What this conversation asks the proxy for."""
        return self._command

    @property
    def state(self) -> SocksState:
        """What the conversation waits for."""
        return self._state

    @property
    def done(self) -> bool:
        """Whether the proxy connected us: the stream carries the target's bytes from here."""
        return self._state is SocksState.DONE

    @property
    def bound(self) -> tuple[str, int] | None:
        """The reply's ``BND.ADDR`` (an IP address or a name, as text) and ``BND.PORT``: the
        proxy's end of its connection to the target (``UDP ASSOCIATE``: its relay). None
        until :attr:`done`."""
        return self._bound

    @property
    def bound_host(self) -> IPv4Address | IPv6Address | str | None:
        """The reply's ``BND.ADDR`` as the proxy wrote it: an IP address, or a domain name as
        text (which :attr:`bound` cannot tell from an address). None until :attr:`done`.

        >>> client = Socks5Client("10.0.0.1", 80)
        >>> client.receive_data(bytes([5, 0]))
        >>> client.receive_data(bytes([5, 0, 0, 3, 1]))
        >>> client.receive_data(b"1" + bytes(2))
        >>> client.bound, client.bound_host
        (('1', 0), '1')
        """
        return self._bound_host

    @property
    def receive_size(self) -> int:
        """Bytes to read next, at most: what the current message still needs, so that a read
        never takes a byte past the reply. 0 once done or failed."""
        if self._state in (SocksState.DONE, SocksState.FAILED):
            return 0
        return self._wanted - len(self._buffer)

    def data_to_send(self) -> bytes:
        """The bytes to send now (empty when nothing is due); each call takes them."""
        data, self._outgoing = self._outgoing, b""
        return data

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes the proxy sent (``b""``: it closed the connection).

        Raises:
            SocksProtocolError: the proxy broke the protocol, closed the connection, or sent
                more than :attr:`receive_size` bytes.
            SocksAuthError: no method in common, or our credentials were refused.
            SocksReplyError: the proxy could not connect to the target.
            RuntimeError: the conversation is already over (done or failed): a bug of the
                caller's.
        """
        if self._state in (SocksState.DONE, SocksState.FAILED):
            raise RuntimeError(f"the SOCKS5 conversation is over ({self._state.value})")
        try:
            self._receive(bytes(data))
        except SocksError:
            self._state = SocksState.FAILED
            self._outgoing = b""
            raise

    def _receive(self, data: bytes) -> None:
        if not data:
            raise SocksProtocolError(
                f"the proxy closed the connection while we waited for its {self._state.value}"
            )
        if len(data) > self.receive_size:
            raise SocksProtocolError(
                f"the proxy sent {len(data)} bytes where {self.receive_size} were expected"
            )
        self._buffer += data
        if self._state is SocksState.METHOD:
            self._method()
        elif self._state is SocksState.AUTH:
            self._auth_status()
        else:
            self._reply()

    def _method(self) -> None:
        if len(self._buffer) < 2:
            return
        version, method = self._buffer
        if version != SOCKS_VERSION:
            raise SocksProtocolError(f"not a SOCKS5 proxy (version {version} in its answer)")
        if method == METHOD_NONE_ACCEPTABLE:
            offered = "no authentication" if self._auth is None else "none or username/password"
            raise SocksAuthError(f"the proxy accepts none of our methods ({offered})")
        if method == METHOD_USERNAME and self._auth is not None:
            self._next(SocksState.AUTH, self._auth, 2)
        elif method == METHOD_NO_AUTH:
            self._next(SocksState.REPLY, self._request, 5)
        else:
            raise SocksProtocolError(f"the proxy chose method {method}, which we did not offer")

    def _auth_status(self) -> None:
        if len(self._buffer) < 2:
            return
        version, status = self._buffer
        # RFC 1929 says 1; some proxies answer with SOCKS's 5, which curl accepts too.
        if version not in (_AUTH_VERSION, SOCKS_VERSION):
            raise SocksProtocolError(f"a username/password status of version {version}")
        if status != 0:
            raise SocksAuthError(f"the proxy refused our username and password (status {status})")
        self._next(SocksState.REPLY, self._request, 5)

    def _reply(self) -> None:
        buffer = self._buffer
        if len(buffer) >= 1 and buffer[0] != SOCKS_VERSION:
            raise SocksProtocolError(f"a reply of version {buffer[0]}")
        # A failure is final as soon as its code is here: a proxy may close right after it.
        if len(buffer) >= 2 and buffer[1] != 0:
            raise SocksReplyError(buffer[1], command=self._command)
        if len(buffer) < 5:
            return
        # RSV (buffer[2]) is ignored: it is reserved, and curl ignores it too.
        atyp = buffer[3]
        if atyp == ATYP_IPV4:
            size = 4 + 4 + 2
        elif atyp == ATYP_IPV6:
            size = 4 + 16 + 2
        elif atyp == ATYP_DOMAIN:
            if buffer[4] == 0:
                raise SocksProtocolError("a reply with an empty bound name")
            size = 4 + 1 + buffer[4] + 2
        else:
            raise SocksProtocolError(f"a reply of address type {atyp}")
        self._wanted = size
        if len(buffer) < size:
            return
        (port,) = struct.unpack_from("!H", buffer, size - 2)
        bound_host: IPv4Address | IPv6Address | str
        if atyp == ATYP_DOMAIN:
            bound_host = buffer[5 : size - 2].decode("latin-1")
        else:
            bound_host = ip_address(buffer[4 : size - 2])
        self._bound_host = bound_host
        self._bound = (str(bound_host), port)
        self._buffer = b""
        self._state = SocksState.DONE

    def _next(self, state: SocksState, message: bytes, wanted: int) -> None:
        """Go on to ``state``: send ``message``, then wait for ``wanted`` bytes."""
        self._state = state
        self._outgoing += message
        self._buffer = b""
        self._wanted = wanted


@dataclass(frozen=True, slots=True)
class SocksDatagram:
    """A datagram a proxy's UDP relay handed us, unwrapped (RFC 1928, section 7).

    Attributes:
        host: where it came from, as the relay says: an IP address, or a domain name as text.
        port: its source port.
        payload: the datagram's own bytes.
    """

    host: IPv4Address | IPv6Address | str
    port: int
    payload: bytes


_DATAGRAM_HEAD: Final = 4
"""``RSV RSV FRAG ATYP``: the bytes before a datagram's address."""


def encode_socks5_datagram(
    host: str | IPv4Address | IPv6Address,
    port: int,
    payload: bytes | bytearray | memoryview,
) -> bytes:
    """``payload`` for ``host:port``, wrapped for a proxy's UDP relay: ``RSV`` 0, ``FRAG`` 0 (a
    whole datagram), then ``ATYP DST.ADDR DST.PORT`` as ``encode_address`` writes them (a
    host name goes as a domain name, for the proxy to resolve) and the payload.

    >>> encode_socks5_datagram("::1", 80, b"").hex()
    '00000004000000000000000000000000000000010050'

    Raises:
        ValueError: ``port`` is not in 0..65535, the name is empty, longer than 255 bytes or
            not writable in ASCII, or the datagram would exceed 65,535 bytes.
        TypeError: ``host`` is neither text nor an IP address, or ``payload`` is not bytes.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"a datagram's payload is bytes, not {type(payload).__name__}")
    head = bytes(3) + encode_address(host, port)
    # Its bytes, not its items (len() of a memoryview of int16 items counts each once), and
    # measured before any copy is made.
    with memoryview(payload) as view:
        size = len(head) + view.nbytes
    if size > MAX_DATAGRAM_SIZE:
        raise ValueError(
            f"a datagram of {size} bytes with its SOCKS5 header: more than {MAX_DATAGRAM_SIZE}"
        )
    return head + bytes(payload)


def decode_socks5_datagram(data: bytes | bytearray | memoryview) -> SocksDatagram:
    """The source and payload of a datagram from a proxy's UDP relay.

    >>> decode_socks5_datagram(bytes.fromhex("0000000304686f737400506869"))
    SocksDatagram(host='host', port=80, payload=b'hi')
    >>> decode_socks5_datagram(bytes.fromhex("000001010a0000011ae1"))
    Traceback (most recent call last):
    ...
    bip_handshake._socks.SocksProtocolError: a SOCKS5 datagram fragment (FRAG 1): not reassembled

    Raises:
        SocksProtocolError: shorter than its header, ``RSV`` not zero, a fragment (``FRAG``
            not zero: we reassemble none, as libtorrent), an unknown address type, or an
            empty or non-ASCII domain name.
    """
    raw = bytes(data)
    if len(raw) < _DATAGRAM_HEAD + 1:
        raise SocksProtocolError(f"a SOCKS5 datagram of {len(raw)} bytes: shorter than its header")
    if raw[0] or raw[1]:
        raise SocksProtocolError(f"a SOCKS5 datagram with RSV {raw[:2].hex()}, not 0000")
    if raw[2]:
        raise SocksProtocolError(f"a SOCKS5 datagram fragment (FRAG {raw[2]}): not reassembled")
    atyp = raw[3]
    host: IPv4Address | IPv6Address | str
    if atyp == ATYP_IPV4:
        end = _DATAGRAM_HEAD + 4
    elif atyp == ATYP_IPV6:
        end = _DATAGRAM_HEAD + 16
    elif atyp == ATYP_DOMAIN:
        if raw[4] == 0:
            raise SocksProtocolError("a SOCKS5 datagram from an empty domain name")
        end = _DATAGRAM_HEAD + 1 + raw[4]
    else:
        raise SocksProtocolError(f"a SOCKS5 datagram of address type {atyp}")
    if len(raw) < end + 2:
        raise SocksProtocolError(
            f"a SOCKS5 datagram of {len(raw)} bytes: its header needs {end + 2}"
        )
    if atyp == ATYP_DOMAIN:
        try:
            host = raw[_DATAGRAM_HEAD + 1 : end].decode("ascii")
        except UnicodeDecodeError:
            raise SocksProtocolError("a SOCKS5 datagram from a non-ASCII domain name") from None
    elif atyp == ATYP_IPV4:
        host = IPv4Address(raw[_DATAGRAM_HEAD:end])
    else:
        host = IPv6Address(raw[_DATAGRAM_HEAD:end])
    return SocksDatagram(host, int.from_bytes(raw[end : end + 2], "big"), raw[end + 2 :])
