"""Opening the handshaker's listeners: the ``listen`` entries of port 0 share one port, so two
of them that overlap (the same address, or an address and its family's unspecified address)
fail at once with a clear :class:`ListenError`, before anything is bound (the system would
refuse the second on every port tried); a cancel while the listeners are being opened leaves
none of them open.

Loopback only (127.0.0.1, ``::1``); the overlaps with an unspecified address fail before
anything is bound, and the rule itself is tested on addresses alone."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from ipaddress import ip_address

import pytest
import trio
import trio.testing
from tests._loopbacks import free_port
from tests._resolvers import FixedResolver

from bip_handshake import ListenError, open_handshaker
from bip_handshake import _handshaker as handshaker_module

OpenListeners = Callable[..., Awaitable[list[trio.SocketListener]]]
DEADLINE = 5.0
RULE = "every listen entry of port 0 gets the same port"


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("0.0.0.0", "127.0.0.2", True),
        ("127.0.0.2", "0.0.0.0", True),
        ("127.0.0.2", "127.0.0.2", True),
        ("0.0.0.0", "0.0.0.0", True),
        ("127.0.0.2", "127.0.0.3", False),
        ("::", "::1", True),
        ("::1", "::1", True),
        ("::", "0.0.0.0", False),  # an IPv6 listener is IPv6-only
        ("::", "127.0.0.1", False),
        ("::1", "127.0.0.1", False),
        ("fe80::1%1", "fe80::1%2", False),  # one address on two links
        ("fe80::1%1", "fe80::1%1", True),
    ],
)
def test_the_overlap_rule(first: str, second: str, overlap: bool) -> None:
    a, b = ip_address(first), ip_address(second)
    assert handshaker_module._overlaps(a, b) is overlap
    assert handshaker_module._overlaps(b, a) is overlap


def test_an_ipv4_mapped_address_is_its_ipv4_address() -> None:
    mapped = handshaker_module._listen_address(("::ffff:127.0.0.2", 0, 0, 0))
    assert mapped == ip_address("127.0.0.2")
    assert handshaker_module._overlaps(mapped, ip_address("0.0.0.0"))
    scoped = handshaker_module._listen_address(("fe80::1", 0, 0, 3))
    assert scoped == ip_address("fe80::1%3")
    with pytest.raises(ListenError, match="not an IP address"):
        handshaker_module._listen_address(("/run/socket",))


def test_the_first_overlap_names_the_later_entry_and_the_earlier() -> None:
    v4, v6, any4 = ip_address("127.0.0.1"), ip_address("::1"), ip_address("0.0.0.0")
    assert handshaker_module._first_overlap([("a", [v4, v6]), ("b", [ip_address("::2")])]) is None
    found = handshaker_module._first_overlap([("a", [v4, v6]), ("b", [v6]), ("c", [any4])])
    assert found == ("b", v6, "a", v6)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ([("0.0.0.0", 0), ("127.0.0.1", 0)], "127.0.0.1 port 0 overlaps 0.0.0.0: "),
        ([("127.0.0.1", 0), ("127.0.0.1", 0)], "127.0.0.1 port 0 overlaps 127.0.0.1: "),
        ([("::1", 0), ("127.0.0.1", 0), ("::", 0)], ":: port 0 overlaps ::1: "),
        (
            [("127.0.0.1", 0), ("::ffff:127.0.0.1", 0)],
            "::ffff:127.0.0.1 port 0 overlaps 127.0.0.1 (as 127.0.0.1 and 127.0.0.1): ",
        ),
        (
            [("127.0.0.1", 0), ("peers.test", 0)],
            "peers.test port 0 overlaps 127.0.0.1 (as 127.0.0.1 and 127.0.0.1): ",
        ),
    ],
    ids=["unspecified", "twice", "ipv6", "mapped", "name"],
)
async def test_overlapping_port_0_entries_fail_at_once_before_binding(
    monkeypatch: pytest.MonkeyPatch, listen: list[tuple[str, int]], message: str
) -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver({"peers.test": ["::1", "127.0.0.1"]}))
    bound: list[tuple[int, str]] = []

    async def never(port: int, *, host: str) -> list[trio.SocketListener]:  # pragma: no cover
        bound.append((port, host))
        raise AssertionError("bound despite the overlap")

    monkeypatch.setattr(trio, "open_tcp_listeners", never)
    with trio.fail_after(DEADLINE), pytest.raises(ListenError) as raised:
        async with open_handshaker(listen=listen):
            pytest.fail("listened on overlapping entries")  # pragma: no cover
    assert str(raised.value).startswith(message)
    assert RULE in str(raised.value)
    assert str(raised.value).endswith("; drop one")
    assert bound == []


async def test_a_name_that_cannot_be_resolved_fails_as_a_listen_error() -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver())
    with trio.fail_after(DEADLINE), pytest.raises(ListenError) as raised:
        async with open_handshaker(listen=[("127.0.0.1", 0), ("nowhere.test", 0)]):
            pytest.fail("listened on an unknown name")  # pragma: no cover
    assert str(raised.value).startswith("cannot listen on nowhere.test port 0: ")
    assert isinstance(raised.value.__cause__, socket.gaierror)


async def test_an_explicit_port_beside_port_0_on_one_address_is_no_overlap() -> None:
    port = free_port("127.0.0.1")
    with trio.fail_after(DEADLINE):
        async with open_handshaker(listen=[("127.0.0.1", 0), ("127.0.0.1", port)]) as handshaker:
            first, second = handshaker.listen_addresses
            assert second.port == port != first.port != 0


async def test_a_cancel_while_opening_listeners_leaves_none_open(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # The reviewer's scenario: two listeners opened, the third entry's still opening when the
    # caller's scope is cancelled. Closing them by awaiting each raised Cancelled at the first
    # and left the second open and bound.
    real: OpenListeners = trio.open_tcp_listeners
    opened: list[trio.SocketListener] = []

    async def third_hangs(port: int, *, host: str) -> list[trio.SocketListener]:
        if len(opened) == 2:
            await trio.sleep_forever()
        listeners = await real(0, host=host)  # explicit ports as port 0: never one in use
        opened.extend(listeners)
        return listeners

    monkeypatch.setattr(trio, "open_tcp_listeners", third_hangs)
    listen = [("127.0.0.1", 0), ("127.0.0.1", 40001), ("127.0.0.1", 40002)]
    with trio.move_on_after(1) as scope:
        await handshaker_module._open_listeners(listen)
    assert scope.cancelled_caught
    assert len(opened) == 2
    assert [listener.socket.fileno() for listener in opened] == [-1, -1]
