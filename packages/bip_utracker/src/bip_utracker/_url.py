"""``udp://host:port/path?query`` tracker URLs.

The host and port say where to send datagrams; the path and query (BEP 41) travel inside every
announce request as URLData, so one tracker address can serve several "announce URLs" (private
trackers put a passkey there). Parsing does not resolve names: :class:`TrackerUrl` keeps the host
as text and says whether it is an IP literal, and the trio shell resolves the rest.

>>> url = parse_tracker_url("udp://tracker.example.com:80/dir?a=b&c=d")
>>> url.host, url.port, url.url_data
('tracker.example.com', 80, b'/dir?a=b&c=d')
>>> parse_tracker_url("udp://[::1]:6969").ip_address
IPv6Address('::1')
>>> str(parse_tracker_url("UDP://127.0.0.1:6969/announce#fragment"))
'udp://127.0.0.1:6969/announce'

A URL in a message or a log line is its *shown* form (:func:`shown_url`): no query, no
credentials, no fragment, and no path segment that looks like a secret
(:func:`is_secret_segment`), since private trackers put passkeys in the path as often as in
the query. bip's HTTP tracker client shows its URLs by the same rule.

>>> shown_url("udp://u:pw@t.example:6969/0123456789abcdef0123456789abcdef/announce?pk=1")
'udp://t.example:6969/…/announce'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from itertools import groupby, pairwise
from urllib.parse import unquote, urlsplit

from ._errors import LocalProtocolError
from ._host_name import is_host_name

__all__ = [
    "MAX_SHOWN_LENGTH",
    "MAX_URL_LENGTH",
    "SECRET_RUN_LENGTH",
    "TrackerUrl",
    "is_secret_segment",
    "parse_tracker_url",
    "shown_path",
    "shown_url",
]

MAX_URL_LENGTH = 2048
"""The longest URL accepted; its URLData then still fits in one announce datagram."""

SECRET_RUN_LENGTH = 16
"""Characters a run of the hex or base64url alphabet needs to be taken for a secret."""
MAX_SHOWN_LENGTH = 200
"""Characters of a shown URL at most: it goes into one-line messages."""
HIDDEN = "\u2026"
"""What a secret path segment is shown as (an ellipsis)."""

# A run: letters, digits and the separators of the base64 alphabets ("-" "_" "+" "/" "="),
# between any other characters ("." "~" " " ...), which keep file names' parts apart. The
# segment is percent-decoded first: a standard base64 passkey is sent with "%2B", "%2F" and
# "%3D", whose hex digits would otherwise cut it into pieces too short to be judged.
_RUN = re.compile(r"[A-Za-z0-9_+/=-]+")
_PIECE = re.compile(r"[^_+/=-]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_UUID = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
)
# A piece of mixed-case letters this long or longer is judged by its look (_jumbled).
_JUMBLED_LENGTH = 10

# The letter pairs of English words, by first letter: the 238 most common pairs, which make
# 95% of the pairs in the GNU and Apache licence texts and Python's standard library. Words
# joined without a separator ("internationalization", "bigbuckbunnysurround") are made of
# them, three random letters in four of a token are not.
_COMMON_PAIRS: frozenset[str] = frozenset(
    first + second
    for first, seconds in {
        "a": "bcdgiklmnprstuvy",
        "b": "aceijlouy",
        "c": "aehiklortu",
        "d": "adeilorsu",
        "e": "acdefglmnpqrstvwxy",
        "f": "aefiloru",
        "g": "ehinrsu",
        "h": "aeiot",
        "i": "abcdefglmnoprstvxz",
        "j": "e",
        "k": "ei",
        "l": "adefilopstuy",
        "m": "abeimops",
        "n": "acdefgilnostuv",
        "o": "abcdfgiklmnoprstuvw",
        "p": "aeiloprtuy",
        "q": "u",
        "r": "acdegimnorstuy",
        "s": "acehilmopstuy",
        "t": "acdefhiloprstuy",
        "u": "abefilmnprst",
        "v": "aei",
        "w": "aehior",
        "x": "cept",
        "y": "pst",
        "z": "e",
    }.items()
    for second in seconds
)
# A piece of letters is taken for words when this share of its letter pairs is common.
_WORDLIKE_SHARE = 0.7
# Letters a run needs for them to be judged together, across its separators.
_JOINED_LETTERS = 12


def _changes(piece: str) -> int:
    """How often ``piece`` switches between a letter and a digit, or from lower to upper case."""
    changes = 0
    for before, after in pairwise(piece):
        if before.isdigit() != after.isdigit() or (before.islower() and after.isupper()):
            changes += 1
    return changes


def _mixed(piece: str) -> bool:
    return any(char.isdigit() for char in piece) and any(char.isalpha() for char in piece)


def _kind(char: str) -> int:
    return 0 if char.isdigit() else 1 if char.islower() else 2


def _jumbled(piece: str) -> bool:
    """Whether ``piece`` has the look of random base64 letters, digits or not: runs of one
    kind (digits, lower, upper case) under 2.2 characters long on average, and lone
    lower-case letters between others (``XsM``) at least twice after its first character.
    Words in camel case (``ThisIsAVeryLongName``) have runs as short but few lone letters."""
    if len(piece) < _JUMBLED_LENGTH:
        return False
    runs = [(kind, sum(1 for _ in group)) for kind, group in groupby(piece, _kind)]
    lone = sum(1 for kind, size in runs[1:] if kind == 1 and size == 1)
    return lone >= 2 and len(runs) * 20 >= len(piece) * 9


def _wordlike(piece: str) -> bool:
    """Whether a piece of letters (any case) reads as words run together: most of its letter
    pairs are common in English. Random letters (a base32 or base62 token that happens to
    have no digit, in either case) are not: about 1 in 100 of 16 letters passes."""
    letters = piece.lower()
    common = sum(first + second in _COMMON_PAIRS for first, second in pairwise(letters))
    return common >= _WORDLIKE_SHARE * (len(letters) - 1)


def _secret_run(run: str) -> bool:
    if len(run) < SECRET_RUN_LENGTH:
        return False
    if _UUID.search(run):
        return True
    pieces = _PIECE.findall(run)
    for piece in pieces:
        if len(piece) >= SECRET_RUN_LENGTH and (_HEX.fullmatch(piece) or _mixed(piece)):
            return True  # a hex passkey or hash, a base62 key, a long number
        if _mixed(piece) and _changes(piece) >= 2:
            return True  # a random piece of a base64url token, not "amd64" or "x264"
        if _jumbled(piece):
            return True  # a random piece of a token without digits
        if len(piece) >= SECRET_RUN_LENGTH and piece.isalpha() and not _wordlike(piece):
            return True  # a token of letters only, in one case or both
    # A base64url token cut by "-" or "_" into pieces too short to judge alone: its letters
    # switch case inside a piece and read as no words, where a file name's parts
    # ("Big_Buck_Bunny", "my-holiday-photos") do.
    letters = "".join(char for char in run if char.isalpha())
    return (
        len(letters) >= _JOINED_LETTERS
        and any(before.islower() and after.isupper() for before, after in pairwise(run))
        and not _wordlike(letters)
    )


def is_secret_segment(segment: str) -> bool:
    """Whether a URL path segment looks like a secret (a passkey), so that it is not shown.

    The rule: the segment, as written or percent-decoded, holds a *run* of at least 16
    characters of the hex and base64 alphabets (letters, digits, ``-``, ``_``, ``+``, ``/``,
    ``=``; any other character ends a run) in which

    - it holds a UUID (hex digits in groups of 8, 4, 4, 4 and 12); or
    - a piece of at least 16 characters is all hex digits (a 32-hex passkey, a SHA-1, a long
      number) or has both letters and digits (a base62 or base32 key); or
    - some piece has both letters and digits and switches at least twice between a letter and
      a digit or from a lower- to an upper-case letter (the random look of a base64 token,
      which words such as ``amd64``, ``x264`` or ``1080p`` lack); or
    - some piece of at least 10 characters is a jumble of short runs of digits, lower- and
      upper-case letters with lone lower-case letters in it (a base64 token's piece without
      digits; not a word in camel case); or
    - some piece of at least 16 letters (no digit; one case or both) does not read as words:
      fewer than 70% of its letter pairs are common in English (a base32 or base62 key
      without a digit, in upper or lower case; not ``internationalization``).

    Ordinary paths stay readable: ``announce``, ``announce.php``, ``tracker``, ``scrape``,
    ``api``, ``v1``, file names such as ``ubuntu-22.04.3-live-server-amd64.iso``: a segment
    of fewer than 16 characters never looks secret. The rule errs towards hiding: a long
    name such as ``Show_S01E02_1080p`` is hidden too, which costs a log reader little.

    >>> is_secret_segment("0123456789abcdef0123456789abcdef"), is_secret_segment("announce")
    (True, False)
    >>> is_secret_segment("aB3-xY9_kLmN0pQrStUv"), is_secret_segment("live-server-amd64.iso")
    (True, False)
    >>> is_secret_segment("iHa%2FEkU5%2FukCO1ZOsEvD4Q%3D%3D")  # standard base64, encoded
    True
    >>> is_secret_segment("MFRGGZDFMZTWQTLK"), is_secret_segment("internationalization")
    (True, False)
    """
    decoded = unquote(segment, errors="replace")  # an undecodable byte ends a run
    # Judged as written too: "%2F" in a token is a pair of digits more in its piece.
    texts = (segment,) if decoded == segment else (segment, decoded)
    return any(_secret_run(run) for text in texts for run in _RUN.findall(text))


def shown_path(path: str) -> str:
    """``path`` (a URL path, without its query) with each secret-looking segment as ``…``.

    >>> shown_path("/announce/Zm9vYmFyYmF6cXV1eDEyMzQ1Njc4OTA")
    '/announce/…'
    """
    return "/".join(HIDDEN if is_secret_segment(part) else part for part in path.split("/"))


def shown_url(url: str) -> str:
    """Any URL (a tracker's, a web seed's) for messages and logs: without its query and
    fragment (a passkey may be there), its credentials, or a secret-looking path segment
    (:func:`is_secret_segment`), and at most 200 characters. Never raises for a str.

    >>> shown_url("https://u:pw@t.example:8443/a/0123456789abcdef0123456789abcdef/announce?x=1")
    'https://t.example:8443/a/…/announce'
    >>> shown_url("http://t.example/announce.php?passkey=0123456789abcdef")
    'http://t.example/announce.php'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # malformed (a bad port, a bracket left open): cut by hand
        scheme, sep, rest = url.partition("#")[0].partition("?")[0].partition("://")
        authority, slash, path = rest.partition("/")
        authority = authority.rpartition("@")[2]
        return f"{scheme}{sep}{authority}{slash}{shown_path(path)}"[:MAX_SHOWN_LENGTH]
    if ":" in host:
        host = f"[{host}]"
    scheme = f"{parts.scheme}:" if parts.scheme else ""
    authority = f"//{host}{port}" if parts.netloc else ""
    return f"{scheme}{authority}{shown_path(parts.path)}"[:MAX_SHOWN_LENGTH]


@dataclass(frozen=True, slots=True)
class TrackerUrl:
    """A parsed UDP tracker URL.

    Attributes:
        host: a DNS name, or an IP address in text form (IPv6 without brackets).
        port: the tracker's UDP port, 1..65535.
        url_data: the path and query, as BEP 41 URLData (empty when the URL has no path).
    """

    host: str
    port: int
    url_data: bytes = b""

    @property
    def ip_address(self) -> IPv4Address | IPv6Address | None:
        """The host as an address when it is an IP literal, else None (a name to resolve).

        >>> parse_tracker_url("udp://localhost:1").ip_address is None
        True
        """
        try:
            return ip_address(self.host)
        except ValueError:
            return None

    @property
    def shown(self) -> str:
        """The URL for messages and logs (:func:`shown_url`): no query, no secret path segment.

        >>> parse_tracker_url("udp://t.example:1/announce?passkey=ab").shown
        'udp://t.example:1/announce'
        """
        return shown_url(str(self))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}{self.url_data.decode('utf-8', 'replace')}"


def parse_tracker_url(url: str) -> TrackerUrl:
    """Parse a ``udp://`` tracker URL; anything else raises :class:`LocalProtocolError`.

    The scheme must be ``udp`` (any case), the port is required (UDP trackers have no default
    port), user information is refused, and a fragment is dropped. The path and query are kept
    byte for byte (as UTF-8) as the URLData; a URL without a path has empty URLData.

    >>> parse_tracker_url("udp://127.0.0.1/announce")
    Traceback (most recent call last):
    ...
    bip_utracker._errors.LocalProtocolError: a UDP tracker URL needs a port: 'udp://127.0.0.1/announce'
    """
    if not isinstance(url, str):
        raise LocalProtocolError(f"a tracker URL is a str, got {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise LocalProtocolError(f"a tracker URL is at most {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise LocalProtocolError(
            f"a tracker URL has no spaces or control characters: {shown_url(url)!r}"
        )
    # A lone surrogate (say, a command-line argument that was not UTF-8) has no UTF-8 form,
    # so there would be no URLData to send: refuse it here, not at the encode() at the end.
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            f"a tracker URL is not valid Unicode text: {shown_url(url)!r}"
        ) from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise LocalProtocolError(f"not a tracker URL: {shown_url(url)!r} ({error})") from None
    if parts.scheme.lower() != "udp":
        raise LocalProtocolError(f"a UDP tracker URL starts with udp://, got {shown_url(url)!r}")
    if "@" in parts.netloc:
        raise LocalProtocolError(f"a UDP tracker URL has no user information: {shown_url(url)!r}")
    host = parts.hostname
    if not host:
        raise LocalProtocolError(f"a UDP tracker URL needs a host: {shown_url(url)!r}")
    if port is None:
        raise LocalProtocolError(f"a UDP tracker URL needs a port: {shown_url(url)!r}")
    if port == 0:
        raise LocalProtocolError(f"a UDP tracker port is 1..65535: {shown_url(url)!r}")
    bracketed = parts.netloc.startswith("[")
    host = check_host(host, bracketed, url)
    path_and_query = parts.path + (f"?{parts.query}" if parts.query or _has_query(url) else "")
    return TrackerUrl(host, port, path_and_query.encode("utf-8"))


def _has_query(url: str) -> bool:
    """Whether *url* has a ``?`` before any fragment (an empty query is still kept).

    >>> _has_query("udp://a:1/x?"), _has_query("udp://a:1/x#?")
    (True, False)
    """
    return "?" in url.partition("#")[0]


def check_host(host: str, bracketed: bool, url: str) -> str:
    """The host as *url* names it: a checked IP literal (IPv6 when *bracketed*) or DNS name
    (:func:`is_host_name`: not ``0x7f.1`` or ``t.example.123``, which end in a number).

    >>> check_host("Example.ORG", False, "udp://Example.ORG:1")
    'Example.ORG'
    >>> check_host("::FFFF:1.2.3.4", True, "udp://[::FFFF:1.2.3.4]:1")
    '::ffff:102:304'
    """
    if bracketed:
        try:
            address = IPv6Address(host)
        except ValueError:
            raise LocalProtocolError(
                f"not an IPv6 address in brackets: {shown_url(url)!r}"
            ) from None
        if address.scope_id is not None:
            raise LocalProtocolError(f"a scoped IPv6 address is not supported: {shown_url(url)!r}")
        return str(address)
    try:
        return str(IPv4Address(host))
    except ValueError:
        pass
    if not is_host_name(host):  # one rule with the peers trackers name (bip)
        raise LocalProtocolError(f"not a host name or IP address: {host!r} in {shown_url(url)!r}")
    return host
