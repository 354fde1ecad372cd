"""What an HTTP(S) tracker client sends and reads, pure: tracker URLs, announce and scrape
queries (BEP 3, BEP 21 ``event=paused``, BEP 23 compact peers, BEP 48 scrape URLs), and the
bencoded answers (BEP 3, BEP 7 IPv6 peers, BEP 21 ``downloaders``, BEP 24 ``external ip``,
BEP 31 ``retry in``, BEP 48).

A peer of a dictionary peer list may be named by a DNS name (BEP 3: "IPv6 address, IPv4
address or DNS name"): the parser does not resolve it (it is pure) but keeps up to
:data:`MAX_PEER_NAMES` of them as :class:`PeerName`; the trio shell resolves them apart, so
the numeric peers are never held up by a slow name.

Leniency follows libtorrent's, because real trackers deviate in the same ways: dictionary keys
out of order and bytes after the bencoded answer are accepted; a missing ``interval`` means
1800 s; a compact peer list whose length is not a multiple of 6 (18) loses its last partial
entry; a bad entry of a peer list is skipped, not fatal; an ``external ip`` that is not 4 or 16
bytes is ignored; a ``retry in`` that is neither an integer of minutes (0 or more) nor
``never`` is ignored (the failure is then retried with the usual backoff); a scrape's
``downloaders`` that is no integer is ignored (as if absent: an extension's count, never worth
failing a scrape over), and counts are clamped to 0..2**32-1 as BEP 15's (``downloaders`` to
``incomplete`` too: the downloaders are some of the leechers). Everything else a
tracker sends wrong is a :class:`MalformedTrackerResponseError` with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final, Literal
from urllib.parse import quote, quote_from_bytes, urlsplit

from bip._describe import safe_text
from bip_bencode import BencodeDecodeError, decode_prefix
from bip_handshake import PeerAddress
from bip_utracker import (
    MAX_HOST_NAME,  # one host-name rule for tracker URLs and the peers trackers name
    AnnounceEvent,
    LocalProtocolError,
    ScrapeStats,
    is_host_name,
    shown_path,
    shown_url,  # one rule for both packages' shown URLs
)

from ._http_tracker_errors import MalformedTrackerResponseError, TrackerFailureError

__all__ = [
    "MAX_PEERS",
    "MAX_PEER_NAMES",
    "MAX_TEXT",
    "MAX_TRACKER_ID",
    "MAX_URL_LENGTH",
    "HttpAnnounceResponse",
    "HttpTrackerUrl",
    "PeerName",
    "announce_query",
    "failure_error",
    "parse_announce_response",
    "parse_http_tracker_url",
    "parse_scrape_response",
    "retry_in",
    "scrape_query",
    "scrape_url",
    "shown_url",
    "usable_peer",
    "with_query",
]

MAX_URL_LENGTH: Final = 4096
"""Characters a tracker URL may have (ours, or a redirect's)."""
MAX_PEERS: Final = 10_000
"""Peers taken from one answer at most (a 1 MiB compact list would hold 174,762)."""
MAX_PEER_NAMES: Final = 32
"""Peers named by a DNS name kept from one answer at most: each costs a lookup."""
MAX_TRACKER_ID: Final = 1024
"""Bytes of a ``tracker id`` we agree to send back; a longer one is ignored."""
MAX_TEXT: Final = 1024
"""Characters kept of a tracker's ``failure reason`` or ``warning message``: they go into
exceptions and log lines, and an answer may be a megabyte."""

_DEFAULT_INTERVAL: Final = 1800  # libtorrent's, for an answer without "interval"
_MAX_COUNT: Final = 2**32 - 1  # intervals and swarm counts are clamped to 32 bits, as in BEP 15


# -- URLs and requests -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpTrackerUrl:
    """An ``http://`` or ``https://`` tracker URL, split for a request.

    Attributes:
        url: the URL as given (without its fragment).
        tls: whether it is ``https``.
        host: the host name or IP address (an IPv6 literal without brackets).
        port: the TCP port (80 or 443 unless given).
        target: the request target: the path (``/`` if empty) and the query, percent-encoded.
        host_header: the ``Host`` header's value.

    >>> url = parse_http_tracker_url("https://[::1]:8443/announce?passkey=ab")
    >>> (url.host, url.port, url.target, url.host_header)
    ('::1', 8443, '/announce?passkey=ab', '[::1]:8443')
    """

    url: str
    tls: bool
    host: str
    port: int
    target: str
    host_header: str

    @property
    def shown(self) -> str:
        """The URL for messages: without its query, and with secret-looking path segments as
        ``…`` (bip_utracker's rule): a private tracker's passkey stays out of logs and errors.

        >>> parse_http_tracker_url("http://t.example/0123456789abcdef0123456789abcdef/announce").shown
        'http://t.example/…/announce'
        """
        path = shown_path(self.target.partition("?")[0])
        return f"{'https' if self.tls else 'http'}://{self.host_header}{path}"


# Characters a request target may carry as they are; anything else is percent-encoded (non-ASCII,
# as UTF-8) or, for controls and spaces, refused: they would split the request line.
_TARGET_SAFE: Final = "!#$%&'()*+,-./:;=?@[]_~"


def parse_http_tracker_url(url: str) -> HttpTrackerUrl:
    """Split an ``http://`` or ``https://`` tracker URL.

    The host is an IPv4 address in dotted-quad form, an IPv6 address in brackets (not a
    scoped one), or a DNS name by bip_utracker's one rule (:func:`~bip_utracker.is_host_name`,
    as for ``udp://`` URLs): so not ``0x7f.1``, ``127.1`` or ``t.example.123``, which a
    resolver would read as an IPv4 address in disguise. An international name is given in
    its ASCII form (``xn--``); one in Unicode is refused rather than converted by the
    outdated IDNA 2003 rules Python knows.

    Raises:
        LocalProtocolError: not a str, not http(s), no host or a host that is neither an IP
            address nor a host name, a bad port, credentials in it (``user:pass@``), control
            characters or spaces, not valid Unicode text (a lone surrogate), or longer than
            4096 characters.
    """
    if not isinstance(url, str):
        raise LocalProtocolError(f"a tracker URL is a str, got {url!r:.80}")
    if len(url) > MAX_URL_LENGTH:
        raise LocalProtocolError(f"a tracker URL of {len(url)} characters is too long")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise LocalProtocolError(
            f"a tracker URL has no spaces or control characters: {shown_url(url)!r:.80}"
        )
    # A lone surrogate (say, a command-line argument that was not UTF-8) has no UTF-8 form, so
    # the request target could not be percent-encoded: refused here, as bip_utracker does.
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            f"a tracker URL is not valid Unicode text: {shown_url(url)!r:.80}"
        ) from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise LocalProtocolError(f"not a tracker URL: {shown_url(url)!r:.80} ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise LocalProtocolError(f"not an http:// or https:// URL: {shown_url(url)!r:.80}")
    host = parts.hostname
    if not host:
        raise LocalProtocolError(f"no host in tracker URL {shown_url(url)!r:.80}")
    if parts.username is not None or parts.password is not None:
        # Not shown: the URL holds a password.
        raise LocalProtocolError("credentials (user:password@) in a tracker URL are not supported")
    _check_host(host, bracketed=parts.netloc.startswith("["))
    tls = scheme == "https"
    default = 443 if tls else 80
    port = default if port is None else port
    if port == 0:
        raise LocalProtocolError(f"port 0 in tracker URL {shown_url(url)!r:.80}")
    shown = f"[{host}]" if ":" in host else host
    target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    host_header = shown if port == default else f"{shown}:{port}"
    return HttpTrackerUrl(url.partition("#")[0], tls, host, port, target, host_header)


def _check_host(host: str, *, bracketed: bool) -> None:
    """Refuse a URL's host (as urlsplit gives it, lower case) that is not an IP address in
    its URL form or a host name."""
    if bracketed:
        try:
            address = IPv6Address(host)
        except ValueError:
            raise LocalProtocolError(f"not an IPv6 address: {host!r:.80}") from None
        if address.scope_id is not None:  # meaningful on one interface of one host only
            raise LocalProtocolError(f"a scoped IPv6 address is not supported: {host!r:.80}")
        return
    if not host.isascii():
        raise LocalProtocolError(
            f"an international host name goes in its xn-- form: {safe_text(host)!r:.80}"
        )
    try:
        IPv4Address(host)  # dotted quad only: "127.1" and "0x7f.1" are no address here
    except ValueError:
        if not is_host_name(host):  # one rule with udp:// URLs and the peers trackers name
            raise LocalProtocolError(f"not a host name or IP address: {host!r:.80}") from None


def scrape_url(url: str) -> str | None:
    """The BEP 48 scrape URL of an announce URL, or None if the tracker has none.

    The last path component must start with ``announce``, which becomes ``scrape``.

    >>> scrape_url("http://t.example/x/announce.php?passkey=1")
    'http://t.example/x/scrape.php?passkey=1'
    >>> scrape_url("http://t.example/a") is None
    True
    """
    before, query_mark, query = url.partition("?")
    head, slash, last = before.rpartition("/")
    if not slash or not last.startswith("announce") or "//" not in head + slash:
        return None
    return f"{head}/scrape{last[len('announce') :]}{query_mark}{query}"


def _quote(data: bytes) -> str:
    # Only the unreserved characters stay as they are, as libtorrent escapes the hashes.
    return quote_from_bytes(data, safe="")


_EVENT_NAMES: Final = {
    AnnounceEvent.STARTED: "started",
    AnnounceEvent.COMPLETED: "completed",
    AnnounceEvent.STOPPED: "stopped",
}


def announce_query(
    *,
    info_hash: bytes,
    peer_id: bytes,
    port: int,
    uploaded: int,
    downloaded: int,
    left: int,
    event: AnnounceEvent,
    num_want: int,
    key: int,
    tracker_id: bytes | None = None,
    paused: bool = False,
) -> str:
    """The query string of an announce (BEP 3, with ``compact=1`` from BEP 23).

    ``event`` is left out for a regular announce, unless ``paused`` says we are a partial seed
    (BEP 21: ``event=paused``, which stands for ``none`` only: another event goes as it is);
    ``numwant`` is left out when it is -1 (the tracker decides); ``key`` goes as 8 hex
    digits, as libtorrent sends it.

    >>> announce_query(info_hash=b"\\x01" * 20, peer_id=b"-BP0100-abcdefghijkl", port=6881,
    ...                uploaded=0, downloaded=0, left=5, event=AnnounceEvent.STARTED,
    ...                num_want=-1, key=0xBEEF)[:60]
    'info_hash=%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%0'
    """
    fields = [
        f"info_hash={_quote(info_hash)}",
        f"peer_id={_quote(peer_id)}",
        f"port={port}",
        f"uploaded={uploaded}",
        f"downloaded={downloaded}",
        f"left={left}",
        "compact=1",
        "no_peer_id=1",
    ]
    name = _EVENT_NAMES.get(event)
    if name is None and paused and event is AnnounceEvent.NONE:
        name = "paused"
    if name is not None:
        fields.append(f"event={name}")
    if num_want >= 0:
        fields.append(f"numwant={num_want}")
    fields.append(f"key={key:08X}")
    if tracker_id is not None:
        fields.append(f"trackerid={_quote(tracker_id)}")
    return "&".join(fields)


def scrape_query(info_hashes: Iterable[bytes]) -> str:
    """The query string of a scrape (BEP 48): one ``info_hash`` per swarm.

    >>> scrape_query([b"\\x01" * 20])[:19]
    'info_hash=%01%01%01'
    """
    return "&".join(f"info_hash={_quote(info_hash)}" for info_hash in info_hashes)


def with_query(target: str, query: str) -> str:
    """``target`` (a request target) with our ``query`` appended: after ``&`` when the URL has
    a query already (a passkey).

    >>> with_query("/announce?passkey=ab", "port=1")
    '/announce?passkey=ab&port=1'
    """
    if "?" not in target:
        return f"{target}?{query}"
    return f"{target}{query}" if target.endswith(("?", "&")) else f"{target}&{query}"


# -- the bencoded answers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerName:
    """A peer a tracker named by a DNS name (a dictionary peer list's ``ip``), to resolve.

    Attributes:
        host: the name, in lower case (a DNS name by bip_utracker's rule, ``is_host_name``,
            which no IP address passes).
        port: the peer's TCP port, 1..65535.

    Raises:
        LocalProtocolError: ``host`` is not a DNS name in lower case (an IP address, a name
            whose last label is a number, a bad label), or ``port`` is not 1..65535.

    >>> str(PeerName("peer.example", 6881))
    'peer.example:6881'
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        if not is_host_name(self.host) or self.host.lower() != self.host:
            raise LocalProtocolError(f"not a lower-case DNS name: {self.host!r:.80}")
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 0xFFFF:
            raise LocalProtocolError(f"a peer's port is 1..65535, got {port!r:.40}")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def usable_peer(host: IPv4Address | IPv6Address, port: int) -> PeerAddress | None:
    """A peer's address as we would dial it, or None if it is not one we would: the filter
    every peer of an answer passes, given by number or by a name resolved later.

    An IPv4-mapped IPv6 address becomes IPv4; a scoped IPv6 address (link-local, meaningful
    only on one interface of the tracker's host), an unspecified or multicast address, or
    port 0 is refused.

    >>> usable_peer(ip_address("::ffff:127.0.0.1"), 6881)
    PeerAddress(host=IPv4Address('127.0.0.1'), port=6881)
    >>> usable_peer(ip_address("0.0.0.0"), 6881) is None
    True
    """
    if isinstance(host, IPv6Address) and host.scope_id is not None:
        return None
    if not 0 < port <= 0xFFFF:
        return None
    peer = PeerAddress(host, port).normalized()
    return peer if peer.is_connectable else None


@dataclass(frozen=True, slots=True)
class HttpAnnounceResponse:
    """What a tracker answered to an announce.

    Attributes:
        interval: seconds it wants between announces (1800 if it did not say).
        min_interval: seconds it wants between announces at least, if it said.
        tracker_id: the ``tracker id`` to send back in the next announces, if any.
        complete: seeders in the swarm (0 if it did not say).
        incomplete: leechers in the swarm (0 if it did not say).
        peers: the peers, IPv4 (``peers``, compact or dictionaries) then IPv6 (``peers6``).
        warning: the tracker's ``warning message``, if any.
        peer_names: the peers a dictionary list named by DNS name, to resolve (at most
            :data:`MAX_PEER_NAMES`, each once).
        external_ip: our address as the tracker saw it (BEP 24 ``external ip``: 4 or 16
            bytes, an IPv4-mapped IPv6 one read as IPv4); ``None`` if absent or malformed.
    """

    interval: int
    min_interval: int | None
    tracker_id: bytes | None
    complete: int
    incomplete: int
    peers: tuple[PeerAddress, ...]
    warning: str | None
    peer_names: tuple[PeerName, ...] = ()
    external_ip: IPv4Address | IPv6Address | None = None


def _bdecode_dict(body: bytes) -> dict[bytes, object]:
    if not body:
        raise MalformedTrackerResponseError("the tracker's answer is empty")
    try:
        # lenient (keys out of order) and a prefix (bytes after it ignored): libtorrent accepts
        # both, and trackers that sort badly or add a newline exist.
        value, _ = decode_prefix(body, lenient=True)
    except BencodeDecodeError as error:
        raise MalformedTrackerResponseError(
            f"the tracker's answer is not bencoded: {error}"
        ) from None
    if not isinstance(value, dict):
        raise MalformedTrackerResponseError(
            f"the tracker's answer is a {type(value).__name__}, not a dictionary"
        )
    return value  # type: ignore[return-value]


def failure_error(body: bytes) -> TrackerFailureError | None:
    """The tracker's refusal in a body (some trackers send it with a 4xx status), as the error
    an announce raises: its ``failure reason`` with what it said of when to come back. None if
    the body is not a bencoded dictionary with a ``failure reason``.

    >>> failure_error(b"d14:failure reason4:busy8:retry ini5ee").retry_in
    5
    """
    try:
        answer = _bdecode_dict(body)
    except MalformedTrackerResponseError:
        return None
    return _failure(answer)


def retry_in(value: object) -> int | Literal["never"] | None:
    """BEP 31's ``retry in`` as bdecoded: minutes (an int, 0 or more; a huge one clamped to
    32 bits), or ``"never"``; None for anything else (absent, negative, a string of digits,
    ``Never``...), which BEP 31 does not define: the failure is then an ordinary one.

    >>> retry_in(5), retry_in(b"never"), retry_in(-1), retry_in(b"5"), retry_in(None)
    (5, 'never', None, None, None)
    """
    if isinstance(value, bool):  # not from bdecode; a caller's True is no number of minutes
        return None
    if isinstance(value, int):
        return min(value, _MAX_COUNT) if value >= 0 else None
    if value == b"never":
        return "never"
    return None


def _failure(answer: dict[bytes, object]) -> TrackerFailureError | None:
    """The error of an answer with a ``failure reason``; None for an answer without one."""
    failure = answer.get(b"failure reason")
    if not isinstance(failure, bytes):
        return None
    # libtorrent reads "interval" and "min interval" even in a failure and waits at least that
    # long: the tracker says how often it wants to hear from us, refused or not.
    given = [
        _count(value, 0)
        for value in (answer.get(b"interval"), answer.get(b"min interval"))
        if isinstance(value, int) and not isinstance(value, bool)
    ]
    return TrackerFailureError(
        _text(failure),
        retry_in=retry_in(answer.get(b"retry in")),
        interval=max(given) if given else None,
    )


def _count(value: object, default: int) -> int:
    if isinstance(value, int):
        return min(max(value, 0), _MAX_COUNT)
    return default


def _text(value: bytes) -> str:
    # One bounded line: a newline or an escape sequence in it must not fake log lines or
    # move the terminal's cursor. Cut again once escaped: an escape is up to 4 characters.
    return safe_text(value[: MAX_TEXT * 4].decode("utf-8", "replace")[:MAX_TEXT])[:MAX_TEXT]


def _compact(data: bytes, size: int) -> Iterable[PeerAddress | None]:
    # A partial last entry is dropped, as libtorrent does.
    for start in range(0, len(data) - size + 1, size):
        peer = PeerAddress.from_compact(data[start : start + size])
        yield usable_peer(peer.host, peer.port)


def _dict_peer(entry: object) -> PeerAddress | PeerName | None:
    if not isinstance(entry, dict):
        return None
    ip, port = entry.get(b"ip"), entry.get(b"port")
    if not isinstance(ip, bytes) or isinstance(port, bool) or not isinstance(port, int):
        return None
    if not 0 < port <= 0xFFFF or len(ip) > MAX_HOST_NAME + 1:  # + a trailing dot
        return None
    try:
        text = ip.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        host = ip_address(text)
    except ValueError:  # not a number: maybe a name, resolved by the shell later
        # Checked once, by PeerName itself (a name in any case is the same name).
        try:
            return PeerName(text.lower(), port)
        except LocalProtocolError:
            return None
    return usable_peer(host, port)


def _peers(answer: dict[bytes, object]) -> tuple[tuple[PeerAddress, ...], tuple[PeerName, ...]]:
    found: list[PeerAddress | PeerName | None] = []
    peers = answer.get(b"peers")
    if isinstance(peers, bytes):
        found += _compact(peers, 6)
    elif isinstance(peers, list):
        found += map(_dict_peer, peers[: MAX_PEERS * 2])
    peers6 = answer.get(b"peers6")
    if isinstance(peers6, bytes):
        found += _compact(peers6, 18)
    numeric = (peer for peer in found if isinstance(peer, PeerAddress))
    named = (peer for peer in found if isinstance(peer, PeerName))
    return tuple(dict.fromkeys(numeric))[:MAX_PEERS], tuple(dict.fromkeys(named))[:MAX_PEER_NAMES]


def _external_ip(value: object) -> IPv4Address | IPv6Address | None:
    """BEP 24's ``external ip``: 4 or 16 bytes; anything else is ignored (libtorrent too), as
    it is only ever one vote for our address, never worth failing an announce over."""
    if not isinstance(value, bytes):
        return None
    if len(value) == 4:
        return IPv4Address(value)
    if len(value) == 16:
        host = IPv6Address(value)
        return host.ipv4_mapped or host
    return None


def parse_announce_response(body: bytes) -> HttpAnnounceResponse:
    """Read a tracker's bencoded answer to an announce.

    Raises:
        TrackerFailureError: the answer has a ``failure reason`` (a
            :class:`~bip_utracker.TrackerRejectedError` with BEP 31's ``retry in``).
        MalformedTrackerResponseError: the answer is not a bencoded dictionary.

    >>> parse_announce_response(b"d8:intervali900e5:peers6:\\x7f\\x00\\x00\\x01\\x1a\\xe1e").peers
    (PeerAddress(host=IPv4Address('127.0.0.1'), port=6881),)
    >>> parse_announce_response(b"d11:external ip4:\\x51\\x02\\x45\\xa0e").external_ip
    IPv4Address('81.2.69.160')
    """
    answer = _bdecode_dict(body)
    failure = _failure(answer)
    if failure is not None:
        raise failure
    warning = answer.get(b"warning message")
    tracker_id = answer.get(b"tracker id")
    min_interval = answer.get(b"min interval")
    peers, peer_names = _peers(answer)
    return HttpAnnounceResponse(
        interval=_count(answer.get(b"interval"), _DEFAULT_INTERVAL),
        min_interval=_count(min_interval, 0) if isinstance(min_interval, int) else None,
        tracker_id=(
            tracker_id
            if isinstance(tracker_id, bytes) and 0 < len(tracker_id) <= MAX_TRACKER_ID
            else None
        ),
        complete=_count(answer.get(b"complete"), 0),
        incomplete=_count(answer.get(b"incomplete"), 0),
        peers=peers,
        warning=_text(warning) if isinstance(warning, bytes) and warning else None,
        peer_names=peer_names,
        external_ip=_external_ip(answer.get(b"external ip")),
    )


def parse_scrape_response(body: bytes, info_hashes: Sequence[bytes]) -> tuple[ScrapeStats, ...]:
    """Read a tracker's bencoded answer to a scrape (BEP 48): the statistics of each of
    ``info_hashes``, in order; a swarm the answer leaves out counts zeros. BEP 21's
    ``downloaders`` is read where the tracker gives it (None where not, or not an integer),
    at most ``leechers``: the partial seeds, ``leechers - downloaders``, are never negative.

    >>> stats = parse_scrape_response(
    ...     b"d5:filesd20:" + b"a" * 20 + b"d8:completei1e10:downloadedi0e10:incompletei3e"
    ...     b"11:downloadersi1eeee", [b"a" * 20, b"b" * 20])
    >>> stats[0]
    ScrapeStats(seeders=1, completed=0, leechers=3, downloaders=1)
    >>> stats[1].downloaders is None
    True

    Raises:
        TrackerFailureError: the answer has a ``failure reason``.
        MalformedTrackerResponseError: the answer is not a bencoded dictionary with ``files``.
    """
    answer = _bdecode_dict(body)
    failure = _failure(answer)
    if failure is not None:
        raise failure
    files = answer.get(b"files")
    if not isinstance(files, dict):
        raise MalformedTrackerResponseError("the tracker's scrape answer has no files dictionary")
    stats = []
    for info_hash in info_hashes:
        entry = files.get(info_hash)
        if not isinstance(entry, dict):
            entry = {}
        leechers = _count(entry.get(b"incomplete"), 0)
        downloaders = entry.get(b"downloaders")
        stats.append(
            ScrapeStats(
                seeders=_count(entry.get(b"complete"), 0),
                completed=_count(entry.get(b"downloaded"), 0),
                leechers=leechers,
                # A subset of the leechers (BEP 21): a tracker counting more (its two counts
                # taken at different times, or a lie) must not make partial seeds negative.
                downloaders=(
                    min(_count(downloaders, 0), leechers) if isinstance(downloaders, int) else None
                ),
            )
        )
    return tuple(stats)
