"""Walking bencoded bytes that are already known to be valid.

These helpers skip from token to token without building values or checking the
grammar, so they are only for input that the decoder has accepted (a
:class:`~bip_bencode.Document`, or an error path looking for an offset).
"""

from __future__ import annotations

from collections.abc import Sequence


def value_end(data: bytes, pos: int) -> int:
    """Offset just past the value that starts at ``pos``."""
    depth = 0
    while True:
        c = data[pos]
        if 47 < c < 58:  # string
            colon = data.index(b":", pos)
            pos = colon + 1 + int(data[pos:colon])
        elif c == 105:  # integer
            pos = data.index(b"e", pos) + 1
        elif c == 101:  # end of a container
            depth -= 1
            pos += 1
        else:  # "l" or "d"
            depth += 1
            pos += 1
        if depth == 0:
            return pos


def dict_entry(data: bytes, pos: int, wanted: bytes) -> tuple[int, int]:
    """``(key offset, value offset)`` of key ``wanted`` in the dict at ``pos``, or (-1, -1)."""
    pos += 1
    while data[pos] != 101:
        colon = data.index(b":", pos)
        key_end = colon + 1 + int(data[pos:colon])
        if data[colon + 1 : key_end] == wanted:
            return pos, key_end
        pos = value_end(data, key_end)
    return -1, -1


def list_item(data: bytes, pos: int, index: int) -> int:
    """Offset of item ``index`` of the list at ``pos``, or -1."""
    if index < 0:
        return -1
    pos += 1
    for _ in range(index):
        if data[pos] == 101:
            return -1
        pos = value_end(data, pos)
    return -1 if data[pos] == 101 else pos


def walk(data: bytes, path: Sequence[bytes | str | int]) -> tuple[int, int]:
    """Follow ``path`` (dict keys and list indices) from the document's root.

    Returns:
        ``(offset of the value, len(path))`` when the path leads somewhere, else
        ``(-1, i)`` where ``path[i]`` is the first step that leads nowhere.
    """
    pos = 0
    for depth, step in enumerate(path):
        kind = data[pos]
        if isinstance(step, bytes | str) and kind == 100:  # "d"
            wanted = step.encode("utf-8", "surrogatepass") if isinstance(step, str) else step
            pos = dict_entry(data, pos, wanted)[1]
        elif type(step) is int and kind == 108:  # "l"
            pos = list_item(data, pos, step)
        else:
            pos = -1
        if pos < 0:
            return -1, depth
    return pos, len(path)


def value_start(data: bytes, path: Sequence[bytes | str | int]) -> int:
    """Offset of the value at ``path`` (dict keys and list indices), or -1."""
    return walk(data, path)[0]
