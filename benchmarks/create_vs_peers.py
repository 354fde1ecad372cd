r"""Creating a torrent: bip_metainfo.create_torrent against mktorrent, torf and libtorrent.

Run from the workspace root:

    uv run --with torf python benchmarks/create_vs_peers.py

(torf comes from PyPI through `--with`, libtorrent 2.1.1 from the workspace's `interop` dependency
group, mktorrent is the apt binary on PATH.) Options: `--size` (default 1 GiB; suffixes K, M, G
are powers of 1024), `--quick` for fewer repetitions, `--markdown` to print the tables as
Markdown, `--dir` for where the temporary data directory goes (default /tmp), `--reps N`.

One file of seeded pseudo-random bytes (`random.Random(20240607)`) is written once into a fresh
temporary directory, fsync'ed (so no write-back runs during the timings) and read once in full so
that it is in the page cache; free memory is checked first and the file's residency in the page
cache is measured with mincore(2) before and after the timings. Then every contestant makes the
torrent of that file with 1 MiB pieces, all of them producing every piece hash:

- hashlib bound: SHA-1 of each 1 MiB piece on two threads, each taking every other piece and
  reading it with one `os.preadv` into a buffer of its own (a 1 MiB read per piece measured
  fastest here, ahead of 64 to 256 KiB reads and of each thread taking a contiguous half). No
  torrent, just the piece hashes: the hardware bound for two-thread v1 creation.
- ours v1 / v2 / hybrid: `create_torrent(path, version=..., piece_length=1 << 20,
  creation_date=None, threads=2).to_bytes()`.
- mktorrent -t2: `mktorrent -t 2 -l 20 -o OUT PATH` as a subprocess, the whole process timed
  (mktorrent refuses to overwrite OUT, so it is deleted, untimed, before every run).
- torf (2 threads): `torf.Torrent(path=..., piece_size=1 << 20, created_by=None)`, then
  `generate(threads=2)` and `dump()`.
- libtorrent v1 / v2 / hybrid: `lt.list_files`, `lt.create_torrent(entries, 1 << 20, flags)`
  (`v1_only`, `v2_only`, or 0 for hybrid), `lt.set_piece_hashes(ct, parent)` and
  `lt.bencode(ct.generate())`. The Python binding of set_piece_hashes takes no settings_pack,
  so libtorrent uses its own default: `hashing_threads = max(1, hardware_concurrency / 2)`
  (src/create_torrent.cpp), one thread on a 2-core machine; the CPU/wall column shows it.

Before anything is timed, each contestant runs once (untimed; the warm-up) and its result is
checked: the bound's digests against our v1 `pieces`, every peer's torrent against ours of the
same version (identical info dictionary, or else the same piece hashes, reported with the keys
that differ); a contestant whose hashes differ is reported and not timed. Timing is round-robin
with a rotating start, with `time.perf_counter` around each whole run; medians are reported, and
the CPU time of this process and of its waited-for children (getrusage) over the wall time, which
shows how many cores a contestant kept busy.

Goals (from the issue): our v1 creation at least as fast as mktorrent -t2 and torf, and within
5% of the two-thread hashlib bound; v2 and hybrid reported beside libtorrent's. Measured there:
bound about 3.1 GB/s, mktorrent -t2 about 3.0 GB/s, torf 2.9 GB/s (GB = 10**9 bytes).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import importlib
import importlib.metadata
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["bound", "ours", "peer"]
Version = Literal["v1", "v2", "hybrid"]

PIECE = 1 << 20
SEED = 20240607
THREADS = 2
GOAL_PEER = 1.0  # our v1 speed over mktorrent -t2's and over torf's
GOAL_BOUND = 0.95  # our v1 speed over the two-thread hashlib bound's
HEADROOM = 768 << 20  # memory wanted beyond the file itself: the processes, the torrents


# --------------------------------------------------------------------------------------------
# The data file


def _parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = clean[-1:] if clean[-1:] in units else ""
    number = clean[: len(clean) - len(unit)]
    try:
        size = int(float(number) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"the size must be positive, not {text!r}")
    return size


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes ({} where there is none)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return out


def _write_data(path: Path, size: int) -> float:
    """Write `size` seeded random bytes to `path`, fsync them; return the seconds it took."""
    start = time.perf_counter()
    rng = random.Random(SEED)
    chunk = 64 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(rng.randbytes(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - start


def _read_all(path: Path) -> float:
    start = time.perf_counter()
    buf = bytearray(8 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - start


def _resident_fraction(path: Path) -> float | None:
    """The fraction of the file's pages in the page cache (mincore(2)); None if unknown."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_fn, munmap, mincore = libc.mmap, libc.munmap, libc.mincore
    except (OSError, AttributeError):
        return None
    mmap_fn.restype = ctypes.c_void_p
    mmap_fn.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = path.stat().st_size
    page = os.sysconf("SC_PAGE_SIZE")
    pages = -(-size // page)
    fd = os.open(path, os.O_RDONLY)
    try:
        prot_read, map_shared = 1, 1
        addr = mmap_fn(None, size, prot_read, map_shared, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return None
        try:
            vec = (ctypes.c_ubyte * pages)()
            if mincore(addr, size, vec) != 0:
                return None
            resident = pages - bytes(vec).translate(bytes(i & 1 for i in range(256))).count(0)
        finally:
            munmap(addr, size)
    finally:
        os.close(fd)
    return resident / pages


# --------------------------------------------------------------------------------------------
# Contestants


@dataclass(slots=True)
class Contestant:
    name: str
    kind: Kind
    version: Version | None  # None for the bound: hashes only
    how: str
    run: Callable[[], Any]
    prepare: Callable[[], None] | None = None  # untimed, before every run
    note: str = ""
    na: str | None = None  # why it is not timed
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def spread(self) -> float:
        """The interquartile range over the median (0 for a single sample)."""
        if len(self.wall) < 2:
            return 0.0
        q = statistics.quantiles(self.wall, n=4)
        return (q[2] - q[0]) / self.median


@dataclass(frozen=True, slots=True)
class Missing:
    name: str
    reason: str


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _hashlib_bound(path: Path, size: int) -> Callable[[], list[bytes]]:
    count = -(-size // PIECE)

    def run() -> list[bytes]:
        out: list[bytes] = [b""] * count

        def work(first: int) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                buf = memoryview(bytearray(PIECE))
                sha1, preadv = hashlib.sha1, os.preadv
                for i in range(first, count, THREADS):
                    n = preadv(fd, [buf], i * PIECE)
                    out[i] = sha1(buf[:n]).digest()
            finally:
                os.close(fd)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    return run


def _load_contestants(
    path: Path, size: int, workdir: Path
) -> tuple[list[Contestant], list[Missing]]:
    found: list[Contestant] = []
    missing: list[Missing] = []

    def attempt(name: str, build: Callable[[], list[Contestant]]) -> None:
        try:
            found.extend(build())
        except Exception as exc:  # an absent or broken peer is reported, not fatal
            missing.append(Missing(name, f"{type(exc).__name__}: {exc}"))

    def bound() -> list[Contestant]:
        return [
            Contestant(
                "hashlib bound (2 threads)",
                "bound",
                None,
                f"hashlib.sha1 ({hashlib.sha1.__name__}, {_openssl()}) of each 1 MiB piece, "
                "two threads taking every other piece, one os.preadv per piece into a buffer each",
                _hashlib_bound(path, size),
            )
        ]

    def ours() -> list[Contestant]:
        mod = importlib.import_module("bip_metainfo")
        create = mod.create_torrent
        where = os.path.dirname(mod.__file__ or "?")

        def make(version: Version) -> Contestant:
            def run() -> bytes:
                torrent = create(
                    path,
                    version=version,
                    piece_length=PIECE,
                    creation_date=None,
                    threads=THREADS,
                )
                data: bytes = torrent.to_bytes()
                return data

            return Contestant(
                f"ours {version} (threads=2)",
                "ours",
                version,
                f"bip_metainfo {_version('bip-metainfo')} from {where}: create_torrent(path, "
                f"version={version!r}, piece_length=1 << 20, creation_date=None, threads=2)"
                ".to_bytes()",
                run,
            )

        return [make("v1"), make("v2"), make("hybrid")]

    def mktorrent() -> list[Contestant]:
        exe = shutil.which("mktorrent")
        if exe is None:
            raise FileNotFoundError("mktorrent is not on PATH (apt package mktorrent)")
        out = workdir / "mktorrent.torrent"
        version_text = subprocess.run(
            [exe, "-h"], capture_output=True, text=True, check=False, timeout=30
        ).stdout.splitlines()
        argv = [exe, "-t", str(THREADS), "-l", "20", "-o", str(out), str(path)]

        def prepare() -> None:
            out.unlink(missing_ok=True)

        def run() -> bytes:
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=600)
            return out.read_bytes()

        return [
            Contestant(
                "mktorrent -t2",
                "peer",
                "v1",
                f"{version_text[0] if version_text else 'mktorrent'}: `mktorrent -t 2 -l 20 -o "
                "OUT PATH`, the whole process timed, OUT deleted (untimed) before each run",
                run,
                prepare,
            )
        ]

    def torf() -> list[Contestant]:
        mod: Any = importlib.import_module("torf")

        def run() -> bytes:
            t = mod.Torrent(path=str(path), piece_size=PIECE, created_by=None)
            t.generate(threads=THREADS)
            data: bytes = t.dump()
            return data

        return [
            Contestant(
                "torf (threads=2)",
                "peer",
                "v1",
                f"torf {_version('torf')}: Torrent(path=..., piece_size=1 << 20, created_by=None)"
                ", .generate(threads=2), .dump() (a reader thread feeds 2 hasher threads)",
                run,
            )
        ]

    def libtorrent() -> list[Contestant]:
        lt: Any = importlib.import_module("libtorrent")
        default_threads = max(1, (os.cpu_count() or 1) // 2)
        flags = {
            "v1": lt.create_torrent.v1_only,
            "v2": lt.create_torrent.v2_only,
            "hybrid": 0,
        }

        def make(version: Version) -> Contestant:
            def run() -> bytes:
                entries = lt.list_files(str(path), lambda _: True, 0)
                ct = lt.create_torrent(entries, PIECE, flags[version])
                lt.set_piece_hashes(ct, str(path.parent))
                return bytes(lt.bencode(ct.generate()))

            flag = {"v1": "v1_only", "v2": "v2_only", "hybrid": "0"}[version]
            return Contestant(
                f"libtorrent {version}",
                "peer",
                version,
                f"libtorrent {lt.__version__}: list_files, create_torrent(entries, 1 << 20, "
                f"{flag}), set_piece_hashes(ct, parent), bencode(ct.generate()); its default "
                f"hashing_threads = max(1, hardware_concurrency / 2) = {default_threads} here "
                "(the Python binding takes no settings)",
                run,
            )

        return [make("v1"), make("v2"), make("hybrid")]

    attempt("hashlib bound", bound)
    attempt("bip_metainfo", ours)
    attempt("mktorrent", mktorrent)
    attempt("torf", torf)
    attempt("libtorrent", libtorrent)
    # Table order: v1 first, then v2 and hybrid each beside libtorrent's.
    order = [
        "hashlib bound (2 threads)",
        "ours v1 (threads=2)",
        "mktorrent -t2",
        "torf (threads=2)",
        "libtorrent v1",
        "ours v2 (threads=2)",
        "libtorrent v2",
        "ours hybrid (threads=2)",
        "libtorrent hybrid",
    ]
    found.sort(key=lambda c: order.index(c.name))
    return found, missing


def _openssl() -> str:
    import ssl

    return ssl.OPENSSL_VERSION


# --------------------------------------------------------------------------------------------
# Checking


def _describe_difference(theirs: dict[bytes, Any], ours: dict[bytes, Any]) -> str:
    only_theirs = sorted(k.decode(errors="replace") for k in theirs.keys() - ours.keys())
    only_ours = sorted(k.decode(errors="replace") for k in ours.keys() - theirs.keys())
    differ = sorted(
        k.decode(errors="replace") for k in theirs.keys() & ours.keys() if theirs[k] != ours[k]
    )
    parts = []
    if only_theirs:
        parts.append(f"keys only in theirs: {', '.join(only_theirs)}")
    if only_ours:
        parts.append(f"keys only in ours: {', '.join(only_ours)}")
    if differ:
        parts.append(f"values differ: {', '.join(differ)}")
    return "; ".join(parts) or "same keys and values, different encoding"


def _check(
    c: Contestant, result: Any, reference: dict[Version, Any], bound: list[bytes] | None
) -> None:
    """Compare a contestant's untimed first result with ours; set c.note, or c.na if it differs."""
    metainfo: Any = importlib.import_module("bip_metainfo").Metainfo
    if c.kind == "bound":
        ref = reference.get("v1")
        if ref is None:
            c.note = "not compared (our v1 creation did not run)"
            return
        if b"".join(result) == ref.info.fields[b"pieces"]:
            c.note = f"its {len(result)} digests equal our v1 'pieces'"
        else:
            c.na = "DIFFERENT digests from our v1 'pieces'"
        return
    assert c.version is not None
    try:
        theirs = metainfo.from_bytes(result)
    except Exception as exc:
        c.na = f"its torrent does not parse: {type(exc).__name__}: {exc}"
        return
    if c.kind == "ours":
        reference[c.version] = theirs
        notes = [f"info-hash {theirs.info.info_hash}"]
        if bound is not None and c.version != "v2":
            same = b"".join(bound) == theirs.info.fields[b"pieces"]
            notes.append("v1 pieces equal the bound's digests" if same else "PIECES DIFFER")
            if not same:
                c.na = "its v1 pieces differ from the hashlib bound's digests"
        c.note = "; ".join(notes)
        return
    ref = reference.get(c.version)
    if ref is None:
        c.note = f"not compared (our {c.version} creation did not run)"
        return
    if theirs.info.raw == ref.info.raw:
        c.note = f"info dict identical to ours (info-hash {theirs.info.info_hash})"
        return
    same_v1 = theirs.info.fields.get(b"pieces") == ref.info.fields.get(b"pieces")
    same_v2 = [f.pieces_root for f in theirs.info.files if not f.is_pad] == [
        f.pieces_root for f in ref.info.files if not f.is_pad
    ]
    diff = _describe_difference(theirs.info.fields, ref.info.fields)
    if same_v1 and same_v2:
        c.note = f"same piece hashes as ours, info dict differs ({diff})"
    else:
        c.na = f"DIFFERENT hashes from ours ({diff})"


# --------------------------------------------------------------------------------------------
# Timing


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(c: Contestant) -> Any:
    if c.prepare is not None:
        c.prepare()
    gc.collect()
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    result = c.run()
    t1 = time.perf_counter()
    cpu1 = _cpu_seconds()
    c.wall.append(t1 - t0)
    c.cpu.append(cpu1 - cpu0)
    return result


# --------------------------------------------------------------------------------------------
# Output


def _table(headers: list[str], rows: list[list[str]], markdown: bool, right: set[int]) -> str:
    if markdown:
        esc = [[c.replace("|", "\\|") for c in row] for row in rows]
        align = ["---:" if i in right else ":---" for i in range(len(headers))]
        lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in esc]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _cpu_model() -> str:
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f,
    ):
        for line in f:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "?"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def _pct(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.1%}"


@dataclass(frozen=True, slots=True)
class Goal:
    label: str
    ratio: float | None
    goal: float | None  # None: reported only

    @property
    def mark(self) -> str:
        if self.goal is None:
            return "(reported)"
        if self.ratio is None:
            return "NOT RUN -> FAIL"
        return "PASS" if self.ratio >= self.goal else "FAIL"


def _goals(by_name: dict[str, Contestant]) -> list[Goal]:
    def ratio(ours: str, peer: str) -> float | None:
        a, b = by_name.get(ours), by_name.get(peer)
        if a is None or b is None or not a.wall or not b.wall:
            return None
        return b.median / a.median  # our speed / theirs

    v1 = "ours v1 (threads=2)"
    return [
        Goal("ours v1 vs mktorrent -t2", ratio(v1, "mktorrent -t2"), GOAL_PEER),
        Goal("ours v1 vs torf (threads=2)", ratio(v1, "torf (threads=2)"), GOAL_PEER),
        Goal(
            "ours v1 vs hashlib bound (2 threads)",
            ratio(v1, "hashlib bound (2 threads)"),
            GOAL_BOUND,
        ),
        Goal("ours v1 vs libtorrent v1", ratio(v1, "libtorrent v1"), None),
        Goal("ours v2 vs libtorrent v2", ratio("ours v2 (threads=2)", "libtorrent v2"), None),
        Goal(
            "ours hybrid vs libtorrent hybrid",
            ratio("ours hybrid (threads=2)", "libtorrent hybrid"),
            None,
        ),
    ]


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=_parse_size, default=1 << 30, help="file size (1G)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="parent of the data dir")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (7; quick: 3)")
    args = parser.parse_args(argv)
    reps: int = args.reps if args.reps is not None else (3 if args.quick else 7)
    size: int = args.size
    wall = time.perf_counter()
    load_before = _loadavg()

    mem = _meminfo()
    available = mem.get("MemAvailable")
    if available is None:
        memory_line = "memory: MemAvailable unknown; cannot check that the file fits in the cache"
    elif available < size + HEADROOM:
        memory_line = (
            f"WARNING: only {_gib(available)} available, less than the file ({_gib(size)}) plus "
            f"{_gib(HEADROOM)}: the page cache may not hold it, and timings may include disk reads"
        )
    else:
        memory_line = (
            f"memory: {_gib(available)} available before writing, enough for the "
            f"{_gib(size)} file plus {_gib(HEADROOM)}"
        )

    workdir = Path(tempfile.mkdtemp(prefix="bip-create-bench-", dir=args.dir))
    try:
        path = workdir / "data.bin"
        write_s = _write_data(path, size)
        read_s = _read_all(path)
        resident_before = _resident_fraction(path)

        contestants, missing = _load_contestants(path, size, workdir)
        if not any(c.kind == "ours" for c in contestants):
            reason = next((m.reason for m in missing if m.name == "bip_metainfo"), "?")
            print(f"cannot import bip_metainfo: {reason}", file=sys.stderr)
            return 2

        # One untimed run of each (the warm-up), then the checks: ours first, as the reference.
        warnings.simplefilter("error", DeprecationWarning)  # no deprecated peer API in use
        results: dict[str, Any] = {}
        for c in contestants:
            try:
                if c.prepare is not None:
                    c.prepare()
                results[c.name] = c.run()
            except Exception as exc:
                c.na = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
        bound_run = next((c for c in contestants if c.kind == "bound" and c.na is None), None)
        bound_digests = results[bound_run.name] if bound_run is not None else None
        reference: dict[Version, Any] = {}
        for c in sorted(contestants, key=lambda c: c.kind != "ours"):
            if c.na is None:
                _check(c, results[c.name], reference, bound_digests)
        del results

        live = [c for c in contestants if c.na is None]
        gc.collect()
        for rep in range(reps):
            k = rep % len(live) if live else 0
            for c in live[k:] + live[:k]:
                _timed(c)
        resident_after = _resident_fraction(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = _loadavg()

    md = args.markdown
    print(
        "# bip_metainfo.create_torrent vs peers" if md else "bip_metainfo.create_torrent vs peers"
    )
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs ({_cpu_model()}); "
        f"load average {load_before} before, {load_after} after"
    )
    print(
        f"File: {size:,} bytes ({_gib(size)}) of random.Random({SEED}).randbytes, written and "
        f"fsync'ed in {write_s:.1f} s, read once in {read_s:.2f} s; {-(-size // PIECE):,} pieces "
        "of 1 MiB"
    )
    print(
        f"Page cache: {memory_line}; resident (mincore) {_pct(resident_before)} before the "
        f"timings, {_pct(resident_after)} after"
    )
    print(
        f"Reps: {reps} timed runs each, round-robin with a rotating start, after one untimed "
        "checked run; medians of time.perf_counter; CPU/wall = (user + system CPU of this "
        "process and its children) / wall time"
    )
    print("\n**Contestants:**\n" if md else "\nContestants:")
    for c in contestants:
        print(f"- {c.name}: {c.how}")
    for m in missing:
        print(f"- {m.name}: not benchmarked ({m.reason})")
    print("\n**Checks (untimed):**\n" if md else "\nChecks (untimed):")
    for c in contestants:
        print(f"- {c.name}: {c.na if c.na is not None else c.note}")

    by_name = {c.name: c for c in contestants if c.na is None and c.wall}
    bound = by_name.get("hashlib bound (2 threads)")
    ours_of = {c.version: c for c in by_name.values() if c.kind == "ours"}
    rows: list[list[str]] = []
    for c in contestants:
        if c.na is not None or not c.wall:
            rows.append([c.name, "n/a", "", "", "", "", "", "", c.na or "not timed"])
            continue
        med = c.median
        cpu = statistics.median(x / w for x, w in zip(c.cpu, c.wall, strict=True))
        vs_bound = f"{bound.median / med:.2f}x" if bound is not None else "-"
        mine = ours_of.get(c.version or "v1")
        vs_ours = "-" if c.kind == "ours" or mine is None else f"{med / mine.median:.2f}x"
        rows.append(
            [
                c.name,
                f"{med:.3f}",
                f"{min(c.wall):.3f}",
                f"{c.spread:.1%}",
                f"{size / med / 1e9:.2f}",
                f"{cpu:.2f}",
                vs_bound,
                vs_ours,
                "",
            ]
        )
    print("\n## Results\n" if md else "\n== Results")
    headers = [
        "contestant",
        "median s",
        "min s",
        "IQR/med",
        "GB/s",
        "CPU/wall",
        "speed vs bound",
        "ours' speed-up",
        "note",
    ]
    print(_table(headers, rows, md, right={1, 2, 3, 4, 5, 6, 7}))
    print(
        "\nspeed vs bound = bound median / this median (1.00x = the hashlib bound); "
        "ours' speed-up = this median / the median of ours of the same version (> 1: ours is "
        "faster; the bound row compares with ours v1)"
    )

    goals = _goals(by_name)
    print("\n## Goals\n" if md else "\n== Goals")
    goal_rows = [
        [
            g.label,
            f"{g.ratio:.3f}x" if g.ratio is not None else "-",
            f">= {g.goal:.2f}x" if g.goal is not None else "-",
            g.mark,
        ]
        for g in goals
    ]
    print(_table(["our speed / theirs", "ratio", "goal", "result"], goal_rows, md, right={1}))
    noisy = [c.name for c in by_name.values() if c.spread > 0.05]
    if noisy:
        print(f"\nNOTE: noisy (IQR above 5% of the median): {', '.join(noisy)}; consider a rerun")
    if resident_after is not None and resident_after < 0.99:
        print("\nWARNING: part of the file left the page cache during the timings")
    overall = all(g.mark == "PASS" for g in goals if g.goal is not None)
    print(f"\nOVERALL: {'PASS' if overall else 'FAIL'} (the three v1 goals)")
    print(f"total time {time.perf_counter() - wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
