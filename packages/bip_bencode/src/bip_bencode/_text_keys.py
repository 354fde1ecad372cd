"""``decode(..., str_keys=True)``: dictionary keys as ``str``, for JSON-like use.

Done as a pass over the decoded value rather than in the decoder's loop, so that
the common bytes-keyed decode pays nothing for it. Sorting is unaffected: UTF-8
preserves code point order, so keys sorted as bytes are sorted as ``str`` too.
Like the decoder, the pass uses a work list, not recursion.
"""

from __future__ import annotations

from typing import Any

from ._errors import BencodeDecodeError, DecodeErrorKind
from ._scan import dict_entry, value_start
from ._types import TextKeyValue, Value


def with_str_keys(value: Value, data: bytes) -> TextKeyValue:
    """Return a copy of ``value`` with every dict key decoded from UTF-8.

    ``data`` is the input ``value`` was decoded from, to give a bad key's offset.
    """
    if type(value) is not list and type(value) is not dict:
        return value  # type: ignore[return-value]  # an int or bytes: nothing to convert
    new_root: Any = [] if type(value) is list else {}
    todo: list[tuple[Any, Any]] = [(value, new_root)]  # (container, its empty copy to fill)
    while todo:
        old, new = todo.pop()
        if type(old) is list:
            for item in old:
                new.append(_copy_or_queue(item, todo))
        else:
            for key, item in old.items():
                try:
                    text = key.decode()
                except UnicodeDecodeError:
                    raise _non_utf8_key(key, old, value, data) from None
                new[text] = _copy_or_queue(item, todo)
    converted: TextKeyValue = new_root
    return converted


def _copy_or_queue(item: Any, todo: list[tuple[Any, Any]]) -> Any:
    """A scalar as it is; for a container, an empty copy queued to be filled."""
    if type(item) is list:
        copy: Any = []
    elif type(item) is dict:
        copy = {}
    else:
        return item
    todo.append((item, copy))
    return copy


def _non_utf8_key(
    key: bytes, mapping: dict[bytes, Any], root: Value, data: bytes
) -> BencodeDecodeError:
    path = _path_to(root, mapping)
    offset = dict_entry(data, value_start(data, path), key)[0]
    return BencodeDecodeError(DecodeErrorKind.NON_UTF8_KEY, offset, f"key {key!r} is not UTF-8")


def _path_to(root: Value, target: object) -> list[bytes | int]:
    """Keys and indices leading from ``root`` to the container ``target``."""
    todo: list[tuple[Any, list[bytes | int]]] = [(root, [])]
    while todo:
        node, path = todo.pop()
        if node is target:
            return path
        if type(node) is dict:
            todo.extend((item, [*path, key]) for key, item in node.items())
        elif type(node) is list:
            todo.extend((item, [*path, i]) for i, item in enumerate(node))
    raise AssertionError("the dict being converted lies inside the decoded value")
