"""docs/libraries/bip_utracker.md: "``stopped`` asks for no peers (``num_want`` 0, as
libtorrent): we are leaving." :meth:`TrackerClient.announce` sends 0 for a ``stopped`` event
unless the caller gives a number; any other event still lets the tracker decide (-1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from bip_handshake import PeerId
from bip_utracker import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    decode_request,
    open_tracker_client,
)

PEER_ID = PeerId(b"-BP0001-abcdefghijkl")


@asynccontextmanager
async def recording_tracker() -> AsyncIterator[tuple[str, list[AnnounceRequest]]]:
    """A UDP tracker on loopback that answers every announce and records it."""
    announces: list[AnnounceRequest] = []
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

        async def serve() -> None:
            while True:
                data, source = await sock.recvfrom(2048)
                request = decode_request(data)
                if isinstance(request, ConnectRequest):
                    answer = ConnectResponse(request.transaction_id, 0x1234).encode()
                else:
                    assert isinstance(request, AnnounceRequest)
                    announces.append(request)
                    answer = AnnounceResponse(request.transaction_id, 1800, 0, 1, ()).encode()
                await sock.sendto(answer, source)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield f"udp://127.0.0.1:{port}/announce", announces
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("event", "given", "sent"),
    [
        (AnnounceEvent.STOPPED, None, 0),
        (AnnounceEvent.STOPPED, -1, -1),  # an explicit value is honoured
        (AnnounceEvent.STOPPED, 5, 5),
        (AnnounceEvent.STARTED, None, -1),
        (AnnounceEvent.NONE, None, -1),
        (AnnounceEvent.COMPLETED, 7, 7),
    ],
)
async def test_num_want_by_default_and_as_given(
    event: AnnounceEvent, given: int | None, sent: int
) -> None:
    with trio.fail_after(10):
        async with (
            recording_tracker() as (url, announces),
            open_tracker_client(bind_v4="127.0.0.1", bind_v6=None, timeout=1.0) as client,
        ):
            if given is None:
                await client.announce(url, bytes(20), peer_id=PEER_ID, port=6881, event=event)
            else:
                await client.announce(
                    url, bytes(20), peer_id=PEER_ID, port=6881, event=event, num_want=given
                )
    [announce] = announces
    assert (announce.event, announce.num_want) == (event, sent)
