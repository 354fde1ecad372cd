"""SOCKS5 over trio (bip_handshake._socks_shell) against the in-test proxy on 127.0.0.1."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from tests._resolvers import FixedResolver
from tests._socks_server import encode_method, encode_reply, serve_socks5

from bip_handshake import PeerAddress, PeerId, open_handshaker
from bip_handshake._socks import SocksAuthError, SocksError, SocksProtocolError, SocksReplyError
from bip_handshake._socks_shell import (
    ProxyConfig,
    SocksDialer,
    open_socks5_stream,
    parse_proxy_url,
    resolve_proxy_target,
)
from bip_metainfo import InfoHash

TORRENT = InfoHash(v1=bytes(range(20)))


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A TCP echo server on 127.0.0.1: its port."""

    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(1024):
                await stream.send_all(data)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, echo, listeners)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("socks5://127.0.0.1:9050", ProxyConfig("127.0.0.1", 9050)),
        ("SOCKS5H://proxy.example", ProxyConfig("proxy.example", 1080, remote_dns=True)),
        ("socks5://[::1]:1/", ProxyConfig("::1", 1)),
        ("socks5://a%40b:p%3Aw@h:2", ProxyConfig("h", 2, "a@b", "p:w")),
    ],
)
def test_parse_proxy_url(url: str, expected: ProxyConfig) -> None:
    assert parse_proxy_url(url) == expected


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://127.0.0.1:3128", "socks5:// or socks5h://, not 'http://'"),
        ("127.0.0.1:1080", "without a scheme"),
        ("socks5://", "no host"),
        ("socks5://h:0", "1..65535"),
        ("socks5://h:99999", "not a valid proxy URL"),
        ("socks5://h:1/path", "nothing after"),
        ("socks5://h:1?x=1", "nothing after"),
        ("socks5://user@h:1", "needs a password"),
        ("socks5://user:@h:1", "password must be 1 to 255 bytes"),
    ],
)
def test_bad_proxy_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_proxy_url(url)


def test_the_password_is_never_shown() -> None:
    proxy = parse_proxy_url("socks5://me:hunter2@h:1")
    assert "hunter2" not in repr(proxy)
    assert "hunter2" not in proxy.url
    with pytest.raises(ValueError, match="nothing after") as raised:
        parse_proxy_url("socks5://me:hunter2@h:1/x")
    assert "hunter2" not in str(raised.value)


def test_a_password_cut_by_a_reserved_character_is_never_quoted() -> None:
    # A "?" ends the authority: urlsplit read "s3cr3t" as the port, and its error quoted it.
    for url in (
        "socks5://me:s3cr3t?x@127.0.0.1",
        "socks5://me:s3cr3t/x@h",
        "socks5://me:12#s3cr3t@h",
    ):
        with pytest.raises(ValueError, match="percent-encode / \\? # @") as raised:
            parse_proxy_url(url)
        assert "s3cr3t" not in str(raised.value)
    with pytest.raises(ValueError, match="not a valid proxy URL") as raised:
        parse_proxy_url("socks5://me:s3cr3t")  # no "@" after a cut: no hint
    assert "s3cr3t" not in str(raised.value)
    assert "percent-encode" not in str(raised.value)
    with pytest.raises(ValueError, match="without a scheme") as raised:
        parse_proxy_url("me:s3cr3t://h")  # not a scheme: not quoted either
    assert "s3cr3t" not in str(raised.value)


# The password's letters appear in no message of parse_proxy_url's (nor in its scheme, user
# or hosts): any of them in an error is a piece of the password.
SECRET_LETTERS = "QXZJ"


@given(
    chunks=st.lists(st.text(SECRET_LETTERS, min_size=1, max_size=8), min_size=1, max_size=4),
    separators=st.lists(st.sampled_from(list("/?#@:[]% \t")), max_size=4),
    host=st.sampled_from(["127.0.0.1", "[::1]", "proxy.example", ""]),
    port=st.sampled_from(["", ":1080", ":0", ":99999", ":x"]),
    scheme=st.sampled_from(["socks5", "socks5h", "SOCKS5H", "http"]),
)
def test_no_piece_of_the_password_in_any_error(
    chunks: list[str], separators: list[str], host: str, port: str, scheme: str
) -> None:
    password = "".join(
        chunk + (separators[i] if i < len(separators) else "") for i, chunk in enumerate(chunks)
    )
    url = f"{scheme}://me:{password}@{host}{port}"
    try:
        proxy = parse_proxy_url(url)
        shown = repr(proxy) + proxy.url
    except (ValueError, TypeError) as error:
        shown = str(error)
    assert not any(letter in shown for letter in SECRET_LETTERS), shown


async def test_resolve_proxy_target() -> None:
    local = ProxyConfig("127.0.0.1")
    remote = ProxyConfig("127.0.0.1", remote_dns=True)
    assert await resolve_proxy_target(local, "[::1]", 1) == await resolve_proxy_target(
        remote, "::1", 1
    )
    assert await resolve_proxy_target(remote, "localhost", 1) == "localhost"
    assert (await resolve_proxy_target(local, "localhost", 1)).is_loopback  # type: ignore[union-attr]


# ------------------------------------------------------------------------- streams


async def test_a_stream_through_the_proxy_carries_the_targets_bytes() -> None:
    with trio.fail_after(5):
        async with echo_server() as port, serve_socks5() as proxy:
            config = parse_proxy_url(proxy.url())
            stream = await open_socks5_stream(config, "127.0.0.1", port, timeout=5)
            async with stream:
                await stream.send_all(b"hello")
                assert await stream.receive_some(5) == b"hello"
            # socks5h://: the proxy resolves the name.
            remote = parse_proxy_url(proxy.url(remote_dns=True))
            async with await open_socks5_stream(remote, "localhost", port, timeout=5) as stream:
                await stream.send_all(b"x")
                assert await stream.receive_some(1) == b"x"
            assert proxy.connects == [("127.0.0.1", port), ("localhost", port)]


async def test_credentials_accepted_and_refused() -> None:
    with trio.fail_after(5):
        async with echo_server() as port, serve_socks5(username=b"me", password=b"pw") as proxy:
            good = ProxyConfig("127.0.0.1", proxy.port, "me", "pw")
            async with await open_socks5_stream(good, "127.0.0.1", port, timeout=5):
                pass
            with pytest.raises(SocksAuthError, match="refused our username"):
                await open_socks5_stream(
                    ProxyConfig("127.0.0.1", proxy.port, "me", "no"), "127.0.0.1", port, timeout=5
                )
            with pytest.raises(SocksAuthError, match="none of our methods"):
                await open_socks5_stream(
                    ProxyConfig("127.0.0.1", proxy.port), "127.0.0.1", port, timeout=5
                )
            assert proxy.auth_failures == 1
            assert len(proxy.connects) == 1


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 6, 7, 8, 42])
async def test_each_reply_code(code: int) -> None:
    with trio.fail_after(5):
        async with serve_socks5(reply_code=code) as proxy:
            config = ProxyConfig("127.0.0.1", proxy.port)
            with pytest.raises(SocksReplyError) as raised:
                await open_socks5_stream(config, "127.0.0.1", 9, timeout=5)
            assert raised.value.code == code


async def test_the_proxys_rules_and_a_refused_target() -> None:
    with trio.fail_after(5):
        async with serve_socks5() as proxy:
            config = ProxyConfig("127.0.0.1", proxy.port)
            with pytest.raises(SocksReplyError) as raised:
                await open_socks5_stream(config, "192.0.2.1", 80, timeout=5)  # not loopback
            assert raised.value.code == 2
            assert raised.value.errno == errno.EACCES
            # A port nobody listens on: the proxy's connect is refused.
            with trio.socket.socket() as free:
                await free.bind(("127.0.0.1", 0))
                port = free.getsockname()[1]
            with pytest.raises(SocksReplyError) as raised:
                await open_socks5_stream(config, "127.0.0.1", port, timeout=5)
            assert raised.value.errno == errno.ECONNREFUSED


async def test_an_unreachable_proxy_is_our_error() -> None:
    with trio.socket.socket() as free:
        await free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with trio.fail_after(5), pytest.raises(SocksError, match="cannot reach the proxy") as raised:
        await open_socks5_stream(ProxyConfig("127.0.0.1", port), "127.0.0.1", 1, timeout=5)
    assert raised.value.errno == errno.ECONNREFUSED


@pytest.mark.parametrize(
    ("server", "error", "match"),
    [
        ({"method_bytes": b"HTTP/1.1 400"}, SocksProtocolError, "not a SOCKS5 proxy"),
        ({"method_bytes": b"\x05"}, SocksError, "within"),  # then silence
        ({"reply_bytes": b"\x05\x00\x00\x09" + bytes(6)}, SocksProtocolError, "type 9"),
        ({"silent": True}, SocksError, "did not connect us to 127.0.0.1:80 within 3 s"),
    ],
)
async def test_garbage_and_silence(
    autojump_clock: trio.testing.MockClock,
    server: dict[str, object],
    error: type[SocksError],
    match: str,
) -> None:
    with trio.fail_after(30):
        async with serve_socks5(step_timeout=20, **server) as proxy:  # type: ignore[arg-type]
            config = ProxyConfig("127.0.0.1", proxy.port)
            start = trio.current_time()
            with pytest.raises(error, match=match):
                await open_socks5_stream(config, "127.0.0.1", 80, timeout=3)
            assert trio.current_time() - start <= 3.1


async def test_a_proxy_sending_more_than_its_reply_leaves_the_rest_to_the_target() -> None:
    """Only the reply is read: what comes after it is the target's (here, the proxy's
    own bytes, which the stream's reader then sees)."""
    reply = encode_method(0)[:0] + encode_reply(0, IPv4Address("127.0.0.1"), 1) + b"tail"
    with trio.fail_after(5):
        async with serve_socks5(reply_bytes=reply) as proxy:
            config = ProxyConfig("127.0.0.1", proxy.port)
            async with await open_socks5_stream(config, "127.0.0.1", 80, timeout=5) as stream:
                assert await stream.receive_some(100) == b"tail"


async def test_bad_arguments() -> None:
    config = ProxyConfig("127.0.0.1", 1)
    with pytest.raises(ValueError, match="timeout"):
        await open_socks5_stream(config, "127.0.0.1", 1, timeout=0)
    with pytest.raises(ValueError, match="255 bytes"):
        await open_socks5_stream(
            ProxyConfig("127.0.0.1", 1, remote_dns=True), "a" * 300, 1, timeout=1
        )
    with pytest.raises(ValueError, match="timeout"):
        SocksDialer(config, timeout=-1)
    with pytest.raises(TypeError):
        SocksDialer("socks5://h:1")  # type: ignore[arg-type]


# ------------------------------------------------------------------------- the dialer


async def test_handshakers_connect_through_the_dialer() -> None:
    with trio.fail_after(5):
        async with serve_socks5() as proxy:
            dialer = SocksDialer(ProxyConfig("127.0.0.1", proxy.port))
            async with (
                open_handshaker(peer_id=PeerId.generate(), listen=[("127.0.0.1", 0)]) as seed,
                open_handshaker(peer_id=PeerId.generate(), listen=(), dial=dialer) as leech,
            ):
                seed.register(TORRENT)
                leech.register(TORRENT)
                seed_address = seed.listen_addresses[0]
                assert leech.connect(TORRENT, seed_address)
                done = await leech.completed().receive()
                assert done.address == seed_address
                assert done.transport == "tcp"
                await done.stream.aclose()
                await (await seed.completed().receive()).stream.aclose()
            assert proxy.connects == [("127.0.0.1", seed_address.port)]
            assert dialer.statistics().connected == 1
            # A refused dial counts as failed.
            with pytest.raises(SocksReplyError):
                await dialer(PeerAddress.parse("192.0.2.1:80"))
            assert dialer.statistics().failed == 1


# ------------------------------------------------------------------------- names resolved here


async def test_each_address_of_a_name_is_tried_in_turn() -> None:
    # two.invalid (RFC 2606: exists only here): an address off loopback the in-test proxy
    # refuses (its rules), again, then 127.0.0.1.
    two = FixedResolver({"two.invalid": ("192.0.2.1", "192.0.2.1", "127.0.0.1")})
    trio.socket.set_custom_hostname_resolver(two)  # for this test's run only
    checked: list[IPv4Address | IPv6Address | str] = []
    with trio.fail_after(5):
        async with echo_server() as port, serve_socks5() as proxy:
            config = ProxyConfig("127.0.0.1", proxy.port)
            stream = await open_socks5_stream(
                config, "two.invalid", port, timeout=5, check_target=checked.append
            )
            async with stream:
                await stream.send_all(b"x")
                assert await stream.receive_some(1) == b"x"
            # The proxy could not reach the first address: the second one was asked for.
            assert proxy.refused == 1
            assert proxy.connects == [("127.0.0.1", port)]
            assert checked == [IPv4Address("192.0.2.1"), IPv4Address("127.0.0.1")]
            # Refused everywhere: the last address's error.
            with pytest.raises(SocksReplyError) as raised:
                await open_socks5_stream(config, "two.invalid", 9, timeout=5)
            assert raised.value.errno == errno.ECONNREFUSED
            assert proxy.refused == 3
    assert two.asked == ["two.invalid", "two.invalid"]  # the name only, once a stream


async def test_a_target_the_check_refuses_is_never_asked_for() -> None:
    def refuse(target: IPv4Address | IPv6Address | str) -> None:
        raise PermissionError(f"not {target}")

    with trio.fail_after(5):
        async with serve_socks5() as proxy:
            for remote_dns, host in ((False, "localhost"), (True, "localhost"), (False, "::1")):
                config = ProxyConfig("127.0.0.1", proxy.port, remote_dns=remote_dns)
                with pytest.raises(PermissionError):
                    await open_socks5_stream(config, host, 80, timeout=5, check_target=refuse)
            assert proxy.accepted == 0  # the proxy never heard of them


async def test_a_proxy_name_not_resolved_is_the_resolvers_error() -> None:
    # The gaierror's code was taken for an errno: "Unknown error -2", errno -2.
    trio.socket.set_custom_hostname_resolver(FixedResolver())  # no name: every one unknown
    with trio.fail_after(5):
        with pytest.raises(SocksError, match=r"cannot resolve the proxy 'nowhere\.test'") as raised:
            await open_socks5_stream(ProxyConfig("nowhere.test", 1080), "127.0.0.1", 80, timeout=5)
        assert "Name or service not known" in str(raised.value)
        assert raised.value.errno is None


async def test_names_idna_refuses_are_our_error_not_a_unicode_error() -> None:
    # Python's IDNA 2003 takes "☃.net", trio's IDNA 2008 refuses it (no DNS asked); the
    # UnicodeError escaped, for the proxy's name and for a target's resolved here alike.
    with trio.fail_after(5):
        with pytest.raises(SocksError, match=r"cannot resolve the proxy .*IDNA") as raised:
            await open_socks5_stream(
                ProxyConfig("\N{SNOWMAN}.net", 1080), "127.0.0.1", 80, timeout=5
            )
        assert raised.value.errno is None
        async with serve_socks5() as proxy:
            config = ProxyConfig("127.0.0.1", proxy.port)
            for target in ("a..b", "\N{SNOWMAN}.net"):
                with pytest.raises(SocksError, match=r"cannot resolve .*IDNA"):
                    await open_socks5_stream(config, target, 80, timeout=5)
            assert proxy.accepted == 0
        with pytest.raises(ValueError, match="IDNA codec can encode"):
            parse_proxy_url("socks5://a..b:1080")
