"""The trio shell of the DHT: sockets, tasks and timers around the sans-IO :class:`DHTNode`.

::

    async with open_dht("0.0.0.0:6881", bootstrap=["router.example.net:6881"]) as dht:
        await dht.bootstrap()
        async with dht.get_peers(info_hash) as search:
            async for peer in search:
                ...
        await dht.announce(info_hash, port=6881)
        await dht.put_mutable(private_key, {b"name": b"room"}, salt=b"chat")

Design (DESIGN section 3; trio's and bip_utracker's shells are the models):

- One UDP socket per address family (an IPv6 socket is ``IPV6_V6ONLY``, so IPv4 peers never
  show up as mapped addresses), one reader task per socket, and one driver task that sends
  what the core queued, hands out events and sleeps until the core's next deadline or until
  something new happened. Everything runs in the ``async with`` block's nursery: leaving the
  block cancels the tasks, closes the sockets and ends the calls still waiting.
- Each call starts one core operation and waits for its Finished event. A cancelled call
  cancels its operation. ``get_peers`` returns a :class:`PeerSearch` that yields peers as
  they are found; leaving its ``async with`` block cancels the lookup.
- Peers found by any lookup go to the ``peer_sink`` (source ``"dht"``) when one is given.
- Sharing the port with uTP (BEP 29), as libtorrent does: with ``other_datagrams``, every
  datagram that cannot be KRPC (its first byte is not ``d``; uTP's is ``(type << 4) | 1``)
  goes to that callback instead of the node, and :meth:`DHT.send_datagram` sends the owner's
  datagrams from the node's own socket, so peers see one port. Sends of one socket are
  serialised (:mod:`._shell_datagrams`).
- A refused operation (the core's every lookup slot taken and ``max_queued`` more waiting;
  nothing was asked) raises :class:`DHTBusyError` from the calls that return what was found
  (``ping``, ``bootstrap``, ``join_if_needed``, ``find_node``, ``get`` and the ``get_*`` and
  ``put_mutable`` built on it, ``sample_infohashes``, a ``get_peers`` search iterated or
  waited for), so that it never reads as "nothing found": try again shortly. ``announce``
  and ``put`` return their Finished event, whose ``refused`` says it.
- Socket errors: binding failures and unresolvable names raise :class:`DHTSocketError` (a
  :class:`~bip_dht.DHTError`, the ``OSError`` as its cause); a datagram the system refuses to
  send is counted (``send_errors``) and treated by the core as lost; an ICMP error reported
  by a ``recvfrom`` never stops the reader.
- Dead nodes (:mod:`._udp_errors`), as libtorrent learns of them: on Linux the sockets get
  ``IP_RECVERR``/``IPV6_RECVERR`` and the reader drains their error queues (a bounded batch
  per wake-up) before reading datagrams, so a query to a port nobody listens on fails when
  the ICMP port unreachable comes back (:meth:`DHTNode.unreachable`, counted
  ``unreachable``), not at its timeout. Reports about datagrams that are not KRPC (uTP
  sharing the socket) are ignored rather than handed to ``other_datagrams``, whose callback
  takes datagrams, not errors; reports about a destination with no query in flight change
  nothing. Elsewhere the reader is trio's ``recvfrom`` loop.
- No address is ever a default: the node contacts only what the caller names (``bootstrap``)
  and what the nodes it hears from tell it. Host names are resolved with the system resolver
  (through the proxy under its remote DNS, below).
- Through a SOCKS5 proxy (``proxy``), as libtorrent sends its DHT whenever one is set: every
  socket is a :class:`~bip_handshake.Socks5UdpSocket` bound where a direct one would be, and
  every KRPC datagram goes through the proxy's UDP relay, none directly. A datagram sent
  while no association is up is lost (counted in ``send_errors``; the query times out) and
  the outage is logged once (:mod:`._shell_proxy`). No error queue is read (ICMP errors come
  from the relay's path, not the node's). The bootstrap waits for the associations first (at
  most ``PROXY_WAIT`` seconds); under the proxy's remote DNS (``socks5h``) a bootstrap name
  is pinged through the relay by name and the address that answers is what the node
  bootstraps from. A name nobody answered at is kept (:class:`._shell_proxy.PendingNames`)
  and asked again while a family's routing table has no live node (the core's own test,
  ``DHTNode.needs_bootstrap``: bad nodes stay in their buckets): at once when a relay comes
  back after an outage that lost datagrams (which also bootstraps again, from the remembered
  addresses, once the core's own bootstrap under way, if any, has ended) and every
  ``bootstrap_retry_interval``; one asking at a time, shared by the callers that come while
  it runs, and a name is not asked again within ``query_timeout`` of going unanswered. The
  bootstrap entries are checked before the block begins: only their resolving is left to the
  background (under ``socks5://`` a name that does not resolve is logged and left out, the
  others are joined through). The sockets are not
  shared with another protocol (``other_datagrams`` is refused): incoming uTP cannot reach
  a relay, which only returns answers to us.
- Randomness: a :class:`random.SystemRandom` unless the caller gives an ``rng`` (tests), so
  transaction ids and token secrets cannot be predicted off-path.
"""

from __future__ import annotations

import errno
import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from ipaddress import ip_address
from types import TracebackType
from typing import Any, NoReturn, TypeAlias

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_bencode import BencodeError, Value, decode, encode
from bip_handshake import (
    CompactError,
    Family,
    FragmentControl,
    IPFilter,
    ListenError,
    NodeInfo,
    PeerAddress,
    PeerSink,
    ProxyConfig,
    Socks5UdpSocket,
    SocksUnavailableError,
    open_socks5_udp_socket,
)
from bip_metainfo import InfoHash

from ._errors import DHTError, ItemError, LocalProtocolError
from ._items import ImmutableItem, MutableItem, mutable_target
from ._krpc import Ping
from ._lookup import LookupResult
from ._mutable_torrent import MutableTorrent, mutable_torrent_value
from ._node import DHTNode
from ._node_config import DHTConfig
from ._node_events import (
    AnnounceFinished,
    DHTEvent,
    LookupFinished,
    NodeIdChanged,
    PeersFound,
    PingFinished,
    PutFinished,
    SamplesFound,
)
from ._node_id import NodeId
from ._shell_datagrams import (
    MAX_PAYLOAD,
    DatagramSender,
    ForeignDatagrams,
    OtherDatagrams,
    is_krpc_candidate,
)
from ._shell_periodic import DEFAULT_FIND_INTERVAL, join_if_needed, keep_finding
from ._shell_proxy import PROBE_ATTEMPTS, PROXY_WAIT, NameProbes, PendingNames, RelayOutages
from ._shell_sockets import (
    MAX_DATAGRAM,
    SEND_TRANSIENT_ERRORS,
    TRANSIENT_ERRORS,
    AddressLike,
    DHTSocketError,
    bind_list,
    host_name,
    open_socket,
    resolve,
)
from ._stats import DHTStatistics
from ._udp_errors import (
    IS_LINUX,
    PENDING_ERRNOS,
    ErrorQueue,
)

__all__ = ["DHT", "DHTBusyError", "DHTSocketError", "PeerSearch", "open_dht"]

_Start: TypeAlias = Callable[[DHTNode, float], int]

USE_ERROR_QUEUES = IS_LINUX
"""Whether the readers turn the error queue on (Linux); tests turn it off to read as
elsewhere."""

# Datagrams read per wake-up of a Linux reader before it yields (trio's recvfrom yields after
# every one): the driver and the other tasks run at least this often under a flood.
_READ_BATCH = 64

# Seconds between two refusals of the core (DHTNode: every lookup slot taken and max_queued
# operations waiting) past which the second starts a new burst: a WARNING per burst, not per
# refusal (a session resuming hundreds of torrents has hundreds refused at once).
_REFUSALS_APART = 60.0

# The Finished events, which say whether the core refused their operation.
_FINISHED = (PingFinished, LookupFinished, AnnounceFinished, PutFinished)


class DHTBusyError(DHTError):
    """The node refused to start the operation: every lookup slot was taken and
    ``max_queued`` more operations waited (:class:`~bip_dht.DHTConfig`), or, for a ping, as
    many pings waited for transaction slots. Nothing was asked,
    so nothing was learnt: unlike a lookup that found nothing, it is worth trying again
    shortly (the ``refused`` of the operation's Finished event).

    >>> issubclass(DHTBusyError, DHTError)
    True
    """


_BUSY = (
    "the DHT node is busy (its lookup slots and queue are full, or too many pings wait): the"
    " operation was refused; try again shortly"
)

# The DHT node's logger, shared with the sans-IO core (which logs only DEBUG detail): the
# shell logs what a user of one running node wants to see, a handful of records per hour.
_log = logging.getLogger("bip_dht.node")


def _target(value: object, name: str) -> bytes:
    if isinstance(value, NodeId):
        return value.value
    if isinstance(value, bytes) and len(value) == 20:
        return value
    raise LocalProtocolError(f"{name} is a NodeId or 20 bytes, got {value!r}")


def _private_key(value: object) -> Ed25519PrivateKey:
    if isinstance(value, Ed25519PrivateKey):
        return value
    if isinstance(value, bytes) and len(value) == 32:
        return Ed25519PrivateKey.from_private_bytes(value)
    raise LocalProtocolError("a private key is an Ed25519PrivateKey or its 32-byte seed")


def _bencoded(value: Value) -> bytes:
    try:
        return encode(value)
    except (BencodeError, TypeError, ValueError) as error:
        raise LocalProtocolError(f"the value is not bencodable: {error}") from None


# -- waiting for operations ------------------------------------------------------------------


class _Waiter:
    """What one call waits on: the Finished event, and progress for searches."""

    __slots__ = ("changed", "closed", "finished", "peers", "samples")

    def __init__(self) -> None:
        self.finished: DHTEvent | None = None
        self.closed = False
        self.peers: deque[PeerAddress] = deque()
        self.samples: list[SamplesFound] = []
        self.changed = trio.Event()

    def wake(self) -> None:
        self.changed.set()

    async def wait_changed(self) -> None:
        """Wait for the next :meth:`wake` (one that came since the last wait counts)."""
        await self.changed.wait()
        self.changed = trio.Event()


class _Asking:
    """One asking of the pending bootstrap names under way: who comes while it runs waits for
    its answers instead of pinging the same names again."""

    __slots__ = ("answers", "done")

    def __init__(self) -> None:
        self.answers: list[PeerAddress] = []
        self.done = trio.Event()


class PeerSearch:
    """A running get_peers lookup: an async iterator of the peers found, as they are found.

    Use it as ``async for peer in dht.get_peers(h)`` (the lookup starts at the first
    iteration and runs to its end), or in ``async with dht.get_peers(h) as search:`` (leaving
    the block cancels the lookup). :meth:`result` gives the lookup's result once it ended;
    :attr:`finished` the whole event (with the BEP 33 estimates of a scrape).

    A lookup the node refused (every lookup slot taken, ``max_queued`` more waiting) found
    nothing because it asked nobody: iterating and :meth:`wait` raise :class:`DHTBusyError`
    then, rather than end as a search that found no peer (its :attr:`finished` says
    ``refused`` too).
    """

    def __init__(self, dht: DHT, info_hash: bytes, *, scrape: bool, noseed: bool) -> None:
        self._dht = dht
        self._info_hash = info_hash
        self._scrape = scrape
        self._noseed = noseed
        self._operation: int | None = None
        self._waiter = _Waiter()

    def _start(self) -> None:
        if self._operation is None:
            self._operation = self._dht._begin(
                lambda node, now: node.get_peers(
                    self._info_hash, now, scrape=self._scrape, noseed=self._noseed
                ),
                self._waiter,
            )

    async def __aenter__(self) -> PeerSearch:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()

    def __aiter__(self) -> PeerSearch:
        self._start()
        return self

    async def __anext__(self) -> PeerAddress:
        waiter = self._waiter
        while True:
            if waiter.peers:
                return waiter.peers.popleft()
            if waiter.finished is not None:
                self._raise_if_refused()
                raise StopAsyncIteration
            if waiter.closed:
                raise DHTError("the DHT closed before the search ended")
            await waiter.wait_changed()

    async def wait(self) -> LookupResult:
        """Wait for the lookup to end (peers not yet iterated stay available); its result.

        Raises:
            DHTBusyError: the node refused the lookup (every lookup slot taken).
            DHTError: the DHT closed before the lookup ended.
        """
        self._start()
        while self._waiter.finished is None:
            if self._waiter.closed:
                raise DHTError("the DHT closed before the search ended")
            await self._waiter.wait_changed()
        self._raise_if_refused()
        return self.result()

    def _raise_if_refused(self) -> None:
        finished = self.finished
        if finished is not None and finished.refused:
            raise DHTBusyError(_BUSY)

    def cancel(self) -> None:
        """Stop the lookup (no-op once it ended)."""
        if self._operation is not None and self._waiter.finished is None:
            self._dht._cancel(self._operation)

    @property
    def finished(self) -> LookupFinished | None:
        """The lookup's Finished event, once it ended."""
        event = self._waiter.finished
        return event if isinstance(event, LookupFinished) else None

    def result(self) -> LookupResult:
        """The lookup's result.

        Raises:
            LocalProtocolError: the lookup has not ended yet.
        """
        event = self.finished
        if event is None:
            raise LocalProtocolError("the search has not finished")
        return event.result


# -- the DHT ---------------------------------------------------------------------------------


class DHT:
    """A running DHT node; made by :func:`open_dht` (see the module docstring)."""

    def __init__(
        self,
        node: DHTNode,
        sockets: dict[Family, trio.socket.SocketType],
        *,
        peer_sink: PeerSink | None,
        rng: random.Random,
        other_datagrams: OtherDatagrams | None = None,
        error_queues: dict[Family, ErrorQueue] | None = None,
        relayed: dict[Family, Socks5UdpSocket] | None = None,
    ) -> None:
        """``sockets``: the direct sockets; ``relayed``: the sockets through a proxy (then
        ``sockets`` is empty: a node is proxied whole or not at all)."""
        self._node = node
        self._rng = rng
        self._sockets = sockets
        self._relayed = {} if relayed is None else relayed
        # Datagrams may be fragmented (uTP's over this socket too), but for uTP's path MTU
        # probes: those go with "don't fragment" (send_datagram's dont_fragment).
        self._senders = {
            family: DatagramSender(sock, FragmentControl.open(sock, family))
            for family, sock in sockets.items()
        }
        # Bound once and for good: read now, so the addresses stay readable after closing.
        bound = {family: _bound(sock) for family, sock in sockets.items()}
        bound.update((family, udp.local_address) for family, udp in self._relayed.items())
        self._addresses_bound = tuple(bound[family] for family in sorted(bound))
        udp_sockets = list(self._relayed.values())
        self._proxy = udp_sockets[0].proxy if udp_sockets else None
        self._outages = None if self._proxy is None else RelayOutages(self._proxy)
        # Bootstrap names sent to the proxy (remote DNS): one probe per name and family.
        names = node.config.max_bootstrap_addresses
        self._probes = NameProbes(rng, capacity=max(1, len(self._relayed)) * names)
        # Those no node answered at yet, asked again later (_keep_joining, bootstrap()); one
        # asking at once, shared by whoever comes while it runs.
        self._pending_names = PendingNames(capacity=names)
        self._asking: _Asking | None = None
        # The core's bootstraps (DHTNode.bootstrap_ops) a rejoin waits for, rather than
        # start another beside them, and an event set (and replaced) when one of them ended:
        # _dispatch checks, as the core's own have no event.
        self._watched_bootstraps: set[int] = set()
        self._bootstrap_ended = trio.Event()
        # Callers' bootstrap() calls not started in the core yet (waiting for the proxy,
        # resolving or asking names): keep_finding's join and the proxied rejoin start none
        # beside them either.
        self._bootstraps_starting = 0
        # Set once open_dht's first bootstrap has begun (through a proxy it waits for the
        # associations in the background): bootstrap() reuses its addresses.
        self._joining = trio.Event()
        self._foreign = None if other_datagrams is None else ForeignDatagrams(other_datagrams)
        # Linux: the sockets' error queues (the readers use them; open_dht closes them)
        self._error_queues = {} if error_queues is None else error_queues
        self._sink = peer_sink
        self._waiters: dict[int, _Waiter] = {}
        self._kick = trio.Event()
        self._send_errors = 0
        self._bootstrap_failing = False  # the last bootstrap found nobody: warned already
        self._last_refusal: float | None = None  # when the core last refused an operation
        self._closed = False
        self._cancelled: set[int] = set()  # operations we cancelled: their end is no news

    # -- reading ------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        """Our node id now (BEP 42 may change it once our external address is known)."""
        return self._node.node_id

    @property
    def addresses(self) -> tuple[PeerAddress, ...]:
        """The addresses our sockets are bound to (IPv4 first): the ports peers see, for the
        node and for whatever shares its sockets (:meth:`send_datagram`). Through a proxy
        they are our end of the relay only: peers see the relay's address instead."""
        return self._addresses_bound

    @property
    def proxy(self) -> ProxyConfig | None:
        """The SOCKS5 proxy whose UDP relay carries every datagram of the node, or None:
        the node talks to other nodes directly."""
        return self._proxy

    @property
    def associated(self) -> bool:
        """Whether datagrams can go out now: without a proxy always; through one, while
        every socket's UDP association is up."""
        return all(udp.associated for udp in self._relayed.values())

    async def wait_associated(self) -> None:
        """Return once every socket's UDP association through the proxy is up (at once
        without a proxy). Unbounded: callers bound it (``trio.move_on_after``), a proxy may
        refuse for ever.

        Raises:
            DHTError: the DHT closed while waiting.
        """
        try:
            # Each round waits for changes of association: it goes on only when one that
            # was up went down meanwhile.
            while not self.associated:
                for udp in self._relayed.values():
                    await udp.wait_associated()
        except trio.ClosedResourceError:
            raise DHTError("the DHT closed before its proxy relayed") from None

    @property
    def node(self) -> DHTNode:
        """The sans-IO core (to read; start operations through this object)."""
        return self._node

    def statistics(self) -> DHTStatistics:
        """A snapshot of the node's counters and sizes."""
        foreign = self._foreign
        queues = self._error_queues.values()
        return replace(
            self._node.statistics(),
            send_errors=self._send_errors,
            other_datagrams=0 if foreign is None else foreign.received,
            other_datagram_errors=0 if foreign is None else foreign.failures,
            icmp_errors=sum(queue.read for queue in queues),
            icmp_malformed=sum(queue.malformed for queue in queues),
        )

    @property
    def ip_filter(self) -> IPFilter | None:
        """The IP filter in force for DHT nodes (None: none)."""
        return self._node.ip_filter

    def set_ip_filter(self, ip_filter: IPFilter | None) -> int:
        """Replace the IP filter for DHT nodes (None: none): blocked nodes leave the routing
        table at once (returns how many left), are never queried again and their datagrams
        are dropped (see :meth:`DHTNode.set_ip_filter <bip_dht.DHTNode.set_ip_filter>`).

        Raises:
            LocalProtocolError: *ip_filter* is neither an IPFilter nor None.
        """
        removed = self._node.set_ip_filter(ip_filter, trio.current_time())
        self._kick.set()
        return removed

    def save_state(self) -> bytes:
        """Bytes for ``open_dht(state=...)``: id, known nodes, bootstrap addresses."""
        return self._node.save_state(trio.current_time())

    # -- operations ---------------------------------------------------------------------

    async def ping(self, address: AddressLike) -> NodeInfo | None:
        """Ping *address*: the node that answered, or None.

        Through a proxy with remote DNS, a host name is pinged through the relay by name
        first (its answer says the address the node then pings).

        Raises:
            DHTSocketError: the name did not resolve (through a proxy with remote DNS: no
                node answered at that name), or names no address of a family we run.
            DHTBusyError: the node refused the ping (too many wait already).
        """
        found = await self._addresses([address])
        if not found:
            raise DHTSocketError(f"{address!r} has no address of a family we run")
        target = found[0]
        event = await self._run(lambda node, now: node.ping(target, now), refused_raises=True)
        assert isinstance(event, PingFinished)
        return event.node

    def add_node(self, address: PeerAddress) -> None:
        """Ping *address* in the background; it joins the routing table if it answers.

        Such addresses often come from peers (BEP 5's PORT message), so one we cannot use (a
        family we do not run, port 0) is ignored rather than refused.
        """
        if not isinstance(address, PeerAddress):
            raise LocalProtocolError(f"an address is a PeerAddress, got {address!r}")
        normal = address.normalized()
        if normal.family not in self._node.families or not normal.is_connectable:
            return
        self._node.add_node(normal, trio.current_time())
        self._kick.set()

    async def bootstrap(self, addresses: Iterable[AddressLike] = ()) -> int:
        """Join through *addresses* (or the remembered ones) and the nodes already known;
        wait for the lookup of our own id to end; return the routing table's size.

        Through a proxy, first waits for open_dht's own bootstrap to begin (it remembers the
        addresses given there) and for the UDP associations (at most ``PROXY_WAIT`` seconds
        each: then the queries are lost and the bootstrap finds nobody). Under its remote DNS
        the remembered ones include the bootstrap names no node answered at yet: while a
        family's routing table has no live node (:meth:`DHTNode.needs_bootstrap`) they are
        pinged again, but for those asked within the last ``query_timeout`` (a name still
        unanswered is kept for the next time). Calls that come while such an asking runs wait
        for its answers (a caller's bootstrap beside keep_finding's, which its rounds share):
        no name is pinged twice at once.

        Raises:
            DHTBusyError: the node refused the bootstrap (every lookup slot taken).
        """
        await self._bootstrap(addresses)
        return self._node.statistics().table_size

    async def join_if_needed(self, *, timeout: float) -> bool:
        """Join the DHT if nobody is left to look up with; whether somebody is then.

        The rule of :meth:`keep_finding`'s rounds, for a caller's own periodic lookups (a
        BEP 46 link followed): it joins only when no family's routing table holds a node
        that answered us in this run and that we could still query (not bad). A table's
        size does not say it: after an outage its nodes are all bad but stay in their
        buckets, so a table that is not empty may have nobody to ask; and the nodes restored
        from a saved state (``open_dht(state=...)``) have answered nobody yet: they may all
        be gone, and a lookup started from them alone would find nothing, so until one
        answers it waits for open_dht's bootstrap (which asks them and the bootstrap
        addresses) rather than taking them at their word. A family with none beside one
        that works is left to the core, which bootstraps again by itself
        (:meth:`DHTNode.needs_bootstrap`). It never starts a bootstrap
        beside another of the node under way or about to start (the core's own, a caller's
        :meth:`bootstrap` still asking names, another join): it waits for those to end and
        takes their outcome, and the callers that need a join at the same time share one.

        Waiting for the others ends within *timeout* seconds; a bootstrap of its own, once
        started, is bounded by the node's query timeouts and limits instead (as a
        :meth:`bootstrap` is). It does not retry: a caller that got False tries again later
        (:meth:`keep_finding` waits 10 s, then 20 s... up to its interval).

        Returns:
            True if a routing table holds a node that answered and that we could still
            query (at once when one did already), False if the join found nobody (or the
            wait for another's bootstrap ran out first).

        Raises:
            LocalProtocolError: *timeout* is not a finite number of seconds >= 0.
            DHTBusyError: the node refused the join's bootstrap (every lookup slot taken;
                for every caller that shared that join): nothing was asked, so try again
                shortly rather than at the pace of a join that found nobody.
            DHTError: the DHT is closed, or closed meanwhile.
        """
        return await join_if_needed(self, timeout=timeout)

    async def _bootstrap(
        self, addresses: Iterable[AddressLike] = (), *, unless_running: bool = False
    ) -> bool:
        """:meth:`bootstrap`'s work: start a bootstrap and wait for its end; True then.

        With *unless_running* (:meth:`join_if_needed`'s join) start none, and return False,
        while another is under way or about to be (:meth:`_bootstrap_under_way`). Decided on
        entry and again at the moment of starting, with no checkpoint between the test and
        the start: one that began while this one waited is never run beside. Names that
        answered meanwhile are not lost then: the core remembered their addresses as they
        came (:meth:`_ask_pending_names`), for its own re-bootstraps and the joins after.

        Raises:
            DHTBusyError: the node refused the bootstrap (every lookup slot taken).
        """
        if unless_running and self._bootstrap_under_way():
            return False
        counted = 0 if unless_running else 1  # a caller's: who starts none beside waits
        self._bootstraps_starting += counted
        try:
            await self._joining.wait()  # set before open_dht's block begins, without a proxy
            with trio.move_on_after(PROXY_WAIT):
                await self.wait_associated()  # at once when every socket is (or none relayed)
            resolved = await self._addresses(addresses, remember=True)
            if not resolved:
                # The names are worth their pings only while a family has no node to query.
                asking = self._pending_names and self._node.needs_bootstrap(trio.current_time())
                answered = await self._ask_pending_names() if asking else []
                # The core remembered the answers already (_ask_pending_names): each once,
                # the answers first (fresh), then the others in the core's order.
                remembered = self._node.bootstrap_addresses
                resolved = list(dict.fromkeys(a.normalized() for a in (*answered, *remembered)))
        finally:
            self._bootstraps_starting -= counted
            if counted:  # about to start or given up: who waits for it to start looks again
                self._wake_bootstrap_waiters()
        # No checkpoint from here to the core's start (_run begins at once).
        if unless_running and self._bootstrap_under_way():
            return False
        # Refused, it raises for a join too: nothing was asked, which is not "nobody
        # answered" (join_if_needed's callers retry a refusal soon, a join that found
        # nobody later).
        await self._run(lambda node, now: node.bootstrap(resolved, now), refused_raises=True)
        return True

    async def find_node(self, target: NodeId | bytes) -> list[NodeInfo]:
        """The nodes closest to *target* that answered (up to ``k`` per family).

        Raises:
            DHTBusyError: the node refused the lookup (every lookup slot taken).
        """
        raw = _target(target, "target")
        event = await self._run(lambda node, now: node.find_node(raw, now), refused_raises=True)
        assert isinstance(event, LookupFinished)
        return [entry.node for entry in event.result.nodes]

    def get_peers(
        self, info_hash: bytes | InfoHash, *, scrape: bool = False, noseed: bool = False
    ) -> PeerSearch:
        """Search peers of *info_hash*; see :class:`PeerSearch` (iterating it or its
        :meth:`~PeerSearch.wait` raise :class:`DHTBusyError` when the node refused the
        lookup)."""
        raw = _swarm_id(info_hash)
        return PeerSearch(self, raw, scrape=scrape, noseed=noseed)

    async def announce(
        self, info_hash: bytes | InfoHash, port: int | None = None, *, seed: bool = False
    ) -> AnnounceFinished:
        """Announce that we have *info_hash* on *port* (None: the DHT socket's port, BEP 5's
        ``implied_port``); peers found on the way go to the peer sink."""
        raw = _swarm_id(info_hash)
        event = await self._run(lambda node, now: node.announce(raw, now, port=port, seed=seed))
        assert isinstance(event, AnnounceFinished)
        return event

    async def keep_finding(
        self,
        info_hash: bytes | InfoHash,
        *,
        interval: float = DEFAULT_FIND_INTERVAL,
        announce: bool = False,
        port: int | None = None,
        seed: bool = False,
        sink: PeerSink | None = None,
    ) -> NoReturn:
        """Look *info_hash* up now and every *interval* seconds, until cancelled.

        Each round joins the DHT first when it has nobody to look up with
        (:meth:`join_if_needed`: no family's routing table holds a node that answered in
        this run and that we could still query, as after an outage that made every known
        node bad, or with only the nodes of a saved state), through the bootstrap
        addresses and the nodes known; a family with none beside one that works is left to
        the core, which bootstraps again by itself at most every
        ``bootstrap_retry_interval`` (:meth:`DHTNode.needs_bootstrap`). It never
        bootstraps beside a bootstrap of the node under way or about to start (the core's
        own, a caller's still asking names), whose end it waits for instead (at most
        *interval*), and joins once for all the rounds that need it together. While no node
        answers it joins again after 10 s, 20 s... up to *interval*. Then it runs one
        lookup, or with *announce* one announce (BEP 5: the lookup and then
        ``announce_peer`` to the closest nodes, so a single walk per round). The peers found
        go to the DHT's peer sink as they arrive, and to *sink* too if given (source
        ``"dht"``). A round ends when its lookup does (lookups are bounded by the node's
        query timeouts and limits); cancelling cancels the round's operation. The rounds of
        every call on this DHT start at least 0.1 s apart, and a round the node refused
        (every lookup slot taken, ``max_queued`` more waiting: ``refused`` on its Finished
        event), or whose join it refused, is tried again after about 5 s, doubling up to
        120 s (or *interval*).

        Args:
            info_hash: the swarm (for an :class:`~bip_metainfo.InfoHash`, its v1 hash, or the
                truncated v2 hash of a v2-only torrent; run a second one with
                ``InfoHash(v2=...)`` for a hybrid's v2 swarm).
            interval: seconds between the end of a round and the next.
            announce: announce us as a peer too (a torrent we accept peers for).
            port: the TCP port to announce; None announces the DHT socket's port
                (BEP 5's ``implied_port``, right behind a NAT that maps both alike).
            seed: announce as a seed (BEP 33).
            sink: also give the peers found here.

        Raises:
            LocalProtocolError: a bad argument, or nowhere for the peers to go (no sink here
                nor on the DHT, and no announce).
            DHTError: the DHT closed while it ran.
        """
        await keep_finding(
            self,
            info_hash,
            interval=interval,
            announce=announce,
            port=port,
            seed=seed,
            sink=sink,
        )

    async def get(
        self, target: bytes, *, seq: int | None = None, salt: bytes = b""
    ) -> ImmutableItem | MutableItem | None:
        """BEP 44: the best verified item stored under *target* (mutable: the highest
        ``seq``; *salt* is needed to check a salted item's signature), or None.

        Raises:
            DHTBusyError: the node refused the lookup (every lookup slot taken); so do the
                ``get_*`` calls and :meth:`put_mutable` with no *seq*, built on this one.
        """
        raw = _target(target, "target")
        event = await self._run(
            lambda node, now: node.get(raw, now, seq=seq, salt=salt), refused_raises=True
        )
        assert isinstance(event, LookupFinished)
        return event.result.item

    async def get_immutable(self, target: bytes) -> Value | None:
        """BEP 44: the (decoded) value of the immutable item *target*, or None.

        Raises:
            DHTBusyError: the node refused the lookup (every lookup slot taken).
        """
        item = await self.get(target)
        if not isinstance(item, ImmutableItem):
            return None
        return decode(item.value)

    async def put_immutable(self, value: Value) -> PutFinished:
        """BEP 44: store *value* (any bencodable value) as an immutable item; its target,
        SHA-1 of the bencoded value, is the result's ``target``."""
        try:
            item = ImmutableItem(_bencoded(value))
        except ItemError as error:
            raise LocalProtocolError(str(error)) from None
        return await self.put(item)

    async def get_mutable(self, public_key: bytes, salt: bytes = b"") -> MutableItem | None:
        """BEP 44: the newest mutable item of *public_key* (and *salt*), or None.

        Raises:
            LocalProtocolError: *public_key* is not 32 bytes.
            DHTBusyError: the node refused the lookup (every lookup slot taken).
        """
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise LocalProtocolError("a public key is 32 bytes")
        item = await self.get(mutable_target(public_key, salt), salt=salt)
        return item if isinstance(item, MutableItem) else None

    async def put_mutable(
        self,
        private_key: Ed25519PrivateKey | bytes,
        value: Value,
        *,
        salt: bytes = b"",
        seq: int | None = None,
    ) -> PutFinished:
        """BEP 44: sign *value* under *private_key* (and *salt*) and store it.

        With *seq* None, the newest item found is fetched first and the new one gets its
        ``seq + 1`` (0 when there is none). The put carries no compare-and-swap, as
        libtorrent's ``put_data`` sends none: a storer still holding an older version must
        take the update, and each storer's own rule (302, sequence too low) keeps an older
        item from replacing a newer one. Refusals show in the result's ``errors``; for a
        conditional write, sign the item yourself and call :meth:`put` with ``cas``.

        Raises:
            DHTBusyError: with *seq* None, the node refused the lookup of the newest item
                (every lookup slot taken): no seq to go on, so nothing is put.
        """
        key = _private_key(private_key)
        data = _bencoded(value)
        if seq is None:
            public = key.public_key().public_bytes_raw()
            current = await self.get_mutable(public, salt)
            seq = 0 if current is None else current.seq + 1
        try:
            item = MutableItem.create(key, data, seq, salt)
        except ItemError as error:
            raise LocalProtocolError(str(error)) from None
        return await self.put(item)

    async def get_mutable_torrent(
        self, public_key: bytes, salt: bytes = b""
    ) -> MutableTorrent | None:
        """BEP 46: the newest version of the torrent *public_key* publishes under *salt*
        (what a ``magnet:?xs=urn:btpk:`` link names), or None when no node has it.

        Raises:
            ItemError: the newest item found is not a BEP 46 torrent item.
            LocalProtocolError: *public_key* is not 32 bytes.
            DHTBusyError: the node refused the lookup (every lookup slot taken).
        """
        item = await self.get_mutable(public_key, salt)
        return None if item is None else MutableTorrent.from_item(item)

    async def put_mutable_torrent(
        self,
        private_key: Ed25519PrivateKey | bytes,
        info_hash: InfoHash,
        *,
        salt: bytes = b"",
        seq: int | None = None,
    ) -> PutFinished:
        """BEP 46: publish *info_hash* as the current version of the torrent that
        *private_key* (and *salt*) names; *seq* as :meth:`put_mutable` (None: one above the
        stored version).

        Raises:
            DHTBusyError: with *seq* None, the node refused the lookup of the stored version
                (every lookup slot taken): nothing is put.
        """
        return await self.put_mutable(
            private_key, mutable_torrent_value(info_hash), salt=salt, seq=seq
        )

    async def put(
        self, item: ImmutableItem | MutableItem, *, cas: int | None = None
    ) -> PutFinished:
        """BEP 44: store a ready-made item (see :meth:`put_immutable`, :meth:`put_mutable`).

        *cas* (mutable items only) makes the put conditional: a storer whose item has
        another ``seq`` refuses it with 301 and keeps its own.
        """
        event = await self._run(lambda node, now: node.put(item, now, cas=cas))
        assert isinstance(event, PutFinished)
        return event

    async def sample_infohashes(self, target: NodeId | bytes | None = None) -> list[SamplesFound]:
        """BEP 51: walk towards *target* (random when None) asking each node for a sample of
        the info-hashes it stores; every answer that carried samples.

        Raises:
            DHTBusyError: the node refused the walk (every lookup slot taken).
        """
        raw = _target(target, "target") if target is not None else self._rng.randbytes(20)
        waiter = _Waiter()
        await self._run(
            lambda node, now: node.sample_infohashes(raw, now), waiter, refused_raises=True
        )
        return waiter.samples

    # -- sharing the sockets ------------------------------------------------------------

    async def send_datagram(
        self,
        data: bytes | bytearray | memoryview,
        address: PeerAddress,
        *,
        dont_fragment: bool = False,
    ) -> None:
        """Send *data* to *address* from the node's socket of its family, so the peer sees
        our DHT port (how uTP shares it; the answers come back through ``open_dht``'s
        ``other_datagrams``).

        Safe to call from any number of tasks while the node sends its own: the sends of one
        socket take turns. ``dont_fragment``: *data* is a path MTU probe (uTP's), sent with
        "don't fragment" where the system lets us choose (Linux); the node's datagrams and
        every other one may be fragmented. A probe too big for the path the system knows is
        refused with ``EMSGSIZE``: a :class:`DHTSocketError` whose cause is that ``OSError``.
        A datagram the system loses on the way (an ICMP error reported on the socket, a full
        queue: ``SEND_TRANSIENT_ERRORS``) is dropped and counted in ``send_errors``, as the
        node's own are: UDP promises no delivery and the protocol above retransmits.

        Raises:
            DHTSocketError: the node runs no socket of *address*'s family, or the system
                refused the send for another reason (its ``OSError`` as the cause).
            LocalProtocolError: *data* is not bytes or is over the family's UDP payload
                limit, or *address* is not a connectable :class:`~bip_handshake.PeerAddress`.
            DHTError: the DHT is closed (or closed while the send waited).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"a datagram is bytes, got {type(data).__name__}")
        if not isinstance(address, PeerAddress):
            raise LocalProtocolError(f"an address is a PeerAddress, got {address!r}")
        target = address.normalized()
        if not target.is_connectable:
            raise LocalProtocolError(f"cannot send a datagram to {address}")
        if self._closed:
            raise DHTError("the DHT is closed")
        if self._proxy is not None:
            raise DHTSocketError(
                f"the DHT's sockets go through the proxy {self._proxy.url}: they are not shared"
            )
        sender = self._senders.get(target.family)
        if sender is None:
            raise DHTSocketError(f"the DHT runs no IPv{target.family} socket to reach {address}")
        if len(data) > MAX_PAYLOAD[target.family]:
            raise LocalProtocolError(
                f"a datagram over IPv{target.family} is at most {MAX_PAYLOAD[target.family]} "
                f"bytes, got {len(data)}"
            )
        try:
            await self._send(sender, data, target, dont_fragment=dont_fragment)
        except trio.ClosedResourceError:
            # The block ended while this send waited for room (a task outside the DHT's).
            raise DHTError("the DHT closed while sending") from None
        except OSError as error:
            # A probe the path is known to be too small for is no loss: its sender must hear
            # of it, to send smaller (uTP lowers its path MTU at once).
            too_big = dont_fragment and error.errno == errno.EMSGSIZE
            # Refused even once more (_send tried again after a pending ICMP error): this
            # send's own error, classed as any other.
            if too_big or error.errno not in SEND_TRANSIENT_ERRORS:
                raise DHTSocketError(f"cannot send a datagram to {target}: {error}") from error
            self._send_errors += 1
            _log.debug("a datagram to %s was lost on sending: %s", target, error)

    # -- plumbing -----------------------------------------------------------------------

    async def _addresses(
        self,
        values: Iterable[AddressLike],
        *,
        remember: bool = False,
        unresolved: list[AddressLike] | None = None,
    ) -> list[PeerAddress]:
        """The addresses of *values* of a family we run, in order and each once: literals as
        they are, names from the system's resolver, or under a proxy's remote DNS from the
        nodes that answer a ping sent to the name through the relay (a name nobody answers
        at gives nothing; at most ``max_bootstrap_addresses`` names are probed). With
        *remember* (bootstrap entries), such a name is kept to be asked again (with the
        time it was asked), and one that answered is no longer.

        Raises:
            DHTSocketError: a name the system's resolver could not resolve, unless
                *unresolved* is given: then such an entry is added to it and logged, and the
                others are used (a join in the background keeps what it can).
        """
        remote = self._proxy is not None and self._proxy.remote_dns
        found: list[list[PeerAddress]] = []
        names: list[tuple[list[PeerAddress], str, int]] = []
        for value in values:
            name = host_name(value, None) if remote else None
            slot: list[PeerAddress] = []
            found.append(slot)
            if name is None:
                try:
                    slot.extend(await resolve(value, None))
                except DHTSocketError as error:
                    if unresolved is None:
                        raise
                    unresolved.append(value)
                    _log.warning("DHT bootstrap: %s (the other entries are used)", error)
            elif len(names) < self._node.config.max_bootstrap_addresses:
                names.append((slot, *name))
            else:
                _log.debug("too many DHT bootstrap names: %r is not looked up", name[0])
        if names:
            # At once: a dead name costs its probes' timeouts, not the others'.
            async with trio.open_nursery() as nursery:
                for slot, host, port in names:
                    for family, udp in self._relayed.items():
                        nursery.start_soon(self._probe_name, udp, family, host, port, slot)
            if remember:
                asked = trio.current_time()
                for slot, host, port in names:
                    if slot:
                        self._pending_names.discard(host, port)
                    else:
                        self._pending_names.add(host, port, asked_at=asked)
        out: list[PeerAddress] = []
        for slot in found:
            for address in slot:
                if address.family in self._node.families and address not in out:
                    out.append(address)
        return out

    async def _probe_name(
        self, udp: Socks5UdpSocket, family: Family, host: str, port: int, into: list[PeerAddress]
    ) -> None:
        """Ping *host* (a name) through *udp*'s relay, the proxy resolving it; put the address
        of the node that answers in *into*. Gives up after ``PROBE_ATTEMPTS`` pings, or at
        once when the relay is down."""
        config = self._node.config
        for _ in range(PROBE_ATTEMPTS):
            try:
                tid, probe = self._probes.open(family)
            except LocalProtocolError:  # bootstraps at once, each with many names
                _log.debug("too many DHT bootstrap names at once: %s is not looked up", host)
                return
            try:
                ping = Ping(
                    transaction_id=tid,
                    node_id=self._node.node_id.value,
                    version=config.version,
                    read_only=config.read_only,
                )
                try:
                    await udp.sendto(ping.encode(), (host, port))
                except SocksUnavailableError as error:
                    # No association: no answer can come (the name is asked again once one
                    # is up, when it is a bootstrap entry).
                    self._lost(family, error)
                    return
                except (OSError, ValueError) as error:  # a name the proxy cannot be sent
                    _log.debug("cannot ping the DHT node %s:%d by name: %s", host, port, error)
                    return
                else:
                    self._relay_sent(family)
                with trio.move_on_after(config.query_timeout):
                    await probe.answered.wait()
                if probe.address is not None:
                    _log.debug("the DHT node %s:%d answered from %s", host, port, probe.address)
                    into.append(probe.address)
                    return
            finally:
                self._probes.close(tid)
        _log.debug("no DHT node answered at %s:%d through the proxy", host, port)

    def _begin(self, start: _Start, waiter: _Waiter) -> int:
        if self._closed:
            raise DHTError("the DHT is closed")
        op = int(start(self._node, trio.current_time()))
        self._waiters[op] = waiter
        self._kick.set()
        return op

    def _cancel(self, operation: int) -> None:
        if not self._closed:
            self._cancelled.add(operation)
            self._node.cancel(operation)
            self._dispatch()
            self._kick.set()

    async def _run(
        self, start: _Start, waiter: _Waiter | None = None, *, refused_raises: bool = False
    ) -> DHTEvent:
        """Start an operation and wait for its Finished event; with *refused_raises*, a
        refused one raises :class:`DHTBusyError` (for the calls whose value cannot say it)."""
        waiter = _Waiter() if waiter is None else waiter
        op = self._begin(start, waiter)
        try:
            while waiter.finished is None and not waiter.closed:
                await waiter.wait_changed()
        finally:
            if waiter.finished is None:
                self._cancel(op)
        if waiter.finished is None:
            raise DHTError("the DHT closed before the operation ended")
        finished = waiter.finished
        if refused_raises and isinstance(finished, _FINISHED) and finished.refused:
            raise DHTBusyError(_BUSY)
        return finished

    def _dispatch(self) -> None:
        if self._watched_bootstraps:
            live = self._node.bootstrap_ops
            if not self._watched_bootstraps <= live:  # one a rejoin waits for ended
                self._watched_bootstraps &= live
                self._wake_bootstrap_waiters()
        while (event := self._node.next_event()) is not None:
            if isinstance(event, PeersFound):
                if self._sink is not None:
                    self._sink.discovered(event.info_hash, event.peers, "dht")
            elif not isinstance(event, SamplesFound):
                self._log_finished(event)
            waiter = self._waiters.get(event.operation) if event.operation else None
            if waiter is None:
                continue
            if isinstance(event, PeersFound):
                waiter.peers.extend(event.peers)
            elif isinstance(event, SamplesFound):
                waiter.samples.append(event)
            else:
                del self._waiters[event.operation]
                waiter.finished = event
            waiter.wake()

    def _log_refused(self) -> None:
        """A refused operation: a WARNING for the first of a burst (refusals less than
        ``_REFUSALS_APART`` seconds apart), DEBUG for the others (hundreds may come at once)."""
        now = trio.current_time()
        last, self._last_refusal = self._last_refusal, now
        first = last is None or now - last >= _REFUSALS_APART
        config = self._node.config
        _log.log(
            logging.WARNING if first else logging.DEBUG,
            "DHT busy: operations refused (%d lookups run and %d wait at most); "
            "keep_finding rounds try again shortly",
            config.max_lookups,
            config.max_queued,
        )

    def _log_finished(self, event: DHTEvent) -> None:
        """Log the end of an operation (or the node's own news) at the level it deserves."""
        if isinstance(event, NodeIdChanged):
            _log.info(
                "DHT node id changed from %s to %s to match our external address (BEP 42)",
                event.old,
                event.new,
            )
            return
        if event.operation in self._cancelled:
            self._cancelled.discard(event.operation)
            _log.debug("DHT operation %d cancelled", event.operation)
            return
        if isinstance(event, _FINISHED) and event.refused:
            self._log_refused()
            return
        if isinstance(event, LookupFinished) and event.kind == "bootstrap":
            size = self._node.statistics().table_size
            if size:
                self._bootstrap_failing = False
                _log.info(
                    "DHT bootstrap done: %d nodes in the routing table (%d queries)",
                    size,
                    event.result.queries,
                )
            else:
                # Nothing the user can reach: wrong addresses, no network, a firewall. Said
                # once per failing streak: every keep_finding loop retries on its own.
                level = logging.DEBUG if self._bootstrap_failing else logging.WARNING
                self._bootstrap_failing = True
                _log.log(
                    level,
                    "DHT bootstrap failed: no node answered (%d bootstrap addresses known); "
                    "the DHT finds no peers until one does",
                    len(self._node.bootstrap_addresses),
                )
        elif isinstance(event, AnnounceFinished):
            _log.info(
                "announced %s on the DHT to %d nodes (%d peers found)",
                event.info_hash.hex(),
                event.announced_to,
                len(event.result.peers),
            )
        elif isinstance(event, LookupFinished):
            _log.debug(
                "DHT %s lookup of %s done: %d nodes answered, %d peers, %d queries",
                event.kind,
                event.target.hex(),
                len(event.result.nodes),
                len(event.result.peers),
                event.result.queries,
            )
        elif isinstance(event, PutFinished):
            _log.debug(
                "DHT put of %s stored at %d nodes, refused by %d",
                event.target.hex(),
                event.stored_at,
                len(event.errors),
            )
        elif isinstance(event, PingFinished):
            _log.debug("DHT ping %s", "answered" if event.node is not None else "unanswered")

    async def _flush(self) -> None:
        for data, address in self._node.datagrams_to_send(trio.current_time()):
            udp = self._relayed.get(address.family)
            if udp is not None:
                await self._send_relayed(udp, data, address)
                continue
            sender = self._senders.get(address.family)
            if sender is None:  # the core sends only over families it runs
                continue
            try:
                await self._send(sender, data, address)
            except OSError as error:
                self._send_errors += 1  # like a lost datagram: the query times out
                _log.debug("cannot send a DHT datagram to %s: %s", address, error)

    async def _send_relayed(self, udp: Socks5UdpSocket, data: bytes, address: PeerAddress) -> None:
        """Send one of the node's datagrams through the proxy's relay; a refusal or a failure
        loses it (the query times out), never raises."""
        try:
            await udp.sendto(data, address)
        except SocksUnavailableError as error:
            self._lost(address.family, error)
        except OSError as error:
            self._send_errors += 1
            _log.debug("cannot send a DHT datagram to %s through the proxy: %s", address, error)
        else:
            self._relay_sent(address.family)

    def _lost(self, family: Family, error: SocksUnavailableError) -> None:
        """A datagram of *family* was not sent for want of an association: lost, as one the
        system refused; the outage is logged once, with the proxy's last error."""
        self._send_errors += 1
        _log.debug("a DHT datagram is lost: %s", error)
        udp = self._relayed.get(family)
        if self._outages is not None:  # counts a new outage too: _keep_joining hears of it
            self._outages.lost(family, None if udp is None else udp.last_error)

    def _relay_sent(self, family: Family) -> None:
        if self._outages is not None:
            self._outages.sent(family)

    def _pending(self, error: OSError, address: PeerAddress) -> bool:
        """Whether *error* may be an ICMP error left pending on the socket of *address*'s
        family by a report about another datagram (its error queue is on)."""
        queue = self._error_queues.get(address.family)
        return queue is not None and queue.enabled and error.errno in PENDING_ERRNOS

    async def _send(
        self,
        sender: DatagramSender,
        data: bytes | bytearray | memoryview,
        address: PeerAddress,
        *,
        dont_fragment: bool = False,
    ) -> None:
        """Send one datagram; the system's ``OSError`` propagates."""
        try:
            await sender.send(data, address, dont_fragment=dont_fragment)
        except OSError as error:
            if not self._pending(error, address):
                raise
            # With IP_RECVERR every ICMP error also leaves a pending error on the socket,
            # which the next send reports *instead of sending*, whatever its destination (a
            # parameter problem's EPROTO as much as a port unreachable's ECONNREFUSED). The
            # send took the pending error (its report stays in the queue for the reader), so
            # once more sends this datagram; a second failure is this send's own.
            await sender.send(data, address, dont_fragment=dont_fragment)

    async def _read(self, family: Family, sock: trio.socket.SocketType) -> None:
        """The reader of *sock* (of IP *family*): with its error queue where the system has
        one (Linux), else trio's ``recvfrom`` loop."""
        queue = self._error_queues.get(family)
        if queue is None:
            await self._read_plain(sock)
        else:
            await self._read_with_errors(sock, queue)

    async def _read_plain(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, source = await sock.recvfrom(MAX_DATAGRAM)
            except OSError as error:
                self._receive_error(error)  # an ICMP error (Windows, BSD): read on
                continue
            self._received(data, source)

    async def _read_with_errors(self, sock: trio.socket.SocketType, queue: ErrorQueue) -> None:
        """Linux: wait until *sock* is readable or has errors queued, then drain a batch of
        each (through the queue's non-blocking duplicate of it). trio's ``recvfrom`` cannot
        be used here: woken by a queued error with no datagram to read, it would wait again
        at once and wake at once, for ever."""
        raw = queue.socket
        while True:
            await trio.lowlevel.wait_readable(sock)
            self._take_errors(queue)
            for _ in range(_READ_BATCH):
                try:
                    data, source = raw.recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError as error:
                    self._receive_error(error)  # the pending error; its report is queued
                    continue
                self._received(data, source)

    def _receive_error(self, error: OSError) -> None:
        """A receive failed: an ICMP error about some datagram of ours is no reason to stop
        reading (whichever error an ICMP message maps to: with the error queue on, anybody
        can leave one pending by forging one); anything else ends the DHT (raised out of
        open_dht's block)."""
        if error.errno in TRANSIENT_ERRORS or error.errno in PENDING_ERRNOS:
            return
        # The caller sees it, so only a trace here.
        _log.debug("the DHT socket failed: %s", error)
        raise DHTSocketError(f"receiving failed: {error}") from error

    def _take_errors(self, queue: ErrorQueue) -> None:
        """Fail the queries whose destination the system reported unreachable."""
        reports = queue.drain()
        if not reports:
            return
        now = trio.current_time()
        failed = False
        for report in reports:
            if not report.unreachable:
                continue  # a local error, a path MTU report: nothing about the node
            if self._node.unreachable(report.destination, now, quoted=report.payload):
                failed = True
        if failed:
            self._kick.set()  # the operations may send again and events may be waiting

    async def _read_relayed(self, family: Family, udp: Socks5UdpSocket) -> None:
        """The reader of a socket through the proxy (of IP *family*): the relay's datagrams,
        unwrapped (the socket drops and counts everyone else's)."""
        while True:
            try:
                data, source = await udp.recvfrom()
            except trio.ClosedResourceError:
                return  # the block is being left
            except OSError as error:
                self._receive_error(error)
                continue
            address = source.normalized()
            if address.family != family:
                # A node of the other family through this relay: the core would answer it
                # through the other family's socket, which did not hear it.
                _log.debug("dropped a DHT datagram from %s through an IPv%d relay", address, family)
                continue
            if self._probes.take(data, address):
                continue
            self._node.receive_datagram(data, address, trio.current_time())
            self._kick.set()

    def _received(self, data: bytes, source: Any) -> None:
        """One datagram read (*source* as ``recvfrom`` gives it): to the node, or to the
        socket's other user."""
        try:
            address = PeerAddress(ip_address(source[0]), source[1])
        except (ValueError, CompactError):
            return  # a scoped (link-local) source: no compact form to answer with
        foreign = self._foreign
        if foreign is not None and not is_krpc_candidate(data):
            # Not KRPC (uTP, most likely): the owner's, and no concern of the node's
            # malformed count or rate limiter. A source one cannot answer (port 0, a
            # forged address) is dropped here, so the owner never replies to it.
            if address.is_connectable:
                foreign.deliver(data, address)
            return
        self._node.receive_datagram(data, address, trio.current_time())
        self._kick.set()

    async def _drive(self) -> None:
        node = self._node
        while True:
            self._kick = trio.Event()
            now = trio.current_time()
            deadline = node.next_deadline()
            if deadline is not None and deadline <= now:
                node.handle_timer(now)
            self._dispatch()
            await self._flush()
            self._dispatch()
            deadline = node.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._kick.wait()

    def _join(
        self, given: Sequence[AddressLike], addresses: list[PeerAddress], unresolved: int = 0
    ) -> None:
        """Start the first bootstrap (open_dht's): through *addresses* (those of *given* we
        can use; *unresolved* of them did not resolve, logged already), the saved bootstrap
        addresses and the nodes known; or none without any."""
        node = self._node
        if given and not addresses and self._proxy is not None and self._pending_names:
            _log.warning(
                "no DHT node answered at the %d bootstrap names through the proxy %s yet: "
                "they are asked again when its relay comes up, and every %g s while a "
                "family's routing table has no live node",
                len(self._pending_names),
                self._proxy.url,
                node.config.bootstrap_retry_interval,
            )
        elif given and not addresses and not unresolved:
            _log.warning(
                "none of the %d DHT bootstrap addresses is of a family the node runs (IPv%s)",
                len(given),
                " and IPv".join(map(str, node.families)),
            )
        known = any(len(node.table(family)) for family in node.families)
        if addresses or node.bootstrap_addresses or known:
            self._start_bootstrap(addresses)
        else:
            _log.debug("DHT node starts with no node to bootstrap from")
        self._joining.set()

    async def _join_through_proxy(self, given: Sequence[AddressLike]) -> None:
        """open_dht's first bootstrap through a proxy, in the background: once the
        associations are up (or ``PROXY_WAIT`` seconds passed), with the bootstrap names
        resolved here (``socks5://``: a name that does not resolve is logged and left out,
        the others are used: the block has begun) or through the relay (``socks5h://``);
        then :meth:`_keep_joining` for the block's lifetime. *given* was checked already
        (open_dht: before its block)."""
        try:
            with trio.move_on_after(PROXY_WAIT):
                await self.wait_associated()
            unresolved: list[AddressLike] = []
            addresses = await self._addresses(given, remember=True, unresolved=unresolved)
            self._join(given, addresses, len(unresolved))
        finally:
            self._joining.set()  # bootstrap() waits for no join that ended otherwise
        await self._keep_joining()

    async def _keep_joining(self) -> NoReturn:
        """Join again through the proxy while a family's routing table has no live node
        (:meth:`DHTNode.needs_bootstrap`): at once when a relay comes back after an outage
        that lost datagrams (the known nodes went bad meanwhile, and the core would wait
        ``bootstrap_retry_interval`` to try again), and every ``bootstrap_retry_interval``
        for the pending names (the core re-bootstraps from its addresses by itself). The
        outages are counted per family (:meth:`RelayOutages.unhandled`): one that begins
        while a join runs, or of the other family, is the next round's, never lost.
        Bounded: a round per interval, plus one per outage that ended (the proxy's own retry
        delay spaces those), each asking at most ``max_bootstrap_addresses`` names."""
        outages = self._outages
        if outages is None:  # only through a proxy: nothing to join again after
            raise DHTError("the DHT joins again only through a proxy")
        interval = self._node.config.bootstrap_retry_interval
        while True:
            regained = False
            if not any(udp.associated for udp in self._relayed.values()):
                await self._wait_any_associated(self._relayed)  # cancelled with the block
                regained = True
            else:
                with trio.move_on_after(interval):
                    down = await outages.wait_unhandled()
                    await self._wait_any_associated(down)  # a relay that lost datagrams
                    regained = True
                if not regained and not any(udp.associated for udp in self._relayed.values()):
                    continue  # nothing can be asked now: wait for a relay first
            # Before the join: an outage that begins while it runs stays the next round's.
            outages.handled(f for f, udp in self._relayed.items() if udp.associated)
            await self._rejoin(regained=regained)

    async def _wait_any_associated(self, families: Iterable[Family]) -> None:
        """Return once the association through the proxy of one of *families* is up (at
        once if one is): a family whose proxy never relays must not hold up the other's
        joins."""
        async with trio.open_nursery() as nursery:

            async def wait(udp: Socks5UdpSocket) -> None:
                try:
                    await udp.wait_associated()
                except trio.ClosedResourceError:
                    raise DHTError("the DHT closed before its proxy relayed") from None
                nursery.cancel_scope.cancel()

            for family in families:
                udp = self._relayed.get(family)
                if udp is not None:
                    nursery.start_soon(wait, udp)

    async def _rejoin(self, *, regained: bool) -> None:
        """One round of :meth:`_keep_joining`: once the bootstraps under way ended (ours and
        the core's own: their outcome says whether we are back), nothing while every family
        has a node we could still query; else bootstrap again, from the remembered addresses
        at once when a relay has just come back (a pending name that never answers must not
        hold those up; not beside a bootstrap of the core's that began meanwhile, which uses
        the same addresses), and from the pending names that answer (new addresses). Never
        through those beside another bootstrap under way or about to start. A caller's about
        to start is left to go on alone: the answers are kept without a bootstrap of ours, as
        the core remembered their addresses as they came (only those: a name's answer is the
        shell's, its node is not in the table), so the next bootstrap or round that reads
        the remembered addresses uses them (that caller's when given no addresses of its
        own; else, or when it gives up, keep_finding's next join or the core's own
        re-bootstrap). One under way (keep_finding's join that shared the asking, the core's
        own) is waited for, as keep_finding's rounds do, and they are joined through after it
        only if the node still needs it and none began meanwhile. A join of keep_finding's
        about to start finds ours running."""
        await self._bootstraps_ended()
        node = self._node
        if not node.needs_bootstrap(trio.current_time()):
            return
        if regained and node.bootstrap_addresses and not node.bootstrapping:
            _log.debug(
                "DHT joining again through the proxy from %d addresses",
                len(node.bootstrap_addresses),
            )
            self._start_bootstrap(list(node.bootstrap_addresses))
        answered = await self._ask_pending_names()  # remembered by the core as they came
        if not answered:
            return
        if self._bootstrap_under_way():
            # Never beside another. A caller's about to start goes on alone: the core
            # remembered these, so it (when given no addresses) or the next round uses
            # them. One running
            # (as keep_finding's join that shared this asking and went on first) is waited
            # for: once it ended, join through these if it left a family with nobody to
            # ask, and none began meanwhile.
            await self._bootstraps_ended()
            if self._bootstrap_under_way() or not node.needs_bootstrap(trio.current_time()):
                return
        _log.debug("DHT joining again through %d bootstrap names", len(answered))
        self._start_bootstrap(answered)

    def _start_bootstrap(self, addresses: list[PeerAddress]) -> None:
        """Start a bootstrap of the core's through *addresses* (and the nodes known), one no
        caller waits for."""
        self._node.bootstrap(addresses, trio.current_time())
        self._kick.set()

    def _wake_bootstrap_waiters(self) -> None:
        """Wake who waits in :meth:`_bootstraps_ended` (a bootstrap ended)."""
        self._bootstrap_ended.set()
        self._bootstrap_ended = trio.Event()

    async def _bootstraps_ended(self) -> None:
        """Return once the core's bootstraps that run now (:attr:`DHTNode.bootstrap_ops`:
        ours, a caller's of :meth:`bootstrap` and the core's own) have ended, cancelled
        included (at once if none runs). Bounded: a bootstrap ends within the core's query
        timeouts and limits, and those started meanwhile are not waited for."""
        running = self._node.bootstrap_ops
        while running := running & self._node.bootstrap_ops:
            # woken only when one of those watched ended (another waiter's too: we recheck)
            self._watched_bootstraps |= running
            await self._bootstrap_ended.wait()

    def _bootstrap_under_way(self) -> bool:
        """Whether a bootstrap of the node runs or is queued (:attr:`DHTNode.bootstrapping`),
        or a caller's :meth:`bootstrap` is before its start (waiting for the proxy, resolving
        or asking names, so not yet in :attr:`DHTNode.bootstrap_ops`): those that start none
        beside another (keep_finding's join, the proxied rejoin) ask this with no checkpoint
        before their start. Either of those two about to start finds the other's running."""
        return self._node.bootstrapping or bool(self._bootstraps_starting)

    async def _bootstrap_starts_ended(self) -> None:
        """Return once no caller's :meth:`bootstrap` is before its start any more (each
        started in the core, or gave up; at once if none is). Bounded as their waits are
        (``PROXY_WAIT``, the resolver, ``PROBE_ATTEMPTS`` query timeouts per name)."""
        while self._bootstraps_starting:
            await self._bootstrap_ended.wait()  # woken as each leaves that phase: we recheck

    async def _ask_pending_names(self) -> list[PeerAddress]:
        """Ping the pending bootstrap names again, but for those asked within the last
        ``query_timeout``; the addresses of those that answered, forgotten as names and
        remembered by the core at once (:meth:`DHTNode.remember_bootstrap_addresses`), so
        none is lost whatever the askers do next (start no bootstrap beside another, be
        cancelled). One asking at a time (the probes are bounded): who comes while one runs
        waits for its answers (none when the one asking was cancelled)."""
        asking = self._asking
        if asking is not None:
            await asking.done.wait()
            return list(asking.answers)
        spacing = self._node.config.query_timeout
        names = self._pending_names.due(trio.current_time(), spacing=spacing)
        if not names:
            return []
        asking = self._asking = _Asking()
        try:
            asking.answers = await self._addresses(names, remember=True)
            # No checkpoint since they were forgotten as names (_addresses' last step).
            self._node.remember_bootstrap_addresses(asking.answers)
        finally:
            self._asking = None
            asking.done.set()
        return list(asking.answers)

    def _close(self) -> None:
        self._closed = True
        for waiter in self._waiters.values():
            waiter.closed = True
            waiter.wake()
        self._waiters.clear()


def _bound(sock: trio.socket.SocketType) -> PeerAddress:
    host, port = sock.getsockname()[:2]
    return PeerAddress(ip_address(host), port)


def _swarm_id(info_hash: object) -> bytes:
    if isinstance(info_hash, InfoHash):
        return info_hash.swarm_ids()[0]
    return _target(info_hash, "info_hash")


@asynccontextmanager
async def open_dht(
    bind: AddressLike | Sequence[AddressLike],
    bootstrap: Iterable[AddressLike] = (),
    *,
    node_id: NodeId | bytes | None = None,
    state: bytes | None = None,
    config: DHTConfig = DHTConfig(),  # noqa: B008 - frozen, shared safely
    peer_sink: PeerSink | None = None,
    rng: random.Random | None = None,
    other_datagrams: OtherDatagrams | None = None,
    ip_filter: IPFilter | None = None,
    proxy: ProxyConfig | None = None,
) -> AsyncIterator[DHT]:
    """Run a DHT node for the duration of an ``async with`` block.

    Args:
        bind: where to listen: one address per family (``"0.0.0.0:6881"``,
            ``"[::]:6881"``, a bare host for port 0, or several of them). The node runs the
            families bound.
        bootstrap: addresses or ``host:port`` names to join through; the bootstrap starts in
            the background (``await dht.bootstrap()`` to wait for one). Nothing is contacted
            unless named here, saved in *state*, or learned from the nodes we hear.
        node_id: our id (default: the saved one, else random; BEP 42 may change it).
        state: bytes from :meth:`DHT.save_state`.
        config: the knobs (:class:`DHTConfig`).
        peer_sink: receives every peer a lookup finds (source ``"dht"``).
        rng: randomness (default :class:`random.SystemRandom`).
        other_datagrams: share the sockets with another protocol (uTP): every datagram
            whose first byte is not ``d`` (no KRPC message) is given to this function with
            its sender, instead of being counted as malformed, and :meth:`DHT.send_datagram`
            answers from the same socket. It is called in the socket's reader task, so it
            must not block (queue the datagram or feed a sans-IO core, and return); one that
            raises loses that datagram only (logged at WARNING on the first failure and once
            per 1000 after). Datagrams from a source one cannot answer (port 0) are dropped.
            None: every datagram goes to the node, as without sharing.
        ip_filter: DHT nodes never to talk to (a blocklist, as libtorrent applies its
            session's IP filter to the DHT): never queried, never in the routing table, their
            datagrams dropped unanswered. Peers in answers are not filtered (the handshaker
            filters peers). Replace it with :meth:`DHT.set_ip_filter`.
        proxy: send every datagram through this SOCKS5 proxy's UDP relay (UDP ASSOCIATE, one
            per socket, kept up and set up again when lost), never directly, as libtorrent
            does whenever a SOCKS5 proxy is set. Datagrams sent while an association is down
            are lost (the queries time out; the outage is logged once). The first bootstrap
            waits for the associations (at most 10 s); under remote DNS (``socks5h://``) a
            bootstrap name goes to the proxy as a name, pinged through the relay, and the
            address that answers is the one joined through (under ``socks5://`` a name that
            does not resolve is logged and left out). While a family's routing table has no
            live node the node joins again as soon as an association comes back, and asks the
            names nobody answered at again then and every ``bootstrap_retry_interval``
            seconds. Other nodes see the relay's address, never our sockets'. Excludes
            *other_datagrams*: a relay returns the answers to what we sent, so incoming uTP
            could not reach a shared socket (give uTP a socket of its own).
            :attr:`DHT.proxy` tells which way a node goes.

    Raises:
        DHTSocketError: a socket could not be bound or a name did not resolve (through a
            proxy the bootstrap names are resolved in the background: logged instead).
        LocalProtocolError: a bad argument (a malformed *bootstrap* entry too, proxy or
            not: before the block begins).
        RoutingStateError: *state* is malformed.
    """
    if other_datagrams is not None and not callable(other_datagrams):
        raise LocalProtocolError(f"other_datagrams is a function, got {other_datagrams!r}")
    if proxy is not None and not isinstance(proxy, ProxyConfig):
        raise LocalProtocolError(f"proxy is a ProxyConfig or None, got {proxy!r}")
    if proxy is not None and other_datagrams is not None:
        raise LocalProtocolError(
            "other_datagrams cannot share the sockets of a DHT that goes through a proxy: "
            "the relay returns only answers to what we sent, so incoming uTP would never "
            "arrive (give uTP a socket of its own)"
        )
    given = list(bootstrap)
    for entry in given:
        # Checked now, so a malformed entry fails the call, not a background join inside
        # the caller's block (through a proxy only the resolving is left to the background).
        host_name(entry, None)
    wanted: list[PeerAddress] = []
    for item in bind_list(bind):
        for address in await resolve(item, 0):
            if all(other.family != address.family for other in wanted):
                wanted.append(address)
    if not wanted:
        raise DHTSocketError(f"{bind!r} names no address to bind")
    source = random.SystemRandom() if rng is None else rng
    now = trio.current_time()
    families: tuple[Family, ...] = tuple(sorted(a.family for a in wanted))
    node = DHTNode(
        rng=source,
        now=now,
        families=families,
        node_id=node_id,
        config=config,
        state=state,
        ip_filter=ip_filter,
    )
    sockets: dict[Family, trio.socket.SocketType] = {}
    relayed: dict[Family, Socks5UdpSocket] = {}
    queues: dict[Family, ErrorQueue] = {}
    try:
        async with AsyncExitStack() as stack:
            for address in wanted:
                if proxy is not None:
                    udp = relayed[address.family] = await _open_relayed(stack, proxy, address)
                    node.set_local_address(udp.local_address)
                    continue
                sock = sockets[address.family] = await open_socket(address)
                node.set_local_address(_bound(sock))
                # before anything is sent: an ICMP error comes back only once the option is on
                queue = ErrorQueue.open(sock) if USE_ERROR_QUEUES else None
                if queue is not None:
                    queues[address.family] = queue
            dht = DHT(
                node,
                sockets,
                peer_sink=peer_sink,
                rng=source,
                other_datagrams=other_datagrams,
                error_queues=queues,
                relayed=relayed,
            )
            listening = ", ".join(map(str, dht.addresses))
            through = "" if proxy is None else f" through the proxy {proxy.url}"
            _log.info("DHT node %s listening on %s%s", node.node_id, listening, through)
            try:
                async with trio.open_nursery() as nursery:
                    for family, sock in sockets.items():
                        nursery.start_soon(dht._read, family, sock)
                    for family, udp in relayed.items():
                        nursery.start_soon(dht._read_relayed, family, udp)
                    nursery.start_soon(dht._drive)
                    if proxy is None:
                        dht._join(given, await dht._addresses(given))
                    else:
                        nursery.start_soon(dht._join_through_proxy, given)
                    try:
                        yield dht
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                dht._close()
                _log.info("DHT node on %s closed", listening)
    finally:
        for queue in queues.values():
            queue.close()
        for sock in sockets.values():
            sock.close()


async def _open_relayed(
    stack: AsyncExitStack, proxy: ProxyConfig, address: PeerAddress
) -> Socks5UdpSocket:
    """A socket bound at *address* whose datagrams go through *proxy*'s relay, closed with
    *stack*.

    Raises:
        DHTSocketError: it cannot be bound.
    """
    try:
        return await stack.enter_async_context(
            open_socks5_udp_socket(
                proxy, bind=(str(address.host), address.port), timeout=PROXY_WAIT
            )
        )
    except ListenError as error:
        raise DHTSocketError(f"cannot bind {address}: {error}") from error
