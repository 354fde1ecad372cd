"""udp:// tracker URLs: hosts, ports, IPv6 literals, URLData, and refusals."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_utracker._errors import LocalProtocolError
from bip_utracker._url import MAX_URL_LENGTH, TrackerUrl, parse_tracker_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "udp://tracker.example.com:80/dir?a=b&c=d",
            TrackerUrl("tracker.example.com", 80, b"/dir?a=b&c=d"),
        ),
        ("udp://tracker.example.com:80", TrackerUrl("tracker.example.com", 80, b"")),
        ("udp://tracker.example.com:80/", TrackerUrl("tracker.example.com", 80, b"/")),
        (
            "UDP://Tracker.Example.COM:6969/announce",
            TrackerUrl("tracker.example.com", 6969, b"/announce"),
        ),
        (
            "udp://127.0.0.1:6969/announce?passkey=x%20y",
            TrackerUrl("127.0.0.1", 6969, b"/announce?passkey=x%20y"),
        ),
        ("udp://[::1]:6969/a", TrackerUrl("::1", 6969, b"/a")),
        ("udp://[2001:DB8::1]:1", TrackerUrl("2001:db8::1", 1, b"")),
        ("udp://[::ffff:1.2.3.4]:1", TrackerUrl("::ffff:102:304", 1, b"")),
        ("udp://h:1/x?", TrackerUrl("h", 1, b"/x?")),
        ("udp://h:1/x#frag?y", TrackerUrl("h", 1, b"/x")),
        ("udp://h:1/\u00e9", TrackerUrl("h", 1, "/\u00e9".encode())),
        ("udp://localhost.:65535", TrackerUrl("localhost.", 65535, b"")),
    ],
)
def test_parse(url: str, expected: TrackerUrl) -> None:
    assert parse_tracker_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://tracker.example.com:80/announce",
        "udp://tracker.example.com/announce",
        "udp://tracker.example.com:0",
        "udp://tracker.example.com:65536",
        "udp://tracker.example.com:-1",
        "udp://tracker.example.com:80x",
        "udp://:80",
        "udp://user:pass@tracker.example.com:80",
        "udp://[::1:80",
        "udp://[nonsense]:80",
        "udp://[fe80::1%eth0]:80",
        "udp://bad_host:80",
        "udp://-bad.example:80",
        "udp://1.2.3:80",
        "udp://999.1.1.1:80",
        "udp://a b:80",
        "udp://host:80/a b",
        "udp://host:80/\n",
        "udp://" + "a" * MAX_URL_LENGTH + ":1",
        "",
        "udp:",
    ],
)
def test_refused(url: str) -> None:
    with pytest.raises(LocalProtocolError):
        parse_tracker_url(url)


def test_not_a_string() -> None:
    with pytest.raises(LocalProtocolError):
        parse_tracker_url(b"udp://a:1")  # type: ignore[arg-type]


def test_ip_address_and_str() -> None:
    assert parse_tracker_url("udp://127.0.0.1:1").ip_address == IPv4Address("127.0.0.1")
    assert parse_tracker_url("udp://[::1]:1").ip_address == IPv6Address("::1")
    assert parse_tracker_url("udp://example.org:1").ip_address is None
    for url in ["udp://[::1]:6969/announce?x=1", "udp://example.org:1", "udp://1.2.3.4:5/"]:
        assert str(parse_tracker_url(url)) == url


@given(st.text(max_size=80))
def test_random_text_parses_or_raises_ours(text: str) -> None:
    for url in (text, "udp://" + text, "udp://h:1/" + text):
        try:
            parsed = parse_tracker_url(url)
        except LocalProtocolError:
            continue
        assert 1 <= parsed.port <= 65535
        assert parse_tracker_url(str(parsed)) == parsed
