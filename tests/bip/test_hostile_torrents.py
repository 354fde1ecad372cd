"""A malicious torrent author against the ``bip`` command and client.

The torrents are well formed and correctly hashed (the author made them), built to hurt
whoever opens them: ``bip show`` and ``bip verify`` word them or refuse them in one line
and write nothing; a session fetching one over BEP 9 from the author's own peer (whose
metadata matches the magnet link's info-hash) either fails that torrent with the
reason or stores it strictly inside its save directory, and its other torrents go on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from _cli_helpers import assert_one_line_error
from _engine_helpers import address_of, loopback_config
from _hostile_peer import ATTACKER_IDS, HostilePeer, hostile_peer

from bip._cli import main
from bip._client import TorrentError, TorrentOptions, TorrentPhase, open_session
from bip_bencode import encode
from bip_metainfo import Info, InfoHash, MagnetLink
from bip_peer import Extended, MetadataRequest, decode_metadata_message

DEADLINE = 20.0
METADATA_PIECE = 16384


def _v1_info(files: list[dict[bytes, Any]], name: bytes = b"t") -> bytes:
    total = sum(entry.get(b"length", 0) for entry in files)
    return encode(
        {
            b"name": name,
            b"piece length": 16384,
            b"files": files,
            b"pieces": bytes(20 * max(1, -(-total // 16384))),
        }
    )


ESCAPING = _v1_info(
    [
        {b"length": 3, b"path": [b"..", b"..", b"..", b"escaped"]},
        {b"length": 3, b"path": [b"/tmp", b"abs"]},
        {b"length": 3, b"path": [b"C:", b"x\x1b[31m"]},
        {b"attr": b"l", b"path": [b"out"], b"symlink path": [b"..", b"..", b"home"]},
        {b"attr": b"l", b"path": [b"p"], b"symlink path": [b"q"]},
        {b"attr": b"l", b"path": [b"q"], b"symlink path": [b"p"]},
    ],
    name=b"..",
)

# Well-formed, hashed, and refused: a file of 2^63 bytes.
REFUSED = encode({b"name": b"x", b"piece length": 16384, b"length": 2**63, b"pieces": b""})


def _write(tmp_path: Path, name: str, info: bytes) -> Path:
    path = tmp_path / f"{name}.torrent"
    path.write_bytes(b"d4:info" + info + b"e")  # the info dict's bytes as they are
    return path


def _snapshot(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


# --- bip show / bip verify -----------------------------------------------------------


def test_show_and_verify_word_a_hostile_torrent_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torrent = _write(tmp_path, "escaping", ESCAPING)
    data = tmp_path / "data"
    data.mkdir()
    before = _snapshot(tmp_path)
    assert main(["show", str(torrent)]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown  # no terminal escape reaches the user's terminal
    assert main(["show", str(torrent), "--json"]) == 0
    capsys.readouterr()
    assert main(["verify", str(torrent), str(data), "-q"]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "escaped" in out  # named as missing, under the torrent's own directory
    assert "../" not in out
    assert _snapshot(tmp_path) == before


def test_show_refuses_a_torrent_of_impossible_size_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torrent = _write(tmp_path, "refused", REFUSED)
    for command in ("show", "verify"):
        assert_one_line_error([command, str(torrent)], "invalid_length", capsys)


def test_show_and_verify_bound_a_huge_torrent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nearly the largest file libtorrent (and so bip_metainfo) takes, about 16 TiB, in
    # 2,097,151 pieces: shown and verified without reading or making anything.
    pieces = 2**21 - 1
    info = encode(
        {
            b"name": b"big",
            b"piece length": 2**23,
            b"length": pieces * 2**23,
            b"pieces": bytes(20 * pieces),
        }
    )
    torrent = _write(tmp_path, "big", info)
    data = tmp_path / "data"
    data.mkdir()
    assert main(["show", str(torrent)]) == 0
    assert "2,097,151" in capsys.readouterr().out
    assert main(["verify", str(torrent), str(data), "-q"]) == 1  # nothing read, nothing made
    assert "missing" in capsys.readouterr().out
    assert os.listdir(data) == []


# --- a magnet link whose metadata the author serves ---------------------------------


async def _serve_metadata(peer: HostilePeer, raw: bytes) -> None:
    """Answer the session's ut_metadata requests with ``raw`` until cancelled or closed."""
    await peer.send_extended(0, {b"m": ATTACKER_IDS, b"metadata_size": len(raw)})
    answered = 0

    def more(seen: int) -> Callable[[], bool]:
        return lambda: len(_requests(peer)) > seen

    while True:
        try:
            await peer.wait_until(more(answered))
        except trio.BrokenResourceError:
            return  # the session is done with this peer (a failed torrent closes it)
        ut_metadata = peer.extension_id("ut_metadata")
        assert ut_metadata is not None
        for request in _requests(peer)[answered:]:
            start = request.piece * METADATA_PIECE
            head = encode({b"msg_type": 1, b"piece": request.piece, b"total_size": len(raw)})
            await peer.send_extended(ut_metadata, head + raw[start : start + METADATA_PIECE])
            answered += 1


def _requests(peer: HostilePeer) -> list[MetadataRequest]:
    found = []
    for message in peer.received:
        if isinstance(message, Extended) and message.extended_id == ATTACKER_IDS["ut_metadata"]:
            decoded = decode_metadata_message(message.payload)
            if isinstance(decoded, MetadataRequest):
                found.append(decoded)
    return found


async def test_magnet_metadata_built_to_hurt_is_refused_or_contained(tmp_path: Path) -> None:
    save = tmp_path / "save"
    refused_hash = InfoHash.from_info_bytes(REFUSED, v1=True)
    escaping_hash = InfoHash.from_info_bytes(ESCAPING, v1=True)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            address = address_of(session)
            refused = await session.add_torrent(
                MagnetLink.from_info_hash(refused_hash), TorrentOptions(save / "a")
            )
            contained = await session.add_torrent(
                MagnetLink.from_info_hash(escaping_hash), TorrentOptions(save / "b")
            )
            async with (
                hostile_peer(address, refused_hash) as first,
                hostile_peer(address, escaping_hash) as second,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_serve_metadata, first, REFUSED)
                nursery.start_soon(_serve_metadata, second, ESCAPING)
                with pytest.raises(TorrentError, match="length"):
                    await refused.wait_complete()
                status = refused.status()
                assert status.phase is TorrentPhase.FAILED
                assert status.error is not None
                assert "not usable" in status.error
                # The other torrent of the session got its metadata and goes on.
                while contained.status().phase is TorrentPhase.METADATA:
                    await trio.sleep(0.05)
                assert contained.status().phase is not TorrentPhase.FAILED
                assert contained.status().name == escaping_hash.hex()  # ".." is no name
                nursery.cancel_scope.cancel()
    # Everything the session made is inside the save directory; no link leads out.
    assert sorted(os.listdir(tmp_path)) == ["save"]
    inside = str(save.resolve()) + os.sep
    for path in save.rglob("*"):
        assert os.path.realpath(path).startswith(inside), path
        if path.is_symlink():
            assert path.exists(), path  # loops and links out were not created


async def test_magnet_metadata_is_parsed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _v1_info([{b"length": 1, b"path": [b"f"]}])
    threads: list[bool] = []
    real = Info.from_bytes

    def spy(data: bytes, **limits: Any) -> Info:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(data, **limits)

    monkeypatch.setattr(Info, "from_bytes", spy)  # the class the client parses with
    info_hash = InfoHash.from_info_bytes(raw, v1=True)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(
                MagnetLink.from_info_hash(info_hash), TorrentOptions(tmp_path / "save")
            )
            async with (
                hostile_peer(address_of(session), info_hash) as peer,
                trio.open_nursery() as n,
            ):
                n.start_soon(_serve_metadata, peer, raw)
                while torrent.status().phase is TorrentPhase.METADATA:
                    await trio.sleep(0.05)
                n.cancel_scope.cancel()
    monkeypatch.undo()
    assert threads
    assert not any(threads), "Info.from_bytes ran on the event loop's thread"
