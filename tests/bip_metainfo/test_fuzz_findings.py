"""Regressions for what coverage-guided fuzzing of the metainfo parsers found.

Each input is the minimised form of a fuzzer finding: before the fix it escaped as an
exception other than :class:`MetainfoError` (or from a method that documents none).
"""

from __future__ import annotations

from typing import Any

from bip_bencode import encode
from bip_metainfo import MagnetLink, Metainfo

INFO: dict[bytes, Any] = {
    b"length": 5,
    b"name": b"x",
    b"piece length": 16384,
    b"pieces": bytes(20),
}


def _torrent(**fields: Any) -> Metainfo:
    document: dict[bytes, Any] = {b"info": INFO}
    document.update({key.replace("_", "-").encode(): value for key, value in fields.items()})
    return Metainfo.from_bytes(encode(document))


def test_web_seed_with_unclosed_ipv6_bracket_is_dropped_not_a_bare_value_error() -> None:
    """urlsplit raised ValueError ("Invalid IPv6 URL") out of Metainfo.from_bytes."""
    torrent = _torrent(url_list=[b"http://[x/", b"http://example.org/a b"])
    assert torrent.url_list == ("http://example.org/a%20b",)


def test_lone_unparseable_web_seed_string_is_dropped() -> None:
    assert _torrent(url_list=b"http://[::1/file").url_list == ()


def test_magnet_of_torrent_with_schemeless_tracker_skips_it() -> None:
    """magnet() raised MagnetError for a scheme-less tracker (libtorrent test torrents have one)."""
    torrent = _torrent(
        announce=b"udp://t.example:80/announce",
        announce_list=[[b"udp://t.example:80/announce"], [b"tracker.example:80/announce"]],
    )
    assert torrent.trackers[1] == ("tracker.example:80/announce",)
    link = torrent.magnet()
    assert link.trackers == ("udp://t.example:80/announce",)
    assert MagnetLink.parse(link.to_uri()) == link


def test_magnet_of_torrent_whose_only_tracker_is_unusable_has_none() -> None:
    assert _torrent(announce=b"dht://whatever").magnet().trackers == ()
