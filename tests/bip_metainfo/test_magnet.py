"""Magnet links (BEP 9, 52, 53): every public vector, the edge cases, and properties.

Where the vector sources disagree with a BEP or with each other, the comments say
which way we went and why (search for "CONFLICT").
"""

from __future__ import annotations

import base64
import dataclasses
import doctest
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bip_bencode import decode, encode
from bip_metainfo import InfoHash, MagnetError, MutableTorrentLink
from bip_metainfo import _magnet as magnet_module
from bip_metainfo._magnet import MagnetLink

VECTOR_FILE = (
    Path(__file__).resolve().parents[3] / "shared" / "vectors" / "magnet" / "magnet_vectors.json"
)
# A missing file fails at collection: the vectors are part of the proof, never skipped.
VECTORS: dict[str, Any] = json.loads(VECTOR_FILE.read_text())

HASH_HEX = "cd" * 20
HASH = InfoHash(v1=bytes.fromhex(HASH_HEX))
BASE = f"magnet:?xt=urn:btih:{HASH_HEX}"

NORMAL = settings(max_examples=200, deadline=None)


def parse_error(uri: str, *, strict: bool = False) -> MagnetError:
    """The MagnetError parsing ``uri`` raises."""
    with pytest.raises(MagnetError) as caught:
        MagnetLink.parse(uri, strict=strict)
    return caught.value


def _has_bittorrent_topic(uri: str) -> bool:
    return re.search(r"xt=urn(:|%3a)bt(ih|mh)(:|%3a)(?!HASH)", uri, re.IGNORECASE) is not None


def _with_bittorrent_topic(uri: str) -> str:
    """A vector's link made readable: BEP 53's ``HASH`` placeholder filled, or an xt added."""
    if "urn:btih:HASH" in uri:
        return uri.replace("urn:btih:HASH", f"urn:btih:{HASH_HEX}")
    return f"{uri}&xt=urn:btih:{HASH_HEX}"


def _hex(digest: bytes | None) -> str | None:
    return None if digest is None else digest.hex()


def _endpoint_text(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _indices(link: MagnetLink) -> list[int]:
    assert link.select_only is not None
    return [i for first, last in link.select_only for i in range(first, last + 1)]


def _priorities(text: str) -> list[bool]:
    """libtorrent's file priorities as the vectors write them: 'yes,no', 'no*10,yes', '[] ...'."""
    if text.startswith("[]"):
        return []
    wanted: list[bool] = []
    for item in text.split(","):
        word, _, count = item.partition("*")
        wanted += [word == "yes"] * int(count or 1)
    return wanted


# --- the parse vectors ---------------------------------------------------------------------

# Every libtorrent / anacrolix error and webtorrent "empty object" names the parameter at fault.
ERROR_PARAMETER: dict[str, str | None] = {
    "invalid_escaped_string": "xt",
    "missing_info_hash_in_uri": "xt",
    "invalid_info_hash": "xt",
    "empty URI": "",
    "no BitTorrent xt": "xt",
    "invalid info hash": "xt",
}


def _error_parameter(expect: dict[str, Any], uri: str) -> str | None:
    """The parameter an error vector must name; None for 'any'."""
    if "error" in expect:
        error: str = expect["error"]
        return None if error.startswith("any") else ERROR_PARAMETER[error]
    # webtorrent's "empty object" results: not a magnet link at all, or no info-hash.
    return "" if not uri.startswith("magnet:?") else "xt"


def _check_expectation(link: MagnetLink, key: str, want: Any) -> None:
    match key:
        case "dn" | "name":
            assert link.display_name == want
        case "info_hash_v1" | "info_hash_v1_derived":
            assert _hex(link.info_hash.v1) == want
        case "info_hash_v2":
            assert _hex(link.info_hash.v2) == want
        case "xt":
            topics = [value for name, value in link.extra if name == "xt"]
            if link.info_hash.v1 is not None:
                topics.append(f"urn:btih:{link.info_hash.v1.hex()}")
            if link.info_hash.v2 is not None:
                topics.append(f"urn:btmh:{link.info_hash.multihash().hex()}")
            assert sorted(topics) == sorted(want)
        case "trackers" | "trackers_unique" | "trackers_with_webrtc":
            assert list(link.trackers) == want
        case "trackers_unordered" | "trackers_unordered_deduped":
            assert sorted(link.trackers) == sorted(want)
            assert len(link.trackers) == len(set(link.trackers))
        case "trackers_without_webrtc":
            # We keep ws:// and wss:// trackers (WebTorrent's), as libtorrent built with
            # WebRTC does: a link should not lose them because one client cannot use them.
            assert set(want) <= set(link.trackers)
        case "tracker_tiers":
            # libtorrent puts each tr in a tier of its own, in order: our trackers' order.
            assert want == list(range(len(link.trackers)))
        case "web_seeds":
            # webtorrent's urlList is every `as` then every `ws`; we keep them apart.
            assert [*link.acceptable_sources, *link.web_seeds] == want
        case "keywords":
            assert list(link.keywords) == want
        case "ix":
            # webtorrent casts ix to a number; to us it is an unknown parameter, kept as text.
            assert ("ix", str(want)) in link.extra
        case "params":
            # CONFLICT: webtorrent drops any piece with more than one '=' ("a==" and
            # "a=b="); libtorrent, Go, Python and the WHATWG form-urlencoded parser split
            # at the first '=', which tracker URLs with an unescaped query
            # (tr=http://t/announce?passkey=x) need. We split at the first '=', so such
            # pieces are kept: every webtorrent pair is there, and the only others hold
            # an '=' in their value.
            for name, value in want.items():
                assert (name, value) in link.extra
            for name, value in link.extra:
                assert name in want or name == "xt" or "=" in value
        case "public_key_hex":
            assert f"urn:btpk:{want}" in link.exact_sources
        case "select_only":
            assert _indices(link) == want
        case "peers" | "peers_deduped":
            if want and isinstance(want[0], str):
                assert [_endpoint_text(peer) for peer in link.peers] == want
            else:
                assert [list(peer) for peer in link.peers] == want
        case "raw_x.pe_not_deduped":
            pass  # we drop duplicate peers, as webtorrent's peerAddresses does
        case "dht_nodes":
            assert [list(node) for node in link.dht_nodes] == want
        case "file_priorities":
            wanted = _priorities(want)
            if not wanted:
                assert link.select_only is None
            else:
                assert [link.selects(i) for i in range(len(wanted))] == wanted
                assert link.select_only is not None
                assert link.select_only[-1][1] == len(wanted) - 1
        case "valid":
            assert want is True
        case "v1_only_parser":
            pass  # anacrolix's v1-only parser refuses a v2 link; ours reads v2
        case _:
            pytest.fail(f"an expectation this test does not know: {key!r}")


PARSE_VECTORS: list[dict[str, Any]] = VECTORS["parse_vectors"]


@pytest.mark.parametrize(
    "vector", PARSE_VECTORS, ids=[f"{i}-{v['source']}" for i, v in enumerate(PARSE_VECTORS)]
)
def test_parse_vector(vector: dict[str, Any]) -> None:
    uri: str = vector["uri"]
    expect: dict[str, Any] = vector["expect"]
    if "error" in expect or "result" in expect:
        uris = [uri]
        if "uri_bytes_hex" in vector:  # the raw byte 0xF7, as latin-1 and as a lone surrogate
            raw = bytes.fromhex(vector["uri_bytes_hex"])
            uris += [raw.decode("latin-1"), raw.decode("utf-8", "surrogateescape")]
        for text in uris:
            for strict in (False, True):
                error = parse_error(text, strict=strict)
                wanted = _error_parameter(expect, text)
                if wanted is not None and not strict:
                    assert error.parameter == wanted, error
        return
    if not _has_bittorrent_topic(uri):
        # CONFLICT: webtorrent reads links with no BitTorrent xt (ed2k only, none at
        # all, a BEP 46 public key) and BEP 53's template has a placeholder hash. BEP 9
        # makes xt the only mandatory parameter, and libtorrent and anacrolix refuse
        # such links, so we do too; the fields are checked with a hash added.
        error = parse_error(uri)
        assert error.parameter == "xt"
        if "public_key_hex" in expect:
            assert "BEP 46" in error.reason
        uri = _with_bittorrent_topic(uri)
    link = MagnetLink.parse(uri)
    for key, want in expect.items():
        _check_expectation(link, key, want)
    assert MagnetLink.parse(str(link)) == link
    assert MagnetLink.parse(str(link), strict=True) == link


# --- the encode vectors --------------------------------------------------------------------


def _raw(text: str) -> bytes:
    """``"'a'*20"`` or ``"aaa... (ASCII 'a'*32)"`` as bytes."""
    found = re.search(r"'(.)'\s*\*\s*(\d+)", text)
    assert found is not None, text
    return found[1].encode() * int(found[2])


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _link_from_torrent(path: Path) -> MagnetLink:
    torrent: Any = decode(path.read_bytes())
    tiers = torrent.get(b"announce-list") or [[torrent[b"announce"]]]
    url_list = torrent.get(b"url-list", [])
    return MagnetLink.from_info_hash(
        InfoHash.from_info_bytes(encode(torrent[b"info"]), v1=True),
        trackers=[url.decode() for tier in tiers for url in tier],
        web_seeds=[url.decode() for url in _listed(url_list)],
    )


def _link_from_input(given: dict[str, Any]) -> MagnetLink:
    if "from_torrent" in given:
        return _link_from_torrent(VECTOR_FILE.parents[1] / given["from_torrent"])
    v1: bytes | None = None
    v2: bytes | None = None
    extra: list[tuple[str, str]] = []
    fields: dict[str, Any] = {}
    for key, value in given.items():
        match key:
            case "info_hash_v1":
                v1 = bytes.fromhex(value)
            case "info_hash_v2":
                v2 = bytes.fromhex(value)
            case "info_hash_v1_raw":
                v1 = _raw(value)
            case "info_hash_v2_raw":
                v2 = _raw(value)
            case "xt":
                for topic in _listed(value):
                    if topic.lower().startswith("urn:btih:"):
                        v1 = InfoHash.parse(topic[9:]).v1
                    elif topic.lower().startswith("urn:btmh:"):
                        v2 = InfoHash.parse(topic[9:]).v2
                    else:
                        extra.append(("xt", topic))
            case "xl":
                fields["exact_length"] = int(value)
            case "dn":
                fields["display_name"] = value
            case "tr" | "trackers":
                fields["trackers"] = _listed(value)
            case "ws" | "web_seed":
                fields["web_seeds"] = _listed(value)
            case "as":
                fields["acceptable_sources"] = _listed(value)
            case "xs":
                fields["exact_sources"] = _listed(value)
            case "kt":
                fields["keywords"] = value
            case "so":
                fields["select_only"] = value
            case "x.pe" | "peers":
                fields["peers"] = [_endpoint(peer) for peer in _listed(value)]
            case "dht_nodes":
                fields["dht_nodes"] = [(host, port) for host, port in value]
            case "file_priorities":
                # libtorrent writes no `so` when every file is selected; a caller that
                # knows the file count (Metainfo.magnet) passes None then.
                selected = [i for i, priority in enumerate(value) if priority]
                fields["select_only"] = None if len(selected) == len(value) else selected
            case _:
                pytest.fail(f"an encode input this test does not know: {key!r}")
    if v1 is None and v2 is None:
        v1 = HASH.v1  # libtorrent's "...&ws=..." vectors show only the tail of a link
    return MagnetLink.from_info_hash(InfoHash(v1=v1, v2=v2), extra=extra, **fields)


def _canonical(uri: str) -> str:
    """A vector's URI as we write it, where the difference is only spelling.

    libtorrent writes lower-case escapes (%3a); we write upper case, as RFC 3986
    recommends and webtorrent and anacrolix do. webtorrent passes a base32 btih
    through; we write hex, as BEP 9 specifies (base32 is only read, "for
    compatibility with existing links in the wild").
    """
    uri = re.sub(r"%[0-9A-Fa-f]{2}", lambda m: m[0].upper(), uri)
    return re.sub(
        r"urn:btih:([A-Za-z2-7]{32})(?=&|$)",
        lambda m: "urn:btih:" + base64.b32decode(m[1].upper()).hex(),
        uri,
    )


ENCODE_VECTORS: list[dict[str, Any]] = VECTORS["encode_vectors"]


@pytest.mark.parametrize(
    "vector", ENCODE_VECTORS, ids=[f"{i}-{v['source']}" for i, v in enumerate(ENCODE_VECTORS)]
)
def test_encode_vector(vector: dict[str, Any]) -> None:
    given: dict[str, Any] = vector["input"]
    expected: str = vector["expected_uri"]
    if "public_key" in given:
        # A BEP 46 link has no info-hash, which a MagnetLink cannot be without: reading
        # one is refused (see test_parse_vector) and MutableTorrentLink writes it; with an
        # xt, the key is written as webtorrent writes it, colons unescaped.
        assert parse_error(expected).parameter == "xt"
        assert str(MutableTorrentLink(bytes.fromhex(given["public_key"]))) == expected
        key = f"urn:btpk:{given['public_key']}"
        link = MagnetLink.from_info_hash(HASH, exact_sources=[key])
        assert f"&xs={key}" in str(link)
        assert MagnetLink.parse(f"{expected}&xt=urn:btih:{HASH_HEX}").exact_sources == (key,)
        return
    link = _link_from_input(given)
    uri = link.to_uri()
    assert uri == str(link)
    if expected.startswith("..."):
        assert uri.endswith(_canonical(expected[3:]))
    else:
        assert uri == _canonical(expected)
        assert MagnetLink.parse(expected) == link
    assert MagnetLink.parse(uri, strict=True) == link


# --- reading: the link as a whole ------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["", "magnet:", "magnet:xt=urn:btih:" + HASH_HEX, "http://x/?xt=1", " " + BASE, "magnet?:"],
)
def test_not_a_magnet_link(uri: str) -> None:
    assert parse_error(uri).parameter == ""


def test_scheme_is_case_insensitive() -> None:
    assert MagnetLink.parse("MAGNET:?" + BASE[8:]).info_hash == HASH


@pytest.mark.parametrize("uri", ["magnet:?", "magnet:?&&&", "magnet:?dn=x", "magnet:?xt"])
def test_missing_info_hash(uri: str) -> None:
    assert parse_error(uri).parameter == "xt"


def test_length_limit() -> None:
    room = MagnetLink.MAX_LENGTH - len(BASE) - len("&dn=")
    assert MagnetLink.parse(f"{BASE}&dn={'a' * room}").display_name == "a" * room
    error = parse_error(f"{BASE}&dn={'a' * (room + 1)}")
    assert error.parameter == ""
    assert "limit" in error.reason


def test_parameter_limit() -> None:
    many = "&".join(f"p{i}=v" for i in range(MagnetLink.MAX_PARAMETERS - 1))
    assert len(MagnetLink.parse(f"{BASE}&{many}").extra) == MagnetLink.MAX_PARAMETERS - 1
    error = parse_error(f"{BASE}&{many}&one=more")
    assert error.parameter == ""
    assert "limit" in error.reason
    # Empty pieces are not parameters.
    assert MagnetLink.parse(f"{BASE}&{many}" + "&" * 5000).extra[-1] == ("p998", "v")


# --- reading: xt --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "urn:btih:" + HASH_HEX.upper(),
        "URN:BTIH:" + HASH_HEX,
        "urn%3Abtih%3a" + HASH_HEX,
        "urn:btih:" + base64.b32encode(bytes.fromhex(HASH_HEX)).decode(),
        "urn:btih:" + base64.b32encode(bytes.fromhex(HASH_HEX)).decode().lower(),
    ],
)
def test_v1_topic_spellings(topic: str) -> None:
    assert MagnetLink.parse(f"magnet:?xt={topic}").info_hash == HASH


@pytest.mark.parametrize(
    "digest",
    [
        "",
        HASH_HEX[:-1],
        HASH_HEX + "c",
        HASH_HEX + "\n",
        "cd" * 32,  # a v2 hash is no btih
        "g" * 40,
        "1" * 32,  # base32 has no 0, 1, 8, 9
        "\u0131" * 32,  # dotless i: upper-cases to an ASCII I
        "%" + HASH_HEX,
    ],
)
def test_bad_v1_topic(digest: str) -> None:
    error = parse_error(f"magnet:?xt=urn:btih:{digest}")
    assert error.parameter == "xt"


V2_HEX = "ab" * 32


def test_v2_and_hybrid_topics() -> None:
    v2 = MagnetLink.parse(f"magnet:?xt=urn:btmh:1220{V2_HEX.upper()}")
    assert v2.info_hash == InfoHash(v2=bytes.fromhex(V2_HEX))
    hybrid = MagnetLink.parse(f"{BASE}&xt=urn:BTMH:1220{V2_HEX}&xt=urn:btih:{HASH_HEX}")
    assert hybrid.info_hash == InfoHash(v1=HASH.v1, v2=bytes.fromhex(V2_HEX))
    assert hybrid.info_hash.is_hybrid
    assert str(hybrid) == f"{BASE}&xt=urn:btmh:1220{V2_HEX}"


@pytest.mark.parametrize(
    "digest",
    [V2_HEX, "1220" + V2_HEX[:-2], "1220" + V2_HEX + "00", "1114" + V2_HEX, "1320" + V2_HEX],
)
def test_bad_v2_topic(digest: str) -> None:
    assert parse_error(f"magnet:?xt=urn:btmh:{digest}").parameter == "xt"


def test_contradictory_topics() -> None:
    other = "ab" * 20
    assert parse_error(f"{BASE}&xt=urn:btih:{other}").parameter == "xt"
    v2s = f"xt=urn:btmh:1220{V2_HEX}&xt=urn:btmh:1220{'cd' * 32}"
    assert parse_error(f"{BASE}&{v2s}").parameter == "xt"
    # The same hash twice, even spelt differently, is no contradiction.
    base32 = base64.b32encode(bytes.fromhex(HASH_HEX)).decode()
    assert MagnetLink.parse(f"{BASE}&xt=urn:btih:{base32}").info_hash == HASH


def test_other_topics_are_kept() -> None:
    link = MagnetLink.parse(f"magnet:?xt=urn:sha1:ABC&{BASE[8:]}&xt=urn:ed2k:DEF&Xt=blah")
    assert link.extra == (("xt", "urn:sha1:ABC"), ("xt", "urn:ed2k:DEF"), ("xt", "blah"))
    assert str(link) == f"magnet:?xt=urn:sha1:ABC&xt=urn:ed2k:DEF&xt=blah&{BASE[8:]}"


def test_bad_escape_in_topic_is_always_an_error() -> None:
    assert parse_error(f"{BASE}&xt=urn%ZZ").parameter == "xt"
    assert parse_error(f"{BASE}&xt=urn%FF").parameter == "xt"  # not UTF-8


def test_bep46_link_is_refused_with_a_reason() -> None:
    error = parse_error("magnet:?xs=urn:btpk:" + "ab" * 32 + "&s=" + "cd" * 8)
    assert error.parameter == "xt"
    assert "BEP 46" in error.reason


# --- reading: the other parameters ------------------------------------------------------------


def test_decoding() -> None:
    link = MagnetLink.parse(f"{BASE}&dn=a+b%20c%2Bd%c3%a9%E2%82%AC+caf\u00e9")
    assert link.display_name == "a b c+d\u00e9\u20ac caf\u00e9"


def test_parameter_names_are_case_insensitive_and_may_be_escaped() -> None:
    link = MagnetLink.parse(
        f"{BASE}&DN=x&TR=http://a&Tr.2=http://b&X.PE=1.2.3.4:5&%64ht=h:1&So=1&Kt=k&XL=3"
    )
    assert link.display_name == "x"
    assert link.trackers == ("http://a", "http://b")
    assert link.peers == (("1.2.3.4", 5),)
    assert link.dht_nodes == (("h", 1),)
    assert link.select_only == ((1, 1),)
    assert link.keywords == ("k",)
    assert link.exact_length == 3
    # Only ASCII folds: the Kelvin sign lower-cases to "k", but "\u212at" is no "kt".
    assert MagnetLink.parse(f"{BASE}&\u212at=x").extra == (("\u212at", "x"),)


def test_trackers_in_order_without_duplicates() -> None:
    link = MagnetLink.parse(
        f"{BASE}&tr.1=udp://b&tr=http://a&tr.0=udp://b&tr=http%3A%2F%2Fa&tr=HTTP://a&tr.x=udp://c"
    )
    assert link.trackers == ("udp://b", "http://a", "HTTP://a")
    assert link.extra == (("tr.x", "udp://c"),)  # not a numbered tracker: an unknown parameter


@pytest.mark.parametrize("url", ["ftp://a", "httpabc", "magnet:?xt=1", "//a", "garbage", "ws:/a"])
def test_tracker_that_is_not_a_tracker_url(url: str) -> None:
    assert MagnetLink.parse(f"{BASE}&tr={url}").trackers == ()
    assert parse_error(f"{BASE}&tr={url}", strict=True).parameter == "tr"
    assert parse_error(f"{BASE}&tr.7={url}", strict=True).parameter == "tr.7"


def test_empty_values_are_absent_even_when_strict() -> None:
    uri = f"{BASE}&dn=&tr=&tr.1=&ws=&as=&xs=&kt=&xl=&x.pe=&dht="
    for strict in (False, True):
        assert MagnetLink.parse(uri, strict=strict) == MagnetLink(HASH)
        # but for so: an empty selection, no file, as libtorrent reads it
        link = MagnetLink.parse(f"{uri}&so=&so=,,", strict=strict)
        assert link == MagnetLink(HASH, select_only=())


def test_sources_and_keywords() -> None:
    link = MagnetLink.parse(
        f"{BASE}&ws=http://w&as=http://a&xs=urn:btpk:ff&xs=http://x&ws=http://w&kt=a+b++c&kt=d%2Be"
    )
    assert link.web_seeds == ("http://w",)
    assert link.acceptable_sources == ("http://a",)
    assert link.exact_sources == ("urn:btpk:ff", "http://x")
    assert link.keywords == ("a", "b", "c", "d+e")
    assert str(link).endswith("&xs=urn:btpk:ff&xs=http%3A%2F%2Fx&kt=a+b+c+d%2Be")


def test_plus_is_a_space_everywhere() -> None:
    # Form-urlencoding, as libtorrent, Go and Python read it (webtorrent only in dn and kt).
    link = MagnetLink.parse(f"{BASE}&tr=http://t/a?k=a+b&foo+bar=b+z")
    assert link.trackers == ("http://t/a?k=a b",)
    assert link.extra == (("foo bar", "b z"),)
    assert MagnetLink.parse(str(link)) == link


def test_values_that_are_not_utf8() -> None:
    uri = f"{BASE}&dn=%FF&ws=%C3&foo=%E2%82"
    assert MagnetLink.parse(uri) == MagnetLink(HASH)
    assert parse_error(uri, strict=True).parameter == "dn"
    assert parse_error(f"{BASE}&\ud800=1", strict=True).parameter == "\ud800"
    assert parse_error(f"{BASE}&dn=\udfff", strict=True).parameter == "dn"


def test_bad_escapes() -> None:
    for piece in ("dn=%", "dn=%4", "dn=%G0", "tr=http%3A%2F%2Fa%", "x%=1"):
        assert MagnetLink.parse(f"{BASE}&{piece}") == MagnetLink(HASH)
        assert parse_error(f"{BASE}&{piece}", strict=True).parameter in ("dn", "tr", "x%")


def test_pieces_that_are_not_name_value() -> None:
    uri = f"{BASE}&justaname&=value&==="
    assert MagnetLink.parse(uri) == MagnetLink(HASH)
    assert parse_error(f"{BASE}&justaname", strict=True).parameter == "justaname"
    assert parse_error(f"{BASE}&=value", strict=True).parameter == ""


def test_split_at_the_first_equals_sign() -> None:
    link = MagnetLink.parse(f"{BASE}&tr=http://t/announce?passkey=abc&a==")
    assert link.trackers == ("http://t/announce?passkey=abc",)
    assert link.extra == (("a", "="),)


def test_display_name_and_length_repeated() -> None:
    link = MagnetLink.parse(f"{BASE}&dn=a&dn=b&dn=a&xl=5&xl=6")
    assert (link.display_name, link.exact_length) == ("a", 5)
    assert parse_error(f"{BASE}&dn=a&dn=b", strict=True).parameter == "dn"
    assert parse_error(f"{BASE}&xl=5&xl=6", strict=True).parameter == "xl"
    assert MagnetLink.parse(f"{BASE}&dn=a&dn=a&xl=5&xl=05", strict=True).exact_length == 5


@pytest.mark.parametrize(
    ("value", "length"),
    [("0", 0), ("10826029", 10826029), ("0007", 7), (str(2**63 - 1), 2**63 - 1)],
)
def test_exact_length(value: str, length: int) -> None:
    assert MagnetLink.parse(f"{BASE}&xl={value}", strict=True).exact_length == length


@pytest.mark.parametrize("value", ["-1", "1.5", "1e3", "x", " 1", "\u0661", str(2**63), "9" * 5000])
def test_bad_exact_length(value: str) -> None:
    assert MagnetLink.parse(f"{BASE}&xl={value}").exact_length is None
    assert parse_error(f"{BASE}&xl={value}", strict=True).parameter == "xl"


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("1.2.3.4:6881", ("1.2.3.4", 6881)),
        ("[::1]:1", ("::1", 1)),
        ("[2001:DB8:0:0::2]:65535", ("2001:db8::2", 65535)),
        ("example.org:80", ("example.org", 80)),
        ("Some-Host_1:080", ("Some-Host_1", 80)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_peer_addresses(text: str, endpoint: tuple[str, int]) -> None:
    for key, field in (("x.pe", "peers"), ("dht", "dht_nodes")):
        link = MagnetLink.parse(f"{BASE}&{key}={text}", strict=True)
        assert getattr(link, field) == (endpoint,)


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3.4",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "1.2.3.4:99999999999",
        "1.2.3.4:-1",
        "1.2.3.4:+1",
        "1.2.3.4:\u0661",
        "1.2.3:1",
        "1.2.3.04:1",
        "::1:80",
        "[::1]",
        "[::1]80",
        "[1.2.3.4]:80",
        "[fe80::1%eth0]:80",
        "<invalid2>:100",
        "-host:1",
        "a..b:1",
        "h\u00e9:1",
        ":80",
        "a" * 64 + ":1",
    ],
)
def test_bad_peer_addresses(text: str) -> None:
    for key in ("x.pe", "dht"):
        assert MagnetLink.parse(f"{BASE}&{key}={text}") == MagnetLink(HASH)
        assert parse_error(f"{BASE}&{key}={text}", strict=True).parameter == key


def test_peers_deduplicated_after_normalising() -> None:
    link = MagnetLink.parse(f"{BASE}&x.pe=[::1]:5&x.pe=[0:0::1]:5&x.pe=[::1]:6")
    assert link.peers == (("::1", 5), ("::1", 6))


# --- select-only (BEP 53) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "ranges"),
    [
        (["0,2,4,6-8"], ((0, 0), (2, 2), (4, 4), (6, 8))),
        (["0,2-4,3-5"], ((0, 0), (2, 5))),  # overlapping (libtorrent's test)
        (["2-4", "1"], ((1, 4),)),  # several so parameters add up; adjacent ranges merge
        (["5,3,4,4,0-1"], ((0, 1), (3, 5))),
        (["007-0010"], ((7, 10),)),
        (["0-10000"], ((0, 10_000),)),  # the largest range libtorrent reads: one pair
        ([",,1,"], ((1, 1),)),
    ],
)
def test_select_only(values: list[str], ranges: tuple[tuple[int, int], ...]) -> None:
    uri = BASE + "".join(f"&so={value}" for value in values)
    link = MagnetLink.parse(uri, strict=True)
    assert link.select_only == ranges
    assert MagnetLink.parse(str(link)) == link


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        # a value libtorrent reads selects no file if no entry is usable (it downloads
        # nothing): () not None
        ("5-3", ()),  # inverted
        ("a", None),
        ("-4", ()),
        ("3-", ()),
        ("1-2-3", ()),
        ("100000000", ()),  # past the limit (libtorrent's test)
        ("10001", ()),  # past libtorrent's max_index
        ("0-99999999", ()),
        ("0-999999999", ()),
        ("9" * 5000, ()),
        ("1,5-3,2", ((1, 2),)),  # only the bad entry goes
        ("1,a", None),  # a character besides digits, ',' and '-': the whole value goes
        ('"1,2"', None),
        ("1, 2", None),
    ],
)
def test_bad_select_only(value: str, kept: tuple[tuple[int, int], ...] | None) -> None:
    assert MagnetLink.parse(f"{BASE}&so={value}").select_only == kept
    assert parse_error(f"{BASE}&so={value}", strict=True).parameter == "so"


def test_selects() -> None:
    link = MagnetLink.from_info_hash(HASH, select_only=[(2, 4), 7, (9, 9)])
    assert [i for i in range(12) if link.selects(i)] == [2, 3, 4, 7, 9]
    assert not link.selects(-1)
    assert MagnetLink(HASH).selects(123456789)


# --- making links ----------------------------------------------------------------------------


def test_from_info_hash_normalises() -> None:
    link = MagnetLink.from_info_hash(
        HASH,
        display_name="",
        trackers=iter(["udp://a", "udp://a", "http://b"]),
        keywords=["x", "y", "x"],
        peers=[("0:0::1", 1), ("::1", 1), ("h", 2)],
        select_only=[3, (0, 1), 2, (10, 12), 11],
        extra=[("z", "1"), ("xt", "urn:ed2k:x"), ("a", "")],
    )
    assert link.display_name is None
    assert link.trackers == ("udp://a", "http://b")
    assert link.keywords == ("x", "y")
    assert link.peers == (("::1", 1), ("h", 2))
    assert link.select_only == ((0, 3), (10, 12))
    assert link.extra == (("xt", "urn:ed2k:x"), ("z", "1"), ("a", ""))
    assert MagnetLink.from_info_hash(HASH, select_only=[]).select_only == ()  # no file
    assert MagnetLink.parse(str(link)) == link


@pytest.mark.parametrize(
    ("fields", "parameter"),
    [
        ({"trackers": ("ftp://a",)}, "tr"),
        ({"trackers": ("",)}, "tr"),
        ({"web_seeds": ("",)}, "ws"),
        ({"keywords": ("a b",)}, "kt"),
        ({"keywords": ("",)}, "kt"),
        ({"display_name": "\ud800"}, "dn"),
        ({"exact_length": -1}, "xl"),
        ({"exact_length": 2**63}, "xl"),
        ({"exact_length": True}, "xl"),
        ({"peers": (("[::1]", 1),)}, "x.pe"),
        ({"peers": (("h", 0),)}, "x.pe"),
        ({"dht_nodes": (("h", 65536),)}, "dht"),
        ({"dht_nodes": (("<h>", 1),)}, "dht"),
        ({"select_only": ((3, 1),)}, "so"),
        ({"select_only": ((-1, 1),)}, "so"),
        ({"select_only": ((0, MagnetLink.MAX_FILE_INDEX + 1),)}, "so"),
        ({"extra": (("dn", "x"),)}, "dn"),
        ({"extra": (("TR.1", "x"),)}, "TR.1"),
        ({"extra": (("xt", "urn:btih:" + HASH_HEX),)}, "xt"),
        ({"extra": (("XT", "urn:ed2k:x"),)}, "XT"),
        ({"extra": (("", "x"),)}, ""),
    ],
)
def test_values_a_link_cannot_carry(fields: dict[str, Any], parameter: str) -> None:
    with pytest.raises(MagnetError) as caught:
        MagnetLink(HASH, **fields)
    assert caught.value.parameter == parameter


@pytest.mark.parametrize(
    "fields",
    [
        {"trackers": "http://a"},
        {"display_name": b"x"},
        {"peers": ("h", 1)},
        {"select_only": ((True, 2),)},
        {"select_only": (1, 2)},
        {"extra": ("a", "b")},
    ],
)
def test_values_of_the_wrong_type(fields: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        MagnetLink(HASH, **fields)


def test_wrong_info_hash_and_uri_types() -> None:
    with pytest.raises(TypeError):
        MagnetLink(HASH_HEX)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MagnetLink.parse(BASE.encode())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MagnetLink.from_info_hash(HASH, trackers="http://a")


def test_replace_validates_and_links_are_hashable() -> None:
    link = MagnetLink(HASH, trackers=("udp://a",))
    assert dataclasses.replace(link, display_name="n").display_name == "n"
    with pytest.raises(MagnetError):
        dataclasses.replace(link, trackers=("nope",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        link.display_name = "x"  # type: ignore[misc]
    assert len({link, MagnetLink.parse(str(link))}) == 1


def test_writing_escapes() -> None:
    link = MagnetLink(
        HASH,
        display_name="a b+c&d=e%f#g/h~i(j)*'!",
        trackers=("udp://h:1/a b?c=d&e",),
        keywords=("k&1", "\u00e9"),
        extra=(("x y", "a:b/c?d@e,f g&h=i+j"),),
    )
    assert str(link) == (
        f"{BASE}&dn=a+b%2Bc%26d%3De%25f%23g%2Fh~i(j)*'!"
        "&tr=udp%3A%2F%2Fh%3A1%2Fa%20b%3Fc%3Dd%26e"
        "&kt=k%261+%C3%A9"
        "&x%20y=a:b/c?d@e,f%20g%26h%3Di%2Bj"
    )
    assert MagnetLink.parse(str(link), strict=True) == link


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(magnet_module, optionflags=doctest.ELLIPSIS)
    assert (failures, tried > 0) == (0, True)


# --- properties ------------------------------------------------------------------------------

_KNOWN = {"xt", "dn", "tr", "ws", "as", "xs", "kt", "xl", "x.pe", "dht", "so"}

characters = st.one_of(
    st.sampled_from(list("%&=+#?:/[]. ~*'()!,;@$-_\x00\n\t\u00e9\u20ac\U0001f600")),
    st.characters(exclude_categories=["Cs"]),
)
texts = st.text(characters, max_size=8)
non_empty = st.text(characters, min_size=1, max_size=8)


def _is_known(name: str) -> bool:
    lowered = name.lower() if name.isascii() else name
    numbered = re.fullmatch(r"([^.]*)\.[0-9]*", lowered)  # libtorrent ignores a ".<number>"
    return (lowered if numbered is None else numbered[1]) in _KNOWN


def _is_bittorrent_topic(value: str) -> bool:
    return value[:9].isascii() and value[:9].lower() in ("urn:btih:", "urn:btmh:")


digests20 = st.binary(min_size=20, max_size=20)
digests32 = st.binary(min_size=32, max_size=32)
info_hashes = st.one_of(
    st.builds(InfoHash, v1=digests20),
    st.builds(InfoHash, v2=digests32),
    st.builds(InfoHash, v1=digests20, v2=digests32),
)
tracker_urls = st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from(["http://", "https://", "udp://", "ws://", "wss://", "HTTP://", "Udp://"]),
    texts,
)
labels = st.from_regex(r"[A-Za-z]([A-Za-z0-9_-]{0,6}[A-Za-z0-9_])?", fullmatch=True)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.lists(labels, min_size=1, max_size=3).map(".".join),
)
endpoints = st.tuples(hosts, st.integers(1, 65535))
indices = st.one_of(st.integers(0, 20), st.integers(0, MagnetLink.MAX_FILE_INDEX))
file_ranges = st.tuples(indices, indices).map(lambda pair: (min(pair), max(pair)))
extras = st.one_of(
    st.tuples(non_empty.filter(lambda name: not _is_known(name)), texts),
    st.tuples(st.just("xt"), texts.filter(lambda value: not _is_bittorrent_topic(value))),
)


def _tuples(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=3).map(tuple)


links = st.builds(
    MagnetLink,
    info_hash=info_hashes,
    display_name=st.none() | texts,
    trackers=_tuples(tracker_urls),
    web_seeds=_tuples(non_empty),
    acceptable_sources=_tuples(non_empty),
    exact_sources=_tuples(non_empty),
    keywords=_tuples(non_empty.filter(lambda word: " " not in word)),
    exact_length=st.none() | st.integers(0, MagnetLink.MAX_EXACT_LENGTH),
    peers=_tuples(endpoints),
    dht_nodes=_tuples(endpoints),
    select_only=st.none() | _tuples(file_ranges),
    extra=_tuples(extras),
)


@NORMAL
@given(links)
def test_round_trip(link: MagnetLink) -> None:
    uri = str(link)
    assert MagnetLink.parse(uri) == link
    assert MagnetLink.parse(uri, strict=True) == link
    assert uri.isascii()


# Anything at all, surrogates included, and the characters magnet links are made of.
any_characters = st.one_of(
    st.sampled_from(list("%&=+:[],.-0123456789abcdefABCDEF")),
    st.characters(),
    st.characters(categories=["Cs"]),
)
NAMES = ["xt=", "xt=urn:btih:", "xt=urn:btmh:1220", "dn=", "tr=", "tr.1=", "ws=", "as=", "xs="]
NAMES += ["kt=", "xl=", "x.pe=", "dht=", "so=", "xt=urn:btpk:", "&"]
pieces = st.lists(st.one_of(st.sampled_from(NAMES), st.text(any_characters, max_size=6)))
junk = pieces.map("".join)


def _parse_or_error(uri: str, strict: bool) -> None:
    try:
        link = MagnetLink.parse(uri, strict=strict)
    except MagnetError:
        return
    assert MagnetLink.parse(str(link), strict=True) == link


@NORMAL
@given(junk, st.booleans())
@example("magnet:?xt=urn:btih:" + "\u0131" * 32, False)
def test_any_text_gives_a_link_or_our_error(text: str, strict: bool) -> None:
    _parse_or_error(text, strict)
    _parse_or_error("magnet:?" + text, strict)
    _parse_or_error(f"{BASE}&{text}", strict)


@NORMAL
@given(links, st.data())
def test_damaged_links_give_a_link_or_our_error(link: MagnetLink, data: st.DataObject) -> None:
    uri = str(link)
    start = data.draw(st.integers(0, len(uri)))
    end = data.draw(st.integers(start, min(len(uri), start + 4)))
    damaged = uri[:start] + data.draw(st.text(any_characters, max_size=4)) + uri[end:]
    _parse_or_error(damaged, data.draw(st.booleans()))
