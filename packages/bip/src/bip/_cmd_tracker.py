"""``bip tracker serve|announce|scrape``: the UDP tracker (BEP 15) as a server, and a client of
UDP and HTTP(S) trackers.

``serve`` runs bip_utracker's server on one or more addresses (one shared swarm store, so
IPv4 and IPv6 peers of a torrent meet) until Ctrl-C or SIGTERM, printing statistics every
so often. ``announce`` and ``scrape`` ask any BEP 15 tracker (``udp://``), or any BEP 3
tracker (``http://``, ``https://``; BEP 48 scrape) through the client's
:class:`~bip._client._http_tracker.HttpTrackerClient`, with an overall timeout instead of
BEP 15's hour of retransmissions: a person is waiting. Both print the same way. Peers an HTTP
tracker names by DNS name are looked up within the same timeout and listed with their names.
Messages name a tracker by its shown URL (no query, no secret-looking path segment).
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import trio

from bip_handshake import PeerAddress, PeerId, local_addresses_by_family
from bip_metainfo import InfoHash, Metainfo
from bip_utracker import (
    DEFAULT_MAX_PEERS_PER_HOST,
    MAX_SCRAPE_HASHES,
    AnnounceEvent,
    AnnounceResult,
    ScrapeStats,
    ServerConfig,
    SwarmStore,
    TrackerServer,
    open_tracker_client,
    serve_tracker,
)

from ._arguments import add_command_group, add_serve_loop_options, add_timeout, positive
from ._client._http_tracker import HttpAnnounceResult, HttpTrackerClient, resolve_peer_names
from ._client._http_tracker_codec import PeerName, scrape_url, shown_url
from ._describe import json_text
from ._errors import CLIError
from ._inputs import (
    WHOLE_NUMBER,
    info_hash_of,
    load_source,
    parse_endpoint,
    parse_info_hash,
    parse_port,
    tracker_kind,
)
from ._serve_loop import print_statistics_until_stopped

__all__ = ["add_parser"]

T = TypeVar("T")

DEFAULT_BIND = "127.0.0.1:6969"
"""Loopback by default: serving the world is a choice to make explicitly."""

DEFAULT_TIMEOUT = 15.0
"""Seconds ``announce`` and ``scrape`` wait for an answer, retransmissions included."""

RETRANSMIT_AFTER = 2.0
"""First retransmission delay for one-shot requests (then 4 s, 8 s...): a lost datagram
costs two seconds, not BEP 15's fifteen."""

HTTP_SCRAPE_BATCH = 50
"""Info-hashes per HTTP scrape: BEP 48 sets no limit, but trackers do (chihaya's default is
50, opentracker answers 64 at most) and the URL grows by 70 characters per hash."""

DEFAULT_STATS_INTERVAL = 60.0
"""Seconds between two statistics lines of ``serve``."""

_EVENTS = {
    "none": AnnounceEvent.NONE,
    "started": AnnounceEvent.STARTED,
    "completed": AnnounceEvent.COMPLETED,
    "stopped": AnnounceEvent.STOPPED,
}

_PAUSED = "paused"
"""BEP 21's event of a partial seed: HTTP(S) only, a regular announce (``none``) that says
``event=paused``. BEP 15 defines no value for it, and bip_utracker never sends libtorrent's 4
(a tracker that checks the field refuses it), so a UDP tracker is not asked it."""


_URL_HELP = (
    "the tracker: udp://HOST:PORT[/path], or http(s)://HOST[:PORT]/PATH (its announce URL;"
    " scrape asks the BEP 48 scrape URL made from it)"
)


_MAX_BYTES = 2**63 - 1  # BEP 15 sends the byte counts as signed 64-bit fields
_MAX_NUM_WANT = 2**31 - 1  # BEP 15's num_want is a signed 32-bit field; HTTP's takes the same


def _whole_number(text: str) -> int:
    if WHOLE_NUMBER.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def _byte_count(text: str) -> int:
    """argparse type for ``--left``, ``--uploaded`` and ``--downloaded``: 0 to 2**63 - 1."""
    value = _whole_number(text)
    if not 0 <= value <= _MAX_BYTES:
        raise argparse.ArgumentTypeError(f"must be 0..{_MAX_BYTES}, not {text!r}")
    return value


def _num_want(text: str) -> int:
    """argparse type for ``--numwant``: -1 (the tracker decides) or 0 to 2**31 - 1."""
    value = _whole_number(text)
    if not -1 <= value <= _MAX_NUM_WANT:
        raise argparse.ArgumentTypeError(
            f"must be -1 (the tracker's choice) or 0..{_MAX_NUM_WANT}, not {text!r}"
        )
    return value


def _port(text: str) -> int:
    """argparse type for ``--port``: a port number as ``parse_port`` reads one."""
    try:
        return parse_port(text)
    except CLIError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bip tracker`` and its sub-commands to the command line."""
    actions = add_command_group(
        subparsers,
        "tracker",
        help="run a UDP tracker, or ask a UDP or HTTP(S) one",
        description="Run a UDP tracker (BEP 15), or announce to and scrape a UDP (BEP 15) or"
        " HTTP(S) (BEP 3, BEP 48) tracker.",
    )

    serve = actions.add_parser(
        "serve",
        help="run a UDP tracker until Ctrl-C",
        description="Run a UDP tracker until Ctrl-C (or SIGTERM), printing statistics.",
    )
    serve.add_argument(
        "--bind",
        metavar="HOST:PORT",
        action="append",
        help=f"address to serve on; repeat for more (default {DEFAULT_BIND}; port 0: any)",
    )
    serve.add_argument(
        "--interval",
        type=positive(int),
        default=1800,
        metavar="SECONDS",
        help="announce interval told to clients (default 1800)",
    )
    serve.add_argument(
        "--allow",
        metavar="HASH",
        action="append",
        help="serve only these info-hashes (repeatable; default: every torrent)",
    )
    serve.add_argument(
        "--deny", metavar="HASH", action="append", default=[], help="never serve this info-hash"
    )
    limits = serve.add_mutually_exclusive_group()
    limits.add_argument(
        "--rate-limit",
        type=positive(float),
        metavar="N",
        help="requests per second per address (default 100)",
    )
    limits.add_argument(
        "--no-rate-limit", action="store_true", help="serve every request (benchmarks, tests)"
    )
    serve.add_argument("--max-swarms", type=positive(int), metavar="N", help="swarms kept at most")
    serve.add_argument(
        "--max-peers", type=positive(int), metavar="N", help="peers kept at most over all swarms"
    )
    serve.add_argument(
        "--max-peers-per-swarm", type=positive(int), metavar="N", help="peers per swarm at most"
    )
    serve.add_argument(
        "--max-peers-per-host",
        type=positive(int),
        metavar="N",
        help="ports one IP address keeps at most in a swarm; further ones are answered, not"
        f" recorded (default {DEFAULT_MAX_PEERS_PER_HOST})",
    )
    add_serve_loop_options(serve, stats_interval=DEFAULT_STATS_INTERVAL)
    serve.set_defaults(func=_run_serve)

    announce = actions.add_parser(
        "announce",
        help="announce to a tracker and list the peers it gives",
        description="Announce to a UDP or HTTP(S) tracker and print its answer and peers.",
    )
    announce.add_argument("url", metavar="URL", help=_URL_HELP)
    announce.add_argument(
        "target", metavar="HASH", help="an info-hash, a .torrent file or a magnet link"
    )
    announce.add_argument(
        "--port", type=_port, default=6881, help="the TCP port we say we listen on (default 6881)"
    )
    announce.add_argument(
        "--event",
        choices=(*_EVENTS, _PAUSED),
        default="started",
        help="the announce event (default started; paused, BEP 21's partial seed, is for"
        " HTTP(S) trackers)",
    )
    announce.add_argument(
        "--left",
        type=_byte_count,
        metavar="BYTES",
        help="bytes left to download (default: the torrent's size if given, else 0: a seeder)",
    )
    announce.add_argument("--uploaded", type=_byte_count, default=0, metavar="BYTES")
    announce.add_argument("--downloaded", type=_byte_count, default=0, metavar="BYTES")
    announce.add_argument(
        "--numwant",
        type=_num_want,
        default=-1,
        metavar="N",
        help="peers wanted (default -1: the tracker's choice)",
    )
    announce.add_argument(
        "--peer-id", metavar="HEX", help="our peer id as 40 hex digits (default: a new one)"
    )
    announce.add_argument(
        "--v2",
        action="store_true",
        help="announce a hybrid torrent's v2 swarm (truncated v2 hash) instead of its v1 one",
    )
    _client_options(announce)
    announce.set_defaults(func=_run_announce)

    scrape = actions.add_parser(
        "scrape",
        help="ask a tracker for swarm sizes",
        description="Ask a UDP or HTTP(S) tracker for the seeders, completed downloads and"
        " leechers (and, from an HTTP tracker that counts them, the downloaders among the"
        " leechers: BEP 21; the others are partial seeds).",
    )
    scrape.add_argument("url", metavar="URL", help=_URL_HELP)
    scrape.add_argument(
        "targets",
        metavar="HASH",
        nargs="+",
        help="info-hashes, .torrent files or magnet links",
    )
    _client_options(scrape)
    scrape.set_defaults(func=_run_scrape)


def _client_options(parser: argparse.ArgumentParser) -> None:
    add_timeout(parser, default=DEFAULT_TIMEOUT)
    parser.add_argument(
        "--bind",
        type=_local_address,
        metavar="ADDRESS",
        help="local IP address to send (or, for HTTP, connect) from (default: any, IPv4 and IPv6)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


# -- serve --------------------------------------------------------------------------------


def _hash_set(values: Sequence[str] | None) -> frozenset[bytes] | None:
    if values is None:
        return None
    return frozenset(parse_info_hash(text).swarm_ids()[0] for text in values)


def _server_config(args: argparse.Namespace) -> ServerConfig:
    options: dict[str, Any] = {
        "interval": args.interval,
        "allowed_info_hashes": _hash_set(args.allow),
        "denied_info_hashes": _hash_set(args.deny) or frozenset(),
    }
    if args.no_rate_limit:
        options["rate_limit"] = None
    elif args.rate_limit is not None:
        options["rate_limit"] = args.rate_limit
    return ServerConfig(**options)


def _store(args: argparse.Namespace) -> SwarmStore:
    limits: dict[str, Any] = {
        # A peer is forgotten half an interval after it should have announced again.
        "peer_lifetime": args.interval * 1.5,
    }
    # The store is ours, not the server's default one: it takes the per-host bound itself.
    for name in ("max_swarms", "max_peers", "max_peers_per_swarm", "max_peers_per_host"):
        value = getattr(args, name)
        if value is not None:
            limits[name] = value
    if "max_peers" in limits or "max_peers_per_swarm" in limits:
        per_swarm = limits.get("max_peers_per_swarm")
        total = limits.get("max_peers")
        if per_swarm is not None and total is not None and total < per_swarm:
            raise CLIError("--max-peers must be at least --max-peers-per-swarm")
    try:
        return SwarmStore(**limits)
    except ValueError as error:
        raise CLIError(str(error)) from error


def _stats_line(servers: Sequence[TrackerServer], store: SwarmStore) -> str:
    totals = dict.fromkeys(
        ("connects", "announces", "scrapes", "malformed", "rate_limited", "refused"), 0
    )
    for server in servers:
        stats = server.statistics()
        for name in totals:
            totals[name] += getattr(stats, name)
    swarm = store.statistics()
    return (
        f"swarms {swarm.swarms}, peers {swarm.peers} ({swarm.seeders} seeders,"
        f" {swarm.leechers} leechers); announces {totals['announces']},"
        f" scrapes {totals['scrapes']}, connects {totals['connects']};"
        f" refused {totals['refused']}, malformed {totals['malformed']},"
        f" rate-limited {totals['rate_limited']}; over the per-host bound {swarm.unrecorded_peers}"
    )


def _url(host: str, port: int) -> str:
    return f"udp://[{host}]:{port}/announce" if ":" in host else f"udp://{host}:{port}/announce"


async def _serve(args: argparse.Namespace) -> None:
    config = _server_config(args)
    store = _store(args)
    binds = [parse_endpoint(text, default_port=6969) for text in args.bind or [DEFAULT_BIND]]
    servers: list[TrackerServer] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncExitStack() as stack:
            for host, port in binds:
                servers.append(
                    await stack.enter_async_context(
                        serve_tracker((host, port), config=config, handler=store)
                    )
                )
            for server in servers:
                print(f"serving {_url(*server.address)}", flush=True)
            await print_statistics_until_stopped(
                signals,
                duration=args.duration,
                interval=args.stats_interval,
                statistics=lambda: _stats_line(servers, store),
            )


def _run_serve(args: argparse.Namespace) -> int:
    trio.run(_serve, args)
    return 0


# -- announce and scrape ------------------------------------------------------------------


def _swarm_target(text: str, *, v2: bool = False) -> tuple[InfoHash, Metainfo | None]:
    """What to announce or scrape: an info-hash, or a torrent file's or magnet link's."""
    source = load_source(text)
    torrent = source if isinstance(source, Metainfo) else None
    info_hash = info_hash_of(source)
    if v2:
        if info_hash.v2 is None:
            raise CLIError(f"{text}: --v2 needs a torrent with a v2 info-hash")
        info_hash = InfoHash(v2=info_hash.v2)
    return info_hash, torrent


def _local_address(text: str) -> str:
    """``--bind`` of ``announce`` and ``scrape``: one IP address as a socket binds it, as
    both clients read it (:func:`~bip_handshake.local_addresses_by_family`), checked once
    here for either kind of tracker; returned as given.

    >>> _local_address("::ffff:127.0.0.1")
    '::ffff:127.0.0.1'
    >>> _local_address("localhost")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an IP address (no port, brackets or name), not 'localhost'

    Raises:
        argparse.ArgumentTypeError: anything else (a host name, a port, brackets, nothing).
    """
    try:
        local_addresses_by_family(text)
    except ValueError:
        # its own words name its parameter (local_address), not the option
        raise argparse.ArgumentTypeError(
            f"must be an IP address (no port, brackets or name), not {text!r:.80}"
        ) from None
    return text


def _http_client(args: argparse.Namespace) -> HttpTrackerClient:
    # A second more than ours: the timeout message is _with_timeout's, as for UDP.
    return HttpTrackerClient(timeout=args.timeout + 1, local_address=args.bind)


def _client_binds(bind: str | None) -> tuple[str | None, str | None]:
    """``(bind_v4, bind_v6)`` for the UDP client: both families by default, else ``--bind``'s
    alone (checked by :func:`_local_address`), read as the HTTP client reads it
    (:func:`~bip_handshake.local_addresses_by_family`: an IPv4-mapped address is the IPv4
    one it embeds, bound on the IPv4 socket).

    >>> _client_binds("::ffff:127.0.0.1"), _client_binds("::")
    (('127.0.0.1', None), (None, '::'))
    """
    if bind is None:
        return "0.0.0.0", "::"
    found = local_addresses_by_family(bind) or {}
    any_address = {4: "0.0.0.0", 6: "::"}
    binds = {version: any_address[version] if a is None else str(a) for version, a in found.items()}
    return binds.get(4), binds.get(6)


async def _with_timeout(url: str, seconds: float, job: Callable[[], Awaitable[T]]) -> T:
    """``await job()``, or a :class:`CLIError` naming the tracker after ``seconds``."""
    with trio.move_on_after(seconds):
        return await job()
    raise CLIError(f"no answer from {url} within {seconds:g} s (is the tracker up?)")


_Named = dict[PeerName, tuple[PeerAddress, ...]]


def _announce_json(url: str, result: AnnounceResult, named: _Named) -> dict[str, Any]:
    """The ``--json`` answer; ``named_peers`` only when the tracker named peers by DNS name
    (their resolved addresses are in ``peers`` too)."""
    names = result.peer_names if isinstance(result, HttpAnnounceResult) else ()
    peers = [str(peer) for peer in result.peers]
    peers += (str(address) for name in names for address in named.get(name, ()))
    payload: dict[str, Any] = {
        "tracker": url,
        "info_hash": result.info_hash.hex(),
        "interval": result.interval,
        "seeders": result.seeders,
        "leechers": result.leechers,
        "peers": list(dict.fromkeys(peers)),
    }
    if names:
        payload["named_peers"] = [
            {"name": str(name), "addresses": [str(peer) for peer in named.get(name, ())]}
            for name in names
        ]
    return payload


async def _resolve_until(result: AnnounceResult, deadline: float) -> _Named:
    """The addresses of the peers ``result`` names by DNS name, as many as resolve by
    ``deadline`` (trio's clock)."""
    named: _Named = {}
    if not isinstance(result, HttpAnnounceResult) or not result.peer_names:
        return named

    def found(name: PeerName, addresses: tuple[PeerAddress, ...]) -> None:
        named[name] = addresses

    with trio.move_on_at(deadline):
        await resolve_peer_names(result.peer_names, found)
    return named


def _run_announce(args: argparse.Namespace) -> int:
    kind = tracker_kind(args.url)
    info_hash, torrent = _swarm_target(args.target, v2=args.v2)
    if args.peer_id is not None:
        try:
            peer_id = PeerId.from_hex(args.peer_id)
        except ValueError as error:
            raise CLIError(f"bad --peer-id: {error}") from error
    else:
        peer_id = PeerId.generate()
    left = args.left
    if left is None:
        left = torrent.info.total_size if torrent is not None else 0
    paused = args.event == _PAUSED
    if paused and kind != "http":
        # Sending none instead would announce something the user did not ask for.
        raise CLIError(
            "--event paused is for HTTP(S) trackers: BEP 15 has no paused event"
            " (use --event none for a UDP tracker)"
        )
    # paused is a regular announce saying so (HttpTrackerClient.announce's paused keyword).
    event = AnnounceEvent.NONE if paused else _EVENTS[args.event]
    pause: dict[str, Any] = {"paused": True} if paused else {}  # HTTP only: UDP refused it

    async def main() -> tuple[AnnounceResult, _Named]:
        deadline = trio.current_time() + args.timeout
        async with AsyncExitStack() as stack:
            send: Callable[..., Awaitable[AnnounceResult]]
            if kind == "http":
                send = (await stack.enter_async_context(_http_client(args))).announce
            else:
                v4, v6 = _client_binds(args.bind)
                udp = await stack.enter_async_context(
                    open_tracker_client(timeout=RETRANSMIT_AFTER, bind_v4=v4, bind_v6=v6)
                )
                send = udp.announce

            async def job() -> AnnounceResult:
                return await send(
                    args.url,
                    info_hash,
                    peer_id=peer_id,
                    port=args.port,
                    uploaded=args.uploaded,
                    downloaded=args.downloaded,
                    left=left,
                    event=event,
                    num_want=args.numwant,
                    **pause,
                )

            result = await _with_timeout(shown_url(args.url), args.timeout, job)
            # The names the tracker gave are looked up in what is left of the timeout; the
            # numeric peers are shown whatever comes of them.
            return result, await _resolve_until(result, deadline)

    result, named = trio.run(main)
    if args.json:
        print(json_text(_announce_json(args.url, result, named)))
        return 0
    names = result.peer_names if isinstance(result, HttpAnnounceResult) else ()
    lines = [
        f"tracker:   {shown_url(args.url)}",  # a passkey stays off the screen and out of logs
        f"swarm:     {result.info_hash.hex()}",
        f"interval:  {result.interval} s",
        f"seeders:   {result.seeders}",
        f"leechers:  {result.leechers}",
        f"peers ({len(result.peers) + sum(map(len, named.values()))}):",
    ]
    lines.extend(f"  {peer}" for peer in result.peers)
    lines.extend(f"  {peer} ({name.host})" for name in names for peer in named.get(name, ()))
    unresolved = [str(name) for name in names if name not in named]
    if unresolved:
        lines.append(f"not resolved ({len(unresolved)}): {', '.join(unresolved)}")
    print("\n".join(lines))
    return 0


def _run_scrape(args: argparse.Namespace) -> int:
    kind = tracker_kind(args.url)
    targets = [_swarm_target(text)[0] for text in args.targets]
    swarm_ids = list(dict.fromkeys(target.swarm_ids()[0] for target in targets))
    shown = shown_url(args.url)
    if kind == "http" and scrape_url(args.url) is None:
        raise CLIError(
            f"{shown} has no scrape URL: the last part of its path does not start with"
            " 'announce' (BEP 48)"
        )

    async def main() -> list[tuple[bytes, ScrapeStats]]:
        rows: list[tuple[bytes, ScrapeStats]] = []
        async with AsyncExitStack() as stack:
            ask: Callable[[list[bytes]], Awaitable[Sequence[ScrapeStats]]]
            if kind == "http":
                http = await stack.enter_async_context(_http_client(args))
                batch_size = HTTP_SCRAPE_BATCH

                async def ask(batch: list[bytes]) -> Sequence[ScrapeStats]:
                    return await http.scrape(args.url, batch)

            else:
                v4, v6 = _client_binds(args.bind)
                udp = await stack.enter_async_context(
                    open_tracker_client(timeout=RETRANSMIT_AFTER, bind_v4=v4, bind_v6=v6)
                )
                batch_size = MAX_SCRAPE_HASHES  # BEP 15 fits 74 hashes in a scrape

                async def ask(batch: list[bytes]) -> Sequence[ScrapeStats]:
                    return (await udp.scrape(args.url, batch)).files

            for start in range(0, len(swarm_ids), batch_size):
                batch = swarm_ids[start : start + batch_size]

                async def job(batch: list[bytes] = batch) -> Sequence[ScrapeStats]:
                    return await ask(batch)

                files = await _with_timeout(shown, args.timeout, job)
                rows.extend(zip(batch, files, strict=True))
        return rows

    rows = trio.run(main)
    if args.json:
        payload = {
            "tracker": args.url,
            "swarms": [
                {
                    "info_hash": swarm.hex(),
                    "seeders": stats.seeders,
                    "completed": stats.completed,
                    "leechers": stats.leechers,
                    # BEP 21, from the HTTP trackers that count it only: null otherwise, the
                    # key always there, so the shape does not depend on the tracker.
                    "downloaders": stats.downloaders,
                }
                for swarm, stats in rows
            ],
        }
        print(json_text(payload))
        return 0
    # BEP 21's column only when the tracker counts downloaders (the rest of the leechers are
    # partial seeds); "-" for a swarm it left out.
    extra = any(stats.downloaders is not None for _, stats in rows)
    head = f"{'info-hash':<40}  {'seeders':>8}  {'completed':>9}  {'leechers':>8}"
    lines = [head + (f"  {'downloaders':>11}" if extra else "")]
    for swarm, stats in rows:
        line = f"{swarm.hex():<40}  {stats.seeders:>8}  {stats.completed:>9}  {stats.leechers:>8}"
        if extra:
            line += f"  {'-' if stats.downloaders is None else stats.downloaders:>11}"
        lines.append(line)
    print("\n".join(lines))
    return 0
