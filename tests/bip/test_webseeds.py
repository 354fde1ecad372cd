"""BEP 19 web seeds in the client: torrents downloaded from an in-process HTTP file server on
loopback (alone, or with a peer for what it lacks or spoils), the file URLs, the range reader,
and a failing web seed's delays and retirement on a virtual clock.

No interop test: the real clients we test against (libtorrent, qBittorrent, aria2...) do not
serve HTTP, so an HTTP server in the test stands for every web seed."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from _engine_helpers import (
    LOOPBACK,
    address_of,
    good_pieces,
    loopback_config,
    same_files,
    until,
    write_content,
)
from _http_file_server import FileServer, file_server, self_signed
from _http_tracker_server import MiniTracker, http_server
from hypothesis import given
from hypothesis import strategies as st

from bip._client import TorrentOptions, TorrentPhase, open_session
from bip._client._http_response import HttpResponseParser
from bip._client._http_tracker_codec import HttpTrackerUrl, parse_http_tracker_url
from bip._client._http_tracker_errors import MalformedTrackerResponseError
from bip._client._webseed import (
    MAX_FAILURES,
    RETRY_DELAY,
    WebSeed,
    WebSeedState,
)
from bip._client._webseed_http import (
    MAX_SKIP,
    WebSeedClient,
    WebSeedError,
    WebSeedFileMissingError,
)
from bip._client._webseed_layout import WebSeedUrlError, _raw_paths, web_seed_layout
from bip._cmd_download import status_fields
from bip_metainfo import MagnetLink, Metainfo, create_torrent
from bip_select import (
    Block,
    BlockRejected,
    Input,
    PeerChokedUs,
    PeerDontHave,
    PeerLeft,
    PeerUnchokedUs,
    SendCancel,
    SendRequest,
)

DEADLINE = 60.0
SIZES = (300_000, 70_000, 123_456, 5)
PIECE = 32768


def web_torrent(folder: Path, version: str, urls: list[str]) -> Metainfo:
    # Names as on disk, '?' included (as other clients make them): readers sanitise them.
    return create_torrent(
        folder,
        version=version,  # type: ignore[arg-type]
        piece_length=PIECE,
        web_seeds=urls,
        creation_date=None,
        created_by=None,
        portable_names=False,
    )


def verified(torrent: Metainfo, save_dir: Path) -> bool:
    """Every piece checked afresh (v1 hashes: every torrent here has them but v2 ones)."""
    if not torrent.info.is_v1:
        return True
    return good_pieces(torrent.info, save_dir) == frozenset(range(torrent.info.num_pieces))


# -- from the web seed alone ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "hybrid", "v2"])
async def test_multi_file_from_web_seed_only(tmp_path: Path, version: str) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            # A directory URL without its trailing slash: a multi-file torrent's always is one.
            torrent = web_torrent(folder, version, [server.url.rstrip("/")])
            download = await s.add_torrent(torrent, TorrentOptions(down))
            await download.wait_complete()
            status = download.status()
            [seed] = download.web_seeds
    assert same_files(folder, down / "album")
    assert verified(torrent, down)
    assert status.bad_pieces == 0
    assert status.peers == 0
    # Complete: it left the brain (libtorrent drops web seeds once finished).
    assert seed.state is WebSeedState.DONE
    assert status.web_seeds == 0
    # Every block once (pad bytes included, as a peer would send them).
    info = torrent.info
    assert seed.downloaded == sum(info.piece_size(p) for p in range(info.num_pieces))
    paths = {path for path, _ in server.requests}
    assert paths == {"album/f0.bin", "album/sub/f1.bin", "album/f2.bin", "album/sub/f3.bin"}
    assert all(header is not None and header.startswith("bytes=") for _, header in server.requests)
    # Contiguous blocks go in one request: far fewer requests than blocks.
    assert len(server.requests) < sum(SIZES) // 16384


@pytest.mark.parametrize("version", ["v1", "hybrid"])
@pytest.mark.parametrize("as_directory", [False, True])
async def test_single_file_from_web_seed_only(
    tmp_path: Path, version: str, as_directory: bool
) -> None:
    root = tmp_path / "seed"
    (root / "files").mkdir(parents=True)
    source = root / "files" / "movie.bin"
    source.write_bytes(bytes(range(256)) * 1000 + b"end")
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with file_server(root) as server, open_session(loopback_config()) as s:
            url = server.url + ("files/" if as_directory else "files/movie.bin")
            torrent = web_torrent(source, version, [url])
            download = await s.add_torrent(torrent, TorrentOptions(down))
            await download.wait_complete()
    assert (down / "movie.bin").read_bytes() == source.read_bytes()
    assert verified(torrent, down)
    assert {path for path, _ in server.requests} == {"files/movie.bin"}


@pytest.mark.parametrize("version", ["hybrid", "v2"])
async def test_names_are_percent_encoded(tmp_path: Path, version: str) -> None:
    folder = tmp_path / "seed" / "my album"
    (folder / "dïr ü").mkdir(parents=True)
    (folder / "a b+c%d.bin").write_bytes(b"x" * 40_000)
    (folder / "dïr ü" / "日本 語#?.bin").write_bytes(b"y" * 50_000)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            torrent = web_torrent(folder, version, [server.url])
            download = await s.add_torrent(torrent, TorrentOptions(down))
            await download.wait_complete()
    assert verified(torrent, down)
    # Saved under the sanitised name ('?' is no file name character everywhere)...
    saved = (down / "my album" / "dïr ü" / "日本 語#_.bin").read_bytes()
    assert saved == (folder / "dïr ü" / "日本 語#?.bin").read_bytes()
    # ...but asked for by the torrent's own: the server decoded exactly the names, nothing
    # lost to a '#', a '?', a '+' or a '%'.
    paths = {path for path, _ in server.requests}
    assert paths == {"my album/a b+c%d.bin", "my album/dïr ü/日本 語#?.bin"}


async def test_server_ignoring_range(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            server.ignore_range = True  # 200 and the whole file: read from the right offset
            torrent = web_torrent(folder, "hybrid", [server.url])
            download = await s.add_torrent(torrent, TorrentOptions(down))
            await download.wait_complete()
            assert download.status().bad_pieces == 0
    assert same_files(folder, down / "album")


async def test_https_web_seed(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES[:2])
    server_context, client_context = self_signed(tmp_path)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with (
            file_server(folder.parent, tls=server_context) as server,
            open_session(loopback_config()) as s,
        ):
            assert server.url.startswith("https://")
            # The system's CAs do not know the certificate: a TLS failure, a WebSeedError.
            url = parse_http_tracker_url(server.url + "album/f0.bin")
            with pytest.raises(WebSeedError, match="CERTIFICATE_VERIFY_FAILED"):
                await WebSeedClient().fetch(url, 0, 10)
            s.web_seed_client = WebSeedClient(ssl_context=client_context)
            torrent = web_torrent(folder, "hybrid", [server.url])
            download = await s.add_torrent(torrent, TorrentOptions(down))
            await download.wait_complete()
    assert same_files(folder, down / "album")


async def test_magnet_web_seed_after_the_metadata(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (3_000_000, 1_000))
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with (
            file_server(folder.parent) as server,
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            torrent = web_torrent(folder, "hybrid", [])
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            address = address_of(seeder)
            magnet = MagnetLink.from_info_hash(
                torrent.info.info_hash,
                peers=[(str(address.host), address.port)],
                web_seeds=[server.url],
            )
            download = await leecher.add_torrent(magnet, TorrentOptions(down))
            await download.wait_complete()
            [seed] = download.web_seeds
    assert seed.layout.base == server.url
    assert same_files(folder, down / "album")


async def test_no_web_seeds_option(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES[:2])
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            torrent = web_torrent(folder, "hybrid", [server.url])
            download = await s.add_torrent(torrent, TorrentOptions(down, web_seeds=False))
            await until(lambda: download.status().phase is TorrentPhase.DOWNLOADING)
            await trio.sleep(0.2)
            assert download.web_seeds == []
    assert server.requests == []


# -- with a peer for what the web seed lacks or spoils -------------------------------------------


async def test_missing_file_comes_from_a_peer(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with (
            file_server(folder.parent) as server,
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            server.missing.add("album/sub/f1.bin")
            torrent = web_torrent(folder, "hybrid", [server.url])
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(down, peers=(address_of(seeder),))
            )
            await download.wait_complete()
            [seed] = download.web_seeds
    assert same_files(folder, down / "album")
    assert verified(torrent, down)
    # The web seed kept serving its other files (it stopped only with the completion); the
    # missing one's pieces came from the peer.
    assert seed.state is WebSeedState.DONE
    info = torrent.info
    everything = sum(info.piece_size(p) for p in range(info.num_pieces))  # pad bytes too
    assert 0 < seed.downloaded <= everything - SIZES[1]
    assert any(path == "album/f2.bin" for path, _ in server.requests)


async def test_corrupt_web_seed_is_dropped_and_a_peer_completes(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with (
            file_server(folder.parent) as server,
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            server.corrupt.update({"album/f0.bin", "album/sub/f1.bin", "album/f2.bin"})
            server.corrupt.add("album/sub/f3.bin")
            torrent = web_torrent(folder, "v1", [server.url])
            # The peer is dialled from the start but has the torrent only once the web seed
            # is dropped: the web seed's pieces fail first.
            download = await leecher.add_torrent(
                torrent, TorrentOptions(down, peers=(address_of(seeder),))
            )
            await until(lambda: bool(download.web_seeds))
            [seed] = download.web_seeds
            await until(lambda: seed.state is WebSeedState.BANNED)
            assert download.status().web_seeds == 0
            assert download.status().bad_pieces >= 1
            await trio.sleep(0.2)  # a request already on its way when it was dropped
            requests = len(server.requests)
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            await download.wait_complete()
    assert same_files(folder, down / "album")
    assert verified(torrent, down)
    assert len(server.requests) == requests  # never asked again


async def test_failing_web_seed_waits_and_a_peer_completes(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with (
            file_server(folder.parent) as server,
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            server.status = "503 Busy"
            torrent = web_torrent(folder, "v1", [server.url])
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(down, peers=(address_of(seeder),))
            )
            await download.wait_complete()
            [seed] = download.web_seeds
            # It waited to be tried again (30 s), never a crash of the torrent; the
            # completion ended its wait.
            assert seed.state is WebSeedState.DONE
            assert download.status().web_seeds == 0
    assert same_files(folder, down / "album")
    assert seed.downloaded == 0


async def test_status_counts_web_seeds(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (2_000_000,))
    (tmp_path / "empty").mkdir()
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with (
            file_server(folder.parent) as first,
            file_server(folder.parent) as second,
            file_server(tmp_path / "empty") as empty,
            open_session(loopback_config()) as s,
        ):
            first.status = second.status = "503 Busy"  # waiting: still sources
            torrent = web_torrent(folder, "v1", [first.url, second.url, empty.url])
            download = await s.add_torrent(torrent, TorrentOptions(down))
            states = [WebSeedState.WAITING, WebSeedState.WAITING, WebSeedState.GONE]
            await until(lambda: [seed.state for seed in download.web_seeds] == states)
            status = download.status()
    # The one with none of the files is given up; the two waiting ones still count.
    assert status.web_seeds == 2
    assert ("web seeds", "2") in status_fields(status)


async def test_web_seeds_share_the_work_and_leave_when_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bip.client")
    folder = write_content(tmp_path / "seed", (2_000_000,))
    (tmp_path / "empty").mkdir()
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with (
            file_server(folder.parent) as first,
            file_server(folder.parent) as second,
            file_server(tmp_path / "empty") as empty,
            open_session(loopback_config()) as s,
        ):
            torrent = web_torrent(folder, "v1", [first.url, second.url, empty.url])
            download = await s.add_torrent(torrent, TorrentOptions(down))
            await download.wait_complete()
            status = download.status()
            assert download.swarm is not None
            assert download.swarm.web_seeds == set()
            # Their workers ended: no task of theirs is left in the session.
            await until(lambda: not web_seed_tasks())
            requests = len(first.requests) + len(second.requests) + len(empty.requests)
            await trio.sleep(0.3)
            assert len(first.requests) + len(second.requests) + len(empty.requests) == requests
    first_seed, second_seed, empty_seed = download.web_seeds
    assert status.web_seeds == 0
    assert ("web seeds", "0") not in status_fields(status)
    assert (first_seed.state, second_seed.state) == (WebSeedState.DONE, WebSeedState.DONE)
    # The empty one was given up, unless the download was done before it said so.
    assert empty_seed.state in (WebSeedState.GONE, WebSeedState.DONE)
    # Everything came from the two, and each did its share. End-game may ask both for the
    # last blocks in flight (libtorrent's redundant bytes): a few blocks, never a second copy.
    fetched = first_seed.downloaded + second_seed.downloaded
    assert 2_000_000 <= fetched < 2_000_000 + 2_000_000 // 4
    assert first.requests
    assert second.requests
    # Leaving is no failure: said once per web seed, at INFO, nothing louder.
    assert not [r for r in caplog.records if r.levelno > logging.INFO]
    done = [r.getMessage() for r in caplog.records if r.getMessage().endswith("complete)")]
    assert done.count(f"web seed {first.url}: done (the torrent is complete)") == 1


def web_seed_tasks() -> list[trio.lowlevel.Task]:
    """The tasks of web seeds running in this trio run (named ``bip web seed URL``)."""
    found: list[trio.lowlevel.Task] = []
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        if task is None:
            continue
        if task.name.startswith("bip web seed"):
            found.append(task)
        tasks.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return found


async def test_download_command_from_a_web_seed(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with file_server(folder.parent) as server:
            path = tmp_path / "album.torrent"
            path.write_bytes(web_torrent(folder, "hybrid", [server.url]).to_bytes())
            argv = [sys.executable, "-m", "bip", "download", str(path), "--dir", str(down)]
            argv += ["--bind", LOOPBACK, "--port", "0", "--no-trackers", "--no-dht"]
            result = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
    assert result.returncode == 0, result.stderr.decode()
    assert same_files(folder, down / "album")
    # No warning that nothing could be found: a web seed is a source.
    assert "no peer to dial" not in result.stderr.decode()


# -- the file URLs -----------------------------------------------------------------------------


def test_layout_urls(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (40_000, 10))
    torrent = web_torrent(folder, "hybrid", [])
    layout = web_seed_layout("http://h.example/pub", torrent.info)
    targets = [None if url is None else url.target for url in layout.urls]
    real = [t for t in targets if t is not None]
    assert real == ["/pub/album/f0.bin", "/pub/album/sub/f1.bin"]
    # A hybrid torrent pads f0 to a piece boundary: the pad file has no URL...
    assert None in targets
    # ...and a run over it gives zeros for it (no URL), then f1 from its start.
    ranges = layout.ranges(39_000, PIECE * 2 - 39_000 + 10)
    assert [(r.url is None, r.offset, r.length) for r in ranges] == [
        (False, 39_000, 1_000),
        (True, 0, PIECE * 2 - 40_000),
        (False, 0, 10),
    ]
    with pytest.raises(ValueError, match="not in the torrent"):
        layout.ranges(10**9, 1)


def test_layout_single_file_and_bad_urls(tmp_path: Path) -> None:
    path = tmp_path / "a file.bin"
    path.write_bytes(b"z" * 1000)
    info = web_torrent(path, "v1", []).info
    assert web_seed_layout("http://h/x/", info).urls[0].target == "/x/a%20file.bin"  # type: ignore[union-attr]
    assert web_seed_layout("http://h/x/y.bin", info).urls[0].target == "/x/y.bin"  # type: ignore[union-attr]
    assert web_seed_layout("https://h/d i r/", info).urls[0].target == "/d%20i%20r/a%20file.bin"  # type: ignore[union-attr]
    for bad in ("ftp://h/x", "http://user:pw@h/x", "http:///x", "http://[::1/x"):
        with pytest.raises(WebSeedUrlError):
            web_seed_layout(bad, info)


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_raw_names_match_the_files(tmp_path: Path, version: str) -> None:
    folder = write_content(tmp_path / "seed", (40_000, 10, 70_000))
    single = folder / "f0.bin"
    for source in (folder, single):
        info = web_torrent(source, version, []).info
        raw = _raw_paths(info)
        assert raw is not None
        for entry, path in zip(info.files, raw, strict=True):
            if not entry.is_pad:
                assert tuple(part.decode() for part in path) == entry.path


# -- the range reader ----------------------------------------------------------------------------


@given(st.binary(max_size=300), st.integers(0, 20), st.integers(0, 20))
def test_window_reader_takes_any_bytes(data: bytes, skip: int, keep: int) -> None:
    parser = HttpResponseParser(max_body=16, window=lambda status, headers: (skip, keep))
    try:
        parser.receive_data(b"HTTP/1.1 200 OK\r\n" + data)
        parser.receive_eof()
    except MalformedTrackerResponseError:
        return
    assert parser.response is not None
    assert len(parser.response.body) <= min(keep, 16)


def test_window_reads_only_what_is_needed() -> None:
    def window(status: int, headers: tuple[tuple[str, str], ...]) -> tuple[int, int] | None:
        return (3, 4) if status == 200 else None

    whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n" + b"0123456789"
    for step in (1, 7, len(whole)):
        parser = HttpResponseParser(max_body=4, window=window)
        for start in range(0, len(whole), step):
            parser.receive_data(whole[start : start + step])
            if parser.response is not None:
                break
        assert parser.response is not None
        assert parser.response.body == b"3456"
        assert parser.truncated
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n"
    parser = HttpResponseParser(max_body=4, window=window)
    parser.receive_data(chunked)
    assert parser.response is not None
    assert parser.response.body == b"3456"
    # Without a window, the bound holds as before.
    parser = HttpResponseParser(max_body=4, window=lambda status, headers: None)
    with pytest.raises(Exception, match="exceeds"):
        parser.receive_data(whole)
    # A body shorter than the window: complete at its end, not truncated.
    parser = HttpResponseParser(max_body=4, window=window)
    parser.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n01234")
    assert parser.response is not None
    assert parser.response.body == b"34"
    assert not parser.truncated


async def test_fetch_errors(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(bytes(MAX_SKIP + 100))
    (tmp_path / "small.bin").write_bytes(b"0123456789")
    client = WebSeedClient(timeout=5)
    with trio.fail_after(DEADLINE):
        async with file_server(tmp_path) as server:

            def url(name: str) -> HttpTrackerUrl:
                return parse_http_tracker_url(server.url + name)

            assert await client.fetch(url("small.bin"), 2, 3) == b"234"
            with pytest.raises(WebSeedFileMissingError):
                await client.fetch(url("nothing.bin"), 0, 3)
            with pytest.raises(WebSeedError, match="sent bytes 'bytes 8-9/10' for 8-12"):
                await client.fetch(url("small.bin"), 8, 5)  # the server clips the range
            server.ignore_range = True
            assert await client.fetch(url("small.bin"), 4, 2) == b"45"
            with pytest.raises(WebSeedError, match="sent 2 bytes of 5"):
                await client.fetch(url("small.bin"), 8, 5)  # the whole file is too short
            with pytest.raises(WebSeedError, match="ignores Range"):
                await client.fetch(url("big.bin"), MAX_SKIP + 1, 10)
            server.redirects["moved.bin"] = server.url + "small.bin"
            server.redirects["loop.bin"] = "/loop.bin"
            server.ignore_range = False
            assert await client.fetch(url("moved.bin"), 1, 2) == b"12"
            with pytest.raises(WebSeedError, match="redirect loop"):
                await client.fetch(url("loop.bin"), 1, 2)
            server.status = "503 Busy"
            with pytest.raises(WebSeedError, match="HTTP 503 Busy"):
                await client.fetch(url("small.bin"), 0, 3)
        with pytest.raises(WebSeedError, match="cannot connect"):
            await client.fetch(url("small.bin"), 0, 3)


async def canned(
    answer: bytes, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """A server answering every request with ``answer``; started, it gives its base URL."""

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(answer)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/")
    await trio.serve_listeners(serve, listeners)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        # a 206 that does not say which bytes it holds
        (b"HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\nabc", "sent bytes ''"),
        # headers that never end
        (b"HTTP/1.1 206 OK\r\n" + b"X-Pad: " + b"a" * 70_000, "headers exceed"),
        # a chunk size past any bound, then no data
        (
            b"HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Range: bytes 2-4/10\r\n\r\nffffffffffffffff\r\nab",
            "closed the connection in the middle",
        ),
        (b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\n\r\n", "do not follow"),
        (b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:0/x\r\n\r\n", "do not follow"),
    ],
)
async def test_hostile_servers_give_our_error(answer: bytes, error: str) -> None:
    client = WebSeedClient(timeout=5)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            base = await nursery.start(canned, answer)
            with pytest.raises(WebSeedError, match=error):
                await client.fetch(parse_http_tracker_url(base + "f.bin"), 2, 3)
            nursery.cancel_scope.cancel()


def test_a_user_agent_cannot_add_headers() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        WebSeedClient(user_agent="bip\r\nX-Evil: 1")


# -- delays and retirement, on a virtual clock ---------------------------------------------------


class FailingClient(WebSeedClient):
    def __init__(self, *, missing: bool = False) -> None:
        super().__init__()
        self.calls = 0
        self.missing = missing

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        self.calls += 1
        await trio.sleep(0.1)
        if self.missing:
            raise WebSeedFileMissingError("HTTP 404")
        raise WebSeedError("HTTP 500")


async def test_failing_web_seed_waits_longer_then_gives_up(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    folder = write_content(tmp_path / "seed", (100_000, 50_000))
    info = web_torrent(folder, "v1", []).info
    client = FailingClient()
    inputs: list[tuple[float, Input]] = []
    seed: WebSeed

    def feed(_seed: WebSeed, event: Input) -> None:
        inputs.append((trio.current_time(), event))
        # The brain, once unchoked, asks again.
        if isinstance(event, PeerUnchokedUs):
            seed.act(SendRequest(seed, Block(0, 0, 16384)))

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    seed = WebSeed(
        web_seed_layout("http://h/", info),
        client,
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    start = trio.current_time()
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(0, 0, 16384)))
            seed.act(SendRequest(seed, Block(0, 16384, 16384)))
            seed.act(SendCancel(seed, Block(0, 16384, 16384)))  # never fetched, never rejected
            await until(lambda: seed.state is WebSeedState.GONE)
    assert client.calls == MAX_FAILURES
    chokes = [t - start for t, event in inputs if isinstance(event, PeerChokedUs)]
    unchokes = [t - start for t, event in inputs if isinstance(event, PeerUnchokedUs)]
    assert len(chokes) == MAX_FAILURES - 1
    waits = [u - c for c, u in zip(chokes, unchokes, strict=True)]
    assert waits == pytest.approx([RETRY_DELAY * 2**i for i in range(MAX_FAILURES - 1)], abs=0.5)
    rejected = [event for _, event in inputs if isinstance(event, BlockRejected)]
    assert [event.block for event in rejected] == [Block(0, 0, 16384)] * MAX_FAILURES
    assert isinstance(inputs[-1][1], PeerLeft)
    # Gone: requests are refused from then on.
    seed.act(SendRequest(seed, Block(1, 0, 16384)))
    assert not seed.usable


class TricklingClient(WebSeedClient):
    """A server that never finishes an answer (a trickle that keeps each read alive)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.abandoned = 0

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        self.started += 1
        try:
            await trio.sleep_forever()
        finally:
            self.abandoned += 1


async def test_a_fetch_nothing_wants_is_abandoned(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    folder = write_content(tmp_path / "seed", (100_000, 50_000))
    info = web_torrent(folder, "v1", []).info
    client = TricklingClient()
    inputs: list[Input] = []

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    seed = WebSeed(
        web_seed_layout("http://h/", info),
        client,
        deliver=deliver,
        feed=lambda _seed, event: inputs.append(event),
        piece_length=info.piece_length,
    )
    first, second = Block(0, 0, 16384), Block(0, 16384, 16384)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, first))
            seed.act(SendRequest(seed, second))  # one run with the first
            await until(lambda: client.started == 1)
            seed.act(SendCancel(seed, first))
            await trio.sleep(100)
            assert client.abandoned == 0  # the second block is still wanted
            seed.act(SendCancel(seed, second))  # as the brain does when they time out
            await until(lambda: client.abandoned == 1)
            nursery.cancel_scope.cancel()
    assert inputs == []  # neither rejected nor a failure: the brain let them go itself
    assert seed.state is WebSeedState.ACTIVE


async def test_missing_file_is_no_failure(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    folder = write_content(tmp_path / "seed", (100_000, 50_000))
    info = web_torrent(folder, "v1", []).info
    inputs: list[Input] = []

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    seed = WebSeed(
        web_seed_layout("http://h/", info),
        FailingClient(missing=True),
        deliver=deliver,
        feed=lambda _seed, event: inputs.append(event),
        piece_length=info.piece_length,
    )
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(0, 0, 16384)))
            await until(lambda: any(isinstance(e, PeerDontHave) for e in inputs))
            assert seed.state is WebSeedState.ACTIVE  # the other file may still be there
            last = info.num_pieces - 1
            seed.act(SendRequest(seed, Block(last, 0, info.piece_size(last))))
            await until(lambda: seed.state is WebSeedState.GONE)
    dont_have = {e.piece for e in inputs if isinstance(e, PeerDontHave)}
    assert dont_have == set(info.geometry.file_pieces(0))
    assert isinstance(inputs[-1], PeerLeft)
    assert not any(isinstance(e, PeerChokedUs) for e in inputs)


# -- leaving when complete -----------------------------------------------------------------------


async def test_a_torrent_complete_from_the_start_uses_no_web_seed(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES[:2])
    with trio.fail_after(DEADLINE):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            torrent = web_torrent(folder, "hybrid", [server.url])
            seeding = await s.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            await trio.sleep(0.2)
            assert seeding.web_seeds == []
            assert seeding.status().web_seeds == 0
            assert not web_seed_tasks()
    assert server.requests == []


def lone_seed(tmp_path: Path, client: WebSeedClient, inputs: list[Input]) -> WebSeed:
    """A web seed of a two-file torrent, its inputs to the brain recorded, that must deliver
    nothing."""
    folder = write_content(tmp_path / "seed", (100_000, 50_000))
    info = web_torrent(folder, "v1", []).info

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    return WebSeed(
        web_seed_layout("http://h/", info),
        client,
        deliver=deliver,
        feed=lambda _seed, event: inputs.append(event),
        piece_length=info.piece_length,
    )


async def test_finish_abandons_the_fetches_in_flight(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    client = TricklingClient()
    inputs: list[Input] = []
    seed = lone_seed(tmp_path, client, inputs)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(0, 0, 16384)))
            seed.act(SendRequest(seed, Block(2, 0, 16384)))  # not contiguous: a second run
            seed.act(SendRequest(seed, Block(4, 0, 16384)))
            await until(lambda: client.started == 3)
            start = trio.current_time()
            seed.finish("the torrent is complete")
            # run() returns on its own: this nursery ends without being cancelled.
    assert trio.current_time() - start < 1
    assert client.abandoned == 3
    assert seed.state is WebSeedState.DONE
    assert inputs == []  # nothing given back, no failure: the caller says it left
    seed.act(SendRequest(seed, Block(1, 0, 16384)))  # a late request is ignored
    assert not seed.usable
    seed.finish("again")  # a no-op
    assert seed.state is WebSeedState.DONE


async def test_finish_ends_a_wait_and_keeps_a_given_up_state(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bip.client")
    inputs: list[Input] = []
    seed = lone_seed(tmp_path, FailingClient(), inputs)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(0, 0, 16384)))
            await until(lambda: seed.state is WebSeedState.WAITING)
            start = trio.current_time()
            seed.finish("the torrent is complete")
    # Well before its RETRY_DELAY: nobody waits to try a web seed nothing needs.
    assert trio.current_time() - start < 1
    assert seed.state is WebSeedState.DONE
    assert not any(isinstance(event, PeerUnchokedUs) for event in inputs)
    # A web seed already given up stays so.
    gone = lone_seed(tmp_path / "2", FailingClient(missing=True), [])
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gone.run)
            gone.act(SendRequest(gone, Block(0, 0, 16384)))
            gone.act(SendRequest(gone, Block(4, 0, 16384)))
            await until(lambda: gone.state is WebSeedState.GONE)
    gone.finish("the torrent is complete")
    assert gone.state is WebSeedState.GONE
    assert not [r for r in caplog.records if r.levelno > logging.INFO]


# -- the bind address ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def watched_file_server(root: Path) -> AsyncIterator[tuple[FileServer, list[str]]]:
    """A :class:`FileServer` of ``root`` on 127.0.0.1 and the address each client came from."""
    server = FileServer(root.resolve())
    clients: list[str] = []

    async def serve(stream: trio.SocketStream) -> None:
        clients.append(stream.socket.getpeername()[0])
        await server.serve(stream)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host=LOOPBACK))
        server.url = f"http://{LOOPBACK}:{listener.socket.getsockname()[1]}/"
        yield server, clients
        nursery.cancel_scope.cancel()


async def test_web_seeds_and_http_trackers_connect_from_the_bind_address(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES[:2])
    down = tmp_path / "down"
    tracker = MiniTracker()
    config = loopback_config(listen=(("127.0.0.2", 0),), trackers=True)
    with trio.fail_after(DEADLINE):
        async with (
            watched_file_server(folder.parent) as (server, clients),
            http_server(tracker) as announce,
            open_session(config) as s,
        ):
            torrent = web_torrent(folder, "hybrid", [server.url])
            options = TorrentOptions(down, extra_trackers=(announce.url,))
            download = await s.add_torrent(torrent, options)
            await download.wait_complete()
            await tracker.announced.wait()
            # (A hybrid torrent is announced in both its swarms; "stopped" leaves them.)
            announced = [peer for swarm in tracker.swarms.values() for peer in swarm.values()]
    assert same_files(folder, down / "album")
    assert clients
    assert set(clients) == {"127.0.0.2"}
    assert announced
    assert {peer[:4] for peer in announced} == {bytes([127, 0, 0, 2])}


async def test_a_local_address_is_an_ip_address(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="local_address must be an IP address"):
        WebSeedClient(local_address="localhost")
    (tmp_path / "f.bin").write_bytes(b"0123456789")
    with trio.fail_after(DEADLINE):
        async with watched_file_server(tmp_path) as (server, clients):
            url = parse_http_tracker_url(server.url + "f.bin")
            assert await WebSeedClient(local_address="127.0.0.3").fetch(url, 1, 3) == b"123"
            assert await WebSeedClient().fetch(url, 1, 3) == b"123"
    assert clients == ["127.0.0.3", "127.0.0.1"]


# -- redirects -----------------------------------------------------------------------------------


async def test_redirects_relative_limits_and_no_location(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.bin").write_bytes(b"0123456789")
    # Redirect mechanics on paths no tracker or web seed uses: libtorrent's
    # ssrf_mitigation would refuse them on loopback (test_ssrf_rules.py).
    client = WebSeedClient(timeout=5, ssrf_mitigation=False)
    with trio.fail_after(DEADLINE):
        async with file_server(tmp_path) as server:
            # Resolved against the URL that sent it, and its query kept as given.
            server.redirects["a/moved.bin"] = "../d/f.bin?token=1"
            url = parse_http_tracker_url(server.url + "a/moved.bin")
            assert await client.fetch(url, 0, 4) == b"0123"
            assert server.requests[-1] == ("d/f.bin", "bytes=0-3")
            for i in range(6):
                server.redirects[f"{i}"] = f"/{i + 1}"
            server.redirects["6"] = "/d/f.bin"
            with pytest.raises(WebSeedError, match="more than 5 redirects"):
                await client.fetch(parse_http_tracker_url(server.url + "0"), 0, 4)
            assert await client.fetch(parse_http_tracker_url(server.url + "2"), 0, 4) == b"0123"
        async with trio.open_nursery() as nursery:
            base = await nursery.start(canned, b"HTTP/1.1 301 Moved\r\nContent-Length: 0\r\n\r\n")
            with pytest.raises(WebSeedError, match=r"HTTP 301 from .* names no Location"):
                await client.fetch(parse_http_tracker_url(base + "f.bin"), 0, 4)
            nursery.cancel_scope.cancel()
