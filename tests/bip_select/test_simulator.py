"""The swarm simulator itself: configuration, determinism, the bandwidth model, joins and leaves."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bip_select._brain import SwarmBrain
from bip_select._errors import LocalProtocolError
from bip_select.simulator import (
    BrainContext,
    PeerSpec,
    SwarmConfig,
    fluid_lower_bound,
    simulate,
)

MB = 1_000_000


def small_swarm(leechers: int = 4, **options: Any) -> SwarmConfig:
    peers = [PeerSpec(upload=MB, download=MB, seed=True)]
    peers += [PeerSpec(upload=MB, download=MB) for _ in range(leechers)]
    return SwarmConfig(num_pieces=24, piece_length=32768, peers=peers, **options)


def test_every_leecher_completes_and_nothing_illegal_happens() -> None:
    trace = simulate(small_swarm())
    assert set(trace.completion) == {1, 2, 3, 4}
    assert all(t is not None for t in trace.completion.values())
    assert trace.violations == []
    assert trace.bans == []
    for peer in trace.completion:
        times = trace.piece_times[peer]
        assert all(t is not None for t in times)
    assert trace.copies[-1][1] == (5,) * 24


def test_runs_are_deterministic_and_the_seed_matters() -> None:
    first, second = simulate(small_swarm()), simulate(small_swarm())
    assert first.completion == second.completion
    assert first.copies == second.copies
    other = simulate(small_swarm(seed=99))
    assert other.completion != first.completion


def test_no_leecher_beats_its_download_capacity() -> None:
    trace = simulate(small_swarm(leechers=2))
    for peer in trace.completion:
        took = trace.download_time(peer)
        assert took is not None
        assert took >= trace.total_length / MB


def test_a_slow_seed_bounds_everyone() -> None:
    peers = [PeerSpec(upload=MB / 4, download=MB, seed=True)]
    peers += [PeerSpec(upload=MB, download=MB) for _ in range(3)]
    trace = simulate(SwarmConfig(num_pieces=16, piece_length=32768, peers=peers))
    floor = trace.total_length / (MB / 4)
    assert all(t is not None and t >= floor for t in trace.completion.values())


def test_late_joiners_and_leavers() -> None:
    peers = [
        PeerSpec(upload=MB, download=MB, seed=True),
        PeerSpec(upload=MB, download=MB, seed_time=0.0),
        PeerSpec(upload=MB, download=MB, join_at=0.5),
        PeerSpec(upload=MB, download=MB, leave_at=0.2),
    ]
    trace = simulate(SwarmConfig(num_pieces=16, piece_length=32768, peers=peers))
    assert trace.joined[2] == pytest.approx(0.5, abs=0.03)
    assert trace.completion[1] is not None
    assert trace.completion[2] is not None
    assert trace.completion[3] is None  # it left before finishing
    assert trace.violations == []


def test_max_time_stops_a_swarm_without_a_seed() -> None:
    peers = [PeerSpec(upload=MB, download=MB) for _ in range(3)]
    trace = simulate(SwarmConfig(num_pieces=4, piece_length=16384, peers=peers, max_time=2.0))
    assert trace.end_time >= 2.0
    assert all(t is None for t in trace.completion.values())


def test_custom_brains_are_used() -> None:
    built: list[int] = []

    def factory(context: BrainContext) -> SwarmBrain:
        built.append(context.index)
        return SwarmBrain(context.geometry, have=context.have, rng=context.rng)

    simulate(small_swarm(leechers=2, brain=factory))
    assert sorted(built) == [0, 1, 2]


def test_tail_fraction_and_download_time() -> None:
    trace = simulate(small_swarm(leechers=2))
    for peer in trace.completion:
        fraction = trace.tail_fraction(peer)
        assert fraction is not None
        assert 0 <= fraction <= 1
    assert trace.download_time(0) is None  # the seed never downloads


@pytest.mark.parametrize(
    "options",
    [
        {"latency": -1.0},
        {"step": 0.0},
        {"max_connections": 0},
        {"sample_every": 0.0},
    ],
)
def test_bad_configs_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        small_swarm(4, **options)


def test_bad_peer_specs_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        PeerSpec(upload=MB, download=0)
    with pytest.raises(LocalProtocolError):
        PeerSpec(upload=math.inf, download=MB)
    with pytest.raises(LocalProtocolError):
        PeerSpec(upload=MB, download=MB, join_at=5.0, leave_at=1.0)
    with pytest.raises(LocalProtocolError):
        SwarmConfig(num_pieces=4, piece_length=16384, peers=[])


def test_fluid_lower_bound_terms() -> None:
    assert fluid_lower_bound(100.0, 1.0, 10.0, 5, 10.0) == 100.0  # the seed's upload
    assert fluid_lower_bound(100.0, 100.0, 1.0, 5, 10.0) == 100.0  # a leecher's download
    assert fluid_lower_bound(100.0, 10.0, 100.0, 50, 1.0) == pytest.approx(5000 / 60)
