"""NativeFileSystem specifics: the handle cache, symlinks out of the root, errors."""

from __future__ import annotations

import errno
import os
import random
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from bip_disk._errors import PathError, StorageError
from bip_disk._native import NativeFileSystem

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")


@pytest.fixture(params=["secure", "fallback"])
def native(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NativeFileSystem]:
    """A NativeFileSystem, walking paths with dir_fd (secure) and with lstat (fallback).

    The fallback is what OSes without dir_fd / O_NOFOLLOW use; forcing it here
    tests it on POSIX too.
    """
    fs = NativeFileSystem(tmp_path / "root")
    fs._secure = request.param == "secure"
    try:
        yield fs
    finally:
        fs.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="max_open_files"):
        NativeFileSystem("/tmp/x", max_open_files=0)
    with pytest.raises(ValueError, match="preallocate"):
        NativeFileSystem("/tmp/x", preallocate="dense")  # type: ignore[arg-type]


def test_root_created_on_first_write(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path / "a" / "b")
    with pytest.raises(StorageError) as info:
        fs.read("f", 0, 1)
    assert info.value.errno == errno.ENOENT
    assert fs.size("f") is None
    fs.write("f", 0, b"x")
    assert (tmp_path / "a" / "b" / "f").read_bytes() == b"x"
    fs.close()


def test_files_land_under_the_root(native: NativeFileSystem) -> None:
    native.write("t/d/f.bin", 0, b"data")
    assert (native.root / "t" / "d" / "f.bin").read_bytes() == b"data"


def test_handle_cache_is_bounded(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path, max_open_files=4)
    before = _open_fds()
    for index in range(20):
        fs.write(f"f{index}", 0, bytes([index]) * 10)
        assert fs.open_files <= 4
    for index in range(20):
        assert fs.read(f"f{index}", 0, 10) == bytes([index]) * 10
    assert fs.open_files == 4
    fs.close()
    assert fs.open_files == 0
    if before >= 0:
        assert _open_fds() == before


def test_evicted_handle_stays_valid_while_in_use(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path, max_open_files=1)
    fs.write("a", 0, b"aaaa")
    handle, _ = fs._acquire("a", ("a",), write=False, create=False)
    fs.write("b", 0, b"bbbb")  # evicts "a" while we hold it
    assert handle.retired
    assert os.pread(handle.fd, 4, 0) == b"aaaa"  # still open
    fd = handle.fd
    fs._release(handle)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    fs.close()


def test_eviction_under_concurrency(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path, max_open_files=2)
    files = 12
    block = 1024
    rounds = 300
    errors: list[BaseException] = []
    before = _open_fds()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(rounds):
                index = rng.randrange(files)
                slot = rng.randrange(16)
                # Each (file, slot) pair always holds the same bytes, whoever writes.
                payload = bytes([index * 16 + slot]) * block
                fs.write(f"d/{index}", slot * block, payload)
                data = fs.read(f"d/{index}", slot * block, block)
                assert data == payload
                if rng.random() < 0.05:
                    fs.close()  # everything retired at once, in use or not
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert fs.open_files <= 2
    fs.close()
    if before >= 0:
        assert _open_fds() == before  # no descriptor leaked


def test_read_only_file_can_be_read(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path)
    (tmp_path / "seed.bin").write_bytes(b"seed data")
    (tmp_path / "seed.bin").chmod(0o444)
    assert fs.read("seed.bin", 0, 4) == b"seed"
    fs.close()


def test_first_write_reopens_read_write(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path)
    fs.write("f", 0, b"1234")
    fs.close()
    assert fs.read("f", 0, 4) == b"1234"  # opened read-only
    fs.write("f", 4, b"5678")  # reopened read-write
    assert fs.read("f", 0, 8) == b"12345678"
    fs.close()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_permission_denied(tmp_path: Path) -> None:
    # Skipped as root: root may write anywhere, so EACCES cannot be provoked in
    # this process; test_permission_denied_unprivileged covers that case.
    fs = NativeFileSystem(tmp_path)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o500)
    try:
        with pytest.raises(StorageError) as info:
            fs.write("locked/f", 0, b"x")
        assert info.value.errno == errno.EACCES
        assert info.value.path == "locked/f"
    finally:
        (tmp_path / "locked").chmod(0o700)
        fs.close()


@pytest.mark.skipif(
    not hasattr(os, "fork") or not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root, to drop to an unprivileged user",
)
def test_permission_denied_unprivileged(tmp_path: Path) -> None:
    """The same check when running as root: a forked child drops to ``nobody``."""
    tmp_path.chmod(0o755)
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/private", 0, b"root only")
    (tmp_path / "root" / "t" / "private").chmod(0o600)
    fs.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads around
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        status = 9
        try:
            os.setgid(65534)
            os.setuid(65534)
            child = NativeFileSystem(tmp_path / "root")
            status = 0
            for call in (
                lambda: child.write("t/new", 0, b"x"),
                lambda: child.read("t/private", 0, 4),
                lambda: child.write("t/private", 0, b"x"),
            ):
                try:
                    call()
                    status |= 1
                except StorageError as exc:
                    if exc.errno != errno.EACCES or not exc.path or not exc.path.startswith("t/"):
                        status |= 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(
    ("code", "action"),
    [(errno.ENOSPC, "write"), (errno.EIO, "read"), (errno.EACCES, "write")],
)
def test_os_errors_become_storage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, action: str
) -> None:
    fs = NativeFileSystem(tmp_path)
    fs.write("t/f", 0, b"x")

    def fail(*args: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "pwrite" if action == "write" else "pread", fail)
    call = (
        (lambda: fs.write("t/f", 0, b"y")) if action == "write" else (lambda: fs.read("t/f", 0, 1))
    )
    with pytest.raises(StorageError) as info:
        call()
    assert info.value.errno == code
    assert info.value.path == "t/f"
    assert str(tmp_path) not in str(info.value)  # the root is not leaked
    monkeypatch.undo()
    fs.close()


def test_offset_too_large(native: NativeFileSystem) -> None:
    with pytest.raises(StorageError) as info:
        native.write("f", 2**64, b"x")
    assert info.value.errno in (errno.EFBIG, errno.EINVAL)


@needs_symlinks
@pytest.mark.parametrize("absolute", [False, True])
def test_directory_symlink_out_of_root_refused(
    native: NativeFileSystem, tmp_path: Path, absolute: bool
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    native.root.mkdir()
    (native.root / "t").mkdir()
    target = str(outside) if absolute else "../../outside"
    (native.root / "t" / "evil").symlink_to(target)
    for call in (
        lambda: native.write("t/evil/secret", 0, b"overwritten"),
        lambda: native.write("t/evil/new", 0, b"created"),
        lambda: native.read("t/evil/secret", 0, 6),
        lambda: native.size("t/evil/secret"),
        lambda: native.allocate("t/evil/new", 10),
        lambda: native.truncate("t/evil/secret", 0),
        lambda: native.rename("t/evil/secret", "t/stolen"),
        lambda: native.symlink("t/evil/link", "t/x"),
        lambda: native.sync("t/evil/secret"),
    ):
        with pytest.raises(PathError):
            call()
    assert (outside / "secret").read_bytes() == b"secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


@needs_symlinks
def test_file_symlink_out_of_root_refused(native: NativeFileSystem, tmp_path: Path) -> None:
    outside = tmp_path / "victim"
    outside.write_bytes(b"victim")
    native.root.mkdir()
    (native.root / "f").symlink_to(outside)
    (native.root / "g").symlink_to("../victim")
    for name in ("f", "g"):
        with pytest.raises(PathError):
            native.write(name, 0, b"overwritten")
        with pytest.raises(PathError):
            native.read(name, 0, 6)
        with pytest.raises(PathError):
            native.allocate(name, 100, sparse=False)
    assert outside.read_bytes() == b"victim"
    native.remove("f")  # removing the link itself is fine: it is inside
    assert outside.read_bytes() == b"victim"
    assert not (native.root / "f").is_symlink()


@needs_symlinks
def test_symlink_inside_root_followed(native: NativeFileSystem) -> None:
    native.write("t/real/f", 0, b"data")
    (native.root / "t" / "rel").symlink_to("real")
    (native.root / "t" / "abs").symlink_to(native.root / "t" / "real")
    (native.root / "t" / "up").symlink_to("../t/real/f")
    assert native.read("t/rel/f", 0, 4) == b"data"
    assert native.read("t/abs/f", 0, 4) == b"data"
    assert native.read("t/up", 0, 4) == b"data"
    native.write("t/rel/g", 0, b"via link")
    assert (native.root / "t" / "real" / "g").read_bytes() == b"via link"


@needs_symlinks
def test_symlink_loop(native: NativeFileSystem) -> None:
    native.root.mkdir()
    (native.root / "a").symlink_to("b")
    (native.root / "b").symlink_to("a")
    with pytest.raises(StorageError) as info:
        native.read("a", 0, 1)
    assert info.value.errno == errno.ELOOP
    with pytest.raises(StorageError) as info:
        native.write("a/x", 0, b"x")
    assert info.value.errno == errno.ELOOP


@needs_symlinks
def test_symlink_created_relative(native: NativeFileSystem) -> None:
    native.write("t/a/b/target", 0, b"x")
    native.symlink("t/c/link", "t/a/b/target")
    assert os.readlink(native.root / "t" / "c" / "link") == "../a/b/target"
    native.symlink("t/c/link", "t/a")  # replaced
    assert os.readlink(native.root / "t" / "c" / "link") == "../a"
    assert native.read("t/c/link/b/target", 0, 1) == b"x"
    native.write("t/file", 0, b"x")
    with pytest.raises(StorageError) as info:
        native.symlink("t/file", "t/a")
    assert info.value.errno == errno.EEXIST


def test_full_preallocation_reserves_blocks(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path)
    fs.allocate("sparse", 8 << 20)
    fs.allocate("full", 8 << 20, sparse=False)
    fs.sync()
    sparse_blocks = (tmp_path / "sparse").stat().st_blocks * 512
    full_blocks = (tmp_path / "full").stat().st_blocks * 512
    assert full_blocks >= 8 << 20
    assert sparse_blocks < full_blocks
    fs.close()


def test_preallocate_full_policy(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path, preallocate="full")
    fs.allocate("f", 4 << 20)  # sparse asked, full given
    assert (tmp_path / "f").stat().st_blocks * 512 >= 4 << 20
    fs.close()


def test_full_preallocation_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    fs = NativeFileSystem(tmp_path)
    fs.write("f", 0, b"keep")
    fs.allocate("f", 3 << 20, sparse=False)
    assert fs.size("f") == 3 << 20
    assert fs.read("f", 0, 6) == b"keep\0\0"
    assert (tmp_path / "f").stat().st_blocks * 512 >= 3 << 20
    fs.close()


def test_stat_sees_changes_behind_our_back(native: NativeFileSystem) -> None:
    native.write("f", 0, b"12345")
    assert native.size("f") == 5  # the handle is cached now
    (native.root / "f").unlink()
    assert native.stat("f") is None
    with pytest.raises(StorageError) as info:
        native.sync("f")
    assert info.value.errno == errno.ENOENT
    (native.root / "g").write_bytes(b"abc")
    assert native.size("g") == 3


def test_sync_all_survives_eviction(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path, max_open_files=1)
    for index in range(5):
        fs.write(f"f{index}", 0, b"x")
    assert len(fs._dirty) == 5
    fs.sync()
    assert not fs._dirty
    fs.write("f0", 1, b"y")
    fs.write("f1", 1, b"y")  # evicts f0's descriptor
    (tmp_path / "f0").unlink()
    # f0 is looked for at its path, not through a descriptor: deleted behind our back,
    # it is passed over (nothing there to make durable; a mark kept would fail every
    # sync() from now on), f1 is synced.
    fs.sync()
    assert not fs._dirty
    with pytest.raises(StorageError) as info:
        fs.sync("f0")
    assert info.value.errno == errno.ENOENT
    assert info.value.path == "f0"
    fs.close()


def test_failed_truncate_is_not_dirty(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path)
    with pytest.raises(StorageError):
        fs.truncate("missing", 3)
    fs.sync()  # nothing to sync, no ENOENT for a file that never existed
    fs.close()


def test_stat_of_directory(native: NativeFileSystem) -> None:
    native.write("d/f", 0, b"x")
    with pytest.raises(StorageError) as info:
        native.stat("d")
    assert info.value.errno == errno.EISDIR


def test_remove_under_a_file_is_no_error(native: NativeFileSystem) -> None:
    native.write("f", 0, b"x")
    native.remove("f/g")
    assert native.size("f") == 1


def test_context_manager(tmp_path: Path) -> None:
    with NativeFileSystem(tmp_path) as fs:
        fs.write("f", 0, b"x")
        assert fs.open_files == 1
        assert "NativeFileSystem(" in repr(fs)
    assert fs.open_files == 0
