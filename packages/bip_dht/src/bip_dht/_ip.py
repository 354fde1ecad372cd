"""One rule every per-IP structure of the node shares: an IPv4-mapped IPv6 address is IPv4.

A dual-stack socket reports IPv4 peers as ``::ffff:a.b.c.d``; BEP 42 ids, write tokens, rate
limits and BEP 44 put sources must treat them as the IPv4 host they are.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from ._errors import LocalProtocolError


def unmapped_ip(ip: object, name: str = "an IP address") -> IPv4Address | IPv6Address:
    """*ip* with an IPv4-mapped IPv6 address replaced by its IPv4 address.

    Raises:
        LocalProtocolError: *ip* is not an ``IPv4Address`` or ``IPv6Address`` (*name* says
            which argument).

    >>> unmapped_ip(IPv6Address("::ffff:10.0.0.1"))
    IPv4Address('10.0.0.1')
    """
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if not isinstance(ip, IPv4Address | IPv6Address):
        raise LocalProtocolError(f"{name} is an IPv4Address or IPv6Address, got {ip!r}")
    return ip
