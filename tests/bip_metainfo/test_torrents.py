"""Every .torrent in ../shared/vectors/torrents/ against what its source asserts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bip_metainfo import Metainfo, MetainfoError

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
INDEX: dict[str, Any] = json.loads((VECTORS / "torrents" / "torrents_index.json").read_text())
TORRENTS: list[dict[str, Any]] = INDEX["torrents"]
VALID = [entry for entry in TORRENTS if entry["expect"] == "valid"]
INVALID = [entry for entry in TORRENTS if entry["expect"] != "valid"]

# Where we knowingly differ from the libtorrent error a vector names, and why.
OUR_REASON = {
    # The file is corrupt bencoding with duplicate dict keys, which libtorrent's
    # decoder accepts as a "soft error" (and then finds no usable name). bip_bencode
    # rejects duplicate keys in every mode: two different values for one key (two
    # 'info' dicts, say) would make a torrent mean different things to different
    # clients.
    "bad_name.torrent": "invalid_bencoding",
}


def _id(entry: dict[str, Any]) -> str:
    return str(entry["file"]).split("/", 1)[1]


def _load(entry: dict[str, Any]) -> Metainfo:
    return Metainfo.from_bytes((VECTORS / entry["file"]).read_bytes())


def test_the_index_is_whole() -> None:
    assert len(VALID) >= 60
    assert len(INVALID) >= 30
    for entry in TORRENTS:
        assert (VECTORS / entry["file"]).exists(), entry["file"]


@pytest.mark.parametrize("entry", INVALID, ids=[_id(e) for e in INVALID])
def test_invalid_torrent_is_refused_for_the_reason_its_source_gives(entry: dict[str, Any]) -> None:
    with pytest.raises(MetainfoError) as info:
        _load(entry)
    expected = OUR_REASON.get(Path(entry["file"]).name) or entry.get("libtorrent_error")
    if expected is None:
        # No libtorrent code: the vector names the defect in words ("libtorrent_message"
        # / "error"); any MetainfoError refuses it.
        return
    assert info.value.kind.libtorrent == expected, info.value


def _plain(value: Any) -> Any:
    """A check value without the vector's explanatory suffix: 'x (note)' -> 'x'."""
    if isinstance(value, str):
        return value.split(" (", 1)[0]
    return value


def _hex_of(described: str) -> str:
    """A hash written as hex, or as "'a'*20" (twenty ASCII a's)."""
    repeated = re.fullmatch(r"'(.)'\*(\d+)", described)
    if repeated:
        return (repeated[1] * int(repeated[2])).encode().hex()
    return str(_plain(described))


def _check(torrent: Metainfo, key: str, value: Any) -> None:
    info = torrent.info
    indexed = re.fullmatch(r"(\w+)\[(\d+)\]", key)
    if indexed:
        name, index = indexed[1], int(indexed[2])
        entry = info.files[index]
        if name in ("file_path", "renamed_files"):
            renamed = re.search(r"\(renamed (.*)\)", value)
            assert entry.path_str() == (renamed[1] if renamed else _plain(value))
        elif name == "symlink":
            assert entry.symlink_target is not None
            assert "/".join(entry.symlink_target) == _plain(value)
        elif name == "file_size":
            assert entry.length == value
        elif name == "root":
            assert entry.pieces_root is not None
            assert entry.pieces_root.hex() == value
        elif name == "file_sha1":
            assert entry.sha1 == re.search(r"'([^']*)'", value)[1].encode()  # type: ignore[index]
        elif name == "trackers":
            urls = [url for tier in torrent.trackers for url in tier]
            assert urls[index] == _plain(value)
        else:
            raise AssertionError(f"no check written for {key}")
        return
    if key in ("note", "magnet"):
        return  # prose, or checked by the magnet tests
    if key == "num_files":
        if isinstance(value, str) and value.startswith(">"):
            assert len(info.files) > int(value[1:])
        else:
            assert len(info.files) == value
    elif key in ("has_v1", "has_v2"):
        assert (info.is_v1 if key == "has_v1" else info.is_v2) is value
    elif key == "v2":
        assert info.is_v2 is value
    elif key == "v2_only":
        assert (info.is_v2 and not info.is_v1) is value
    elif key in ("info_hash_v1", "info_hash_v2"):
        digest = info.info_hash.v1 if key == "info_hash_v1" else info.info_hash.v2
        assert digest is not None
        assert digest.hex() == value
    elif key in ("name", "dn"):
        assert info.name == _plain(value)
    elif key == "piece_length":
        assert info.piece_length == value
    elif key == "length":
        assert info.total_size == value
    elif key == "num_pieces":
        assert info.num_pieces == value
    elif key in ("last_piece_length", "last_piece_v2_length"):
        assert info.piece_size(info.num_pieces - 1, include_pad=False) == value
    elif key == "last_piece_v1_length":
        assert info.piece_size(info.num_pieces - 1) == info.piece_length
    elif key == "files_piece_aligned":
        assert all(
            e.offset % info.piece_length == 0 for e in info.files if e.length and not e.is_pad
        )
    elif key in ("url_list", "url_seeds"):
        assert list(torrent.url_list) == value
    elif key == "url_seeds_count":
        assert len(torrent.url_list) == value
    elif key in ("announce", "announce_deduped"):
        assert [url for tier in torrent.trackers for url in tier] == value
    elif key == "nodes":
        assert [f"{host}:{port}" for host, port in torrent.nodes] == value
    elif key == "dht_nodes":
        assert [[host, port] for host, port in torrent.nodes] == value
    elif key == "creation_date":
        assert torrent.creation_date == value
    elif key == "similar":
        found = {digest.hex() for digest in (*info.similar, *torrent.similar)}
        assert found == {_hex_of(item) for item in value}
    elif key == "collections":
        assert sorted({*info.collections, *torrent.collections}) == sorted(value)
    elif key == "pad_file":
        assert [entry.is_pad for entry in info.files] == value
    elif key == "files":
        assert [entry.path_str() for entry in info.files] == value
    elif key == "private":
        assert info.private is bool(value)
    elif key == "pieces_sha1_hex":
        assert [info.piece_hash(i).hex() for i in range(info.num_pieces)] == value
    elif key in ("piece_layers_validate", "merkle_trees_non_empty"):
        files = [entry for entry in info.files if entry.length > info.piece_length]
        assert files
        assert all(torrent.piece_layer(info.files.index(entry)) for entry in files)
    elif key == "round_trip":
        assert Metainfo.from_bytes(torrent.to_bytes()).info.info_hash == info.info_hash
        assert torrent.info.to_bytes() == info.raw
    else:
        raise AssertionError(f"no check written for {key}")


@pytest.mark.parametrize("entry", VALID, ids=[_id(e) for e in VALID])
def test_valid_torrent_loads_with_the_values_its_source_asserts(entry: dict[str, Any]) -> None:
    torrent = _load(entry)
    for key, value in (entry.get("source_checks") or {}).items():
        _check(torrent, key, value)
    hashes = torrent.info.info_hash
    if "collector_info_hash_v2" in entry and torrent.info.is_v2:
        assert hashes.v2 is not None
        assert hashes.v2.hex() == entry["collector_info_hash_v2"]
        assert hashes.v2_truncated.hex() == entry["collector_info_hash_v2_truncated"]  # type: ignore[union-attr]
    if "collector_info_hash_v1" in entry and torrent.info.is_v1:
        assert hashes.v1 is not None
        assert hashes.v1.hex() == entry["collector_info_hash_v1"]


MAGNETS: dict[str, Any] = json.loads((VECTORS / "magnet" / "magnet_vectors.json").read_text())
FROM_TORRENT = [
    vector for vector in MAGNETS["encode_vectors"] if "from_torrent" in vector.get("input", {})
]


@pytest.mark.parametrize(
    "vector", FROM_TORRENT, ids=[v["input"]["from_torrent"] for v in FROM_TORRENT]
)
def test_magnet_of_a_torrent(vector: dict[str, Any]) -> None:
    torrent = Metainfo.from_bytes((VECTORS / vector["input"]["from_torrent"]).read_bytes())
    ours = set(str(torrent.magnet()).removeprefix("magnet:?").split("&"))
    expected = set(vector["expected_uri"].removeprefix("magnet:?").split("&"))
    # Parameter order is not significant. We also name the torrent (dn), as
    # libtorrent does; the source of this vector leaves the name out.
    assert ours - expected == {f"dn={torrent.info.name}"}
    assert expected <= ours
