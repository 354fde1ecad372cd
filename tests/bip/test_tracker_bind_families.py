"""A session listening on an address of each family (``--bind 127.0.0.2 --bind ::1``, as a VPN
with both) reaches its trackers from the address of the family it reaches them in: the UDP
tracker client has a socket on each (before, only the first listen host's: an IPv6-only
tracker was out of reach when the IPv4 address was listed first), and the HTTP clients
(trackers, web seeds) connect from the one of the family of the address they connect to
(before, from the first listen host whatever the family: an IPv6 connection from an IPv4
address fails). One listen host gives what it always gave: one specific address opens no
socket of the other family, and HTTP connects in its family only.

Loopback only: 127.0.0.2 is seen as itself by a listener on 127.0.0.1 (the system would pick
127.0.0.1); ``::1`` is the one IPv6 loopback address, so an IPv6 source is ::1 either way (that
an IPv6 connect is bound to the configured address is proved for the peers' dialer in
tests/bip_handshake/test_dialer_local_families.py, whose rule the HTTP connect follows)."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_address
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config
from _http_file_server import self_signed
from _http_tracker_server import answer, http_server, request_target
from tests._loopbacks import OTHER_LOOPBACK, require_loopbacks
from tests._resolvers import FixedResolver

from bip._client import ClientConfig, open_session
from bip._client._http_exchange import local_sources
from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_codec import parse_http_tracker_url
from bip._client._http_tracker_errors import HttpTrackerError
from bip._client._session import _http_local_address, _tracker_binds
from bip._client._webseed_http import WebSeedClient
from bip_handshake import PeerId
from bip_utracker import LocalProtocolError, SwarmStore, serve_tracker

DEADLINE = 10.0
HASH = bytes(range(20))
CONTENT = b"0123456789"


def _before(config: ClientConfig) -> tuple[str | None, str | None]:
    """``_tracker_binds`` as it was (7b17926): the first listen host alone."""
    host = config.tracker_bind
    if host is None and config.listen:
        host = config.listen[0][0]
    try:
        address = None if host is None else ip_address(host)
    except ValueError:
        address = None
    if address is None or address.is_unspecified:
        return "0.0.0.0", "::"
    return (host, None) if address.version == 4 else (None, host)


# -- which addresses (sans-IO) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "binds", "http"),
    [
        ((), ("0.0.0.0", "::"), None),
        (("0.0.0.0",), ("0.0.0.0", "::"), None),
        (("::",), ("0.0.0.0", "::"), None),
        (("localhost",), ("0.0.0.0", "::"), None),
        (("10.8.0.2",), ("10.8.0.2", None), ("10.8.0.2",)),
        (("fd00::2",), (None, "fd00::2"), ("fd00::2",)),
        (("10.8.0.2", "fd00::2"), ("10.8.0.2", "fd00::2"), ("10.8.0.2", "fd00::2")),
        (("fd00::2", "10.8.0.2"), ("10.8.0.2", "fd00::2"), ("10.8.0.2", "fd00::2")),
        (
            ("fd00::2", "10.8.0.2", "10.8.0.3", "fd00::3"),
            ("10.8.0.2", "fd00::2"),
            ("10.8.0.2", "fd00::2"),
        ),
        (("10.8.0.2", "10.8.0.3"), ("10.8.0.2", None), ("10.8.0.2",)),
        (("0.0.0.0", "fd00::2"), ("0.0.0.0", "fd00::2"), ("0.0.0.0", "fd00::2")),
        (("10.8.0.2", "::"), ("10.8.0.2", "::"), ("10.8.0.2", "::")),
        (("0.0.0.0", "::"), ("0.0.0.0", "::"), None),
        (("0.0.0.0", "10.8.0.2"), ("0.0.0.0", "::"), None),
        # A name first: the system picks, as with that name alone (before: ('10.8.0.2', None)).
        (("myhost.lan", "10.8.0.2"), ("0.0.0.0", "::"), None),
        (("myhost.lan", "fd00::2", "10.8.0.2"), ("0.0.0.0", "::"), None),
        # A name later is passed over.
        (("10.8.0.2", "myhost.lan"), ("10.8.0.2", None), ("10.8.0.2",)),
    ],
)
def test_tracker_sources_of_the_listen_hosts(
    hosts: tuple[str, ...],
    binds: tuple[str | None, str | None],
    http: tuple[str, ...] | None,
) -> None:
    config = ClientConfig(listen=tuple((host, 0) for host in hosts))
    assert _tracker_binds(config) == binds
    assert _http_local_address(config) == http
    if len(hosts) <= 1 or hosts[0] == "myhost.lan":  # one host (or a name first): as always
        assert _tracker_binds(config) == _before(config)


@pytest.mark.parametrize(
    ("tracker_bind", "binds"),
    [("10.8.0.5", ("10.8.0.5", None)), ("fd00::5", (None, "fd00::5")), ("::", ("0.0.0.0", "::"))],
)
def test_tracker_bind_alone_still_decides(
    tracker_bind: str, binds: tuple[str | None, str | None]
) -> None:
    config = ClientConfig(listen=(("10.8.0.2", 0), ("fd00::2", 0)), tracker_bind=tracker_bind)
    assert _tracker_binds(config) == binds == _before(config)


def test_local_sources_and_the_clients_checks() -> None:
    assert local_sources(None) is None
    assert local_sources("10.8.0.2") == {4: "10.8.0.2"}
    assert local_sources(["::", "10.8.0.2", "0.0.0.0"]) == {6: None, 4: "10.8.0.2"}
    # An empty sequence too: every connect would fail ("we connect over  only").
    bads: tuple[object, ...] = ("localhost", ("10.8.0.2", "vpn.example"), b"10.8.0.2", 3, (), [])
    for bad in bads:
        with pytest.raises(ValueError, match="local_address must be an IP address"):
            local_sources(bad)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="local_address must be an IP address"):
            HttpTrackerClient(local_address=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="local_address must be an IP address"):
            WebSeedClient(local_address=bad)  # type: ignore[arg-type]


# -- on loopback ---------------------------------------------------------------------------


async def respond(request: bytes, stream: trio.abc.Stream) -> None:
    """Answer an HTTP request: a tracker's at ``/announce`` (no peers), ``CONTENT`` at any
    other path (a web seed's file)."""
    tracker = request_target(request).startswith("/announce")
    body = answer(interval=1800, peers=b"") if tracker else CONTENT
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


@asynccontextmanager
async def http_host(host: str) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server on ``host``: a tracker at ``/announce`` (no peers), ``CONTENT`` at any
    other path (a web seed's file); its base URL and the host of each client, in order."""
    seen: list[str] = []

    async def handle(request: bytes, stream: trio.abc.Stream) -> None:
        assert isinstance(stream, trio.SocketStream)
        seen.append(str(stream.socket.getpeername()[0]))
        await respond(request, stream)

    async with http_server(handle, host=host, path="/") as server:
        yield server.url.removesuffix("/"), seen


async def announce_http(client: HttpTrackerClient, url: str) -> None:
    await client.announce(f"{url}/announce", HASH, peer_id=PeerId.generate(), port=6881, left=1)


async def fetch(client: WebSeedClient, url: str) -> bytes:
    return await client.fetch(parse_http_tracker_url(f"{url}/file.bin"), 0, len(CONTENT))


@pytest.mark.parametrize("reverse", [False, True], ids=["v4-first", "v6-first"])
async def test_trackers_and_web_seeds_of_each_family_see_its_address(reverse: bool) -> None:
    require_loopbacks(OTHER_LOOPBACK, "::1")
    hosts = ("::1", OTHER_LOOPBACK) if reverse else (OTHER_LOOPBACK, "::1")
    config = loopback_config(listen=tuple((host, 0) for host in hosts), trackers=True)
    stores = {4: SwarmStore(rng=random.Random(1)), 6: SwarmStore(rng=random.Random(2))}
    with trio.fail_after(DEADLINE):
        async with (
            serve_tracker(("127.0.0.1", 0), handler=stores[4]) as udp4,
            serve_tracker(("::1", 0), handler=stores[6]) as udp6,
            http_host("127.0.0.1") as (http4, seen4),
            http_host("::1") as (http6, seen6),
            open_session(config) as session,
        ):
            trackers, http = session.trackers, session.http_trackers
            assert trackers is not None
            assert http is not None
            assert sorted(str(a.host) for a in trackers.local_addresses) == [OTHER_LOOPBACK, "::1"]
            for udp in (udp4, udp6):
                host, port = udp.address[:2]
                result = await trackers.announce((host, port), HASH, peer_id=b"p" * 20, port=7)
                assert result.tracker.port == port  # answered
            for url in (http4, http6):
                await announce_http(http, url)
                assert await fetch(session.web_seed_client, url) == CONTENT
    assert [str(peer.host) for peer in stores[4].peers(HASH)] == [OTHER_LOOPBACK]
    assert [str(peer.host) for peer in stores[6].peers(HASH)] == ["::1"]
    assert seen4 == [OTHER_LOOPBACK, OTHER_LOOPBACK]  # the announce, then the web seed's fetch
    assert seen6 == ["::1", "::1"]


async def test_a_name_of_both_families_connects_from_the_address_of_the_one_that_answers() -> None:
    # The name's IPv6 address refuses the connection: its IPv4 one is tried next, from the
    # IPv4 listen address (before, from ::1 when listed first: an IPv4 attempt could not bind).
    require_loopbacks(OTHER_LOOPBACK, "::1")
    with trio.fail_after(DEADLINE):
        async with http_host("127.0.0.1") as (url4, seen4):
            port = int(url4.rsplit(":", 1)[1])
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as closed:
                closed.bind(("::1", 0))  # bound, not listening: refused
                refused = closed.getsockname()[1]
                trio.socket.set_custom_hostname_resolver(
                    FixedResolver({"tracker.test": [("::1", refused), ("127.0.0.1", port)]})
                )
                client = HttpTrackerClient(local_address=("::1", OTHER_LOOPBACK))
                await announce_http(client, f"http://tracker.test:{port}")
    assert seen4 == [OTHER_LOOPBACK]


async def test_https_leaves_from_the_address_of_its_family(tmp_path: Path) -> None:
    # TLS over the connection open_tcp_stream_from made: ::1 listed first, the IPv4 server is
    # reached from the IPv4 address, by the tracker client and the web seed client alike.
    require_loopbacks(OTHER_LOOPBACK)
    server_context, client_context = self_signed(tmp_path)
    seen: list[str] = []

    async def handle(request: bytes, stream: trio.abc.Stream) -> None:
        assert isinstance(stream, trio.SSLStream)
        tcp = stream.transport_stream
        assert isinstance(tcp, trio.SocketStream)
        seen.append(str(tcp.socket.getpeername()[0]))
        await respond(request, stream)

    local = ("::1", OTHER_LOOPBACK)
    with trio.fail_after(DEADLINE):
        async with http_server(handle, path="/", tls=server_context) as server:
            url = server.url.removesuffix("/")
            assert url.startswith("https://127.0.0.1:")
            await announce_http(
                HttpTrackerClient(local_address=local, ssl_context=client_context), url
            )
            client = WebSeedClient(local_address=local, ssl_context=client_context)
            assert await fetch(client, url) == CONTENT
    assert seen == [OTHER_LOOPBACK, OTHER_LOOPBACK]


async def test_one_specific_listen_host_keeps_to_its_family() -> None:
    require_loopbacks(OTHER_LOOPBACK)
    config = loopback_config(listen=((OTHER_LOOPBACK, 0),), trackers=True)
    resolver = FixedResolver({"v6only.test": ["::1"]})
    with trio.fail_after(DEADLINE):
        async with http_host("127.0.0.1") as (url4, seen4), open_session(config) as session:
            trackers, http = session.trackers, session.http_trackers
            assert trackers is not None
            assert http is not None
            # No IPv6 socket beside a specific IPv4 address: trackers never see an address of
            # ours the user did not name (a VPN's address given, the real IPv6 one kept out).
            assert [str(a.host) for a in trackers.local_addresses] == [OTHER_LOOPBACK]
            await announce_http(http, url4)
            assert await fetch(session.web_seed_client, url4) == CONTENT
            trio.socket.set_custom_hostname_resolver(resolver)
            port = int(url4.rsplit(":", 1)[1])
            with pytest.raises(HttpTrackerError, match="addresses are IPv6, and we connect over"):
                await announce_http(http, f"http://v6only.test:{port}")
    assert seen4 == [OTHER_LOOPBACK, OTHER_LOOPBACK]
    assert resolver.asked == ["v6only.test"]
