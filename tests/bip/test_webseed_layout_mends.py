"""Web seeds of a torrent with many files: what setting them up costs, and where.

The url-list is outside the info dictionary (and a magnet adds ``ws=``), so whoever hands out
a torrent chooses how many web seeds it has (up to ``MAX_WEB_SEEDS``). Setting them up once
built and parsed one URL per file per web seed, on the event loop: 8 web seeds of a torrent
of 100,000 files froze the session for 34 s and held 800,000 URLs. As libtorrent
(``web_peer_connection::write_request``), a file's URL is now made when a request needs it;
what is made per file, the torrent's own names for its files, is made once for all its web
seeds, in a worker thread for a large torrent.
"""

from __future__ import annotations

import functools
import threading
import tracemalloc
import types
from collections.abc import Callable
from typing import Any, cast

import pytest
import trio
import trio.testing
from _engine_helpers import until

from bip._client import _webseed_layout
from bip._client._http_tracker_codec import MAX_URL_LENGTH, HttpTrackerUrl, parse_http_tracker_url
from bip._client._torrent import Torrent
from bip._client._webseed import WebSeed, WebSeedState
from bip._client._webseed_http import WebSeedClient, WebSeedFileMissingError
from bip._client._webseed_layout import WebSeedUrlError, web_seed_layout
from bip_bencode import encode
from bip_metainfo import FileEntry, Info
from bip_select import Block, BlockRejected, Input, PeerDontHave, PeerLeft, SendRequest

DEADLINE = 30.0
FILES = 20_000
SEEDS = 8
PIECE = 16384


@pytest.fixture(scope="module")
def many_files() -> Info:
    """A torrent of :data:`FILES` files of one piece each, in 100 folders (parsed once: it
    takes most of a second)."""
    files = [
        {b"length": PIECE, b"path": [b"d%03d" % (i % 100), b"f%05d" % i]} for i in range(FILES)
    ]
    fields: dict[bytes, Any] = {
        b"name": b"data",
        b"piece length": PIECE,
        b"pieces": bytes(20 * FILES),
        b"files": files,
    }
    return Info.from_bytes(encode(fields))


class RecordingClient(WebSeedClient):
    """A server that has every file: each byte is the low byte of its offset in the file."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        self.targets.append(url.target)
        return bytes((offset + i) % 256 for i in range(length))


def set_up(
    info: Info,
    urls: list[str],
    client: WebSeedClient | None = None,
    feed: Callable[[WebSeed, Input], None] | None = None,
) -> list[WebSeed]:
    """The web seeds :meth:`Torrent._make_web_seeds` makes for ``info`` and ``urls`` (on a
    stand-in for the torrent: only what the web seeds' set-up reads; ``feed`` stands for
    the brain)."""

    async def deliver(seed: WebSeed, block: Block, data: bytes) -> None:
        delivered.append((seed, block, data))

    delivered: list[tuple[WebSeed, Block, bytes]] = []
    torrent = types.SimpleNamespace(
        info=info,
        _name="many files",
        _web_seeds_made=False,
        _web_seed_urls=tuple(urls),
        _web_seed_client=client if client is not None else RecordingClient(),
        _web_block=deliver,
        _web_seed_input=feed if feed is not None else (lambda seed, event: None),
        web_seeds=[],
        delivered=delivered,
    )
    torrent._new_web_seed = functools.partial(Torrent._new_web_seed, cast(Torrent, torrent))
    Torrent._make_web_seeds(cast(Torrent, torrent))
    return cast(list[WebSeed], torrent.web_seeds)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[bool]]:
    """Calls of the layout's URL parser and of its per-file name table, each recorded as
    whether it ran on the main (event loop) thread."""
    calls: dict[str, list[bool]] = {"parse": [], "paths": []}

    def counting(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            calls[name].append(threading.current_thread() is threading.main_thread())
            return function(*args)

        return wrapper

    module = _webseed_layout
    monkeypatch.setattr(module, "parse_http_tracker_url", counting("parse", parse_http_tracker_url))
    monkeypatch.setattr(module, "_raw_paths", counting("paths", module._raw_paths))
    return calls


def seed_urls() -> list[str]:
    return [f"http://127.0.0.1:{8000 + k}/m/" for k in range(SEEDS)]


def test_set_up_makes_no_url_per_file(many_files: Info, counted: dict[str, list[bool]]) -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        seeds = set_up(many_files, seed_urls())
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(seeds) == SEEDS
    # Each base URL is checked once; no file's URL is made before a request needs it, and
    # the per-file table waits for the first request (off the event loop).
    assert len(counted["parse"]) <= SEEDS
    assert counted["paths"] == []
    # Not a byte per file per web seed (it was ~70 MB here: 160,000 parsed URLs).
    assert grown < FILES * SEEDS, grown


async def test_names_are_made_once_for_all_web_seeds_off_the_event_loop(
    many_files: Info, counted: dict[str, list[bool]]
) -> None:
    client = RecordingClient()
    seeds = set_up(many_files, seed_urls(), client)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                for k, seed in enumerate(seeds):
                    nursery.start_soon(seed.run)
                    seed.act(SendRequest(seed, Block(k * 1001, 0, PIECE)))
                await until(lambda: len(client.targets) == SEEDS)
                for seed in seeds:
                    seed.finish("done")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sorted(client.targets) == sorted(
        f"/m/data/d{k * 1001 % 100:03d}/f{k * 1001:05d}" for k in range(SEEDS)
    )
    # The torrent's names for its files: made once, in a worker thread, for all 8.
    assert counted["paths"] == [False]
    # A URL per request, none per file.
    assert len(counted["parse"]) <= 2 * SEEDS
    # What stays is the one table of the torrent, not one per web seed (~90 B a file).
    assert held < 200 * FILES, held


def test_escaping_is_unchanged() -> None:
    # libtorrent's escape_file_path: every component percent-encoded as UTF-8, "/" added
    # between the base and a multi-file torrent's name.
    names = [b"a%b", b"q?x", b"h#x", "caf\u00e9".encode(), b"sp ace", b"semi;colon"]
    files = [{b"length": 10, b"path": [name]} for name in names]
    files.append({b"length": 10, b"path": [b"d", b"x/y"]})
    fields: dict[bytes, Any] = {
        b"name": b"t%2F/x",
        b"piece length": PIECE,
        b"pieces": bytes(20),
        b"files": files,
    }
    info = Info.from_bytes(encode(fields))
    expected = ["a%25b", "q%3Fx", "h%23x", "caf%C3%A9", "sp%20ace", "semi%3Bcolon", "d/x%2Fy"]
    for base, prefix in [
        ("http://127.0.0.1:8/seed", "/seed/t%252F%2Fx/"),
        ("http://127.0.0.1:8/seed/", "/seed/t%252F%2Fx/"),
        ("http://127.0.0.1:8/a%zz/", "/a%zz/t%252F%2Fx/"),
        ("http://127.0.0.1:8/x?y=1", "/x?y=1/t%252F%2Fx/"),
    ]:
        layout = web_seed_layout(base, info)
        assert [url.target for url in layout.urls if url is not None] == [
            prefix + name for name in expected
        ]
        assert [part.url.target for part in layout.ranges(0, 70) if part.url is not None] == [
            prefix + name for name in expected
        ]
    single: dict[bytes, Any] = {
        b"name": "r\u00e9sum\u00e9 #1?.txt".encode(),
        b"piece length": PIECE,
    }
    info = Info.from_bytes(encode({**single, b"pieces": bytes(20), b"length": 5}))
    [url] = web_seed_layout("http://127.0.0.1:8/f.bin", info).urls
    assert url is not None
    assert url.target == "/f.bin"
    [url] = web_seed_layout("http://127.0.0.1:8/dir/", info).urls
    assert url is not None
    assert url.target == "/dir/r%C3%A9sum%C3%A9%20%231%3F.txt"


# -- Review r6 ----------------------------------------------------------------------------------
# A file whose URL passed our bound was found per request and taken as one the web seed lacks:
# with thousands of such files the brain's answers to each reject made a busy loop (8 web
# seeds of 2,000 such files froze the session 6-18 s). A web seed is refused whole again, in
# O(1) once the table is made (it keeps the longest escaped path). ranges() reads flat lists
# again; the table is made once even if the web seed waiting for it is cancelled.

TOO_LONG_FILES = 300
TOO_LONG_SEEDS = 4


class MissingClient(WebSeedClient):
    """A server that lacks every file, and says so at once (no await: as a fast refusal)."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        self.targets.append(url.target)
        raise WebSeedFileMissingError("404")


def one_piece_files(count: int, name: bytes = b"t") -> Info:
    files = [{b"length": PIECE, b"path": [b"f%06d" % i]} for i in range(count)]
    fields: dict[bytes, Any] = {
        b"name": name,
        b"piece length": PIECE,
        b"pieces": bytes(20 * count),
        b"files": files,
    }
    return Info.from_bytes(encode(fields))


async def test_a_web_seed_whose_file_urls_are_too_long_leaves_whole_at_once(
    counted: dict[str, list[bool]],
) -> None:
    # Each base URL is fine, but leaves no room for "t/f000000": every file's URL would be
    # 4097 or 4098 characters.
    info = one_piece_files(TOO_LONG_FILES)
    urls = [f"http://127.0.0.1:{9 + k}/" + "a" * 4068 + "/" for k in range(TOO_LONG_SEEDS)]
    inputs: dict[WebSeed, list[Input]] = {}
    asked: dict[WebSeed, int] = {}
    lacks: set[tuple[WebSeed, int]] = set()

    def brain(seed: WebSeed, event: Input) -> None:
        # As bip_select does, at once: a rejected block is asked for again unless the peer
        # lacks its piece, and a "don't have" is answered by a request for another piece.
        inputs.setdefault(seed, []).append(event)
        if isinstance(event, BlockRejected) and (seed, event.block.piece) not in lacks:
            seed.act(SendRequest(seed, event.block))
        elif isinstance(event, PeerDontHave):
            lacks.add((seed, event.piece))
            if asked[seed] < TOO_LONG_FILES:
                seed.act(SendRequest(seed, Block(asked[seed], 0, PIECE)))
                asked[seed] += 1

    client = RecordingClient()
    seeds = set_up(info, urls, client, feed=brain)
    assert len(seeds) == TOO_LONG_SEEDS  # the table is not made at set-up
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            for seed in seeds:
                nursery.start_soon(seed.run)
                asked[seed] = 4
                for piece in range(4):
                    seed.act(SendRequest(seed, Block(piece, 0, PIECE)))
            await until(lambda: not any(seed.usable for seed in seeds))
    # Refused whole, once: no file's URL made, nothing asked of the brain but to forget it.
    assert len(counted["parse"]) == TOO_LONG_SEEDS  # the base URLs' checks only
    assert client.targets == []
    for seed in seeds:
        assert seed.state is WebSeedState.GONE
        assert [type(event) for event in inputs[seed]] == [PeerLeft]
    # Made again (a resume retries given-up web seeds): refused in O(1), at set-up.
    with pytest.raises(WebSeedUrlError, match="4097 characters"):
        web_seed_layout(urls[0], seeds[0].layout.files)


def test_the_longest_url_is_known_without_making_any(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [b"a%b", b"q?x", "caf\u00e9".encode(), b"sp ace", b"t~!*'()", b"x" * 200, b"\xff"]
    files: list[dict[bytes, Any]] = [{b"length": 10, b"path": [b"d", name]} for name in names]
    files.append({b"length": 0, b"path": [b"empty" * 100]})  # nothing to fetch: not counted
    multi = Info.from_bytes(
        encode({b"name": b"t;+", b"piece length": PIECE, b"pieces": bytes(20), b"files": files})
    )
    single = Info.from_bytes(
        encode(
            {
                b"name": "r\u00e9s #1".encode(),
                b"piece length": PIECE,
                b"pieces": bytes(20),
                b"length": 5,
            }
        )
    )
    bases = [
        "http://127.0.0.1:8/seed",
        "http://127.0.0.1:8/seed/",
        "http://127.0.0.1:8",
        "http://127.0.0.1:8/sp ace/",
    ]

    def check(info: Info) -> None:
        for base in bases:
            files = _webseed_layout.WebSeedFiles(info)
            layout = web_seed_layout(base, files)
            made = [
                len(_webseed_layout._file_url(layout.base, files.path(index)))
                for index, url in enumerate(layout.urls)
                if url is not None
            ]
            assert files.longest_url(layout.base) == max(made)
            # The bound is our parser's: the longest just fits, one more is refused (the
            # base made longer inside its path, which keeps its shape).
            host = "http://127.0.0.1:8/"
            if not base.startswith(host):
                continue
            room = MAX_URL_LENGTH - max(made)
            fitting = host + "x" * room + base[len(host) :]
            layout = web_seed_layout(fitting, files)  # the table made: checked at once
            assert max(len(url.url) for url in layout.urls if url is not None) == MAX_URL_LENGTH
            with pytest.raises(WebSeedUrlError, match="4097 characters"):
                web_seed_layout(host + "x" * (room + 1) + base[len(host) :], files)

    check(multi)
    check(single)
    # The torrent's names unmatched: the sanitised paths (str) are counted as UTF-8.
    monkeypatch.setattr(_webseed_layout, "_raw_paths", lambda info: None)
    check(multi)


async def test_a_worker_yields_after_each_run() -> None:
    # A file known missing ends a run before any await; a brain that answers each reject
    # at once with the same request would spin the worker without a checkpoint.
    info = one_piece_files(2)
    rejects: list[Block] = []
    first = trio.Event()
    spins = 100

    def brain(seed: WebSeed, event: Input) -> None:
        if isinstance(event, BlockRejected):
            rejects.append(event.block)
            first.set()
            if len(rejects) < spins:
                seed.act(SendRequest(seed, event.block))

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing is fetched")

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:8/", info),
        MissingClient(),
        deliver=deliver,
        feed=brain,
        piece_length=PIECE,
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(0, 0, PIECE)))
            await first.wait()
            seen = len(rejects)
            await until(lambda: len(rejects) == spins)
            seed.finish("done")
    assert seen < 10, seen  # it was all 100: the session stood still meanwhile


def test_ranges_reads_no_file_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    # A run of 1 MiB may cross 100,000 one-byte files: the table's flat lists, not two
    # property calls and an entry per file (twice as slow as before the shared table).
    count = 1000
    files = [{b"length": 1, b"path": [b"f%04d" % i]} for i in range(count)]
    fields: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"pieces": bytes(20),
        b"files": files,
    }
    layout = web_seed_layout("http://127.0.0.1:8/", Info.from_bytes(encode(fields)))
    layout.files.table  # noqa: B018 - made first: it reads every entry once
    reads: list[str] = []

    def counting(name: str) -> property:
        real = getattr(FileEntry, name)

        def read(entry: FileEntry) -> Any:
            reads.append(name)
            return real.fget(entry)

        return property(read)

    for name in ("end", "is_pad"):
        monkeypatch.setattr(FileEntry, name, counting(name))
    parts = layout.ranges(10, count - 20)
    assert reads == []
    assert [(part.file_index, part.offset, part.length, part.is_pad) for part in parts] == [
        (index, 0, 1, False) for index in range(10, count - 10)
    ]


async def test_the_table_is_made_once_whoever_waits_for_it_is_cancelled(
    many_files: Info, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[bool] = []
    gate = threading.Event()
    real = _webseed_layout._FileTable.__init__

    def slow(table: Any, info: Info) -> None:
        builds.append(True)
        gate.wait(DEADLINE)
        real(table, info)

    monkeypatch.setattr(_webseed_layout._FileTable, "__init__", slow)
    files = _webseed_layout.WebSeedFiles(many_files)
    try:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                first = trio.CancelScope()

                async def removed() -> None:
                    with first:
                        await files.ready()

                nursery.start_soon(removed)
                await until(lambda: builds == [True])
                first.cancel()  # its torrent paused, say, while the thread runs
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(files.ready)  # the next web seed to ask
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
            assert files.fetchable == FILES  # made (not made again here)
    finally:
        gate.set()
    assert builds == [True]


async def test_a_table_that_cannot_be_made_fails_every_waiter(
    many_files: Info, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(table: Any, info: Info) -> None:
        raise MemoryError

    monkeypatch.setattr(_webseed_layout._FileTable, "__init__", failing)
    files = _webseed_layout.WebSeedFiles(many_files)
    with trio.fail_after(DEADLINE):
        for _ in range(2):
            with pytest.raises(RuntimeError, match="file table") as raised:
                await files.ready()
            assert isinstance(raised.value.__cause__, MemoryError)


# -- Review r9 ----------------------------------------------------------------------------------
# A table that could not be made ended the web seed's run with an exception (MemoryError as it
# was for a small torrent, RuntimeError for a large one), which took down the torrent and then
# the session: the web seed now leaves whole, the others go on. And each large torrent's table
# had its own thread, outside trio's thread limiter: 100 torrents of 100,000 files made 60 at
# once (1.2 GiB). At most BUILDERS tables are now made at once, process-wide.

BUILDERS = _webseed_layout.BUILDERS


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "in-a-thread"])
async def test_a_web_seed_whose_file_table_cannot_be_made_leaves_whole(
    inline: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing(table: Any, info: Info) -> None:
        raise MemoryError("no room for the table")

    monkeypatch.setattr(_webseed_layout._FileTable, "__init__", failing)
    if not inline:  # a small torrent's table made in a thread, as a large one's
        monkeypatch.setattr(_webseed_layout, "INLINE_FILES", 0)
    inputs: list[tuple[WebSeed, Input]] = []
    seeds = set_up(
        one_piece_files(4),
        [f"http://127.0.0.1:{9 + k}/" for k in range(2)],
        feed=lambda seed, event: inputs.append((seed, event)),
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as torrent:
            for seed in seeds:
                torrent.start_soon(seed.run)
                seed.act(SendRequest(seed, Block(0, 0, PIECE)))
        # Every web seed's run ended, and the torrent's nursery with it, raising nothing.
    for seed in seeds:
        assert seed.state is WebSeedState.GONE
        assert [event for each, event in inputs if each is seed] == [PeerLeft(seed)]
    warnings = [record for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == len(seeds)
    assert all("no room for the table" in record.getMessage() for record in warnings)


async def test_a_table_made_on_the_spot_fails_as_one_made_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(table: Any, info: Info) -> None:
        raise MemoryError

    monkeypatch.setattr(_webseed_layout._FileTable, "__init__", failing)
    files = _webseed_layout.WebSeedFiles(one_piece_files(4))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="file table") as raised:
            await files.ready()
        assert isinstance(raised.value.__cause__, MemoryError)


async def test_at_most_two_tables_are_made_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    torrents = 5
    lock = threading.Lock()
    running = [0]
    peak = [0]
    gate = threading.Event()
    real = _webseed_layout._FileTable.__init__

    def gated(table: Any, info: Info) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(DEADLINE)
        with lock:
            running[0] -= 1
        real(table, info)

    monkeypatch.setattr(_webseed_layout._FileTable, "__init__", gated)
    monkeypatch.setattr(_webseed_layout, "INLINE_FILES", 0)  # small tables, made as large ones
    tables = [_webseed_layout.WebSeedFiles(one_piece_files(3, b"t%d" % k)) for k in range(torrents)]
    try:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                for files in tables:
                    nursery.start_soon(files.ready)
                # Either more than BUILDERS are made at once, or BUILDERS are and the others
                # wait their turn.
                await until(
                    lambda: (
                        peak[0] > BUILDERS
                        or (
                            running[0] == BUILDERS
                            and _webseed_layout._builders.waiting == torrents - BUILDERS
                        )
                    )
                )
                assert peak[0] <= BUILDERS
                gate.set()
    finally:
        gate.set()
    assert peak[0] == BUILDERS
    assert all(files.fetchable == 3 for files in tables)


async def test_a_table_no_thread_can_be_started_for_fails_every_waiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_webseed_layout, "INLINE_FILES", 0)
    files = _webseed_layout.WebSeedFiles(one_piece_files(3))
    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refused)
        with trio.fail_after(DEADLINE):
            for _ in range(2):
                with pytest.raises(RuntimeError, match="file table") as raised:
                    await files.ready()
                assert "can't start" in str(raised.value.__cause__)
    assert _webseed_layout._builders.waiting == 0  # nothing left queued for ever
    # A torrent after it has its table made as before.
    other = _webseed_layout.WebSeedFiles(one_piece_files(3))
    with trio.fail_after(DEADLINE):
        await other.ready()
    assert other.fetchable == 3
