"""BEP 52 piece layers over the wire: a :class:`PeerService` that serves ours and fetches others'.

A v2 torrent's info dictionary names each file by its ``pieces root``; the *piece layer*
(one SHA-256 per piece) travels in the ``.torrent``'s ``piece layers``, which a magnet link's
BEP 9 metadata does not carry. A downloader that started from a magnet asks its v2 peers for
the layers with ``hash request`` messages (id 21) and checks each ``hashes`` reply (id 22)
against the file's root; a peer that cannot answer sends ``hash reject`` (id 23).

:class:`PieceLayerExchange` rides along every connection of a :class:`~bip_peer.PeerManager`
(``PeerManagerConfig(services=[...])`` or :meth:`PeerManager.add_service`):

- :meth:`~PieceLayerExchange.serve` (or :meth:`~PieceLayerExchange.serve_async`, which
  builds a large torrent's trees in a worker thread) answers the peers' hash requests for a
  torrent's files from their piece layers (on the piece layer or any layer above it, with the
  proof they ask for), and rejects the rest: an unknown root, a layer below the piece layer
  (that needs block hashes), a bad geometry, more hashes than we give at once, or a peer over
  its budget.
- :meth:`~PieceLayerExchange.fetch` gets the piece layer of every file larger than one piece
  from the torrent's v2 peers, several in parallel, in chunks of at most 512 hashes (as
  libtorrent asks), each with the proof up to the root so it is checked on arrival. A peer
  whose hashes do not verify is removed (its answer was a lie); an unanswered request goes to
  another peer after its timeout; a peer that rejects is left alone for a few seconds (the
  chunk goes to other peers first). A fetch that times out keeps the chunks it verified for
  the next fetch of the torrent (as libtorrent's hash picker keeps them for the torrent's
  life), until they are all there or :meth:`~PieceLayerExchange.stop_serving` forgets them.

The v2 peers of a torrent are those connected on its truncated v2 info-hash (always the case
for a v2-only torrent; libtorrent 2.1 answers a hybrid torrent's v1 id with it, which upgrades
the connection), and those of a hybrid torrent connected on its v1 hash with the BEP 52 upgrade
bit (:attr:`~bip_handshake.Extensions.V2_UPGRADE`) set on both sides.

Every hook runs in a manager task and never blocks; messages go out with
:meth:`PeerManager.send_nowait` (a request that finds a full queue goes to the next peer; an
answer that finds it full is sent at a later tick, never dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import trio

from bip_handshake import Extensions
from bip_metainfo import (
    BLOCK_SIZE,
    HASH_SIZE,
    HashRequestError,
    Info,
    InfoHash,
    PieceLayerTree,
    full_proof_layers,
    tree_depth,
    verify_hashes,
)

from ._errors import LocalProtocolError, PeerError, PieceLayerFetchError
from ._exchange import (
    DEFAULT_MAX_KEPT_FETCHES,
    _check_kept,
    _FetchTable,
    _lookup,
    _same_torrent,
)
from ._manager import Peer, PeerManager
from ._messages import Hashes, HashReject, HashRequest

__all__ = [
    "DEFAULT_LAYER_REJECT_BACKOFF",
    "DEFAULT_LAYER_REQUEST_TIMEOUT",
    "DEFAULT_LAYER_SERVE_BURST",
    "DEFAULT_LAYER_SERVE_RATE",
    "DEFAULT_MAX_HASHES_PER_REQUEST",
    "DEFAULT_MAX_LAYER_REQUESTS_PER_PEER",
    "PieceLayerExchange",
    "PieceLayerExchangeStatistics",
    "PieceLayerServeError",
]

DEFAULT_LAYER_REQUEST_TIMEOUT: Final = 10.0
"""Seconds before an unanswered hash request goes to another peer."""
DEFAULT_MAX_HASHES_PER_REQUEST: Final = 512
"""Base-layer hashes asked for, and given, per request: libtorrent's chunk of piece hashes."""
DEFAULT_MAX_LAYER_REQUESTS_PER_PEER: Final = 4
"""Hash requests of ours one peer has at once (unanswered ones count until they are)."""
DEFAULT_LAYER_REJECT_BACKOFF: Final = 4.0
"""Seconds a peer that rejected a hash request is not asked again (the chunk goes to other
peers meanwhile). libtorrent asks again at once; a few seconds keep a budgeted peer from
bouncing requests and rejects, and are the time a bip seeder's budget takes to refill
(:data:`DEFAULT_LAYER_SERVE_BURST` at :data:`DEFAULT_LAYER_SERVE_RATE`)."""
DEFAULT_LAYER_SERVE_BURST: Final = 64
"""Hash requests a peer may have answered at once; libtorrent asks one per 512 pieces."""
DEFAULT_LAYER_SERVE_RATE: Final = 16.0
"""Hash requests per second a peer's budget refills at."""

_INLINE_TREE_HASHES: Final = 4096
"""Piece hashes up to which :meth:`PieceLayerExchange.serve_async` builds the trees at once (a
few milliseconds, less than a thread costs); more are built in a worker thread (two million
take about two seconds)."""

_log = logging.getLogger("bip_peer.layers")


class PieceLayerServeError(PieceLayerFetchError):
    """:meth:`~bip_peer.PieceLayerExchange.fetch` got every piece layer verified, but they
    cannot be served.

    This should not happen: a fetch verifies each layer against the very file (root and
    length) that :meth:`~bip_peer.PieceLayerExchange.serve` builds its tree from, whatever the
    ``info``. The error is a defensive guard, kept so that a future divergence between what a
    fetch verifies and what ``serve`` builds fails the fetch, not the peers that answered it.

    Unlike its base class (the peers did not answer in time: try again later), fetching again
    gives the same layers, refused again: the torrent cannot be used.

    >>> issubclass(PieceLayerServeError, PieceLayerFetchError)
    True
    """


def _speaks_v2(peer: Peer) -> bool:
    """Whether the connection is a v2 one (BEP 52), so the peer may be asked for hashes.

    The torrent must have a v2 hash; a connection registered without the v1 hash met on
    the truncated v2 one; a hybrid torrent's connection is v2 if it met on the truncated v2
    hash or if both sides set the upgrade bit (libtorrent's rule).
    """
    info_hash = peer.info_hash
    if info_hash.v2 is None:
        return False
    if info_hash.v1 is None or Extensions.V2_UPGRADE in peer.extensions:
        return True
    return peer.swarm_id == info_hash.v2_truncated


def _check_positive(name: str, value: object, *, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not value > 0:  # type: ignore[operator]
        kind = "integer" if integer else "number"
        raise ValueError(f"{name} must be a positive {kind}, got {value!r}")


# --------------------------------------------------------------------------- serving


@dataclass(slots=True)
class _Budget:
    tokens: float
    updated: float
    refusing: bool = False  # refused since the last request it paid for


class _Served:
    """One torrent we serve: a tree per file larger than one piece, keyed by pieces root."""

    __slots__ = ("info_hash", "layers", "trees")

    def __init__(
        self, info_hash: InfoHash, trees: dict[bytes, PieceLayerTree], layers: dict[bytes, bytes]
    ) -> None:
        self.info_hash = info_hash
        self.trees = trees
        self.layers = layers


# --------------------------------------------------------------------------- fetching


class _FileLayer:
    """One file's piece layer being fetched: its geometry and the chunks verified so far."""

    __slots__ = ("chunk", "depth", "file_length", "layer", "pieces", "proof_layers", "root")

    def __init__(self, root: bytes, file_length: int, piece_level: int, max_hashes: int) -> None:
        self.root = root
        self.file_length = file_length
        self.depth = tree_depth(file_length)
        piece_length = BLOCK_SIZE << piece_level
        self.pieces = -(-file_length // piece_length)
        width = 1 << (self.depth - piece_level)
        self.chunk = min(max_hashes, width)
        self.proof_layers = full_proof_layers(file_length, piece_level, self.chunk)
        # Sized from the info dictionary, never from what a peer sends.
        self.layer = bytearray(self.pieces * HASH_SIZE)


_ChunkKey = tuple[bytes, int]  # (pieces root, index of the first piece hash)


class _FetchPeer:
    __slots__ = ("backoff_until", "in_flight")

    def __init__(self) -> None:
        # Requests this fetch waits on from the peer (not yet timed out). The connection's own
        # ``our_hash_requests`` holds every request still unanswered, a timed-out one or one
        # from an earlier fetch included: those are never sent twice and count against the
        # per-peer limit, and their late answers are still taken.
        self.in_flight: set[_ChunkKey] = set()
        self.backoff_until = float("-inf")


class _LayerFetch:
    """One fetch, under way or kept for the next call: which chunk to ask which peer for, and
    what arrived (sans-IO)."""

    __slots__ = (
        "arrived",
        "banned",
        "building",
        "deadlines",
        "done",
        "failure",
        "files",
        "info",
        "max_per_peer",
        "peers",
        "pending",
        "piece_level",
        "reject_backoff",
        "request_timeout",
        "stopped",
        "timeouts",
        "verified",
        "waiters",
    )

    def __init__(
        self,
        info: Info,
        files: dict[bytes, _FileLayer],
        *,
        request_timeout: float,
        reject_backoff: float,
        max_per_peer: int,
    ) -> None:
        self.info = info
        self.files = files
        self.piece_level = (info.piece_length // BLOCK_SIZE).bit_length() - 1
        self.request_timeout = request_timeout
        self.reject_backoff = reject_backoff
        self.max_per_peer = max_per_peer
        self.pending: dict[_ChunkKey, None] = {
            (root, index): None
            for root, file in files.items()
            for index in range(0, file.pieces, file.chunk)
        }
        self.deadlines: dict[_ChunkKey, tuple[Peer, float]] = {}
        self.peers: dict[Peer, _FetchPeer] = {}
        self.banned: list[tuple[Peer, str]] = []
        self.verified = 0
        self.timeouts = 0
        # Every chunk verified: a waiter builds the trees next (off the event loop when large).
        self.arrived = trio.Event()
        self.building = False  # a waiter builds them
        # Built and served (or refused: failure), or stopped: the layers can be taken.
        self.done = trio.Event()
        # Why the fetch ended without layers to give (done is set too), else None.
        self.failure: str | None = None
        # Callers waiting. With none the fetch is kept, asking nothing, with the chunks it
        # verified (and taking the answers still coming) for the next call.
        self.waiters = 0
        # stop_serving was called since the last call: not served once fetched, and forgotten
        # when its last waiter leaves.
        self.stopped = False

    @property
    def asking(self) -> bool:
        """Whether requests go out: a caller waits and chunks are missing."""
        return self.waiters > 0 and not self.arrived.is_set()

    @property
    def info_hash(self) -> InfoHash:
        return self.info.info_hash

    def complete(self) -> bool:
        return not self.pending and not self.deadlines

    def result(self) -> dict[bytes, bytes]:
        return {root: bytes(file.layer) for root, file in self.files.items()}

    def add_peer(self, peer: Peer) -> None:
        self.peers.setdefault(peer, _FetchPeer())

    def remove_peer(self, peer: Peer) -> None:
        state = self.peers.pop(peer, None)
        if state is None:
            return
        for key in state.in_flight:
            owner = self.deadlines.get(key)
            if owner is not None and owner[0] is peer:
                del self.deadlines[key]
                self.pending[key] = None

    def next_request(self, peer: Peer, now: float) -> HashRequest | None:
        """The next request to send ``peer``, marked as sent, or None."""
        state = self.peers.get(peer)
        unanswered = peer.connection.our_hash_requests
        if state is None or now < state.backoff_until or len(unanswered) >= self.max_per_peer:
            return None
        key = next((key for key in self.pending if self._wire_key(key) not in unanswered), None)
        if key is None:
            return None
        del self.pending[key]
        state.in_flight.add(key)
        self.deadlines[key] = (peer, now + self.request_timeout)
        return self.request_for(key)

    def unsend(self, peer: Peer, request: HashRequest) -> None:
        """A request that never left (a full queue): back to pending, the peer unchanged."""
        key = (request.pieces_root, request.index)
        state = self.peers.get(peer)
        if state is not None:
            state.in_flight.discard(key)
        self.deadlines.pop(key, None)
        self.pending[key] = None

    def _wire_key(self, key: _ChunkKey) -> tuple[bytes, int, int, int, int]:
        root, index = key
        file = self.files[root]
        return (root, self.piece_level, index, file.chunk, file.proof_layers)

    def request_for(self, key: _ChunkKey) -> HashRequest:
        root, index = key
        file = self.files[root]
        return HashRequest(root, self.piece_level, index, file.chunk, file.proof_layers)

    def _matches(self, message: Hashes | HashReject) -> _ChunkKey | None:
        file = self.files.get(message.pieces_root)
        if file is None or message.index % file.chunk or message.index >= file.pieces:
            return None  # not one of our chunks (the connection lets only our keys through)
        key = (message.pieces_root, message.index)
        if self.request_for(key) != HashRequest(
            message.pieces_root,
            message.base_layer,
            message.index,
            message.length,
            message.proof_layers,
        ):
            return None
        return key

    def _settle_key(self, peer: Peer, key: _ChunkKey) -> bool:
        """Forget ``peer``'s request for ``key``; whether the chunk is still wanted from it."""
        state = self.peers.get(peer)
        if state is None:
            return False  # a peer banned (or gone) since: its other answers count no more
        state.in_flight.discard(key)
        owner = self.deadlines.get(key)
        wanted = key in self.pending or owner is not None
        if owner is not None and owner[0] is peer:
            del self.deadlines[key]
            self.pending[key] = None  # taken off again below if the hashes verify
        return wanted

    def on_hashes(self, peer: Peer, message: Hashes) -> bool:
        """Take a reply; False if it is not ours (another service's request)."""
        key = self._matches(message)
        if key is None:
            return False
        if not self._settle_key(peer, key):
            return True  # a late answer to a chunk another peer gave already
        file = self.files[key[0]]
        try:
            good = verify_hashes(
                message.hashes,
                pieces_root=file.root,
                file_length=file.file_length,
                base_layer=message.base_layer,
                index=message.index,
                length=message.length,
                proof_layers=message.proof_layers,
            )
        except HashRequestError:  # pragma: no cover - our own request, checked when built
            good = False
        if not good:
            self.banned.append(
                (peer, f"hashes {message.index}+{message.length} do not verify against the root")
            )
            self.remove_peer(peer)
            return True
        count = min(file.chunk, file.pieces - key[1])
        start = key[1] * HASH_SIZE
        file.layer[start : start + count * HASH_SIZE] = message.hashes[: count * HASH_SIZE]
        self.pending.pop(key, None)
        owner = self.deadlines.pop(key, None)
        if owner is not None and owner[0] in self.peers:
            # Another peer was asked after this one timed out: its answer is no longer
            # awaited here (its connection still waits for it, and lets it through).
            self.peers[owner[0]].in_flight.discard(key)
        self.verified += 1
        return True

    def on_reject(self, peer: Peer, message: HashReject, now: float) -> bool:
        key = self._matches(message)
        if key is None:
            return False
        self._settle_key(peer, key)
        state = self.peers.get(peer)
        if state is not None:
            state.backoff_until = now + self.reject_backoff
        return True

    def handle_timer(self, now: float) -> None:
        for key, (peer, deadline) in list(self.deadlines.items()):
            if now >= deadline:
                del self.deadlines[key]
                self.pending[key] = None
                self.timeouts += 1
                state = self.peers.get(peer)
                if state is not None:
                    # The connection still waits for the answer: see _FetchPeer.
                    state.in_flight.discard(key)

    def take_banned(self) -> list[tuple[Peer, str]]:
        banned, self.banned = self.banned, []
        return banned


@dataclass(frozen=True, slots=True)
class PieceLayerExchangeStatistics:
    """A snapshot of a :class:`PieceLayerExchange`'s counters.

    Attributes:
        serving: torrents whose piece layers we serve.
        fetching: fetches under way (a caller waiting); not those that timed out and keep
            their verified chunks for the next call.
        requests_answered: hash requests answered with hashes.
        requests_rejected: hash requests rejected (unknown root, a layer below the piece
            layer, bad geometry, too many hashes, over a peer's budget).
        chunks_fetched: verified replies taken by fetches.
        requests_timed_out: requests of ours that went unanswered past the timeout.
        peers_banned: peers removed for sending hashes that do not verify.
        kept: fetches with no caller waiting, kept for the next call (at most
            ``max_kept_fetches``).
    """

    serving: int
    fetching: int
    requests_answered: int
    requests_rejected: int
    chunks_fetched: int
    requests_timed_out: int
    peers_banned: int
    kept: int = 0


class PieceLayerExchange:
    """BEP 52 hash requests over a :class:`~bip_peer.PeerManager`: serve piece layers, fetch them.

    Args:
        request_timeout: seconds before an unanswered request goes to another peer.
        max_hashes_per_request: base-layer hashes per request we send, and the most we
            answer; a power of two.
        max_requests_per_peer: requests of ours one peer has at once.
        reject_backoff: seconds a peer that rejected a request is not asked again (other peers
            are asked for the chunk meanwhile).
        serve_burst: requests a peer may have answered at once.
        serve_rate: requests per second a peer's budget refills at.
        max_kept_fetches: fetches with no caller waiting kept for the next call (those that
            timed out, with the chunks they verified); the least recently asked is
            forgotten beyond it.
    """

    message_types = (HashRequest, Hashes, HashReject)
    """The messages its :meth:`message_received` takes, the manager's only questions to it
    (:class:`~bip_peer.PeerService`)."""

    def __init__(
        self,
        *,
        request_timeout: float = DEFAULT_LAYER_REQUEST_TIMEOUT,
        max_hashes_per_request: int = DEFAULT_MAX_HASHES_PER_REQUEST,
        max_requests_per_peer: int = DEFAULT_MAX_LAYER_REQUESTS_PER_PEER,
        reject_backoff: float = DEFAULT_LAYER_REJECT_BACKOFF,
        serve_burst: int = DEFAULT_LAYER_SERVE_BURST,
        serve_rate: float = DEFAULT_LAYER_SERVE_RATE,
        max_kept_fetches: int = DEFAULT_MAX_KEPT_FETCHES,
    ) -> None:
        _check_positive("request_timeout", request_timeout)
        _check_positive("max_hashes_per_request", max_hashes_per_request, integer=True)
        if max_hashes_per_request & (max_hashes_per_request - 1):
            raise ValueError(
                f"max_hashes_per_request must be a power of two, got {max_hashes_per_request}"
            )
        _check_positive("max_requests_per_peer", max_requests_per_peer, integer=True)
        _check_positive("reject_backoff", reject_backoff)
        _check_positive("serve_burst", serve_burst, integer=True)
        _check_positive("serve_rate", serve_rate)
        self._request_timeout = float(request_timeout)
        self._max_hashes = max_hashes_per_request
        self._max_per_peer = max_requests_per_peer
        self._reject_backoff = float(reject_backoff)
        self._serve_burst = serve_burst
        self._serve_rate = float(serve_rate)
        self._served: dict[bytes, _Served] = {}
        self._table: _FetchTable[_LayerFetch] = _FetchTable(_check_kept(max_kept_fetches))
        self._fetches = self._table.by_swarm  # looked up by swarm id
        # serve_async's builds under way, by swarm id: a stop_serving (or a later serve)
        # meanwhile takes its token away, and the trees built are then dropped.
        self._building: dict[bytes, object] = {}
        self._budgets: dict[Peer, _Budget] = {}
        # Answers a full send queue refused, by peer: the request, and whether it gets hashes
        # (else a reject). Sent at the next ticks: the peer's connection (and ours) keeps the
        # request pending until it is answered, so a dropped answer would never be asked for
        # again. At most ConnectionLimits.max_peer_hash_requests per peer; the hashes are
        # computed again when sent, so what is held stays small.
        self._unsent: dict[Peer, dict[HashRequest, bool]] = {}
        self._answered = 0
        self._rejected = 0
        self._fetched = 0
        self._timed_out = 0
        self._banned = 0

    # -- public API ----------------------------------------------------------------------

    def serve(self, info: Info, piece_layers: Mapping[bytes, bytes]) -> None:
        """Answer hash requests for ``info``'s files from their piece layers (keyed by pieces root).

        Every file larger than one piece needs its layer; each is checked against the file's
        ``pieces root`` here (a tree above the piece layer is built once, about twice the
        layer's size). Serving a torrent again replaces its layers (a :meth:`serve_async`
        under way for it is then dropped).

        The trees are built on the caller's thread: about a second per million pieces. In an
        event loop, prefer :meth:`serve_async` for a large torrent.

        Raises:
            ValueError: ``info`` is not a v2 or hybrid torrent, or a layer is missing, of the
                wrong size, or does not hash to its file's root.
        """
        trees, layers = self._trees(info, piece_layers)
        self._install(info, trees, layers)

    async def serve_async(self, info: Info, piece_layers: Mapping[bytes, bytes]) -> None:
        """:meth:`serve`, with the trees of a large torrent built in a worker thread
        (:func:`trio.to_thread.run_sync`), so that the event loop goes on meanwhile.

        The layers must not change until it returns. A :meth:`stop_serving` of the torrent
        (or a :meth:`serve` of it) while the trees are built wins: they are then dropped, not
        served. A cancellation that comes during the build waits for it to end; the trees are
        then served all the same (unless stopped), and the caller sees the cancellation at its
        next checkpoint.

        Raises:
            ValueError: as :meth:`serve`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._serve_off_loop(info, piece_layers)

    def stop_serving(self, info_hash: InfoHash) -> None:
        """Reject hash requests for ``info_hash`` from now on, and forget what its fetches
        kept (call it when the torrent goes: a fetch that timed out keeps the chunks it
        verified until then).

        A fetch of the torrent with a caller waiting goes on for that caller, but what it
        fetches is not served, and is forgotten once no caller waits; a :meth:`serve_async`
        of it under way serves nothing.
        """
        for swarm_id in info_hash.swarm_ids():
            self._served.pop(swarm_id, None)
            self._building.pop(swarm_id, None)
        self._table.stop(info_hash)

    def serving(self, info_hash: InfoHash) -> bool:
        """Whether we serve ``info_hash``'s piece layers."""
        return _lookup(self._served, info_hash) is not None

    async def fetch(
        self, manager: PeerManager, info: Info, *, timeout: float
    ) -> dict[bytes, bytes]:
        """The piece layer of every file of ``info`` larger than one piece, keyed by pieces root.

        Each layer is verified against its file's root, chunk by chunk. The torrent's v2
        peers take part, those connected already and those added while the fetch runs; keep
        consuming :meth:`PeerManager.events` meanwhile. Peers whose hashes do not verify are
        removed from the manager. Once fetched, the layers are served to other peers
        (:meth:`serve`; a large torrent's trees are built in a worker thread, as
        :meth:`serve_async` does). Two fetches of one torrent share the work. A torrent whose
        files all fit one piece needs no layer: the result is then ``{}``.

        A fetch that times out, or whose callers are all cancelled, asks nothing more but
        keeps the chunks it verified, and takes the answers to its requests that still come:
        the next fetch of the torrent goes on from there. :meth:`stop_serving` forgets them;
        so does a ``max_kept_fetches``-th fetch kept after them, the least recently asked
        first.

        Raises:
            PieceLayerServeError: the layers verified cannot be served; fetching again would
                end the same way. This should not happen (a guard against a future divergence
                between what a fetch verifies and what :meth:`serve` builds).
            PieceLayerFetchError: the layers are not all fetched within ``timeout`` seconds.
            LocalProtocolError: this exchange is not one of the manager's services.
            ValueError: ``info`` is not a v2 or hybrid torrent, or ``timeout`` is not positive.
        """
        _check_positive("timeout", timeout)
        if not any(service is self for service in manager.services):
            raise LocalProtocolError(
                "add the PieceLayerExchange to the manager's services before fetching"
            )
        if not info.is_v2:
            raise ValueError(f"{info.info_hash} is a v1 torrent: it has no piece layers")
        served = _lookup(self._served, info.info_hash)
        if served is not None:
            await trio.lowlevel.checkpoint()
            return dict(served.layers)
        fetch = _lookup(self._fetches, info.info_hash)
        if fetch is None:
            files = self._wanted(info)
            if not files:
                await trio.lowlevel.checkpoint()
                return {}
            fetch = _LayerFetch(
                info,
                files,
                request_timeout=self._request_timeout,
                reject_backoff=self._reject_backoff,
                max_per_peer=self._max_per_peer,
            )
            self._table.add(fetch)
            _log.debug(
                "fetching the piece layers of %s from peers: %d files, %d requests",
                info.info_hash,
                len(files),
                len(fetch.pending),
            )
        if self._table.ask(fetch):  # asked for again: served once fetched
            # New, or kept since an earlier call: asking again, of every v2 peer.
            self._offer_all(manager, fetch)
        try:
            with trio.move_on_after(timeout):
                await fetch.arrived.wait()
                if fetch.building:
                    await fetch.done.wait()
                elif not fetch.done.is_set():
                    await self._serve_fetched(fetch)
        finally:
            self._table.leave(fetch)
        if fetch.failure is not None:
            raise PieceLayerServeError(fetch.failure)
        if not fetch.done.is_set():
            raise PieceLayerFetchError(
                f"no verified piece layers for {info.info_hash} within {timeout} s "
                f"({fetch.verified} of {fetch.verified + len(fetch.pending) + len(fetch.deadlines)}"
                f" requests answered, {len(fetch.peers)} v2 peers, {fetch.timeouts} timeouts)"
            )
        return fetch.result()

    def statistics(self) -> PieceLayerExchangeStatistics:
        """A snapshot of the counters."""
        return PieceLayerExchangeStatistics(
            serving=len({id(served) for served in self._served.values()}),
            fetching=self._table.waited_on(),
            requests_answered=self._answered,
            requests_rejected=self._rejected,
            chunks_fetched=self._fetched,
            requests_timed_out=self._timed_out,
            peers_banned=self._banned,
            kept=self._table.kept,
        )

    # -- PeerService -------------------------------------------------------------------------

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """Nothing: BEP 52 hash messages are core messages, not BEP 10 extensions."""
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """A v2 peer of a torrent being fetched joins the fetch."""
        fetch = _lookup(self._fetches, peer.info_hash)
        if fetch is not None:
            self._offer(manager, fetch, peer, trio.current_time())

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Answer hash requests; feed hashes and rejects to the fetch they answer."""
        if isinstance(message, HashRequest):
            self._answer(manager, peer, message)
            return True
        if isinstance(message, Hashes | HashReject):
            fetch = _lookup(self._fetches, peer.info_hash)
            if fetch is None:
                return False
            now = trio.current_time()
            if isinstance(message, Hashes):
                before = fetch.verified
                taken = fetch.on_hashes(peer, message)
                self._fetched += fetch.verified - before
            else:
                taken = fetch.on_reject(peer, message, now)
                if taken:
                    _log.debug(
                        "peer %s rejected hash request %s+%d of %s",
                        peer.address,
                        message.pieces_root[:4].hex(),
                        message.index,
                        fetch.info_hash,
                    )
            if taken:
                self._settle(manager, fetch)
                self._pump(manager, fetch, peer, now)
            return taken
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Forget the peer's budget and its part in a fetch."""
        self._budgets.pop(peer, None)
        self._unsent.pop(peer, None)
        fetch = _lookup(self._fetches, peer.info_hash)
        if fetch is not None:
            fetch.remove_peer(peer)

    def tick(self, manager: PeerManager, now: float) -> None:
        """Send the answers a full queue held back; expire requests and ask again."""
        for peer in list(self._unsent):
            self._send_unsent(manager, peer)
        for fetch in {id(fetch): fetch for fetch in self._fetches.values()}.values():
            if not fetch.asking:
                continue  # kept for a later call, or every chunk verified
            before = fetch.timeouts
            fetch.handle_timer(now)
            self._timed_out += fetch.timeouts - before
            for peer in list(fetch.peers):
                self._pump(manager, fetch, peer, now)

    # -- internals -------------------------------------------------------------------------

    def _trees(
        self, info: Info, piece_layers: Mapping[bytes, bytes]
    ) -> tuple[dict[bytes, PieceLayerTree], dict[bytes, bytes]]:
        if not info.is_v2:
            raise ValueError(f"{info.info_hash} is a v1 torrent: it has no piece layers")
        trees: dict[bytes, PieceLayerTree] = {}
        layers: dict[bytes, bytes] = {}
        for root, length in _layered_files(info).items():
            layer = piece_layers.get(root)
            if layer is None:
                raise ValueError(f"no piece layer for the file with pieces root {root.hex()}")
            tree = PieceLayerTree(layer, piece_length=info.piece_length, file_length=length)
            if tree.root != root:
                raise ValueError(f"the piece layer given for {root.hex()} does not hash to it")
            trees[root] = tree
            layers[root] = bytes(layer)
        return trees, layers

    def _wanted(self, info: Info) -> dict[bytes, _FileLayer]:
        piece_level = (info.piece_length // BLOCK_SIZE).bit_length() - 1
        return {
            root: _FileLayer(root, length, piece_level, self._max_hashes)
            for root, length in _layered_files(info).items()
        }

    def _offer_all(self, manager: PeerManager, fetch: _LayerFetch) -> None:
        # A method of its own: the loop's variable would hold the last peer (its connection)
        # in fetch's frame for as long as the caller waits.
        now = trio.current_time()
        for peer in manager.peers:
            self._offer(manager, fetch, peer, now)

    def _offer(self, manager: PeerManager, fetch: _LayerFetch, peer: Peer, now: float) -> None:
        if not _same_torrent(fetch.info_hash, peer.info_hash) or not _speaks_v2(peer):
            return
        fetch.add_peer(peer)
        self._pump(manager, fetch, peer, now)

    def _pump(self, manager: PeerManager, fetch: _LayerFetch, peer: Peer, now: float) -> None:
        if not fetch.asking:
            return
        while (request := fetch.next_request(peer, now)) is not None:
            try:
                sent = manager.send_nowait(peer, request)
            except PeerError:
                # The connection refused it (a duplicate it still waits on): leave the peer.
                fetch.unsend(peer, request)
                fetch.remove_peer(peer)
                return
            if not sent:
                fetch.unsend(peer, request)  # a full queue: another peer, or the next tick
                return

    def _settle(self, manager: PeerManager, fetch: _LayerFetch) -> None:
        for peer, reason in fetch.take_banned():
            self._banned += 1
            # INFO: one remote lied and nothing is for the user to do; once per peer at most.
            _log.info("peer %s banned: %s (torrent %s)", peer.address, reason, fetch.info_hash)
            manager.remove_peer(peer, f"bad piece layer hashes: {reason}")
        if fetch.complete() and not fetch.arrived.is_set():
            # A hook cannot wait: a waiter builds the trees and serves them (_serve_fetched),
            # now, or at the next call if none waits.
            fetch.arrived.set()

    async def _serve_fetched(self, fetch: _LayerFetch) -> None:
        """Serve what ``fetch`` verified (unless stopped), then let its callers have it."""
        fetch.building = True
        layers = fetch.result()
        try:
            # Shielded: the fetch ends here, served or refused, whatever the caller. Only the
            # start of the build could be cancelled (a thread runs to its end); cut there, the
            # fetch would hold a verified layer that no caller serves.
            with trio.CancelScope(shield=True):
                # Again if a stop_serving during the build dropped its trees and a fetch
                # since asked for the layers again (clearing ``stopped``): a fetch that
                # returns them leaves them served. Not if a serve() gave them meanwhile.
                while not fetch.stopped and not self.serving(fetch.info_hash):
                    await self._serve_off_loop(fetch.info, layers)
        except ValueError as error:
            # Should not happen: each chunk verified against the file the fetch asked for,
            # and serve builds the same files' trees (``_wanted`` and ``_trees`` both take
            # ``_layered_files``), even for an info whose files contradict each other. Kept
            # so that a future divergence between what a fetch verifies and what serve
            # builds fails the fetch with its own error, not the peers that answered: they
            # did nothing wrong and stay.
            fetch.failure = (
                f"the piece layers fetched for {fetch.info_hash} cannot be served: {error}"
            )
            _log.warning("%s", fetch.failure)
        else:
            _log.info(
                "fetched the piece layers of %s from peers: %d files, verified",
                fetch.info_hash,
                len(layers),
            )
        finally:
            fetch.building = False
        self._table.forget(fetch)
        fetch.done.set()

    async def _serve_off_loop(self, info: Info, piece_layers: Mapping[bytes, bytes]) -> None:
        """:meth:`serve_async` without its first checkpoint."""
        pieces = sum(-(-length // info.piece_length) for length in _layered_files(info).values())
        if pieces <= _INLINE_TREE_HASHES:
            self.serve(info, piece_layers)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        token = object()
        swarm_ids = info.info_hash.swarm_ids()
        for swarm_id in swarm_ids:
            self._building[swarm_id] = token
        try:
            # A copy of the mapping: the caller's may be replaced meanwhile, not its bytes.
            trees, layers = await trio.to_thread.run_sync(self._trees, info, dict(piece_layers))
        finally:
            current = all(self._building.get(swarm_id) is token for swarm_id in swarm_ids)
            for swarm_id in swarm_ids:
                if self._building.get(swarm_id) is token:
                    del self._building[swarm_id]
        if current:
            self._install(info, trees, layers)
        else:
            _log.debug("the piece layers of %s are not served: stopped while built", info.info_hash)

    def _install(
        self, info: Info, trees: dict[bytes, PieceLayerTree], layers: dict[bytes, bytes]
    ) -> None:
        served = _Served(info.info_hash, trees, layers)
        for swarm_id in info.info_hash.swarm_ids():
            self._served[swarm_id] = served
            self._building.pop(swarm_id, None)  # the latest serve wins over a build under way
        _log.debug("serving the piece layers of %s: %d files", info.info_hash, len(trees))

    def _spend(self, peer: Peer, now: float) -> str | None:
        """Take one request from ``peer``'s budget: None if paid, else why not ("" once said)."""
        budget = self._budgets.get(peer)
        if budget is None:
            budget = self._budgets[peer] = _Budget(float(self._serve_burst), now)
        elapsed = max(0.0, now - budget.updated)
        budget.tokens = min(float(self._serve_burst), budget.tokens + elapsed * self._serve_rate)
        budget.updated = max(budget.updated, now)
        if budget.tokens < 1.0:
            said, budget.refusing = budget.refusing, True
            return "" if said else "over the peer's budget (until it refills, unrecorded)"
        budget.tokens -= 1.0
        budget.refusing = False
        return None

    def _answer(self, manager: PeerManager, peer: Peer, request: HashRequest) -> None:
        # Every request costs from the peer's budget, answered or not: a flood of bad ones is
        # bounded like a flood of good ones, and so are the log records below.
        hashes: bytes | None = None
        refused = self._spend(peer, trio.current_time())
        if refused is not None:
            why = refused
        else:
            served = _lookup(self._served, peer.info_hash)
            tree = None if served is None else served.trees.get(request.pieces_root)
            if tree is None:
                why = "not a file we serve a piece layer of"
            elif request.length > self._max_hashes:
                why = f"{request.length} hashes asked at once (we give {self._max_hashes})"
            else:
                try:
                    hashes = tree.hashes(
                        request.base_layer, request.index, request.length, request.proof_layers
                    )
                except HashRequestError as error:
                    why = error.reason
                else:
                    why = "a layer below the piece layer"
        if hashes is None:
            self._rejected += 1
            if why:
                _log.debug(
                    "hash request from %s for %s rejected: %s",
                    peer.address,
                    request.pieces_root[:4].hex(),
                    why,
                )
        else:
            self._answered += 1
        if peer in self._unsent or not self._send_reply(manager, peer, request, hashes):
            # Behind the answers held already, or refused by a full queue: sent at a tick.
            self._unsent.setdefault(peer, {})[request] = hashes is not None

    def _send_reply(
        self, manager: PeerManager, peer: Peer, request: HashRequest, hashes: bytes | None
    ) -> bool:
        """Queue the answer (``hashes``, else a reject); False if the send queue is full."""
        fields = (
            request.pieces_root,
            request.base_layer,
            request.index,
            request.length,
            request.proof_layers,
        )
        reply = HashReject(*fields) if hashes is None else Hashes(*fields, hashes)
        try:
            return manager.send_nowait(peer, reply)
        except PeerError:
            return True  # the connection will not take it: nothing to send later either

    def _send_unsent(self, manager: PeerManager, peer: Peer) -> None:
        """Send ``peer`` the answers held back, in order, until its queue is full again."""
        held = self._unsent[peer]
        if peer not in manager.peers:
            del self._unsent[peer]  # gone: peer_removed may have run before it was held
            return
        while held:
            request, answer = next(iter(held.items()))
            hashes = self._hashes_again(peer, request) if answer else None
            if not self._send_reply(manager, peer, request, hashes):
                return
            del held[request]
        del self._unsent[peer]

    def _hashes_again(self, peer: Peer, request: HashRequest) -> bytes | None:
        """The hashes of a request answered before, or None if no longer served."""
        served = _lookup(self._served, peer.info_hash)
        tree = None if served is None else served.trees.get(request.pieces_root)
        if tree is None:
            return None
        try:
            return tree.hashes(
                request.base_layer, request.index, request.length, request.proof_layers
            )
        except HashRequestError:  # pragma: no cover - a tree served since for another length
            return None


def _layered_files(info: Info) -> dict[bytes, int]:
    """The length of every file of ``info`` larger than one piece, keyed by pieces root.

    A root named twice is one file's (identical copies). Should an info name files of
    different lengths by one root (bip_metainfo refuses those), the root's length is that of
    the first such file larger than one piece (files of one piece or less, having no layer,
    are passed over first), so that what a fetch verifies and what ``serve`` builds are the
    same tree. libtorrent's ``file_index_for_root`` differs there: it takes the first file
    with the root among all files, whatever its length.
    """
    files: dict[bytes, int] = {}
    for entry in info.files:
        root = entry.pieces_root
        if root is not None and not entry.is_pad and entry.length > info.piece_length:
            files.setdefault(root, entry.length)
    return files
