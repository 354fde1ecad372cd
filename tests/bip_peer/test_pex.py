"""BEP 11 peer exchange, sans-IO: PexOutbox and PexInbox."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_peer._errors import RemoteProtocolError
from bip_peer._extended import PexMessage
from bip_peer._pex import (
    DEFAULT_PEX_MAX_ADDED,
    DEFAULT_PEX_RECEIVE_LIMIT,
    PexFlags,
    PexInbox,
    PexOutbox,
)


def v4(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(0x0A000000 + n), port)  # 10.0.0.0/8: private


def v6(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv6Address(0x20010DB8 << 96 | n), port)


def public4(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(0x05000000 + n), port)


def pex(
    added: tuple[PeerAddress, ...] = (),
    *,
    flags: tuple[int, ...] | None = None,
    added6: tuple[PeerAddress, ...] = (),
    flags6: tuple[int, ...] | None = None,
    dropped: tuple[PeerAddress, ...] = (),
    dropped6: tuple[PeerAddress, ...] = (),
) -> PexMessage:
    return PexMessage(
        added=added,
        added_flags=flags if flags is not None else (0,) * len(added),
        added6=added6,
        added6_flags=flags6 if flags6 is not None else (0,) * len(added6),
        dropped=dropped,
        dropped6=dropped6,
    )


# ---------------------------------------------------------------------------- outbox


def test_first_message_lists_current_peers_split_by_family() -> None:
    outbox = PexOutbox()
    current = {v4(1): PexFlags.SEED | PexFlags.REACHABLE, v6(1): PexFlags.NONE, v4(2): 1}
    message = outbox.update(current, now=0.0)
    assert message is not None
    assert message.added == (v4(1), v4(2))
    assert message.added_flags == (0x12, 0x01)
    assert message.added6 == (v6(1),)
    assert message.added6_flags == (0,)
    assert message.dropped == ()
    assert message.dropped6 == ()
    assert outbox.messages_sent == 1
    assert outbox.announced == frozenset(current)


def test_diffs_at_most_once_per_interval() -> None:
    outbox = PexOutbox(interval=60.0)
    assert outbox.update({v4(1): 0, v6(2): 0}, now=100.0) is not None
    assert outbox.next_due() == 160.0
    assert outbox.update({v4(3): 0}, now=159.9) is None
    message = outbox.update({v4(3): 0}, now=160.0)
    assert message is not None
    assert (message.added, message.dropped, message.dropped6) == ((v4(3),), (v4(1),), (v6(2),))
    # Nothing changed: no message, and the clock is not reset.
    assert outbox.update({v4(3): 0}, now=500.0) is None
    assert outbox.update({}, now=500.0) is not None


def test_empty_current_sends_nothing() -> None:
    outbox = PexOutbox()
    assert outbox.update({}, now=0.0) is None
    assert outbox.messages_sent == 0
    assert outbox.update({v4(1): 0}, now=1.0) is not None  # not held back by the empty call


def test_at_most_fifty_added_and_dropped_rest_carried_over() -> None:
    outbox = PexOutbox()
    first = {v4(n): 0 for n in range(70)} | {v6(n): 0 for n in range(10)}
    m1 = outbox.update(first, now=0.0)
    assert m1 is not None
    assert len(m1.added) + len(m1.added6) == DEFAULT_PEX_MAX_ADDED
    m2 = outbox.update(first, now=60.0)
    assert m2 is not None
    assert len(m2.added) + len(m2.added6) == 30
    assert set(m1.added + m1.added6 + m2.added + m2.added6) == set(first)
    assert outbox.update(first, now=120.0) is None
    m3 = outbox.update({}, now=180.0)
    assert m3 is not None
    assert len(m3.dropped) + len(m3.dropped6) == 50
    m4 = outbox.update({}, now=240.0)
    assert m4 is not None
    assert len(m4.dropped) + len(m4.dropped6) == 30
    assert outbox.announced == frozenset()


def test_custom_limits() -> None:
    outbox = PexOutbox(max_added=1, max_dropped=1, interval=0.0)
    m = outbox.update({v4(1): 0, v4(2): 0}, now=0.0)
    assert m is not None
    assert m.added == (v4(1),)
    m = outbox.update({}, now=0.0)
    assert m is not None
    assert m.dropped == (v4(1),)
    assert m.added == ()
    assert outbox.update({}, now=0.0) is None  # v4(2) was never told: nothing to drop


def test_add_and_drop_never_together_and_readd_after_drop() -> None:
    outbox = PexOutbox(interval=0.0)
    outbox.update({v4(1): 0}, now=0.0)
    m = outbox.update({}, now=1.0)
    assert m is not None
    assert m.dropped == (v4(1),)
    m = outbox.update({v4(1): PexFlags.SEED}, now=2.0)
    assert m is not None
    assert m.added == (v4(1),)
    assert m.added_flags == (2,)
    assert m.dropped == ()


def test_own_address_unconnectable_and_mapped_addresses() -> None:
    target = v4(9)
    outbox = PexOutbox(peer_address=PeerAddress(IPv6Address(f"::ffff:{target.host}"), 6881))
    mapped = PeerAddress(IPv6Address("::ffff:10.0.0.7"), 7000)
    m = outbox.update(
        {target: 0, v4(1, port=0): 0, PeerAddress(IPv4Address("0.0.0.0"), 1): 0, mapped: 4},
        now=0.0,
    )
    assert m is not None
    assert m.added == (PeerAddress(IPv4Address("10.0.0.7"), 7000),)
    assert m.added_flags == (4,)
    assert m.added6 == ()


def test_flags_truncated_to_a_byte() -> None:
    outbox = PexOutbox()
    m = outbox.update({v4(1): 0x1FF}, now=0.0)
    assert m is not None
    assert m.added_flags == (0xFF,)


def test_outbox_checks_arguments() -> None:
    for name, value in [("interval", -1.0), ("max_added", -1), ("max_dropped", 1.5)]:
        with pytest.raises(ValueError, match=name):
            PexOutbox(**{name: value})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PexOutbox(peer_address="1.2.3.4:5")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PexOutbox().update({"1.2.3.4:5": 0}, now=0.0)  # type: ignore[dict-item]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sets(st.integers(0, 120), max_size=120), min_size=1, max_size=12))
def test_outbox_converges_on_current(rounds: list[set[int]]) -> None:
    """Whatever the sequence, the receiver's view (added minus dropped) converges on ours."""
    outbox = PexOutbox()
    view: set[PeerAddress] = set()
    now = 0.0
    for numbers in [*rounds, rounds[-1], rounds[-1], rounds[-1], rounds[-1]]:
        current = {(v4(n) if n % 3 else v6(n)): 0 for n in numbers}
        message = outbox.update(current, now)
        if message is not None:
            added = set(message.added + message.added6)
            dropped = set(message.dropped + message.dropped6)
            assert not added & dropped
            assert len(added) <= 50
            assert len(dropped) <= 50
            assert not added & view  # never added twice
            assert dropped <= view  # only dropped after added
            view = (view | added) - dropped
        assert view == set(outbox.announced)
        now += 60.0
    assert view == {(v4(n) if n % 3 else v6(n)) for n in rounds[-1]}


# ----------------------------------------------------------------------------- inbox


def test_inbox_takes_valid_addresses_with_flags() -> None:
    inbox = PexInbox()
    update = inbox.receive(
        pex((v4(1), v4(2)), flags=(2, 0x10), added6=(v6(1),), flags6=(1,)), now=0.0
    )
    assert update is not None
    assert update.added == ((v4(1), PexFlags.SEED), (v4(2), PexFlags.REACHABLE), (v6(1), 1))
    assert update.addresses == (v4(1), v4(2), v6(1))
    assert update.dropped == ()
    assert inbox.known == {v4(1), v4(2), v6(1)}
    stats = inbox.statistics()
    assert (stats.messages, stats.accepted, stats.known) == (1, 3, 3)


def test_inbox_takes_messages_close_together() -> None:
    # Every message within the flood allowance is taken (libtorrent's rule): BEP 11 senders
    # keep a minute, but their messages can arrive bunched.
    inbox = PexInbox()
    assert inbox.receive(pex((v4(1),)), now=0.0).addresses == (v4(1),)
    assert inbox.receive(pex((v4(2),)), now=0.5).addresses == (v4(2),)
    stats = inbox.statistics()
    assert (stats.messages, stats.ignored_too_soon) == (2, 0)


def test_inbox_min_interval_ignores_the_added_addresses_of_messages_too_close_together() -> None:
    inbox = PexInbox(min_interval=45.0)
    assert inbox.receive(pex((v4(1),)), now=0.0).addresses == (v4(1),)
    assert inbox.receive(pex((v4(2),)), now=44.9).addresses == ()
    update = inbox.receive(pex((v4(3),), dropped=(v4(1),)), now=10.0)
    assert (update.addresses, update.dropped) == ((), (v4(1),))  # drops always count
    update = inbox.receive(pex((v4(4),)), now=45.0)
    assert update.addresses == (v4(4),)
    stats = inbox.statistics()
    assert (stats.messages, stats.ignored_too_soon, stats.ignored_excess) == (2, 2, 2)


def test_inbox_per_message_limit() -> None:
    inbox = PexInbox()
    many = tuple(v4(n) for n in range(1, 151))
    update = inbox.receive(pex(many), now=0.0)
    assert update is not None
    assert len(update.added) == DEFAULT_PEX_RECEIVE_LIMIT
    assert inbox.statistics().ignored_excess == 50


def test_inbox_limit_counts_ipv6_after_ipv4() -> None:
    inbox = PexInbox(max_per_message=3)
    update = inbox.receive(pex((v4(1), v4(2)), added6=(v6(1), v6(2))), now=0.0)
    assert update is not None
    assert update.addresses == (v4(1), v4(2), v6(1))


def test_inbox_known_limit_and_drops_free_room() -> None:
    inbox = PexInbox(max_known=2, min_interval=0.0)
    update = inbox.receive(pex((v4(1), v4(2), v4(3))), now=0.0)
    assert update is not None
    assert update.addresses == (v4(1), v4(2))
    assert inbox.statistics().ignored_excess == 1
    update = inbox.receive(pex((v4(3),), dropped=(v4(1), v4(99))), now=1.0)
    assert update is not None
    assert update.dropped == (v4(1),)  # v4(99) was never added: not reported
    assert update.addresses == (v4(3),)
    assert inbox.known == {v4(2), v4(3)}


def test_inbox_duplicates_ignored() -> None:
    inbox = PexInbox(min_interval=0.0)
    update = inbox.receive(pex((v4(1), v4(1))), now=0.0)
    assert update is not None
    assert update.addresses == (v4(1),)
    update = inbox.receive(pex((v4(1),)), now=1.0)
    assert update is not None
    assert update.addresses == ()
    assert inbox.statistics().ignored_known == 2


def test_inbox_drops_invalid_self_and_ours() -> None:
    sender = public4(1)
    ours = public4(2)
    inbox = PexInbox(peer_address=sender, our_addresses=[ours])
    bad = (
        public4(3, port=0),
        PeerAddress(IPv4Address("0.0.0.0"), 80),
        PeerAddress(IPv4Address("224.0.0.1"), 80),
        sender,
        ours,
        public4(4),
    )
    update = inbox.receive(pex(bad), now=0.0)
    assert update is not None
    assert update.addresses == (public4(4),)
    stats = inbox.statistics()
    assert (stats.ignored_invalid, stats.ignored_self) == (3, 2)


def test_inbox_local_addresses_from_public_peer_ignored() -> None:
    inbox = PexInbox(peer_address=public4(1))
    local = (
        v4(1),
        PeerAddress(IPv4Address("127.0.0.5"), 80),
        PeerAddress(IPv4Address("169.254.1.1"), 80),
    )
    update = inbox.receive(pex(local, added6=(PeerAddress(IPv6Address("::1"), 80),)), now=0.0)
    assert update is not None
    assert update.addresses == ()
    assert inbox.statistics().ignored_local == 4


def test_inbox_local_addresses_from_local_peer_taken() -> None:
    inbox = PexInbox(peer_address=PeerAddress(IPv4Address("127.0.0.1"), 5000))
    update = inbox.receive(pex((PeerAddress(IPv4Address("127.0.0.2"), 80),)), now=0.0)
    assert update is not None
    assert len(update.added) == 1


def test_inbox_mapped_addresses_normalised() -> None:
    inbox = PexInbox(our_addresses=[PeerAddress(IPv6Address("::ffff:10.0.0.2"), 1)])
    mapped = PeerAddress(IPv6Address("::ffff:10.0.0.1"), 80)
    update = inbox.receive(
        pex(added6=(mapped, PeerAddress(IPv6Address("::ffff:10.0.0.2"), 1))), now=0.0
    )
    assert update is not None
    assert update.addresses == (PeerAddress(IPv4Address("10.0.0.1"), 80),)
    assert inbox.statistics().ignored_self == 1


def test_inbox_without_flags() -> None:
    inbox = PexInbox()
    update = inbox.receive(pex((v4(1), v4(2)), flags=()), now=0.0)
    assert update is not None
    assert update.added == ((v4(1), PexFlags.NONE), (v4(2), PexFlags.NONE))


def test_inbox_checks_arguments() -> None:
    for name, value in [("min_interval", -1), ("max_per_message", -2), ("max_known", "x")]:
        with pytest.raises(ValueError, match=name):
            PexInbox(**{name: value})  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 300), max_size=60),
            st.lists(st.integers(0, 300), max_size=60),
            st.floats(0, 100),
        ),
        max_size=10,
    )
)
def test_inbox_bounds_hold(messages: list[tuple[list[int], list[int], float]]) -> None:
    inbox = PexInbox(max_per_message=20, max_known=30, min_interval=30.0)
    now = 0.0
    for added, dropped, step in messages:
        now += step
        message = pex(
            tuple(v4(n, port=n % 7) for n in added),
            dropped=tuple(v4(n, port=n % 7) for n in dropped),
        )
        try:
            update = inbox.receive(message, now)
        except RemoteProtocolError:  # a seventh message within a minute: a flood
            break
        if update is not None:
            assert len(update.added) <= 20
            assert all(address.is_connectable for address in update.addresses)
        assert len(inbox.known) <= 30
        stats = inbox.statistics()
        assert stats.known == len(inbox.known)
