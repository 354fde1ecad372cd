"""Shared by the web seed tests: an in-process HTTP/1.1 file server on loopback, in the test's
own trio run, serving a folder with ``Range`` support, and ways to make it misbehave: files it
answers 404 for, bytes it corrupts, ``Range`` ignored (200 and the whole file)."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_RANGE = re.compile(r"bytes=([0-9]+)-([0-9]*)")


@dataclass
class FileServer:
    """Serves ``root`` over HTTP; :attr:`url` is its base URL (ending in ``/``).

    Attributes:
        missing: paths (relative to ``root``, ``/``-separated) answered 404.
        corrupt: paths whose every served byte is inverted.
        ignore_range: answer 200 with the whole file, whatever the ``Range``.
        status: a status to answer every request with instead (``"503 Busy"``), if set.
        redirects: paths answered ``302 Found`` to the location given.
        requests: each request's path (decoded) and ``Range`` header, in order.
    """

    root: Path
    missing: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    ignore_range: bool = False
    status: str | None = None
    redirects: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""

    async def serve(self, stream: trio.abc.Stream) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:])
            }
            path = unquote(target.partition("?")[0], encoding="utf-8").lstrip("/")
            self.requests.append((path, headers.get("range")))
            await stream.send_all(self._answer(path, headers.get("range")))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    def _answer(self, path: str, range_header: str | None) -> bytes:
        if self.status is not None:
            return _response(self.status, b"busy")
        if path in self.redirects:
            return _response("302 Found", b"", f"Location: {self.redirects[path]}")
        file = (self.root / path).resolve()
        if path in self.missing or not file.is_relative_to(self.root) or not file.is_file():
            return _response("404 Not Found", b"not found")
        data = file.read_bytes()
        if path in self.corrupt:
            data = bytes(byte ^ 0xFF for byte in data)
        match = None if range_header is None else _RANGE.fullmatch(range_header)
        if self.ignore_range or match is None:
            return _response("200 OK", data)
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else len(data) - 1
        if first >= len(data):
            return _response("416 Range Not Satisfiable", b"")
        last = min(last, len(data) - 1)
        return _response(
            "206 Partial Content",
            data[first : last + 1],
            f"Content-Range: bytes {first}-{last}/{len(data)}",
        )


def _response(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def file_server(
    root: Path, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> AsyncIterator[FileServer]:
    """A :class:`FileServer` of ``root`` on ``host``, any port, for the block's duration
    (HTTPS with the server context ``tls``)."""
    server = FileServer(root.resolve())
    async with trio.open_nursery() as nursery:
        serve: Callable[..., Awaitable[object]]
        if tls is None:
            serve = functools.partial(trio.serve_tcp, server.serve, 0, host=host)
        else:
            serve = functools.partial(
                trio.serve_ssl_over_tcp, server.serve, 0, tls, host=host, https_compatible=True
            )
        listeners = await nursery.start(serve)
        listener = listeners[0]
        socket = listener.transport_listener.socket if tls else listener.socket
        server.url = f"{'https' if tls else 'http'}://{host}:{socket.getsockname()[1]}/"
        yield server
        nursery.cancel_scope.cancel()


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 made here, and a client context
    trusting only that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bip test server")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client
