"""Review r7: a magnet link's ``so`` selection (BEP 53) against the torrent's real files.

A link is written before anyone can see the torrent's file list, so its ``so`` may name
indices past the last file: libtorrent truncates the link's file priorities to the file
count once the metadata is known (``torrent::init``), selecting the rest; so does bip, where
the same index in the options (the user's own choice) still fails the torrent. And ``bip
show`` says that an empty selection selects no file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from _engine_helpers import address_of, good_pieces, make_torrent, seeder_and_leecher, write_content

from bip._client import TorrentOptions, TorrentPhase
from bip._describe import magnet_text
from bip._follow_mutable import MutableFollower
from bip_metainfo import MagnetLink, MutableTorrentLink

SIZES = (100_000, 70_000, 40_000)  # 3 files, 0..2


def _magnet(torrent_hash: Any, so: str) -> MagnetLink:
    return MagnetLink.parse(f"{MagnetLink.from_info_hash(torrent_hash)}&so={so}")


@pytest.mark.parametrize(("so", "selected"), [("1,7", {1}), ("7-9", set())])
async def test_a_link_selecting_past_the_last_file_selects_the_files_it_has(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, so: str, selected: set[int]
) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    down = tmp_path / "down"
    caplog.set_level(logging.INFO, "bip.client")
    with trio.fail_after(30):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            magnet = _magnet(torrent.info.info_hash, so)
            options = TorrentOptions(down, peers=(address_of(seeder),))
            download = await leecher.add_torrent(magnet, options)
            await download.wait_complete()
            status = download.status()
            assert download.files == frozenset(selected)
    assert status.phase is TorrentPhase.SEEDING
    if selected:  # file 1 whole (with the pieces it shares with its neighbours)
        entry = torrent.info.files[1]
        assert status.total >= entry.length
        wanted = Path(*entry.path[1:])  # under the torrent's name
        assert (down / torrent.info.name / wanted).read_bytes() == (folder / wanted).read_bytes()
    else:
        assert status.total == 0
        assert not good_pieces(torrent.info, down)
    assert any("past the torrent's 3 files" in r.getMessage() for r in caplog.records)


def test_a_mutable_link_version_from_metadata_drops_indices_past_its_files(
    tmp_path: Path,
) -> None:
    torrent = make_torrent(write_content(tmp_path / "seed", SIZES), "v1")
    link = MutableTorrentLink.parse("magnet:?xs=urn:btpk:" + "ab" * 32 + "&so=0,2-5")
    nothing = cast(Any, None)
    follower = MutableFollower(
        nothing, nothing, link, TorrentOptions(tmp_path), interval=60.0, timeout=5.0
    )
    assert follower._options_from_metadata(torrent.info).files == frozenset({0, 2})


def test_show_says_an_empty_selection_selects_no_file() -> None:
    link = MagnetLink.parse("magnet:?xt=urn:btih:" + "ab" * 20 + "&so=")
    assert link.select_only == ()
    text = magnet_text(link)
    assert "none (BEP 53)" in text
    assert "only" not in text
    assert "only 1, 3-4 (BEP 53)" in magnet_text(MagnetLink.parse(f"{link}&so=1,3-4"))
