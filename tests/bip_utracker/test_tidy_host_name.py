"""One host-name rule (bip_utracker's ``is_host_name``) for tracker URLs and tracker-named peers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_utracker._errors import LocalProtocolError
from bip_utracker._host_name import MAX_HOST_NAME, is_host_name
from bip_utracker._url import parse_tracker_url

LONGEST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "tracker.example.org",
        "Tracker.Example.ORG",
        "tracker.example.org.",  # fully qualified
        "a",
        "x-1.example",
        "1tracker.example",  # a label may start with a digit
        "123abc",  # not a number: letters follow the digits
        "tracker.example.0xg",  # "g" is no hex digit
        "a" * 63,
        LONGEST,
        LONGEST + ".",  # the trailing dot is not counted (RFC 1035: 255 octets on the wire)
    ],
)
def test_host_names(name: str) -> None:
    assert is_host_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        ".example",
        "a..example",
        "example..",
        "-a.example",
        "a-.example",
        "bad_host",
        "a" * 64,
        LONGEST + "e",  # 254 characters
        LONGEST + "e.",
        "caf\u00e9.example",
        "\uff11.example",  # a full-width digit: ASCII only
        "a b",
        "example\n",
        "127.0.0.1",
        "127.1",  # inet_aton's short forms
        "2130706433",
        "0x7f.1",
        "0X7F000001",
        "0x",
        "peer.example.123",  # ends in a number (WHATWG)
        "peer.example.123.",
        "peer.example.0x1f",
        "::1",
        "[::1]",
        "example.com:80",
    ],
)
def test_not_host_names(name: str) -> None:
    assert not is_host_name(name)


def test_not_a_string_is_not_a_name() -> None:
    assert not is_host_name(b"example.com")  # type: ignore[arg-type]
    assert not is_host_name(None)  # type: ignore[arg-type]


def test_bound() -> None:
    assert len(LONGEST) == MAX_HOST_NAME


@given(st.text(max_size=300))
def test_any_text_gives_an_answer(text: str) -> None:
    answer = is_host_name(text)
    if answer:
        assert text.isascii()
        assert len(text.removesuffix(".")) <= MAX_HOST_NAME


@given(
    st.from_regex(
        r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z][a-z0-9-]{0,10}[a-z0-9]){0,4}\.?", fullmatch=True
    )
)
def test_generated_names_pass_in_any_case(name: str) -> None:
    assert is_host_name(name)
    assert is_host_name(name.upper())


# -- udp:// tracker URLs: the same rule --------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        # Accepted before the rule was shared: a resolver reads each as 127.0.0.1 or as an
        # address, not a name.
        "udp://0x7f.1:6969/announce",
        "udp://0x7f000001:6969/announce",
        "udp://tracker.example.123:6969/announce",
        # Refused before too.
        "udp://127.1:6969",
        "udp://bad_host:6969",
        "udp://" + LONGEST + "e:1",
    ],
)
def test_tracker_url_hosts_follow_the_rule(url: str) -> None:
    with pytest.raises(LocalProtocolError, match="not a host name"):
        parse_tracker_url(url)


def test_a_fully_qualified_name_of_253_characters_is_a_tracker_host() -> None:
    url = parse_tracker_url(f"udp://{LONGEST}.:6969/announce")
    assert url.host == LONGEST + "."
    assert url.ip_address is None
