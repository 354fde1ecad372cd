"""Encoding: values in, canonical bencoding out.

Two encoders write exactly the same bytes:

- a small recursive one for the common case, tried first: plain ``dict``,
  ``list``, ``bytes``, ``str`` and ``int``, nested at most :data:`_FAST_DEPTH` deep (a
  deeper container is handed, whole, to the general encoder). Anything else,
  including any error, makes :func:`encode` start again with the general encoder,
  which says exactly what is wrong and where;
- the general encoder, which takes every accepted type and any depth.

The general encoder walks its input with a stack of iterators, one per open list
or dictionary, never recursion: nesting depth costs memory, never
``RecursionError``. It is written for CPython's speed:

- the iterator of the innermost container is kept in a local and scalars are
  written inline as it runs, so only containers touch the stack;
- a dictionary is iterated as ``(encoded key, value)`` pairs in sorted key order,
  found through a small cache keyed by the dictionary's keys as they stand (its
  *shape*): documents repeat a few shapes (every file of a torrent, every KRPC
  message), so most dictionaries need neither a sort nor a key encoded again;
- a container that contains itself is refused rather than written forever; the
  check for that runs once nesting gets deeper than honest documents go, so
  ordinary encodes do not pay for it;
- lists are written to as ``out.append(x)`` and ``stack.pop()``, never through
  a bound method kept in a local: CPython 3.11 turns the former into an inline
  append and a fast method call, and makes a full call of the latter (8% on the
  nested-list benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import pairwise, repeat
from operator import itemgetter
from typing import Any

from ._errors import BencodeEncodeError
from ._types import Encodable

__all__ = ["encode"]

# Length prefixes and small integers, written so often they are worth a table.
_PREFIX = tuple(b"%d:" % n for n in range(256))
_SMALL_INT = tuple(b"i%de" % n for n in range(256))

# How many containers deep the fast path recurses (one Python frame each) before
# the general encoder takes over. Small on purpose: see _fast_decode.FAST_DEPTH.
_FAST_DEPTH = 16

# Nesting deeper than this triggers one full check for a container that contains
# itself (a cycle nests forever; honest documents stop long before).
_CYCLE_CHECK_DEPTH = 1000

# Shape cache: the keys of a dict, in its own order -> (its keys encoded, in
# sorted order; None if its order is already sorted, else its keys in sorted
# order). Only for dicts of up to _SHAPE_MAX_KEYS keys, all exactly bytes or
# exactly str; cleared when full, so it stays small whatever is encoded.
_Shape = tuple[tuple[bytes, ...], tuple[Any, ...] | None]
_shapes: dict[tuple[Any, ...], _Shape] = {}
_SHAPE_CACHE_SIZE = 2048
_SHAPE_MAX_KEYS = 32

_first = itemgetter(0)


def encode(value: Encodable) -> bytes:
    """Encode a value as canonical bencoding.

    Accepted: ``int`` (but not ``bool``), ``bytes``, ``bytearray``,
    ``memoryview``, ``str`` (written as UTF-8), ``list`` and ``tuple``, and
    dictionaries (any :class:`~collections.abc.Mapping`) whose keys are ``bytes``
    (or a ``memoryview``) or ``str``. Keys are written sorted by their raw bytes, as
    BEP 3 requires.

    Exceptions raised by the caller's own code that encoding runs (such as a
    Mapping's ``__iter__`` or ``__getitem__``, the ``__iter__`` of a list or tuple
    subclass, the ``__bytes__`` of a bytes or bytearray subclass, the ``__int__``
    of an int subclass) propagate unchanged, whatever their type: they are that
    code's own errors, not values with no bencoding. The one exception is a
    ``KeyError`` from a Mapping's ``[]`` for a key its own iteration yields: the
    Mapping contradicts itself, which is reported as below (with that ``KeyError``
    as the ``__cause__``). A Mapping other than a ``dict`` is only read through
    iteration and ``[]``, never ``items()``, ``keys()`` or ``values()``.

    Raises:
        BencodeEncodeError: a value has no bencoding (``float``, ``None``, ``bool``,
            ``set``, ...), a key is neither ``bytes`` nor ``str``, two keys encode to
            the same bytes, a ``str`` is not encodable as UTF-8, an integer has more
            digits than ``sys.get_int_max_str_digits()`` allows, a ``memoryview`` has
            been released, a container contains itself, or a Mapping refuses a key
            it iterates. The error's ``path`` says where the value sits (for a
            refused key, the path to that key).
    """
    t = type(value)
    if t is dict or t is list:
        out: list[bytes] = []
        try:
            if t is dict:
                _fast_dict(value, out, 1)  # type: ignore[arg-type]
            else:
                _fast_list(value, out, 1)  # type: ignore[arg-type]
            return b"".join(out)
        except (_Fallback, BencodeEncodeError, ValueError, RecursionError):
            # The general encoder meets the same problem and says exactly what and where;
            # what the fast path wrote so far need not stay alive meanwhile.
            out.clear()
    return _encode_general(value)


class _Fallback(Exception):  # noqa: N818 (a signal, not an error)
    """The fast path meets a type it leaves to the general encoder."""


def _fast_list(items: list[Any], out: list[bytes], depth: int) -> None:
    """Write a list, recursively: the fast path for shallow values.

    ``depth`` counts the containers open, this one included. Past :data:`_FAST_DEPTH`
    the general encoder takes over, so this recursion stays bounded whatever the
    value (a container that contains itself included: the general encoder refuses
    it). Anything unusual raises, and :func:`encode` starts again with the general
    encoder, which reports the problem and where it is.
    """
    out.append(b"l")
    for v in items:
        t = type(v)
        if t is bytes:
            n = len(v)
            out.append(_PREFIX[n] if n < 256 else b"%d:" % n)
            out.append(v)
        elif t is int:
            out.append(_SMALL_INT[v] if 0 <= v < 256 else b"i%de" % v)
        elif t is list:
            if depth < _FAST_DEPTH:
                _fast_list(v, out, depth + 1)
            else:
                out.append(_encode_general(v))
        elif t is dict:
            if depth < _FAST_DEPTH:
                _fast_dict(v, out, depth + 1)
            else:
                out.append(_encode_general(v))
        elif t is str:
            raw = v.encode()  # UnicodeEncodeError: the general encoder reports it
            out.append(b"%d:" % len(raw))
            out.append(raw)
        else:
            raise _Fallback
    out.append(b"e")


def _fast_dict(mapping: dict[Any, Any], out: list[bytes], depth: int) -> None:
    """Write a dict, recursively; as :func:`_fast_list`.

    The value cases repeat :func:`_fast_list`'s on purpose: a shared helper would
    cost a Python call per value, which is most of the time spent per value here.
    """
    out.append(b"d")
    for key, v in _dict_frame(mapping):
        out.append(key)
        t = type(v)
        if t is bytes:
            n = len(v)
            out.append(_PREFIX[n] if n < 256 else b"%d:" % n)
            out.append(v)
        elif t is int:
            out.append(_SMALL_INT[v] if 0 <= v < 256 else b"i%de" % v)
        elif t is dict:
            if depth < _FAST_DEPTH:
                _fast_dict(v, out, depth + 1)
            else:
                out.append(_encode_general(v))
        elif t is list:
            if depth < _FAST_DEPTH:
                _fast_list(v, out, depth + 1)
            else:
                out.append(_encode_general(v))
        elif t is str:
            raw = v.encode()
            out.append(b"%d:" % len(raw))
            out.append(raw)
        else:
            raise _Fallback
    out.append(b"e")


def _encode_general(value: Encodable) -> bytes:
    """Encode any value, iteratively: the general encoder."""
    out: list[bytes] = []
    prefix = _PREFIX
    small_int = _SMALL_INT
    # The frames of the containers around `it`, outermost first. A dict's frame is
    # pushed with a None above it, so that returning to it (rare next to returning
    # to a list) is told by one identity test rather than a type check per return;
    # the None at the bottom tells, the same way, that the root frame is done.
    stack: list[Any] = [None]
    # The root is the one item of a list frame that writes no "l" or "e".
    it: Any = iter((value,))  # Any: popped off `stack`, it may be the None marker
    in_dict = False  # whether `it` is a dict frame, yielding (encoded key, value)
    check_depth = _CYCLE_CHECK_DEPTH
    v: Any = None  # the value being written: Any, as the loop dispatches on its type
    try:
        while True:
            # Each pass of the loop below opens a container or closes a dict (a list
            # closing into a list stays inside its pass), and `stack` gains at most two
            # entries per container opened, so the nesting cannot pass check_depth in
            # fewer than `room` passes: only then is it measured, rather than after
            # every container opened (6% slower on deep input).
            room = (check_depth - len(stack)) // 2 + 1
            for _ in repeat(None, room):  # not range(): its ints cost an allocation each
                if in_dict:
                    for key, v in it:
                        out.append(key)
                        t = type(v)
                        if t is bytes:
                            n = len(v)
                            out.append(prefix[n] if n < 256 else b"%d:" % n)
                            out.append(v)
                        elif t is int:
                            out.append(small_int[v] if 0 <= v < 256 else b"i%de" % v)
                        elif t is list:
                            out.append(b"l")
                            stack.append(it)
                            stack.append(None)
                            it = iter(v)
                            in_dict = False
                            break
                        elif t is dict:
                            out.append(b"d")
                            stack.append(it)
                            stack.append(None)
                            it = _dict_frame(v)
                            break
                        else:
                            frame = _write_other(v, out.append)
                            if frame is not None:
                                stack.append(it)
                                stack.append(None)
                                it = frame
                                in_dict = type(frame) is zip
                                break
                    else:  # the dict is complete
                        out.append(b"e")
                        it = stack.pop()
                        if it is None:  # back in a dict
                            it = stack.pop()
                        else:
                            in_dict = False
                        continue
                else:
                    while True:
                        # The same cases as above, for a list frame. Repeated rather than
                        # shared: a function call per value would cost more than the rest.
                        # A list comes first, tested without keeping its type: it is what deep
                        # nesting is made of (shallow values take the fast path, not this).
                        for v in it:
                            if type(v) is list:
                                out.append(b"l")
                                stack.append(it)
                                it = iter(v)
                                break
                            t = type(v)
                            if t is bytes:
                                n = len(v)
                                out.append(prefix[n] if n < 256 else b"%d:" % n)
                                out.append(v)
                            elif t is int:
                                out.append(small_int[v] if 0 <= v < 256 else b"i%de" % v)
                            elif t is dict:
                                out.append(b"d")
                                stack.append(it)
                                it = _dict_frame(v)
                                in_dict = True
                                break
                            else:
                                frame = _write_other(v, out.append)
                                if frame is not None:
                                    stack.append(it)
                                    it = frame
                                    in_dict = type(frame) is zip
                                    break
                        else:  # the list is complete
                            it = stack.pop()
                            if it is None:  # back in a dict, or the root is written
                                if not stack:
                                    return b"".join(out)
                                it = stack.pop()
                                in_dict = True
                                out.append(b"e")
                                break  # on to the dict's frame, taking a tick
                            out.append(b"e")
                            continue  # back in a list: on with it, taking no tick
                        break  # a container was opened: take a tick
            # A container that contains itself nests forever: look for one, once,
            # when the nesting gets deeper than honest documents go.
            if len(stack) > check_depth:
                _check_for_cycles(value)
                check_depth = 1 << 62
    # The handlers below run only on errors. `v` is the value being written when a
    # scalar is refused, and the container being opened when its frame is refused;
    # the caller's own code (see encode()) may also raise while an iterator advances,
    # with `v` still the previous value, so each handler checks that the error is the
    # one it reports and otherwise lets it propagate.
    except BencodeEncodeError as exc:
        raise BencodeEncodeError(exc.reason, exc.path or _locate(value, v)) from None
    except _KeyRefused as exc:  # raised while `v`, the Mapping, was opened
        raise BencodeEncodeError(
            f"{_name(v)} iterates the key {exc.key!r}, then refuses it with KeyError",
            (*_locate(value, v), exc.key),
        ) from exc.__cause__  # the mapping's own KeyError, with its traceback
    except UnicodeEncodeError as exc:
        if not _unencodable(v):  # the caller's own code raised it
            raise
        raise BencodeEncodeError(
            f"str cannot be written as UTF-8 ({exc.reason})", _locate(value, v)
        ) from None
    except ValueError as exc:
        # int -> text refuses past sys.get_int_max_str_digits(); that is the only
        # ValueError left to the loop above (a released memoryview is reported where
        # it is read), so any other comes from the caller's own code.
        if not (isinstance(v, int) and "integer string conversion" in str(exc)):
            raise
        raise BencodeEncodeError(
            "integer too large to write (see sys.set_int_max_str_digits)", _locate(value, v)
        ) from None


def _unencodable(v: object) -> bool:
    """Whether ``v`` is a ``str`` that UTF-8 cannot write (checked on the error path only)."""
    if not isinstance(v, str):
        return False
    try:
        str.encode(v)
    except UnicodeEncodeError:
        return True
    return False


class _KeyRefused(Exception):  # noqa: N818 (a signal, not an error)
    """A Mapping refuses, with ``KeyError``, a key its own iteration yields.

    :func:`_encode_general` turns it into a :class:`BencodeEncodeError` whose path
    names the key, which only it can work out.
    """

    def __init__(self, key: bytes | str) -> None:
        super().__init__(key)
        self.key = key


def _dict_frame(mapping: dict[Any, Any]) -> Iterator[tuple[bytes, Any]]:
    """Iterate a ``dict`` (exactly) as ``(encoded key, value)`` pairs in sorted key order."""
    # zip() without strict=True: the two sides have the same length by
    # construction, and the keyword makes zip() nearly twice as slow to create.
    keys = tuple(mapping)
    shape = _shapes.get(keys)
    if shape is None:
        if len(keys) > _SHAPE_MAX_KEYS:
            return _sorted_frame(mapping, keys)
        shape = _new_shape(keys)
    encoded_keys, order = shape
    if order is None:
        return zip(encoded_keys, mapping.values())  # noqa: B905
    return zip(encoded_keys, map(mapping.__getitem__, order))  # noqa: B905


def _mapping_frame(mapping: Mapping[Any, Any]) -> Iterator[tuple[bytes, Any]]:
    """As :func:`_dict_frame`, for any other Mapping (a dict subclass included).

    Its values are always read as ``mapping[key]``, never through ``values()``,
    which a subclass may not keep in step with ``__getitem__``: the bytes written
    must not depend on whether the shape cache knows the keys. They are all read
    here, before any is written, so that a key the mapping refuses is reported by
    name (raising :class:`_KeyRefused`), never as a bare ``KeyError``.
    """
    keys = tuple(mapping)
    try:
        shape = _shapes.get(keys)
    except (TypeError, ValueError):
        # A key that cannot be hashed (a bytearray, a writable or released memoryview),
        # which only a Mapping that is no dict can hold: _sorted_keys judges it instead.
        shape = None
    if shape is None:
        pairs = _sorted_keys(keys)
        encoded: Sequence[bytes] = [b"%d:%s" % (len(raw), raw) for _, raw in pairs]
        order: Sequence[Any] = [key for key, _ in pairs]
    else:
        encoded, cached_order = shape
        order = keys if cached_order is None else cached_order
    values = []
    for key in order:
        try:
            values.append(mapping[key])
        except KeyError as exc:
            # The path names the key as written: a memoryview key as its bytes.
            raise _KeyRefused(key.tobytes() if isinstance(key, memoryview) else key) from exc
    return zip(encoded, values)  # noqa: B905


def _sorted_frame(mapping: dict[Any, Any], keys: tuple[Any, ...]) -> Iterator[tuple[bytes, Any]]:
    """A frame worked out from scratch, for a dict whose shape is not cached."""
    pairs = _sorted_keys(keys)
    encoded = [b"%d:%s" % (len(raw), raw) for _, raw in pairs]
    return zip(encoded, [mapping[key] for key, _ in pairs])  # noqa: B905


def _new_shape(keys: tuple[Any, ...]) -> _Shape:
    """Work out (and, when its keys are plain bytes or str, remember) a dict's shape."""
    pairs = _sorted_keys(keys)
    encoded = tuple(b"%d:%s" % (len(raw), raw) for _, raw in pairs)
    order = tuple(key for key, _ in pairs)
    shape: _Shape = (encoded, None if order == keys else order)
    if all(type(key) is bytes or type(key) is str for key in keys):
        if len(_shapes) >= _SHAPE_CACHE_SIZE:
            _shapes.clear()
        _shapes[keys] = shape
    return shape


def _sorted_keys(keys: tuple[Any, ...]) -> list[tuple[Any, bytes]]:
    """``(key, raw key bytes)`` in the order bencoding writes them; refuse bad or clashing keys.

    A key that cannot be turned into bytes is reported here, at its dictionary, the
    way the general encoder reports every bad key.
    """
    pairs = []
    for key in keys:
        if isinstance(key, bytes):
            raw = bytes(key)
        elif isinstance(key, str):
            try:
                raw = str.encode(key)  # a subclass's own encode() is ignored, as for values
            except UnicodeEncodeError as exc:
                raise BencodeEncodeError(
                    f"dictionary key str cannot be written as UTF-8 ({exc.reason})"
                ) from None
        elif isinstance(key, memoryview):
            # Bytes-like keys are accepted as values are. (A read-only memoryview is
            # hashable and equal to the bytes it shows, so the shape cache treats it
            # as those bytes anyway: refusing it here would make the outcome depend
            # on what was encoded before.)
            try:
                raw = key.tobytes()
            except ValueError as exc:  # released
                raise BencodeEncodeError(
                    f"dictionary key memoryview cannot be read ({exc})"
                ) from None
        else:
            raise BencodeEncodeError(f"dictionary key must be bytes or str, not {_name(key)}")
        pairs.append((key, raw))
    pairs.sort(key=lambda pair: pair[1])
    for (_, raw), (_, next_raw) in pairwise(pairs):
        if raw == next_raw:
            raise BencodeEncodeError(f"two dictionary keys encode to {raw!r}")
    return pairs


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
        try:
            raw = x.tobytes()
        except ValueError as exc:  # released: said here, where it cannot be anything else
            raise BencodeEncodeError(f"memoryview cannot be read ({exc})") from None
    elif isinstance(x, bytes | bytearray):
        raw = bytes(x)
    elif isinstance(x, str):
        raw = str.encode(x)
    elif isinstance(x, Mapping):
        write(b"d")
        return _mapping_frame(x)
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
    """The (key or index, child) pairs of a container, or None for a scalar.

    A Mapping is read as the encoder reads it, by iteration and ``[]`` (its own
    ``items()`` may tell another story); a key it refuses is left out, as the encoder
    reports that key itself when it gets there.
    """
    if type(node) is dict:
        return list(node.items())
    if isinstance(node, Mapping):
        children = []
        for key in node:
            try:
                child = node[key]
            except KeyError:
                continue
            children.append((key, child))
        return children
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
        try:
            if isinstance(node, Mapping) and any(key is target for key in node):
                return path  # a bad key is reported at its dictionary
            children = _children(node) or ()
        except Exception:
            # The caller's own code (a Mapping's __iter__ or [], a list subclass's
            # __iter__) fails on a container the encoder had not reached: searched as
            # a scalar, so that the error being reported is the one raised.
            continue
        # Reversed, so that the first child is searched first: the path names the
        # first bad value in document order, the one the encoder met.
        todo.extend(reversed([(child, (*path, step)) for step, child in children]))
    return ()
