"""Shown URLs keep a passkey out of messages and logs wherever a private tracker puts it: in the
query, in the credentials, or in the path (``/<32 hex>/announce``, ``/announce/<passkey>``).
bip and bip_utracker show URLs by one rule (bip_utracker's ``is_secret_segment``)."""

from __future__ import annotations

import logging
import socket
import string
from collections.abc import Awaitable, Callable, Iterable

import pytest
import trio
import trio.testing
from _cli_helpers import assert_one_line_error
from _discovery_target import NullSink, SeedTarget
from _http_tracker_server import http_server, reply
from hypothesis import given
from hypothesis import strategies as st
from tests._announce_fakes import RecordingClient, refusing

from bip._cli import main
from bip._client._discovery import TrackerAnnouncer
from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_codec import parse_http_tracker_url
from bip._client._http_tracker_codec import shown_url as bip_shown_url
from bip._client._http_tracker_errors import HttpTrackerError
from bip_handshake import PeerId
from bip_utracker import (
    AnnounceProgress,
    Announcer,
    LocalProtocolError,
    TrackerRejectedError,
    TrackerTimeoutError,
    open_tracker_client,
    parse_tracker_url,
)
from bip_utracker._url import is_secret_segment, shown_path
from bip_utracker._url import shown_url as utracker_shown_url

HASH = b"\x44" * 20
PEER_ID = PeerId(b"-BP0001-shownurls001")
V1 = "ab" * 20
HEX = "0123456789abcdef0123456789abcdef"

# Real passkeys and tokens: 32 and 40 hex digits, secrets.token_urlsafe(16, 24, 32), a UUID,
# base64url of random bytes, a base62 key.
REALISTIC = [
    HEX,
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "46EOD5MvgzK0yHtFs3te7A",
    "zeoWrv6bpd7rEC9yVqtO4fqHVsLyWULm",
    "yjRCLxLRn_t9ASiYOWiozbwDDmaG9wrJWxlpW4L9sJg",
    "c659799c-8192-4737-ae7a-453857c9f5e3",
    "-zdviwlUgJY6vI5_fLdX0onW6D_avpf1",
    "0QcCjGF0y7BrPtjW53gcVil8r5IQLxHw",
]

ORDINARY = [
    "announce",
    "announce.php",
    "tracker/announce",
    "tracker.php/announce",
    "a/announce",
    "scrape",
    "pub/ubuntu-22.04.3-live-server-amd64.iso",
    "video/Big_Buck_Bunny_1080p_surround_FrostWire.com.avi",
    "debian-cd/12.2.0/amd64/iso-cd/debian-12.2.0-amd64-netinst.iso",
    "x264-1080p-BluRay-GROUP",
]

# Where private trackers put a passkey in the path (Gazelle and Ocelot, XBT, UNIT3D...).
TEMPLATES = [
    "/{secret}/announce",
    "/announce/{secret}",
    "/a/{secret}/announce",
    "/tracker.php/{secret}/announce",
    "/announce/{secret}.php",
    "/{secret}/announce?passkey={secret}",
]

hex_secrets = st.text(alphabet="0123456789abcdefABCDEF", min_size=16, max_size=64)
# Letters and digits, both present, no separator: a base62 key.
base62_secrets = st.tuples(
    st.text(alphabet=string.ascii_letters + string.digits, min_size=14, max_size=62),
    st.sampled_from(string.ascii_letters),
    st.sampled_from(string.digits),
    st.randoms(use_true_random=False),
).map(lambda parts: "".join(parts[3].sample(parts[0] + parts[1] + parts[2], len(parts[0]) + 2)))
secrets = st.one_of(hex_secrets, base62_secrets, st.sampled_from(REALISTIC))


def all_shown_forms(url: str) -> list[str]:
    """Every shown form the URL has in both packages (the parsers refuse credentials)."""
    forms = [bip_shown_url(url), utracker_shown_url(url)]
    if "@" in url:
        return forms
    if url.startswith(("http://", "https://")):
        forms.append(parse_http_tracker_url(url).shown)
    if url.startswith("udp://"):
        forms.append(parse_tracker_url(url).shown)
    return forms


@given(
    secret=secrets,
    template=st.sampled_from(TEMPLATES),
    base=st.sampled_from(
        ["http://t.example", "https://t.example:8443", "udp://t.example:6969", "http://[::1]:80"]
    ),
)
def test_a_shown_url_never_holds_a_path_secret(secret: str, template: str, base: str) -> None:
    assert is_secret_segment(secret)
    url = base + template.format(secret=secret)
    for shown in all_shown_forms(url):
        assert secret not in shown
        assert "announce" in shown
        assert "\u2026" in shown


@pytest.mark.parametrize("secret", REALISTIC)
@pytest.mark.parametrize("template", TEMPLATES)
def test_realistic_passkeys_are_hidden(secret: str, template: str) -> None:
    url = "https://u:pw@tracker.example" + template.format(secret=secret)
    for shown in all_shown_forms(url):
        assert secret not in shown
        assert shown.startswith("https://tracker.example/")
        assert "pw" not in shown


def test_what_the_rule_shows() -> None:
    assert bip_shown_url(f"http://t.example:2710/{HEX}/announce") == (
        "http://t.example:2710/\u2026/announce"
    )
    assert utracker_shown_url(f"udp://t.example:1/announce/{HEX}?x=1#f") == (
        "udp://t.example:1/announce/\u2026"
    )
    assert shown_path("/a/b/announce") == "/a/b/announce"
    assert parse_tracker_url(f"udp://t.example:1/{HEX}/announce").shown == (
        "udp://t.example:1/\u2026/announce"
    )


@pytest.mark.parametrize("path", ORDINARY)
@pytest.mark.parametrize("base", ["http://t.example", "https://t.example:8443", "udp://t:1"])
def test_ordinary_paths_stay_readable(path: str, base: str) -> None:
    url = f"{base}/{path}"
    assert bip_shown_url(url + "?passkey=" + HEX) == url
    assert all(shown == url for shown in all_shown_forms(url))


short_segments = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:", min_size=1, max_size=15
)


@given(segments=st.lists(short_segments, min_size=1, max_size=6))
def test_segments_shorter_than_a_secret_stay_readable(segments: list[str]) -> None:
    url = "http://t.example/" + "/".join(segments)
    assert all(shown == url for shown in all_shown_forms(url))


words = st.from_regex(r"[a-z]{1,12}(\.(php|html|iso))?|[a-z]{2,8}[0-9]{1,4}|v[0-9]", fullmatch=True)


@given(pieces=st.lists(words, min_size=1, max_size=8), separator=st.sampled_from("-_/"))
def test_words_and_names_stay_readable(pieces: list[str], separator: str) -> None:
    url = "https://t.example/" + separator.join(pieces)
    assert all(shown == url for shown in all_shown_forms(url))


@given(st.text(max_size=300))
def test_any_text_has_a_bounded_shown_form(text: str) -> None:
    for shown in (bip_shown_url(text), utracker_shown_url(text)):
        assert isinstance(shown, str)
        assert len(shown) <= 200


# -- in messages and logs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"udp://127.0.0.1/{HEX}/announce",  # no port
        f"udp://u@127.0.0.1:1/{HEX}/announce",  # user information
        f"udp://127.0.0.1:0/{HEX}/announce",  # port 0
        f"udp://1.2.3/{HEX}/announce",  # not a host
        f"udp://[::1%eth0]:1/{HEX}/announce",  # scoped
        f"udp://127.0.0.1:1/{HEX}/announce x",  # a space
    ],
)
def test_a_refused_udp_url_keeps_its_path_secret_out(url: str) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        parse_tracker_url(url)
    assert HEX not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:0/{HEX}/announce",
        f"ftp://127.0.0.1/{HEX}/announce",
        f"http://[::1/{HEX}/announce",
    ],
)
def test_a_refused_http_url_keeps_its_path_secret_out(url: str) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        parse_http_tracker_url(url)
    assert HEX not in str(caught.value)


def redirect_to(location: str) -> Callable[[bytes, trio.abc.Stream], Awaitable[None]]:
    """A handler that redirects every request to ``location``."""

    async def handle(request: bytes, stream: trio.abc.Stream) -> None:
        head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        await stream.send_all(head.encode())

    return handle


async def test_the_announcer_logs_no_path_secret(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"test://tracker/{HEX}/announce"
    announcer = Announcer(
        RecordingClient(refusing(TrackerRejectedError("unregistered torrent"))),
        url,
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=10),
        retry_delay=10,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert announcer.status.tracker == url  # the status keeps it as given
    messages = [record.getMessage() for record in caplog.records]
    assert any("test://tracker/\u2026/announce" in message for message in messages)
    assert not any(HEX in message for message in messages)


async def test_http_client_errors_keep_the_path_secret_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(request: bytes, stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    client = HttpTrackerClient(timeout=5)
    async with http_server(silent, path=f"/{HEX}/announce") as server:
        with pytest.raises(TrackerTimeoutError) as timeout:
            await client.announce(server.url, HASH, peer_id=PEER_ID, port=1)
    assert HEX not in str(timeout.value)
    assert "/\u2026/announce" in str(timeout.value)
    # A redirect to a scheme we do not follow names both URLs by their shown forms.
    async with http_server(
        redirect_to(f"ftp://elsewhere.example/{HEX}/announce"), path=f"/{HEX}/announce"
    ) as server:
        with pytest.raises(HttpTrackerError) as refused:
            await client.announce(server.url, HASH, peer_id=PEER_ID, port=1)
    assert HEX not in str(refused.value)
    with pytest.raises(LocalProtocolError) as no_scrape:
        await client.scrape(f"http://127.0.0.1:1/{HEX}/tracker", [HASH])
    assert HEX not in str(no_scrape.value)


async def test_http_client_warnings_keep_the_path_secret_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bip.client")
    body = b"d8:intervali60e5:peers0:15:warning message5:mind!e"
    async with http_server(reply(body), path=f"/announce/{HEX}") as server:
        await HttpTrackerClient().announce(server.url, HASH, peer_id=PEER_ID, port=1)
    [message] = [record.getMessage() for record in caplog.records]
    assert message.endswith("/announce/\u2026 warns: mind!")
    assert HEX not in message


async def test_the_engine_logs_no_path_secret(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as unused:  # a port nobody listens on: each announce fails
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}/{HEX}/announce"
    urls = [
        f"wss://127.0.0.1:1/announce/{HEX}",  # another scheme
        f"http://127.0.0.1:0/{HEX}/announce",  # refused by the parser
        dead,
        f"udp://127.0.0.1:1/{HEX}/announce",
    ]
    async with open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp:
        announcer = TrackerAnnouncer(udp, urls, peer_id=PEER_ID, http_client=HttpTrackerClient())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, SeedTarget(HASH), NullSink())
            await trio.sleep(100)
            nursery.cancel_scope.cancel()
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        message.startswith("skipping wss://127.0.0.1:1/announce/\u2026") for message in messages
    )
    shown_dead = dead.replace(HEX, "\u2026")
    assert any(message.startswith(f"announce to {shown_dead} failed") for message in messages)
    assert not any(HEX in message for message in messages)


# -- bip tracker -----------------------------------------------------------------------------------


@pytest.fixture
def silent_udp() -> Iterable[str]:
    """A UDP port that takes datagrams and never answers, with a passkey in its path."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"udp://127.0.0.1:{sock.getsockname()[1]}/{HEX}/announce"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"wss://127.0.0.1/{HEX}/announce", "only udp://, http:// and https://"),
        (f"udp://127.0.0.1/{HEX}/announce", "a UDP tracker URL needs a port"),
        (f"http://127.0.0.1:0/{HEX}/announce", "port 0"),
    ],
)
def test_bip_tracker_messages_keep_the_path_secret_out(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = assert_one_line_error(["tracker", "announce", url, V1], message, capsys)
    assert HEX not in err


def test_bip_tracker_timeout_keeps_the_path_secret_out(
    silent_udp: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tracker", "scrape", silent_udp, V1, "--timeout", "0.2", "--bind", "127.0.0.1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no answer from udp://127.0.0.1:" in err
    assert "/\u2026/announce" in err
    assert HEX not in err


def test_scrape_without_scrape_url_keeps_the_path_secret_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:1/announce/{HEX}"
    err = assert_one_line_error(["tracker", "scrape", url, V1], "has no scrape URL", capsys)
    assert HEX not in err
