"""Local Service Discovery (BEP 14) for the session: our torrents announced on the local
network, and the peers announcing them there dialled.

With :attr:`~bip._client.ClientConfig.lsd` on, :func:`open_session_lsd` runs bip_handshake's
:func:`~bip_handshake.open_lsd` once per address family we listen on (IPv4 on BEP 14's
239.192.152.143:6771, IPv6 on [ff15::efc0:988f]:6771), as libtorrent runs it on its listen
interfaces. Each announce carries the TCP port of our first listener of that family: peers
on the local network dial it directly, so it is the local port, not a NAT's mapped one. A
listener on ``::`` takes IPv6 alone (trio's listeners are ``IPV6_V6ONLY``), so the IPv4
group hears only an IPv4 listener's port, and runs only when there is one
(:func:`announced_ports`).
Which torrents are announced is :class:`~bip._client._discovery.LsdPeers`'s business (every
torrent but private ones, BEP 27); the peers heard go to the session's sink here, through
``on_peer``.

A group that cannot be joined (no multicast route: a loopback-only namespace, a host with no
network) costs a WARNING (IPv4) or an INFO record (IPv6, when IPv4 runs: many hosts have no
IPv6 multicast), and the session runs without it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from ipaddress import IPv4Address, ip_address

from bip_handshake import (
    Family,
    LocalServiceDiscovery,
    LsdUnavailableError,
    PeerAddress,
    open_lsd,
)

from ._config import ClientConfig

__all__ = ["announced_ports", "lsd_interface", "open_session_lsd"]

logger = logging.getLogger("bip.client")


def _family_of(host: str) -> Family | None:
    """4 or 6 for an address literal (``0.0.0.0`` and ``::`` included), else None."""
    try:
        address = ip_address(host)
    except ValueError:
        return None
    return 4 if isinstance(address, IPv4Address) else 6


def lsd_interface(config: ClientConfig) -> str | None:
    """The IPv4 interface to join the group on: the first listen host when it is a specific
    IPv4 address (announces leave from the interface peers reach us on), else the system's
    choice."""
    for host, _ in config.listen:
        if _family_of(host) == 4 and not IPv4Address(host).is_unspecified:
            return host
    return None


def announced_ports(listening: Iterable[PeerAddress]) -> dict[Family, int]:
    """The port each family's LSD announces: its first listener's (port 0, not bound, is
    skipped); a family we do not listen on is left out.

    >>> listening = [PeerAddress.parse("[::]:6882"), PeerAddress.parse("0.0.0.0:6881")]
    >>> announced_ports(listening) == {6: 6882, 4: 6881}
    True
    """
    ports: dict[Family, int] = {}
    for address in listening:
        # An IPv4-mapped address is an IPv4 listener; ``::`` is IPv6 only, as every
        # listener trio opens (IPV6_V6ONLY): it never serves an IPv4 peer.
        host = address.normalized().host
        family: Family = 4 if isinstance(host, IPv4Address) else 6
        if address.port:
            ports.setdefault(family, address.port)
    return ports


@asynccontextmanager
async def open_session_lsd(
    config: ClientConfig,
    listening: Sequence[PeerAddress],
    on_peer: Callable[[bytes, PeerAddress], None],
) -> AsyncIterator[tuple[LocalServiceDiscovery, ...]]:
    """Run LSD while the block runs, if :attr:`ClientConfig.lsd` says to; gives the running
    ones (none when off, when we do not listen, or when no group could be joined).

    Args:
        config: ``lsd`` and ``lsd_group`` (a test's unicast stand-in for the IPv4 group:
            IPv6 is left out then).
        listening: our TCP listen addresses (each family's first port is announced; ``::``
            is IPv6's alone).
        on_peer: called with ``(swarm_id, peer)`` for each peer heard announcing a torrent
            we announce, in LSD's task; must not raise.
    """
    ports = announced_ports(listening)
    if config.lsd_group is not None:
        ports.pop(6, None)
    async with AsyncExitStack() as stack:
        running: list[LocalServiceDiscovery] = []
        if config.lsd and not ports:
            shown = " on IPv4 (lsd_group's family)" if config.lsd_group is not None else ""
            logger.info("LSD: not announcing: we do not listen%s", shown)
        for family, port in sorted(ports.items()) if config.lsd else ():
            try:
                lsd = await stack.enter_async_context(
                    open_lsd(
                        port,
                        family=family,
                        group_address=config.lsd_group if family == 4 else None,
                        interface=lsd_interface(config) if family == 4 else None,
                        on_peer=on_peer,
                    )
                )
            except LsdUnavailableError as error:
                level = logging.INFO if family == 6 and running else logging.WARNING
                logger.log(level, "LSD: cannot join the IPv%d group: %s", family, error)
            else:
                logger.info("LSD: announcing our torrents on %s (port %d)", lsd.group, port)
                running.append(lsd)
        yield tuple(running)
