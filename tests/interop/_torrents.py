"""Helpers for checking .torrent files made by third-party tools, independently of bip.

Nothing here imports bip: a tiny bencode reader that also gives the raw bytes of the info
dictionary, BEP 3 piece hashes and BEP 52 merkle roots / piece layers computed with hashlib from
the content, test content written deterministically, and running a command-line tool with a
timeout.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

__all__ = [
    "BLOCK_SIZE",
    "Bencoded",
    "ContentFile",
    "bdecode",
    "info_bytes",
    "run_tool",
    "run_tool_result",
    "v1_piece_hashes",
    "v2_file_hashes",
    "write_content",
]

BLOCK_SIZE = 16 * 1024
"""BEP 52: the leaves of a file's merkle tree are SHA-256 hashes of 16 KiB blocks."""

Bencoded: TypeAlias = "int | bytes | list[Bencoded] | dict[bytes, Bencoded]"


def _value_end(data: bytes, start: int) -> int:
    """The index just past the bencoded value that starts at `start`."""
    lead = data[start : start + 1]
    if lead == b"i":
        return data.index(b"e", start) + 1
    if lead in (b"l", b"d"):
        pos = start + 1
        while data[pos : pos + 1] != b"e":
            if pos >= len(data):
                raise ValueError("truncated bencoding")
            pos = _value_end(data, pos)
        return pos + 1
    colon = data.index(b":", start)
    return colon + 1 + int(data[start:colon])


def bdecode(data: bytes) -> Bencoded:
    """Decode one bencoded value (no validation beyond what the tests need)."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, start: int) -> tuple[Bencoded, int]:
    lead = data[start : start + 1]
    if lead == b"i":
        end = data.index(b"e", start)
        return int(data[start + 1 : end]), end + 1
    if lead == b"l":
        items: list[Bencoded] = []
        pos = start + 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos)
            items.append(item)
        return items, pos + 1
    if lead == b"d":
        entries: dict[bytes, Bencoded] = {}
        pos = start + 1
        while data[pos : pos + 1] != b"e":
            key, pos = _decode(data, pos)
            if not isinstance(key, bytes):
                raise ValueError("a dictionary key that is not a string")
            entries[key], pos = _decode(data, pos)
        return entries, pos + 1
    colon = data.index(b":", start)
    end = colon + 1 + int(data[start:colon])
    if end > len(data):
        raise ValueError("truncated string")
    return data[colon + 1 : end], end


def info_bytes(torrent: bytes) -> bytes:
    """The raw bytes of the top-level ``info`` value, exactly as they stand in the file."""
    if torrent[:1] != b"d":
        raise ValueError("not a bencoded dictionary")
    pos = 1
    while torrent[pos : pos + 1] != b"e":
        key_end = _value_end(torrent, pos)
        key = torrent[torrent.index(b":", pos) + 1 : key_end]
        value_end = _value_end(torrent, key_end)
        if key == b"info":
            return torrent[key_end:value_end]
        pos = value_end
    raise ValueError("no info dictionary")


def v1_piece_hashes(content: bytes, piece_length: int) -> list[bytes]:
    """BEP 3: the SHA-1 of each `piece_length` slice of the concatenated content."""
    return [
        hashlib.sha1(content[start : start + piece_length]).digest()
        for start in range(0, len(content), piece_length)
    ]


def _merkle_root(nodes: Sequence[bytes], width: int, pad: bytes) -> bytes:
    """The root of a tree with `width` (a power of two) leaves: `nodes`, then `pad`s."""
    layer = [*nodes, *([pad] * (width - len(nodes)))]
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def v2_file_hashes(content: bytes, piece_length: int) -> tuple[bytes, bytes]:
    """BEP 52: a non-empty file's ``pieces root`` and its piece layer.

    The layer is empty for a file of at most one piece (such files have no entry in
    ``piece layers``).
    """
    if not content:
        raise ValueError("an empty file has no merkle tree")
    zero = bytes(32)
    leaves = [
        hashlib.sha256(content[i : i + BLOCK_SIZE]).digest()
        for i in range(0, len(content), BLOCK_SIZE)
    ]
    per_piece = piece_length // BLOCK_SIZE
    if len(content) <= piece_length:
        return _merkle_root(leaves, _power_of_two_at_least(len(leaves)), zero), b""
    layer = [
        _merkle_root(leaves[i : i + per_piece], per_piece, zero)
        for i in range(0, len(leaves), per_piece)
    ]
    pad = _merkle_root([], per_piece, zero)  # the root of a piece of zero leaves
    root = _merkle_root(layer, _power_of_two_at_least(len(layer)), pad)
    return root, b"".join(layer)


@dataclass(frozen=True)
class ContentFile:
    """A file of test content: its path relative to the content root, and its size."""

    path: str
    size: int
    executable: bool = False

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


def write_content(
    root: Path,
    files: Sequence[ContentFile],
    *,
    symlinks: Mapping[str, str] | None = None,
) -> None:
    """Create `root` with `files` (deterministic pseudo-random bytes) and `symlinks`
    (relative path -> link target as written in the link)."""
    for entry in files:
        path = root.joinpath(*entry.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(random.Random(entry.path).randbytes(entry.size))
        if entry.executable:
            path.chmod(0o755)
    for link, target in (symlinks or {}).items():
        path = root.joinpath(*link.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)


def run_tool_result(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path,
    timeout: float = 60,
    home: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command-line tool to completion within `timeout` seconds and return the result.

    The environment is minimal and fixed (a private HOME, ``cwd/home`` unless `home` is given, and
    a UTF-8 locale), so a user's config files cannot change the result.
    """
    home = cwd / "home" if home is None else home
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [os.fspath(arg) for arg in argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def run_tool(argv: Sequence[str | os.PathLike[str]], *, cwd: Path, timeout: float = 60) -> str:
    """Run a command-line tool as :func:`run_tool_result` does; fail loudly if it fails.

    Returns stdout and stderr together.
    """
    result = run_tool_result(argv, cwd=cwd, timeout=timeout)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if result.returncode != 0:
        raise AssertionError(f"{result.args} exited with status {result.returncode}:\n{output}")
    return output
