"""open_tcp_stream_from: a TCP connection from the local address of each IP family, as happy
eyeballs (the HTTP clients' connect, and the SOCKS shell's to its proxy)."""

from __future__ import annotations

import errno
import os
import re
import select
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing
from tests._loopbacks import OTHER_LOOPBACK, require_loopbacks
from tests._resolvers import FixedResolver, has_ipv6_loopback
from tests._socks_server import serve_socks5

from bip_handshake import open_tcp_stream_from
from bip_handshake._socks_shell import ProxyConfig, _proxy_addresses, open_socks5_stream
from bip_handshake._tcp_from import _MAX_TARGETS, _STAGGER

LOOPBACK = "127.0.0.1"
DEADLINE = 5.0


@asynccontextmanager
async def accepting() -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
    """A TCP server on 127.0.0.1: its port, and the address of each client it accepted."""
    seen: list[tuple[str, int]] = []

    async def handle(stream: trio.SocketStream) -> None:
        name = stream.socket.getpeername()
        seen.append((str(name[0]), int(name[1])))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            lambda task_status: trio.serve_tcp(handle, 0, host=LOOPBACK, task_status=task_status)
        )
        yield listener.socket.getsockname()[1], seen
        nursery.cancel_scope.cancel()


@contextmanager
def full_listener() -> Iterator[int]:
    """A listener on 127.0.0.1 whose accept queue is full (a backlog of 0, never accepted):
    the system drops further SYNs, so a connect to it hangs. Its port."""
    with ExitStack() as held:
        listener = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(8):  # bounded: a backlog of 0 is full after one or two
            filler = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            filler.setblocking(False)
            filler.connect_ex(address)
            _, writable, _ = select.select([], [filler], [], 0.1)
            if not writable:  # this one hangs: the queue is full
                yield address[1]
                return
        pytest.skip("this system does not drop SYNs to a full accept queue")


@contextmanager
def refusing_ipv6_ports(count: int) -> Iterator[list[int]]:
    """``count`` ports of ``::1`` that refuse connections (bound, not listening), or any ports
    where this host has no ``::1`` (a connect to it then fails at once all the same)."""
    if not has_ipv6_loopback():
        yield list(range(1, count + 1))
        return
    with ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
            sock.bind(("::1", 0))
            ports.append(sock.getsockname()[1])
        yield ports


async def test_a_slow_first_address_gives_way_after_the_stagger_from_the_right_source() -> None:
    require_loopbacks(OTHER_LOOPBACK)
    with full_listener() as slow, trio.fail_after(DEADLINE):
        async with accepting() as (port, seen):
            trio.socket.set_custom_hostname_resolver(
                FixedResolver({"slow.test": [(LOOPBACK, slow), (LOOPBACK, port)]})
            )
            started = trio.current_time()
            stream = await open_tcp_stream_from(
                "slow.test", 0, {4: OTHER_LOOPBACK, 6: "::1"}, other_family="skip"
            )
            waited = trio.current_time() - started
            async with stream:
                assert stream.socket.getpeername() == (LOOPBACK, port)
                assert stream.socket.getsockname()[0] == OTHER_LOOPBACK
            await trio.testing.wait_all_tasks_blocked()
    assert _STAGGER * 0.9 <= waited < 1.0  # the stagger, not the slow address's timeout
    assert [host for host, _port in seen] == [OTHER_LOOPBACK]


async def test_an_ipv4_mapped_address_is_reached_over_ipv4_from_the_ipv4_source() -> None:
    require_loopbacks(OTHER_LOOPBACK)
    with trio.fail_after(DEADLINE):
        async with accepting() as (port, seen):
            trio.socket.set_custom_hostname_resolver(
                FixedResolver({"mapped.test": ["::ffff:127.0.0.1"]})
            )
            stream = await open_tcp_stream_from("mapped.test", port, {4: OTHER_LOOPBACK})
            async with stream:
                assert stream.socket.family == socket.AF_INET
    assert [host for host, _port in seen] == [OTHER_LOOPBACK]


async def test_a_family_without_a_source_is_skipped_or_left_to_the_system() -> None:
    with trio.fail_after(DEADLINE):
        async with accepting() as (port, seen):
            with pytest.raises(OSError, match="IPv4, and we connect over IPv6 from ::1 only") as e:
                await open_tcp_stream_from(LOOPBACK, port, {6: "::1"})
            assert e.value.errno == errno.EHOSTUNREACH
            stream = await open_tcp_stream_from(LOOPBACK, port, {6: "::1"}, other_family="any")
            await stream.aclose()
            # None: the system picks in that family.
            stream = await open_tcp_stream_from(LOOPBACK, port, {4: None})
            await stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
    assert [host for host, _port in seen] == [LOOPBACK, LOOPBACK]


async def test_every_attempt_failing_raises_the_last_failure() -> None:
    with trio.fail_after(DEADLINE):
        with pytest.raises(OSError, match=re.escape(os.strerror(errno.EADDRNOTAVAIL))) as caught:
            await open_tcp_stream_from(LOOPBACK, 9, {4: "192.0.2.1"})  # not ours: no bind
        assert caught.value.errno == errno.EADDRNOTAVAIL
        trio.socket.set_custom_hostname_resolver(FixedResolver({}))
        with pytest.raises(OSError, match="not known"):
            await open_tcp_stream_from("nowhere.test", 9, {4: None})


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="other_family"):
        await open_tcp_stream_from(LOOPBACK, 9, {4: None}, other_family="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sources maps IP versions"):
        await open_tcp_stream_from(LOOPBACK, 9, {5: None})
    with pytest.raises(ValueError, match="sources is empty"):
        await open_tcp_stream_from(LOOPBACK, 9, {})


async def test_a_socks_proxy_is_reached_from_the_source_of_its_family_of_two() -> None:
    # ::1 listed first: the proxy, on 127.0.0.1, is reached from the IPv4 one.
    require_loopbacks(OTHER_LOOPBACK)
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, accepting() as (port, _seen):
            stream = await open_socks5_stream(
                ProxyConfig(LOOPBACK, server.port),
                IPv4Address(LOOPBACK),
                port,
                timeout=DEADLINE,
                local_address=("::1", OTHER_LOOPBACK),
            )
            await stream.aclose()
    assert server.client_hosts == [OTHER_LOOPBACK]
    assert server.connects == [(LOOPBACK, port)]


async def test_the_other_family_behind_more_than_eight_addresses_is_still_tried_second() -> None:
    # Nine IPv6 addresses (all refusing: IPv6 broken here) before the IPv4 one: IPv4 is
    # moved second before the cut to eight, so it is reached (it was cut off before).
    count = _MAX_TARGETS + 1
    with refusing_ipv6_ports(count) as dead, trio.fail_after(DEADLINE):
        async with accepting() as (port, seen):
            answer = [("::1", dead_port) for dead_port in dead] + [(LOOPBACK, port)]
            trio.socket.set_custom_hostname_resolver(FixedResolver({"many.test": answer}))
            stream = await open_tcp_stream_from("many.test", 0, {4: None, 6: None})
            async with stream:
                assert stream.socket.getpeername() == (LOOPBACK, port)
            await trio.testing.wait_all_tasks_blocked()
    assert [host for host, _port in seen] == [LOOPBACK]


async def test_the_socks_proxy_behind_more_than_eight_addresses_gets_the_same_order() -> None:
    v6 = [f"2001:db8::{index}" for index in range(1, _MAX_TARGETS + 2)]
    trio.socket.set_custom_hostname_resolver(FixedResolver({"proxy.test": [*v6, LOOPBACK]}))
    targets = await _proxy_addresses(ProxyConfig("proxy.test", 1080), None)
    assert len(targets) == _MAX_TARGETS
    assert targets[1] == (socket.AF_INET, (LOOPBACK, 1080))
    assert [sockaddr[0] for _family, sockaddr in targets[2:]] == v6[1 : _MAX_TARGETS - 1]


@pytest.mark.parametrize(
    ("sources", "shown"),
    [
        ({4: "::1"}, "'::1'"),  # of the other version: each attempt's gaierror before
        ({4: IPv4Address(LOOPBACK)}, "IPv4Address"),  # not a str: a TypeError in a group
        ({4: "localhost"}, "'localhost'"),  # a name: looked up at every bind before
        ({6: "127.0.0.1"}, "'127.0.0.1'"),
    ],
)
async def test_a_source_that_is_not_an_ip_literal_of_its_version_is_refused(
    sources: dict[int, object], shown: str
) -> None:
    with pytest.raises(ValueError, match=f"sources maps IPv.* or None, not {shown}"):
        await open_tcp_stream_from(LOOPBACK, 9, sources)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [-1, 65536, 70000])
async def test_a_port_out_of_range_is_refused(port: int) -> None:
    # 70000 would be taken as 4464 by glibc.
    with pytest.raises(ValueError, match="port is 0 to 65535"):
        await open_tcp_stream_from(LOOPBACK, port, {4: None})
