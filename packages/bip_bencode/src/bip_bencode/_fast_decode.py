"""The decoder's fast path: bounded recursion over shallow documents.

Real documents nest a few levels (a KRPC message two or three, a torrent five),
and for them a small recursive decoder is faster in CPython than the general
loop of :mod:`._decode` (about 15%): each container is one function call with
its own loop, which knows whether it reads a list or a dict, and there is no
explicit stack to keep.

This path only tells valid input from everything else. It gives up (raises
:class:`Fallback`, or lets ``IndexError`` or ``ValueError`` out) on anything it
does not accept or does not handle: bad input, a dict whose first key is ``b""``,
keys out of order (even in lenient mode), or a Python stack already too deep for
its recursion. The caller then decodes the same input with the general decoder,
which accepts exactly the same documents, builds the same values and works out
the exact error. Giving up costs the work done so far, once, and only for input
that is invalid or unusual; tests/bip_bencode/test_speed_paths.py checks that
both decoders agree on arbitrary and mutated input.

Offsets are computed as ``start + (c - 48)``, not ``start + c - 48``: the part in
brackets stays one of CPython's cached small ints, so the step allocates one int
rather than two (offsets past 256 are new objects each time; 5% on a torrent).

Recursion is bounded by :data:`FAST_DEPTH`: a container nested deeper than that
is decoded, from its first byte, by the general decoder, so no input makes this
path recurse further, and deeply nested documents lose nothing.
"""

from __future__ import annotations

from typing import Any

from ._errors import BencodeDecodeError
from ._types import Value

__all__ = ["FAST_DEPTH", "Fallback", "fast_dict", "fast_list"]

FAST_DEPTH = 16
"""How many containers deep the fast path recurses before handing a container to
the general decoder. Each level is one Python frame, and kept small on purpose:
CPython 3.11 allocates its frame stack in 16 KiB chunks and frees a chunk as soon
as it empties, so a deep recursion that crosses a chunk boundary pays for an
allocation and a free on every call (measured: +15% on the 450-deep benchmark
with a depth of 64, at some caller depths). Real documents nest far less than 16."""


class Fallback(Exception):  # noqa: N818 (a signal between the two decoders, never raised to users)
    """The fast path gives up: decode the input with the general decoder instead."""


def fast_dict(data: bytes, pos: int, depth: int, max_depth: int) -> tuple[dict[bytes, Value], int]:
    """Decode the dict whose ``d`` is at ``data[pos - 1]``; return it and the offset after it.

    ``depth`` is how many containers are open, this one included; ``max_depth`` is
    the caller's limit, which the general decoder applies below :data:`FAST_DEPTH`.
    Raises :class:`Fallback`, ``IndexError`` or ``ValueError`` (all meaning "use the
    general decoder") on anything it does not accept.
    """
    out: dict[bytes, Value] = {}
    last = b""  # keys must sort after the one before; b"" itself is left to the general path
    while True:
        # The key, or the dict's end.
        c = data[pos]
        if c < 58:
            if c < 48:
                raise Fallback
            if data[pos + 1] == 58:  # one-digit length: most keys
                start = pos + 2
                pos = start + (c - 48)
            else:
                # A length has 20 digits at most, as in the general decoder: a longer
                # digit run is refused without searching it or handing it to int().
                colon = data.find(b":", pos + 1, pos + 21)
                if colon < 0:
                    raise Fallback
                length = data[pos:colon]
                if c == 48 or not length.isdigit():
                    raise Fallback
                start = colon + 1
                pos = start + int(length)
        elif c == 101:  # "e"
            return out, pos + 1
        else:
            raise Fallback
        # A string running past the end is cut short by the slice; the next data[pos]
        # then raises IndexError, as every string is followed by a byte of its container.
        key = data[start:pos]
        if key <= last:
            raise Fallback
        last = key

        # The value.
        c = data[pos]
        if c < 58:  # a string
            if c < 48:
                raise Fallback
            d = data[pos + 1]
            if d == 58:
                start = pos + 2
                pos = start + (c - 48)
            elif d < 58 and d > 47 and data[pos + 2] == 58 and c != 48:
                start = pos + 3
                pos = start + ((c - 48) * 10 + d - 48)
            else:
                colon = data.find(b":", pos + 1, pos + 21)  # 20 digits at most
                if colon < 0:
                    raise Fallback
                length = data[pos:colon]
                if c == 48 or not length.isdigit():
                    raise Fallback
                start = colon + 1
                pos = start + int(length)
            out[key] = data[start:pos]
        elif c == 105:  # an integer
            e = data.index(b"e", pos)
            digits = data[pos + 1 : e]
            if digits.isdigit():
                if digits[0] == 48 and e > pos + 2:
                    raise Fallback
            elif not (digits[:1] == b"-" and digits[1:].isdigit() and digits[1] != 48):
                raise Fallback
            out[key] = int(digits)
            pos = e + 1
        elif c == 108:
            if depth < FAST_DEPTH:
                out[key], pos = fast_list(data, pos + 1, depth + 1, max_depth)
            else:
                out[key], pos = _deeper(data, pos, max_depth - depth)
        elif c == 100:
            if depth < FAST_DEPTH:
                out[key], pos = fast_dict(data, pos + 1, depth + 1, max_depth)
            else:
                out[key], pos = _deeper(data, pos, max_depth - depth)
        else:
            raise Fallback


def fast_list(data: bytes, pos: int, depth: int, max_depth: int) -> tuple[list[Value], int]:
    """Decode the list whose ``l`` is at ``data[pos - 1]``; as :func:`fast_dict`.

    The value cases repeat :func:`fast_dict`'s on purpose: a shared helper would cost
    a Python call per value, which is most of the time spent per value here.
    """
    out: list[Value] = []
    value: Any
    while True:
        c = data[pos]
        if c < 58:  # a string
            if c < 48:
                raise Fallback
            d = data[pos + 1]
            if d == 58:
                start = pos + 2
                pos = start + (c - 48)
            elif d < 58 and d > 47 and data[pos + 2] == 58 and c != 48:
                start = pos + 3
                pos = start + ((c - 48) * 10 + d - 48)
            else:
                colon = data.find(b":", pos + 1, pos + 21)  # 20 digits at most
                if colon < 0:
                    raise Fallback
                length = data[pos:colon]
                if c == 48 or not length.isdigit():
                    raise Fallback
                start = colon + 1
                pos = start + int(length)
            out.append(data[start:pos])
        elif c == 100:
            if depth < FAST_DEPTH:
                value, pos = fast_dict(data, pos + 1, depth + 1, max_depth)
            else:
                value, pos = _deeper(data, pos, max_depth - depth)
            out.append(value)
        elif c == 101:
            return out, pos + 1
        elif c == 105:
            e = data.index(b"e", pos)
            digits = data[pos + 1 : e]
            if digits.isdigit():
                if digits[0] == 48 and e > pos + 2:
                    raise Fallback
            elif not (digits[:1] == b"-" and digits[1:].isdigit() and digits[1] != 48):
                raise Fallback
            out.append(int(digits))
            pos = e + 1
        elif c == 108:
            if depth < FAST_DEPTH:
                value, pos = fast_list(data, pos + 1, depth + 1, max_depth)
            else:
                value, pos = _deeper(data, pos, max_depth - depth)
            out.append(value)
        else:
            raise Fallback


def _deeper(data: bytes, pos: int, room: int) -> tuple[Value, int]:
    """Decode the container at ``pos`` with the general decoder, ``room`` levels allowed.

    Any error becomes :class:`Fallback`: the whole input is then decoded again by
    the general decoder, whose error offsets and depth limit count from the root.
    """
    # Imported here: _decode imports this module, and this runs only past FAST_DEPTH.
    from ._decode import decode_general  # noqa: PLC0415

    try:
        return decode_general(data, pos, False, room)
    except BencodeDecodeError:
        raise Fallback from None
