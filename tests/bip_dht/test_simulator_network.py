"""The simulator's network engine, driven with a tiny fake datagram endpoint (no DHT)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_dht._errors import LocalProtocolError
from bip_dht._sim_network import DatagramNetwork, SimulatedNode
from bip_handshake import PeerAddress


class Echo:
    """Answers ``ping:<n>`` with ``pong:<n>``; sends pings to ``peers`` every ``interval``."""

    def __init__(self, peers: list[PeerAddress] | None = None, interval: float | None = None):
        self.peers = peers or []
        self.interval = interval
        self.start: float | None = None
        self.deadline: float | None = None
        self.outbox: list[tuple[bytes, PeerAddress]] = []
        self.log: list[tuple[float, bytes, PeerAddress]] = []
        self.timer_calls: list[float] = []
        self.count = 0

    def schedule(self, now: float) -> None:
        if self.interval is not None:
            self.deadline = now + self.interval

    def receive_datagram(self, data: bytes, source: PeerAddress, now: float) -> None:
        self.log.append((now, data, source))
        if data.startswith(b"ping:"):
            self.outbox.append((b"pong:" + data[5:], source))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, PeerAddress]]:
        out, self.outbox = self.outbox, []
        return out

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        assert self.deadline is not None
        assert now >= self.deadline
        for peer in self.peers:
            self.count += 1
            self.outbox.append((b"ping:%d" % self.count, peer))
        self.schedule(now)

    def send(self, data: bytes, to: PeerAddress) -> None:
        self.outbox.append((data, to))


def _pair(net: DatagramNetwork[Echo]) -> tuple[SimulatedNode[Echo], SimulatedNode[Echo]]:
    return net.attach(Echo()), net.attach(Echo())


def test_addresses_are_distinct_private_ipv4_in_order() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=1)
    nodes = [net.attach(Echo()) for _ in range(300)]
    assert nodes[0].address == PeerAddress(IPv4Address("10.0.0.1"), 6881)
    assert len({n.address for n in nodes}) == 300
    assert all(n.address.host.is_private and not n.address.host.is_loopback for n in nodes)
    assert [n.index for n in nodes] == list(range(300))
    assert net.node_at(nodes[5].address) is nodes[5]
    assert len(net) == 300
    assert net.nodes == nodes


def test_an_address_is_attached_once() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=1)
    taken = PeerAddress(IPv4Address("10.0.0.2"), 6881)
    net.attach(Echo(), taken)
    with pytest.raises(LocalProtocolError, match="already attached"):
        net.attach(Echo(), taken)
    # automatic addresses skip the one taken by hand
    assert net.attach(Echo()).address != taken
    assert net.attach(Echo()).address not in (taken,)
    with pytest.raises(LocalProtocolError):
        net.attach(Echo(), "10.0.0.9:6881")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("latency", "loss"), [((0.3, 0.2), 0.0), ((-1.0, 1.0), 0.0), ((0.0, 0.1), 1.0), ((0, 1), -0.1)]
)
def test_bad_link_settings_are_refused(latency: tuple[float, float], loss: float) -> None:
    with pytest.raises(LocalProtocolError):
        DatagramNetwork(latency=latency, loss=loss)


def test_a_datagram_takes_the_pair_latency_each_way() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=7, latency=(0.02, 0.3))
    a, b = _pair(net)
    one_way = net.latency_between(a, b)
    assert 0.02 <= one_way <= 0.3
    assert net.latency_between(b, a) == one_way
    net.call(a, lambda e, now: e.send(b"ping:1", b.address))
    assert net.run_until(lambda: bool(a.endpoint.log), timeout=5)
    [(arrived, data, source)] = b.endpoint.log
    assert arrived == pytest.approx(one_way)
    assert (data, source) == (b"ping:1", a.address)
    [(arrived, data, source)] = a.endpoint.log
    assert arrived == pytest.approx(2 * one_way)
    assert (data, source) == (b"pong:1", b.address)
    assert net.now == pytest.approx(2 * one_way)
    stats = net.statistics()
    assert (stats.sent, stats.delivered, stats.lost, stats.in_flight) == (2, 2, 0, 0)
    assert stats.bytes_sent == 12
    assert (a.sent, a.received, b.sent, b.received) == (1, 1, 1, 1)


def test_latencies_spread_over_the_range_and_depend_on_the_seed() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=3, latency=(0.02, 0.3))
    nodes = [net.attach(Echo()) for _ in range(60)]
    values = [net.latency_between(a, b) for a in nodes for b in nodes if a.index < b.index]
    assert 0.02 <= min(values) < 0.03
    assert 0.29 < max(values) <= 0.3
    mean = sum(values) / len(values)
    assert 0.15 < mean < 0.17
    other: DatagramNetwork[Echo] = DatagramNetwork(seed=4, latency=(0.02, 0.3))
    again = [other.attach(Echo()) for _ in range(60)]
    assert net.latency_between(nodes[0], nodes[1]) != other.latency_between(again[0], again[1])
    fixed: DatagramNetwork[Echo] = DatagramNetwork(seed=3, latency=(0.05, 0.05))
    x, y = _pair(fixed)
    assert fixed.latency_between(x, y) == 0.05


def test_one_link_keeps_the_order_datagrams_were_sent_in() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=2)
    a, b = _pair(net)

    def burst(endpoint: Echo, now: float) -> None:
        for n in range(50):
            endpoint.send(b"data:%d" % n, b.address)

    net.call(a, burst)
    net.run_for(1.0)
    assert [data for _, data, _ in b.endpoint.log] == [b"data:%d" % n for n in range(50)]


def test_loss_drops_the_configured_share_and_the_counters_add_up() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=11, latency=(0.01, 0.05), loss=0.3)
    a, b = _pair(net)

    def burst(endpoint: Echo, now: float) -> None:
        for n in range(10_000):
            endpoint.send(b"data:%d" % n, b.address)

    net.call(a, burst)
    net.run_for(0.02)
    stats = net.statistics()
    assert stats.sent == 10_000
    assert 2800 < stats.lost < 3200
    assert stats.sent == stats.delivered + stats.lost + stats.in_flight
    net.run_for(1.0)
    stats = net.statistics()
    assert stats.in_flight == 0
    assert stats.delivered == len(b.endpoint.log) == 10_000 - stats.lost


def test_a_datagram_to_nobody_is_unroutable() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=1)
    a = net.attach(Echo())
    nowhere = PeerAddress(IPv4Address("192.0.2.1"), 1)
    net.call(a, lambda e, now: e.send(b"x", nowhere))
    net.run_for(1.0)
    stats = net.statistics()
    assert (stats.sent, stats.unroutable, stats.delivered) == (1, 1, 0)


def test_timers_fire_at_their_deadline_and_rescheduling_invalidates_the_old_one() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=1, latency=(0.1, 0.1))
    a, b = _pair(net)
    a.endpoint.peers = [b.address]
    a.endpoint.interval = 1.0
    net.call(a, lambda e, now: e.schedule(now))
    net.run_for(3.5)
    assert a.endpoint.timer_calls == [1.0, 2.0, 3.0]
    # move the deadline later: the entry for 4.0 is stale and must not fire
    net.call(a, lambda e, now: setattr(e, "deadline", 4.25))
    net.run_for(0.6)
    assert a.endpoint.timer_calls == [1.0, 2.0, 3.0]
    net.run_for(0.2)
    assert a.endpoint.timer_calls == [1.0, 2.0, 3.0, 4.25]
    # and earlier: fires at the new time, once
    net.call(a, lambda e, now: setattr(e, "deadline", 4.5))
    net.run_for(1.25)
    assert a.endpoint.timer_calls == [1.0, 2.0, 3.0, 4.25, 4.5, 5.5]
    assert net.statistics().timers == 6
    # cancelled: no more calls
    net.call(a, lambda e, now: setattr(e, "deadline", None))
    net.run_for(5.0)
    assert len(a.endpoint.timer_calls) == 6
    assert [d for _, d, _ in a.endpoint.log].count(b"pong:1") == 1
    assert len(b.endpoint.log) == 6


def test_an_overdue_deadline_runs_at_once() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=1, now=10.0)
    a = net.attach(Echo(interval=1.0))
    net.call(a, lambda e, now: setattr(e, "deadline", 3.0))
    net.run_for(0.0)
    assert a.endpoint.timer_calls == [10.0]


def test_a_timer_that_never_moves_forward_is_an_error() -> None:
    class Stuck(Echo):
        def handle_timer(self, now: float) -> None:
            self.timer_calls.append(now)  # forgets to move the deadline

    net: DatagramNetwork[Echo] = DatagramNetwork(seed=1)
    node = net.attach(Stuck())
    net.call(node, lambda e, now: setattr(e, "deadline", 1.0))
    with pytest.raises(LocalProtocolError, match="does not move forward"):
        net.run_for(2.0)


def test_a_silent_node_receives_sends_and_ticks_nothing_until_it_returns() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=5, latency=(0.1, 0.1))
    a, b = _pair(net)
    b.endpoint.peers = [a.address]
    b.endpoint.interval = 1.0
    net.call(b, lambda e, now: e.schedule(now))
    net.run_for(1.05)
    assert b.endpoint.timer_calls == [1.0]
    net.set_silent(b)
    assert b.silent
    assert "silent" in repr(b)
    net.call(a, lambda e, now: e.send(b"ping:9", b.address))
    net.run_for(5.0)
    assert b.endpoint.timer_calls == [1.0]
    # the answer to b's ping arrived after it had gone, like the ping a sent it
    assert b.endpoint.log == []
    assert net.statistics().to_silent == 2
    # a call on a silent node changes its state but sends nothing
    net.call(b, lambda e, now: e.send(b"hello", a.address))
    net.run_for(1.0)
    assert [d for _, d, _ in a.endpoint.log] == [b"ping:1"]
    net.set_silent(b, False)
    net.set_silent(b, False)  # idempotent
    net.run_for(0.0)
    # back: the overdue timer runs at once and the queued datagram leaves
    assert b.endpoint.timer_calls == [1.0, pytest.approx(7.05)]
    net.run_for(0.5)
    assert [d for _, d, _ in a.endpoint.log] == [b"ping:1", b"hello", b"ping:2"]


def test_run_until_stops_on_the_condition_or_at_the_timeout() -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=1, latency=(0.1, 0.1))
    a, b = _pair(net)
    assert net.run_until(lambda: True, timeout=1.0)
    assert net.now == 0.0
    assert not net.run_until(lambda: bool(b.endpoint.log), timeout=2.0)
    assert net.now == 2.0
    net.call(a, lambda e, now: e.send(b"ping:1", b.address))
    assert net.run_until(lambda: bool(b.endpoint.log), timeout=2.0)
    assert net.now == pytest.approx(2.1)
    assert net.statistics().in_flight == 1  # the pong is on its way
    with pytest.raises(LocalProtocolError):
        net.run_until(lambda: True, timeout=-1)
    with pytest.raises(LocalProtocolError):
        net.run_for(-1)
    assert net.step()
    assert not net.step()


def _trace(seed: int) -> list[tuple[float, bytes, str]]:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=seed, latency=(0.02, 0.3), loss=0.2)
    nodes = [net.attach(Echo()) for _ in range(20)]
    for node in nodes:
        node.endpoint.peers = [n.address for n in nodes if n is not node]
        node.endpoint.interval = 0.5
        net.call(node, lambda e, now: e.schedule(now))
    net.run_for(3.0)
    return sorted((t, d, str(a)) for node in nodes for t, d, a in node.endpoint.log)


def test_a_run_is_a_function_of_the_seed() -> None:
    assert _trace(1) == _trace(1)
    assert _trace(1) != _trace(2)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.9),
    silent=st.sets(st.integers(0, 7), max_size=4),
    duration=st.floats(0.0, 3.0),
)
def test_every_datagram_is_accounted_for(
    seed: int, loss: float, silent: set[int], duration: float
) -> None:
    net: DatagramNetwork[Echo] = DatagramNetwork(seed=seed, latency=(0.02, 0.3), loss=loss)
    nodes = [net.attach(Echo()) for _ in range(8)]
    for node in nodes:
        node.endpoint.peers = [n.address for n in nodes if n is not node]
        node.endpoint.peers.append(PeerAddress(IPv4Address("192.0.2.7"), 9))
        node.endpoint.interval = 0.4
        net.call(node, lambda e, now: e.schedule(now))
    net.run_for(1.0)
    for index in silent:
        net.set_silent(nodes[index])
    net.run_for(duration)
    stats = net.statistics()
    accounted = stats.delivered + stats.lost + stats.to_silent + stats.unroutable
    assert stats.sent == accounted + stats.in_flight
    assert stats.sent == sum(n.sent for n in nodes)
    assert stats.delivered == sum(n.received for n in nodes)
    for index in silent:
        assert all(t <= 1.0 for t in nodes[index].endpoint.timer_calls)
