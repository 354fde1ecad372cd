"""create_torrent review mends: a Ctrl-C inside the hashing pool's thread start or shutdown
strands no thread; a file whose inode number changed but whose size and times did not (FUSE
and CIFS mounts without stable inode numbers) is still hashed; a refusal only hashing can
decide is announced before hashing; nothing libtorrent 2.1.1 refuses by default is made."""

from __future__ import annotations

import ast
import logging
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bip_metainfo import CreateError, _create, _create_hashing, _create_pipeline, create_torrent
from bip_metainfo._create import Version
from bip_metainfo._create_pipeline import _HashPool

_REAL_START = threading.Thread.start


class _Progress:
    """A progress callback that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


def test_a_ctrl_c_inside_a_hashing_threads_start_strands_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a KeyboardInterrupt out of Thread.start() (its wait for the new thread is
    interruptible on the main thread) left that thread unrecorded: it could take the only
    stop marker, so joining the recorded one hung for ever, or it waited for ever itself."""
    root = tmp_path / "t"
    root.mkdir()
    for index in range(8):
        (root / f"f{index}").write_bytes(bytes([index]) * 40_000)
    monkeypatch.setattr(_create_pipeline, "_JOB_BYTES", 16384)  # many jobs: two threads
    started: list[threading.Thread] = []

    def start(self: threading.Thread) -> None:
        _REAL_START(self)
        if self.name.startswith("bip-hash"):
            started.append(self)
            if len(started) == 2:
                raise KeyboardInterrupt  # as if delivered during start()'s wait

    monkeypatch.setattr(threading.Thread, "start", start)
    outcome: list[str] = []

    def run() -> None:
        try:
            create_torrent(root, piece_length=16384, threads=2, version="v1")
        except KeyboardInterrupt:
            outcome.append("interrupted")

    runner = threading.Thread(target=run, daemon=True)
    _REAL_START(runner)
    runner.join(5)
    assert not runner.is_alive(), "create_torrent hung, joining a thread that never stops"
    assert outcome == ["interrupted"]
    assert len(started) == 2
    for thread in started:
        thread.join(2)
    assert not [thread.name for thread in started if thread.is_alive()]


class _InterruptedDrain(queue.SimpleQueue):  # type: ignore[type-arg]
    """A job queue whose drain is cut short by a Ctrl-C."""

    def get_nowait(self) -> Any:
        raise KeyboardInterrupt


def test_a_ctrl_c_during_the_pools_drain_still_stops_every_thread() -> None:
    """Before: the stop markers came after the drain loop, so a Ctrl-C in it stranded every
    thread, waiting for a job for ever."""
    pool = _HashPool(2)
    pool._queue = _InterruptedDrain()
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 5) for _ in range(3)]  # two running, one queued
    with pytest.raises(KeyboardInterrupt):
        pool.shutdown(cancel=True)
    gate.set()
    assert [future.result(timeout=5) for future in futures] == [True] * 3
    for thread in pool._threads:
        thread.join(5)
    assert not [thread.name for thread in pool._threads if thread.is_alive()]


def test_the_pool_joins_only_threads_that_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread that could not be started is recorded, but not joined (join would raise)."""

    def start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    pool = _HashPool(2)
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start"):
        pool.submit(int)
    monkeypatch.undo()
    pool.shutdown(cancel=True)  # returns, joining nothing
    assert len(pool._threads) == 1


class _Renumbered:
    """An ``os.stat_result`` with another inode number, as a FUSE mount without stable
    inode numbers (sshfs; CIFS with noserverino) gives the same, unchanged file."""

    def __init__(self, info: os.stat_result) -> None:
        self._info = info

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._info, name)
        return value + 1000 if name == "st_ino" else value


def test_an_unchanged_file_with_a_new_inode_number_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: refused as "another file" after hours of hashing on such a mount."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"a" * 40_000)
    (root / "b").write_bytes(b"b" * 1000)
    expected = create_torrent(root, creation_date=None, threads=1).to_bytes()
    real_fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: _Renumbered(real_fstat(fd)))
    assert create_torrent(root, creation_date=None, threads=1).to_bytes() == expected


def _identity(path: Path) -> tuple[int, int, int, int, int]:
    info = os.stat(path)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def test_open_regular_refuses_another_inode_only_if_size_or_a_time_differs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"f")
    dev, ino, size, mtime, ctime = _identity(path)
    for taken in [(dev, ino, size, mtime, ctime), (dev, ino + 1, size, mtime, ctime)]:
        with _create_hashing._open_regular(str(path), taken) as file:
            assert file.read() == b"f"
    for refused in [
        (dev, ino + 1, size + 1, mtime, ctime),
        (dev, ino + 1, size, mtime - 1, ctime),
        (dev + 1, ino, size, mtime, ctime - 1),
    ]:
        with pytest.raises(CreateError, match="another file"):
            _create_hashing._open_regular(str(path), refused)
    # The same inode is the same file, whatever its times (rewritten in place: its size is
    # checked as it is read).
    with _create_hashing._open_regular(str(path), (dev, ino, size, mtime - 1, ctime - 1)):
        pass


@pytest.mark.skipif(os.name != "posix", reason="inode numbers from DirEntry")
def test_a_file_renamed_over_with_its_size_and_mtime_is_still_refused(tmp_path: Path) -> None:
    """As rsync saves (a temporary file given the old one's time, renamed over it): only
    the inode change time, which no program can set, tells the files apart."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"a" * 1000)
    (root / "b").write_bytes(b"b" * 1000)
    old = os.stat(root / "b")

    def progress(done: int, total: int) -> None:
        if done:
            return
        new = root / "b.new"  # the walk is over, no file read yet
        new.write_bytes(b"B" * 1000)
        deadline = time.monotonic() + 2
        while True:  # until the file system's (coarse) clock has moved on
            os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))
            if os.stat(new).st_ctime_ns != old.st_ctime_ns or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        os.replace(new, root / "b")

    with pytest.raises(CreateError, match="is another file than the one"):
        create_torrent(root, progress=progress, threads=1)


def _tokens(data: bytes) -> int:
    """libtorrent's bdecode tokens of ``data``: every value, and an end per list and dict."""
    count = depth = index = 0
    while True:
        byte = data[index : index + 1]
        if byte == b"e":
            count += 1
            depth -= 1
            index += 1
        elif byte in (b"l", b"d"):
            count += 1
            depth += 1
            index += 1
        elif byte == b"i":
            count += 1
            index = data.index(b"e", index) + 1
        else:
            count += 1
            colon = data.index(b":", index)
            index = colon + 1 + int(data[index:colon])
        if depth == 0:
            return count


def _share(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    (root / "d" / "a").write_bytes(b"a" * 40_000)  # three pieces of 16 KiB: a piece layer
    (root / "b").write_bytes(b"b" * 20_000)
    (root / "c").write_bytes(b"c" * 10)
    return root


_OPTIONS: dict[str, Any] = {"piece_length": 16384, "creation_date": None, "threads": 1}


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
@pytest.mark.parametrize(
    ("limit", "what"),
    [("_LIBTORRENT_MAX_TOKENS", "bencoded tokens"), ("_LIBTORRENT_MAX_BYTES", "")],
)
def test_a_torrent_libtorrent_would_refuse_is_refused_before_hashing(
    version: Version, limit: str, what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: create_torrent made torrents libtorrent 2.1.1 does not load by default (more
    than 3,000,000 tokens: about 100,000 files of a hybrid torrent; more than 10,000,000
    bytes: 500,000 pieces of a v1 torrent)."""
    root = _share(tmp_path / "t")
    data = create_torrent(root, version=version, **_OPTIONS).to_bytes()
    exact = _tokens(data) if what else len(data)
    monkeypatch.setattr(_create, limit, exact)
    assert create_torrent(root, version=version, **_OPTIONS).to_bytes() == data
    monkeypatch.setattr(_create, limit, exact - 1)
    progress = _Progress()
    expected = f"{exact} {what}" if what else f"would be {exact} bytes"
    with pytest.raises(CreateError, match=f"more than the {exact - 1} libtorrent") as caught:
        create_torrent(root, version=version, progress=progress, **_OPTIONS)
    assert expected in str(caught.value)
    assert progress.calls == []  # the counts are exact before hashing


def _same_length(root: Path, second: bytes) -> Path:
    root.mkdir()
    (root / "a").write_bytes(b"z" * 100_000)  # seven pieces of 16 KiB: a piece layer
    (root / "b").write_bytes(second)
    return root


def test_a_refusal_only_hashing_can_decide_is_announced_before_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: files of one length that differ were refused after hashing (hours, maybe)
    with no word of it before."""
    caplog.set_level(logging.WARNING, logger="bip_metainfo")
    (tmp_path / "same").mkdir()
    (tmp_path / "differ").mkdir()
    same = _same_length(tmp_path / "same" / "t", b"z" * 100_000)
    differ = _same_length(tmp_path / "differ" / "t", b"y" * 100_000)
    size = len(create_torrent(same, version="v2", **_OPTIONS).to_bytes())  # one layer
    monkeypatch.setattr(_create, "_LIBTORRENT_MAX_BYTES", size)
    warned: list[bool] = []

    def progress(done: int, total: int) -> None:
        if done == 0:
            warned.append(bool(caplog.records))

    create_torrent(same, version="v2", progress=progress, **_OPTIONS)  # they were identical
    assert warned == [True]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "the torrent 't' may be refused after hashing, as files of one length that differ add "
        "piece layers (identical ones share one): with 1 more, the torrent would be "
        f"{size + 35 + 228} bytes, more than the {size} libtorrent loads by default: use a "
        "larger piece length, or share fewer files"
    )
    caplog.clear()
    warned.clear()
    with pytest.raises(CreateError, match=f"would be {size + 35 + 228} bytes"):
        create_torrent(differ, version="v2", progress=progress, **_OPTIONS)
    assert warned == [True]  # warned before hashing, refused after it
    caplog.clear()
    monkeypatch.setattr(_create, "_LIBTORRENT_MAX_BYTES", size + 35 + 228)
    create_torrent(differ, version="v2", **_OPTIONS)  # room for both layers: no warning
    assert caplog.records == []


# A private name in ``double backticks``, or cross-referenced (:func:`_x`, :meth:`~_x`).
_PRIVATE_MENTION = re.compile(r"(?:``|:[a-z]+:`~?)(_[A-Za-z]\w*)")
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _defined_names(tree: ast.Module) -> set[str]:
    """Every name a module defines or imports, and every attribute it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.id if isinstance(node, ast.Name) else node.attr)
    return names


def test_the_private_names_docstrings_mention_exist() -> None:
    """Before: ``_file_tree``'s docstring sent readers to ``_count_values``, renamed
    ``_measure`` since. A private name in ``double backticks`` or a role, in any docstring of
    bip_metainfo, is one its module defines."""
    stale: list[str] = []
    for path in sorted(Path(_create.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = _defined_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, _DOCUMENTED):
                continue
            for match in _PRIVATE_MENTION.finditer(ast.get_docstring(node) or ""):
                if match.group(1) not in names:
                    stale.append(f"{path.name}: {getattr(node, 'name', '')}: {match.group(0)}")
    assert stale == []
