"""BEP 46 magnet links (MutableTorrentLink): reading, writing, resolving, and garbage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_metainfo import InfoHash, MagnetError, MagnetLink, MutableTorrentLink

VECTOR_FILE = (
    Path(__file__).resolve().parents[3] / "shared" / "vectors" / "magnet" / "magnet_vectors.json"
)
KEY_HEX = "8543d3e6115f0f98c944077a4493dcd543e49c739fd998550a1f614ab36ed63e"
KEY = bytes.fromhex(KEY_HEX)
BASE = f"magnet:?xs=urn:btpk:{KEY_HEX}"
NORMAL = settings(max_examples=200, deadline=None)


def parse_error(uri: str, *, strict: bool = False) -> MagnetError:
    """The MagnetError reading ``uri`` as a BEP 46 link raises."""
    with pytest.raises(MagnetError) as caught:
        MutableTorrentLink.parse(uri, strict=strict)
    return caught.value


def _bep46_vectors() -> list[dict[str, Any]]:
    vectors = json.loads(VECTOR_FILE.read_text())
    return [v for v in vectors["parse_vectors"] if "public_key_hex" in v.get("expect", {})]


@pytest.mark.parametrize("vector", _bep46_vectors(), ids=lambda v: v["source"])
def test_parse_vectors(vector: dict[str, Any]) -> None:
    link = MutableTorrentLink.parse(vector["uri"])
    assert link.public_key.hex() == vector["expect"]["public_key_hex"]
    assert link.salt == b""


def test_key_salt_and_hints() -> None:
    link = MutableTorrentLink.parse(
        f"{BASE.upper().replace('MAGNET:?XS=URN:BTPK:', 'magnet:?xs=URN:btpk:')}&S=6E6967"
        "&dn=Nightly+build&tr=udp%3A%2F%2F127.0.0.1%3A6969&x.pe=127.0.0.1:6881"
        "&dht=[::1]:6881&so=2,0&ws=http%3A%2F%2F127.0.0.1%2Fw&kt=a&xl=5"
    )
    assert link.public_key == KEY
    assert link.salt == b"nig"
    assert link.display_name == "Nightly build"
    assert link.trackers == ("udp://127.0.0.1:6969",)
    assert link.peers == (("127.0.0.1", 6881),)
    assert link.dht_nodes == (("::1", 6881),)
    assert link.select_only == ((0, 0), (2, 2))
    assert link.web_seeds == ("http://127.0.0.1/w",)
    assert str(link) == (
        f"{BASE}&s=6e6967&dn=Nightly+build&tr=udp%3A%2F%2F127.0.0.1%3A6969"
        "&ws=http%3A%2F%2F127.0.0.1%2Fw&x.pe=127.0.0.1:6881&dht=[::1]:6881&so=0,2"
    )


def test_an_info_hash_in_the_link_is_not_the_version() -> None:
    # The DHT item says which version is current; an xt beside the key is dropped.
    link = MutableTorrentLink.parse(f"{BASE}&xt=urn:btih:{'cd' * 20}")
    assert link == MutableTorrentLink(KEY)


def test_resolved_gives_the_ordinary_link_of_that_version() -> None:
    link = MutableTorrentLink(KEY, salt=b"\x01", display_name="n", peers=(("127.0.0.1", 1),))
    info_hash = InfoHash(v1=bytes(range(20)))
    magnet = link.resolved(info_hash)
    assert magnet.info_hash == info_hash
    assert magnet.display_name == "n"
    assert magnet.peers == (("127.0.0.1", 1),)
    assert magnet.exact_sources == (f"urn:btpk:{KEY_HEX}",)
    assert magnet.extra == (("s", "01"),)
    assert MagnetLink.parse(str(magnet)) == magnet
    # The key and salt read back from the resolved link: its origin is not lost.
    assert MutableTorrentLink.parse(str(magnet)) == link
    with pytest.raises(TypeError):
        link.resolved(bytes(20))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("uri", "parameter"),
    [
        (f"magnet:?xt=urn:btih:{'cd' * 20}", "xs"),  # no key at all
        ("magnet:?xs=http://127.0.0.1/t.torrent", "xs"),
        ("magnet:?xs=urn:btpk:" + "ab" * 31, "xs"),  # 31 bytes
        ("magnet:?xs=urn:btpk:" + "zz" * 32, "xs"),
        (f"{BASE}&xs=urn:btpk:{'ab' * 32}", "xs"),  # two keys
        (f"{BASE}&s=abc", "s"),  # odd hex
        (f"{BASE}&s=xy", "s"),
        (f"{BASE}&s=00&s=01", "s"),
        (f"{BASE}&s={'00' * 65}", "s"),  # over BEP 44's 64 bytes
        ("magnet?xs=urn:btpk:" + KEY_HEX, ""),
        ("magnet:?" + "a=b&" * 1001, ""),
    ],
)
def test_bad_links_name_the_parameter(uri: str, parameter: str) -> None:
    assert parse_error(uri).parameter == parameter


def test_the_same_key_twice_is_one_key() -> None:
    assert MutableTorrentLink.parse(f"{BASE}&xs=urn:btpk:{KEY_HEX.upper()}").public_key == KEY


def test_optional_parameters_are_skipped_unless_strict() -> None:
    uri = f"{BASE}&tr=ftp://x&x.pe=nope"
    assert MutableTorrentLink.parse(uri) == MutableTorrentLink(KEY)
    assert parse_error(uri, strict=True).parameter == "tr"


def test_constructor_checks() -> None:
    with pytest.raises(MagnetError):
        MutableTorrentLink(bytes(31))
    with pytest.raises(MagnetError):
        MutableTorrentLink(KEY, salt=bytes(65))
    with pytest.raises(MagnetError):
        MutableTorrentLink(KEY, trackers=("ftp://x",))
    with pytest.raises(TypeError):
        MutableTorrentLink(KEY_HEX)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MutableTorrentLink(KEY, salt="s")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MutableTorrentLink.parse(b"magnet:?")  # type: ignore[arg-type]


hosts = st.sampled_from(["127.0.0.1", "::1", "localhost", "10.0.0.1"])
endpoints = st.tuples(hosts, st.integers(1, 65535))
texts = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=8)
links = st.builds(
    MutableTorrentLink,
    public_key=st.binary(min_size=32, max_size=32),
    salt=st.binary(max_size=64),
    display_name=st.none() | texts,
    trackers=st.lists(texts.map(lambda t: f"udp://{t}"), max_size=2).map(tuple),
    web_seeds=st.lists(texts, max_size=2).map(tuple),
    peers=st.lists(endpoints, max_size=2).map(tuple),
    dht_nodes=st.lists(endpoints, max_size=2).map(tuple),
    select_only=st.none()
    | st.lists(st.tuples(st.just(0), st.integers(0, 9)), max_size=2).map(tuple),
)


@NORMAL
@given(links)
def test_round_trip(link: MutableTorrentLink) -> None:
    uri = str(link)
    assert uri.isascii()
    assert MutableTorrentLink.parse(uri) == link
    assert MutableTorrentLink.parse(uri, strict=True) == link


pieces = st.lists(
    st.one_of(
        st.sampled_from(["xs=urn:btpk:", KEY_HEX, "&s=", "&", "=", "%", "ab", "dn=", "so="]),
        st.text(max_size=6),
    )
)


@NORMAL
@given(pieces.map("".join), st.booleans())
def test_garbage_gives_a_link_or_our_error(text: str, strict: bool) -> None:
    for uri in (text, "magnet:?" + text, f"{BASE}&{text}"):
        try:
            link = MutableTorrentLink.parse(uri, strict=strict)
        except MagnetError:
            continue
        assert MutableTorrentLink.parse(str(link), strict=True) == link
