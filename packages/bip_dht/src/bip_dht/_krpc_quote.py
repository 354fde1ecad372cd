"""What the head of a KRPC datagram of ours, quoted back by an ICMP error, says it was.

Sans-IO: the trio shell reads the quote from the socket's error queue (Linux); the node
(:meth:`~bip_dht.DHTNode.unreachable`) decides with this which query, if any, failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["QuotedKRPC", "quoted_krpc"]


@dataclass(frozen=True, slots=True)
class QuotedKRPC:
    """What the quoted head of a datagram of ours says it was (:func:`quoted_krpc`).

    Attributes:
        query: a query (its first key is ``a`` or ``q``); False for a reply of ours (``r``,
            ``e``, ``ip``), or a head too short or too broken to tell.
        reply: one of our replies, so the report says nothing about a query of ours.
        transaction_id: the query's ``t``, or None when the quote ends before it.
    """

    query: bool
    reply: bool
    transaction_id: bytes | None


_UNKNOWN: Final = QuotedKRPC(query=False, reply=False, transaction_id=None)
# Nesting of a quoted value skipped over: our queries' arguments nest two deep at most.
_MAX_DEPTH: Final = 8


def _string(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """The byte string at *pos* and the position after it; None if cut or malformed."""
    colon = data.find(b":", pos, pos + 6)
    if colon <= pos or not data[pos:colon].isdigit():
        return None
    end = colon + 1 + int(data[pos:colon])
    if end > len(data):
        return None
    return data[colon + 1 : end], end


def _skip(data: bytes, pos: int, depth: int = 0) -> int | None:
    """The position after the bencoded value at *pos*; None if cut or malformed."""
    if depth > _MAX_DEPTH or pos >= len(data):
        return None
    head = data[pos : pos + 1]
    if head == b"i":
        end = data.find(b"e", pos)
        return None if end < 0 else end + 1
    if head in (b"l", b"d"):
        pos += 1
        while pos < len(data) and data[pos : pos + 1] != b"e":
            if head == b"d":
                key = _string(data, pos)
                if key is None:
                    return None
                pos = key[1]
            after = _skip(data, pos, depth + 1)
            if after is None:
                return None
            pos = after
        return pos + 1 if pos < len(data) else None
    string = _string(data, pos)
    return None if string is None else string[1]


def quoted_krpc(payload: bytes) -> QuotedKRPC:
    """Read the head of a datagram of ours that an ICMP error quoted: a query (and its
    transaction id, when the quote reaches it) or a reply. Never raises.

    Our messages are canonical bencoding, keys in order: a query's ``a`` comes first and its
    ``t`` after it; a reply starts with ``e``, ``ip`` or ``r``.

    >>> quoted_krpc(b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:t2:xy1:y1:qe")
    QuotedKRPC(query=True, reply=False, transaction_id=b'xy')
    >>> quoted_krpc(b"d1:ad2:id20:" + bytes(4))  # 8 bytes quoted: no id
    QuotedKRPC(query=True, reply=False, transaction_id=None)
    >>> quoted_krpc(b"d1:rd2:id20:").reply
    True
    """
    if payload[:1] != b"d":
        return _UNKNOWN
    first = _string(payload, 1)
    if first is None:
        return _UNKNOWN
    key, pos = first
    if key not in (b"a", b"q"):
        return QuotedKRPC(query=False, reply=True, transaction_id=None)
    while True:
        if key == b"t":
            value = _string(payload, pos)
            tid = None if value is None else value[0]
            return QuotedKRPC(query=True, reply=False, transaction_id=tid)
        if key > b"t":
            break  # past where "t" sorts: none (not canonical)
        after = _skip(payload, pos)
        if after is None:
            break
        following = _string(payload, after)
        if following is None:
            break
        key, pos = following
    return QuotedKRPC(query=True, reply=False, transaction_id=None)
