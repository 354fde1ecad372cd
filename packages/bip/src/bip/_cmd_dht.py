"""``bip dht``: run a Mainline DHT node, or ask the DHT once.

- ``bip dht serve``: a node (BEP 5, with BEP 32/33/42/43/44/51 as bip_dht has them) until
  Ctrl-C or SIGTERM, printing statistics now and then; ``--state FILE`` keeps its id and the
  nodes it knows across restarts (read at start, written on exit); ``--read-only`` (BEP 43)
  makes it a client that answers nobody.
- ``bip dht get-peers HASH`` and ``bip dht announce HASH``: BEP 5 lookups.
- ``bip dht get`` and ``bip dht put``: BEP 44 items, immutable (addressed by their hash) or
  mutable (signed with an ed25519 key kept in a file, like libtorrent's ``dht_put`` tool).
- ``bip dht publish`` and ``bip dht resolve``: BEP 46, a torrent's current version as a
  mutable item, named by a ``magnet:?xs=urn:btpk:`` link that ``bip download`` takes too.

Each one-shot command runs a read-only node (BEP 43: others do not keep a node that will be
gone in a moment in their tables) for the time of the question, joins through
``--bootstrap`` (or the nodes saved in ``--state``: no public router is ever a default) and
gives up after ``--timeout`` seconds. ``--proxy URL`` sends every datagram of the node
through a SOCKS5 proxy's UDP relay, as ``bip download --proxy`` does. All of it is bip_dht's
public API (:func:`open_dht`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_bencode import BencodeError, Value, decode
from bip_dht import (
    DHT,
    MAX_SALT_SIZE,
    DHTConfig,
    DHTStatistics,
    ImmutableItem,
    ItemError,
    MutableItem,
    MutableTorrent,
    PutFinished,
    RoutingStateError,
    open_dht,
)
from bip_metainfo import Metainfo, MutableTorrentLink

from ._arguments import add_command_group, add_serve_loop_options, add_timeout, proxy_settings
from ._client._resume import _read_regular, _remove_stale_temporaries, _write_atomically
from ._describe import safe_text
from ._errors import CLIError
from ._inputs import info_hash_of, load_mutable_link, load_source, parse_endpoint
from ._serve_loop import print_statistics_until_stopped

__all__ = [
    "DEFAULT_CLIENT_BIND",
    "DEFAULT_SERVE_BIND",
    "DEFAULT_STATS_INTERVAL",
    "DEFAULT_TIMEOUT",
    "KEY_FILE_MODE",
    "add_parser",
    "load_or_create_key",
    "lookup_mutable_torrent",
    "statistics_line",
]

DEFAULT_SERVE_BIND: Final = "127.0.0.1:6881"
"""Where ``bip dht serve`` listens by default: loopback, so nothing is exposed by accident."""
DEFAULT_CLIENT_BIND: Final = "0.0.0.0"
"""Where the one-shot commands' node binds by default (any free port)."""
DEFAULT_TIMEOUT: Final = 30.0
"""Seconds a one-shot command may take, bootstrap included."""
DEFAULT_STATS_INTERVAL: Final = 60.0
KEY_FILE_MODE: Final = 0o600
"""A created key file is readable by its owner only: it signs in the owner's name."""
_KEY_SIZE: Final = 32  # an ed25519 private key's seed
# A saved state is a few KiB; bip_dht's loader takes at most ~1.6 MB (two full routing tables,
# 1.56 MB, and 4096 bootstrap addresses, 98 KB): refuse anything larger (bip download's state
# too), so a state the loader reads is never cut short, and one planted there of any size is
# read no further than one byte past this.
_MAX_STATE_SIZE: Final = 2 << 20

T = TypeVar("T")


def _node_options(parser: argparse.ArgumentParser, *, bind: str, serve: bool = False) -> None:
    parser.add_argument(
        "--bind",
        metavar="HOST[:PORT]",
        default=bind,
        help=f"address of our node's UDP socket (default {bind}; port 0 or none: any)",
    )
    parser.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a DHT node to join through (repeat for more)"
        + ("" if serve else "; required unless --state has nodes"),
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="read our node id and known nodes from FILE"
        + (" and save them there on exit" if serve else " (and save them back)"),
    )
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="send every datagram through this SOCKS5 proxy's UDP relay (UDP ASSOCIATE),"
        " never directly: socks5://[USER:PASSWORD@]HOST[:PORT] (socks5h://: the proxy"
        " resolves the --bootstrap names); a proxy that refuses UDP leaves the node without"
        " answers; default: the BIP_PROXY environment variable",
    )
    if not serve:
        add_timeout(parser, default=DEFAULT_TIMEOUT)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bip dht`` and its sub-commands to the command line."""
    actions = add_command_group(
        subparsers,
        "dht",
        help="run a DHT node or ask the DHT",
        description="Run a Mainline DHT node (BEP 5), or look up, announce, store and fetch.",
    )

    serve = actions.add_parser(
        "serve",
        help="run a DHT node until Ctrl-C",
        description="Run a DHT node until Ctrl-C (or SIGTERM), printing statistics.",
    )
    _node_options(serve, bind=DEFAULT_SERVE_BIND, serve=True)
    serve.add_argument(
        "--read-only", action="store_true", help="BEP 43: query others, answer nobody"
    )
    add_serve_loop_options(serve, stats_interval=DEFAULT_STATS_INTERVAL)
    serve.set_defaults(func=_run_serve)

    get_peers = actions.add_parser(
        "get-peers",
        help="find the peers of a torrent",
        description="Find the peers of a torrent in the DHT (printed as they are found).",
    )
    get_peers.add_argument("target", metavar="HASH", help="an info-hash, .torrent or magnet link")
    _node_options(get_peers, bind=DEFAULT_CLIENT_BIND)
    get_peers.set_defaults(func=_run_get_peers)

    announce = actions.add_parser(
        "announce",
        help="announce that we have a torrent",
        description="Tell the nodes closest to a torrent's hash that a peer has it.",
    )
    announce.add_argument("target", metavar="HASH", help="an info-hash, .torrent or magnet link")
    announce.add_argument(
        "--port",
        type=int,
        metavar="P",
        help="the TCP port peers should dial (default: our node's UDP port, BEP 5's implied_port)",
    )
    _node_options(announce, bind=DEFAULT_CLIENT_BIND)
    announce.set_defaults(func=_run_announce)

    get = actions.add_parser(
        "get",
        help="fetch a BEP 44 item",
        description="Fetch a BEP 44 item: immutable by its TARGET hash, mutable by --key.",
    )
    what = get.add_mutually_exclusive_group(required=True)
    what.add_argument("target", metavar="TARGET", nargs="?", help="an immutable item's 40-hex hash")
    what.add_argument("--key", metavar="PUBKEY", help="a mutable item's 64-hex public key")
    get.add_argument("--salt", default="", metavar="S", help="the mutable item's salt")
    _node_options(get, bind=DEFAULT_CLIENT_BIND)
    get.set_defaults(func=_run_get)

    put = actions.add_parser(
        "put",
        help="store a BEP 44 item",
        description=(
            "Store VALUE (a string) in the DHT: immutable (addressed by its hash) without a"
            " key, mutable (addressed by the public key and salt) with --key-file."
        ),
    )
    put.add_argument("value", metavar="VALUE", help="the text to store (at most ~1000 bytes)")
    _key_file_option(put, required=False)
    put.add_argument("--salt", default="", metavar="S", help="a mutable item's salt")
    _node_options(put, bind=DEFAULT_CLIENT_BIND)
    put.set_defaults(func=_run_put)

    publish = actions.add_parser(
        "publish",
        help="publish a torrent's current version (BEP 46)",
        description=(
            "Publish TORRENT as the current version of the torrent named by --key-file and"
            " --salt (BEP 46: a signed BEP 44 item; a later publish replaces it), and print"
            " the magnet link (xs=urn:btpk:) that always names the newest version."
        ),
    )
    publish.add_argument("target", metavar="TORRENT", help="an info-hash, .torrent or magnet link")
    _key_file_option(publish, required=True)
    publish.add_argument(
        "--salt", default="", metavar="S", help="one key, several torrents: a name for this one"
    )
    _node_options(publish, bind=DEFAULT_CLIENT_BIND)
    publish.set_defaults(func=_run_publish)

    resolve = actions.add_parser(
        "resolve",
        help="the torrent a BEP 46 link names now",
        description=(
            "Print the magnet link of the version of the torrent a BEP 46 link"
            " (magnet:?xs=urn:btpk:...) names now, as its publisher last signed it."
        ),
    )
    resolve.add_argument("link", metavar="LINK", help="a magnet:?xs=urn:btpk:... link")
    _node_options(resolve, bind=DEFAULT_CLIENT_BIND)
    resolve.set_defaults(func=_run_resolve)


# -- the node's state ---------------------------------------------------------------------------


def _read_state(path: str | None) -> bytes | None:
    """The saved state in ``path`` (None: no file given, or none there yet)."""
    if path is None:
        return None
    try:
        # Never from a FIFO or a device: reading one would wait for a writer for ever.
        data = _read_regular(Path(path), _MAX_STATE_SIZE)
    except FileNotFoundError:
        return None
    except OSError as error:  # a FIFO, a directory, no permission
        raise CLIError(f"{path}: cannot read a DHT state from it: {error.strerror}") from error
    if len(data) > _MAX_STATE_SIZE:
        raise CLIError(f"{path}: too large for a DHT state")
    return data


def _write_state(path: str | Path, data: bytes, *, owned: bool = False) -> None:
    """Replace ``path`` with ``data`` durably, as the session's resume files are written (a
    crash or a power cut leaves the old state or the new one, never half of one), first
    deleting the temporary copies earlier crashes left beside it: only names bip makes,
    and the fixed one of older versions only if bip ``owned`` the folder (a save
    directory's ``.bip``; never ``--state FILE``'s, whatever its name)."""
    state = Path(path)
    _remove_stale_temporaries(state.parent, [state.name], owned=owned)
    _write_atomically(state, data)


def _bind(text: str) -> tuple[str, int]:
    return parse_endpoint(text, default_port=0)


@contextlib.asynccontextmanager
async def _node(args: argparse.Namespace, *, read_only: bool = False) -> AsyncIterator[DHT]:
    """A node on ``--bind`` joined through ``--bootstrap`` or ``--state``; saves the state
    back on exit when ``--state`` is given.

    Raises:
        CLIError: a malformed address or state, or nothing to start from.
    """
    bootstrap = [parse_endpoint(text, lowest_port=1) for text in args.bootstrap]
    proxy = proxy_settings(args)
    state = await trio.to_thread.run_sync(_read_state, args.state)
    try:
        config = DHTConfig(read_only=read_only)
        async with open_dht(
            _bind(args.bind), bootstrap, state=state, config=config, proxy=proxy
        ) as dht:
            try:
                yield dht
            finally:
                if args.state is not None:
                    data = dht.save_state()
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(_write_state, args.state, data)
    except RoutingStateError as error:
        raise CLIError(f"{args.state}: not a DHT state: {error}") from error


def _has_start(dht: DHT, args: argparse.Namespace) -> bool:
    return bool(args.bootstrap or dht.node.bootstrap_addresses or dht.statistics().table_size)


@contextlib.asynccontextmanager
async def _joined(args: argparse.Namespace) -> AsyncIterator[DHT]:
    """Yield a node that knows at least one live node (else a CLIError).

    The node is read-only (BEP 43): it lives for one question, and nodes that put it in
    their routing tables would query a dead address for the next lookups' whole timeout.
    """
    async with _node(args, read_only=True) as dht:
        if not _has_start(dht, args):
            raise CLIError(
                "no DHT node to start from: give --bootstrap HOST:PORT"
                + (f" ({args.state} holds no nodes)" if args.state else " or --state FILE")
            )
        size = await dht.bootstrap()
        if size == 0:
            raise CLIError("no DHT node answered (check --bootstrap, or the network)")
        yield dht


async def _bounded(args: argparse.Namespace, job: Callable[[DHT], Awaitable[T]]) -> T:
    """Run ``job`` on a joined node within ``--timeout`` seconds."""
    with trio.move_on_after(args.timeout):
        async with _joined(args) as dht:
            return await job(dht)
    raise CLIError(f"no answer within {args.timeout:g} s (try a longer --timeout)")


def _run_once(args: argparse.Namespace, job: Callable[[DHT], Awaitable[int]]) -> int:
    return trio.run(functools.partial(_bounded, args, job))


# -- serve --------------------------------------------------------------------------------------


def statistics_line(stats: DHTStatistics) -> str:
    """One line of a node's statistics, for ``bip dht serve``."""
    received = sum(stats.queries_received.values())
    sent = sum(stats.queries_sent.values())
    good = sum(stats.good_nodes.values())
    return (
        f"nodes {stats.table_size} ({good} good); queries received {received},"
        f" sent {sent}, timeouts {stats.timeouts}; stored: {stats.peers} peers of"
        f" {stats.info_hashes} torrents, {stats.items} items; rate-limited {stats.rate_limited},"
        f" oversized replies dropped {stats.oversized_dropped}"
    )


async def _serve(args: argparse.Namespace) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with _node(args, read_only=args.read_only) as dht:
            where = ", ".join(str(address) for address in dht.addresses)
            mode = " (read-only)" if args.read_only else ""
            if dht.proxy is not None:
                mode += f" through the proxy {dht.proxy.url}"
            print(f"DHT node {dht.node_id.value.hex()} on {where}{mode}", flush=True)
            if not _has_start(dht, args):
                # A relay brings back only the answers to what we sent: through a proxy,
                # nobody can join through us.
                print(
                    "no bootstrap node: the proxy's relay brings only answers to what we send,"
                    " so nobody can join through us (give --bootstrap or --state)"
                    if dht.proxy is not None
                    else "no bootstrap node: waiting for others to join through us",
                    flush=True,
                )
            await print_statistics_until_stopped(
                signals,
                duration=args.duration,
                interval=args.stats_interval,
                statistics=lambda: statistics_line(dht.statistics()),
            )
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    return trio.run(_serve, args)


# -- lookups ------------------------------------------------------------------------------------


def _swarm_id(text: str) -> bytes:
    """The 20-byte DHT key of a torrent named by hash, file or magnet link (a v2-only hash is
    looked up truncated, BEP 52's rule)."""
    return info_hash_of(load_source(text)).swarm_ids()[0]


def _run_get_peers(args: argparse.Namespace) -> int:
    key = _swarm_id(args.target)

    async def job(dht: DHT) -> int:
        count = 0
        async with dht.get_peers(key) as search:
            async for peer in search:
                print(peer, flush=True)
                count += 1
        queries = search.result().queries
        print(f"{count} peer{'s' if count != 1 else ''} ({queries} queries)", file=sys.stderr)
        return 0

    return _run_once(args, job)


def _run_announce(args: argparse.Namespace) -> int:
    key = _swarm_id(args.target)
    if args.port is not None and not 1 <= args.port <= 0xFFFF:
        raise CLIError(f"--port is in 1..65535, not {args.port}")

    async def job(dht: DHT) -> int:
        result = await dht.announce(key, args.port)
        if result.announced_to == 0:
            raise CLIError("no node accepted the announce")
        if args.port is not None:
            where = f"port {args.port}"
        elif dht.proxy is not None:  # implied_port: the nodes saw the relay's, not ours
            where = "the port the proxy relays from"
        else:
            where = f"port {dht.addresses[0].port}"
        print(f"announced {key.hex()} on {where} to {result.announced_to} nodes")
        return 0

    return _run_once(args, job)


# -- BEP 44 -------------------------------------------------------------------------------------


def _hex(text: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise CLIError(f"{what} is {size * 2} hex digits, not {text!r}")
    return raw


def _salt(text: str) -> bytes:
    salt = text.encode()
    if len(salt) > MAX_SALT_SIZE:
        raise CLIError(f"a salt is at most {MAX_SALT_SIZE} bytes, not {len(salt)}")
    return salt


def _key_file_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--key-file",
        metavar="F",
        required=required,
        help="an ed25519 private key (32 raw bytes); created, mode 0600, if missing",
    )


def _key_of(path: str) -> Ed25519PrivateKey:
    """:func:`load_or_create_key`, saying on stderr when the file was created."""
    key, created = load_or_create_key(path)
    if created:
        print(f"created key file {Path(path)} (mode 0600)", file=sys.stderr)
    return key


def load_or_create_key(path: str) -> tuple[Ed25519PrivateKey, bool]:
    """The ed25519 key in ``path`` (its 32-byte seed, as libtorrent's tools keep it), or a
    new one written there with mode 0600; and whether it was created.

    Raises:
        CLIError: the file is not a 32-byte key.
        OSError: it cannot be read or created.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        with open(path, "rb") as file:
            seed = file.read(_KEY_SIZE + 1)
        if len(seed) != _KEY_SIZE:
            raise CLIError(f"{path}: not an ed25519 key file ({_KEY_SIZE} raw bytes)") from None
        return Ed25519PrivateKey.from_private_bytes(seed), False
    key = Ed25519PrivateKey.generate()
    with os.fdopen(fd, "wb") as file:
        file.write(key.private_bytes_raw())
    return key, True


def _show(value: Value) -> str:
    """A stored value for people: text as text (control characters escaped: anyone can store
    anything), anything else as JSON-like bencode."""
    if isinstance(value, bytes):
        try:
            return safe_text(value.decode())
        except UnicodeDecodeError:
            return value.hex()
    return json.dumps(_plain(value))


def _plain(value: Value) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _decoded(item: ImmutableItem | MutableItem) -> Value:
    try:
        return decode(item.value)
    except BencodeError as error:  # a verified item holds valid bencoding: never, but say so
        raise CLIError(f"the stored value is not bencoded: {error}") from error


def _run_get(args: argparse.Namespace) -> int:
    salt = _salt(args.salt)
    if args.key is not None:
        public = _hex(args.key, 32, "a public key")
    else:
        target = _hex(args.target, 20, "a target")
        if salt:
            raise CLIError("--salt goes with --key (immutable items have none)")

    async def job(dht: DHT) -> int:
        item: ImmutableItem | MutableItem | None
        if args.key is not None:
            item = await dht.get_mutable(public, salt)
            where = f"key {args.key}" + (f" salt {args.salt!r}" if salt else "")
        else:
            item = await dht.get(target)
            where = args.target
        if item is None:
            raise CLIError(f"nothing stored under {where}")
        print(_show(_decoded(item)))
        if isinstance(item, MutableItem):
            print(f"seq {item.seq}, target {item.target.hex()}", file=sys.stderr)
        return 0

    return _run_once(args, job)


def _stored(result: PutFinished) -> str:
    if result.stored_at == 0:
        codes = sorted({code for _, code in result.errors})
        why = f" (errors {', '.join(map(str, codes))})" if codes else ""
        raise CLIError(f"no node stored the item{why}")
    return f"stored at {result.stored_at} nodes"


def _run_put(args: argparse.Namespace) -> int:
    value = args.value.encode()
    salt = _salt(args.salt)
    if salt and args.key_file is None:
        raise CLIError("--salt goes with --key-file (immutable items have none)")
    key: Ed25519PrivateKey | None = None
    if args.key_file is not None:
        key = _key_of(args.key_file)

    async def job(dht: DHT) -> int:
        if key is None:
            result = await dht.put_immutable(value)
            print(f"target {result.target.hex()}: {_stored(result)}")
        else:
            result = await dht.put_mutable(key, value, salt=salt)
            public = key.public_key().public_bytes_raw().hex()
            print(f"target {result.target.hex()} (key {public}): {_stored(result)}")
        return 0

    return _run_once(args, job)


# -- BEP 46 -------------------------------------------------------------------------------------


def _run_publish(args: argparse.Namespace) -> int:
    source = load_source(args.target)
    salt = _salt(args.salt)
    key = _key_of(args.key_file)
    info_hash = info_hash_of(source)
    name = source.info.name if isinstance(source, Metainfo) else source.display_name
    link = MutableTorrentLink(key.public_key().public_bytes_raw(), salt=salt, display_name=name)

    async def job(dht: DHT) -> int:
        result = await dht.put_mutable_torrent(key, info_hash, salt=salt)
        print(link)
        print(f"{info_hash} published: {_stored(result)}", file=sys.stderr)
        return 0

    return _run_once(args, job)


async def lookup_mutable_torrent(dht: DHT, link: MutableTorrentLink) -> MutableTorrent:
    """The newest version of the torrent a BEP 46 link names, as the DHT has it now.

    Raises:
        CLIError: no node answered the lookup, no node that did returned an item for the
            link's key and salt, or the item names no torrent.
        DHTBusyError: the DHT node refused the lookup (every lookup slot taken): nothing
            was asked, so none of the above is known; worth trying again shortly.
    """
    key = link.public_key.hex()
    answers = _answers(dht)
    try:
        found = await dht.get_mutable_torrent(link.public_key, link.salt)
    except ItemError as error:
        raise CLIError(f"the DHT item under key {key}: {error}") from None
    if found is None:
        # The answers the node got meanwhile, to any query of its own: none, and the lookup's
        # nodes did not answer either (all gone: a table of dead nodes), which is no sign that
        # nothing is published. Some (maintenance pings, other lookups) while the lookup's
        # own nodes were silent read as the other case, whose words are true of both.
        if _answers(dht) == answers:
            raise CLIError(f"no DHT node answered the lookup for key {key}")
        salt = f" and salt {link.salt.hex()}" if link.salt else ""
        raise CLIError(f"no DHT node returned an item for key {key}{salt}")
    return found


def _answers(dht: DHT) -> int:
    """How many answers (responses and KRPC errors) the node's queries got so far."""
    statistics = dht.statistics()
    return statistics.responses_received + sum(statistics.errors_received.values())


def _run_resolve(args: argparse.Namespace) -> int:
    link = load_mutable_link(args.link)
    if link is None:
        raise CLIError(f"not a BEP 46 link (magnet:?xs=urn:btpk:... without xt): {args.link!r}")

    async def job(dht: DHT) -> int:
        found = await lookup_mutable_torrent(dht, link)
        print(link.resolved(found.info_hash))
        print(f"version {found.seq}: {found.info_hash}", file=sys.stderr)
        return 0

    return _run_once(args, job)
