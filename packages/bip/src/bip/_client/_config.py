"""What a client session and each of its torrents are told to do: two frozen settings objects."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Final

from bip_dht import DEFAULT_FIND_INTERVAL
from bip_disk import FileSystem
from bip_handshake import (
    DEFAULT_MAX_PEERLIST_SIZE,  # re-exported: the session's default is the list's own
    NATPMP_ANNOUNCE_ADDRESS,
    NATPMP_PORT,
    UPNP_SSDP_HOST,
    UPNP_SSDP_PORT,
    Dialer,
    EncryptionPolicy,
    IPFilter,
    PeerAddress,
    PeerId,
    ProxyConfig,
    UtpConfig,
    local_addresses_by_family,
    parse_proxy_url,
)
from bip_peer import check_rate
from bip_select import MAX_ALLOWED_FAST
from bip_utracker import DEFAULT_MAX_ANNOUNCE_INTERVAL, DEFAULT_MIN_ANNOUNCE_INTERVAL

from ._http_tracker import DEFAULT_MAX_CONCURRENT_HTTP_ANNOUNCES
from ._queue import QueueLimits

__all__ = [
    "DEFAULT_AUTO_MANAGE_INTERVAL",
    "DEFAULT_CONNECTION_SPEED",
    "DEFAULT_DHT_INTERVAL",
    "DEFAULT_FILE_PRIORITY",
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_MAX_PEERLIST_SIZE",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MAX_PEERS_PER_HOST",
    "DEFAULT_METADATA_TIMEOUT",
    "DEFAULT_REDIAL_INTERVAL",
    "DEFAULT_RESUME_INTERVAL",
    "DEFAULT_UTP_CONFIG",
    "MAX_FILE_PRIORITY",
    "MIN_FILE_PRIORITY",
    "RESUME_DIRECTORY",
    "UPNP_SSDP_ADDRESS",
    "ClientConfig",
    "TorrentOptions",
    "check_file_priorities",
]

DEFAULT_LISTEN_PORT: Final = 6881
"""The TCP port a session listens on by default (BEP 3's first port, libtorrent's default)."""
DEFAULT_MAX_PEERS: Final = 200
"""Peers connected at once, all torrents together (libtorrent's ``connections_limit``)."""
DEFAULT_RESUME_INTERVAL: Final = 5.0
"""Seconds between two saves of a torrent's resume data while pieces keep arriving.

Short, because a kill loses at most this much of the record; nothing downloaded is lost with
it (pieces on files changed since the save are hashed again on restart, not fetched again).
"""
DEFAULT_METADATA_TIMEOUT: Final = 60.0
"""Seconds one metadata fetch (BEP 9), or one piece layers fetch (BEP 52), may take before it
is started over with the peers connected by then."""
DEFAULT_REDIAL_INTERVAL: Final = 15.0
"""Seconds between two offers of the user's peers (``--peer``, ``x.pe``) to the handshaker.

A peer that was not ready (still checking its data, not started yet) is dialled again; one
already connected is skipped by the handshaker.
"""
DEFAULT_MAX_PEERS_PER_HOST: Final = 8
"""Peers of one torrent from one IP address at most (``ClientConfig.max_peers_per_host``).

libtorrent allows one unless ``allow_multiple_connections_per_ip``; a few more let several
clients behind one NAT, or two connections of a simultaneous open, in, while one machine still
cannot take every slot of a session.
"""
DEFAULT_DHT_INTERVAL: Final = DEFAULT_FIND_INTERVAL
"""Seconds between two DHT rounds (a lookup that announces) of a torrent: bip_dht's
``keep_finding`` default, libtorrent's (15 minutes)."""
DEFAULT_UTP_CONFIG: Final = UtpConfig(connect_timeout=3.0)
"""The session's uTP settings: bip_handshake's defaults, but a connect gives up after 3 s as
libtorrent's ``utp_connect_timeout`` does (a peer that does not answer a uTP SYN in 3 s rarely
does later, and with TCP first, uTP is tried after a refused TCP connect: most such peers
accept neither)."""
DEFAULT_CONNECTION_SPEED: Final = 30
"""Dials a session starts per second at most, all torrents together (libtorrent's
``connection_speed``): a burst of tracker peers does not open hundreds of sockets at once."""
UPNP_SSDP_ADDRESS: Final = f"{UPNP_SSDP_HOST}:{UPNP_SSDP_PORT}"
"""Where UPnP searches go unless told: SSDP's multicast group."""
# Where a gateway multicasts its NAT-PMP and PCP announcements: 224.0.0.1:5350.
_NATPMP_ANNOUNCE: Final = f"{NATPMP_ANNOUNCE_ADDRESS[0]}:{NATPMP_ANNOUNCE_ADDRESS[1]}"
RESUME_DIRECTORY: Final = ".bip"
"""Where, under a torrent's save directory, its resume data and fetched metadata are kept."""
MIN_FILE_PRIORITY: Final = 0
"""A file's priority that skips it (libtorrent's ``dont_download``)."""
DEFAULT_FILE_PRIORITY: Final = 4
"""A file's priority unless told otherwise (libtorrent's ``default_priority``)."""
MAX_FILE_PRIORITY: Final = 7
"""The highest priority of a file (libtorrent's ``top_priority``)."""
DEFAULT_AUTO_MANAGE_INTERVAL: Final = 30.0
"""Seconds between two evaluations of the queue of auto-managed torrents when nothing else
calls for one (libtorrent's ``auto_manage_interval``): slow torrents are found then."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How a session (:func:`~bip._client.open_session`) runs; shared by all its torrents.

    Attributes:
        listen: ``(host, port)`` pairs to accept peers on; port 0 picks a free port, the same
            one for every entry of port 0 (with explicit ports that differ, the first entry's
            is the one told to trackers, the DHT and peers). Empty: only dial out (peers
            cannot reach us, so seeding needs someone who dials). A host is an IP address or
            a name; an IPv4-mapped one (``::ffff:10.8.0.2``) is refused: give the IPv4
            address.
        encryption: the MSE/PE policy of every connection (``PREFER_ENCRYPTED`` as libtorrent).
        peer_id: our peer id (a fresh ``-BP0100-`` one by default).
        max_peers: peers connected at once, all torrents together.
        max_peers_per_host: peers of one torrent connected at once from one IP address
            (an IPv4 address in IPv6 form counts as the IPv4 one); more are refused, so that
            one machine cannot take every slot. ``None``: no bound but ``max_peers`` (a
            swarm of many clients on one address, as ``bip demo`` without loopback aliases).
        resume_interval: seconds between resume data saves while a torrent changes.
        metadata_timeout: seconds per metadata (BEP 9) or piece layers (BEP 52) fetch
            attempt (magnet links).
        redial_interval: seconds between offers of the user's peers to the session's peer
            lists: a user's peer is dialled again then if not connected, whatever failed.
        connection_speed: dials started per second at most, all torrents together.
        max_peerlist_size: addresses each torrent remembers at most (trackers, the DHT, PEX:
            the best are dialled as room frees up; the least useful are forgotten).
        trackers: announce to the trackers of the torrents (``udp://``, ``http://`` and
            ``https://``; other schemes are skipped with a warning).
        tracker_min_interval: seconds between two regular announces to one tracker at least,
            whatever interval it asks for (libtorrent's ``min_announce_interval``, 300 s); at
            most 1800 (the longest interval a tracker may ask for).
        tracker_bind: the local IP address of the tracker client's socket and of the HTTP
            tracker and web seed (BEP 19) connections: one address, as a socket binds it
            (no port, no brackets, no host name: names are not looked up; an IPv4-mapped
            one is the IPv4 address it embeds); anything else is refused. ``None``: the
            first listen host of each family; a family with no listen host gets the any
            address beside an unspecified host or a host name, and nothing beside a
            specific one: no tracker is reached in it.
        max_concurrent_http_announces: HTTP(S) tracker requests in flight at once at most,
            all torrents together (libtorrent's setting of that name, 50); the others wait
            for a slot, and a tracker's timeout counts from when its request holds one.
            ``stopped`` announces have as many slots again of their own (so that a removed
            torrent's goodbye never waits behind the others): up to twice this many
            requests at once when torrents stop while others announce (a close).
        dial: how outbound connections are opened (``None``: TCP, and uTP as ``utp`` and
            ``prefer_utp`` say; tests pass their own, and then uTP is only accepted).
        connect_timeout: seconds a connect may take, the fallback to the other transport
            included (the first one tried gets at most 3 s and half of it, a TCP connect
            through the proxy half only: :class:`~bip_handshake.PeerDialer`).
        utp: speak uTP (BEP 29) too: accept it on the UDP port of each TCP listener (the
            DHT's socket when the DHT is bound there), and dial it when TCP fails (or
            first, with ``prefer_utp``). Off: TCP only, in both directions.
        prefer_utp: dial uTP first and fall back to TCP, libtorrent's order. Off by default
            (TCP first, uTP for peers whose TCP port is refused or silent): our uTP runs in
            Python and costs far more CPU per byte than the kernel's TCP.
        utp_config: the uTP sockets' settings (bounds on connections, buffers, timeouts).
        holepunch: BEP 55 (``ut_holepunch``), as libtorrent: relay rendezvous between our
            peers, and when a dial to a peer learnt from PEX fails, ask the peer that listed
            it to introduce us, then dial it over uTP at once as it dials us (which opens
            NATs on both sides). Needs uTP: off with ``utp`` off, or with a ``dial`` of
            the caller's.
        handshake_timeout: seconds a BitTorrent handshake may take once connected.
        seed_rng: seed of the swarm brains' random choices (``None``: unpredictable).
        dht_interval: seconds between two DHT rounds (lookup and announce) of a torrent,
            when the session has a DHT.
        upload_rate_limit: bytes per second sent to all peers together (BitTorrent
            messages, piece data and protocol alike); ``None`` or ``0``: unlimited.
            :meth:`~bip._client.Session.set_rate_limits` changes it while running. Web
            seeds (BEP 19) are servers, not peers: they are not limited.
        download_rate_limit: bytes per second read from all peers together, likewise.
        limit_local_peers: hold peers on loopback and local networks (10/8, 172.16/12,
            192.168/16, 169.254/16, 127/8, fc00::/7, fe80::/10, ::1) to the rate limits
            too. Off by default: as in libtorrent, whose "local" peer class has no limit,
            they are exempt (the limits share the link to the internet, which they do not
            use). :meth:`~bip._client.Session.set_rate_limits` switches it while running.
        max_inbound: inbound handshakes in progress at once (bip_handshake's
            ``max_inbound``); more connections are closed at once. ``None``: the
            handshaker's default (as many as its concurrent dials, 64).
        max_inbound_per_host: inbound handshakes in progress at once from one host (an IPv4
            address, an IPv6 /64); ``None``: the handshaker's default (a quarter of
            ``max_inbound``, at least 1).
        ip_filter: the peer addresses never to talk to (a blocklist, libtorrent's
            ``ip_filter``): never dialled, however they were found (trackers, DHT, PEX,
            ``--peer``), and refused inbound. Trackers and web seeds are servers, not
            peers: not filtered, as in libtorrent. ``None``: no filter.
            :meth:`~bip._client.Session.set_ip_filter` replaces it while running.
        ssrf_mitigation: libtorrent's rules of that name for HTTP trackers and web seeds (on
            by default): a tracker on this machine is asked on its announce or scrape path
            only, a tracker URL carrying our announce parameters is refused, a web seed on
            a local network gets no query string, and no redirect leads from the Internet
            into a local network.
        allow_idna: accept tracker and web seed host names with ``xn--`` labels
            (internationalised names, which can pass for another); off by default, as in
            libtorrent.
        proxy: a SOCKS5 proxy, ``socks5://[user:password@]host[:port]`` (``socks5h://``:
            the proxy resolves host names, libtorrent's ``proxy_hostnames``), as libtorrent's
            ``proxy_type`` / ``proxy_hostname`` / ``proxy_port`` / ``proxy_username`` /
            ``proxy_password``. ``None``: no proxy. Left out of the config's ``repr`` (it
            may hold a password). With ``proxy_peer_connections`` peers and web seeds are
            dialled through it, TCP by CONNECT and uTP through its UDP relay (UDP ASSOCIATE;
            a proxy that refuses UDP leaves TCP), no BEP 55 holepunch (with
            ``socks5h://`` the peers a tracker names by host name are dropped, as our
            resolver must not be asked, and the ``yourip`` of the peers we dial is no vote
            on our address: they see the proxy's); with ``proxy_tracker_connections``
            HTTP(S) trackers are reached through it (TLS over the proxied stream) and UDP
            trackers through its UDP relay (UDP ASSOCIATE), as libtorrent's; a proxy that
            refuses UDP (microsocks) fails each UDP announce.
            ``ssrf_mitigation`` judges a name the proxy resolves by the name (``localhost``
            is this machine) and holds it to the rules for a server on this machine.
            Connections peers make to us (TCP and uTP) do not go through the proxy, nor
            does LSD (local multicast). The DHT is the caller's: ``bip download --proxy``
            opens it through the proxy's UDP relay (``open_dht(proxy=...)``); one opened
            without it talks directly (logged once).
        proxy_peer_connections: dial peers and fetch from web seeds through ``proxy``
            (libtorrent's setting: web seeds are peer connections there too).
        proxy_tracker_connections: reach HTTP(S) trackers through ``proxy``, and UDP
            trackers through its UDP relay (libtorrent's setting).
        natpmp: map our listen ports on the NAT gateway with PCP (RFC 6887), or NAT-PMP
            (RFC 6886) when the gateway does not speak PCP, as libtorrent's
            ``enable_natpmp``: the TCP listen ports and the UDP ones (uTP, the
            DHT), kept while the session runs and deleted when it closes; the external TCP
            port the gateway grants is what trackers, the DHT and peers (BEP 10 ``p``) are
            told. Off by default (unlike libtorrent): nothing talks to the router unless
            asked. Nothing is mapped when every listen address is global (no NAT). An IPv6
            listen address (the first one listed) gets pinholes in the IPv6 router's
            firewall too, asked in PCP alone (NAT-PMP has no IPv6) for our global IPv6
            address, as libtorrent's NAT-PMP/PCP per listen socket: the same ports, and
            the grant told as our IPv6 port; a host without a global IPv6 address has none
            to open (an INFO record says so).
        natpmp_gateway: the gateway's IPv4 address (``None``: the default route's, read from
            the system's routing table).
        natpmp_gateway6: the IPv6 router asked for pinholes, an IPv6 address (a link-local
            one with its interface, ``fe80::1%eth0``); ``None``: the IPv6 default route's
            next hop, read from the system's routing table.
        natpmp_gateway_port: the gateway's NAT-PMP port (RFC 6886's 5351; another only for
            a test's gateway), the IPv6 router's PCP port too.
        natpmp_announce_address: where the gateway's announcements of a reboot or a new
            external address are listened for with ``natpmp`` on, ``HOST:PORT``: RFC 6886's
            group, 224.0.0.1:5350, by default (a unicast address only for tests). An
            announcement is only a hint (anyone on the network can send one): it brings
            the gateway's check forward, at most once each 10 s, so that a rebooted router
            maps our ports again within seconds rather than at the next renewal. ``None``:
            not listened for (a reboot is then seen at the next renewal).
        natpmp_announce_address6: where the IPv6 router's PCP announcements (RFC 6887
            14.1.1) are listened for, ``[HOST]:PORT``: ``[ff02::1]:5350`` to hear them (a
            unicast address only for tests). ``None`` (the default): not listened for.
        upnp: map the same ports with UPnP IGD, as libtorrent's ``enable_upnp`` (beside
            NAT-PMP when both are on: the router speaks one or the other; NAT-PMP's grant is
            the one told when both grant). Off by default, as ``natpmp``.
        upnp_ssdp_address: where UPnP searches go, ``HOST:PORT`` (``None``: SSDP's multicast
            group, 239.255.255.250:1900; a unicast address only for a test's gateway).
        lsd: Local Service Discovery (BEP 14), as libtorrent's ``enable_lsd``: every torrent
            but private ones (BEP 27) is announced on the local network's multicast group
            every five minutes, and the peers announcing it there are dialled. Off by
            default (unlike libtorrent): nothing is multicast unless asked. A group that
            cannot be joined costs a WARNING and the session runs without it.
        lsd_group: the LSD group, ``HOST:PORT`` (``None``: BEP 14's, 239.192.152.143:6771;
            a unicast address only for tests).
        strict_super_seeding: how the torrents that super-seed (``TorrentOptions.
            super_seeding``) pace a peer, libtorrent's ``strict_super_seeding``: off (the
            default, libtorrent's), a peer is revealed its next piece once it announces the
            one revealed to it, so a lone leecher completes too; on, BEP 16's rule, only
            once that piece shows up at another peer (a lone leecher stalls after its first
            piece).
        allowed_fast_set_size: pieces each peer that speaks the fast extension may request
            while we choke it (BEP 6 allowed fast), libtorrent's setting of that name and
            default (5): the first of its BEP 6 set (from its address: one /24, or IPv6 /48,
            gets one set, however often it reconnects), without those it has, granted once
            it says it is interested; not to a peer that only uploads, nor while
            super-seeding. A choked peer that takes one of them more than three times over
            is dropped, as libtorrent drops it. ``0``: none granted. At most 64.
        active_downloads: auto-managed torrents (``TorrentOptions.auto_managed``) that
            download at once at most, libtorrent's setting of that name; the others wait in
            line, by queue position (:meth:`~bip._client.Session.set_queue_position`).
            ``-1``: no limit. Torrents not auto-managed are not counted, nor ever queued.
        active_seeds: auto-managed torrents that seed at once at most (the seeds that met
            none of their seeding goals first, then those with fewer seeds in their swarm,
            less seeding time, a lower ratio).
        active_checking: torrents that check their data at once at most: the checks of
            torrents not auto-managed are counted first, and an auto-managed torrent's
            check (the first, or a recheck) waits for its turn. A paused auto-managed
            torrent does not check (libtorrent's).
        active_limit: auto-managed torrents that run at once at most, all kinds together
            but checks, once the running torrents not auto-managed are counted.
        dont_count_slow_torrents: an auto-managed torrent slow for ``auto_manage_startup``
            seconds (below ``inactive_down_rate`` downloading, ``inactive_up_rate``
            seeding) does not count against ``active_downloads`` / ``active_seeds`` (it
            keeps running and lets another start), only against ``active_limit``.
        inactive_down_rate: payload bytes per second received below which a download is
            slow.
        inactive_up_rate: payload bytes per second sent below which a seed is slow.
        auto_manage_interval: seconds between two evaluations of the queue when nothing
            calls for one sooner: a torrent added, removed, checked, completed, paused or
            resumed calls for one soon (at most one a second, as libtorrent's: a burst
            calls for one), a queue position or a limit changed for one at once.
        auto_manage_startup: seconds a torrent must be slow, without a break, to be found
            slow: a torrent started has that long to get going.
        share_ratio_limit: a seeding goal, libtorrent's (200 percent there): a seed has met
            it once it uploaded this many times the larger of what it downloaded and its
            size. An auto-managed seed that met any goal ranks after those that met none,
            and is queued in their favour when ``active_seeds`` is short (only then); its
            status says so (``TorrentStatus.seed_goals_met``). ``None``: off (never met).
            The counters and times are the torrent's over all its runs (its state file
            keeps them, as libtorrent's resume data; written with its resume data and at
            its close).
        seed_time_ratio_limit: a seeding goal, libtorrent's (700 percent there): met once
            the torrent seeded this many times as long as it downloaded, its checks
            included (as libtorrent counts them); a torrent that downloaded for a second or
            less has met it (one added complete whose check took that long at most).
            ``None``: off.
        seed_time_limit: a seeding goal, libtorrent's: met once the torrent seeded this many
            seconds (24 h). ``None``: off.
    """

    listen: tuple[tuple[str, int], ...] = (("0.0.0.0", DEFAULT_LISTEN_PORT),)
    encryption: EncryptionPolicy = EncryptionPolicy.PREFER_ENCRYPTED
    peer_id: PeerId | None = None
    max_peers: int = DEFAULT_MAX_PEERS
    max_peers_per_host: int | None = DEFAULT_MAX_PEERS_PER_HOST
    resume_interval: float = DEFAULT_RESUME_INTERVAL
    metadata_timeout: float = DEFAULT_METADATA_TIMEOUT
    redial_interval: float = DEFAULT_REDIAL_INTERVAL
    connection_speed: int = DEFAULT_CONNECTION_SPEED
    max_peerlist_size: int = DEFAULT_MAX_PEERLIST_SIZE
    trackers: bool = True
    tracker_min_interval: float = DEFAULT_MIN_ANNOUNCE_INTERVAL
    tracker_bind: str | None = None
    max_concurrent_http_announces: int = DEFAULT_MAX_CONCURRENT_HTTP_ANNOUNCES
    dial: Dialer | None = None
    connect_timeout: float = 10.0
    handshake_timeout: float = 20.0
    seed_rng: int | None = None
    dht_interval: float = DEFAULT_DHT_INTERVAL
    utp: bool = True
    prefer_utp: bool = False
    utp_config: UtpConfig = DEFAULT_UTP_CONFIG
    holepunch: bool = True
    upload_rate_limit: float | None = None
    download_rate_limit: float | None = None
    limit_local_peers: bool = False
    ip_filter: IPFilter | None = None
    max_inbound: int | None = None
    max_inbound_per_host: int | None = None
    ssrf_mitigation: bool = True
    allow_idna: bool = False
    proxy: str | None = field(default=None, repr=False)  # it may hold a password
    proxy_peer_connections: bool = True
    proxy_tracker_connections: bool = True
    natpmp: bool = False
    natpmp_gateway: str | None = None
    natpmp_gateway6: str | None = None
    natpmp_gateway_port: int = NATPMP_PORT
    natpmp_announce_address: str | None = _NATPMP_ANNOUNCE
    natpmp_announce_address6: str | None = None
    upnp: bool = False
    upnp_ssdp_address: str | None = None
    lsd: bool = False
    lsd_group: str | None = None
    strict_super_seeding: bool = False
    allowed_fast_set_size: int = 5  # libtorrent 2.x's default
    active_downloads: int = 3
    active_seeds: int = 5
    active_checking: int = 1
    active_limit: int = 500
    dont_count_slow_torrents: bool = True
    inactive_down_rate: float = 2048
    inactive_up_rate: float = 2048
    auto_manage_interval: float = DEFAULT_AUTO_MANAGE_INTERVAL
    auto_manage_startup: float = 60.0
    share_ratio_limit: float | None = 2.0
    seed_time_ratio_limit: float | None = 7.0
    seed_time_limit: float | None = 24 * 3600.0

    @property
    def queue_limits(self) -> QueueLimits:
        """The queue's limits (``active_downloads`` ... ``seed_time_limit``) together."""
        return QueueLimits(
            active_downloads=self.active_downloads,
            active_seeds=self.active_seeds,
            active_checking=self.active_checking,
            active_limit=self.active_limit,
            dont_count_slow_torrents=self.dont_count_slow_torrents,
            inactive_down_rate=self.inactive_down_rate,
            inactive_up_rate=self.inactive_up_rate,
            auto_manage_startup=self.auto_manage_startup,
            share_ratio_limit=self.share_ratio_limit,
            seed_time_ratio_limit=self.seed_time_ratio_limit,
            seed_time_limit=self.seed_time_limit,
        )

    @property
    def proxy_settings(self) -> ProxyConfig | None:
        """:attr:`proxy` parsed (:func:`~bip_handshake.parse_proxy_url`), or None."""
        return None if self.proxy is None else parse_proxy_url(self.proxy)

    def __post_init__(self) -> None:
        """Refuse numbers that cannot work."""
        # The queue's fields, checked where they are used (QueueError is a ValueError).
        _ = self.queue_limits
        if self.proxy is not None:
            parse_proxy_url(self.proxy)  # ValueError, never showing the password
            if self.dial is not None and self.proxy_peer_connections:
                raise ValueError(
                    "dial and a proxy for peer connections exclude each other: the dialer "
                    "decides how peers are reached (set proxy_peer_connections=False)"
                )
        if self.natpmp_gateway is not None:
            if not isinstance(self.natpmp_gateway, str):
                raise TypeError(f"natpmp_gateway must be a str, not {self.natpmp_gateway!r}")
            try:
                IPv4Address(self.natpmp_gateway)
            except ValueError:
                raise ValueError(
                    f"natpmp_gateway must be an IPv4 address, not {self.natpmp_gateway!r}"
                ) from None
        _check_gateway6(self.natpmp_gateway6)
        _check_tracker_bind(self.tracker_bind)
        for name in ("upnp_ssdp_address", "lsd_group", "natpmp_announce_address"):
            _check_group(name, getattr(self, name))
        _check_group6("natpmp_announce_address6", self.natpmp_announce_address6)
        port = self.natpmp_gateway_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 0xFFFF:
            raise ValueError(f"natpmp_gateway_port must be in 1..65535, not {port!r}")
        for name in (
            "max_peers",
            "connection_speed",
            "max_peerlist_size",
            "max_concurrent_http_announces",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be positive, not {value}")
        for name in ("max_peers_per_host", "max_inbound", "max_inbound_per_host"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
        for name in (
            "resume_interval",
            "metadata_timeout",
            "redial_interval",
            "connect_timeout",
            "handshake_timeout",
            "dht_interval",
            "auto_manage_interval",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not positive_seconds(value):
                shown = f"an int of {value.bit_length()} bits" if _huge(value) else repr(value)
                raise ValueError(f"{name} must be positive and finite, not {shown}")
        check_tracker_min_interval("tracker_min_interval", self.tracker_min_interval)
        for name in (
            "utp",
            "prefer_utp",
            "limit_local_peers",
            "holepunch",
            "ssrf_mitigation",
            "allow_idna",
            "proxy_peer_connections",
            "proxy_tracker_connections",
            "natpmp",
            "upnp",
            "lsd",
            "strict_super_seeding",
            "dont_count_slow_torrents",
        ):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {getattr(self, name)!r}")
        for name in ("upload_rate_limit", "download_rate_limit"):
            check_rate(getattr(self, name), name)
        size = self.allowed_fast_set_size
        if type(size) is not int:  # as each Swarm checks it: no bool, no int subclass
            raise TypeError(f"allowed_fast_set_size must be an int, not {size!r}")
        if not 0 <= size <= MAX_ALLOWED_FAST:
            raise ValueError(f"allowed_fast_set_size must be in 0..{MAX_ALLOWED_FAST}, not {size}")
        if self.ip_filter is not None and not isinstance(self.ip_filter, IPFilter):
            raise TypeError(f"ip_filter must be an IPFilter or None, not {self.ip_filter!r}")
        if not isinstance(self.utp_config, UtpConfig):
            raise TypeError(f"utp_config must be a UtpConfig, not {self.utp_config!r}")
        for host, port in self.listen:
            if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
                raise ValueError(f"a listen address is (host, port 0..65535), not {(host, port)!r}")
            _check_listen_host(host)


def positive_seconds(value: float) -> bool:
    """Whether ``value`` (a number) is a positive, finite time: an int too large for a float
    is not (``math.isfinite`` raises ``OverflowError`` for it)."""
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:
        return False


def _huge(value: object) -> bool:
    """An int too large for a float (its repr may be refused too, past 4300 digits)."""
    return isinstance(value, int) and value.bit_length() >= 1024


def _check_listen_host(host: str) -> None:
    """``host`` (an IP address or a host name) is one a session can listen on: not an
    IPv4-mapped IPv6 address (``::ffff:10.8.0.2``), refused for the IPv4 address to be given
    instead. Its listener's IPv6 socket is IPv6-only (trio's) and cannot bind it (EINVAL at
    start); listening on the IPv4 address in its place would report a listen address other
    than the one given.

    >>> _check_listen_host("::ffff:10.8.0.2")
    Traceback (most recent call last):
    ...
    ValueError: the listen host ::ffff:10.8.0.2 is IPv4 (IPv4-mapped): listen on 10.8.0.2

    Raises:
        ValueError: ``host`` is an IPv4-mapped IPv6 address.
    """
    try:
        address = ip_address(host)
    except ValueError:
        return  # a host name: resolved when the listener binds
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(
            f"the listen host {host:.80} is IPv4 (IPv4-mapped): listen on {address.ipv4_mapped}"
        )


def _check_tracker_bind(value: object) -> None:
    """``value`` is None or one IP address to bind the tracker clients to, as
    :func:`~bip_handshake.local_addresses_by_family` reads one. Anything else would bind
    nothing in particular: the session took any string that is not an address for a name
    (the system picks the source), so ``"10.8.0.2:6881"``, ``"[fd00::2]"``, ``"wg0"`` or
    ``" 10.8.0.2"`` announced from every address of the machine, outside a VPN too.

    >>> _check_tracker_bind("10.8.0.2:6881")
    Traceback (most recent call last):
    ...
    ValueError: tracker_bind must be an IP address (no port, brackets or name), not '10.8.0.2:6881'

    Raises:
        TypeError: ``value`` is neither None nor a str.
        ValueError: ``value`` is not an IP address.
    """
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"tracker_bind must be a str (an IP address) or None, not {value!r:.80}")
    try:
        local_addresses_by_family(value)
    except ValueError:
        # local_addresses_by_family's own words name its parameter, not our field
        raise ValueError(
            f"tracker_bind must be an IP address (no port, brackets or name), not {value!r:.80}"
        ) from None


def check_tracker_min_interval(name: str, value: object) -> float:
    """``value`` as the seconds between two regular announces to one tracker at least: in
    ``(0, 1800]`` (1800 s, the longest interval a tracker may ask for), else ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= DEFAULT_MAX_ANNOUNCE_INTERVAL
    ):
        raise ValueError(
            f"{name} must be seconds in (0, {DEFAULT_MAX_ANNOUNCE_INTERVAL:g}], not {value!r}"
        )
    return float(value)


def _check_group(name: str, value: object) -> None:
    """``value`` is None or an IPv4 ``HOST:PORT`` (a multicast group, or a test's unicast
    stand-in)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str (HOST:PORT) or None, not {value!r}")
    try:
        address = PeerAddress.parse(value)
    except ValueError:
        raise ValueError(f"{name} must be an IPv4 HOST:PORT, not {value!r}") from None
    if not isinstance(address.host, IPv4Address) or not address.port:
        raise ValueError(f"{name} must be an IPv4 HOST:PORT, not {value!r}")


def _check_gateway6(value: object) -> None:
    """``value`` is None or an IPv6 unicast address, maybe scoped; a link-local one with its
    scope (``fe80::1%eth0``): every link has its own fe80::/10, so it names no router
    without one."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"natpmp_gateway6 must be a str, not {value!r}")
    try:
        address = IPv6Address(value)
    except ValueError:
        address = None
    if (
        address is None
        or address.ipv4_mapped is not None
        or address.is_unspecified
        or address.is_multicast
    ):
        raise ValueError(f"natpmp_gateway6 must be an IPv6 unicast address, not {value!r}")
    if address.is_link_local and not address.scope_id:
        raise ValueError(
            f"natpmp_gateway6 {value!r} is link-local: it needs its interface (fe80::1%eth0)"
        )


def _check_group6(name: str, value: object) -> None:
    """``value`` is None or an IPv6 ``[HOST]:PORT`` (a multicast group, or a test's unicast
    stand-in)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str ([HOST]:PORT) or None, not {value!r}")
    try:
        address = PeerAddress.parse(value)
    except ValueError:
        raise ValueError(f"{name} must be an IPv6 [HOST]:PORT, not {value!r}") from None
    host = address.host
    if not isinstance(host, IPv6Address) or host.ipv4_mapped is not None or not address.port:
        raise ValueError(f"{name} must be an IPv6 [HOST]:PORT, not {value!r}")


@dataclass(frozen=True, slots=True, init=False)
class TorrentOptions:
    """What to do with one torrent of a session.

    Attributes:
        save_dir: the directory the torrent's files go in (its name is a folder inside for a
            multi-file torrent, as every client does).
        peers: peers to dial whatever the trackers say (``--peer``; a magnet link's ``x.pe``
            are added to these).
        files: indices of the files to download (as the torrent lists them, pad files
            included, as libtorrent and BEP 53 count); ``None``: ``file_priorities``, the
            priorities saved by an earlier run, the magnet link's ``so``, or every file.
        file_priorities: one priority per file (0..7, in the torrent's file order, pad files
            included), libtorrent's ``add_torrent_params.file_priorities``: 0 skips the
            file, higher priorities are fetched first (4 is the default). Checked against
            the file count once the metadata is known (a magnet link's: a wrong count then
            fails the torrent). Give ``files`` or ``file_priorities``, not both.
        extra_trackers: announce URLs to use besides the torrent's own, each a tier of
            its own (BEP 12: announced to alongside the others, not as a fallback).
        resume: read and write resume data under ``save_dir/.bip/``; without, everything on
            disk is hashed at start and nothing is recorded.
        storage: makes the bip_disk FileSystem the files are stored in, from ``save_dir``
            (``None``: a :class:`~bip_disk.NativeFileSystem` rooted there); for in-memory or
            fsspec storage. The torrent closes it when it closes.
        web_seeds: download from the torrent's BEP 19 web seeds too (its ``url-list``, a
            magnet link's ``ws``) as well as from peers.
        paused: start paused (``True``) or not (``False``), whatever was saved; ``None``: as
            the resume data under ``save_dir/.bip/`` says (a torrent paused when its last
            run ended comes back paused, as libtorrent's resume data carries ``paused``),
            else not paused.
        super_seeding: super-seed (BEP 16) while the torrent seeds, libtorrent's
            ``torrent_flags::super_seeding``: peers are told we have nothing, then one
            rare piece at a time, the next once the last one spread (see
            ``ClientConfig.strict_super_seeding``), and their requests for pieces not
            revealed to them are refused; for an initial seeder, whose upload then goes
            to pieces the swarm passes on. No effect while downloading. ``True`` or
            ``False``, whatever was saved; ``None``: as the resume data says (the flag is
            saved with it, as ``paused`` is), else off. ``Torrent.set_super_seeding``
            switches it while running.
        auto_managed: let the session's queue start and stop the torrent, libtorrent's
            ``torrent_flags::auto_managed``: it runs while the queue has room for it
            (``ClientConfig.active_downloads``, ``active_seeds``, ``active_checking``,
            ``active_limit``) and waits ``QUEUED`` otherwise, out of its swarm as if
            paused (its pause, :attr:`~bip._client.Torrent.paused`, stays the user's).
            ``True`` or ``False``, whatever was saved; ``None``: as the resume data says
            (the flag and the queue position are saved with it), else off. Off by default,
            unlike libtorrent's ``add_torrent_params`` (auto-managed unless told): bip's
            ``add_torrent`` starts the torrent it is given, and queueing is asked for.
            ``Torrent.set_auto_managed`` switches it while running.

    Checked and normalised when made, before a session sees them: ``save_dir`` may be a
    ``str`` or any path-like (kept as a :class:`~pathlib.Path`), ``peers`` any iterable of
    :class:`~bip_handshake.PeerAddress` (kept as a tuple), ``files`` a set or frozenset
    (kept as a frozenset, as :meth:`~bip._client.Torrent.set_files` takes it),
    ``extra_trackers`` and ``file_priorities`` any sequence (kept as tuples).

    Raises:
        TypeError: ``save_dir`` is not a path, ``peers`` not an iterable of
            :class:`~bip_handshake.PeerAddress` (``(host, port)`` pairs and ``"host:port"``
            strings are not: :func:`~bip._client.resolve_peers` makes them), ``files`` not a
            set of ints, ``file_priorities`` not a sequence of ints, ``extra_trackers`` not
            a sequence of str, ``storage`` not callable, ``resume`` or ``web_seeds`` not a
            bool, ``paused``, ``super_seeding`` or ``auto_managed`` not a bool or ``None``.
        ValueError: a file index is negative, a priority is outside 0..7, or both
            ``files`` and ``file_priorities`` are given.
    """

    save_dir: Path
    peers: tuple[PeerAddress, ...] = ()
    files: frozenset[int] | None = None
    resume: bool = True
    extra_trackers: tuple[str, ...] = ()
    storage: Callable[[Path], FileSystem] | None = None
    web_seeds: bool = True
    file_priorities: tuple[int, ...] | None = None
    paused: bool | None = None
    super_seeding: bool | None = None
    auto_managed: bool | None = None

    def __init__(  # noqa: PLR0917 (the fields in order, as a dataclass's __init__ takes them)
        self,
        save_dir: str | os.PathLike[str],
        peers: Iterable[PeerAddress] = (),
        files: AbstractSet[int] | None = None,
        resume: bool = True,
        extra_trackers: Sequence[str] = (),
        storage: Callable[[Path], FileSystem] | None = None,
        web_seeds: bool = True,
        file_priorities: Sequence[int] | None = None,
        paused: bool | None = None,
        super_seeding: bool | None = None,
        auto_managed: bool | None = None,
    ) -> None:
        """Take the options as the class docstring says (``save_dir`` any path, ``peers``
        any iterable, ``files`` any set, ``extra_trackers`` and ``file_priorities`` any
        sequence), keep each in its one form (the attributes' types)."""
        # Written as given, then checked and normalised: by hand (frozen), as the types a
        # caller may give are wider than those kept.
        given = {
            "save_dir": save_dir,
            "peers": peers,
            "files": files,
            "resume": resume,
            "extra_trackers": extra_trackers,
            "storage": storage,
            "web_seeds": web_seeds,
            "file_priorities": file_priorities,
            "paused": paused,
            "super_seeding": super_seeding,
            "auto_managed": auto_managed,
        }
        for name, value in given.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        """Refuse options that cannot work, here: found by the torrent's task instead, a
        wrong type raised there and took the whole session down. Keep each in one form."""
        # frozen: each normalised once, here
        if not isinstance(self.save_dir, str | os.PathLike):
            raise TypeError(f"save_dir must be a path, not {self.save_dir!r:.80}")
        object.__setattr__(self, "save_dir", Path(self.save_dir))
        object.__setattr__(self, "peers", _check_peers(self.peers))
        if self.files is not None:
            object.__setattr__(self, "files", _check_files(self.files))
        trackers: object = self.extra_trackers  # whatever the caller gave
        if isinstance(trackers, str | bytes) or not isinstance(trackers, Sequence):
            raise TypeError(f"extra_trackers must be a sequence of str, not {trackers!r:.80}")
        if any(not isinstance(url, str) for url in trackers):
            raise TypeError(f"extra_trackers must be a sequence of str, not {trackers!r:.80}")
        object.__setattr__(self, "extra_trackers", tuple(trackers))
        if self.storage is not None and not callable(self.storage):
            raise TypeError(f"storage must be callable or None, not {self.storage!r:.80}")
        for name in ("resume", "web_seeds"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {getattr(self, name)!r:.80}")
        for name in ("paused", "super_seeding", "auto_managed"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool or None, not {value!r}")
        if self.file_priorities is None:
            return
        priorities = check_file_priorities(self.file_priorities)
        object.__setattr__(self, "file_priorities", priorities)  # frozen: normalised once
        if self.files is not None:
            raise ValueError("give files or file_priorities, not both")


def _check_peers(peers: object) -> tuple[PeerAddress, ...]:
    """``peers`` as a tuple of :class:`~bip_handshake.PeerAddress`.

    Raises:
        TypeError: not an iterable of them (a str, a ``(host, port)`` pair is none).
    """
    if isinstance(peers, str | bytes) or not isinstance(peers, Iterable):
        raise TypeError(f"peers must be an iterable of PeerAddress, not {peers!r:.80}")
    peers = tuple(peers)
    for peer in peers:
        if not isinstance(peer, PeerAddress):
            raise TypeError(
                f"peers must be PeerAddress (resolve_peers makes them), not {peer!r:.80}"
            )
    return peers


def _check_files(files: object) -> frozenset[int]:
    """``files`` as a frozenset of file indices, as ``Torrent.set_files`` takes them (a list
    or a tuple is refused: read as a selection, it would be mistaken for priorities).

    Raises:
        TypeError: not a set or frozenset of ints (a bool is none).
        ValueError: an index is negative.
    """
    if not isinstance(files, frozenset | set) or any(type(index) is not int for index in files):
        raise TypeError(f"files must be a frozenset of ints or None, not {files!r:.80}")
    if any(index < 0 for index in files):
        raise ValueError(f"files are file indices, 0 or more, not {min(files)}")
    return frozenset(files)


def check_file_priorities(priorities: object) -> tuple[int, ...]:
    """``priorities`` as a tuple of file priorities, each an int in 0..7.

    Raises:
        TypeError: not a sequence (a list, a tuple...) of ints; a str, bytes or a bool is
            none.
        ValueError: a priority is outside 0..7.
    """
    if not isinstance(priorities, Sequence) or isinstance(priorities, str | bytes | bytearray):
        raise TypeError(f"file priorities are a sequence of ints, not {priorities!r}")
    for index, priority in enumerate(priorities):
        if type(priority) is not int:
            raise TypeError(f"file priority {index} is not an int: {priority!r}")
        if not MIN_FILE_PRIORITY <= priority <= MAX_FILE_PRIORITY:
            raise ValueError(
                f"file priority {index} is {priority}, not in"
                f" {MIN_FILE_PRIORITY}..{MAX_FILE_PRIORITY}"
            )
    return tuple(priorities)
