"""uTP dialled through a SOCKS5 relay that writes each datagram's IPv4 source as an
IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, as a dual-stack proxy may): the session's relay
socket (bip._client._utp._open_relayed, its reader _feed) connects to a uTP peer on 127.0.0.1.
Before, the SYN-ACK came to uTP from ``[::ffff:127.0.0.1]``, not the address dialled: an
unknown connection, a RESET back, and the dial timed out."""

from __future__ import annotations

from contextlib import AsyncExitStack
from ipaddress import IPv4Address, IPv6Address

import pytest
import tests._socks_server as socks_server
import trio
from tests._socks_server import serve_socks5

from bip._client._utp import _open_relayed
from bip_handshake import ProxyConfig, UtpConfig, open_utp_socket

DEADLINE = 5.0


async def test_a_utp_connect_through_a_relay_writing_mapped_sources_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socks_server.encode_datagram

    def mapped_source(
        host: IPv4Address | IPv6Address | str, port: int, payload: bytes, *, frag: int = 0
    ) -> bytes:
        if isinstance(host, IPv4Address):
            host = IPv6Address(f"::ffff:{host}")
        return real(host, port, payload, frag=frag)

    monkeypatch.setattr(socks_server, "encode_datagram", mapped_source)
    config = UtpConfig(connect_timeout=2.0)
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            open_utp_socket(("127.0.0.1", 0), config=config) as peer,
            AsyncExitStack() as stack,
        ):
            # As open_session_utp: the nursery first in the stack, cancelled last.
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            proxy = ProxyConfig("127.0.0.1", server.port)
            utp, check = await _open_relayed(stack, nursery, proxy, config, 2.0, local=None)
            while True:  # until associated; bounded by the deadline
                try:
                    check()
                    break
                except OSError:
                    await trio.sleep(0.005)
            stream = await utp.connect(peer.local_address)
            async with stream:
                assert stream.remote_address == peer.local_address
                await stream.send_all(b"hello")
                incoming = await peer.incoming().__anext__()
                async with incoming:
                    assert await incoming.receive_some(5) == b"hello"
    [association] = server.associations
    assert association.returned >= 1  # the SYN-ACK came back mapped (the patch ran)
