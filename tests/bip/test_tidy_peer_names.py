"""A peer a tracker names by DNS name passes bip_utracker's host-name rule, checked once."""

from __future__ import annotations

import pytest
from _http_tracker_server import answer
from hypothesis import given
from hypothesis import strategies as st

from bip._client._http_tracker_codec import PeerName, parse_announce_response
from bip_utracker import LocalProtocolError
from bip_utracker._host_name import is_host_name

LONGEST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters


def names_of(ip: bytes) -> tuple[PeerName, ...]:
    return parse_announce_response(answer(peers=[{"ip": ip, "port": 6881}])).peer_names


def test_a_fully_qualified_name_of_253_characters_is_kept() -> None:
    assert names_of(LONGEST.encode() + b".") == (PeerName(LONGEST + ".", 6881),)
    assert names_of(LONGEST.encode() + b"e.") == ()


@pytest.mark.parametrize("ip", [b"0X7F000001", b"Peer.Example.0x1F", b"2130706433"])
def test_numbers_in_disguise_are_dropped(ip: bytes) -> None:
    assert names_of(ip) == ()


@given(
    st.text(
        st.sampled_from("aZ09-._x:"),
        max_size=12,
    )
)
def test_the_parser_keeps_what_the_rule_accepts(text: str) -> None:
    kept = names_of(text.encode())
    if is_host_name(text):
        assert kept == (PeerName(text.lower(), 6881),)
    else:
        assert kept == ()


def test_peer_name_checks_with_the_same_rule() -> None:
    assert PeerName(LONGEST + ".", 1).host == LONGEST + "."
    for host in ("0x7f.1", "peer.example.123", "Peer.example"):
        with pytest.raises(LocalProtocolError):
            PeerName(host, 1)
