"""Listen entries of port 0 share one port: ``bip download --port 0 --bind 127.0.0.2 --bind
::1`` (``ClientConfig(listen=(("127.0.0.2", 0), ("::1", 0)))``) listens on each address on
the one port the system picked for the first, so that the one port trackers, the DHT and
peers (BEP 10 ``p``) are told reaches every address; uTP accepts on the same UDP port beside
each listener. Before, each listener got its own port and the peers of every address but the
first's were sent to a dead port. A port the system picked that is taken on another of the
addresses starts the whole set again on a new one, a bounded number of times. Explicit ports
are kept as given.

Loopback only: 127.0.0.2 and 127.0.0.3 (any of 127/8 on Linux), ``::1`` where it exists."""

from __future__ import annotations

import argparse
import errno
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio
from _engine_helpers import loopback_config
from tests._loopbacks import free_port, require_loopbacks

from bip._client import open_session
from bip._cmd_download import add_session_arguments, config_from_args, listen_ports_text
from bip_handshake import ListenError, open_handshaker

FIRST = "127.0.0.2"
SECOND = "127.0.0.3"
DEADLINE = 5.0
OpenListeners = Callable[..., Awaitable[list[trio.SocketListener]]]


@pytest.fixture(autouse=True)
def _loopbacks() -> None:
    """Skip where 127.0.0.2 or 127.0.0.3 is not an address of this host."""
    require_loopbacks(FIRST, SECOND)


def port_of(listener: trio.SocketListener) -> int:
    port = listener.socket.getsockname()[1]
    assert isinstance(port, int)
    return port


def blocker(host: str, port: int) -> socket.socket:
    """Another program's TCP listener on ``host`` and ``port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


@pytest.mark.parametrize("second", [SECOND, "::1"], ids=["ipv4", "ipv6"])
async def test_port_0_on_two_binds_listens_on_one_port_that_accepts_on_each(second: str) -> None:
    require_loopbacks(second)
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    options = ("--port", "0", "--bind", FIRST, "--bind", second)
    args = parser.parse_args(["--no-trackers", "--natpmp-announce-address", "off", *options])
    config = config_from_args(args)
    assert config.listen == ((FIRST, 0), (second, 0))
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config(listen=config.listen)) as session:
            port = session.listen_port
            listening = session.handshaker.listen_addresses
            assert [str(address.host) for address in listening] == [FIRST, second]
            assert {address.port for address in listening} == {port} != {0}
            # Told to trackers, the DHT and peers: the one port, on every address.
            assert session.external_port == port
            assert listen_ports_text(session) == f"port {port}"
            for host in (FIRST, second):
                stream = await trio.open_tcp_stream(host, port)
                await stream.aclose()
            # uTP beside each listener, on its port number.
            accepting = session.utp_sockets[: len(listening)]
            assert [utp.local_address for utp in accepting] == listening


async def test_a_port_taken_on_another_address_is_retried_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real: OpenListeners = trio.open_tcp_listeners
    blocked: list[socket.socket] = []
    picked: list[int] = []

    async def taken_once(port: int, *, host: str) -> list[trio.SocketListener]:
        listeners = await real(port, host=host)
        if port == 0:
            picked.append(port_of(listeners[0]))
            if not blocked:  # another program takes it on the second address meanwhile
                blocked.append(blocker(SECOND, picked[-1]))
        return listeners

    monkeypatch.setattr(trio, "open_tcp_listeners", taken_once)
    try:
        with trio.fail_after(DEADLINE):
            async with open_handshaker(listen=[(FIRST, 0), (SECOND, 0)]) as handshaker:
                ports = {address.port for address in handshaker.listen_addresses}
                assert len(picked) == 2
                assert ports == {picked[1]}
                assert picked[1] != picked[0]
                assert len(handshaker.listen_addresses) == 2
    finally:
        for sock in blocked:
            sock.close()


async def test_a_port_taken_every_time_fails_clearly_and_leaves_nothing_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real: OpenListeners = trio.open_tcp_listeners
    blocked: list[socket.socket] = []
    picked: list[int] = []

    async def always_taken(port: int, *, host: str) -> list[trio.SocketListener]:
        listeners = await real(port, host=host)
        if port == 0:
            picked.append(port_of(listeners[0]))
            try:
                blocked.append(blocker(SECOND, picked[-1]))
            except OSError as error:
                # Taken on SECOND already (another test process's listener, under
                # pytest-xdist): taken all the same, which is what this try needs.
                if error.errno != errno.EADDRINUSE:
                    raise
        return listeners

    monkeypatch.setattr(trio, "open_tcp_listeners", always_taken)
    try:
        with trio.fail_after(DEADLINE), pytest.raises(ListenError) as raised:
            async with open_handshaker(listen=[(FIRST, 0), (SECOND, 0)]):
                pytest.fail("listened though every port was taken")  # pragma: no cover
    finally:
        for sock in blocked:
            sock.close()
    assert len(picked) == 8
    message = str(raised.value)
    assert f"cannot listen on one port for {FIRST}, {SECOND}" in message
    assert f"last: {SECOND} port {picked[-1]}" in message
    assert isinstance(raised.value.__cause__, OSError)
    for port in picked:  # every listener of every try was closed
        blocker(FIRST, port).close()


async def test_another_error_on_the_second_address_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real: OpenListeners = trio.open_tcp_listeners
    calls: list[tuple[str, int]] = []
    picked: list[int] = []

    async def refused(port: int, *, host: str) -> list[trio.SocketListener]:
        calls.append((host, port))
        if host == SECOND:  # as a privileged port, or an address absent (EADDRNOTAVAIL)
            raise PermissionError(errno.EACCES, "Permission denied")
        listeners = await real(port, host=host)
        picked.extend(port_of(listener) for listener in listeners)
        return listeners

    monkeypatch.setattr(trio, "open_tcp_listeners", refused)
    with trio.fail_after(DEADLINE), pytest.raises(ListenError) as raised:
        async with open_handshaker(listen=[(FIRST, 0), (SECOND, 0)]):
            pytest.fail("listened where it was refused")  # pragma: no cover
    [port] = picked
    assert calls == [(FIRST, 0), (SECOND, port)]  # once each: not tried again
    # The port the user gave (0), then the shared one tried: not a port they never asked for.
    assert str(raised.value).startswith(f"cannot listen on {SECOND} port 0 (tried {port}, ")
    blocker(FIRST, port).close()  # the first listener was closed


async def test_a_name_with_several_addresses_gets_one_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real: OpenListeners = trio.open_tcp_listeners
    name = "both.test"

    async def resolving(port: int, *, host: str) -> list[trio.SocketListener]:
        if host != name:  # pragma: no cover - the test lists the name alone
            return await real(port, host=host)
        # As trio does for a name of several addresses: each bound on ``port`` (0: each on
        # a port of its own).
        return [*await real(port, host=FIRST), *await real(port, host=SECOND)]

    monkeypatch.setattr(trio, "open_tcp_listeners", resolving)
    with trio.fail_after(DEADLINE):
        async with open_handshaker(listen=[(name, 0)]) as handshaker:
            listening = handshaker.listen_addresses
            assert [str(address.host) for address in listening] == [FIRST, SECOND]
            assert len({address.port for address in listening}) == 1


async def test_explicit_ports_are_kept_as_given() -> None:
    first, second = free_port(FIRST), free_port(SECOND)
    with trio.fail_after(DEADLINE):
        async with open_handshaker(listen=[(FIRST, first), (SECOND, second)]) as handshaker:
            assert [address.port for address in handshaker.listen_addresses] == [first, second]
        # The same port given on both (the CLI's --port with several --bind).
        async with open_handshaker(listen=[(FIRST, first), (SECOND, first)]) as handshaker:
            assert [address.port for address in handshaker.listen_addresses] == [first, first]
