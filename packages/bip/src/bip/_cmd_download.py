"""``bip download TORRENT_OR_MAGNET``: fetch a torrent, verify every piece, optionally seed on.

The client engine (:mod:`bip._client`) does the work: peers from the torrent's UDP trackers,
``--peer`` and a magnet's ``x.pe``, and PEX; metadata for magnet links (BEP 9); rarest-first
(or, with ``--sequential``, in order) and end-game; every piece verified before it is written;
resume data in ``DIR/.bip/`` so an interrupted download (Ctrl-C, or even SIGKILL) carries on
without fetching a verified piece again. ``--seed`` seeds on until Ctrl-C, or until
``--seed-ratio`` / ``--seed-time`` is reached. The exit status is 0 only when every selected
file is complete and verified.

A BEP 46 link (``magnet:?xs=urn:btpk:KEY``) is resolved through the DHT, then followed while
the command runs (``--follow-interval``): a newer version the publisher puts there replaces
the running one once its metadata is known, in the same directory
(:class:`~bip._follow_mutable.MutableFollower`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Final

import trio

from bip_dht import DHT, DHTSocketError, MutableTorrent, RoutingStateError, open_dht
from bip_handshake import NATPMP_ANNOUNCE_ADDRESS, EncryptionPolicy, PeerAddress, proxy_udp_family
from bip_metainfo import MagnetLink, Metainfo, MutableTorrentLink

from ._arguments import (
    DEFAULT_FOLLOW_INTERVAL,
    add_follow_interval_option,
    add_ip_filter_options,
    add_seed_limit_options,
    ipv4_endpoint_or_off,
    load_ip_filter,
    positive,
    proxy_url,
)
from ._client import (
    DEFAULT_MAX_PEERS,
    RESUME_DIRECTORY,
    ClientConfig,
    Session,
    SourceError,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    TorrentSource,
    TorrentStatus,
    open_session,
    resolve_peers,
)
from ._client import parse_file_selection as _parse_files
from ._client._local_hosts import first_of_each_family
from ._client._resume import _read_regular
from ._client._utp import UtpRouter
from ._cmd_dht import _MAX_STATE_SIZE, _write_state, lookup_mutable_torrent
from ._describe import safe_text
from ._errors import CLIError
from ._follow_mutable import MutableFollower
from ._humanize import format_duration, format_rate, format_size, parse_size
from ._inputs import (
    check_tracker_url,
    load_mutable_link,
    load_source,
    parse_endpoint,
    parse_port,
)
from ._progress import ProgressBar

__all__ = [
    "ENCRYPTION_CHOICES",
    "StatusLine",
    "add_parser",
    "add_session_arguments",
    "check_trackers",
    "config_from_args",
    "follow",
    "follow_interval_of",
    "follow_versions",
    "listen_ports_text",
    "open_dht_node",
    "open_session_with_dht",
    "resolve_mutable_torrent",
    "run",
    "seed_on",
    "seed_until_limits",
    "status_fields",
    "until_terminated",
    "user_peers",
]

ENCRYPTION_CHOICES: Final = {
    "prefer": EncryptionPolicy.PREFER_ENCRYPTED,
    "require": EncryptionPolicy.REQUIRE_ENCRYPTED,
    "disable": EncryptionPolicy.PLAINTEXT_ONLY,
}
"""``--encryption`` values and the MSE policy each stands for."""
DHT_STATE: Final = "dht.state"
"""The DHT node's saved state, in the save directory's ``.bip`` folder."""
RESOLVE_TIMEOUT: Final = 60.0
"""Seconds a BEP 46 link's DHT lookup (joining the DHT included) may take."""
_REFRESH: Final = 0.25  # seconds between two looks at the torrent's status
_TRACKER_SCHEMES: Final = ("udp://", "http://", "https://")  # those the session announces to
_NATPMP_ANNOUNCE: Final = f"{NATPMP_ANNOUNCE_ADDRESS[0]}:{NATPMP_ANNOUNCE_ADDRESS[1]}"

logger = logging.getLogger("bip")


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``bip download`` and ``bip seed`` share: where to listen, whom to dial."""
    parser.add_argument(
        "--port",
        type=str,
        default="6881",
        help="port to accept peers on, over TCP and over UDP (uTP, shared with the DHT; 0: any"
        " free port, the same one on every --bind; default 6881)",
    )
    parser.add_argument(
        "--bind",
        action="append",
        metavar="HOST",
        help="address to listen on and announce from (default: every IPv4 address); repeat"
        " for more, on --port each: one of each family (--bind 10.8.0.2 --bind fd00::2) has"
        " peers and trackers reached from the one of their family, and '--bind"
        " 0.0.0.0 --bind ::' listens on every address",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a peer to connect to (repeat for more)",
    )
    parser.add_argument(
        "--encryption",
        choices=sorted(ENCRYPTION_CHOICES),
        default="prefer",
        help="MSE/PE: prefer it (default, plaintext peers too), require it, or disable it",
    )
    parser.add_argument(
        "--no-trackers",
        action="store_true",
        help="announce to no tracker: neither the torrent's nor those --tracker adds",
    )
    parser.add_argument(
        "--tracker",
        action="append",
        default=[],
        metavar="URL",
        help=(
            "another udp://, http:// or https:// tracker to announce to (repeat for more;"
            " none with --no-trackers)"
        ),
    )
    parser.add_argument(
        "--dht-bootstrap",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a DHT node to join through (repeat for more); without, the DHT starts from the"
        " nodes saved in DIR/.bip/dht.state and those peers name",
    )
    parser.add_argument("--no-dht", action="store_true", help="do not use the DHT (BEP 5)")
    utp = parser.add_mutually_exclusive_group()
    utp.add_argument(
        "--no-utp",
        action="store_true",
        help="TCP only: neither accept nor dial uTP (BEP 29; by default uTP is accepted on the"
        " UDP port of the same number, shared with the DHT, and dialled when TCP fails)",
    )
    utp.add_argument(
        "--prefer-utp",
        action="store_true",
        help="dial uTP first and TCP if it fails, as libtorrent does (default: TCP first, since"
        " uTP in Python costs more CPU per byte)",
    )
    parser.add_argument(
        "--no-holepunch",
        action="store_true",
        help="do not use BEP 55 holepunching (by default, with uTP on, a peer learnt from PEX"
        " that cannot be dialled is introduced by the peer that listed it, and both dial over"
        " uTP at once; and we relay such introductions for our peers)",
    )
    parser.add_argument(
        "--upload-limit",
        default="0",
        metavar="RATE",
        help="bytes per second sent to all peers together, e.g. 500k, 2MiB, 1.5M/s (binary"
        " units as the progress line shows: k = KiB = 1024; default 0: unlimited); web seeds"
        " are not peers and are not limited",
    )
    parser.add_argument(
        "--download-limit",
        default="0",
        metavar="RATE",
        help="bytes per second read from all peers together, as --upload-limit (web seeds are"
        " not limited)",
    )
    parser.add_argument(
        "--limit-local",
        action="store_true",
        help="hold peers on loopback and local networks to --upload-limit and --download-limit"
        " too (by default they are exempt, as in libtorrent: 127.0.0.0/8, ::1, 10/8,"
        " 172.16/12, 192.168/16, link-local and fc00::/7 do not cross the link the limits"
        " share)",
    )
    parser.add_argument(
        "--max-peers",
        type=positive(int),
        default=DEFAULT_MAX_PEERS,
        metavar="N",
        help=f"peers connected at once at most, dialled and accepted together (default"
        f" {DEFAULT_MAX_PEERS}, as libtorrent's connections_limit)",
    )
    parser.add_argument(
        "--natpmp",
        action="store_true",
        help="map the listen port (TCP, and UDP for uTP and the DHT) on the default gateway"
        " with PCP (RFC 6887) or NAT-PMP (RFC 6886) while running, and announce the port it"
        " grants; off by"
        " default",
    )
    parser.add_argument(
        "--natpmp-gateway",
        metavar="IP",
        help="the NAT-PMP gateway's IPv4 address (implies --natpmp; default: the default"
        " route's gateway)",
    )
    parser.add_argument(
        "--natpmp-gateway6",
        metavar="IP",
        help="the IPv6 router asked by PCP for pinholes to an IPv6 listen address (--bind ::),"
        " a link-local one with its interface (fe80::1%%eth0) (implies --natpmp; default: the"
        " IPv6 default route's router)",
    )
    parser.add_argument(
        "--natpmp-announce-address",
        type=ipv4_endpoint_or_off,
        default=_NATPMP_ANNOUNCE,
        metavar="ADDR:PORT",
        help="with --natpmp, where the router's announcements of a reboot or a new external"
        f" address are heard (default {_NATPMP_ANNOUNCE}, RFC 6886's group, joined on the"
        " interface toward the router), so that the ports are mapped again within seconds;"
        " 'off': not listened for (a reboot is then seen at the next renewal)",
    )
    parser.add_argument(
        "--upnp",
        action="store_true",
        help="map the same ports with UPnP IGD (the router found by SSDP) while running, and"
        " announce the port it grants; off by default",
    )
    parser.add_argument(
        "--lsd",
        action="store_true",
        help="Local Service Discovery (BEP 14): announce public torrents on the local"
        " network's multicast group and dial the peers announcing them there; off by default",
    )
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="a SOCKS5 proxy, socks5://[USER:PASSWORD@]HOST[:PORT] (socks5h://: the proxy"
        " resolves host names; percent-encode / ? # @ in the password), for peer connections,"
        " web seeds, trackers and the DHT: TCP by CONNECT, uTP dials, UDP trackers and the DHT"
        " through its UDP relay (UDP ASSOCIATE; a proxy that refuses it leaves peers on TCP,"
        " UDP announces failing and the DHT without answers); incoming peers and LSD stay"
        " direct; default: the BIP_PROXY environment variable, which keeps a password out"
        " of ps",
    )
    add_ip_filter_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bip download`` to the command line."""
    parser = subparsers.add_parser(
        "download",
        help="download a torrent or magnet link",
        description=(
            "Download a torrent (a .torrent file, a magnet link or an info-hash) into DIR,"
            " verifying every piece. An interrupted download resumes where it stopped."
            " Exits 0 only when every selected file is complete and verified."
        ),
    )
    parser.add_argument("source", metavar="TORRENT_OR_MAGNET", help=".torrent file or magnet link")
    parser.add_argument(
        "-d", "--dir", default=".", metavar="DIR", help="where to save (default: here)"
    )
    parser.add_argument(
        "--files",
        metavar="LIST",
        help="only these files, by index as 'bip show' lists them: 0,2-3 (default: all,"
        " or the magnet link's 'so')",
    )
    parser.add_argument(
        "--seed",
        action="store_true",
        help="keep seeding once complete, until Ctrl-C, --seed-ratio or --seed-time",
    )
    add_seed_limit_options(parser, implies_seed=True)
    add_follow_interval_option(parser)
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="download pieces in order, first to last (within --files), to play or preview"
        " the files while they arrive; it costs the swarm: rarity is ignored, so rare pieces"
        " spread slower and we have less that others want (default: rarest first)",
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="neither read nor write resume data (everything on disk is hashed)",
    )
    parser.add_argument(
        "--no-web-seeds",
        action="store_true",
        help="do not download from the torrent's web seeds (BEP 19 url-list, a magnet's ws)",
    )
    add_session_arguments(parser)
    parser.set_defaults(func=run)


@contextlib.asynccontextmanager
async def open_session_with_dht(
    args: argparse.Namespace, config: ClientConfig, state_dir: Path
) -> AsyncIterator[Session]:
    """A session with a DHT node on the same address and port as the peers' TCP socket
    (BEP 5's habit; port 0: any; with ``--bind`` repeated, on the first of each IP
    family), unless ``--no-dht``. The node's state (its id and the
    nodes it knows) is read from and saved to ``state_dir/.bip/dht.state``.

    Unless uTP is off (``--no-utp``), uTP shares the node's UDP socket when the node got the
    listen port, as libtorrent does: the node hands every datagram that is not KRPC to the
    session's :class:`~bip._client._utp.UtpRouter`, and uTP sends from the node's socket.
    With ``--proxy`` the node goes through the proxy's UDP relay instead (see
    :func:`open_dht_node`) and uTP keeps a socket of its own.

    Raises:
        CLIError: a malformed ``--dht-bootstrap``.
        DHTSocketError: the DHT's socket could not be bound (not even on another port), or a
            bootstrap name did not resolve.
    """
    async with (
        open_dht_node(args, config, state_dir) as (dht, router),
        open_session(config, dht=dht, utp_router=router) as session,
    ):
        yield session


@contextlib.asynccontextmanager
async def open_dht_node(
    args: argparse.Namespace,
    config: ClientConfig,
    state_dir: Path,
    *,
    more_bootstrap: tuple[tuple[str, int], ...] = (),
) -> AsyncIterator[tuple[DHT | None, UtpRouter | None]]:
    """The DHT node of :func:`open_session_with_dht` and the uTP router it feeds (both
    ``None`` with ``--no-dht``), for a caller that needs the node itself (a BEP 46 link is
    resolved through it). ``more_bootstrap``: nodes besides ``--dht-bootstrap`` (a magnet
    link's ``dht``). The state is saved when the block ends.

    With a SOCKS5 proxy (``--proxy``), every datagram of the node goes through the proxy's
    UDP relay, as libtorrent proxies its DHT whenever a SOCKS5 proxy is set (bootstrap names
    go to the proxy as names under ``socks5h://``). The node then shares its socket with
    nobody (the relay returns only answers to what we sent: incoming uTP could not arrive
    there) and binds any port, so that uTP's own socket gets the listen port: no router; on
    any address, or with ``--bind`` repeated, it binds one of the proxy's family (the
    first listen host of that family, else any address of it).

    Raises:
        CLIError: a malformed ``--dht-bootstrap``.
        DHTSocketError: as :func:`open_session_with_dht`.
    """
    if args.no_dht:
        yield None, None
        return
    bootstrap = [parse_endpoint(text, lowest_port=1) for text in args.dht_bootstrap] + list(
        more_bootstrap
    )
    state_path = state_dir / RESUME_DIRECTORY / DHT_STATE
    try:
        # As a resume file is read: at most _MAX_STATE_SIZE + 1 bytes, and never from a FIFO
        # (whose read would wait for a writer in a thread no cancellation reaches).
        state: bytes | None = await trio.to_thread.run_sync(
            _read_regular, state_path, _MAX_STATE_SIZE
        )
    except FileNotFoundError:
        state = None
    except OSError as error:
        logger.warning("%s: cannot read it, starting afresh: %s", state_path, error)
        state = None
    # Every listen host (--bind, each on --port): open_dht keeps the first of each family.
    hosts = [host for host, _ in config.listen] or ["0.0.0.0"]
    port = config.listen[0][1] if config.listen else 0
    proxy = config.proxy_settings
    if proxy is not None:
        port = 0  # peers see the relay's port, never ours; the listen port is uTP's
        if len(hosts) > 1 or hosts[0] in {"0.0.0.0", "::"}:
            # Of the proxy's family, which alone can reach its relay (IPv4 when its name
            # does not resolve in time; the association's attempts say why): that
            # family's first listen host, any address of it when that is none.
            family = await proxy_udp_family(proxy, timeout=config.connect_timeout, fallback=4)
            first = first_of_each_family(hosts).get(family)
            hosts = [str(first) if first is not None else "::" if family == 6 else "0.0.0.0"]
    binds = [(host, port) for host in hosts]
    # Made before the node, which may hear uTP before the session has its uTP socket: the
    # router drops those datagrams until then.
    router = UtpRouter() if config.utp and proxy is None else None
    other = router.datagram_received if router is not None else None
    async with contextlib.AsyncExitStack() as stack:
        try:
            dht = await stack.enter_async_context(
                open_dht(binds, bootstrap, state=state, other_datagrams=other, proxy=proxy)
            )
        except RoutingStateError:
            logger.warning("%s is not a DHT state: starting afresh", state_path)
            dht = await stack.enter_async_context(
                open_dht(binds, bootstrap, other_datagrams=other, proxy=proxy)
            )
        except DHTSocketError:
            if port == 0:
                raise
            # The UDP port is taken (another client's DHT): any port does (uTP then tries
            # the listen port itself, and warns if it is taken).
            anywhere = [(host, 0) for host in hosts]
            dht = await stack.enter_async_context(
                open_dht(anywhere, bootstrap, state=state, other_datagrams=other, proxy=proxy)
            )
        try:
            yield dht, router
        finally:
            with trio.CancelScope(shield=True):
                await _save_dht_state(state_path, dht.save_state())


def listen_ports_text(session: Session) -> str:
    """The session's TCP listen ports for a message: ``port 6881``. One port whatever the
    number of ``--bind``: ``--port`` on each, and with ``--port 0`` the one port the system
    picked for all of them. ``ports 40001, 40002`` only for a session whose listeners were
    given different ports (a library's ``ClientConfig.listen``), the first being the one
    trackers, the DHT and peers are told."""
    ports = dict.fromkeys(address.port for address in session.handshaker.listen_addresses)
    if len(ports) <= 1:
        return f"port {session.listen_port}"
    return "ports " + ", ".join(map(str, ports))


async def _save_dht_state(path: Path, data: bytes) -> None:
    """Replace the DHT state ``path`` with ``data`` as a resume file is replaced (a temporary
    file made for the write, synced, renamed over it: a link or a FIFO planted at a
    temporary name is never written through or waited on), after deleting the temporaries
    that crashes left beside it a minute ago or more. A failure is logged, never raised
    (the state is a head start, not the download)."""

    try:
        # The save directory's .bip is bip's: the fixed temporary name of older versions goes.
        await trio.to_thread.run_sync(functools.partial(_write_state, path, data, owned=True))
    except OSError as error:
        logger.warning("cannot save the DHT state: %s", error)


def parse_rate(text: str, option: str) -> float | None:
    """A rate typed by a person, in bytes per second (``None``: unlimited, for ``0``).

    ``"500k"``, ``"2MiB"``, ``"1.5M/s"``: the units of :func:`~bip._humanize.parse_size`
    (binary, as :func:`~bip._humanize.format_rate` prints them), an optional ``/s``.

    Raises:
        CLIError: not a rate; ``option`` names the option in the message.
    """
    size = text.strip()
    if size.lower().endswith("/s"):
        size = size[:-2]
    try:
        rate = parse_size(size)
    except ValueError as error:
        raise CLIError(
            f"{option} takes bytes per second (500k, 2MiB; 0: unlimited): {error}"
        ) from None
    return float(rate) if rate else None


def _bind_hosts(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """The listen hosts ``--bind`` names, in the order given: ``0.0.0.0`` when none. Each is
    an IP address (``HOST:PORT`` and ``[IPV6]:PORT`` are taken too, the port ignored: the
    session listens on ``--port``).

    >>> _bind_hosts(None), _bind_hosts(["10.8.0.2", "[fd00::2]:6881"])
    (('0.0.0.0',), ('10.8.0.2', 'fd00::2'))

    Raises:
        CLIError: a value is not an IP address, is an IPv4-mapped one (``::ffff:10.8.0.2``:
            the IPv4 address is asked for), or names one given before.
    """
    texts = ["0.0.0.0"] if values is None else [values] if isinstance(values, str) else values
    hosts: dict[IPv4Address | IPv6Address, str] = {}  # ordered, without repeats
    for text in texts:
        host, _ = parse_endpoint(text, default_port=0)
        try:
            address = ip_address(host)
        except ValueError:
            raise CLIError(f"--bind takes an IP address (127.0.0.1, ::), not {text!r}") from None
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            # An IPv6 listener is IPv6-only: it cannot bind it (EINVAL at start). Refused, not
            # listened on as the IPv4 address: the address given is the one shown.
            raise CLIError(f"--bind {host} is IPv4: bind {address.ipv4_mapped}")
        if address in hosts:
            # Listening twice on one address and port fails (EADDRINUSE): said plainly here.
            raise CLIError(f"--bind {host} is given twice")
        hosts[address] = host
    return tuple(hosts.values())


def config_from_args(args: argparse.Namespace) -> ClientConfig:
    """The session settings the shared options ask for.

    Raises:
        CLIError: a bad port, bind address, NAT-PMP gateway (IPv4 or IPv6), rate limit or
            proxy URL, or an
            ``--ip-filter`` file that cannot be read or is malformed.
    """
    port = parse_port(args.port)
    hosts = _bind_hosts(args.bind)
    gateway = args.natpmp_gateway
    if gateway is not None:
        try:
            gateway = str(IPv4Address(gateway))
        except ValueError:
            raise CLIError(
                f"--natpmp-gateway takes an IPv4 address (192.168.1.1), not {gateway!r}"
            ) from None
    gateway6 = getattr(args, "natpmp_gateway6", None)
    if gateway6 is not None:
        try:
            ClientConfig(natpmp_gateway6=gateway6)  # its own checks, one place
        except ValueError as error:
            raise CLIError(f"--natpmp-gateway6: {error}") from None
    proxy = proxy_url(args)
    return ClientConfig(
        listen=tuple((host, port) for host in hosts),
        encryption=ENCRYPTION_CHOICES[args.encryption],
        trackers=not args.no_trackers,
        utp=not args.no_utp,
        prefer_utp=args.prefer_utp,
        holepunch=not args.no_holepunch,
        upload_rate_limit=parse_rate(args.upload_limit, "--upload-limit"),
        download_rate_limit=parse_rate(args.download_limit, "--download-limit"),
        limit_local_peers=args.limit_local,
        max_peers=args.max_peers,
        ip_filter=load_ip_filter(args.ip_filter, strict=args.ip_filter_strict),
        natpmp=args.natpmp or gateway is not None or gateway6 is not None,
        natpmp_gateway=gateway,
        natpmp_gateway6=gateway6,
        natpmp_announce_address=args.natpmp_announce_address,
        upnp=args.upnp,
        lsd=args.lsd,
        proxy=proxy,
    )


async def user_peers(args: argparse.Namespace) -> tuple[PeerAddress, ...]:
    """The ``--peer`` options, resolved.

    Raises:
        CLIError: a malformed or unresolvable peer.
    """
    pairs = [parse_endpoint(text, lowest_port=1) for text in args.peer]
    try:
        return await resolve_peers(pairs)
    except SourceError as error:
        raise CLIError(str(error)) from None


def status_fields(status: TorrentStatus) -> list[tuple[str, str]]:
    """The fields of a torrent's status line after its amounts."""
    fields: list[tuple[str, str]] = []
    if status.phase is TorrentPhase.DOWNLOADING:
        fields.append(("down", format_rate(status.download_rate)))
    fields.append(("up", format_rate(status.upload_rate)))
    # The uTP count only when there is one: TCP-only sessions keep their familiar line.
    utp = f", {status.utp_peers} uTP" if status.utp_peers else ""
    # Connected out of known (the peer list), when more are known than connected.
    known = f"/{status.known_peers}" if status.known_peers > status.peers else ""
    fields.append(("peers", f"{status.peers}{known} ({status.seeds} seeds{utp})"))
    if status.web_seeds:
        fields.append(("web seeds", str(status.web_seeds)))
    if status.phase is TorrentPhase.DOWNLOADING:
        fields.append(("eta", format_duration(status.eta)))
    elif status.phase is TorrentPhase.SEEDING:
        fields.append(("uploaded", format_size(status.uploaded)))
    if status.checked is not None:
        fields.append(("checking", f"{status.checked:.0%}"))
    elif status.phase is not TorrentPhase.DOWNLOADING:
        fields.append(("", status.phase.value))
    return fields


class StatusLine:
    """A torrent's progress line on stderr (nothing when ``quiet``).

    Downloading, it shows the bytes verified out of those selected; seeding only (``bip
    seed``: nothing selected), the bytes uploaded.
    """

    def __init__(self, torrent: Torrent, *, quiet: bool) -> None:
        self.torrent = torrent
        status = torrent.status()
        self.bar = None if quiet else ProgressBar(status.name, None, rate=False)

    def show(self) -> TorrentStatus:
        """Redraw from the torrent's status now (the bar limits how often it really draws)."""
        status = self.torrent.status()
        if self.bar is not None:
            self.bar.label = status.name
            if status.total:
                self.bar.update(status.done, total=status.total, fields=status_fields(status))
            else:
                self.bar.update(status.uploaded, fields=status_fields(status))
        return status

    def finish(self) -> None:
        """Draw the last state, with the time taken and the average rate, and end the line."""
        status = self.show()
        if self.bar is not None:
            elapsed = self.bar.elapsed()
            fields = status_fields(status)
            if status.complete and status.total:
                fields.append(("in", format_duration(elapsed)))
                fields.append(("avg", format_rate(status.downloaded / max(elapsed, 1e-9))))
            self.bar.finish(fields=fields)


async def _redraw(line: StatusLine) -> None:
    """Redraw ``line`` until cancelled.

    Raises:
        CLIError: the torrent failed.
    """
    while True:
        status = line.show()
        if status.phase is TorrentPhase.FAILED:
            raise CLIError(f"{status.name}: {status.error}")
        await trio.sleep(_REFRESH)


async def follow(torrent: Torrent, line: StatusLine) -> None:
    """Redraw ``line`` until ``torrent`` completes.

    Raises:
        CLIError: the torrent failed.
    """
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            try:
                await torrent.wait_complete()
            except TorrentError:
                pass  # reported below, from the status
            finally:
                nursery.cancel_scope.cancel()

        nursery.start_soon(wait)
        await _redraw(line)
    status = torrent.status()
    if status.phase is TorrentPhase.FAILED:
        raise CLIError(f"{status.name}: {status.error}")


async def seed_until_limits(
    torrent: Torrent,
    line: StatusLine,
    *,
    ratio: float | None,
    seconds: float | None,
    size: int,
) -> str | None:
    """Redraw ``line`` while seeding, until the upload ratio or the seeding time is reached
    (returns which, to tell the user), or forever when both are ``None``.

    The ratio is the payload uploaded in this run (uploads while downloading included) over
    ``size``, the bytes of the torrent's data (the selected files' for a download): as aria2
    counts it (uploaded over the length completed), and defined for a seed that downloaded
    nothing (libtorrent divides by the bytes downloaded).

    Raises:
        CLIError: the torrent failed.
    """
    reached: list[str] = []
    with trio.move_on_after(math.inf if seconds is None else seconds) as timer:
        async with trio.open_nursery() as nursery:
            if ratio is not None:

                async def watch_ratio(target: float) -> None:
                    while (uploaded := torrent.status().uploaded) < target:
                        await trio.sleep(_REFRESH)
                    reached.append(
                        f"seed ratio {ratio:g} reached ({format_size(uploaded)} uploaded)"
                    )
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_ratio, ratio * size)
            await _redraw(line)
    if timer.cancelled_caught and seconds is not None:
        reached.append(f"seeded for {_shown_duration(seconds)}")
    status = torrent.status()
    if status.phase is TorrentPhase.FAILED:  # pragma: no cover - _redraw raises it first
        raise CLIError(f"{status.name}: {status.error}")
    return reached[0] if reached else None


async def seed_on(torrent: Torrent, args: argparse.Namespace, *, size: int) -> None:
    """Seed with a status line until the command's seeding limits (``--seed-ratio`` over
    ``size`` bytes, ``--seed-time``) or Ctrl-C, and say which limit ended it.

    Raises:
        CLIError: the torrent failed.
    """
    line = StatusLine(torrent, quiet=args.quiet)
    try:
        reached = await seed_until_limits(
            torrent, line, ratio=args.seed_ratio, seconds=args.seed_time, size=size
        )
    finally:
        line.finish()
    if reached is not None and not args.quiet:
        name = safe_text(torrent.status().name)  # the torrent's text: escaped, as everywhere
        print(f"bip: {name}: {reached}: stopped seeding", file=sys.stderr)


def seeding_until(args: argparse.Namespace) -> str:
    """How a seeding command ends, for its first words on stderr."""
    limits = []
    if args.seed_ratio is not None:
        limits.append(f"ratio {args.seed_ratio:g}")
    if args.seed_time is not None:
        limits.append(f"{_shown_duration(args.seed_time)} of seeding")
    return " or ".join(limits) if limits else "Ctrl-C"


def _shown_duration(seconds: float) -> str:
    """A seeding time as the user may have typed it: ``0.5s`` below a minute (rounding
    would show ``0s``), ``1h30m00s``-like above (:func:`~bip._humanize.format_duration`)."""
    return f"{seconds:g}s" if seconds < 60 else format_duration(seconds)


async def resolve_mutable_torrent(dht: DHT | None, link: MutableTorrentLink) -> MutableTorrent:
    """The version of the torrent a BEP 46 link names, as the DHT has it now (the newest
    ``seq`` found), within :data:`RESOLVE_TIMEOUT` seconds.

    Raises:
        CLIError: no DHT (``--no-dht``), no node answered, none returned an item for the
            key and salt, the item names no torrent, or the lookup took too long.
        DHTBusyError: the DHT node refused the lookup, or the join it needed first (every
            lookup slot taken): nothing was asked, so none of the above is known (the
            command reports it as a DHT error; the session has no torrent yet, so it is
            rare).
    """
    if dht is None:
        raise CLIError("a BEP 46 link (xs=urn:btpk:) is resolved through the DHT: drop --no-dht")
    key = link.public_key.hex()
    with trio.move_on_after(RESOLVE_TIMEOUT):
        # The DHT's own join rule: open_dht's bootstrap is under way as we come here, and a
        # second one beside it would double the find_node flood, so we wait for its end. The
        # nodes an earlier run saved do not spare that wait until one of them answered: all
        # gone, a lookup from them alone would find nothing.
        if not await dht.join_if_needed(timeout=RESOLVE_TIMEOUT):
            raise CLIError(
                "no DHT node answered: a BEP 46 link needs one (--dht-bootstrap, the link's"
                " dht=, or the nodes saved by an earlier run)"
            )
        found = await lookup_mutable_torrent(dht, link)
        logger.info("key %s names %s (version %d)", key, found.info_hash, found.seq)
        return found
    raise CLIError(f"the DHT did not answer for key {key} within {RESOLVE_TIMEOUT:g} s")


async def _download(args: argparse.Namespace, config: ClientConfig) -> int:
    mutable = load_mutable_link(args.source)
    source = load_source(args.source) if mutable is None else None
    selection = None
    if args.files is not None:
        try:
            selection = _parse_files(args.files)
        except SourceError as error:
            raise CLIError(str(error)) from None
    peers = await user_peers(args)
    options = TorrentOptions(
        Path(args.dir),
        peers=peers,
        files=selection,
        resume=not args.no_resume,
        extra_trackers=tuple(args.tracker),
        web_seeds=not args.no_web_seeds,
        # The command runs the torrent: a pause a library user's session saved there is lifted.
        paused=False,
    )
    more_bootstrap = mutable.dht_nodes if mutable is not None else ()
    async with (
        open_dht_node(args, config, Path(args.dir), more_bootstrap=more_bootstrap) as (
            dht,
            router,
        ),
        open_session(config, dht=dht, utp_router=router) as session,
    ):
        follower: MutableFollower | None = None
        interval = follow_interval_of(args, mutable)
        if source is None:
            assert mutable is not None
            first = await resolve_mutable_torrent(dht, mutable)
            source = mutable.resolved(first.info_hash)
            if interval is not None and dht is not None:
                follower = MutableFollower(
                    session,
                    dht,
                    mutable,
                    options,
                    interval=interval,
                    timeout=RESOLVE_TIMEOUT,
                    sequential=args.sequential,
                )
                torrent = await follower.start(first)
        if follower is None:
            try:
                torrent = await session.add_torrent(source, options)
            except TorrentError as error:  # a torrent the session refuses (named .bip)
                raise CLIError(str(error)) from None
            if args.sequential:
                torrent.set_sequential(True)
        if not _can_find_peers(source, options, config) and not _dht_has_nodes(args):
            logger.warning(
                "no peer to dial (--peer, x.pe), no udp://, http:// or https:// tracker to ask"
                " and no DHT node known: waiting for peers to connect to %s",
                listen_ports_text(session),
            )
        if follower is not None:
            return await follow_versions(follower, args)
        line = StatusLine(torrent, quiet=args.quiet)
        try:
            await follow(torrent, line)
        finally:
            line.finish()
        if args.seed or args.seed_ratio is not None or args.seed_time is not None:
            status = torrent.status()
            if not args.quiet:
                name = safe_text(status.name)
                print(f"bip: {name}: seeding until {seeding_until(args)}", file=sys.stderr)
            await seed_on(torrent, args, size=status.total)
    return 0


def follow_interval_of(
    args: argparse.Namespace, mutable: MutableTorrentLink | None
) -> float | None:
    """Seconds between two lookups of the key of ``mutable``, the BEP 46 link downloaded
    (``--follow-interval``, :data:`~bip._arguments.DEFAULT_FOLLOW_INTERVAL` when not given),
    or None: not followed (turned off, or no BEP 46 link). A ``--follow-interval`` given with
    another source is said once, at INFO, not refused: a script may pass the same options
    whatever it downloads, and the option changes nothing there."""
    given: float | None = args.follow_interval
    if mutable is None:
        if given is not None:
            logger.info(
                "--follow-interval applies to BEP 46 links (magnet:?xs=urn:btpk:) only: this"
                " download is not followed"
            )
        return None
    seconds = DEFAULT_FOLLOW_INTERVAL if given is None else given
    return seconds if seconds > 0 else None


async def follow_versions(follower: MutableFollower, args: argparse.Namespace) -> int:
    """Download a BEP 46 link's current version, then seed it as the command asks, while
    ``follower`` looks for newer versions: the status line and the seeding limits follow
    each version that takes the place of the one shown (its ratio counts its own uploads,
    its seeding time starts when it completes). An update that fails gives way to the
    version before it (:meth:`~bip._follow_mutable.MutableFollower.recover`). 0 once the
    current version is complete (without seeding), or once its seeding limits are reached.

    Raises:
        CLIError: the version shown failed, and no earlier version is remembered (the first,
            or one put back already) or it could not be added back.
    """
    seeding = args.seed or args.seed_ratio is not None or args.seed_time is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower.poll)
        while not await _run_version(follower, args, seeding=seeding):
            pass  # another version took the place of the one shown: show it
        nursery.cancel_scope.cancel()  # the lookups end with the command
    return 0


async def _run_version(
    follower: MutableFollower, args: argparse.Namespace, *, seeding: bool
) -> bool:
    """Show ``follower.current`` until the command is done with it (True: complete without
    ``seeding``, or its seeding limits reached) or another version takes its place (False).

    Raises:
        CLIError: it failed, and no earlier version is remembered (the first, or one put back
            already) or it could not be added back.
    """
    # Read together (no checkpoint between): a replacement after this sets `changed`.
    torrent, changed = follower.current, follower.changed
    try:
        line = StatusLine(torrent, quiet=args.quiet)
        try:
            if not await _unless_set(changed, functools.partial(follow, torrent, line)):
                return False
        finally:
            line.finish()
        await follower.settle()  # a swap under way ends first: then its successor is shown
        if changed.is_set():
            return False
        if not seeding:
            return True
        if not args.quiet:
            print(
                f"bip: {safe_text(torrent.status().name)}: seeding until {seeding_until(args)}",
                file=sys.stderr,
            )
        job = functools.partial(seed_on, torrent, args, size=torrent.status().total)
        return await _unless_set(changed, job)
    except CLIError:
        # Its error, not its phase: a swap that removed it meanwhile made it REMOVED, and
        # the error stays (recover then finds another version in its place).
        if torrent.status().error is not None and await follower.recover(torrent):
            return False  # an update failed: the version before it runs again
        raise


async def _unless_set(event: trio.Event, job: Callable[[], Awaitable[object]]) -> bool:
    """Run ``job`` until it returns (True) or ``event`` is set (False: ``job`` cancelled).

    Raises:
        CLIError: as ``job`` (itself, not in an exception group).
    """
    finished = False
    failure: CLIError | None = None
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            nonlocal finished, failure
            try:
                await job()
            except CLIError as error:
                failure = error
            else:
                finished = True
            nursery.cancel_scope.cancel()

        async def watch() -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        nursery.start_soon(watch)
    if failure is not None:
        raise failure
    return finished


def _can_find_peers(source: TorrentSource, options: TorrentOptions, config: ClientConfig) -> bool:
    """Whether the download has any way to find a peer (or a web seed) by itself."""
    if options.peers or (isinstance(source, MagnetLink) and source.peers):
        return True
    # A web seed serves the files, not a magnet link's metadata: only a .torrent's count.
    if options.web_seeds and isinstance(source, Metainfo) and source.url_list:
        return True
    if not config.trackers:
        return False
    tiers = source.trackers if isinstance(source, Metainfo) else [source.trackers]
    urls = [url for tier in tiers for url in tier] + list(options.extra_trackers)
    return any(url.lower().startswith(_TRACKER_SCHEMES) for url in urls)


def _dht_has_nodes(args: argparse.Namespace) -> bool:
    """Whether the DHT has somewhere to start from: bootstrap nodes, or saved ones."""
    if args.no_dht:
        return False
    return bool(args.dht_bootstrap) or (Path(args.dir) / RESUME_DIRECTORY / DHT_STATE).exists()


async def until_terminated(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main``; SIGTERM and SIGHUP stop it the way Ctrl-C does, cleanly (the session
    closes: resume data saved, trackers told), with the exit status 128 + the signal.

    Raises:
        CLIError: a signal came.
    """
    status: list[int] = []
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    raise CLIError(f"stopped by {name}", exit_code=128 + signum)

        async def body() -> None:
            status.append(await main())
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        nursery.start_soon(body)
    return status[0]


def check_trackers(urls: Sequence[str]) -> None:
    """Refuse a ``--tracker`` the session cannot announce to: it would skip it with a log
    line only, once started. Judged by the parser of the client that would announce to it,
    so what passes here is what the session takes.

    Raises:
        CLIError: one neither ``udp://``, ``http://`` nor ``https://``, or one its client's
            parser refuses (a UDP URL without a port, no host, a malformed port or host).
    """
    for url in urls:
        check_tracker_url(url)


def run(args: argparse.Namespace) -> int:
    """``bip download``: 0 once every selected file is complete and verified.

    Raises:
        CLIError: ``--dir`` is a file, or an option is malformed; refused before anything
            starts (as ``bip seed`` and ``bip verify`` refuse a file for their directory).
    """
    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise CLIError(f"{args.dir}: not a directory")
    check_trackers(args.tracker)
    config = config_from_args(args)
    return trio.run(until_terminated, functools.partial(_download, args, config))
