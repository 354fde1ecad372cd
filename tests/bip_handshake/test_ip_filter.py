"""IPFilter: building, lookup, the blocklist parsers, and the Handshaker's filter hook."""

from __future__ import annotations

import itertools
from contextlib import AbstractAsyncContextManager
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import EncryptionPolicy, Extensions, Handshake, PeerAddress, PeerId
from bip_handshake._handshaker import CompletedHandshake, Handshaker, open_handshaker
from bip_handshake._ip_filter import (
    IPFilter,
    IPFilterError,
    IPRange,
    parse_ip_filter,
)
from bip_metainfo import InfoHash

V4 = IPv4Address
V6 = IPv6Address


def r4(first: str, last: str | None = None) -> IPRange:
    return IPRange(V4(first), V4(last if last is not None else first))


def r6(first: str, last: str | None = None) -> IPRange:
    return IPRange(V6(first), V6(last if last is not None else first))


# -- IPRange ----------------------------------------------------------------------


def test_range_checks_its_bounds() -> None:
    assert str(r4("1.2.3.4", "1.2.3.9")) == "1.2.3.4-1.2.3.9"
    assert V4("1.2.3.5") in r4("1.2.3.4", "1.2.3.9")
    assert V6("::1") not in r4("0.0.0.0", "255.255.255.255")
    assert r6("::1").family == 6
    with pytest.raises(IPFilterError, match="starts before it ends"):
        r4("1.2.3.9", "1.2.3.4")
    with pytest.raises(IPFilterError, match="one family"):
        IPRange(V4("1.2.3.4"), V6("::1"))
    with pytest.raises(IPFilterError, match="scope"):
        IPRange(V6("fe80::1%eth0"), V6("fe80::2"))
    with pytest.raises(IPFilterError, match="IPv4Address or IPv6Address"):
        IPRange("1.2.3.4", V4("1.2.3.4"))  # type: ignore[arg-type]


# -- building and lookup ----------------------------------------------------------


def test_empty_filter_blocks_nothing() -> None:
    empty = IPFilter()
    assert not empty.blocks("1.2.3.4")
    assert not empty.blocks(V6("::1"))
    assert len(empty) == 0
    assert list(empty) == []
    assert empty == IPFilter.blocking([])


def test_overlapping_and_adjacent_ranges_merge() -> None:
    f = IPFilter.blocking(
        [r4("10.0.0.0", "10.0.0.9"), r4("10.0.0.5", "10.0.0.20"), r4("10.0.0.21", "10.0.0.30")]
    )
    assert list(f) == [r4("10.0.0.0", "10.0.0.30")]
    assert f.blocks("10.0.0.30")
    assert not f.blocks("10.0.0.31")
    assert not f.blocks("9.255.255.255")


def test_later_rules_override_earlier_ones() -> None:
    f = IPFilter.from_rules(
        [
            (r4("10.0.0.0", "10.255.255.255"), True),
            (r4("10.1.0.0", "10.1.255.255"), False),
            (r4("10.1.2.0", "10.1.2.255"), True),
            (r6("2001:db8::", "2001:db8::ffff"), True),
        ]
    )
    assert f.blocks("10.0.0.1")
    assert f.blocks("10.2.0.1")
    assert f.blocks("10.1.2.3")
    assert not f.blocks("10.1.0.1")
    assert not f.blocks("10.1.3.0")
    assert f.blocks("2001:db8::1")
    assert not f.blocks("2001:db8::1:0")
    assert len(f) == 4


def test_an_allow_rule_before_any_block_does_nothing() -> None:
    f = IPFilter.from_rules([(r4("1.0.0.0", "1.255.255.255"), False), (r4("1.2.3.4"), True)])
    assert list(f) == [r4("1.2.3.4")]


def test_lookup_takes_every_form_and_maps_v4_in_v6() -> None:
    f = IPFilter.blocking([r4("192.0.2.0", "192.0.2.255")])
    assert f.blocks("192.0.2.7")
    assert f.blocks(V4("192.0.2.7"))
    assert f.blocks(PeerAddress(V4("192.0.2.7"), 6881))
    assert f.blocks(V6("::ffff:192.0.2.7"))
    assert f.blocks(PeerAddress(V6("::ffff:192.0.2.7"), 1))
    assert not f.blocks(V6("::192.0.2.7"))  # IPv4-compatible, not mapped: an IPv6 address
    assert f.allows("192.0.3.0")
    with pytest.raises(IPFilterError):
        f.blocks("not an address")
    with pytest.raises(TypeError):
        f.blocks(3232235521)  # type: ignore[arg-type]


def test_equality_hash_union_and_repr() -> None:
    a = IPFilter.blocking([r4("1.0.0.0", "1.0.0.9")])
    b = IPFilter.blocking([r4("1.0.0.0", "1.0.0.4"), r4("1.0.0.5", "1.0.0.9")])
    assert a == b
    assert hash(a) == hash(b)
    assert a != IPFilter()
    assert a != "a filter"
    both = a | IPFilter.blocking([r6("::1")])
    assert both.blocks("::1")
    assert both.blocks("1.0.0.3")
    assert len(both) == 2
    assert repr(both) == "<IPFilter: 1 IPv4 and 1 IPv6 ranges>"


def test_bad_rules_are_refused() -> None:
    with pytest.raises(IPFilterError, match="rule"):
        IPFilter.from_rules([("1.2.3.4", True)])  # type: ignore[list-item]


# -- parsing ----------------------------------------------------------------------


def test_p2p_format() -> None:
    text = (
        "# a comment\r\n"
        "\r\n"
        "Some Org, Inc.:1.2.3.0-1.2.3.255\r\n"
        "Name: with colons: and - dashes:004.005.006.000-4.5.6.9\r\n"
        "v6 block:2001:db8::-2001:db8::ff\r\n"
    )
    parsed = parse_ip_filter(text, format="p2p", strict=True)
    assert list(parsed.filter) == [
        r4("1.2.3.0", "1.2.3.255"),
        r4("4.5.6.0", "4.5.6.9"),
        r6("2001:db8::", "2001:db8::ff"),
    ]
    assert (parsed.rules, parsed.skipped, parsed.first_error) == (3, 0, None)


def test_dat_format_levels() -> None:
    text = (
        "001.002.003.000 - 001.002.003.255 , 000 , Bad\n"
        "5.0.0.0 - 5.0.0.9 , 127 , still blocked\n"
        "6.0.0.0 - 6.0.0.9 , 128 , allowed, so no rule\n"
        "7.0.0.0 - 7.0.0.9\n"
    )
    parsed = parse_ip_filter(text, format="dat", strict=True)
    f = parsed.filter
    assert f.blocks("1.2.3.4")
    assert f.blocks("5.0.0.9")
    assert f.blocks("7.0.0.0")
    assert not f.blocks("6.0.0.1")
    assert parsed.rules == 3
    with pytest.raises(IPFilterError, match="line 1: not an access level"):
        parse_ip_filter("1.0.0.0 - 1.0.0.1 , high , x", format="dat", strict=True)


def test_cidr_format() -> None:
    text = (
        "10.0.0.0/8\n"
        "192.0.2.77/24 ; SBL123 host bits set\n"
        "198.51.100.7 # one address\n"
        "203.0.113.1-203.0.113.5\n"
        "2001:db8:1::/48\n"
        "0.0.0.0/0\n"
    )
    f = parse_ip_filter(text, format="cidr", strict=True).filter
    assert f.blocks("8.8.8.8")  # 0.0.0.0/0
    assert not f.blocks("2001:db8:2::1")
    assert f.blocks("2001:db8:1:ffff::1")
    with pytest.raises(IPFilterError, match="line 1: not a prefix length"):
        parse_ip_filter("10.0.0.0/33", format="cidr", strict=True)
    with pytest.raises(IPFilterError, match="line 2: not one address"):
        parse_ip_filter("10.0.0.0/8\n1.2.3.4 5.6.7.8", format="cidr", strict=True)


def test_auto_detects_per_line() -> None:
    text = (
        "\ufeff// header\n"
        "Org:1.0.0.0-1.0.0.255\n"
        "2.0.0.0 - 2.0.0.255 , 100 , dat line\n"
        "3.0.0.0/24\n"
        "4.0.0.1\n"
        "2001:db8::1-2001:db8::5\n"  # a bare IPv6 range, not a P2P line named "2001"
        "Org, with comma:5.0.0.0-5.0.0.1\n"
        "blocked:2001:db8:9::-2001:db8:9::ff\n"
    )
    parsed = parse_ip_filter(text, strict=True)
    assert list(parsed.filter) == [
        r4("1.0.0.0", "1.0.0.255"),
        r4("2.0.0.0", "2.0.0.255"),
        r4("3.0.0.0", "3.0.0.255"),
        r4("4.0.0.1"),
        r4("5.0.0.0", "5.0.0.1"),
        r6("2001:db8::1", "2001:db8::5"),
        r6("2001:db8:9::", "2001:db8:9::ff"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "garbage",
        "1.2.3",
        "256.0.0.1",
        "1.2.3.4.5",
        "1.2.3.-4",
        "name:1.2.3.4-x",
        "name:1.2.3.9-1.2.3.4",
        "name:1.2.3.4-::1",
        "fe80::1%eth0",
        "1.2.3.0/x",
        "1.2.3.0/+8",
        "１.２.３.４",  # noqa: RUF001 - fullwidth digits are not decimal digits here
        "1.0.0.0 - 1.0.0.1 , 99999999 , x",
    ],
)
def test_malformed_lines(line: str) -> None:
    with pytest.raises(IPFilterError) as info:
        parse_ip_filter(f"# ok\n1.1.1.1\n{line}\n", strict=True)
    assert info.value.line == 3
    assert str(info.value).startswith("line 3: ")
    lenient = parse_ip_filter(f"# ok\n1.1.1.1\n{line}\n")
    assert (lenient.rules, lenient.skipped) == (1, 1)
    assert lenient.first_error is not None
    assert lenient.first_error.line == 3


def test_bounds_on_lines_and_ranges() -> None:
    long_line = "x" * 50 + ":1.2.3.4-1.2.3.5"
    with pytest.raises(IPFilterError, match="line 1: longer than 40 characters"):
        parse_ip_filter(long_line, strict=True, max_line=40)
    assert parse_ip_filter(long_line, max_line=40).skipped == 1
    many = "".join(f"10.0.{n // 256}.{n % 256}\n" for n in range(11))
    assert parse_ip_filter(many, max_ranges=11).rules == 11
    for strict in (True, False):  # a bound, not a bad line: lenient mode raises too
        with pytest.raises(IPFilterError, match="line 11: more than 10 ranges"):
            parse_ip_filter(many, strict=strict, max_ranges=10)


def test_parse_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        parse_ip_filter(b"1.2.3.4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format"):
        parse_ip_filter("", format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        parse_ip_filter("", max_ranges=0)
    assert IPFilter.parse("1.2.3.4\n").blocks("1.2.3.4")
    with pytest.raises(IPFilterError):
        IPFilter.parse("1.2.3.4\nbad\n")


def test_line_endings_and_no_final_newline() -> None:
    for sep in ("\n", "\r\n", "\r"):
        assert len(parse_ip_filter(sep.join(["1.0.0.1", "2.0.0.1", "3.0.0.1"])).filter) == 3


# -- properties -------------------------------------------------------------------

_V4_INT = st.integers(0, 2**32 - 1)
_V6_INT = st.integers(0, 2**128 - 1)


@st.composite
def _rules(draw: st.DrawFn) -> list[tuple[IPRange, bool]]:
    # Small ranges in a narrow window now and then, so that overlaps and adjacency happen.
    def span(kind: type[V4] | type[V6], top: int) -> IPRange:
        base = draw(st.sampled_from([0, top - 300, draw(st.integers(0, top - 300))]))
        a = base + draw(st.integers(0, 300))
        b = a + draw(st.integers(0, min(300, top - a)))
        return IPRange(kind(a), kind(b))

    count = draw(st.integers(0, 12))
    rules = []
    for _ in range(count):
        span_of = span(V4, 2**32 - 1) if draw(st.booleans()) else span(V6, 2**128 - 1)
        rules.append((span_of, draw(st.booleans())))
    return rules


def _naive(rules: list[tuple[IPRange, bool]], host: V4 | V6) -> bool:
    blocked = False
    for span, block in rules:  # the last rule covering the host decides
        if host in span:
            blocked = block
    return blocked


@settings(max_examples=300, deadline=None)
@given(_rules(), st.lists(st.one_of(_V4_INT.map(V4), _V6_INT.map(V6)), max_size=10))
def test_lookup_agrees_with_a_scan(rules: list[tuple[IPRange, bool]], hosts: list[V4 | V6]) -> None:
    f = IPFilter.from_rules(rules)
    # Probe every bound and its neighbours too: that is where an off-by-one hides.
    probes = list(hosts)
    for span, _ in rules:
        top = 2**32 - 1 if span.family == 4 else 2**128 - 1
        kind = type(span.first)
        for value in (int(span.first) - 1, int(span.first), int(span.last), int(span.last) + 1):
            if 0 <= value <= top:
                probes.append(kind(value))
    for host in probes:
        assert f.blocks(host) == _naive(rules, host), host
    merged = list(f)
    assert len(merged) == len(f)
    for before, after in itertools.pairwise(merged):
        if before.family == after.family:  # sorted, disjoint, not adjacent
            assert int(before.last) + 1 < int(after.first)


@settings(max_examples=200, deadline=None)
@given(_rules())
def test_rendered_filter_parses_back(rules: list[tuple[IPRange, bool]]) -> None:
    f = IPFilter.from_rules(rules)
    assert parse_ip_filter(f.to_text(), strict=True).filter == f
    assert parse_ip_filter(f.to_text(), format="p2p", strict=True).filter == f
    assert IPFilter.blocking(f) == f


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.text(alphabet="0123456789.:-/,# abcdef\t\r", max_size=60),
        ),
        max_size=8,
    ),
    st.sampled_from(["auto", "p2p", "dat", "cidr"]),
)
def test_garbage_gives_our_error_or_a_count(lines: list[str], fmt: str) -> None:
    text = "\n".join(lines)
    errors: list[IPFilterError] = []
    try:
        parse_ip_filter(text, format=fmt, strict=True)  # type: ignore[arg-type]
    except IPFilterError as error:
        errors.append(error)
    assert all(error.line is not None for error in errors)
    lenient = parse_ip_filter(text, format=fmt)  # type: ignore[arg-type]
    assert lenient.skipped <= len(text.splitlines())


# -- the Handshaker's hook --------------------------------------------------------

TORRENT = InfoHash(v1=b"\x11" * 20)
OURS = PeerId(b"-BP0100-aaaaaaaaaaaa")
REMOTE = PeerId(b"-XX0000-remoteremote")
BLOCKED = PeerAddress(V4("10.0.0.1"), 6881)
ALLOWED = PeerAddress(V4("10.0.0.2"), 6881)
BLOCK_10_0_0_1 = IPFilter.blocking([r4("10.0.0.1")])


class _Network:
    """A dialler whose peers answer at once (or when ``gate`` is set) with a handshake."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.dialled: list[PeerAddress] = []
        self.gate: trio.Event | None = None

    async def dial(self, address: PeerAddress) -> trio.abc.Stream:
        self.dialled.append(address)
        ours, theirs = trio.testing.memory_stream_pair()
        answer = Handshake(Extensions.NONE, TORRENT.v1 or b"", REMOTE.value).to_bytes()
        gate = self.gate

        async def respond() -> None:
            if gate is not None:
                await gate.wait()
            await theirs.send_all(answer)

        self._nursery.start_soon(respond)
        return ours


def _handshaker(
    net: _Network, ip_filter: IPFilter | None, max_concurrent: int = 8
) -> AbstractAsyncContextManager[Handshaker]:
    return open_handshaker(
        peer_id=OURS,
        listen=[],
        encryption=EncryptionPolicy.PLAINTEXT_ONLY,
        dial=net.dial,
        ip_filter=ip_filter,
        max_concurrent=max_concurrent,
    )


async def _next(hs: Handshaker) -> CompletedHandshake:
    with trio.fail_after(5):
        return await hs.completed().receive()


async def test_blocked_addresses_are_never_dialled_nor_accepted() -> None:
    async with trio.open_nursery() as nursery:
        net = _Network(nursery)
        async with _handshaker(net, BLOCK_10_0_0_1) as hs:
            hs.register(TORRENT)
            hs.discovered(TORRENT, [BLOCKED, ALLOWED], "tracker")
            assert not hs.connect(TORRENT, PeerAddress(V6("::ffff:10.0.0.1"), 1))
            peer = await _next(hs)
            assert peer.address == ALLOWED
            await peer.aclose()
            # Inbound from a blocked host: closed before a byte is read.
            ours, theirs = trio.testing.memory_stream_pair()
            hs.accept_stream(theirs, BLOCKED)
            with trio.fail_after(5):
                assert await ours.receive_some() == b""
            stats = hs.statistics()
            assert hs.ip_filter == BLOCK_10_0_0_1
    assert net.dialled == [ALLOWED]
    assert stats.filtered_ip == 3
    assert stats.filtered_address == 0
    assert stats.inbound_attempts == 0
    assert stats.failures == 0


async def test_set_ip_filter_applies_to_queued_and_in_flight_dials() -> None:
    async with trio.open_nursery() as nursery:
        net = _Network(nursery)
        net.gate = trio.Event()
        async with _handshaker(net, None) as hs:
            hs.register(TORRENT)
            hs.discovered(TORRENT, [BLOCKED], "tracker")
            await trio.testing.wait_all_tasks_blocked()
            assert net.dialled == [BLOCKED]  # in flight, waiting for the answer
            hs.set_ip_filter(BLOCK_10_0_0_1)
            net.gate.set()
            with trio.fail_after(5):
                while hs.statistics().failures == 0:
                    await trio.sleep(0.001)
            assert hs.statistics().filtered_ip == 1  # refused before delivery
            hs.set_ip_filter(None)
            net.gate = None
            hs.discovered(TORRENT, [BLOCKED], "tracker")
            peer = await _next(hs)
            assert peer.address == BLOCKED
            await peer.aclose()
            with pytest.raises(TypeError):
                hs.set_ip_filter("1.2.3.4")  # type: ignore[arg-type]


async def test_a_queued_dial_is_dropped_when_a_new_filter_blocks_it() -> None:
    async with trio.open_nursery() as nursery:
        net = _Network(nursery)
        async with _handshaker(net, None, max_concurrent=1) as hs:
            hs.register(TORRENT)
            net.gate = trio.Event()
            hs.discovered(TORRENT, [ALLOWED, BLOCKED], "tracker")  # BLOCKED waits for a slot
            await trio.testing.wait_all_tasks_blocked()
            hs.set_ip_filter(BLOCK_10_0_0_1)
            net.gate.set()
            peer = await _next(hs)
            await peer.aclose()
            with trio.fail_after(5):
                while hs.statistics().filtered_ip == 0:
                    await trio.sleep(0.001)
    assert net.dialled == [ALLOWED]


async def test_open_handshaker_checks_the_filter_type() -> None:
    with pytest.raises(TypeError, match="ip_filter"):
        async with open_handshaker(listen=[], ip_filter=ip_address("1.2.3.4")):  # type: ignore[arg-type]
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2001:db8::9-2001:db8::1", "starts before it ends"),  # not a P2P line named 2001
        ("Org:1.2.3.9-1.2.3.4", "starts before it ends"),  # the P2P reading's error
        ("Org, Inc:1.2.3.4-1.2.3.x", "not an IPv4 address: '1.2.3.x'"),
        ("1.2.3.4 - 1.2.3.5 , x , name", "not an access level"),  # the DAT reading's error
        ("10.0.0.0/40", "not a prefix length"),
    ],
)
def test_auto_reports_the_error_of_the_format_the_line_looks_like(line: str, message: str) -> None:
    with pytest.raises(IPFilterError, match=message):
        parse_ip_filter(line, strict=True)
    with pytest.raises(IPFilterError, match="not a P2P line"):
        parse_ip_filter("2001:db8::1-2001:db8::5", format="p2p", strict=True)


def test_a_rule_naming_ipv4_mapped_addresses_blocks_those_ipv4_peers() -> None:
    """Lookups judge ::ffff:a.b.c.d as a.b.c.d, so such a rule is an IPv4 rule; a rule over
    more of the IPv6 space (::/0) does not block IPv4 peers."""
    mapped = parse_ip_filter("::ffff:10.0.0.0/104\n", strict=True).filter
    assert mapped.blocks(ip_address("10.1.1.1"))
    assert mapped.blocks(ip_address("::ffff:10.9.9.9"))
    assert not mapped.blocks(ip_address("11.0.0.1"))
    everything_v6 = parse_ip_filter("::/0\n", strict=True).filter
    assert everything_v6.blocks(ip_address("2001:db8::1"))
    assert not everything_v6.blocks(ip_address("10.1.1.1"))


def test_a_long_p2p_name_full_of_colons_costs_little() -> None:
    """Only the last colons can start an IPv6 address: a name with hundreds is not tried at
    each (it was quadratic: milliseconds a line)."""
    line = "a" + ": x" * 330 + ":2001:db8::1-2001:db8::ff"
    parsed = parse_ip_filter(line + "\n", format="p2p", strict=True)
    assert parsed.filter.blocks(ip_address("2001:db8::80"))


def test_line_numbers_count_only_line_ends() -> None:
    """A form feed in a name is not a line end: the error names the line an editor shows."""
    parsed = parse_ip_filter("a\x0cname:1.2.3.4-1.2.3.5\r\nbad\rok:5.6.7.8-5.6.7.9\n")
    assert (parsed.rules, parsed.skipped) == (2, 1)
    assert parsed.first_error is not None
    assert parsed.first_error.line == 2
