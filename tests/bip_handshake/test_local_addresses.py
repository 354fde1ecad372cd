"""local_addresses_by_family: the one reading of a ``local_address`` setting (one IP address,
or one of each family), shared by the HTTP clients (bip's local_sources), the peer dialer and
the SOCKS dialer; and open_tcp_stream_from's ``sources``, which follow its rule (an
IPv4-mapped address is IPv4). Sans-IO but for one connect on 127.0.0.1."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from tests._loopbacks import recording_listener

from bip_handshake import (
    PeerDialer,
    ProxyConfig,
    SocksDialer,
    local_addresses_by_family,
    open_tcp_stream_from,
)
from bip_handshake._tcp_from import _checked_sources


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("10.8.0.2", {4: IPv4Address("10.8.0.2")}),
        (["fd00::2"], {6: IPv6Address("fd00::2")}),
        # The first of each family speaks for it, in the order first listed.
        (
            ("fd00::2", "10.8.0.2", "fd00::3", "10.8.0.3"),
            {6: IPv6Address("fd00::2"), 4: IPv4Address("10.8.0.2")},
        ),
        # An unspecified first one: connect in that family, the system picks (a later
        # specific one of the family does not replace it).
        (("0.0.0.0", "10.8.0.2", "::"), {4: None, 6: None}),
        (("::", "fd00::2"), {6: None}),
        # A scoped IPv6 address keeps its scope (a socket binds it so).
        ("fe80::1%eth0", {6: IPv6Address("fe80::1%eth0")}),
    ],
)
def test_the_first_address_of_each_family_counts(
    given: str | tuple[str, ...] | list[str] | None,
    expected: dict[int, IPv4Address | IPv6Address | None] | None,
) -> None:
    found = local_addresses_by_family(given)
    assert found == expected
    if found is not None and expected is not None:
        assert list(found) == list(expected)  # in the order first listed


def test_an_ipv4_mapped_local_address_is_the_ipv4_address_it_embeds() -> None:
    # As a target's mapped address is: reached over IPv4, on an IPv4 socket. It speaks for
    # IPv4 (the 10.8.0.3 after it is ignored) and leaves IPv6 to a real IPv6 address.
    found = local_addresses_by_family(("::ffff:10.8.0.2", "10.8.0.3", "fd00::2"))
    assert found == {4: IPv4Address("10.8.0.2"), 6: IPv6Address("fd00::2")}
    assert local_addresses_by_family("::ffff:0.0.0.0") == {4: None}
    # The dialers connect IPv4 peers (and proxies) from it, as text open_tcp_stream_from takes.
    assert PeerDialer(local_address="::ffff:127.0.0.2").local_addresses == ("127.0.0.2",)
    socks = SocksDialer(ProxyConfig("127.0.0.1"), local_address=("::ffff:127.0.0.2", "::1"))
    assert socks.local_addresses == ("127.0.0.2", "::1")


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("localhost", "names are not looked up"),
        (("10.8.0.2", "vpn.example"), "'vpn.example'"),
        ("", "not ''"),
        # Brackets are URL syntax: one rule for every caller, none accepts them.
        ("[::1]", "without brackets"),
        (("10.8.0.2", "[fd00::2]"), "without brackets"),
        (b"10.8.0.2", "a str"),
        (bytearray(b"::1"), "a str"),
        (("10.8.0.2", b"fd00::2"), "a str"),
        (("10.8.0.2", None), "a str"),
        ((), "empty sequence"),
        ([], "empty sequence"),
        (3, "a sequence of them"),
        ({"10.8.0.2"}, "a sequence of them"),  # a set has no order: no "first"
        (IPv4Address("10.8.0.2"), "a sequence of them"),
    ],
)
def test_what_is_not_ip_addresses_is_refused_with_a_clear_message(
    given: object, reason: str
) -> None:
    with pytest.raises(ValueError, match="local_address must be an IP address") as raised:
        local_addresses_by_family(given)  # type: ignore[arg-type]
    assert reason in str(raised.value)


def test_the_dialers_take_an_empty_sequence_as_none() -> None:
    # They connect in every family: no address to leave from is no constraint (the parser
    # refuses it: for the HTTP clients it would leave no family to connect in).
    assert PeerDialer(local_address=()).local_addresses == ()
    assert SocksDialer(ProxyConfig("127.0.0.1"), local_address=[]).local_address is None


# Cheap strategies (from_regex cost seconds): near-addresses built from parts, to reach the
# parser's every branch (valid, mapped, scoped, bracketed, out of range, malformed).
_TEXT = st.text(alphabet=st.sampled_from("0123456789abcdefABCDEF:.%[]f ex\x00é"), max_size=48)
_V4ISH = st.lists(st.integers(0, 999), min_size=3, max_size=5).map(
    lambda parts: ".".join(map(str, parts))
)
_V6ISH = st.lists(st.sampled_from(["", "0", "1", "fd00", "ffff", "fffff"]), min_size=2, max_size=9)
_V6 = st.builds(
    lambda groups, tail, scope, brackets: brackets.format(
        ":".join(groups) + (":" + tail if tail else "") + scope
    ),
    _V6ISH,
    st.one_of(st.just(""), _V4ISH),  # an embedded IPv4 address: "::ffff:10.8.0.2"
    st.sampled_from(["", "%eth0", "%1", "%"]),
    st.sampled_from(["{}", "[{}]", "[{}", "{}]"]),
)
_ENTRY = st.one_of(
    _TEXT,
    _V4ISH,
    _V6,
    st.ip_addresses().map(str),
    st.ip_addresses(v=4).map(lambda address: f"::ffff:{address}"),
    st.binary(max_size=8),
    st.integers(),
    st.none(),
)


@settings(max_examples=50, deadline=None)
@given(
    st.one_of(
        _ENTRY,
        st.lists(_ENTRY, max_size=5),
        st.tuples(_ENTRY, _ENTRY),
        st.sets(st.text(max_size=4), max_size=3),
    )
)
def test_garbage_is_a_value_error_never_a_crash(given: object) -> None:
    refusal: str | None = None
    try:
        found = local_addresses_by_family(given)  # type: ignore[arg-type]
    except ValueError as error:
        refusal = str(error)
    if refusal is not None:
        assert refusal.startswith("local_address must be an IP address"), refusal
        return
    if found is None:
        assert given is None
        return
    assert found
    assert set(found) <= {4, 6}
    for version, address in found.items():
        # A version's address is of that version, specific, never IPv4-mapped.
        assert address is None or (address.version == version and not address.is_unspecified)
        assert not (isinstance(address, IPv6Address) and address.ipv4_mapped is not None)


# -- open_tcp_stream_from's sources follow the same rule ------------------------------------


def test_sources_read_an_ipv4_mapped_address_as_ipv4() -> None:
    assert _checked_sources({4: "::ffff:10.8.0.2", 6: "fd00::2"}) == {4: "10.8.0.2", 6: "fd00::2"}
    assert _checked_sources({4: "::ffff:0.0.0.0", 6: None}) == {4: "0.0.0.0", 6: None}
    # Under 6 it is refused (before, taken: each attempt failed EAFNOSUPPORT), said IPv4.
    with pytest.raises(ValueError, match=r"not '::ffff:10.8.0.2': it is IPv4 .*\{4: '10.8.0.2'\}"):
        _checked_sources({6: "::ffff:10.8.0.2"})


async def test_a_mapped_ipv4_source_connects_from_the_ipv4_address() -> None:
    # Before, {4: "::ffff:127.0.0.1"} was refused (an IPv6 literal under 4).
    with trio.fail_after(5):
        async with recording_listener("127.0.0.1") as (listener, _seen):
            port = listener.port
            stream = await open_tcp_stream_from("127.0.0.1", port, {4: "::ffff:127.0.0.1"})
            assert stream.socket.family == trio.socket.AF_INET
            assert stream.socket.getsockname()[0] == "127.0.0.1"
            await stream.aclose()
            with pytest.raises(ValueError, match="it is IPv4"):
                await open_tcp_stream_from("127.0.0.1", port, {6: "::ffff:127.0.0.1"})
