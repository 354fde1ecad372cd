"""libtorrent's ssrf_mitigation rules beyond the redirect guard, and allow_idna, in bip's HTTP
tracker and web seed clients: the pure checks, then each client against loopback servers
(every request judged, redirects too; nothing sent once refused), and each switch off."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
import trio
from _engine_helpers import write_content
from _hostile_http_server import loopback_only, response, scripted_server
from _http_tracker_server import answer, http_server, reply
from hypothesis import given
from hypothesis import strategies as st

from bip._client._http_exchange import (
    UNKNOWN_ANSWERER,
    Exchange,
    follow_redirects,
    is_local_name,
    is_this_host_name,
)
from bip._client._http_response import HttpResponse
from bip._client._http_rules import (
    TRACKER_PARAMETERS,
    idna_refusal,
    is_idna,
    is_this_host,
    literal_address,
    tracker_path_refusal,
    tracker_query_refusal,
    web_seed_query_refusal,
)
from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_codec import HttpTrackerUrl, parse_http_tracker_url
from bip._client._http_tracker_errors import HttpTrackerError, TrackerBlockedError
from bip._client._webseed import WebSeed, WebSeedState
from bip._client._webseed_http import WebSeedBlockedError, WebSeedClient, WebSeedError
from bip._client._webseed_layout import web_seed_layout
from bip_handshake import PeerAddress
from bip_metainfo import create_torrent
from bip_select import Block, Input, PeerLeft, SendRequest
from bip_utracker import AnnounceProgress, Announcer, AnnouncerStatus, LocalProtocolError

DEADLINE = 30.0
HASH = bytes(range(20))
PEER_ID = b"-BP0100-abcdefghijkl"
FILE = bytes(range(256)) * 16
PASSKEY = "0123456789abcdef0123456789abcdef"


async def announce(client: HttpTrackerClient, url: str) -> object:
    return await client.announce(url, HASH, peer_id=PEER_ID, port=6881)


def localhost(url: str) -> str:
    """``url`` (on 127.0.0.1) by the name ``localhost``: judged once connected."""
    return url.replace("127.0.0.1", "localhost", 1)


# -- the pure rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("xn--bcher-kva.example", True),
        ("tracker.XN--P1AI", True),
        ("a.xn--", True),
        ("bücher.example", True),
        ("tracker.example", False),
        ("xn-bcher.example", False),
        ("axn--b.example", False),
        ("127.0.0.1", False),
        ("::1", False),
    ],
)
def test_is_idna(host: str, expected: bool) -> None:
    assert is_idna(host) is expected
    assert (idna_refusal(host) is not None) is expected


@given(st.lists(st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True), min_size=1, max_size=4))
def test_an_xn_label_anywhere_is_idna(labels: list[str]) -> None:
    for i in range(len(labels)):
        host = ".".join([*labels[:i], "Xn--" + labels[i], *labels[i + 1 :]])
        refusal = idna_refusal(host)
        assert refusal is not None
        assert refusal.startswith("refused with allow_idna off")


@pytest.mark.parametrize("name", sorted(TRACKER_PARAMETERS))
def test_a_tracker_url_with_our_parameters_is_refused(name: str) -> None:
    for query in (f"{name}=1", f"{name.upper()}=1", f"passkey=a&{name}", name.replace("_", "%5F")):
        refusal = tracker_query_refusal(f"/announce?{query}")
        assert refusal is not None
        assert refusal.startswith("refused by ssrf_mitigation")


@pytest.mark.parametrize(
    "target",
    ["/announce", "/announce?", "/announce?passkey=1", "/a?authkey=x&uid=3", "/a?info_hashes=x"],
)
def test_a_tracker_url_with_other_parameters_is_accepted(target: str) -> None:
    assert tracker_query_refusal(target) is None


@pytest.mark.parametrize(
    "target",
    [
        "/announce",
        "/announce?passkey=1",
        "/announce.php",
        "/x/announce",
        f"/{PASSKEY}/announce",
        f"/announce/{PASSKEY}",
        "/a/announce.php?passkey=s3cr3t",
    ],
)
def test_a_tracker_path_on_this_machine_is_accepted(target: str) -> None:
    assert tracker_path_refusal(target, "127.0.0.1", scrape=False) is None
    scrape = target.replace("announce", "scrape")
    assert tracker_path_refusal(scrape, "127.0.0.1", scrape=True) is None


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/admin",
        "/admin?announce",
        "/announcement",
        "/x/announce/y",
        "/announce/../admin",
        "/announce/%2E%2E/admin",
        "/x/./announce",
        "/scrape",
        "/announce.toolongext",
    ],
)
def test_other_paths_on_this_machine_are_refused(target: str) -> None:
    refusal = tracker_path_refusal(target, IPv4Address("127.0.0.1"), scrape=False)
    assert refusal is not None
    assert refusal.startswith("refused by ssrf_mitigation: a tracker on this machine")


def test_a_refused_path_keeps_a_passkey_out_of_the_message() -> None:
    refusal = tracker_path_refusal(f"/{PASSKEY}/tracker", "::1", scrape=False)
    assert refusal is not None
    assert PASSKEY not in refusal


def test_this_host_and_literals() -> None:
    for host in ("127.0.0.1", "127.255.0.9", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1"):
        address = literal_address(host)
        assert address is not None
        assert is_this_host(address)
    assert is_this_host(IPv6Address("::ffff:127.0.0.2"))
    assert not is_this_host(ip_address("10.0.0.1"))
    assert literal_address("::ffff:10.0.0.1") == IPv4Address("10.0.0.1")
    assert literal_address("tracker.example") is None


def test_web_seed_query_rule() -> None:
    assert web_seed_query_refusal("/f.bin", "10.0.0.2") is None
    refusal = web_seed_query_refusal("/f.bin?x=1", "10.0.0.2")
    assert refusal is not None
    assert "ssrf_mitigation" in refusal


# -- the HTTP tracker client -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://127.0.0.1:1/admin", "ssrf_mitigation"),
        ("http://[::1]:1/", "ssrf_mitigation"),
        ("http://0.0.0.0:1/cgi-bin/x", "ssrf_mitigation"),
        ("http://t.example/announce?info_hash=%00", "ssrf_mitigation"),
        ("http://t.example/announce?passkey=1&PORT=2", "ssrf_mitigation"),
        ("http://xn--bcher-kva.example/announce", "allow_idna"),
    ],
)
async def test_tracker_urls_refused_as_given(
    url: str, rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = HttpTrackerClient()
    with pytest.raises(LocalProtocolError, match=rule):
        client.check_tracker(url)
    with loopback_only(monkeypatch) as guard, pytest.raises(LocalProtocolError, match=rule):
        await announce(client, url)
    assert guard.refused == []  # refused before any connection or lookup
    off = {"ssrf_mitigation": False} if rule == "ssrf_mitigation" else {"allow_idna": True}
    HttpTrackerClient(**off).check_tracker(url)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1, None, "yes"])
def test_tracker_switches_are_bools(bad: object) -> None:
    for name in ("ssrf_mitigation", "allow_idna"):
        with pytest.raises(LocalProtocolError, match=name):
            HttpTrackerClient(**{name: bad})  # type: ignore[arg-type]


async def test_a_local_web_service_by_name_hears_nothing() -> None:
    # "localhost" resolves to loopback: refused once connected, before a byte is sent.
    with trio.fail_after(DEADLINE):
        async with http_server(reply(answer(interval=60)), path="/admin") as server:
            with pytest.raises(TrackerBlockedError, match="on this machine") as raised:
                await announce(HttpTrackerClient(), localhost(server.url))
            assert raised.value.rule == "ssrf_mitigation"
            assert raised.value.retry_in == "never"
            assert isinstance(raised.value, HttpTrackerError)
            result = await announce(HttpTrackerClient(ssrf_mitigation=False), server.url)
            assert result is not None
    # The refused connection closed before a byte was sent: only the second one asked.
    assert len(server.requests) == 1
    assert server.requests[0].startswith(b"GET /admin?info_hash=")


async def test_a_tracker_on_this_machine_is_announced_and_scraped() -> None:
    body = answer(interval=60, files={HASH: {"complete": 1, "incomplete": 2, "downloaded": 3}})
    with trio.fail_after(DEADLINE):
        async with http_server(reply(body), path=f"/{PASSKEY}/announce") as server:
            client = HttpTrackerClient()
            await announce(client, localhost(server.url))
            await client.scrape(server.url, [HASH])
    assert [r.split(b"?")[0] for r in server.requests] == [
        f"GET /{PASSKEY}/announce".encode(),
        f"GET /{PASSKEY}/scrape".encode(),
    ]


async def test_a_redirect_to_a_local_web_service_is_refused() -> None:
    async def redirecting(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(response("302 Found", b"", "Location: /cgi-bin/reboot"))

    with trio.fail_after(DEADLINE):
        async with scripted_server(redirecting) as server:
            with pytest.raises(TrackerBlockedError, match="not '/cgi-bin/reboot'"):
                await announce(HttpTrackerClient(), server.url)
    assert len(server.requests) == 1  # the redirect itself was never requested


async def test_a_redirect_to_an_idna_host_is_refused_unconnected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def redirecting(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        location = "Location: http://xn--pypl-53dc.example/announce"
        await stream.send_all(response("302 Found", b"", location))

    with loopback_only(monkeypatch) as guard, trio.fail_after(DEADLINE):
        async with scripted_server(redirecting) as server:
            with pytest.raises(TrackerBlockedError, match="allow_idna") as raised:
                await announce(HttpTrackerClient(), server.url)
            assert raised.value.rule == "allow_idna"
            with pytest.raises(HttpTrackerError, match="cannot connect"):
                await announce(HttpTrackerClient(allow_idna=True), server.url)
    assert guard.refused == [("xn--pypl-53dc.example", 80)]


# -- the web seed client -----------------------------------------------------------------------


def partial_answer(request: bytes) -> bytes:
    return response("206 Partial Content", FILE[:10], f"Content-Range: bytes 0-9/{len(FILE)}")


async def serve_file(request: bytes, stream: trio.abc.Stream, index: int) -> None:
    await stream.send_all(partial_answer(request))


async def test_a_local_web_seed_with_a_query_hears_nothing() -> None:
    with trio.fail_after(DEADLINE):
        async with scripted_server(serve_file, path="/f.bin?token=1") as server:
            for url in (server.url, localhost(server.url)):
                with pytest.raises(WebSeedBlockedError, match="takes no query") as raised:
                    await WebSeedClient().fetch(parse_http_tracker_url(url), 0, 10)
                assert raised.value.rule == "ssrf_mitigation"
            client = WebSeedClient(ssrf_mitigation=False)
            assert await client.fetch(parse_http_tracker_url(server.url), 0, 10) == FILE[:10]
    assert len(server.requests) == 1  # the allowed fetch only


async def test_a_web_seed_redirect_to_a_query_is_refused() -> None:
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        if request.startswith(b"GET /f.bin "):
            await stream.send_all(response("302 Found", b"", "Location: /api?action=delete"))
        else:
            await stream.send_all(partial_answer(request))

    with trio.fail_after(DEADLINE):
        async with scripted_server(script, path="/f.bin") as server:
            url = parse_http_tracker_url(server.url)
            with pytest.raises(WebSeedBlockedError, match="takes no query"):
                await WebSeedClient().fetch(url, 0, 10)
            assert len(server.requests) == 1
            assert await WebSeedClient(ssrf_mitigation=False).fetch(url, 0, 10) == FILE[:10]


async def test_an_idna_web_seed_is_refused_unconnected(monkeypatch: pytest.MonkeyPatch) -> None:
    url = parse_http_tracker_url("http://xn--bcher-kva.example/f.bin")
    with loopback_only(monkeypatch) as guard:
        with pytest.raises(WebSeedBlockedError, match="allow_idna") as raised:
            await WebSeedClient().fetch(url, 0, 10)
        assert raised.value.rule == "allow_idna"
        assert guard.refused == []
        with pytest.raises(WebSeedError, match="cannot connect") as other:
            await WebSeedClient(allow_idna=True).fetch(url, 0, 10)
        assert not isinstance(other.value, WebSeedBlockedError)
    assert guard.refused == [("xn--bcher-kva.example", 80)]


@pytest.mark.parametrize("bad", [1, None])
def test_web_seed_switches_are_bools(bad: object) -> None:
    for name in ("ssrf_mitigation", "allow_idna"):
        with pytest.raises(ValueError, match=name):
            WebSeedClient(**{name: bad})  # type: ignore[arg-type]


async def test_a_blocked_web_seed_leaves_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Refused requests would be refused again: no backoff, no retry, one line in the log.
    caplog.set_level(logging.INFO, logger="bip.client")
    folder = write_content(tmp_path / "seed", (40_000,))
    info = create_torrent(folder, piece_length=16384, creation_date=None, created_by=None).info
    inputs: list[Input] = []

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    with trio.fail_after(DEADLINE):
        async with scripted_server(serve_file, path="/") as server:
            seed = WebSeed(
                web_seed_layout(server.url + "file.bin?sig=1", info),
                WebSeedClient(),
                deliver=deliver,
                feed=lambda _seed, event: inputs.append(event),
                piece_length=info.piece_length,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(seed.run)
                seed.act(SendRequest(seed, Block(0, 0, 16384)))
                seed.act(SendRequest(seed, Block(1, 0, 16384)))
            assert server.requests == []
    assert seed.state is WebSeedState.GONE
    assert sum(isinstance(event, PeerLeft) for event in inputs) == 1
    lines = [r.getMessage() for r in caplog.records if "web seed" in r.getMessage()]
    assert len(lines) == 1
    assert "gone" in lines[0]
    assert "ssrf_mitigation" in lines[0]


async def test_an_announcer_gives_a_blocked_tracker_up_at_once() -> None:
    # One refusal, one update to report it (logged once by the engine), and the tracker is
    # given up: nothing more is sent, not even "stopped". (Real time: "localhost" is looked up
    # in a worker thread, which a virtual clock would outrun.)
    updates: list[AnnouncerStatus] = []
    updated = trio.Event()

    def on_update(status: AnnouncerStatus) -> None:
        updates.append(status)
        updated.set()

    with trio.fail_after(DEADLINE):
        async with http_server(reply(answer(interval=60)), path="/admin") as server:
            announcer = Announcer(
                HttpTrackerClient(),
                localhost(server.url),
                HASH,
                peer_id=PEER_ID,
                port=6881,
                progress=lambda: AnnounceProgress(uploaded=0, downloaded=0, left=1),
                on_update=on_update,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(announcer.run)
                await updated.wait()
                nursery.cancel_scope.cancel()
    assert len(updates) == 1
    assert isinstance(updates[0].last_error, TrackerBlockedError)
    assert updates[0].given_up is not None
    assert "ssrf_mitigation" in updates[0].given_up
    assert updates[0].next_announce is None
    assert server.requests == []


async def test_the_switch_also_lets_the_internet_redirect_into_our_network() -> None:
    # libtorrent's ssrf_mitigation off turns off its redirect rule too.
    internet = PeerAddress(IPv4Address("93.184.216.34"), 80)
    answers = [
        (HttpResponse(302, "Found", (("location", "http://192.168.1.1/announce"),), b""), internet),
        (HttpResponse(200, "OK", (), b"de"), PeerAddress(IPv4Address("192.168.1.1"), 80)),
    ]
    calls: list[tuple[str, bool]] = []

    async def exchange(
        url: HttpTrackerUrl, target: str, *, global_only: bool
    ) -> tuple[HttpResponse, PeerAddress]:
        calls.append((url.url, global_only))
        return answers[len(calls) - 1]

    start = parse_http_tracker_url("http://tracker.example/announce")
    with pytest.raises(HttpTrackerError, match="into a local network"):
        await follow_redirects(start, "/", exchange, max_redirects=5, error=HttpTrackerError)
    calls.clear()
    response, _, final = await follow_redirects(
        start, "/", exchange, max_redirects=5, error=HttpTrackerError, ssrf_mitigation=False
    )
    assert response.status == 200
    assert final.host == "192.168.1.1"
    assert calls == [("http://tracker.example/announce", False), (final.url, False)]


# -- names a SOCKS5 proxy resolves (socks5h://): judged by the name ------------------------------


@pytest.mark.parametrize(
    ("host", "this_host", "local"),
    [
        ("localhost", True, True),
        ("LocalHost.", True, True),
        ("admin.localhost", True, True),
        ("router", False, True),
        ("printer.local", False, True),
        ("nas.home.arpa", False, True),
        ("ci.internal", False, True),
        ("tracker.example", False, False),
        ("localhost.example", False, False),
        ("notlocal", False, True),
    ],
)
def test_names_of_this_host_and_local_names(host: str, this_host: bool, local: bool) -> None:
    assert is_this_host_name(host) is this_host
    assert is_local_name(host) is local


async def test_a_server_we_could_not_judge_is_held_to_the_redirect_rule() -> None:
    # Through socks5h:// who answered is unknown: a server of a name that is not local may be
    # on the Internet, and may not send us into a local network.
    calls: list[tuple[str, bool]] = []

    def redirecting(location: str) -> Exchange:
        async def exchange(
            url: HttpTrackerUrl, target: str, *, global_only: bool
        ) -> tuple[HttpResponse, PeerAddress]:
            calls.append((url.url, global_only))
            if len(calls) == 1:
                return HttpResponse(302, "Found", (("location", location),), b""), UNKNOWN_ANSWERER
            return HttpResponse(200, "OK", (), b"de"), UNKNOWN_ANSWERER

        return exchange

    start = parse_http_tracker_url("http://tracker.example/announce")
    with pytest.raises(HttpTrackerError, match="into a local network"):
        await follow_redirects(
            start,
            "/",
            redirecting("http://192.168.1.1/announce"),
            max_redirects=5,
            error=HttpTrackerError,
        )
    # A redirect to a name is requested with global_only: its own exchange judges the name.
    calls.clear()
    await follow_redirects(
        start,
        "/",
        redirecting("http://other.example/announce"),
        max_redirects=5,
        error=HttpTrackerError,
    )
    assert calls == [(start.url, False), ("http://other.example/announce", True)]
    # A server of a local name (or a local literal) is local: it may redirect anywhere.
    for local in ("http://localhost:8080/announce", "http://nas/announce", "http://10.0.0.1/a"):
        calls.clear()
        await follow_redirects(
            parse_http_tracker_url(local),
            "/",
            redirecting("http://192.168.1.1/announce"),
            max_redirects=5,
            error=HttpTrackerError,
        )
        assert calls[1] == ("http://192.168.1.1/announce", False)
