"""A torrent named as bip's own folder in the save directory (``.bip``, which holds every
torrent's resume data and the DHT's state) is refused: added from a .torrent, or once a magnet
link's metadata names it; in any spelling a case-insensitive file system takes for it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio
from _cli_helpers import assert_one_line_error
from _engine_helpers import address_of, loopback_config
from _hostile_peer import hostile_peer
from test_hostile_torrents import _serve_metadata

from bip._client import RESUME_DIRECTORY, TorrentError, TorrentOptions, TorrentPhase, open_session
from bip._client._resume import ResumeStore
from bip_bencode import Encodable, encode
from bip_metainfo import InfoHash, MagnetLink, Metainfo

DEADLINE = 20.0
DATA = b"hello"


def _info(name: bytes, *, multi: bool) -> bytes:
    fields: dict[bytes, Encodable] = {
        b"name": name,
        b"piece length": 16384,
        b"pieces": hashlib.sha1(DATA).digest(),
    }
    if multi:
        fields[b"files"] = [{b"length": len(DATA), b"path": [b"dht.state"]}]
    else:
        fields[b"length"] = len(DATA)
    return encode(fields)


@pytest.mark.parametrize("multi", [True, False], ids=["folder", "single-file"])
@pytest.mark.parametrize(
    "name",
    # As given, upper case (Windows, macOS), with what the sanitiser drops (a trailing dot,
    # a bidirectional mark), and with a dotless i, which NTFS upper-cases to I.
    [b".bip", b".BIP", b".bip.", b"\xe2\x80\x8e.Bip", ".b\u0131p".encode()],
)
async def test_a_torrent_named_as_the_state_folder_is_refused(
    tmp_path: Path, name: bytes, multi: bool
) -> None:
    torrent = Metainfo.from_bytes(b"d4:info" + _info(name, multi=multi) + b"e")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            with pytest.raises(TorrentError, match=rf"{RESUME_DIRECTORY}.*resume data"):
                await session.add_torrent(torrent, TorrentOptions(tmp_path))
            assert session.torrents == ()
    assert list(tmp_path.iterdir()) == []


async def test_a_name_beside_it_is_taken(tmp_path: Path) -> None:
    torrent = Metainfo.from_bytes(b"d4:info" + _info(b".bips", multi=True) + b"e")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            added = await session.add_torrent(torrent, TorrentOptions(tmp_path))
            assert added.status().phase is not TorrentPhase.FAILED


async def test_a_magnet_whose_metadata_names_the_state_folder_fails(tmp_path: Path) -> None:
    raw = _info(b".bip", multi=True)
    info_hash = InfoHash.from_info_bytes(raw, v1=True)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(
                MagnetLink.from_info_hash(info_hash), TorrentOptions(tmp_path)
            )
            async with (
                hostile_peer(address_of(session), info_hash) as peer,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_serve_metadata, peer, raw)
                with pytest.raises(TorrentError, match=rf"{RESUME_DIRECTORY}.*resume data"):
                    await torrent.wait_complete()
                assert torrent.status().phase is TorrentPhase.FAILED
                nursery.cancel_scope.cancel()
    # Not kept for the next run, and nothing of the torrent's written where the state lives.
    assert not ResumeStore(tmp_path, info_hash).torrent_path.exists()
    assert not (tmp_path / RESUME_DIRECTORY / "dht.state").exists()


@pytest.mark.parametrize("command", ["download", "seed"])
def test_download_and_seed_say_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = tmp_path / "evil.torrent"
    path.write_bytes(b"d4:info" + _info(b".bip", multi=True) + b"e")
    save = tmp_path / "save"
    save.mkdir()
    where = ["-d", str(save)] if command == "download" else [str(save)]
    local = ["--bind", "127.0.0.1", "--port", "0", "--no-dht", "--no-trackers", "-q"]
    assert_one_line_error([command, str(path), *where, *local], "resume data", capsys)
    assert list(save.iterdir()) == []
