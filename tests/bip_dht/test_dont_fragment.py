"""uTP's path MTU probes over the DHT's shared socket: sent with "don't fragment", and a probe
the system refuses as too big reported to the sender (not counted as a lost datagram)."""

from __future__ import annotations

import errno
import socket
import sys

import pytest
import trio

from bip_dht import DHTSocketError, open_dht
from bip_dht._shell_datagrams import DatagramSender
from bip_handshake import FragmentControl, PeerAddress

LINUX = sys.platform == "linux"
IP_MTU_DISCOVER = 10
PMTUDISC_DONT, PMTUDISC_DO = 0, 2


class RecordingSocket:
    """A trio-like UDP socket: records the option switches around each send."""

    def __init__(self, error: OSError | None = None) -> None:
        self.events: list[object] = []
        self.error = error

    def setsockopt(self, level: int, option: int, value: int, /) -> None:
        self.events.append(("option", option, value))

    async def sendto(self, data: bytes, target: tuple[str, int]) -> int:
        await trio.lowlevel.checkpoint()
        self.events.append(("send", data))
        if self.error is not None:
            raise self.error
        return len(data)


async def test_a_probe_goes_with_dont_fragment_and_only_it() -> None:
    sock = RecordingSocket()
    control = FragmentControl(sock, socket.IPPROTO_IP, IP_MTU_DISCOVER)
    sender = DatagramSender(sock, control)  # type: ignore[arg-type]
    target = PeerAddress.parse("127.0.0.1:9")
    await sender.send(b"krpc", target)
    await sender.send(b"probe", target, dont_fragment=True)
    await sender.send(b"data", target)
    assert sock.events == [
        ("send", b"krpc"),
        ("option", IP_MTU_DISCOVER, PMTUDISC_DO),
        ("send", b"probe"),
        ("option", IP_MTU_DISCOVER, PMTUDISC_DONT),
        ("send", b"data"),
    ]


async def test_the_option_is_restored_when_the_probe_is_refused() -> None:
    sock = RecordingSocket(OSError(errno.EMSGSIZE, "Message too long"))
    control = FragmentControl(sock, socket.IPPROTO_IP, IP_MTU_DISCOVER)
    sender = DatagramSender(sock, control)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="too long") as caught:
        await sender.send(b"probe", PeerAddress.parse("127.0.0.1:9"), dont_fragment=True)
    assert caught.value.errno == errno.EMSGSIZE
    assert sock.events[-1] == ("option", IP_MTU_DISCOVER, PMTUDISC_DONT)


async def test_a_refused_probe_reaches_the_caller_a_refused_datagram_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def too_big(
        self: DatagramSender, data: object, address: PeerAddress, *, dont_fragment: bool = False
    ) -> None:
        await trio.lowlevel.checkpoint()
        raise OSError(errno.EMSGSIZE, "Message too long")

    with trio.fail_after(10):
        async with open_dht("127.0.0.2:0") as dht:
            monkeypatch.setattr(DatagramSender, "send", too_big)
            target = PeerAddress.parse("127.0.0.3:9")
            # An ordinary datagram refused so is a loss, counted (UDP promises nothing).
            await dht.send_datagram(b"\x41data", target)
            assert dht.statistics().send_errors == 1
            # A probe's sender must hear of it, with the system's errno.
            with pytest.raises(DHTSocketError) as caught:
                await dht.send_datagram(b"\x41probe", target, dont_fragment=True)
            assert isinstance(caught.value.__cause__, OSError)
            assert caught.value.__cause__.errno == errno.EMSGSIZE
            monkeypatch.undo()


@pytest.mark.skipif(not LINUX, reason="the don't-fragment switch is Linux's")
async def test_the_dht_socket_lets_datagrams_fragment_and_probes_leave() -> None:
    received: list[bytes] = []
    with trio.fail_after(10):
        async with open_dht("127.0.0.2:0") as dht:
            raw = dht._senders[4].socket
            assert raw.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) == PMTUDISC_DONT
            listener = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with listener:
                await listener.bind(("127.0.0.3", 0))
                port = listener.getsockname()[1]
                target = PeerAddress.parse(f"127.0.0.3:{port}")
                await dht.send_datagram(b"\x41" * 1400, target, dont_fragment=True)
                data, _ = await listener.recvfrom(2048)
                received.append(data)
            assert raw.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) == PMTUDISC_DONT
    assert received == [b"\x41" * 1400]
