"""What users type: host:port pairs, ports, info-hashes, torrent sources."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip._errors import CLIError
from bip._humanize import parse_size
from bip._inputs import (
    load_mutable_link,
    load_source,
    parse_endpoint,
    parse_info_hash,
    parse_port,
)
from bip_metainfo import MagnetLink, Metainfo, create_torrent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:6969", ("127.0.0.1", 6969)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:1", ("localhost", 1)),
        ("::1", ("::1", 7)),
        ("[::1]", ("::1", 7)),
        (":6881", ("0.0.0.0", 6881)),
        ("6881", ("0.0.0.0", 6881)),
        ("example.org", ("example.org", 7)),
        (" 10.0.0.1:0 ", ("10.0.0.1", 0)),
    ],
)
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text, default_host="0.0.0.0", default_port=7) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[::1", "missing ']'"),
        ("[::1]x", "expected ':PORT'"),
        ("[nothost]:1", "not an IPv6 address"),
        ("host:port", "not a port number"),
        ("host:65536", "a port is in 0..65535"),
        ("host", "missing port"),
        (":1", "missing host"),
    ],
)
def test_parse_endpoint_rejects(text: str, message: str) -> None:
    with pytest.raises(CLIError, match=re.escape(message)):
        parse_endpoint(text)


@given(st.text(max_size=40))
def test_parse_endpoint_never_fails_otherwise(text: str) -> None:
    try:
        host, port = parse_endpoint(text, default_host="h", default_port=1)
    except CLIError:
        return
    assert 0 <= port <= 0xFFFF
    assert host


@given(st.text(max_size=20))
def test_parse_size_never_fails_otherwise(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert parse_size(text) >= 0


def test_parse_port() -> None:
    assert parse_port("0") == 0
    with pytest.raises(CLIError, match="not a port"):
        parse_port("x")
    with pytest.raises(CLIError, match=r"0\.\.65535"):
        parse_port("-1")


def test_an_address_to_reach_has_no_port_0() -> None:
    """A peer, a DHT node or a bootstrap address names a port something listens on: 0 is
    no such port (it was taken, as a port to bind, and failed later or never answered)."""
    assert parse_port("1", lowest=1) == 1
    with pytest.raises(CLIError, match=r"a port is in 1\.\.65535, not 0"):
        parse_port("0", lowest=1)
    assert parse_endpoint("h:0") == ("h", 0)  # to bind: any free port
    with pytest.raises(CLIError, match=r"1\.\.65535"):
        parse_endpoint("[::1]:0", lowest_port=1)


def test_parse_info_hash() -> None:
    assert parse_info_hash("ab" * 20).v1 == bytes.fromhex("ab" * 20)
    assert parse_info_hash(" " + "cd" * 32 + "\n").v2 == bytes.fromhex("cd" * 32)
    with pytest.raises(CLIError, match="not an info-hash"):
        parse_info_hash("ab" * 19)


def test_load_source(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    path = tmp_path / "f.torrent"
    path.write_bytes(create_torrent(tmp_path / "f").to_bytes())
    assert isinstance(load_source(str(path)), Metainfo)
    assert isinstance(load_source("MAGNET:?xt=urn:btih:" + "ab" * 20), MagnetLink)
    assert isinstance(load_source("ab" * 20), MagnetLink)
    with pytest.raises(CLIError, match="no such file"):
        load_source(str(tmp_path / "nope"))


def test_load_mutable_link_tells_a_bep46_link_by_its_key() -> None:
    key = "ab" * 32
    link = load_mutable_link(f"magnet:?xs=urn:btpk:{key}&s=6e")
    assert link is not None
    assert (link.public_key.hex(), link.salt) == (key, b"n")
    assert load_mutable_link("magnet:?xt=urn:btih:" + "ab" * 20) is None  # an info-hash
    assert load_mutable_link("album.torrent") is None
    # No info-hash and no key, only the words in a name: not BEP 46 (load_source says why).
    assert load_mutable_link("magnet:?dn=urn%3Abtpk%3A") is None
    with pytest.raises(CLIError, match="bad BEP 46 magnet link"):
        load_mutable_link("magnet:?xs=urn:btpk:abcd")
