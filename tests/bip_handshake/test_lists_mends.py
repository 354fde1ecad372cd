"""Session 12 mends (M-lists): a plaintext-only MSE initiator keeps the bytes it was fed, a
full peer list still records a connection and takes the user's (tracker's, LSD's) peers over
untried PEX ones, and an LSD datagram costs no scan of every torrent announced; the final
read's (FM-lists): displaced entries held one deep, a connection's eviction looks at the window,
and a peer's own evicted entry keeps its history when the peer says it listens there."""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from typing import Any

from bip_handshake import EncryptionPolicy, MSEEstablished, MSEInitiator, MSEReceiver, PeerAddress
from bip_handshake._lsd import LsdService
from bip_handshake._peer_list import EVICTION_WINDOW, PeerList, PeerOrigin
from bip_handshake._peer_priority import peer_priority

SKEY = bytes(range(20))
THEIR_HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + SKEY + b"-XX0001-abcdefghijkl"


# -- MSE: a plaintext-only initiator ------------------------------------------------------------


def test_plaintext_initiator_hands_on_bytes_received_before_its_event() -> None:
    # h11's contract: every byte fed comes back, here as the event's trailing data.
    a = MSEInitiator(SKEY, EncryptionPolicy.PLAINTEXT_ONLY, random.Random(1), b"x" * 68)
    assert a.data_to_send() == b"x" * 68
    a.receive_data(THEIR_HANDSHAKE[:30])
    a.receive_data(THEIR_HANDSHAKE[30:])
    event = a.next_event()
    assert event == MSEEstablished("plaintext", SKEY, False, b"", THEIR_HANDSHAKE)
    assert event.data == THEIR_HANDSHAKE
    assert a.established
    assert a.decrypt(b"more") == b"more"


def test_plaintext_initiator_against_a_receiver_fed_in_one_go() -> None:
    a = MSEInitiator(SKEY, EncryptionPolicy.PLAINTEXT_ONLY, random.Random(1), THEIR_HANDSHAKE)
    b = MSEReceiver([SKEY], EncryptionPolicy.PREFER_ENCRYPTED, random.Random(2))
    b.receive_data(a.data_to_send())
    ev_b = b.next_event()
    assert isinstance(ev_b, MSEEstablished)
    # The receiver's answer (its handshake and a bitfield) arrives before the initiator looks.
    a.receive_data(b"their handshake" + b"bitfield")
    ev_a = a.next_event()
    assert isinstance(ev_a, MSEEstablished)
    assert ev_a.data == b"their handshake" + b"bitfield"


# -- PeerList: a full list ----------------------------------------------------------------------

OURS = PeerAddress.parse("203.0.113.7:6881")


def _by_priority(count: int) -> list[PeerAddress]:
    """``count`` connectable addresses, highest BEP 40 priority against OURS first."""
    rng = random.Random(7)
    pool = {PeerAddress(IPv4Address(rng.getrandbits(32) | 0x0100_0000), 6881) for _ in range(400)}
    ranked = sorted(
        (a for a in pool if a.is_connectable), key=lambda a: (-peer_priority(OURS, a), str(a))
    )
    return ranked[:count]


def _full_of_pex(size: int) -> tuple[PeerList, list[PeerAddress]]:
    """A list of ``size`` entries, all untried PEX ones of the highest priorities."""
    peers = PeerList(max_size=size)
    peers.set_our_addresses([OURS])
    pex = _by_priority(size)
    assert peers.add_many(pex, PeerOrigin.PEX, 0.0) == size
    return peers, pex


def test_an_inbound_connection_is_recorded_in_a_list_full_of_untried_pex_entries() -> None:
    peers, pex = _full_of_pex(8)
    inbound = PeerAddress.parse("198.51.100.30:40001")
    assert peer_priority(OURS, inbound) < min(peer_priority(OURS, a) for a in pex)
    assert peers.connected(inbound, 3.0, origin=PeerOrigin.INCOMING)
    assert len(peers) == 8
    assert peers.statistics().evicted == 1
    # ... and where it listens (its BEP 10 ``p``), to dial it back later.
    listen = PeerAddress.parse("198.51.100.30:51413")
    assert peers.update_port(inbound, 51413, 3.0) == listen
    entry = peers.entry(listen)
    assert entry is not None
    assert entry.connected


def test_an_unrecorded_connection_telling_its_port_is_recorded_in_a_full_list() -> None:
    peers, _ = _full_of_pex(8)
    inbound = PeerAddress.parse("198.51.100.31:40001")
    listen = PeerAddress.parse("198.51.100.31:51413")
    assert peers.update_port(inbound, 51413, 3.0) == listen
    assert len(peers) == 8


def test_a_connection_evicts_beyond_the_window_when_the_oldest_cannot_go() -> None:
    size = EVICTION_WINDOW + 2
    peers = PeerList(max_size=size)
    peers.add_many(
        (PeerAddress(IPv4Address(0x0A00_0000 + i), 6881) for i in range(size)),
        PeerOrigin.PEX,
        0.0,
    )
    dialling = peers.connect_candidates(EVICTION_WINDOW, 0.0)
    assert len(dialling) == EVICTION_WINDOW
    inbound = PeerAddress.parse("198.51.100.30:40001")
    assert peers.connected(inbound, 1.0, origin=PeerOrigin.INCOMING)
    assert all(peers.is_dialling(a) for a in dialling)
    assert len(peers) == size


def test_a_connection_still_evicts_no_connected_dialling_or_user_entry() -> None:
    peers = PeerList(max_size=3)
    a, b, c = (PeerAddress.parse(f"10.0.0.{i}:6881") for i in (1, 2, 3))
    peers.add(a, PeerOrigin.USER, 0.0)
    peers.add_many([b, c], PeerOrigin.PEX, 0.0)
    peers.connected(b, 0.0)
    assert peers.connect_candidates(5, 0.0) == [a, c]
    assert not peers.connected(PeerAddress.parse("198.51.100.30:40001"), 1.0)
    assert {e.address for e in peers.entries()} == {a, b, c}


def test_user_tracker_and_lsd_peers_displace_untried_pex_entries() -> None:
    peers, pex = _full_of_pex(4)
    lowest = min(peer_priority(OURS, a) for a in pex)
    newcomers = [
        (PeerOrigin.USER, PeerAddress.parse("198.51.100.20:51413")),
        (PeerOrigin.TRACKER, PeerAddress.parse("198.51.100.21:51413")),
        (PeerOrigin.LSD, PeerAddress.parse("192.168.1.20:6881")),
    ]
    for origin, address in newcomers:
        assert peer_priority(OURS, address) < lowest
        assert peers.add(address, origin, 1.0), origin
        assert address in peers
    assert peers.statistics().evicted == 3
    assert peers.statistics().dropped == 0
    assert len(peers) == 4
    assert peers.connect_candidates(3, 2.0) == [a for _, a in newcomers]


def test_a_pex_newcomer_does_not_displace_a_better_sourced_entry() -> None:
    # The same order as connect_candidates: fewest failures, then source, then priority.
    peers = PeerList(max_size=2)
    peers.set_our_addresses([OURS])
    best, low = _by_priority(2)[0], _by_priority(300)[-1]
    assert peers.add(low, PeerOrigin.TRACKER, 0.0)
    assert peers.add(PeerAddress.parse("198.51.100.40:6881"), PeerOrigin.DHT, 0.0)
    assert not peers.add(best, PeerOrigin.PEX, 1.0)
    assert peers.statistics().dropped == 1
    # A failed entry still goes first, whatever its source.
    peers.connect_candidates(2, 1.0)
    peers.dial_failed(low, 1.0)
    peers.dial_cancelled(PeerAddress.parse("198.51.100.40:6881"), 1.0)
    assert peers.add(best, PeerOrigin.PEX, 2.0)
    assert low not in peers


# -- LSD: the cost of a datagram ----------------------------------------------------------------


class _CountingDict(dict[bytes, float]):
    """The service's due times, counting the calls that walk all of them."""

    walks = 0

    def values(self) -> Any:
        _CountingDict.walks += 1
        return super().values()

    def items(self) -> Any:
        _CountingDict.walks += 1
        return super().items()


def test_lsd_datagrams_cost_no_scan_of_every_torrent() -> None:
    rng = random.Random(0)
    service = LsdService(6881, cookie="c", rng=rng)
    for _ in range(2000):
        service.announce(rng.randbytes(20), 0.0)
    now = 0.0
    for _ in range(1000):  # the start-up schedule, until a quiet second comes
        service.datagrams_to_send(now)
        deadline = service.next_deadline()
        assert deadline is not None
        if deadline >= now + 1.0:
            break
        now = deadline
    else:
        raise AssertionError("the schedule has no quiet second")
    service._hashes = _CountingDict(service._hashes)
    _CountingDict.walks = 0
    source = PeerAddress.parse("192.168.1.66:6771")
    for _ in range(500):  # the shell's loop, once per datagram (almost all rate-limited)
        now += 1e-3  # 0.5 s in all: within the quiet second
        service.handle_timer(now)
        assert service.datagrams_to_send(now) == []
        assert service.next_deadline() is not None
        service.receive_datagram(b"x" * 100, source, now)
    assert service.statistics().rate_limited > 400
    assert _CountingDict.walks <= 2


# -- PeerList: review mends (RM-lists) ----------------------------------------------------------

EVIL = IPv4Address("198.51.100.66")


def _full_of_trackers(size: int) -> PeerList:
    """A list of ``size`` untried tracker entries, no two of one host."""
    peers = PeerList(max_size=size)
    for i in range(size):
        peers.add(PeerAddress(IPv4Address(0x0B00_0000 + i * 7919), 6881), PeerOrigin.TRACKER, 0.0)
    assert len(peers) == size
    return peers


def _trackers_left(peers: PeerList) -> int:
    return sum(1 for e in peers.entries() if PeerOrigin.TRACKER in e.origin)


def test_one_host_reconnecting_from_new_ports_takes_no_other_hosts_entry() -> None:
    # It connects, leaves, and its PEX names addresses of its choosing: the entry its
    # connection displaced comes back when the connection is forgotten, so the PEX finds
    # no hole to fill.
    peers = _full_of_trackers(20)
    t = 1.0
    for k in range(60):
        ephemeral = PeerAddress(EVIL, 20000 + k)
        assert peers.connected(ephemeral, t, origin=PeerOrigin.INCOMING)
        peers.disconnected(ephemeral, t)
        peers.add(PeerAddress(IPv4Address(0x2000_0000 + k), 6881), PeerOrigin.PEX, t)
        t += 0.01
    assert _trackers_left(peers) == 20
    assert len(peers) == 20


def test_one_host_telling_new_listen_ports_evicts_its_own_entries_only() -> None:
    size = EVICTION_WINDOW + 40  # its entries, the youngest, are out of the window
    peers = _full_of_trackers(size)
    t = 1.0
    for k in range(60):
        ephemeral = PeerAddress(EVIL, 20000 + k)
        assert peers.connected(ephemeral, t, origin=PeerOrigin.INCOMING)
        listen = peers.update_port(ephemeral, 1024 + k, t)
        assert listen == PeerAddress(EVIL, 1024 + k)
        peers.disconnected(listen, t)
        t += 0.01
    of_host = [e.address for e in peers.entries() if e.address.host == EVIL]
    assert len(of_host) <= 2  # DEFAULT_MAX_PER_HOST
    assert PeerAddress(EVIL, 1024 + 59) in of_host  # the port it said last
    assert _trackers_left(peers) >= size - 2
    assert len(peers) == size


def test_listen_entries_count_against_the_host_cap_once_their_connection_ends() -> None:
    peers = PeerList()  # room for all: the cap alone bounds the host
    for k in range(10):
        ephemeral = PeerAddress(EVIL, 20000 + k)
        assert peers.connected(ephemeral, float(k), origin=PeerOrigin.INCOMING)
        listen = peers.update_port(ephemeral, 1024 + k, float(k))
        assert listen is not None
        peers.disconnected(listen, float(k))
    assert sorted(e.address.port for e in peers.entries()) == [1024 + 8, 1024 + 9]


def test_two_connections_of_one_host_are_both_recorded_and_trimmed_when_they_end() -> None:
    peers = PeerList(max_per_host=1)
    a, b = PeerAddress(EVIL, 20000), PeerAddress(EVIL, 20001)
    assert peers.connected(a, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.connected(b, 0.0, origin=PeerOrigin.INCOMING)
    la, lb = peers.update_port(a, 7001, 0.0), peers.update_port(b, 7002, 0.0)
    assert la is not None
    assert lb is not None
    assert peers.statistics().connected == 2  # both recorded, over the cap
    peers.disconnected(la, 1.0)
    assert la in peers  # lb is still connected: no other entry of the host may go
    peers.disconnected(lb, 2.0)
    assert [e.address for e in peers.entries()] == [lb]


def _proven_and_trackers(size: int) -> tuple[PeerList, PeerAddress, PeerAddress]:
    """A full list of high-priority entries: a peer that dialled us and said where it
    listens (left cleanly), a resume-data peer, tracker peers."""
    high = _by_priority(size)
    peers = PeerList(max_size=size)
    peers.set_our_addresses([OURS])
    ephemeral = PeerAddress(high[0].host, 40001)
    assert peers.connected(ephemeral, 0.0, origin=PeerOrigin.INCOMING)
    listen = peers.update_port(ephemeral, 6881, 0.0)
    assert listen is not None
    peers.disconnected(listen, 1.0)
    assert peers.add(high[1], PeerOrigin.RESUME, 1.0)
    for address in high[2:]:
        assert peers.add(address, PeerOrigin.TRACKER, 1.0)
    assert len(peers) == size
    return peers, listen, high[1]


def test_a_pex_flood_evicts_no_proven_or_resume_entry() -> None:
    peers, listen, resume = _proven_and_trackers(10)
    low = _by_priority(300)[-20:]
    for address in low:
        assert not peers.add(address, PeerOrigin.PEX, 2.0)
    assert listen in peers
    assert resume in peers
    assert peers.statistics().evicted == 0


def test_a_proven_entry_that_gave_up_may_go_for_a_newcomer() -> None:
    peers, listen, _ = _proven_and_trackers(10)
    for t in (100.0, 300.0, 700.0):  # min_reconnect_time 60 s x (failures + 1)
        assert listen in peers.connect_candidates(10, t)
        peers.dial_failed(listen, t)
    newcomer = _by_priority(300)[-1]
    assert peers.add(newcomer, PeerOrigin.PEX, 800.0)
    assert listen not in peers


def test_a_connection_evicts_an_untried_pex_entry_before_a_proven_one() -> None:
    peers = PeerList(max_size=3)
    peers.set_our_addresses([OURS])
    high = _by_priority(3)
    ephemeral = PeerAddress(high[0].host, 40001)
    assert peers.connected(ephemeral, 0.0, origin=PeerOrigin.INCOMING)
    listen = peers.update_port(ephemeral, 6881, 0.0)
    assert listen is not None
    peers.disconnected(listen, 1.0)
    assert peers.add(high[1], PeerOrigin.RESUME, 1.0)
    pex = PeerAddress.parse("198.51.100.77:6881")  # a low priority, but a better source
    assert peers.add(pex, PeerOrigin.PEX, 1.0)
    assert peers.connected(PeerAddress.parse("198.51.100.30:40001"), 2.0)
    assert pex not in peers
    assert listen in peers
    assert high[1] in peers


# -- PeerList: final-read mends (FM-lists) ------------------------------------------------------


def _displaced_depth(peers: PeerList) -> int:
    """The longest chain of entries held as ``displaced`` (one level at most: an entry an
    incoming connection evicted holds none of its own)."""
    longest = 0
    for entry in peers._entries.values():
        depth, held = 0, entry.displaced
        while held is not None:
            depth, held = depth + 1, held.displaced
        longest = max(longest, depth)
    return longest


def test_displaced_entries_do_not_chain_when_an_inbound_peer_is_listed_by_a_source() -> None:
    # Each inbound peer is then named by PEX (it stays after its connection), fails and is
    # evicted by the next connection: no entry may keep the one it displaced, nor pass it on.
    peers = _full_of_trackers(10)
    for k in range(40):
        inbound = PeerAddress(IPv4Address(0x2100_0000 + k), 40000 + k)
        assert peers.connected(inbound, float(k), origin=PeerOrigin.INCOMING)
        peers.add(inbound, PeerOrigin.PEX, float(k))
        for _ in range(3):
            peers.disconnected(inbound, float(k), failed=True)
        assert _displaced_depth(peers) == 0
    assert len(peers) == 10


def test_an_entry_evicted_by_a_connection_holds_no_displaced_entry() -> None:
    peers = _full_of_trackers(4)
    for k in range(20):  # each connection evicts the previous one's entry (kept, not given up)
        inbound = PeerAddress(IPv4Address(0x2200_0000 + k), 40000 + k)
        assert peers.connected(inbound, float(k), origin=PeerOrigin.INCOMING)
        peers.add(inbound, PeerOrigin.PEX, float(k))
        peers.disconnected(inbound, float(k))
        assert _displaced_depth(peers) <= 1
    assert len(peers) == 4


def test_a_connection_into_a_full_list_of_proven_entries_looks_at_the_window_only() -> None:
    peers = PeerList(max_size=EVICTION_WINDOW * 8)
    for i in range(peers.max_size):  # a long-running torrent: every entry connected once
        address = PeerAddress(IPv4Address(0x0A00_0000 + i), 6881)
        peers.add(address, PeerOrigin.TRACKER, 0.0)
        peers.connected(address, 0.0)
        peers.disconnected(address, 0.0)
    looked_at = 0
    ranked = peers._eviction_key

    def counting(entry: Any) -> tuple[bool, tuple[int, int, int]]:
        nonlocal looked_at
        looked_at += 1
        return ranked(entry)

    peers._eviction_key = counting  # type: ignore[method-assign]
    for k in range(5):
        inbound = PeerAddress(IPv4Address(0x2300_0000 + k), 40000)
        assert peers.connected(inbound, 1.0, origin=PeerOrigin.INCOMING)
        peers.disconnected(inbound, 1.0)
    assert looked_at <= 5 * EVICTION_WINDOW
    assert len(peers) == peers.max_size


def test_a_port_told_where_the_connection_evicted_its_own_entry_keeps_that_history() -> None:
    host = IPv4Address("10.0.0.1")
    peers = PeerList(max_size=4, max_per_host=2)
    for port in (6881, 6882):
        address = PeerAddress(host, port)
        peers.add(address, PeerOrigin.TRACKER | PeerOrigin.RESUME, 0.0)
        peers.connected(address, 0.0)
        peers.disconnected(address, 0.0)
        peers.mark_seed(address)
    for i in range(2):
        peers.add(PeerAddress(IPv4Address(0x0B00_0000 + i), 6881), PeerOrigin.TRACKER, 0.0)
    ephemeral = PeerAddress(host, 50000)
    assert peers.connected(ephemeral, 1.0, origin=PeerOrigin.INCOMING)
    (evicted,) = (p for p in (6881, 6882) if PeerAddress(host, p) not in peers)
    listen = PeerAddress(host, evicted)
    assert peers.update_port(ephemeral, evicted, 1.0) == listen
    peers.disconnected(listen, 2.0)
    entry = peers.entry(listen)
    assert entry is not None
    assert PeerOrigin.TRACKER | PeerOrigin.RESUME in entry.origin
    assert entry.seed
    assert len(peers) == 4
    assert peers.statistics().evicted == 0  # it was not lost after all
