"""MemoryFileSystem specifics: sparse memory use, the capacity bound, links."""

from __future__ import annotations

import errno

import pytest

from bip_disk._errors import StorageError
from bip_disk._memory import CHUNK_SIZE, MemoryFileSystem, SparseBuffer


def test_sparse_allocation_holds_nothing() -> None:
    fs = MemoryFileSystem()
    fs.allocate("big", 4 * 1024**3)
    assert fs.size("big") == 4 * 1024**3
    assert fs.held == 0
    assert fs.read("big", 4 * 1024**3 - 3, 10) == bytes(3)


def test_holds_what_is_written() -> None:
    fs = MemoryFileSystem()
    fs.write("f", 10 * CHUNK_SIZE + 5, b"x")
    assert fs.held == CHUNK_SIZE
    fs.write("f", 0, bytes(CHUNK_SIZE + 1))
    assert fs.held == 3 * CHUNK_SIZE
    fs.truncate("f", CHUNK_SIZE)
    assert fs.held == CHUNK_SIZE
    fs.remove("f")
    assert fs.held == 0


def test_full_allocation_holds_memory() -> None:
    fs = MemoryFileSystem()
    fs.allocate("f", 3 * CHUNK_SIZE - 1, sparse=False)
    assert fs.held == 3 * CHUNK_SIZE


def test_capacity_refuses_before_changing_anything() -> None:
    fs = MemoryFileSystem(capacity=2 * CHUNK_SIZE)
    fs.write("f", 0, b"a" * CHUNK_SIZE)
    with pytest.raises(StorageError) as info:
        fs.write("f", CHUNK_SIZE - 1, b"b" * (CHUNK_SIZE + 2))
    assert info.value.errno == errno.ENOSPC
    assert info.value.path == "f"
    assert fs.size("f") == CHUNK_SIZE
    assert fs.read("f", 0, 2 * CHUNK_SIZE) == b"a" * CHUNK_SIZE
    with pytest.raises(StorageError) as info:
        fs.allocate("g", 2 * CHUNK_SIZE, sparse=False)
    assert info.value.errno == errno.ENOSPC
    assert fs.size("g") is None
    fs.allocate("g", 2 * CHUNK_SIZE)  # sparse: no memory needed
    fs.write("f", CHUNK_SIZE, b"b")  # one more chunk fits
    assert fs.held == 2 * CHUNK_SIZE


def test_negative_capacity() -> None:
    with pytest.raises(ValueError, match="negative"):
        MemoryFileSystem(capacity=-1)


def test_symlink_loop() -> None:
    fs = MemoryFileSystem()
    fs.symlink("a", "b")
    fs.symlink("b", "a")
    with pytest.raises(StorageError) as info:
        fs.read("a", 0, 1)
    assert info.value.errno == errno.ELOOP


def test_link_to_directory() -> None:
    fs = MemoryFileSystem()
    fs.write("t/real/f", 0, b"data")
    fs.symlink("t/alias", "t/real")
    assert fs.read("t/alias/f", 0, 4) == b"data"
    fs.write("t/alias/g", 0, b"via link")
    assert fs.read("t/real/g", 0, 8) == b"via link"


def test_symlink_over_file_refused() -> None:
    fs = MemoryFileSystem()
    fs.write("f", 0, b"x")
    with pytest.raises(StorageError) as info:
        fs.symlink("f", "g")
    assert info.value.errno == errno.EEXIST


def test_rename_directory_into_itself() -> None:
    fs = MemoryFileSystem()
    fs.write("d/f", 0, b"x")
    with pytest.raises(StorageError) as info:
        fs.rename("d", "d/e")
    assert info.value.errno == errno.EINVAL


def test_rename_directory_over_non_empty_directory() -> None:
    fs = MemoryFileSystem()
    fs.write("d/f", 0, b"x")
    fs.write("e/g", 0, b"y")
    with pytest.raises(StorageError) as info:
        fs.rename("d", "e")
    assert info.value.errno == errno.ENOTEMPTY


def test_sparse_buffer_resize_zeroes_tail() -> None:
    buffer = SparseBuffer()
    buffer.write(0, b"abcdef")
    buffer.resize(2)
    buffer.resize(6)
    assert buffer.read(0, 6) == b"ab\0\0\0\0"
