"""A torrent's memory of its peers (libtorrent's ``peer_list``): which to dial next, and when.

Discovery sources (trackers, the DHT, PEX, the user, incoming connections) add addresses;
the owner asks for :meth:`PeerList.connect_candidates` whenever it has room for more
connections, and reports what became of each dial and each connection. No I/O: time is
passed in as ``now`` (seconds, any monotonic clock).

The rules, libtorrent's defaults:

- at most ``max_size`` entries (3000, libtorrent's ``max_peerlist_size``). Connected entries,
  those being dialled and the user's are never evicted. When full, a new address replaces
  the least useful other entry that is not proven (proven: connected once, where a peer said
  it listens, or from the resume data; unless it failed ``max_failcount`` times): one that
  failed most first, then the one of the lowest source (ranked as candidates are, below),
  then the lowest BEP 40 priority; when no such entry is less useful than the newcomer
  (which has no failure), the newcomer is dropped. So untried PEX addresses give way to the
  user's, a tracker's or LSD's, not the other way round, and no address merely heard of
  pushes out a peer that worked (libtorrent evicts no connect candidate for one). Only the
  ``EVICTION_WINDOW`` oldest entries are looked at (as libtorrent's ``erase_peers`` looks at a
  window), so a flood of addresses (PEX, a tracker) costs a bounded time per address;
- a connection (:meth:`PeerList.connected`, :meth:`PeerList.update_port`) is recorded
  whatever its rank (libtorrent's ``new_connection`` erases by force): a host that has its
  ``max_per_host`` entries already gives up one of its own; otherwise the window's least
  useful entry goes, unproven before proven, past the window only if none of it may go; only
  a list of connected, dialled and user entries has no room for it. The entry an incoming
  connection evicted comes back when that connection ends and leaves no entry (its port was
  ephemeral), or when the peer says it listens at that entry's address; an incoming entry
  that stays (a source listed it) keeps its slot, and the evicted one is gone. So a host
  connecting again and again cannot make room for what its PEX names;
- a failed dial (or a failed connection) adds one to the entry's fail count; an entry that
  failed ``max_failcount`` times (3) is not dialled again. An offer from the user (a
  ``--peer`` given again) clears the count, the wait and the seed mark: the user asked for
  that peer (the bip client offers them every ``redial_interval``); a tracker offering it
  again takes one failure off (libtorrent's ``update_peer``: someone else apparently reaches
  it; the wait below still spaces the dials, so a dead peer trackers keep listing is dialled
  about once per ``min_reconnect_time`` x (fail count + 1)); other sources offering it again
  change nothing (PEX and the DHT repeat what they heard, and would keep a dead peer dialled);
- after an attempt or a disconnect, an entry waits ``min_reconnect_time`` x
  (fail count + 1) seconds (60 s x ...) before it is a candidate again;
- candidates are ranked by fewest failures, then by source (user, tracker, DHT, PEX,
  resume data, other), then by BEP 40 priority against our address of the peer's family (our
  external address when known, else our listen address; :meth:`PeerList.set_our_addresses`);
- a banned host is dropped and never added again (up to ``MAX_BANNED_HOSTS`` hosts);
- one host has at most ``max_per_host`` entries (2; libtorrent keeps one per IP unless
  ``allow_multiple_connections_per_ip``; ``None``: no cap): a further port of that host
  replaces the port of its oldest entry that is neither connected, being dialled, given by
  the user, nor proven (connected once, or where the peer said it listens) (libtorrent's
  ``update_peer``: the peer moved), its failures and wait kept; with no such entry the port
  is dropped. So a source that lists one host under thousands of ports (to make us flood a
  third party) costs that host a dial per backoff, not one per port, and cannot take a port
  that worked away from us. Not capped: the user's own addresses and connections; the port a
  peer says it listens on (:meth:`PeerList.update_port`) counts once its connection ends:
  the host's oldest other entries that are neither connected, dialled nor the user's go then
  (libtorrent's ``update_peer_port`` moves the port), so a host telling a new port on each
  connection keeps ``max_per_host`` entries, not one per connection;
- IPv6 link-local addresses (``fe80::/10``) are refused like unconnectable ones: they need an
  interface, which no source can give (libtorrent's ``add_peer`` refuses them too);
- a peer known to be a seed is not a candidate while we are a seed too;
- an address seen only as an incoming connection (a peer's ephemeral port) is never dialled,
  and is forgotten when that connection ends, unless the peer said where it listens (its
  BEP 10 ``p``: :meth:`PeerList.update_port`): its entry then moves to that address, which
  is dialled once the connection ends (libtorrent's ``update_peer_port``), unless another
  connection is up at that address, or a dial of ours to it is pending (two clients behind
  one NAT address listening on one port): then the entry stays under its ephemeral port,
  one entry per connection.

A dial handed out by :meth:`PeerList.connect_candidates` is pending until
:meth:`PeerList.dial_failed`, :meth:`PeerList.dial_cancelled`, :meth:`PeerList.connected` or
:meth:`PeerList.disconnected` says what became of it, or until ``dial_timeout`` seconds pass
(a dial whose outcome never came back counts as failed): a candidate is never handed out
twice while its dial is pending.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from ._compact import Family, PeerAddress
from ._peer_priority import peer_priority

__all__ = [
    "DEFAULT_DIAL_TIMEOUT",
    "DEFAULT_MAX_FAILCOUNT",
    "DEFAULT_MAX_PEERLIST_SIZE",
    "DEFAULT_MAX_PER_HOST",
    "DEFAULT_MIN_RECONNECT_TIME",
    "EVICTION_WINDOW",
    "MAX_BANNED_HOSTS",
    "PeerEntry",
    "PeerList",
    "PeerListStatistics",
    "PeerOrigin",
]

DEFAULT_MAX_PEERLIST_SIZE: Final = 3000
"""Entries of one torrent's list at most (libtorrent's ``max_peerlist_size``)."""
DEFAULT_MAX_PER_HOST: Final = 2
"""Entries of one host a source may add, at most (more ports move the oldest entry): two, not
libtorrent's one, so two clients behind one NAT address both stay reachable."""
DEFAULT_MAX_FAILCOUNT: Final = 3
"""Failures after which an entry is no longer dialled (libtorrent's ``max_failcount``)."""
DEFAULT_MIN_RECONNECT_TIME: Final = 60.0
"""Seconds between two attempts at one entry, times (fail count + 1)
(libtorrent's ``min_reconnect_time``)."""
DEFAULT_DIAL_TIMEOUT: Final = 120.0
"""Seconds after which a dial whose outcome was never reported counts as failed."""
EVICTION_WINDOW: Final = 128
"""Oldest entries looked at for one to evict when the list is full."""
MAX_BANNED_HOSTS: Final = 65536
"""Banned hosts remembered per list, at most (further bans only drop the host's entries)."""


class PeerOrigin(enum.IntFlag):
    """Where an address came from (libtorrent's ``peer_source_flags``); an entry keeps all."""

    NONE = 0
    TRACKER = enum.auto()
    DHT = enum.auto()
    PEX = enum.auto()
    LSD = enum.auto()
    RESUME = enum.auto()
    INCOMING = enum.auto()
    USER = enum.auto()
    OTHER = enum.auto()

    @classmethod
    def from_name(cls, source: str) -> PeerOrigin:
        """The flag of a :class:`~bip_handshake.PeerSink` source name (``"tracker"``,
        ``"dht"``, ``"pex"``, ``"lsd"``, ``"resume"``, ``"incoming"``, ``"user"``); any other
        name is ``OTHER``.

        >>> PeerOrigin.from_name("pex")
        <PeerOrigin.PEX: 4>
        """
        return _BY_NAME.get(source, cls.OTHER)


_BY_NAME: Final = {
    "tracker": PeerOrigin.TRACKER,
    "dht": PeerOrigin.DHT,
    "pex": PeerOrigin.PEX,
    "lsd": PeerOrigin.LSD,
    "resume": PeerOrigin.RESUME,
    "incoming": PeerOrigin.INCOMING,
    "user": PeerOrigin.USER,
}
# Higher first: the user asked; a tracker's list is the swarm's own; DHT peers are found by
# hash; PEX peers are second hand, and anyone connected to us may invent them.
_SOURCE_RANK: Final = (
    (PeerOrigin.USER, 1 << 6),
    (PeerOrigin.TRACKER, 1 << 5),
    (PeerOrigin.LSD, 1 << 4),
    (PeerOrigin.DHT, 1 << 3),
    (PeerOrigin.PEX, 1 << 2),
    (PeerOrigin.RESUME, 1 << 1),
    (PeerOrigin.OTHER, 1),
)


# Every combination of flags ranked once, indexed by the flags' value: ranking is the hot
# part of connect_candidates (the whole list, once per dial) and of eviction (the window, for
# every address a PEX flood adds to a full list); a tuple index costs a fraction of the sum.
_ALL_ORIGINS: Final = sum(flag.value for flag in PeerOrigin)  # every flag's bit set
_SOURCE_RANKS: Final = tuple(
    sum(rank for flag, rank in _SOURCE_RANK if flag & value) for value in range(_ALL_ORIGINS + 1)
)


_RESUME_BIT: Final = PeerOrigin.RESUME.value


def _source_rank(origin: PeerOrigin) -> int:
    try:
        return _SOURCE_RANKS[origin]
    except IndexError:
        # Bits no flag names (an IntFlag keeps them: PeerOrigin(256) is one) rank nothing.
        return _SOURCE_RANKS[origin & _ALL_ORIGINS]


Host = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """A snapshot of one entry of a :class:`PeerList`.

    Attributes:
        address: the peer's address (normalised: IPv4-mapped IPv6 as IPv4).
        origin: every source that gave it.
        swarm_id: the 20-byte swarm id the last source gave it with (a hybrid torrent's v1
            or v2 swarm), or ``None`` for the torrent's default.
        failcount: failed dials and connections since the last success.
        last_attempt: when it was last handed out to dial (``None``: never).
        last_connected: when it was last dialled or disconnected, the start of its wait.
        connected: a connection to it is up.
        dialling: a dial to it is pending.
        seed: it was seen to have every piece, or said it only uploads (BEP 21): either
            way it wants nothing from a seed.
        priority: its BEP 40 priority against our address of its family (0 when unknown).
    """

    address: PeerAddress
    origin: PeerOrigin
    swarm_id: bytes | None
    failcount: int
    last_attempt: float | None
    last_connected: float | None
    connected: bool
    dialling: bool
    seed: bool
    priority: int


@dataclass(frozen=True, slots=True)
class PeerListStatistics:
    """Counts of a :class:`PeerList` (:meth:`PeerList.statistics`).

    Attributes:
        size: entries known.
        connected: entries with a connection up.
        dialling: entries with a dial pending.
        failed: entries that failed at least once since their last success.
        given_up: entries that failed ``max_failcount`` times (not dialled again).
        banned_hosts: hosts banned.
        evicted: entries evicted to make room, since the list was made (less those given
            back when the incoming connection they made room for ended).
        dropped: addresses not added because the list was full of more useful entries.
    """

    size: int
    connected: int
    dialling: int
    failed: int
    given_up: int
    banned_hosts: int
    evicted: int
    dropped: int


class _Entry:
    """The mutable state of one address (the list's own; snapshots are :class:`PeerEntry`)."""

    __slots__ = (
        "address",
        "connected",
        "dial_started",
        "displaced",
        "failcount",
        "last_attempt",
        "last_connected",
        "listening",
        "origin",
        "priority",
        "seed",
        "swarm_id",
        "was_connected",
    )

    def __init__(self, address: PeerAddress, origin: PeerOrigin, swarm_id: bytes | None) -> None:
        self.address = address
        self.origin = origin
        self.swarm_id = swarm_id
        self.failcount = 0
        self.last_attempt: float | None = None
        self.last_connected: float | None = None
        self.connected = False
        self.dial_started: float | None = None  # set while a dial is pending
        self.seed = False
        self.priority = 0
        self.listening = False  # the address is where the peer listens (its BEP 10 ``p``)
        self.was_connected = False  # a connection to it was up once
        # The entry evicted to make room for this one, an incoming connection's: given back
        # when this one is forgotten (the connection ended), so a host connecting again and
        # again from new ports cannot clear the list for what its PEX names.
        self.displaced: _Entry | None = None

    @property
    def incoming_only(self) -> bool:
        return self.origin == PeerOrigin.INCOMING and not self.listening

    @property
    def proven(self) -> bool:
        """It worked once: connected, or where the peer said it listens, or a peer saved
        from a previous run (the resume data keeps connected peers)."""
        # (an int test: ``in`` on a flag costs a Python call, and eviction asks of a window)
        return self.was_connected or self.listening or bool(int(self.origin) & _RESUME_BIT)

    @property
    def evictable(self) -> bool:
        return (
            not self.connected and self.dial_started is None and PeerOrigin.USER not in self.origin
        )

    def snapshot(self) -> PeerEntry:
        return PeerEntry(
            address=self.address,
            origin=self.origin,
            swarm_id=self.swarm_id,
            failcount=self.failcount,
            last_attempt=self.last_attempt,
            last_connected=self.last_connected,
            connected=self.connected,
            dialling=self.dial_started is not None,
            seed=self.seed,
            priority=self.priority,
        )


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be positive, not {value}")


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, not {value}")


class PeerList:
    """The peers of one torrent: known addresses, their history, and the next ones to dial.

    See the module docstring for the rules. Every method is O(1) per address (and the host's
    entries), plus the ``EVICTION_WINDOW`` oldest entries when the list is full, except
    :meth:`set_our_addresses` and :meth:`statistics` (O(n)); :meth:`connected` and
    :meth:`update_port` of an address the list does not know, when it is full (O(n) at most:
    they look past the window when none of it may go); and :meth:`connect_candidates`:
    O(n log count) when it may find a candidate, O(dials pending) when it knows no entry can
    be one before a given time (every entry connected, waiting, given up or a seed while we
    seed: the common case of a long list, asked on every pass of the owner).

    >>> peers = PeerList()
    >>> peers.add(PeerAddress.parse("10.0.0.2:6881"), PeerOrigin.TRACKER, now=0.0)
    True
    >>> peers.connect_candidates(5, now=0.0)
    [PeerAddress(host=IPv4Address('10.0.0.2'), port=6881)]
    >>> peers.connect_candidates(5, now=0.0)  # its dial is pending
    []

    Args:
        max_size: entries at most.
        max_per_host: entries of one host a source may add, and that the host keeps once
            its connections end, at most (``None``: no cap).
        max_failcount: failures after which an entry is not dialled again (may be changed
            later, as may ``min_reconnect_time``).
        min_reconnect_time: seconds between attempts at one entry, times (fail count + 1).
        dial_timeout: seconds after which an unreported dial counts as failed.

    Raises:
        TypeError, ValueError: a bound is not a positive number (an int for the counts).
    """

    def __init__(
        self,
        *,
        max_size: int = DEFAULT_MAX_PEERLIST_SIZE,
        max_per_host: int | None = DEFAULT_MAX_PER_HOST,
        max_failcount: int = DEFAULT_MAX_FAILCOUNT,
        min_reconnect_time: float = DEFAULT_MIN_RECONNECT_TIME,
        dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
    ) -> None:
        _check_count("max_size", max_size)
        if max_per_host is not None:
            _check_count("max_per_host", max_per_host)
        _check_count("max_failcount", max_failcount)
        _check_seconds("min_reconnect_time", min_reconnect_time)
        _check_seconds("dial_timeout", dial_timeout)
        self.max_size = max_size
        self.max_per_host = max_per_host
        self._max_failcount = max_failcount
        self._min_reconnect_time = float(min_reconnect_time)
        self.dial_timeout = float(dial_timeout)
        # Insertion order is age: the eviction window is the oldest entries; an entry that
        # connects moves to the end (it proved useful, and a connected one cannot go anyway).
        self._entries: dict[PeerAddress, _Entry] = {}
        self._pending: dict[PeerAddress, _Entry] = {}  # the entries with a dial pending
        # Every entry again, by host: the per-host cap and ban() look at a host's entries
        # only. Each host's dict is ordered too (oldest first: the one a new port moves).
        self._hosts: dict[Host, dict[PeerAddress, _Entry]] = {}
        # No entry can be a candidate before this time (a lower bound) for connect_candidates
        # asked with the seed flag ``_idle_seed``; -inf: unknown, look. Every change that may
        # make a candidate lowers it (a change of the bounds resets it), so a list of waiting
        # entries is not scanned whole on every pass of the owner (libtorrent bounds the
        # scan to 300 entries instead, at the price of not always finding the best).
        self._idle_until = -math.inf
        self._idle_seed: bool | None = None
        self._banned: dict[Host, None] = {}  # a dict: ordered, oldest ban first
        self._ours: dict[Family, PeerAddress] = {}
        self._evicted = 0
        self._dropped = 0

    @property
    def max_failcount(self) -> int:
        """Failures after which an entry is not dialled again."""
        return self._max_failcount

    @max_failcount.setter
    def max_failcount(self, value: int) -> None:
        _check_count("max_failcount", value)
        self._max_failcount = value
        # Ready times depend on it, and _wake_at computed them under the old value (going
        # 3 -> 1 -> 3 would leave an entry's failure under 1 hidden until the cache expired).
        self._idle_until = -math.inf

    @property
    def min_reconnect_time(self) -> float:
        """Seconds between attempts at one entry, times (fail count + 1)."""
        return self._min_reconnect_time

    @min_reconnect_time.setter
    def min_reconnect_time(self, value: float) -> None:
        _check_seconds("min_reconnect_time", value)
        self._min_reconnect_time = float(value)
        self._idle_until = -math.inf  # ready times depend on it too

    # -- what we know -------------------------------------------------------------------

    def __len__(self) -> int:
        """Entries known."""
        return len(self._entries)

    def __contains__(self, address: object) -> bool:
        """Whether ``address`` (a :class:`PeerAddress`) has an entry."""
        return isinstance(address, PeerAddress) and address.normalized() in self._entries

    def entry(self, address: PeerAddress) -> PeerEntry | None:
        """A snapshot of ``address``'s entry, or ``None`` when it has none."""
        entry = self._entries.get(address.normalized())
        return None if entry is None else entry.snapshot()

    def entries(self) -> list[PeerEntry]:
        """Snapshots of every entry, oldest first."""
        return [entry.snapshot() for entry in self._entries.values()]

    def best(self, count: int) -> list[PeerAddress]:
        """Up to ``count`` addresses worth keeping for the next run (libtorrent saves its
        connectable peers in the resume data), best first: connected now, then connected
        once, then by fewest failures, source and BEP 40 priority. Left out: addresses seen
        only as an incoming connection (an ephemeral port), entries that failed
        ``max_failcount`` times, and banned hosts.
        """
        if count <= 0:
            return []
        kept = (
            entry
            for entry in self._entries.values()
            if not entry.incoming_only
            and entry.failcount < self.max_failcount
            and entry.address.host not in self._banned
        )
        best = heapq.nsmallest(
            count,
            kept,
            key=lambda e: (
                not e.connected,
                not e.was_connected,
                e.failcount,
                -_source_rank(e.origin),
                -e.priority,
            ),
        )
        return [entry.address for entry in best]

    def banned_hosts(self) -> list[Host]:
        """The banned hosts, in the order they were banned."""
        return list(self._banned)

    def is_banned(self, host: Host) -> bool:
        """Whether ``host`` is banned (an IPv4-mapped IPv6 host counts as the IPv4 one)."""
        return _normal_host(host) in self._banned

    def is_dialling(self, address: PeerAddress) -> bool:
        """Whether a dial to ``address`` is pending (as its entry's ``dialling`` says, without
        the snapshot: the owner asks of each of its dials on every pass)."""
        return address.normalized() in self._pending

    @property
    def dialling(self) -> int:
        """Dials pending."""
        return len(self._pending)

    def statistics(self) -> PeerListStatistics:
        """Counts for a status display."""
        entries = self._entries.values()
        return PeerListStatistics(
            size=len(self._entries),
            connected=sum(1 for e in entries if e.connected),
            dialling=len(self._pending),
            failed=sum(1 for e in entries if e.failcount),
            given_up=sum(1 for e in entries if e.failcount >= self.max_failcount),
            banned_hosts=len(self._banned),
            evicted=self._evicted,
            dropped=self._dropped,
        )

    # -- addresses in ---------------------------------------------------------------------

    def add(
        self,
        address: PeerAddress,
        origin: PeerOrigin,
        now: float,
        *,
        swarm_id: bytes | None = None,
    ) -> bool:
        """Record an address a source offered; returns whether it has an entry now.

        A known address gains ``origin`` (and ``swarm_id``, when given); an offer from the
        user clears its failures, its wait and its seed mark, one from a tracker takes one
        failure off. Unconnectable addresses (port
        0, unspecified or multicast hosts), IPv6 link-local ones and banned hosts are refused.
        A host with ``max_per_host`` entries already moves one to the new port, or refuses it
        (see the module docstring).

        Raises:
            TypeError: ``address`` is not a :class:`PeerAddress`, ``origin`` not a
                :class:`PeerOrigin`.
            ValueError: ``swarm_id`` is not 20 bytes.
        """
        if not isinstance(address, PeerAddress):
            raise TypeError(f"address must be a PeerAddress, not {address!r}")
        if not isinstance(origin, PeerOrigin):
            raise TypeError(f"origin must be a PeerOrigin, not {origin!r}")
        if swarm_id is not None and (not isinstance(swarm_id, bytes) or len(swarm_id) != 20):
            raise ValueError(f"a swarm id is 20 bytes, not {swarm_id!r}")
        address = address.normalized()
        if _is_link_local(address):
            return False
        return self._add(address, origin, swarm_id, capped=True)

    def _add(
        self,
        address: PeerAddress,
        origin: PeerOrigin,
        swarm_id: bytes | None,
        *,
        capped: bool,
        force: bool = False,
    ) -> bool:
        """:meth:`add` of a normalised address; ``capped``: the per-host cap applies (not to
        a connection being recorded: it exists whatever the sources said); ``force``: a full
        list makes room whatever the newcomer's rank (a connection being recorded)."""
        if not address.is_connectable or address.host in self._banned:
            return False
        self._idle_until = -math.inf  # a new entry, or a known one's state changed: look again
        entry = self._entries.get(address)
        if (
            entry is None
            and capped
            and self.max_per_host is not None
            and origin != PeerOrigin.INCOMING  # never dialled: no cap needed
            and PeerOrigin.USER not in origin  # the user asked for that very address
            and self._dialable_on_host(address.host) >= self.max_per_host
        ):
            entry = self._move_to(address)
            if entry is None:
                return False
        if entry is not None:
            entry.origin |= origin
            if swarm_id is not None:
                entry.swarm_id = swarm_id
            if PeerOrigin.USER in origin:
                entry.failcount = 0
                entry.last_connected = None
                entry.seed = False
            elif PeerOrigin.TRACKER in origin and entry.failcount > 0:
                entry.failcount -= 1
            return True
        priority = self._priority_of(address)
        evicted = None
        if len(self._entries) >= self.max_size:
            evicted = self._make_room((0, -_source_rank(origin), -priority), address, force=force)
            if evicted is None:
                self._dropped += 1
                return False
        entry = _Entry(address, origin, swarm_id)
        entry.priority = priority
        if force and entry.incoming_only:
            entry.displaced = evicted  # (given back when its connection ends: it goes then)
        self._insert(entry)
        return True

    def add_many(
        self,
        addresses: Iterable[PeerAddress],
        origin: PeerOrigin,
        now: float,
        *,
        swarm_id: bytes | None = None,
    ) -> int:
        """:meth:`add` each address once; returns how many distinct addresses have an entry
        now.

        An address given more than once (after normalising) counts as one offer: a tracker
        reply naming a peer three times would otherwise take three failures off it.
        """
        offered: set[PeerAddress] = set()
        added = 0
        for address in addresses:
            if isinstance(address, PeerAddress):  # anything else: add() raises TypeError
                normal = address.normalized()
                if normal in offered:
                    continue
                offered.add(normal)
            added += self.add(address, origin, now, swarm_id=swarm_id)
        return added

    def set_our_addresses(self, addresses: Iterable[PeerAddress]) -> None:
        """Our addresses (one per family is kept: the first given), to rank peers against.

        Give our external addresses once known, our listen addresses until then. Every
        entry's priority is computed again.
        """
        ours: dict[Family, PeerAddress] = {}
        for given in addresses:
            address = given.normalized()
            ours.setdefault(address.family, address)
        if ours == self._ours:
            return
        self._ours = ours
        for entry in self._entries.values():
            entry.priority = self._priority_of(entry.address)

    # -- dialling -------------------------------------------------------------------------

    def connect_candidates(
        self, count: int, now: float, *, seed: bool = False
    ) -> list[PeerAddress]:
        """Up to ``count`` addresses to dial now, best first; each is marked as being dialled.

        Args:
            count: how many at most.
            now: the current time.
            seed: we are a seed: peers known to be seeds are left out.
        """
        self._expire(now)
        if count <= 0:
            return []
        if bool(seed) == self._idle_seed and now < self._idle_until:
            return []  # nothing can be a candidate yet: no need to look at every entry
        candidates: list[_Entry] = []
        soonest = math.inf  # when the first entry that is not a candidate now may become one
        for entry in self._entries.values():
            ready = self._ready_time(entry, seed)
            if ready <= now:
                candidates.append(entry)
            elif ready < soonest:
                soonest = ready
        best = heapq.nsmallest(
            count,
            candidates,
            key=lambda e: (e.failcount, -_source_rank(e.origin), -e.priority),
        )
        # Every candidate handed out now: none is left before ``soonest`` (a dial that ends
        # lowers it again, through _wake_at).
        self._idle_seed = bool(seed)
        self._idle_until = soonest if len(candidates) <= count else -math.inf
        for entry in best:
            entry.dial_started = now
            entry.last_attempt = now
            entry.last_connected = now
            self._pending[entry.address] = entry
        return [entry.address for entry in best]

    def dial_failed(self, address: PeerAddress, now: float) -> None:
        """The dial to ``address`` failed (no connection, or no handshake): one more failure."""
        entry = self._entries.get(address.normalized())
        if entry is None or entry.connected:
            return
        self._end_dial(entry)
        entry.failcount = min(entry.failcount + 1, self.max_failcount)
        entry.last_connected = now
        self._wake_at(entry)

    def dial_cancelled(self, address: PeerAddress, now: float) -> None:
        """The dial to ``address`` was not made after all (already connected, filtered, no
        room in the dial queue): no failure, but the usual wait before the next attempt."""
        entry = self._entries.get(address.normalized())
        if entry is not None:
            self._end_dial(entry)
            self._wake_at(entry)

    def connected(
        self, address: PeerAddress, now: float, *, origin: PeerOrigin = PeerOrigin.NONE
    ) -> bool:
        """A connection to ``address`` is up (ours or the peer's); returns whether the list
        records it (a banned host, or no room: every entry connected, being dialled or the
        user's, is not recorded; any other entry may be evicted to make room, the host's own
        first when it has ``max_per_host`` entries, an unproven one before a proven one).

        An address the list did not know is added with ``origin`` (``INCOMING`` for an
        inbound connection: such an entry is never dialled, and goes when it disconnects).
        """
        address = address.normalized()
        entry = self._entries.get(address)
        if entry is None:
            # A connection that works beats any address merely heard of (libtorrent's
            # new_connection erases a peer by force): room is made for it.
            if not self._add(address, origin, None, capped=False, force=True):
                return False
            entry = self._entries[address]
        else:
            entry.origin |= origin
        self._end_dial(entry)
        entry.connected = True
        entry.was_connected = True
        entry.failcount = 0
        entry.last_connected = now
        # To the young end: it cannot be evicted while connected, and proved itself.
        self._to_young_end(entry)
        return True

    def disconnected(
        self, address: PeerAddress, now: float, *, failed: bool = False, wait: bool = True
    ) -> None:
        """The connection to ``address`` ended (``failed``: with an error, one more failure).

        ``wait=False``: we ended it for a reason of our own that says nothing about the peer
        (the torrent was paused, or its data is checked again), so it may be dialled again
        at once rather than after ``min_reconnect_time``.

        An entry known only from an incoming connection is forgotten: its port was the
        peer's ephemeral one.
        """
        address = address.normalized()
        entry = self._entries.get(address)
        if entry is None:
            return
        self._end_dial(entry)
        entry.connected = False
        # No wait: as if it had never been dialled (its wait starts from last_connected).
        entry.last_connected = now if wait else None
        if failed:
            entry.failcount = min(entry.failcount + 1, self.max_failcount)
        self._wake_at(entry)
        if entry.incoming_only or entry.address.host in self._banned:
            self._delete(address)
            self._give_back(entry)
        else:
            # It stays (a source listed it, or it said where it listens): it keeps the slot
            # it took, and the entry it displaced is gone for good (held on, it would be
            # memory no bound covers).
            entry.displaced = None
            self._trim_host(entry)

    def update_port(
        self,
        address: PeerAddress,
        port: int,
        now: float,
        *,
        swarm_id: bytes | None = None,
    ) -> PeerAddress | None:
        """The peer connected from ``address`` listens on ``port`` (its BEP 10 ``p``).

        A peer that dialled us came from an ephemeral port; the entry of that connection moves
        to ``(host, port)``, where it may be dialled back once the connection ends (merged
        into the entry already there, if any), with ``swarm_id`` (the connection's swarm).
        Returns the address the connection is recorded under now (the caller reports its
        disconnect under it), or ``None``: the port is not connectable (0), the host is
        banned, the list had no room, or another connection is up at ``(host, port)``
        already, or a dial of ours to it is pending. The caller then keeps reporting the
        connection under the address it did before.

        Another connection up at ``(host, port)`` is another peer that claims the same port
        (two clients behind one NAT address, each listening on 6881 at home) or a duplicate
        of ours: the entry stays with that connection and ``address``'s entry stays where it
        is, unlike libtorrent, which disconnects the reporting connection (its
        ``update_peer_port``, ``duplicate_peer_id``): both are kept. Merged, the first of the
        two to disconnect would mark the entry not connected while the other is still up: it
        would be handed out to dial (a duplicate), or evicted, while connected. A dial of
        ours pending there is the same in the other order: the handshaker carries it on, and
        it may reach another client behind that NAT address (a dial past ``dial_timeout``
        counts as failed first, and is no dial pending).

        Raises:
            ValueError: ``swarm_id`` is not 20 bytes.
        """
        if swarm_id is not None and (not isinstance(swarm_id, bytes) or len(swarm_id) != 20):
            raise ValueError(f"a swarm id is 20 bytes, not {swarm_id!r}")
        address = address.normalized()
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            return None
        listen = PeerAddress(address.host, port).normalized()
        if not listen.is_connectable or listen.host in self._banned or _is_link_local(listen):
            return None
        self._expire(now)  # a dial whose outcome never came back is no dial pending
        taken = self._entries.get(listen)
        if (
            taken is not None
            and listen != address
            and (taken.connected or taken.dial_started is not None)
        ):
            # (docstring: another connection is up there, or ours may be soon; both kept)
            return None
        old = self._delete(address)
        if (
            old is not None
            and old.displaced is not None
            and old.displaced.address == listen
            and listen not in self._entries
        ):
            # The connection evicted this very peer's entry (the host was at its cap): it
            # comes back, its history (sources, seed mark) with it, and takes the
            # connection's below; the slot the connection took is its again.
            back, old.displaced = old.displaced, None
            self._restore(back)
        entry = self._entries.get(listen)
        if entry is None:
            if old is not None:
                entry = old  # the same peer: its history goes with it
                entry.address = listen
                entry.priority = self._priority_of(listen)
                entry.dial_started = None
                self._insert(entry)
            else:
                if not self._add(listen, PeerOrigin.INCOMING, None, capped=False, force=True):
                    return None
                entry = self._entries[listen]
        elif old is not None:  # neither connected nor being dialled (checked above)
            entry.origin |= old.origin
            self._give_back(old)  # old's slot is free again
        # Where the peer listens is kept after the connection: the slot is this entry's
        # now (and the host's cap counts it once the connection ends: _trim_host).
        entry.displaced = None
        entry.origin |= PeerOrigin.INCOMING
        if swarm_id is not None:
            entry.swarm_id = swarm_id
        entry.listening = True
        entry.connected = True
        entry.was_connected = True
        entry.failcount = 0
        entry.last_connected = now
        self._to_young_end(entry)  # as connected() puts it
        return listen

    def mark_seed(self, address: PeerAddress, seed: bool = True) -> None:
        """Whether the peer at ``address`` has every piece or only uploads (not dialled while
        we seed too); the owner says so while the peer is connected, as soon as it knows."""
        entry = self._entries.get(address.normalized())
        if entry is not None:
            entry.seed = seed
            self._wake_at(entry)

    def ban(self, host: Host) -> int:
        """Never dial nor record ``host`` again; its entries not connected are dropped now,
        the connected ones when they disconnect. Returns how many entries were dropped."""
        host = _normal_host(host)
        if len(self._banned) < MAX_BANNED_HOSTS:
            self._banned[host] = None
        doomed = [
            entry.address for entry in self._hosts.get(host, {}).values() if not entry.connected
        ]
        for address in doomed:
            self.remove(address)
        return len(doomed)

    def remove(self, address: PeerAddress) -> bool:
        """Forget ``address`` (a pending dial is forgotten too); returns whether it was known."""
        return self._delete(address.normalized()) is not None

    # -- internals ------------------------------------------------------------------------

    def _ready_time(self, entry: _Entry, seed: bool) -> float:
        """When ``entry`` is a candidate (for a list asked with ``seed``), if nothing else
        happens to it: ``-inf`` now, ``inf`` never."""
        if entry.connected or entry.dial_started is not None or entry.incoming_only:
            return math.inf
        # No banned host is looked for: an entry not connected never has one (ban() drops
        # them, add() and update_port() refuse the host, disconnected() drops its entries).
        if entry.failcount >= self.max_failcount:
            return math.inf
        if seed and entry.seed:
            return math.inf
        last = entry.last_connected
        if last is None:
            return -math.inf
        return last + self.min_reconnect_time * (entry.failcount + 1)

    def _wake_at(self, entry: _Entry) -> None:
        """``entry`` changed: connect_candidates may find it from its ready time on (whatever
        the seed flag: a lower bound is all the cache needs)."""
        self._idle_until = min(self._idle_until, self._ready_time(entry, False))

    def _insert(self, entry: _Entry) -> None:
        """Record ``entry`` under its address, at the young end."""
        self._entries[entry.address] = entry
        self._hosts.setdefault(entry.address.host, {})[entry.address] = entry

    def _to_young_end(self, entry: _Entry) -> None:
        """Move ``entry`` (recorded) to the young end, of the list and of its host: both
        orders are age, and _move_to takes the host's oldest."""
        address = entry.address
        del self._entries[address]
        self._entries[address] = entry
        of_host = self._hosts[address.host]
        del of_host[address]
        of_host[address] = entry

    def _delete(self, address: PeerAddress) -> _Entry | None:
        """Forget the entry of ``address`` (normalised) and its pending dial; returns it."""
        entry = self._entries.pop(address, None)
        if entry is None:
            return None
        self._pending.pop(address, None)
        of_host = self._hosts.get(address.host)
        if of_host is not None:
            of_host.pop(address, None)
            if not of_host:
                del self._hosts[address.host]
        return entry

    def _dialable_on_host(self, host: Host) -> int:
        """Entries of ``host`` the cap counts: all but those of an incoming connection only
        (a host's entries are at most the cap plus its connections)."""
        return sum(1 for e in self._hosts.get(host, {}).values() if not e.incoming_only)

    def _move_to(self, address: PeerAddress) -> _Entry | None:
        """Move the oldest entry of ``address``'s host that may move to ``address`` (a new
        port of a host at the cap); returns it, or ``None`` when none may.

        One connected or being dialled stays (its connection is reported under its
        address), and so do one the user gave and one proven (connected once, or the port
        the peer said it listens on): a source that may invent ports (PEX) must not take a
        port that works away from us. The moved entry keeps its failures and its wait (a
        new port buys no new try); what it proved was the old port's, so it cannot have
        any (only unproven entries move)."""
        for old in self._hosts.get(address.host, {}).values():
            if (
                not old.incoming_only
                and not old.connected
                and old.dial_started is None
                and not old.was_connected
                and not old.listening
                and PeerOrigin.USER not in old.origin
            ):
                break
        else:
            return None
        self._delete(old.address)
        old.address = address
        old.priority = self._priority_of(address)
        old.seed = False  # (the old port's peer's: nothing is known of this one's)
        self._insert(old)  # (the young end: a port just heard of)
        return old

    def _end_dial(self, entry: _Entry) -> None:
        entry.dial_started = None
        self._pending.pop(entry.address, None)

    def _expire(self, now: float) -> None:
        """Dials pending for longer than ``dial_timeout`` count as failed."""
        stale = [
            entry.address
            for entry in self._pending.values()
            if entry.dial_started is not None and now - entry.dial_started >= self.dial_timeout
        ]
        for address in stale:
            self.dial_failed(address, now)

    def _priority_of(self, address: PeerAddress) -> int:
        ours = self._ours.get(address.family)
        return 0 if ours is None else peer_priority(ours, address)

    def _make_room(
        self, newcomer: tuple[int, int, int], address: PeerAddress, *, force: bool
    ) -> _Entry | None:
        """Evict the least useful entry of the oldest ones, if it is less useful than the
        newcomer at ``address``, ranked as ``_uselessness`` ranks entries; returns the
        evicted entry, or ``None`` when no room was made. A proven entry (:attr:`_Entry.proven`)
        that has not given up is no newcomer's to take: as libtorrent evicts no connect
        candidate for an address merely heard of, a flood of invented addresses (PEX) cannot
        push out the peers that worked.

        ``force`` (a connection being recorded): evict whatever the newcomer's rank. A host
        with ``max_per_host`` entries already gives up one of its own (it is the one
        connecting again); otherwise the window's least useful entry goes, an unproven one
        before a proven one, looking past the window when none of it may go (its entries being
        dialled, or the user's); only a list of connected, dialled and user entries has no
        room then. This costs a pass over the list at most once per connection."""
        if force:
            worst = self._own_victim(address.host) or self._forced_victim()
        else:
            window = itertools.islice(self._entries.values(), EVICTION_WINDOW)
            # Only entries less useful than the newcomer are looked at further: in a flood
            # that cannot get in (PEX into a list of tracker peers) that is none of them.
            ranked = ((_uselessness(e), e) for e in window)
            worst = max(
                (
                    (rank, e)
                    for rank, e in ranked
                    if rank > newcomer and e.evictable and not self._protected(e)
                ),
                key=_first,
                default=(None, None),
            )[1]
        if worst is not None:
            self._delete(worst.address)
            self._evicted += 1
            # What it displaced stays lost: the newcomer may hold ``worst`` (given back when
            # its connection ends), one entry deep, never a chain of them.
            worst.displaced = None
        return worst

    def _protected(self, entry: _Entry) -> bool:
        """Whether only a connection may evict ``entry``: proven, and not given up."""
        return entry.proven and entry.failcount < self.max_failcount

    def _eviction_key(self, entry: _Entry) -> tuple[bool, tuple[int, int, int]]:
        """Higher: evicted first by a connection (an unproven entry before a proven one)."""
        return (not self._protected(entry), _uselessness(entry))

    def _own_victim(self, host: Host) -> _Entry | None:
        """The entry of ``host`` a connection of that host evicts, when the host has its
        ``max_per_host`` entries already (oldest first among the least useful)."""
        if self.max_per_host is None or self._dialable_on_host(host) < self.max_per_host:
            return None
        own = (e for e in self._hosts.get(host, {}).values() if e.evictable)
        return max(own, key=self._eviction_key, default=None)

    def _forced_victim(self) -> _Entry | None:
        """The entry a connection evicts: the window's least useful one, unproven before
        proven; the rest's only when none of the window may go (being dialled, the user's).

        A window of proven entries gives up one of them rather than the rest being searched
        for an unproven one: that search cost a pass over the whole list for every inbound
        connection of a long-running torrent (libtorrent's ``erase_peers`` looks at its
        window only, ``force_erase`` too)."""
        entries = self._entries.values()
        window = itertools.islice(entries, EVICTION_WINDOW)
        worst = max((e for e in window if e.evictable), key=self._eviction_key, default=None)
        if worst is None:
            rest = itertools.islice(entries, EVICTION_WINDOW, None)
            worst = max((e for e in rest if e.evictable), key=self._eviction_key, default=None)
        return worst

    def _give_back(self, entry: _Entry) -> None:
        """``entry`` (an incoming connection's) was forgotten: the entry evicted to make
        room for it comes back, if there is room and its address is still free for it."""
        back, entry.displaced = entry.displaced, None
        if (
            back is None
            or len(self._entries) >= self.max_size
            or back.address in self._entries
            or back.address.host in self._banned
            or (
                self.max_per_host is not None
                and self._dialable_on_host(back.address.host) >= self.max_per_host
            )
        ):
            return
        self._restore(back)

    def _restore(self, back: _Entry) -> None:
        """Record ``back`` again, an entry evicted for a connection (its address free)."""
        back.priority = self._priority_of(back.address)  # (our address may have changed)
        self._insert(back)
        self._evicted -= 1  # (statistics: it was not lost after all)
        self._wake_at(back)

    def _trim_host(self, entry: _Entry) -> None:
        """``entry``'s connection ended and it stays: its host's entries over
        ``max_per_host`` go, oldest first, as long as they are neither ``entry``, connected,
        dialled nor the user's. So one host telling a new listen port on every connection
        moves its entry (as libtorrent's ``update_peer_port`` moves the port) rather than
        adding one."""
        host = entry.address.host
        if self.max_per_host is None:
            return
        over = self._dialable_on_host(host) - self.max_per_host
        if over <= 0:
            return
        doomed = [
            e.address
            for e in self._hosts.get(host, {}).values()
            if e is not entry and e.evictable and not e.incoming_only
        ][:over]
        for address in doomed:
            self._delete(address)


def _first(pair: tuple[tuple[int, int, int], _Entry]) -> tuple[int, int, int]:
    """The rank of a ``(rank, entry)`` pair (entries are not comparable)."""
    return pair[0]


def _uselessness(entry: _Entry) -> tuple[int, int, int]:
    """How little ``entry`` is worth keeping, as connect_candidates ranks (higher: less):
    more failures, then a lower source rank, then a lower BEP 40 priority. A newcomer ranks
    as ``(0, -source rank, -priority)``."""
    return (entry.failcount, -_source_rank(entry.origin), -entry.priority)


def _is_link_local(address: PeerAddress) -> bool:
    """Whether ``address`` (normalised) is IPv6 link-local (``fe80::/10``): dialling it needs
    an interface (a scope id) no source gives, so connect() would only fail."""
    host = address.host
    return isinstance(host, IPv6Address) and host.is_link_local


def _normal_host(host: Host) -> Host:
    """``host`` with an IPv4-mapped IPv6 address as the IPv4 one."""
    if not isinstance(host, IPv4Address | IPv6Address):
        raise TypeError(f"a host is an IPv4Address or IPv6Address, not {host!r}")
    if isinstance(host, IPv6Address) and host.ipv4_mapped is not None:
        return host.ipv4_mapped
    return host
