"""The issue's proof in the simulator: swarms of real brains, checked against the fluid model.

Most swarms are small (a dozen peers, a couple of hundred pieces) so the suite stays fast; one
test runs the issue's full size (1 seed, 50 leechers) once, and ``benchmarks/swarm_sim.py`` runs
the full sizes for every variant and prints the numbers.
Every run is deterministic (fixed seeds), so a failure here is a regression, not bad luck.
"""

from __future__ import annotations

import statistics

import pytest

from bip_select._brain import SwarmBrain
from bip_select._revelation import SuperSeeding
from bip_select._selection import RarestFirst, Sequential, Streaming
from bip_select.simulator import (
    BrainContext,
    PeerSpec,
    SwarmConfig,
    SwarmTrace,
    fluid_lower_bound,
    simulate,
)

RATE = 100_000  # bytes/s up and down for everyone: a download takes minutes of virtual time
PIECE = 65536


def super_seeding_seed(context: BrainContext) -> SwarmBrain:
    """Leechers get the defaults; the initial seed super-seeds (BEP 16), as it should."""
    revelation = None
    if context.spec.seed:
        revelation = SuperSeeding(
            context.geometry.num_pieces, context.have, rng=context.rng, strict=False
        )
    return SwarmBrain(context.geometry, have=context.have, rng=context.rng, revelation=revelation)


def equal_swarm(leechers: int, pieces: int, **options: object) -> SwarmConfig:
    peers = [PeerSpec(upload=RATE, download=RATE, seed=True)]
    peers += [PeerSpec(upload=RATE, download=RATE) for _ in range(leechers)]
    return SwarmConfig(
        num_pieces=pieces,
        piece_length=PIECE,
        peers=peers,
        step=0.05,
        max_time=10_000.0,
        **options,  # type: ignore[arg-type]
    )


def bound(trace: SwarmTrace, leechers: int) -> float:
    return fluid_lower_bound(trace.total_length, RATE, RATE, leechers, RATE)


def download_times(trace: SwarmTrace) -> list[float]:
    times = [trace.download_time(peer) for peer in trace.completion]
    assert all(t is not None for t in times), "a leecher never completed"
    return [t for t in times if t is not None]


@pytest.fixture(scope="module")
def super_seeded() -> SwarmTrace:
    return simulate(equal_swarm(10, 200, brain=super_seeding_seed))


@pytest.fixture(scope="module")
def rarest_first() -> SwarmTrace:
    return simulate(equal_swarm(10, 200))


@pytest.mark.parametrize("which", ["super_seeded", "rarest_first"])
def test_median_leecher_within_a_quarter_of_the_fluid_bound(
    which: str, request: pytest.FixtureRequest
) -> None:
    """With every brain at its defaults, and with the initial seed super-seeding."""
    trace: SwarmTrace = request.getfixturevalue(which)
    times = download_times(trace)
    assert statistics.median(times) <= 1.25 * bound(trace, 10)
    assert trace.violations == []


def test_rarest_first_gets_every_piece_out_of_the_seed_early(rarest_first: SwarmTrace) -> None:
    """Once leechers hold data, no piece stays with the seed alone for long: the seed's
    upload goes to pieces the swarm lacks, so every piece has a second copy after the seed
    uploaded not much more than one file's worth, and none falls back to a single copy."""
    assert rarest_first.full_copy_time is not None
    assert rarest_first.seed_bytes_at_full_copy is not None
    assert rarest_first.seed_bytes_at_full_copy <= 1.25 * rarest_first.total_length
    assert not rarest_first.single_copy_after_full


def test_rarest_first_beats_in_order_downloading() -> None:
    """The contrast that shows rarest first is doing the work: downloading in order makes
    every leecher want the same pieces, and the seed's data trickles out."""

    def sequential(context: BrainContext) -> SwarmBrain:
        return SwarmBrain(
            context.geometry, have=context.have, rng=context.rng, selection=Sequential()
        )

    rarest = simulate(equal_swarm(6, 60))
    in_order = simulate(equal_swarm(6, 60, brain=sequential))
    assert rarest.full_copy_time is not None
    assert in_order.full_copy_time is not None
    assert rarest.full_copy_time * 1.5 < in_order.full_copy_time


@pytest.mark.parametrize("which", ["super_seeded", "rarest_first"])
def test_end_game_finishes_the_last_percent_quickly(
    which: str, request: pytest.FixtureRequest
) -> None:
    trace: SwarmTrace = request.getfixturevalue(which)
    for peer in trace.completion:
        fraction = trace.tail_fraction(peer, 0.01)
        assert fraction is not None
        assert fraction < 0.05, (peer, fraction)


def test_malicious_peers_are_banned_and_everyone_else_completes() -> None:
    peers = [PeerSpec(upload=RATE, download=RATE, seed=True)]
    peers += [PeerSpec(upload=RATE, download=RATE, malicious=i < 2) for i in range(20)]
    trace = simulate(SwarmConfig(num_pieces=40, piece_length=PIECE, peers=peers, step=0.05))
    malicious = {1, 2}
    honest = set(trace.completion) - malicious
    # Correct data: the simulator marks a piece had only when its blocks were all good,
    # so completing means holding the true file.
    assert all(trace.completion[peer] is not None for peer in honest)
    banned = {ban.peer for ban in trace.bans}
    assert banned == malicious
    for bad in malicious:  # (a malicious peer verifies honestly: it bans the other too)
        assert {ban.by for ban in trace.bans if ban.peer == bad} & honest
    assert sum(trace.bad_pieces[peer] for peer in honest) > 0  # they did send bad data
    assert trace.violations == []


def test_a_stream_with_deadlines_misses_none_when_the_bandwidth_is_there() -> None:
    """100 pieces needed one every 0.4 s (164 KB/s) by a peer that can download 1 MB/s."""

    def streamer(context: BrainContext) -> SwarmBrain:
        return SwarmBrain(
            context.geometry, have=context.have, rng=context.rng, selection=Streaming()
        )

    fast = 1_000_000
    deadlines = {piece: 3.0 + 0.4 * piece for piece in range(100)}
    peers = [
        PeerSpec(upload=fast, download=fast, seed=True),
        PeerSpec(upload=fast, download=fast, deadlines=deadlines, brain=streamer),
    ]
    peers += [PeerSpec(upload=fast, download=fast, brain=_rarest) for _ in range(6)]
    trace = simulate(SwarmConfig(num_pieces=100, piece_length=PIECE, peers=peers, seed=3))
    assert trace.completion[1] is not None
    assert trace.deadline_misses.get(1, []) == []
    times = trace.piece_times[1]
    assert all(t is not None and t <= deadlines[p] for p, t in enumerate(times))


def _rarest(context: BrainContext) -> SwarmBrain:
    return SwarmBrain(context.geometry, have=context.have, rng=context.rng, selection=RarestFirst())


def test_the_issue_swarm_at_full_size() -> None:
    """The issue's own numbers: 1 seed and 50 leechers of equal capacity, defaults everywhere.

    One run (about 15 s of real time on two cores), checked for everything the issue asks of
    it: the median leecher within 1.25x the fluid bound, no piece back to a single copy once
    leechers hold data, and the last 1% of each download in under 5% of its time.
    """
    trace = simulate(equal_swarm(50, 300))
    times = download_times(trace)
    assert len(times) == 50
    assert statistics.median(times) <= 1.25 * bound(trace, 50)
    assert trace.full_copy_time is not None
    assert not trace.single_copy_after_full
    for peer in trace.completion:
        fraction = trace.tail_fraction(peer, 0.01)
        assert fraction is not None
        assert fraction < 0.05, (peer, fraction)
    assert trace.violations == []
