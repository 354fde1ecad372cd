"""create_torrent hunt mends: a FIFO swapped in cannot pin a hashing thread, names readers
would change and limits readers would enforce are refused before hashing, followed links
cannot blow the walk up, and Metainfo.magnet() always gives a link parse reads back."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from bip_bencode import encode
from bip_metainfo import (
    MAX_URLS,
    CreateError,
    MagnetLink,
    Metainfo,
    MetainfoError,
    _create,
    _create_walk,
    create_torrent,
)
from bip_metainfo._tokens import _count_values

POSIX = pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks")


def _tree(root: Path, names: list[str]) -> Path:
    root.mkdir()
    for index, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([index + 1]) * (100 + index))
    return root


class _Progress:
    """A progress callback that records whether hashing ever started."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


@POSIX
def test_a_fifo_swapped_in_after_the_walk_is_refused_not_waited_for(tmp_path: Path) -> None:
    """A plain open() of the FIFO blocked the hashing thread for ever, cancel or not."""
    root = _tree(tmp_path / "t", ["a", "b"])
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == 0:  # the walk is over, no file read yet
            (root / "b").unlink()
            os.mkfifo(root / "b")
            threading.Timer(0.5, cancel.set).start()

    outcome: list[BaseException | Metainfo] = []

    def work() -> None:
        try:
            outcome.append(create_torrent(root, progress=progress, cancel=cancel, threads=1))
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # the defect: release the reader stuck in open(), then fail
        os.close(os.open(root / "b", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("hashing blocked on a FIFO and ignored cancel")
    assert len(outcome) == 1
    assert isinstance(outcome[0], CreateError)
    assert "no longer a regular file" in str(outcome[0])


@pytest.mark.parametrize(
    ("names", "culprit", "readers"),
    [
        (["a:b.txt"], "a:b.txt", "t/a_b.txt"),
        (["con.txt"], "con.txt", "t/con_.txt"),
        (["trail."], "trail.", "t/trail"),
        (["d/x\x01y"], "x\x01y", "t/d/x_y"),
        (["Readme", "README"], "Readme", "t/Readme.1"),
        (["A", "a/x"], "A", "t/A.1"),  # a file yields to a directory
        (["cafe\u0301", "caf\u00e9"], "caf\u00e9", "t/caf\u00e9.1"),
        (["gpj\u202eexe.txt"], "gpj\u202eexe.txt", "t/gpjexe.txt"),  # a bidi override
    ],
)
def test_names_readers_would_change_are_refused_before_hashing(
    tmp_path: Path, names: list[str], culprit: str, readers: str
) -> None:
    """Before: the torrent named them as on disk, every reader renamed them, and
    ``bip verify`` of the torrent against its own folder found files missing."""
    root = _tree(tmp_path / "t", names)
    progress = _Progress()
    with pytest.raises(CreateError, match="rename it") as info:
        create_torrent(root, progress=progress)
    assert repr(culprit)[1:-1] in str(info.value)
    assert repr(readers) in str(info.value)
    assert progress.calls == []


def test_names_that_readers_keep_are_accepted(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", ["ü/a b.txt", ".hidden", "x.1", "x", "Ω/big"])
    torrent = create_torrent(root, creation_date=None)
    on_disk = sorted("t/" + p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert sorted(f.path_str() for f in torrent.files if not f.is_pad) == on_disk


def test_joiners_in_persian_indic_and_emoji_names_are_kept(tmp_path: Path) -> None:
    """Before: readers dropped ZWNJ and ZWJ, so these names were refused as changed
    (with a message that could not say why: the names look the same)."""
    names = ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.mp3", "\u0915\u094d\u200d\u0937"]
    names.append("\U0001f468\u200d\U0001f469\u200d\U0001f467.png")
    root = _tree(tmp_path / "\u0646\u06cc\u200c\u0647\u0627", names)
    torrent = create_torrent(root, creation_date=None)
    parsed = Metainfo.from_bytes(torrent.to_bytes())
    expected = sorted(f"{root.name}/{name}" for name in names)
    assert sorted(f.path_str() for f in parsed.files if not f.is_pad) == expected


def test_a_bidi_control_is_named_as_invisible_when_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", ["a\u200fb"])
    with pytest.raises(CreateError, match="invisible"):
        create_torrent(root)


def test_a_torrent_name_readers_would_change_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", ["a"])
    with pytest.raises(CreateError, match="'x_y' to its readers"):
        create_torrent(root, name="x:y")
    with pytest.raises(CreateError, match="its info-hash"):
        create_torrent(root, name="...")


def test_bitcomet_pad_names_are_refused_where_v1_readers_would_skip_them(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", ["_____padding_file_0", "b"])
    with pytest.raises(CreateError, match="BitComet padding"):
        create_torrent(root, version="v1")
    with pytest.raises(CreateError, match="BitComet padding"):
        create_torrent(root)  # hybrid: the v1 list would not match the file tree
    assert len(create_torrent(root, version="v2").files) == 4  # two files, two pads


@POSIX
def test_a_link_target_readers_would_change_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", ["a"])
    (root / "l").symlink_to("x:y")  # dangling, stored
    with pytest.raises(CreateError, match="'x_y'; change it"):
        create_torrent(root)


def test_a_v2_tree_deeper_than_readers_allow_is_refused_before_hashing(tmp_path: Path) -> None:
    deep = tmp_path / "t" / Path(*["d"] * 100)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    progress = _Progress()
    with pytest.raises(CreateError, match="101 directories deep"):
        create_torrent(tmp_path / "t", progress=progress)
    assert progress.calls == []
    with pytest.raises(CreateError, match="101 directories deep"):  # readers' v1 limit too
        create_torrent(tmp_path / "t", version="v1")
    for _ in range(6):  # 94 directories below the top one: the most libtorrent loads in v2
        (deep / "f").rename(deep.parent / "f")
        os.rmdir(deep)
        deep = deep.parent
    for version in ("v1", "v2", "hybrid"):
        torrent = create_torrent(tmp_path / "t", version=version)
        assert Metainfo.from_bytes(torrent.to_bytes()).files[0].length == 1


def test_the_file_count_includes_pad_files_as_readers_count_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "t", ["a", "b", "c"])
    hybrid = create_torrent(root).to_bytes()  # three files, three pads
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(hybrid, max_files=5)
    assert len(Metainfo.from_bytes(hybrid, max_files=6).files) == 6
    monkeypatch.setattr(_create, "DEFAULT_MAX_FILES", 5)
    progress = _Progress()
    with pytest.raises(CreateError, match="6 files \\(pad files included\\)"):
        create_torrent(root, progress=progress)
    assert progress.calls == []
    assert len(create_torrent(root, version="v1").files) == 3


def test_the_value_count_is_the_readers_count_before_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "t", ["a", "d/b", "d/e/c", "big"])
    (root / "big").write_bytes(b"z" * 100_000)  # a piece layer of its own
    options = {"trackers": ["udp://t.example:1", "udp://u.example:2"], "creation_date": None}
    data = create_torrent(root, piece_length=16384, **options).to_bytes()  # type: ignore[arg-type]
    exact = _count_values(data, 10**9)
    monkeypatch.setattr(_create, "DEFAULT_MAX_VALUES", exact)
    create_torrent(root, piece_length=16384, **options)  # type: ignore[arg-type]
    monkeypatch.setattr(_create, "DEFAULT_MAX_VALUES", exact - 1)
    with pytest.raises(CreateError, match=f"{exact} bencoded values"):
        create_torrent(root, piece_length=16384, **options)  # type: ignore[arg-type]


def test_more_urls_than_readers_keep_are_refused(tmp_path: Path) -> None:
    urls = [f"udp://t{i}.example:1" for i in range(MAX_URLS + 1)]
    missing = tmp_path / "not there"  # refused before the walk
    with pytest.raises(CreateError, match="1001 tracker URLs"):
        create_torrent(missing, trackers=[urls])
    with pytest.raises(CreateError, match="1001 web seeds"):
        create_torrent(missing, web_seeds=[u.replace("udp", "http") for u in urls])
    with pytest.raises(CreateError, match="1001 DHT nodes"):
        create_torrent(missing, nodes=[(f"n{i}.example", 1) for i in range(MAX_URLS + 1)])
    root = _tree(tmp_path / "t", ["a"])
    assert len(create_torrent(root, trackers=urls[:MAX_URLS] * 2).trackers) == MAX_URLS


@POSIX
def test_a_chain_of_doubly_linked_directories_is_refused_at_once(tmp_path: Path) -> None:
    """Before: each level doubled the walk (34 links: 262,143 entries in 65 s)."""
    root = tmp_path / "t"
    levels = 12
    for i in range(levels + 1):
        (root / f"L{i}").mkdir(parents=True)
    (root / f"L{levels}" / "f").write_bytes(b"x")
    for i in range(levels):
        (root / f"L{i}" / "a").symlink_to(f"../L{i + 1}")
        (root / f"L{i}" / "b").symlink_to(f"../L{i + 1}")
    with pytest.raises(CreateError, match="same directory, reached twice"):
        create_torrent(root, symlinks="follow")
    stored = create_torrent(root).files  # stored links: nothing walked twice
    assert len([f for f in stored if not f.is_pad]) == 2 * levels + 1


def test_directories_sharing_an_inode_are_walked_when_links_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a file system whose directories share inode numbers (some FUSE and network
    mounts) got "the same directory, reached twice" though no link was followed."""
    root = _tree(tmp_path / "t", ["a/x/f", "b/x/g"])

    def by_name(path: str, info: os.stat_result) -> tuple[int, int]:
        return (0, hash(os.path.basename(path)))  # a/x and b/x: one "inode"

    monkeypatch.setattr(_create_walk, "_directory_key", by_name)
    torrent = create_torrent(root, creation_date=None)
    assert [f.path_str() for f in torrent.files if not f.is_pad] == ["t/a/x/f", "t/b/x/g"]
    with pytest.raises(CreateError, match="reached twice"):
        create_torrent(root, symlinks="follow")  # following links, the check still runs


@POSIX
def test_one_link_to_a_directory_outside_is_followed(tmp_path: Path) -> None:
    outside = _tree(tmp_path / "outside", ["x"])
    root = _tree(tmp_path / "t", ["a"])
    (root / "l").symlink_to(outside)
    torrent = create_torrent(root, symlinks="follow")
    assert [f.path_str() for f in torrent.files if not f.is_pad] == ["t/a", "t/l/x"]


def test_the_walk_stops_past_the_file_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "t", ["a", "b", "c", "d/e", "d/f"])
    monkeypatch.setattr(_create_walk, "DEFAULT_MAX_FILES", 3)
    with pytest.raises(CreateError, match="more than 3 files"):
        create_torrent(root)


def _metainfo(trackers: list[str], web_seeds: list[str]) -> Metainfo:
    info = {"name": "x", "piece length": 16384, "length": 1, "pieces": bytes(20)}
    torrent: dict[str, Any] = {
        "info": info,
        "announce-list": [[url] for url in trackers],
        "url-list": web_seeds,
    }
    return Metainfo.from_bytes(encode(torrent))


def test_a_magnet_link_keeps_the_trackers_that_fit_and_parses_back() -> None:
    """Before: 1,000 long trackers gave a 134,955-character link our own parse refused."""
    trackers = [f"udp://t{i}.example:1/" + "a" * 100 for i in range(1000)]
    seeds = ["http://ws.example/x"]
    link = _metainfo(trackers, seeds).magnet()
    uri = str(link)
    assert len(uri) <= MagnetLink.MAX_LENGTH
    assert MagnetLink.parse(uri, strict=True) == link
    assert 400 < len(link.trackers) < 1000
    assert link.trackers == tuple(trackers[: len(link.trackers)])  # the first ones
    assert link.web_seeds == ()  # trackers come first
    short = _metainfo(trackers[:3], seeds).magnet()
    assert short.trackers == tuple(trackers[:3])
    assert short.web_seeds == tuple(seeds)
    many = _metainfo([f"udp://t{i}.e:1" for i in range(999)], []).magnet()
    assert MagnetLink.parse(str(many)) == many  # 1000 parameters at most: xt, dn, 998 tr
    assert len(many.trackers) == MagnetLink.MAX_PARAMETERS - 2


def test_portable_names_false_keeps_what_readers_rename(tmp_path: Path) -> None:
    # As libtorrent keeps them: readers on Linux take ':' as it is, ours rename it.
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a:b.txt").write_bytes(b"x" * 100)
    (folder / "Readme").write_bytes(b"y" * 10)
    (folder / "README").write_bytes(b"z" * 10)
    with pytest.raises(CreateError, match="rename it"):
        create_torrent(folder, creation_date=None)
    torrent = create_torrent(folder, creation_date=None, portable_names=False)
    names = {file.path_str() for file in torrent.files if not file.is_pad}
    assert names == {"t/a_b.txt", "t/README", "t/Readme.1"}  # how readers see them
    with pytest.raises(ValueError, match="portable_names"):
        create_torrent(folder, portable_names=1)  # type: ignore[arg-type]
