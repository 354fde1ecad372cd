"""The Announcer keeps the peers of a ``stopped`` answer from its sink (we are leaving the swarm:
dialling them is wasted work) but shows that answer in its status (autojump clock)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio
import trio.testing
from tests._announce_fakes import RecordingClient, Sent

from bip_handshake import PeerAddress, PeerId
from bip_utracker._announcer import AnnounceClient, AnnounceProgress, Announcer
from bip_utracker._client_core import AnnounceResult, RequestId
from bip_utracker._codec import AnnounceEvent

HASH = b"\x33" * 20
PEER_ID = PeerId(b"-BP0001-stopped00001")
URL = "test://tracker/announce"


def peer_for(event: AnnounceEvent) -> PeerAddress:
    """A distinct peer per event, so the sink shows which answers it was given."""
    return PeerAddress(ipaddress.IPv4Address(f"127.0.0.{10 + int(event)}"), 6881)


def peer_giving(sent: Sent) -> AnnounceResult:
    """Every answer names one peer, the one of its event."""
    return AnnounceResult(
        request_id=RequestId(sent.number),
        tracker=PeerAddress.parse("127.0.0.1:80"),
        info_hash=HASH,
        interval=100,
        leechers=1,
        seeders=1,
        peers=(peer_for(sent.event),),
    )


@dataclass
class Sink:
    found: list[PeerAddress] = field(default_factory=list)

    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        assert source == "tracker"
        self.found.extend(addresses)


async def test_the_peers_of_a_stopped_answer_are_not_dialled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(peer_giving)
    assert isinstance(client, AnnounceClient)
    sink = Sink()
    announcer = Announcer(
        client,
        URL,
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=10),
        sink=sink,
        min_interval=60,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run)
        await trio.sleep(150)  # started, then one regular announce at 100 s
        nursery.cancel_scope.cancel()
    assert client.events() == [AnnounceEvent.STARTED, AnnounceEvent.NONE, AnnounceEvent.STOPPED]
    assert sink.found == [peer_for(AnnounceEvent.STARTED), peer_for(AnnounceEvent.NONE)]
    status = announcer.status
    assert status.last_event is AnnounceEvent.STOPPED
    assert status.last_result is not None
    assert status.last_result.peers == (peer_for(AnnounceEvent.STOPPED),)
    assert status.announces == 3
    assert not status.started
