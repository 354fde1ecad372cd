"""A deterministic swarm simulator on virtual time, for proving and tuning strategies.

Every simulated peer runs a real :class:`~bip_select.SwarmBrain`. The simulator plays the part of
the clients and the network between them: it turns each brain's actions into messages, delivers
them to the other brain as inputs after the link latency, serves requested blocks under a fluid
bandwidth model (refusing, as a real client does, a request its brain's
:meth:`~bip_select.SwarmBrain.may_upload` refuses: a super-seed's for a piece it never revealed
to the requester), checks every completed piece against the ground truth (a block from a
malicious peer makes its piece fail) and records what happened in a :class:`SwarmTrace`.

The bandwidth model is the textbook fluid one: time advances in steps of ``step`` seconds; in
each step every connection that has a requested block to serve (and whose uploader does not
choke the downloader) is a flow, and the flows share the uploaders' upload capacities and the
downloaders' download capacities max-min fairly (progressive filling, recomputed whenever the
set of flows changes). A block is delivered ``latency`` seconds after its last byte left.
Messages other than blocks cost no bandwidth.

Everything is deterministic for a given :class:`SwarmConfig` (its ``seed`` drives every random
choice, the brains' included), so a run can be replayed and two strategies compared on the
same swarm::

    >>> from bip_select.simulator import PeerSpec, SwarmConfig, simulate
    >>> peers = [PeerSpec(upload=1e6, download=1e6, seed=True)]
    >>> peers += [PeerSpec(upload=1e6, download=1e6) for _ in range(4)]
    >>> trace = simulate(SwarmConfig(num_pieces=20, piece_length=65536, peers=peers))
    >>> sorted(trace.completion)
    [1, 2, 3, 4]
    >>> all(t is not None for t in trace.completion.values())
    True
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ._actions import (
    REASON_BAD_DATA,
    Action,
    DropPeer,
    SendAllowedFast,
    SendBitfield,
    SendCancel,
    SendChoke,
    SendHave,
    SendHaveAll,
    SendHaveNone,
    SendInterested,
    SendNotInterested,
    SendRequest,
    SendUnchoke,
)
from ._brain import SwarmBrain
from ._errors import LocalProtocolError
from ._geometry import Block, TorrentGeometry
from ._inputs import (
    AllowedFast,
    BlockReceived,
    BlockRejected,
    BlockSent,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerLeft,
    PeerNotInterested,
    PeerUnchokedUs,
    PieceDeadlineSet,
    PieceVerified,
)

__all__ = [
    "Ban",
    "BrainContext",
    "BrainFactory",
    "PeerSpec",
    "SwarmConfig",
    "SwarmTrace",
    "default_brain",
    "fluid_lower_bound",
    "simulate",
]


@dataclass(frozen=True, slots=True)
class BrainContext:
    """What a :data:`BrainFactory` is told about the peer whose brain it builds."""

    index: int
    """The peer's index in :attr:`SwarmConfig.peers` (its key in the other brains)."""
    spec: PeerSpec
    """The peer's description."""
    geometry: TorrentGeometry
    """The torrent's geometry."""
    have: frozenset[int]
    """The pieces the peer starts with."""
    rng: random.Random
    """The peer's own random generator, seeded from the config's seed."""
    now: float
    """The time the peer joins."""


BrainFactory = Callable[[BrainContext], SwarmBrain]
"""Builds the brain of one simulated peer when it joins.

Return a :class:`~bip_select.SwarmBrain` configured with the strategies under test, built for
``context.geometry`` and ``context.have`` with ``context.rng``."""


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One simulated peer.

    Capacities are in bytes per second. A ``seed`` starts with every piece. A ``malicious``
    peer corrupts every block it uploads (it downloads and verifies honestly). The peer is
    present from ``join_at`` until ``leave_at`` (``None``: to the end), or until
    ``seed_time`` seconds after it completed when that is set. ``deadlines`` makes it stream:
    piece index to seconds after joining by which the piece is needed; the simulator feeds
    its brain a :class:`~bip_select.PieceDeadlineSet` per deadline (made absolute) on joining
    and records the misses (a brain whose strategy has no :class:`~bip_select.Streaming`
    layer adds one). ``brain`` overrides the config's brain factory for this peer.
    """

    upload: float
    download: float
    seed: bool = False
    malicious: bool = False
    join_at: float = 0.0
    leave_at: float | None = None
    seed_time: float | None = None
    deadlines: Mapping[int, float] | None = None
    brain: BrainFactory | None = None

    def __post_init__(self) -> None:
        """Check the numbers."""
        if not (self.upload >= 0 and self.download > 0 and math.isfinite(self.upload)):
            raise LocalProtocolError(f"capacities must be finite, download positive: {self}")
        if self.join_at < 0 or (self.leave_at is not None and self.leave_at < self.join_at):
            raise LocalProtocolError(f"a peer must join before it leaves: {self}")


@dataclass(frozen=True, slots=True)
class SwarmConfig:
    """A swarm to simulate.

    ``latency`` is the one-way delay of every message, ``step`` the length of a bandwidth
    step (default: a fifth of the latency, at most 20 ms). Each joining peer connects to at
    most ``max_connections`` peers already present, picked at random. The run stops when every
    peer present is a seed and no peer is still to join, or at ``max_time``. ``sample_every``
    is the interval of the piece-copy samples in the trace. ``reqq`` and ``fast`` are what every
    simulated client announces (BEP 10 ``reqq``, BEP 6 support).
    """

    num_pieces: int
    piece_length: int
    peers: Sequence[PeerSpec]
    latency: float = 0.05
    step: float | None = None
    max_connections: int = 80
    max_time: float = 3600.0
    seed: int = 0
    sample_every: float = 1.0
    reqq: int = 250
    fast: bool = True
    brain: BrainFactory | None = None

    def __post_init__(self) -> None:
        """Check the numbers."""
        if self.latency < 0 or (self.step is not None and self.step <= 0):
            raise LocalProtocolError("latency must be non-negative and step positive")
        if not self.peers:
            raise LocalProtocolError("a swarm needs peers")
        if self.max_connections < 1 or self.sample_every <= 0 or self.max_time <= 0:
            raise LocalProtocolError("max_connections, sample_every and max_time must be positive")


@dataclass(frozen=True, slots=True)
class Ban:
    """At ``time``, peer ``by`` dropped peer ``peer`` for sending bad data."""

    time: float
    by: int
    peer: int


@dataclass(slots=True)
class SwarmTrace:
    """What happened in a run.

    - ``completion``: for every peer that did not start as a seed, the time it had every
      piece (``None`` if it never did); ``joined`` the time each peer joined.
    - ``piece_times``: per peer, the time each piece was verified good (``None``: never).
    - ``copies``: samples ``(time, copies)`` where ``copies[p]`` is how many present peers
      have piece ``p`` verified.
    - ``full_copy_time``: the first time every piece had two copies or more (the seeders'
      data is out in the swarm); ``seed_bytes_at_full_copy``: what the initial seeds had
      uploaded by then.
    - ``single_copy_after_full``: whether some piece fell back to one copy after that with
      no peer having left (rarest first should keep this False).
    - ``bans``, ``bad_pieces`` (pieces that failed verification, per peer), ``uploaded`` and
      ``downloaded`` bytes per peer, ``wasted`` bytes (blocks received twice),
      ``violations`` (brain actions a real peer would refuse: requests for pieces the
      uploader lacks or never revealed to the requester, as a super-seed does not reveal
      them, haves for pieces the announcer lacks; such a request is refused, with a reject
      if the swarm speaks the fast extension), ``deadline_misses`` (per peer,
      pieces verified after their streaming deadline), ``end_time``.
    """

    num_pieces: int
    piece_length: int
    total_length: int
    joined: dict[int, float] = field(default_factory=dict)
    completion: dict[int, float | None] = field(default_factory=dict)
    piece_times: dict[int, list[float | None]] = field(default_factory=dict)
    copies: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)
    full_copy_time: float | None = None
    seed_bytes_at_full_copy: int | None = None
    single_copy_after_full: bool = False
    bans: list[Ban] = field(default_factory=list)
    bad_pieces: dict[int, int] = field(default_factory=dict)
    uploaded: dict[int, int] = field(default_factory=dict)
    downloaded: dict[int, int] = field(default_factory=dict)
    wasted: int = 0
    violations: list[str] = field(default_factory=list)
    deadline_misses: dict[int, list[int]] = field(default_factory=dict)
    end_time: float = 0.0

    def download_time(self, peer: int) -> float | None:
        """How long ``peer`` took from joining to completion (``None``: never completed)."""
        done = self.completion.get(peer)
        return None if done is None else done - self.joined[peer]

    def tail_fraction(self, peer: int, fraction: float = 0.01) -> float | None:
        """The share of ``peer``'s download time spent on its last ``fraction`` of pieces.

        For end-game: the time from having ``1 - fraction`` of the pieces to having all of
        them, over the whole download time.
        """
        total = self.download_time(peer)
        times = self.piece_times.get(peer)
        if total is None or not times or total <= 0:
            return None
        done = sorted(t for t in times if t is not None)
        # The moment the peer held all but the last `fraction` of the pieces.
        keep = max(1, math.ceil(len(done) * fraction))
        before_tail = done[-keep - 1] if len(done) > keep else self.joined[peer]
        return (done[-1] - before_tail) / total


def fluid_lower_bound(
    total_length: float, seed_upload: float, download: float, leechers: int, upload: float
) -> float:
    """The fluid-model lower bound on the time for ``leechers`` to download a file.

    ``T = max(F/u_seed, F/d, N*F/(u_seed + N*u))``: the seed must upload every byte once, a
    leecher cannot download faster than its capacity, and the swarm must upload ``N*F`` bytes
    with everyone's capacity (Kumar and Ross, 2006).

    >>> fluid_lower_bound(100.0, 10.0, 10.0, 9, 10.0)
    10.0
    """
    return max(
        total_length / seed_upload,
        total_length / download,
        leechers * total_length / (seed_upload + leechers * upload),
    )


# ---------------------------------------------------------------------------- internals

_MSG, _REQUEST, _CANCEL, _BLOCK = 0, 1, 2, 3


class _Flow:
    """Upload from one peer to another: the requests being served, in order."""

    __slots__ = ("allowed_fast", "choked", "done", "queue", "rate")

    def __init__(self) -> None:
        self.queue: deque[Block] = deque()
        self.done = 0.0  # bytes of the head block sent
        self.choked = True  # the uploader chokes the downloader
        self.allowed_fast: set[int] = set()
        self.rate = 0.0


class _Peer:
    __slots__ = (
        "brain",
        "deadline_pieces",
        "have",
        "index",
        "initial_seed",
        "last_have",
        "left",
        "out",
        "partial",
        "spec",
    )

    def __init__(self, index: int, spec: PeerSpec, have: set[int]) -> None:
        self.index = index
        self.spec = spec
        self.have = have
        self.initial_seed = spec.seed
        self.brain: SwarmBrain | None = None
        self.out: dict[int, _Flow] = {}  # uploads to each connected peer
        # Blocks received per incomplete piece: block begin -> the data was good.
        self.partial: dict[int, dict[int, bool]] = {}
        self.left = False
        self.deadline_pieces: dict[int, float] = {}
        self.last_have: PeerHave | None = None  # the last have input made for this peer


class _Simulation:
    def __init__(self, config: SwarmConfig) -> None:
        self.config = config
        self.geometry = TorrentGeometry(config.num_pieces, config.piece_length)
        self.rng = random.Random(config.seed)
        self.step = (
            config.step if config.step is not None else min(0.02, config.latency / 5 or 0.02)
        )
        self.now = 0.0
        # Every message takes the same latency, so sending order is delivery order: a FIFO.
        self.events: deque[tuple[float, int, int, int, object]] = deque()
        self.peers: list[_Peer] = []
        self.present: list[_Peer] = []
        self.banned: set[tuple[int, int]] = set()
        self.copies = [0] * config.num_pieces
        self.flows_dirty = True
        self.active: list[tuple[_Peer, int, _Flow]] = []
        # Flows with requests queued (uploader, downloader): the candidates for bandwidth.
        self.busy: dict[_Flow, tuple[_Peer, int]] = {}
        self.trace = SwarmTrace(config.num_pieces, config.piece_length, self.geometry.total_length)
        self.blocks_per_piece = [self.geometry.blocks_in_piece(p) for p in range(config.num_pieces)]
        self.seed_uploaded = 0
        # Peers joining at the same moment join in a random order, and each connects to the
        # others in a random order: a brain ranks peers it knows nothing about by join order,
        # and a fixed order would make every brain favour the same few peers.
        tiebreak = list(range(len(config.peers)))
        self.rng.shuffle(tiebreak)
        self.pending_joins = sorted(
            range(len(config.peers)), key=lambda i: (config.peers[i].join_at, tiebreak[i])
        )
        for index, spec in enumerate(config.peers):
            have = set(range(config.num_pieces)) if spec.seed else set()
            self.peers.append(_Peer(index, spec, have))
            self.trace.uploaded[index] = 0
            self.trace.downloaded[index] = 0
            self.trace.bad_pieces[index] = 0
            if not spec.seed:
                self.trace.completion[index] = None
                self.trace.piece_times[index] = [None] * config.num_pieces

    # -- plumbing -------------------------------------------------------------------------

    def post(self, kind: int, src: int, dst: int, payload: object) -> None:
        self.events.append((self.now + self.config.latency, kind, src, dst, payload))

    def feed(self, peer: _Peer, item: Input) -> None:
        assert peer.brain is not None
        actions = peer.brain.handle(item, self.now)
        if actions:  # most inputs (a have, a block sent) call for nothing
            self.run_actions(peer, actions)

    def run_actions(self, peer: _Peer, actions: Sequence[Action]) -> None:
        me = peer.index
        out = peer.out
        # Every message of a step leaves at the same time (post's arithmetic, done once).
        arrival = self.now + self.config.latency
        events = self.events
        for action in actions:
            other = action.peer
            if not isinstance(other, int) or other not in out:
                if isinstance(action, DropPeer):
                    # A peer judged after it left: nothing to disconnect, but the ban
                    # stands (and keeps the two apart) all the same.
                    if action.reason == REASON_BAD_DATA and isinstance(other, int):
                        self.trace.bans.append(Ban(self.now, me, other))
                        self.banned.add((me, other))
                    continue
                self.trace.violations.append(f"{me}: {action!r} to a peer not connected")
                continue
            flow_to_other = out[other]
            # Haves first: a verified piece is announced to every connection, so they are
            # most of a big swarm's messages.
            if isinstance(action, SendHave):
                piece = action.piece
                if piece not in peer.have:
                    self.trace.violations.append(f"{me}: have {piece} it lacks")
                message = peer.last_have
                if message is None or message.piece != piece:
                    # One input for all the peers told (inputs are frozen): the haves of a
                    # piece leave one after another.
                    message = peer.last_have = PeerHave(me, piece)
                events.append((arrival, _MSG, me, other, message))
            elif isinstance(action, SendRequest):
                events.append((arrival, _REQUEST, me, other, action.block))
            elif isinstance(action, SendCancel):
                self.post(_CANCEL, me, other, action.block)
            elif isinstance(action, SendChoke):
                if not flow_to_other.choked:
                    flow_to_other.choked = True
                    self.drop_requests(peer, other, flow_to_other, choking=True)
                self.post(_MSG, me, other, PeerChokedUs(me))
            elif isinstance(action, SendUnchoke):
                if flow_to_other.choked:
                    flow_to_other.choked = False
                    self.flows_dirty = True
                self.post(_MSG, me, other, PeerUnchokedUs(me))
            elif isinstance(action, SendInterested):
                self.post(_MSG, me, other, PeerInterested(me))
            elif isinstance(action, SendNotInterested):
                self.post(_MSG, me, other, PeerNotInterested(me))
            elif isinstance(action, SendBitfield):
                if not action.pieces <= peer.have:
                    self.trace.violations.append(f"{me}: bitfield with pieces it lacks")
                self.post(_MSG, me, other, PeerBitfield(me, action.pieces))
            elif isinstance(action, SendHaveAll):
                if len(peer.have) != self.config.num_pieces:
                    self.trace.violations.append(f"{me}: have all without every piece")
                self.post(_MSG, me, other, PeerHaveAll(me))
            elif isinstance(action, SendHaveNone):
                self.post(_MSG, me, other, PeerHaveNone(me))
            elif isinstance(action, SendAllowedFast):
                flow_to_other.allowed_fast.add(action.piece)
                self.post(_MSG, me, other, AllowedFast(me, action.piece))
            elif isinstance(action, DropPeer):
                if action.reason == REASON_BAD_DATA:
                    self.trace.bans.append(Ban(self.now, me, other))
                    self.banned.add((me, other))
                self.disconnect(peer, self.peers[other], notify_self=False)
            else:
                self.trace.violations.append(f"{me}: unknown action {action!r}")

    def drop_requests(self, peer: _Peer, other: int, flow: _Flow, *, choking: bool) -> None:
        """The uploader choked: queued requests are rejected (fast) or silently lost."""
        kept: deque[Block] = deque()
        for block in flow.queue:
            if choking and block.piece in flow.allowed_fast:
                kept.append(block)
            elif self.config.fast:
                self.post(_MSG, peer.index, other, BlockRejected(peer.index, block))
        if not kept or kept[0] != flow.queue[0]:
            flow.done = 0.0
        flow.queue = kept
        if not kept:
            self.busy.pop(flow, None)
        self.flows_dirty = True

    def connect(self, a: _Peer, b: _Peer) -> None:
        a.out[b.index] = _Flow()
        b.out[a.index] = _Flow()
        for x, y in ((a, b), (b, a)):
            self.feed(x, PeerJoined(y.index, reqq=self.config.reqq, fast=self.config.fast))

    def disconnect(self, a: _Peer, b: _Peer, *, notify_self: bool) -> None:
        if b.index not in a.out:
            return
        self.busy.pop(a.out.pop(b.index), None)
        self.busy.pop(b.out.pop(a.index), None)
        self.flows_dirty = True
        if notify_self and a.brain is not None:
            self.feed(a, PeerLeft(b.index))
        if b.brain is not None and not b.left:
            self.feed(b, PeerLeft(a.index))

    # -- events ---------------------------------------------------------------------------

    def join(self, peer: _Peer) -> None:
        factory = peer.spec.brain or self.config.brain or default_brain
        rng = random.Random(self.rng.getrandbits(64))
        context = BrainContext(
            peer.index, peer.spec, self.geometry, frozenset(peer.have), rng, self.now
        )
        peer.brain = factory(context)
        self.trace.joined[peer.index] = self.now
        if peer.spec.deadlines:
            peer.deadline_pieces = {p: self.now + t for p, t in peer.spec.deadlines.items()}
            for piece, when in peer.deadline_pieces.items():
                self.feed(peer, PieceDeadlineSet(piece, when))
        for piece in peer.have:
            self.copies[piece] += 1
        candidates = [
            p
            for p in self.present
            if (p.index, peer.index) not in self.banned and (peer.index, p.index) not in self.banned
        ]
        if len(candidates) > self.config.max_connections:
            candidates = self.rng.sample(candidates, self.config.max_connections)
        else:
            self.rng.shuffle(candidates)
        self.present.append(peer)
        for other in candidates:
            self.connect(peer, other)

    def leave(self, peer: _Peer) -> None:
        for other in list(peer.out):
            self.disconnect(peer, self.peers[other], notify_self=False)
        peer.left = True
        self.present.remove(peer)
        for piece in peer.have:
            self.copies[piece] -= 1

    def deliver(self, kind: int, src: int, dst: int, payload: object) -> None:
        peer = self.peers[dst]
        if peer.left or src not in peer.out or peer.brain is None:
            return  # the connection closed while the message was on its way
        if kind == _MSG:
            assert isinstance(payload, Input)
            actions = peer.brain.handle(payload, self.now)  # feed, written out: most messages
            if actions:
                self.run_actions(peer, actions)
        elif kind == _REQUEST:
            assert isinstance(payload, Block)
            flow = peer.out[src]
            if payload.piece not in peer.have:
                self.trace.violations.append(f"{src}: requested {payload} from {dst}, who lacks it")
                if self.config.fast:
                    self.post(_MSG, dst, src, BlockRejected(dst, payload))
            elif not peer.brain.may_upload(src, payload.piece):
                # Never revealed to the requester: a super-seed poses not to have it, and
                # refuses as the real client does (libtorrent's "piece not superseeded").
                self.trace.violations.append(
                    f"{src}: requested {payload} from {dst}, not revealed to it"
                )
                if self.config.fast:
                    self.post(_MSG, dst, src, BlockRejected(dst, payload))
            elif flow.choked and payload.piece not in flow.allowed_fast:
                # A request crossing our choke on the wire: BEP 6 says reject it.
                if self.config.fast:
                    self.post(_MSG, dst, src, BlockRejected(dst, payload))
            elif len(flow.queue) >= self.config.reqq:
                self.trace.violations.append(f"{src}: more than reqq requests to {dst}")
                if self.config.fast:
                    self.post(_MSG, dst, src, BlockRejected(dst, payload))
            else:
                if not flow.queue:
                    self.flows_dirty = True
                    self.busy[flow] = (peer, src)
                flow.queue.append(payload)
        elif kind == _CANCEL:
            assert isinstance(payload, Block)
            flow = peer.out[src]
            if payload in flow.queue and (flow.queue[0] != payload or flow.done == 0):
                flow.queue.remove(payload)
                if not flow.queue:
                    self.flows_dirty = True
                    del self.busy[flow]
        else:
            assert isinstance(payload, tuple)
            block, good = payload
            self.receive_block(peer, src, block, good)

    def receive_block(self, peer: _Peer, src: int, block: Block, good: bool) -> None:
        self.trace.downloaded[peer.index] += block.length
        piece = block.piece
        blocks = peer.partial.get(piece)
        if piece in peer.have or (blocks is not None and block.begin in blocks):
            self.trace.wasted += block.length
            self.feed(peer, BlockReceived(src, block))
            return
        if blocks is None:
            blocks = peer.partial[piece] = {}
        blocks[block.begin] = good
        self.feed(peer, BlockReceived(src, block))
        if len(blocks) < self.blocks_per_piece[piece] or peer.left:
            return
        del peer.partial[piece]
        ok = all(blocks.values())
        if ok:
            peer.have.add(piece)
            self.copies[piece] += 1
            times = self.trace.piece_times.get(peer.index)
            if times is not None:
                times[piece] = self.now
            deadline = peer.deadline_pieces.get(piece)
            if deadline is not None and self.now > deadline:
                self.trace.deadline_misses.setdefault(peer.index, []).append(piece)
        else:
            self.trace.bad_pieces[peer.index] += 1
        self.feed(peer, PieceVerified(piece, ok))
        if ok and len(peer.have) == self.config.num_pieces and not peer.initial_seed:
            self.trace.completion[peer.index] = self.now

    # -- bandwidth ------------------------------------------------------------------------

    def allocate(self) -> None:
        """Max-min fair rates for the active flows (progressive filling).

        Every flow rises at the same pace until a constraint (an uploader's upload or a
        downloader's download capacity) is full; the flows through it freeze at that level
        and the others keep rising. Constraints are taken in the order they fill, from a
        heap, so this costs O(flows log peers) rather than a pass over every flow per level.
        """
        active = [
            (peer, other, flow)
            for flow, (peer, other) in self.busy.items()
            if not flow.choked or flow.queue[0].piece in flow.allowed_fast
        ]
        self.active = active
        self.flows_dirty = False
        # Constraint 2*i is peer i's upload, 2*i+1 its download. This runs whenever the set
        # of flows changes (most steps of a big swarm, a few hundred flows each): the two
        # constraints of each flow are written out rather than looped over.
        peers = self.peers
        spare: dict[int, float] = {}
        count: dict[int, int] = {}
        members: dict[int, list[int]] = {}
        sides: list[tuple[int, int]] = []  # per flow: its (upload, download) constraints
        for position, (peer, other, _flow) in enumerate(active):
            up, down = 2 * peer.index, 2 * other + 1
            sides.append((up, down))
            group = members.get(up)
            if group is None:
                spare[up] = peer.spec.upload
                count[up] = 1
                members[up] = [position]
            else:
                count[up] += 1
                group.append(position)
            group = members.get(down)
            if group is None:
                spare[down] = peers[other].spec.download
                count[down] = 1
                members[down] = [position]
            else:
                count[down] += 1
                group.append(position)
        # The heap holds, per constraint still open, an entry no higher than its level (a
        # flow frozen elsewhere raises the level of its other constraint, or lowers it by
        # a rounding error): an entry found low when popped is pushed again at the level
        # then, so the constraints fill in the same order as with an entry per change.
        queued = {key: spare[key] / count[key] for key in spare}
        heap = [(value, key) for key, value in queued.items()]
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        frozen = [False] * len(active)
        while heap:
            value, key = pop(heap)
            if not count[key] or queued[key] != value:
                continue  # full already, or a lower entry was pushed since
            level = spare[key] / count[key]
            if level != value:
                queued[key] = level
                push(heap, (level, key))
                continue
            for position in members[key]:
                if frozen[position]:
                    continue
                frozen[position] = True
                active[position][2].rate = value
                for side in sides[position]:
                    count[side] -= 1
                    spare[side] -= value
                    if side != key and count[side]:
                        level = spare[side] / count[side]
                        if level < queued[side]:
                            queued[side] = level
                            push(heap, (level, side))
            count[key] = 0

    def transfer(self, dt: float) -> None:
        if self.flows_dirty:
            self.allocate()
        finished: list[tuple[_Peer, int, Block]] = []
        for peer, other, flow in self.active:
            budget = flow.rate * dt
            queue = flow.queue  # (nothing below replaces it: the blocks are sent after)
            while budget > 0 and queue:
                head = queue[0]
                if flow.choked and head.piece not in flow.allowed_fast:
                    break
                need = head.length - flow.done
                if budget < need:
                    flow.done += budget
                    break
                budget -= need
                queue.popleft()
                flow.done = 0.0
                finished.append((peer, other, head))
            if not queue:
                self.flows_dirty = True
                self.busy.pop(flow, None)
        for peer, other, block in finished:
            if other not in peer.out:
                continue
            self.trace.uploaded[peer.index] += block.length
            if peer.initial_seed:
                self.seed_uploaded += block.length
            self.post(_BLOCK, peer.index, other, (block, not peer.spec.malicious))
            self.feed(peer, BlockSent(other, block))

    # -- the loop -------------------------------------------------------------------------

    def sample(self) -> None:
        copies = tuple(self.copies)
        self.trace.copies.append((self.now, copies))

    def check_copies(self, anyone_left: bool) -> None:
        low = min(self.copies)
        if self.trace.full_copy_time is None:
            if low >= 2:
                self.trace.full_copy_time = self.now
                self.trace.seed_bytes_at_full_copy = self.seed_uploaded
        elif low < 2 and not anyone_left:
            self.trace.single_copy_after_full = True

    def finished(self) -> bool:
        if self.pending_joins:
            return False
        return all(len(p.have) == self.config.num_pieces for p in self.present)

    def run(self) -> SwarmTrace:
        config = self.config
        self.leavers = [
            peer
            for peer in self.peers
            if peer.spec.leave_at is not None or peer.spec.seed_time is not None
        ]
        next_sample = 0.0
        anyone_left = False
        while self.now <= config.max_time:
            while self.pending_joins and config.peers[self.pending_joins[0]].join_at <= self.now:
                self.join(self.peers[self.pending_joins.pop(0)])
            for peer in [p for p in self.leavers if not p.left and p.brain is not None]:
                spec = peer.spec
                leave_at = spec.leave_at
                if spec.seed_time is not None and not peer.initial_seed:
                    done = self.trace.completion.get(peer.index)
                    if done is not None:
                        leave_at = min(leave_at or math.inf, done + spec.seed_time)
                if leave_at is not None and self.now >= leave_at:
                    self.leave(peer)
                    anyone_left = True
            events = self.events
            while events and events[0][0] <= self.now:
                _, kind, src, dst, payload = events.popleft()
                self.deliver(kind, src, dst, payload)
            for peer in list(self.present):
                brain = peer.brain
                assert brain is not None
                deadline = brain.next_deadline()
                if deadline is not None and deadline <= self.now and not peer.left:
                    self.run_actions(peer, brain.tick(self.now))
            self.check_copies(anyone_left)
            if self.now >= next_sample:
                self.sample()
                next_sample += config.sample_every
            if self.finished():
                break
            self.transfer(self.step)
            self.now += self.step
        self.sample()
        self.trace.end_time = self.now
        return self.trace


# Two DEBUG records per run (its start and its end), never one per simulated event: a run
# feeds the brains millions of inputs. The brains log under ``bip_select.brain``.
_log = logging.getLogger("bip_select.simulator")


def default_brain(context: BrainContext) -> SwarmBrain:
    """The brain every simulated peer gets by default: :class:`~bip_select.SwarmBrain`'s defaults
    (rarest first, honest revelation, tit-for-tat, libtorrent's queueing)."""
    return SwarmBrain(context.geometry, have=context.have, rng=context.rng)


def simulate(config: SwarmConfig) -> SwarmTrace:
    """Run the swarm ``config`` describes to completion (or ``max_time``) and trace it."""
    _log.debug(
        "simulating %d peers, %d pieces of %d bytes, seed %r, for %g s at most",
        len(config.peers),
        config.num_pieces,
        config.piece_length,
        config.seed,
        config.max_time,
    )
    trace = _Simulation(config).run()
    if _log.isEnabledFor(logging.DEBUG):
        done = sum(1 for when in trace.completion.values() if when is not None)
        _log.debug(
            "simulation ended at %.2f s: %d of %d downloaders complete, %d bans",
            trace.end_time,
            done,
            len(trace.completion),
            len(trace.bans),
        )
    return trace
