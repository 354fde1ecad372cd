"""A BEP 46 link followed: the publisher's newer versions reach a running ``bip download``.

A BEP 46 link (``magnet:?xs=urn:btpk:KEY[&s=SALT]``) names a publisher's key, whose DHT item
(BEP 44) names the torrent's current version and a sequence number that grows with each
version. :class:`MutableFollower` keeps the newest version in the session: it looks the key up
again every ``interval`` seconds (one lookup at a time, each bounded by ``timeout``) and, for
an item with a higher ``seq`` naming another torrent, adds that version into the same save
directory, as BEP 39 has a client do with a feed's update: the files both versions share are
checked, not fetched again. The version already complete keeps seeding until the new one
completes (:meth:`MutableFollower.settle`), and is then removed keeping its data: the files
the new version no longer lists stay on disk (logged, never deleted). A version still
downloading when a newer one comes is removed at once (keeping its data too): two versions
must not write the same files at once, and the newer one checks what the older one got.

An item with a lower or equal ``seq``, one naming the running version, a lookup that fails or
times out: nothing changes, and each is logged once (not at every poll).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Final

import trio

from bip_dht import DHT, MutableTorrent
from bip_metainfo import InfoHash, MutableTorrentLink

from ._client import Session, Torrent, TorrentError, TorrentOptions
from ._cmd_dht import lookup_mutable_torrent
from ._errors import CLIError
from ._humanize import format_duration

__all__ = ["MutableFollower", "same_torrent"]

_SHOWN_FILES: Final = 5  # files named in the log line about those left on disk

logger = logging.getLogger("bip")


def same_torrent(a: InfoHash, b: InfoHash) -> bool:
    """Whether two info-hashes name the same torrent: a DHT item's v1 hash names a hybrid
    torrent whose metadata gave it a v2 half as well."""
    return any(swarm_id in b.swarm_ids() for swarm_id in a.swarm_ids())


class MutableFollower:
    """The newest version of a BEP 46 link's torrent, kept in ``session``.

    :meth:`start` adds the first version; :meth:`poll` (run it in a nursery, cancel it to
    stop) looks for newer ones. :attr:`current` is the newest version added, the one a status
    line shows; :attr:`changed` is set when :attr:`current` is replaced (and then renewed).
    Once :attr:`current` completes, :meth:`settle` removes the older version that seeded
    beside it. Every version is added with ``options`` (its ``files`` indices name each
    version's own files).
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
        sequential: bool = False,
    ) -> None:
        """``interval``: seconds between two lookups; ``timeout``: seconds one may take.

        Raises:
            ValueError: ``interval`` or ``timeout`` is not a positive finite number.
        """
        for name, value in (("interval", interval), ("timeout", timeout)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self._session = session
        self._dht = dht
        self._link = link
        self._options = options
        self._interval = interval
        self._timeout = timeout
        self._sequential = sequential
        self._key = link.public_key.hex()
        self._current: Torrent | None = None
        self._seq = 0
        # The complete version seeding while `_current` downloads (None: no update under way).
        self._previous: Torrent | None = None
        self._changed = trio.Event()
        self._lock = trio.Lock()  # a swap (poll) and a settle (the command) never interleave
        # What was last logged, so that a poll repeating it says nothing: the last problem
        # (a failed or late lookup), and the last item ignored (seq, info-hash).
        self._problem: str | None = None
        self._ignored: tuple[int, InfoHash] | None = None

    @property
    def current(self) -> Torrent:
        """The newest version added: downloading, or complete and seeding.

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
        """Set once :attr:`current` is replaced by a newer version; read it anew after."""
        return self._changed

    @property
    def previous(self) -> Torrent | None:
        """The older, complete version seeding while :attr:`current` downloads, if any."""
        return self._previous

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
        cancelled. Never raises for the DHT's sake: a failed lookup is logged."""
        while True:
            await trio.sleep(self._interval)
            found = await self._look_up()
            if found is not None:
                await self.offer(found)

    async def offer(self, found: MutableTorrent) -> None:
        """Take ``found`` (an item the DHT returned) if it is newer than :attr:`current`
        and names another torrent; else log why not, once."""
        async with self._lock:  # compared with the versions as no settle is changing them
            current = self.current
            if found.seq <= self._seq:
                if found.seq < self._seq or not same_torrent(found.info_hash, current.info_hash):
                    self._ignore(found, f"not above version {self._seq}, the one running")
                return
            if same_torrent(found.info_hash, current.info_hash):
                self._ignore(found, "the torrent running already")
                self._seq = found.seq  # later items are measured against it
                return
            await self._replace(found)

    async def settle(self) -> None:
        """Once :attr:`current` is complete: remove the older version that seeded until
        then, keeping its data (nothing to do without one, nor while :attr:`current`, a
        newer version come meanwhile, downloads)."""
        async with self._lock:
            previous = self._previous
            if previous is None or not self.current.completed.is_set():
                return
            self._previous = None
            await self._session.remove_torrent(previous)
            logger.info(
                "key %s: version %d complete: %s removed, its data kept",
                self._key,
                self._seq,
                previous.info_hash,
            )
            _log_files_left(previous, self.current)

    # -- internals ----------------------------------------------------------------------------

    async def _add(self, info_hash: InfoHash) -> Torrent:
        """Add the version ``info_hash`` names.

        Raises:
            CLIError: the session has that torrent already (none but ours is added there,
                and ours are compared first: never expected).
        """
        try:
            torrent = await self._session.add_torrent(self._link.resolved(info_hash), self._options)
        except TorrentError as error:
            raise CLIError(str(error)) from None
        if self._sequential:
            torrent.set_sequential(True)
        return torrent

    async def _look_up(self) -> MutableTorrent | None:
        """The key's newest item now, or None (the problem logged once)."""
        with trio.move_on_after(self._timeout):
            try:
                # A table emptied since the last lookup (our address changed, the nodes
                # left) would answer nothing: join again first.
                if self._dht.statistics().table_size == 0 and await self._dht.bootstrap() == 0:
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

    async def _replace(self, found: MutableTorrent) -> None:
        """Make ``found`` the current version (under the lock)."""
        current = self.current
        previous = self._previous
        if previous is not None and same_torrent(found.info_hash, previous.info_hash):
            # Back to the version still seeding: the update under way is dropped.
            self._previous = None
            self._switch(previous, found.seq)
            await self._session.remove_torrent(current)
            logger.info(
                "key %s: version %d names %s again, seeding it; %s removed, its data kept",
                self._key,
                found.seq,
                previous.info_hash,
                current.info_hash,
            )
            return
        if current.completed.is_set():
            if previous is not None:
                # An update completed and a newer one came before the command settled it:
                # the oldest version goes now (the complete one seeds on in its place).
                await self._session.remove_torrent(previous)
                _log_files_left(previous, current)
            self._previous = current  # seeds until the newer one completes (settle)
        else:
            # Still downloading (the first version, or an update): stopped before the newer
            # one writes the same files; the newer one's check finds what it got.
            await self._session.remove_torrent(current)
        torrent = await self._add(found.info_hash)
        self._switch(torrent, found.seq)
        seeding = self._previous
        logger.info(
            "key %s: version %d names %s: downloading it into %s%s",
            self._key,
            found.seq,
            found.info_hash,
            self._options.save_dir,
            f" ({seeding.info_hash} seeds until it completes)" if seeding is not None else "",
        )

    def _switch(self, torrent: Torrent, seq: int) -> None:
        self._current = torrent
        self._seq = seq
        self._ignored = None
        changed, self._changed = self._changed, trio.Event()
        changed.set()


def _paths(torrent: Torrent) -> Iterable[tuple[str, ...]]:
    info = torrent.info
    return () if info is None else (entry.path for entry in info.files if not entry.is_pad)


def _log_files_left(old: Torrent, new: Torrent) -> None:
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
