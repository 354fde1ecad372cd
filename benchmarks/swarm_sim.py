r"""The swarm brain in the simulator at the issue's sizes: the numbers behind issue 7's proof.

Run from the workspace root:

    uv run python benchmarks/swarm_sim.py [--leechers 50] [--pieces 300] [--rate 100000]

Every simulated peer runs a real ``bip_select.SwarmBrain``; the simulator (``bip_select.simulator``)
carries their messages with latency and shares upload and download capacities max-min fairly.
Scenarios, each one run (the simulator is deterministic for a seed):

- fluid bound: 1 seed and ``--leechers`` leechers, every peer with the same upload and download
  capacity, all joining at once. Reported: the median and slowest leecher's download time over
  the fluid-model lower bound T = max(F/u_seed, F/d, N*F/(u_seed + N*u)) (goal: median <= 1.25),
  the time and the seed's upload (in files) when every piece first had two copies, whether a
  piece fell back to one copy after that, the largest share of a leecher's time spent on its
  last 1% of pieces (goal: < 5%), bytes received twice (end-game) and the wall time. Run
  with the initial seed super-seeding (BEP 16, what an initial seed should do) and with every
  brain at its defaults (rarest first, honest revelation), and, for contrast, with random and
  in-order piece selection.
- bad data: the same swarm with 10% of the leechers corrupting every block they upload;
  reported: honest leechers completed, malicious peers banned, honest peers banned (goal: all,
  all, none).
- streaming: a peer streams ``--pieces`` pieces (at most 100) with a deadline each, at half its
  download rate, beside a few ordinary leechers; reported: deadlines missed (goal: none).

Rates are bytes per second of virtual time (``--rate`` for everyone, 100 kB/s by default, so a
download lasts minutes and the choker's 10 s and 30 s rounds matter as in a real swarm); pieces
are 64 KiB. The exit status is 0 either way (a report, not a test).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from bip_select._brain import SwarmBrain
from bip_select._revelation import SuperSeeding
from bip_select._selection import RandomFirst, Sequential, Streaming
from bip_select.simulator import (
    BrainContext,
    PeerSpec,
    SwarmConfig,
    SwarmTrace,
    fluid_lower_bound,
    simulate,
)

PIECE = 65536
Factory = Callable[[BrainContext], SwarmBrain]


def defaults(context: BrainContext) -> SwarmBrain:
    return SwarmBrain(context.geometry, have=context.have, rng=context.rng)


def super_seeding(context: BrainContext) -> SwarmBrain:
    if not context.spec.seed:
        return defaults(context)
    revelation = SuperSeeding(
        context.geometry.num_pieces, context.have, rng=context.rng, strict=False
    )
    return SwarmBrain(context.geometry, have=context.have, rng=context.rng, revelation=revelation)


def random_order(context: BrainContext) -> SwarmBrain:
    # RandomFirst that never hands over: random piece order throughout.
    selection = RandomFirst(first=context.geometry.num_pieces + 1)
    return SwarmBrain(context.geometry, have=context.have, rng=context.rng, selection=selection)


def in_order(context: BrainContext) -> SwarmBrain:
    return SwarmBrain(context.geometry, have=context.have, rng=context.rng, selection=Sequential())


def streamer(context: BrainContext) -> SwarmBrain:
    return SwarmBrain(context.geometry, have=context.have, rng=context.rng, selection=Streaming())


def run(config: SwarmConfig) -> tuple[SwarmTrace, float]:
    start = time.perf_counter()
    trace = simulate(config)
    return trace, time.perf_counter() - start


def fluid(args: argparse.Namespace, name: str, factory: Factory, *, goal: bool = True) -> None:
    rate = args.rate
    peers = [PeerSpec(upload=rate, download=rate, seed=True)]
    peers += [PeerSpec(upload=rate, download=rate) for _ in range(args.leechers)]
    config = SwarmConfig(
        num_pieces=args.pieces,
        piece_length=PIECE,
        peers=peers,
        step=args.step,
        max_time=100 * args.pieces * PIECE / rate,
        seed=args.seed,
        brain=factory,
    )
    trace, wall = run(config)
    bound = fluid_lower_bound(trace.total_length, rate, rate, args.leechers, rate)
    times = [trace.download_time(p) for p in trace.completion]
    done = [t for t in times if t is not None]
    tails = [trace.tail_fraction(p) for p in trace.completion]
    tail = max((t for t in tails if t is not None), default=float("nan"))
    median = statistics.median(done) / bound if done else float("nan")
    verdict = "(contrast)" if not goal else "(goal met)" if median <= 1.25 else "(goal MISSED)"
    full = trace.full_copy_time
    seed_files = (trace.seed_bytes_at_full_copy or 0) / trace.total_length
    print(
        f"{name:<22} done {len(done):>3}/{len(times):<3} median/T {median:5.3f} "
        f"{verdict:<13} "
        f"max/T {max(done) / bound if done else float('nan'):5.3f}  "
        f"2 copies at {full / bound if full is not None else float('nan'):5.3f} T "
        f"after {seed_files:4.2f} files from the seed, "
        f"back to 1: {'yes' if trace.single_copy_after_full else 'no'}  "
        f"last 1%: {100 * tail:4.1f}% of the time {'(goal met)' if tail < 0.05 else '(MISSED)'}  "
        f"received twice {100 * trace.wasted / (len(times) * trace.total_length):4.2f}%  "
        f"wall {wall:5.1f} s"
    )


def bad_data(args: argparse.Namespace) -> None:
    rate = args.rate
    bad = max(1, args.leechers // 10)
    peers = [PeerSpec(upload=rate, download=rate, seed=True)]
    peers += [PeerSpec(upload=rate, download=rate, malicious=i < bad) for i in range(args.leechers)]
    config = SwarmConfig(
        num_pieces=args.pieces,
        piece_length=PIECE,
        peers=peers,
        step=args.step,
        max_time=100 * args.pieces * PIECE / rate,
        seed=args.seed,
        brain=super_seeding,
    )
    trace, wall = run(config)
    malicious = set(range(1, bad + 1))
    honest = set(trace.completion) - malicious
    completed = sum(1 for p in honest if trace.completion[p] is not None)
    banned = {ban.peer for ban in trace.bans}
    print(
        f"bad data ({bad} of {args.leechers} leechers corrupt every block): honest completed "
        f"{completed}/{len(honest)}, malicious banned {len(banned & malicious)}/{bad}, "
        f"honest banned {len(banned & honest)}, bans {len(trace.bans)}, "
        f"bad pieces {sum(trace.bad_pieces[p] for p in honest)}, wall {wall:.1f} s"
    )


def streaming(args: argparse.Namespace) -> None:
    rate = args.rate * 10
    count = min(100, args.pieces)
    interval = 2 * PIECE / rate  # half the streamer's download rate
    deadlines = {piece: 5.0 + interval * piece for piece in range(count)}
    peers = [
        PeerSpec(upload=rate, download=rate, seed=True),
        PeerSpec(upload=rate, download=rate, deadlines=deadlines, brain=streamer),
    ]
    peers += [PeerSpec(upload=rate, download=rate) for _ in range(5)]
    config = SwarmConfig(
        num_pieces=count, piece_length=PIECE, peers=peers, step=args.step, seed=args.seed
    )
    trace, wall = run(config)
    misses = trace.deadline_misses.get(1, [])
    print(
        f"streaming {count} pieces, one every {interval:.2f} s (half the download rate): "
        f"deadlines missed {len(misses)} {'(goal met)' if not misses else '(MISSED)'}, "
        f"wall {wall:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leechers", type=int, default=50)
    parser.add_argument("--pieces", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100_000.0, help="bytes/s per peer")
    parser.add_argument("--step", type=float, default=0.05, help="bandwidth step, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the first scenario only")
    args = parser.parse_args()
    print(
        f"1 seed + {args.leechers} leechers, {args.pieces} pieces of {PIECE // 1024} KiB, "
        f"{args.rate / 1000:.0f} kB/s up and down each, latency 50 ms"
    )
    fluid(args, "super-seeding seed", super_seeding)
    if args.quick:
        return
    fluid(args, "defaults (rarest first)", defaults)
    fluid(args, "random order", random_order, goal=False)
    fluid(args, "in order", in_order, goal=False)
    bad_data(args)
    streaming(args)


if __name__ == "__main__":
    main()
