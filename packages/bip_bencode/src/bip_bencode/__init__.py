"""bip_bencode: a strict, fast, pure-Python bencode codec.

Bencoding is BitTorrent's serialisation format (BEP 3): integers, byte strings,
lists and dictionaries with sorted byte-string keys. This package decodes and
encodes it with no dependencies, rejects every malformed input with a
:class:`BencodeDecodeError` that says what is wrong and at which byte offset. Its
recursion is bounded (16 levels, a fast path); deeper nesting, or a caller whose own
stack is nearly full, goes to explicit stacks, so no nesting depth can crash it.

>>> from bip_bencode import decode, encode
>>> decode(b"d3:cow3:moo4:spaml1:a1:bee")
{b'cow': b'moo', b'spam': [b'a', b'b']}
>>> encode({"spam": [b"a", 1]})
b'd4:spaml1:ai1eee'
"""

from ._decode import DEFAULT_MAX_DEPTH, Buffer, decode, decode_prefix
from ._document import Document, PathStep, decode_document
from ._encode import encode
from ._errors import (
    BencodeDecodeError,
    BencodeEncodeError,
    BencodeError,
    BencodePathError,
    DecodeErrorKind,
)
from ._types import Encodable, TextKeyValue, Value

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "BencodeDecodeError",
    "BencodeEncodeError",
    "BencodeError",
    "BencodePathError",
    "Buffer",
    "DecodeErrorKind",
    "Document",
    "Encodable",
    "PathStep",
    "TextKeyValue",
    "Value",
    "decode",
    "decode_document",
    "decode_prefix",
    "encode",
]

__version__ = "0.1.0"
