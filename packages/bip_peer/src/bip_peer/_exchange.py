"""The BEP 9 metadata exchange and BEP 11 peer exchange as :class:`PeerService` plug-ins.

Both ride along every connection of a :class:`~bip_peer.PeerManager`
(``PeerManagerConfig(services=[...])`` or :meth:`PeerManager.add_service`) and drive the
sans-IO cores of :mod:`bip_peer._metadata` and :mod:`bip_peer._pex`:

- :class:`MetadataExchange` adds ``ut_metadata`` (and, for torrents it serves,
  ``metadata_size``) to our extended handshake, answers the peers' metadata requests from the
  info dictionaries given to :meth:`~MetadataExchange.serve` (never a private torrent's:
  BEP 27, as libtorrent, whose peers see no ``ut_metadata`` at all), and fetches a torrent's
  dictionary from every connected peer that has it (:meth:`~MetadataExchange.fetch`), in
  parallel, paced as libtorrent's ``ut_metadata`` (one request to a new peer, then one per
  answer and one per one-second tick, two in flight at most; one for rtorrent, which goes deaf
  on a request that finds its last reply unsent), verified against the
  info-hash; peers that send bad data are removed (a quiet one is not: it is asked again
  after ``stall_backoff``, and the manager's ``idle_timeout`` drops one that sends nothing).
  A fetch that times out keeps the pieces it got for the next fetch of the torrent, until the
  dictionary verifies or :meth:`~MetadataExchange.stop_serving` forgets them (at most
  ``max_kept_fetches`` such fetches are kept, the least recently asked forgotten first).
- :class:`PeerExchange` adds ``ut_pex`` to our extended handshake, tells every peer that
  speaks it about our other peers of the same torrent (whichever of its hashes they joined
  under: a hybrid torrent's v1 and v2 peers are one swarm; at most once a minute, at most 50
  added and 50 dropped per message) and hands the addresses peers tell us about, after the
  :class:`~bip_peer._pex.PexInbox` checks, to a :class:`~bip_handshake.PeerSink` with the
  source ``"pex"``. It remembers which connected peer told it each address, with the flags
  it gave, so that a dial that fails can ask that peer to relay a BEP 55 holepunch
  (:meth:`~PeerExchange.relay_for`).

Every hook runs in a manager task and never blocks; messages go out with
:meth:`PeerManager.send_nowait` (a message that finds a full queue is dropped: a metadata
request is then retried after its timeout; a PEX diff is not: PEX is advisory, and the next
diff does not repeat it).
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

import trio

from bip_bencode import BencodeDecodeError, decode
from bip_handshake import PeerAddress, PeerSink
from bip_metainfo import InfoHash

from ._errors import LocalProtocolError, PeerError
from ._extended import (
    DEFAULT_EXTENSION_IDS,
    HOLEPUNCH_EXTENSION,
    ExtendedHandshake,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    PexMessage,
)
from ._manager import Peer, PeerManager
from ._metadata import (
    DEFAULT_MAX_METADATA_SIZE,
    DEFAULT_METADATA_REJECT_BACKOFF,
    DEFAULT_METADATA_REQUEST_INTERVAL,
    DEFAULT_METADATA_REQUEST_TIMEOUT,
    DEFAULT_METADATA_REREQUEST_DELAY,
    DEFAULT_METADATA_STALL_BACKOFF,
    DEFAULT_SERVE_BURST,
    DEFAULT_SERVE_RATE,
    MetadataFetcher,
    MetadataServer,
    info_matches,
)
from ._pex import (
    DEFAULT_PEX_INTERVAL,
    DEFAULT_PEX_MAX_ADDED,
    DEFAULT_PEX_MAX_DROPPED,
    DEFAULT_PEX_MAX_KNOWN,
    DEFAULT_PEX_MIN_RECEIVE_INTERVAL,
    DEFAULT_PEX_RECEIVE_LIMIT,
    PexFlags,
    PexInbox,
    PexOutbox,
    _OurAddresses,
)

__all__ = [
    "DEFAULT_MAX_KEPT_FETCHES",
    "DEFAULT_PEX_MAX_SOURCES",
    "METADATA_EXTENSION",
    "PEX_EXTENSION",
    "PEX_SOURCE",
    "MetadataExchange",
    "MetadataExchangeStatistics",
    "MetadataFetchError",
    "PeerExchange",
    "PeerExchangeStatistics",
    "PexRelay",
]

METADATA_EXTENSION: Final = "ut_metadata"
"""The BEP 10 name of the metadata extension (BEP 9)."""
PEX_EXTENSION: Final = "ut_pex"
"""The BEP 10 name of the peer exchange extension (BEP 11)."""
PEX_SOURCE: Final = "pex"
"""The source name :class:`PeerExchange` gives a :class:`~bip_handshake.PeerSink`."""
DEFAULT_PEX_MAX_SOURCES: Final = 2000
"""Addresses per torrent whose PEX sources :class:`PeerExchange` remembers (the oldest told
is forgotten first): ten peers' worth of libtorrent's 200 each."""
DEFAULT_MAX_KEPT_FETCHES: Final = 64
"""Fetches with no caller waiting that :class:`MetadataExchange` and
:class:`~bip_peer.PieceLayerExchange` keep for the next call (a timed-out fetch's pieces, or a
private dictionary a late answer completed); the least recently asked is forgotten beyond it."""
_SOURCES_PER_ADDRESS: Final = 4  # a few relays to choose from; more adds nothing but memory

# Two components, two loggers: users tune the metadata exchange and PEX separately.
_metadata_log = logging.getLogger("bip_peer.metadata")
_pex_log = logging.getLogger("bip_peer.pex")


class MetadataFetchError(PeerError):
    """:meth:`MetadataExchange.fetch` ended without a verified info dictionary (timeout)."""


_T = TypeVar("_T")


def _lookup(table: Mapping[bytes, _T], info_hash: InfoHash) -> _T | None:
    for swarm_id in info_hash.swarm_ids():
        found = table.get(swarm_id)
        if found is not None:
            return found
    return None


def _lookup_private(private: set[bytes], info_hash: InfoHash) -> bool:
    return not private.isdisjoint(info_hash.swarm_ids())


def _same_torrent(a: InfoHash, b: InfoHash) -> bool:
    return not set(a.swarm_ids()).isdisjoint(b.swarm_ids())


class _Kept(Protocol):
    """What :class:`_FetchTable` needs of a fetch."""

    waiters: int
    stopped: bool

    @property
    def info_hash(self) -> InfoHash: ...

    @property
    def done(self) -> trio.Event: ...


_F = TypeVar("_F", bound=_Kept)


class _FetchTable(Generic[_F]):
    """An exchange's fetches by swarm id, and which of them no caller waits on: those are
    kept, asking nothing, for the next call (least recently asked first, at most
    ``max_kept``), until the torrent stops being served."""

    def __init__(self, max_kept: int) -> None:
        self.by_swarm: dict[bytes, _F] = {}
        self._kept: OrderedDict[int, _F] = OrderedDict()
        self._max_kept = max_kept

    @property
    def kept(self) -> int:
        """Fetches kept with no caller waiting."""
        return len(self._kept)

    def waited_on(self) -> int:
        """Fetches with a caller waiting."""
        return len({id(fetch) for fetch in self.by_swarm.values() if fetch.waiters})

    def add(self, fetch: _F) -> None:
        """Index a new fetch under each of its swarm ids."""
        for swarm_id in fetch.info_hash.swarm_ids():
            self.by_swarm[swarm_id] = fetch

    def ask(self, fetch: _F) -> bool:
        """A caller waits on ``fetch`` (served once fetched): whether it is the only one."""
        fetch.stopped = False
        fetch.waiters += 1
        self._kept.pop(id(fetch), None)
        return fetch.waiters == 1

    def leave(self, fetch: _F) -> None:
        """A caller stopped waiting: the last one leaves an unfinished fetch kept, or
        forgotten when its torrent stopped being served."""
        fetch.waiters -= 1
        if fetch.waiters == 0 and not fetch.done.is_set():
            if fetch.stopped:
                self.forget(fetch)
            else:
                self.keep(fetch)

    def keep(self, fetch: _F) -> None:
        """Keep ``fetch``, which no caller waits on, for the next call; forget the least
        recently asked beyond ``max_kept``."""
        self._kept[id(fetch)] = fetch
        self._kept.move_to_end(id(fetch))
        while len(self._kept) > self._max_kept:
            _, oldest = self._kept.popitem(last=False)
            self.forget(oldest)

    def forget(self, fetch: _F) -> None:
        """Drop ``fetch`` from the table."""
        self._kept.pop(id(fetch), None)
        for swarm_id in fetch.info_hash.swarm_ids():
            if self.by_swarm.get(swarm_id) is fetch:
                del self.by_swarm[swarm_id]

    def stop(self, info_hash: InfoHash) -> None:
        """The torrent is no longer served: its fetch goes on for the callers waiting (what
        it fetches is not served), and is forgotten once none waits."""
        fetches = {
            id(fetch): fetch for s in info_hash.swarm_ids() if (fetch := self.by_swarm.get(s))
        }
        for fetch in fetches.values():
            if fetch.waiters:
                fetch.stopped = True
            else:
                self.forget(fetch)


# The bytes every info dictionary with a BEP 27 private flag holds; see _is_private_info.
_PRIVATE_FLAG_MARK: Final = b"7:privatei"


def _is_private_info(info: bytes) -> bool:
    """Whether the info dictionary ``info`` has its BEP 27 ``private`` flag set (a non-zero
    int, as bip_metainfo's ``Info`` and libtorrent read it).

    Most dictionaries are public, and decoding one takes about a second for 4 MB of files:
    those are told apart by a byte search first, and only a dictionary that passes it is
    decoded. The search misses no private dictionary: a dictionary's keys are bencoded byte
    strings, and the decoder (lenient or not) takes a length only without leading zeros, so
    the key ``private`` can only be the bytes ``7:private``; the value follows its key at
    once, and an int (the only value that makes the torrent private) starts with ``i``. So a
    private dictionary holds ``7:privatei``; one that holds it elsewhere (a file named so, a
    ``17:privatei...`` string, ``private`` at 0) only pays the decode.
    """
    if _PRIVATE_FLAG_MARK not in info:
        return False
    try:
        # Bounded by the caller: a dictionary the client parsed already (its values counted),
        # or one fetched within max_size.
        fields = decode(info, lenient=True)
    except BencodeDecodeError:
        return False  # not a torrent anyone can use: the session refuses it anyway
    if not isinstance(fields, dict):
        return False
    private = fields.get(b"private")
    return type(private) is int and private != 0


def _check_kept(max_kept_fetches: object) -> int:
    """Refuse a ``max_kept_fetches`` that is not a non-negative int."""
    if (
        isinstance(max_kept_fetches, bool)
        or not isinstance(max_kept_fetches, int)
        or max_kept_fetches < 0
    ):
        raise ValueError(f"max_kept_fetches must be a non-negative int, got {max_kept_fetches!r}")
    return max_kept_fetches


def _check_extension_id(extension_id: object) -> None:
    """Refuse an extended message id that is not an int in 1..255 (0 is the handshake)."""
    if isinstance(extension_id, bool) or not isinstance(extension_id, int):
        raise ValueError(f"extension_id must be an int in 1..255, got {extension_id!r}")
    if not 1 <= extension_id <= 255:
        raise ValueError(f"extension_id must be in 1..255, got {extension_id}")


def _is_rtorrent(peer: Peer, handshake: ExtendedHandshake) -> bool:
    """Whether the peer runs rakshasa's libTorrent (rtorrent): its ``v`` or its peer id says so.

    rtorrent 0.9.8 (libTorrent 0.13.8) stops reading a connection whose ``ut_metadata``
    request arrives while its reply to the previous one is unsent; libtorrent's pacing sends
    a second request at a tick, which finds a slow reply unsent. So it is asked one at a time.
    """
    client = handshake.v or ""
    return client.startswith("libTorrent ") or peer.peer_id.value.startswith(b"-lt")


def _offers(peer: Peer, extension: str) -> bool:
    return bool(peer.connection.their_extension_ids.get(extension))


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True, slots=True)
class MetadataExchangeStatistics:
    """A snapshot of a :class:`MetadataExchange`'s counters.

    Attributes:
        serving: torrents whose dictionary we serve.
        fetching: fetches under way (a caller waiting); not those that timed out and keep
            their pieces for the next call.
        requests_answered: pieces sent to peers.
        requests_rejected: requests rejected (unknown torrent, out of range, over budget).
        pieces_fetched: pieces accepted by fetches.
        peers_banned: peers removed for sending bad metadata.
        kept: fetches with no caller waiting, kept for the next call (at most
            ``max_kept_fetches``).
    """

    serving: int
    fetching: int
    requests_answered: int
    requests_rejected: int
    pieces_fetched: int
    peers_banned: int
    kept: int = 0


class _Fetch:
    """One fetch: the sans-IO fetcher and the tasks waiting for it.

    With no task waiting, the fetch is kept, asking nothing, with the pieces it got (and the
    answers still coming to its requests) for the next call, or with the dictionary a late
    answer completed when it could not be served (a private torrent's). What it holds is
    bounded: pieces of at most ``max_size`` bytes in all (those of a size no peer offers now
    included), the peers connected, and the bans of those still connected (a ban is
    forgotten with its peer's connection); the exchange keeps at most ``max_kept_fetches``.
    """

    __slots__ = ("done", "fetcher", "info_hash", "stopped", "waiters")

    def __init__(self, info_hash: InfoHash, fetcher: MetadataFetcher[Peer]) -> None:
        self.info_hash = info_hash
        self.fetcher = fetcher
        self.done = trio.Event()
        self.waiters = 0
        # stop_serving was called since the last call: not served once fetched, and forgotten
        # when its last waiter leaves.
        self.stopped = False


class MetadataExchange:
    """BEP 9 over a :class:`~bip_peer.PeerManager`: serve our info dictionaries, fetch others.

    A private torrent's dictionary (BEP 27: its ``private`` flag set) is never served, as
    libtorrent adds no ``ut_metadata`` to a private torrent with metadata: the peers that
    connect once :meth:`serve` was refused for privacy see no ``ut_metadata`` in our
    extended handshake (until :meth:`stop_serving`), and any request is rejected, so that
    the dictionary only reaches those the private tracker gave it to. Fetching one (a magnet,
    before its dictionary says it is private) works as any other.

    Args:
        extension_id: the id we give ``ut_metadata`` in our extended handshake.
        max_size: the largest dictionary :meth:`fetch` accepts.
        request_timeout: seconds before an unanswered request times out (its peer's slot is
            freed, and the timeout counted against the peer).
        rerequest_delay: seconds after which a piece still unanswered is asked of another
            peer too (libtorrent's 3 s); the first request's late answer still counts.
        reject_backoff: seconds a peer that rejected a request is left alone.
        stall_backoff: seconds a peer whose requests timed out again and again is left
            alone (then asked again, its timeouts forgotten). It is not removed for that, as
            libtorrent disconnects for no ``ut_metadata`` silence: a paused or slow seeder's
            answers may still come. (rtorrent, which stops reading a connection asked for a
            piece while its last reply is unsent, is asked one piece at a time.)
        serve_burst: pieces a peer may fetch from us at once.
        serve_rate: pieces per second a peer's budget refills at.
        max_kept_fetches: fetches with no caller waiting kept for the next call (those that
            timed out, with the pieces they got); the least recently asked is forgotten
            beyond it (its pieces are fetched again if it is asked for again).
    """

    message_types = (ExtendedHandshake, MetadataRequest, MetadataData, MetadataReject)
    """The messages its :meth:`message_received` takes, the manager's only questions to it
    (:class:`~bip_peer.PeerService`): a peer's extended handshake offers it to a fetch."""

    def __init__(
        self,
        *,
        extension_id: int = DEFAULT_EXTENSION_IDS[METADATA_EXTENSION],
        max_size: int = DEFAULT_MAX_METADATA_SIZE,
        request_timeout: float = DEFAULT_METADATA_REQUEST_TIMEOUT,
        rerequest_delay: float = DEFAULT_METADATA_REREQUEST_DELAY,
        reject_backoff: float = DEFAULT_METADATA_REJECT_BACKOFF,
        stall_backoff: float = DEFAULT_METADATA_STALL_BACKOFF,
        serve_burst: int = DEFAULT_SERVE_BURST,
        serve_rate: float = DEFAULT_SERVE_RATE,
        max_kept_fetches: int = DEFAULT_MAX_KEPT_FETCHES,
    ) -> None:
        _check_extension_id(extension_id)
        self._extension_id = extension_id
        self._fetcher_options: dict[str, float] = {
            "max_size": max_size,
            "request_timeout": request_timeout,
            "rerequest_delay": rerequest_delay,
            "reject_backoff": reject_backoff,
            "stall_backoff": stall_backoff,
            # Paced as libtorrent's ut_metadata (see bip_peer._metadata): rtorrent goes deaf
            # on a connection asked for two pieces back to back.
            "request_interval": DEFAULT_METADATA_REQUEST_INTERVAL,
        }
        # Fail at construction, not at the first fetch.
        MetadataFetcher(InfoHash(v1=bytes(20)), **self._fetcher_options)  # type: ignore[arg-type]
        self._serve_burst = serve_burst
        self._serve_rate = serve_rate
        self._servers: dict[bytes, MetadataServer[Peer]] = {}
        # Swarm ids of the torrents serve() refused as private: no ut_metadata for their peers.
        self._private: set[bytes] = set()
        self._table: _FetchTable[_Fetch] = _FetchTable(_check_kept(max_kept_fetches))
        self._fetches = self._table.by_swarm  # looked up by swarm id
        self._answered = 0
        self._rejected = 0
        self._fetched = 0
        self._banned = 0

    # -- public API ----------------------------------------------------------------------

    def serve(self, info_hash: InfoHash, info_bytes: bytes, *, private: bool | None = None) -> None:
        """Answer metadata requests for ``info_hash`` from ``info_bytes``, unless the
        torrent is private (its ``private`` flag set): nothing is served for that one.

        Peers connected from now on see ``metadata_size`` in our extended handshake; those
        of a private torrent see no ``ut_metadata`` at all. Serving a torrent served already
        keeps the peers' request budgets (a magnet's dictionary is served once fetched, then
        again by the client that parsed it).

        Args:
            info_hash: the torrent's info-hash, which ``info_bytes`` must hash to.
            info_bytes: the bencoded info dictionary.
            private: the dictionary's ``private`` flag, when the caller parsed it already
                (the ``private`` of a :class:`~bip_metainfo.Info`); None to have it read here, which
                decodes a dictionary that may be private (a byte search rules most public
                ones out first), on the caller's thread.

        Raises:
            ValueError: ``info_bytes`` does not hash to ``info_hash``.
        """
        info = bytes(info_bytes)
        if not info_matches(info_hash, info):
            raise ValueError(f"the info dictionary does not hash to {info_hash}")
        if private is None:
            private = _is_private_info(info)
        if private:
            self.stop_serving(info_hash)
            self._private.update(info_hash.swarm_ids())
            _metadata_log.debug("not serving the metadata of %s: the torrent is private", info_hash)
            return
        self._private.difference_update(info_hash.swarm_ids())
        server = _lookup(self._servers, info_hash)
        if server is None:
            server = MetadataServer(info, burst=self._serve_burst, rate=self._serve_rate)
        # else: the same bytes (both hash to info_hash), and its budgets are the peers' still.
        for swarm_id in info_hash.swarm_ids():
            self._servers[swarm_id] = server
        _metadata_log.debug("serving the metadata of %s: %d bytes", info_hash, len(info))

    def stop_serving(self, info_hash: InfoHash) -> None:
        """Reject metadata requests for ``info_hash`` from now on, forget that it is private
        (its peers see ``ut_metadata`` again: a torrent removed, then added again as a magnet,
        fetches its dictionary), and forget what its fetches kept (call it when the torrent
        goes: a fetch that timed out keeps the pieces it got until then).

        A fetch of the torrent with a caller waiting goes on for that caller, but what it
        fetches is not served, and is forgotten once no caller waits.
        """
        for swarm_id in info_hash.swarm_ids():
            self._servers.pop(swarm_id, None)
            self._private.discard(swarm_id)
        self._table.stop(info_hash)

    def serving(self, info_hash: InfoHash) -> bool:
        """Whether we serve ``info_hash``'s dictionary."""
        return _lookup(self._servers, info_hash) is not None

    async def fetch(self, manager: PeerManager, info_hash: InfoHash, *, timeout: float) -> bytes:
        """The info dictionary of ``info_hash``, from the manager's peers, verified.

        Every peer of the torrent that offers ``ut_metadata`` takes part, those connected
        already and those added while the fetch runs. Keep consuming
        :meth:`PeerManager.events` meanwhile (the readers wait for the consumer). Peers that
        send bad data are removed from the manager. Once fetched, the dictionary is served
        to other peers (:meth:`serve`), unless private. Two fetches of one torrent share the
        work.

        A fetch that times out, or whose callers are all cancelled, asks nothing more but
        keeps the pieces it got (and the peers it found lying, while they stay connected),
        and takes the answers to its requests that still come: the next fetch of the
        torrent goes on from there, if it names the same hashes (one naming others starts
        again, so that the dictionary returned hashes to every hash the caller names). A
        private dictionary such an answer completes is kept for the next fetch too (it is
        never served). :meth:`stop_serving` forgets them; so does a ``max_kept_fetches``-th
        fetch kept after them, the least recently asked first.

        Raises:
            MetadataFetchError: no verified dictionary within ``timeout`` seconds.
            LocalProtocolError: this exchange is not one of the manager's services (it would
                never see the answers).
        """
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not any(service is self for service in manager.services):
            raise LocalProtocolError(
                "add the MetadataExchange to the manager's services before fetching"
            )
        server = _lookup(self._servers, info_hash)
        if server is not None:
            await trio.lowlevel.checkpoint()
            if not info_matches(info_hash, server.info_bytes):
                # Served under hashes that share a swarm id with the caller's: the same
                # torrent, but not the dictionary every hash the caller names names.
                raise MetadataFetchError(
                    f"the metadata served for this torrent does not hash to {info_hash}"
                )
            return server.info_bytes
        fetch = _lookup(self._fetches, info_hash)
        if fetch is not None and fetch.info_hash != info_hash and not fetch.waiters:
            done = fetch.fetcher.result()
            if done is None or not info_matches(info_hash, done):
                # Kept under other hashes, it checks a dictionary against those: fewer than
                # the caller names would let through one that fails the others, more might
                # never be met. Started again under the caller's (nobody waits on it).
                self._table.forget(fetch)
                fetch = None
        if fetch is None:
            fetcher: MetadataFetcher[Peer] = MetadataFetcher(
                info_hash,
                **self._fetcher_options,  # type: ignore[arg-type]
            )
            fetch = _Fetch(info_hash, fetcher)
            self._table.add(fetch)
            _metadata_log.debug("fetching the metadata of %s from peers", info_hash)
        if self._table.ask(fetch):  # asked for again: served once fetched
            # New, or kept since an earlier call: asking again, of every peer that offers it.
            self._offer_all(manager, fetch)
        try:
            with trio.move_on_after(timeout):
                await fetch.done.wait()
        finally:
            self._table.leave(fetch)
        result = fetch.fetcher.result()
        if result is None:
            raise MetadataFetchError(
                f"no verified metadata for {info_hash} within {timeout} s "
                f"({fetch.fetcher.statistics()})"
            )
        self._table.forget(fetch)  # kept done (not served): the caller has it now
        if fetch.info_hash != info_hash and not info_matches(info_hash, result):
            # Another caller's fetch, under hashes of its own, got it: the same torrent
            # (they share a swarm id), but not the dictionary this caller's hashes name.
            raise MetadataFetchError(
                f"the metadata fetched for {fetch.info_hash} does not hash to {info_hash}"
            )
        return result

    def statistics(self) -> MetadataExchangeStatistics:
        """A snapshot of the counters."""
        return MetadataExchangeStatistics(
            serving=len({id(server) for server in self._servers.values()}),
            fetching=self._table.waited_on(),
            requests_answered=self._answered,
            requests_rejected=self._rejected,
            pieces_fetched=self._fetched,
            peers_banned=self._banned,
            kept=self._table.kept,
        )

    # -- PeerService -------------------------------------------------------------------------

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """``ut_metadata`` (as libtorrent), with ``metadata_size`` when we serve the torrent;
        nothing for a torrent refused as private (libtorrent adds no ``ut_metadata`` to a
        private torrent with metadata)."""
        if _lookup_private(self._private, peer.info_hash):
            return {}
        fields: dict[str, object] = {"m": {METADATA_EXTENSION: self._extension_id}}
        server = _lookup(self._servers, peer.info_hash)
        if server is not None:
            fields["metadata_size"] = server.metadata_size
        return fields

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to do until the peer's extended handshake arrives."""

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Answer requests, feed data and rejects to the fetch; note extended handshakes."""
        if isinstance(message, ExtendedHandshake):
            fetch = _lookup(self._fetches, peer.info_hash)
            if fetch is not None:
                self._offer(manager, fetch, peer, trio.current_time())
            return False  # other services and the owner see handshakes too
        if isinstance(message, MetadataRequest):
            self._answer(manager, peer, message)
            return True
        if isinstance(message, MetadataData | MetadataReject):
            fetch = _lookup(self._fetches, peer.info_hash)
            if fetch is not None:
                now = trio.current_time()
                if isinstance(message, MetadataData):
                    before = fetch.fetcher.statistics()
                    fetch.fetcher.on_data(peer, message, now)
                    after = fetch.fetcher.statistics()
                    self._fetched += after.pieces_received - before.pieces_received
                    if after.hash_failures > before.hash_failures:
                        _metadata_log.debug(
                            "the metadata of %s assembled from %d pieces does not match the "
                            "info-hash; fetching it again%s",
                            fetch.info_hash,
                            before.pieces_total,
                            ", one peer at a time" if after.single_source else "",
                        )
                else:
                    fetch.fetcher.on_reject(peer, message, now)
                self._settle(manager, fetch)
                if not fetch.done.is_set():
                    self._pump(manager, fetch, peer, now)
            return True
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Forget the peer in its torrent's fetch and server."""
        fetch = _lookup(self._fetches, peer.info_hash)
        if fetch is not None:
            fetch.fetcher.remove_peer(peer)
        server = _lookup(self._servers, peer.info_hash)
        if server is not None:
            server.forget(peer)

    def tick(self, manager: PeerManager, now: float) -> None:
        """Expire requests and ask again, every fetch, every peer."""
        # A fetch leaves the table when it is done: every one here is under way, or kept for
        # a later call (asking nothing until then).
        for fetch in {id(fetch): fetch for fetch in self._fetches.values()}.values():
            if not fetch.waiters:
                continue
            fetch.fetcher.handle_timer(now)
            for peer in fetch.fetcher.peers:
                self._pump(manager, fetch, peer, now)

    # -- internals -------------------------------------------------------------------------

    def _offer_all(self, manager: PeerManager, fetch: _Fetch) -> None:
        # A method of its own: the loop's variable would hold the last peer (its connection)
        # in fetch's frame for as long as the caller waits.
        now = trio.current_time()
        for peer in manager.peers:
            if _same_torrent(fetch.info_hash, peer.info_hash):
                self._offer(manager, fetch, peer, now)

    def _offer(self, manager: PeerManager, fetch: _Fetch, peer: Peer, now: float) -> None:
        handshake = peer.extended_handshake
        if handshake is None:
            return
        if not _offers(peer, METADATA_EXTENSION):
            # Not a disconnect: its ban, if any, and its part in a failed assembly stay.
            fetch.fetcher.withdraw_peer(peer)
            return
        one_at_a_time = _is_rtorrent(peer, handshake)
        if fetch.fetcher.add_peer(peer, handshake.metadata_size, one_at_a_time=one_at_a_time):
            self._pump(manager, fetch, peer, now)
        else:
            self._settle(manager, fetch)  # a second change of size banned it: drop it

    def _pump(self, manager: PeerManager, fetch: _Fetch, peer: Peer, now: float) -> None:
        if not fetch.waiters:
            return  # kept for a later call: asks nothing until then
        while (request := fetch.fetcher.next_request(peer, now)) is not None:
            try:
                sent = manager.send_nowait(peer, request)
            except PeerError:
                # The peer withdrew ut_metadata in a later handshake: not ours to ask.
                fetch.fetcher.withdraw_peer(peer)
                return
            if not sent:
                return  # a full queue: the request times out and goes elsewhere

    def _settle(self, manager: PeerManager, fetch: _Fetch) -> None:
        for peer, reason in fetch.fetcher.take_banned():
            self._banned += 1
            # INFO, not WARNING: one remote misbehaved and nothing is for the user to do; a
            # peer is banned once at most, so the records are bounded by the liars.
            _metadata_log.info(
                "peer %s banned: %s (torrent %s)", peer.address, reason, fetch.info_hash
            )
            manager.remove_peer(peer, f"bad metadata: {reason}")
        result = fetch.fetcher.result()
        if result is not None and not fetch.done.is_set():
            _metadata_log.info(
                "fetched the metadata of %s from peers: %d bytes, verified",
                fetch.info_hash,
                len(result),
            )
            # Whether it is private is read here, in a manager task, not in a thread: a hook
            # cannot wait. The decode is paid only by a dictionary that passes the byte search
            # (a private one, mostly), at most max_size bytes, once per fetch; the session
            # parses the dictionary in a thread next and serves it again with its flag. Not
            # once stopped (the torrent went meanwhile): its callers still get it.
            stopped = fetch.stopped  # serve() stops serving a private torrent: read it first
            if not stopped:
                self.serve(fetch.info_hash, result)
            self._table.forget(fetch)
            if not (stopped or fetch.waiters or self.serving(fetch.info_hash)):
                # A private dictionary (never served) that a late answer brought, nobody
                # waiting: kept for the next call, which would otherwise fetch it all again.
                self._table.add(fetch)
                self._table.keep(fetch)
            fetch.done.set()

    def _answer(self, manager: PeerManager, peer: Peer, request: MetadataRequest) -> None:
        server = _lookup(self._servers, peer.info_hash)
        reply: MetadataData | MetadataReject
        if server is None:
            reply = MetadataReject(request.piece)
        else:
            reply = server.answer(peer, request, trio.current_time())
        if isinstance(reply, MetadataData):
            self._answered += 1
        else:
            self._rejected += 1
        # A full queue drops the reply (the peer asks again after its timeout).
        with contextlib.suppress(PeerError):
            # PeerError: a request from a peer that never offered ut_metadata itself, so it
            # has no id to receive the answer under.
            manager.send_nowait(peer, reply)


# ------------------------------------------------------------------------------- PEX


@dataclass(frozen=True, slots=True)
class PeerExchangeStatistics:
    """A snapshot of a :class:`PeerExchange`'s counters.

    Attributes:
        messages_sent: PEX messages sent.
        messages_received: PEX messages taken.
        messages_ignored: PEX messages ignored (for a private torrent), or whose added
            addresses were (sooner than ``min_receive_interval``: their drops still count).
        addresses_discovered: addresses handed to the sink.
        addresses_ignored: addresses dropped by the inbox checks (of the peers that left
            too: every counter here only grows).
    """

    messages_sent: int
    messages_received: int
    messages_ignored: int
    addresses_discovered: int
    addresses_ignored: int


@dataclass(frozen=True, slots=True)
class PexRelay:
    """A connected peer that told us about an address over PEX: a relay candidate (BEP 55).

    Attributes:
        peer: the peer that listed the address (still connected when returned).
        flags: the flags it gave with the address.
    """

    peer: Peer
    flags: PexFlags

    @property
    def can_relay(self) -> bool:
        """Whether ``peer`` offered ``ut_holepunch``: it would relay a rendezvous."""
        return _offers(self.peer, HOLEPUNCH_EXTENSION)

    @property
    def target_supports_holepunch(self) -> bool:
        """Whether ``peer`` flagged the address as speaking ``ut_holepunch`` (0x08)."""
        return PexFlags.HOLEPUNCH in self.flags


class _PexPeer:
    __slots__ = ("inbox", "outbox")

    def __init__(self, inbox: PexInbox, outbox: PexOutbox) -> None:
        self.inbox = inbox
        self.outbox = outbox


class _TorrentSources:
    """One torrent's PEX sources: each address a connected peer listed, with the peers that
    listed it (newest last) and their flags, in the order last told (the least recently told
    is forgotten first); and the swarm ids it is found under in :class:`PeerExchange`."""

    __slots__ = ("by_address", "swarm_ids")

    def __init__(self) -> None:
        self.by_address: OrderedDict[PeerAddress, list[tuple[Peer, PexFlags]]] = OrderedDict()
        self.swarm_ids: set[bytes] = set()


def _inbox_ignored(inbox: PexInbox) -> int:
    """The addresses ``inbox`` refused, for whatever reason."""
    stats = inbox.statistics()
    return (
        stats.ignored_excess
        + stats.ignored_invalid
        + stats.ignored_self
        + stats.ignored_local
        + stats.ignored_known
    )


def _by_torrent(peers: Iterable[Peer]) -> list[list[Peer]]:
    """``peers`` grouped by torrent: two peers whose info-hashes share a swarm id are of one.

    A hybrid torrent's peers carry the hash they joined under: a v2-only magnet's early
    peers the v2 hash alone, those that joined after its metadata both. Keyed by one swarm
    id, they would be two swarms never told of each other; libtorrent lists every
    connection of the torrent.
    """
    # A peer joins the group its ids name (appended: O(1)); one whose ids name several
    # merges them, the smaller into the larger, so each tick stays about linear in peers.
    groups: dict[bytes, tuple[set[bytes], list[Peer]]] = {}
    for peer in peers:
        ids = peer.info_hash.swarm_ids()
        found = list({id(g): g for swarm_id in ids if (g := groups.get(swarm_id))}.values())
        if not found:
            group: tuple[set[bytes], list[Peer]] = (set(), [])
        else:
            found.sort(key=lambda g: len(g[1]), reverse=True)
            group = found[0]
            for other_ids, other_peers in found[1:]:
                group[0].update(other_ids)
                group[1].extend(other_peers)
                for swarm_id in other_ids:
                    groups[swarm_id] = group
        group[1].append(peer)
        for swarm_id in ids:
            if swarm_id not in group[0]:
                group[0].add(swarm_id)
                groups[swarm_id] = group
    return [members for _, members in {id(g): g for g in groups.values()}.values()]


class PeerExchange:
    """BEP 11 over a :class:`~bip_peer.PeerManager`: tell peers about peers, and listen.

    Args:
        sink: where received addresses go (a :class:`~bip_handshake.Handshaker`, usually),
            with the source ``"pex"``.
        extension_id: the id we give ``ut_pex`` in our extended handshake.
        our_addresses: our listening addresses, never taken from a peer's list (more can be
            added later: :meth:`add_our_address`).
        is_private: tells whether a torrent is private (BEP 27: no PEX at all for those).
            Asked again on every PEX message and tick (once per torrent and hash its peers
            joined under, a tick): a magnet found private stops PEX with the peers that
            joined before its metadata.
        interval: seconds between two messages to one peer.
        max_added: added addresses per message we send.
        max_dropped: dropped addresses per message we send.
        min_receive_interval: seconds after a peer's message during which its next ones have
            their added addresses ignored (their drops are applied). 0, the default, takes
            every message within the flood allowance, as libtorrent does (see
            :data:`~bip_peer.DEFAULT_PEX_MIN_RECEIVE_INTERVAL`).
        max_per_message: added addresses taken from one received message.
        max_known: addresses remembered per peer.
        max_sources: addresses per torrent whose sources :meth:`relay_for` remembers.
    """

    message_types = (PexMessage,)
    """The messages its :meth:`message_received` takes, the manager's only questions to it
    (:class:`~bip_peer.PeerService`)."""

    def __init__(
        self,
        sink: PeerSink,
        *,
        extension_id: int = DEFAULT_EXTENSION_IDS[PEX_EXTENSION],
        our_addresses: Iterable[PeerAddress] = (),
        is_private: Callable[[InfoHash], bool] | None = None,
        interval: float = DEFAULT_PEX_INTERVAL,
        max_added: int = DEFAULT_PEX_MAX_ADDED,
        max_dropped: int = DEFAULT_PEX_MAX_DROPPED,
        min_receive_interval: float = DEFAULT_PEX_MIN_RECEIVE_INTERVAL,
        max_per_message: int = DEFAULT_PEX_RECEIVE_LIMIT,
        max_known: int = DEFAULT_PEX_MAX_KNOWN,
        max_sources: int = DEFAULT_PEX_MAX_SOURCES,
    ) -> None:
        _check_extension_id(extension_id)
        if isinstance(max_sources, bool) or not isinstance(max_sources, int) or max_sources < 0:
            raise ValueError(f"max_sources must be a non-negative int, got {max_sources!r}")
        self._max_sources = max_sources
        # Every swarm id of a torrent's peers -> that torrent's sources (one object under
        # each: a hybrid torrent's v1 and v2 peers share it).
        self._sources: dict[bytes, _TorrentSources] = {}
        self._sink = sink
        self._extension_id = extension_id
        self._ours = _OurAddresses(our_addresses)
        self._is_private = is_private
        self._outbox_options = {
            "interval": interval,
            "max_added": max_added,
            "max_dropped": max_dropped,
        }
        self._inbox_options = {
            "min_interval": min_receive_interval,
            "max_per_message": max_per_message,
            "max_known": max_known,
        }
        # Fail at construction, not at the first peer.
        PexOutbox(**self._outbox_options)  # type: ignore[arg-type]
        PexInbox(**self._inbox_options)  # type: ignore[arg-type]
        self._peers: dict[Peer, _PexPeer] = {}
        self._sent = 0
        self._received = 0
        self._ignored = 0
        self._discovered = 0
        # Addresses the inboxes of peers gone refused: the counter must not fall as they go.
        self._ignored_by_gone = 0

    def statistics(self) -> PeerExchangeStatistics:
        """A snapshot of the counters."""
        ignored_addresses = self._ignored_by_gone + sum(
            _inbox_ignored(state.inbox) for state in self._peers.values()
        )
        return PeerExchangeStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            messages_ignored=self._ignored,
            addresses_discovered=self._discovered,
            addresses_ignored=ignored_addresses,
        )

    @property
    def our_addresses(self) -> frozenset[PeerAddress]:
        """The addresses taken as ours (normalised): never taken from a peer's list."""
        return self._ours.all()

    def add_our_address(self, address: PeerAddress) -> None:
        """Take ``address`` as ours from now on, for the peers connected now and later: a
        client that learns its external address adds it with each listening port, so that a
        peer listing it is not followed into a dial to ourselves. At most
        :data:`~bip_peer.MAX_OUR_ADDRESSES` are added this way (the oldest added is forgotten
        first); already known is no error.

        Raises:
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        self._ours.add(address)  # every inbox shares it

    def remove_our_address(self, address: PeerAddress) -> None:
        """No longer take ``address`` as ours (our external address changed), for every
        peer; unknown is no error. Only an address added with :meth:`add_our_address` goes:
        one given at construction (a listening address) stays ours, even if it was added too.

        Raises:
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        self._ours.discard(address)  # every inbox shares it

    def relay_for(self, info_hash: InfoHash, address: PeerAddress) -> PexRelay | None:
        """A connected peer of ``info_hash`` that told us about ``address``, or None.

        The client asks this when a dial to ``address`` fails: the peer that listed it is
        likely connected to it, so it can relay a BEP 55 rendezvous
        (:meth:`~bip_peer.HolepunchService.rendezvous`). Of the peers that listed it (the
        last few are remembered), one that offered ``ut_holepunch`` comes first, then one that
        flagged the address as speaking it, then the most recent. Addresses that peer
        reported dropped, and peers that left, are forgotten. The peers of every hash of the
        torrent count (a hybrid torrent's v1 and v2 peers), whichever of them ``info_hash``
        has.
        """
        address = address.normalized()
        entries = [
            entry
            for table in self._tables(info_hash)
            for entry in table.by_address.get(address, ())
        ]
        best: PexRelay | None = None
        best_rank = (-1, -1)
        for peer, flags in reversed(entries):  # newest first: ties keep the newest
            relay = PexRelay(peer, flags)
            rank = (int(relay.can_relay), int(relay.target_supports_holepunch))
            if rank > best_rank:
                best, best_rank = relay, rank
        return best

    def _remember_sources(
        self,
        peer: Peer,
        added: Iterable[tuple[PeerAddress, PexFlags]],
        dropped: Iterable[PeerAddress],
    ) -> None:
        if self._max_sources == 0:
            return
        table = self._joined(peer.info_hash).by_address
        for address in dropped:
            entries = table.get(address)
            if entries is not None:
                entries[:] = [entry for entry in entries if entry[0] is not peer]
                if not entries:
                    del table[address]
        for address, flags in added:
            entries = table.get(address)
            if entries is None:
                entries = table[address] = []
            else:
                entries[:] = [entry for entry in entries if entry[0] is not peer]
                table.move_to_end(address)
            entries.append((peer, flags))
            del entries[:-_SOURCES_PER_ADDRESS]
        while len(table) > self._max_sources:
            table.popitem(last=False)

    def _tables(self, info_hash: InfoHash) -> list[_TorrentSources]:
        """The sources found under any swarm id of ``info_hash``: one, or several a peer of
        the torrent's full hash has not joined yet (none when nobody told anything)."""
        found = {
            id(table): table
            for swarm_id in info_hash.swarm_ids()
            if (table := self._sources.get(swarm_id)) is not None
        }
        return list(found.values())

    def _joined(self, info_hash: InfoHash) -> _TorrentSources:
        """The sources of ``info_hash``'s torrent, found under each of its swarm ids; made if
        new. Sources made under different ids of one torrent (its v1 peers' and its v2
        peers', before one of its full hash spoke) become one."""
        tables = self._tables(info_hash)
        table = tables[0] if tables else _TorrentSources()
        for other in tables[1:]:
            # The other's addresses count as told after this one's: an approximation of
            # their order that only decides which goes first past max_sources.
            for address, entries in other.by_address.items():
                mine = table.by_address.setdefault(address, [])
                mine += [e for e in entries if all(e[0] is not m[0] for m in mine)]
                del mine[:-_SOURCES_PER_ADDRESS]
            table.swarm_ids |= other.swarm_ids
        while len(table.by_address) > self._max_sources:
            table.by_address.popitem(last=False)
        table.swarm_ids.update(info_hash.swarm_ids())
        for swarm_id in table.swarm_ids:
            self._sources[swarm_id] = table
        return table

    def _forget_sources(self, peer: Peer) -> None:
        for table in self._tables(peer.info_hash):
            sources = table.by_address
            for address in [
                a for a, entries in sources.items() if any(e[0] is peer for e in entries)
            ]:
                entries = [entry for entry in sources[address] if entry[0] is not peer]
                if entries:
                    sources[address] = entries
                else:
                    del sources[address]
            if not sources:
                for swarm_id in table.swarm_ids:
                    if self._sources.get(swarm_id) is table:
                        del self._sources[swarm_id]

    # -- PeerService -------------------------------------------------------------------------

    def _private(self, info_hash: InfoHash) -> bool:
        return self._is_private is not None and self._is_private(info_hash)

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """``ut_pex``, except for private torrents."""
        if self._private(peer.info_hash):
            return {}
        return {"m": {PEX_EXTENSION: self._extension_id}}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Start the peer's inbox and outbox."""
        if self._private(peer.info_hash):
            return
        self._peers[peer] = _PexPeer(
            PexInbox(
                peer_address=peer.address,
                # Ours, shared: a copy would fix the addresses learnt so far in this
                # inbox, to drift from ours as they are evicted or changed.
                our_addresses=self._ours,
                **self._inbox_options,  # type: ignore[arg-type]
            ),
            PexOutbox(**self._outbox_options),  # type: ignore[arg-type]
        )

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Take a PEX message: check it, and hand the new addresses to the sink.

        A peer of a torrent found private since it connected (a magnet's metadata says so)
        has its PEX state dropped and the message ignored (BEP 27).

        Raises:
            RemoteProtocolError: the peer floods (its inbox's limit on messages a minute),
                which removes it.
        """
        if not isinstance(message, PexMessage):
            return False
        if self._private(peer.info_hash):
            self._stop(peer)
            self._ignored += 1
            return True
        state = self._peers.get(peer)
        if state is None:
            self._ignored += 1
            return True
        before = state.inbox.statistics().ignored_too_soon
        update = state.inbox.receive(message, trio.current_time())
        too_soon = state.inbox.statistics().ignored_too_soon
        if too_soon > before:
            self._ignored += 1
            # Once per peer: a peer that sends often must not flood the log too (its count is
            # in the inbox's statistics).
            if too_soon == 1:
                _pex_log.debug(
                    "PEX message from %s: added addresses ignored, sent sooner than "
                    "min_receive_interval after the previous one (later ones without a record)",
                    peer.address,
                )
        else:
            self._received += 1
        # The inbox knows the sender by the address it came from; a peer that dialled us came
        # from an ephemeral port, so its listening address (which it may list) is left out here.
        own = _listed(peer)
        added = [(a, f) for a, f in update.added if own is None or a != own[0]]
        addresses = [a for a, _ in added]
        self._remember_sources(peer, added, update.dropped)
        _pex_log.debug(
            "PEX message from %s: %d new addresses (of %d listed), %d dropped",
            peer.address,
            len(addresses),
            len(message.added) + len(message.added6),
            len(update.dropped),
        )
        if addresses:
            self._discovered += len(addresses)
            self._sink.discovered(peer.info_hash, addresses, PEX_SOURCE)
        return True

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Forget the peer (the others hear it dropped in their next message)."""
        state = self._peers.pop(peer, None)
        if state is not None:
            self._ignored_by_gone += _inbox_ignored(state.inbox)
            self._forget_sources(peer)

    def _stop(self, peer: Peer) -> None:
        """Forget the PEX state of ``peer``, whose torrent turned out private.

        A magnet's peers join before its metadata says whether it is private: those that
        joined meanwhile got PEX state, which must go once it is known (BEP 27: no PEX).
        """
        state = self._peers.pop(peer, None)
        if state is not None:
            self._ignored_by_gone += _inbox_ignored(state.inbox)
            self._forget_sources(peer)
            _pex_log.debug("PEX with %s stopped: its torrent is private", peer.address)

    def tick(self, manager: PeerManager, now: float) -> None:
        """Send each peer that speaks ``ut_pex`` the news about its torrent's other peers,
        whichever of the torrent's hashes they joined under (none to, nor about, the peers
        of a torrent found private since they joined)."""
        torrents: list[list[Peer]] = []
        for peers in _by_torrent(list(self._peers)):
            # Asked once per hash the torrent's peers joined under: any may be the one the
            # client knows the torrent private by.
            hashes = {peer.info_hash.swarm_ids(): peer.info_hash for peer in peers}
            if any(self._private(info_hash) for info_hash in hashes.values()):
                for peer in peers:
                    self._stop(peer)
            else:
                torrents.append(peers)
        for peers in torrents:
            listed = {peer: _listed(peer) for peer in peers}
            for peer in peers:
                if not _offers(peer, PEX_EXTENSION):
                    continue
                state = self._peers[peer]
                if now < state.outbox.next_due():
                    continue
                own = listed[peer]
                current = {
                    address: flags
                    for other, entry in listed.items()
                    if other is not peer and entry is not None
                    for address, flags in (entry,)
                    if own is None or address != own[0]
                }
                message = state.outbox.update(current, now)
                if message is None:
                    continue
                # A full queue drops the message; the outbox already counts it as told, so
                # the next diff will not repeat it (PEX is advisory; libtorrent does likewise).
                with contextlib.suppress(PeerError):
                    if manager.send_nowait(peer, message):
                        self._sent += 1


def _listed(peer: Peer) -> tuple[PeerAddress, PexFlags] | None:
    """The address other peers can reach ``peer`` at, with its PEX flags; None if unknown.

    A peer we dialled is reachable where we reached it. A peer that dialled us came from an
    ephemeral port: it is listed only with the listen port of its extended handshake
    (``p``), as libtorrent does.
    """
    handshake = peer.extended_handshake
    flags = PexFlags.NONE
    if peer.direction == "outbound":
        address = peer.address
        flags |= PexFlags.REACHABLE
    else:
        port = None if handshake is None else handshake.p
        if not port:
            return None
        address = PeerAddress(peer.address.host, port)
    connection = peer.connection
    if connection.peer_has_all or connection.peer_upload_only:
        flags |= PexFlags.SEED
    if peer.encryption == "rc4" or (handshake is not None and handshake.extra.get(b"e") == 1):
        flags |= PexFlags.PREFERS_ENCRYPTION
    if peer.transport == "utp":
        # BEP 11's 0x04: we talk to it over uTP, so it speaks uTP (libtorrent sets it the
        # same way, whichever side connected, and tries uTP first on such peers).
        flags |= PexFlags.UTP
    if handshake is not None and handshake.m.get(HOLEPUNCH_EXTENSION):
        # BEP 11's 0x08: the peer offered ut_holepunch, so a peer we tell about it may ask
        # us to relay a rendezvous to it.
        flags |= PexFlags.HOLEPUNCH
    return address, flags
