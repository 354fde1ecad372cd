"""BEP 7 in the engine: a torrent is announced to each tracker once per address family the
session reaches trackers in, each announce to the tracker's address of that family, from ours.

The hunt's dual_announce.py and dual_announce_http.py: a session on 127.0.0.1 and ::1, one
tracker name resolving to both, was announced once, to the family the resolver listed first
(IPv6 first, RFC 6724): IPv4-only peers never found a dual-stack user through that tracker.
:class:`TrackerAnnouncer` now runs one announcer per tracker, swarm and family (the families
of the UDP tracker client's sockets, which the session binds from its listen addresses), each
with its own state, as libtorrent's ``announce_endpoint`` per listen socket; a family the
tracker's name has no address of fails alone (shown per family in the status, logged as the
tracker's failure only when every family fails). One family announces as before.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from _discovery_target import NullSink, SeedTarget
from _engine_helpers import loopback_config
from _http_tracker_server import Server, answer, http_server, reply
from tests._resolvers import FixedResolver, has_ipv6_loopback

from bip._client import TorrentOptions, _session, open_session
from bip._client._discovery import TrackerAnnouncer
from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_errors import HttpTrackerError
from bip_handshake import PeerId
from bip_metainfo import Metainfo, create_torrent
from bip_utracker import AnnouncerStatus, SwarmStore, open_tracker_client, serve_tracker

HASH = b"\x6b" * 20
PEER_ID = PeerId(b"-BP0001-perfamily001")
DEADLINE = 10.0
NAME = "tracker.dual.test"

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")


async def _announce_until(announcer: TrackerAnnouncer, done: object) -> None:
    """Run ``announcer`` for a seed of ``HASH`` until ``done()`` holds (polled), then stop."""
    assert callable(done)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run, SeedTarget(HASH), NullSink())
        while not done():
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


def _by_family(statuses: tuple[AnnouncerStatus, ...]) -> dict[int | None, AnnouncerStatus]:
    return {status.family: status for status in statuses}


@needs_ipv6
@pytest.mark.parametrize("v6_first", [False, True], ids=["v4-first", "v6-first"])
async def test_udp_tracker_hears_each_family(v6_first: bool) -> None:
    """dual_announce.py: the tracker of each family hears us, from our address of it."""
    stores = {4: SwarmStore(rng=random.Random(1)), 6: SwarmStore(rng=random.Random(2))}
    with trio.fail_after(DEADLINE):
        async with serve_tracker(("127.0.0.1", 0), handler=stores[4]) as udp4:
            port = udp4.address[1]
            async with (
                serve_tracker(("::1", port), handler=stores[6]),
                open_tracker_client(bind_v4="127.0.0.1", bind_v6="::1") as client,
            ):
                answers = [("127.0.0.1", port), ("::1", port)]
                if v6_first:
                    answers.reverse()
                trio.socket.set_custom_hostname_resolver(FixedResolver({NAME: answers}))
                announcer = TrackerAnnouncer(
                    client, [f"udp://{NAME}:{port}/announce"], peer_id=PEER_ID
                )
                seen: dict[int, list[str]] = {}

                def heard() -> bool:
                    # Looked at while we are in the swarms: "stopped" takes us out. And each
                    # answer heard: a tracker lists us before its answer reaches us.
                    seen.update({f: [str(p) for p in s.peers(HASH)] for f, s in stores.items()})
                    statuses = announcer.status()
                    return all(seen.values()) and all(s.announces for s in statuses)

                await _announce_until(announcer, heard)
    assert seen == {4: ["127.0.0.1:6881"], 6: ["[::1]:6881"]}
    statuses = _by_family(announcer.status())
    assert sorted(statuses, key=str) == [4, 6]
    for family, status in statuses.items():
        assert status.last_result is not None
        assert status.last_result.tracker.family == family


@asynccontextmanager
async def _http_tracker(host: str) -> AsyncIterator[tuple[Server, list[str]]]:
    """An HTTP tracker on ``host`` answering every announce with no peers; the address each
    request came from, in order."""
    seen: list[str] = []
    respond = reply(answer(interval=1800, peers=b""))

    async def handle(request: bytes, stream: trio.abc.Stream) -> None:
        assert isinstance(stream, trio.SocketStream)
        seen.append(str(stream.socket.getpeername()[0]))
        await respond(request, stream)

    async with http_server(handle, host=host) as server:
        yield server, seen


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1].partition("/")[0])


@needs_ipv6
@pytest.mark.parametrize("v6_first", [False, True], ids=["v4-first", "v6-first"])
async def test_http_tracker_hears_each_family(v6_first: bool) -> None:
    """dual_announce_http.py: the HTTP tracker of each family hears us, from our address of
    it; each family's state is its own."""
    with trio.fail_after(DEADLINE):
        async with (
            _http_tracker("127.0.0.1") as (http4, seen4),
            _http_tracker("::1") as (http6, seen6),
            open_tracker_client(bind_v4="127.0.0.1", bind_v6="::1") as client,
            HttpTrackerClient(local_address=("127.0.0.1", "::1")) as http_client,
        ):
            answers = [("127.0.0.1", _port(http4)), ("::1", _port(http6))]
            if v6_first:
                answers.reverse()
            trio.socket.set_custom_hostname_resolver(FixedResolver({NAME: answers}))
            announcer = TrackerAnnouncer(
                client,
                [f"http://{NAME}:{_port(http4)}/announce"],
                peer_id=PEER_ID,
                http_client=http_client,
            )
            await _announce_until(
                announcer,
                lambda: (
                    len(announcer.status()) == 2 and all(s.announces for s in announcer.status())
                ),
            )
    assert seen4[:1] == ["127.0.0.1"]
    assert seen6[:1] == ["::1"]
    statuses = _by_family(announcer.status())
    assert sorted(statuses, key=str) == [4, 6]
    assert all(status.last_error is None for status in statuses.values())


async def test_a_family_the_name_lacks_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    """A name with IPv4 addresses only: the IPv6 announcer fails (its status says so), the
    IPv4 one works, and the tracker is not logged as failing (DEBUG, not INFO)."""
    caplog.set_level(logging.DEBUG, "bip.client")
    with trio.fail_after(DEADLINE):
        async with (
            _http_tracker("127.0.0.1") as (http4, seen4),
            open_tracker_client(bind_v4="127.0.0.1", bind_v6="::1") as client,
            HttpTrackerClient(local_address=("127.0.0.1", "::1")) as http_client,
        ):
            if len(client.local_addresses) < 2:
                pytest.skip("no IPv6 loopback here")
            trio.socket.set_custom_hostname_resolver(
                FixedResolver({NAME: [("127.0.0.1", _port(http4))]})
            )
            announcer = TrackerAnnouncer(
                client,
                [f"http://{NAME}:{_port(http4)}/announce"],
                peer_id=PEER_ID,
                http_client=http_client,
            )

            def settled() -> bool:
                statuses = _by_family(announcer.status())
                return bool(statuses) and statuses[4].announces > 0 and statuses[6].failures > 0

            await _announce_until(announcer, settled)
    statuses = _by_family(announcer.status())
    assert isinstance(statuses[6].last_error, HttpTrackerError)
    assert statuses[4].last_error is None
    assert set(seen4) == {"127.0.0.1"}
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failed
    assert all(record.levelno == logging.DEBUG for record in failed)


async def test_every_family_failing_is_the_tracker_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A name that resolves to nothing fails in both families: logged at INFO once both
    failed, with each family's reason."""
    caplog.set_level(logging.INFO, "bip.client")
    with trio.fail_after(DEADLINE):
        async with open_tracker_client(bind_v4="127.0.0.1", bind_v6="::1") as client:
            if len(client.local_addresses) < 2:
                pytest.skip("no IPv6 loopback here")
            trio.socket.set_custom_hostname_resolver(FixedResolver({}))
            announcer = TrackerAnnouncer(client, [f"udp://{NAME}:6969"], peer_id=PEER_ID)
            await _announce_until(
                announcer,
                lambda: (
                    len(announcer.status()) == 2 and all(s.failures for s in announcer.status())
                ),
            )
    [record] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert "IPv4: " in record.getMessage()
    assert "IPv6: " in record.getMessage()


async def test_one_family_announces_as_before() -> None:
    """A client with one family's socket: one announcer per tracker and swarm, no family."""
    with trio.fail_after(DEADLINE):
        async with (
            serve_tracker(("127.0.0.1", 0)) as udp4,
            open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as client,
        ):
            host, port = udp4.address
            announcer = TrackerAnnouncer(client, [f"udp://{host}:{port}"], peer_id=PEER_ID)
            await _announce_until(announcer, lambda: any(s.announces for s in announcer.status()))
    [status] = announcer.status()
    assert status.family is None
    assert status.last_error is None


def test_families_are_checked() -> None:
    """``families`` names IP versions 4 and 6 only."""
    with pytest.raises(ValueError, match="famil"):
        TrackerAnnouncer(None, [], peer_id=PEER_ID, families=(4, 5))  # type: ignore[arg-type]


@needs_ipv6
async def test_one_listen_family_announces_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review r7 p1: a session listening in IPv4 alone whose tracker client has a socket of
    each family (``--bind 0.0.0.0`` binds ``0.0.0.0`` and ``::``: here their loopbacks) was
    announced to a name's first address, IPv6, and the tracker listed our IPv6 address, where
    nothing listens. It announces in the family it listens in (through the session's wiring)."""
    monkeypatch.setattr(_session, "_tracker_binds", lambda config: ("127.0.0.1", "::1"))
    stores = {4: SwarmStore(rng=random.Random(1)), 6: SwarmStore(rng=random.Random(2))}
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"x" * 20000)
    with trio.fail_after(DEADLINE):
        async with serve_tracker(("127.0.0.1", 0), handler=stores[4]) as udp4:
            port = udp4.address[1]
            async with serve_tracker(("::1", port), handler=stores[6]):
                trio.socket.set_custom_hostname_resolver(
                    FixedResolver({NAME: [("::1", port), ("127.0.0.1", port)]})
                )
                torrent = Metainfo.from_bytes(
                    create_torrent(
                        folder, version="v1", piece_length=16384, creation_date=None,
                        created_by=None, trackers=[f"udp://{NAME}:{port}/announce"],
                    ).to_bytes()
                )  # fmt: skip
                async with open_session(loopback_config(trackers=True)) as session:
                    added = await session.add_torrent(torrent, TorrentOptions(tmp_path))
                    swarm = bytes(torrent.info.info_hash.best)
                    [announcer] = [s for s in added._sources if isinstance(s, TrackerAnnouncer)]
                    while not any(status.announces for status in announcer.status()):
                        await trio.sleep(0.01)
                    listed = {f: [str(p) for p in s.peers(swarm)] for f, s in stores.items()}
    assert listed[6] == []
    assert len(listed[4]) == 1
    assert [status.family for status in announcer.status()] == [None]


async def test_no_announcer_in_a_family_the_client_cannot_reach() -> None:
    """review r7 p2: listening in both families with trackers reached from one IPv4 address
    (``tracker_bind``), an IPv6 announcer per tracker failed for ever; and a tracker URL of
    an IP literal had an announcer of the other family failing for ever. Announce only in
    the families the tracker client can use, an IP literal in its own."""
    with trio.fail_after(DEADLINE):
        async with (
            serve_tracker(("127.0.0.1", 0)) as udp4,
            open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as client,
            HttpTrackerClient(local_address="127.0.0.1") as http_client,
        ):
            port = udp4.address[1]
            trio.socket.set_custom_hostname_resolver(FixedResolver({NAME: ["127.0.0.1"]}))
            announcer = TrackerAnnouncer(
                client,
                [f"udp://{NAME}:{port}", f"http://{NAME}:1/announce"],
                peer_id=PEER_ID,
                http_client=http_client,
                families=(4, 6),
            )
            assert announcer._families_of(f"udp://{NAME}:{port}") == (None,)
            assert announcer._families_of(f"http://{NAME}:1/announce") == (None,)
            await _announce_until(announcer, lambda: any(s.announces for s in announcer.status()))
    assert [status.family for status in announcer.status()] == [None, None]


@needs_ipv6
async def test_an_ip_literal_tracker_gets_its_own_family_only() -> None:
    """review r7 p2: ``udp://127.0.0.1/...`` in a session of both families got an IPv6
    announcer that could never reach it; ``http://[::1]/`` an IPv4 one."""
    with trio.fail_after(DEADLINE):
        async with (
            serve_tracker(("127.0.0.1", 0)) as udp4,
            open_tracker_client(bind_v4="127.0.0.1", bind_v6="::1") as client,
            HttpTrackerClient(local_address=("127.0.0.1", "::1")) as http_client,
        ):
            host, port = udp4.address
            announcer = TrackerAnnouncer(
                client, [f"udp://{host}:{port}"], peer_id=PEER_ID, http_client=http_client
            )
            assert announcer._families_of("http://[::1]:1/announce") == (6,)
            assert announcer._families_of(f"udp://{NAME}:1") == (4, 6)
            await _announce_until(announcer, lambda: any(s.announces for s in announcer.status()))
    [status] = announcer.status()
    assert status.family == 4
    assert status.last_error is None
