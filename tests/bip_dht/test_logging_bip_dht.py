"""bip_dht's logging: the running node's lifecycle at INFO, query detail at DEBUG, a quiet
simulator."""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing
from _loopback import FAST, loopback_swarm

from bip_dht._node import DHTNode
from bip_dht._node_events import NodeIdChanged
from bip_dht._node_id import NodeId
from bip_dht._shell import DHT, open_dht
from bip_dht.simulator import SimulatedNetwork

NODE = "bip_dht.node"
SIMULATOR = "bip_dht.simulator"
HASH = bytes.fromhex("cc" * 20)


def _messages(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == level]


def _loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.INFO]


# -- the trio shell -------------------------------------------------------------------------


async def test_lifecycle_bootstrap_and_announce_are_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    with trio.fail_after(20):
        async with loopback_swarm(3) as nodes:
            address = nodes[0].addresses[0]
            node_id = nodes[0].node_id
            finished = await nodes[2].announce(HASH, port=6881)
            async for _ in nodes[1].get_peers(HASH):
                pass
    info = _messages(caplog, NODE, logging.INFO)
    assert f"DHT node {node_id} listening on {address}" in info
    assert f"DHT node on {address} closed" in info
    assert sum(m.startswith("DHT bootstrap done: ") for m in info) == 3
    assert (
        f"announced {HASH.hex()} on the DHT to {finished.announced_to} nodes (0 peers found)"
        in (info)
    )
    # a search is the caller's business: DEBUG
    debug = _messages(caplog, NODE, logging.DEBUG)
    assert any(m.startswith(f"DHT get_peers lookup of {HASH.hex()} done: ") for m in debug)
    assert not [r for r in caplog.records if r.levelno > logging.INFO]


async def test_a_bootstrap_nobody_answers_is_a_warning(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    # Nothing listens on that port: every query times out (on the virtual clock), or fails at
    # once where the system reports the port unreachable (Linux, ICMP).
    async with open_dht("127.0.0.2:0", config=FAST, rng=random.Random(1)) as dht:
        await dht.bootstrap(["127.0.0.3:9"])
        await dht.bootstrap()  # a retry of the same failing streak: said at DEBUG only
    failed = (
        "DHT bootstrap failed: no node answered (1 bootstrap addresses known); "
        "the DHT finds no peers until one does"
    )
    assert _messages(caplog, NODE, logging.WARNING) == [failed]
    assert _messages(caplog, NODE, logging.DEBUG).count(failed) == 1
    assert any(
        m.startswith("DHT find_node query to 127.0.0.3:9 ")
        and m.endswith(("timed out", "the system reports the node unreachable"))
        for m in _messages(caplog, NODE, logging.DEBUG)
    )


async def test_bootstrap_addresses_of_another_family_are_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    async with open_dht("127.0.0.2:0", ["[::1]:6881"], rng=random.Random(1)):
        pass
    assert _messages(caplog, NODE, logging.WARNING) == [
        "none of the 1 DHT bootstrap addresses is of a family the node runs (IPv4)"
    ]


async def test_a_cancelled_bootstrap_is_no_warning(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    # A node that never answers (a closed port would fail the query at once on Linux).
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with silent:
        await silent.bind(("127.0.0.3", 0))
        async with open_dht("127.0.0.2:0", config=FAST, rng=random.Random(1)) as dht:
            with trio.move_on_after(0.5):
                await dht.bootstrap([("127.0.0.3", silent.getsockname()[1])])
    assert not _messages(caplog, NODE, logging.WARNING)
    assert any(m.endswith(" cancelled") for m in _messages(caplog, NODE, logging.DEBUG))


def test_a_bep42_id_change_is_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    node = DHTNode(rng=random.Random(1), now=0.0)
    dht = DHT(node, {}, peer_sink=None, rng=random.Random(1))
    old, new = NodeId(bytes(20)), NodeId(b"\x01" * 20)
    dht._log_finished(NodeIdChanged(old=old, new=new))
    assert _messages(caplog, NODE, logging.INFO) == [
        f"DHT node id changed from {old} to {new} to match our external address (BEP 42)"
    ]


# -- the core and the simulator -------------------------------------------------------------


def _lookups(count: int) -> SimulatedNetwork:
    """*count* get_peers lookups on a warmed, lossy, churned simulated network."""
    net = SimulatedNetwork(seed=5, latency=(0.02, 0.2), loss=0.05)
    net.add_nodes(150)
    net.warm()
    net.silence(0.1)
    live = net.live_nodes()
    rng = random.Random(5)
    operations = [net.start(rng.choice(live), lambda d, now: d.get_peers(HASH, now))]
    operations += [
        net.start(rng.choice(live), lambda d, now: d.get_peers(rng.randbytes(20), now))
        for _ in range(count - 1)
    ]
    assert net.wait(operations, timeout=300.0)
    return net


@pytest.mark.parametrize("count", [25, 100])
def test_the_simulator_is_silent_above_debug(count: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    net = _lookups(count)
    assert net.statistics().sent > 10 * count  # hundreds of queries went out
    assert not _loud(caplog)
    assert all(r.name in (NODE, SIMULATOR) for r in caplog.records)
    # the churned nodes' silence shows at DEBUG, one record per query that timed out
    timeouts = [m for m in _messages(caplog, NODE, logging.DEBUG) if m.endswith("timed out")]
    assert timeouts
    assert _messages(caplog, SIMULATOR, logging.DEBUG) == [
        "simulated DHT: warmed the routing tables of 150 of 150 nodes"
    ]


def test_the_simulator_makes_no_log_record_when_debug_is_off(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="bip_dht")
    made: list[str] = []
    original = logging.Logger.makeRecord

    def counting(self: logging.Logger, *args: object, **kwargs: object) -> logging.LogRecord:
        made.append(self.name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    _lookups(25)
    assert [name for name in made if name.startswith("bip_dht")] == []


def test_protocol_formation_logs_one_debug_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    net = SimulatedNetwork(seed=2)
    net.form(30, settle=5.0)
    [formed] = _messages(caplog, SIMULATOR, logging.DEBUG)
    assert formed.startswith("simulated DHT: 30 nodes joined through the protocol, 30 in the")
    assert not _loud(caplog)


async def test_searches_make_no_info_noise(caplog: pytest.LogCaptureFixture) -> None:
    # Many lookups over real sockets: the INFO records are the nodes' lifecycle, whatever the
    # number of searches.
    counts = []
    for searches in (3, 12):
        caplog.clear()
        caplog.set_level(logging.DEBUG, logger="bip_dht")
        with trio.fail_after(30):
            async with loopback_swarm(3) as nodes:
                for i in range(searches):
                    await nodes[i % 3].get_peers(bytes([i]) * 20).wait()
        counts.append(len(_loud(caplog)))
        assert all(r.name.startswith("bip_dht.") for r in caplog.records)
    assert counts[0] == counts[1] == 9  # 3 x (listening, bootstrap done, closed)
