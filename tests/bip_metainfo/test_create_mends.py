"""create_torrent mends: a file renamed over between the walk and its hashing is refused, not
hashed in its stead; stored links do not make the walk refuse directories that share an
inode number with an ancestor; identical files count one piece layer against the value
limit, as readers count it; no piece length libtorrent 2.1.1 refuses to load is made; text
that is not UTF-8 is one CreateError naming its argument, before any hashing."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bip_bencode import encode
from bip_metainfo import CreateError, Info, _create, _create_walk, create_torrent
from bip_metainfo._create_hashing import _open_regular
from bip_metainfo._tokens import _count_values

POSIX = pytest.mark.skipif(os.name != "posix", reason="inode numbers from DirEntry; no junctions")


class _Progress:
    """A progress callback that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


def test_a_file_renamed_over_after_the_walk_is_refused(tmp_path: Path) -> None:
    """Before: the new file was hashed under the old one's name and length, silently."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"a" * 1000)
    (root / "b").write_bytes(b"b" * 1000)
    # An older time than b.new's, whatever the file system's clock granularity: the check
    # takes a file of another inode number whose size and times are the walk's.
    os.utime(root / "b", ns=(10**18, 10**18))

    def progress(done: int, total: int) -> None:
        if done == 0:  # the walk is over, no file read yet: save b as editors save
            (root / "b.new").write_bytes(b"B" * 1000)
            os.replace(root / "b.new", root / "b")

    with pytest.raises(CreateError, match="is another file than the one") as caught:
        create_torrent(root, progress=progress, threads=1)
    assert str(root / "b") in str(caught.value)
    # The same file, rewritten in place, is still the walk's (its size is checked as read).
    assert create_torrent(root, threads=1).info.total_size == 2000


def test_open_regular_checks_identity_only_where_the_walk_had_one(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"f")
    info = os.stat(path)
    identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    with _open_regular(str(path), identity) as file:
        assert file.read() == b"f"
    with _open_regular(str(path), None) as file:  # DirEntry.stat on Windows: no inode
        assert file.read() == b"f"
    with pytest.raises(CreateError, match="another file"):
        _open_regular(str(path), (info.st_dev, info.st_ino + 1, 2, 0, 0))


@POSIX
def test_stored_links_walk_a_directory_sharing_its_parents_inode_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: with links stored (nothing can loop), x/x sharing x's inode number (as on
    some FUSE and network mounts) was refused as a symbolic link loop."""
    root = tmp_path / "t"
    (root / "x" / "x").mkdir(parents=True)
    (root / "x" / "x" / "f").write_bytes(b"f" * 10)

    def by_name(path: str, info: os.stat_result) -> tuple[int, int]:
        return (0, hash(os.path.basename(path)))  # x and x/x: one "inode"

    monkeypatch.setattr(_create_walk, "_directory_key", by_name)
    torrent = create_torrent(root, creation_date=None)
    assert [f.path_str() for f in torrent.files] == ["t/x/x/f"]
    with pytest.raises(OSError, match="symbolic link loop") as caught:
        create_torrent(root, symlinks="follow")  # following links, the check still runs
    assert caught.value.errno == errno.ELOOP


def _same_length_files(root: Path, second: bytes) -> Path:
    root.mkdir()
    (root / "a").write_bytes(b"z" * 100_000)  # seven pieces of 16 KiB: a piece layer
    (root / "b").write_bytes(second)
    (root / "c").write_bytes(b"c" * 10)
    return root


def test_identical_files_count_one_piece_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each copy counted a layer of its own (two values each), so a torrent readers
    take was refused at the limit."""
    root = _same_length_files(tmp_path / "t", b"z" * 100_000)
    options = {"piece_length": 16384, "creation_date": None}
    data = create_torrent(root, **options).to_bytes()  # type: ignore[arg-type]
    exact = _count_values(data, 10**9)
    monkeypatch.setattr(_create, "DEFAULT_MAX_VALUES", exact)
    assert create_torrent(root, **options).to_bytes() == data  # type: ignore[arg-type]
    monkeypatch.setattr(_create, "DEFAULT_MAX_VALUES", exact - 1)
    progress = _Progress()
    with pytest.raises(CreateError, match=f"{exact} bencoded values"):
        create_torrent(root, progress=progress, **options)  # type: ignore[arg-type]
    assert progress.calls == []  # refused before any hashing


def test_files_of_one_length_that_differ_are_counted_exactly_after_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _same_length_files(tmp_path / "t", b"y" * 100_000)
    options = {"piece_length": 16384, "creation_date": None}
    exact = _count_values(create_torrent(root, **options).to_bytes(), 10**9)  # type: ignore[arg-type]
    monkeypatch.setattr(_create, "DEFAULT_MAX_VALUES", exact)
    create_torrent(root, **options)  # type: ignore[arg-type]
    monkeypatch.setattr(_create, "DEFAULT_MAX_VALUES", exact - 1)
    progress = _Progress()
    with pytest.raises(CreateError, match=f"{exact} bencoded values"):
        create_torrent(root, progress=progress, **options)  # type: ignore[arg-type]
    assert progress.calls[-1] == (200_010, 200_010)  # only hashing told the layers apart
    monkeypatch.setattr(_create, "DEFAULT_MAX_VALUES", exact - 3)  # even one layer is too many
    progress = _Progress()
    with pytest.raises(CreateError, match=f"{exact - 2} bencoded values"):
        create_torrent(root, progress=progress, **options)  # type: ignore[arg-type]
    assert progress.calls == []


_STUCK_READ = """
import sys, threading
from bip_metainfo import _create_pipeline, create_torrent

stuck = threading.Event()

def never_returns(*args):
    stuck.set()
    threading.Event().wait()  # a read the OS never completes: deaf to the stop flag

_create_pipeline._hash_v1 = never_returns
cancel = threading.Event()
work = lambda: create_torrent(sys.argv[1], version="v1", cancel=cancel, threads=1)
threading.Thread(target=work, daemon=True).start()  # as bip create runs it
assert stuck.wait(10)
cancel.set()
print("cancelled", flush=True)
"""


def test_a_hashing_thread_stuck_in_a_read_does_not_hold_the_process_at_exit(
    tmp_path: Path,
) -> None:
    """Before: the interpreter joined the ThreadPoolExecutor's threads at exit, so after
    Ctrl-C ``bip create`` printed its error but never exited."""
    script = tmp_path / "stuck.py"
    script.write_text(_STUCK_READ)
    (tmp_path / "f").write_bytes(b"f" * 100)
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "f")],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit: it waited for the stuck hashing thread")
    assert (done.returncode, done.stdout) == (0, "cancelled\n"), done.stderr


# libtorrent 2.1.1's file_storage::max_piece_size: its piece picker counts a piece's blocks
# in 15 bits, so 32767 blocks of 16 KiB (2**29 - 16 KiB); it refuses to load anything larger.
LIBTORRENT_MAX_PIECE_LENGTH = 536854528


@pytest.mark.parametrize(
    ("version", "piece_length"),
    [
        ("v1", LIBTORRENT_MAX_PIECE_LENGTH + 16384),
        ("v1", 2**30 - 16384),
        ("v2", 2**29),
        ("hybrid", 2**29),
    ],
)
def test_a_piece_length_libtorrent_refuses_to_load_is_refused(
    tmp_path: Path, version: Any, piece_length: int
) -> None:
    """Before: made (bip read it back), and libtorrent 2.1.1 refused the torrent ("invalid
    or missing 'piece length' entry")."""
    (tmp_path / "f").write_bytes(b"f" * 1100)
    progress = _Progress()
    with pytest.raises(CreateError, match=f"piece length {piece_length} is above 536854528 "):
        create_torrent(
            tmp_path / "f", version=version, piece_length=piece_length, progress=progress
        )
    assert progress.calls == []


@pytest.mark.parametrize(
    ("version", "piece_length"),
    [("v1", LIBTORRENT_MAX_PIECE_LENGTH), ("v2", 2**28), ("hybrid", 2**28)],
)
def test_the_largest_piece_lengths_libtorrent_loads_are_made(
    tmp_path: Path, version: Any, piece_length: int
) -> None:
    (tmp_path / "f").write_bytes(b"f" * 1100)
    torrent = create_torrent(tmp_path / "f", version=version, piece_length=piece_length)
    assert torrent.info.piece_length == piece_length
    lt = pytest.importorskip("libtorrent")
    assert lt.torrent_info(torrent.to_bytes()).piece_length() == piece_length


def test_reading_keeps_the_older_bound_on_piece_length() -> None:
    """Creating stays within what libtorrent 2.1.1 loads; reading does not refuse what older
    libtorrents (INT_MAX / 2) and other clients load, so such a torrent can still be shown
    and verified."""
    fields: dict[str, str | int | bytes] = {"name": "f", "length": 1100, "pieces": bytes(20)}
    for piece_length in (2**29, 2**30 - 1):
        raw = encode({**fields, "piece length": piece_length})
        assert Info.from_bytes(raw).piece_length == piece_length


_NOT_UTF8 = "caf\udce9"  # os.fsdecode(b"caf\xe9"): Latin-1 typed in a UTF-8 locale


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("comment", _NOT_UTF8, "comment"),
        ("source", _NOT_UTF8, "source"),
        ("created_by", _NOT_UTF8, "created_by"),
        ("web_seeds", ["http://w.example/", "http://w.example/" + _NOT_UTF8], "web_seeds"),
        ("http_seeds", ["http://h.example/" + _NOT_UTF8], "http_seeds"),
        ("collections", [_NOT_UTF8], "collections"),
        ("nodes", [("127.0.0.1", 1), (_NOT_UTF8, 6881)], "nodes"),
        ("trackers", ["udp://t.example:1/" + _NOT_UTF8], "trackers"),
        ("trackers", [["udp://t.example:1/", "udp://u.example:1/" + _NOT_UTF8]], "trackers"),
    ],
)
def test_text_that_is_not_utf8_is_refused_naming_its_argument(
    tmp_path: Path, option: str, value: object, named: str
) -> None:
    """Before: a bare UnicodeEncodeError (bip create: "internal error", exit 70)."""
    (tmp_path / "f").write_bytes(b"f" * 1100)
    progress = _Progress()
    with pytest.raises(CreateError, match=f"^{named}: .*udce9.* is not valid UTF-8"):
        create_torrent(tmp_path / "f", progress=progress, **{option: value})  # type: ignore[arg-type]
    assert progress.calls == []


def test_long_text_that_is_not_utf8_is_shown_around_the_bad_character(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"f" * 1100)
    comment = "a" * 10_000 + _NOT_UTF8 + "z" * 10_000
    with pytest.raises(CreateError) as caught:
        create_torrent(tmp_path / "f", comment=comment)
    assert str(caught.value) == (
        f"comment: ...{'a' * 37 + _NOT_UTF8 + 'z' * 39!r}... is not valid UTF-8, which a "
        "torrent cannot hold"
    )
