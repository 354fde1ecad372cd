r"""bip_bencode against other Python bencode codecs, side by side in one process.

Run from the workspace root:

    uv run --with fastbencode --with bencode2 --with better-bencode --with bencode.py \
        python benchmarks/bencode_vs_peers.py

(libtorrent comes from the workspace's `interop` dependency group.) Options: `--quick` for fewer
repetitions, `--markdown` to print the tables as Markdown (for the README).

Datasets, all built deterministically before anything is timed:

(a) torrent: a multi-file metainfo dict (announce, announce-list, comment, created by, creation
    date, info: 5,000 files of three path components, name, piece length and a 409,600-byte
    `pieces` string), about 790 KB once bencoded; decoded and encoded as one object.
(b) krpc: 100,000 small BEP 5 DHT messages (ping / find_node / get_peers / announce_peer queries
    and responses and a few errors, 20-byte ids, 2-byte transaction ids, 208-byte compact node
    lists, tokens, compact peer `values` lists); every message is decoded (encoded) by its own call,
    and one sample is the loop over all 100,000.
(c) deep: lists nested 450 deep around one integer, b"l" * 450 + b"i1e" + b"e" * 450; decoded and
    encoded in a calibrated inner loop.

Every contestant gets the very same input objects: the bencoded bytes to decode, and our decoded
value to encode. Before timing, each peer's result is compared with ours (after normalising its
container types); a peer that raises, or returns something different, is reported "n/a (reason)"
for that dataset and operation and is not timed there. Timing is round-robin within each
repetition with a rotating start, with the cyclic garbage collector disabled for everybody (after
`gc.collect(); gc.freeze()` once the data is built), and reports medians of
`time.perf_counter_ns` samples and the ratio peer / ours (> 1 means bip_bencode is faster).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

Kind = Literal["ours", "pure-Python", "compiled"]
Op = Literal["decode", "encode"]
OPS: tuple[Op, ...] = ("decode", "encode")
GOAL = 1.5  # wanted: our speed-up over the fastest pure-Python peer, per dataset and operation


# --------------------------------------------------------------------------------------------
# Contestants


@dataclass(frozen=True, slots=True)
class Contestant:
    name: str
    kind: Kind
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    backend: str  # how the backend was selected, printed with the results


@dataclass(frozen=True, slots=True)
class Missing:
    name: str
    reason: str


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _load_contestants() -> tuple[list[Contestant], list[Missing]]:
    found: list[Contestant] = []
    missing: list[Missing] = []

    def attempt(name: str, build: Callable[[], Contestant]) -> None:
        try:
            found.append(build())
        except Exception as exc:  # an absent or broken peer is reported, not fatal
            missing.append(Missing(name, f"{type(exc).__name__}: {exc}"))

    def ours() -> Contestant:
        mod = importlib.import_module("bip_bencode")
        return Contestant(
            "bip_bencode",
            "ours",
            mod.decode,
            mod.encode,
            f"bip_bencode {_version('bip-bencode')} from {os.path.dirname(mod.__file__ or '?')}",
        )

    def fastbencode_rust() -> Contestant:
        mod = importlib.import_module("fastbencode._bencode_rs")
        return Contestant(
            "fastbencode (Rust)",
            "compiled",
            mod.bdecode,
            mod.bencode,
            f"fastbencode {_version('fastbencode')}: fastbencode._bencode_rs.bdecode/bencode "
            "(what fastbencode.bdecode re-exports when the extension loads)",
        )

    def fastbencode_py() -> Contestant:
        mod = importlib.import_module("fastbencode._bencode_py")
        return Contestant(
            "fastbencode (Python)",
            "pure-Python",
            mod.bdecode,
            mod.bencode,
            f"fastbencode {_version('fastbencode')}: fastbencode._bencode_py.bdecode/bencode "
            "(its fallback module, imported directly)",
        )

    def bencode2_compiled() -> Contestant:
        mod = importlib.import_module("bencode2.__bencode")
        return Contestant(
            "bencode2 (C++)",
            "compiled",
            mod.bdecode,
            mod.bencode,
            f"bencode2 {_version('bencode2')}: bencode2.__bencode.bdecode/bencode "
            "(the extension; bencode2.COMPILED is True when the package uses it)",
        )

    def bencode2_py() -> Contestant:
        dec = importlib.import_module("bencode2.__decoder")
        enc = importlib.import_module("bencode2.__encoder")
        return Contestant(
            "bencode2 (Python)",
            "pure-Python",
            dec.bdecode,
            enc.bencode,
            f"bencode2 {_version('bencode2')}: bencode2.__decoder.bdecode and "
            "bencode2.__encoder.bencode (its fallback modules, imported directly)",
        )

    def better_bencode_py() -> Contestant:
        mod = importlib.import_module("better_bencode._pure")
        return Contestant(
            "better-bencode (Python)",
            "pure-Python",
            mod.loads,
            mod.dumps,
            f"better-bencode {_version('better-bencode')}: better_bencode._pure.loads/dumps "
            "(imported directly; the package's default is its C extension _fast)",
        )

    def bencode_py() -> Contestant:
        mod = importlib.import_module("bencodepy")
        return Contestant(
            "bencode.py",
            "pure-Python",
            mod.bdecode,
            mod.bencode,
            f"bencode.py {_version('bencode.py')}: bencodepy.bdecode/bencode (bytes in, bytes "
            "out; its other module `bencode` decodes to str and OrderedDict), default "
            "max_depth=100",
        )

    def libtorrent() -> Contestant:
        mod = importlib.import_module("libtorrent")
        return Contestant(
            "libtorrent",
            "compiled",
            mod.bdecode,
            mod.bencode,
            f"libtorrent {mod.__version__}: libtorrent.bdecode/bencode (C++ via boost.python; "
            "converts through libtorrent::entry)",
        )

    attempt("bip_bencode", ours)
    attempt("fastbencode (Rust)", fastbencode_rust)
    attempt("fastbencode (Python)", fastbencode_py)
    attempt("bencode2 (C++)", bencode2_compiled)
    attempt("bencode2 (Python)", bencode2_py)
    attempt("better-bencode (Python)", better_bencode_py)
    attempt("bencode.py", bencode_py)
    attempt("libtorrent", libtorrent)

    # better-bencode's C extension builds from the sdist but is unusable on CPython >= 3.10
    # (it parses '#' formats without PY_SSIZE_T_CLEAN); probe it so the output says why it is out.
    try:
        fast: ModuleType = importlib.import_module("better_bencode._fast")
        fast.loads(b"i1e")
        missing.append(Missing("better-bencode (C)", "works here but is not benchmarked"))
    except Exception as exc:
        missing.append(Missing("better-bencode (C)", f"{type(exc).__name__}: {exc}"))
    return found, missing


# --------------------------------------------------------------------------------------------
# Datasets


@dataclass(slots=True)
class Dataset:
    key: str
    title: str
    stream: bool  # True: a list of messages, one call each; False: one object per call
    data: bytes | list[bytes]  # the decode input
    value: Any  # the encode input: our decoded value (a list of values for a stream)
    size: int  # total bencoded bytes
    count: int  # messages (1 unless stream)


def _word(rng: random.Random, lo: int, hi: int) -> bytes:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(letters) for _ in range(rng.randint(lo, hi))).encode()


def _torrent_value(rng: random.Random) -> dict[bytes, Any]:
    piece_length = 1 << 18
    n_pieces = 409_600 // 20
    total = n_pieces * piece_length - rng.randrange(piece_length)
    weights = [rng.paretovariate(1.2) for _ in range(5000)]
    scale = total / sum(weights)
    lengths = [max(1, int(w * scale)) for w in weights]
    lengths[-1] += total - sum(lengths)
    exts = [b"mkv", b"mp4", b"flac", b"jpg", b"txt", b"nfo", b"srt", b"iso", b"zip", b"pdf"]
    dirs = [b"Season %02d" % i for i in range(1, 21)]
    subdirs = [b"Disc %d" % i for i in range(1, 26)]
    files: list[dict[bytes, Any]] = []
    for i, length in enumerate(lengths):
        name = b"%05d - %s.%s" % (i, _word(rng, 11, 22), rng.choice(exts))
        path = [rng.choice(dirs), rng.choice(subdirs), name]
        files.append({b"length": length, b"path": path})
    return {
        b"announce": b"http://tracker.example.org:6969/announce",
        b"announce-list": [
            [b"http://tracker.example.org:6969/announce"],
            [b"udp://tracker.example.net:1337/announce", b"udp://open.example.com:80/announce"],
            [b"https://tracker.example.com/announce"],
        ],
        b"comment": b"A deterministic benchmark torrent with 5,000 files",
        b"created by": b"bip benchmarks/bencode_vs_peers.py",
        b"creation date": 1_700_000_000 + rng.randrange(10_000_000),
        b"info": {
            b"files": files,
            b"name": b"Benchmark Collection",
            b"piece length": piece_length,
            b"pieces": rng.randbytes(20 * n_pieces),
        },
    }


def _krpc_value(rng: random.Random) -> dict[bytes, Any]:
    """One realistic BEP 5 message (BEP 42 `ip` and a client `v` on some of them)."""
    t = rng.randbytes(2)
    other = rng.randbytes(20)
    roll = rng.random()
    msg: dict[bytes, Any]
    r: dict[bytes, Any]
    a: dict[bytes, Any]
    if roll < 0.12:
        msg = {b"a": {b"id": other}, b"q": b"ping", b"t": t, b"y": b"q"}
    elif roll < 0.24:
        msg = {b"r": {b"id": other}, b"t": t, b"y": b"r"}
    elif roll < 0.38:
        msg = {b"a": {b"id": other, b"target": rng.randbytes(20)}, b"q": b"find_node"}
        msg |= {b"t": t, b"y": b"q"}
    elif roll < 0.52:
        msg = {b"r": {b"id": other, b"nodes": rng.randbytes(26 * 8)}, b"t": t, b"y": b"r"}
    elif roll < 0.68:
        msg = {b"a": {b"id": other, b"info_hash": rng.randbytes(20)}, b"q": b"get_peers"}
        msg |= {b"t": t, b"y": b"q"}
    elif roll < 0.80:
        r = {b"id": other, b"nodes": rng.randbytes(26 * 8), b"token": rng.randbytes(8)}
        msg = {b"r": r, b"t": t, b"y": b"r"}
    elif roll < 0.90:
        values = [rng.randbytes(6) for _ in range(rng.randint(1, 30))]
        r = {b"id": other, b"token": rng.randbytes(8), b"values": values}
        msg = {b"r": r, b"t": t, b"y": b"r"}
    elif roll < 0.95:
        a = {b"id": other, b"implied_port": 1, b"info_hash": rng.randbytes(20)}
        a |= {b"port": rng.randint(1024, 65535), b"token": rng.randbytes(8)}
        msg = {b"a": a, b"q": b"announce_peer", b"t": t, b"y": b"q"}
    elif roll < 0.98:
        msg = {b"r": {b"id": other}, b"t": t, b"y": b"r"}
    else:
        msg = {b"e": [rng.choice([201, 202, 203, 204]), b"A Generic Error Ocurred"]}
        msg |= {b"t": t, b"y": b"e"}
    if msg[b"y"] == b"r" and rng.random() < 0.5:
        msg[b"ip"] = rng.randbytes(6)
    if rng.random() < 0.6:
        msg[b"v"] = rng.choice([b"LT\x01\x02", b"UT\xb5\x00", b"TR\x04\x00", b"bi\x00\x01"])
    return msg


def _build_datasets(ours: Contestant) -> list[Dataset]:
    rng = random.Random(20240607)
    out: list[Dataset] = []

    torrent = ours.encode(_torrent_value(rng))
    out.append(
        Dataset(
            "torrent",
            f"(a) torrent: 5,000 files, 409,600-byte pieces, {len(torrent):,} bytes",
            False,
            torrent,
            ours.decode(torrent),
            len(torrent),
            1,
        )
    )

    msgs = [ours.encode(_krpc_value(rng)) for _ in range(100_000)]
    size = sum(map(len, msgs))
    out.append(
        Dataset(
            "krpc",
            f"(b) krpc: 100,000 BEP 5 messages, {size:,} bytes (avg {size / len(msgs):.0f})",
            True,
            msgs,
            [ours.decode(m) for m in msgs],
            size,
            len(msgs),
        )
    )

    deep = b"l" * 450 + b"i1e" + b"e" * 450
    out.append(
        Dataset(
            "deep",
            '(c) deep: b"l" * 450 + b"i1e" + b"e" * 450 (lists nested 450 deep, 903 bytes)',
            False,
            deep,
            ours.decode(deep),
            len(deep),
            1,
        )
    )
    return out


# --------------------------------------------------------------------------------------------
# Checking and timing


def _plain(obj: Any) -> Any:
    """Normalise a peer's result to plain dict / list / bytes / int for comparison."""
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, Mapping):
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    return obj


def _first_difference(got: Any, want: Any, path: str = "") -> str:
    if type(got) is not type(want):
        return f"at {path or 'top'}: {type(got).__name__} instead of {type(want).__name__}"
    if isinstance(want, dict):
        if set(got) != set(want):
            return f"at {path or 'top'}: different keys"
        for k in want:
            if got[k] != want[k]:
                return _first_difference(got[k], want[k], f"{path}[{k!r}]")
    if isinstance(want, list):
        if len(got) != len(want):
            return f"at {path or 'top'}: {len(got)} items instead of {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if g != w:
                return _first_difference(g, w, f"{path}[{i}]")
    return f"at {path or 'top'}: {got!r:.40} instead of {want!r:.40}"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 70:
        text = text[:67] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check(c: Contestant, ds: Dataset, op: Op) -> str | None:
    """Run the operation once (untimed; doubles as warm-up). Returns a reason it is n/a."""
    try:
        if op == "decode":
            fn = c.decode
            if ds.stream:
                assert isinstance(ds.data, list)
                got: Any = [fn(m) for m in ds.data]
            else:
                assert isinstance(ds.data, bytes)
                got = fn(ds.data)
            want = ds.value
        else:
            enc = c.encode
            got = [enc(v) for v in ds.value] if ds.stream else enc(ds.value)
            want = ds.data
    except Exception as exc:
        return _short(exc)
    if got == want:
        return None
    if op == "decode" and _plain(got) == want:
        return None  # its own container types, same content: comparable work
    if op == "encode":
        if ds.stream:
            wrong = sum(g != w for g, w in zip(got, want, strict=True))
            return f"DIFFERENT result: {wrong:,} of {len(want):,} encodings differ from ours"
        return f"DIFFERENT result: {len(got):,} bytes instead of {len(want):,}"
    return f"DIFFERENT result: {_first_difference(_plain(got), want)}"


def _runner(fn: Callable[[Any], Any], payload: Any, stream: bool, inner: int) -> Callable[[], None]:
    if stream:
        items: Sequence[Any] = payload

        def run_stream() -> None:
            f = fn
            for m in items:
                f(m)

        return run_stream
    loops = range(inner)

    def run_single() -> None:
        f = fn
        x = payload
        for _ in loops:
            f(x)

    return run_single


@dataclass(slots=True)
class Cell:
    contestant: Contestant
    na: str | None = None
    samples: list[float] = field(default_factory=list)  # ns per call (per full loop if stream)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(slots=True)
class Block:
    ds: Dataset
    op: Op
    cells: list[Cell]
    inner: int = 1
    reps: int = 0
    seconds: float = 0.0

    def ours(self) -> Cell:
        return next(c for c in self.cells if c.contestant.kind == "ours")


def _time_block(block: Block, min_reps: int, max_reps: int, budget_s: float) -> None:
    live = [c for c in block.cells if c.na is None]
    if not live:
        return
    payload = block.ds.data if block.op == "decode" else block.ds.value
    ours = block.ours()
    if not block.ds.stream and ours.na is None:
        # Calibrate an inner loop so that one of our samples lasts >= ~20 ms.
        probe = _runner(
            ours.contestant.decode if block.op == "decode" else ours.contestant.encode,
            payload,
            False,
            1,
        )
        t0 = time.perf_counter_ns()
        probe()
        one = max(time.perf_counter_ns() - t0, 1)
        block.inner = max(1, math.ceil(20e6 / one))
    runs = [
        (
            c,
            _runner(
                c.contestant.decode if block.op == "decode" else c.contestant.encode,
                payload,
                block.ds.stream,
                block.inner,
            ),
        )
        for c in live
    ]
    start = time.perf_counter()
    clock = time.perf_counter_ns
    for rep in range(max_reps):
        if rep >= min_reps and time.perf_counter() - start > budget_s:
            break
        gc.collect()  # outside the timed region; frozen data is not scanned
        k = rep % len(runs)
        for cell, run in runs[k:] + runs[:k]:
            t0 = clock()
            run()
            t1 = clock()
            cell.samples.append((t1 - t0) / block.inner)
        block.reps = rep + 1
    block.seconds = time.perf_counter() - start


# Malformed inputs each decoder is asked to reject (not timed): a decoder that checks less may do
# less work per byte, so the output shows who checks what.
MALFORMED: tuple[tuple[str, bytes], ...] = (
    ("unsorted keys", b"d1:bi1e1:ai2ee"),
    ("duplicate keys", b"d1:ai1e1:ai2ee"),
    ("int key", b"di1ei2ee"),
    ("i01e", b"i01e"),
    ("i-0e", b"i-0e"),
    ("01:x", b"01:x"),
    ("trailing data", b"i1ei2e"),
    ("truncated", b"l1:a"),
)


def _strictness(contestants: Sequence[Contestant]) -> list[list[str]]:
    rows = []
    for c in contestants:
        row = [c.name]
        for _, bad in MALFORMED:
            try:
                c.decode(bad)
            except Exception:
                row.append("rejects")
            else:
                row.append("ACCEPTS")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Output


def _fmt_time(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}" if ns / scale < 100 else f"{ns / scale:.0f} {unit}"
    return f"{ns:.0f} ns"


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


@dataclass(frozen=True, slots=True)
class Verdict:
    label: str
    vs_pure: float | None
    pure_name: str
    vs_compiled: float | None
    compiled_name: str
    passed: bool | None  # None: no pure-Python peer could run it
    vs_strict: float | None  # against pure-Python peers that reject every MALFORMED input
    strict_name: str


def _verdict(block: Block, strict: set[str]) -> Verdict:
    label = f"{block.ds.key} {block.op}"
    ours = block.ours()
    timed = [c for c in block.cells if c.na is None and c.samples]
    if ours.na is not None or not ours.samples:
        return Verdict(label, None, "-", None, "-", False, None, "-")

    def fastest(kind: Kind, only: set[str] | None = None) -> Cell | None:
        cands = [c for c in timed if c.contestant.kind == kind]
        if only is not None:
            cands = [c for c in cands if c.contestant.name in only]
        return min(cands, key=lambda c: c.median) if cands else None

    pure, comp = fastest("pure-Python"), fastest("compiled")
    pure_strict = fastest("pure-Python", strict)
    vs_pure = pure.median / ours.median if pure else None
    vs_comp = comp.median / ours.median if comp else None
    vs_strict = pure_strict.median / ours.median if pure_strict else None
    return Verdict(
        label,
        vs_pure,
        pure.contestant.name if pure else "-",
        vs_comp,
        comp.contestant.name if comp else "-",
        None if vs_pure is None else vs_pure >= GOAL,
        vs_strict,
        pure_strict.contestant.name if pure_strict else "-",
    )


def _print_block(block: Block, markdown: bool, strict: set[str]) -> Verdict:
    ds = block.ds
    per = "loop over all messages" if ds.stream else f"{block.inner} call(s)"
    head = f"{ds.title} -- {block.op}: {block.reps} reps, 1 sample = {per}, {block.seconds:.1f} s"
    print(f"\n### {head}\n" if markdown else f"\n== {head}")
    ours = block.ours()
    base = ours.median if ours.na is None and ours.samples else None
    thr_head = "msgs/s" if ds.stream else "MB/s"
    headers = ["contestant", "kind", "median", "min", "IQR/med", thr_head, "peer / ours", "note"]
    rows: list[list[str]] = []
    for cell in block.cells:
        c = cell.contestant
        if cell.na is not None or not cell.samples:
            rows.append([c.name, c.kind, "n/a", "", "", "", "", cell.na or "not timed"])
            continue
        med = cell.median
        q = statistics.quantiles(cell.samples, n=4) if len(cell.samples) > 1 else [med, med, med]
        thr = ds.count / (med / 1e9) if ds.stream else ds.size / 1e6 / (med / 1e9)
        thr_s = f"{thr:,.0f}" if ds.stream else f"{thr:.1f}"
        ratio = f"{med / base:.2f}" if base else "-"
        rows.append(
            [
                c.name,
                c.kind,
                _fmt_time(med),
                _fmt_time(min(cell.samples)),
                f"{(q[2] - q[0]) / med:.1%}",
                thr_s,
                ratio,
                "",
            ]
        )
    print(_table(headers, rows, markdown, right={2, 3, 4, 5, 6}))
    v = _verdict(block, strict)
    if v.vs_pure is None and v.passed is False:
        print("summary: bip_bencode could not run this -> FAIL")
    else:
        pure = (
            f"{v.vs_pure:.2f}x over the fastest pure-Python peer ({v.pure_name})"
            if v.vs_pure is not None
            else "no pure-Python peer could run this"
        )
        comp = (
            f"{v.vs_compiled:.2f}x of the fastest compiled peer ({v.compiled_name})"
            if v.vs_compiled is not None
            else "no compiled peer ran"
        )
        mark = {True: "PASS", False: "FAIL", None: "NO PEER"}[v.passed]
        strict_s = (
            f"{v.vs_strict:.2f}x over the fastest strict pure-Python peer ({v.strict_name})"
            if v.vs_strict is not None
            else "no strict pure-Python peer ran"
        )
        print(f"\nsummary: bip_bencode is {pure}; {comp}; {strict_s}  -> {mark} (goal >= {GOAL}x)")
    return v


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    min_reps, max_reps, budget = (3, 5, 4.0) if args.quick else (7, 21, 22.0)

    wall = time.perf_counter()
    contestants, missing = _load_contestants()
    if not any(c.kind == "ours" for c in contestants):
        reason = next((m.reason for m in missing if m.name == "bip_bencode"), "?")
        print(f"cannot import bip_bencode: {reason}", file=sys.stderr)
        return 2
    ours = next(c for c in contestants if c.kind == "ours")

    t0 = time.perf_counter()
    datasets = _build_datasets(ours)
    build_s = time.perf_counter() - t0

    problems: list[str] = []
    for ds in datasets:
        if ds.stream:
            assert isinstance(ds.data, list)
            if [ours.encode(v) for v in ds.value] != ds.data:
                problems.append(f"{ds.key}: encode(decode(x)) != x for our own codec")
        elif ours.encode(ds.value) != ds.data:
            problems.append(f"{ds.key}: encode(decode(x)) != x for our own codec")

    blocks: list[Block] = []
    for ds in datasets:
        for op in OPS:
            cells = [Cell(c, _check(c, ds, op)) for c in contestants]
            blocks.append(Block(ds, op, cells))

    strict_rows = _strictness(contestants)
    strict = {row[0] for row in strict_rows if all(x == "rejects" for x in row[1:])}

    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        for block in blocks:
            _time_block(block, min_reps, max_reps, budget)
    finally:
        gc.enable()

    print("# bip_bencode vs peers" if args.markdown else "bip_bencode vs peers")
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs; "
        f"sys.getrecursionlimit() = {sys.getrecursionlimit()} for all"
    )
    print(
        "GC: data built (in "
        f"{build_s:.1f} s), then gc.collect(); gc.freeze(); the cyclic GC is DISABLED during all "
        "timed runs for every contestant (gc.collect() between rounds, untimed)"
    )
    print(
        f"Reps: round-robin, rotating start, {min_reps}..{max_reps} per dataset+op "
        f"(stop after {budget:.0f} s once {min_reps} are done); medians of perf_counter_ns"
    )
    print("\nBackends:" if not args.markdown else "\n**Backends:**\n")
    for c in contestants:
        print(f"- {c.name} [{c.kind}]: {c.backend}")
    for m in missing:
        print(f"- {m.name}: not benchmarked ({m.reason})")
    for p in problems:
        print(f"WARNING: {p}")
    print("\n## Strictness (not timed)\n" if args.markdown else "\n== Strictness (not timed)")
    strict_headers = ["decoder", *(name for name, _ in MALFORMED)]
    print(_table(strict_headers, strict_rows, args.markdown, right=set()))
    print(
        "\nA decoder that accepts some of these checks less per byte; 'strict' below means it "
        "rejects all of them."
    )

    verdicts = [_print_block(b, args.markdown, strict) for b in blocks]

    print("\n## Goal\n" if args.markdown else "\n== Goal")
    rows = []
    for v in verdicts:
        rows.append(
            [
                v.label,
                f"{v.vs_pure:.2f}x" if v.vs_pure is not None else "-",
                v.pure_name,
                f"{v.vs_compiled:.2f}x" if v.vs_compiled is not None else "-",
                v.compiled_name,
                f"{v.vs_strict:.2f}x" if v.vs_strict is not None else "-",
                v.strict_name,
                {True: "PASS", False: "FAIL", None: "NO PEER"}[v.passed],
            ]
        )
    headers = [
        "dataset op",
        "vs fastest pure",
        "fastest pure-Python peer",
        "vs fastest compiled",
        "fastest compiled peer",
        "vs fastest strict pure",
        "fastest strict pure-Python peer",
        f">= {GOAL}x",
    ]
    print(_table(headers, rows, args.markdown, right={1, 3, 5}))
    overall = all(v.passed is not False for v in verdicts) and not problems
    verdict = "PASS" if overall else "FAIL"
    if overall and any(v.passed is None for v in verdicts):
        # Nothing to compare with on some row (the peers are not installed): no verdict.
        verdict = (
            "NO VERDICT (no pure-Python peer ran on some rows: "
            "run it with the peers, as this file's docstring shows)"
        )
    print(f"\nOVERALL: {verdict} (goal: >= {GOAL}x over the fastest pure-Python peer on every row)")
    print(f"total time {time.perf_counter() - wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
