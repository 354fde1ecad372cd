"""The DHT through a SOCKS5 proxy's UDP relay: what the shell adds to plain sends and reads.

Private to :mod:`bip_dht._shell`. libtorrent sends its DHT through the proxy whenever a SOCKS5
proxy is set (``src/udp_socket.cpp``); so does ``open_dht(proxy=...)``: each of the node's
sockets is a :class:`~bip_handshake.Socks5UdpSocket`, every KRPC datagram goes through the
relay, and none is ever sent directly. Two things need more than a send or a read:

- :class:`NameProbes`: a bootstrap host name under the proxy's remote DNS (``socks5h://``) goes
  to the proxy as a name, never to our resolver. The node's core, though, matches an answer
  to the address it queried, and the answer's source (the relay's header) is an IP address,
  never the name. So the shell pings the name itself, with a transaction id of its own (8
  random bytes, where the core's are 2: no core transaction can take it), and the first
  answer carrying that id gives the name's address: the core bootstraps from that address.
  Only the relay's datagrams reach the shell at all, so an off-path forger would have to
  guess 64 bits.
- :class:`PendingNames`: the bootstrap names no node answered at yet (the proxy did not
  relay then, or the pings were lost). The core remembers only addresses, so without these
  a node whose every bootstrap entry is a name would have nothing to join through again: the
  shell asks them again when an association comes up and at each re-bootstrap while the
  routing table has no live node, and forgets each once it answered (its address is the
  core's then). Each remembers when it was last asked: one that just went unanswered is not
  pinged again at once (:meth:`PendingNames.due`).
- :class:`RelayOutages`: while the proxy has no association up, a send raises
  :class:`~bip_handshake.SocksUnavailableError`; the datagram counts as lost (the core's
  timeouts handle it) and the outage is logged once, with the proxy's ``last_error``, not
  once per datagram. The outages are counted per family, so that the shell joins again
  after each one (:meth:`RelayOutages.unhandled`).

Bounds: at most ``capacity`` probes at once (the node's ``max_bootstrap_addresses`` names per
family), and as many names pending; an answer is decoded only while a probe waits, and with
the core's size limits.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import Final

import trio

from bip_handshake import Family, PeerAddress, ProxyConfig, SocksError

from ._errors import KRPCError, LocalProtocolError
from ._krpc import ErrorReply, Response, decode_message
from ._shell_datagrams import is_krpc_candidate

__all__ = [
    "PROBE_ATTEMPTS",
    "PROBE_TID_BYTES",
    "PROXY_WAIT",
    "NameProbe",
    "NameProbes",
    "PendingNames",
    "RelayOutages",
]

_log = logging.getLogger("bip_dht.node")

PROBE_TID_BYTES: Final = 8
"""Length of a name probe's transaction id: longer than any the core draws (2 bytes), so the
two never collide, and too long to guess."""
PROBE_ATTEMPTS: Final = 2
"""Pings sent to a name before giving it up (each waits the node's ``query_timeout``)."""
PROXY_WAIT: Final = 10.0
"""Seconds the DHT waits for its UDP associations before a bootstrap goes ahead anyway
(bip_handshake's default SOCKS5 timeout: the time one attempt to associate may take)."""


class NameProbe:
    """One ping sent to a host name: its socket's family and, once answered, the address.

    Attributes:
        family: the family of the socket (and relay) the ping went through: only an answer
            from a node of that family is taken, the core sends to it through that socket.
        address: the answering node's address (None: no answer yet).
        answered: set when :attr:`address` is.
    """

    __slots__ = ("address", "answered", "family")

    def __init__(self, family: Family) -> None:
        self.family = family
        self.address: PeerAddress | None = None
        self.answered = trio.Event()


class NameProbes:
    """The name probes awaiting their answer, by transaction id (see the module docstring).

    >>> import random
    >>> from bip_handshake import PeerAddress
    >>> from bip_dht._krpc import Response
    >>> probes = NameProbes(random.Random(1), capacity=4)
    >>> tid, probe = probes.open(4)
    >>> answer = Response(transaction_id=tid, node_id=bytes(20)).encode()
    >>> probes.take(answer, PeerAddress.parse("10.0.0.7:6881")), probe.address
    (True, PeerAddress(host=IPv4Address('10.0.0.7'), port=6881))
    >>> probes.take(answer, PeerAddress.parse("10.0.0.8:6881"))  # the first answer counts
    False
    """

    __slots__ = ("_pending", "_rng", "capacity")

    def __init__(self, rng: random.Random, *, capacity: int) -> None:
        """``capacity``: probes at once at most (:meth:`open` refuses more)."""
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise LocalProtocolError(f"capacity is a positive int, got {capacity!r}")
        self._rng = rng
        self.capacity = capacity
        self._pending: dict[bytes, NameProbe] = {}

    def __len__(self) -> int:
        """Probes waiting for an answer."""
        return len(self._pending)

    def open(self, family: Family) -> tuple[bytes, NameProbe]:
        """A new probe through the socket of ``family``, and its transaction id.

        Raises:
            LocalProtocolError: ``capacity`` probes are waiting already.
        """
        if len(self._pending) >= self.capacity:
            raise LocalProtocolError(f"{self.capacity} name probes are waiting already")
        # 64 random bits: a repeat among a few dozen waiting probes is not worth a loop.
        tid = self._rng.getrandbits(8 * PROBE_TID_BYTES).to_bytes(PROBE_TID_BYTES, "big")
        probe = self._pending[tid] = NameProbe(family)
        return tid, probe

    def close(self, tid: bytes) -> None:
        """Forget the probe ``tid`` (answered, given up, or cancelled); no-op if unknown."""
        self._pending.pop(tid, None)

    def take(self, data: bytes, source: PeerAddress) -> bool:
        """Whether ``data`` (from ``source``, as the relay's header says) answers a waiting
        probe: then the probe holds ``source`` and the datagram is the shell's, not the
        core's. Never raises on what a peer sent."""
        if not self._pending or not is_krpc_candidate(data):
            return False
        try:
            message = decode_message(data)
        except KRPCError:
            return False
        if not isinstance(message, Response | ErrorReply):
            return False
        probe = self._pending.get(message.transaction_id)
        if probe is None or probe.address is not None:
            return False
        if source.family != probe.family or not source.is_connectable:
            return False
        # An error reply proves a node there as well as an answer does.
        probe.address = source
        probe.answered.set()
        return True


class PendingNames:
    """The bootstrap names (``host``, ``port``) awaiting an answer, oldest first, each with
    when it was last asked; at most ``capacity``: adding one more forgets the oldest (as the
    core keeps its newest bootstrap addresses).

    >>> names = PendingNames(capacity=2)
    >>> for name in [("a.example", 1), ("b.example", 2), ("a.example", 1), ("c.example", 3)]:
    ...     names.add(*name, asked_at=10.0)
    >>> names.snapshot()
    [('b.example', 2), ('c.example', 3)]
    >>> names.due(10.5, spacing=1.0), names.due(11.0, spacing=1.0)
    ([], [('b.example', 2), ('c.example', 3)])
    >>> names.discard("b.example", 2); len(names)
    1
    """

    __slots__ = ("_names", "capacity")

    def __init__(self, *, capacity: int) -> None:
        """``capacity``: names kept at most (the node's ``max_bootstrap_addresses``)."""
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise LocalProtocolError(f"capacity is a positive int, got {capacity!r}")
        self.capacity = capacity
        # Insertion order is the age; the value is when the name was last asked (None: never).
        self._names: dict[tuple[str, int], float | None] = {}

    def __len__(self) -> int:
        return len(self._names)

    def add(self, host: str, port: int, *, asked_at: float | None = None) -> None:
        """Keep ``host:port`` to ask again, last asked at ``asked_at`` (None: never); a name
        kept already keeps its age and takes the new time."""
        self._names[(host, port)] = asked_at
        while len(self._names) > self.capacity:
            del self._names[next(iter(self._names))]

    def discard(self, host: str, port: int) -> None:
        """Forget ``host:port`` (it answered); no-op if unknown."""
        self._names.pop((host, port), None)

    def snapshot(self) -> list[tuple[str, int]]:
        """The names kept now, oldest first (a copy: asking them may change the set)."""
        return list(self._names)

    def due(self, now: float, *, spacing: float) -> list[tuple[str, int]]:
        """The names kept now that were not asked within the last ``spacing`` seconds, oldest
        first: a name that just went unanswered is not worth its pings again at once."""
        return [
            name for name, asked in self._names.items() if asked is None or now >= asked + spacing
        ]


class RelayOutages:
    """Which families' sends the proxy refuses now: each outage logged once, when its first
    datagram is lost, and its end once, at the next datagram that goes through. Also which
    families had an outage begin since the shell last joined again for them
    (:meth:`unhandled`): counted per family, so an outage of one family never hides the
    other's, nor one that begins while a join runs the one that came before.

    >>> outages = RelayOutages(ProxyConfig("127.0.0.1", 1080))
    >>> outages.lost(4, None); outages.lost(6, None); sorted(outages.unhandled())
    [4, 6]
    >>> outages.handled({4}); sorted(outages.unhandled())
    [6]
    """

    __slots__ = ("_begun", "_down", "_handled", "_news", "proxy")

    def __init__(self, proxy: ProxyConfig) -> None:
        self.proxy = proxy
        self._down: set[Family] = set()
        # Outages begun per family, and how many of them a join followed already.
        self._begun: dict[Family, int] = {}
        self._handled: dict[Family, int] = {}
        self._news = trio.Event()  # set (and replaced) whenever an outage begins

    def lost(self, family: Family, cause: SocksError | None) -> None:
        """A datagram of ``family`` was not sent: no association (``cause``: the proxy's
        ``last_error``, None before the first attempt ended)."""
        if family in self._down:
            return
        self._down.add(family)
        self._begun[family] = self._begun.get(family, 0) + 1
        self._news.set()
        self._news = trio.Event()
        _log.warning(
            "the DHT's IPv%d datagrams are lost until the proxy %s relays them again: %s",
            family,
            self.proxy.url,
            "no UDP association yet" if cause is None else cause,
        )

    def sent(self, family: Family) -> None:
        """A datagram of ``family`` went through the relay."""
        if family in self._down:
            self._down.discard(family)
            _log.info(
                "the DHT's IPv%d datagrams go through the proxy %s again", family, self.proxy.url
            )

    def down(self, family: Family) -> bool:
        """Whether the last send of ``family`` was lost for want of an association."""
        return family in self._down

    def unhandled(self) -> frozenset[Family]:
        """The families with an outage begun since :meth:`handled` last named them."""
        return frozenset(f for f, n in self._begun.items() if n != self._handled.get(f, 0))

    def handled(self, families: Iterable[Family]) -> None:
        """A join runs now for ``families``: their outages begun so far are taken care of
        (one that begins from now on is :meth:`unhandled` again)."""
        for family in families:
            self._handled[family] = self._begun.get(family, 0)

    async def wait_unhandled(self) -> frozenset[Family]:
        """Return :meth:`unhandled` once it is not empty (at once if it is not). Unbounded:
        callers bound it."""
        while not (families := self.unhandled()):
            await self._news.wait()
        return families
