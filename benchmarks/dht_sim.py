r"""The DHT in the simulator at the issue's sizes: the numbers behind issue 8's proof.

Run from the workspace root:

    uv run python benchmarks/dht_sim.py [--nodes 10000] [--formation protocol|warm]
        [--settle 960] [--lookups 1000] [--flood 1000000] [--flood-swarms 200000]
        [--tracemalloc] [--skip-lookups] [--skip-flood]

Every simulated node is a real ``bip_dht.DHTNode``; ``bip_dht.simulator`` carries their
datagrams on a virtual clock. Two scenarios:

- lookups: ``--nodes`` nodes (10,000) on links of 20 to 300 ms one way (fixed per pair) with
  5% loss, formed through the real protocol join by default (each newcomer bootstraps from
  three random members, in waves, then the network runs ``--settle`` seconds, 16 minutes by
  default, so that BEP 5's 15-minute bucket refresh has run once on every node (``--settle
  0`` measures the network the moment the last newcomer has joined: the maintenance's fill
  queries, as libtorrent's refresh, have filled the far buckets of all but the newest nodes
  by then); ``--formation warm`` hands every routing table what a long-running network
  would have taught it instead, which is what the test suite does), then 10% of the nodes
  go silent (churn after formation).
  ``--announces`` random live nodes announce a random info-hash each; then ``--lookups``
  get_peers lookups by random live nodes for random ones of those hashes run
  ``--concurrency`` at a time. Goals: every lookup finds its announcer; the median time
  until the announcer's address arrives is under 1 s of virtual time; fewer than 60 queries
  per lookup on median. Also reported: the median time to the lookup's end (it waits, as
  libtorrent's does, for close nodes that never answer to time out), memory per node
  (resident memory growth, or traced bytes with ``--tracemalloc``, which is slow) and
  lookups per second of wall time.
- flood: ``--flood`` announces (1,000,000) of fresh random info-hashes to one node from
  100,000 source addresses, each preceded by the get_peers that gets its token, as an
  attacker must. Goals: the stores stay within DHTConfig's caps; the node's memory stops
  growing once they are full (tracemalloc over the first 20,000 announces, then the size of
  everything the node holds, walked object by object, at checkpoints to the end) and stays
  under a budget derived from the caps; afterwards the node still answers an honest node's
  ping, stores its announce and returns it to get_peers. A second flood (``--flood-swarms``,
  200,000) announces peers into 200 info-hashes instead, against the per-swarm and total
  peer caps, with the same goals.

Virtual times and query counts are deterministic for a seed; wall times depend on the machine.
The exit status is 0 when every goal passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from types import FunctionType, ModuleType

from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._node_events import AnnounceFinished, PingFinished
from bip_dht.simulator import (
    SimulatedNetwork,
    announce_flood,
    lookup_experiment,
    memory_budget,
)

LATENCY = (0.02, 0.3)
LOSS = 0.05
SILENT = 0.1


def retained_size(root: object) -> int:
    """Bytes of every object reachable from ``root`` (classes, modules and functions, which
    the node shares with the process, are not counted nor followed)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType | FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run_lookups(args: argparse.Namespace) -> bool:
    formed = args.formation
    if formed == "protocol":
        formed += f", then {args.settle:g} s of virtual time"
    print(
        f"lookups: {args.nodes} nodes ({formed}), one-way latency "
        f"{LATENCY[0] * 1000:.0f}-{LATENCY[1] * 1000:.0f} ms, {LOSS:.0%} loss, "
        f"{SILENT:.0%} silent after formation"
    )
    if args.tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    result = lookup_experiment(
        nodes=args.nodes,
        latency=LATENCY,
        loss=LOSS,
        silent=SILENT,
        announces=args.announces,
        lookups=args.lookups,
        concurrency=args.concurrency,
        formation=args.formation,
        settle=args.settle,
        seed=args.seed,
    )
    total = time.perf_counter() - started
    if args.tracemalloc:
        tracemalloc.stop()
    found_times = sorted(t for t in result.time_to_announcer if t is not None)
    p90 = found_times[int(0.9 * (len(found_times) - 1))] if found_times else float("inf")
    print(
        f"  formation: {result.formation_wall:.1f} s wall, "
        f"{result.formation_datagrams} datagrams; {result.silent} nodes then went silent"
    )
    print(f"  memory per node: {result.memory_per_node / 1024:.1f} KiB ({result.memory_source})")
    print(
        f"  announces: {result.announces}, accepted by {statistics.median(result.announced_to)} "
        f"nodes on median (fewest {min(result.announced_to)})"
    )
    goals = [
        (
            "lookups that found their announcer",
            f"{result.found}/{result.lookups}",
            "all",
            result.found == result.lookups,
        ),
        (
            "median time to the announcer (virtual)",
            f"{result.median_time_to_announcer:.3f} s",
            "< 1 s",
            result.median_time_to_announcer < 1.0,
        ),
        (
            "median queries per lookup",
            f"{result.median_queries:g}",
            "< 60",
            result.median_queries < 60,
        ),
    ]
    for name, value, goal, ok in goals:
        print(f"  {name:<42} {value:>12}   goal {goal:<6} {verdict(ok)}")
    print(f"  90th percentile time to the announcer: {p90:.3f} s")
    print(
        f"  median time to the lookup's end (virtual): {result.median_duration:.2f} s "
        "(waits for silent close nodes to time out; reported, not a goal)"
    )
    print(
        f"  lookups per wall second: {result.lookups_per_second:.1f} "
        f"({result.lookups} lookups in {result.lookup_wall:.1f} s, whole network simulated); "
        f"scenario wall time {total:.1f} s"
    )
    return all(ok for *_, ok in goals)


def honest_check(victim: DHTNode, now: float) -> tuple[bool, bool, bool]:
    """An honest node pings the flooded node, announces to it and looks the announce up."""
    net = SimulatedNetwork(seed=99, latency=LATENCY, now=now)
    target = net.attach(victim)
    honest = net.add_node()
    pong = net.ping(honest, target.address).finished
    answered = isinstance(pong, PingFinished) and pong.node is not None
    info_hash = bytes(range(20))
    announce = net.run_operation(honest, lambda d, t: d.announce(info_hash, t, port=999))
    stored = isinstance(announce.finished, AnnounceFinished) and announce.finished.announced_to == 1
    search = net.get_peers(honest, info_hash)
    found = any(p.host == honest.address.host and p.port == 999 for p in search.result.peers)
    return answered, stored, found


def run_flood(count: int, swarms: int | None, seed: int) -> bool:
    config = DHTConfig()
    sources = min(100_000, count) or 1
    budget = memory_budget(config)
    what = "random info-hashes" if swarms is None else f"peers into {swarms} info-hashes"
    print(
        f"flood: {count:,} announces of {what} from {sources:,} addresses "
        "(get_peers for a token, then announce_peer)"
    )
    print(
        f"  caps: max_hashes {config.max_hashes}, max_peers {config.max_peers}, "
        f"max_peers_per_hash {config.max_peers_per_hash}, rate-limited hosts "
        f"{config.rate_limited_hosts}; memory budget from them {budget / 2**20:.1f} MiB"
    )
    rng = random.Random(seed)
    hashes = None if swarms is None else [rng.randbytes(20) for _ in range(swarms)]
    gc.collect()
    tracemalloc.start()
    victim = DHTNode(rng=random.Random(seed + 1), now=0.0)
    traced_base = tracemalloc.get_traced_memory()[0]
    now = 0.0
    done = 0
    traced = []
    first = min(count, 20_000)
    for chunk in (first // 2, first - first // 2):
        report = announce_flood(
            victim, chunk, rng=rng, now=now, sources=sources, hashes=hashes, first=done
        )
        now, done = report.ended, done + chunk
        gc.collect()
        traced.append((done, tracemalloc.get_traced_memory()[0] - traced_base))
    tracemalloc.stop()
    for at, size in traced:
        print(f"  traced growth after {at:>9,} announces: {size / 2**20:7.2f} MiB (tracemalloc)")
    sizes = [(done, retained_size(victim))]
    accepted = refused = unanswered = 0
    step = max(1, (count - done) // 5)
    started = time.perf_counter()
    while done < count:
        chunk = min(step, count - done)
        report = announce_flood(
            victim, chunk, rng=rng, now=now, sources=sources, hashes=hashes, first=done
        )
        now, done = report.ended, done + chunk
        accepted += report.accepted
        refused += report.refused
        unanswered += report.unanswered
        sizes.append((done, retained_size(victim)))
    wall = time.perf_counter() - started
    for at, size in sizes:
        print(f"  node holds after {at:>9,} announces: {size / 2**20:7.2f} MiB (object walk)")
    stats = victim.statistics()
    print(
        f"  stored: {stats.info_hashes} info-hashes, {stats.peers} peers; routing table "
        f"{stats.nodes[4]} nodes + {stats.replacements[4]} replacements; "
        f"{stats.rate_limited} queries rate-limited"
    )
    print(
        f"  the {count - first:,} untraced announces took {wall:.0f} s wall "
        f"({(count - first) / max(wall, 1e-9):,.0f} per second, two queries each): "
        f"{accepted:,} accepted, {refused:,} refused, {unanswered:,} unanswered"
    )
    answered, stored, found = honest_check(victim, now)
    # the stores are full by half-way (2,000 hashes, or 50,000 peers): from there on the
    # node's memory must stay flat
    halfway = next(size for at, size in sizes if at >= count // 2)
    peak = max(size for at, size in sizes if at >= count // 2)
    goals = [
        (
            "stores within their caps",
            f"{stats.info_hashes} hashes, {stats.peers} peers",
            stats.info_hashes <= config.max_hashes
            and stats.peers <= config.max_peers
            and (swarms is None or stats.peers <= swarms * config.max_peers_per_hash),
        ),
        (
            "memory flat in the second half",
            f"{peak / max(halfway, 1):.2f}x",
            peak <= 1.10 * halfway,
        ),
        ("memory under the budget", f"{peak / 2**20:.1f} MiB", peak < budget),
        ("honest ping answered", str(answered), answered),
        ("honest announce stored and found", f"{stored}/{found}", stored and found),
    ]
    for name, value, ok in goals:
        print(f"  {name:<42} {value:>18}   {verdict(ok)}")
    return all(ok for *_, ok in goals)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--formation", choices=("protocol", "warm"), default="protocol")
    parser.add_argument(
        "--settle",
        type=float,
        default=960.0,
        help="virtual seconds the protocol-formed network runs before the churn (default: "
        "16 minutes, so BEP 5's 15-minute bucket refresh has run once everywhere)",
    )
    parser.add_argument("--announces", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--flood", type=int, default=1_000_000)
    parser.add_argument(
        "--flood-swarms",
        type=int,
        default=200_000,
        help="announces of a second flood, into 200 swarms (against the peer caps)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tracemalloc", action="store_true", help="trace the formation's memory")
    parser.add_argument("--skip-lookups", action="store_true")
    parser.add_argument("--skip-flood", action="store_true")
    args = parser.parse_args(argv)
    ok = True
    if not args.skip_lookups:
        ok &= run_lookups(args)
    if not args.skip_flood:
        ok &= run_flood(args.flood, None, args.seed)
        if args.flood_swarms:
            ok &= run_flood(args.flood_swarms, 200, args.seed + 2)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
