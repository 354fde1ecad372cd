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
from _engine_helpers import until

from bip._client import _webseed_layout
from bip._client._http_tracker_codec import MAX_URL_LENGTH, HttpTrackerUrl, parse_http_tracker_url
from bip._client._torrent import Torrent
from bip._client._webseed import WebSeed, WebSeedState
from bip._client._webseed_http import WebSeedClient
from bip._client._webseed_layout import web_seed_layout
from bip_bencode import encode
from bip_metainfo import Info
from bip_select import Block, Input, PeerDontHave, SendRequest

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


def set_up(info: Info, urls: list[str], client: WebSeedClient | None = None) -> list[WebSeed]:
    """The web seeds :meth:`Torrent._make_web_seeds` makes for ``info`` and ``urls`` (on a
    stand-in for the torrent: only what the web seeds' set-up reads)."""

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
        _web_seed_input=lambda seed, event: None,
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


async def test_a_file_whose_url_would_be_too_long_is_one_the_web_seed_lacks() -> None:
    # Made per request now: a URL past our bound (a long path of escaped UTF-8) is never
    # asked for; that file's pieces come from peers, the others from this web seed.
    long = ["\u00e9".encode() * 60] * (MAX_URL_LENGTH // 300)
    files = [{b"length": PIECE, b"path": [b"short"]}, {b"length": PIECE, b"path": long}]
    fields: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"pieces": bytes(40),
        b"files": files,
    }
    info = Info.from_bytes(encode(fields))
    client = RecordingClient()
    inputs: list[Input] = []
    delivered: list[Block] = []

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        delivered.append(block)

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:8/", info),
        client,
        deliver=deliver,
        feed=lambda _seed, event: inputs.append(event),
        piece_length=PIECE,
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(1, 0, PIECE)))
            await until(lambda: any(isinstance(event, PeerDontHave) for event in inputs))
            seed.act(SendRequest(seed, Block(0, 0, PIECE)))
            await until(lambda: delivered == [Block(0, 0, PIECE)])
            assert seed.state is WebSeedState.ACTIVE
            seed.finish("done")
    assert client.targets == ["/t/short"]
    assert [event.piece for event in inputs if isinstance(event, PeerDontHave)] == [1]
