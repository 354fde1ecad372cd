"""A torrent's peers between runs: ``.bip/HASH.peers``, saved with the resume data and read
back as the ``resume`` source (libtorrent's ``peers`` / ``peers6`` / ``banned_peers`` in its
resume data)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)
from hypothesis import given
from hypothesis import strategies as st

import bip._client._resume
from bip._client import TorrentOptions, open_session
from bip._client._resume import (
    MAX_SAVED_BANNED,
    MAX_SAVED_PEERS,
    ResumeStore,
    SavedPeers,
    _write_atomically,
    decode_saved_peers,
    encode_saved_peers,
)
from bip_bencode import Encodable, encode
from bip_handshake import PeerAddress, PeerOrigin
from bip_metainfo import InfoHash

SIZES = (60_000, 20_000)
DEADLINE = 60.0

V4 = PeerAddress.parse("10.0.0.1:6881")
V6 = PeerAddress.parse("[2001:db8::1]:51413")
MAPPED = PeerAddress.parse("[::ffff:10.0.0.2]:6881")


# -- the file's format ------------------------------------------------------------------------


def test_round_trip_both_families_and_bans() -> None:
    banned = (IPv4Address("192.0.2.7"), IPv6Address("2001:db8::bad"))
    data = encode_saved_peers([V4, V6, MAPPED], banned)
    saved = decode_saved_peers(data)
    # Grouped by family (as libtorrent's peers / peers6), each group in its order.
    assert saved.peers == (V4, MAPPED.normalized(), V6)
    assert saved.banned == banned


def test_the_format_is_libtorrents_keys_compact() -> None:
    data = encode_saved_peers([V4], [IPv4Address("192.0.2.7")])
    assert data == encode(
        {
            b"banned_peers": bytes([192, 0, 2, 7, 0, 0]),
            b"banned_peers6": b"",
            b"peers": V4.to_compact(),
            b"peers6": b"",
        }
    )


def test_saving_is_bounded() -> None:
    many = [PeerAddress(IPv4Address(0x0A000000 + i), 6881) for i in range(1, 1000)]
    hosts = [IPv4Address(0x0B000000 + i) for i in range(5000)]
    saved = decode_saved_peers(encode_saved_peers(many, hosts))
    assert saved.peers == tuple(many[:MAX_SAVED_PEERS])
    assert saved.banned == tuple(hosts[:MAX_SAVED_BANNED])


def test_scoped_banned_host_is_left_out() -> None:
    saved = decode_saved_peers(encode_saved_peers([], [IPv6Address("fe80::1%2")]))
    assert saved == SavedPeers()


def test_garbage_gives_nothing_or_what_is_readable() -> None:
    assert decode_saved_peers(b"") == SavedPeers()
    assert decode_saved_peers(b"not bencode") == SavedPeers()
    assert decode_saved_peers(b"li1ee") == SavedPeers()  # not a dictionary
    assert decode_saved_peers(b"d5:peersi3ee") == SavedPeers()  # not a string
    # A bad length in one key costs that key only; unconnectable addresses are dropped.
    zero_port = PeerAddress.parse("10.0.0.3:0").to_compact()
    data = encode({b"peers": V4.to_compact() + zero_port, b"peers6": b"12345"})
    assert decode_saved_peers(data) == SavedPeers(peers=(V4,))
    # Duplicates once; too many entries in one key: that key is ignored (not ours).
    assert decode_saved_peers(encode({b"peers": V4.to_compact() * 2})).peers == (V4,)
    too_many = encode({b"peers": V4.to_compact() * (MAX_SAVED_PEERS + 1)})
    assert decode_saved_peers(too_many) == SavedPeers()
    # Larger than any file we write: not decoded at all.
    huge = encode({b"peers": b"", b"x": b"y" * 100_000})
    assert decode_saved_peers(huge) == SavedPeers()


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    saved = decode_saved_peers(data)
    assert len(saved.peers) <= MAX_SAVED_PEERS
    assert all(address.is_connectable for address in saved.peers)


@given(
    st.dictionaries(
        st.sampled_from([b"peers", b"peers6", b"banned_peers", b"banned_peers6", b"other"]),
        st.one_of(st.binary(max_size=80), st.integers(), st.lists(st.binary(max_size=6))),
    )
)
def test_arbitrary_documents_never_raise(document: dict[bytes, Encodable]) -> None:
    saved = decode_saved_peers(encode(document))
    assert len(saved.banned) <= MAX_SAVED_BANNED


# -- the store ------------------------------------------------------------------------------


async def test_store_round_trip_and_missing_or_unreadable_files(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path, InfoHash(v1=bytes(range(20))))
    assert await store.load_peers() == SavedPeers()  # an old save: no peers file
    await store.save_peers([V4, V6], [IPv4Address("192.0.2.7")])
    assert store.peers_path.name == bytes(range(20)).hex() + ".peers"
    saved = await store.load_peers()
    assert saved.peers == (V4, V6)
    assert saved.banned == (IPv4Address("192.0.2.7"),)
    store.peers_path.write_bytes(b"\xff" * 70_000)  # not ours: read only in part, ignored
    assert await store.load_peers() == SavedPeers()
    store.peers_path.unlink()
    store.peers_path.mkdir()  # unreadable
    assert await store.load_peers() == SavedPeers()


async def test_store_skips_writing_the_same_peers_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peers are saved with every resume save (every few seconds): an unchanged file is
    # not written again, a changed one is, and a failed write is retried.
    writes: list[bytes] = []
    failing = False

    def write(path: Path, data: bytes) -> None:
        if failing:
            raise OSError("disk full")
        writes.append(data)
        _write_atomically(path, data)

    monkeypatch.setattr(bip._client._resume, "_write_atomically", write)
    store = ResumeStore(tmp_path, InfoHash(v1=bytes(range(20))))
    await store.save_peers([V4], [])
    await store.save_peers([V4], [])
    assert len(writes) == 1
    await store.save_peers([V4, V6], [])
    await store.save_peers([V4, V6], [])
    assert len(writes) == 2
    failing = True
    with pytest.raises(OSError, match="disk full"):
        await store.save_peers([V4], [])
    failing = False
    await store.save_peers([V4], [])
    await store.save_peers([V4, V6], [])
    assert len(writes) == 4
    assert (await store.load_peers()).peers == (V4, V6)


# -- a restarted client -----------------------------------------------------------------------


async def test_restarted_leecher_reconnects_to_its_old_peers(tmp_path: Path) -> None:
    # The first run fetches only the first file from a seed it was told of; the second run,
    # with no tracker, no DHT and no --peer, finds the seed in its saved peers and fetches
    # the rest.
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, _):
            async with open_session(loopback_config()) as leecher:
                first = await leecher.add_torrent(
                    torrent,
                    TorrentOptions(down, peers=(address_of(seeder),), files=frozenset({0})),
                )
                await first.wait_complete()
            # Closed: its peers (the seed) were saved with the resume data.
            async with open_session(loopback_config()) as again:
                second = await again.add_torrent(torrent, TorrentOptions(down))
                await second.wait_complete()
                peers = again.peer_list(second)
                assert peers is not None
                entry = peers.entry(address_of(seeder))
                assert entry is not None
                assert entry.origin == PeerOrigin.RESUME
    assert same_files(folder, down / folder.name)


async def test_saved_bans_are_kept(tmp_path: Path) -> None:
    # A host banned in the last run is not dialled in this one, though saved as a peer too.
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, _):
            store = ResumeStore(down, torrent.info.info_hash)
            where = address_of(seeder)
            await store.save_peers([where], [where.host])
            async with open_session(loopback_config()) as session:
                download = await session.add_torrent(torrent, TorrentOptions(down))
                await trio.sleep(1.0)  # real time: the dial would have been made by now
                assert session.handshaker.statistics().outbound_attempts == 0
                assert download.refuses(where)
                peers = session.peer_list(download)
                assert peers is not None
                assert peers.is_banned(where.host)
