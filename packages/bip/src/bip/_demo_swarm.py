"""The swarm behind ``bip demo``: a tracker, a small DHT, one seeder and leechers, on loopback.

Everything runs in one trio run, in this process, through the libraries' public APIs and the
client engine (:func:`~bip._client.open_session`), so the demo exercises exactly what ``bip
download`` and ``bip seed`` do:

- bip_utracker's :func:`~bip_utracker.serve_tracker`, with a handler that wraps the built-in
  :class:`~bip_utracker.SwarmStore` only to note which peers it gave to whom;
- a few bip_dht nodes (:func:`~bip_dht.open_dht`) that bootstrap from one another: the DHT
  the peers join;
- one session per peer, each on its own loopback address with its own DHT node (the way a
  real client runs one), the seeder first; one leecher has no tracker at all and must find
  its peers through the DHT (and PEX).

Who gave what is counted from outside the engine: a :class:`~bip_peer.PeerService` added to
each session's peer manager counts the payload bytes received from every peer id, the DHT
nodes' peer sinks note the peers each lookup found, and each session's PEX statistics give
the addresses PEX brought.

Loopback aliases (``127.0.0.2``...) exist on Linux but not on a stock macOS: when they
cannot be bound, everything runs on ``127.0.0.1`` with distinct ports, and the DHT is told
to accept several nodes on one IP (it refuses that by default, as libtorrent does).
"""

from __future__ import annotations

import math
import os
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Final

import trio

from bip_dht import DHT, DHTConfig, open_dht
from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash, Metainfo, create_torrent
from bip_peer import Peer, PeerManager, Piece
from bip_utracker import (
    AnnounceAnswer,
    AnnounceRequest,
    Refusal,
    ScrapeStats,
    ServerConfig,
    SwarmStore,
    serve_tracker,
)

from ._client import (
    DEFAULT_MAX_PEERS_PER_HOST,
    ClientConfig,
    Session,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    TorrentStatus,
    open_session,
)
from ._errors import CLIError

__all__ = [
    "DEMO_FILE",
    "DemoLayout",
    "DemoPeer",
    "DemoSwarm",
    "make_source",
    "piece_length_for",
    "run_swarm",
]

DEMO_FILE: Final = "bip-demo.bin"
"""The name of the generated file (a single-file torrent of it)."""
_DHT_INTERVAL: Final = 1.0  # seconds between DHT rounds: a lookup on loopback takes ms
_CHUNK: Final = 1 << 20
_CLOSE_GRACE: Final = 15.0  # seconds past the timeout for setup and closing at most
_TARGET_PIECES: Final = 128  # pieces a demo torrent aims at: enough to spread, few haves


@dataclass(frozen=True, slots=True)
class DemoLayout:
    """Who listens where: one loopback host per role (or all on 127.0.0.1 when aliases are
    missing, ``shared_host``)."""

    tracker: str
    routers: tuple[str, ...]
    seeder: str
    leechers: tuple[str, ...]
    shared_host: bool

    @classmethod
    def plan(cls, leechers: int, routers: int) -> DemoLayout:
        """Distinct 127.0.0.X hosts when the system has them, else 127.0.0.1 throughout."""
        if _can_bind("127.0.0.2"):
            hosts = [f"127.0.0.{n}" for n in range(2, 2 + routers + 2 + leechers)]
            return cls(
                tracker=hosts[0],
                routers=tuple(hosts[1 : 1 + routers]),
                seeder=hosts[1 + routers],
                leechers=tuple(hosts[2 + routers :]),
                shared_host=False,
            )
        local = "127.0.0.1"
        return cls(local, (local,) * routers, local, (local,) * leechers, shared_host=True)


def _can_bind(host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
    return True


def piece_length_for(size: int) -> int:
    """A power of two giving about :data:`_TARGET_PIECES` pieces, 16 KiB to 4 MiB."""
    wanted = max(size // _TARGET_PIECES, 1)
    return min(max(1 << (wanted - 1).bit_length(), 16 << 10), 4 << 20)


def make_source(directory: Path, size: int, tracker_url: str) -> Metainfo:
    """Write ``size`` random bytes to ``directory/bip-demo.bin`` and make a hybrid torrent of
    it announcing to ``tracker_url`` (blocking: run it on a thread)."""
    path = directory / DEMO_FILE
    with path.open("wb") as out:
        left = size
        while left:
            chunk = min(left, _CHUNK)
            out.write(os.urandom(chunk))
            left -= chunk
    return create_torrent(
        path,
        version="hybrid",
        piece_length=piece_length_for(size),
        trackers=[tracker_url],
        comment="bip demo",
    )


# -- what the demo counts, from outside the engine ----------------------------------------------


class _TrackerTally:
    """A tracker handler: the built-in store, plus which peers each announcer was given."""

    def __init__(self, store: SwarmStore) -> None:
        self.store = store
        self.given: dict[bytes, set[bytes]] = defaultdict(set)  # compact announcer -> peers

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        answer = self.store.announce(request, peer, num_want, now)
        self.given[peer].update(answer.peers)
        return answer

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats] | Refusal:
        return self.store.scrape(info_hashes, now)


class _FoundSink:
    """A DHT node's peer sink: every peer its lookups found (the engine dials them itself)."""

    def __init__(self) -> None:
        self.found: set[PeerAddress] = set()

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        self.found.update(address.normalized() for address in addresses)


class _BlockTally:
    """A peer service counting the payload bytes received from each peer id."""

    def __init__(self) -> None:
        self.received: dict[bytes, int] = defaultdict(int)

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to set up."""

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if isinstance(message, Piece):
            self.received[bytes(peer.peer_id)] += len(message.block)
        return False  # counted, not consumed: the torrent gets it as usual

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Counts outlive connections."""

    def tick(self, manager: PeerManager, now: float) -> None:
        """No timers."""


# -- the peers ------------------------------------------------------------------------------------


@dataclass(slots=True)
class DemoPeer:
    """One seeder or leecher of the demo, and what it saw.

    Attributes:
        name: ``seeder``, ``leecher 1``...
        host: its loopback address.
        directory: where its copy of the file is.
        use_tracker: whether it announces to the tracker (one leecher finds peers by DHT only).
        peer_id: its peer id.
        address: where it accepts peers, once its session is open.
        torrent: its torrent in its session, once added.
        finished_after: seconds from the leechers' start to its completion (leechers).
        from_tracker, from_dht: peers (addresses) the tracker gave it and its DHT lookups found.
        from_pex: addresses PEX brought it (counted by bip_peer, not deduplicated across peers).
        received: payload bytes received, by sender peer id.
        final: its torrent's status when the swarm stopped.
    """

    name: str
    host: str
    directory: Path
    use_tracker: bool
    peer_id: PeerId = field(default_factory=PeerId.generate)
    address: PeerAddress | None = None
    torrent: Torrent | None = None
    finished_after: float | None = None
    from_tracker: frozenset[PeerAddress] = frozenset()
    from_dht: frozenset[PeerAddress] = frozenset()
    from_pex: int = 0
    received: Mapping[bytes, int] = field(default_factory=dict)
    final: TorrentStatus | None = None
    _session: Session | None = None
    _dht_sink: _FoundSink = field(default_factory=_FoundSink)
    _blocks: _BlockTally = field(default_factory=_BlockTally)

    def status(self) -> TorrentStatus | None:
        """Its torrent's status now (None before it is added; the last one once the swarm
        stopped)."""
        if self.final is not None:
            return self.final
        return None if self.torrent is None else self.torrent.status()

    def _collect(self, tracker: _TrackerTally) -> None:
        """Snapshot the counters before the sessions close."""
        me = self.address
        if me is not None:
            given = tracker.given.get(me.to_compact(), set())
            self.from_tracker = frozenset(PeerAddress.from_compact(c).normalized() for c in given)
            self.from_dht = frozenset(a for a in self._dht_sink.found if a != me)
        if self._session is not None:
            self.from_pex = self._session.pex.statistics().addresses_discovered
        self.received = dict(self._blocks.received)
        self.final = self.status()


@dataclass(slots=True)
class DemoSwarm:
    """The whole demo: its parts and, once run, what happened.

    Attributes:
        layout: the addresses.
        torrent: the generated file's torrent.
        seeder, leechers: the peers.
        tracker_url: the tracker's announce URL.
        dht_nodes: the DHT's own nodes' addresses (besides the peers' nodes).
        elapsed: seconds from the leechers' start to the last completion.
    """

    layout: DemoLayout
    torrent: Metainfo
    seeder: DemoPeer
    leechers: list[DemoPeer]
    tracker_url: str
    dht_nodes: tuple[PeerAddress, ...] = ()
    elapsed: float = 0.0

    @property
    def peers(self) -> list[DemoPeer]:
        """The seeder, then the leechers."""
        return [self.seeder, *self.leechers]

    def name_of(self, peer_id: bytes) -> str:
        """Which demo peer has this peer id (``?`` for none)."""
        for peer in self.peers:
            if bytes(peer.peer_id) == peer_id:
                return peer.name
        return "?"


def _dht_config(layout: DemoLayout) -> DHTConfig:
    if layout.shared_host:
        # One host for every node: the one-node-per-IP rules would keep a single one.
        return DHTConfig(restrict_routing_ips=False, restrict_search_ips=False)
    return DHTConfig()


async def _open_dht_network(
    stack: AsyncExitStack, layout: DemoLayout, config: DHTConfig
) -> list[DHT]:
    """The DHT's own nodes, each joined through the first."""
    nodes: list[DHT] = []
    for host in layout.routers:
        bootstrap = [nodes[0].addresses[0]] if nodes else []
        nodes.append(await stack.enter_async_context(open_dht((host, 0), bootstrap, config=config)))
    for node in nodes[1:]:
        await node.bootstrap()
    return nodes


async def _start_peer(
    stack: AsyncExitStack,
    peer: DemoPeer,
    source: Metainfo,
    *,
    bootstrap: Sequence[PeerAddress],
    config: DHTConfig,
    shared_host: bool,
) -> Torrent:
    """Open the peer's DHT node and session and add the torrent (with every peer on one
    address, ``shared_host``, the bound on peers per address is lifted)."""
    dht = await stack.enter_async_context(
        open_dht((peer.host, 0), bootstrap, config=config, peer_sink=peer._dht_sink)
    )
    session = await stack.enter_async_context(
        open_session(
            ClientConfig(
                listen=((peer.host, 0),),
                peer_id=peer.peer_id,
                trackers=peer.use_tracker,
                dht_interval=_DHT_INTERVAL,
                max_peers_per_host=None if shared_host else DEFAULT_MAX_PEERS_PER_HOST,
            ),
            dht=dht,
        )
    )
    session.manager.add_service(peer._blocks)
    peer._session = session
    peer.address = PeerAddress(ip_address(peer.host), session.listen_port)
    torrent = await session.add_torrent(source, TorrentOptions(peer.directory, resume=False))
    peer.torrent = torrent
    return torrent


async def run_swarm(
    root: Path,
    *,
    size: int,
    leechers: int,
    routers: int = 3,
    timeout: float,
    on_started: Callable[[DemoSwarm], None] = lambda swarm: None,
) -> DemoSwarm:
    """Build the demo under ``root`` and run it until every leecher is complete.

    ``on_started`` is called once every peer runs (the caller starts its display then).

    Raises:
        CLIError: the seeder or a leecher failed, or the swarm did not complete within
            ``timeout`` seconds.
        TrackerError, DHTError, OSError: a part could not start (a socket...).
    """
    layout = DemoLayout.plan(leechers, routers)
    deadline = trio.current_time() + timeout
    swarm: DemoSwarm | None = None
    # Contexts entered into the stack hold nurseries: the cancel scopes that bound the waits
    # are opened and closed between two of them, never around one (trio requires nesting).
    with trio.move_on_at(deadline + _CLOSE_GRACE) as backstop:
        async with AsyncExitStack() as stack:
            tally = _TrackerTally(SwarmStore(peer_lifetime=600.0))
            tracker = await stack.enter_async_context(
                serve_tracker(
                    (layout.tracker, 0),
                    config=ServerConfig(interval=60, rate_limit=None),
                    handler=tally,
                )
            )
            host, port = tracker.address[:2]
            url = f"udp://{host}:{port}/announce"
            seed_dir = root / "seeder"
            seed_dir.mkdir(parents=True, exist_ok=True)
            source = await trio.to_thread.run_sync(make_source, seed_dir, size, url)
            config = _dht_config(layout)
            routers_up = await _open_dht_network(stack, layout, config)
            bootstrap = [node.addresses[0] for node in routers_up]
            seeder = DemoPeer("seeder", layout.seeder, seed_dir, use_tracker=True)
            peers = [
                DemoPeer(
                    f"leecher {n + 1}",
                    layout.leechers[n],
                    root / f"leecher{n + 1}",
                    # The last leecher has no tracker: the DHT (and PEX) must find its peers.
                    use_tracker=n != leechers - 1 or leechers == 1,
                )
                for n in range(leechers)
            ]
            swarm = DemoSwarm(layout, source, seeder, peers, url, tuple(bootstrap))
            try:
                seeding = await _start_peer(
                    stack,
                    seeder,
                    source,
                    bootstrap=bootstrap,
                    config=config,
                    shared_host=layout.shared_host,
                )
                with trio.move_on_at(deadline) as waiting:
                    await _until_seeding(seeding)
                if waiting.cancelled_caught:
                    raise CLIError(f"the seeder was not ready within {timeout:g} s")
                start = trio.current_time()
                for peer in peers:
                    peer.directory.mkdir(parents=True, exist_ok=True)
                    await _start_peer(
                        stack,
                        peer,
                        source,
                        bootstrap=bootstrap,
                        config=config,
                        shared_host=layout.shared_host,
                    )
                on_started(swarm)
                with trio.move_on_at(deadline) as waiting:
                    async with trio.open_nursery() as nursery:
                        for peer in peers:
                            nursery.start_soon(_wait_complete, peer, start)
                swarm.elapsed = trio.current_time() - start
                if waiting.cancelled_caught:
                    raise CLIError(
                        f"the swarm did not complete within {timeout:g} s ({_laggards(swarm)})"
                    )
            finally:
                for peer in swarm.peers:
                    peer._collect(tally)
    if backstop.cancelled_caught or swarm is None:
        raise CLIError(f"the demo did not finish within {timeout:g} s")
    return swarm


async def _until_seeding(torrent: Torrent) -> None:
    """Wait until the seeder has checked its data and seeds."""
    try:
        await torrent.wait_complete()
    except TorrentError as error:
        raise CLIError(f"the seeder failed: {error}") from error
    status = torrent.status()
    if status.phase is not TorrentPhase.SEEDING:
        raise CLIError(f"the seeder does not seed: {status.error or status.phase.value}")


async def _wait_complete(peer: DemoPeer, start: float) -> None:
    assert peer.torrent is not None
    try:
        await peer.torrent.wait_complete()
    except TorrentError as error:
        raise CLIError(f"{peer.name} failed: {error}") from error
    peer.finished_after = trio.current_time() - start


def _laggards(swarm: DemoSwarm) -> str:
    parts = []
    for peer in swarm.leechers:
        status = peer.status()
        if status is None or status.complete:
            continue
        share = status.done / status.total if status.total else 0.0
        parts.append(f"{peer.name} at {share:.0%}" if math.isfinite(share) else peer.name)
    return ", ".join(parts) or "starting"
