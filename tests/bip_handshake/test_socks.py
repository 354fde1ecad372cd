"""The sans-IO SOCKS5 client codec (bip_handshake._socks) against the in-test server's codec."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests._socks_server import (
    decode_auth,
    decode_greeting,
    decode_request,
    encode_auth_status,
    encode_method,
    encode_reply,
)

from bip_handshake._socks import (
    MAX_REPLY_SIZE,
    SOCKS_REPLY_REASONS,
    Socks5Client,
    SocksAuthError,
    SocksError,
    SocksProtocolError,
    SocksReplyError,
    SocksState,
    encode_address,
)

hosts = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(v=6),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,200}", fullmatch=True),
)
ports = st.integers(0, 0xFFFF)
credentials = st.binary(min_size=1, max_size=255)


def _feed(client: Socks5Client, data: bytes, *, step: int = 1000) -> None:
    """Feed ``data`` as a reader taking at most ``receive_size`` at a time would."""
    while data:
        size = min(client.receive_size, step)
        client.receive_data(data[:size])
        data = data[size:]


@given(hosts, ports, st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6), hosts), ports)
def test_connect_round_trip_without_auth(
    host: IPv4Address | IPv6Address | str,
    port: int,
    bound: IPv4Address | IPv6Address | str,
    bound_port: int,
) -> None:
    client = Socks5Client(host, port)
    assert decode_greeting(client.data_to_send()) == (0,)
    _feed(client, encode_method(0))
    request = decode_request(client.data_to_send())
    assert (request.command, request.host, request.port) == (1, host, port)
    reply = encode_reply(0, bound, bound_port)
    assert len(reply) <= MAX_REPLY_SIZE
    _feed(client, reply, step=3)
    assert client.done
    assert client.state is SocksState.DONE
    assert client.bound == (str(bound), bound_port)
    assert client.receive_size == 0
    assert client.data_to_send() == b""


@given(credentials, credentials, st.sampled_from([1, 5]))
def test_username_password_round_trip(user: bytes, password: bytes, version: int) -> None:
    client = Socks5Client("10.1.2.3", 6881, username=user, password=password)
    assert decode_greeting(client.data_to_send()) == (0, 2)
    _feed(client, encode_method(2))
    assert client.state is SocksState.AUTH
    assert decode_auth(client.data_to_send()) == (user, password)
    _feed(client, bytes([version, 0]))  # some proxies answer with version 5: accepted
    assert decode_request(client.data_to_send()).host == IPv4Address("10.1.2.3")
    _feed(client, encode_reply(0, IPv4Address("10.0.0.9"), 1))
    assert client.bound == ("10.0.0.9", 1)


def test_a_proxy_needing_no_auth_skips_it_though_we_have_credentials() -> None:
    client = Socks5Client("::1", 80, username="me", password="pw")
    client.data_to_send()
    client.receive_data(encode_method(0))
    assert client.state is SocksState.REPLY
    assert decode_request(client.data_to_send()).host == IPv6Address("::1")


def test_credentials_refused() -> None:
    client = Socks5Client("10.0.0.1", 80, username="me", password="wrong")
    client.receive_data(encode_method(2))
    with pytest.raises(SocksAuthError, match="refused our username and password"):
        client.receive_data(encode_auth_status(1))
    assert client.state is SocksState.FAILED
    with pytest.raises(RuntimeError, match="over"):
        client.receive_data(b"\x05")


@pytest.mark.parametrize(
    ("credentials", "method", "error", "match"),
    [
        (False, 0xFF, SocksAuthError, "none of our methods"),
        (True, 0xFF, SocksAuthError, "none of our methods"),
        (False, 2, SocksProtocolError, "did not offer"),
        (False, 1, SocksProtocolError, "did not offer"),
    ],
)
def test_method_choices_we_cannot_follow(
    credentials: bool, method: int, error: type[SocksError], match: str
) -> None:
    auth = {"username": "u", "password": "p"} if credentials else {}
    client = Socks5Client("10.0.0.1", 80, **auth)
    with pytest.raises(error, match=match):
        client.receive_data(encode_method(method))


@pytest.mark.parametrize("code", [*SOCKS_REPLY_REASONS, 9, 255])
def test_every_reply_code_is_our_error(code: int) -> None:
    client = Socks5Client("example.org", 443)
    client.receive_data(encode_method(0))
    client.data_to_send()
    # The code alone is enough (a proxy may close right after it).
    with pytest.raises(SocksReplyError) as raised:
        client.receive_data(encode_reply(code, IPv4Address(0), 0)[:2])
    assert raised.value.code == code
    assert isinstance(raised.value, OSError)
    reason, errno_value = SOCKS_REPLY_REASONS.get(code, ("unassigned failure code", None))
    assert raised.value.errno == errno_value
    assert reason in str(raised.value)
    assert str(raised.value).startswith("the proxy could not connect")


def test_refused_is_econnrefused() -> None:
    assert SocksReplyError(5).errno == errno.ECONNREFUSED


@pytest.mark.parametrize(
    ("stage_bytes", "match"),
    [
        (b"\x04\x00", "not a SOCKS5 proxy"),
        (b"", "closed the connection"),
        (b"\x05\x00\x00", "3 bytes where 2"),
    ],
)
def test_bad_method_answers(stage_bytes: bytes, match: str) -> None:
    client = Socks5Client("10.0.0.1", 80)
    with pytest.raises(SocksProtocolError, match=match):
        client.receive_data(stage_bytes)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"\x04\x00\x00\x01\x00", "version 4"),
        (b"\x05\x00\x00\x07\x00", "address type 7"),
        (b"\x05\x00\x00\x03\x00", "empty bound name"),
    ],
)
def test_bad_replies(reply: bytes, match: str) -> None:
    client = Socks5Client("10.0.0.1", 80)
    client.receive_data(encode_method(0))
    with pytest.raises(SocksProtocolError, match=match):
        client.receive_data(reply)


def test_a_reply_is_never_read_past_its_end() -> None:
    client = Socks5Client("10.0.0.1", 80)
    client.receive_data(encode_method(0))
    reply = encode_reply(0, "x" * 255, 7)
    assert len(reply) == MAX_REPLY_SIZE
    client.receive_data(reply[:5])
    assert client.receive_size == MAX_REPLY_SIZE - 5
    with pytest.raises(SocksProtocolError, match="where 257 were expected"):
        client.receive_data(reply[5:] + b"\x13BitTorrent protocol")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"username": "u"}, "both a username and a password"),
        ({"username": "", "password": "p"}, "username must be 1 to 255 bytes, not 0"),
        ({"username": "u", "password": "p" * 256}, "password must be 1 to 255 bytes, not 256"),
        ({"username": "é" * 128, "password": "p"}, "not 256"),
    ],
)
def test_credentials_are_checked_up_front(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Socks5Client("10.0.0.1", 80, **kwargs)


@pytest.mark.parametrize(
    ("host", "port", "match"),
    [
        ("a" * 256, 80, "1 to 255 bytes, not 256"),
        ("", 80, "1 to 255 bytes, not 0"),
        ("10.0.0.1", 65536, "0..65535"),
        ("10.0.0.1", -1, "0..65535"),
    ],
)
def test_targets_are_checked_up_front(host: str, port: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Socks5Client(host, port)


def test_target_encodings() -> None:
    assert encode_address("[::1]", 1)[0] == 4
    assert encode_address("bücher.example", 1)[2:].startswith(b"xn--bcher-kva")
    with pytest.raises(TypeError):
        encode_address(12, 1)  # type: ignore[arg-type]


@given(st.booleans(), st.lists(st.binary(min_size=0, max_size=300), max_size=6))
def test_garbage_is_our_error_never_a_crash(auth: bool, chunks: list[bytes]) -> None:
    credentials = {"username": "u", "password": "p"} if auth else {}
    client = Socks5Client("example.org", 80, **credentials)
    for chunk in chunks:
        client.data_to_send()
        if client.state in (SocksState.DONE, SocksState.FAILED):
            break
        try:
            client.receive_data(chunk)
        except SocksError:
            assert client.state.name == "FAILED"  # a name: mypy keeps the narrowing above
            assert client.data_to_send() == b""
            break
        assert 0 <= client.receive_size <= MAX_REPLY_SIZE
