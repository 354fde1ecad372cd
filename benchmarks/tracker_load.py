r"""UDP tracker load: bip_utracker's TrackerServer against opentracker, in one run.

Run from the workspace root (opentracker from apt: ``apt install opentracker``):

    uv run python benchmarks/tracker_load.py [--duration 8] [--rounds 3] [--processes N]
        [--clients 256] [--swarms 100]

One load generator, the same for both trackers, made of ``--processes`` separate processes
(default: one fewer than the cores, so that the tracker under test keeps a core to itself; at
least one). Each process simulates ``--clients`` BitTorrent clients, every one with its own UDP
socket on its own loopback address (127.P.x.y), so that each is a distinct peer to the tracker.
A client loops, closed-loop with one request in flight: a connect request, then an announce with
the connection id it got (info-hash: one of ``--swarms`` hashes, chosen by the client number;
``num_want`` 50; ``left`` > 0 for most, 0 for one client in ten), then again from the connect. An
announce answered in full counts; the first second of each run is warm-up and not counted.
Errors: replies that do not parse, carry a wrong transaction id or action, and error responses;
timeouts: requests left unanswered for a second (the client then starts over with a connect).

The trackers, both running for the whole benchmark, on 127.0.0.1:

- opentracker (Debian builds it in whitelist mode, see ../shared/INTEROP.md), its whitelist
  holding exactly the swarms' info-hashes;
- bip_utracker's ``serve_tracker`` in its own process, with the same allow list and its default
  configuration except the per-address rate limit, raised to 10^6 requests/s so that its code runs
  on every datagram but never refuses a simulated client (each sends thousands a second).

The load runs ``--rounds`` times against each, alternating which goes first (other work on the
machine drifts); the report gives the median announce rates and their ratio, the errors and
timeouts, the mean number of peers per announce reply (opentracker includes the announcer
itself, we never do), and the tracker process's CPU time per announce (user + system, from
/proc, warm-up included), which is less sensitive than the rates to what else the machine runs.
Goal: ours / opentracker >= 0.5 with no errors or timeouts from ours.

Timeouts from opentracker are its own socket dropping datagrams: it keeps the system's default
receive buffer (about 200 KiB, fewer than 256 requests in flight at once need), where
bip_utracker asks for 4 MiB. ``--clients 128`` avoids them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GOAL = 0.5
PROTOCOL_ID = 0x41727101980
CONNECT = struct.Struct(">QII")
CONNECT_REPLY = struct.Struct(">IIQ")
ANNOUNCE = struct.Struct(">QII20s20sqqqIIIiH")
REPLY_HEAD = struct.Struct(">II")
ANNOUNCE_REPLY = struct.Struct(">IIiii")
TIMEOUT = 1.0
WARM_UP = 1.0
HOST = "127.0.0.1"


# -- the load generator ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """What one generator process did within the measured window."""

    announces: int = 0
    connects: int = 0
    errors: int = 0
    timeouts: int = 0
    peers: int = 0  # peers received in announce replies


def _client_address(process: int, client: int) -> str:
    # 127.(20+P).x.y with y in 1..250: distinct loopback sources, no .0 or .255 octets.
    return f"127.{20 + process}.{client // 250}.{client % 250 + 1}"


def generate_load(  # noqa: PLR0917  (a multiprocessing target takes positional arguments)
    process: int,
    target: tuple[str, int],
    hashes: list[bytes],
    clients: int,
    start_at: float,
    duration: float,
    results: multiprocessing.connection.Connection,
) -> None:
    """One generator process: *clients* closed-loop clients until ``start_at + duration``."""
    rng = random.Random(process)
    poller = select.epoll()
    sockets: list[socket.socket] = []
    by_fd: dict[int, int] = {}
    for client in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((_client_address(process, client), 0))
        sock.connect(target)  # replies from elsewhere are filtered by the kernel
        sockets.append(sock)
        by_fd[sock.fileno()] = client
        poller.register(sock.fileno(), select.EPOLLIN)
    peer_ids = [b"-BL0001-" + rng.randbytes(12) for _ in range(clients)]
    info_hashes = [hashes[client % len(hashes)] for client in range(clients)]
    lefts = [0 if client % 10 == 0 else 1 << 20 for client in range(clients)]
    ports = [6881 + client for client in range(clients)]
    stage = [0] * clients  # 0: waiting for a connect reply, 1: for an announce reply
    transaction = [0] * clients
    sent_at = [0.0] * clients
    counted_from = start_at + WARM_UP
    announces = connects = errors = timeouts = peers = 0

    def send_connect(client: int, now: float) -> None:
        tid = rng.getrandbits(32)
        transaction[client] = tid
        stage[client] = 0
        sent_at[client] = now
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            sockets[client].send(CONNECT.pack(PROTOCOL_ID, 0, tid))

    while time.time() < start_at:
        time.sleep(0.001)
    # From here on the monotonic clock; the wall clock only lined the processes up.
    now = time.monotonic()
    monotonic_counted = now + (counted_from - time.time())
    monotonic_end = monotonic_counted + duration
    next_sweep = now + 0.1
    for client in range(clients):
        send_connect(client, now)
    while True:
        now = time.monotonic()
        if now >= monotonic_end:
            break
        counting = now >= monotonic_counted
        for fd, _ in poller.poll(0.05):
            client = by_fd[fd]
            sock = sockets[client]
            try:
                data = sock.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            if len(data) < 8:
                errors += counting
                send_connect(client, now)
                continue
            action, tid = REPLY_HEAD.unpack_from(data)
            if tid != transaction[client] or action == 3 or action != stage[client]:
                errors += counting
                send_connect(client, now)
                continue
            if action == 0:
                if len(data) != 16:
                    errors += counting
                    send_connect(client, now)
                    continue
                connects += counting
                cid = CONNECT_REPLY.unpack(data)[2]
                tid = rng.getrandbits(32)
                transaction[client] = tid
                stage[client] = 1
                sent_at[client] = now
                packet = ANNOUNCE.pack(
                    cid,
                    1,
                    tid,
                    info_hashes[client],
                    peer_ids[client],
                    0,
                    lefts[client],
                    0,
                    0,
                    0,
                    client,
                    50,
                    ports[client],
                )
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    sock.send(packet)
            else:
                if len(data) < 20 or (len(data) - 20) % 6:
                    errors += counting
                else:
                    announces += counting
                    peers += ((len(data) - 20) // 6) * counting
                send_connect(client, now)
        if now >= next_sweep:
            next_sweep = now + 0.1
            for client in range(clients):
                if now - sent_at[client] > TIMEOUT:
                    timeouts += now >= monotonic_counted
                    send_connect(client, now)
    for sock in sockets:
        sock.close()
    poller.close()
    results.send(Load(announces, connects, errors, timeouts, peers))
    results.close()


def run_load(
    target: tuple[str, int], hashes: list[bytes], processes: int, clients: int, duration: float
) -> Load:
    """Run the generator processes against *target*; the sum of their counts."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5 + 0.2 * processes  # after every process has its sockets
    workers = []
    pipes = []
    for process in range(processes):
        receiving, sending = context.Pipe(duplex=False)
        worker = context.Process(
            target=generate_load,
            args=(process, target, hashes, clients, start_at, duration, sending),
        )
        worker.start()
        sending.close()
        workers.append(worker)
        pipes.append(receiving)
    loads = []
    for worker, pipe in zip(workers, pipes, strict=True):
        if not pipe.poll(start_at - time.time() + WARM_UP + duration + 30):
            worker.kill()
            raise RuntimeError(f"generator {worker.pid} did not report")
        loads.append(pipe.recv())
        worker.join(10)
    return Load(
        announces=sum(load.announces for load in loads),
        connects=sum(load.connects for load in loads),
        errors=sum(load.errors for load in loads),
        timeouts=sum(load.timeouts for load in loads),
        peers=sum(load.peers for load in loads),
    )


# -- the trackers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tracker:
    """A tracker process serving on ``HOST:port``."""

    name: str
    version: str
    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((HOST, 0))
        port: int = udp.getsockname()[1]
    return port


def _serves(port: int, info_hash: bytes) -> bool:
    """Whether a tracker on *port* answers a connect and a full announce for *info_hash*."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.3)
        probe.bind((HOST, 0))
        try:
            probe.sendto(CONNECT.pack(PROTOCOL_ID, 0, 1), (HOST, port))
            reply = probe.recv(2048)
            if len(reply) != 16:
                return False
            cid = CONNECT_REPLY.unpack(reply)[2]
            # event "stopped": the probe never joins the swarm
            packet = ANNOUNCE.pack(cid, 1, 2, info_hash, bytes(20), 0, 0, 0, 3, 0, 0, -1, 1)
            probe.sendto(packet, (HOST, port))
            reply = probe.recv(2048)
        except OSError:
            return False
    return len(reply) >= 20 and REPLY_HEAD.unpack_from(reply) == (1, 2)


def _wait_serving(port: int, info_hash: bytes, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the tracker exited with {process.returncode}")
        if _serves(port, info_hash):
            return
        time.sleep(0.1)
    raise RuntimeError("the tracker did not start serving within 15 s")


@contextlib.contextmanager
def opentracker(hashes: list[bytes], workdir: Path) -> Iterator[Tracker]:
    """opentracker on a free port of 127.0.0.1 in whitelist mode."""
    executable = shutil.which("opentracker")
    if executable is None:
        raise SystemExit("opentracker is not installed (apt install opentracker)")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    whitelist = workdir / "whitelist.txt"
    whitelist.write_text("".join(h.hex() + "\n" for h in hashes))
    whitelist.chmod(0o644)
    port = _free_udp_port()
    argv = [executable, "-i", HOST, "-p", str(port), "-P", str(port)]
    argv += ["-d", str(workdir), "-u", "nobody", "-w", "whitelist.txt"]
    log = (workdir / "opentracker.log").open("wb")
    process = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_serving(port, hashes[0], process)
        yield Tracker("opentracker", _package_version("opentracker"), port, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def serve_ours(hashes: list[bytes], ready: multiprocessing.connection.Connection) -> None:
    """The bip_utracker tracker process: serves until terminated, after reporting its port."""
    import trio

    from bip_utracker._server import serve_tracker
    from bip_utracker._server_core import ServerConfig

    config = ServerConfig(rate_limit=1e6, rate_burst=1_000_000)

    async def main() -> None:
        async with serve_tracker((HOST, 0), config=config) as server:
            server.set_allowed_info_hashes(hashes)
            ready.send(server.address[1])
            ready.close()
            await trio.sleep_forever()

    trio.run(main)


@contextlib.contextmanager
def ours(hashes: list[bytes]) -> Iterator[Tracker]:
    """Our tracker in its own process."""
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(target=serve_ours, args=(hashes, sending), daemon=True)
    process.start()
    sending.close()
    try:
        if not receiving.poll(30):
            raise RuntimeError("our tracker did not start")
        port = receiving.recv()
        _wait_serving(port, hashes[0], None)
        import bip_utracker

        assert process.pid is not None
        yield Tracker("bip_utracker", bip_utracker.__version__, port, process.pid)
    finally:
        process.terminate()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def _package_version(name: str) -> str:
    try:
        output = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", name],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return output.strip() or "?"


# -- the report -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per tracker, alternating")
    parser.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--clients", type=int, default=256, help="simulated clients per process")
    parser.add_argument("--swarms", type=int, default=100, help="info-hashes announced to")
    args = parser.parse_args()
    if not (
        1 <= args.processes <= 64
        and 1 <= args.clients <= 20_000
        and args.swarms >= 1
        and 1 <= args.rounds <= 20
    ):
        parser.error("processes in 1..64, clients in 1..20000, swarms >= 1, rounds in 1..20")
    hashes = [random.Random(n).randbytes(20) for n in range(args.swarms)]

    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {_loadavg()}")
    print(
        f"load: {args.processes} generator process(es) x {args.clients} clients, "
        f"{args.swarms} swarms; {args.rounds} rounds of {args.duration:g} s per tracker "
        f"(after {WARM_UP:g} s of warm-up each), alternating"
    )
    runs: dict[str, list[Load]] = {"opentracker": [], "bip_utracker": []}
    cpu: dict[str, float] = {"opentracker": 0.0, "bip_utracker": 0.0}
    with (
        tempfile.TemporaryDirectory(prefix="tracker-load-") as tmp,
        opentracker(hashes, Path(tmp) / "opentracker") as theirs,
        ours(hashes) as mine,
    ):
        for round_ in range(args.rounds):
            # Alternate who goes first: the machine's other load drifts over time.
            order = (theirs, mine) if round_ % 2 == 0 else (mine, theirs)
            for tracker in order:
                before = tracker.cpu_seconds()
                load = run_load(
                    (HOST, tracker.port), hashes, args.processes, args.clients, args.duration
                )
                cpu[tracker.name] += tracker.cpu_seconds() - before
                runs[tracker.name].append(load)
                print(
                    f"  round {round_ + 1} {tracker.name:<13} "
                    f"{load.announces / args.duration:>9,.0f} announces/s",
                    flush=True,
                )
        versions = {theirs.name: theirs.version, mine.name: mine.version}

    print()
    print(
        f"{'tracker':<13} {'version':<26} {'announces/s':>12} {'errors':>7} {'timeouts':>9} "
        f"{'peers/reply':>12} {'CPU us/announce':>16}"
    )
    rates: dict[str, float] = {}
    for name, loads in runs.items():
        rates[name] = statistics.median(load.announces / args.duration for load in loads)
        announces = sum(load.announces for load in loads)
        errors = sum(load.errors for load in loads)
        timeouts = sum(load.timeouts for load in loads)
        peers = sum(load.peers for load in loads) / announces if announces else 0.0
        # CPU over the whole run (warm-up included) per counted announce: a cost, not a rate.
        cost = cpu[name] / announces * 1e6 if announces else math.inf
        print(
            f"{name:<13} {versions[name]:<26} {rates[name]:>12,.0f} {errors:>7} {timeouts:>9} "
            f"{peers:>12.1f} {cost:>16.1f}"
        )
    ours_clean = all(load.errors == 0 and load.timeouts == 0 for load in runs["bip_utracker"])
    ratio = rates["bip_utracker"] / rates["opentracker"] if rates["opentracker"] else 0.0
    verdict = "met" if ratio >= GOAL and ours_clean else "NOT met"
    print(f"\nratio bip_utracker / opentracker (median announce rates): {ratio:.2f}")
    print(f"goal: >= {GOAL} with no errors or timeouts from bip_utracker: {verdict}")
    return 0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
