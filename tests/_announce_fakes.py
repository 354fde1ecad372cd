"""Fakes of both ends of an announce that record what they are given: an
:class:`~bip_utracker.AnnounceClient` for the Announcer's tests, answering as the test says,
and a UDP tracker's handler (:class:`RecordingHandler`).

Imported as ``tests._announce_fakes`` (the root conftest puts the repository's root on
``sys.path``): bip_utracker's tests and bip's test of shown URLs share it.
:class:`RecordingClient` takes an :data:`Answer`, a function of the announce (a :class:`Sent`)
that returns the tracker's answer or raises a :class:`~bip_utracker.TrackerError` for it;
:func:`scripted` and :func:`refusing` make the usual ones. Its ``announce`` takes BEP 21's
``paused`` keyword and records whether it was passed, but the client does not opt in to it: a
subclass that sets ``announces_paused`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import trio

from bip_handshake import PeerId
from bip_metainfo import InfoHash
from bip_utracker import (
    AnnounceAnswer,
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResult,
    Refusal,
    ScrapeStats,
    SwarmStore,
    TrackerError,
)

__all__ = ["Answer", "RecordingClient", "RecordingHandler", "Sent", "refusing", "scripted"]


@dataclass(frozen=True)
class Sent:
    """One announce the client was asked for."""

    number: int
    """Its place: 1 for the client's first announce."""
    time: float
    """When it was asked for (``trio.current_time()``)."""
    tracker: str
    """The tracker URL the client was given."""
    event: AnnounceEvent
    paused: bool | None
    """BEP 21's ``paused`` as passed; ``None``: the keyword was not passed (the Announcer passes
    it only to say ``paused``, and only to a client that opted in)."""


Answer: TypeAlias = Callable[[Sent], AnnounceResult]
"""The tracker's side of an announce: its answer, or a :class:`~bip_utracker.TrackerError`
raised."""


def scripted(*outcomes: AnnounceResult | TrackerError) -> Answer:
    """An :data:`Answer` from a script: each announce takes the next outcome (an answer, or an
    error to raise); past the end, the last one again."""
    if not outcomes:
        raise ValueError("a script needs at least one outcome")
    script = list(outcomes)

    def answer(sent: Sent) -> AnnounceResult:
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(outcome, TrackerError):
            raise outcome
        return outcome

    return answer


def refusing(error: TrackerError) -> Answer:
    """An :data:`Answer` of a tracker that refuses every announce with ``error``."""

    def answer(sent: Sent) -> AnnounceResult:
        raise error

    return answer


@dataclass
class RecordingClient:
    """An AnnounceClient that records each announce in :attr:`sent`, then gives ``answer``'s
    answer (or raises its error)."""

    answer: Answer
    sent: list[Sent] = field(default_factory=list)

    def check_tracker(self, tracker: str) -> None:
        """Accept any tracker: no announce goes anywhere."""

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int,
        downloaded: int,
        left: int,
        event: AnnounceEvent,
        num_want: int,
        paused: bool | None = None,
    ) -> AnnounceResult:
        """Record the announce and answer it, after a checkpoint as a real client's I/O has
        (the caller may be cancelled there)."""
        await trio.lowlevel.checkpoint()
        sent = Sent(len(self.sent) + 1, trio.current_time(), tracker, event, paused)
        self.sent.append(sent)
        return self.answer(sent)

    def events(self) -> list[AnnounceEvent]:
        """Each announce's event, in order."""
        return [sent.event for sent in self.sent]

    def times(self) -> list[float]:
        """When each announce was asked for, in order."""
        return [sent.time for sent in self.sent]

    def trackers(self) -> list[str]:
        """Each announce's tracker URL, in order."""
        return [sent.tracker for sent in self.sent]

    def said(self) -> list[tuple[AnnounceEvent, bool | None]]:
        """Each announce's event and ``paused`` (``None``: not passed), in order."""
        return [(sent.event, sent.paused) for sent in self.sent]


@dataclass
class RecordingHandler:
    """A UDP tracker's handler (``serve_tracker``'s, ``TrackerServerCore``'s): the built-in
    store, recording each announce request it is given in :attr:`requests`."""

    store: SwarmStore = field(default_factory=SwarmStore)
    requests: list[AnnounceRequest] = field(default_factory=list)

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        """Record ``request``, then answer it as the store does."""
        self.requests.append(request)
        return self.store.announce(request, peer, num_want, now)

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats]:
        """Answer as the store does."""
        return self.store.scrape(info_hashes, now)
