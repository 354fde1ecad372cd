"""The Announcer keeps a private tracker's passkey (its URL's query) out of its logs, at every
level, while the client still gets the URL as given (autojump clock)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from tests._announce_fakes import RecordingClient, refusing

from bip_handshake import PeerId
from bip_utracker._announcer import AnnounceProgress, Announcer
from bip_utracker._errors import TrackerRejectedError

HASH = b"\x44" * 20
PEER_ID = PeerId(b"-BP0001-passkey00001")
SECRET = "0123456789abcdef"
URL = f"test://tracker/announce?passkey={SECRET}"


async def test_the_passkey_stays_out_of_the_logs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = RecordingClient(refusing(TrackerRejectedError("unregistered torrent")))
    announcer = Announcer(
        client,
        URL,
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=10),
        sink=None,
        retry_delay=10,
        stopped_timeout=5,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run)
        await trio.sleep(100)  # a few failures, each logged
        nursery.cancel_scope.cancel()
    assert client.sent
    assert set(client.trackers()) == {URL}  # the client gets it whole
    assert announcer.status.tracker == URL
    messages = [record.getMessage() for record in caplog.records]
    assert any("test://tracker/announce" in message for message in messages)
    assert not any(SECRET in message for message in messages)
