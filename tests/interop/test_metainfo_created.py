"""Torrents bip_metainfo creates, as aria2 1.36 sees them.

libtorrent's and mktorrent's views of our torrents (same bytes, same info-hashes) are checked in
tests/bip_metainfo/test_create.py; this file adds aria2:

- `aria2c -S` (`--show-files`) prints a torrent's info-hash, piece length, number of pieces, total
  length, name, mode, trackers and files. For our v1 torrents (a single file; a directory with
  nested folders, empty files, a hidden file, names with spaces, '%', ';' and non-ASCII letters; a
  piece length that is no power of two) every one of them matches ours.
- aria2 refuses v2-only torrents: it needs a v1 `pieces` string ("Missing pieces in torrent
  metainfo", printed as an exception while `-S` still exits 0).
- aria2 reports a different v1 info-hash for our hybrid torrents. It does not hash the info
  dictionary's bytes as they are in the file: it re-encodes the dictionary it parsed, and its
  bencode reader drops every entry whose key is the empty string, which is exactly where BEP 52's
  `file tree` keeps each file's length and `pieces root`. The hash it shows is the SHA-1 of that
  re-encoding (pinned below); libtorrent's hash is ours. Everything else it shows matches our v1
  view, BEP 47 pad files included: aria2 lists them as ordinary files (`<name>/.pad/<size>`).
- aria2 verifies the data of our v1 torrents: `--check-integrity=true --seed-time=0` finds every
  piece and finishes, and after one byte of the content is changed it reports a checksum error and
  an incomplete download, its control file (`<name>.aria2`) holding every piece but the one with
  the changed byte.

libtorrent 2.1.1 loads our torrents within exactly as many bencoded tokens and bytes as
create_torrent counts before refusing what libtorrent would not load by default (one fewer of
either, and libtorrent refuses them): create_torrent's counts are libtorrent's.

aria2 runs with `--no-conf=true`, a private HOME, a UTF-8 locale and a timeout; the verification
runs with DHT, local peer discovery and peer exchange off, IPv6 off, listening on a free
127.0.0.1 port, on torrents with no trackers, so it has nobody to contact.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from bip_bencode import decode, encode
from bip_metainfo import Metainfo, _create, create_torrent

from ._helpers import free_port, require_client
from ._seeders import HOST, aria2_loopback_options
from ._torrents import ContentFile, run_tool_result, write_content

pytestmark = pytest.mark.interop

KIB = 1024

DIR_NAME = "Créé dir ✓"
DIR_FILES = (
    ContentFile(".hidden file", 3_000),
    ContentFile("100% sure; a+b=c.txt", 20_000),
    ContentFile("a/empty", 0),
    ContentFile("a/x.bin", 70_000),
    ContentFile("b c.txt", 5),
    ContentFile("sub dir/ünï cødé/deeper/f 1.bin", 40_000),
    ContentFile("sub dir/ünï cødé/nothing", 0),
    ContentFile("tools/run me.sh", 17_000, executable=True),
)
SINGLE = ContentFile("single ünï file.bin", 150_001)

Kind = Literal["single", "directory"]
KINDS: tuple[Kind, ...] = ("single", "directory")


# --- content and torrents -----------------------------------------------------------------


def _content(tmp_path: Path, kind: Kind) -> Path:
    """The file or directory to share, under tmp_path/data."""
    data = tmp_path / "data"
    if kind == "single":
        write_content(data, [SINGLE])
        return data / SINGLE.path
    write_content(data / DIR_NAME, DIR_FILES)
    return data / DIR_NAME


def _write_torrent(tmp_path: Path, torrent: Metainfo, name: str = "ours.torrent") -> Path:
    path = tmp_path / name
    path.write_bytes(torrent.to_bytes())
    return path


# --- running aria2 ------------------------------------------------------------------------


def _aria2(
    tmp_path: Path, args: Sequence[str | os.PathLike[str]], *, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run aria2c with no config file, a private HOME and a UTF-8 locale; return the result."""
    executable = require_client("aria2c")
    return run_tool_result(
        [executable, "--no-conf=true", "--enable-color=false", *args],
        cwd=tmp_path,
        timeout=timeout,
        home=tmp_path / "aria2-home",
    )


def _output(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stdout + result.stderr).decode("utf-8", "replace")


def _offline_flags(tmp_path: Path) -> list[str]:
    """Keep aria2 off every network but loopback (see shared/INTEROP.md)."""
    return aria2_loopback_options(
        tmp_path / "aria2-home",
        port=free_port(HOST),
        dht_port=free_port(HOST, tcp=False, udp=True),
    )


# --- aria2 -S -----------------------------------------------------------------------------


_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def _abbreviated(text: str) -> int:
    """aria2's abbreviated sizes: '16KiB', '1.5MiB', '5B'."""
    match = re.fullmatch(r"([\d.]+)(B|KiB|MiB|GiB|TiB)", text.strip())
    assert match is not None, f"not an aria2 size: {text!r}"
    return round(float(match[1]) * _UNITS[match[2]])


def _exact(text: str) -> int:
    """The exact byte count aria2 prints in parentheses: '107KiB (110,005)' -> 110005."""
    match = re.search(r"\(([\d,]+)\)\s*$", text)
    assert match is not None, f"no exact size in {text!r}"
    return int(match[1].replace(",", ""))


@dataclass
class AriaView:
    """What `aria2c -S` printed about a torrent."""

    output: str
    fields: dict[str, str] = field(default_factory=dict)
    announce: list[list[str]] = field(default_factory=list)
    url_list: list[str] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)

    @property
    def info_hash(self) -> str:
        return self.fields["Info Hash"]

    @property
    def piece_length(self) -> int:
        return _abbreviated(self.fields["Piece Length"])

    @property
    def num_pieces(self) -> int:
        return int(self.fields["The Number of Pieces"])

    @property
    def total_length(self) -> int:
        return _exact(self.fields["Total Length"])


def _parse_show_files(output: str) -> AriaView:
    view = AriaView(output)
    lines = output.splitlines()
    section: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line in ("Announce:", "URL List:"):
            section = line[:-1]
            continue
        if section is not None and line.startswith(" "):
            if section == "Announce":
                view.announce.append(line.split())
            else:
                view.url_list.append(line.strip())
            continue
        section = None
        if line == "Files:":
            break
        key, sep, value = line.partition(": ")
        if sep and key and not key.startswith((">", "*")):
            view.fields[key] = value
    # The file table: "idx|path/length", a rule, then per file "  1|./path" and "   |size".
    for line in lines[index:]:
        entry = re.fullmatch(r"\s*(\d+)\|(.*)", line)
        if entry is not None:
            path = entry[2]
            assert path.startswith("./"), line
            view.files.append((path[2:], -1))
            continue
        size = re.fullmatch(r"\s+\|(.*)", line)
        if size is not None and view.files and view.files[-1][1] == -1:
            view.files[-1] = (view.files[-1][0], _exact(size[1]))
    assert all(size >= 0 for _, size in view.files), output
    return view


def _show(tmp_path: Path, torrent: Path) -> AriaView:
    result = _aria2(tmp_path, ["--show-files=true", torrent], timeout=30)
    output = _output(result)
    assert result.returncode == 0, output
    return _parse_show_files(output)


def _v1_hash(torrent: Metainfo) -> bytes:
    info_hash = torrent.info.info_hash.v1
    assert info_hash is not None, "not a v1 or hybrid torrent"
    return info_hash


def _our_files(torrent: Metainfo) -> list[tuple[str, int]]:
    """Our v1 file list as aria2 prints it: the path below the download directory, pads too."""
    return [("/".join(entry.path), entry.length) for entry in torrent.files]


@pytest.mark.parametrize(
    ("kind", "piece_length", "extras"),
    [
        ("single", 16 * KIB, False),
        ("directory", 16 * KIB, False),
        ("single", 48 * KIB, True),
        ("directory", 48 * KIB, True),
    ],
)
def test_aria2_shows_our_v1_torrent_as_we_do(
    tmp_path: Path, kind: Kind, piece_length: int, extras: bool
) -> None:
    content = _content(tmp_path, kind)
    options: dict[str, Any] = {"creation_date": None}
    if extras:
        options = {
            "trackers": [
                ["udp://127.0.0.1:6969/announce", "http://127.0.0.1:6970/announce"],
                "udp://127.0.0.1:6971/announce",
            ],
            "web_seeds": ["http://127.0.0.1:8000/seed"],
            "comment": "a comment, ünï ✓",
            "creation_date": 1_700_000_000,
        }
    ours = create_torrent(content, version="v1", piece_length=piece_length, **options)
    view = _show(tmp_path, _write_torrent(tmp_path, ours))

    assert view.info_hash == _v1_hash(ours).hex()
    assert f"xt=urn:btih:{view.info_hash.upper()}" in view.fields["Magnet URI"]
    assert view.fields["Mode"] == ("single" if kind == "single" else "multi")
    assert view.fields["Name"] == content.name == ours.info.name
    assert view.piece_length == piece_length == ours.info.piece_length
    assert view.num_pieces == ours.info.num_pieces
    assert view.total_length == ours.info.total_size
    assert view.files == _our_files(ours)
    assert not any(entry.is_pad for entry in ours.files)  # v1: no pad files
    if kind == "directory":
        # Empty files, the hidden file and the odd names are all there.
        assert ("Créé dir ✓/a/empty", 0) in view.files
        assert ("Créé dir ✓/sub dir/ünï cødé/nothing", 0) in view.files
        assert ("Créé dir ✓/.hidden file", 3_000) in view.files
    if extras:
        # aria2 prints one line per tier; a tier's order is not ours to rely on.
        assert [sorted(tier) for tier in view.announce] == [sorted(tier) for tier in ours.trackers]
        assert view.url_list == ["http://127.0.0.1:8000/seed"]
        assert view.fields["Comment"] == "a comment, ünï ✓"
        assert view.fields["Creation Date"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    else:
        assert view.announce == []
        assert "Comment" not in view.fields
        assert "Creation Date" not in view.fields


@pytest.mark.parametrize("kind", KINDS)
def test_aria2_refuses_our_v2_only_torrent(tmp_path: Path, kind: Kind) -> None:
    """Known aria2 1.36 limitation (shared/INTEROP.md): no BEP 52 support at all."""
    content = _content(tmp_path, kind)
    ours = create_torrent(content, version="v2", piece_length=16 * KIB, creation_date=None)
    assert b"pieces" not in ours.info.fields  # v2-only: nothing for a v1 client to use
    result = _aria2(tmp_path, ["--show-files=true", _write_torrent(tmp_path, ours)], timeout=30)
    output = _output(result)
    assert result.returncode == 0, output  # aria2 prints the exception but -S still succeeds
    assert "errorCode=26 Missing pieces in torrent metainfo" in output
    assert "Info Hash" not in output
    assert "Files:" not in output


def _drop_empty_keys(value: Any) -> Any:
    """A bencoded value with every dictionary entry whose key is b'' removed (aria2's reading)."""
    if isinstance(value, dict):
        return {k: _drop_empty_keys(v) for k, v in value.items() if k != b""}
    if isinstance(value, list):
        return [_drop_empty_keys(v) for v in value]
    return value


@pytest.mark.parametrize("kind", KINDS)
def test_aria2_miscomputes_the_v1_info_hash_of_our_hybrid_torrent(
    tmp_path: Path, kind: Kind
) -> None:
    """Pins aria2 1.36's known wrong v1 hash for hybrid torrents (shared/INTEROP.md); not ours."""
    content = _content(tmp_path, kind)
    ours = create_torrent(content, version="hybrid", piece_length=16 * KIB, creation_date=None)
    view = _show(tmp_path, _write_torrent(tmp_path, ours))

    # The judge: libtorrent reads the same v1 info-hash as ours, the SHA-1 of the info bytes.
    require_client("libtorrent")
    lt: Any = importlib.import_module("libtorrent")
    loaded = lt.torrent_info(ours.to_bytes())
    assert bytes(loaded.info_hashes().v1.to_bytes()) == _v1_hash(ours)
    assert hashlib.sha1(ours.info.raw).digest() == _v1_hash(ours)

    # aria2's: the SHA-1 of the info dict re-encoded without the file tree's b"" entries.
    assert view.info_hash != _v1_hash(ours).hex()
    reencoded = encode(_drop_empty_keys(decode(ours.info.raw)))
    assert view.info_hash == hashlib.sha1(reencoded).hexdigest()
    assert f"xt=urn:btih:{view.info_hash.upper()}" in view.fields["Magnet URI"]

    # Everything else is our v1 view, pad files shown as ordinary files.
    assert view.fields["Mode"] == ("single" if kind == "single" else "multi")
    assert view.fields["Name"] == content.name
    assert view.piece_length == 16 * KIB
    assert view.num_pieces == ours.info.num_pieces
    assert view.total_length == ours.info.geometry.total_size  # pads included
    assert view.files == _our_files(ours)
    pads = [(path, size) for path, size in view.files if "/.pad/" in path]
    if kind == "single":
        assert pads == []
    else:
        assert pads, "a hybrid directory torrent has pad files"
        assert all(path == f"{DIR_NAME}/.pad/{size}" for path, size in pads)


# --- libtorrent's limits, as create_torrent counts them -------------------------------------


def _limits_share(root: Path) -> Path:
    """A directory and two files, one of them with a piece layer (three pieces of 16 KiB)."""
    (root / "d").mkdir(parents=True)
    (root / "d" / "a").write_bytes(b"a" * 40_000)
    (root / "b").write_bytes(b"b" * 20_000)
    (root / "c").write_bytes(b"c" * 10)
    return root


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_our_token_and_byte_counts_are_libtorrents(
    tmp_path: Path, version: Literal["v1", "v2", "hybrid"]
) -> None:
    """create_torrent refuses a torrent over libtorrent's default ``max_decode_tokens`` or
    ``max_buffer_size`` by its own counts: libtorrent loads ours at exactly those counts and
    refuses them at one fewer, so the counts are libtorrent's, not near them."""
    require_client("libtorrent")
    lt: Any = importlib.import_module("libtorrent")
    content = _limits_share(tmp_path / version)
    data = create_torrent(
        content, version=version, piece_length=16 * KIB, creation_date=None, threads=1
    ).to_bytes()
    path = tmp_path / "x.torrent"
    path.write_bytes(data)
    measure = _create._measure(lt.bdecode(data))  # as create_torrent measures it
    assert measure.size == len(data)
    lt.load_torrent_file(str(path), {"max_decode_tokens": measure.tokens})
    with pytest.raises(RuntimeError, match="item count limit exceeded"):
        lt.load_torrent_file(str(path), {"max_decode_tokens": measure.tokens - 1})
    lt.load_torrent_file(str(path), {"max_buffer_size": measure.size})
    with pytest.raises(RuntimeError, match="metadata too large"):
        lt.load_torrent_file(str(path), {"max_buffer_size": measure.size - 1})


# --- aria2 verifying our data -------------------------------------------------------------


@dataclass(frozen=True)
class ControlFile:
    """aria2's `<name>.aria2` control file (format version 1, big-endian): the parts we need."""

    info_hash: bytes
    piece_length: int
    total_length: int
    bitfield: bytes

    @classmethod
    def read(cls, path: Path) -> ControlFile:
        data = path.read_bytes()
        version, _extension, hash_length = struct.unpack_from(">HII", data, 0)
        assert version == 1, f"control file version {version}"
        pos = 10
        info_hash = data[pos : pos + hash_length]
        pos += hash_length
        piece_length, total_length, _uploaded, bitfield_length = struct.unpack_from(
            ">IQQI", data, pos
        )
        pos += 24
        return cls(info_hash, piece_length, total_length, data[pos : pos + bitfield_length])

    def have(self, count: int) -> list[bool]:
        return [bool(self.bitfield[i // 8] & (0x80 >> (i % 8))) for i in range(count)]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (the content's parent): relative path -> SHA-256."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).digest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("kind", KINDS)
def test_aria2_verifies_the_data_of_our_v1_torrent(tmp_path: Path, kind: Kind) -> None:
    content = _content(tmp_path, kind)
    data_dir = content.parent
    ours = create_torrent(content, version="v1", piece_length=16 * KIB, creation_date=None)
    assert ours.trackers == ()  # nobody to announce to
    torrent = _write_torrent(tmp_path, ours)
    control = data_dir / f"{ours.info.name}.aria2"
    before = _snapshot(data_dir)

    # Complete data: every piece checks out, aria2 seeds for 0 s and finishes.
    args = [*_offline_flags(tmp_path), "--check-integrity=true", "--seed-time=0"]
    result = _aria2(tmp_path, [*args, f"--dir={data_dir}", torrent])
    output = _output(result)
    assert result.returncode == 0, output
    assert "Verification finished successfully" in output, output
    assert "Download complete" in output, output
    assert re.search(r"^[0-9a-f]{6}\|OK\s*\|", output, re.MULTILINE), output
    assert "Checksum error" not in output
    assert not control.exists()
    assert _snapshot(data_dir) == before  # aria2 changed nothing

    # One changed byte: aria2 finds the piece that holds it and no other.
    victim = next(e for e in ours.files if e.length > 3 * 16 * KIB)
    offset_in_file = victim.length // 2
    bad_piece = (victim.offset + offset_in_file) // ours.info.piece_length
    victim_path = data_dir.joinpath(*victim.path)
    with victim_path.open("r+b") as f:
        f.seek(offset_in_file)
        byte = f.read(1)
        f.seek(offset_in_file)
        f.write(bytes([byte[0] ^ 0xFF]))
    # --hash-check-only: stop after the check instead of waiting for peers to fix the piece.
    result = _aria2(tmp_path, [*args, "--hash-check-only=true", f"--dir={data_dir}", torrent])
    output = _output(result)
    assert result.returncode == 1, output
    assert "Checksum error detected" in output, output
    assert "not complete" in output, output
    assert "Download complete" not in output
    state = ControlFile.read(control)
    assert state.info_hash == _v1_hash(ours)
    assert state.piece_length == ours.info.piece_length
    assert state.total_length == ours.info.total_size
    have = state.have(ours.info.num_pieces)
    assert [i for i, ok in enumerate(have) if not ok] == [bad_piece]
