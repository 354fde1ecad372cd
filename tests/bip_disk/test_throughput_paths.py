"""The DiskManager's throughput paths: budget grants not yet resumed, buffer recycling
while writers wait, the shallow queue of complete pieces, runs written as soon as they
are hashed, and the in-order block copy. Waits run on the autojump clock."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_disk._budget import ByteBudget
from bip_disk._errors import StorageError, TorrentStateError
from bip_disk._events import PieceVerified, TorrentFailed, TorrentHandle
from bip_disk._filesystem import Buffer, FileSystem
from bip_disk._layout import StorageLayout
from bip_disk._manager import DiskManager, _flush, _Job, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem
from bip_disk._torrent import PartialPiece
from bip_metainfo import Info

PIECE = 4 * 16384
BLOCK = 16384


def make_info(num_pieces: int, files: tuple[int, ...] = ()) -> tuple[Info, bytes]:
    """A v1 torrent of ``num_pieces`` pieces: one file, or files of the given lengths."""
    content = random.Random(num_pieces).randbytes(num_pieces * PIECE)
    pieces = b"".join(
        hashlib.sha1(content[i : i + PIECE]).digest() for i in range(0, len(content), PIECE)
    )
    fields: dict[str, object] = {"name": "t", "piece length": PIECE, "pieces": pieces}
    if files:
        assert sum(files) == len(content)
        fields["files"] = [
            {"length": length, "path": [f"f{index}"]} for index, length in enumerate(files)
        ]
    else:
        fields["length"] = len(content)
    return Info.from_bytes(encode(fields)), content  # type: ignore[arg-type]


async def good_pieces(disk: DiskManager, count: int) -> set[int]:
    """Take events until ``count`` PieceVerified, all good; their pieces."""
    pieces: set[int] = set()
    async for event in disk.events():
        if isinstance(event, PieceVerified):
            assert event.good
            pieces.add(event.piece)
            if len(pieces) == count:
                break
    return pieces


async def write_piece(
    disk: DiskManager, torrent: TorrentHandle, content: bytes, piece: int
) -> None:
    """Write every block of ``piece``, in order."""
    for begin in range(0, PIECE, BLOCK):
        start = piece * PIECE + begin
        await disk.write_block(torrent, piece, begin, content[start : start + BLOCK])


# -- ByteBudget.pending -----------------------------------------------------------------


async def test_a_grant_is_pending_until_its_waiter_resumes() -> None:
    budget = ByteBudget(10)
    assert await budget.take(10, "a")
    results: list[bool] = []

    async def waiter() -> None:
        results.append(await budget.take(6, "b"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert budget.pending == 0
        budget.release(10)
        # Granted, counted as used, but its owner has not run yet.
        assert (budget.used, budget.pending) == (6, 6)
    assert results == [True]
    assert (budget.used, budget.pending) == (6, 0)


async def test_a_waiter_cancelled_after_its_grant_gives_everything_back() -> None:
    budget = ByteBudget(10)
    assert await budget.take(10, "a")
    with trio.CancelScope() as scope:

        async def cancel_after_grant() -> None:
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # the waiter will resume with Cancelled...
            budget.release(10)  # ...though it is granted first
            assert budget.pending == 4

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_after_grant)
            await budget.take(4, "b")
    assert (budget.used, budget.pending) == (0, 0)


async def test_a_turned_away_waiter_is_never_pending() -> None:
    budget = ByteBudget(4)
    assert await budget.take(4, "a")
    results: list[bool] = []

    async def waiter() -> None:
        results.append(await budget.take(4, "b"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        budget.turn_away("b")
    assert results == [False]
    assert (budget.used, budget.pending) == (4, 0)


# -- buffers recycled while writers wait ------------------------------------------------


async def test_every_piece_past_the_bound_gets_a_recycled_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writers waiting for room must not make settled buffers look like excess memory."""
    info, content = make_info(40)
    fresh: list[bool] = []
    original = PartialPiece.__init__

    def spy(
        self: PartialPiece,
        size: int,
        pads: tuple[tuple[int, int], ...] = (),
        buffer: bytearray | None = None,
    ) -> None:
        fresh.append(buffer is None)
        original(self, size, pads, buffer)

    monkeypatch.setattr(PartialPiece, "__init__", spy)
    bound = 4 * PIECE
    async with open_disk_manager(max_in_flight_bytes=bound, hash_threads=2) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        checked: list[int] = []
        settle = disk._settle

        async def checking_settle(job: _Job, outcome: object) -> None:
            await settle(job, outcome)  # type: ignore[arg-type]
            budget = disk._budget
            # The memory held (pieces started or queued, and spares) stays bounded.
            assert budget.used - budget.pending + disk._spares.bytes <= budget.limit
            checked.append(job.piece)

        monkeypatch.setattr(disk, "_settle", checking_settle)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(good_pieces, disk, 40)

            async def write_all() -> None:
                for piece in range(40):
                    for begin in range(0, PIECE, BLOCK):
                        start = piece * PIECE + begin
                        await disk.write_block(
                            torrent, piece, begin, content[start : start + BLOCK]
                        )

            nursery.start_soon(write_all)
        assert disk.have(torrent) == frozenset(range(40))
        assert sorted(checked) == list(range(40))
    assert len(fresh) == 40
    # Only the pieces that first fill the bound need new buffers.
    assert sum(fresh) <= bound // PIECE


# -- the shallow queue ------------------------------------------------------------------


class GatedFileSystem(MemoryFileSystem):
    """Writes wait on a threading.Event (the hashing threads stall until it is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def write(self, path: str, offset: int, data: Buffer) -> None:
        if not self.gate.wait(timeout=30):
            raise AssertionError("the gate was never opened")
        super().write(path, offset, data)


async def test_new_pieces_wait_while_the_queue_is_full_and_started_ones_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info, content = make_info(12)
    fs = GatedFileSystem()
    async with open_disk_manager(max_in_flight_bytes=64 * PIECE, hash_threads=1) as disk:
        disk._max_queued_bytes = 2 * PIECE
        torrent = await disk.add_torrent(info, fs)
        await disk.wait_checked(torrent)
        await write_piece(disk, torrent, content, 0)  # on the stalled thread
        for begin in range(0, PIECE - BLOCK, BLOCK):  # piece 1 but its last block
            start = PIECE + begin
            assert await disk.write_block(torrent, 1, begin, content[start : start + BLOCK])
        assert await disk.write_block(torrent, 2, 0, content[2 * PIECE : 2 * PIECE + BLOCK])
        last = 2 * PIECE - BLOCK
        assert await disk.write_block(torrent, 1, PIECE - BLOCK, content[last : last + BLOCK])
        assert disk._queue_full()  # pieces 0 and 1
        started: list[int] = []

        async def start_piece(piece: int) -> None:
            await write_piece(disk, torrent, content, piece)
            started.append(piece)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_piece, 3)
            await trio.testing.wait_all_tasks_blocked()
            stats = disk.statistics()
            assert stats.waiting_writes == 1
            assert stats.partial_pieces == 1  # piece 2, not piece 3
            assert started == []
            for begin in range(BLOCK, PIECE, BLOCK):  # piece 2 completes past the cap
                start = 2 * PIECE + begin
                assert await disk.write_block(torrent, 2, begin, content[start : start + BLOCK])
            assert disk.statistics().queued_pieces == 3
            await trio.testing.wait_all_tasks_blocked()
            assert started == []
            assert disk.status(torrent).have == 0
            fs.gate.set()
            for piece in range(4, 12):
                nursery.start_soon(start_piece, piece)
        assert sorted(started) == list(range(3, 12))
        assert await good_pieces(disk, 12) == set(range(12))
        assert disk.statistics().waiting_writes == 0
    assert fs.read("t", 0, len(content)) == content


async def test_the_queue_cap_never_binds_at_or_above_the_in_flight_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info, content = make_info(6)
    fs = GatedFileSystem()
    async with open_disk_manager(max_in_flight_bytes=3 * PIECE, hash_threads=1) as disk:
        disk._max_queued_bytes = 3 * PIECE
        torrent = await disk.add_torrent(info, fs)
        await disk.wait_checked(torrent)
        for piece in range(3):
            await write_piece(disk, torrent, content, piece)
        assert not disk._queue_full()  # the in-flight bound does the waiting
        with trio.move_on_after(5) as scope:
            await disk.write_block(torrent, 3, 0, content[3 * PIECE : 3 * PIECE + BLOCK])
        assert scope.cancelled_caught
        assert len(disk._queue_room) == 0
        fs.gate.set()
        for piece in range(3, 6):
            await write_piece(disk, torrent, content, piece)
        assert await good_pieces(disk, 6) == set(range(6))


async def test_a_write_waiting_for_the_queue_fails_when_its_torrent_is_removed() -> None:
    info, content = make_info(4)
    fs = GatedFileSystem()
    async with open_disk_manager(max_in_flight_bytes=64 * PIECE, hash_threads=1) as disk:
        disk._max_queued_bytes = PIECE
        torrent = await disk.add_torrent(info, fs)
        await disk.wait_checked(torrent)
        await write_piece(disk, torrent, content, 0)
        errors: list[Exception] = []

        async def start_piece() -> None:
            try:
                await write_piece(disk, torrent, content, 1)
            except TorrentStateError as error:
                errors.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_piece)
            await trio.testing.wait_all_tasks_blocked()
            assert len(disk._queue_room) == 1
            nursery.start_soon(disk.remove_torrent, torrent)
            await trio.testing.wait_all_tasks_blocked()
            # The waiter failed at once; the removal waits for the stalled thread.
            assert len(errors) == 1
            assert "removed" in str(errors[0])
            fs.gate.set()
        stats = disk.statistics()
        assert (stats.in_flight_bytes, stats.waiting_writes, stats.torrents) == (0, 0, 0)


async def test_a_write_waiting_for_the_queue_can_be_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info, content = make_info(4)
    fs = GatedFileSystem()
    async with open_disk_manager(max_in_flight_bytes=64 * PIECE, hash_threads=1) as disk:
        disk._max_queued_bytes = PIECE
        torrent = await disk.add_torrent(info, fs)
        await disk.wait_checked(torrent)
        await write_piece(disk, torrent, content, 0)
        with trio.move_on_after(1) as scope:
            await disk.write_block(torrent, 1, 0, content[PIECE : PIECE + BLOCK])
        assert scope.cancelled_caught
        stats = disk.statistics()
        assert (stats.waiting_writes, stats.partial_pieces, stats.in_flight_bytes) == (0, 0, PIECE)
        fs.gate.set()
        assert await good_pieces(disk, 1) == {0}


async def test_closing_ends_a_write_waiting_for_the_queue_and_finishes_the_queue() -> None:
    info, content = make_info(4)
    fs = GatedFileSystem()
    errors: list[Exception] = []
    async with trio.open_nursery() as nursery:
        async with open_disk_manager(max_in_flight_bytes=64 * PIECE, hash_threads=1) as disk:
            disk._max_queued_bytes = PIECE
            torrent = await disk.add_torrent(info, fs)
            await disk.wait_checked(torrent)
            await write_piece(disk, torrent, content, 0)  # on the stalled thread

            async def start_piece() -> None:
                try:
                    await write_piece(disk, torrent, content, 1)
                except TorrentStateError as error:
                    errors.append(error)
                    fs.gate.set()  # only now: the close must not wait for the queue

            nursery.start_soon(start_piece)
            await trio.testing.wait_all_tasks_blocked()
            assert len(disk._queue_room) == 1
        # Closed: the waiting write failed, and the piece queued was still written.
        assert len(errors) == 1
        assert "closing" in str(errors[0])
        assert disk.have(torrent) == frozenset({0})
        stats = disk.statistics()
        assert (stats.in_flight_bytes, stats.waiting_writes, stats.queued_pieces) == (0, 0, 0)
    assert fs.read("t", 0, PIECE) == content[:PIECE]


# -- runs written as soon as they are hashed --------------------------------------------


class RecordingFileSystem(MemoryFileSystem):
    """Records writes in a shared log; fails writes to one path if asked."""

    def __init__(self, log: list[str], fail: str | None = None) -> None:
        super().__init__()
        self.log = log
        self.fail = fail

    def write(self, path: str, offset: int, data: Buffer) -> None:
        self.log.append(f"write {path}@{offset}+{memoryview(data).nbytes}")
        if path == self.fail:
            raise OSError(28, "No space left on device")
        super().write(path, offset, data)


async def flush_torrent(
    files: tuple[int, ...],
    fail: str | None,
    corrupt: int | frozenset[int] | None,
    filesystem: FileSystem | None = None,
    checked: Callable[[], object] = lambda: None,
) -> tuple[list[str], list[object], FileSystem, bytes, StorageLayout]:
    """Run _flush on every piece of a torrent; the log of hashes and writes, the outcomes.

    Writes are logged on the RecordingFileSystem made when no ``filesystem`` is given;
    ``checked`` runs once the torrent is checked, before the flush.
    """
    count = sum(files) // PIECE
    info, content = make_info(count, files)
    log: list[str] = []
    fs = RecordingFileSystem(log, fail) if filesystem is None else filesystem
    async with open_disk_manager(hash_threads=1) as disk:
        torrent = await disk.add_torrent(info, fs)
        await disk.wait_checked(torrent)
        checked()
        storage = disk._torrents[torrent.id]
        verify = storage.verifier.verify

        class Spy:
            def verify(self, index: int, data: Buffer) -> bool:
                log.append(f"hash {index}")
                return verify(index, data)

        storage.verifier = Spy()  # type: ignore[assignment]
        jobs = []
        for piece in range(count):
            data = bytearray(content[piece * PIECE : (piece + 1) * PIECE])
            if piece == corrupt or (isinstance(corrupt, frozenset) and piece in corrupt):
                data[0] ^= 1
            jobs.append(_Job(storage, piece, data))
        log.clear()
        outcomes: list[object] = list(await trio.to_thread.run_sync(_flush, jobs))
    return log, outcomes, fs, content, storage.layout


async def test_a_run_is_written_once_its_pieces_are_hashed() -> None:
    # 20 pieces of 64 KiB in one file: a run of 1 MiB (16 pieces), then the rest.
    log, outcomes, fs, content, _ = await flush_torrent((20 * PIECE,), None, None)
    assert outcomes == [True] * 20
    # The first run is written when piece 16 starts the next, before piece 17 is hashed
    # (a MemoryFileSystem takes a run part by part: one write per piece).
    first_run = [f"write t/f0@{piece * PIECE}+{PIECE}" for piece in range(16)]
    rest = [f"write t/f0@{piece * PIECE}+{PIECE}" for piece in range(16, 20)]
    assert log == [
        *(f"hash {piece}" for piece in range(17)),
        *first_run,
        *(f"hash {piece}" for piece in range(17, 20)),
        *rest,
    ]
    assert fs.read("t/f0", 0, len(content)) == content


async def test_runs_across_files_skip_bad_pieces_and_fail_alone() -> None:
    # f0 = 1.5 pieces, f1 = 2.5, f2 = 2: piece 1 spans f0 and f1, f2 holds pieces 4 and 5.
    half = PIECE // 2
    files = (PIECE + half, 2 * PIECE + half, 2 * PIECE)
    log, outcomes, fs, content, _ = await flush_torrent(files, "t/f1", corrupt=4)
    # Piece 4 is bad: hashed, never written. The writes to f1 fail: pieces 1 to 3
    # get the error (piece 1's part of f0 was written, but it is not reported good).
    assert outcomes[0] is True
    assert outcomes[5] is True
    assert outcomes[4] is False
    for piece in (1, 2, 3):
        assert isinstance(outcomes[piece], StorageError)
    assert log == [
        "hash 0",
        "hash 1",  # its part of f1 starts a run: the run of f0 is written
        f"write t/f0@0+{PIECE}",
        f"write t/f0@{PIECE}+{half}",
        "hash 2",
        "hash 3",
        "hash 4",
        "hash 5",
        f"write t/f1@0+{half}",
        f"write t/f1@{half}+{PIECE}",
        f"write t/f1@{half + PIECE}+{PIECE}",
        f"write t/f2@{PIECE}+{PIECE}",
    ]
    assert fs.read("t/f0", 0, PIECE) == content[:PIECE]
    assert fs.read("t/f2", PIECE, PIECE) == content[-PIECE:]


@st.composite
def flush_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], frozenset[int], int | None]:
    """Files (lengths in quarter pieces, 1 to 20 pieces in all: past one run), the
    pieces corrupted, the file whose writes fail (or None)."""
    quarters = draw(st.integers(1, 20)) * 4
    cuts = sorted(draw(st.sets(st.integers(1, quarters - 1), max_size=5)))
    files = tuple((b - a) * (PIECE // 4) for a, b in itertools.pairwise([0, *cuts, quarters]))
    corrupt = draw(st.frozensets(st.integers(0, quarters // 4 - 1), max_size=4))
    fail = draw(st.none() | st.integers(0, len(files) - 1))
    return files, corrupt, fail


@settings(max_examples=30, deadline=None)
@given(flush_cases(), st.booleans())
def test_flush_hashes_before_writing_and_reports_a_piece_as_its_writes_went(
    case: tuple[tuple[int, ...], frozenset[int], int | None], native: bool
) -> None:
    files, corrupt, fail = case
    if not native:
        check_flush(files, corrupt, fail, None)
        return
    with tempfile.TemporaryDirectory() as directory:
        # A NativeFileSystem writes a run with one pwritev (no write log): a bad
        # piece's bytes must then be absent from the files. A directory in a file's
        # place, made after the check, makes its writes fail.
        def block_the_failing_file() -> None:
            if fail is not None:
                os.makedirs(os.path.join(directory, "t", f"f{fail}"))

        fs = NativeFileSystem(directory)
        try:
            check_flush(files, corrupt, fail, fs, block_the_failing_file)
        finally:
            fs.close()


def check_flush(
    files: tuple[int, ...],
    corrupt: frozenset[int],
    fail: int | None,
    fs: FileSystem | None,
    checked: Callable[[], object] = lambda: None,
) -> None:
    log, outcomes, fs, content, layout = trio.run(
        flush_torrent, files, None if fail is None else f"t/f{fail}", corrupt, fs, checked
    )
    for piece, outcome in enumerate(outcomes):
        spans = [span for span in layout.spans(piece) if not span.is_pad]
        if piece in corrupt:
            assert outcome is False
            for span in spans:
                if span.file_index != fail:
                    try:
                        stored = fs.read(span.path, span.file_offset, span.length)
                    except StorageError:
                        stored = b""  # the file was never made
                    assert stored.strip(b"\0") == b""  # never written: a hole, or past the end
        elif any(span.file_index == fail for span in spans):
            assert isinstance(outcome, StorageError)
        else:
            assert outcome is True
            position = piece * PIECE
            for span in spans:  # good: its bytes are stored
                stored = fs.read(span.path, span.file_offset, span.length)
                assert stored == content[position : position + span.length]
                position += span.length
        # Nothing of a piece is written before it is hashed, nor at all if it is bad.
        hashed = log.index(f"hash {piece}")
        for index, entry in enumerate(log):
            if not entry.startswith("write "):
                continue
            path, _, extent = entry[len("write ") :].partition("@")
            offset, length = map(int, extent.split("+"))
            for span in spans:
                end = span.file_offset + span.length
                if span.path == path and offset < end and span.file_offset < offset + length:
                    assert piece not in corrupt
                    assert index > hashed


async def test_a_write_fault_keeps_no_frame_of_the_flush_thread() -> None:
    # The fault is kept (the torrent's error, its event): with the thread's frames it
    # would keep the batch's piece buffers in memory, outside the in-flight bound.
    info, content = make_info(3)
    async with open_disk_manager(hash_threads=1) as disk:
        torrent = await disk.add_torrent(info, RecordingFileSystem([], fail="t"))
        await disk.wait_checked(torrent)
        for piece in range(3):
            await write_piece(disk, torrent, content, piece)
        failed = None
        async for event in disk.events():
            if isinstance(event, TorrentFailed):
                failed = event
                break
        assert failed is not None
        assert disk.status(torrent).error is failed.error
    assert "No space left on device" in str(failed.error)
    chain: list[BaseException] = []
    link: BaseException | None = failed.error
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    assert isinstance(chain[-1], OSError)
    assert [link.__traceback__ for link in chain] == [None] * len(chain)


# -- the in-order block copy ------------------------------------------------------------


def test_blocks_of_any_contiguous_format_are_copied_as_bytes() -> None:
    piece = PartialPiece(16)
    data = bytes(range(16))
    assert piece.add(0, memoryview(data[:8]).cast("I")) == 8
    assert piece.add(8, memoryview(data[8:]).cast("H")) == 8  # the in-order fast path
    assert piece.complete
    assert piece.buffer == data


def test_a_strided_block_is_copied_as_its_bytes() -> None:
    piece = PartialPiece(16)
    source = bytes(range(32))
    assert piece.add(0, b"\x00\x02\x04\x06") == 4
    assert piece.add(4, memoryview(source)[8::2]) == 12  # not contiguous: the general path
    assert piece.buffer == source[::2]


def strided_typed(data: bytes) -> memoryview:
    """``data`` as every other two-byte item of a larger buffer: typed, not contiguous."""
    spread = bytearray(2 * len(data))
    for item in range(0, len(data), 2):
        spread[2 * item : 2 * item + 2] = data[item : item + 2]
    view = memoryview(spread).cast("H")[::2]
    assert view.nbytes == len(data)
    assert len(data) <= 2 or not view.c_contiguous
    return view


def as_buffer(data: bytes, kind: int) -> Buffer:
    """``data`` as one of the buffer shapes a caller may pass (its bytes in C order)."""
    even = len(data) % 2 == 0
    if kind == 1:
        return bytearray(data)
    if kind == 2:
        return memoryview(data)
    if kind == 3:  # strided bytes
        spread = bytearray(2 * len(data))
        spread[::2] = data
        return memoryview(spread)[::2]
    if kind == 4 and len(data) % 4 == 0:
        return memoryview(data).cast("I")
    if kind == 5 and even:
        return memoryview(data).cast("B", shape=[2, len(data) // 2])
    if kind == 6 and even:
        return strided_typed(data)
    return data


@st.composite
def block_runs(draw: st.DrawFn) -> tuple[tuple[tuple[int, int], ...], list[tuple[int, bytes, int]]]:
    """Pad ranges (or none, for the in-order fast path), and blocks (begin, data, shape):
    runs of consecutive blocks from random starts."""
    size = 64
    pads: tuple[tuple[int, int], ...] = ()
    if draw(st.booleans()):
        start = draw(st.integers(0, size - 1))
        pads = ((start, draw(st.integers(start + 1, size))),)
    blocks = []
    for _ in range(draw(st.integers(1, 4))):
        begin = draw(st.integers(0, size - 1))
        for _ in range(draw(st.integers(1, 5))):
            if begin >= size:
                break
            length = draw(st.integers(1, size - begin))
            data = draw(st.binary(min_size=length, max_size=length))
            blocks.append((begin, data, draw(st.integers(0, 6))))
            begin += length
    return pads, blocks


@given(block_runs())
def test_a_block_of_any_shape_is_copied_as_its_bytes(
    case: tuple[tuple[tuple[int, int], ...], list[tuple[int, bytes, int]]],
) -> None:
    # Whatever shape a block comes in (typed, strided, 2-D), in order or not, the piece
    # holds and counts what the same blocks given as bytes make it hold and count.
    pads, blocks = case
    shaped, plain = PartialPiece(64, pads), PartialPiece(64, pads)
    for begin, data, kind in blocks:
        assert shaped.add(begin, as_buffer(data, kind)) == plain.add(begin, data)
        assert shaped.received == plain.received
    assert shaped.buffer == plain.buffer


async def test_write_block_takes_a_strided_typed_view() -> None:
    info, content = make_info(2)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(good_pieces, disk, 2)
            for piece in range(2):
                # The piece's first block (a new piece) and the next ones (the fast path).
                for begin in range(0, PIECE, BLOCK):
                    start = piece * PIECE + begin
                    block = strided_typed(content[start : start + BLOCK])
                    assert await disk.write_block(torrent, piece, begin, block)
        assert disk.have(torrent) == frozenset(range(2))


async def test_the_manager_stores_in_order_blocks_of_a_torrent(tmp_path: Path) -> None:

    info, content = make_info(8)
    fs = NativeFileSystem(tmp_path / "d")
    try:
        async with open_disk_manager(max_in_flight_bytes=3 * PIECE) as disk:
            disk._max_queued_bytes = PIECE  # the queue wait on a real filesystem
            torrent = await disk.add_torrent(info, fs)
            await disk.wait_checked(torrent)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(good_pieces, disk, 8)
                for piece in range(8):
                    await write_piece(disk, torrent, content, piece)
            assert disk.have(torrent) == frozenset(range(8))
    finally:
        fs.close()
    assert (tmp_path / "d" / "t").read_bytes() == content
