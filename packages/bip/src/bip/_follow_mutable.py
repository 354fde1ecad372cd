"""A BEP 46 link followed: the publisher's newer versions reach a running ``bip download``.

A BEP 46 link (``magnet:?xs=urn:btpk:KEY[&s=SALT]``) names a publisher's key, whose DHT item
(BEP 44) names the torrent's current version and a sequence number that grows with each
version. :class:`MutableFollower` keeps one version of the torrent running in the session,
the newest it could take: it looks the key up again every ``interval`` seconds (one lookup at
a time, each bounded by ``timeout``). An item with a higher ``seq`` naming another torrent is
an update, taken in two steps, as BEP 39 has a client do with a feed's update:

1. Its metadata is fetched first, by a *probe*: the new version added with no file selected,
   no resume data and a storage in memory that holds nothing, so that it writes nothing to
   disk. The running version runs on meanwhile, fully: its download, its seeding, its status
   line and its seeding limits. The wait is bounded (``metadata_wait``:
   :data:`MAX_METADATA_WAIT`, or ``interval`` if shorter); an update whose metadata does not
   come within it is dropped, and the running version carries on.
2. Once the metadata is known, the running version is removed (its data kept) and only then
   is the new one added into the same directory: it checks what is there (the files both
   versions share are not fetched again) and downloads the rest. Two versions never run at
   once on the same files: a complete one would serve the bytes the other overwrites, which
   fail its peers' hash checks (and get us banned).

Every version is added from the metadata the probe fetched, kept with it (its info
dictionary, and a v2 torrent's BEP 52 piece layers: a .torrent with the link's trackers and
web seeds; its ``x.pe`` peers and ``so`` selection go in the torrent's options), whatever
``--no-resume`` says: no version whose metadata was known once asks the peers for it again,
which nobody may serve any more (a publisher seeding only its newest version). Only the first
version is added from the link itself (its metadata is not known yet). With resume data on,
that metadata is also saved under ``DIR/.bip`` (the next run takes it from there).

The files the new version no longer lists stay on disk (logged, never deleted). An update that
fails (its files cannot be written, ...) is removed, its data kept, and the version it
replaced is added back, its data checked afresh, and runs on: only the version just before the
running one is remembered, so the first version, or one put back after a failed update, has
none to fall back to, and its failing is fatal. An update dropped or failed is not tried
again until an item with a higher ``seq`` comes. Going back to an earlier version (a later
item names it again) is an update like any other: its data is checked, never trusted to be as
it was left.

An item with a lower or equal ``seq``, one naming the running version, a lookup that fails or
times out: nothing changes, and each is logged once (not at every poll). A lookup the DHT node
refused (:class:`~bip_dht.DHTBusyError`: every lookup slot taken by the session's torrents)
never ran: it is tried again after :data:`BUSY_RETRY` seconds, doubling up to
:data:`BUSY_RETRY_MAX` (and ``interval``), rather than a whole interval later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from bip_bencode import encode
from bip_dht import DHT, DHTBusyError, MutableTorrent
from bip_disk import MemoryFileSystem
from bip_handshake import PeerAddress
from bip_metainfo import Info, InfoHash, MagnetLink, Metainfo, MetainfoError, MutableTorrentLink

from ._client import (
    ResumeStore,
    Session,
    SourceError,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    resolve_peers,
)
from ._client._torrent import must_fetch_layers
from ._cmd_dht import lookup_mutable_torrent
from ._errors import CLIError
from ._humanize import format_duration

__all__ = ["BUSY_RETRY", "BUSY_RETRY_MAX", "MAX_METADATA_WAIT", "MutableFollower", "same_torrent"]

MAX_METADATA_WAIT: Final = 10 * 60.0
"""Seconds an update waits for its metadata at most (less when the follow interval is
shorter): a version nobody serves is dropped after it, and the running one carries on. (The
help of ``--follow-interval`` says "10m".)"""
BUSY_RETRY: Final = 5.0
"""Seconds before a lookup the DHT node refused (busy) is tried again; doubled while it
refuses, up to :data:`BUSY_RETRY_MAX` (and the follow interval)."""
BUSY_RETRY_MAX: Final = 120.0
"""The longest wait between two lookups the DHT node refused."""
_SHOWN_FILES: Final = 5  # files named in the log line about those left on disk

logger = logging.getLogger("bip")


def same_torrent(a: InfoHash, b: InfoHash) -> bool:
    """Whether two info-hashes name the same torrent: a DHT item's v1 hash names a hybrid
    torrent whose metadata gave it a v2 half as well."""
    return any(swarm_id in b.swarm_ids() for swarm_id in a.swarm_ids())


def _hold_nothing(_save_dir: object) -> MemoryFileSystem:
    """A probe's storage: in memory, and never holding a byte (it selects no file)."""
    return MemoryFileSystem(capacity=0)


@dataclass(frozen=True, slots=True)
class _Version:
    """A version that ran: what it takes to add it back."""

    seq: int
    info_hash: InfoHash
    metainfo: Metainfo | None
    """Its metadata (:func:`_as_metainfo`), if it was known: then never asked again."""


class MutableFollower:
    """One version of a BEP 46 link's torrent, kept in ``session``: the newest it could take.

    :meth:`start` adds the first version; :meth:`poll` (run it in a nursery, cancel it to
    stop) looks for newer ones and takes them (:meth:`offer`). :attr:`current` is the version
    running, the one a status line shows; :attr:`changed` is set when another version takes
    its place (and then renewed). When :attr:`current` fails, :meth:`recover` puts the
    version before it back, if there is one. Every version is added with ``options`` (its
    ``files`` indices name each version's own files).
    """

    def __init__(
        self,
        session: Session,
        dht: DHT,
        link: MutableTorrentLink,
        options: TorrentOptions,
        *,
        interval: float,
        timeout: float,
        metadata_wait: float | None = None,
        sequential: bool = False,
    ) -> None:
        """``interval``: seconds between two lookups; ``timeout``: seconds one may take;
        ``metadata_wait``: seconds an update waits for its metadata (``None``:
        :data:`MAX_METADATA_WAIT`, or ``interval`` if shorter).

        Raises:
            ValueError: ``interval``, ``timeout`` or ``metadata_wait`` is not a positive
                finite number.
        """
        if metadata_wait is None:
            metadata_wait = min(MAX_METADATA_WAIT, interval)
        for name, value in (
            ("interval", interval),
            ("timeout", timeout),
            ("metadata_wait", metadata_wait),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self._session = session
        self._dht = dht
        self._link = link
        self._options = options
        self._interval = interval
        self._timeout = timeout
        self._metadata_wait = metadata_wait
        self._sequential = sequential
        self._key = link.public_key.hex()
        self._current: Torrent | None = None
        self._seq = 0
        # The version `_current` replaced: added back if `_current` fails (None: the first).
        self._fallback: _Version | None = None
        # The link's x.pe, resolved at each update (the last success kept): the versions
        # added from their metadata dial them as the link's torrent would.
        self._link_peers: tuple[PeerAddress, ...] = ()
        # The item whose metadata a probe fetches now (None: no update under way).
        self._updating: MutableTorrent | None = None
        # The last update dropped or failed (seq, info-hash): items up to its seq are not
        # tried again.
        self._refused: tuple[int, InfoHash] | None = None
        self._changed = trio.Event()
        # A swap (poll), a recovery and a settle (the command) never interleave.
        self._lock = trio.Lock()
        # What was last logged, so that a poll repeating it says nothing: the last problem
        # (a failed or late lookup), and the last item ignored (seq, info-hash).
        self._problem: str | None = None
        self._ignored: tuple[int, InfoHash] | None = None

    @property
    def current(self) -> Torrent:
        """The version running: downloading, or complete and seeding.

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self._current is None:
            raise RuntimeError("MutableFollower.start was not called")
        return self._current

    @property
    def seq(self) -> int:
        """The sequence number of the item that named :attr:`current`."""
        return self._seq

    @property
    def changed(self) -> trio.Event:
        """Set once another version takes :attr:`current`'s place; read it anew after."""
        return self._changed

    @property
    def updating(self) -> MutableTorrent | None:
        """The item whose version's metadata is being fetched, if any (:attr:`current` runs
        on meanwhile)."""
        return self._updating

    @property
    def metadata_wait(self) -> float:
        """Seconds an update waits for its metadata before it is dropped."""
        return self._metadata_wait

    async def start(self, first: MutableTorrent) -> Torrent:
        """Add the version ``first`` names (resolved already) and return it.

        Raises:
            RuntimeError: called twice.
            CLIError: the session has the torrent already.
        """
        if self._current is not None:
            raise RuntimeError("MutableFollower.start was called already")
        self._current = await self._add(first.info_hash)
        self._seq = first.seq
        return self._current

    async def poll(self) -> None:
        """Look the key up every ``interval`` seconds and take each newer version; until
        cancelled. Never raises for the DHT's sake: a failed lookup is logged, and one the
        node refused (busy) is tried again after :data:`BUSY_RETRY` seconds, doubling up to
        :data:`BUSY_RETRY_MAX` (and ``interval``).

        Raises:
            CLIError: an update failed and the version before it could not be added back.
        """
        wait = self._interval
        busy_retry = min(BUSY_RETRY, self._interval)
        while True:
            await trio.sleep(wait)
            try:
                found = await self._look_up()
            except DHTBusyError:
                # Never ran, so nothing was learnt: not a failed lookup (no warning), and
                # soon again rather than a whole interval later. The DHT logs its refusals.
                logger.debug("key %s: the DHT is busy; next look in %gs", self._key, busy_retry)
                wait = busy_retry
                busy_retry = min(busy_retry * 2, BUSY_RETRY_MAX, self._interval)
                continue
            wait = self._interval
            busy_retry = min(BUSY_RETRY, self._interval)
            if found is not None:
                # At most metadata_wait (not above interval): one update at a time.
                await self.offer(found)

    async def offer(self, found: MutableTorrent) -> None:
        """Take ``found`` (an item the DHT returned) if it is newer than :attr:`current`,
        names another torrent and was not given up already: fetch its metadata (at most
        :attr:`metadata_wait` seconds, :attr:`current` running on), then put it in
        :attr:`current`'s place. Else, or if its metadata does not come, log why, once.

        Raises:
            CLIError: the new version could not be added, nor the running one added back.
        """
        async with self._lock:  # compared with the versions as no swap is changing them
            if not self._is_update(found):
                return
            self._updating = found
        try:
            metainfo = await self._fetch_metadata(found)
            if metainfo is None:
                return
            await self._resolve_link_peers()
            async with self._lock:
                # Never left half done (the command ending cancels the poll): a version
                # removed is always followed by the next one added.
                with trio.CancelScope(shield=True):
                    await self._swap(found, metainfo)
        finally:
            self._updating = None

    async def recover(self, failed: Torrent) -> bool:
        """``failed`` (a version the command showed) failed: if it is :attr:`current` and
        an update, remove it (its data kept) and add the version it replaced back, checked
        afresh (True); if another version replaced it meanwhile, True as well; False when
        it was the first version: nothing is left to run.

        Raises:
            CLIError: the version before it could not be added back.
        """
        async with self._lock:
            if failed is not self._current:
                return True
            fallback = self._fallback
            if fallback is None:
                return False
            with trio.CancelScope(shield=True):  # as a swap: never left half done
                reason = failed.status().error or "failed"
                await self._session.remove_torrent(failed)
                await self._restore(self._seq, failed.info_hash, reason, fallback, then=None)
            return True

    async def settle(self) -> None:
        """Return once no swap is under way: one that started ends first (its logs are
        whole, and :attr:`changed` is set if it replaced the version shown)."""
        async with self._lock:
            pass

    # -- internals ----------------------------------------------------------------------------

    def _is_update(self, found: MutableTorrent) -> bool:
        """Whether ``found`` is an update to take now; if not, say why (once)."""
        current = self.current
        running = same_torrent(found.info_hash, current.info_hash)
        if found.seq <= self._seq:
            if found.seq < self._seq or not running:
                self._ignore(found, f"not above version {self._seq}, the one running")
            return False
        if running:
            self._ignore(found, "the torrent running already")
            self._seq = found.seq  # later items are measured against it
            return False
        refused = self._refused
        if refused is not None and found.seq <= refused[0]:
            self._ignore(
                found, f"version {refused[0]} was given up: not tried again before a newer one"
            )
            return False
        if self._updating is not None:
            self._ignore(found, f"version {self._updating.seq} is being fetched")
            return False
        return True

    async def _fetch_metadata(self, found: MutableTorrent) -> Metainfo | None:
        """The metadata of ``found``'s version (its info dictionary, and a v2 torrent's piece
        layers), fetched by a probe (see the module documentation) within ``metadata_wait``
        seconds; None if it did not come (logged, and the item refused)."""
        logger.info(
            "key %s: version %d names %s: fetching its metadata (at most %s); version %d"
            " runs on meanwhile",
            self._key,
            found.seq,
            found.info_hash,
            format_duration(self._metadata_wait),
            self._seq,
        )
        options = TorrentOptions(
            self._options.save_dir,
            peers=self._options.peers,
            files=frozenset(),  # complete once the metadata is known: nothing is fetched
            resume=False,  # nothing written under DIR/.bip either
            extra_trackers=self._options.extra_trackers,
            storage=_hold_nothing,
            web_seeds=False,  # they serve files, not metadata
            paused=False,
            super_seeding=False,
            auto_managed=False,
        )
        try:
            probe = await self._session.add_torrent(self._link.resolved(found.info_hash), options)
        except TorrentError as error:
            self._give_up(found, str(error))
            return None
        try:
            with trio.move_on_after(self._metadata_wait):
                # A failure ends the wait as well: told apart by the status below. Complete
                # once the info and a v2-only torrent's piece layers are known.
                with contextlib.suppress(TorrentError):
                    await probe.wait_complete()
            status = probe.status()
            info = probe.info
            # Read while the probe is in the session: its piece layers are served till then.
            layers = await self._served_layers(info)
        finally:
            with trio.CancelScope(shield=True):
                await self._session.remove_torrent(probe)
        metainfo = await self._made_metainfo(info, layers)
        if metainfo is None:
            failed = status.phase is TorrentPhase.FAILED
            self._give_up(
                found,
                f"its metadata: {status.error}"
                if failed
                else f"no peer sent its metadata within {format_duration(self._metadata_wait)}",
            )
        return metainfo

    async def _metadata_of(self, torrent: Torrent) -> Metainfo | None:
        """What adds ``torrent``'s version without asking the peers for its metadata: the
        .torrent it was added from, or one made of what it fetched (while it is in the
        session); None if that is not all known (a v2-only torrent's piece layers too)."""
        if torrent.metainfo is not None:
            return torrent.metainfo
        return await self._made_metainfo(torrent.info, await self._served_layers(torrent.info))

    async def _served_layers(self, info: Info | None) -> Mapping[bytes, bytes]:
        """The piece layers of ``info``'s torrent that the session serves (those a torrent
        in it fetched, until it leaves), or none."""
        exchange = self._session.layers
        # fetch() answers from the layers served at once: nothing is asked of the peers
        # (checked just before, with no await between).
        if info is None or not info.is_v2 or not exchange.serving(info.info_hash):
            return {}
        return await exchange.fetch(self._session.manager, info, timeout=self._timeout)

    async def _made_metainfo(
        self, info: Info | None, layers: Mapping[bytes, bytes]
    ) -> Metainfo | None:
        """``info`` and its piece ``layers`` as a version's metadata (:func:`_as_metainfo`);
        None if either is missing (a v2-only torrent's layers are needed to check it)."""
        if info is None or must_fetch_layers(info, layers):
            return None
        try:
            # Up to 4 MiB of info dictionary parsed again: off the event loop.
            return await trio.to_thread.run_sync(_as_metainfo, info, layers, self._link)
        except MetainfoError as error:  # pragma: no cover - the torrent parsed the same info
            logger.debug("%s: metadata not kept (fetched again): %s", info.info_hash, error)
            return None

    async def _resolve_link_peers(self) -> None:
        """Resolve the link's ``x.pe`` for the versions added from their metadata (a torrent
        added from the link resolves them itself), at most ``timeout`` seconds; a failure
        is logged and the last addresses found are kept."""
        if not self._link.peers:
            return
        with trio.move_on_after(self._timeout):
            try:
                self._link_peers = await resolve_peers(list(self._link.peers))
            except SourceError as error:
                logger.warning("key %s: x.pe: %s", self._key, error)

    async def _swap(self, found: MutableTorrent, metainfo: Metainfo) -> None:
        """Put ``found``'s version (whose metadata is ``metainfo``) in :attr:`current`'s
        place (under the lock, shielded): the running one is removed first, its data kept."""
        old = self.current
        replaced = _Version(self._seq, old.info_hash, await self._metadata_of(old))
        await self._session.remove_torrent(old)
        logger.info(
            "key %s: version %d (%s): metadata known; version %d (%s) removed, its data kept;"
            " the new one checks what is in %s and downloads the rest",
            self._key,
            found.seq,
            found.info_hash,
            replaced.seq,
            replaced.info_hash,
            self._options.save_dir,
        )
        _log_files_left(old.info, metainfo.info)
        try:
            torrent = await self._add(found.info_hash, metainfo)
        except CLIError as error:
            await self._restore(
                found.seq, found.info_hash, str(error), replaced, then=self._fallback
            )
            return
        self._fallback = replaced
        self._switch(torrent, found.seq)

    async def _restore(
        self,
        seq: int,
        info_hash: InfoHash,
        reason: str,
        fallback: _Version,
        *,
        then: _Version | None,
    ) -> None:
        """The update ``info_hash`` (item ``seq``) failed for ``reason`` (and is out of
        the session): add ``fallback`` back, to run on; ``then`` is the version before it.

        Raises:
            CLIError: ``fallback`` could not be added.
        """
        self._refused = (seq, info_hash)
        logger.warning(
            "key %s: version %d (%s) failed: %s; removed, its data kept. Version %d (%s) runs"
            " on, its data checked again; version %d is not tried again before a newer one",
            self._key,
            seq,
            info_hash,
            reason,
            fallback.seq,
            fallback.info_hash,
            seq,
        )
        torrent = await self._add(fallback.info_hash, fallback.metainfo)
        self._fallback = then
        self._switch(torrent, fallback.seq)

    def _give_up(self, found: MutableTorrent, reason: str) -> None:
        """Drop the update ``found`` named (logged): not tried again before a newer item."""
        self._refused = (found.seq, found.info_hash)
        logger.warning(
            "key %s: version %d (%s) dropped: %s; version %d carries on, and version %d is"
            " not tried again before a newer one",
            self._key,
            found.seq,
            found.info_hash,
            reason,
            self._seq,
            found.seq,
        )

    async def _add(self, info_hash: InfoHash, metainfo: Metainfo | None = None) -> Torrent:
        """Add the version ``info_hash`` names: from its metadata ``metainfo`` if known (never
        asked of the peers again; saved with the resume files too, if they are on), else
        from the link.

        Raises:
            CLIError: the session refused it (has that torrent already, or is closing).
        """
        source: Metainfo | MagnetLink
        options = self._options
        kept: Path | None = None
        if metainfo is None:
            source = self._link.resolved(info_hash)
        else:
            source = metainfo
            options = self._options_from_metadata(metainfo.info)
            if options.resume:
                kept = await self._keep(metainfo)
        try:
            torrent = await self._session.add_torrent(source, options)
        except TorrentError as error:
            if kept is not None:  # not left behind for a version that never ran
                await _forget(kept)
            raise CLIError(str(error)) from None
        if self._sequential:
            torrent.set_sequential(True)
        return torrent

    def _options_from_metadata(self, info: Info) -> TorrentOptions:
        """The options of a version added from its metadata (``info``): what a torrent added
        from the link takes from it besides (its ``x.pe`` peers, its ``so`` selection unless
        the options choose the files, without indices past ``info``'s files, as libtorrent
        ignores them) is put in them."""
        options = self._options
        peers = tuple(dict.fromkeys((*options.peers, *self._link_peers)))
        files = options.files
        chosen = options.file_priorities is not None or files is not None
        if not chosen and self._link.select_only is not None:
            last = len(info.files) - 1
            files = frozenset(
                index
                for low, high in self._link.select_only
                for index in range(low, min(high, last) + 1)
            )
        return dataclasses.replace(options, peers=peers, files=files)

    async def _keep(self, metainfo: Metainfo) -> Path | None:
        """Save ``metainfo`` with the version's resume files (a later run that names it
        again reads it there); the file's path if written here, None if it was there
        already or could not be written."""
        path = ResumeStore(self._options.save_dir, metainfo.info.info_hash).torrent_path
        if await trio.Path(path).exists():
            return None
        try:
            await ResumeStore(self._options.save_dir, metainfo.info.info_hash).save_info(
                metainfo.info, metainfo.piece_layers
            )
        except OSError as error:
            logger.debug("%s: metadata not saved: %s", metainfo.info.info_hash, error)
            return None
        return path

    async def _look_up(self) -> MutableTorrent | None:
        """The key's newest item now, or None (the problem logged once).

        Raises:
            DHTBusyError: the DHT node refused the lookup, or the join it needed first
                (every lookup slot taken).
        """
        with trio.move_on_after(self._timeout):
            try:
                # A table with nobody left to ask (emptied: our address changed; or full of
                # bad nodes after an outage) would answer nothing: join again first, by the
                # DHT's own rule (never beside a bootstrap of the node under way, whose end
                # it waits for, within the lookup's own bound).
                if not await self._dht.join_if_needed(timeout=self._timeout):
                    raise CLIError("no DHT node answered")
                found = await lookup_mutable_torrent(self._dht, self._link)
            except CLIError as error:
                self._report(str(error))
                return None
            if self._problem is not None:
                logger.info("key %s: the DHT answers again", self._key)
                self._problem = None
            return found
        self._report(f"the DHT did not answer within {self._timeout:g} s")
        return None

    def _report(self, problem: str) -> None:
        if problem == self._problem:
            logger.debug("key %s: lookup failed again: %s", self._key, problem)
            return
        self._problem = problem
        logger.warning(
            "key %s: looking for a newer version: %s; version %d carries on, next look in %s",
            self._key,
            problem,
            self._seq,
            format_duration(self._interval),
        )

    def _ignore(self, found: MutableTorrent, why: str) -> None:
        seen = (found.seq, found.info_hash)
        if seen == self._ignored:
            return
        self._ignored = seen
        logger.info(
            "key %s: version %d (%s) ignored: %s", self._key, found.seq, found.info_hash, why
        )

    def _switch(self, torrent: Torrent, seq: int) -> None:
        self._current = torrent
        self._seq = seq
        self._ignored = None
        changed, self._changed = self._changed, trio.Event()
        changed.set()


def _paths(info: Info | None) -> Iterable[tuple[str, ...]]:
    return () if info is None else (entry.path for entry in info.files if not entry.is_pad)


def _log_files_left(old: Info | None, new: Info) -> None:
    """Say which files ``old`` listed and ``new`` does not: they stay on disk."""
    left = sorted(set(_paths(old)) - set(_paths(new)))
    if not left:
        return
    shown = ", ".join("/".join(path) for path in left[:_SHOWN_FILES])
    more = f" and {len(left) - _SHOWN_FILES} more" if len(left) > _SHOWN_FILES else ""
    logger.info(
        "%d file(s) of the old version are not in the new one and stay on disk (bip deletes"
        " no data): %s%s",
        len(left),
        shown,
        more,
    )


def _as_metainfo(info: Info, layers: Mapping[bytes, bytes], link: MutableTorrentLink) -> Metainfo:
    """A version's metadata as a .torrent: ``info`` (its bytes unchanged), its piece
    ``layers`` and ``link``'s trackers (one tier, as a magnet link's) and web seeds.
    Blocking (the info dictionary is parsed again): run it in a thread.

    Raises:
        MetainfoError: a layer does not hash to its file's root (never for a fetched one).
    """
    fields: dict[bytes, bytes] = {b"info": info.to_bytes()}
    if link.trackers:
        fields[b"announce-list"] = encode([[url.encode() for url in link.trackers]])
    if layers:
        fields[b"piece layers"] = encode(dict(layers))
    if link.web_seeds:
        fields[b"url-list"] = encode([url.encode() for url in link.web_seeds])
    # Sorted keys: canonical bencoding, with the info dictionary's own bytes (its hash kept).
    body = b"".join(encode(key) + fields[key] for key in sorted(fields))
    return Metainfo.from_bytes(b"d" + body + b"e")


async def _forget(path: Path) -> None:
    """Delete ``path``, a metadata file saved for a version the session refused, and its
    ``.bip`` directory if nothing else is in it; a failure is logged only."""

    def delete() -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            logger.warning("cannot delete %s: %s", path, error)
        with contextlib.suppress(OSError):  # not empty (another torrent's files), or gone
            path.parent.rmdir()

    await trio.to_thread.run_sync(delete)
