"""Mend of review R5 of the DHT mends: a BEP 46 follower whose lookup the DHT node refused
(every lookup slot taken by a session's torrents) tries again soon, not a whole interval
later, and never reads the refusal as "no DHT node answered" (review R8: nor the refusal of
the join that lookup needed first)."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
import trio.testing

from bip._client import TorrentOptions
from bip._follow_mutable import MutableFollower
from bip_dht import DHTBusyError, DHTConfig, MutableTorrent, open_dht
from bip_handshake import NodeInfo, PeerAddress
from bip_metainfo import MutableTorrentLink

INTERVAL = 600.0


class BusyDHT:
    """Stands for a DHT whose node refuses the first *refusals* lookups, then runs them
    (and they find nothing)."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.asked: list[float] = []

    async def join_if_needed(self, *, timeout: float) -> bool:
        return True

    def statistics(self) -> SimpleNamespace:
        # the lookups that ran had answers (so "no item", not "nobody answered")
        ran = max(0, len(self.asked) - self.refusals)
        return SimpleNamespace(responses_received=ran, errors_received={})

    async def get_mutable_torrent(
        self, public_key: bytes, salt: bytes = b""
    ) -> MutableTorrent | None:
        self.asked.append(trio.current_time())
        if len(self.asked) <= self.refusals:
            raise DHTBusyError("busy")
        return None


async def test_a_refused_lookup_is_tried_again_soon(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip")
    dht = BusyDHT(refusals=3)
    follower = MutableFollower(
        cast(Any, None),
        cast(Any, dht),
        MutableTorrentLink(bytes(32)),
        TorrentOptions(Path("down")),
        interval=INTERVAL,
        timeout=5.0,
    )
    with trio.fail_after(3 * INTERVAL):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.poll)  # never raises for the DHT's sake
            while len(dht.asked) < 5:
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    first, *later = dht.asked
    assert first == pytest.approx(INTERVAL, abs=0.01)
    gaps = [b - a for a, b in zip(dht.asked, later, strict=False)]
    # three refusals, each tried again within seconds (backing off), then a whole interval
    # once a lookup ran
    assert all(0 < gap < 60 for gap in gaps[:3]), gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert gaps[3] == pytest.approx(INTERVAL, abs=0.01)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings  # the lookup that ran; the refusals are no failure
    assert "no DHT node returned an item" in warnings[0]


async def test_a_refused_join_is_a_refusal_not_no_node_answered(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Review R8: the join a lookup needs first (nobody left to look up with) refused too
    # must reach poll as DHTBusyError (tried again soon), not as "no DHT node answered".
    caplog.set_level(logging.DEBUG, logger="bip")
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.62", 0))
    host, port = silent.getsockname()[:2]
    known = NodeInfo(bytes(range(20)), PeerAddress.parse(f"{host}:{port}"))
    config = DHTConfig(max_lookups=1, max_queued=0, query_timeout=2.0)
    with silent:
        async with open_dht("127.0.0.61:0", config=config, rng=random.Random(1)) as dht:
            table = dht.node.table(4)
            table.heard_from(known, trio.current_time(), responded=True)
            async with dht.get_peers(b"\x01" * 20):  # takes the only lookup slot
                for _ in range(10):  # nobody left to look up with: the lookup joins first
                    table.failed(known, trio.current_time())
                follower = MutableFollower(
                    cast(Any, None),
                    cast(Any, dht),
                    MutableTorrentLink(bytes(32)),
                    TorrentOptions(Path("down")),
                    interval=INTERVAL,
                    timeout=5.0,
                )
                with pytest.raises(DHTBusyError):
                    await follower._look_up()
    assert not [r for r in caplog.records if r.name == "bip" and r.levelno >= logging.WARNING]
