"""DHT nodes for the bip_dht interop tests: libtorrent's, aria2's, and a raw KRPC node of ours.

- :func:`open_libtorrent_dht` starts _lt_dht.py (one process, one libtorrent session per host
  given, each on a 127.0.0.X of its own) and drives it over its stdin/stdout JSON lines;
  :func:`open_libtorrent_dhts` starts several such processes.
- :func:`start_aria2_dht` starts aria2c seeding a small torrent with its DHT on: aria2 runs its
  DHT only while it has a BitTorrent job. No ``--dht-entry-point`` and no ``dht.dat``: it knows
  nobody until a test talks to it.
- :func:`open_krpc_node` is our side for the tests that check bip_dht's codec against real clients
  before a node core exists: a trio UDP socket on a 127.0.0.X that sends queries built with
  bip_dht's KRPC classes, matches the replies by transaction id, and answers the queries others
  send with bip_dht's :class:`~bip_dht.QueryHandler` (its routing table, peer store and item store
  are open to the test).

Every wait is bounded; every process has a lifetime of its own and is killed by its PID when the
block ends. Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from bip_dht import (
    AnnouncePeer,
    ErrorReply,
    GetPeers,
    ImmutableItem,
    ItemStore,
    KRPCError,
    MutableItem,
    NodeId,
    PeerStore,
    Ping,
    Query,
    QueryHandler,
    Response,
    RoutingTable,
    TokenManager,
    decode_message,
)
from bip_dht._stats import DHTStatistics
from bip_handshake import NodeInfo, PeerAddress

from ._helpers import (
    ClientNotReadyError,
    StartProcess,
    free_port,
    require_client,
    tcp_listening,
)
from ._seeders import SmallTorrent, aria2_loopback_options, make_torrent, private_env

__all__ = [
    "Aria2DHT",
    "KRPCNode",
    "LibtorrentDHT",
    "LtSession",
    "loopback_host",
    "open_krpc_node",
    "open_libtorrent_dht",
    "open_libtorrent_dhts",
    "start_aria2_dht",
    "wait_answering",
    "wire_problems",
]

_LT_DHT = Path(__file__).with_name("_lt_dht.py")

# The loopback addresses tests hand out, one per node: 127.0.0.10 .. 127.0.0.250, round and
# round (ports are free_port's, so meeting an address again later is harmless).
_hosts = itertools.cycle(range(10, 251))


def loopback_host() -> str:
    """A 127.0.0.X not handed out lately in this process."""
    return f"127.0.0.{next(_hosts)}"


def address(host: str, port: int) -> PeerAddress:
    """A PeerAddress from an IP address in text and a port."""
    return PeerAddress(ip_address(host), port)


# -- libtorrent ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LtSession:
    """One libtorrent session of a :class:`LibtorrentDHT`: its index there, address and id,
    and with IPv6 the id of its DHT node on ``[::1]:port`` (else None)."""

    index: int
    host: str
    port: int
    node_id: bytes
    node_id6: bytes | None = None

    @property
    def address(self) -> PeerAddress:
        return address(self.host, self.port)

    @property
    def address6(self) -> PeerAddress:
        return address("::1", self.port)


@dataclass
class LibtorrentDHT:
    """A running _lt_dht.py process (see its docstring for the protocol).

    The ``*_wait`` helpers send a request and wait, bounded, for the event that ends it.
    """

    process: trio.Process
    sessions: list[LtSession]
    log_path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    _replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    _changed: trio.Event = field(default_factory=trio.Event)
    _next_id: int = 1
    _closed: bool = False

    def logs(self, limit: int = 4000) -> str:
        """The tail of the program's stderr, for failure messages."""
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError as exc:
            return f"<unreadable: {exc}>"

    def _arrived(self, message: dict[str, Any]) -> None:
        if "reply" in message:
            self._replies[int(message["reply"])] = message
        else:
            self.events.append(message)
        self._changed.set()
        self._changed = trio.Event()

    def _stdout_closed(self) -> None:
        self._closed = True
        self._changed.set()

    def _check_alive(self) -> None:
        if self._closed:
            raise ClientNotReadyError(
                f"_lt_dht (pid {self.process.pid}) closed its stdout (exit status "
                f"{self.process.returncode})\n{self.logs()}"
            )

    async def request(self, cmd: str, session: int = 0, **args: Any) -> dict[str, Any]:
        """Send one request and return its reply; raise RuntimeError if it failed."""
        request_id = self._next_id
        self._next_id += 1
        line = json.dumps({"id": request_id, "cmd": cmd, "session": session, **args}) + "\n"
        assert self.process.stdin is not None
        with trio.fail_after(10):
            await self.process.stdin.send_all(line.encode())
            while request_id not in self._replies:
                self._check_alive()
                await self._changed.wait()
        reply = self._replies.pop(request_id)
        if not reply.get("ok"):
            raise RuntimeError(f"_lt_dht {cmd} failed: {reply.get('error')}\n{self.logs()}")
        return reply

    async def wait_event(
        self,
        kind: str,
        session: int,
        *,
        since: int = 0,
        match: Callable[[dict[str, Any]], bool] = lambda event: True,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The first event of ``kind`` from ``session`` at or after index ``since`` of
        :attr:`events` that ``match``es, waiting at most ``timeout`` seconds for it."""
        with trio.fail_after(timeout):
            index = since
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if (
                        event.get("event") == kind
                        and event.get("session") == session
                        and match(event)
                    ):
                        return event
                self._check_alive()
                await self._changed.wait()

    async def add_node(self, session: int, node: PeerAddress) -> None:
        """libtorrent pings ``node``; once it answers it is in the session's routing table."""
        await self.request("add_node", session, host=str(node.host), port=node.port)

    async def routing_table_size(self, session: int) -> int:
        """How many nodes the session's routing table holds now."""
        since = len(self.events)
        await self.request("stats", session)
        event = await self.wait_event("stats", session, since=since)
        return int(event["nodes"])

    async def wait_routing_table(self, session: int, size: int, timeout: float = 10.0) -> int:
        """Poll until the session's routing table holds at least ``size`` nodes; its size."""
        with trio.fail_after(timeout):
            while (nodes := await self.routing_table_size(session)) < size:
                await trio.sleep(0.1)
        return nodes

    async def announce(
        self, session: int, info_hash: bytes, port: int = 0, *, seed: bool = False
    ) -> None:
        """libtorrent's ``dht_announce`` (``port`` 0: implied_port). It posts no alert of its own
        when done: the nodes announced to see it (``announce_in`` events, or our store)."""
        await self.request("announce", session, info_hash=info_hash.hex(), port=port, seed=seed)

    async def get_peers(
        self, session: int, info_hash: bytes, timeout: float = 15.0
    ) -> list[PeerAddress]:
        """libtorrent's ``dht_get_peers`` lookup; the peers it found when it ended."""
        since = len(self.events)
        await self.request("get_peers", session, info_hash=info_hash.hex())
        event = await self.wait_event(
            "peers",
            session,
            since=since,
            match=lambda e: e["info_hash"] == info_hash.hex(),
            timeout=timeout,
        )
        return [address(host, port) for host, port in event["peers"]]

    async def put_immutable(
        self, session: int, value: bytes, timeout: float = 15.0
    ) -> tuple[bytes, int]:
        """Store the byte string ``value`` (bencoded by libtorrent); (target, nodes stored at)."""
        since = len(self.events)
        reply = await self.request("put_immutable", session, value=value.hex())
        event = await self.wait_event(
            "put",
            session,
            since=since,
            match=lambda e: e["target"] == reply["target"],
            timeout=timeout,
        )
        return bytes.fromhex(reply["target"]), int(event["num_success"])

    async def get_immutable(self, session: int, target: bytes, timeout: float = 15.0) -> bytes:
        """The bencoded ``v`` libtorrent's lookup found for ``target`` (``b""`` for none)."""
        since = len(self.events)
        await self.request("get_immutable", session, target=target.hex())
        event = await self.wait_event(
            "immutable",
            session,
            since=since,
            match=lambda e: e["target"] == target.hex(),
            timeout=timeout,
        )
        return bytes.fromhex(event["value"])

    async def put_mutable(
        self, session: int, seed: bytes, value: bytes, salt: bytes = b"", timeout: float = 15.0
    ) -> dict[str, Any]:
        """Store the byte string ``value`` as a mutable item of the ed25519 key made from
        ``seed`` (libtorrent signs it); the ``put`` event (``seq``, ``num_success``...)."""
        since = len(self.events)
        reply = await self.request(
            "put_mutable", session, seed=seed.hex(), value=value.hex(), salt=salt.hex()
        )
        return await self.wait_event(
            "put",
            session,
            since=since,
            match=lambda e: e["public_key"] == reply["public_key"] and e["salt"] == salt.hex(),
            timeout=timeout,
        )

    async def get_mutable(
        self, session: int, public_key: bytes, salt: bytes = b"", timeout: float = 15.0
    ) -> dict[str, Any]:
        """libtorrent's mutable get; the final (``authoritative``) ``mutable`` event."""
        since = len(self.events)
        await self.request("get_mutable", session, public_key=public_key.hex(), salt=salt.hex())
        return await self.wait_event(
            "mutable",
            session,
            since=since,
            match=lambda e: (
                e["public_key"] == public_key.hex()
                and e["salt"] == salt.hex()
                and e["authoritative"]
            ),
            timeout=timeout,
        )

    async def live_nodes(self, session: int) -> list[tuple[bytes, PeerAddress]]:
        """The nodes in the session's routing table now: (id, address) pairs."""
        since = len(self.events)
        await self.request("live_nodes", session)
        event = await self.wait_event("live_nodes", session, since=since)
        return [(bytes.fromhex(nid), address(host, port)) for nid, host, port in event["nodes"]]

    async def sample_infohashes(
        self, session: int, node: PeerAddress, target: bytes, timeout: float = 10.0
    ) -> dict[str, Any]:
        """libtorrent's BEP 51 query to ``node``; the ``samples`` event (``samples`` hex,
        ``num``, ``interval``, ``nodes``)."""
        since = len(self.events)
        await self.request(
            "sample_infohashes", session, host=str(node.host), port=node.port, target=target.hex()
        )
        return await self.wait_event(
            "samples",
            session,
            since=since,
            match=lambda e: e["host"] == str(node.host) and e["port"] == node.port,
            timeout=timeout,
        )

    def announces_in(self, session: int, info_hash: bytes) -> list[PeerAddress]:
        """The announce_peer queries for ``info_hash`` the session has accepted so far."""
        return [
            address(e["host"], e["port"])
            for e in self.events
            if e.get("event") == "announce_in"
            and e.get("session") == session
            and e["info_hash"] == info_hash.hex()
        ]


async def _read_lines(process: trio.Process, sink: Callable[[dict[str, Any]], None]) -> None:
    """Feed each JSON line the program writes to ``sink`` until its stdout closes."""
    assert process.stdout is not None
    buffer = bytearray()
    while chunk := await process.stdout.receive_some(65536):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if line.strip():
                sink(json.loads(line))


def _kill(process: trio.Process) -> None:
    """SIGKILL by PID, if it still runs."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def open_libtorrent_dht(
    workdir: Path,
    hosts: Sequence[str],
    *,
    lifetime: float = 60.0,
    ready_timeout: float = 20.0,
    log_dht: bool = False,
    ipv6: bool = False,
    name: str = "lt-dht",
) -> AsyncIterator[LibtorrentDHT]:
    """One _lt_dht.py process with a libtorrent DHT session on each of ``hosts`` (127.0.0.X),
    with ``ipv6`` listening on the same port of ``::1`` too.

    Yields once every session listens and answers a ping. The program's stderr goes to
    ``workdir/<name>.stderr.log``; at the end it is told to exit, then killed by PID.
    """
    require_client("libtorrent")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.stderr.log"
    argv = [sys.executable, str(_LT_DHT), "--hosts", ",".join(hosts), "--lifetime", str(lifetime)]
    if log_dht:
        argv.append("--log-dht")
    if ipv6:
        argv.append("--ipv6")
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=workdir,
            start_new_session=True,
            # No parent-death signal: trio forks from a worker thread, whose exit after 10
            # idle seconds would send it (see _die_with_parent); the caller stops the process.
        )
    try:
        async with trio.open_nursery() as nursery:
            first: list[dict[str, Any]] = []
            got_first = trio.Event()
            dht: LibtorrentDHT | None = None

            def sink(message: dict[str, Any]) -> None:
                if dht is not None:
                    dht._arrived(message)
                else:
                    first.append(message)
                    got_first.set()

            async def reader() -> None:
                await _read_lines(process, sink)
                got_first.set()  # the program died before its ready line: wake the waiter
                if dht is not None:
                    dht._stdout_closed()

            nursery.start_soon(reader)
            with trio.move_on_after(ready_timeout):
                await got_first.wait()
            if not first or first[0].get("event") != "ready":
                raise ClientNotReadyError(
                    f"{name} (pid {process.pid}) not ready within {ready_timeout:g} s "
                    f"(status {process.returncode}): {first}\n{_tail(log_path)}"
                )
            sessions = [
                LtSession(
                    index,
                    s["host"],
                    int(s["port"]),
                    bytes.fromhex(s["node_id"]),
                    bytes.fromhex(s["node_id6"]) if s.get("node_id6") else None,
                )
                for index, s in enumerate(first[0]["sessions"])
            ]
            dht = LibtorrentDHT(process, sessions, log_path)
            try:
                yield dht
            finally:
                with trio.move_on_after(2) as cleanup:
                    cleanup.shield = True
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        assert process.stdin is not None
                        await process.stdin.aclose()  # the program exits when stdin closes
                    await process.wait()
                nursery.cancel_scope.cancel()
    finally:
        _kill(process)
        with trio.move_on_after(5) as reap:
            reap.shield = True
            await process.wait()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"


@contextlib.asynccontextmanager
async def open_libtorrent_dhts(
    workdir: Path, hosts_per_process: Sequence[Sequence[str]], *, lifetime: float = 60.0
) -> AsyncIterator[list[LibtorrentDHT]]:
    """Several _lt_dht.py processes, the i-th with a session on each of
    ``hosts_per_process[i]``; all are ready when it yields."""
    async with contextlib.AsyncExitStack() as stack:
        processes = [
            await stack.enter_async_context(
                open_libtorrent_dht(workdir, hosts, lifetime=lifetime, name=f"lt-dht-{index}")
            )
            for index, hosts in enumerate(hosts_per_process)
        ]
        yield processes


def wire_problems(stats: DHTStatistics, *, errors_allowed: Collection[int] = ()) -> list[str]:
    """What in our node's statistics says it and a real client disagreed on the wire: datagrams
    it could not decode, answers that lack what their query needs or come from another id, our
    error replies (a query of theirs we found wrong), KRPC errors answering our queries (but
    ``errors_allowed``), rate limiting, refused sends. Empty when they agreed."""
    problems = [
        f"{name} = {value}"
        for name, value in (
            ("malformed", stats.malformed),
            ("invalid_answers", stats.invalid_answers),
            ("id_mismatch", stats.id_mismatch),
            ("wrong_family", stats.wrong_family),
            ("rate_limited", stats.rate_limited),
            ("send_errors", stats.send_errors),
        )
        if value
    ]
    if stats.errors_sent:
        problems.append(f"errors_sent = {dict(stats.errors_sent)}")
    unexpected = {
        code: n for code, n in stats.errors_received.items() if code not in errors_allowed
    }
    if unexpected:
        problems.append(f"errors_received = {unexpected}")
    return problems


# -- aria2 -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Aria2DHT:
    """aria2c seeding ``torrent`` with its DHT on ``host:dht_port`` (UDP)."""

    host: str
    dht_port: int
    peer_port: int
    torrent: SmallTorrent

    @property
    def address(self) -> PeerAddress:
        return address(self.host, self.dht_port)


def start_aria2_dht(start_process: StartProcess, workdir: Path) -> Aria2DHT:
    """aria2c checking and seeding a small torrent with ``--enable-dht=true`` on 127.0.0.1;
    returns once it accepts peer connections.

    Its DHT socket opens with it, but wait for its first answer with :func:`wait_answering`
    from a node that stays alive: aria2 puts every node that queries it in its routing table,
    so a readiness probe from a throwaway socket would leave a dead node there, and every
    lookup through aria2 would then wait out a timeout on it.
    """
    aria2c = require_client("aria2c")
    torrent = make_torrent(workdir / "aria2-torrent")
    host = "127.0.0.1"  # aria2 binds its DHT socket to --interface's address
    port = free_port(host)
    dht_port = free_port(host, tcp=False, udp=True)
    home = workdir / "aria2-home"
    argv: list[str | os.PathLike[str]] = [aria2c]
    # udp_trackers=True is what turns --enable-dht on (see aria2_loopback_options).
    argv += aria2_loopback_options(home, port=port, dht_port=dht_port, udp_trackers=True)
    argv += ["--seed-ratio=0.0", "-V", "--check-integrity=true", "-d", torrent.content_dir]
    argv.append(torrent.torrent_path)
    start_process(
        argv,
        cwd=workdir,
        env=private_env(home),
        ready=tcp_listening(host, port),
        ready_timeout=20,
        name="aria2c-dht",
    )
    return Aria2DHT(host, dht_port, port, torrent)


# -- our raw KRPC node -----------------------------------------------------------------------------


class KRPCNode:
    """A UDP socket on a 127.0.0.X speaking KRPC with bip_dht's codec and QueryHandler.

    :meth:`query` sends one query and returns the decoded reply (a :class:`Response` or an
    :class:`ErrorReply`); queries from others are answered by :attr:`handler`, from
    :attr:`table`, :attr:`peers` and :attr:`items`. Datagrams that do not decode are kept in
    :attr:`undecodable` (a real client sending something our codec refuses is a finding).
    """

    def __init__(self, sock: trio.socket.SocketType, node_id: bytes) -> None:
        self.sock = sock
        name = sock.getsockname()  # (host, port) for IPv4, (host, port, flow, scope) for IPv6
        self.address = address(name[0], name[1])
        self.node_id = node_id
        rng = self._rng = random.Random(node_id)
        now = time.monotonic()
        own = NodeId(node_id)
        # Loopback nodes share a /8 and have no BEP 42 ids: no IP restriction in the table.
        self.table = RoutingTable(
            own, family=self.address.family, rng=rng, restrict_ips=False, now=now
        )
        self.peers = PeerStore()
        self.items = ItemStore()
        self.handler = QueryHandler(
            own,
            self.table,
            TokenManager(rng, now),
            self.peers,
            self.items,
            rng=rng,
            rate_limit=None,
            version=b"bi\x00\x01",
        )
        self.undecodable: list[tuple[bytes, PeerAddress, str]] = []
        self.queries_in: list[tuple[Query, PeerAddress]] = []
        self._pending: dict[bytes, tuple[PeerAddress, trio.MemorySendChannel[Any]]] = {}

    async def serve(self) -> None:
        """Receive forever: replies to :meth:`query` callers, queries to :attr:`handler`."""
        while True:
            try:
                data, name = await self.sock.recvfrom(65536)
            except ConnectionRefusedError:  # ICMP port unreachable from an earlier send
                continue
            host, port = name[0], name[1]
            source = address(host, port)
            try:
                message = decode_message(data)
            except KRPCError as exc:
                self.undecodable.append((data, source, str(exc)))
                reply = self.handler.handle(data, source, time.monotonic())
                if reply is not None:
                    await self.sock.sendto(reply, (host, port))
                continue
            if isinstance(message, Response | ErrorReply):
                waiting = self._pending.get(message.transaction_id)
                if waiting is not None and waiting[0] == source:
                    waiting[1].send_nowait(message)
                continue
            self.queries_in.append((message, source))
            reply = self.handler.handle(data, source, time.monotonic())
            if reply is not None:
                await self.sock.sendto(reply, (host, port))

    async def query(
        self,
        make: Callable[[bytes], Query],
        to: PeerAddress,
        *,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> Response | ErrorReply:
        """Send ``make(transaction_id)`` to ``to``, resending up to ``attempts`` times, and
        return its reply. Raises TimeoutError when nothing comes back."""
        tid = secrets.token_bytes(2)
        while tid in self._pending:
            tid = secrets.token_bytes(2)
        datagram = make(tid).encode()
        send, receive = trio.open_memory_channel[Any](1)
        self._pending[tid] = (to, send)
        try:
            for _ in range(attempts):
                await self.sock.sendto(datagram, (str(to.host), to.port))
                with trio.move_on_after(timeout):
                    reply: Response | ErrorReply = await receive.receive()
                    return reply
        finally:
            del self._pending[tid]
        raise TimeoutError(f"no reply from {to} to {make(tid)!r} after {attempts} tries")

    async def get_peers(
        self, to: PeerAddress, info_hash: bytes, *, timeout: float = 1.0, attempts: int = 3
    ) -> Response | ErrorReply:
        """Our get_peers for ``info_hash`` to ``to``, and its reply (see :meth:`query`)."""
        return await self.query(
            lambda t: GetPeers(transaction_id=t, node_id=self.node_id, info_hash=info_hash),
            to,
            timeout=timeout,
            attempts=attempts,
        )

    async def announce_peer(
        self,
        to: PeerAddress,
        info_hash: bytes,
        *,
        port: int,
        token: bytes,
        implied_port: bool = False,
        seed: bool = False,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> Response | ErrorReply:
        """Our announce_peer to ``to``, and its reply (see :meth:`query`)."""
        return await self.query(
            lambda t: AnnouncePeer(
                transaction_id=t,
                node_id=self.node_id,
                info_hash=info_hash,
                port=port,
                token=token,
                implied_port=implied_port,
                seed=seed,
            ),
            to,
            timeout=timeout,
            attempts=attempts,
        )

    def stored_peers(self, info_hash: bytes) -> list[PeerAddress]:
        """The peers of our family announced to us for ``info_hash``."""
        return self.peers.get_peers(info_hash, self.address.family, self._rng, time.monotonic())

    def stored_item(self, target: bytes) -> ImmutableItem | MutableItem | None:
        """The BEP 44 item put to us under ``target``, if any."""
        return self.items.get(target, time.monotonic())

    def heard(self, node: NodeInfo) -> None:
        """Put ``node`` in our table as a node that answered us (for find_node answers)."""
        self.table.heard_from(node, time.monotonic(), responded=True)


async def wait_answering(node: KRPCNode, to: PeerAddress, timeout: float = 10.0) -> Response:
    """Ping ``to`` from ``node`` until it answers (a just-started client may not be bound yet);
    its response."""
    with trio.fail_after(timeout):
        while True:
            try:
                reply = await node.query(
                    lambda t: Ping(transaction_id=t, node_id=node.node_id), to, timeout=0.5
                )
            except TimeoutError:
                continue
            if isinstance(reply, Response):
                return reply
            await trio.sleep(0.1)


@contextlib.asynccontextmanager
async def open_krpc_node(
    host: str | None = None, node_id: bytes | None = None
) -> AsyncIterator[KRPCNode]:
    """A :class:`KRPCNode` on ``host`` (default: a fresh 127.0.0.X; ``"::1"`` for IPv6),
    serving while in the block."""
    family = trio.socket.AF_INET6 if host is not None and ":" in host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host or loopback_host(), 0))
        node = KRPCNode(sock, node_id or secrets.token_bytes(20))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.serve)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
