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

# How the pass reached a container: None for the root, else (the parent's link, the
# key or index that leads from the parent to it). Links are shared by siblings and
# made for containers only, so they cost one small tuple per container; the path
# to a container is spelled out only for the one holding a bad key.
_Link = tuple[Any, bytes | int] | None


def with_str_keys(value: Value, data: bytes) -> TextKeyValue:
    """Return a copy of ``value`` with every dict key decoded from UTF-8.

    ``data`` is the input ``value`` was decoded from, to give a bad key's offset.
    """
    if type(value) is not list and type(value) is not dict:
        return value  # type: ignore[return-value]  # an int or bytes: nothing to convert
    new_root: Any = [] if type(value) is list else {}
    # (container, its empty copy to fill, how the pass reached it)
    todo: list[tuple[Any, Any, _Link]] = [(value, new_root, None)]
    copy: Any
    # A container found is queued with an empty copy, filled when its turn comes.
    # Done inline in both loops: a shared helper would cost a Python call per value,
    # a third of the pass's time.
    while todo:
        old, new, link = todo.pop()
        if type(old) is list:
            for index, item in enumerate(old):
                if type(item) is list or type(item) is dict:
                    copy = [] if type(item) is list else {}
                    todo.append((item, copy, (link, index)))
                    new.append(copy)
                else:
                    new.append(item)
        else:
            for key, item in old.items():
                try:
                    text = key.decode()
                except UnicodeDecodeError:
                    raise _non_utf8_key(key, link, data) from None
                if type(item) is list or type(item) is dict:
                    copy = [] if type(item) is list else {}
                    todo.append((item, copy, (link, key)))
                    new[text] = copy
                else:
                    new[text] = item
    converted: TextKeyValue = new_root
    return converted


def _non_utf8_key(key: bytes, link: _Link, data: bytes) -> BencodeDecodeError:
    """The error for ``key``, of the dict the pass reached by ``link``, at its offset."""
    path: list[bytes | int] = []
    while link is not None:
        link, step = link
        path.append(step)
    path.reverse()
    offset = dict_entry(data, value_start(data, path), key)[0]
    return BencodeDecodeError(DecodeErrorKind.NON_UTF8_KEY, offset, f"key {key!r} is not UTF-8")
