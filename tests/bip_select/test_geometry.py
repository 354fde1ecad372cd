"""TorrentGeometry: piece sizes, blocks, files and their priorities."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_metainfo import create_torrent
from bip_select._errors import LocalProtocolError
from bip_select._geometry import BLOCK_SIZE, Block, TorrentGeometry


def test_uniform_geometry() -> None:
    g = TorrentGeometry(4, 65536)
    assert g.total_length == 4 * 65536
    assert [g.piece_size(p) for p in range(4)] == [65536] * 4
    assert g.blocks_in_piece(3) == 4
    assert g.blocks(1) == tuple(Block(1, i * BLOCK_SIZE, BLOCK_SIZE) for i in range(4))
    assert g.num_files == 0


def test_short_last_piece_and_block() -> None:
    g = TorrentGeometry(3, 40000, 2 * 40000 + 20000)
    assert g.piece_size(2) == 20000
    # 40000 = 16384 + 16384 + 7232: the last block of a full piece is short too.
    assert g.blocks(0)[-1] == Block(0, 32768, 7232)
    assert g.blocks(2) == (Block(2, 0, 16384), Block(2, 16384, 3616))
    assert g.block(2, 1) == Block(2, 16384, 3616)
    assert g.block_index(Block(2, 16384, 3616)) == 1
    assert list(g.iter_blocks(0, 1)) == list(g.blocks(0)[1:])


def test_is_block_rejects_everything_else() -> None:
    g = TorrentGeometry(2, 32768, 40000)
    assert g.is_block(Block(1, 0, 7232))
    assert not g.is_block(Block(1, 0, 16384))  # too long for the short piece
    assert not g.is_block(Block(0, 1, 16384))  # unaligned
    assert not g.is_block(Block(2, 0, 16384))  # no such piece
    assert not g.is_block(Block(-1, 0, 16384))
    assert not g.is_block(Block(0, 32768, 16384))  # past the end
    assert not g.is_block((0, 0))
    assert not g.is_block(("0", 0, 16384))
    with pytest.raises(LocalProtocolError):
        g.block_index(Block(0, 1, 16384))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0, 16384), {}),
        ((1, 0), {}),
        ((2, 16384, 16384), {}),  # two pieces need more than one piece of bytes
        ((2, 16384, 3 * 16384), {}),
        ((2, 16384), {"piece_sizes": {5: 100}}),
        ((2, 16384), {"piece_sizes": {1: 0}}),
        ((2, 16384, 5), {"piece_sizes": {1: 100}}),
        ((2, 16384), {"file_pieces": [range(3)]}),
    ],
)
def test_invalid_geometry(args: tuple[int, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        TorrentGeometry(*args, **kwargs)  # type: ignore[arg-type]


def test_bad_queries() -> None:
    g = TorrentGeometry(2, 16384)
    for call in (
        lambda: g.piece_size(2),
        lambda: g.blocks_in_piece(-1),
        lambda: g.block(0, 1),
        lambda: g.block(0, -1),
        lambda: g.file_pieces(0),
        lambda: g.piece_priorities([4]),
    ):
        with pytest.raises(LocalProtocolError):
            call()


def test_piece_priorities_take_the_max_of_files() -> None:
    g = TorrentGeometry(4, 16384, file_pieces=[range(2), range(1, 4), range(0)])
    assert g.piece_priorities([1, 0, 7]) == [1, 1, 0, 0]
    assert g.piece_priorities([1, 6, 0]) == [1, 6, 6, 6]
    with pytest.raises(LocalProtocolError):
        g.piece_priorities([1, 8, 0])


def _tree(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "album"
    root.mkdir()
    (root / "a.bin").write_bytes(b"a" * 40000)
    (root / "b.bin").write_bytes(b"b" * 20000)
    (root / "c.bin").write_bytes(b"")
    return root


def test_from_v2_info_short_piece_per_file(tmp_path: pathlib.Path) -> None:
    info = create_torrent(
        _tree(tmp_path), version="v2", piece_length=32768, creation_date=None
    ).info
    g = TorrentGeometry.from_info(info)
    assert g.num_pieces == info.num_pieces == 3
    assert [g.piece_size(p) for p in range(3)] == [info.piece_size(p) for p in range(3)]
    files = [f.path[-1] for f in info.files]
    assert g.file_pieces(files.index("a.bin")) == range(2)
    assert g.file_pieces(files.index("b.bin")) == range(2, 3)
    assert g.file_pieces(files.index("c.bin")) == range(0)


def test_from_hybrid_info_pads_are_on_the_wire(tmp_path: pathlib.Path) -> None:
    info = create_torrent(
        _tree(tmp_path), version="hybrid", piece_length=32768, creation_date=None
    ).info
    g = TorrentGeometry.from_info(info)
    assert [g.piece_size(p) for p in range(g.num_pieces)] == [
        info.piece_size(p) for p in range(info.num_pieces)
    ]
    assert g.piece_size(1) == 32768  # a pad file fills the end of a.bin's last piece
    pads = [i for i, f in enumerate(info.files) if f.is_pad]
    assert pads
    assert all(g.file_pieces(i) == range(0) for i in pads)
    priorities = [0] * len(info.files)
    priorities[[f.path[-1] for f in info.files].index("b.bin")] = 4
    assert g.piece_priorities(priorities) == [0, 0, 4]


def test_from_v1_info(tmp_path: pathlib.Path) -> None:
    info = create_torrent(
        _tree(tmp_path), version="v1", piece_length=32768, creation_date=None
    ).info
    g = TorrentGeometry.from_info(info)
    assert g.total_length == 60000
    assert [g.piece_size(p) for p in range(g.num_pieces)] == [32768, 60000 - 32768]


@given(
    st.integers(1, 50),
    st.integers(1, 5 * BLOCK_SIZE),
    st.data(),
)
def test_blocks_tile_every_piece(num: int, length: int, data: st.DataObject) -> None:
    last = data.draw(st.integers(1, length))
    g = TorrentGeometry(num, length, (num - 1) * length + last)
    total = 0
    for piece in range(num):
        blocks = g.blocks(piece)
        assert len(blocks) == g.blocks_in_piece(piece)
        assert sum(b.length for b in blocks) == g.piece_size(piece)
        for i, b in enumerate(blocks):
            assert g.is_block(b)
            assert g.block_index(b) == i
            assert g.block(piece, i) == b
        total += g.piece_size(piece)
    assert total == g.total_length
