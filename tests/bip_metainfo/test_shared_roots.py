"""A v2 file tree where one ``pieces root`` names files of different lengths is refused.

A root hashes a file's content: files sharing one are copies of one file, of one length.
Two lengths under one root leave its piece layer fitting one of them only (libtorrent refuses
such a torrent's ``piece layers``); identical copies stay legal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest

from bip_bencode import encode
from bip_metainfo import (
    Info,
    Metainfo,
    MetainfoError,
    MetainfoErrorKind,
    block_hashes,
    create_torrent,
    piece_layer,
    pieces_root,
)

BLOCK = 16384
DATA = bytes(range(256)) * (5 * BLOCK // 256)  # 5 pieces of one block


def _root(data: bytes) -> bytes:
    root = pieces_root(data)
    assert root is not None  # data is not empty
    return root


ROOT = _root(DATA)
LAYER = piece_layer(block_hashes(DATA), BLOCK)


def _file(length: int, root: bytes = ROOT) -> dict[bytes, Any]:
    return {b"": {b"length": length, b"pieces root": root}}


def _info(tree: dict[bytes, Any]) -> dict[bytes, Any]:
    return {b"name": b"t", b"piece length": BLOCK, b"meta version": 2, b"file tree": tree}


def test_one_root_at_two_lengths_is_refused() -> None:
    raw = encode(_info({b"a": _file(5 * BLOCK), b"b": _file(3 * BLOCK)}))
    with pytest.raises(MetainfoError) as caught:
        Info.from_bytes(raw)
    assert caught.value.kind is MetainfoErrorKind.INVALID_FILE_TREE
    reason = caught.value.reason
    assert ROOT.hex()[:16] in reason  # named, shortly
    assert ROOT.hex() not in reason
    assert "'t/a' (81920 bytes)" in reason
    assert "'t/b' (49152 bytes)" in reason


@pytest.mark.parametrize("second", [100, 1, 6 * BLOCK])
def test_refused_whatever_the_lengths_and_the_layers(second: int) -> None:
    # A file within one piece (no layer), or longer: a root has one length. Deep in the
    # tree too, and whether the .torrent carries the root's layer or not.
    tree = {b"d": {b"e": _file(5 * BLOCK)}, b"z": _file(second)}
    layers: dict[bytes, Any] = {b"piece layers": {ROOT: LAYER}}
    for document in ({b"info": _info(tree)}, {b"info": _info(tree), **layers}):
        with pytest.raises(MetainfoError, match=ROOT.hex()[:16]):
            Metainfo.from_bytes(encode(document))


def test_identical_files_share_a_root() -> None:
    tree = {b"a": _file(5 * BLOCK), b"b": {b"c": _file(5 * BLOCK)}, b"d": _file(5 * BLOCK)}
    torrent = Metainfo.from_bytes(encode({b"info": _info(tree), b"piece layers": {ROOT: LAYER}}))
    real = [entry for entry in torrent.info.files if not entry.is_pad]
    assert [entry.pieces_root for entry in real] == [ROOT] * 3
    assert torrent.piece_layers == {ROOT: LAYER}


def test_hybrid_checked_as_well() -> None:
    files = [{b"length": 5 * BLOCK, b"path": [b"a"]}, {b"length": 3 * BLOCK, b"path": [b"b"]}]
    info = _info({b"a": _file(5 * BLOCK), b"b": _file(3 * BLOCK)})
    info[b"files"] = files
    info[b"pieces"] = bytes(8 * 20)
    with pytest.raises(MetainfoError, match="names files of different lengths"):
        Info.from_bytes(encode(info))
    # The same hybrid with a true root for "b" is fine.
    other = _root(DATA[: 3 * BLOCK])
    info[b"file tree"] = {b"a": _file(5 * BLOCK), b"b": _file(3 * BLOCK, other)}
    assert Info.from_bytes(encode(info)).is_hybrid


@pytest.mark.parametrize("version", ["v2", "hybrid"])
def test_created_torrents_of_copies_parse(tmp_path: Path, version: Literal["v2", "hybrid"]) -> None:
    folder = tmp_path / "copies"
    folder.mkdir()
    for name in ("one.bin", "two.bin"):
        (folder / name).write_bytes(DATA)
    (folder / "other.bin").write_bytes(DATA[:1000])
    torrent = create_torrent(folder, version=version, piece_length=BLOCK)
    again = Metainfo.from_bytes(torrent.to_bytes())
    roots = [entry.pieces_root for entry in again.info.files if not entry.is_pad]
    assert roots.count(ROOT) == 2
    assert again.piece_layers == {ROOT: LAYER}


def test_long_paths_are_cut_in_the_message() -> None:
    # A hostile tree's paths can be 100 directories of long names: the message keeps
    # each path's end.
    deep: dict[bytes, Any] = {b"a": _file(5 * BLOCK)}
    for level in range(40):
        deep = {b"%02d" % level + b"x" * 60: deep}
    with pytest.raises(MetainfoError) as caught:
        Info.from_bytes(encode(_info({b"d": deep, b"z": _file(3 * BLOCK)})))
    reason = caught.value.reason
    assert len(reason) < 400
    assert "'...xxxx" in reason  # its start cut
    assert "xxxxxxxx/a' (81920 bytes)" in reason
    assert "'t/z' (49152 bytes)" in reason
