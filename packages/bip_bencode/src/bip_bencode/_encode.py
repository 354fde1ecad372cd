"""Encoding: values in, canonical bencoding out.

The encoder keeps a stack of iterators, one per open list or dictionary, and
writes strings and integers inline as it iterates, so only containers touch the
stack. There is no recursion: nesting depth costs memory, never
``RecursionError``. A container that contains itself is refused rather than
written forever; the check for that runs only once nesting gets deeper than real
documents go, so ordinary encodes do not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import pairwise
from operator import itemgetter
from typing import Any

from ._errors import BencodeEncodeError
from ._types import Encodable

__all__ = ["encode"]

# The loop tells dictionary frames from list frames by the iterator's type. A
# dictionary whose keys need sorting is iterated as reversed(items sorted in
# descending order): ascending order, through a list_reverseiterator, a type list
# frames never use. One with fewer than two keys is iterated as it is.
_SortedDictFrame: type = type(reversed([]))
_InOrderDictFrame: type = type(iter({}.items()))

# Length prefixes and small integers, written so often they are worth a table.
_PREFIX = tuple(b"%d:" % n for n in range(256))
_SMALL_INT = tuple(b"i%de" % n for n in range(256))

# Encoded dictionary keys ("6:length"), shared across calls: the same few keys
# recur in every torrent and KRPC message. Bounded, and only ever holds bytes
# and str keys, which are immutable.
_key_cache: dict[object, bytes] = {}
_KEY_CACHE_SIZE = 4096

# Nesting deeper than this triggers one full check for a container that contains
# itself (a cycle nests forever; honest documents stop long before).
_CYCLE_CHECK_DEPTH = 1000

_first = itemgetter(0)


def encode(value: Encodable) -> bytes:
    """Encode a value as canonical bencoding.

    Accepted: ``int`` (but not ``bool``), ``bytes``, ``bytearray``,
    ``memoryview``, ``str`` (written as UTF-8), ``list`` and ``tuple``, and
    dictionaries (any :class:`~collections.abc.Mapping`) whose keys are ``bytes``
    or ``str``. Keys are written sorted by their raw bytes, as BEP 3 requires.

    Raises:
        BencodeEncodeError: a value has no bencoding (``float``, ``None``, ``bool``,
            ``set``, ...), a key is neither ``bytes`` nor ``str``, two keys encode to
            the same bytes, a ``str`` is not encodable as UTF-8, or a container
            contains itself. The error's ``path`` says where the value sits.
    """
    out: list[bytes] = []
    put = out.append
    key_get = _key_cache.get
    prefix = _PREFIX
    small_int = _SMALL_INT
    # The root is written as the only item of a list frame that writes no "l".
    stack: list[Iterator[Any]] = [iter((value,))]
    push = stack.append
    cycle_checked = False
    k: Any
    v: Any = None  # the value being written: Any, as the loop dispatches on its type
    try:
        while stack:
            it = stack[-1]
            frame_type = type(it)
            if frame_type is _SortedDictFrame or frame_type is _InOrderDictFrame:
                for k, v in it:
                    key = key_get(k)
                    if key is None:
                        key = _encode_key(k)
                    put(key)
                    t = type(v)
                    if t is bytes:
                        n = len(v)
                        put(prefix[n] if n < 256 else b"%d:" % n)
                        put(v)
                    elif t is int:
                        put(small_int[v] if 0 <= v < 256 else b"i%de" % v)
                    elif t is dict:
                        put(b"d")
                        push(_dict_frame(v))
                        break
                    elif t is list:
                        put(b"l")
                        push(iter(v))
                        break
                    else:
                        frame = _write_other(v, put)
                        if frame is not None:
                            push(frame)
                            break
                else:
                    put(b"e")
                    stack.pop()
                    continue
            else:
                for v in it:
                    t = type(v)
                    if t is bytes:
                        n = len(v)
                        put(prefix[n] if n < 256 else b"%d:" % n)
                        put(v)
                    elif t is int:
                        put(small_int[v] if 0 <= v < 256 else b"i%de" % v)
                    elif t is dict:
                        put(b"d")
                        push(_dict_frame(v))
                        break
                    elif t is list:
                        put(b"l")
                        push(iter(v))
                        break
                    else:
                        frame = _write_other(v, put)
                        if frame is not None:
                            push(frame)
                            break
                else:
                    stack.pop()
                    if stack:  # the root frame has no "e"
                        put(b"e")
                    continue
            if len(stack) > _CYCLE_CHECK_DEPTH and not cycle_checked:
                _check_for_cycles(value)
                cycle_checked = True
    except BencodeEncodeError as exc:
        path = exc.path or _locate(value, v)
        raise BencodeEncodeError(exc.reason, path) from None
    except UnicodeEncodeError as exc:
        raise BencodeEncodeError(
            f"str cannot be written as UTF-8 ({exc.reason})", _locate(value, v)
        ) from None
    except ValueError:  # int -> text refuses past sys.get_int_max_str_digits()
        raise BencodeEncodeError(
            "integer too large to write (see sys.set_int_max_str_digits)", _locate(value, v)
        ) from None
    return b"".join(out)


def _dict_frame(mapping: Mapping[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """Iterate a dictionary's items in the order their keys must be written."""
    in_order: Iterator[tuple[Any, Any]] = iter(mapping.items())
    if len(mapping) < 2 and type(mapping) is dict:  # other mappings' iterators differ
        return in_order
    try:
        items: list[tuple[Any, Any]] = sorted(mapping.items(), reverse=True)
    except TypeError:  # keys that do not compare: str and bytes mixed, or worse
        items = _sorted_items(mapping)
    ascending: Iterator[tuple[Any, Any]] = reversed(items)
    return ascending


def _sorted_items(mapping: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """Items with keys as raw bytes, in descending key order; refuse bad or clashing keys."""
    items = []
    for key, item in mapping.items():
        if isinstance(key, bytes):
            raw = bytes(key)
        elif isinstance(key, str):
            raw = key.encode()
        else:
            raise BencodeEncodeError(f"dictionary key must be bytes or str, not {_name(key)}")
        items.append((raw, item))
    items.sort(key=_first, reverse=True)
    for (raw, _), (next_raw, _) in pairwise(items):
        if raw == next_raw:
            raise BencodeEncodeError(f"two dictionary keys encode to {raw!r}")
    return items


def _encode_key(key: object) -> bytes:
    """Encode a dictionary key (bytes or str), remembering common ones."""
    if isinstance(key, bytes):
        raw = bytes(key)
    elif isinstance(key, str):
        raw = key.encode()
    else:
        raise BencodeEncodeError(f"dictionary key must be bytes or str, not {_name(key)}")
    encoded = b"%d:%s" % (len(raw), raw)
    if type(key) is bytes or type(key) is str:
        if len(_key_cache) >= _KEY_CACHE_SIZE:
            _key_cache.clear()
        _key_cache[key] = encoded
    return encoded


def _write_other(x: object, write: Callable[[bytes], None]) -> Iterator[Any] | None:
    """Write a value of a less common type; return a frame if it is a container."""
    if type(x) is str:
        raw = x.encode()
    elif isinstance(x, bool):
        raise BencodeEncodeError("bool has no bencoding (write int(flag) for 0 or 1)")
    elif isinstance(x, int):
        write(b"i%de" % int(x))
        return None
    elif isinstance(x, memoryview):
        raw = x.tobytes()
    elif isinstance(x, bytes | bytearray):
        raw = bytes(x)
    elif isinstance(x, str):
        raw = str.encode(x)
    elif isinstance(x, Mapping):
        write(b"d")
        return _dict_frame(x)
    elif isinstance(x, list | tuple):
        write(b"l")
        return iter(x)
    else:
        raise BencodeEncodeError(f"{_name(x)} has no bencoding")
    write(b"%d:" % len(raw))
    write(raw)
    return None


def _name(x: object) -> str:
    return type(x).__name__


def _children(node: object) -> list[tuple[bytes | str | int, object]] | None:
    """The (key or index, child) pairs of a container, or None for a scalar."""
    if isinstance(node, Mapping):
        return list(node.items())
    if isinstance(node, list | tuple):
        return list(enumerate(node))
    return None


def _check_for_cycles(root: object) -> None:
    """Raise if some container contains itself, with the path to the repeat."""
    on_path: set[int] = set()
    path: list[bytes | str | int] = []
    # Each frame: the container's id and an iterator over its children.
    frames: list[tuple[int, Iterator[tuple[bytes | str | int, object]]]] = []

    def enter(node: object) -> None:
        children = _children(node)
        if children is not None:
            on_path.add(id(node))
            frames.append((id(node), iter(children)))

    enter(root)
    while frames:
        ident, children = frames[-1]
        for step, child in children:
            if id(child) in on_path:
                raise BencodeEncodeError("container contains itself", (*path, step))
            if _children(child) is not None:
                path.append(step)
                enter(child)
                break
        else:
            frames.pop()
            on_path.discard(ident)
            if path:
                path.pop()


def _locate(root: object, target: object) -> tuple[bytes | str | int, ...]:
    """Find the path from ``root`` to the object ``target`` (by identity).

    Runs only on the error path, to tell the user where a bad value sits.
    """
    seen: set[int] = set()
    todo: list[tuple[object, tuple[bytes | str | int, ...]]] = [(root, ())]
    while todo:
        node, path = todo.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Mapping) and any(key is target for key in node):
            return path  # a bad key is reported at its dictionary
        todo.extend((child, (*path, step)) for step, child in _children(node) or ())
    return ()
