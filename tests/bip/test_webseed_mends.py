"""BEP 19 web seeds: how failures are counted, which answers mean a file is missing, a bad
piece from a web seed, and a url-list entry with a fragment.

- One outage (every request in flight failing at once) is one failure, not one per request:
  a web seed backs off :data:`MAX_FAILURES` - 1 times before it is given up.
- A file the server refuses for good (403, 401, 416... any 4xx but 429), or that keeps failing
  with 5xx while its other files are served, is missing (as a 404), as libtorrent's
  ``web_peer_connection::on_receive`` takes any such status: it no longer chokes the whole
  web seed every 30 s for ever.
- A piece a web seed alone sent that fails its hash check marks the file it lies in as not
  had (or that piece, if it spans files), as libtorrent's
  ``web_peer_connection::received_invalid_data``: a mirror with one changed file still serves
  the others. It is banned once it has nothing left (a single-file torrent's one file).
- A ``#fragment`` in a url-list entry is no part of the path files are appended to.

Virtual clocks for the delays; an HTTP server on loopback for the end-to-end case.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
import trio.testing
from _engine_helpers import loopback_config, until, write_content
from _http_file_server import file_server

from bip._client import TorrentOptions, open_session
from bip._client._http_response import HttpResponse
from bip._client._http_tracker_codec import HttpTrackerUrl, parse_http_tracker_url
from bip._client._webseed import (
    MAX_FAILURES,
    MAX_FILE_FAILURES,
    MAX_REFUSALS,
    MAX_RETRY_DELAY,
    MAX_WEB_SEED_REQUESTS,
    RETRY_DELAY,
    WebSeed,
    WebSeedState,
)
from bip._client._webseed_http import (
    WebSeedClient,
    WebSeedError,
    WebSeedFileMissingError,
    _payload,
)
from bip._client._webseed_layout import web_seed_layout
from bip_metainfo import Info, create_torrent
from bip_select import (
    Block,
    BlockRejected,
    Input,
    PeerChokedUs,
    PeerDontHave,
    PeerLeft,
    PeerUnchokedUs,
    SendRequest,
)

PIECE = 16384


def two_files(tmp_path: Path) -> Info:
    """A v1 torrent of ``t/a.bin`` (pieces 0-15) and ``t/b.bin`` (pieces 16-31)."""
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a.bin").write_bytes(bytes(16 * PIECE))
    (folder / "b.bin").write_bytes(bytes(16 * PIECE))
    return create_torrent(
        folder, piece_length=PIECE, creation_date=None, created_by=None, version="v1"
    ).info


class StatusClient(WebSeedClient):
    """A server answering each file with its status in ``statuses`` (206 and zeros for the
    others), classified by the real client's reader."""

    def __init__(self, statuses: dict[str, int]) -> None:
        super().__init__()
        self.statuses = statuses
        self.calls: dict[str, int] = {}

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        name = url.target.rsplit("/", 1)[-1]
        self.calls[name] = self.calls.get(name, 0) + 1
        await trio.sleep(0.1)
        status = self.statuses.get(name, 206)
        last = offset + length - 1
        response = HttpResponse(
            status,
            "Reason",
            (("content-range", f"bytes {offset}-{last}/*"),),
            bytes(length) if status == 206 else b"",
        )
        return _payload(url, response, offset, length)


def web_seed(info: Info, client: WebSeedClient, inputs: list[Input]) -> WebSeed:
    """A web seed of ``info`` that records its inputs to the brain and takes any block."""

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        pass

    return WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        client,
        deliver=deliver,
        feed=lambda _seed, event: inputs.append(event),
        piece_length=info.piece_length,
    )


# -- F1: one outage, one failure -------------------------------------------------------------


class DownClient(WebSeedClient):
    """A server that is down: every connection refused, and the refusals of the requests in
    flight arrive together (their tasks are woken at once, none of them cancelled), as the
    4 workers' connections to a server that just went down are refused."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self._refusal: trio.Event | None = None

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        self.calls += 1
        if self._refusal is None:
            self._refusal = refusal = trio.Event()
            await trio.sleep(0.1)
            self._refusal = None
            refusal.set()  # the others wake with their refusal, then this one fails first
        else:
            await self._refusal.wait()
        raise WebSeedError("127.0.0.1:1: cannot connect (refused)")


async def test_one_outage_counts_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    info = two_files(tmp_path)
    client = DownClient()
    inputs: list[tuple[float, Input]] = []
    blocks = [Block(piece, 0, PIECE) for piece in (0, 2, 4, 6)]  # 4 runs, one per worker
    seed: WebSeed

    def feed(_seed: WebSeed, event: Input) -> None:
        inputs.append((trio.current_time(), event))
        if isinstance(event, PeerUnchokedUs):  # the brain asks again, as much as before
            for block in blocks:
                seed.act(SendRequest(seed, block))

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        client,
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    start = trio.current_time()
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            for block in blocks:
                seed.act(SendRequest(seed, block))
            # run() returns once it is given up.
    assert seed.state is WebSeedState.GONE
    chokes = [t - start for t, event in inputs if isinstance(event, PeerChokedUs)]
    unchokes = [t - start for t, event in inputs if isinstance(event, PeerUnchokedUs)]
    # Each round of 4 failed requests is one failure: backed off MAX_FAILURES - 1 times,
    # each delay twice the one before, then given up.
    assert len(chokes) == MAX_FAILURES - 1
    waits = [u - c for c, u in zip(chokes, unchokes, strict=True)]
    assert waits == pytest.approx([RETRY_DELAY * 2**i for i in range(MAX_FAILURES - 1)], abs=0.5)
    assert isinstance(inputs[-1][1], PeerLeft)
    assert client.calls == 4 * MAX_FAILURES


async def test_a_failure_from_before_a_retry_neither_counts_nor_delays(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    info = two_files(tmp_path)
    inputs: list[Input] = []

    class Client(WebSeedClient):
        async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
            # a.bin is served; b.bin fails, later past its first piece.
            if url.target.endswith("/a.bin"):
                await trio.sleep(0.1)
                return bytes(length)
            await trio.sleep(0.5 if offset else 0.1)
            raise WebSeedError("connection reset")

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        if block.piece == 15:
            await trio.sleep(100)  # a slow disk: the run's failure is seen after the retry

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        Client(),
        deliver=deliver,
        feed=lambda _seed, event: inputs.append(event),
        piece_length=info.piece_length,
    )
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            # One worker takes piece 17 (b.bin at 16384: fails at 0.5 s), another pieces 15
            # and 16 (a.bin's last served at 0.1 s, b.bin's first failing at 0.2 s, told
            # after the 100 s the disk takes to store piece 15).
            for piece in (17, 15, 16):
                seed.act(SendRequest(seed, Block(piece, 0, PIECE)))
            await trio.sleep(200)
            nursery.cancel_scope.cancel()
    # One choke (piece 17's failure), not a second one for a failure that began before it.
    assert sum(isinstance(event, PeerChokedUs) for event in inputs) == 1
    assert seed.state is WebSeedState.ACTIVE


# -- F2: a file refused for good is missing --------------------------------------------------


async def canned(status: str, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """A server answering every request with ``status``; started, it gives its base URL."""

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(
                    f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/")
    await trio.serve_listeners(serve, listeners)


@pytest.mark.parametrize(
    ("status", "missing"),
    [
        ("400 Bad Request", True),
        ("401 Unauthorized", True),
        ("403 Forbidden", True),
        ("404 Not Found", True),
        ("410 Gone", True),
        ("416 Range Not Satisfiable", True),
        ("451 Unavailable For Legal Reasons", True),
        ("429 Too Many Requests", False),
        ("500 Internal Server Error", False),
        ("503 Service Unavailable", False),
    ],
)
async def test_a_4xx_but_429_means_the_file_is_missing(status: str, missing: bool) -> None:
    client = WebSeedClient(timeout=5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            base = await nursery.start(canned, status)
            with pytest.raises(WebSeedError) as raised:
                await client.fetch(parse_http_tracker_url(base + "f.bin"), 2, 3)
            nursery.cancel_scope.cancel()
    assert isinstance(raised.value, WebSeedFileMissingError) is missing
    assert status.split(maxsplit=1)[0] in str(raised.value)


@pytest.mark.parametrize("status", [401, 403, 416])
async def test_a_refused_file_is_missing_and_chokes_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, status: int
) -> None:
    info = two_files(tmp_path)
    client = StatusClient({"b.bin": status})
    inputs: list[Input] = []
    seed = web_seed(info, client, inputs)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(20, 0, PIECE)))
            await until(lambda: any(isinstance(event, PeerDontHave) for event in inputs))
            seed.act(SendRequest(seed, Block(3, 0, PIECE)))
            await until(lambda: client.calls.get("a.bin") == 1)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    dont_have = {event.piece for event in inputs if isinstance(event, PeerDontHave)}
    assert dont_have == set(info.geometry.file_pieces(1))
    assert not any(isinstance(event, PeerChokedUs) for event in inputs)
    assert seed.state is WebSeedState.ACTIVE


async def test_a_file_failing_while_the_others_are_served_is_missing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """500 for one file, 206 for the other (the hunt's 403 case, with a status that may
    pass): the brain asks for either file's pieces by turns."""
    info = two_files(tmp_path)
    client = StatusClient({"b.bin": 500})
    inputs: list[Input] = []
    turn = 0
    lacked: set[int] = set()
    given_up = trio.Event()
    seed: WebSeed

    def ask() -> None:
        nonlocal turn
        turn += 1
        piece = turn % 16 + (16 if turn % 2 else 0)
        if piece not in lacked:
            seed.act(SendRequest(seed, Block(piece, 0, PIECE)))

    def feed(_seed: WebSeed, event: Input) -> None:
        inputs.append(event)
        if isinstance(event, PeerDontHave):
            lacked.add(event.piece)
            given_up.set()
        if isinstance(event, PeerUnchokedUs):
            ask()

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        ask()
        ask()

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        client,
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            ask()
            ask()
            await given_up.wait()
            asked = client.calls["b.bin"]
            await trio.sleep(2 * RETRY_DELAY)  # it goes on with the other file alone
            nursery.cancel_scope.cancel()
    assert client.calls["b.bin"] == asked
    assert lacked == set(info.geometry.file_pieces(1))
    # A few delays at most before it is known missing, not one every 30 s for an hour.
    assert sum(isinstance(event, PeerChokedUs) for event in inputs) <= 3
    assert client.calls["b.bin"] <= 4
    assert seed.state is WebSeedState.ACTIVE


async def test_a_server_failing_every_file_marks_none_missing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """503 for everything: an overloaded server, not missing files: backed off, then given
    up, as before."""
    info = two_files(tmp_path)
    client = StatusClient({"a.bin": 503, "b.bin": 503})
    inputs: list[Input] = []
    seed: WebSeed

    def feed(_seed: WebSeed, event: Input) -> None:
        inputs.append(event)
        if isinstance(event, PeerUnchokedUs):
            seed.act(SendRequest(seed, Block(20, 0, PIECE)))

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        client,
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(20, 0, PIECE)))
            # run() returns once it is given up.
    assert seed.state is WebSeedState.GONE
    assert not any(isinstance(event, PeerDontHave) for event in inputs)
    assert sum(isinstance(event, PeerChokedUs) for event in inputs) == MAX_FAILURES - 1


# -- F3: a bad piece from a web seed ---------------------------------------------------------


async def test_one_changed_file_on_a_mirror_leaves_its_other_files(tmp_path: Path) -> None:
    sizes = (40_000, 300_000, 300_000, 300_000)  # f0 (pieces 0-1) differs on the mirror
    folder = write_content(tmp_path / "seed", sizes)
    with trio.fail_after(30):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            server.corrupt.add("album/f0.bin")
            torrent = create_torrent(
                folder,
                piece_length=32768,
                web_seeds=[server.url],
                creation_date=None,
                created_by=None,
                version="v1",
            )
            info = torrent.info
            download = await s.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            lacked = len(info.geometry.file_pieces(0))
            await until(lambda: download.status().pieces == info.num_pieces - lacked)
            [seed] = download.web_seeds
            assert seed.state is WebSeedState.ACTIVE
            assert download.status().web_seeds == 1
            asked = sum(path == "album/f0.bin" for path, _ in server.requests)
            await trio.sleep(0.3)
            # f0's pieces are never asked of it again (nor fetched: f0 is lacked).
            assert sum(path == "album/f0.bin" for path, _ in server.requests) == asked
            assert download.status().pieces == info.num_pieces - lacked


async def test_a_bad_single_file_bans_the_web_seed(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (100_000,))
    with trio.fail_after(30):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            server.corrupt.add("album/f0.bin")
            torrent = create_torrent(
                folder / "f0.bin",
                piece_length=32768,
                web_seeds=[server.url + "album/f0.bin"],
                creation_date=None,
                created_by=None,
                version="v1",
            )
            download = await s.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            await until(lambda: bool(download.web_seeds))
            [seed] = download.web_seeds
            await until(lambda: seed.state is WebSeedState.BANNED)
            assert download.status().web_seeds == 0


# -- F4: a fragment -------------------------------------------------------------------------


def test_a_fragment_is_no_part_of_the_files_urls(tmp_path: Path) -> None:
    info = two_files(tmp_path)
    for base in ("http://127.0.0.1:8/dir#frag", "http://127.0.0.1:8/dir#frag/"):
        layout = web_seed_layout(base, info)
        assert [layout.file_url(i).target for i in (0, 1)] == ["/dir/t/a.bin", "/dir/t/b.bin"]
        assert "#" not in layout.base
    (tmp_path / "one.bin").write_bytes(b"x" * 100)
    single = create_torrent(tmp_path / "one.bin", piece_length=PIECE).info
    assert web_seed_layout("http://127.0.0.1:8/dir/#top", single).file_url(0).target == (
        "/dir/one.bin"
    )
    assert web_seed_layout("http://127.0.0.1:8/f.bin#top", single).file_url(0).target == ("/f.bin")


# -- review of the mends above ---------------------------------------------------------------


async def test_a_mirror_corrupting_every_file_is_banned_by_trust(tmp_path: Path) -> None:
    """Every file differs on the mirror: each bad piece it alone sent marks its file lacked,
    and costs it trust, as libtorrent's ``torrent::piece_failed`` takes 2 points even when
    ``received_invalid_data`` spares the sole source: banned at ``ban_trust`` (its fourth bad
    piece), not after one bad piece per file (it was: every file fetched as garbage)."""
    sizes = (65_536,) * 24  # v2: 2 pieces per file, none spanning files
    folder = write_content(tmp_path / "seed", sizes)
    with trio.fail_after(30):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            for index in range(len(sizes)):
                server.corrupt.add(f"album/{'sub/' if index % 2 else ''}f{index}.bin")
            torrent = create_torrent(
                folder,
                piece_length=32768,
                web_seeds=[server.url],
                creation_date=None,
                created_by=None,
                version="v2",
            )
            download = await s.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            await until(lambda: bool(download.web_seeds))
            [seed] = download.web_seeds
            await until(lambda: seed.state is WebSeedState.BANNED)
            swarm = download.swarm
            assert swarm is not None
            # Banned by its trust (-2 per bad piece, -7 bans), with files left to offer.
            assert swarm.brain.queues.hash_failures(seed) == 4
            assert swarm.brain.queues.trust(seed) == -7
            assert len(seed._missing) < len(sizes) - 1


async def test_a_changed_file_costs_the_mirror_trust(tmp_path: Path) -> None:
    """One changed file: its bad piece marks the file lacked (the mirror stays) and counts
    against the mirror's trust, as any bad piece."""
    sizes = (65_536, 300_000, 300_000)
    folder = write_content(tmp_path / "seed", sizes)
    with trio.fail_after(30):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            server.corrupt.add("album/f0.bin")
            torrent = create_torrent(
                folder,
                piece_length=32768,
                web_seeds=[server.url],
                creation_date=None,
                created_by=None,
                version="v2",
            )
            info = torrent.info
            download = await s.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            lacked = len(info.geometry.file_pieces(0))
            await until(lambda: download.status().pieces == info.num_pieces - lacked)
            [seed] = download.web_seeds
            assert seed.state is WebSeedState.ACTIVE
            swarm = download.swarm
            assert swarm is not None
            assert swarm.brain.queues.hash_failures(seed) in (1, 2)  # f0's pieces in flight


def many_files(tmp_path: Path, count: int) -> Info:
    """A v1 torrent of ``count`` files of one piece each (``t/f<i>.bin``: piece i)."""
    folder = tmp_path / "t"
    folder.mkdir()
    for index in range(count):
        (folder / f"f{index}.bin").write_bytes(bytes(PIECE))
    return create_torrent(
        folder, piece_length=PIECE, creation_date=None, created_by=None, version="v1"
    ).info


class RefusingClient(WebSeedClient):
    """A server refusing every request with ``status`` (hotlink protection, a geo block)."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.calls: list[float] = []

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        self.calls.append(trio.current_time())
        await trio.sleep(0.1)
        return _payload(url, HttpResponse(self.status, "No", (), b""), offset, length)


@pytest.mark.parametrize("status", [401, 403, 407, 426, 451])
async def test_a_server_refusing_every_file_backs_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, status: int
) -> None:
    """The same refusal for file after file, nothing served between: the server refuses us,
    not lacks files; it backs off as after any failure (libtorrent waits
    ``urlseed_wait_retry`` after every refusal), rather than one request per file back to
    back."""
    count = 60
    info = many_files(tmp_path, count)
    client = RefusingClient(status)
    inputs: list[Input] = []
    lacked: set[int] = set()
    asked: set[int] = set()
    seed: WebSeed

    def ask() -> None:
        for piece in range(count):  # the brain asks for what it still may
            if piece not in lacked and piece not in asked:
                asked.add(piece)
                seed.act(SendRequest(seed, Block(piece, 0, PIECE)))
                return

    def feed(_seed: WebSeed, event: Input) -> None:
        inputs.append(event)
        if isinstance(event, PeerDontHave):
            lacked.add(event.piece)
        if isinstance(event, BlockRejected):
            asked.discard(event.block.piece)
            ask()
        if isinstance(event, PeerUnchokedUs):
            asked.clear()
            for _ in range(MAX_WEB_SEED_REQUESTS):
                ask()

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        client,
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            for _ in range(MAX_WEB_SEED_REQUESTS):
                ask()
            # run() returns once it is given up (or every file is lacked).
    first = [when for when in client.calls if when < RETRY_DELAY / 2]
    assert len(first) <= MAX_REFUSALS + MAX_WEB_SEED_REQUESTS
    assert any(isinstance(event, PeerChokedUs) for event in inputs)
    assert len(client.calls) < count / 2
    assert seed.state is WebSeedState.GONE


class BusyClient(WebSeedClient):
    """``a.bin`` served; ``b.bin`` answered ``status`` with ``headers``, later."""

    def __init__(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        super().__init__()
        self.status = status
        self.headers = headers
        self.calls = 0

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        if url.target.endswith("/a.bin"):
            await trio.sleep(0.05)  # served before b.bin fails: the order is no chance
            return bytes(length)
        await trio.sleep(0.1)
        self.calls += 1
        return _payload(url, HttpResponse(self.status, "Busy", self.headers, b""), offset, length)


async def test_runs_of_a_file_given_up_fail_without_choking(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A file failing with 500 while another is served, 3 runs of it in flight at once:
    once it is given up, the other runs' failures (same period) count nothing (one of them
    choked the whole web seed)."""
    info = two_files(tmp_path)
    client = BusyClient(500, ())
    events: list[Input] = []
    lacked: set[int] = set()
    turn = 0
    seed: WebSeed

    def ask() -> None:
        nonlocal turn
        turn += 1
        seed.act(SendRequest(seed, Block(turn % 16, 0, PIECE)))  # a.bin: served
        for piece in (16, 18, 20):  # b.bin: 3 runs at once
            if piece not in lacked:
                seed.act(SendRequest(seed, Block(piece, 0, PIECE)))

    def feed(_seed: WebSeed, event: Input) -> None:
        if isinstance(event, BlockRejected):
            return
        events.append(event)
        if isinstance(event, PeerDontHave):
            lacked.add(event.piece)
        if isinstance(event, PeerUnchokedUs):
            ask()

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        pass

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        client,
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            ask()
            await until(lambda: bool(lacked))
            await trio.sleep(4 * RETRY_DELAY)  # the runs in flight end, the next begin
            nursery.cancel_scope.cancel()
    given_up = next(i for i, event in enumerate(events) if isinstance(event, PeerDontHave))
    assert not any(isinstance(event, PeerChokedUs) for event in events[given_up:])
    assert seed.state is WebSeedState.ACTIVE


@pytest.mark.parametrize(
    ("status", "headers"),
    [(429, ()), (429, (("retry-after", "5"),)), (503, (("retry-after", "5"),))],
)
async def test_a_busy_server_loses_no_file(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    status: int,
    headers: tuple[tuple[str, str], ...],
) -> None:
    """429, or 503 with a Retry-After, for one file while another is served: the server asks
    us to come back (it is busy), which says nothing of the file: it backs off, and the
    file is never given up."""
    info = two_files(tmp_path)
    client = BusyClient(status, headers)
    inputs: list[Input] = []
    turn = 0
    seed: WebSeed

    def ask() -> None:
        nonlocal turn
        turn += 1
        seed.act(SendRequest(seed, Block(turn % 16 + (16 if turn % 2 else 0), 0, PIECE)))

    def feed(_seed: WebSeed, event: Input) -> None:
        inputs.append(event)
        if isinstance(event, PeerUnchokedUs):
            ask()

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        ask()
        ask()

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        client,
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            ask()
            ask()
            await trio.sleep(20 * RETRY_DELAY)
            nursery.cancel_scope.cancel()
    assert not any(isinstance(event, PeerDontHave) for event in inputs)
    assert client.calls >= 3 * MAX_FILE_FAILURES  # asked again after each delay
    assert seed.usable  # backing off (a served file resets its failures), never given up


async def test_a_bad_piece_across_files_is_lacked_alone(tmp_path: Path) -> None:
    """A bad piece a web seed alone sent that spans files: that piece only is no longer
    offered (BEP 54's don't have), its files stay."""
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a.bin").write_bytes(bytes(PIECE + PIECE // 2))  # pieces 0 and 1
    (folder / "b.bin").write_bytes(bytes(PIECE + PIECE // 2))  # pieces 1 and 2
    info = create_torrent(
        folder, piece_length=PIECE, creation_date=None, created_by=None, version="v1"
    ).info
    inputs: list[Input] = []
    seed = web_seed(info, StatusClient({}), inputs)
    with trio.fail_after(10):
        await seed.layout.ready()
    assert seed.lacks_bad_piece(1)
    assert inputs == [PeerDontHave(seed, 1)]
    assert seed.state is WebSeedState.ACTIVE
    assert seed.lacks_bad_piece(0)  # within a.bin: the file's pieces
    assert inputs[1:] == [PeerDontHave(seed, 0), PeerDontHave(seed, 1)]


async def test_a_run_of_pad_bytes_alone_proves_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A dead server, and at each try a run made only of BEP 47 pad bytes (zeros, never
    fetched) besides one of file bytes: the pad run is no sign the server works, so the
    web seed is still given up (it reset the count of failures: tried every 30 s for
    ever)."""
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a.bin").write_bytes(bytes(40_000))  # pieces 0-1, padded to 65536
    (folder / "b.bin").write_bytes(bytes(40_000))
    info = create_torrent(
        folder, piece_length=2 * PIECE, creation_date=None, created_by=None, version="hybrid"
    ).info
    pad = Block(1, PIECE, PIECE)  # 49152-65535: pad bytes only, a run of its own
    assert info.piece_length == 2 * PIECE
    client = StatusClient({"a.bin": 500, "b.bin": 500})
    inputs: list[Input] = []
    seed: WebSeed

    def ask() -> None:
        seed.act(SendRequest(seed, pad))
        seed.act(SendRequest(seed, Block(0, 0, PIECE)))

    def feed(_seed: WebSeed, event: Input) -> None:
        inputs.append(event)
        if isinstance(event, PeerUnchokedUs):
            ask()

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        assert block == pad

    seed = WebSeed(
        web_seed_layout("http://127.0.0.1:1/", info),
        client,
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    with trio.fail_after(10 * MAX_RETRY_DELAY * MAX_FAILURES):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            ask()
            # run() returns once it is given up.
    assert seed.state is WebSeedState.GONE
    assert sum(isinstance(event, PeerChokedUs) for event in inputs) == MAX_FAILURES - 1


async def test_one_missing_file_fetched_by_every_worker_is_one_refusal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A 404 for a large file whose runs the 4 workers fetch at once: one file refused, not
    4 (counted as 4, they reached MAX_REFUSALS and choked the web seed for 30 s)."""
    info = two_files(tmp_path)
    client = StatusClient({"a.bin": 404})
    inputs: list[Input] = []
    seed = web_seed(info, client, inputs)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            for piece in (0, 2, 4, 6):  # 4 runs of a.bin, one per worker
                seed.act(SendRequest(seed, Block(piece, 0, PIECE)))
            await until(lambda: client.calls.get("a.bin", 0) == 4 and bool(seed._missing))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert not [event for event in inputs if isinstance(event, PeerChokedUs)]
    assert seed.state is WebSeedState.ACTIVE
