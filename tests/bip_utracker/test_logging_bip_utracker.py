"""bip_utracker's logging: which records the client and the server emit, and no noise."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress
from bip_utracker._client import open_tracker_client
from bip_utracker._client_core import AnnounceParams, RequestFailed, TrackerClientCore
from bip_utracker._codec import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    decode_response,
)
from bip_utracker._errors import TrackerRejectedError, TrackerTimeoutError
from bip_utracker._server import serve_tracker
from bip_utracker._server_core import ServerConfig, TrackerServerCore
from bip_utracker._swarm import AnnounceAnswer

HASH = b"\x11" * 20
PEER_ID = b"-BP0001-abcdefghijkl"
CLIENT = "bip_utracker.client"
SERVER = "bip_utracker.server"


def _records(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and r.levelno == level]


def _loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.INFO]


# -- the server ---------------------------------------------------------------------------------


async def test_server_logs_listening_and_stopping(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")
    async with serve_tracker(("127.0.0.1", 0)) as server:
        port = server.address[1]
    [listening, stopped] = _records(caplog, SERVER, logging.INFO)
    assert listening.getMessage() == f"UDP tracker listening on 127.0.0.1:{port}"
    assert (
        stopped.getMessage()
        == f"UDP tracker on 127.0.0.1:{port} stopped after 0 announces and 0 scrapes"
    )


async def test_server_statistics_are_debug_once_per_sweep(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")
    config = ServerConfig(expiry_interval=10.0)
    async with serve_tracker(("127.0.0.1", 0), config=config):
        await trio.sleep(35.0)
    sweeps = [r for r in _records(caplog, SERVER, logging.DEBUG) if "swarms" in r.getMessage()]
    assert len(sweeps) == 3
    assert "0 swarms, 0 peers" in sweeps[0].getMessage()


class _Broken:
    """A tracker handler with a bug."""

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer:
        raise RuntimeError("bug")

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[object]:
        raise RuntimeError("bug")


def test_a_failing_handler_is_an_error_a_logarithmic_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")
    core = TrackerServerCore(handler=_Broken(), secret=bytes(32))  # type: ignore[arg-type]
    address = ("10.0.0.1", 6881)
    core.receive_datagram(ConnectRequest(1).encode(), address, now=0.0)
    [(reply, _)] = core.datagrams_to_send()
    response = decode_response(reply)
    assert isinstance(response, ConnectResponse)
    for transaction_id in range(100):
        request = AnnounceRequest(
            response.connection_id, transaction_id, HASH, PEER_ID, 0, 1, 0,
            AnnounceEvent.NONE, 0, 0, -1, 6881,
        )  # fmt: skip
        core.receive_datagram(request.encode(), address, now=1.0)
    assert core.statistics().handler_failures == 100
    errors = _records(caplog, SERVER, logging.ERROR)
    assert len(errors) == 7  # failures 1, 2, 4, ..., 64
    assert all(r.exc_info is not None for r in errors)
    assert "failure 64 so far" in errors[-1].getMessage()
    assert len(_records(caplog, SERVER, logging.DEBUG)) == 93


# -- the client ---------------------------------------------------------------------------------


async def test_an_announce_is_one_info_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")
    async with serve_tracker(("127.0.0.1", 0)) as server:
        tracker = PeerAddress.parse(f"127.0.0.1:{server.address[1]}")
        async with open_tracker_client(bind_v6=None) as client:
            caplog.clear()
            result = await client.announce(tracker, HASH, peer_id=PEER_ID, port=6881, left=1)
            await client.scrape(tracker, [HASH])
            await client.announce(
                tracker, HASH, peer_id=PEER_ID, port=6881, event=AnnounceEvent.STOPPED
            )
    assert [r.getMessage() for r in _records(caplog, CLIENT, logging.INFO)] == [
        f"announced {HASH.hex()} to tracker {tracker}: 0 peers (0 seeders, 1 leechers), "
        f"next in {result.interval} s",
        f"announced {HASH.hex()} to tracker {tracker} (stopped): 0 peers (0 seeders, "
        f"0 leechers), next in {result.interval} s",
    ]
    scraped = [r.getMessage() for r in _records(caplog, CLIENT, logging.DEBUG)]
    assert f"scraped 1 swarms at tracker {tracker}" in scraped


async def test_a_refused_announce_is_raised_and_only_a_debug_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")
    config = ServerConfig(allowed_info_hashes=frozenset())
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        tracker = PeerAddress.parse(f"127.0.0.1:{server.address[1]}")
        async with open_tracker_client(bind_v6=None) as client:
            with pytest.raises(TrackerRejectedError):
                await client.announce(tracker, HASH, peer_id=PEER_ID, port=6881)
    assert not _records(caplog, CLIENT, logging.INFO)
    assert not [r for r in caplog.records if r.levelno > logging.INFO]
    failures = [r.getMessage() for r in _records(caplog, CLIENT, logging.DEBUG)]
    assert any(m.startswith(f"announce to tracker {tracker} failed:") for m in failures)


def test_retransmissions_and_timeouts_are_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")
    core = TrackerClientCore(rng=random.Random(1), timeout=1.0, max_retransmits=2)
    tracker = PeerAddress.parse("127.0.0.1:6969")
    core.announce(tracker, AnnounceParams(HASH, PEER_ID, port=6881), now=0.0)
    now = 0.0
    while (deadline := core.next_deadline()) is not None:
        now = deadline
        core.handle_timer(now)
    failed = core.next_event()
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, TrackerTimeoutError)
    messages = [r.getMessage() for r in _records(caplog, CLIENT, logging.DEBUG)]
    assert messages == [
        f"no answer from tracker {tracker} to a connect: sending it again (retransmission 1 of 2)",
        f"no answer from tracker {tracker} to a connect: sending it again (retransmission 2 of 2)",
    ]
    assert not _loud(caplog)


# -- noise --------------------------------------------------------------------------------------


async def _traffic(count: int) -> None:
    """*count* announces from distinct peers straight to a server, and *count* scrapes through
    the client (a tracker that refuses every other one): many datagrams, each way."""
    async with serve_tracker(("127.0.0.1", 0), config=ServerConfig(rate_limit=None)) as server:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", 0))
            await sock.sendto(ConnectRequest(1).encode(), server.address)
            connected = decode_response(await sock.recv(2048))
            assert isinstance(connected, ConnectResponse)
            for i in range(count):
                request = AnnounceRequest(
                    connected.connection_id, i, i.to_bytes(20, "big"), PEER_ID, 0, 1, 0,
                    AnnounceEvent.STARTED, 0, 0, -1, 1000 + i,
                )  # fmt: skip
                await sock.sendto(request.encode(), server.address)
                assert isinstance(decode_response(await sock.recv(2048)), AnnounceResponse)
        tracker = PeerAddress.parse(f"127.0.0.1:{server.address[1]}")
        async with open_tracker_client(bind_v6=None) as client:
            for i in range(count):
                await client.scrape(tracker, [i.to_bytes(20, "big")])


@pytest.mark.parametrize("count", [40, 160])
async def test_traffic_makes_no_noise(count: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")
    with trio.fail_after(30):
        await _traffic(count)
    assert [(r.name, r.levelno) for r in _loud(caplog)] == [
        (SERVER, logging.INFO),
        (SERVER, logging.INFO),
    ]
    assert all(r.name.startswith("bip_utracker.") for r in caplog.records)
    # DEBUG too stays per request, never per datagram: one scrape trace per call at most.
    assert len(caplog.records) <= count + 5
