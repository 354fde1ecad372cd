"""A torrent's saved state (``.bip/HASH.state``) read once, by ``Session.add_torrent``, with
one rule for the whole record: a key whose value is not ours is ignored alone (a DEBUG log,
its default taken, the others kept, the record written again), as libtorrent's resume data
reader ignores a bad optional field; older records (only ``paused``, or no file) still load;
and :meth:`Torrent.status` shows the saved flags as soon as ``add_torrent`` returns."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, until, write_content
from hypothesis import given
from hypothesis import strategies as st

from bip._client import Session, Torrent, TorrentOptions, TorrentPhase, open_session
from bip._client._resume import (
    ResumeStore,
    SavedState,
    decode_saved_state,
    encode_saved_paused,
    encode_saved_state,
)
from bip_bencode import Encodable, encode
from bip_metainfo import Metainfo

DEADLINE = 10.0
FLAGS = ("paused", "super_seeding", "auto_managed")


def content(tmp_path: Path) -> tuple[Path, Metainfo]:
    folder = write_content(tmp_path / "seed", [40_000])
    return folder, make_torrent(folder, "v1", piece_length=16384)


class CountedLoads:
    """Counts ``ResumeStore.load_state`` calls (the state file is read once per torrent)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = ResumeStore.load_state

        async def counted(store: ResumeStore) -> SavedState | None:
            self.calls += 1
            return await original(store)

        monkeypatch.setattr(ResumeStore, "load_state", counted)


async def added(session: Session, torrent: Metainfo, save_dir: Path) -> Torrent:
    """The torrent added, then run until its data is checked (run() has started, and
    would have read the state file again if it still did)."""
    running = await session.add_torrent(torrent, TorrentOptions(save_dir))
    await running.ready.wait()
    return running


def test_one_key_not_ours_is_ignored_alone() -> None:
    good: dict[bytes, Encodable] = {
        b"auto_managed": 1,
        b"paused": 1,
        b"queue_position": 3,
        b"super_seeding": 1,
    }
    assert decode_saved_state(encode(good)) == SavedState(True, True, True, 3)
    for key in FLAGS:
        bad: Encodable
        for bad in (b"1", b"", [1], {}):
            record = decode_saved_state(encode({**good, key.encode(): bad}))
            assert record is not None
            assert getattr(record, key) is False  # its default
            assert record.ignored == frozenset({key})
            kept = {name: True for name in FLAGS if name != key}
            assert record == SavedState(**kept, queue_position=3, ignored=frozenset({key}))
    position: Encodable
    for position in (-2, 2**31, b"3", {}):
        record = decode_saved_state(encode({**good, b"queue_position": position}))
        assert record == SavedState(True, True, True, -1, frozenset({"queue_position"}))
    everything_bad = decode_saved_state(
        encode({**{key.encode(): b"9" for key in FLAGS}, b"queue_position": -9})
    )
    assert everything_bad == SavedState(ignored=frozenset({*FLAGS, "queue_position"}))


def test_any_int_but_zero_sets_a_flag() -> None:
    # libtorrent's apply_flag: 2, -1 or 2**70 set a flag, as 1 does; 0 clears it. None of
    # them is "not ours" (we only write 0 or 1, but another writer may not).
    for value in (1, 2, -1, 2**70):
        for key in FLAGS:
            record = decode_saved_state(encode({key.encode(): value, b"queue_position": 4}))
            assert record == SavedState(**{key: True}, queue_position=4)  # type: ignore[arg-type]
    assert decode_saved_state(encode({key.encode(): 0 for key in FLAGS})) == SavedState()


def test_older_records_and_files_not_ours() -> None:
    assert decode_saved_state(encode_saved_paused(True)) == SavedState(paused=True)
    assert decode_saved_state(encode_saved_paused(False)) == SavedState()
    assert decode_saved_state(b"de") == SavedState()
    # A key a later version may add: not ours to judge, so not "ignored" either.
    assert decode_saved_state(b"d5:laterli1ee6:pausedi1ee") == SavedState(paused=True)
    too_large = encode({b"padding": bytes(2000), b"paused": 1})
    for junk in (b"", b"x", b"li1ee", b"i1e", too_large):
        assert decode_saved_state(junk) is None


@given(st.binary(max_size=96))
def test_any_bytes_read_as_a_state_or_none(data: bytes) -> None:
    state = decode_saved_state(data)
    if state is not None:
        assert -1 <= state.queue_position < 2**31
        again = decode_saved_state(encode_saved_state(state))
        assert again == SavedState(
            state.paused, state.super_seeding, state.auto_managed, state.queue_position
        )


async def test_a_flag_not_ours_costs_only_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reviewer's case: add_torrent honoured "paused" while run() rejected the whole
    # record. One reading now, and one verdict: paused, not super-seeding.
    folder, torrent = content(tmp_path)
    store = ResumeStore(folder.parent, torrent.info.info_hash)
    store.directory.mkdir()
    store.state_path.write_bytes(b"d6:pausedi1e13:super_seeding1:7e")
    loads = CountedLoads(monkeypatch)
    with trio.fail_after(DEADLINE), caplog.at_level(logging.DEBUG, logger="bip.client"):
        async with open_session(loopback_config()) as session:
            paused = await added(session, torrent, folder.parent)
            assert paused.paused
            assert not paused.super_seeding
            status = paused.status()
            assert status.phase is TorrentPhase.PAUSED
            assert not status.super_seeding
    assert loads.calls == 1
    assert "super_seeding not ours; ignored" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    # Written whole again at the close: the next reader finds nothing to ignore.
    assert store.state_path.read_bytes() == encode_saved_state(SavedState(paused=True))


async def test_the_status_shows_the_saved_flags_as_add_torrent_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, torrent = content(tmp_path)
    store = ResumeStore(folder.parent, torrent.info.info_hash)
    store.directory.mkdir()
    saved = SavedState(super_seeding=True, auto_managed=True, queue_position=0)
    store.state_path.write_bytes(encode_saved_state(saved))
    loads = CountedLoads(monkeypatch)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            # Before run() has had a chance to do anything.
            status = seeding.status()
            assert status.super_seeding
            assert status.auto_managed
            assert status.queue_position == 0
            assert not seeding.paused
            await seeding.wait_complete()
            assert seeding.super_seeding_active  # a seed now: the saved flag at work
            await until(lambda: seeding.status().queue_position == -1)  # a seed: out of line
    assert loads.calls == 1
    again = decode_saved_state(store.state_path.read_bytes())
    assert again == SavedState(super_seeding=True, auto_managed=True)


async def test_older_records_still_load(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    store = ResumeStore(folder.parent, torrent.info.info_hash)
    with trio.fail_after(DEADLINE):
        # No file: nothing saved, nothing set, nothing written.
        async with open_session(loopback_config()) as session:
            fresh = await added(session, torrent, folder.parent)
            status = fresh.status()
            assert (fresh.paused, status.super_seeding, status.auto_managed) == (False,) * 3
            assert status.queue_position == -1
        assert not store.state_path.exists()
        # Only "paused" (the first records bip wrote): the other flags off.
        older = encode_saved_paused(True)
        store.state_path.write_bytes(older)
        async with open_session(loopback_config()) as session:
            paused = await added(session, torrent, folder.parent)
            status = paused.status()
            assert paused.paused
            assert status.phase is TorrentPhase.PAUSED
            assert (status.super_seeding, status.auto_managed) == (False, False)
            assert status.queue_position == -1
        # Nothing changed: left as it was, for an older reader too.
        assert store.state_path.read_bytes() == older
