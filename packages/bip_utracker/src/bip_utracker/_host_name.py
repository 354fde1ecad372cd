"""What counts as a DNS host name: one rule for every name a tracker is given by (a ``udp://``
URL's host; in bip, an ``http://`` or ``https://`` tracker or web seed URL's) or gives us (a
peer named by a tracker's dictionary peer list, in bip's HTTP tracker client).

The syntax is RFC 1123's: dot-separated labels of 1 to 63 ASCII letters, digits and hyphens,
none starting or ending with a hyphen (so no underscore), at most 253 characters (RFC 1035's
255 octets on the wire), with one optional trailing dot (a fully qualified name). A name
whose last label is a number (digits, or ``0x`` and hex digits) is refused too: a resolver
reads ``127.1``, ``0x7f.1`` or ``0x7f000001`` as an IPv4 address in inet_aton's old forms,
and the WHATWG URL standard refuses any host that ends in a number but is not a valid IPv4
address (``peer.example.123``). An IP address is therefore never a host name: a caller that
takes both looks for an address first.

>>> [is_host_name(name) for name in ("tracker.example.org", "Tracker.Example.ORG.", "localhost")]
[True, True, True]
>>> [is_host_name(name) for name in ("127.1", "0x7f.1", "1.2.3.4", "bad_host", "::1")]
[False, False, False, False, False]
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_HOST_NAME", "is_host_name"]

MAX_HOST_NAME: Final = 253
"""Characters of a DNS host name at most, not counting a trailing dot (RFC 1035)."""

# A label: letters, digits and hyphens, not a hyphen at either end. Character classes are
# spelled out: ``\w`` and str.isdigit() would let non-ASCII letters and digits in.
_LABEL: Final = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# A last label a resolver would take for a number of an IPv4 address (inet_aton's forms).
_NUMERIC_LABEL: Final = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")


def is_host_name(text: str) -> bool:
    """Whether ``text`` is a DNS host name to look up (in any case, with or without a trailing
    dot), and not an IP address, written as one or in disguise; never raises.

    >>> is_host_name("peer.example"), is_host_name("peer.example.123"), is_host_name("-a.example")
    (True, False, False)
    """
    if not isinstance(text, str) or len(text.removesuffix(".")) > MAX_HOST_NAME:
        return False
    if not _HOST_NAME.fullmatch(text):
        return False
    return not _NUMERIC_LABEL.fullmatch(text.removesuffix(".").rpartition(".")[2])
