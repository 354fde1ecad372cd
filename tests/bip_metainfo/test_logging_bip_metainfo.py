"""bip_metainfo's logging: soft problems of torrents and magnets from the wild at DEBUG, one
record per kind per torrent; create_torrent at DEBUG; nothing louder but create_torrent's one
WARNING that hashing may end in a refusal (test_create_review_mends)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from bip_bencode import encode
from bip_metainfo._create import create_torrent
from bip_metainfo._errors import MagnetError
from bip_metainfo._magnet import MagnetLink
from bip_metainfo._metainfo import Metainfo

TORRENT = "bip_metainfo.torrent"
MAGNET = "bip_metainfo.magnet"
CREATE = "bip_metainfo.create"
HEX = "ab" * 20
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "torrents"


def _messages(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == name)
    return [r.getMessage() for r in caplog.records if r.name == name]


def _torrent(name: bytes, files: list[dict[bytes, Any]]) -> bytes:
    size = sum(entry[b"length"] for entry in files)
    pieces = -(-size // 16384)
    info: dict[bytes, Any] = {b"name": name, b"piece length": 16384}
    info[b"pieces"] = b"\x01" * 20 * pieces
    info[b"files"] = files
    return encode({b"info": info})


def test_a_clean_torrent_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_metainfo")
    Metainfo.from_bytes(_torrent(b"t", [{b"length": 5, b"path": [b"a"]}]))
    assert caplog.records == []


def test_bytes_after_the_torrent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_metainfo")
    torrent = Metainfo.from_bytes(_torrent(b"t", [{b"length": 5, b"path": [b"a"]}]) + b"\r\n")
    assert _messages(caplog, TORRENT) == [
        f"torrent {torrent.info.info_hash}: ignored 2 bytes after its dictionary"
    ]


def test_a_name_that_had_to_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_metainfo")
    torrent = Metainfo.from_bytes(_torrent(b"a:b", [{b"length": 5, b"path": [b"a"]}]))
    assert _messages(caplog, TORRENT) == [
        f"torrent {torrent.info.info_hash}: its name b'a:b' became {torrent.info.name!r}"
    ]
    caplog.clear()
    torrent = Metainfo.from_bytes(_torrent(b"..", [{b"length": 5, b"path": [b"a"]}]))
    assert torrent.info.name == torrent.info.info_hash.hex()
    assert _messages(caplog, TORRENT) == [
        f"torrent {torrent.info.info_hash}: its name b'..' became {torrent.info.name!r}"
    ]


def test_clashing_paths_are_one_record_per_torrent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_metainfo")
    files = [{b"length": 1, b"path": [name % i]} for i in range(50) for name in (b"x%d", b"X%d")]
    torrent = Metainfo.from_bytes(_torrent(b"t", files))
    assert _messages(caplog, TORRENT) == [
        f"torrent {torrent.info.info_hash}: renamed 50 files whose paths clash "
        "(the first: t/X0 to t/X0.1)"
    ]


def test_symlinks_to_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_metainfo")
    files = [
        {b"length": 5, b"path": [b"a"]},
        {b"length": 0, b"path": [b"link"], b"attr": b"l", b"symlink path": [b"nowhere"]},
    ]
    torrent = Metainfo.from_bytes(_torrent(b"t", files))
    assert torrent.files[1].symlink_target == ("t", "link")
    assert _messages(caplog, TORRENT) == [
        f"torrent {torrent.info.info_hash}: 1 symlinks point at nothing in the torrent and now "
        "at themselves (the first: t/link)"
    ]


def test_a_magnet_with_bad_parameters_is_one_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_metainfo")
    uri = f"magnet:?xt=urn:btih:{HEX}&tr=ftp://x&x.pe=nowhere&xl=-1&dn=ok"
    link = MagnetLink.parse(uri)
    [message] = _messages(caplog, MAGNET)
    assert message.startswith(
        f"magnet link for {link.info_hash}: skipped 3 malformed parameters (the first: tr: "
    )
    caplog.clear()
    with pytest.raises(MagnetError):
        MagnetLink.parse(uri, strict=True)
    MagnetLink.parse(f"magnet:?xt=urn:btih:{HEX}&dn=ok")
    assert caplog.records == []


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks")
def test_create_torrent_logs_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_metainfo")
    root = tmp_path / "share"
    root.mkdir()
    (root / "a.bin").write_bytes(b"x" * 40_000)
    (root / ".hidden").write_bytes(b"h")
    os.mkfifo(root / "pipe")
    (tmp_path / "outside").write_bytes(b"o")
    (root / "out").symlink_to(tmp_path / "outside")
    torrent = create_torrent(root, version="v1", piece_length=16384, threads=1)
    messages = _messages(caplog, CREATE)
    assert messages[:2] == [
        f"left out {str(root / 'out')!r}: a symbolic link to outside the torrent",
        f"left out {str(root / 'pipe')!r}: not a regular file or a directory",
    ]
    assert messages[2] == (
        f"creating v1 torrent 'share' from {str(root)!r}: 2 files, 40001 bytes in 3 pieces "
        "of 16384 bytes, hashed on 1 threads"
    )
    assert messages[3].startswith(f"created torrent {torrent.info.info_hash} ('share') in ")
    assert len(messages) == 4
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]


def _valid_vectors() -> list[bytes]:
    index = json.loads((VECTORS / "torrents_index.json").read_text())
    return [
        (VECTORS.parent / entry["file"]).read_bytes()
        for entry in index["torrents"]
        if entry["expect"] == "valid"
    ]


@pytest.mark.parametrize("rounds", [1, 4])
def test_parsing_many_torrents_makes_no_noise(
    rounds: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_metainfo")
    vectors = _valid_vectors()
    for _ in range(rounds):
        for data in vectors:
            Metainfo.from_bytes(data)
    root = tmp_path / "many"
    root.mkdir()
    for i in range(100 * rounds):
        (root / f"{i}.bin").write_bytes(bytes([i % 256]) * 1000)
    create_torrent(root, threads=1)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    assert all(r.name in (TORRENT, MAGNET, CREATE) for r in caplog.records)
    # at most a few records per torrent parsed, whatever its number of files
    assert len(caplog.records) <= rounds * 4 * len(vectors) + 2
