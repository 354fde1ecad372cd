"""Words a remote party chose (a gateway's name, a tracker's error message) made safe to show.

Such text goes into log lines, exceptions and events. A newline in it would forge a log line,
a terminal escape would move a cursor, and the two characters ``\\n`` would pass for an
escaped newline; so what a terminal acts on or a viewer hides is escaped and a backslash is
doubled, while every printable character, spaces of any script included, stays as it is.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable_text"]


def printable_text(text: str, limit: int) -> str:
    """``text`` fit for a log line, an exception and an event: control and format characters,
    line and paragraph separators, surrogates, private-use and unassigned code points
    escaped as ``repr`` shows them (``\\n``, ``\\x85``, ``\\u202e``), a backslash doubled;
    spaces (a no-break space, an ideographic space) kept, as they forge nothing. At most
    ``limit`` characters come out, cut between two characters' escapes, never inside one.

    >>> printable_text("box\\n2026 CRITICAL", 256)
    'box\\\\n2026 CRITICAL'
    >>> printable_text("a\\\\nb", 256), printable_text("Living\\xa0Room", 256)
    ('a\\\\\\\\nb', 'Living\\xa0Room')
    >>> printable_text("ab\\x1b[2J", 5)
    'ab'
    """
    text = text[:limit]
    if text.isprintable() and "\\" not in text:
        return text
    shown: list[str] = []
    room = limit
    for char in text:
        piece = _escaped_char(char)
        room -= len(piece)
        if room < 0:
            break
        shown.append(piece)
    return "".join(shown)


def _escaped_char(char: str) -> str:
    """One character as :func:`printable_text` shows it."""
    if char == "\\":
        return "\\\\"
    if char.isprintable() or unicodedata.category(char) == "Zs":
        return char
    return repr(char)[1:-1]
