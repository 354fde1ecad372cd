"""BEP 7: an announce for each address family we listen on, each to the tracker's address of
that family, from our socket of that family.

A tracker name resolving to both families was announced to once, at the first address of a
family we had a socket for (resolvers list IPv6 first, RFC 6724): IPv4-only peers never heard
of a dual-stack client. :meth:`TrackerClient.announce` and :class:`Announcer` now take a
``family`` that restricts the tracker to its addresses of that family (as libtorrent's
``announce_endpoint``, one per listen socket, each with its own state); without one they
announce as before.
"""

from __future__ import annotations

import random

import pytest
import trio
from tests._resolvers import FixedResolver, has_ipv6_loopback

from bip_handshake import PeerAddress
from bip_utracker import (
    AnnounceClient,
    AnnounceEvent,
    AnnounceProgress,
    Announcer,
    AnnounceResult,
    LocalProtocolError,
    SwarmStore,
    TrackerError,
    open_tracker_client,
    serve_tracker,
)
from bip_utracker._server_core import ServerConfig

HASH = b"\x5a" * 20
PEER_ID = b"-BP0001-familyannce1"
DEADLINE = 10.0
NAME = "tracker.dual.test"

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")


def _progress() -> AnnounceProgress:
    return AnnounceProgress(left=1)


@needs_ipv6
@pytest.mark.parametrize("v6_first", [False, True], ids=["v4-first", "v6-first"])
async def test_announcer_of_each_family_reaches_the_tracker_of_its_family(
    v6_first: bool,
) -> None:
    """The hunt's dual_announce.py, in bip_utracker: one announcer per family, each heard by
    the tracker of its family, whichever family the resolver lists first."""
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
                url = f"udp://{NAME}:{port}/announce"
                announcers = {
                    family: Announcer(
                        client, url, HASH, peer_id=PEER_ID, port=6881, progress=_progress,
                        family=family, stopped_timeout=0,
                    )
                    for family in (4, 6)
                }  # fmt: skip
                async with trio.open_nursery() as nursery:
                    for announcer in announcers.values():
                        nursery.start_soon(announcer.run)
                    while not all(a.status.announces for a in announcers.values()):
                        await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()
    seen = {family: [str(p.host) for p in store.peers(HASH)] for family, store in stores.items()}
    assert seen == {4: ["127.0.0.1"], 6: ["::1"]}
    for family, announcer in announcers.items():
        status = announcer.status
        assert status.family == family
        assert status.last_event is AnnounceEvent.STARTED
        assert status.last_result is not None
        assert status.last_result.tracker.family == family


@needs_ipv6
async def test_client_announce_family_restricts_the_lookup() -> None:
    """``TrackerClient.announce(family=4)`` goes to the IPv4 address of a name resolving IPv6
    first; without ``family``, to the first (as before); ``family=6`` of a name without an IPv6
    address, or of an IPv4 literal, is a failing tracker (``TrackerError``), never sent."""
    config = ServerConfig(rate_limit=None)
    with trio.fail_after(DEADLINE):
        async with serve_tracker(("127.0.0.1", 0), config=config) as udp4:
            port = udp4.address[1]
            async with (
                serve_tracker(("::1", port), config=config) as udp6,
                open_tracker_client(bind_v4="127.0.0.1", bind_v6="::1") as client,
            ):
                resolver = FixedResolver(
                    {NAME: [("::1", port), ("127.0.0.1", port)], "v4only.test": ["127.0.0.1"]}
                )
                trio.socket.set_custom_hostname_resolver(resolver)
                url = f"udp://{NAME}:{port}/announce"
                to4 = await client.announce(url, HASH, peer_id=PEER_ID, port=1, family=4)
                assert to4.tracker == PeerAddress.parse(f"127.0.0.1:{port}")
                first = await client.announce(url, HASH, peer_id=PEER_ID, port=1)
                assert first.tracker.family == 6  # no family: the first address, as before
                with pytest.raises(TrackerError, match="IPv6") as caught:
                    await client.announce(
                        f"udp://v4only.test:{port}", HASH, peer_id=PEER_ID, port=1, family=6
                    )
                assert not isinstance(caught.value, LocalProtocolError)
                with pytest.raises(TrackerError, match="IPv6"):
                    await client.announce(
                        ("127.0.0.1", port), HASH, peer_id=PEER_ID, port=1, family=6
                    )
                with pytest.raises(TrackerError, match="IPv4"):
                    await client.announce(
                        PeerAddress.parse(f"[::1]:{port}"), HASH, peer_id=PEER_ID, port=1, family=4
                    )
            assert udp6.statistics().announces == 1
        assert udp4.statistics().announces == 1


async def test_family_of_a_name_without_it_fails_in_that_family_alone() -> None:
    """An announcer for IPv6 of a name with IPv4 addresses only fails (its status says so,
    with its family), retried with backoff; the IPv4 announcer's works."""
    with trio.fail_after(DEADLINE):
        async with (
            serve_tracker(("127.0.0.1", 0)) as udp4,
            open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as client,
        ):
            port = udp4.address[1]
            trio.socket.set_custom_hostname_resolver(FixedResolver({NAME: ["127.0.0.1"]}))
            url = f"udp://{NAME}:{port}/announce"
            by_family = {
                family: Announcer(
                    client, url, HASH, peer_id=PEER_ID, port=6881, progress=_progress,
                    family=family, stopped_timeout=0,
                )
                for family in (4, 6)
            }  # fmt: skip
            async with trio.open_nursery() as nursery:
                for announcer in by_family.values():
                    nursery.start_soon(announcer.run)
                while not (by_family[4].status.announces and by_family[6].status.failures):
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    failed = by_family[6].status
    assert failed.family == 6
    assert isinstance(failed.last_error, TrackerError)
    assert not isinstance(failed.last_error, LocalProtocolError)
    assert failed.next_announce is None  # not running any more; it was retrying
    assert by_family[4].status.last_error is None


def test_bad_family_is_refused() -> None:
    """A family other than 4, 6 or None is the caller's mistake, told at once."""

    class Client:
        def check_tracker(self, tracker: str) -> None:
            pass

        async def announce(self, tracker: str, *args: object, **kwargs: object) -> AnnounceResult:
            raise AssertionError("never called")

    client = Client()
    assert isinstance(client, AnnounceClient)
    for family in (5, "4", True):
        with pytest.raises(LocalProtocolError, match="family"):
            Announcer(
                client, "http://t.test/announce", HASH, peer_id=PEER_ID, port=1,
                progress=_progress, family=family,  # type: ignore[arg-type]
            )  # fmt: skip
    # A client that did not opt in to announcing per family cannot be given one.
    with pytest.raises(LocalProtocolError, match="family"):
        Announcer(
            client, "http://t.test/announce", HASH, peer_id=PEER_ID, port=1,
            progress=_progress, family=4,
        )  # fmt: skip
    assert (
        Announcer(
            client, "http://t.test/announce", HASH, peer_id=PEER_ID, port=1, progress=_progress
        ).status.family
        is None
    )


class FamilyClient:
    """An AnnounceClient that opted in to ``family``: records what it was given."""

    announces_family = True

    def __init__(self) -> None:
        self.families: list[int | None] = []

    def check_tracker(self, tracker: str) -> None:
        pass

    async def announce(
        self, tracker: str, *args: object, family: int | None = None, **kwargs: object
    ) -> AnnounceResult:
        self.families.append(family)
        await trio.lowlevel.checkpoint()
        raise TrackerError("no tracker here")


async def test_family_goes_to_a_client_that_opted_in() -> None:
    """An AnnounceClient with ``announces_family`` is passed the announcer's family."""
    client = FamilyClient()
    announcer = Announcer(
        client, "http://t.test/announce", HASH, peer_id=PEER_ID, port=1, progress=_progress,
        family=6, stopped_timeout=0,
    )  # fmt: skip
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run)
            while not announcer.status.failures:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert client.families == [6]


@needs_ipv6
async def test_preferred_family_first_the_other_only_when_none() -> None:
    """review r7 p1: a session listening in IPv4 alone (a client with sockets of both
    families) announced to a name's first address, IPv6, and the tracker listed our IPv6
    address, where nothing listens. ``prefer_family`` takes the name's address of that family
    first (an :class:`Announcer`'s too), the other family's only when it has none."""
    config = ServerConfig(rate_limit=None)
    with trio.fail_after(DEADLINE):
        async with serve_tracker(("127.0.0.1", 0), config=config) as udp4:
            port = udp4.address[1]
            async with (
                serve_tracker(("::1", port), config=config) as udp6,
                open_tracker_client(bind_v4="127.0.0.1", bind_v6="::1") as client,
            ):
                resolver = FixedResolver(
                    {NAME: [("::1", port), ("127.0.0.1", port)], "v6only.test": ["::1"]}
                )
                trio.socket.set_custom_hostname_resolver(resolver)
                url = f"udp://{NAME}:{port}/announce"
                to4 = await client.announce(url, HASH, peer_id=PEER_ID, port=1, prefer_family=4)
                assert to4.tracker == PeerAddress.parse(f"127.0.0.1:{port}")
                fallback = await client.announce(
                    f"udp://v6only.test:{port}", HASH, peer_id=PEER_ID, port=1, prefer_family=4
                )
                assert fallback.tracker == PeerAddress.parse(f"[::1]:{port}")
                announcer = Announcer(
                    client, url, HASH, peer_id=PEER_ID, port=1, progress=_progress,
                    prefer_family=4, stopped_timeout=0,
                )  # fmt: skip
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(announcer.run)
                    while not announcer.status.announces:
                        await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()
                result = announcer.status.last_result
                assert result is not None
                assert result.tracker.family == 4
                assert announcer.status.family is None  # one announcer, whatever the family
                with pytest.raises(LocalProtocolError, match="family"):
                    await client.announce(
                        url, HASH, peer_id=PEER_ID, port=1, prefer_family=5,  # type: ignore[arg-type]
                    )  # fmt: skip
            assert udp6.statistics().announces == 1
        assert udp4.statistics().announces == 2
