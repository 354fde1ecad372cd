"""The LSD trio shell on loopback, on virtual time. Nothing is sent to a multicast address:
a test "hub" on 127.0.0.1 (or ::1) plays the group, sending every datagram it gets to every
member, the sender included, as the multicast loopback does."""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest
import trio
import trio.testing

from bip_handshake import (
    LocalServiceDiscovery,
    LsdUnavailableError,
    PeerAddress,
    open_lsd,
)
from bip_handshake._errors import LocalProtocolError
from bip_handshake._lsd import LSD_GROUP_V4, LSD_GROUP_V6, LsdAnnounce, decode_lsd_announce
from bip_handshake._lsd_shell import _multicast_options

H1 = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
H2 = bytes(range(20))

Found = list[tuple[bytes, PeerAddress]]


class Hub:
    """A stand-in for the multicast group: every datagram goes to every member."""

    def __init__(self) -> None:
        self.members: list[PeerAddress] = []
        self.heard: list[bytes] = []

    def join(self, *members: LocalServiceDiscovery) -> None:
        self.members.extend(member.local_address for member in members)

    async def serve(
        self, host: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
            await sock.bind((host, 0))
            self.address = sock.getsockname()
            task_status.started()
            while True:
                data, _ = await sock.recvfrom(4096)
                self.heard.append(data)
                for member in self.members:
                    await sock.sendto(data, (str(member.host), member.port))

    def group(self) -> PeerAddress:
        host, port = self.address[:2]
        return PeerAddress.parse(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def hashes_heard(self, port: int) -> list[bytes]:
        out: list[bytes] = []
        for data in self.heard:
            message = decode_lsd_announce(data)
            if message.port == port:
                out.extend(message.info_hashes)
        return out


def collect(into: Found) -> Callable[[bytes, PeerAddress], None]:
    return lambda info_hash, peer: into.append((info_hash, peer))


async def until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.01)


async def test_two_clients_find_each_other_and_withdraw(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub()
    seen_a: Found = []
    seen_b: Found = []
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve, "127.0.0.1")
        group = hub.group()
        async with (
            open_lsd(
                6881,
                group_address=group,
                bind_host="127.0.0.1",
                on_peer=collect(seen_a),
                announce_interval=10.0,
                min_gap=1.0,
            ) as a,
            open_lsd(
                6882,
                group_address=group,
                bind_host="127.0.0.1",
                on_peer=collect(seen_b),
                announce_interval=10.0,
                min_gap=1.0,
            ) as b,
        ):
            hub.join(a, b)
            assert a.cookie != b.cookie
            assert a.group == hub.group()
            await trio.sleep(1.0)  # both wait with nothing to send: an announce wakes them
            a.announce(H1)
            a.announce(H2)
            b.announce(H1)
            await until(lambda: bool(seen_a) and bool(seen_b))
            assert seen_b[0] == (H1, PeerAddress(IPv4Address("127.0.0.1"), 6881))
            assert seen_a[0] == (H1, PeerAddress(IPv4Address("127.0.0.1"), 6882))
            # Our own came back through the "group" and were dropped by their cookie.
            assert a.statistics().own >= 1
            assert b.statistics().own >= 1
            assert a.is_announced(H2)
            assert b.statistics().unknown_hashes >= 1  # H2 is not b's

            a.withdraw(H1)
            assert not a.is_announced(H1)
            start = trio.current_time()
            seen_a.clear()
            heard_before = len(hub.heard)
            await trio.sleep(25.0)  # two rounds of b announcing H1, and of a announcing H2
            assert seen_a == []  # H1 is no longer ours to hear about
            assert hub.hashes_heard(6881)[-1] == H2  # a goes on announcing H2 alone
            new = [decode_lsd_announce(d) for d in hub.heard[heard_before:]]
            assert all(H1 not in m.info_hashes for m in new if m.port == 6881)
            assert trio.current_time() - start == pytest.approx(25.0)
        nursery.cancel_scope.cancel()


async def test_a_torrent_added_later_is_announced_at_once_not_after_the_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the default minute between regular messages, the first announce of a torrent
    added right after another's still goes at once: the two clients meet in a moment."""
    hub = Hub()
    seen: Found = []
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve, "127.0.0.1")
        group = hub.group()
        async with (
            open_lsd(6881, group_address=group, bind_host="127.0.0.1", on_peer=collect(seen)) as a,
            open_lsd(6882, group_address=group, bind_host="127.0.0.1") as b,
        ):
            hub.join(a, b)
            a.announce(H2)
            b.announce(H2)  # each client's first message: at once
            await until(lambda: len(hub.heard) == 2, seconds=10.0)
            await trio.sleep(5.0)
            start = trio.current_time()
            a.announce(H1)
            b.announce(H1)  # their second messages, well within the minute
            await until(lambda: (H1, PeerAddress(IPv4Address("127.0.0.1"), 6882)) in seen, 10.0)
            assert trio.current_time() - start < 1.0  # virtual time: at once
            assert hub.hashes_heard(6881) == [H2, H2, H1]  # H2's retry at +2 s
        nursery.cancel_scope.cancel()


async def test_ipv6_unicast_group(autojump_clock: trio.testing.MockClock) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:  # pragma: no cover - a host without IPv6 loopback
        pytest.skip("no ::1")
    hub = Hub()
    seen: Found = []
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve, "::1")
        group = str(hub.group())
        async with (
            open_lsd(
                7001, family=6, group_address=group, bind_host="::1", on_peer=collect(seen)
            ) as a,
            open_lsd(7002, family=6, group_address=group, bind_host="::1") as b,
        ):
            hub.join(a, b)
            assert a.local_address.host == IPv6Address("::1")
            a.announce(H1)
            b.announce(H1)
            await until(lambda: bool(seen))
            assert seen[0] == (H1, PeerAddress(IPv6Address("::1"), 7002))
        nursery.cancel_scope.cancel()


async def test_close_is_immediate_and_final(autojump_clock: trio.testing.MockClock) -> None:
    async with open_lsd(6881, group_address="127.0.0.1:9", bind_host="127.0.0.1") as lsd:
        lsd.announce(H1)
        await trio.sleep(1)
        start = trio.current_time()
    assert trio.current_time() == start  # nothing to say goodbye with
    assert lsd._sock.fileno() == -1
    assert lsd.local_address.host == IPv4Address("127.0.0.1")  # still told
    with pytest.raises(LocalProtocolError):
        lsd.announce(H2)
    lsd.withdraw(H1)  # harmless
    with trio.move_on_after(5):
        async with open_lsd(6881, group_address="127.0.0.1:9", bind_host="127.0.0.1"):
            await trio.sleep_forever()
    assert trio.current_time() == pytest.approx(start + 5)


async def test_a_failing_send_is_lost_like_a_datagram(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake.lsd")
    # Broadcast without SO_BROADCAST: the kernel refuses the send, nothing leaves.
    async with open_lsd(
        6881,
        group_address="255.255.255.255:6771",
        bind_host="127.0.0.1",
        min_gap=0,
        first_retries=0,  # H1's retry would fall at 2 s, with the assertion
    ) as lsd:
        lsd.announce(H1)
        await trio.sleep(1)
        lsd.announce(H2)
        await trio.sleep(1)
        assert lsd.statistics().sent == 2  # handed out twice, the task still running
    assert "LSD send to 255.255.255.255:6771 failed" in caplog.text


async def test_a_flooding_host_is_limited(autojump_clock: trio.testing.MockClock) -> None:
    seen: Found = []
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hostile:
        await hostile.bind(("127.0.0.1", 0))
        async with open_lsd(
            6881,
            group_address="127.0.0.1:9",
            bind_host="127.0.0.1",
            on_peer=collect(seen),
            source_rate=1.0,
            source_burst=5,
        ) as lsd:
            lsd.announce(H1)
            target = (str(lsd.local_address.host), lsd.local_address.port)
            flood = LsdAnnounce(1234, (H1,), cookie="evil").encode()
            for i in range(300):
                # Every third datagram is garbage, too long to be read whole.
                await hostile.sendto(flood if i % 3 else b"\xff" * 1500, target)
            await trio.sleep(0.5)  # less than a message earned back
            stats = lsd.statistics()
            assert stats.received >= 150  # the kernel may drop some, not most
            assert 1 <= len(seen) <= 5  # the burst alone got through
            assert stats.malformed + len(seen) <= 5
            assert stats.rate_limited == stats.received - 5
            await trio.sleep(10.0)  # the allowance comes back: the host is heard again
            heard = len(seen)
            await hostile.sendto(flood, target)
            await until(lambda: len(seen) > heard)
            assert seen[-1] == (H1, PeerAddress(IPv4Address("127.0.0.1"), 1234))


async def test_on_peer_errors_end_the_block_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def explode(info_hash: bytes, peer: PeerAddress) -> None:
        raise KeyError("the caller's own")

    async def run_until_the_callback_fails() -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            await peer.bind(("127.0.0.1", 0))
            async with open_lsd(
                6881, group_address="127.0.0.1:9", bind_host="127.0.0.1", on_peer=explode
            ) as lsd:
                lsd.announce(H1)
                address = lsd.local_address
                message = LsdAnnounce(1, (H1,)).encode()
                await peer.sendto(message, (str(address.host), address.port))
                await trio.sleep(10)

    with pytest.raises(KeyError):
        await run_until_the_callback_fails()


async def test_a_group_that_cannot_be_joined_raises_an_os_error() -> None:
    # No interface has this address: joining fails before anything is sent.
    with pytest.raises(LsdUnavailableError) as caught:
        async with open_lsd(6881, bind_port=0, interface="198.51.100.77"):
            pass  # pragma: no cover
    assert isinstance(caught.value, OSError)
    assert caught.value.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.EINVAL)
    assert "239.192.152.143:6771" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(LsdUnavailableError) as caught:
        async with open_lsd(6881, family=6, bind_port=0, interface="no-such-if0"):
            pass  # pragma: no cover
    assert caught.value.errno == errno.ENODEV
    assert str(caught.value) == (
        f"[Errno {errno.ENODEV}] LSD cannot use interface 'no-such-if0': no such interface"
    )


async def test_an_empty_interface_name_is_a_bad_argument() -> None:
    # Not "[Errno None] ... None": the caller's mistake, said as such.
    with pytest.raises(LocalProtocolError, match="a non-empty name, got ''"):
        async with open_lsd(6881, family=6, bind_port=0, interface=""):
            pass  # pragma: no cover


async def test_a_port_in_use_raises_an_os_error() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        await taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(LsdUnavailableError, match=r"127\.0\.0\.1 port"):
            async with open_lsd(
                6881, group_address="127.0.0.1:9", bind_host="127.0.0.1", bind_port=port
            ):
                pass  # pragma: no cover


def test_multicast_options_as_libtorrent_sets_them() -> None:
    v4 = _multicast_options(LSD_GROUP_V4)
    assert v4 == [
        (socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, bytes([239, 192, 152, 143, 0, 0, 0, 0])),
        (socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, b"\x01"),
        (socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, b"\x01"),
    ]
    on_eth = _multicast_options(LSD_GROUP_V4, "192.0.2.2", ttl=4)
    assert on_eth[0][2] == bytes([239, 192, 152, 143, 192, 0, 2, 2])
    assert on_eth[1][2] == b"\x04"
    assert on_eth[3] == (socket.IPPROTO_IP, socket.IP_MULTICAST_IF, bytes([192, 0, 2, 2]))
    v6 = _multicast_options(LSD_GROUP_V6, 3)
    assert v6 == [
        (
            socket.IPPROTO_IPV6,
            socket.IPV6_JOIN_GROUP,
            LSD_GROUP_V6.host.packed + struct.pack("@I", 3),
        ),
        (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1),
        (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1),
        (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, 3),
    ]
    assert len(_multicast_options(LSD_GROUP_V6)) == 3  # index 0: the system's choice
    join_on_lo = _multicast_options(LSD_GROUP_V6, "lo")[0][2]
    assert isinstance(join_on_lo, bytes)
    assert join_on_lo[16:] == struct.pack("@I", socket.if_nametoindex("lo"))
    unicast = PeerAddress(IPv4Address("127.0.0.1"), 6771)
    bad_calls: list[Callable[[], object]] = [
        lambda: _multicast_options(unicast),
        lambda: _multicast_options(LSD_GROUP_V4, ttl=0),
        lambda: _multicast_options(LSD_GROUP_V4, ttl=True),
        lambda: _multicast_options(LSD_GROUP_V4, "eth0"),
        lambda: _multicast_options(LSD_GROUP_V4, 2),
        lambda: _multicast_options(LSD_GROUP_V6, -1),
        lambda: _multicast_options(LSD_GROUP_V6, 1.5),  # type: ignore[arg-type]
    ]
    for bad in bad_calls:
        with pytest.raises(LocalProtocolError):
            bad()


@pytest.mark.parametrize(
    "options",
    [
        {"family": 5},
        {"family": True},
        {"family": 6, "group_address": "127.0.0.1:6771"},
        {"group_address": "not an address"},
        {"group_address": 6771},
        {"min_gap": -1},
        {"cookie": "two words"},
        {"interface": 7},
        {"interface": ""},
        {"family": 6, "interface": ""},
        {"family": 6, "interface": "lo\0"},
        {"bind_host": "localhost"},
        {"bind_host": "::1"},
        {"bind_port": 65536},
        {"bind_port": "6771"},
    ],
)
async def test_bad_arguments(options: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        async with open_lsd(6881, **{"bind_port": 0, **options}):  # type: ignore[arg-type]
            pass  # pragma: no cover
