"""Local Service Discovery (BEP 14): the BT-SEARCH codec and the LsdService core."""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake import PeerOrigin
from bip_handshake._compact import PeerAddress
from bip_handshake._errors import LocalProtocolError, RemoteProtocolError
from bip_handshake._lsd import (
    LSD_ANNOUNCE_INTERVAL,
    LSD_FIRST_ANNOUNCES,
    LSD_GROUP_V4,
    LSD_GROUP_V6,
    LSD_MAX_HASHES,
    LSD_MAX_MESSAGE,
    LSD_MIN_GAP,
    LSD_SOURCE_BURST,
    LsdAnnounce,
    LsdError,
    LsdPeerFound,
    LsdService,
    decode_lsd_announce,
)
from bip_metainfo import InfoHash

H1 = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
H2 = bytes(range(20))
V2 = bytes(range(100, 132))  # a SHA-256 info-hash
PEER = PeerAddress(IPv4Address("192.168.1.20"), 6771)


def hashes(n: int) -> list[bytes]:
    return [i.to_bytes(20, "big") for i in range(1, n + 1)]


def their(*info_hashes: bytes, port: int = 51413, cookie: str | None = "them") -> bytes:
    return LsdAnnounce(port, info_hashes, "239.192.152.143:6771", cookie).encode()


def found(service: LsdService) -> list[tuple[bytes, str]]:
    out = []
    while (event := service.next_event()) is not None:
        assert isinstance(event, LsdPeerFound)
        out.append((event.info_hash, str(event.peer)))
    return out


# -- codec: what real clients send -------------------------------------------------------------

LIBTORRENT = (
    b"BT-SEARCH * HTTP/1.1\r\n"
    b"Host: 239.192.152.143:6771\r\n"
    b"Port: 6881\r\n"
    b"Infohash: 0123456789abcdef0123456789abcdef01234567\r\n"
    b"cookie: 2ae3f0b1\r\n"
    b"\r\n\r\n"
)
TRANSMISSION_3 = (
    b"BT-SEARCH * HTTP/1.1\r\n"
    b"Host: 239.192.152.143:6771\r\n"
    b"Port: 51413\r\n"
    b"Infohash: 0123456789ABCDEF0123456789ABCDEF01234567\r\n"
    b"\r\n\r\n"
)
TRANSMISSION_4_V6 = (
    b"BT-SEARCH * HTTP/1.1\r\n"
    b"Host: [ff15::efc0:988f]:6771\r\n"
    b"Port: 51413\r\n"
    b"Infohash: 0123456789ABCDEF0123456789ABCDEF01234567\r\n"
    b"Infohash: 000102030405060708090A0B0C0D0E0F10111213\r\n"
    b"cookie: aB3dE6gH9jK1\r\n"
    b"\r\n\r\n"
)


def test_libtorrent_message() -> None:
    message = decode_lsd_announce(LIBTORRENT)
    assert message == LsdAnnounce(6881, (H1,), "239.192.152.143:6771", "2ae3f0b1")
    assert message.encode() == LIBTORRENT  # we write what libtorrent writes


def test_transmission_messages() -> None:
    assert decode_lsd_announce(TRANSMISSION_3) == LsdAnnounce(
        51413, (H1,), "239.192.152.143:6771", None
    )
    message = decode_lsd_announce(TRANSMISSION_4_V6)
    assert message.info_hashes == (H1, H2)
    assert (message.host, message.cookie) == ("[ff15::efc0:988f]:6771", "aB3dE6gH9jK1")


@pytest.mark.parametrize(
    "data",
    [
        # header names in any case, blanks around values, bare LF, one blank line only
        b"bt-search * HTTP/1.0\nPORT:6881\n"
        b"infohash:   0123456789abcdef0123456789abcdef01234567 \n\n",
        # unknown headers ignored, no Host, many trailing blank lines
        b"BT-SEARCH * HTTP/1.1\r\nX-Future: yes\r\nPort: 6881\r\nINFOHASH: "
        b"0123456789ABCDEF0123456789abcdef01234567\r\n\r\n\r\n\r\n\r\n",
        # tab-separated value, no trailing blank line after the header block's end
        b"BT-SEARCH  *  HTTP/1.1\r\nport:\t6881\r\n"
        b"Infohash:0123456789abcdef0123456789abcdef01234567\r\n\r\n",
    ],
)
def test_tolerated_variations(data: bytes) -> None:
    message = decode_lsd_announce(data)
    assert (message.port, message.info_hashes) == (6881, (H1,))


def test_parser_takes_whole_messages_only() -> None:
    # A datagram is a whole message: a prefix cut before the blank line is refused.
    for cut in range(len(LIBTORRENT)):
        prefix = LIBTORRENT[:cut]
        if b"\r\n\r\n" in prefix:
            decode_lsd_announce(prefix)
        else:
            with pytest.raises(LsdError):
                decode_lsd_announce(prefix)


GOOD_HASH = b"Infohash: 0123456789abcdef0123456789abcdef01234567\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n" + GOOD_HASH,  # no blank line
        b"M-SEARCH * HTTP/1.1\r\nPort: 1\r\n" + GOOD_HASH + b"\r\n",  # SSDP, not LSD
        b"BT-SEARCH / HTTP/1.1\r\nPort: 1\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/2.0\r\nPort: 1\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH *\r\nPort: 1\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/1.1\r\n" + GOOD_HASH + b"\r\n",  # no Port
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n",  # no Infohash
        b"BT-SEARCH * HTTP/1.1\r\nPort: 65536\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: -1\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 0x10\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nPort: 1\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: 0123\r\n\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: " + b"g" * 40 + b"\r\n\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: " + b"ab" * 32 + b"\r\n\r\n",  # full v2
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nHost: a\r\nHost: b\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\ncookie: a\r\ncookie: b\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort 1\r\n" + GOOD_HASH + b"\r\n",  # no colon
        b"BT-SEARCH * HTTP/1.1\r\nPort : 1\r\n" + GOOD_HASH + b"\r\n",  # blank in a name
        b"BT-SEARCH * HTTP/1.1\r\n Port: 1\r\n" + GOOD_HASH + b"\r\n",  # folded line
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\rX\r\n" + GOOD_HASH + b"\r\n",  # bare CR
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nX: \x00\r\n" + GOOD_HASH + b"\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n" + GOOD_HASH + b"\r\nbody",  # data after
    ],
)
def test_malformed_messages_raise_our_error(data: bytes) -> None:
    with pytest.raises(LsdError):
        decode_lsd_announce(data)
    assert issubclass(LsdError, RemoteProtocolError)


def test_a_bad_infohash_is_skipped_the_others_kept() -> None:
    # libtorrent skips a value that is not 40 hex digits and keeps the message's others.
    data = (
        b"BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\n"
        b"Infohash: " + b"ab" * 32 + b"\r\n"  # a whole v2 hash
        b"Infohash: 0123456789abcdef0123456789abcdef01234567\r\n"
        b"Infohash: 0123\r\n"
        b"Infohash: " + b"g" * 40 + b"\r\n\r\n\r\n"
    )
    assert decode_lsd_announce(data).info_hashes == (H1,)
    none_valid = data.replace(b"0123456789abcdef0123456789abcdef01234567", b"x")
    with pytest.raises(LsdError, match="none of 4"):
        decode_lsd_announce(none_valid)
    # Bad values count against the bound on Infohash headers like good ones.
    with pytest.raises(LsdError, match="3 info-hashes at most"):
        decode_lsd_announce(data, max_hashes=3)


def test_size_and_hash_bounds() -> None:
    filler = b"X: " + b"x" * (LSD_MAX_MESSAGE - len(LIBTORRENT)) + b"\r\n"
    padded = LIBTORRENT.replace(b"Port:", filler + b"Port:")
    assert len(padded) > LSD_MAX_MESSAGE
    with pytest.raises(LsdError, match="1400 bytes at most"):
        decode_lsd_announce(padded)
    assert decode_lsd_announce(padded, max_size=2000).port == 6881
    many = LsdAnnounce(1, tuple(hashes(LSD_MAX_HASHES + 1))).encode()
    with pytest.raises(LsdError, match="32 info-hashes at most"):
        decode_lsd_announce(many, max_size=4000)
    assert len(decode_lsd_announce(many, max_size=4000, max_hashes=40).info_hashes) == 33


def test_a_full_message_of_25_hashes_fits_1400_bytes() -> None:
    service = LsdService(65535, cookie="f" * 8)
    assert service.hashes_per_message == 25
    for h in hashes(60):
        service.announce(h, 0.0)
    sent = service.datagrams_to_send(0.0)
    assert [len(decode_lsd_announce(m).info_hashes) for m, _ in sent] == [25, 25, 10]
    # Their retries share messages too.
    sent = service.datagrams_to_send(2.0)
    assert [len(decode_lsd_announce(m).info_hashes) for m, _ in sent] == [25, 25, 10]
    assert all(len(m) <= LSD_MAX_MESSAGE for m, _ in sent)
    v6 = LsdService(65535, group=LSD_GROUP_V6, cookie="c" * 64)
    assert v6.hashes_per_message == 24


# Field values: tab, space, visible ASCII and Latin-1's upper half, no blank at either end.
field_text = st.text(
    st.sampled_from("\t ") | st.characters(min_codepoint=0x21, max_codepoint=0xFF),
    max_size=30,
).filter(lambda text: "\x7f" not in text and text == text.strip(" \t"))
announces = st.builds(
    LsdAnnounce,
    st.integers(0, 0xFFFF),
    st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=LSD_MAX_HASHES).map(tuple),
    st.none() | field_text,
    st.none() | field_text,
)


@given(announces)
def test_round_trip(message: LsdAnnounce) -> None:
    assert decode_lsd_announce(message.encode(), max_size=4000) == message


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_our_error(data: bytes) -> None:
    with contextlib.suppress(LsdError):
        decode_lsd_announce(data)


@given(st.lists(st.sampled_from(LIBTORRENT.split(b"\r\n")), max_size=10), st.binary(max_size=8))
def test_shuffled_lines_decode_or_raise_our_error(lines: list[bytes], junk: bytes) -> None:
    with contextlib.suppress(LsdError):
        decode_lsd_announce(b"\r\n".join(lines) + junk)


@pytest.mark.parametrize(
    "build",
    [
        lambda: LsdAnnounce(65536, (H1,)),
        lambda: LsdAnnounce(True, (H1,)),
        lambda: LsdAnnounce("1", (H1,)),  # type: ignore[arg-type]
        lambda: LsdAnnounce(1, ()),
        lambda: LsdAnnounce(1, H1),  # type: ignore[arg-type]
        lambda: LsdAnnounce(1, 5),  # type: ignore[arg-type]
        lambda: LsdAnnounce(1, (H1[:19],)),
        lambda: LsdAnnounce(1, ("ab" * 20,)),  # type: ignore[arg-type]
        lambda: LsdAnnounce(1, (H1,), host="a\r\nPort: 2"),
        lambda: LsdAnnounce(1, (H1,), host=" padded"),
        lambda: LsdAnnounce(1, (H1,), cookie="\u20ac"),
        lambda: LsdAnnounce(1, (H1,), cookie=7),  # type: ignore[arg-type]
    ],
)
def test_bad_message_fields_raise_local_error(build: object) -> None:
    with pytest.raises(LocalProtocolError):
        build()  # type: ignore[operator]


def test_a_list_of_hashes_is_kept_as_a_tuple() -> None:
    assert LsdAnnounce(1, [bytearray(H1)]).info_hashes == (H1,)  # type: ignore[arg-type]


# -- the service: sending ----------------------------------------------------------------------


def test_announces_at_once_then_every_five_minutes() -> None:
    service = LsdService(6881, cookie="me")
    assert (service.port, service.cookie, service.group) == (6881, "me", LSD_GROUP_V4)
    assert service.next_deadline() is None
    assert service.datagrams_to_send(0.0) == []
    service.announce(H1, 10.0)
    assert service.next_deadline() == 10.0
    [(data, group)] = service.datagrams_to_send(10.0)
    assert group == LSD_GROUP_V4
    assert decode_lsd_announce(data) == LsdAnnounce(6881, (H1,), "239.192.152.143:6771", "me")
    assert service.datagrams_to_send(10.0) == []
    # The first announce again 2 s later, and 4 s after that, as libtorrent: a datagram
    # lost on Wi-Fi does not put discovery off five minutes.
    for retry in (12.0, 16.0):
        assert service.next_deadline() == retry
        assert service.datagrams_to_send(retry - 0.5) == []
        assert announced(service.datagrams_to_send(retry)) == [(H1,)]
    assert service.next_deadline() == 10.0 + LSD_ANNOUNCE_INTERVAL
    assert service.datagrams_to_send(309.0) == []
    assert len(service.datagrams_to_send(310.0)) == 1
    service.announce(H1, 400.0)  # announced already: the schedule stands
    assert service.next_deadline() == 610.0
    stats = service.statistics()
    assert (stats.announced, stats.sent, stats.hashes_sent) == (1, 4, 4)


def test_a_few_torrents_have_a_message_each_a_gap_apart() -> None:
    service = LsdService(6881, first_retries=0)  # the regular schedule alone
    service.announce(H1, 0.0)
    assert len(service.datagrams_to_send(0.0)) == 1
    service.announce(H2, 10.0)
    assert service.next_deadline() == 10.0  # its first announce does not wait for the gap
    [(data, _)] = service.datagrams_to_send(10.0)
    assert decode_lsd_announce(data).info_hashes == (H2,)
    assert service.datagrams_to_send(30.0) == []
    # Two torrents fit two messages in five minutes: each keeps its own, a gap apart.
    assert service.next_deadline() == 300.0
    [(data, _)] = service.datagrams_to_send(300.0)
    assert decode_lsd_announce(data).info_hashes == (H1,)
    assert service.next_deadline() == 360.0
    [(data, _)] = service.datagrams_to_send(360.0)
    assert decode_lsd_announce(data).info_hashes == (H2,)


@pytest.mark.parametrize(
    ("group", "cookie"), [(LSD_GROUP_V4, None), (LSD_GROUP_V6, None), (LSD_GROUP_V6, "c" * 64)]
)
def test_up_to_five_torrents_one_hash_a_message_of_200_bytes_at_most(
    group: PeerAddress, cookie: str | None
) -> None:
    """Transmission up to 3 reads 200 bytes of a datagram and its first Infohash only."""
    service = LsdService(65535, group=group, cookie=cookie)
    hybrid = InfoHash(v1=H1, v2=V2)  # two swarms: two of the five
    service.announce(hybrid, 0.0)
    for h in hashes(3):
        service.announce(h, 30.0)
    sent: dict[bytes, list[float]] = {}
    now = 0.0
    while now < 1800.0:
        deadline = service.next_deadline()
        assert deadline is not None
        now = deadline
        for data, _ in service.datagrams_to_send(now):
            assert len(data) <= 200
            [info_hash] = decode_lsd_announce(data).info_hashes
            sent.setdefault(info_hash, []).append(now)
    assert set(sent) == {H1, V2[:20], *hashes(3)}
    regular = []
    for when in sent.values():
        # Each at once, and retried 2 and 6 s later: 14 first-announce messages at most
        # within the minute hold all of it.
        start = 0.0 if when[0] < 30.0 else 30.0
        assert when[:3] == [start, start + 2.0, start + 6.0]
        # The regular schedule spreads the re-announces of those announced together: a
        # first one late by a few gaps, then every five minutes, none late.
        assert LSD_ANNOUNCE_INTERVAL <= when[3] - start <= LSD_ANNOUNCE_INTERVAL + 4 * LSD_MIN_GAP
        assert all(b - a == LSD_ANNOUNCE_INTERVAL for a, b in itertools.pairwise(when[3:]))
        regular += when[3:]
    assert all(b - a >= LSD_MIN_GAP for a, b in itertools.pairwise(sorted(regular)))


def test_beyond_five_torrents_they_share_messages_and_fall_in_step() -> None:
    service = LsdService(6881, first_retries=0)  # the regular schedule alone
    six = hashes(6)
    for h in six:
        service.announce(h, 0.0)
    [(data, _)] = service.datagrams_to_send(0.0)
    assert decode_lsd_announce(data).info_hashes == tuple(six)
    service.announce(H1, 10.0)
    assert service.next_deadline() == 10.0  # its first announce does not wait for the gap
    [(data, _)] = service.datagrams_to_send(10.0)
    assert decode_lsd_announce(data).info_hashes == (H1,)
    # At 300 six are due and H1 (due at 310) would need its own message before the next
    # one may go: it rides along, and from then on all share one message.
    assert service.next_deadline() == 300.0
    [(data, _)] = service.datagrams_to_send(300.0)
    assert decode_lsd_announce(data).info_hashes == (*six, H1)
    assert service.next_deadline() == 600.0
    # Back to five: one each again, a gap apart.
    service.withdraw(H1)
    service.withdraw(six[0])
    sent = service.datagrams_to_send(600.0)
    assert [decode_lsd_announce(m).info_hashes for m, _ in sent] == [(six[1],)]
    assert service.next_deadline() == 660.0


def test_with_no_gap_every_torrent_has_its_own_message() -> None:
    service = LsdService(6881, min_gap=0)
    for h in hashes(30):
        service.announce(h, 0.0)
    sent = service.datagrams_to_send(0.0)
    assert [decode_lsd_announce(m).info_hashes for m, _ in sent] == [(h,) for h in hashes(30)]


def test_many_torrents_are_batched_and_round_robin() -> None:
    service = LsdService(6881, cookie="me", first_retries=0)  # the regular schedule alone
    everything = hashes(100)
    for h in everything:
        service.announce(h, 0.0)
    seen: list[bytes] = []
    now = 0.0
    times = []
    while len(seen) < 100:
        deadline = service.next_deadline()
        assert deadline is not None
        now = deadline
        for data, _ in service.datagrams_to_send(now):
            times.append(now)
            seen.extend(decode_lsd_announce(data).info_hashes)
    # Each once, in 4 messages at once: the regular one and 3 first-announce ones.
    assert sorted(seen) == everything
    assert times == [0.0, 0.0, 0.0, 0.0]
    # Then the regular schedule, a minute apart: the first batch falls due again first
    # (most overdue first), and so on round the others.
    again: list[bytes] = []
    for now in (300.0, 360.0, 420.0, 480.0):
        assert service.next_deadline() == now
        [(data, _)] = service.datagrams_to_send(now)
        again.extend(decode_lsd_announce(data).info_hashes)
    assert again == seen


def test_withdraw_stops_announcing_and_reporting() -> None:
    service = LsdService(6881, min_gap=0)
    service.announce(H1, 0.0)
    service.announce(H2, 0.0)
    service.datagrams_to_send(0.0)
    service.withdraw(H1)
    service.withdraw(H1)  # again: nothing
    assert not service.is_announced(H1)
    [(data, _)] = service.datagrams_to_send(300.0)
    assert decode_lsd_announce(data).info_hashes == (H2,)
    service.receive_datagram(their(H1, H2), PEER, 301.0)
    assert found(service) == [(H2, "192.168.1.20:51413")]
    assert service.statistics().unknown_hashes == 1
    service.withdraw(H2)
    assert service.next_deadline() is None
    assert service.datagrams_to_send(1000.0) == []


def test_v2_and_hybrid_torrents_are_announced_by_their_swarm_ids() -> None:
    service = LsdService(6881, min_gap=0)
    v2 = InfoHash(v2=V2)
    service.announce(v2, 0.0)
    [(data, _)] = service.datagrams_to_send(0.0)
    assert decode_lsd_announce(data).info_hashes == (V2[:20],)  # truncated, as libtorrent
    hybrid = InfoHash(v1=H1, v2=V2)
    service.announce(hybrid, 1.0)
    assert service.is_announced(hybrid)
    [(data, _)] = service.datagrams_to_send(1.0)
    assert decode_lsd_announce(data).info_hashes == (H1,)  # V2[:20] was announced already
    service.withdraw(hybrid)
    assert not service.is_announced(v2)
    assert service.statistics().announced == 0


def test_bad_arguments_raise_local_error() -> None:
    for port in (0, 65536, True, -1):
        with pytest.raises(LocalProtocolError):
            LsdService(port)
    with pytest.raises(LocalProtocolError):
        LsdService(1, group="239.192.152.143:6771")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        LsdService(1, group=PeerAddress(IPv4Address(0), 6771))
    with pytest.raises(LocalProtocolError):
        LsdService(1, group=PeerAddress(IPv4Address("239.192.152.143"), 0))
    for cookie in ("", "has space", "x" * 65, "\u20ac"):
        with pytest.raises(LocalProtocolError):
            LsdService(1, cookie=cookie)
    for name, value in [
        ("announce_interval", 0),
        ("announce_interval", float("inf")),
        ("min_gap", -1),
        ("min_gap", "1"),
        ("first_announces", -1),
        ("first_announces", True),
        ("first_retries", -1),
        ("first_retries", 9),
        ("first_retries", 1.0),
        ("max_message", 100),
        ("source_rate", 0),
        ("source_burst", 0),
        ("max_sources", 0),
        ("max_events", True),
    ]:
        with pytest.raises(LocalProtocolError):
            LsdService(1, **{name: value})  # type: ignore[arg-type]
    service = LsdService(1)
    for bad_hash in (b"short", "0" * 40, V2):
        with pytest.raises(LocalProtocolError):
            service.announce(bad_hash, 0.0)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            service.withdraw(bad_hash)  # type: ignore[arg-type]


def test_the_default_cookie_is_random_and_seeded() -> None:
    a = LsdService(1, rng=random.Random(1)).cookie
    assert a == LsdService(1, rng=random.Random(1)).cookie
    assert a != LsdService(1, rng=random.Random(2)).cookie
    assert len(a) == 8
    assert int(a, 16) >= 0


# -- the service: receiving --------------------------------------------------------------------


def test_peer_is_the_source_host_with_the_port_header() -> None:
    service = LsdService(6881, cookie="me")
    service.announce(H1, 0.0)
    service.receive_datagram(their(H1, H1, H2, port=7000), PEER, 1.0)
    assert found(service) == [(H1, "192.168.1.20:7000")]  # once; H2 is not ours
    mapped = PeerAddress(IPv6Address("::ffff:192.168.1.21"), 6771)
    service.receive_datagram(their(H1), mapped, 2.0)
    assert found(service) == [(H1, "192.168.1.21:51413")]
    v6 = PeerAddress(IPv6Address("fd00::5"), 6771)
    service.receive_datagram(their(H1), v6, 3.0)
    assert found(service) == [(H1, "[fd00::5]:51413")]
    stats = service.statistics()
    assert (stats.received, stats.peers_found, stats.unknown_hashes) == (3, 3, 1)


def test_our_own_messages_are_dropped_by_cookie() -> None:
    service = LsdService(6881, cookie="me", min_gap=0)
    service.announce(H1, 0.0)
    [(data, _)] = service.datagrams_to_send(0.0)
    service.receive_datagram(data, PEER, 0.0)
    service.receive_datagram(their(H1, cookie=None), PEER, 0.0)  # a client without cookies
    assert found(service) == [(H1, "192.168.1.20:51413")]
    assert service.statistics().own == 1


@pytest.mark.parametrize(
    ("data", "source"),
    [
        (their(H1, port=0), PEER),
        (their(H1), PeerAddress(IPv6Address("fe80::1"), 6771)),  # link-local: no scope
        (their(H1), PeerAddress(IPv4Address(0), 6771)),
        (their(H1), PeerAddress(IPv4Address("239.192.152.143"), 6771)),
    ],
)
def test_unusable_announces_are_dropped(data: bytes, source: PeerAddress) -> None:
    service = LsdService(6881)
    service.announce(H1, 0.0)
    service.receive_datagram(data, source, 1.0)
    assert found(service) == []
    assert service.statistics().unusable == 1


def test_bad_infohash_values_are_counted_and_skipped() -> None:
    service = LsdService(6881)
    service.announce(H1, 0.0)
    good = their(H2, H1)
    data = good.replace(H2.hex().encode(), b"not-a-hash")
    service.receive_datagram(data, PEER, 1.0)
    assert found(service) == [(H1, "192.168.1.20:51413")]
    only_bad = good.replace(H2.hex().encode(), b"0").replace(H1.hex().encode(), b"1")
    service.receive_datagram(only_bad, PEER, 2.0)
    assert found(service) == []
    stats = service.statistics()
    assert (stats.bad_hashes, stats.malformed, stats.peers_found) == (1, 1, 1)


def test_garbage_is_counted_never_raised() -> None:
    service = LsdService(6881)
    service.announce(H1, 0.0)
    for data in (b"", b"\xff" * 50, b"GET / HTTP/1.1\r\n\r\n", their(H1) * 20):
        service.receive_datagram(data, PEER, 1.0)
    assert service.statistics().malformed == 4
    assert found(service) == []


def test_each_host_is_rate_limited() -> None:
    service = LsdService(6881, source_rate=1.0, source_burst=5)
    service.announce(H1, 0.0)
    for _ in range(50):
        service.receive_datagram(their(H1), PEER, 0.0)
    assert len(found(service)) == 5
    assert service.statistics().rate_limited == 45
    other = PeerAddress(IPv4Address("192.168.1.99"), 6771)
    service.receive_datagram(their(H1), other, 0.0)  # another host has its own allowance
    assert len(found(service)) == 1
    service.receive_datagram(their(H1), PEER, 2.5)  # 2.5 messages earned back
    service.receive_datagram(their(H1), PEER, 2.5)
    service.receive_datagram(their(H1), PEER, 2.5)
    assert len(found(service)) == 2


def test_the_source_table_is_bounded_and_forgets_idle_hosts() -> None:
    service = LsdService(6881, source_rate=1.0, source_burst=2, max_sources=4)
    service.announce(H1, 0.0)
    for i in range(10):
        host = PeerAddress(IPv4Address(f"10.0.0.{i + 1}"), 6771)
        service.receive_datagram(their(H1), host, 0.0)
    # Four hosts tracked; the others got no allowance while those are still limited.
    stats = service.statistics()
    assert (stats.tracked_sources, stats.peers_found, stats.rate_limited) == (4, 4, 6)
    found(service)
    # Two seconds on, every allowance is whole again: the old entries are forgotten.
    late = PeerAddress(IPv4Address("10.0.0.99"), 6771)
    service.receive_datagram(their(H1), late, 2.0)
    assert found(service) == [(H1, "10.0.0.99:51413")]
    assert service.statistics().tracked_sources == 1
    service.handle_timer(10.0)
    assert service.statistics().tracked_sources == 0


def test_a_clock_going_back_does_not_grant_messages() -> None:
    service = LsdService(6881, source_rate=1.0, source_burst=1)
    service.announce(H1, 0.0)
    service.receive_datagram(their(H1), PEER, 10.0)
    service.receive_datagram(their(H1), PEER, 5.0)
    assert len(found(service)) == 1


def test_waiting_events_are_bounded() -> None:
    service = LsdService(6881, max_events=3, source_burst=LSD_SOURCE_BURST)
    mine = hashes(5)
    for h in mine:
        service.announce(h, 0.0)
    service.receive_datagram(their(*mine), PEER, 0.0)
    assert len(found(service)) == 3
    assert service.statistics().events_dropped == 2


def test_lsd_is_a_peer_origin() -> None:
    assert PeerOrigin.from_name("lsd") is PeerOrigin.LSD


def test_group_constants() -> None:
    assert str(LSD_GROUP_V4) == "239.192.152.143:6771"
    assert str(LSD_GROUP_V6) == "[ff15::efc0:988f]:6771"
    assert LsdService(1, group=LSD_GROUP_V6).host == "[ff15::efc0:988f]:6771"


# -- the service: first announces --------------------------------------------------------------


def announced(sent: list[tuple[bytes, PeerAddress]]) -> list[tuple[bytes, ...]]:
    return [decode_lsd_announce(data).info_hashes for data, _ in sent]


def test_first_announces_go_at_once_within_their_allowance() -> None:
    service = LsdService(6881, first_announces=2, first_retries=0)
    a, b, c, d = hashes(4)
    service.announce(H1, 0.0)
    assert announced(service.datagrams_to_send(0.0)) == [(H1,)]  # the regular message
    service.announce(a, 1.0)
    assert announced(service.datagrams_to_send(1.0)) == [(a,)]
    service.announce(b, 2.0)
    assert announced(service.datagrams_to_send(2.0)) == [(b,)]
    service.announce(c, 3.0)
    assert service.datagrams_to_send(3.0) == []  # two within a minute: the allowance is spent
    assert service.next_deadline() == LSD_MIN_GAP  # the regular message's turn comes first
    assert announced(service.datagrams_to_send(60.0)) == [(c,)]
    service.announce(d, 61.0)  # the first of the two is a minute old: room for one
    assert service.next_deadline() == 61.0
    assert announced(service.datagrams_to_send(61.0)) == [(d,)]
    stats = service.statistics()
    assert (stats.sent, stats.hashes_sent) == (5, 5)
    # Re-announces keep the regular schedule, a gap apart.
    assert service.next_deadline() == 300.0
    assert announced(service.datagrams_to_send(300.0)) == [(H1,)]
    assert service.next_deadline() == 360.0


def within_the_storm_bound(times: list[float], gap: float = LSD_MIN_GAP) -> bool:
    """Whether no ``gap`` seconds hold more than the regular message and the allowance."""
    return all(
        sum(start <= t < start + gap for t in times) <= 1 + LSD_FIRST_ANNOUNCES for start in times
    )


def test_a_thousand_new_torrents_make_no_multicast_storm() -> None:
    service = LsdService(65535)
    everything = hashes(1000)
    for h in everything:
        service.announce(h, 0.0)
    seen: dict[bytes, list[float]] = {h: [] for h in everything}
    times: list[float] = []
    for _ in range(200):  # bounded: 16 passes make the first 15 minutes
        deadline = service.next_deadline()
        assert deadline is not None
        if deadline >= 900.0:
            break
        for data, _ in service.datagrams_to_send(deadline):
            assert len(data) <= LSD_MAX_MESSAGE
            times.append(deadline)
            for h in decode_lsd_announce(data).info_hashes:
                seen[h].append(deadline)
    # The regular message and the allowance: 375 torrents at once, 375 a minute after...
    assert times.count(0.0) == 1 + LSD_FIRST_ANNOUNCES
    first = sorted(when[0] for when in seen.values())
    assert first[374] == 0.0
    assert first[749] == LSD_MIN_GAP
    assert first[-1] == 2 * LSD_MIN_GAP
    # ... and the retries, in what room is left, never more in any minute.
    assert within_the_storm_bound(times)
    assert sum(len(when) for when in seen.values()) > 3 * 1000  # retries, then re-announces


def test_torrents_coming_and_going_make_no_multicast_storm() -> None:
    """A torrent added every 2 s for ten minutes, some withdrawn soon after: every first
    announce, retry and re-announce stays within the bound of any minute, and each torrent
    still announced is announced (its first announce never waits past the allowance)."""
    rng = random.Random(7)
    service = LsdService(6881)
    added: dict[bytes, float] = {}
    withdrawn: set[bytes] = set()
    first: dict[bytes, float] = {}
    times: list[float] = []
    arrivals = iter(enumerate(hashes(300)))
    arrival = next(arrivals, None)
    now = 0.0
    for _ in range(5000):  # bounded: some 1200 passes do it
        deadline = service.next_deadline()
        next_add = 2.0 * arrival[0] if arrival is not None else math.inf
        now = min(next_add, deadline if deadline is not None else math.inf)
        if now >= 900.0:
            break
        if arrival is not None and now == next_add:
            h = arrival[1]
            service.announce(h, now)
            added[h] = now
            if rng.random() < 0.2 and added:
                gone = rng.choice(list(added))
                service.withdraw(gone)
                withdrawn.add(gone)
                del added[gone]
            arrival = next(arrivals, None)
        for data, _ in service.datagrams_to_send(now):
            times.append(now)
            for h in decode_lsd_announce(data).info_hashes:
                assert h in added  # never a withdrawn torrent
                first.setdefault(h, now)
    assert within_the_storm_bound(times)
    assert set(added) <= set(first)
    # Thirty torrents a minute want more messages than the allowance: those beyond it share
    # the next ones, a minute later at most (the oldest first, before any retry).
    delays = [first[h] - added[h] for h in added]
    assert max(delays) <= LSD_MIN_GAP
    assert delays.count(0.0) >= LSD_FIRST_ANNOUNCES


def test_without_first_announces_a_new_torrent_waits_for_the_gap() -> None:
    service = LsdService(6881, first_announces=0)
    service.announce(H1, 0.0)
    assert len(service.datagrams_to_send(0.0)) == 1
    service.announce(H2, 10.0)
    assert service.datagrams_to_send(10.0) == []
    assert service.next_deadline() == LSD_MIN_GAP
    service.withdraw(H2)  # withdrawn before its first announce: forgotten
    assert service.next_deadline() == LSD_ANNOUNCE_INTERVAL
    service.announce(H2, 20.0)
    assert announced(service.datagrams_to_send(60.0)) == [(H2,)]


def test_a_torrent_announced_again_after_a_withdrawal_is_announced_at_once() -> None:
    service = LsdService(6881, first_retries=0)  # see test_a_withdrawal_drops_the_retries
    service.announce(H1, 0.0)
    service.announce(H2, 0.0)
    # Added at once, each in its own message (the regular one takes the lowest hash).
    assert announced(service.datagrams_to_send(0.0)) == [(H2,), (H1,)]
    service.withdraw(H2)
    service.announce(H2, 5.0)
    assert service.next_deadline() == 5.0
    assert announced(service.datagrams_to_send(5.0)) == [(H2,)]
    # A caller's clock going back: announced "at 30", it does not go at 20.
    h3 = hashes(1)[0]
    service.announce(h3, 30.0)
    assert service.datagrams_to_send(20.0) == []
    assert service.next_deadline() == 30.0
    assert announced(service.datagrams_to_send(30.0)) == [(h3,)]


def test_a_first_announce_in_the_regular_message_is_retried_too() -> None:
    service = LsdService(6881)
    service.announce(H1, 0.0)
    service.announce(H2, 1.0)
    sent = {now: announced(service.datagrams_to_send(now)) for now in (0.0, 1.0, 2.0, 3.0)}
    # H1 in the regular message, H2 in a first-announce one; both retried alike.
    assert sent == {0.0: [(H1,)], 1.0: [(H2,)], 2.0: [(H1,)], 3.0: [(H2,)]}
    assert announced(service.datagrams_to_send(7.0)) == [(H1,), (H2,)]
    assert service.next_deadline() == LSD_ANNOUNCE_INTERVAL


def test_retries_are_charged_to_the_first_announce_allowance() -> None:
    service = LsdService(6881, first_announces=2)
    service.announce(H1, 0.0)
    assert announced(service.datagrams_to_send(0.0)) == [(H1,)]  # the regular message
    assert announced(service.datagrams_to_send(2.0)) == [(H1,)]
    assert announced(service.datagrams_to_send(6.0)) == [(H1,)]  # the allowance is spent
    service.announce(H2, 7.0)
    assert service.datagrams_to_send(7.0) == []
    assert service.next_deadline() == LSD_MIN_GAP  # the regular message's turn comes first
    assert announced(service.datagrams_to_send(60.0)) == [(H2,)]
    # Its retries wait for room too: the first of the two that went leaves the window at 62.
    assert service.next_deadline() == 62.0
    assert announced(service.datagrams_to_send(62.0)) == [(H2,)]
    assert service.next_deadline() == 66.0
    assert announced(service.datagrams_to_send(66.0)) == [(H2,)]
    assert service.statistics().sent == 6


def test_torrents_never_announced_go_before_retries() -> None:
    service = LsdService(6881, first_announces=1)
    service.announce(H1, 0.0)
    assert announced(service.datagrams_to_send(0.0)) == [(H1,)]  # the regular message
    assert announced(service.datagrams_to_send(2.0)) == [(H1,)]  # the allowance is spent
    a, b = hashes(2)
    service.announce(a, 10.0)
    service.announce(b, 10.0)
    assert service.datagrams_to_send(10.0) == []
    assert service.next_deadline() == LSD_MIN_GAP
    assert announced(service.datagrams_to_send(60.0)) == [(a,)]  # the regular message
    assert service.next_deadline() == 62.0
    # b was never announced: it goes before H1's retry, owed since 6 s.
    assert announced(service.datagrams_to_send(62.0)) == [(b,)]
    # Then the retries, the most overdue first, one a minute.
    assert service.next_deadline() == 122.0
    assert announced(service.datagrams_to_send(122.0)) == [(H1,)]  # owed since 6 s
    assert announced(service.datagrams_to_send(182.0)) == [(a,)]  # owed since 62 s
    assert announced(service.datagrams_to_send(242.0)) == [(b,)]  # owed since 64 s


def test_a_regular_announce_drops_the_retries_still_owed() -> None:
    service = LsdService(6881, announce_interval=100.0, first_announces=1)
    service.announce(H1, 0.0)
    service.datagrams_to_send(0.0)
    service.datagrams_to_send(2.0)  # H1's first retry spends the allowance
    service.announce(H2, 10.0)
    sent: dict[bytes, list[float]] = {H1: [0.0, 2.0], H2: []}
    for _ in range(10):
        deadline = service.next_deadline()
        assert deadline is not None
        if deadline > 200.0:
            break
        for data, _ in service.datagrams_to_send(deadline):
            for h in decode_lsd_announce(data).info_hashes:
                sent[h].append(deadline)
    # At 60 the regular message takes H2 (its first announce) and H1 (due at 100, before
    # the next one may go): H1's second retry, owed since 6 s, is dropped.
    assert sent == {H1: [0.0, 2.0, 60.0, 160.0], H2: [60.0, 62.0, 122.0, 160.0]}


def test_a_withdrawal_drops_the_retries() -> None:
    service = LsdService(6881)
    service.announce(H1, 0.0)
    service.datagrams_to_send(0.0)
    service.withdraw(H1)
    assert service.next_deadline() is None
    service.announce(H1, 1.0)  # announced again: a first announce, with its own retries
    assert [now for now in (1.0, 2.0, 3.0, 5.0, 7.0) if service.datagrams_to_send(now)] == [
        1.0,
        3.0,
        7.0,
    ]


def test_without_an_allowance_first_announces_are_not_retried() -> None:
    service = LsdService(6881, first_announces=0)
    service.announce(H1, 0.0)
    assert announced(service.datagrams_to_send(0.0)) == [(H1,)]
    assert service.next_deadline() == LSD_ANNOUNCE_INTERVAL
