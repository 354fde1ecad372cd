"""FsspecFileSystem specifics: staging for object stores, errors, local symlinks.

The contract suite (test_filesystem_contract.py) already runs the adapter over
fsspec's memory and local filesystems, in place and staged.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bip_disk._errors import PathError, StorageError
from bip_disk._fsspec import FsspecFileSystem
from bip_disk._memory import CHUNK_SIZE

fsspec = pytest.importorskip("fsspec")


def _memory() -> Any:
    return fsspec.filesystem("memory")


def _root() -> str:
    return f"/bip-fsspec-{uuid.uuid4().hex}"


def test_bip_disk_imports_without_fsspec() -> None:
    code = (
        "import sys; sys.modules['fsspec'] = None\n"
        "import bip_disk, bip_disk._fsspec, bip_disk._native, bip_disk._memory, bip_disk._layout\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_write_mode_chosen_by_protocol(tmp_path: Path) -> None:
    assert FsspecFileSystem(_memory(), _root()).random_writes
    assert FsspecFileSystem(fsspec.filesystem("file"), str(tmp_path)).random_writes

    memory_class: Any = type(_memory())

    class ObjectStore(memory_class):  # type: ignore[misc]
        protocol = ("objectstore",)

    store = FsspecFileSystem(ObjectStore(), _root())
    assert not store.random_writes
    assert "staged" in repr(store)
    assert FsspecFileSystem(_memory(), _root(), random_writes=False).random_writes is False


def test_negative_bound() -> None:
    with pytest.raises(ValueError, match="negative"):
        FsspecFileSystem(_memory(), _root(), max_staged_bytes=-1)


def test_staged_writes_upload_on_sync() -> None:
    backend = _memory()
    root = _root()
    fs = FsspecFileSystem(backend, root, random_writes=False)
    fs.write("t/f", 3, b"abc")
    assert not backend.exists(f"{root}/t/f")  # still staged
    assert fs.read("t/f", 0, 10) == b"\0\0\0abc"
    assert fs.size("t/f") == 6
    fs.sync("t/f")
    assert backend.cat_file(f"{root}/t/f") == b"\0\0\0abc"
    fs.write("t/f", 0, b"X")  # loads the uploaded file again
    fs.close()
    assert backend.cat_file(f"{root}/t/f") == b"X\0\0abc"


def test_staged_existing_file_is_loaded_first() -> None:
    backend = _memory()
    root = _root()
    backend.pipe_file(f"{root}/f", b"0123456789")
    fs = FsspecFileSystem(backend, root, random_writes=False)
    fs.write("f", 2, b"..")
    fs.sync()
    assert backend.cat_file(f"{root}/f") == b"01..456789"


def test_staged_memory_is_bounded() -> None:
    backend = _memory()
    root = _root()
    fs = FsspecFileSystem(backend, root, random_writes=False, max_staged_bytes=2 * CHUNK_SIZE)
    for index in range(6):
        fs.write(f"f{index}", 0, bytes([index]) * CHUNK_SIZE)
        assert fs._held() <= 2 * CHUNK_SIZE
    uploaded = [index for index in range(6) if backend.exists(f"{root}/f{index}")]
    assert len(uploaded) >= 4
    for index in range(6):
        assert fs.read(f"f{index}", 0, CHUNK_SIZE) == bytes([index]) * CHUNK_SIZE
    fs.close()
    assert all(backend.exists(f"{root}/f{index}") for index in range(6))


def test_staged_write_under_a_staged_file_fails() -> None:
    fs = FsspecFileSystem(_memory(), _root(), random_writes=False)
    fs.write("f", 0, b"x")
    with pytest.raises(StorageError) as info:
        fs.write("f/g", 0, b"y")
    assert info.value.errno == errno.ENOTDIR


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (RuntimeError("backend exploded at s3://bucket/secret"), errno.EIO),
        (PermissionError("denied"), errno.EACCES),
        (OSError(errno.ENOSPC, "full"), errno.ENOSPC),
        (TimeoutError(), errno.ETIMEDOUT),
        (NotImplementedError(), errno.ENOTSUP),
    ],
)
def test_backend_errors_become_storage_errors(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, code: int
) -> None:
    backend = _memory()
    fs = FsspecFileSystem(backend, _root())
    fs.write("f", 0, b"data")

    def fail(*args: object, **kwargs: object) -> bytes:
        raise raised

    monkeypatch.setattr(backend, "cat_file", fail)
    with pytest.raises(StorageError) as info:
        fs.read("f", 0, 4)
    assert info.value.errno == code
    assert info.value.path == "f"
    assert "secret" not in str(info.value)


def test_local_symlink_out_of_root_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "evil").symlink_to(outside)
    fs = FsspecFileSystem(fsspec.filesystem("file"), str(root))
    with pytest.raises(PathError):
        fs.write("evil/secret", 0, b"overwritten")
    with pytest.raises(PathError):
        fs.read("evil/secret", 0, 6)
    assert (outside / "secret").read_bytes() == b"secret"
    fs.remove("evil")  # the link only
    assert (outside / "secret").exists()


def test_local_symlinks(tmp_path: Path) -> None:
    fs = FsspecFileSystem(fsspec.filesystem("file"), str(tmp_path))
    fs.write("t/a/file", 0, b"x")
    fs.symlink("t/b/link", "t/a/file")
    assert os.readlink(tmp_path / "t" / "b" / "link") == "../a/file"
    assert fs.read("t/b/link", 0, 1) == b"x"
    with pytest.raises(StorageError) as info:
        fs.symlink("t/a/file", "t/b")
    assert info.value.errno == errno.EEXIST


def test_memory_has_no_symlinks() -> None:
    fs = FsspecFileSystem(_memory(), _root())
    with pytest.raises(StorageError) as info:
        fs.symlink("l", "t")
    assert info.value.errno == errno.ENOTSUP


def test_local_mtime(tmp_path: Path) -> None:
    fs = FsspecFileSystem(fsspec.filesystem("file"), str(tmp_path))
    fs.write("f", 0, b"x")
    found = fs.stat("f")
    assert found is not None
    assert found.mtime_ns == (tmp_path / "f").stat().st_mtime_ns // 1000 * 1000 or (
        abs(found.mtime_ns - (tmp_path / "f").stat().st_mtime_ns) < 1_000_000
    )
