"""BEP 21 partial seeds and HTTP trackers: a finished partial download's regular announces say
``event=paused`` (libtorrent's ``is_finished() && !is_seed()``), ``started``, ``completed`` and
``stopped`` keep their place; a tracker that refuses ``paused`` (chihaya, bittorrent-tracker)
hears ``none`` from then on and keeps us; a scrape's ``downloaders`` (the leechers that are no
partial seeds) is read where the tracker gives it, at most the leechers, and ``bip tracker
scrape`` shows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.abc
from _discovery_target import NullSink, SeedTarget
from _engine_helpers import address_of, loopback_config, until, write_content
from _http_tracker_server import (
    answer,
    http_server,
    http_server_in_thread,
    query_of,
    reply,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from bip._cli import main
from bip._client import TorrentOptions, open_session
from bip._client._discovery import TrackerAnnouncer
from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_codec import announce_query, parse_scrape_response
from bip_bencode import encode
from bip_handshake import PeerId
from bip_metainfo import create_torrent
from bip_utracker import (
    AnnounceEvent,
    AnnounceProgress,
    Announcer,
    LocalProtocolError,
    ScrapeStats,
    open_tracker_client,
)
from bip_utracker._announcer import _announces_paused

HASH = bytes(range(20))
OTHER = b"\xee" * 20
PEER_ID = PeerId(b"-BP0001-partialseed1")
DEADLINE = 10.0
SIZES = (40_001, 30_003)


def query(event: AnnounceEvent, *, paused: bool) -> str:
    return announce_query(
        info_hash=HASH,
        peer_id=bytes(PEER_ID),
        port=6881,
        uploaded=0,
        downloaded=0,
        left=5,
        event=event,
        num_want=-1,
        key=1,
        paused=paused,
    )


def event_of(text: str) -> str | None:
    fields = dict(part.partition("=")[::2] for part in text.split("&"))
    return fields.get("event")


@pytest.mark.parametrize(
    ("event", "paused", "sent"),
    [
        (AnnounceEvent.NONE, True, "paused"),
        (AnnounceEvent.NONE, False, None),
        # paused stands for none only: the tracker must hear the rest as it is.
        (AnnounceEvent.STARTED, True, "started"),
        (AnnounceEvent.COMPLETED, True, "completed"),
        (AnnounceEvent.STOPPED, True, "stopped"),
    ],
)
def test_the_query_says_paused_for_a_regular_announce(
    event: AnnounceEvent, paused: bool, sent: str | None
) -> None:
    assert event_of(query(event, paused=paused)) == sent


async def test_the_client_sends_paused_and_checks_it() -> None:
    with trio.fail_after(DEADLINE):
        async with http_server(reply(answer(interval=900))) as server:
            client = HttpTrackerClient()
            arguments = {"peer_id": PEER_ID, "port": 6881, "left": 5}
            await client.announce(server.url, HASH, paused=True, **arguments)  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError, match="paused is a bool"):
                await client.announce(server.url, HASH, paused=1, **arguments)  # type: ignore[arg-type]
    [request] = server.requests
    assert query_of(request)["event"] == b"paused"


class Target(SeedTarget):
    """A DiscoveryTarget of the test's making: checked, its selection complete, a piece of
    the torrent still missing (``left`` 5): a partial seed, no seed."""

    def __init__(self) -> None:
        super().__init__(HASH)
        self.seeded = trio.Event()  # never set: a piece is missing

    def transfer(self) -> tuple[int, int, int]:
        """Bytes uploaded, downloaded, and left: none moved, 5 left."""
        return (0, 0, 5)


async def test_the_engine_says_paused_to_http_trackers() -> None:
    target = Target()
    # A tracker asking for no wait at all: the floor, let down to 0.2 s, sets the pace.
    with trio.fail_after(DEADLINE):
        async with (
            http_server(reply(answer(interval=0))) as server,
            open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
        ):
            announcer = TrackerAnnouncer(
                udp,
                [server.url],
                peer_id=PEER_ID,
                http_client=HttpTrackerClient(),
                min_interval=0.2,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(announcer.run, target, NullSink())
                await until(lambda: any(s.announces == 2 for s in announcer.status()))
                [status] = announcer.status()
                nursery.cancel_scope.cancel()
    events = [query_of(request).get("event") for request in server.requests]
    assert events == [b"started", b"paused", b"stopped"]
    assert status.last_event is AnnounceEvent.NONE
    assert status.last_paused


ok = reply(answer(interval=0))
refused = reply(encode({"failure reason": "failed to provide valid client event"}))


async def chihaya(request: bytes, stream: trio.abc.Stream) -> None:
    """chihaya's HTTP frontend: an event it does not know is refused (its NewEvent knows
    none, started, stopped and completed only; bittorrent-tracker says "invalid event")."""
    handler = refused if query_of(request).get("event") == b"paused" else ok
    await handler(request, stream)


async def test_a_tracker_refusing_paused_keeps_the_partial_seed() -> None:
    client = HttpTrackerClient()
    with trio.fail_after(DEADLINE):
        async with http_server(chihaya) as server:
            announcer = Announcer(
                client,
                server.url,
                HASH,
                peer_id=PEER_ID,
                port=6881,
                progress=lambda: AnnounceProgress(left=5, partial_seed=True),
                min_interval=0.05,
                retry_delay=5,  # a backoff would hold the retry past the test's wait
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(announcer.run)
                await until(lambda: announcer.status.announces == 4)
                status = announcer.status
                nursery.cancel_scope.cancel()
    events = [query_of(request).get("event") for request in server.requests]
    # The refused paused, then none at once (not after the 5 s backoff), and none after.
    assert events == [b"started", b"paused", None, None, None, b"stopped"]
    assert status.failures == 0
    assert status.last_event is AnnounceEvent.NONE
    assert not status.last_paused


def test_the_http_client_opts_in_and_so_do_its_subclasses() -> None:
    class Logging(HttpTrackerClient):
        """A subclass whose announce forwards whatever it is given: still opted in."""

        async def announce(self, *args: Any, **kwargs: Any) -> Any:
            return await super().announce(*args, **kwargs)

    assert HttpTrackerClient.announces_paused is True
    assert _announces_paused(HttpTrackerClient())
    assert _announces_paused(Logging())


async def test_a_partial_download_announces_paused(tmp_path: Path) -> None:
    """End to end: one file of two downloaded, then the next regular announce says paused."""
    folder = write_content(tmp_path / "seed", SIZES)
    with trio.fail_after(DEADLINE):
        async with (
            http_server(reply(answer(interval=0))) as server,
            open_session(loopback_config()) as seeder,
            open_session(loopback_config(trackers=True, tracker_min_interval=0.2)) as leecher,
        ):
            # Hybrid: each file padded to a piece boundary, so file 0 shares no piece with
            # file 1, and what is left once it is here is file 1, exactly.
            torrent = create_torrent(
                folder,
                version="hybrid",
                piece_length=32768,
                creation_date=None,
                created_by=None,
                trackers=[server.url],
            )
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(
                    tmp_path / "down", peers=(address_of(seeder),), files=frozenset({0})
                ),
            )
            await download.wait_complete()
            assert download.transfer()[2] > 0  # no seed: the other file is missing
            await until(lambda: b"paused" in events_of(server.requests))
    events = events_of(server.requests)
    assert events[:2] == [b"started", b"started"]  # the v1 and the v2 swarm (BEP 52)
    assert b"completed" not in events  # a partial download is no snatch
    paused = [query_of(r) for r in server.requests if query_of(r).get("event") == b"paused"]
    assert {int(q["left"]) for q in paused} == {SIZES[1]}  # the file not selected


def events_of(requests: list[bytes]) -> list[bytes | None]:
    return [query_of(request).get("event") for request in requests]


# -- the scrape's downloaders --------------------------------------------------------------------


def scrape_body(entry: dict[str, Any]) -> bytes:
    return encode({"files": {HASH: entry}})


def test_downloaders_present_absent_and_malformed() -> None:
    counts = {"complete": 2, "downloaded": 7, "incomplete": 5}
    [stats, left_out] = parse_scrape_response(
        scrape_body({**counts, "downloaders": 3}), [HASH, OTHER]
    )
    assert stats == ScrapeStats(seeders=2, completed=7, leechers=5, downloaders=3)
    assert left_out == ScrapeStats(0, 0, 0)  # a swarm the answer leaves out: zeros, no count
    assert left_out.downloaders is None
    [absent] = parse_scrape_response(scrape_body(counts), [HASH])
    assert absent.downloaders is None
    # Not an integer: ignored, as if absent (an extension's count is never worth failing a
    # scrape); an integer out of range is clamped as the other counts are.
    for bad in (b"3", [3], {"n": 3}):
        [ignored] = parse_scrape_response(scrape_body({**counts, "downloaders": bad}), [HASH])
        assert ignored == ScrapeStats(2, 7, 5)
    [negative] = parse_scrape_response(scrape_body({**counts, "downloaders": -4}), [HASH])
    assert negative.downloaders == 0
    [huge] = parse_scrape_response(scrape_body({**counts, "downloaders": 2**70}), [HASH])
    assert huge.downloaders == 5  # clamped, then at most the leechers


def test_downloaders_are_at_most_the_leechers() -> None:
    # More downloaders than leechers (two counts taken at different times, or a lie): the
    # partial seeds, leechers - downloaders, must not go negative.
    entry = {"complete": 1, "downloaded": 0, "incomplete": 3, "downloaders": 9}
    [stats] = parse_scrape_response(scrape_body(entry), [HASH])
    assert stats == ScrapeStats(seeders=1, completed=0, leechers=3, downloaders=3)
    [none_left] = parse_scrape_response(scrape_body({"downloaders": 2}), [HASH])
    assert none_left.downloaders == 0  # no "incomplete": 0 leechers, so 0 downloaders


@settings(max_examples=50, deadline=None)
@given(
    counts=st.tuples(*(st.integers(0, 2**32 - 1) for _ in range(3))),
    downloaders=st.none() | st.integers(0, 2**32 - 1),
)
def test_a_scrape_answer_reads_back(counts: tuple[int, int, int], downloaders: int | None) -> None:
    seeders, completed, leechers = counts
    entry: dict[str, Any] = {
        "complete": seeders,
        "downloaded": completed,
        "incomplete": leechers,
    }
    if downloaders is not None:
        entry["downloaders"] = downloaders
    expected = ScrapeStats(
        seeders, completed, leechers, None if downloaders is None else min(downloaders, leechers)
    )
    assert parse_scrape_response(scrape_body(entry), [HASH]) == (expected,)


def test_bip_tracker_scrape_shows_downloaders(capsys: pytest.CaptureFixture[str]) -> None:
    body = encode(
        {"files": {HASH: {"complete": 1, "downloaded": 4, "incomplete": 3, "downloaders": 2}}}
    )
    with http_server_in_thread(reply(body)) as server:
        argv = ["tracker", "scrape", server.url, HASH.hex(), OTHER.hex(), "--bind", "127.0.0.1"]
        assert main(argv) == 0
        table = capsys.readouterr().out.splitlines()
        assert main([*argv, "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
    assert table[0].split() == ["info-hash", "seeders", "completed", "leechers", "downloaders"]
    assert table[1].split() == [HASH.hex(), "1", "4", "3", "2"]
    assert table[2].split() == [OTHER.hex(), "0", "0", "0", "-"]  # left out of the answer
    assert payload["swarms"] == [
        {"info_hash": HASH.hex(), "seeders": 1, "completed": 4, "leechers": 3, "downloaders": 2},
        # Left out of the answer: null, the key still there (the shape is the tracker's
        # whatever it counts).
        {
            "info_hash": OTHER.hex(),
            "seeders": 0,
            "completed": 0,
            "leechers": 0,
            "downloaders": None,
        },
    ]
