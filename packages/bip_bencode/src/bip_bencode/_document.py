"""A decoded document that still knows its input bytes, for exact raw spans.

An info-hash is the SHA-1 (or SHA-256) of the info dictionary's bytes *as they
appear in the .torrent*, even when those bytes are not canonical bencoding, so
re-encoding the decoded dict is not enough. :class:`Document` decodes once and
answers "which bytes hold the value at this path?" by walking the (already
validated) input, without decoding anything again.
"""

from __future__ import annotations

from ._decode import DEFAULT_MAX_DEPTH, Buffer, _as_bytes, decode
from ._errors import BencodePathError
from ._scan import value_end, walk
from ._types import Value

__all__ = ["Document", "PathStep", "decode_document"]

PathStep = bytes | str | int
"""One step of a path into a document: a dictionary key (``bytes``, or ``str``
for its UTF-8 bytes) or a list index (``int``, from 0)."""


class Document:
    """A bencoded document, decoded, with the input bytes it came from.

    Create one with :func:`decode_document`.

    Attributes:
        data: the input, as ``bytes``.
        value: the decoded value, as :func:`~bip_bencode.decode` returns it.
    """

    __slots__ = ("data", "value")

    def __init__(self, data: bytes, value: Value) -> None:
        """Wrap input bytes and their decoded value (use :func:`decode_document`)."""
        self.data = data
        self.value = value

    def __repr__(self) -> str:
        """Show the size of the document and the type of its root value."""
        return f"<Document of {len(self.data)} bytes holding a {type(self.value).__name__}>"

    def span(self, *path: PathStep) -> tuple[int, int]:
        """Return ``(start, end)``: ``data[start:end]`` are the bytes of the value at ``path``.

        With no path, the span of the whole document.

        Raises:
            BencodePathError: a key is missing, an index is out of range, or a step
                goes into a value that is not a dictionary or list.
        """
        start, failed = walk(self.data, path)
        if start < 0:
            where = "".join(f"[{step!r}]" for step in path[: failed + 1])
            raise BencodePathError(f"no value at {where} in the document")
        return start, value_end(self.data, start)

    def raw(self, *path: PathStep) -> bytes:
        """Return the exact input bytes of the value at ``path`` (see :meth:`span`)."""
        start, end = self.span(*path)
        return self.data[start:end]


def decode_document(
    data: Buffer, *, lenient: bool = False, max_depth: int = DEFAULT_MAX_DEPTH
) -> Document:
    """Decode a complete document and keep its bytes for :meth:`Document.raw`.

    Takes the same arguments as :func:`~bip_bencode.decode` and raises the same
    errors, so the document is fully validated before any span is asked for.

    Example:
        >>> doc = decode_document(b"d4:infod4:name1:xee", lenient=True)
        >>> doc.raw(b"info")
        b'd4:name1:xe'
    """
    buf = _as_bytes(data)
    return Document(buf, decode(buf, lenient=lenient, max_depth=max_depth))
