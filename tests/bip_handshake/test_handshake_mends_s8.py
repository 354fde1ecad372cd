"""Mends of session 8: a BEP 10 ``p`` naming a connected entry, non-ASCII digits in a
blocklist, and the bound on one torrent's dials to one host."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import (
    DEFAULT_MAX_PER_HOST,
    EncryptionPolicy,
    PeerAddress,
    PeerId,
    PeerList,
    PeerOrigin,
)
from bip_handshake._handshaker import open_handshaker
from bip_handshake._ip_filter import IPFilterError, parse_ip_filter
from bip_metainfo import InfoHash

# -- PeerList.update_port: two clients behind one NAT address, both on 6881 ------------------

OUTBOUND = PeerAddress.parse("10.0.0.9:6881")  # we dialled the first client
INBOUND = PeerAddress.parse("10.0.0.9:40000")  # the second dialled us; its p says 6881


def two_connections() -> PeerList:
    peers = PeerList(min_reconnect_time=1)
    peers.add(OUTBOUND, PeerOrigin.TRACKER, 0.0)
    assert peers.connect_candidates(5, 0.0) == [OUTBOUND]
    assert peers.connected(OUTBOUND, 0.0)
    assert peers.connected(INBOUND, 0.0, origin=PeerOrigin.INCOMING)
    return peers


def test_update_port_to_an_address_connected_already_leaves_both_entries() -> None:
    # libtorrent's update_peer_port: the reporting connection is the duplicate. Merged, one
    # disconnect marked the shared entry not connected while the other connection was up.
    peers = two_connections()
    assert peers.update_port(INBOUND, 6881, 1.0) is None  # the caller keeps INBOUND
    assert {e.address for e in peers.entries()} == {OUTBOUND, INBOUND}
    peers.disconnected(INBOUND, 2.0)  # reported under the address the caller kept
    assert INBOUND not in peers  # an ephemeral port: forgotten
    entry = peers.entry(OUTBOUND)
    assert entry is not None
    assert entry.connected
    assert entry.origin == PeerOrigin.TRACKER
    assert peers.connect_candidates(5, 10.0) == []  # never offered while connected
    assert peers.statistics().connected == 1
    # The first client going leaves its entry to be dialled again, as usual.
    peers.disconnected(OUTBOUND, 11.0)
    assert peers.connect_candidates(5, 20.0) == [OUTBOUND]


def test_update_port_of_the_connected_entry_itself_still_answers_its_address() -> None:
    # A second extended handshake from the connection recorded at the listen address.
    peers = two_connections()
    assert peers.update_port(OUTBOUND, 6881, 1.0) == OUTBOUND
    assert len(peers) == 2


def test_update_port_to_an_address_being_dialled_leaves_both_entries() -> None:
    # The mirror order: our dial to OUTBOUND is pending when the second client (INBOUND)
    # says it listens there. The dial carries on and may reach the first client: merged, the
    # two live connections would share one entry again.
    peers = PeerList(min_reconnect_time=1)
    peers.add(OUTBOUND, PeerOrigin.TRACKER, 0.0)
    assert peers.connect_candidates(5, 0.0) == [OUTBOUND]
    assert peers.connected(INBOUND, 0.5, origin=PeerOrigin.INCOMING)
    assert peers.update_port(INBOUND, 6881, 1.0) is None  # the caller keeps INBOUND
    entry = peers.entry(OUTBOUND)
    assert entry is not None
    assert entry.dialling  # our dial's outcome is still awaited there
    assert entry.origin == PeerOrigin.TRACKER
    assert peers.connected(OUTBOUND, 2.0)  # the dial reached the first client
    peers.disconnected(INBOUND, 3.0)
    assert INBOUND not in peers
    entry = peers.entry(OUTBOUND)
    assert entry is not None
    assert entry.connected  # the other connection's end left it alone
    assert peers.statistics().connected == 1


def test_update_port_over_a_dial_past_its_timeout_moves_the_entry() -> None:
    # A dial whose outcome never came back (dial_timeout) is no dial pending: the entry moves.
    peers = PeerList(min_reconnect_time=1, dial_timeout=10)
    peers.add(OUTBOUND, PeerOrigin.TRACKER, 0.0)
    assert peers.connect_candidates(5, 0.0) == [OUTBOUND]
    assert peers.connected(INBOUND, 0.5, origin=PeerOrigin.INCOMING)
    assert peers.update_port(INBOUND, 6881, 11.0) == OUTBOUND
    assert INBOUND not in peers
    entry = peers.entry(OUTBOUND)
    assert entry is not None
    assert entry.connected
    assert not entry.dialling


# -- parse_ip_filter: ASCII digits only -----------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "2.0.0.0/\u00b2",  # superscript two: isdigit() but int() raises
        "2.0.0.0/\u0663",  # Arabic-Indic three: int() reads 3
        "3.0.0.0-3.0.0.255 , 1\u00b27 , name",
        "3.0.0.0-3.0.0.255 , \u0661\u0660 , name",  # Arabic-Indic 10
    ],
)
def test_non_ascii_digits_are_a_malformed_line(line: str) -> None:
    text = f"1.0.0.0/8\n{line}\n4.0.0.0/8\n"
    parsed = parse_ip_filter(text)
    assert (parsed.rules, parsed.skipped) == (2, 1)
    assert parsed.first_error is not None
    assert parsed.first_error.line == 2
    with pytest.raises(IPFilterError) as caught:
        parse_ip_filter(text, strict=True)
    assert caught.value.line == 2


# Lines shaped like the formats' (an address, a separator, digits of any script), and
# text of the characters a parser trips on: the formats' own, other scripts' digits, line
# and other separators str.split/strip know, a BOM, NUL. An alphabet, not st.text()'s
# whole Unicode: building Hypothesis's character map took seconds on a fresh machine,
# and the parametrised cases above are the regression.
_DIGITS = "0123456789\u00b2\u0663\u0661\uff11"
_SHAPED = st.tuples(
    st.sampled_from(["1.2.3.4", "::1", "1.2.3.4-1.2.3.9", "::1-::9", "a:1.2.3.4-1.2.3.9", ""]),
    st.sampled_from(["/", " , ", "-", ":", " ", ""]),
    st.text(alphabet=_DIGITS, max_size=4),
    st.sampled_from(["", " , name", " # comment", ".5", "-1.2.3.4"]),
).map("".join)
_TEXT = st.text(
    alphabet=_DIGITS + "abcdef:.,/-# \t\r\x0b\x0c\x1c\x85\u2028\u3000\ufeff\x00\u00e9", max_size=12
)
_LINES = st.one_of(_SHAPED, _TEXT)


@settings(max_examples=20, deadline=None)
@given(st.lists(_LINES, max_size=6).map("\n".join), st.sampled_from(["auto", "p2p", "dat", "cidr"]))
def test_parse_ip_filter_raises_only_ip_filter_error(text: str, format: Any) -> None:
    # Lenient: a malformed line is skipped and counted, whatever it holds.
    parsed = parse_ip_filter(text, format=format)
    assert parsed.skipped >= 0
    # Strict: the first malformed line raises IPFilterError with its number, nothing else.
    error: IPFilterError | None = None
    try:
        parse_ip_filter(text, format=format, strict=True)
    except IPFilterError as exc:
        error = exc
    assert error is None or error.line is not None
    assert (error is None) == (parsed.skipped == 0)


# -- Handshaker: one torrent's dials to one host --------------------------------------------

TORRENT = InfoHash(v1=b"\x11" * 20)
OTHER_TORRENT = InfoHash(v1=b"\x22" * 20)
VICTIM = IPv4Address("192.0.2.7")


def handshaker(**kwargs: Any) -> Any:
    return open_handshaker(
        listen=[],
        peer_id=PeerId(b"-BP0100-aaaaaaaaaaaa"),
        encryption=EncryptionPolicy.PLAINTEXT_ONLY,
        **kwargs,
    )


async def wait_for(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(60):
        while not predicate():
            await trio.sleep(0.05)


async def test_one_host_under_2000_ports_queues_max_per_host_dials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dialled: list[PeerAddress] = []
    release = trio.Event()

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        dialled.append(address)
        await release.wait()
        raise OSError("refused")

    async with handshaker(dial=dial) as hs:
        hs.register(TORRENT)
        hs.register(OTHER_TORRENT)
        flood = [PeerAddress(VICTIM, port) for port in range(1, 2001)]
        hs.discovered(TORRENT, flood, "pex")
        stats = hs.statistics()
        assert stats.queued == DEFAULT_MAX_PER_HOST
        assert stats.dropped_per_host == 2000 - DEFAULT_MAX_PER_HOST
        assert stats.dropped_queue_full == 0
        # Other hosts, and the same host for another torrent, are not affected.
        assert hs.connect(TORRENT, PeerAddress(IPv4Address("192.0.2.8"), 1))
        assert hs.connect(OTHER_TORRENT, flood[-1])
        await wait_for(lambda: len(dialled) == DEFAULT_MAX_PER_HOST + 2)
        await trio.testing.wait_all_tasks_blocked()
        assert len(dialled) == DEFAULT_MAX_PER_HOST + 2  # in flight count too
        assert not hs.connect(TORRENT, flood[-1])
        release.set()  # the dials fail: the host's bound is free again
        await wait_for(lambda: hs.statistics().outbound_in_flight == 0)
        assert hs.connect(TORRENT, flood[-1])


async def test_max_outbound_per_host_none_lifts_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def dial(address: PeerAddress) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with handshaker(dial=dial, max_outbound_per_host=None, max_queued=10) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [PeerAddress(VICTIM, port) for port in range(1, 21)], "tracker")
        stats = hs.statistics()
        assert stats.dropped_per_host == 0
        assert stats.queued == 10


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (True, TypeError), (1.5, TypeError)])
async def test_max_outbound_per_host_is_checked(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_outbound_per_host"):
        async with handshaker(max_outbound_per_host=value):
            pass  # pragma: no cover
