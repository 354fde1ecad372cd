"""LSD's per-source rate table: a table full of hosts whose allowance is whole again makes
room for a new host (the module docstring's promise), so many quiet source addresses cannot
lock honest peers out; while every tracked host is still limited, new hosts are refused, and
all the table admits stays within ``max_sources`` allowances."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake._compact import PeerAddress
from bip_handshake._lsd import (
    LSD_MAX_SOURCES,
    LsdAnnounce,
    LsdService,
)

OURS = bytes(range(20))
HONEST = PeerAddress(IPv4Address("192.168.1.50"), 6771)


def their(info_hash: bytes = OURS) -> bytes:
    return LsdAnnounce(51413, (info_hash,), "239.192.152.143:6771", "them").encode()


def source(i: int) -> PeerAddress:
    """The i-th of many forged (or real) LAN source addresses, none of them HONEST."""
    return PeerAddress(IPv4Address(0x0A00_0001 + i), 6771)  # 10.0.0.1 on


def peers_found(service: LsdService) -> int:
    count = 0
    while service.next_event() is not None:
        count += 1
    return count


def test_quiet_sources_filling_the_table_do_not_lock_out_an_honest_peer() -> None:
    # The hunt's attack: one message every 9 s from each of 256 addresses (28 datagrams/s)
    # keeps every entry seen within 10 s, each holding 19 tokens of 20 at once and its whole
    # allowance half a second later. An honest peer announcing once a minute is heard.
    service = LsdService(6881, cookie="mine")
    service.announce(OURS, 0.0)
    junk = their(bytes(20))  # a torrent we do not announce
    now, heard = 0.0, 0
    for _ in range(5):
        for _ in range(7):
            for i in range(LSD_MAX_SOURCES):
                service.receive_datagram(junk, source(i), now + i * 9.0 / LSD_MAX_SOURCES)
            now += 9.0
        assert service.statistics().tracked_sources == LSD_MAX_SOURCES
        service.receive_datagram(their(), HONEST, now - 4.0)
        heard += peers_found(service)
    assert heard == 5
    assert service.statistics().rate_limited == 0


def test_an_evicted_host_loses_nothing_and_a_limited_one_is_kept() -> None:
    # Times are binary fractions: the allowances are exact.
    service = LsdService(6881, source_rate=1.0, source_burst=2, max_sources=2)
    service.announce(OURS, 0.0)
    a, b, c = source(0), source(1), source(2)
    service.receive_datagram(their(), a, 0.0)  # 1 token left: whole at 1.0
    service.receive_datagram(their(), b, 0.5)  # whole at 1.5
    service.receive_datagram(their(), c, 0.625)  # both still limited: refused
    assert (peers_found(service), service.statistics().rate_limited) == (2, 1)
    service.receive_datagram(their(), a, 0.75)  # 1.75 - 1: whole again at 2.0
    service.receive_datagram(their(), c, 1.25)  # still none whole: refused
    assert (peers_found(service), service.statistics().rate_limited) == (1, 2)
    service.receive_datagram(their(), c, 1.5)  # b is whole (seen 1 s ago): its room goes to c
    assert peers_found(service) == 1
    assert set(service._sources) == {a.host, c.host}
    # b comes back with its whole allowance, as it had it: two at once, then limited. It
    # takes the room of a, whole again now.
    for _ in range(3):
        service.receive_datagram(their(), b, 2.0)
    assert peers_found(service) == 2
    assert set(service._sources) == {c.host, b.host}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from([0.0, 0.0, 0.125, 0.25, 0.5, 1.0, 3.0])),
        max_size=120,
    )
)
def test_new_hosts_are_refused_only_while_every_tracked_host_is_limited(
    traffic: list[tuple[int, float]],
) -> None:
    # Small bounds (3 hosts of burst 2, 1 message a second) so the table is often full;
    # times are binary fractions, so allowances are exact.
    service = LsdService(6881, source_rate=1.0, source_burst=2, max_sources=3)
    service.announce(OURS, 0.0)
    now = 0.0
    admitted = 0
    for host, step in traffic:
        now += step
        sender = source(host)
        new = sender.host not in service._sources
        room = len(service._sources) < 3 or any(
            entry.tokens + (now - entry.stamp) * 1.0 >= 2.0 for entry in service._sources.values()
        )
        limited = service.statistics().rate_limited
        service.receive_datagram(their(), sender, now)
        refused = service.statistics().rate_limited > limited
        admitted += not refused
        if new:
            # A new host has its whole allowance: refused only for want of room.
            assert refused == (not room), (sender, now)
        assert len(service._sources) <= 3
        # Every tracked host is one allowance at most: the table bounds the total.
        assert admitted <= 3 * 2 + 3 * 1.0 * now + 1e-9


def test_the_scan_for_a_whole_entry_is_not_repeated_while_none_can_be() -> None:
    # A flood of new addresses against a table of limited hosts costs one scan, not one per
    # datagram: the service remembers when the first tracked allowance is whole again.
    service = LsdService(6881, source_rate=1.0, source_burst=2, max_sources=4)
    service.announce(OURS, 0.0)
    for i in range(4):
        service.receive_datagram(their(), source(i), 0.0)
    scans = 0
    real = service._whole_source

    def counting(now: float) -> IPv4Address | IPv6Address | None:
        nonlocal scans
        scans += 1
        return real(now)

    service._whole_source = counting  # type: ignore[method-assign]
    for i in range(4, 1004):
        service.receive_datagram(their(), source(i), 0.5)
    assert scans == 1
    assert service.statistics().rate_limited == 1000
    service.receive_datagram(their(), source(2000), 1.0)  # all whole again: room
    assert scans == 2
    assert peers_found(service) == 5
