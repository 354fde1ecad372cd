r"""``bip download`` against a libtorrent leecher, both fed by one libtorrent seeder on loopback.

Run from the workspace root (libtorrent comes from the workspace's ``interop`` group):

    uv run python benchmarks/download_vs_libtorrent.py [--size 1G | --quick] [--repeat 3]
        [--encryption] [--piece-kib 1024] [--version v1|hybrid] [--timeout 300]

One run: random data (``--size``, default 1 GiB; ``--quick``: 256 MiB) is written to a temporary
directory and made into a torrent (bip_metainfo, one file, ``--piece-kib`` pieces); one
libtorrent 2.1 session (tests/interop/_lt_peer.py, seed mode, both plaintext and MSE accepted)
seeds it on 127.0.0.1 for the whole run. Then, ``--repeat`` rounds, each of:

- **libtorrent**: benchmarks/_lt_leecher.py, a libtorrent session in its own process, dials
  the seeder and downloads into a fresh directory;
- **bip**: ``python -m bip download TORRENT --dir D --peer SEEDER --no-dht --no-trackers
  --bind 127.0.0.1 --port 0 --encryption disable -q --no-resume``, the command a user runs,
  in its own process, into a fresh directory;

and with ``--encryption`` the same pair again with MSE/RC4 on both (``--encryption require``
for bip, RC4 only for libtorrent: libtorrent left to itself would choose MSE's plaintext
mode). Each download directory is deleted right after its run, before its dirty pages are
written back, so no run pays for the previous one's writeback.

**What is timed.** Both sides are separate processes, treated alike. The rate is the torrent's
size over the time from the first payload bytes on disk (the benchmark watches the download
directory every 2 ms: the moment the payload file appears) to every piece verified: for
libtorrent, its ``torrent_finished_alert`` (the leecher notes ``time.monotonic()``, one clock
for every process of the machine); for bip, the process's exit, since ``bip download`` exits
as soon as every piece is verified (its only signal; ``--no-resume`` so that its exit saves no
resume data, whose final save syncs the files: libtorrent syncs nothing either). So process
start-up (interpreter, imports, session, connect, handshake) is excluded for both; the bip side
still includes its shutdown (closing the session: milliseconds). The rate from the launch of the
process, start-up included for both, is printed too. Rates are MiB/s (2**20 bytes); the median
of the rounds is reported for each side with the ratio bip / libtorrent against the goal of
issue 10 (**0.5**: PASS or FAIL); the exit status is 0 either way (a report, not a test), 1
if a download failed.

Also printed per run: the CPU seconds of the leecher process and of the seeder during the run
(from /proc), and the load average: the machine is shared, compare numbers of one run only.
``--wrap-bip "py-spy record -o bip.svg --"`` runs bip under a profiler (the command is
prepended to bip's).

Loopback only: the seeder and the leechers listen on and dial 127.0.0.1, with DHT, LSD, UPnP,
NAT-PMP and trackers off (../shared/INTEROP.md). Every wait is bounded (``--timeout`` per
download), every process started is killed by its PID in ``finally``, the temporary directory
is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from _bench_common import HOST, BenchmarkError, free_port, parse_size
from bip_metainfo import create_torrent

GOAL = 0.5
MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
LT_SEEDER = ROOT / "tests" / "interop" / "_lt_peer.py"
LT_LEECHER = Path(__file__).resolve().with_name("_lt_leecher.py")
POLL = 0.002  # seconds between two looks at a download's progress
CHUNK = 16 * MIB  # data is generated and written in pieces of this size
SEED = 20261124
TICKS = os.sysconf("SC_CLK_TCK")

Side = Literal["libtorrent", "bip"]
Encryption = Literal["plaintext", "mse"]


@dataclass(frozen=True, slots=True)
class Run:
    """One download's timings (``time.monotonic()`` seconds) and CPU seconds."""

    side: Side
    encryption: Encryption
    launched: float
    first_data: float
    verified: float
    leecher_cpu: float
    seeder_cpu: float
    load: float

    def rate(self, size: int) -> float:
        """MiB/s from the first payload bytes on disk to every piece verified."""
        return size / MIB / (self.verified - self.first_data)

    def rate_from_launch(self, size: int) -> float:
        """MiB/s from the process's launch (start-up included) to every piece verified."""
        return size / MIB / (self.verified - self.launched)


def make_payload(
    folder: Path, size: int, piece_length: int, version: Literal["v1", "hybrid"]
) -> Path:
    """Write ``folder/seed/payload.bin`` (seeded random bytes) and its torrent; the torrent's
    path."""
    seed_dir = folder / "seed"
    seed_dir.mkdir()
    rng = random.Random(SEED)
    with open(seed_dir / "payload.bin", "wb") as out:
        left = size
        while left:
            n = min(CHUNK, left)
            out.write(rng.randbytes(n))
            left -= n
    metainfo = create_torrent(
        seed_dir / "payload.bin",
        version=version,
        piece_length=piece_length,
        creation_date=None,
        created_by=None,
    )
    torrent = folder / "payload.torrent"
    torrent.write_bytes(metainfo.to_bytes())
    return torrent


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14 and 15


def children_cpu() -> float:
    """CPU seconds of every child process this one has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a process we started, by its PID, and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every :data:`POLL` seconds for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


@dataclass(frozen=True, slots=True)
class Seeder:
    """The libtorrent seeder of the whole run."""

    process: subprocess.Popen[bytes]
    port: int


def start_seeder(workdir: Path, torrent: Path, lifetime: float, log: Path) -> Seeder:
    """tests/interop/_lt_peer.py seeding ``torrent`` from ``workdir/seed`` in seed mode,
    accepting plaintext and MSE (``enabled``), once it listens and seeds."""
    port = free_port()
    ready = workdir / "seeder-ready.json"
    argv = [sys.executable, str(LT_SEEDER), "--port", str(port), "--torrent", str(torrent)]
    argv += ["--save-path", str(workdir / "seed"), "--ready", str(ready), "--wait", "seeding"]
    argv += ["--seed-mode", "--enc-policy", "enabled", "--lifetime", str(lifetime)]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    seeder = Seeder(process, port)
    try:
        wait_until(
            lambda: ready.exists() or process.poll() is not None, 60, "the seeder to be ready"
        )
        if not ready.exists():
            raise BenchmarkError(f"the seeder exited with {process.returncode}; see {log}")
        info = json.loads(ready.read_text())
        if info["port"] != port or not info["is_seeding"]:
            raise BenchmarkError(f"the seeder is not seeding on port {port}: {info}")
    except BaseException:
        stop(process)
        raise
    return seeder


@dataclass(frozen=True, slots=True)
class Bench:
    """What every download of the run shares."""

    workdir: Path
    torrent: Path
    seeder: Seeder
    size: int
    timeout: float
    wrap_bip: tuple[str, ...]

    def argv(self, side: Side, encryption: Encryption, down: Path, result: Path) -> list[str]:
        """The command line of one download."""
        peer = f"{HOST}:{self.seeder.port}"
        if side == "libtorrent":
            argv = [sys.executable, str(LT_LEECHER), "--torrent", str(self.torrent)]
            argv += ["--save-path", str(down), "--peer", peer, "--result", str(result)]
            argv += ["--lifetime", str(self.timeout)]
            return [*argv, "--encryption", "rc4" if encryption == "mse" else "plaintext"]
        argv = [*self.wrap_bip, sys.executable, "-m", "bip", "download", str(self.torrent)]
        argv += ["--dir", str(down), "--peer", peer, "--no-dht", "--no-trackers"]
        argv += ["--bind", HOST, "--port", "0", "-q", "--no-resume"]
        return [*argv, "--encryption", "require" if encryption == "mse" else "disable"]

    def download(self, side: Side, encryption: Encryption) -> Run:
        """One download by ``side`` into a fresh directory, deleted afterwards."""
        down = self.workdir / f"down-{side}"
        down.mkdir()
        result = self.workdir / f"{side}-result.json"
        payload = down / "payload.bin"
        log = self.workdir / f"{side}.log"
        seeder = self.seeder.process.pid
        cpu_before = children_cpu()
        seeder_before = process_cpu(seeder)
        load = os.getloadavg()[0]
        try:
            with open(log, "wb") as out:
                launched = time.monotonic()
                process = subprocess.Popen(
                    self.argv(side, encryption, down, result),
                    cwd=self.workdir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                first_data, verified = self._follow(
                    side, encryption, process, payload=payload, result=result, log=log
                )
                seeder_cpu = process_cpu(seeder) - seeder_before
                process.wait(timeout=30)  # let it exit by itself: its CPU time is counted then
            finally:
                stop(process)
            got = payload.stat().st_size if payload.exists() else -1
            if got != self.size:
                raise BenchmarkError(f"{side} finished with {got} bytes, not {self.size}")
        finally:
            shutil.rmtree(down, ignore_errors=True)
            result.unlink(missing_ok=True)
        return Run(
            side,
            encryption,
            launched,
            launched if first_data is None else first_data,  # finished between two polls
            verified,
            children_cpu() - cpu_before,
            seeder_cpu,
            load,
        )

    def _follow(
        self,
        side: Side,
        encryption: Encryption,
        process: subprocess.Popen[bytes],
        *,
        payload: Path,
        result: Path,
        log: Path,
    ) -> tuple[float | None, float]:
        """Watch a download: when its payload file appeared, when every piece was verified."""
        deadline = time.monotonic() + self.timeout
        first_data: float | None = None
        while True:
            now = time.monotonic()
            if first_data is None and payload.exists():
                first_data = now
            code = process.poll()
            if side == "bip" and code == 0:
                return first_data, now
            if side == "libtorrent" and result.exists():
                answer = json.loads(result.read_text())
                if answer["encrypted"] != (encryption == "mse"):
                    raise BenchmarkError(f"libtorrent's connection: {answer}")
                return first_data, float(answer["finished"])
            if code is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise BenchmarkError(f"{side} exited with {code}:\n{tail}")
            if now > deadline:
                raise BenchmarkError(f"{side} did not finish in {self.timeout:g} s")
            time.sleep(POLL)


def report(runs: list[Run], size: int) -> None:
    """Each side's median rate per encryption, and the ratio against the goal."""
    print()
    for encryption in dict.fromkeys(run.encryption for run in runs):
        medians: dict[Side, float] = {}
        for side in ("libtorrent", "bip"):
            mine = [run for run in runs if run.side == side and run.encryption == encryption]
            rates = [run.rate(size) for run in mine]
            launch = [run.rate_from_launch(size) for run in mine]
            medians[side] = statistics.median(rates)
            cpu = statistics.median(run.leecher_cpu for run in mine) / (size / 2**30)
            seeder = statistics.median(run.seeder_cpu for run in mine) / (size / 2**30)
            print(
                f"{side:10} {encryption:9} {medians[side]:7.1f} MiB/s median "
                f"(runs: {', '.join(f'{r:.0f}' for r in rates)}); from launch "
                f"{statistics.median(launch):6.1f} MiB/s; CPU s/GiB: leecher {cpu:.2f}, "
                f"seeder {seeder:.2f}"
            )
        ratio = medians["bip"] / medians["libtorrent"]
        verdict = "PASS" if ratio >= GOAL else "FAIL"
        print(f"  ratio bip/libtorrent ({encryption}): {ratio:.2f}  goal {GOAL:.2f}: {verdict}")


def run(args: argparse.Namespace) -> int:
    size: int = parse_size("256M") if args.quick else args.size
    encryptions: list[Encryption] = ["plaintext", "mse"] if args.encryption else ["plaintext"]
    sides: list[Side] = ["libtorrent", "bip"]
    wrap_bip = shlex.split(args.wrap_bip) if args.wrap_bip else []
    print(
        f"{size / MIB:.0f} MiB, one file, {args.piece_kib} KiB pieces, {args.version}; "
        f"{args.repeat} round(s) of {', '.join(sides)} x {', '.join(encryptions)}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bip-dlbench-"))
    seeder: Seeder | None = None
    runs: list[Run] = []
    try:
        start = time.monotonic()
        torrent = make_payload(workdir, size, args.piece_kib * 1024, args.version)
        print(f"payload and torrent made in {time.monotonic() - start:.1f} s")
        lifetime = args.repeat * len(encryptions) * len(sides) * (args.timeout + 40) + 120
        seeder = start_seeder(workdir, torrent, lifetime, workdir / "seeder.log")
        bench = Bench(workdir, torrent, seeder, size, args.timeout, tuple(wrap_bip))
        for round_ in range(1, args.repeat + 1):
            for encryption in encryptions:
                for side in sides:
                    one = bench.download(side, encryption)
                    runs.append(one)
                    print(
                        f"round {round_}: {side:10} {encryption:9} {one.rate(size):7.1f} MiB/s "
                        f"({one.verified - one.first_data:6.2f} s; from launch "
                        f"{one.verified - one.launched:6.2f} s); CPU leecher "
                        f"{one.leecher_cpu:5.2f} s, seeder {one.seeder_cpu:5.2f} s; "
                        f"load {one.load:.2f}",
                        flush=True,
                    )
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if seeder is not None:
            stop(seeder.process)
        shutil.rmtree(workdir, ignore_errors=True)
    report(runs, size)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (the machine is shared)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"), help="default 1G")
    parser.add_argument("--quick", action="store_true", help="256 MiB instead of --size")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--encryption", action="store_true", help="add MSE (RC4) runs")
    parser.add_argument("--piece-kib", type=int, default=1024, help="piece size (default 1024)")
    parser.add_argument("--version", choices=["v1", "hybrid"], default="v1")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per download")
    parser.add_argument("--wrap-bip", default="", help="a command to run bip under (a profiler)")
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeat < 1 or args.piece_kib < 16 or args.timeout <= 0:
        parser.error("--size, --repeat, --timeout must be positive and --piece-kib at least 16")
    if args.piece_kib & (args.piece_kib - 1):
        parser.error("--piece-kib must be a power of two")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
