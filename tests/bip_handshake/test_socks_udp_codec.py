"""SOCKS5 UDP ASSOCIATE without I/O: the request (bip_handshake._socks.Socks5Client with
SocksCommand.UDP_ASSOCIATE) and RFC 1928's datagram header, against the in-test server's
codec (tests._socks_server)."""

from __future__ import annotations

import errno
from array import array
from ipaddress import IPv4Address, IPv6Address, ip_address
from itertools import islice

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests._socks_server import (
    decode_datagram,
    decode_request,
    encode_datagram,
    encode_method,
    encode_reply,
)

from bip_handshake._socks import (
    MAX_DATAGRAM_SIZE,
    Socks5Client,
    SocksCommand,
    SocksDatagram,
    SocksError,
    SocksProtocolError,
    SocksReplyError,
    SocksUnavailableError,
    decode_socks5_datagram,
    encode_socks5_datagram,
)
from bip_handshake._socks_udp import MAX_RETRY_INTERVAL, _retry_delays


def _not_an_address(name: str) -> bool:
    try:
        ip_address(name)
    except ValueError:
        return True
    return False


# Names that read as an IP address are sent as that address: not names.
names = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,254}", fullmatch=True).filter(_not_an_address)
hosts = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6), names)
ports = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=300)


# ------------------------------------------------------------------------- the request


def test_udp_associate_request_and_relay() -> None:
    client = Socks5Client("0.0.0.0", 0, command=SocksCommand.UDP_ASSOCIATE)
    assert client.command is SocksCommand.UDP_ASSOCIATE
    client.data_to_send()
    client.receive_data(encode_method(0))
    request = decode_request(client.data_to_send())
    assert (request.command, request.host, request.port) == (3, IPv4Address(0), 0)
    reply = encode_reply(0, IPv4Address("10.0.0.7"), 40000)
    client.receive_data(reply[:5])
    client.receive_data(reply[5:])
    assert client.done
    assert client.bound == ("10.0.0.7", 40000)
    assert client.bound_host == IPv4Address("10.0.0.7")


def test_connect_stays_the_default() -> None:
    client = Socks5Client("10.0.0.1", 80)
    assert client.command is SocksCommand.CONNECT
    assert int(SocksCommand.CONNECT) == 1
    assert int(SocksCommand.UDP_ASSOCIATE) == 3
    client.data_to_send()
    client.receive_data(encode_method(0))
    assert decode_request(client.data_to_send()).command == 1


def test_a_domain_bound_address_is_told_apart() -> None:
    client = Socks5Client("::", 0, command=SocksCommand.UDP_ASSOCIATE)
    client.receive_data(encode_method(0))
    client.receive_data(encode_reply(0, "10.0.0.1", 9)[:5])
    client.receive_data(encode_reply(0, "10.0.0.1", 9)[5:])
    assert client.bound == ("10.0.0.1", 9)
    assert client.bound_host == "10.0.0.1"  # a name that looks like an address


def test_a_refused_association_says_so() -> None:
    client = Socks5Client("0.0.0.0", 0, command=SocksCommand.UDP_ASSOCIATE)
    client.receive_data(encode_method(0))
    with pytest.raises(SocksReplyError) as raised:
        client.receive_data(encode_reply(7, IPv4Address(0), 0)[:2])
    assert raised.value.command is SocksCommand.UDP_ASSOCIATE
    assert raised.value.errno == errno.EOPNOTSUPP
    assert str(raised.value) == (
        "the proxy refused a UDP association: command not supported (SOCKS5 reply 7)"
    )


@pytest.mark.parametrize("command", [2, 0, 4, "connect"])
def test_unknown_commands_are_refused(command: object) -> None:
    with pytest.raises(ValueError, match="CONNECT or UDP_ASSOCIATE"):
        Socks5Client("0.0.0.0", 0, command=command)  # type: ignore[call-overload]


def test_unavailable_is_a_socks_error() -> None:
    error = SocksUnavailableError("no association")
    assert isinstance(error, SocksError)
    assert isinstance(error, OSError)
    assert error.errno == errno.EACCES
    assert str(error) == "no association"


def test_retry_delays_double_up_to_a_minute() -> None:
    assert list(islice(_retry_delays(5.0), 6)) == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert list(islice(_retry_delays(0.5), 3)) == [0.5, 1.0, 2.0]
    assert list(islice(_retry_delays(90.0), 2)) == [90.0, 90.0]
    assert MAX_RETRY_INTERVAL == 60.0


# ------------------------------------------------------------------------- datagrams


@pytest.mark.parametrize(
    ("host", "port", "payload", "wire"),
    [
        ("10.0.0.1", 6881, b"d1:ad", "000000010a0000011ae1" + b"d1:ad".hex()),
        (IPv6Address("::1"), 1, b"", "00000004" + "00" * 15 + "01" + "0001"),
        ("router.example", 6881, b"x", "000000030e" + b"router.example".hex() + "1ae1" + "78"),
        ("[::2]", 2, b"", "00000004" + "00" * 15 + "02" + "0002"),
    ],
)
def test_datagram_examples(host: str | IPv6Address, port: int, payload: bytes, wire: str) -> None:
    data = encode_socks5_datagram(host, port, payload)
    assert data.hex() == wire
    decoded = decode_socks5_datagram(data)
    assert (decoded.port, decoded.payload) == (port, payload)
    assert str(decoded.host) == str(host).strip("[]")


@given(hosts, ports, payloads)
def test_datagram_round_trip(
    host: IPv4Address | IPv6Address | str, port: int, payload: bytes
) -> None:
    data = encode_socks5_datagram(host, port, payload)
    assert decode_socks5_datagram(data) == SocksDatagram(host, port, payload)
    assert decode_socks5_datagram(memoryview(data)) == SocksDatagram(host, port, payload)
    # The in-test proxy reads it the same way, and writes what we read.
    assert decode_datagram(data) == (host, port, payload)
    assert decode_socks5_datagram(encode_datagram(host, port, payload)) == SocksDatagram(
        host, port, payload
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "0 bytes: shorter than its header"),
        (b"\x00\x00\x00\x01", "4 bytes: shorter than its header"),
        (b"\x00\x01\x00\x01" + bytes(6), "RSV 0001"),
        (b"\x01\x00\x00\x01" + bytes(6), "RSV 0100"),
        (b"\x00\x00\x01\x01" + bytes(6), "fragment \\(FRAG 1\\)"),
        (b"\x00\x00\xff\x01" + bytes(6), "FRAG 255"),
        (b"\x00\x00\x00\x02" + bytes(6), "address type 2"),
        (b"\x00\x00\x00\x01" + bytes(5), "9 bytes: its header needs 10"),
        (b"\x00\x00\x00\x04" + bytes(17), "21 bytes: its header needs 22"),
        (b"\x00\x00\x00\x03\x05abcd\x00", "10 bytes: its header needs 12"),
        (b"\x00\x00\x00\x03\x00\x00\x00", "empty domain name"),
        (b"\x00\x00\x00\x03\x01\xe9\x00\x00", "non-ASCII domain name"),
    ],
)
def test_bad_datagrams(data: bytes, match: str) -> None:
    with pytest.raises(SocksProtocolError, match=match):
        decode_socks5_datagram(data)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("a" * 256, 1, b""), ValueError, "1 to 255 bytes, not 256"),
        (("", 1, b""), ValueError, "1 to 255 bytes, not 0"),
        (("10.0.0.1", 65536, b""), ValueError, "0..65535"),
        (("10.0.0.1", 1, bytes(MAX_DATAGRAM_SIZE - 9)), ValueError, "65536 bytes"),
        (("10.0.0.1", 1, "text"), TypeError, "payload is bytes, not str"),
        ((12, 1, b""), TypeError, "host name or an IP address"),
    ],
)
def test_unsendable_datagrams(args: tuple[object, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        encode_socks5_datagram(*args)  # type: ignore[arg-type]


def test_the_largest_datagram() -> None:
    data = encode_socks5_datagram("10.0.0.1", 1, bytes(MAX_DATAGRAM_SIZE - 10))
    assert len(data) == MAX_DATAGRAM_SIZE
    assert len(decode_socks5_datagram(data).payload) == MAX_DATAGRAM_SIZE - 10


def test_a_memoryview_of_wide_items_is_measured_in_bytes() -> None:
    # 40,000 int16 items: len() says 40,000, the datagram would be 80,010 bytes.
    wide = memoryview(array("H", bytes(80_000)))
    assert len(wide) == 40_000
    with pytest.raises(ValueError, match="80010 bytes"):
        encode_socks5_datagram("10.0.0.1", 1, wide)
    narrow = memoryview(array("H", [0x0102]))
    assert encode_socks5_datagram("10.0.0.1", 1, narrow)[10:] == bytes(narrow)


@given(st.one_of(st.binary(max_size=300), st.binary(max_size=40).map(lambda b: bytes(3) + b)))
def test_garbage_is_our_error_or_a_datagram(data: bytes) -> None:
    try:
        datagram = decode_socks5_datagram(data)
    except SocksProtocolError:
        return
    assert data[:3] == bytes(3)
    assert isinstance(datagram.host, IPv4Address | IPv6Address | str)
    assert 0 <= datagram.port <= 0xFFFF
    assert data.endswith(datagram.payload)
