"""Shared by the hostile HTTP tests: a scripted raw-socket HTTP server on loopback that answers
each request with whatever bytes (and pace) a script gives, and a guard that keeps every
connection the client under test makes on loopback, recording the ones it refuses."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

Script = Callable[[bytes, trio.abc.Stream, int], Awaitable[None]]
"""Answers one request: its head, the stream, and the request's index (0 for the first)."""

MAX_REQUEST_HEAD = 65536


@dataclass
class ScriptedServer:
    """A loopback server answering each request with ``script``; records each request's head
    (or, with ``raw``, the first bytes received, answered at once: a TLS ClientHello)."""

    script: Script
    raw: bool = False
    requests: list[bytes] = field(default_factory=list)
    url: str = ""
    port: int = 0

    async def serve(self, stream: trio.abc.Stream) -> None:
        head = b""
        try:
            while not (self.raw and head) and b"\r\n\r\n" not in head:
                if len(head) >= MAX_REQUEST_HEAD:
                    return
                data = await stream.receive_some(MAX_REQUEST_HEAD)
                if not data:
                    return
                head += data
            index = len(self.requests)
            self.requests.append(head)
            await self.script(head, stream, index)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up on us: what a bounded client does
        finally:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def scripted_server(
    script: Script, *, host: str = "127.0.0.1", path: str = "/announce", raw: bool = False
) -> AsyncIterator[ScriptedServer]:
    """A :class:`ScriptedServer` on ``host`` (any port) for the block's duration; its
    :attr:`~ScriptedServer.url` ends in ``path``; ``raw``: see :class:`ScriptedServer`."""
    server = ScriptedServer(script, raw=raw)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, server.serve, 0, host=host)
        listeners = await nursery.start(serve)
        server.port = listeners[0].socket.getsockname()[1]
        server.url = f"http://{host}:{server.port}{path}"
        yield server
        nursery.cancel_scope.cancel()


def canned(*answers: bytes, piece: int = 0) -> Script:
    """A script sending ``answers[i]`` to the i-th request (the last one to later requests),
    in pieces of ``piece`` bytes if given (the reader must reassemble them)."""

    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        data = answers[min(index, len(answers) - 1)]
        if not piece:
            await stream.send_all(data)
            return
        for start in range(0, len(data), piece):
            await stream.send_all(data[start : start + piece])

    return script


def stream_forever(head: bytes, chunk: bytes, *, delay: float = 0.0, limit: int = 10**6) -> Script:
    """A script sending ``head``, then ``chunk`` again and again (``limit`` times at most, a
    bound on the test itself), ``delay`` seconds apart."""

    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(head)
        for _ in range(limit):
            if delay:
                await trio.sleep(delay)
            await stream.send_all(chunk)

    return script


def response(status: str, body: bytes = b"", *headers: str, length: bool = True) -> bytes:
    """An HTTP/1.1 response: ``status`` (``"200 OK"``), ``headers``, and ``body`` (with its
    Content-Length unless ``length`` is false)."""
    head = [f"HTTP/1.1 {status}", *headers]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int = 7, extension: bytes = b"") -> bytes:
    """``body`` in the chunked coding, ``size`` bytes a chunk, each size line with
    ``extension`` after it, then the last chunk and no trailers."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in pieces)
    return out + b"0\r\n\r\n"


@dataclass
class LoopbackGuard:
    """What :func:`loopback_only` refused: each ``(host, port)`` off loopback."""

    refused: list[tuple[str, int]] = field(default_factory=list)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: resolving it would already ask a DNS server off loopback


@contextlib.contextmanager
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackGuard]:
    """For the block, ``trio.open_tcp_stream`` connects to loopback IP addresses only: any
    other host (a name, or an address off loopback) is refused with ``OSError`` before any
    lookup or packet, and recorded. The clients under test reach it as ``trio.open_tcp_stream``."""
    guard = LoopbackGuard()
    real = trio.open_tcp_stream

    async def guarded(host: str | bytes, port: int, **kwargs: Any) -> trio.SocketStream:
        name = host.decode() if isinstance(host, bytes) else host
        if not _is_loopback(name):
            guard.refused.append((name, port))
            raise OSError(f"off loopback, refused by the test: {name}")
        return await real(host, port, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trio, "open_tcp_stream", guarded)
        yield guard


def no_bad_records(records: Iterable[Any], *, most: int = 50) -> None:
    """No record at ERROR or above, none with a traceback, and at most ``most`` of them."""
    records = list(records)
    assert len(records) <= most, [r.getMessage()[:120] for r in records[:5]]
    for record in records:
        assert record.levelno < 40, record.getMessage()[:200]
        assert record.exc_info is None, record.getMessage()[:200]
