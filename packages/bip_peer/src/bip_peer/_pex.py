"""BEP 11 peer exchange, sans-IO: what to tell each peer, and what to believe of what it says.

- :class:`PexOutbox` (one per connected peer) turns the set of peers we are connected to into
  ``ut_pex`` messages for that peer: the first lists our current peers, the later ones only the
  difference since the previous message, at most once every 60 seconds, with at most 50 added
  and 50 dropped addresses per message (BEP 11; what does not fit waits for the next message),
  IPv4 and IPv6 in their own lists, each added address with its flags.
- :class:`PexInbox` (one per connected peer) checks what a peer sends before it reaches a
  :class:`~bip_handshake.PeerSink`: every message is taken, however close to the previous one
  (messages sent a minute apart arrive bunched when they queued behind piece data, and a diff
  is never repeated: one ignored would lose its peers, and its drops, for good), but only so
  many addresses per message and per peer are taken, and addresses that cannot be dialled
  (port 0, unspecified, multicast), ours, the sender's own, or private ones from a public
  peer are dropped. Everything ignored is counted. A peer that floods (more than
  ``PEX_FLOOD_ALLOWANCE`` messages within ``PEX_FLOOD_WINDOW`` seconds, libtorrent's
  rule) raises :class:`~bip_peer.RemoteProtocolError` before its message is looked at, which
  removes it: ignoring it would leave it free to cost us a decode per tiny message for ever.

Peers lie, so received addresses are only ever *candidates* for a dial; nothing here trusts them
beyond that.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

from bip_handshake import PeerAddress

from ._errors import RemoteProtocolError
from ._extended import PexMessage

__all__ = [
    "DEFAULT_PEX_INTERVAL",
    "DEFAULT_PEX_MAX_ADDED",
    "DEFAULT_PEX_MAX_DROPPED",
    "DEFAULT_PEX_MAX_KNOWN",
    "DEFAULT_PEX_MIN_RECEIVE_INTERVAL",
    "DEFAULT_PEX_RECEIVE_LIMIT",
    "MAX_OUR_ADDRESSES",
    "PEX_FLOOD_ALLOWANCE",
    "PEX_FLOOD_WINDOW",
    "PexFlags",
    "PexInbox",
    "PexInboxStatistics",
    "PexOutbox",
    "PexUpdate",
]

DEFAULT_PEX_INTERVAL: Final = 60.0
"""Seconds between two messages to one peer (BEP 11: not more often than once a minute)."""

DEFAULT_PEX_MAX_ADDED: Final = 50
"""Added addresses (IPv4 and IPv6 together) per message we send (BEP 11)."""

DEFAULT_PEX_MAX_DROPPED: Final = 50
"""Dropped addresses (IPv4 and IPv6 together) per message we send (BEP 11)."""

DEFAULT_PEX_MIN_RECEIVE_INTERVAL: Final = 0.0
"""Seconds after a message whose added addresses were taken during which a peer's next
messages have theirs ignored (their dropped ones are always applied). 0, none: every
message within the flood allowance is taken whole, as libtorrent's ``ut_pex.cpp`` does.
Senders keep BEP 11's minute, but messages that queued behind piece data (a slow link, our
own download limit) arrive bunched, and a diff is never sent again: what is ignored is lost."""

DEFAULT_PEX_RECEIVE_LIMIT: Final = 100
"""Added addresses taken from one message; the rest are ignored. BEP 11 lets the first message
exceed 50, and libtorrent's carries up to 100."""

DEFAULT_PEX_MAX_KNOWN: Final = 200
"""Addresses remembered per peer (libtorrent's ``max_pex_peers`` is 200 too); beyond it, new ones
are ignored until the peer drops some."""

PEX_FLOOD_ALLOWANCE: Final = 6
"""Messages a peer may send within ``PEX_FLOOD_WINDOW`` seconds; one more is a protocol
error. libtorrent (``ut_pex.cpp``, ``m_last_pex``) keeps the times of the last six and
disconnects on a seventh within 60 s: six, not one, because messages that queued behind a
rate-limited connection arrive back to back."""

PEX_FLOOD_WINDOW: Final = 60.0
"""Seconds over which ``PEX_FLOOD_ALLOWANCE`` counts (libtorrent's, and BEP 11's minute)."""

MAX_OUR_ADDRESSES: Final = 64
"""Our own addresses added after construction (``add_our_address``: the external ones a
client learns, one per listening port) that are remembered; beyond it the oldest added is
forgotten. The addresses given at construction are always kept."""


class PexFlags(enum.IntFlag):
    """The flags byte BEP 11 sends with every added address (``added.f``, ``added6.f``).

    >>> PexFlags(0x12)
    <PexFlags.SEED|REACHABLE: 18>
    """

    NONE = 0
    PREFERS_ENCRYPTION = 0x01
    """The peer prefers encryption (the ``e`` key of its extended handshake)."""
    SEED = 0x02
    """The peer is a seed or upload-only."""
    UTP = 0x04
    """The peer supports uTP."""
    HOLEPUNCH = 0x08
    """The peer offered ``ut_holepunch`` in its extended handshake."""
    REACHABLE = 0x10
    """We connected to the peer (an outgoing connection): its address accepts connections."""


def _normalized(address: PeerAddress) -> PeerAddress:
    if not isinstance(address, PeerAddress):
        raise TypeError(f"an address must be a PeerAddress, not {address!r}")
    return address.normalized()


def _check_limit(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_interval(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


class _OurAddresses:
    """Our own addresses: those given at construction (fixed), and a bounded, oldest-first
    set of those added later (an external address learnt while running: see
    :data:`MAX_OUR_ADDRESSES`). Shared by PEX and holepunch, which both refuse to treat us
    as a peer.

    The two are kept apart, as libtorrent keeps its listen endpoints apart from what its
    ``ip_voter`` learns: a fixed address is a socket we listen on, ours whatever the voter
    says, so that learning it and then unlearning it (the external IP moved on) never makes
    it a peer's.
    """

    __slots__ = ("_added", "_fixed")

    def __init__(self, addresses: Iterable[PeerAddress] = ()) -> None:
        self._fixed = frozenset(_normalized(address) for address in addresses)
        self._added: OrderedDict[PeerAddress, None] = OrderedDict()

    def __contains__(self, address: object) -> bool:
        return address in self._fixed or address in self._added

    def all(self) -> frozenset[PeerAddress]:
        """Every address, normalised."""
        return self._fixed | frozenset(self._added)

    def add(self, address: PeerAddress) -> bool:
        """Add ``address`` (normalised); whether it was new.

        Raises:
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        address = _normalized(address)
        if address in self._fixed:
            return False
        if address in self._added:
            self._added.move_to_end(address)
            return False
        self._added[address] = None
        while len(self._added) > MAX_OUR_ADDRESSES:
            self._added.popitem(last=False)
        return True

    def discard(self, address: PeerAddress) -> bool:
        """Forget ``address`` if it was added; whether it was. One given at construction
        stays.

        Raises:
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        address = _normalized(address)
        if address in self._added:
            del self._added[address]
            return True
        return False


class PexOutbox:
    """The ``ut_pex`` messages for one peer, computed from our current peers (sans-IO).

    Call :meth:`update` with the peers we are connected to (address to :class:`PexFlags`) as
    often as convenient; it returns a message when one is due (at most every *interval*
    seconds) and something changed, and remembers what the peer has been told: an address is
    only dropped after it was added, and never added and dropped in the same message.

    >>> outbox = PexOutbox(peer_address=PeerAddress.parse("10.0.0.9:6881"))
    >>> a, b = PeerAddress.parse("10.0.0.1:6881"), PeerAddress.parse("[2001:db8::1]:6881")
    >>> first = outbox.update({a: PexFlags.SEED, b: PexFlags.NONE}, now=0.0)
    >>> [str(x) for x in first.added], first.added_flags, [str(x) for x in first.added6]
    (['10.0.0.1:6881'], (2,), ['[2001:db8::1]:6881'])
    >>> outbox.update({b: PexFlags.NONE}, now=30.0) is None  # too soon
    True
    >>> [str(x) for x in outbox.update({b: PexFlags.NONE}, now=60.0).dropped]
    ['10.0.0.1:6881']

    Args:
        peer_address: the address of the peer the messages are for; never sent to it.
        interval: seconds between two messages.
        max_added: added addresses per message (the rest wait for the next one).
        max_dropped: dropped addresses per message (the rest wait for the next one).
    """

    def __init__(
        self,
        *,
        peer_address: PeerAddress | None = None,
        interval: float = DEFAULT_PEX_INTERVAL,
        max_added: int = DEFAULT_PEX_MAX_ADDED,
        max_dropped: int = DEFAULT_PEX_MAX_DROPPED,
    ) -> None:
        _check_interval("interval", interval)
        _check_limit("max_added", max_added)
        _check_limit("max_dropped", max_dropped)
        self._exclude = None if peer_address is None else _normalized(peer_address)
        self._interval = float(interval)
        self._max_added = max_added
        self._max_dropped = max_dropped
        self._told: dict[PeerAddress, PexFlags] = {}  # what the peer believes we have
        self._last_sent = -math.inf
        self._messages = 0

    @property
    def messages_sent(self) -> int:
        """How many messages :meth:`update` returned."""
        return self._messages

    @property
    def announced(self) -> frozenset[PeerAddress]:
        """The addresses the peer has been told about and not told dropped."""
        return frozenset(self._told)

    def next_due(self) -> float:
        """The earliest time :meth:`update` may return a message."""
        return self._last_sent + self._interval

    def update(
        self, current: Mapping[PeerAddress, PexFlags | int], now: float
    ) -> PexMessage | None:
        """The message to send now, or None (too soon, or nothing changed).

        Args:
            current: the peers we are connected to, each with its flags. Addresses are
                normalised (IPv4-mapped IPv6 becomes IPv4); the peer's own address and
                unconnectable ones (port 0...) are left out.
            now: the current time in seconds.
        """
        if now < self._last_sent + self._interval:
            return None
        wanted: dict[PeerAddress, PexFlags] = {}
        for raw, flags in current.items():
            address = _normalized(raw)
            if address == self._exclude or not address.is_connectable:
                continue
            wanted[address] = PexFlags(int(flags) & 0xFF)
        added = [(a, f) for a, f in wanted.items() if a not in self._told][: self._max_added]
        dropped = [a for a in self._told if a not in wanted][: self._max_dropped]
        if not added and not dropped:
            return None
        for address, flags in added:
            self._told[address] = flags
        for address in dropped:
            del self._told[address]
        self._last_sent = now
        self._messages += 1
        return PexMessage(
            added=tuple(a for a, _ in added if a.family == 4),
            added_flags=tuple(int(f) for a, f in added if a.family == 4),
            added6=tuple(a for a, _ in added if a.family == 6),
            added6_flags=tuple(int(f) for a, f in added if a.family == 6),
            dropped=tuple(a for a in dropped if a.family == 4),
            dropped6=tuple(a for a in dropped if a.family == 6),
        )


@dataclass(frozen=True, slots=True)
class PexUpdate:
    """What a :class:`PexInbox` took from one message.

    Attributes:
        added: new candidate addresses with their flags, in the order received.
        dropped: addresses the peer says it is no longer connected to (that it had added).
    """

    added: tuple[tuple[PeerAddress, PexFlags], ...]
    dropped: tuple[PeerAddress, ...]

    @property
    def addresses(self) -> tuple[PeerAddress, ...]:
        """The added addresses without their flags (what a PeerSink takes)."""
        return tuple(address for address, _ in self.added)


@dataclass(frozen=True, slots=True)
class PexInboxStatistics:
    """A snapshot of a :class:`PexInbox`'s counters.

    Attributes:
        messages: messages whose added addresses were taken (every message, unless a
            ``min_interval`` is set).
        ignored_too_soon: messages whose added addresses were ignored for arriving sooner
            than ``min_interval`` after the last one taken (their dropped ones were applied;
            0 without a ``min_interval``).
        accepted: addresses passed on as new candidates.
        ignored_excess: addresses beyond the per-message or per-peer limit, or in a message
            sooner than ``min_interval``.
        ignored_invalid: addresses that cannot be dialled (port 0, unspecified, multicast).
        ignored_self: our own addresses, or the sender's.
        ignored_local: private or loopback addresses sent by a public peer.
        ignored_known: addresses this peer had already given.
        known: addresses remembered for this peer.
    """

    messages: int
    ignored_too_soon: int
    accepted: int
    ignored_excess: int
    ignored_invalid: int
    ignored_self: int
    ignored_local: int
    ignored_known: int
    known: int


# libtorrent's aux::is_local (ip_helpers.cpp), range for range. Not ipaddress' is_private,
# which on Python 3.11 also counts Teredo (2001::/32), benchmarking (198.18/15),
# documentation and 0/8: a public peer behind Teredo would count as local and be let point
# us at loopback and LAN addresses. Multicast (libtorrent also counts ff02::/16 and
# ff05::/16) is refused before as not dialable.
_LOCAL_V4: Final = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
    IPv4Network("169.254.0.0/16"),  # link-local
    IPv4Network("127.0.0.0/8"),  # loopback
)
_LOCAL_V6: Final = (
    IPv6Network("::1/128"),  # loopback
    IPv6Network("fe80::/10"),  # link-local
    IPv6Network("fec0::/10"),  # site-local: deprecated, still unrouted (RFC 3879)
    IPv6Network("fc00::/7"),  # unique local
)


def _is_local(host: IPv4Address | IPv6Address) -> bool:
    """Whether ``host`` is on a local network, as libtorrent's ``is_local`` says (an
    IPv4-mapped IPv6 host as its IPv4 one)."""
    if isinstance(host, IPv6Address):
        mapped = host.ipv4_mapped
        if mapped is None:
            return any(host in network for network in _LOCAL_V6)
        host = mapped
    return any(host in network for network in _LOCAL_V4)


class PexInbox:
    """Check the ``ut_pex`` messages one peer sends (sans-IO).

    >>> inbox = PexInbox(peer_address=PeerAddress.parse("10.0.0.9:6881"),
    ...                  our_addresses=[PeerAddress.parse("10.0.0.2:6881")])
    >>> message = PexMessage(added=(PeerAddress.parse("10.0.0.1:6881"),
    ...                             PeerAddress.parse("10.0.0.2:6881"),
    ...                             PeerAddress.parse("10.0.0.3:0")), added_flags=(2, 0, 0),
    ...                      added6=(), added6_flags=(), dropped=(), dropped6=())
    >>> update = inbox.receive(message, now=0.0)
    >>> [(str(a), f) for a, f in update.added]
    [('10.0.0.1:6881', <PexFlags.SEED: 2>)]
    >>> inbox.receive(message, now=1.0).added  # taken, bunched or not: nothing new in it
    ()
    >>> for now in (2.0, 3.0, 4.0, 5.0):  # six messages in a minute: all taken
    ...     _ = inbox.receive(message, now)
    >>> inbox.statistics().messages
    6
    >>> inbox.receive(message, now=6.0)  # a seventh: a flood, the peer must go
    Traceback (most recent call last):
    ...
    bip_peer._errors.RemoteProtocolError: 7 ut_pex messages within 60 s (at most 6 allowed)

    Args:
        peer_address: the sender's address: its own address in its list is ignored, and when it
            is public, local addresses in its list (private, link-local, loopback, unique and
            site-local: libtorrent's ``is_local``) are ignored too (libtorrent does the same,
            so a stranger cannot point us at our own network). None skips both.
        our_addresses: our own listening addresses, never taken (more can be added later:
            :meth:`add_our_address`). A :class:`~bip_peer.PeerExchange` passes the set it
            keeps itself, shared as it is by every peer's inbox, so that all of them always
            agree on what is ours (an address it forgets is forgotten by every inbox).
        min_interval: seconds after a message whose added addresses were taken during which
            later messages have their added addresses ignored (counted); their dropped ones
            are always applied. 0 (the default) takes every message within the flood
            allowance: a sooner message's added addresses are lost for good, the sender never
            repeats a diff.
        max_per_message: added addresses taken from one message.
        max_known: addresses remembered for this peer; new ones beyond it are ignored.
    """

    def __init__(
        self,
        *,
        peer_address: PeerAddress | None = None,
        our_addresses: Iterable[PeerAddress] | _OurAddresses = (),
        min_interval: float = DEFAULT_PEX_MIN_RECEIVE_INTERVAL,
        max_per_message: int = DEFAULT_PEX_RECEIVE_LIMIT,
        max_known: int = DEFAULT_PEX_MAX_KNOWN,
    ) -> None:
        _check_interval("min_interval", min_interval)
        _check_limit("max_per_message", max_per_message)
        _check_limit("max_known", max_known)
        self._peer = None if peer_address is None else _normalized(peer_address)
        self._ours = (
            our_addresses
            if isinstance(our_addresses, _OurAddresses)
            else _OurAddresses(our_addresses)
        )
        self._min_interval = float(min_interval)
        self._max_per_message = max_per_message
        self._max_known = max_known
        self._known: dict[PeerAddress, None] = {}  # addresses this peer added, not dropped
        self._last = -math.inf
        # When the last PEX_FLOOD_ALLOWANCE messages arrived, taken or not, oldest first.
        self._arrivals: deque[float] = deque(maxlen=PEX_FLOOD_ALLOWANCE)
        self._messages = 0
        self._too_soon = 0
        self._accepted = 0
        self._excess = 0
        self._invalid = 0
        self._self = 0
        self._local = 0
        self._dup = 0

    def receive(self, message: PexMessage, now: float) -> PexUpdate:
        """Take a message: the new candidates and the drops.

        Every message is taken (its added addresses too, unless ``min_interval`` says they
        came too soon), and its drops always: a peer's view of its own connections must not
        go stale because two of its messages arrived close together.

        Raises:
            RemoteProtocolError: the message is one more than ``PEX_FLOOD_ALLOWANCE``
                within ``PEX_FLOOD_WINDOW`` seconds (libtorrent's rule): the peer floods
                and must be disconnected. Checked first, so nothing of the message is used.
        """
        # Before anything else: a flood's cost is per message, however little it carries.
        arrivals = self._arrivals
        if len(arrivals) == PEX_FLOOD_ALLOWANCE and now - PEX_FLOOD_WINDOW < arrivals[0]:
            raise RemoteProtocolError(
                f"{PEX_FLOOD_ALLOWANCE + 1} ut_pex messages within {PEX_FLOOD_WINDOW:g} s "
                f"(at most {PEX_FLOOD_ALLOWANCE} allowed)"
            )
        arrivals.append(now)
        dropped = []
        for raw in (*message.dropped, *message.dropped6):
            address = _normalized(raw)
            if address in self._known:
                del self._known[address]
                dropped.append(address)
        if now < self._last + self._min_interval:
            self._too_soon += 1
            self._excess += len(message.added) + len(message.added6)
            return PexUpdate(added=(), dropped=tuple(dropped))
        self._last = now
        self._messages += 1
        added: list[tuple[PeerAddress, PexFlags]] = []
        entries = [
            *zip(message.added, self._flags(message.added_flags, len(message.added)), strict=True),
            *zip(
                message.added6, self._flags(message.added6_flags, len(message.added6)), strict=True
            ),
        ]
        taken = 0
        filter_local = self._peer is not None and not _is_local(self._peer.host)
        for raw, flags in entries:
            address = _normalized(raw)
            if taken >= self._max_per_message:
                self._excess += 1
                continue
            taken += 1
            if not address.is_connectable:
                self._invalid += 1
            elif address in self._ours or address == self._peer:
                self._self += 1
            elif filter_local and _is_local(address.host):
                self._local += 1
            elif address in self._known:
                self._dup += 1
            elif len(self._known) >= self._max_known:
                self._excess += 1
            else:
                self._known[address] = None
                added.append((address, flags))
        self._accepted += len(added)
        return PexUpdate(added=tuple(added), dropped=tuple(dropped))

    @staticmethod
    def _flags(flags: tuple[int, ...], count: int) -> list[PexFlags]:
        # added.f is optional (the decoder leaves it empty when absent or of the wrong length):
        # take the addresses without flags then.
        if len(flags) != count:
            return [PexFlags.NONE] * count
        return [PexFlags(int(flag) & 0xFF) for flag in flags]

    @property
    def our_addresses(self) -> frozenset[PeerAddress]:
        """The addresses taken as ours (normalised)."""
        return self._ours.all()

    def add_our_address(self, address: PeerAddress) -> None:
        """Take ``address`` as ours from now on (say, our external IP with a listening port):
        never taken from a peer's list. At most :data:`MAX_OUR_ADDRESSES` are added this way
        (the oldest added is forgotten first); already known is no error. A set given at
        construction is changed as it is, for everyone sharing it.

        Raises:
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        self._ours.add(address)

    def remove_our_address(self, address: PeerAddress) -> None:
        """No longer take ``address`` as ours (our external address changed); unknown is no
        error. Only an address added with :meth:`add_our_address` goes: one given at
        construction (a listening address) stays ours, even if it was added too.

        Raises:
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        self._ours.discard(address)

    @property
    def known(self) -> frozenset[PeerAddress]:
        """The addresses this peer gave us and has not dropped (at most ``max_known``)."""
        return frozenset(self._known)

    def statistics(self) -> PexInboxStatistics:
        """A snapshot of the counters."""
        return PexInboxStatistics(
            messages=self._messages,
            ignored_too_soon=self._too_soon,
            accepted=self._accepted,
            ignored_excess=self._excess,
            ignored_invalid=self._invalid,
            ignored_self=self._self,
            ignored_local=self._local,
            ignored_known=self._dup,
            known=len(self._known),
        )
