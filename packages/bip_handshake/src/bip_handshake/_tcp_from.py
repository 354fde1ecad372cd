"""A TCP connection from a local address of each IP family, as happy eyeballs over trio.

trio's ``open_tcp_stream`` takes one ``local_address`` for every attempt: given an IPv4 one,
each IPv6 attempt fails (a socket cannot be bound to an address of the other family). A
host bound once per family (``--bind`` given an IPv4 and an IPv6 address, a VPN's of each)
wants each connection to leave from the address of the family it connects in:
:func:`open_tcp_stream_from` does that, resolving the name, dialling each address in turn
(staggered as trio does, RFC 8305) from its family's address.

Two rules set it apart from trio's besides: an IPv4-mapped address a name resolves to
(``::ffff:a.b.c.d``) is reached over IPv4, from the IPv4 address, on an IPv4 socket (an IPv6
one may be IPv6-only: Windows, OpenBSD, Linux with ``bindv6only=1``); and a family with no
local address is skipped (the HTTP clients: a session bound to a VPN's address never shows
trackers an address the system picks) or connected in as without one (the SOCKS shell's
connection to its proxy), as the caller says.

The SOCKS shell words its own errors about its proxy, so it uses the two halves itself
(:func:`_resolve_targets`, :func:`_connect_staggered`), and the order a name's addresses are
tried in (:func:`_happy_order`) for the targets it asks its proxy for.

What a ``local_address`` setting means (one address, or one of each family: ``--bind``
repeated) is read in one place, :func:`local_addresses_by_family`, for the HTTP clients
and for the peer and SOCKS dialers alike.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final, Literal, NamedTuple, TypeVar

import trio

__all__ = ["local_addresses_by_family", "open_tcp_stream_from"]

_T = TypeVar("_T", bound=Hashable)

_MAX_TARGETS: Final = 8
"""Addresses of one host name tried at most (a name with more is one we need not try to the
end: the caller's connect timeout would pass first)."""
_MAX_ANSWERS: Final = 64
"""Resolver answers read at most for one name: more than :data:`_MAX_TARGETS`, so that the
first address of the other family is found (and tried second) behind a run of one family's,
yet bounded whatever a resolver answers."""
_STAGGER: Final = 0.25
"""Seconds an attempt has before the next address is tried beside it (RFC 8305's happy
eyeballs, trio's ``open_tcp_stream`` delay): an address that drops our SYNs costs that much,
not the whole timeout."""
_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", None)
"""Linux's option that binds a socket's address alone, its port picked at connect (as trio's
``open_tcp_stream`` with a ``local_address``): a bind to port 0 does not then hold an
ephemeral port for itself alone, ports being told apart by the whole 4-tuple. None where
Python lacks it."""

Target = tuple[socket.AddressFamily, tuple[Any, ...]]
"""A socket family and the socket address to connect to in it."""


class _Resolved(NamedTuple):
    """What :func:`_resolve_targets` found.

    Attributes:
        targets: the addresses to try, in order (at most :data:`_MAX_TARGETS`).
        others: the IP versions of the addresses left out (not of the families asked).
        mapped_away: one IPv4 address left out that the resolver gave as IPv4-mapped IPv6
            (for a message: the name does have an AAAA answer, but it is IPv4).
    """

    targets: list[Target]
    others: frozenset[int]
    mapped_away: IPv4Address | None


async def _resolve_targets(host: str, port: int, versions: Collection[int]) -> _Resolved:
    """The families and socket addresses of ``host`` of the IP ``versions`` (4, 6), at most
    :data:`_MAX_TARGETS`, in the resolver's order but for the first of the other family moved
    second (RFC 6555's section 5.4, as trio's ``open_tcp_stream``; looked for among the first
    :data:`_MAX_ANSWERS` answers, not the first 8 kept); an IPv6 one with its
    scope. An IPv4-mapped address (``::ffff:a.b.c.d``) is the IPv4 address it embeds,
    ``AF_INET``: it is reached over IPv4, from the IPv4 local address. The targets may be
    none (see :attr:`_Resolved.others`).

    Raises:
        OSError: the resolver's error (a :class:`socket.gaierror` for most).
        UnicodeError: IDNA refused the name.
    """
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Target] = []
    others: set[int] = set()
    mapped_away: IPv4Address | None = None
    for family, _type, _proto, _name, sockaddr in infos[:_MAX_ANSWERS]:
        try:
            address = ip_address(str(sockaddr[0]).partition("%")[0])
        except ValueError:
            continue
        if family != (socket.AF_INET if address.version == 4 else socket.AF_INET6):
            continue  # a resolver may answer other families (a custom one, a broken one)
        target: Target = (family, tuple(sockaddr))
        mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
        if mapped is not None:
            target = (socket.AF_INET, (str(mapped), sockaddr[1]))
        version = 4 if mapped is not None else address.version
        if version not in versions:
            others.add(version)
            if mapped is not None:
                mapped_away = mapped
            continue
        found.append(target)
    targets = _happy_order(found, lambda target: target[0])
    return _Resolved(targets, frozenset(others), mapped_away)


def _happy_order(found: Sequence[_T], family_of: Callable[[_T], int]) -> list[_T]:
    """The addresses of one name to try, in order: ``found`` (in the resolver's order, at most
    :data:`_MAX_ANSWERS` of them: the caller reads no more) without repeats, the first of a
    family other than the first one's moved second (RFC 6555's section 5.4, RFC 8305's
    section 4, as trio's ``open_tcp_stream``), then cut to :data:`_MAX_TARGETS`.
    ``family_of`` tells an address's family (an IPv4-mapped one counts as IPv4: it is
    reached over IPv4).

    Moved before the cut: a name with 8 IPv6 addresses before its IPv4 one still has IPv4
    tried (the case happy eyeballs is for: IPv6 broken here).

    >>> _happy_order(["a1", "a2", "a1", "b1", "a3"], lambda name: ord(name[0]))
    ['a1', 'b1', 'a2', 'a3']
    """
    distinct = list(dict.fromkeys(found))  # in order, without repeats
    if distinct:
        first = family_of(distinct[0])
        other = next((i for i, item in enumerate(distinct) if family_of(item) != first), None)
        if other is not None and other > 1:
            distinct.insert(1, distinct.pop(other))
    return distinct[:_MAX_TARGETS]


async def _connect_staggered(
    targets: list[Target], sources: Mapping[int, str | None]
) -> trio.SocketStream:
    """A TCP connection to one of ``targets`` (not empty), each socket bound (port 0) to
    ``sources``' address of its IP version (4, 6) before it connects, unless that is None or
    missing (the system picks): happy eyeballs, each address tried :data:`_STAGGER` seconds
    after the one before (at once when that one failed), the first to connect wins and the
    others are cancelled and closed. The caller's deadline bounds them.

    Raises:
        OSError: every attempt failed: the last failure (a socket the system refused, EMFILE
            say, or a local address it cannot bind, EADDRNOTAVAIL, is a failure too).
    """
    failures: list[OSError] = []
    winner: trio.socket.SocketType | None = None

    async def attempt(
        family: socket.AddressFamily,
        sockaddr: tuple[Any, ...],
        failed: trio.Event,
        scope: trio.CancelScope,
    ) -> None:
        nonlocal winner
        source = sources.get(4 if family == socket.AF_INET else 6)
        try:
            # Made inside the try: a socket the system refuses (EMFILE, ENOBUFS) is this
            # attempt's failure, not one that ends the others.
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
        except OSError as error:
            failures.append(error)
            failed.set()
            return
        try:
            if source is not None:
                if _BIND_ADDRESS_NO_PORT is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_IP, _BIND_ADDRESS_NO_PORT, 1)
                await sock.bind((source, 0))
            await sock.connect(sockaddr)
        except OSError as error:
            sock.close()
            failures.append(error)
            failed.set()
            return
        except BaseException:  # cancelled: another won, or the deadline passed
            sock.close()
            raise
        if winner is not None:  # another connected in the same instant: it is kept
            sock.close()
            return
        winner = sock
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            # At most len(targets) attempts (bounded by the caller), one started per round.
            for family, sockaddr in targets:
                failed = trio.Event()
                nursery.start_soon(attempt, family, sockaddr, failed, nursery.cancel_scope)
                with trio.move_on_after(_STAGGER):
                    await failed.wait()
    except BaseException:
        # Cancelled from outside after a win, or a bug of ours: the winner is not handed out.
        if winner is not None:
            winner.close()
        raise
    if winner is None:
        raise failures[-1]  # every attempt ended, and none won: each one failed
    return trio.SocketStream(winner)


def _checked_sources(sources: Mapping[int, str | None]) -> dict[int, str | None]:
    """``sources`` as the attempts bind them: each version's IP literal (a ``str``; an IPv6
    one may carry its scope, ``fe80::1%eth0``) or None, an IPv4-mapped one
    (``::ffff:10.8.0.2``) under 4 as the IPv4 address it embeds, as
    :func:`local_addresses_by_family` reads one: a connection from it is an IPv4 one, on an
    IPv4 socket.

    >>> _checked_sources({4: "::ffff:10.8.0.2", 6: None})
    {4: '10.8.0.2', 6: None}

    Raises:
        ValueError: a version maps to anything but None or an IP literal of that version; a
            mapped one under 6 too, said to be IPv4 (an IPv6 socket bound to it reaches no
            IPv6 host, and none binds it where IPv6 sockets are IPv6-only).
    """
    checked: dict[int, str | None] = {}
    for version, source in sources.items():  # the caller checked: versions 4 and 6 only
        address: IPv4Address | IPv6Address | None = None
        if isinstance(source, str):
            with contextlib.suppress(ValueError):
                address = ip_address(source)
        mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
        if mapped is not None and version == 6:
            raise ValueError(
                f"sources maps IPv6 to an IPv6 literal or None, not {source!r:.80}: it is "
                f"IPv4 (IPv4-mapped), give it as {{4: '{mapped}'}}"
            )
        if mapped is not None:
            checked[version] = str(mapped)
        elif source is None or (address is not None and address.version == version):
            checked[version] = source
        else:
            raise ValueError(
                f"sources maps IPv{version} to an IPv{version} literal or None, not {source!r:.80}"
            )
    return checked


def _shown_sources(sources: Mapping[int, str | None]) -> str:
    """``IPv4 from 10.8.0.2``, ``IPv6 from any address``: the families we connect in."""
    return " and ".join(
        f"IPv{version} from {'any address' if source is None else source}"
        for version, source in sorted(sources.items())
    )


def local_addresses_by_family(
    local_address: str | Sequence[str] | None,
) -> dict[int, IPv4Address | IPv6Address | None] | None:
    """The address connections leave from in each IP version (4, 6), as a ``local_address``
    setting gives them: ``None`` (returned as None: any family, the system picks), one IP
    address, or several (``--bind`` repeated; one of each family: ``("10.8.0.2",
    "fd00::2")``), in the order first listed.

    The first address of a family speaks for it (a later one of that family is ignored, as
    when a single ``--bind`` was all there was); an unspecified one (``0.0.0.0``, ``::``)
    maps its family to None: connect in it, the system picks the source. A family none is
    listed for is left out: the caller decides (the HTTP clients do not connect in it, the
    peer and SOCKS dialers let the system pick). The result's str values are what
    :func:`open_tcp_stream_from`'s ``sources`` takes.

    An address is written as a socket binds it: without brackets (``[::1]`` is URL syntax,
    for a host and a port), an IPv6 one with its scope if it has one (``fe80::1%eth0``). An
    IPv4-mapped one (``::ffff:10.8.0.2``) is the IPv4 address it embeds, as a target's is:
    a connection from it is an IPv4 one, on an IPv4 socket (an IPv6 socket bound to it
    could only reach IPv4 hosts, and only where IPv6 sockets are dual-stack).

    >>> local_addresses_by_family(("fd00::2", "10.8.0.2", "fd00::3"))
    {6: IPv6Address('fd00::2'), 4: IPv4Address('10.8.0.2')}
    >>> local_addresses_by_family("0.0.0.0"), local_addresses_by_family("::ffff:10.8.0.2")
    ({4: None}, {4: IPv4Address('10.8.0.2')})
    >>> local_addresses_by_family("eth0")
    Traceback (most recent call last):
    ...
    ValueError: local_address must be an IP address, not 'eth0' (names are not looked up)

    Raises:
        ValueError: ``local_address`` is neither None, an IP address (a ``str``) nor a
            sequence of them: a host name (it would be looked up at every bind, to any of its
            addresses), an address in brackets, ``bytes``, an empty sequence (no family to
            connect in: None is "any"), or a sequence holding anything else.
    """
    if local_address is None:
        return None
    if isinstance(local_address, bytes | bytearray | memoryview):
        # A bytes object is a Sequence, of ints: refused as a whole, with a clear message.
        raise ValueError(f"local_address must be an IP address (a str), not {local_address!r:.80}")
    entries: object = (local_address,) if isinstance(local_address, str) else local_address
    if not isinstance(entries, Sequence):
        raise ValueError(
            f"local_address must be an IP address or a sequence of them, not {local_address!r:.80}"
        )
    if not entries:
        raise ValueError(
            "local_address must be an IP address or several, not an empty sequence "
            "(None: any address)"
        )
    found: dict[int, IPv4Address | IPv6Address | None] = {}
    # Every entry is checked, past the first of each family too: a mistyped second --bind
    # is refused where it is given, not ignored. A config's list: its length is the user's.
    for entry in entries:
        address = _local_literal(entry)
        if address.version not in found:
            found[address.version] = None if address.is_unspecified else address
    return found


def _local_literal(entry: object) -> IPv4Address | IPv6Address:
    """One entry of a ``local_address`` setting as an address (see
    :func:`local_addresses_by_family`): an IPv4-mapped one as the IPv4 address it embeds.

    Raises:
        ValueError: ``entry`` is not a ``str`` holding an IP address without brackets.
    """
    if not isinstance(entry, str):
        raise ValueError(f"local_address must be an IP address (a str), not {entry!r:.80}")
    try:
        address = ip_address(entry)
    except ValueError:
        if entry.startswith("[") or entry.endswith("]"):
            raise ValueError(
                f"local_address must be an IP address without brackets, not {entry!r:.80}"
            ) from None
        raise ValueError(
            f"local_address must be an IP address, not {entry!r:.80} (names are not looked up)"
        ) from None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def open_tcp_stream_from(
    host: str,
    port: int,
    sources: Mapping[int, str | None],
    *,
    other_family: Literal["skip", "any"] = "skip",
) -> trio.SocketStream:
    """A TCP connection to ``host:port``, each attempt leaving from the local address of its
    IP family: trio's ``open_tcp_stream`` with one ``local_address`` per family.

    ``host`` (a name or an IP literal, without brackets) is resolved, and its addresses are
    tried as happy eyeballs (at most 8, each 0.25 s after the one before or at once when that
    one failed; the first to connect wins, the others are closed). An IPv4-mapped address
    (``::ffff:a.b.c.d``) is reached over IPv4, on an IPv4 socket.

    Args:
        host: the host name or IP address to connect to.
        port: its TCP port (0 to 65535).
        sources: IP version (4 or 6) to the address its sockets are bound to (port 0) before
            they connect, an IP literal of that version (a ``str``: ``"10.8.0.2"``,
            ``"fd00::2"``; an IPv4-mapped one, ``"::ffff:10.8.0.2"``, is version 4, the IPv4
            address it embeds, as :func:`local_addresses_by_family` reads it); None lets the
            system pick in that family.
        other_family: what becomes of the host's addresses of a family ``sources`` does not
            name: ``"skip"`` leaves them out (a host bound to a VPN's address never shows
            the other family's address the system would pick), ``"any"`` tries them, the
            system picking the source.

    The caller's deadline bounds it all (``trio.move_on_after``).

    Raises:
        OSError: the name could not be resolved (the resolver's error; a name IDNA cannot
            encode is EINVAL), or to no address of the families allowed (EHOSTUNREACH), or
            every attempt failed (the last failure: ECONNREFUSED, or EADDRNOTAVAIL for a
            source address this host does not have, say).
        ValueError: ``other_family`` is neither ``"skip"`` nor ``"any"``, ``port`` is out of
            0..65535, ``sources`` names a version other than 4 and 6, maps one to anything
            but None or an IP literal of that version (a host name would be looked up at
            every bind; an IPv4-mapped one under 6: it is IPv4), or is empty with
            ``"skip"``.
    """
    if other_family not in ("skip", "any"):
        raise ValueError(f"other_family is 'skip' or 'any', not {other_family!r:.40}")
    if not set(sources) <= {4, 6}:
        raise ValueError(f"sources maps IP versions 4 and 6, got {sorted(sources)!r:.80}")
    # Checked here, not left to the system: glibc takes port 70000 as 4464 (modulo 2**16).
    if not 0 <= port <= 65535:
        raise ValueError(f"port is 0 to 65535, not {port!r:.40}")
    sources = _checked_sources(sources)
    if not sources and other_family == "skip":
        raise ValueError("sources is empty: with other_family='skip' no address would be tried")
    versions = frozenset(sources) if other_family == "skip" else frozenset((4, 6))
    try:
        resolved = await _resolve_targets(host, port, versions)
    except UnicodeError as error:  # IDNA refused the name
        raise OSError(errno.EINVAL, f"not a host name we can look up ({error})") from None
    if not resolved.targets:
        if not resolved.others:
            raise OSError(errno.EHOSTUNREACH, "the name resolves to no IP address")
        kinds = " and ".join(f"IPv{version}" for version in sorted(resolved.others))
        raise OSError(
            errno.EHOSTUNREACH,
            f"its addresses are {kinds}, and we connect over {_shown_sources(sources)} only",
        )
    return await _connect_staggered(resolved.targets, sources)
