r"""uTP throughput over loopback: bip's UtpSocket against libtorrent 2.1's uTP, side by side.

Run from the workspace root (libtorrent comes from the workspace's ``interop`` group):

    uv run python benchmarks/utp_throughput.py [--size 64M] [--repeat 1] [--timeout 60]
        [--only NAME ...]

One run moves ``--size`` bytes (default 64 MiB) one way over loopback in each of:

- **lt->lt uTP** (the reference): two libtorrent sessions (tests/interop/_lt_utp.py, TCP off),
  one seeding a torrent of random data, the other dialing it and downloading it;
- **lt->bip uTP**: the libtorrent seeder again; bip (a UtpSocket and a Handshaker, in this
  process) dials it and requests every block (64 requests outstanding), counting the blocks;
- **bip->lt uTP**: a libtorrent leecher dials bip's UtpSocket; bip answers its requests from the
  payload in memory;
- **bip->bip uTP**: two UtpSockets in this process, one stream, ``send_all`` of 256 KiB chunks
  on one side and ``receive_some`` on the other: the transport alone, no BitTorrent;
- **bip->bip TCP**: the same pair of trio tasks over a loopback TCP connection, for scale.

**What is timed.** A libtorrent leecher's rate is from the first payload byte it sees to its
last piece (it notes both with ``time.time()``, polling every 10 ms); bip's from the first
block received (or the first request answered) to the last block received (or the leecher's
last piece). Rates are MB/s (10**6 bytes), the median of ``--repeat`` runs, each with its ratio
against lt->lt uTP. Printed with them: packets resent by bip (``retransmits``) over packets
sent. When libtorrent is missing or the reference run failed, the ratios are printed as
``NO VERDICT``. The exit status is 0 either way (a report, not a test). The machine is shared:
compare numbers of one run only.

Loopback only: every socket binds 127.0.0.1; the libtorrent sessions have DHT, LSD, UPnP,
NAT-PMP and TCP off (../shared/INTEROP.md). Every wait is bounded (``--timeout`` per transfer),
every process started is killed by its PID in ``finally``, the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import trio

from _bench_common import HOST, BenchmarkError, free_port, parse_size
from bip_handshake import EncryptionPolicy, Extensions, PeerAddress, PeerId
from bip_handshake._handshaker import CompletedHandshake, Dialer, Handshaker, open_handshaker
from bip_handshake._utp_socket import UtpSocket, open_utp_socket
from bip_metainfo import InfoHash, Metainfo, create_torrent
from bip_peer._messages import (
    NEED_DATA,
    Bitfield,
    Interested,
    MessageDecoder,
    Piece,
    Request,
    Unchoke,
)

MIB = 1 << 20
BLOCK = 16 * 1024
PIECE_LENGTH = 256 * 1024
IN_FLIGHT = 64  # block requests bip keeps outstanding when it downloads
CHUNK = 256 * 1024  # bip->bip: the size of each send_all
ROOT = Path(__file__).resolve().parents[1]
LT_UTP = ROOT / "tests" / "interop" / "_lt_utp.py"
POLL = 0.01
SEED = 20261124
REFERENCE = "lt->lt uTP"
NAMES = (REFERENCE, "lt->bip uTP", "bip->lt uTP", "bip->bip uTP", "bip->bip TCP")


@dataclass(frozen=True, slots=True)
class Result:
    """One transfer: seconds taken, and bip's uTP packet counters when bip sent or received."""

    seconds: float
    packets_sent: int = 0
    retransmits: int = 0


@dataclass(frozen=True, slots=True)
class Bench:
    """What every transfer of the run shares."""

    workdir: Path
    torrent: Path
    payload: bytes
    timeout: float


def libtorrent_available() -> bool:
    """Whether ``import libtorrent`` works in this interpreter."""
    try:
        import libtorrent  # noqa: F401
    except ImportError:
        return False
    return True


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a process we started, by its PID, and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every :data:`POLL` seconds for at most ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(POLL)
        return
    raise BenchmarkError(f"timed out after {timeout:g} s waiting for {what}")


class LtProcess:
    """One _lt_utp.py session: a seeder, or a leecher (``download``) that dials ``peer``."""

    def __init__(self, bench: Bench, name: str, *, download: bool, peer: str | None) -> None:
        self.port = free_port()
        self.ready = bench.workdir / f"{name}-ready.json"
        self.done = bench.workdir / f"{name}-done.json"
        self.log = bench.workdir / f"{name}.log"
        save = bench.workdir / (f"{name}-down" if download else "seed")
        for path in (self.ready, self.done):
            path.unlink(missing_ok=True)
        argv = [sys.executable, str(LT_UTP), "--port", str(self.port)]
        argv += ["--torrent", str(bench.torrent), "--save-path", str(save)]
        argv += ["--ready", str(self.ready), "--lifetime", str(bench.timeout + 30)]
        if download:
            shutil.rmtree(save, ignore_errors=True)
            save.mkdir()
            argv += ["--download", "--done", str(self.done)]
        if peer is not None:
            argv += ["--peer", peer]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    async def wait_ready(self) -> None:
        """Until the session listens (and seeds, or has checked its empty files)."""
        await wait_until(
            lambda: self.ready.exists() or self.process.poll() is not None, 30, "libtorrent"
        )
        if not self.ready.exists():
            raise BenchmarkError(f"libtorrent exited with {self.process.returncode}: {self.log}")

    async def wait_done(self, timeout: float) -> dict[str, float]:
        """The leecher's done file, once it has every piece."""
        await wait_until(self.done.exists, timeout, "the libtorrent leecher to finish")
        result: dict[str, float] = json.loads(self.done.read_text())
        return result


def make_payload(workdir: Path, size: int) -> tuple[Path, bytes]:
    """``workdir/seed/payload.bin`` of random bytes and a v1 torrent of it."""
    payload = random.Random(SEED).randbytes(size)
    content = workdir / "seed"
    content.mkdir()
    (content / "payload.bin").write_bytes(payload)
    metainfo = create_torrent(
        content / "payload.bin",
        version="v1",
        piece_length=PIECE_LENGTH,
        creation_date=None,
        created_by=None,
    )
    torrent = workdir / "payload.torrent"
    torrent.write_bytes(metainfo.to_bytes())
    return torrent, payload


def info_hash_of(torrent: Path) -> InfoHash:
    """The torrent's InfoHash."""
    return Metainfo.from_bytes(torrent.read_bytes()).info.info_hash


async def lt_to_lt(bench: Bench) -> Result:
    """The reference: libtorrent downloads from libtorrent over uTP."""
    seeder = LtProcess(bench, "lt-seed", download=False, peer=None)
    try:
        await seeder.wait_ready()
        leecher = LtProcess(bench, "lt-leech", download=True, peer=f"{HOST}:{seeder.port}")
        try:
            await leecher.wait_ready()
            done = await leecher.wait_done(bench.timeout)
        finally:
            stop(leecher.process)
    finally:
        stop(seeder.process)
    return Result(done["finished"] - done["first_data"])


def _handshaker(dial: Dialer | None = None) -> AbstractAsyncContextManager[Handshaker]:
    return open_handshaker(
        peer_id=PeerId(b"-BP0100-utpbenchmark"),
        listen=[],
        extensions=Extensions.FAST | Extensions.EXTENSION_PROTOCOL,
        encryption=EncryptionPolicy.PLAINTEXT_ONLY,
        handshake_timeout=15,
        connect_timeout=10,
        dial=dial,
    )


async def lt_to_bip(bench: Bench) -> Result:
    """bip dials a libtorrent seeder over uTP and downloads every block."""
    info_hash = info_hash_of(bench.torrent)
    seeder = LtProcess(bench, "lt-seed", download=False, peer=None)
    try:
        await seeder.wait_ready()
        address = PeerAddress(IPv4Address(HOST), seeder.port)
        async with open_utp_socket((HOST, 0)) as utp, _handshaker(dial=utp.connect) as hs:
            hs.register(info_hash)
            hs.connect(info_hash, address)
            with trio.fail_after(bench.timeout):
                peer = await hs.completed().receive()
                try:
                    start, end = await _download(peer, len(bench.payload))
                finally:
                    await peer.aclose()
            stats = utp.statistics()
    finally:
        stop(seeder.process)
    return Result(end - start, stats.datagrams_sent, stats.retransmits)


async def _download(peer: CompletedHandshake, size: int) -> tuple[float, float]:
    requests = [
        Request(begin // PIECE_LENGTH, begin % PIECE_LENGTH, min(BLOCK, size - begin))
        for begin in range(0, size, BLOCK)
    ]
    decoder = MessageDecoder()
    decoder.receive_data(peer.trailing)
    stream = peer.stream
    await stream.send_all(Interested().encode())
    sent = received = 0
    start = 0.0
    unchoked = False
    while received < len(requests):
        message = decoder.next_message()
        if message is NEED_DATA:
            data = await stream.receive_some()
            if not data:
                raise BenchmarkError("libtorrent closed the connection")
            decoder.receive_data(data)
            continue
        if isinstance(message, Unchoke):
            unchoked = True
        elif isinstance(message, Piece):
            if not received:
                start = time.time()
            received += 1
        if unchoked and sent - received < IN_FLIGHT and sent < len(requests):
            batch = requests[sent : sent + IN_FLIGHT - (sent - received)]
            sent += len(batch)
            await stream.send_all(b"".join(request.encode() for request in batch))
    return start, time.time()


async def bip_to_lt(bench: Bench) -> Result:
    """A libtorrent leecher dials bip over uTP; bip serves every block it asks for."""
    info_hash = info_hash_of(bench.torrent)
    async with open_utp_socket((HOST, 0)) as utp, _handshaker() as hs:
        hs.register(info_hash)

        async def accept(socket: UtpSocket) -> None:
            async for stream in socket.incoming():
                hs.accept_stream(stream, stream.remote_address)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept, utp)
            local = utp.local_address
            leecher = LtProcess(bench, "lt-leech", download=True, peer=f"{HOST}:{local.port}")
            try:
                with trio.fail_after(bench.timeout):
                    peer = await hs.completed().receive()
                    try:
                        nursery.start_soon(_serve, peer, bench.payload)
                        done = await leecher.wait_done(bench.timeout)
                    finally:
                        await peer.aclose()
            finally:
                stop(leecher.process)
            nursery.cancel_scope.cancel()
        stats = utp.statistics()
    return Result(done["finished"] - done["first_data"], stats.datagrams_sent, stats.retransmits)


async def _serve(peer: CompletedHandshake, payload: bytes) -> None:
    num_pieces = -(-len(payload) // PIECE_LENGTH)
    bits = bytearray((num_pieces + 7) // 8)
    for index in range(num_pieces):
        bits[index // 8] |= 0x80 >> (index % 8)
    decoder = MessageDecoder()
    decoder.receive_data(peer.trailing)
    stream = peer.stream
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(Bitfield(bytes(bits)).encode() + Unchoke().encode())
        while True:
            message = decoder.next_message()
            if message is NEED_DATA:
                data = await stream.receive_some()
                if not data:
                    return
                decoder.receive_data(data)
                continue
            if isinstance(message, Request):
                start = message.index * PIECE_LENGTH + message.begin
                block = payload[start : start + message.length]
                await stream.send_all(Piece(message.index, message.begin, block).encode())


async def _pump(
    send: trio.abc.HalfCloseableStream, receive: trio.abc.Stream, payload: bytes
) -> float:
    """Send ``payload`` on ``send`` in chunks, read it all from ``receive``: the seconds."""
    view = memoryview(payload)
    received = 0
    start = time.perf_counter()

    async def sender() -> None:
        for offset in range(0, len(view), CHUNK):
            await send.send_all(view[offset : offset + CHUNK])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while received < len(payload):
            data = await receive.receive_some(1 << 20)
            if not data:
                raise BenchmarkError("the stream ended early")
            received += len(data)
    return time.perf_counter() - start


async def bip_to_bip_utp(bench: Bench) -> Result:
    """Two UtpSockets in this process: one stream, the payload one way."""
    async with open_utp_socket((HOST, 0)) as a, open_utp_socket((HOST, 0)) as b:
        with trio.fail_after(bench.timeout):
            client = await a.connect(b.local_address)
            server = await b.incoming().receive()
            seconds = await _pump(client, server, bench.payload)
            stats = client.statistics()
            await client.aclose()
            await server.aclose()
    return Result(seconds, stats.packets_sent, stats.retransmits)


async def bip_to_bip_tcp(bench: Bench) -> Result:
    """The same pair of tasks over loopback TCP."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    listener = listeners[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        with trio.fail_after(bench.timeout):
            client = await trio.open_tcp_stream(HOST, port)
            server = await listener.accept()
            async with client, server:
                seconds = await _pump(client, server, bench.payload)
    return Result(seconds)


RUNS = {
    REFERENCE: lt_to_lt,
    "lt->bip uTP": lt_to_bip,
    "bip->lt uTP": bip_to_lt,
    "bip->bip uTP": bip_to_bip_utp,
    "bip->bip TCP": bip_to_bip_tcp,
}
NEEDS_LIBTORRENT = {REFERENCE, "lt->bip uTP", "bip->lt uTP"}


def report(results: dict[str, list[Result]], failed: dict[str, str], size: int) -> None:
    """Median MB/s per run and the ratio against libtorrent<->libtorrent."""
    print()
    rates = {
        name: statistics.median(size / 1e6 / r.seconds for r in runs)
        for name, runs in results.items()
        if runs
    }
    reference = rates.get(REFERENCE)
    for name in NAMES:
        if name in failed:
            print(f"{name:14} {'-':>9}        {failed[name]}")
            continue
        if name not in rates:
            continue
        runs = results[name]
        sent = sum(r.packets_sent for r in runs)
        resent = sum(r.retransmits for r in runs)
        counters = f"  bip resent {resent}/{sent} packets" if sent else ""
        ratio = (
            f"{rates[name] / reference:6.2f} x lt->lt"
            if reference
            else "NO VERDICT (no lt->lt reference)"
        )
        print(f"{name:14} {rates[name]:8.1f} MB/s  {ratio}{counters}")


async def run(args: argparse.Namespace) -> int:
    size: int = args.size
    have_lt = libtorrent_available()
    names = [name for name in NAMES if not args.only or name in args.only]
    print(
        f"{size / MIB:.0f} MiB one way over loopback, {args.repeat} round(s); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        + ("" if have_lt else "; libtorrent not importable: its runs are skipped")
    )
    workdir = Path(tempfile.mkdtemp(prefix="bip-utpbench-"))
    results: dict[str, list[Result]] = {name: [] for name in names}
    failed: dict[str, str] = {}
    try:
        torrent, payload = make_payload(workdir, size)
        bench = Bench(workdir, torrent, payload, args.timeout)
        for round_ in range(1, args.repeat + 1):
            for name in names:
                if name in failed:
                    continue
                if name in NEEDS_LIBTORRENT and not have_lt:
                    failed[name] = "NO VERDICT (libtorrent missing)"
                    continue
                try:
                    result = await RUNS[name](bench)
                except (BenchmarkError, trio.TooSlowError, OSError) as error:
                    failed[name] = f"failed: {error!r}"
                    print(f"round {round_}: {name:14} failed: {error!r}", flush=True)
                    continue
                results[name].append(result)
                extra = (
                    f", bip resent {result.retransmits}/{result.packets_sent}"
                    if result.packets_sent
                    else ""
                )
                print(
                    f"round {round_}: {name:14} {size / 1e6 / result.seconds:8.1f} MB/s "
                    f"({result.seconds:.2f} s{extra})",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, failed, size)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (the machine is shared)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("64M"), help="default 64M")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (median reported)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per transfer")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run only these")
    args = parser.parse_args(argv)
    if args.size < BLOCK or args.repeat < 1 or args.timeout <= 0:
        parser.error("--size must be at least 16 KiB, --repeat and --timeout positive")
    return trio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
