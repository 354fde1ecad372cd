"""Shared by the HTTP tracker tests: an in-process HTTP server on loopback (in the test's own trio
run, or in a thread of its own for command-line tests, whose command runs trio in the main
thread), canned replies, and a small tracker that answers announces and scrapes."""

from __future__ import annotations

import functools
import ipaddress
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import trio

from bip_bencode import encode

Handler = Callable[[bytes, trio.abc.Stream], Awaitable[None]]


@dataclass
class Server:
    """A loopback HTTP server: records each request head, answers with ``handler``."""

    handler: Handler
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def serve(self, stream: trio.abc.Stream) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
            self.requests.append(head)
            await self.handler(head, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def http_server(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
    path: str = "/announce",
) -> AsyncIterator[Server]:
    server = Server(handler)
    async with trio.open_nursery() as nursery:
        serve: Callable[..., Awaitable[object]]
        if tls is None:
            serve = functools.partial(trio.serve_tcp, server.serve, 0, host=host)
        else:
            serve = functools.partial(
                trio.serve_ssl_over_tcp, server.serve, 0, tls, host=host, https_compatible=True
            )
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1] if tls else None
        if port is None:
            port = listeners[0].socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        server.url = f"{'https' if tls else 'http'}://{shown}:{port}{path}"
        yield server
        nursery.cancel_scope.cancel()


def reply(
    body: bytes,
    *,
    status: str = "200 OK",
    framing: str = "length",
    headers: tuple[str, ...] = (),
) -> Handler:
    """A handler sending ``body`` framed by Content-Length, chunked, or to the close."""

    async def handle(request: bytes, stream: trio.abc.Stream) -> None:
        head = [f"HTTP/1.1 {status}", *headers]
        if framing == "length":
            head.append(f"Content-Length: {len(body)}")
            payload = body
        elif framing == "chunked":
            head.append("Transfer-Encoding: chunked")
            pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
            payload = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
            payload += b"0\r\nX-Trailer: yes\r\n\r\n"
        else:
            payload = body
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        for start in range(0, len(data), 50):  # in pieces: the reader must reassemble
            await stream.send_all(data[start : start + 50])

    return handle


def answer(**fields: Any) -> bytes:
    """A bencoded answer; ``min_interval`` stands for ``min interval``."""
    return encode({key.replace("_", " "): value for key, value in fields.items()})


def request_target(request: bytes) -> str:
    return request.split(b"\r\n", 1)[0].decode().split(" ")[1]


def query_of(request: bytes) -> dict[str, bytes]:
    query = request_target(request).partition("?")[2]
    return {
        key: unquote_to_bytes(value)
        for key, _, value in (part.partition("=") for part in query.split("&"))
    }


def query_pairs(request: bytes) -> list[tuple[str, bytes]]:
    """Every ``key=value`` of the request's query, in order, values percent-decoded."""
    query = request_target(request).partition("?")[2]
    return [
        (key, unquote_to_bytes(value))
        for key, _, value in (part.partition("=") for part in query.split("&"))
    ]


@dataclass
class MiniTracker:
    """Enough of a tracker: remembers each announcer's address, port and bytes left per swarm,
    answers announces (the other peers, compact; seeders and leechers) and BEP 48 scrapes
    (a request path ending in ``/scrape``)."""

    swarms: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    left: dict[tuple[bytes, bytes], int] = field(default_factory=dict)
    announced: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, request: bytes, stream: trio.abc.Stream) -> None:
        if request_target(request).partition("?")[0].endswith("/scrape"):
            await self.scrape(request, stream)
            return
        params = query_of(request)
        assert isinstance(stream, trio.SocketStream)
        host = stream.socket.getpeername()[0]
        me = ipaddress.ip_address(host).packed + int(params["port"]).to_bytes(2, "big")
        swarm = self.swarms.setdefault(params["info_hash"], {})
        others = b"".join(peer for key, peer in swarm.items() if key != params["peer_id"])
        if params.get("event") == b"stopped":
            swarm.pop(params["peer_id"], None)
            self.left.pop((params["info_hash"], params["peer_id"]), None)
        else:
            swarm[params["peer_id"]] = me
            self.left[params["info_hash"], params["peer_id"]] = int(params["left"])
            self.announced.set()
        seeders, leechers = self.counts(params["info_hash"])
        body = answer(interval=1800, peers=others, complete=seeders, incomplete=leechers)
        await reply(body, framing="chunked")(request, stream)

    def counts(self, info_hash: bytes) -> tuple[int, int]:
        """``(seeders, leechers)`` of a swarm."""
        lefts = [left for (swarm, _), left in self.left.items() if swarm == info_hash]
        seeders = sum(1 for left in lefts if left == 0)
        return seeders, len(lefts) - seeders

    async def scrape(self, request: bytes, stream: trio.abc.Stream) -> None:
        files: dict[bytes, dict[str, int]] = {}
        for key, value in query_pairs(request):
            if key == "info_hash" and value in self.swarms:
                seeders, leechers = self.counts(value)
                files[value] = {"complete": seeders, "downloaded": 0, "incomplete": leechers}
        await reply(encode({"files": files}))(request, stream)


@contextmanager
def http_server_in_thread(handler: Handler, *, path: str = "/announce") -> Iterator[Server]:
    """:func:`http_server` on 127.0.0.1, run by trio in a thread of its own, for tests whose
    code under test runs trio in the main thread; stopped on the way out."""
    started = threading.Event()
    found: list[tuple[Server, trio.lowlevel.TrioToken, trio.CancelScope]] = []  # from the thread

    async def run() -> None:
        with trio.CancelScope() as scope:
            async with http_server(handler, path=path) as server:
                found.append((server, trio.lowlevel.current_trio_token(), scope))
                started.set()
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(run,), daemon=True)
    thread.start()
    try:
        assert started.wait(10), "the HTTP server did not start"
        yield found[0][0]
    finally:
        if found:
            _, token, scope = found[0]
            trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(10)
