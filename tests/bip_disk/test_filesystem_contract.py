"""The FileSystem contract, run against every implementation (see conftest.py)."""

from __future__ import annotations

import errno
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bip_disk._errors import PathError, StorageError
from bip_disk._filesystem import FileStat, FileSystem


@pytest.fixture(params=["memory", "native", "fsspec-memory", "fsspec-local", "fsspec-staged"])
def filesystem_kind(request: pytest.FixtureRequest) -> str:
    """conftest's kinds, and the fsspec adapter's staged mode (for object stores)."""
    kind: str = request.param
    return kind


def test_is_a_filesystem(filesystem: FileSystem) -> None:
    assert isinstance(filesystem, FileSystem)


def test_write_then_read(filesystem: FileSystem) -> None:
    filesystem.write("t/a.bin", 0, b"hello world")
    assert filesystem.read("t/a.bin", 0, 11) == b"hello world"
    assert filesystem.read("t/a.bin", 6, 5) == b"world"
    assert filesystem.read("t/a.bin", 3, 0) == b""
    assert filesystem.size("t/a.bin") == 11


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_write_accepts_buffers(filesystem: FileSystem, kind: Callable[[bytes], Any]) -> None:
    filesystem.write("f", 2, kind(b"abc"))
    assert filesystem.read("f", 0, 10) == b"\0\0abc"


def test_write_memoryview_slice(filesystem: FileSystem) -> None:
    filesystem.write("f", 0, memoryview(b"0123456789")[3:7])
    assert filesystem.read("f", 0, 10) == b"3456"


def test_empty_write_creates_but_never_extends(filesystem: FileSystem) -> None:
    filesystem.write("e", 10, b"")
    assert filesystem.size("e") == 0
    filesystem.write("e", 0, b"abc")
    filesystem.write("e", 100, b"")
    assert filesystem.size("e") == 3


def test_overwrite_in_place(filesystem: FileSystem) -> None:
    filesystem.write("f", 0, b"aaaaaaaa")
    filesystem.write("f", 2, b"bb")
    assert filesystem.read("f", 0, 8) == b"aabbaaaa"
    assert filesystem.size("f") == 8


def test_gap_reads_as_zeros(filesystem: FileSystem) -> None:
    filesystem.write("d/f", 100_000, b"end")
    assert filesystem.size("d/f") == 100_003
    assert filesystem.read("d/f", 0, 100_003) == bytes(100_000) + b"end"


def test_short_read_only_at_eof(filesystem: FileSystem) -> None:
    data = bytes(range(256)) * 300
    filesystem.write("f", 0, data)
    assert filesystem.read("f", 0, len(data) + 50) == data
    assert filesystem.read("f", len(data) - 5, 100) == data[-5:]
    assert filesystem.read("f", len(data), 10) == b""
    assert filesystem.read("f", len(data) + 1000, 10) == b""


def test_large_write_and_read(filesystem: FileSystem) -> None:
    data = bytes(range(251)) * 20_000  # ~5 MB, several chunks and syscalls
    filesystem.write("big", 7, data)
    assert filesystem.read("big", 7, len(data)) == data


def test_missing_file(filesystem: FileSystem) -> None:
    with pytest.raises(StorageError) as info:
        filesystem.read("t/missing.bin", 0, 1)
    assert info.value.errno == errno.ENOENT
    assert info.value.path == "t/missing.bin"
    assert filesystem.size("t/missing.bin") is None
    assert filesystem.stat("t/missing.bin") is None


def test_stat(filesystem: FileSystem) -> None:
    filesystem.write("s", 0, b"12345")
    found = filesystem.stat("s")
    assert isinstance(found, FileStat)
    assert found.size == 5
    assert found.mtime_ns >= 0


def test_stat_changes_when_written(filesystem: FileSystem) -> None:
    filesystem.write("s", 0, b"12345")
    before = filesystem.stat("s")
    filesystem.write("s", 5, b"6")
    after = filesystem.stat("s")
    assert before is not None
    assert after is not None
    assert after.size == 6
    assert after.mtime_ns >= before.mtime_ns


def test_write_creates_parents(filesystem: FileSystem) -> None:
    filesystem.write("a/b/c/d.bin", 0, b"x")
    assert filesystem.read("a/b/c/d.bin", 0, 1) == b"x"


@pytest.mark.parametrize("sparse", [True, False])
def test_allocate(filesystem: FileSystem, sparse: bool) -> None:
    filesystem.allocate("t/f", 300_000, sparse=sparse)
    assert filesystem.size("t/f") == 300_000
    assert filesystem.read("t/f", 299_990, 100) == bytes(10)
    assert filesystem.read("t/f", 0, 300_000) == bytes(300_000)


@pytest.mark.parametrize("sparse", [True, False])
def test_allocate_keeps_data_and_never_shrinks(filesystem: FileSystem, sparse: bool) -> None:
    filesystem.write("f", 0, b"keep me")
    filesystem.allocate("f", 50_000, sparse=sparse)
    assert filesystem.read("f", 0, 7) == b"keep me"
    assert filesystem.size("f") == 50_000
    filesystem.allocate("f", 10, sparse=sparse)
    assert filesystem.size("f") == 50_000


def test_allocate_zero_length_file(filesystem: FileSystem) -> None:
    filesystem.allocate("t/empty", 0)
    assert filesystem.size("t/empty") == 0
    assert filesystem.read("t/empty", 0, 10) == b""


def test_truncate(filesystem: FileSystem) -> None:
    filesystem.write("f", 0, b"0123456789" * 5000)
    filesystem.truncate("f", 5)
    assert filesystem.size("f") == 5
    assert filesystem.read("f", 0, 100) == b"01234"
    filesystem.truncate("f", 40_000)
    assert filesystem.size("f") == 40_000
    assert filesystem.read("f", 0, 40_000) == b"01234" + bytes(39_995)


def test_truncate_missing(filesystem: FileSystem) -> None:
    with pytest.raises(StorageError) as info:
        filesystem.truncate("nope", 3)
    assert info.value.errno == errno.ENOENT
    assert info.value.path == "nope"


def test_sync(filesystem: FileSystem) -> None:
    filesystem.write("d/a", 0, b"a")
    filesystem.write("d/b", 0, b"b")
    filesystem.sync("d/a")
    filesystem.sync()
    filesystem.sync()
    assert filesystem.read("d/a", 0, 1) == b"a"
    assert filesystem.read("d/b", 0, 1) == b"b"


def test_sync_missing(filesystem: FileSystem) -> None:
    with pytest.raises(StorageError) as info:
        filesystem.sync("nope")
    assert info.value.errno == errno.ENOENT


def test_remove(filesystem: FileSystem) -> None:
    filesystem.write("d/f", 0, b"x")
    filesystem.remove("d/f")
    assert filesystem.size("d/f") is None
    filesystem.remove("d/f")  # missing: no error
    filesystem.remove("never/existed")
    filesystem.remove("d")  # the now empty directory
    filesystem.write("d", 0, b"a file where the directory was")
    assert filesystem.size("d") == 30


def test_remove_non_empty_directory(filesystem: FileSystem) -> None:
    filesystem.write("d/f", 0, b"x")
    with pytest.raises(StorageError) as info:
        filesystem.remove("d")
    assert info.value.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR)
    assert filesystem.read("d/f", 0, 1) == b"x"


def test_rename(filesystem: FileSystem) -> None:
    filesystem.write("a/old", 0, b"data")
    filesystem.rename("a/old", "b/c/new")
    assert filesystem.size("a/old") is None
    assert filesystem.read("b/c/new", 0, 10) == b"data"
    filesystem.write("b/c/new", 4, b"+more")
    assert filesystem.read("b/c/new", 0, 10) == b"data+more"


def test_rename_replaces(filesystem: FileSystem) -> None:
    filesystem.write("x", 0, b"new")
    filesystem.write("y", 0, b"old old")
    filesystem.rename("x", "y")
    assert filesystem.read("y", 0, 10) == b"new"
    assert filesystem.size("x") is None


def test_rename_directory(filesystem: FileSystem) -> None:
    filesystem.write("t/a/1", 0, b"one")
    filesystem.write("t/b", 0, b"two")
    filesystem.rename("t", "u")
    assert filesystem.read("u/a/1", 0, 3) == b"one"
    assert filesystem.read("u/b", 0, 3) == b"two"
    assert filesystem.size("t/b") is None


def test_rename_missing(filesystem: FileSystem) -> None:
    with pytest.raises(StorageError) as info:
        filesystem.rename("nope", "other")
    assert info.value.errno == errno.ENOENT


def test_read_directory_fails(filesystem: FileSystem) -> None:
    filesystem.write("d/f", 0, b"x")
    with pytest.raises(StorageError):
        filesystem.read("d", 0, 1)


def test_write_under_a_file_fails(filesystem: FileSystem) -> None:
    filesystem.write("f", 0, b"x")
    with pytest.raises(StorageError) as info:
        filesystem.write("f/g", 0, b"y")
    assert info.value.path == "f/g"
    assert filesystem.read("f", 0, 1) == b"x"


def test_symlink(filesystem: FileSystem) -> None:
    filesystem.write("t/dir/real", 0, b"content")
    try:
        filesystem.symlink("t/link", "t/dir/real")
    except StorageError as exc:
        if exc.errno != errno.ENOTSUP:
            raise
        pytest.skip("this backend stores no symlinks")
    assert filesystem.read("t/link", 0, 100) == b"content"
    filesystem.symlink("t/link", "t/dir")  # replaced
    filesystem.remove("t/link")
    assert filesystem.read("t/dir/real", 0, 100) == b"content"


def test_symlink_target_checked(filesystem: FileSystem) -> None:
    for target in ("../outside", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(PathError):
            filesystem.symlink("t/link", target)


def test_negative_arguments(filesystem: FileSystem) -> None:
    with pytest.raises(ValueError, match="negative"):
        filesystem.write("f", -1, b"x")
    with pytest.raises(ValueError, match="negative"):
        filesystem.read("f", -1, 1)
    with pytest.raises(ValueError, match="negative"):
        filesystem.read("f", 0, -1)
    with pytest.raises(ValueError, match="negative"):
        filesystem.allocate("f", -5)
    with pytest.raises(ValueError, match="negative"):
        filesystem.truncate("f", -5)


def test_close_is_idempotent_and_reopens(filesystem: FileSystem) -> None:
    filesystem.write("f", 0, b"before")
    filesystem.close()
    filesystem.close()
    assert filesystem.read("f", 0, 6) == b"before"
    filesystem.write("f", 6, b" after")
    filesystem.close()
    assert filesystem.read("f", 0, 12) == b"before after"


BAD_PATHS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/..",
    "..",
    ".",
    "./a",
    "a//b",
    "a/",
    "a\\..\\..\\b",
    "a\x00b",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_path_escapes_refused(filesystem: FileSystem, path: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: filesystem.read(path, 0, 1),
        lambda: filesystem.write(path, 0, b"x"),
        lambda: filesystem.size(path),
        lambda: filesystem.stat(path),
        lambda: filesystem.allocate(path, 10),
        lambda: filesystem.truncate(path, 0),
        lambda: filesystem.sync(path),
        lambda: filesystem.remove(path),
        lambda: filesystem.rename(path, "ok"),
        lambda: filesystem.rename("ok", path),
        lambda: filesystem.symlink(path, "ok"),
    ]
    filesystem.write("ok", 0, b"ok")
    for call in calls:
        with pytest.raises(PathError):
            call()
    assert filesystem.read("ok", 0, 2) == b"ok"


def test_non_str_path_refused(filesystem: FileSystem) -> None:
    with pytest.raises(PathError):
        filesystem.read(b"f", 0, 1)  # type: ignore[arg-type]


def test_concurrent_writes(filesystem: FileSystem) -> None:
    block = 4096
    blocks = 64
    threads = 8
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        try:
            for index in range(number, blocks, threads):
                payload = bytes([index]) * block
                filesystem.write("shared/file", index * block, payload)
                filesystem.write(f"own/{number}", (index // threads) * block, payload)
                assert filesystem.read("shared/file", index * block, block) == payload
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    assert not errors
    expected = b"".join(bytes([index]) * block for index in range(blocks))
    assert filesystem.read("shared/file", 0, len(expected)) == expected
    for number in range(threads):
        mine = range(number, blocks, threads)
        assert filesystem.read(f"own/{number}", 0, blocks * block) == b"".join(
            bytes([index]) * block for index in mine
        )


# -- the model: random operations give the same bytes as a bytearray -----------------

_OFFSETS = st.integers(min_value=0, max_value=70_000)
_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), _OFFSETS, st.binary(min_size=0, max_size=20_000)),
        st.tuples(st.just("read"), _OFFSETS, st.integers(min_value=0, max_value=40_000)),
        st.tuples(st.just("truncate"), _OFFSETS, st.none()),
        st.tuples(st.just("allocate"), _OFFSETS, st.booleans()),
        st.tuples(st.just("close"), st.just(0), st.none()),
    ),
    max_size=25,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(operations=_OPERATIONS)
def test_matches_a_bytearray(
    filesystem_kind: str,
    filesystem_factory: Callable[[str, Path], FileSystem],
    operations: list[tuple[str, int, Any]],
) -> None:
    # The fixtures are stateless (a kind and a factory), so sharing them between
    # examples is fine; each example builds its own filesystem.
    model: bytearray | None = None
    with tempfile.TemporaryDirectory() as directory:
        fs = filesystem_factory(filesystem_kind, Path(directory) / "root")
        try:
            for action, offset, argument in operations:
                if action == "write":
                    fs.write("t/f", offset, argument)
                    model = model if model is not None else bytearray()
                    if len(model) < offset and argument:  # an empty write never extends
                        model.extend(bytes(offset - len(model)))
                    model[offset : offset + len(argument)] = argument
                elif action == "read":
                    if model is None:
                        with pytest.raises(StorageError):
                            fs.read("t/f", offset, argument)
                    else:
                        assert fs.read("t/f", offset, argument) == bytes(
                            model[offset : offset + argument]
                        )
                elif action == "truncate":
                    if model is None:
                        with pytest.raises(StorageError):
                            fs.truncate("t/f", offset)
                    else:
                        fs.truncate("t/f", offset)
                        del model[offset:]
                        model.extend(bytes(offset - len(model)))
                elif action == "allocate":
                    fs.allocate("t/f", offset, sparse=argument)
                    model = model if model is not None else bytearray()
                    model.extend(bytes(max(0, offset - len(model))))
                else:
                    fs.close()
                assert fs.size("t/f") == (None if model is None else len(model))
            if model is not None:
                assert fs.read("t/f", 0, len(model) + 1) == bytes(model)
        finally:
            fs.close()
