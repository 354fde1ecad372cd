"""Local Service Discovery (BEP 14): finding peers on the local network, as a sans-IO core.

A client on a LAN multicasts a small HTTP-like ``BT-SEARCH`` message to 239.192.152.143:6771
(IPv4) or [ff15::efc0:988f]:6771 (IPv6) naming the torrents it is in and the port it listens
on; every client that joined the group and is in one of those torrents dials it. This module
holds the message codec (:class:`LsdAnnounce`, :func:`decode_lsd_announce`) and
:class:`LsdService`, which decides when to announce what and which announces to believe. It
never reads a clock nor touches a socket (the caller passes ``now``, in seconds from any
monotonic origin, and moves datagrams in and out):

- ``announce(info_hash, now)`` / ``withdraw(info_hash)`` say which torrents we want peers for;
- ``datagrams_to_send(now)`` gives the ``(bytes, group)`` pairs to send;
- ``receive_datagram(data, source, now)`` takes whatever arrived on the group's port;
- ``next_deadline()`` / ``handle_timer(now)`` drive the schedule;
- ``next_event()`` gives :class:`LsdPeerFound` events (a peer in a torrent we announce), or
  None.

How BEP 14 is run:

- A torrent is announced at once, then every :data:`LSD_ANNOUNCE_INTERVAL` (5 minutes, as
  libtorrent and BEP 14). A v1 torrent is announced by its info-hash; a v2 torrent by its
  BEP 52 truncated hash (the first 20 bytes of its SHA-256 one), as libtorrent does; a
  hybrid by both (pass a :class:`~bip_metainfo.InfoHash` and its swarm ids are taken).
- The regular messages are at least ``min_gap`` seconds apart (:data:`LSD_MIN_GAP`, one a
  minute as BEP 14 asks: many torrents never make a multicast storm); a torrent falling
  due meanwhile waits, the most overdue going first.
- A torrent's first announce (of a torrent not announced until then: newly added, or
  announced again after :meth:`~LsdService.withdraw`) goes in the next regular message if
  that may go now, else at once in a *first-announce* message beyond the regular ones,
  as libtorrent announces a torrent as soon as it starts: two clients on one LAN find
  each other in a moment, not a minute later. It is then sent again 2 s later and again 4
  s after that (``first_retries``, :data:`LSD_FIRST_RETRIES`, 2: libtorrent's lsd.cpp
  does the same), in first-announce messages: Wi-Fi drops multicast datagrams freely, and
  one lost first announce would otherwise put discovery off until the next, 5 minutes
  later. First-announce messages, retries included, are bounded: at most
  ``first_announces`` (:data:`LSD_FIRST_ANNOUNCES`, 14) within any ``min_gap`` seconds,
  so the whole of what we send stays within 15 messages a minute, however many torrents
  come and go. Torrents never announced go first (the oldest first), then the retries
  due (the most overdue first; a retry still waiting when its torrent's regular announce
  comes is dropped); beyond the allowance they wait. So five torrents added at once all
  go at once, one message each, and again 2 and 6 s later; a thousand added at once make
  15 messages of 25 hashes (see below) at once, and as many each minute until each was
  announced once. Re-announces keep the regular schedule: the first of a torrent
  announced early this way may come a few gaps late.
- Each message names one torrent while every torrent announced can have its own message
  within the interval (at most ``announce_interval / min_gap`` of them: 5 by default), as
  BEP 14 has it: several ``Infohash`` headers in one message "may not be supported by older
  implementations", and they are not: Transmission up to 3 reads 200 bytes of a datagram
  and the first ``Infohash`` only. One hash makes a message of 200 bytes at most on BEP 14's
  groups. Only beyond that do several torrents share one message (consecutive ``Infohash``
  headers, BEP 14's other choice), up to :data:`LSD_MAX_MESSAGE` bytes (1400: no IP
  fragmentation): when a regular message goes out, torrents falling due before the next one
  could go ride along, so torrents announced at different times fall in step and share
  messages; a first-announce message then carries the torrents awaiting their first
  announce, the oldest first (and nothing else).
  With more torrents than five minutes of messages can carry, each is announced less often,
  the most overdue first (BEP 14's round robin).
- Every message carries a random ``cookie`` (as libtorrent does): the multicast loopback
  brings our own messages back, and the cookie tells them apart.
- An announce is believed only for torrents we announce ourselves (others' hashes are
  counted and dropped); the peer is the datagram's source address with the ``Port``
  header's port (BEP 14: the port is the one the sender listens on; the source port is the
  group's). Port 0, an IPv6 link-local source (it cannot be dialled without its scope) and
  a source that could not be dialled are dropped. An ``Infohash`` value that is not 40 hex
  digits is counted and skipped, the message's others kept (as libtorrent does); a message
  with none valid is dropped.
- The source address is believed as it comes: a host on the local network that forges the
  source of its datagrams can make us dial any address, once per torrent it names that we
  announce, within its rate allowance below (the dials then go through the peer list's
  backoff and bounds). libtorrent drops a source outside the receiving interface's subnet;
  the standard library cannot list an interface's netmask, so we do not. A host beyond the
  local network cannot do this: the shell reads only what is sent to the group (it binds
  the group's address where the system allows it, see :mod:`bip_handshake._lsd_shell`),
  and the internet does not route multicast.
- Each source host may send :data:`LSD_SOURCE_BURST` messages at once and
  :data:`LSD_SOURCE_RATE` a second after that; the excess is dropped before it is parsed,
  so a LAN host cannot flood us. At most :data:`LSD_MAX_SOURCES` hosts are tracked; a
  host's entry is forgotten once its allowance is whole again (when the table is full and
  a new host sends, at once: the room goes to the new host; else after ``source_burst /
  source_rate`` seconds of silence), and while the table is full of hosts still limited
  (none of whose allowance is whole), messages from further hosts are dropped (a host
  cycling source addresses gets no fresh allowance, and all the table lets through stays
  within :data:`LSD_MAX_SOURCES` allowances). So a host sending now and then from many
  addresses does not lock honest new hosts out; one forging :data:`LSD_MAX_SOURCES`
  sources that each keep up :data:`LSD_SOURCE_RATE` messages a second (512 a second) can.
  IPv6 sources are not grouped by /64: the hosts of one LAN share their /64. At most
  :data:`LSD_MAX_EVENTS` events wait to be taken; more are counted and dropped.

BEP 27: a private torrent must never be announced over LSD. The core cannot know which
torrents are private: the caller must not pass them to :meth:`LsdService.announce`.

>>> service = LsdService(6881, cookie="5eed", rng=random.Random(0))
>>> torrent = bytes.fromhex("c0ffee" * 6 + "c0de")
>>> service.announce(torrent, now=0.0)
>>> [(message, group)] = service.datagrams_to_send(0.0)
>>> print(message.decode().replace("\\r\\n", "|\\n").rstrip())
BT-SEARCH * HTTP/1.1|
Host: 239.192.152.143:6771|
Port: 6881|
Infohash: c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0de|
cookie: 5eed|
|
|
>>> str(group), service.next_deadline()  # the first announce's retry
('239.192.152.143:6771', 2.0)
>>> [len(service.datagrams_to_send(now)) for now in (2.0, 6.0)], service.next_deadline()
([1, 1], 300.0)
>>> theirs = LsdAnnounce(51413, (torrent,), host="239.192.152.143:6771", cookie="x")
>>> service.receive_datagram(theirs.encode(), PeerAddress.parse("192.168.1.20:6771"), now=1.0)
>>> event = service.next_event()
>>> event.info_hash == torrent, str(event.peer)
(True, '192.168.1.20:51413')
>>> service.receive_datagram(message, PeerAddress.parse("192.168.1.10:6771"), now=2.0)
>>> service.next_event() is None  # our own, back through the loopback
True
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import re
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from bip_metainfo import InfoHash

from ._compact import PeerAddress
from ._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "LSD_ANNOUNCE_INTERVAL",
    "LSD_FIRST_ANNOUNCES",
    "LSD_FIRST_RETRIES",
    "LSD_GROUP_V4",
    "LSD_GROUP_V6",
    "LSD_MAX_EVENTS",
    "LSD_MAX_HASHES",
    "LSD_MAX_MESSAGE",
    "LSD_MAX_SOURCES",
    "LSD_MIN_GAP",
    "LSD_PORT",
    "LSD_SOURCE_BURST",
    "LSD_SOURCE_RATE",
    "LsdAnnounce",
    "LsdError",
    "LsdEvent",
    "LsdPeerFound",
    "LsdService",
    "LsdStatistics",
    "decode_lsd_announce",
]

LSD_PORT: Final = 6771
"""The UDP port of both LSD multicast groups (BEP 14)."""

LSD_GROUP_V4: Final = PeerAddress(IPv4Address("239.192.152.143"), LSD_PORT)
"""BEP 14's IPv4 group (organisation-local scope)."""

LSD_GROUP_V6: Final = PeerAddress(IPv6Address("ff15::efc0:988f"), LSD_PORT)
"""BEP 14's IPv6 group (site-local scope)."""

LSD_ANNOUNCE_INTERVAL: Final = 300.0
"""Seconds between two announces of one torrent (BEP 14 and libtorrent: 5 minutes)."""

LSD_MIN_GAP: Final = 60.0
"""Least seconds between two regular messages we send (BEP 14: no more than one a minute)."""

LSD_FIRST_ANNOUNCES: Final = 14
"""First-announce messages (a torrent's first announce, or one of its retries) we may send
within any ``min_gap`` seconds beyond the regular ones: with the regular message, five
torrents added at once (as many as have a message each, see :class:`LsdService`) are all
announced at once and retried :data:`LSD_FIRST_RETRIES` times, 15 messages."""

LSD_FIRST_RETRIES: Final = 2
"""Times a torrent's first announce is sent again: 2 s after it, and 4 s after that (as
libtorrent's lsd.cpp), so that one lost multicast datagram does not put discovery off for
an interval."""

LSD_MAX_MESSAGE: Final = 1400
"""Bytes of a message at most, sent or received (BEP 14: no IP fragmentation)."""

LSD_MAX_HASHES: Final = 32
"""``Infohash`` headers one message may carry. 1400 bytes hold 25 the way clients write
them; this bounds :func:`decode_lsd_announce` when it is given a larger ``max_size``."""

LSD_SOURCE_RATE: Final = 2.0
"""Messages a second one source host may send us, once its burst is spent."""

LSD_SOURCE_BURST: Final = 20
"""Messages one source host may send us at once (a client starting many torrents)."""

LSD_MAX_SOURCES: Final = 256
"""Source hosts whose message rate is tracked at once."""

LSD_MAX_EVENTS: Final = 4096
"""Events waiting to be taken at most; further ones are counted and dropped."""

_HASH_SIZE: Final = 20
# Retry k of a first announce goes k times this many seconds after the send before it:
# 2 s, then 4 s (libtorrent's lsd.cpp).
_RETRY_STEP: Final = 2.0
_MAX_RETRIES: Final = 8  # first_retries at most: eight already span 72 s
_MAX_COOKIE: Final = 64
# The length of one "Infohash: <40 hex>\r\n" line, as we write it.
_HASH_LINE: Final = len("Infohash: ") + 2 * _HASH_SIZE + 2

_METHOD: Final = b"BT-SEARCH"
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110)
_VALUE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # a field value: no control bytes
_VERSION: Final = re.compile(rb"HTTP/1\.[0-9]{1,3}")
_PORT: Final = re.compile(rb"[0-9]{1,5}")
_HEX_HASH: Final = re.compile(rb"[0-9A-Fa-f]{40}")
_COOKIE: Final = re.compile(r"[!-~]{1,64}")  # visible ASCII: it survives any parser's strip

_log = logging.getLogger("bip_handshake.lsd")


class LsdError(RemoteProtocolError):
    """An LSD message could not be decoded (raised by :func:`decode_lsd_announce`;
    :class:`LsdService` counts such messages instead).

    >>> decode_lsd_announce(b"M-SEARCH * HTTP/1.1\\r\\n\\r\\n")
    Traceback (most recent call last):
    ...
    bip_handshake._lsd.LsdError: not a BT-SEARCH request: 'M-SEARCH * HTTP/1.1'
    """


def _check_field(name: str, value: object) -> str:
    # What decode_lsd_announce gives back: a field value with no control character and no
    # surrounding blanks (a parser strips them), kept to bytes 0..255 (Latin-1 on the wire).
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} is a str, got {value!r}")
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{name} has a character outside Latin-1: {value!r}") from None
    if _VALUE.fullmatch(raw) is None or raw != raw.strip(b" \t"):
        raise LocalProtocolError(f"{name} is not an HTTP field value: {value!r}")
    return value


def _check_hash(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value)
        if len(value) == _HASH_SIZE:
            return value
    raise LocalProtocolError(f"an LSD info-hash is 20 bytes, got {value!r}")


def _swarm_ids(info_hash: bytes | InfoHash) -> tuple[bytes, ...]:
    if isinstance(info_hash, InfoHash):
        # libtorrent announces a v2 torrent by its truncated hash, a hybrid by both.
        return info_hash.swarm_ids()
    return (_check_hash(info_hash),)


@dataclass(frozen=True, slots=True)
class LsdAnnounce:
    """One ``BT-SEARCH`` message (BEP 14): we are in these torrents, dial us on ``port``.

    Encoded as libtorrent does: the headers ``Host``, ``Port``, one ``Infohash`` per torrent
    (lowercase hex), ``cookie``, then two blank lines.

    >>> message = LsdAnnounce(6881, (bytes(range(20)),), host="239.192.152.143:6771")
    >>> print(message.encode().decode().replace("\\r\\n", "|\\n").rstrip())
    BT-SEARCH * HTTP/1.1|
    Host: 239.192.152.143:6771|
    Port: 6881|
    Infohash: 000102030405060708090a0b0c0d0e0f10111213|
    |
    |

    Attributes:
        port: the port the sender listens on for BitTorrent connections (0..65535).
        info_hashes: the 20-byte ids of the torrents announced (v1 or truncated v2), one
            at least, kept in order (a list is turned into a tuple).
        host: the ``Host`` header: the group sent to (``239.192.152.143:6771``), or None
            when the message has none.
        cookie: an opaque token the sender recognises its own messages by, or None.
    """

    port: int
    info_hashes: tuple[bytes, ...]
    host: str | None = None
    cookie: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise LocalProtocolError(f"a port is an int, got {self.port!r}")
        if not 0 <= self.port <= 0xFFFF:
            raise LocalProtocolError(f"a port is in 0..65535, got {self.port}")
        given: object = self.info_hashes  # a caller may pass a list, or nonsense
        if isinstance(given, bytes | str) or not isinstance(given, Iterable):
            raise LocalProtocolError(f"info_hashes is a sequence of 20-byte ids, got {given!r}")
        hashes = tuple(_check_hash(h) for h in given)
        if not hashes:
            raise LocalProtocolError("an LSD announce names one info-hash at least")
        object.__setattr__(self, "info_hashes", hashes)
        if self.host is not None:
            _check_field("a Host header", self.host)
        if self.cookie is not None:
            _check_field("a cookie", self.cookie)

    def encode(self) -> bytes:
        """The message's bytes (no size check: :class:`LsdService` keeps to its bound)."""
        lines = ["BT-SEARCH * HTTP/1.1"]
        if self.host is not None:
            lines.append(f"Host: {self.host}")
        lines.append(f"Port: {self.port}")
        lines.extend(f"Infohash: {h.hex()}" for h in self.info_hashes)
        if self.cookie is not None:
            lines.append(f"cookie: {self.cookie}")
        # The header's end, then the two blank lines BEP 14 shows (and Transmission 2
        # and 3 insist on).
        return ("\r\n".join(lines) + "\r\n\r\n\r\n").encode("latin-1")


def decode_lsd_announce(
    data: bytes, *, max_size: int = LSD_MAX_MESSAGE, max_hashes: int = LSD_MAX_HASHES
) -> LsdAnnounce:
    """Decode a ``BT-SEARCH`` message as clients send it.

    Tolerant where real clients differ: header names in any case (libtorrent writes
    ``cookie``, the others ``Infohash``), hex in either case (Transmission writes
    uppercase), CRLF or bare LF line ends, blanks around values, any number of blank lines
    after the headers, unknown headers (ignored, BEP 14), no ``Host`` or ``cookie``, any
    HTTP/1.x version, an ``Infohash`` value that is not 40 hex digits (skipped, the others
    kept, as libtorrent does). Strict where it matters: the request line
    ``BT-SEARCH * HTTP/1.x``, a header block ended by a blank line with nothing but blank
    lines after it, well-formed header lines, exactly one decimal ``Port`` (0..65535), one
    valid ``Infohash`` at least, no repeated ``Host`` or ``cookie``.

    Args:
        data: the datagram.
        max_size: bytes a message may have at most.
        max_hashes: ``Infohash`` headers a message may have at most (valid or not).

    Raises:
        LsdError: not such a message, or over a bound.

    >>> message = decode_lsd_announce(
    ...     b"BT-SEARCH * HTTP/1.1\\r\\nHost: 239.192.152.143:6771\\r\\nPort: 51413\\r\\n"
    ...     b"Infohash: 0123456789ABCDEF0123456789ABCDEF01234567\\r\\n"
    ...     b"Infohash: 0123\\r\\n\\r\\n\\r\\n"
    ... )
    >>> message.port, [h.hex() for h in message.info_hashes], message.cookie
    (51413, ['0123456789abcdef0123456789abcdef01234567'], None)
    """
    return _decode(data, max_size=max_size, max_hashes=max_hashes)[0]


def _decode(data: bytes, *, max_size: int, max_hashes: int) -> tuple[LsdAnnounce, int]:
    """:func:`decode_lsd_announce`, and how many ``Infohash`` values it skipped."""
    data = bytes(data)
    if len(data) > max_size:
        raise LsdError(f"an LSD message has {max_size} bytes at most, got {len(data)}")
    # CRLF ends a line as HTTP says; a bare LF too, as lenient HTTP parsers allow.
    *lines, rest = [line.removesuffix(b"\r") for line in data.split(b"\n")]
    if rest:
        raise LsdError("an LSD message ends with a line end")
    if any(b"\r" in line for line in lines):
        raise LsdError("a bare CR in an LSD message")
    try:
        end = lines.index(b"")
    except ValueError:
        raise LsdError("an LSD message's headers end with a blank line") from None
    if any(lines[end:]):
        raise LsdError("an LSD message has nothing but blank lines after its headers")
    request = lines[0].split()
    if (
        len(request) != 3
        or request[0].upper() != _METHOD
        or request[1] != b"*"
        or _VERSION.fullmatch(request[2]) is None
    ):
        shown = lines[0][:64].decode("latin-1")
        raise LsdError(f"not a BT-SEARCH request: {shown!r}")
    port: int | None = None
    host: str | None = None
    cookie: str | None = None
    hashes: list[bytes] = []
    skipped = 0
    for line in lines[1:end]:
        name, colon, raw = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise LsdError(f"not an LSD header line: {line[:64].decode('latin-1')!r}")
        value = raw.strip(b" \t")
        if _VALUE.fullmatch(value) is None:
            raise LsdError(f"a control character in the {name.decode()} header")
        key = name.lower()
        if key == b"infohash":
            if len(hashes) + skipped >= max_hashes:
                raise LsdError(f"an LSD message names {max_hashes} info-hashes at most")
            if _HEX_HASH.fullmatch(value) is None:
                # One sender's odd value (a full v2 hash, a typo) spoils none of the others.
                skipped += 1
                continue
            hashes.append(bytes.fromhex(value.decode("ascii")))
        elif key == b"port":
            if port is not None:
                raise LsdError("an LSD message has one Port header")
            if _PORT.fullmatch(value) is None or int(value) > 0xFFFF:
                raise LsdError(f"a Port is a number in 0..65535, got {value[:64]!r}")
            port = int(value)
        elif key == b"host":
            if host is not None:
                raise LsdError("an LSD message has one Host header")
            host = value.decode("latin-1")
        elif key == b"cookie":
            if cookie is not None:
                raise LsdError("an LSD message has one cookie header")
            cookie = value.decode("latin-1")
    if port is None:
        raise LsdError("an LSD message has a Port header")
    if not hashes:
        if skipped:
            raise LsdError(f"an Infohash is 40 hex digits: none of {skipped} is")
        raise LsdError("an LSD message has an Infohash header")
    return LsdAnnounce(port, tuple(hashes), host, cookie), skipped


class LsdEvent:
    """Base class of what :meth:`LsdService.next_event` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class LsdPeerFound(LsdEvent):
    """A host on the local network is in a torrent we announce.

    Attributes:
        info_hash: the torrent's 20-byte id as announced (v1, or truncated v2).
        peer: where it listens: the datagram's source address with its ``Port``.
    """

    info_hash: bytes
    peer: PeerAddress


@dataclass(frozen=True, slots=True)
class LsdStatistics:
    """A snapshot of an :class:`LsdService`'s counters.

    Attributes:
        announced: info-hashes announced now.
        sent: messages handed out to send.
        hashes_sent: ``Infohash`` headers in them.
        received: datagrams taken in.
        rate_limited: datagrams dropped unread: their host sent too many, or the source
            table was full of hosts still limited.
        malformed: datagrams dropped for not decoding.
        own: our own messages dropped (the cookie matched).
        unusable: messages dropped for port 0 or a source that cannot be dialled.
        unknown_hashes: info-hashes dropped for not being ours.
        bad_hashes: ``Infohash`` values skipped for not being 40 hex digits (in messages
            kept for their others; a message with none valid counts as malformed).
        peers_found: :class:`LsdPeerFound` events made.
        events_dropped: events dropped because :data:`LSD_MAX_EVENTS` were waiting.
        tracked_sources: source hosts whose rate is tracked now.
    """

    announced: int
    sent: int
    hashes_sent: int
    received: int
    rate_limited: int
    malformed: int
    own: int
    unusable: int
    unknown_hashes: int
    bad_hashes: int
    peers_found: int
    events_dropped: int
    tracked_sources: int


class _Source:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens  # messages it may still send now
        self.stamp = stamp  # when ``tokens`` was last brought up to date


def _check_seconds(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LocalProtocolError(f"{name} is a finite number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise LocalProtocolError(f"{name} is {'above' if positive else 'at least'} 0, got {value}")
    return float(value)


def _check_count(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise LocalProtocolError(f"{name} is an int of at least {least}, got {value!r}")
    return value


class LsdService:
    """Local Service Discovery on one group: what to announce when, which announces to
    believe; see the module docstring.

    Args:
        port: the port we listen on for BitTorrent connections (1..65535).
        group: the multicast group (:data:`LSD_GROUP_V4` or :data:`LSD_GROUP_V6`), or in
            tests any address: messages go there and their ``Host`` header names it.
        cookie: the token our messages carry (visible ASCII, 64 characters at most); by
            default 8 random hex digits.
        announce_interval: seconds between two announces of one torrent.
        min_gap: least seconds between two regular messages (with 0, each torrent has its
            own message: none are batched, and every first announce goes at once).
        first_announces: first-announce messages (a torrent's first announce when the
            regular message may not go yet, and the retries of every first announce)
            allowed within any ``min_gap`` seconds, beyond the regular ones; 0: first
            announces wait for the regular schedule, and are not retried.
        first_retries: times a torrent's first announce is sent again (0 to 8), 2 s after
            it, then 4 s after that, and so on (2 s more each time).
        max_message: bytes one message may have, sent or received.
        source_rate: messages a second one source host may send once its burst is spent.
        source_burst: messages one source host may send at once.
        max_sources: source hosts tracked at once.
        max_events: events waiting to be taken at most.
        rng: draws the default cookie.

    Raises:
        LocalProtocolError: a bad argument (``max_message`` too small for one info-hash).
    """

    def __init__(
        self,
        port: int,
        *,
        group: PeerAddress = LSD_GROUP_V4,
        cookie: str | None = None,
        announce_interval: float = LSD_ANNOUNCE_INTERVAL,
        min_gap: float = LSD_MIN_GAP,
        first_announces: int = LSD_FIRST_ANNOUNCES,
        first_retries: int = LSD_FIRST_RETRIES,
        max_message: int = LSD_MAX_MESSAGE,
        source_rate: float = LSD_SOURCE_RATE,
        source_burst: int = LSD_SOURCE_BURST,
        max_sources: int = LSD_MAX_SOURCES,
        max_events: int = LSD_MAX_EVENTS,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 0xFFFF:
            raise LocalProtocolError(f"a listen port is in 1..65535, got {port!r}")
        if not isinstance(group, PeerAddress):
            raise LocalProtocolError(f"an LSD group is a PeerAddress, got {group!r}")
        if group.port == 0 or group.host.is_unspecified:
            raise LocalProtocolError(f"an LSD group has a host and a port, got {group}")
        if cookie is None:
            cookie = f"{(rng if rng is not None else random.Random()).getrandbits(32):08x}"
        elif not isinstance(cookie, str) or _COOKIE.fullmatch(cookie) is None:
            raise LocalProtocolError(
                f"a cookie is 1 to {_MAX_COOKIE} visible ASCII characters, got {cookie!r}"
            )
        self._port = port
        self._group = group
        self._cookie = cookie
        self._interval = _check_seconds("announce_interval", announce_interval, positive=True)
        self._min_gap = _check_seconds("min_gap", min_gap, positive=False)
        self._first_announces = _check_count("first_announces", first_announces, 0)
        retries = _check_count("first_retries", first_retries, 0)
        if retries > _MAX_RETRIES:
            raise LocalProtocolError(f"first_retries is {_MAX_RETRIES} at most, got {retries}")
        self._max_message = _check_count("max_message", max_message, 1)
        self._rate = _check_seconds("source_rate", source_rate, positive=True)
        self._burst = _check_count("source_burst", source_burst, 1)
        self._max_sources = _check_count("max_sources", max_sources, 1)
        self._max_events = _check_count("max_events", max_events, 1)
        one = len(LsdAnnounce(port, (bytes(_HASH_SIZE),), self.host, cookie).encode())
        if one > self._max_message:
            raise LocalProtocolError(
                f"max_message {max_message} cannot hold one info-hash ({one} bytes)"
            )
        # Our messages must also decode at the default bound elsewhere.
        self._per_message = min(1 + (self._max_message - one) // _HASH_LINE, LSD_MAX_HASHES)
        self._hashes: dict[bytes, float] = {}  # info-hash -> when it falls due
        # min(self._hashes.values()), or None when not known: the shell asks for it once per
        # datagram received, and most are dropped unread (rate-limited); a scan of every
        # torrent each time would make a flood cost O(torrents) per datagram. Known again
        # after at most one scan per message sent, announce() or withdraw().
        self._earliest: float | None = None
        # The info-hashes awaiting their first announce, oldest first (values unused): on a
        # monotonic clock, also the order in which they fall due.
        self._fresh: dict[bytes, None] = {}
        # The retries of first announces sent: _retries[k] holds the info-hashes whose retry
        # k + 1 is owed, and when it falls due. Each falls due a fixed time after a send, and
        # sends go in the clock's order: in each, the first entry is the most overdue.
        self._retries: list[dict[bytes, float]] = [{} for _ in range(retries)]
        self._next_send_at = -math.inf  # when the next regular message may go
        # When the first-announce messages of the last min_gap went (first_announces at most).
        self._first_sent: deque[float] = deque()
        self._sources: OrderedDict[IPv4Address | IPv6Address, _Source] = OrderedDict()
        # While the source table is full: before this time, no tracked host's allowance is
        # whole again (see _whole_source; -inf: not known).
        self._full_until = -math.inf
        self._events: deque[LsdEvent] = deque()
        self._sent = 0
        self._hashes_sent = 0
        self._received = 0
        self._rate_limited = 0
        self._malformed = 0
        self._own = 0
        self._unusable = 0
        self._unknown = 0
        self._bad_hashes = 0
        self._found = 0
        self._events_dropped = 0

    # -- what the caller wants -------------------------------------------------------------

    @property
    def group(self) -> PeerAddress:
        """Where our messages go."""
        return self._group

    @property
    def host(self) -> str:
        """Our messages' ``Host`` header: the group, as BEP 14 asks."""
        return str(self._group)

    @property
    def port(self) -> int:
        """The port our messages tell peers to dial."""
        return self._port

    @property
    def cookie(self) -> str:
        """The token that marks our own messages."""
        return self._cookie

    @property
    def hashes_per_message(self) -> int:
        """How many info-hashes one of our messages carries at most (when torrents are
        batched: more than ``announce_interval / min_gap`` of them)."""
        return self._per_message

    def announce(self, info_hash: bytes | InfoHash, now: float) -> None:
        """Announce a torrent from now on: at once (in a first-announce message if the
        regular one may not go yet; once ``first_announces`` of those went within
        ``min_gap``, as soon as the regular schedule allows or the allowance frees), again
        2 s and 6 s after that (``first_retries``, within the same allowance), then every
        ``announce_interval``; announce what others announce of it.

        Announcing a torrent announced already changes nothing. BEP 27: never announce a
        private torrent.

        Args:
            info_hash: a 20-byte id (v1 info-hash, or a v2 one truncated), or an
                :class:`~bip_metainfo.InfoHash` (all its swarm ids).
            now: the current time.

        Raises:
            LocalProtocolError: not a 20-byte id nor an InfoHash.
        """
        for swarm_id in _swarm_ids(info_hash):
            if swarm_id not in self._hashes:
                self._hashes[swarm_id] = now
                self._fresh[swarm_id] = None
                if self._earliest is not None:
                    self._earliest = min(self._earliest, now)

    def withdraw(self, info_hash: bytes | InfoHash) -> None:
        """Stop announcing a torrent, and stop reporting its peers; a torrent not announced
        is left alone.

        Raises:
            LocalProtocolError: not a 20-byte id nor an InfoHash.
        """
        for swarm_id in _swarm_ids(info_hash):
            if self._hashes.pop(swarm_id, None) is not None:
                self._earliest = None
            self._fresh.pop(swarm_id, None)
            for waiting in self._retries:
                waiting.pop(swarm_id, None)

    def is_announced(self, info_hash: bytes | InfoHash) -> bool:
        """Whether ``info_hash`` (every swarm id of an InfoHash) is announced.

        Raises:
            LocalProtocolError: not a 20-byte id nor an InfoHash.
        """
        return all(swarm_id in self._hashes for swarm_id in _swarm_ids(info_hash))

    def statistics(self) -> LsdStatistics:
        """A snapshot of the counters."""
        return LsdStatistics(
            announced=len(self._hashes),
            sent=self._sent,
            hashes_sent=self._hashes_sent,
            received=self._received,
            rate_limited=self._rate_limited,
            malformed=self._malformed,
            own=self._own,
            unusable=self._unusable,
            unknown_hashes=self._unknown,
            bad_hashes=self._bad_hashes,
            peers_found=self._found,
            events_dropped=self._events_dropped,
            tracked_sources=len(self._sources),
        )

    def next_event(self) -> LsdEvent | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    # -- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`datagrams_to_send` has a message to give, or None (nothing
        announced)."""
        if not self._hashes:
            return None
        regular = max(self._earliest_due(), self._next_send_at)
        if not self._first_announces:
            return regular
        # A torrent awaiting its first announce is due since it was announced, a retry when
        # it was scheduled: the oldest of each (see _fresh, _retries) goes as soon as the
        # oldest first-announce message of the last min_gap leaves the window.
        owed = [next(iter(waiting.values())) for waiting in self._retries if waiting]
        if self._fresh:
            owed.append(self._hashes[next(iter(self._fresh))])
        if not owed:
            return regular
        first = min(owed)
        if len(self._first_sent) >= self._first_announces:
            first = max(first, self._first_sent[0] + self._min_gap)
        return min(regular, first)

    def handle_timer(self, now: float) -> None:
        """Let time pass: forget the source hosts whose allowance is whole again."""
        self._prune_sources(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, PeerAddress]]:
        """The messages owed now: none, the regular one (several only when ``min_gap`` is
        0), and first-announce messages for torrents not announced yet, then for the
        retries due of first announces (``first_announces`` within any ``min_gap`` at
        most); one info-hash each while every torrent announced can have its own message
        within the interval, else batches (see the module docstring)."""
        out: list[tuple[bytes, PeerAddress]] = []
        one_each = len(self._hashes) * self._min_gap <= self._interval
        while self._hashes and now >= self._next_send_at:
            if self._earliest_due() > now:
                break
            if one_each:
                # One message each fits the schedule: old clients read one hash only.
                batch = [min((due, h) for h, due in self._hashes.items())[1]]
            else:
                # What falls due before the next message could go rides along with this one.
                horizon = now + self._min_gap
                waiting = sorted((due, h) for h, due in self._hashes.items() if due <= horizon)
                batch = [h for _, h in waiting[: self._per_message]]
            self._next_send_at = now + self._min_gap
            out.append(self._message(batch, now, regular=True))
        # Bounded by the window: first_announces messages at most, whatever was announced.
        size = 1 if one_each else self._per_message
        while (self._fresh or any(self._retries)) and self._may_send_first(now):
            batch = self._first_batch(now, size)
            if not batch:  # nothing due yet (or a caller's clock went back)
                break
            self._first_sent.append(now)
            out.append(self._message(batch, now, regular=False))
        return out

    def _earliest_due(self) -> float:
        """When the first torrent falls due (some torrent is announced)."""
        if self._earliest is None:
            self._earliest = min(self._hashes.values())
        return self._earliest

    def _first_batch(self, now: float, size: int) -> list[bytes]:
        """Up to ``size`` info-hashes owed a first-announce message now: those never
        announced yet (the oldest first), then the retries due (the most overdue first)."""
        hashes = self._hashes
        batch = list(
            itertools.islice(itertools.takewhile(lambda h: hashes[h] <= now, self._fresh), size)
        )
        if len(batch) < size and self._retries:
            due = heapq.merge(
                *(
                    itertools.takewhile(lambda item: item[1] <= now, waiting.items())
                    for waiting in self._retries
                ),
                key=lambda item: item[1],
            )
            batch.extend(h for h, _ in itertools.islice(due, size - len(batch)))
        return batch

    def _may_send_first(self, now: float) -> bool:
        """Whether a first-announce message may go now (and forget those out of the window)."""
        while self._first_sent and self._first_sent[0] + self._min_gap <= now:
            self._first_sent.popleft()
        return len(self._first_sent) < self._first_announces

    def _message(
        self, batch: list[bytes], now: float, *, regular: bool
    ) -> tuple[bytes, PeerAddress]:
        """Announce ``batch`` now. A first announce (in either kind of message) or a
        regular one makes the torrent fall due again in an interval; a first announce
        schedules its first retry, a retry the next one (the regular schedule stands);
        a regular announce drops the retries still owed (it does what they would)."""
        self._earliest = None  # due times move on
        for h in batch:
            if h in self._fresh:
                del self._fresh[h]
                self._hashes[h] = now + self._interval
                self._schedule_retry(h, 0, now)
                continue
            if regular:
                self._hashes[h] = now + self._interval
            for stage, waiting in enumerate(self._retries):
                if waiting.pop(h, None) is not None:
                    if not regular:
                        self._schedule_retry(h, stage + 1, now)
                    break
        self._sent += 1
        self._hashes_sent += len(batch)
        message = LsdAnnounce(self._port, tuple(batch), self.host, self._cookie)
        _log.debug("LSD: announcing %d torrents to %s", len(batch), self._group)
        return message.encode(), self._group

    def _schedule_retry(self, info_hash: bytes, stage: int, now: float) -> None:
        """Owe retry ``stage + 1`` of a first announce sent now, if there is one (none when
        first announces have no allowance: they would never go)."""
        if stage < len(self._retries) and self._first_announces:
            self._retries[stage][info_hash] = now + _RETRY_STEP * (stage + 1)

    # -- what arrives ----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: PeerAddress, now: float) -> None:
        """Take a datagram that arrived from ``source``; never raises for its content.

        Feed only datagrams sent to the group (the shell binds the group's address for
        that): the core believes any source, and a datagram from beyond the local network
        could name any address to dial.
        """
        self._received += 1
        host = source.normalized().host
        if not self._admit(host, now):
            self._rate_limited += 1
            return
        try:
            message, skipped = _decode(data, max_size=self._max_message, max_hashes=LSD_MAX_HASHES)
        except LsdError as error:
            self._malformed += 1
            _log.debug("LSD: dropped a message from %s: %s", host, error)
            return
        if skipped:
            self._bad_hashes += skipped
            _log.debug("LSD: skipped %d bad Infohash values from %s", skipped, host)
        if message.cookie == self._cookie:
            self._own += 1
            return
        if (
            message.port == 0
            or host.is_unspecified
            or host.is_multicast
            or (isinstance(host, IPv6Address) and host.is_link_local)
        ):
            # A link-local IPv6 address means nothing without its scope, which a
            # PeerAddress cannot carry: such a peer could not be dialled.
            self._unusable += 1
            return
        peer = PeerAddress(host, message.port)
        for info_hash in dict.fromkeys(message.info_hashes):
            if info_hash not in self._hashes:
                self._unknown += 1
                continue
            if len(self._events) >= self._max_events:
                self._events_dropped += 1
                continue
            self._found += 1
            _log.debug("LSD: %s is in %s", peer, info_hash.hex())
            self._events.append(LsdPeerFound(info_hash, peer))

    def _admit(self, host: IPv4Address | IPv6Address, now: float) -> bool:
        """Spend one of ``host``'s messages: a token bucket per host."""
        entry = self._sources.get(host)
        if entry is None:
            self._prune_sources(now)
            if len(self._sources) >= self._max_sources:
                # A host whose allowance is whole again gives its room: forgetting it loses
                # nothing, however recently it was seen (a host sending one message every
                # few seconds from each of many addresses would keep every entry unseen for
                # less than burst/rate seconds, and every new host out). While every tracked
                # host is still limited, a new one gets no allowance, or a sender cycling its
                # source address would never be limited at all.
                if now < self._full_until:
                    return False
                whole = self._whole_source(now)
                if whole is None:
                    return False
                del self._sources[whole]
            entry = self._sources[host] = _Source(float(self._burst), now)
            # A new entry may be whole again sooner than any other: look afresh next time.
            self._full_until = -math.inf
        else:
            elapsed = max(0.0, now - entry.stamp)
            entry.tokens = min(float(self._burst), entry.tokens + elapsed * self._rate)
            entry.stamp = now
            self._sources.move_to_end(host)
        if entry.tokens < 1.0:
            return False
        entry.tokens -= 1.0
        return True

    def _whole_source(self, now: float) -> IPv4Address | IPv6Address | None:
        """A tracked host whose allowance is whole again now (the least recently seen
        first), or None; then no host's is before ``_full_until``, which this sets.

        One pass over the table (``max_sources``, 256 by default), only when it is full and
        a new host sends: the result stands until an entry is added (a tracked host's
        messages only put its whole allowance off), so a flood of new addresses against a
        table of limited hosts costs one pass, not one per datagram.
        """
        soonest = math.inf
        for host, entry in self._sources.items():
            refilled = entry.tokens + max(0.0, now - entry.stamp) * self._rate
            if refilled >= self._burst:
                return host
            soonest = min(soonest, entry.stamp + (self._burst - entry.tokens) / self._rate)
        self._full_until = soonest
        return None

    def _prune_sources(self, now: float) -> None:
        # Entries are in the order they were last seen; one unseen for burst/rate seconds
        # has its whole allowance back, so forgetting it loses nothing.
        horizon = now - self._burst / self._rate
        while self._sources:
            host, entry = next(iter(self._sources.items()))
            if entry.stamp > horizon:
                return
            del self._sources[host]
