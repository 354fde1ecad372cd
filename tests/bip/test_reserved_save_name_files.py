"""Where a torrent's files go, not only its name, must stay out of the save directory's
``.bip`` folder: a v2-only single-file torrent stores its file under the file tree's key
(whatever ``name`` says), a name can differ from ``.bip`` by code points macOS ignores, and
another path in the save directory can be that folder (a link, an 8.3 alias on NTFS)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config

from bip._client import RESUME_DIRECTORY, TorrentError, TorrentOptions, TorrentPhase, open_session
from bip._client._torrent import check_storage_name, check_storage_place
from bip_bencode import Encodable, encode
from bip_metainfo import Info, Metainfo

DEADLINE = 20.0
DATA = b"hello"


def _v2_single(key: bytes, *, name: bytes = b"innocent") -> bytes:
    root = hashlib.sha256(DATA).digest()  # one block: its hash is the root
    leaf: dict[bytes, Encodable] = {b"length": len(DATA), b"pieces root": root}
    return encode(
        {
            b"name": name,
            b"piece length": 16384,
            b"meta version": 2,
            b"file tree": {key: {b"": leaf}},
        }
    )


def _v1(name: bytes, *, multi: bool = True) -> bytes:
    fields: dict[bytes, Encodable] = {
        b"name": name,
        b"piece length": 16384,
        b"pieces": hashlib.sha1(DATA).digest(),
    }
    if multi:
        fields[b"files"] = [{b"length": len(DATA), b"path": [b"f"]}]
    else:
        fields[b"length"] = len(DATA)
    return encode(fields)


@pytest.mark.parametrize(
    "key",
    # As is, upper case, and with a code point macOS's HFS+ ignores in names (the sanitiser
    # keeps them: they are printable text elsewhere).
    [b".bip", b".BIP", ".bip\u200c".encode(), "\ufeff.bip".encode(), ".b\u200dip".encode()],
)
def test_a_v2_single_file_stored_as_the_state_folder_is_refused(key: bytes) -> None:
    info = Info.from_bytes(_v2_single(key))
    assert info.name == "innocent"
    assert info.files[0].path == (key.decode(),)  # stored as SAVE_DIR/<key>, not as the name
    with pytest.raises(TorrentError, match=rf"file .* {RESUME_DIRECTORY} .*resume data"):
        check_storage_name(info)


@pytest.mark.parametrize("name", [".bip\u200c".encode(), "\u2060.bip".encode()])
def test_a_name_macos_takes_for_the_state_folder_is_refused(name: bytes) -> None:
    for multi in (True, False):
        with pytest.raises(TorrentError, match=rf"name .* {RESUME_DIRECTORY} .*resume data"):
            check_storage_name(Info.from_bytes(_v1(name, multi=multi)))


def test_a_v2_single_file_named_state_folder_stored_elsewhere_is_taken() -> None:
    # Its one file is SAVE_DIR/data: nothing of it lands in SAVE_DIR/.bip.
    check_storage_name(Info.from_bytes(_v2_single(b"data", name=b".bip")))


async def test_the_session_refuses_it_before_writing_anything(tmp_path: Path) -> None:
    torrent = Metainfo.from_bytes(b"d4:info" + _v2_single(b".bip") + b"e")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            with pytest.raises(TorrentError, match="resume data"):
                await session.add_torrent(torrent, TorrentOptions(tmp_path))
            assert session.torrents == ()
    assert list(tmp_path.iterdir()) == []


def _aliased(save: Path, alias: str) -> Path:
    """``save/.bip`` with a second name ``save/alias`` (a link here; an ignorable code point
    on HFS+ or an 8.3 short name on NTFS is the same thing by other means)."""
    state = save / RESUME_DIRECTORY
    state.mkdir(parents=True)
    (state / "dht.state").write_bytes(b"state")
    (save / alias).symlink_to(state, target_is_directory=True)
    return state


def test_check_storage_place(tmp_path: Path) -> None:
    info = Info.from_bytes(_v1(b"alias"))
    check_storage_place(info, tmp_path)  # neither there yet: nothing shared
    _aliased(tmp_path, "alias")
    with pytest.raises(TorrentError, match=rf"'alias' .* is the folder {RESUME_DIRECTORY}"):
        check_storage_place(info, tmp_path)
    check_storage_place(Info.from_bytes(_v1(b"other")), tmp_path)


async def test_storage_at_a_second_name_of_the_state_folder_fails(tmp_path: Path) -> None:
    state = _aliased(tmp_path, "alias")
    torrent = Metainfo.from_bytes(b"d4:info" + _v1(b"alias") + b"e")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            added = await session.add_torrent(torrent, TorrentOptions(tmp_path, resume=False))
            with pytest.raises(TorrentError, match=f"is the folder {RESUME_DIRECTORY}"):
                await added.wait_complete()
            assert added.status().phase is TorrentPhase.FAILED
    assert sorted(path.name for path in state.iterdir()) == ["dht.state"]


async def test_a_move_to_a_second_name_of_the_state_folder_fails(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    (here / "alias").mkdir(parents=True)
    (here / "alias" / "f").write_bytes(DATA)
    state = _aliased(there, "alias")
    torrent = Metainfo.from_bytes(b"d4:info" + _v1(b"alias") + b"e")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            added = await session.add_torrent(torrent, TorrentOptions(here, resume=False))
            await added.wait_complete()
            with pytest.raises(TorrentError, match=f"is the folder {RESUME_DIRECTORY}"):
                await added.move_storage(there)
            assert added.options.save_dir == here
            assert added.status().phase is not TorrentPhase.FAILED
    assert sorted(path.name for path in state.iterdir()) == ["dht.state"]
    assert (here / "alias" / "f").read_bytes() == DATA
