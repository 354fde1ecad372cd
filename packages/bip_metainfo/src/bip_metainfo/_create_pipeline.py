"""Creating torrents: the thread pipeline that hashes every file on every core.

:func:`_hash_files`, called by :func:`~bip_metainfo.create_torrent` on the
calling thread, starts a pool of hashing threads (``_HashPool``);
:func:`_plan_v1` or :func:`_plan_v2` cuts the files (the
:class:`._create_walk._Entry` list) into jobs of whole pieces, about
:data:`_JOB_BYTES` each, that run :mod:`._create_hashing`'s hash functions on
the pool; and a :class:`_Pipeline` keeps at most two jobs per thread in flight,
collects their results in order (the v1 piece hashes, and each file's v2 piece
layer and pieces root, stored in its entry), reports progress and stops every
thread on cancellation (:class:`CreateCancelled`) or error. The torrent itself
is built by :mod:`._create`.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final, TypeAlias

from ._create_hashing import _hash_v1, _hash_v2, _Run, _StoppedError
from ._create_walk import _Entry
from ._merkle import BLOCK_SIZE, pieces_root_from_layer

__all__ = ["CreateCancelled", "Progress"]

Progress: TypeAlias = Callable[[int, int], object]

_JOB_BYTES: Final = 16 * 1024 * 1024  # file data per job handed to a hashing thread
_CHUNK_BYTES: Final = 1024 * 1024  # bytes a hashing thread reads and hashes at a time
_PROGRESS_INTERVAL: Final = 0.05  # seconds: at most 20 progress calls a second
_WAIT_SLICE: Final = 0.05  # seconds between cancellation checks while waiting


class CreateCancelled(Exception):  # noqa: N818 - named for what happened, like trio.Cancelled
    """:func:`create_torrent` stopped because its ``cancel`` event was set.

    Not a :class:`~bip_metainfo.MetainfoBaseError`: nothing was wrong with the input, the
    caller asked to stop (``except MetainfoBaseError`` does not swallow it).
    """


# The calling thread plans jobs (runs of whole pieces, about _JOB_BYTES of data each)
# and hands them to the pool; each hashing thread reads its job's bytes itself, a
# chunk at a time into its own buffer, and hashes each chunk while it is still in
# the CPU's cache. Results are collected in order on the calling thread, with at most
# two jobs per thread in flight, so memory is bounded by threads x chunk whatever
# the size of the files.


_Job: TypeAlias = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class _HashPool:
    """The hashing threads: daemon threads taking jobs from a queue, started as needed.

    Not a ``ThreadPoolExecutor``: the interpreter joins every executor's threads as it
    exits, so one stuck in a read the OS never completes (a hung network mount) held
    the process for ever, even after the caller had reported :class:`CreateCancelled`
    (``bip create`` after Ctrl-C). Daemon threads are not waited for at exit;
    ``shutdown``, on every way out of ``_hash_files``, still waits for each
    one, so none outlives a call that returns. (``Future`` made here, as asyncio's
    ``run_coroutine_threadsafe`` makes its own.) Nor a ``ThreadPoolExecutor``
    subclass: its threads are made, and joined at exit, by private methods and a
    module-level registry that change between Python versions.

    A Ctrl-C can land anywhere on the main thread, inside ``Thread.start`` too (its
    wait for the new thread) or in ``shutdown``: so a thread is recorded before it is
    started, one stop marker stops every thread (each puts it back as it leaves,
    as ``ThreadPoolExecutor``'s workers do), whatever threads were recorded, and
    ``shutdown`` puts it even when its drain is interrupted.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``function(*args)``; its future holds the result or the exception."""
        future: Future[Any] = Future()
        self._queue.put((future, function, args))
        if len(self._threads) < self._size:  # one thread a job, up to the size
            thread = threading.Thread(
                target=self._work, name=f"bip-hash_{len(self._threads)}", daemon=True
            )
            # Recorded first: a KeyboardInterrupt out of start() may come after the
            # thread began, and it must still be joined.
            self._threads.append(thread)
            thread.start()
        return future

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            future, function, args = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                result = function(*args)
            except BaseException as error:  # handed to the collecting thread
                future.set_exception(error)
            else:
                future.set_result(result)
            del future, function, args, job  # a finished job's data is not held while idle
        self._queue.put(None)  # for the next thread: one marker stops them all

    def shutdown(self, *, cancel: bool) -> None:
        """Wait for every thread to end, after its current job (with ``cancel``, dropping
        the jobs no thread has taken yet)."""
        try:
            while cancel:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        finally:
            self._queue.put(None)  # even after a Ctrl-C in the drain, or threads wait for ever
        for thread in self._threads:
            # Not alive: never started (start() failed; joining would raise), or ended.
            # (A thread whose start() was interrupted before it ran may be skipped, and
            # then ends on its own, on the marker.)
            if thread.is_alive():
                thread.join()


class _Pipeline:
    """Hands jobs to the pool and collects their results in order, a bounded number
    in flight, reporting progress and checking for cancellation as they complete."""

    def __init__(
        self,
        pool: _HashPool,
        *,
        in_flight: int,
        total: int,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> None:
        self._pool = pool
        self._limit = in_flight
        self._jobs: deque[tuple[Future[Any], int, Callable[[Any], None]]] = deque()
        self._total = total
        self._done = 0
        self._progress = progress
        self._reported = 0
        self._last_report = 0.0
        self._cancel = cancel
        self.abort = threading.Event()
        self.max_in_flight = 0

    def stop(self) -> bool:
        """Whether hashing threads should stop (an error, or the caller cancelled)."""
        return self.abort.is_set() or (self._cancel is not None and self._cancel.is_set())

    def check(self) -> None:
        """Raise :class:`CreateCancelled` if the caller has cancelled."""
        if self._cancel is not None and self._cancel.is_set():
            raise CreateCancelled("torrent creation was cancelled")

    def start(self) -> None:
        """Report that nothing is hashed yet."""
        if self._progress is not None:
            self._last_report = time.monotonic()
            self._progress(0, self._total)

    def _report(self, *, final: bool = False) -> None:
        if self._progress is None or self._done == self._reported:
            return
        now = time.monotonic()
        if final or now - self._last_report >= _PROGRESS_INTERVAL:
            self._last_report = now
            self._reported = self._done
            self._progress(self._done, self._total)

    def submit(
        self,
        data_bytes: int,
        finish: Callable[[Any], None],
        function: Callable[..., Any],
        *args: Any,
    ) -> None:
        """Run ``function(*args)`` on the pool; ``finish`` takes its result, in order."""
        self.check()
        while len(self._jobs) >= self._limit:
            self._collect()
        self._jobs.append((self._pool.submit(function, *args), data_bytes, finish))
        self.max_in_flight = max(self.max_in_flight, len(self._jobs))

    def _collect(self) -> None:
        self.check()
        future, data_bytes, finish = self._jobs.popleft()
        while True:
            try:
                result = future.result(timeout=_WAIT_SLICE)
                break
            except FutureTimeout:
                self.check()
            except _StoppedError:
                self.check()
                raise
        finish(result)
        self._done += data_bytes
        self._report()

    def finish(self) -> None:
        """Wait for every job, then report the final progress."""
        while self._jobs:
            self._collect()
        self.check()
        self._report(final=True)


def _plan_v1(
    pipe: _Pipeline, files: list[_Entry], piece_length: int, chunk: int, out: bytearray
) -> None:
    """Jobs of whole pieces over the files' concatenation."""
    job = max(piece_length, _JOB_BYTES // piece_length * piece_length)
    runs: list[_Run] = []
    size = 0
    for entry in files:
        offset = 0
        while offset < entry.length:
            count = min(entry.length - offset, job - size)
            runs.append((entry.source, offset, count, entry.length, 0, entry.identity))
            offset += count
            size += count
            if size == job:
                pipe.submit(size, out.extend, _hash_v1, runs, size, piece_length, chunk, pipe.stop)
                runs = []
                size = 0
    if size:
        pipe.submit(size, out.extend, _hash_v1, runs, size, piece_length, chunk, pipe.stop)


def _finish_file(entry: _Entry, piece_length: int) -> None:
    if len(entry.nodes) == 1:
        entry.pieces_root = entry.nodes[0]
    else:
        entry.layer = b"".join(entry.nodes)
        entry.pieces_root = pieces_root_from_layer(entry.layer, piece_length, entry.length)
    entry.nodes = []


def _plan_v2(
    pipe: _Pipeline,
    files: list[_Entry],
    *,
    piece_length: int,
    chunk: int,
    v1: bool,
    out: bytearray,
) -> None:
    """Jobs of whole pieces of files, each file starting a piece."""
    job = max(piece_length, _JOB_BYTES)
    runs: list[_Run] = []
    owners: list[tuple[_Entry, int]] = []  # how many of a job's pieces are whose
    size = 0

    def finisher(owners: list[tuple[_Entry, int]]) -> Callable[[Any], None]:
        def finish(result: tuple[bytes, list[bytes]]) -> None:
            sha1s, nodes = result
            out.extend(sha1s)
            start = 0
            for entry, count in owners:
                entry.nodes += nodes[start : start + count]
                start += count
                if len(entry.nodes) == -(-entry.length // piece_length):
                    _finish_file(entry, piece_length)

        return finish

    def submit() -> None:
        pipe.submit(size, finisher(owners), _hash_v2, runs, piece_length, chunk, v1, pipe.stop)

    for entry in files:
        offset = 0
        while offset < entry.length:
            room = job - size
            left = entry.length - offset
            count = left if left <= room else room // piece_length * piece_length
            if count:
                runs.append((entry.source, offset, count, entry.length, entry.pad, entry.identity))
                owners.append((entry, -(-count // piece_length)))
                offset += count
                size += count
            if not count or size >= job:
                submit()
                runs, owners, size = [], [], 0
    if size:
        submit()


def _default_threads() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _hash_files(
    files: list[_Entry],
    *,
    piece_length: int,
    v1: bool,
    v2: bool,
    threads: int,
    max_buffered_bytes: int,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> tuple[bytes, int]:
    """Hash the files' data; return the v1 piece hashes and the most jobs in flight."""
    total = sum(entry.length for entry in files)
    chunk = min(_CHUNK_BYTES, max_buffered_bytes // threads) // BLOCK_SIZE * BLOCK_SIZE
    chunk = max(BLOCK_SIZE, chunk)
    if v2:
        # Pieces and chunks are both powers of two, so one holds whole others.
        chunk = 1 << (chunk.bit_length() - 1)
    out = bytearray()
    pool = _HashPool(threads)
    pipe = _Pipeline(pool, in_flight=2 * threads, total=total, progress=progress, cancel=cancel)
    try:
        pipe.start()
        if v2:
            _plan_v2(pipe, files, piece_length=piece_length, chunk=chunk, v1=v1, out=out)
        else:
            _plan_v1(pipe, files, piece_length, chunk, out)
        pipe.finish()
    except BaseException:
        pipe.abort.set()
        pool.shutdown(cancel=True)
        raise
    pool.shutdown(cancel=False)
    return bytes(out), pipe.max_in_flight
