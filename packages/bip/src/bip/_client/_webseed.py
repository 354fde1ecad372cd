"""A BEP 19 web seed as a virtual peer of a torrent's swarm brain.

As libtorrent's ``web_peer_connection``: a :class:`WebSeed` joins the bip_select brain like a
peer that has every piece, never chokes us and takes requests, so the brain picks its blocks
as for any peer (rarest first, end-game, timeouts and verification stay in one place). The
brain's requests queue here; each of at most :data:`MAX_WEB_SEED_REQUESTS` workers takes the
oldest queued block with the queued blocks that follow it in the piece space (up to
:data:`MAX_RUN` bytes), fetches the file ranges they cover (:class:`WebSeedLayout`; pad bytes
are zeros) with :class:`WebSeedClient`, and hands each block still wanted to the torrent as if
a peer had sent it. A piece that then fails its hash check and came from the web seed alone
is taken, as libtorrent's ``web_peer_connection::received_invalid_data`` takes it, as a sign
that the server's copy of its file differs from the torrent's (a mirror with one file updated
since): the web seed no longer offers that file (or that piece, if it spans files), and the
brain fetches it from others (:meth:`WebSeed.lacks_bad_piece`, which the torrent asks before
the brain hears the verdict). The piece still costs it trust, as libtorrent's
``torrent::piece_failed`` takes it whatever ``received_invalid_data`` says: not banned as the
piece's sole source, it is banned at the brain's ``ban_trust`` (its fourth bad piece with no
good ones between), so a mirror whose every file differs is not fetched whole as garbage.
Once it has nothing left to offer (a single-file torrent's one file) it is banned as the
piece's sole source, and it stops. A bad piece it shared with peers counts against it as
against them.

When a fetch fails its blocks go back to the brain (rejected); a fetch none of whose blocks is
wanted any more (cancelled, timed out, choked) is abandoned and its connection closed. A file
the server does not have or will not give (404, 410, 403... any 4xx but 429: see
``_webseed_http``), or that keeps failing (a 5xx, say) :data:`MAX_FILE_FAILURES` times in a
row while other files are served meanwhile, is no longer offered: the brain is told the web
seed lacks its pieces (BEP 54's "don't have"), and those come from peers. A busy server's
answer (``429``, or ``503`` with a ``Retry-After``) counts against no file. Files refused
:data:`MAX_REFUSALS` times in a row with nothing served between are a server refusing us
(a 403 for all): each further refusal also makes it back off, as below. A request our own
rules refuse (libtorrent's ``ssrf_mitigation`` and ``allow_idna``:
:class:`WebSeedBlockedError`) would be refused again: the web seed leaves at once. Any other
failure makes the web seed choke us for a delay growing from :data:`RETRY_DELAY` (libtorrent's
``urlseed_wait_retry``; longer if a busy server's ``Retry-After`` asks, up to
:data:`MAX_RETRY_DELAY`), after which it is tried again; after :data:`MAX_FAILURES` failures in
a row it leaves the brain for this run. One outage is one failure, however many requests it
failed: a request begun before the last delay, or failing during it, counts nothing. Once the
torrent is complete it needs nothing more from its web seeds (libtorrent disconnects them
then): :meth:`WebSeed.finish` stops the workers, and the torrent tells the brain it left. Each
change of state is logged once, at INFO on the ``bip.client`` logger.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from bip_select import (
    REASON_BAD_DATA,
    REASON_BANNED,
    Action,
    Block,
    BlockRejected,
    DropPeer,
    Input,
    PeerChokedUs,
    PeerDontHave,
    PeerHaveAll,
    PeerJoined,
    PeerLeft,
    PeerUnchokedUs,
    SendCancel,
    SendRequest,
)

from ._webseed_http import (
    WebSeedBlockedError,
    WebSeedClient,
    WebSeedError,
    WebSeedFileMissingError,
)
from ._webseed_layout import WebSeedFilesError, WebSeedLayout, WebSeedUrlError, shown_url

__all__ = [
    "MAX_FAILURES",
    "MAX_FILE_FAILURES",
    "MAX_REFUSALS",
    "MAX_RUN",
    "MAX_WEB_SEED_REQUESTS",
    "RETRY_DELAY",
    "WEB_SEED_REQQ",
    "WebSeed",
    "WebSeedState",
]

logger = logging.getLogger("bip.client")

MAX_WEB_SEED_REQUESTS: Final = 4
"""HTTP requests in flight to one web seed at most."""
MAX_RUN: Final = 1024 * 1024
"""Bytes one HTTP request asks for at most (a run of contiguous blocks): what a worker holds."""
WEB_SEED_REQQ: Final = 256
"""Blocks the brain may keep requested from one web seed (its ``reqq``): 4 MiB, what the
workers can have in flight together."""
RETRY_DELAY: Final = 30.0
"""Seconds before a failing web seed is tried again, doubled on each failure in a row
(libtorrent's ``urlseed_wait_retry``), up to :data:`MAX_RETRY_DELAY`."""
MAX_RETRY_DELAY: Final = 300.0
"""Seconds a failing web seed waits at most before it is tried again, whatever its
``Retry-After`` says."""
MAX_FAILURES: Final = 5
"""Failures in a row after which a web seed is given up for this run (one per outage: see
:class:`WebSeed`)."""
MAX_FILE_FAILURES: Final = 3
"""Failures in a row of one file (a 5xx, a wrong range, a trickle... each the first of its
outage, so each after a delay), other files served since the first, after which the web
seed no longer offers that file (libtorrent gives a file up on its first error status).
A busy server's answer (``429``, or ``503`` with a ``Retry-After``) is about the server, not
the file: it backs off, and counts nothing here.
Without it, the other files' successes would start the count of failures afresh each time,
and the file would choke the whole web seed every :data:`RETRY_DELAY` seconds for ever. A
server failing every file serves nothing meanwhile: it backs off, and is given up."""
MAX_REFUSALS: Final = 3
"""Files refused in a row (a 4xx), nothing served between, after which the server is taken
as refusing us (a 403 for all: hotlink protection, a geo block, a login) rather than lacking
those files: each further refusal, still marking its file missing, makes it back off as any
failure (libtorrent backs off ``urlseed_wait_retry`` after every refusal; a mirror lacking
a few files among those it serves is spared the delays). Without it, such a server was
asked once per file, back to back, until every file was marked missing."""


class WebSeedState(enum.Enum):
    """Where a web seed stands: ``ACTIVE`` (serving), ``WAITING`` (failed, tried again after
    a delay), ``GONE`` (given up, or every file missing), ``BANNED`` (sent bad data),
    ``DONE`` (the torrent completed: nothing more to fetch)."""

    ACTIVE = "active"
    WAITING = "waiting"
    GONE = "gone"
    BANNED = "banned"
    DONE = "done"


Deliver = Callable[["WebSeed", Block, bytes], Awaitable[None]]
Feed = Callable[["WebSeed", Input], None]


class WebSeed:
    """One web seed URL of one torrent: a virtual peer (see the module docstring).

    The brain knows it by this object (its peer key). The torrent joins it to the brain
    (:meth:`join_inputs`), routes the brain's actions for it to :meth:`act`, and runs
    :meth:`run` in its nursery.

    Args:
        layout: the torrent's files on this web seed.
        client: the HTTP client.
        deliver: stores a block fetched (awaited), then tells the brain
            (:class:`~bip_select.BlockReceived`).
        feed: gives the brain an input about this web seed (a no-op once it left).
        piece_length: the torrent's piece length, to place blocks in the piece space.
    """

    def __init__(
        self,
        layout: WebSeedLayout,
        client: WebSeedClient,
        *,
        deliver: Deliver,
        feed: Feed,
        piece_length: int,
    ) -> None:
        self.layout = layout
        self.shown = shown_url(layout.base)
        self._client = client
        self._deliver = deliver
        self._feed = feed
        self._piece_length = piece_length
        self.state = WebSeedState.ACTIVE
        self._queued: dict[Block, int] = {}  # requested, not yet taken: block -> its offset
        self._by_offset: dict[int, Block] = {}
        self._wanted: set[Block] = set()  # requested and not cancelled (queued or in flight)
        self._runs: dict[trio.CancelScope, list[Block]] = {}  # the runs being fetched
        self._missing: set[int] = set()  # files the server does not have
        self._failures = 0
        # How many times it was tried again: a failure of a fetch begun before the last
        # delay is of the outage already counted.
        self._period = 0
        self._served = 0  # file ranges fetched whole
        self._refused = 0  # files refused (4xx) since the last range served
        # Files failing in a row: file -> (failures, _served at the first). One entry per
        # outage at most (per delay), dropped when the file is served.
        self._file_failures: dict[int, tuple[int, int]] = {}
        self._work = trio.Event()
        self._stopped = trio.Event()
        self.downloaded = 0
        """Payload bytes handed to the torrent."""

    def __repr__(self) -> str:
        return f"<web seed {self.shown}>"

    @property
    def usable(self) -> bool:
        """Whether it still takes part (active, or waiting to be tried again)."""
        return self.state in (WebSeedState.ACTIVE, WebSeedState.WAITING)

    def _waiting(self) -> bool:
        return self.state is WebSeedState.WAITING

    def join_inputs(self) -> list[Input]:
        """What to feed the brain when it joins: a peer with every piece that unchoked us."""
        return [PeerJoined(self, reqq=WEB_SEED_REQQ), PeerHaveAll(self), PeerUnchokedUs(self)]

    # -- the brain's actions ------------------------------------------------------------------

    def act(self, action: Action) -> None:
        """Carry out the brain's ``action`` for this web seed (requests and cancels; the rest,
        chokes and haves, mean nothing to a web server)."""
        if isinstance(action, SendRequest):
            block = action.block
            if not self.usable or block in self._wanted:
                return
            offset = block.piece * self._piece_length + block.begin
            self._wanted.add(block)
            self._queued[block] = offset
            self._by_offset[offset] = block
            self._work.set()
        elif isinstance(action, SendCancel):
            self._forget(action.block)
        elif isinstance(action, DropPeer):
            self._dropped(action.reason)

    def finish(self, reason: str) -> None:
        """Stop for good because the torrent needs nothing more from it (it is complete).

        Nothing it was asked for is given back, and nothing counts as a failure: the
        fetches in flight are abandoned, and its workers end (:meth:`run` returns). The
        caller tells the brain it left (:class:`~bip_select.PeerLeft`). Nothing happens if
        it already stopped (given up, banned).
        """
        if not self.usable:
            return
        self._set_state(WebSeedState.DONE, reason)
        self._clear()

    def _forget(self, block: Block) -> None:
        self._wanted.discard(block)
        offset = self._queued.pop(block, None)
        if offset is not None:
            self._by_offset.pop(offset, None)
        # In flight: a run none of whose blocks is wanted any more (the brain cancelled them,
        # timed them out, or had them from peers in end-game) is abandoned, its connection
        # closed. A server trickling its answer holds a worker no longer than the brain
        # waits for the blocks.
        for scope, run in self._runs.items():
            if block in run and not any(other in self._wanted for other in run):
                scope.cancel()

    def _dropped(self, reason: str) -> None:
        """The brain dropped it (it already forgot it)."""
        if reason in (REASON_BAD_DATA, REASON_BANNED):
            self._set_state(WebSeedState.BANNED, "it sent data that failed the hash check")
        else:
            self._set_state(WebSeedState.GONE, reason)
        self._clear()

    def _clear(self) -> None:
        self._queued.clear()
        self._by_offset.clear()
        self._wanted.clear()
        for scope in self._runs:  # nothing they fetch is wanted now
            scope.cancel()

    def _set_state(self, state: WebSeedState, reason: str) -> None:
        if state is self.state:
            return
        self.state = state
        logger.info("web seed %s: %s (%s)", self.shown, state.value, reason)
        if state in (WebSeedState.GONE, WebSeedState.BANNED, WebSeedState.DONE):
            self._stopped.set()
            self._work.set()  # wake the workers: they end

    # -- the workers --------------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch what the brain asks for until the web seed stops (or the task is
        cancelled).

        Once it stops, the workers end on their own, soon: the fetches in flight are
        cancelled (their scopes), an idle worker is woken, and a block being stored is
        stored rather than cut off halfway through the disk's write.
        """
        # The torrent's file table, once for all its web seeds: seconds of Python for the
        # largest torrents, made in a worker thread (requests queue meanwhile).
        try:
            await self.layout.ready()
        except WebSeedUrlError as refused:
            # Some file's URL would pass our bound: refused whole, once, as a web seed whose
            # base URL we cannot use (one file at a time was a busy loop with the brain).
            if self.usable:
                self._leave(str(refused))
            return
        except WebSeedFilesError as failure:
            # The torrent's table for its web seeds (out of memory, say): none of them can be
            # used, but the torrent goes on with its peers, and the session with it.
            if self.usable:
                cause = failure.__cause__
                logger.warning(
                    "web seed %s: %s (%s: %s)", self.shown, failure, type(cause).__name__, cause
                )
                self._leave(str(failure))
            return
        async with trio.open_nursery() as nursery:
            for _ in range(MAX_WEB_SEED_REQUESTS):
                nursery.start_soon(self._worker)

    def _take(self) -> tuple[int, list[Block]] | None:
        """The oldest queued block and the queued blocks after it in the piece space."""
        if not self._queued:
            return None
        first, start = next(iter(self._queued.items()))
        blocks = [first]
        end = start + first.length
        self._forget_queued(first)
        total = first.length
        while total < MAX_RUN:
            block = self._by_offset.get(end)
            if block is None or total + block.length > MAX_RUN:
                break
            self._forget_queued(block)
            blocks.append(block)
            end += block.length
            total += block.length
        return start, blocks

    def _forget_queued(self, block: Block) -> None:
        offset = self._queued.pop(block)
        self._by_offset.pop(offset, None)

    async def _worker(self) -> None:
        while not self._stopped.is_set():
            taken = self._take()
            if taken is None:
                # One event for all the idle workers: a request (or the stop) wakes them.
                if self._work.is_set():
                    self._work = trio.Event()
                await self._work.wait()
                continue
            start, blocks = taken
            await self._fetch_run(start, blocks)
            # A run may end without ever awaiting (a file known missing, a client failing
            # at once) while the brain answers its rejects with new requests at once: never
            # a busy loop that starves the session.
            await trio.lowlevel.checkpoint()

    async def _fetch_run(self, start: int, blocks: list[Block]) -> None:
        length = sum(block.length for block in blocks)
        data = bytearray()
        error: WebSeedError | None = None
        fetched = False  # a range came from the server (not pad bytes only)
        failing_file: int | None = None  # the file being fetched when it failed
        period = self._period
        scope = trio.CancelScope()  # cancelled when none of the blocks is wanted any more
        self._runs[scope] = blocks
        try:
            with scope:
                for part in self.layout.ranges(start, length):
                    if not self.usable:
                        return  # stopped meanwhile (banned, gone): its blocks are forgotten
                    if part.is_pad:
                        data += bytes(part.length)  # a pad file: zeros, never fetched
                        continue
                    failing_file = part.file_index
                    if part.file_index in self._missing:
                        raise WebSeedFileMissingError("the server does not have this file")
                    # Made per request (as libtorrent): nothing is held per file. None is
                    # too long (ready checked the longest), so none is refused here.
                    url = self.layout.file_url(part.file_index)
                    data += await self._client.fetch(url, part.offset, part.length)
                    failing_file = None
                    fetched = True
                    self._served += 1
                    self._refused = 0
                    self._file_failures.pop(part.file_index, None)
        except WebSeedError as failure:
            error = failure
        except ValueError as failure:  # pragma: no cover - blocks the brain gave are in files
            error = WebSeedError(str(failure))
        finally:
            del self._runs[scope]
        # Hand over the blocks fetched whole, give the others back to the brain.
        position = start
        rejected: list[Block] = []
        for block in blocks:
            end = position - start + block.length
            if end <= len(data) and block in self._wanted and self.usable:
                self._wanted.discard(block)
                self.downloaded += block.length
                await self._deliver(self, block, bytes(data[position - start : end]))
            elif block in self._wanted:
                self._wanted.discard(block)
                rejected.append(block)
            position += block.length
        for block in rejected:
            self._feed(self, BlockRejected(self, block))
        if scope.cancelled_caught or not self.usable:
            return  # abandoned, or stopped meanwhile: says nothing of the server
        if error is None:
            if fetched:  # pad bytes alone (zeros, never asked for) say nothing of the server
                self._succeeded()
        elif isinstance(error, WebSeedBlockedError):
            self._leave(str(error))
        elif isinstance(error, WebSeedFileMissingError) and failing_file is not None:
            # Only a file newly found missing counts as a refusal: one known missing, or
            # the other runs of one large file in flight at once, are not more refused.
            newly = failing_file not in self._missing
            self._file_missing(failing_file, error)
            if newly and self.usable:
                self._refused += 1
                if self._refused >= MAX_REFUSALS and self._first_of_outage(period):
                    await self._failed(error)  # it refuses us, not lacks the files
        elif not self._first_of_outage(period):
            # Begun before the last delay, or failed during it: the same outage (a server
            # going down fails every request in flight at once), counted once, its delay
            # begun. Counted again, one outage would give the web seed up at once.
            return
        elif failing_file is None:
            await self._failed(error)  # (no file was being fetched: a bad range)
        elif failing_file in self._missing:
            return  # given up meanwhile (by another run of it): counted already
        elif error.busy:
            await self._failed(error)  # "come back later": about the server, not the file
        elif self._file_keeps_failing(failing_file):
            self._file_missing(failing_file, f"{error}, {MAX_FILE_FAILURES} times")
        else:
            await self._failed(error)

    def _first_of_outage(self, period: int) -> bool:
        """Whether a run begun in ``period`` failing now is the first failure of an outage:
        begun since the last delay, and failing while active."""
        return period == self._period and self.state is WebSeedState.ACTIVE

    def _succeeded(self) -> None:
        # A fetch that began before a failure and ended during its delay proves nothing.
        if self.state is WebSeedState.ACTIVE:
            self._failures = 0

    def _file_keeps_failing(self, file_index: int) -> bool:
        """Count a failure of ``file_index``; whether it is its :data:`MAX_FILE_FAILURES`-th
        in a row with other files served since the first: the server works, but not for
        this file (a 500 for one file of a mirror), which is then taken as missing (a
        server failing every file is not: it backs off)."""
        failures, served = self._file_failures.get(file_index, (0, self._served))
        failures += 1
        if failures >= MAX_FILE_FAILURES and self._served > served:
            del self._file_failures[file_index]
            return True
        self._file_failures[file_index] = (failures, served)
        return False

    def lacks_bad_piece(self, piece: int) -> bool:
        """It alone sent ``piece``, which failed its hash check: stop offering what it was
        cut from, as libtorrent's ``web_peer_connection::received_invalid_data``.

        Its copy of the piece's file is taken as another than the torrent's (a mirror with
        that file updated since): a piece within one file (pad files aside) marks that file
        as missing, as a 404 would; a piece across files marks that piece only (the brain is
        told it lacks them). The caller then has the piece fetched again from others,
        blaming nobody.

        Returns:
            Whether it stays. False when it has nothing else to offer (the torrent's only
            file with bytes, or its last one not missing yet) or has stopped: the verdict is
            then the brain's, which bans it as the piece's sole source.
        """
        if not self.usable:
            return False
        files = self.layout.piece_files(piece)
        if len(files) == 1:
            [file_index] = files
            if file_index not in self._missing:
                if len(self._missing) + 1 >= self.layout.fetchable:
                    return False  # nothing would be left: banned, not merely gone
                self._file_missing(file_index, f"piece {piece} failed its hash check")
        else:
            logger.debug(
                "web seed %s: lacks piece %d (it failed its hash check)", self.shown, piece
            )
            self._feed(self, PeerDontHave(self, piece))
        return True

    def _file_missing(self, file_index: int, reason: object) -> None:
        if file_index in self._missing:
            return
        self._missing.add(file_index)
        self._file_failures.pop(file_index, None)
        # Said once per web seed at INFO: a server may lack thousands of files.
        level = logging.INFO if len(self._missing) == 1 else logging.DEBUG
        logger.log(level, "web seed %s: lacks file %d (%s)", self.shown, file_index, reason)
        # Counted, not scanned: only files it serves are ever missing (never pad files).
        if len(self._missing) >= self.layout.fetchable:
            self._leave("it has none of the files")
            return
        # Its other files may share a piece with this one (v1): such a piece cannot come
        # from here whole either.
        for piece in self.layout.file_pieces(file_index):
            self._feed(self, PeerDontHave(self, piece))

    def _leave(self, reason: str) -> None:
        """Given up for this run: it leaves the brain, its requests forgotten."""
        self._set_state(WebSeedState.GONE, reason)
        self._feed(self, PeerLeft(self))
        self._clear()

    async def _failed(self, error: WebSeedError) -> None:
        # Active, and the first failure of this period (see _fetch_run): one per outage.
        self._failures += 1
        if self._failures >= MAX_FAILURES:
            self._leave(f"given up after {self._failures} failures: {error}")
            return
        delay = min(RETRY_DELAY * 2 ** (self._failures - 1), MAX_RETRY_DELAY)
        if error.retry_after is not None:
            # A busy server may ask for longer (within bounds), never for a hammering: a
            # Retry-After of 0 leaves the backoff as it is.
            delay = max(delay, min(error.retry_after, MAX_RETRY_DELAY))
        self._set_state(WebSeedState.WAITING, f"{error}; trying again in {delay:g} s")
        # Choked: the brain takes back what it asked of us and asks nothing more meanwhile.
        self._feed(self, PeerChokedUs(self))
        self._clear()
        with trio.move_on_after(delay):
            await self._stopped.wait()
        if self._waiting():  # not stopped meanwhile
            self.state = WebSeedState.ACTIVE
            self._period += 1
            logger.info("web seed %s: trying again", self.shown)
            self._feed(self, PeerUnchokedUs(self))
