"""Type aliases for the values bencoding carries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

__all__ = ["Encodable", "TextKeyValue", "Value"]

Value: TypeAlias = int | bytes | list["Value"] | dict[bytes, "Value"]
"""What :func:`~bip_bencode.decode` returns: integers, byte strings, lists and
dictionaries keyed by byte strings, nested to any depth the decoder allows."""

TextKeyValue: TypeAlias = int | bytes | list["TextKeyValue"] | dict[str, "TextKeyValue"]
"""What ``decode(data, str_keys=True)`` returns: like :data:`Value`, but every
dictionary key is decoded from UTF-8 to ``str``."""

Encodable: TypeAlias = (
    int
    | str
    | bytes
    | bytearray
    | memoryview
    | Sequence["Encodable"]
    | Mapping[bytes, "Encodable"]
    | Mapping[str, "Encodable"]
    | Mapping[bytes | str, "Encodable"]
)
"""What :func:`~bip_bencode.encode` accepts. ``bool`` is an ``int`` to the type
checker but is refused at run time, since bencoding has no booleans."""
