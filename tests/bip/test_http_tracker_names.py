"""Peers an HTTP tracker names by DNS name (BEP 3's non-compact ``ip``): kept by the parser,
resolved apart, a few at a time and each within a timeout, without holding up the numeric peers.

Every lookup goes to an in-process fake resolver (``trio.socket.set_custom_hostname_resolver``,
or a stand-in for ``trio.socket.getaddrinfo`` in the command-line test): nothing leaves loopback.
The ``.invalid`` names (RFC 2606) exist only in the fake.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from _discovery_target import SeedTarget
from _http_tracker_server import answer, http_server, http_server_in_thread, reply
from hypothesis import given
from hypothesis import strategies as st

from bip._cli import main
from bip._client._discovery import TrackerAnnouncer
from bip._client._http_tracker import (
    MAX_ADDRESSES_PER_NAME,
    PEER_NAME_LOOKUPS,
    PEER_NAME_OVERRUN,
    HttpTrackerClient,
    resolve_peer_names,
)
from bip._client._http_tracker_codec import MAX_PEER_NAMES, PeerName, parse_announce_response
from bip._client._http_tracker_errors import MalformedTrackerResponseError
from bip_handshake import PeerAddress, PeerId
from bip_utracker import LocalProtocolError, TrackerRejectedError, open_tracker_client

HASH = b"\x45" * 20
PEER_ID = PeerId(b"-BP0001-peernames001")
V1 = "ab" * 20

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


def v4(address: str, port: int) -> AddrInfo:
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))


def v6(address: str, port: int, scope: int = 0) -> AddrInfo:
    return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, scope))


def table(port: int) -> dict[str, list[AddrInfo] | None]:
    """What the fake resolver knows; None: it never answers."""
    return {
        "localhost": [v4("127.0.0.1", port), v6("::1", port)],
        "multi.invalid": [
            v4("127.0.0.1", port),
            v4("127.0.0.1", port),  # a duplicate
            v4("0.0.0.0", port),  # unspecified: never dialled
            v4("224.0.0.1", port),  # multicast
            v6("fe80::1", port, scope=2),  # link-local on one interface
            v6("::ffff:127.0.0.2", port),  # mapped: becomes IPv4
            v4("127.0.0.3", port),
            v4("127.0.0.4", port),
            v4("127.0.0.5", port),  # one more than a name keeps
        ],
        "zero.invalid": [v4("0.0.0.0", port)],
        "never.invalid": None,
    }


@dataclass
class FakeResolver(trio.abc.HostnameResolver):
    """Answers from :func:`table`, records each lookup and how many ran at once."""

    asked: list[str] = field(default_factory=list)
    running: int = 0
    most: int = 0
    delay: float = 0.1

    async def getaddrinfo(  # noqa: PLR0917 (trio's HostnameResolver signature)
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:  # trio's type of the entries is narrower than any table's
        assert isinstance(host, bytes)
        assert isinstance(port, int)
        name = host.decode()
        self.asked.append(name)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await trio.sleep(self.delay)
            infos = table(port).get(name, [])
            if infos is None:
                await trio.sleep_forever()
            if not infos:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return list(infos)
        finally:
            self.running -= 1

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        raise AssertionError("the peer resolver never asks for a name")


@pytest.fixture
async def resolver() -> FakeResolver:
    fake = FakeResolver()
    trio.socket.set_custom_hostname_resolver(fake)
    return fake


# -- the parser --------------------------------------------------------------------------------


def test_names_are_kept_apart_from_numeric_peers() -> None:
    peers = [
        {"ip": b"127.0.0.5", "port": 6000},
        {"ip": b"Peer.Example", "port": 6001},  # kept, in lower case
        {"ip": b"peer.example", "port": 6001},  # the same peer again
        {"ip": b"peer.example.", "port": 6002},
        {"ip": b"localhost", "port": 6003},
        {"ip": b"::1", "port": 6004},  # a numeric string stays numeric
    ]
    answer_ = parse_announce_response(answer(interval=60, peers=peers))
    assert [str(peer) for peer in answer_.peers] == ["127.0.0.5:6000", "[::1]:6004"]
    assert answer_.peer_names == (
        PeerName("peer.example", 6001),
        PeerName("peer.example.", 6002),
        PeerName("localhost", 6003),
    )


@pytest.mark.parametrize(
    "ip",
    [
        b"-peer.example",  # a label starts with a hyphen
        b"peer..example",  # an empty label
        b"peer_1.example",  # an underscore
        b"127.1",  # inet_aton's short form of 127.0.0.1
        b"0x7f.1",  # and its hex form
        b"peer.example.123",  # a numeric last label: read as an address
        b"1.2.3",
        b"caf\xc3\xa9.example",  # not ASCII
        b"a" * 64 + b".example",  # a label over 63
        b".".join([b"a" * 63] * 4),  # 255 characters
        b"",
        b"fe80::1%eth0",  # scoped
    ],
)
def test_what_is_not_a_name_is_dropped(ip: bytes) -> None:
    answer_ = parse_announce_response(answer(peers=[{"ip": ip, "port": 1}]))
    assert (answer_.peers, answer_.peer_names) == ((), ())


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("Peer.Example", 1),  # not in lower case
        ("127.0.0.1", 1),
        ("127.1", 1),
        ("-a.example", 1),
        ("", 1),
        (b"peer.example", 1),
        ("peer.example", 0),
        ("peer.example", 65536),
        ("peer.example", True),
    ],
)
def test_a_bad_peer_name_is_the_callers_error(host: Any, port: Any) -> None:
    with pytest.raises(LocalProtocolError):
        PeerName(host, port)


@pytest.mark.parametrize("port", [0, 65536, -1, b"1"])
def test_a_name_with_a_bad_port_is_dropped(port: object) -> None:
    answer_ = parse_announce_response(answer(peers=[{"ip": b"localhost", "port": port}]))
    assert answer_.peer_names == ()


def test_names_per_answer_are_bounded() -> None:
    peers = [{"ip": f"p{index}.invalid".encode(), "port": 1} for index in range(1000)]
    names = parse_announce_response(answer(peers=peers)).peer_names
    assert len(names) == MAX_PEER_NAMES
    assert names[0] == PeerName("p0.invalid", 1)


dict_peer = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.one_of(
            st.binary(max_size=70),
            st.from_regex(r"[a-zA-Z0-9.-]{1,40}", fullmatch=True).map(str.encode),
            st.sampled_from([b"localhost", b"127.0.0.1", b"::1", b"127.1"]),
            st.integers(),
        ),
        "port": st.one_of(st.integers(-5, 70_000), st.binary(max_size=3)),
    },
)


@given(st.lists(st.one_of(dict_peer, st.integers(), st.binary(max_size=8)), max_size=40))
def test_any_dictionary_peer_list_gives_checked_names(peers: list[object]) -> None:
    try:
        answer_ = parse_announce_response(answer(peers=peers))
    except (MalformedTrackerResponseError, TrackerRejectedError):
        return
    assert len(answer_.peer_names) <= MAX_PEER_NAMES
    assert len(set(answer_.peer_names)) == len(answer_.peer_names)
    for name in answer_.peer_names:
        assert 0 < name.port <= 0xFFFF
        assert name.host == name.host.lower()
        assert not name.host.rstrip(".").rpartition(".")[2].isdigit()


# -- the resolver ------------------------------------------------------------------------------


async def test_names_resolve_through_the_filters(
    resolver: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    found: dict[PeerName, tuple[PeerAddress, ...]] = {}
    names = [PeerName("localhost", 6881), PeerName("multi.invalid", 7000)]
    await resolve_peer_names(names, found.__setitem__)
    assert [str(peer) for peer in found[names[0]]] == ["127.0.0.1:6881", "[::1]:6881"]
    # Duplicates, unspecified, multicast and scoped addresses go; a mapped one becomes IPv4;
    # a name keeps a few at most.
    assert [str(peer) for peer in found[names[1]]] == [
        "127.0.0.1:7000",
        "127.0.0.2:7000",
        "127.0.0.3:7000",
        "127.0.0.4:7000",
    ]
    assert len(found[names[1]]) == MAX_ADDRESSES_PER_NAME


async def test_failures_are_dropped_at_debug(
    resolver: FakeResolver,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip.client")
    found: list[PeerName] = []
    names = [
        PeerName("never.invalid", 1),
        PeerName("unknown.invalid", 2),
        PeerName("zero.invalid", 3),
        PeerName("localhost", 4),
    ]
    start = trio.current_time()
    await resolve_peer_names(names, lambda name, _: found.append(name), timeout=3)
    # dropped at its timeout, the silent lookup keeps its place until its overrun ends
    assert trio.current_time() - start == pytest.approx(PEER_NAME_OVERRUN, abs=0.5)
    assert found == [PeerName("localhost", 4)]
    records = {record.getMessage(): record.levelno for record in caplog.records}
    assert records == {
        "peer never.invalid:1: not resolved within 3 s": logging.DEBUG,
        "peer unknown.invalid:2: cannot resolve it: [Errno -2] Name or service not known": (
            logging.DEBUG
        ),
        "peer zero.invalid:3: resolves to no address we would dial": logging.DEBUG,
    }


async def test_lookups_are_bounded(
    resolver: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    names = [PeerName(f"p{index}.invalid", 1) for index in range(MAX_PEER_NAMES + 10)]
    names.append(names[0])
    await resolve_peer_names(names, lambda name, addresses: None)
    assert resolver.most == PEER_NAME_LOOKUPS
    assert len(resolver.asked) == MAX_PEER_NAMES  # the first ones, each once
    limiter = trio.CapacityLimiter(1)
    resolver.most = 0
    await resolve_peer_names(names[:5], lambda name, addresses: None, limiter=limiter)
    assert resolver.most == 1


@pytest.mark.parametrize("timeout", [0, -1.0, True, "5"])
async def test_a_bad_timeout_is_the_callers_error(timeout: Any) -> None:
    with pytest.raises(LocalProtocolError, match="timeout"):
        await resolve_peer_names([], lambda name, addresses: None, timeout=timeout)


async def test_the_announce_returns_names_unresolved(resolver: FakeResolver) -> None:
    peers = [{"ip": b"127.0.0.5", "port": 6000}, {"ip": b"localhost", "port": 6001}]
    async with http_server(reply(answer(interval=60, peers=peers))) as server:
        result = await HttpTrackerClient().announce(server.url, HASH, peer_id=PEER_ID, port=1)
    assert [str(peer) for peer in result.peers] == ["127.0.0.5:6000"]
    assert result.peer_names == (PeerName("localhost", 6001),)
    assert resolver.asked == []  # the client itself looks nothing up


# -- the engine --------------------------------------------------------------------------------


@dataclass
class Sink:
    """Records each discovery with the time it came."""

    found: list[tuple[float, object, tuple[PeerAddress, ...], str]] = field(default_factory=list)

    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        self.found.append((trio.current_time(), info_hash, tuple(addresses), source))


async def test_a_silent_name_does_not_delay_the_numeric_peers(
    resolver: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    resolver.delay = 1.0
    peers = [
        {"ip": b"never.invalid", "port": 6000},
        {"ip": b"127.0.0.5", "port": 6001},
        {"ip": b"localhost", "port": 6002},
        {"ip": b"unknown.invalid", "port": 6003},
    ]
    sink = Sink()
    async with (
        http_server(reply(answer(interval=1800, peers=peers))) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        announcer = TrackerAnnouncer(
            udp, [server.url], peer_id=PEER_ID, http_client=HttpTrackerClient()
        )
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, SeedTarget(HASH), sink)
            await trio.sleep(60)
            nursery.cancel_scope.cancel()
    numeric, named = sink.found[0], sink.found[1:]
    assert numeric[2] == (PeerAddress.parse("127.0.0.5:6001"),)
    assert numeric[0] - start < 0.5  # at once, not after the lookups
    assert [(swarm, addresses, source) for _, swarm, addresses, source in named] == [
        (HASH, (PeerAddress.parse("127.0.0.1:6002"), PeerAddress.parse("[::1]:6002")), "tracker")
    ]
    assert named[0][0] - start == pytest.approx(1.0, abs=0.5)  # the fake's delay, no more
    assert sorted(resolver.asked) == ["localhost", "never.invalid", "unknown.invalid"]


async def test_names_of_each_answer_are_looked_up_again(
    resolver: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    peers = [{"ip": b"localhost", "port": 6002}]
    sink = Sink()
    async with (
        http_server(reply(answer(interval=100, peers=peers))) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        # The tracker's 100 s is under the default floor (300 s): lowered to follow it.
        announcer = TrackerAnnouncer(
            udp, [server.url], peer_id=PEER_ID, http_client=HttpTrackerClient(), min_interval=100
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, SeedTarget(HASH), sink)
            await trio.sleep(250)
            nursery.cancel_scope.cancel()
    # Three answers before the stop (at 0, 100 and 200 s); the stopped answer's names are
    # not looked up, as its numeric peers are not dialled.
    assert resolver.asked == ["localhost"] * 3
    assert len(sink.found) == 3


# -- bip tracker announce ----------------------------------------------------------------------


@pytest.fixture
def named_tracker() -> Iterator[str]:
    peers = [
        {"ip": b"127.0.0.5", "port": 6001},
        {"ip": b"localhost", "port": 6002},
        {"ip": b"unknown.invalid", "port": 6003},
    ]
    with http_server_in_thread(reply(answer(interval=1800, peers=peers))) as server:
        yield server.url


@pytest.fixture
def fake_getaddrinfo(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The command runs its own trio run: trio.socket.getaddrinfo itself is replaced, for
    the names of :func:`table` (others go to the real one: numeric addresses only here)."""
    asked: list[str] = []
    real = trio.socket.getaddrinfo

    async def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        known = table(port)
        if name not in known and name != "unknown.invalid":
            return await real(host, port, *args, **kwargs)
        asked.append(name)
        await trio.lowlevel.checkpoint()
        infos = known.get(name)
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return infos

    monkeypatch.setattr(trio.socket, "getaddrinfo", fake)
    return asked


def test_bip_tracker_lists_named_peers(
    named_tracker: str, fake_getaddrinfo: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tracker", "announce", named_tracker, V1, "--bind", "127.0.0.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.endswith(
        "peers (3):\n"
        "  127.0.0.5:6001\n"
        "  127.0.0.1:6002 (localhost)\n"
        "  [::1]:6002 (localhost)\n"
        "not resolved (1): unknown.invalid:6003\n"
    )
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["peers"] == ["127.0.0.5:6001", "127.0.0.1:6002", "[::1]:6002"]
    assert payload["named_peers"] == [
        {"name": "localhost:6002", "addresses": ["127.0.0.1:6002", "[::1]:6002"]},
        {"name": "unknown.invalid:6003", "addresses": []},
    ]
    assert sorted(fake_getaddrinfo) == ["localhost"] * 2 + ["unknown.invalid"] * 2
