"""What the docs promise about bip_handshake's exceptions: one base for all bad input.

Each error bad input can cause is a :class:`HandshakeError` (and still the :class:`ValueError`
it always was, so ``except ValueError`` goes on working).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bip_handshake import (
    CompactError,
    Extensions,
    ExtensionsError,
    HandshakeError,
    IPFilter,
    IPFilterError,
    PeerAddress,
    PeerId,
    PeerIdError,
    ProxyConfig,
    ProxyConfigError,
    parse_compact_peers,
    parse_proxy_url,
)

BAD_INPUT: list[tuple[str, Callable[[], object]]] = [
    ("address without port", lambda: PeerAddress.parse("127.0.0.1")),
    ("compact peers of 5 bytes", lambda: parse_compact_peers(b"12345")),
    ("peer id not hex", lambda: PeerId.from_hex("zz")),
    ("reserved bytes of 7", lambda: Extensions.from_bytes(b"1234567")),
    ("reserved bytes not hex", lambda: Extensions.from_hex("zz")),
    ("reserved bytes, 15 hex digits", lambda: Extensions.from_hex("0" * 15)),
    ("extensions beyond 8 bytes", lambda: Extensions(1 << 64)),
    ("proxy URL of another scheme", lambda: parse_proxy_url("ftp://x")),
    ("proxy URL with a bad port", lambda: parse_proxy_url("socks5://h:99999")),
    ("proxy URL with an empty label", lambda: parse_proxy_url("socks5://a..b")),
    ("proxy without host", lambda: ProxyConfig("")),
    ("proxy with port 0", lambda: ProxyConfig("127.0.0.1", 0)),
    ("blocklist nonsense", lambda: IPFilter.parse("nonsense")),
]


@pytest.mark.parametrize(("label", "call"), BAD_INPUT, ids=[label for label, _ in BAD_INPUT])
def test_bad_input_is_a_handshake_error_and_a_value_error(
    label: str, call: Callable[[], object]
) -> None:
    with pytest.raises(HandshakeError) as caught:
        call()
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "cls", [CompactError, PeerIdError, IPFilterError, ExtensionsError, ProxyConfigError]
)
def test_each_error_class_keeps_value_error_under_the_base(cls: type[Exception]) -> None:
    assert issubclass(cls, HandshakeError)
    assert issubclass(cls, ValueError)
