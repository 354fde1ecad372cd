"""The first listen host of each IP family: where a session's sockets bind and connect from.

A session listens on one host or several (``--bind`` repeated, ``ClientConfig(listen=...)``),
and its other sockets follow the first host of their IP family: the peer dialers connect
from it, the uTP relay socket and the DHT's socket through a proxy bind to it.
:func:`first_of_each_family` reads the hosts as
:func:`~bip_handshake.local_addresses_by_family` does (an unspecified address speaks for
its family as None, an IPv4-mapped one is the IPv4 address it embeds), but skips a host
name, which a library caller's config may hold: for a name the system picks the source
address, as it did before there were several hosts.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from bip_handshake import local_addresses_by_family

__all__ = ["first_of_each_family"]


def first_of_each_family(
    hosts: str | Iterable[str] | None,
) -> dict[int, IPv4Address | IPv6Address | None]:
    """IP version (4, 6) to the first of ``hosts`` of that version, in the order first listed;
    None for a family whose first is unspecified (``0.0.0.0``, ``::``: the system picks). A
    host that is not an IP address (a name) is skipped; ``None`` is no host at all.

    >>> first_of_each_family(("myhost.lan", "fd00::2", "10.8.0.2", "::", "10.8.0.3"))
    {6: IPv6Address('fd00::2'), 4: IPv4Address('10.8.0.2')}
    >>> first_of_each_family(("0.0.0.0", "::ffff:10.8.0.2")), first_of_each_family(None)
    ({4: None}, {})
    """
    firsts: dict[int, IPv4Address | IPv6Address | None] = {}
    # Bounded by the caller's list (a config's hosts), one parse each.
    for host in (hosts,) if isinstance(hosts, str) else hosts or ():
        try:
            found = local_addresses_by_family(host) or {}
        except ValueError:  # a name: the system picks the source address
            continue
        for version, address in found.items():
            firsts.setdefault(version, address)
    return firsts
