"""NAT-PMP (RFC 6886): the codec and the client core against a fake gateway, on virtual time."""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TypeVar

import pytest
from _natpmp_gateway import EXTERNAL, GATEWAY, GATEWAY_ADDRESS, FakeGateway, run
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake._compact import PeerAddress
from bip_handshake._errors import LocalProtocolError
from bip_handshake._natpmp import (
    NATPMP_DELETE_ATTEMPTS,
    NATPMP_HINT_INTERVAL,
    NATPMP_MAX_ATTEMPTS,
    NATPMP_MAX_MAPPINGS,
    NATPMP_RESET_DELAY_MAX,
    NATPMP_RESET_INTERVAL,
    NATPMP_RETRY_MAX,
    NATPMP_RETRY_MIN,
    ExternalAddressRequest,
    ExternalAddressResponse,
    GatewayReset,
    MappingFailed,
    MappingProtocol,
    MappingRemoved,
    MappingRequest,
    MappingResponse,
    NatPmpAddressChanged,
    NatPmpAddressFailed,
    NatPmpClient,
    NatPmpError,
    NatPmpErrorResponse,
    NatPmpEvent,
    NatPmpResult,
    PortMapped,
    decode_natpmp_request,
    decode_natpmp_response,
)

TCP, UDP = MappingProtocol.TCP, MappingProtocol.UDP


def new_client(*ports: tuple[MappingProtocol, int], lifetime: int = 3600) -> NatPmpClient:
    # NAT-PMP alone: these tests are about RFC 6886's rules (test_pcp.py has PCP's).
    client = NatPmpClient(GATEWAY, lifetime=lifetime, rng=random.Random(7), pcp=False)
    for protocol, port in ports:
        client.add_mapping(protocol, port, now=0.0)
    return client


T = TypeVar("T")


def of_type(events: list[NatPmpEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


# -- codec -------------------------------------------------------------------------------------

ports = st.integers(0, 0xFFFF)
uint32 = st.integers(0, 0xFFFF_FFFF)
results = st.integers(0, 0xFFFF)
protocols = st.sampled_from(MappingProtocol)
addresses = st.builds(IPv4Address, uint32)


def test_wire_format_is_rfc_6886() -> None:
    assert ExternalAddressRequest().encode() == b"\x00\x00"
    assert MappingRequest(UDP, 6881, 6882, 7200).encode() == bytes.fromhex(
        "000100001ae11ae200001c20"
    )
    answer = bytes.fromhex("0082000000000e101ae19c4000000e10")
    assert decode_natpmp_response(answer) == MappingResponse(
        TCP, NatPmpResult.SUCCESS, 3600, 6881, 40000, 3600
    )
    assert decode_natpmp_response(
        bytes.fromhex("0080000400000001cb007107")
    ) == ExternalAddressResponse(NatPmpResult.OUT_OF_RESOURCES, 1, EXTERNAL)


@given(
    st.builds(MappingRequest, protocols, ports, ports, uint32) | st.just(ExternalAddressRequest())
)
def test_requests_round_trip(request: MappingRequest | ExternalAddressRequest) -> None:
    assert decode_natpmp_request(request.encode()) == request


@given(
    st.builds(ExternalAddressResponse, results, uint32, addresses)
    | st.builds(MappingResponse, protocols, results, uint32, ports, ports, uint32)
    | st.builds(NatPmpErrorResponse, st.integers(0, 255), st.integers(1, 0xFFFF), uint32),
    st.binary(max_size=8),
)
def test_responses_round_trip_with_trailing_bytes(response: object, trailing: bytes) -> None:
    encoded = response.encode()  # type: ignore[attr-defined]
    decoded = decode_natpmp_response(encoded)
    if isinstance(response, NatPmpErrorResponse) and response.opcode in (128, 129, 130):
        return  # a short failure of a known opcode is read as the long form when it is long
    assert decoded == response
    assert decode_natpmp_response(encoded + trailing) == response or isinstance(
        response, NatPmpErrorResponse
    )


def test_known_result_codes_are_named_and_unknown_kept() -> None:
    assert [code.value for code in NatPmpResult] == [0, 1, 2, 3, 4, 5]
    response = decode_natpmp_response(bytes.fromhex("00810063000000010000000000000000"))
    assert isinstance(response, MappingResponse)
    assert response.result == 99
    assert not isinstance(response.result, NatPmpResult)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x80\x00\x00\x00\x00\x00",  # 7 bytes
        b"\x02\x80" + bytes(10),  # PCP's version
        b"\x00\x80" + bytes(8),  # a success too short for an address
        b"\x00\x82" + bytes(12),  # a success too short for a mapping
        b"\x00\x02" + bytes(14),  # a request, not a response
        b"\x00\x83" + bytes(14),  # an unknown response opcode, succeeding
    ],
)
def test_malformed_responses_raise_our_error(data: bytes) -> None:
    with pytest.raises(NatPmpError):
        decode_natpmp_response(data)


@pytest.mark.parametrize(
    "data", [b"", b"\x01\x00", b"\x00\x00\x00", b"\x00\x01" + bytes(9), b"\x00\x03" + bytes(10)]
)
def test_malformed_requests_raise_our_error(data: bytes) -> None:
    with pytest.raises(NatPmpError):
        decode_natpmp_request(data)


@given(st.binary(max_size=40))
def test_arbitrary_bytes_decode_or_raise_our_error(data: bytes) -> None:
    for decode in (decode_natpmp_response, decode_natpmp_request):
        with contextlib.suppress(NatPmpError):
            decode(data)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MappingRequest(TCP, 65536, 0, 0),
        lambda: MappingRequest(TCP, 1, -1, 0),
        lambda: MappingRequest(TCP, 1, 1, 1 << 32),
        lambda: MappingRequest(3, 1, 1, 1),  # type: ignore[arg-type]
        lambda: MappingRequest(TCP, True, 1, 1),
        lambda: ExternalAddressResponse(0, 0, "1.2.3.4"),  # type: ignore[arg-type]
        lambda: ExternalAddressResponse(1 << 16, 0, EXTERNAL),
        lambda: NatPmpErrorResponse(128, 0, 0),
        lambda: MappingResponse(UDP, 0, 1 << 32, 1, 1, 1),
    ],
)
def test_bad_message_fields_raise_local_error(build: object) -> None:
    with pytest.raises(LocalProtocolError):
        build()  # type: ignore[operator]


# -- mapping -----------------------------------------------------------------------------------


def test_maps_serially_address_first() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 10.0, events=events)
    kinds = [type(r) for _, r in gateway.requests]
    assert kinds == [ExternalAddressRequest, MappingRequest, MappingRequest]
    # One at a time: each request follows the previous answer (latency 0.01).
    times = gateway.times()
    assert all(b - a >= 0.01 for a, b in itertools.pairwise(times))
    assert events[0] == NatPmpAddressChanged(EXTERNAL)
    mapped = of_type(events, PortMapped)
    assert [(e.mapping.protocol, e.mapping.external_port) for e in mapped] == [
        (TCP, 6881),
        (UDP, 6881),
    ]
    assert client.external_address == EXTERNAL
    assert [m.external_port for m in client.mappings()] == [6881, 6881]
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}
    stats = client.statistics()
    assert (stats.sent, stats.received, stats.retransmitted) == (3, 3, 0)


def test_asks_lifetime_and_renews_at_half() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 3000.0, events=events)
    maps = [(t, r) for t, r in gateway.requests if isinstance(r, MappingRequest)]
    assert maps[0][1].lifetime == 3600
    assert len(maps) == 2
    assert maps[1][0] == pytest.approx(maps[0][0] + 0.01 + 1800)
    assert maps[1][1] == maps[0][1]  # a renewal is the same request
    # The address is asked again as often; a renewal that changes nothing is silent.
    assert len(gateway.times(ExternalAddressRequest)) == 2
    assert len(of_type(events, PortMapped)) == 1


def test_shorter_lifetime_granted_is_renewed_sooner_and_longer_is_capped() -> None:
    gateway = FakeGateway(max_lifetime=100)
    client = new_client((UDP, 7000))
    run(client, gateway, 0.0, 120.0)
    assert len(gateway.times(MappingRequest)) == 3  # at ~0, ~50, ~100
    [mapping] = client.mappings()
    assert mapping.lifetime == 100

    generous = FakeGateway()
    client = new_client((UDP, 7000), lifetime=60)
    run(client, generous, 0.0, 1.0)
    generous.requests.clear()
    # A gateway granting more than asked is read as granting what was asked.
    client.receive_datagram(
        MappingResponse(UDP, 0, 2000, 7000, 7000, 99999).encode(), GATEWAY_ADDRESS, 1.0
    )  # unexpected: nothing in flight
    assert client.statistics().unexpected == 1
    assert client.mappings()[0].lifetime == 60


def test_tiny_lifetimes_do_not_flood() -> None:
    gateway = FakeGateway(max_lifetime=1)
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 20.0)
    assert len(gateway.times(MappingRequest)) <= 11  # one per 2 s at most


def test_external_port_differing_is_reported_and_suggested_on_renewal() -> None:
    gateway = FakeGateway(taken={6881})
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 2000.0, events=events)
    [mapped] = of_type(events, PortMapped)
    assert (mapped.mapping.internal_port, mapped.mapping.external_port) == (6881, 6882)
    requests = [r for _, r in gateway.requests if isinstance(r, MappingRequest)]
    assert [r.suggested_external_port for r in requests] == [6881, 6882]


def test_chosen_external_port_is_suggested() -> None:
    gateway = FakeGateway()
    client = NatPmpClient(GATEWAY, pcp=False)
    client.add_mapping(TCP, 6881, now=0.0, external_port=0)
    run(client, gateway, 0.0, 1.0)
    assert client.mappings()[0].external_port == 40000


# -- retransmission ----------------------------------------------------------------------------


def test_retransmission_schedule_and_give_up() -> None:
    gateway = FakeGateway(silent=True)
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 130.0, events=events)
    sent = gateway.times()
    assert len(sent) == NATPMP_MAX_ATTEMPTS
    assert sent == pytest.approx([0.25 * (2**k - 1) for k in range(9)])
    # After the ninth send and 64 s more, everything due fails together.
    give_up = 0.25 * (2**9 - 1)
    [failed] = of_type(events, NatPmpAddressFailed)
    assert failed == NatPmpAddressFailed(None, give_up + NATPMP_RETRY_MIN)
    failures = of_type(events, MappingFailed)
    assert [(f.mapping.protocol, f.result) for f in failures] == [(TCP, None), (UDP, None)]
    assert all(f.retry_at == give_up + NATPMP_RETRY_MIN for f in failures)
    stats = client.statistics()
    assert (stats.timeouts, stats.sent, stats.retransmitted) == (1, 9, 8)
    assert client.next_deadline() == give_up + NATPMP_RETRY_MIN


def test_retries_back_off_and_recover() -> None:
    gateway = FakeGateway(silent=True)
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    end = run(client, gateway, 0.0, 700.0, events=events)
    retries = [e.retry_at for e in of_type(events, NatPmpAddressFailed)]
    give_up = 127.75
    assert (
        retries == [give_up + 60, 2 * give_up + 60 + 120, 3 * give_up + 180 + 240][: len(retries)]
    )
    gateway.silent = False
    run(client, gateway, end, 2500.0, events=events)
    assert client.mappings()[0].external_port == 6881
    assert client.external_address == EXTERNAL


def test_a_silent_gateway_fails_every_due_request_together() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881), lifetime=60)
    run(client, gateway, 0.0, 1.0)
    gateway.silent_mappings = True
    # The address refresh at ~30 s is answered; the TCP renewal is not.
    run(client, gateway, 1.0, 31.0)
    udp = client.mappings()[1].mapping_id
    client.remove_mapping(udp, now=31.0)  # due now, behind the TCP renewal in flight
    events: list[NatPmpEvent] = []
    run(client, gateway, 31.0, 200.0, events=events)
    [failed] = of_type(events, MappingFailed)
    assert (failed.mapping.protocol, failed.result) == (TCP, None)
    assert failed.retry_at == pytest.approx(30.02 + 127.75 + NATPMP_RETRY_MIN)
    [removed] = of_type(events, MappingRemoved)
    assert (removed.mapping.mapping_id, removed.result) == (udp, None)
    # The address refresh fell due meanwhile (at ~60 s): it fails with the rest, unsent.
    [address] = of_type(events, NatPmpAddressFailed)
    assert address.retry_at == failed.retry_at
    assert len(gateway.times(ExternalAddressRequest)) == 2


def test_lost_answer_is_retransmitted() -> None:
    gateway = FakeGateway()
    client = new_client()
    [(request, _)] = client.datagrams_to_send(0.0)
    client.handle_timer(0.25)
    [(again, _)] = client.datagrams_to_send(0.25)
    assert again == request
    client.handle_timer(0.5)  # not due before 0.75
    assert client.datagrams_to_send(0.5) == []
    reply = gateway.handle(again, 0.3)
    assert reply is not None
    client.receive_datagram(reply, GATEWAY_ADDRESS, 0.6)
    assert client.external_address == EXTERNAL
    assert client.statistics().retransmitted == 1


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("short", [False, True])
@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (NatPmpResult.UNSUPPORTED_VERSION, NATPMP_RETRY_MAX),
        (NatPmpResult.NOT_AUTHORIZED, NATPMP_RETRY_MAX),
        (NatPmpResult.NETWORK_FAILURE, NATPMP_RETRY_MIN),
        (NatPmpResult.OUT_OF_RESOURCES, NATPMP_RETRY_MIN),
        (NatPmpResult.UNSUPPORTED_OPCODE, NATPMP_RETRY_MAX),
        (77, NATPMP_RETRY_MAX),  # RFC 3.5: an undefined code is fatal to the request
    ],
)
def test_result_codes_fail_the_mapping(code: int, retry: float, short: bool) -> None:
    gateway = FakeGateway(refuse=code, short_errors=short)
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    [failed] = of_type(events, MappingFailed)
    assert failed.result == code
    assert failed.mapping.external_port is None
    assert failed.retry_at == pytest.approx(0.02 + retry)
    assert len(gateway.times(MappingRequest)) == 1  # no retransmission of a refusal
    # Tried again when due, and mapped once the gateway agrees.
    gateway.refuse = None
    run(client, gateway, 1.0, retry + 1.0, events=events)
    assert client.mappings()[0].external_port == 6881


@pytest.mark.parametrize("short", [False, True])
def test_address_refusals(short: bool) -> None:
    gateway = FakeGateway(refuse_address=NatPmpResult.NETWORK_FAILURE, short_errors=short)
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    [failed] = of_type(events, NatPmpAddressFailed)
    assert failed.result == NatPmpResult.NETWORK_FAILURE
    assert failed.retry_at == pytest.approx(60.01)
    assert client.mappings()[0].external_port == 6881  # the mapping goes on regardless
    assert client.external_address is None


def test_unsupported_version_answered_with_opcode_zero() -> None:
    # RFC 3.5's figure: "Vers = 0 | OP = 0 | Result Code = 1".
    client = new_client((UDP, 6881))
    run(client, FakeGateway(), 0.0, 0.5)
    client.add_mapping(TCP, 7000, now=0.5)
    client.datagrams_to_send(0.5)
    events: list[NatPmpEvent] = []
    client.receive_datagram(NatPmpErrorResponse(0, 1, 2000).encode(), GATEWAY_ADDRESS, 0.6)
    while (event := client.next_event()) is not None:
        events.append(event)
    [failed] = of_type(events, MappingFailed)
    assert (failed.mapping.internal_port, failed.result) == (7000, NatPmpResult.UNSUPPORTED_VERSION)


def test_gateway_without_address_yet() -> None:
    gateway = FakeGateway(external=IPv4Address(0))
    client = new_client()
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    assert of_type(events, NatPmpAddressFailed)[0].result is None
    assert client.external_address is None


def test_address_change_is_reported() -> None:
    gateway = FakeGateway()
    client = new_client()
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    gateway.external = IPv4Address("198.51.100.9")
    run(client, gateway, 1.0, 1900.0, events=events)
    assert of_type(events, NatPmpAddressChanged) == [
        NatPmpAddressChanged(EXTERNAL),
        NatPmpAddressChanged(IPv4Address("198.51.100.9")),
    ]
    # An unasked announcement (RFC 3.2.1) is a hint: the address is asked at once, and the
    # answer is what counts, not what the announcement said (anyone could have sent it).
    sent = len(gateway.requests)
    client.receive_datagram(
        ExternalAddressResponse(0, gateway.epoch(1901.0), IPv4Address("198.51.100.10")).encode(),
        GATEWAY_ADDRESS,
        1901.0,
    )
    assert client.external_address == IPv4Address("198.51.100.9")
    gateway.external = IPv4Address("198.51.100.11")
    run(client, gateway, 1901.0, 1902.0, events=events)
    assert gateway.requests[sent:] == [(1901.0, ExternalAddressRequest())]
    assert client.external_address == IPv4Address("198.51.100.11")
    assert client.statistics().hints == 1


# -- the epoch ---------------------------------------------------------------------------------


def test_gateway_reboot_announced_recreates_mappings() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []

    def reboot(now: float) -> None:
        gateway.reboot(now)
        client.receive_datagram(gateway.announcement(now), GATEWAY_ADDRESS, now)

    run(client, gateway, 0.0, 1000.0, events=events, at={900.0: reboot})
    [reset] = of_type(events, GatewayReset)
    assert reset.epoch == 0
    assert reset.expected == pytest.approx(1000 + 900 * 7 / 8, abs=1)
    renewals = [t for t in gateway.times(MappingRequest) if t >= 900]
    assert len(renewals) == 2
    assert 900 <= renewals[0] <= 905.1  # after a random 0..5 s (RFC 3.7), then serially
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}
    assert client.statistics().gateway_resets == 1


FORGED = IPv4Address("198.51.100.66")


def test_forged_announcements_are_hints_bounded_in_rate() -> None:
    """The review's attack: anyone on the network multicasts a "reboot" with an address of
    its choice from the gateway's address, every 3 s for 10 minutes. Each is a hint: it
    brings the address request forward, at most once per NATPMP_HINT_INTERVAL, and the
    gateway's answer (no reset, its own address) is what counts."""
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    sent = len(gateway.requests)
    forged = ExternalAddressResponse(0, 0, FORGED).encode()

    def forge(now: float) -> None:
        client.receive_announcement(forged, GATEWAY_ADDRESS, now)

    forgeries: dict[float, Callable[[float], None]] = {1.0 + 3.0 * i: forge for i in range(200)}
    run(client, gateway, 1.0, 601.0, events=events, at=forgeries)
    asked = gateway.requests[sent:]
    assert {type(r) for _, r in asked} == {ExternalAddressRequest}  # no mapping remade
    assert len(asked) <= 600 / NATPMP_HINT_INTERVAL + 1
    assert all(b - a >= NATPMP_HINT_INTERVAL for (a, _), (b, _) in itertools.pairwise(asked))
    stats = client.statistics()
    assert stats.gateway_resets == 0
    assert stats.hints == len(asked)
    assert stats.hints + stats.announcements_ignored == 200
    assert client.external_address == EXTERNAL
    assert NatPmpAddressChanged(FORGED) not in events
    assert not of_type(events, GatewayReset)

    # Still forging, when the gateway really reboots: seen within the interval.
    def reboot(now: float) -> None:
        gateway.reboot(now)
        client.receive_announcement(gateway.announcement(now), GATEWAY_ADDRESS, now)

    more: dict[float, Callable[[float], None]] = {601.0 + 3.0 * i: forge for i in range(33)}
    run(client, gateway, 601.0, 700.0, events=events, at=more | {603.5: reboot})
    assert len(of_type(events, GatewayReset)) == 1
    remade = [t for t, r in gateway.requests if isinstance(r, MappingRequest) and t > 603.5]
    assert len(remade) == 2
    assert remade[0] <= 603.5 + NATPMP_HINT_INTERVAL + NATPMP_RESET_DELAY_MAX
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}


def test_announcements_come_from_the_gateways_own_port() -> None:
    """An announcement's source port is the server's, as an answer's is (RFC 6886 3.2.1,
    RFC 6887 14.1.1: the server sends it as it answers, from its port): a gateway served on
    another port than 5351 is heard from that port, and 5351 is then as foreign as any."""
    served = PeerAddress(GATEWAY, 5352)
    gateway = FakeGateway()
    client = NatPmpClient(GATEWAY, port=5352, rng=random.Random(7), pcp=False)
    client.add_mapping(TCP, 6881, now=0.0)
    run(client, gateway, 0.0, 1.0)
    assert client.next_deadline() == pytest.approx(1800.01)  # the address asked again
    announcement = gateway.announcement(100.0)
    client.receive_announcement(announcement, GATEWAY_ADDRESS, 100.0)  # from 5351
    client.receive_announcement(announcement, PeerAddress(GATEWAY, 5350), 100.0)
    client.receive_datagram(announcement, GATEWAY_ADDRESS, 100.0)  # to our socket, from 5351
    stats = client.statistics()
    assert (stats.wrong_source, stats.hints) == (3, 0)
    assert client.next_deadline() == pytest.approx(1800.01)
    client.receive_announcement(announcement, served, 100.0)
    stats = client.statistics()
    assert (stats.wrong_source, stats.hints) == (3, 1)
    assert client.next_deadline() == 100.0  # the address request brought forward
    [(request, destination)] = client.datagrams_to_send(100.0)
    assert (decode_natpmp_request(request), destination) == (ExternalAddressRequest(), served)


def test_gateway_reboot_seen_in_a_renewal_recreates_the_others() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 10.0)
    client.add_mapping(UDP, 6881, now=10.0)
    events: list[NatPmpEvent] = []
    # The gateway reboots unseen; the UDP mapping's first request shows it.
    run(client, gateway, 10.0, 20.0, events=events, at={10.0: gateway.reboot})
    assert len(of_type(events, GatewayReset)) == 1
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}


@pytest.mark.parametrize(
    ("later", "epoch_step", "reset"),
    [
        (100.0, 100, False),  # in step
        (100.0, 86, False),  # a slow gateway clock: 7/8 of ours and 2 s slack allowed
        (100.0, 85, True),  # 87.5 - 2 = 85.5: lagging
        (0.0, -1, True),  # went backwards
        (1.0, 0, False),  # one second gone, the same SSSoE: within the slack
    ],
)
def test_epoch_rule(later: float, epoch_step: int, reset: bool) -> None:
    client = new_client()
    client.datagrams_to_send(0.0)
    client.receive_datagram(
        ExternalAddressResponse(0, 5000, EXTERNAL).encode(), GATEWAY_ADDRESS, 0.0
    )
    # An announcement brings the address request forward; its answer's SSSoE is checked.
    client.receive_announcement(
        ExternalAddressResponse(0, 0, EXTERNAL).encode(), GATEWAY_ADDRESS, later
    )
    [(data, _)] = client.datagrams_to_send(later)
    assert decode_natpmp_request(data) == ExternalAddressRequest()
    client.receive_datagram(
        ExternalAddressResponse(0, 5000 + epoch_step, EXTERNAL).encode(), GATEWAY_ADDRESS, later
    )
    assert client.statistics().gateway_resets == int(reset)


def test_slow_gateway_clock_causes_no_false_reset() -> None:
    gateway = FakeGateway(clock_rate=0.9)
    client = new_client((TCP, 6881), lifetime=60)
    run(client, gateway, 0.0, 5000.0)
    assert client.statistics().gateway_resets == 0


# -- deletion ----------------------------------------------------------------------------------


def test_remove_mapping_deletes_it() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881))
    run(client, gateway, 0.0, 1.0)
    tcp_id = client.mappings()[0].mapping_id
    client.remove_mapping(tcp_id, now=1.0)
    client.remove_mapping(tcp_id, now=1.0)  # twice: nothing more
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 2.0, events=events)
    [removed] = of_type(events, MappingRemoved)
    assert (removed.mapping.mapping_id, removed.result) == (tcp_id, NatPmpResult.SUCCESS)
    _, deletion = gateway.requests[-1]
    assert deletion == MappingRequest(TCP, 6881, 0, 0)
    assert gateway.mappings.keys() == {(UDP, 6881)}
    assert [m.protocol for m in client.mappings()] == [UDP]
    with pytest.raises(LocalProtocolError):
        client.remove_mapping(tcp_id, now=2.0)


def test_close_deletes_everything() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881))
    run(client, gateway, 0.0, 1.0)
    client.close(1.0)
    client.close(1.0)
    closed_before_answers = client.is_closed
    assert not closed_before_answers
    run(client, gateway, 1.0, 5000.0)
    assert client.is_closed
    assert gateway.mappings == {}
    assert client.next_deadline() is None
    assert all(t < 2.0 for t in gateway.times())  # no renewal, no address refresh
    with pytest.raises(LocalProtocolError):
        client.add_mapping(TCP, 1, now=5000.0)


@pytest.mark.parametrize("short", [False, True])
def test_refused_deletion_still_removes(short: bool) -> None:
    gateway = FakeGateway(refuse_deletion=NatPmpResult.NOT_AUTHORIZED, short_errors=short)
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 1.0)
    client.close(1.0)
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 2.0, events=events)
    assert client.is_closed
    [removed] = of_type(events, MappingRemoved)
    assert removed.result == NatPmpResult.NOT_AUTHORIZED


def test_close_drops_the_address_request_and_later_answers() -> None:
    client = new_client()
    assert len(client.datagrams_to_send(0.0)) == 1
    client.close(0.1)
    assert client.is_closed
    assert client.datagrams_to_send(0.2) == []
    client.receive_datagram(ExternalAddressResponse(0, 5, EXTERNAL).encode(), GATEWAY_ADDRESS, 0.3)
    client.receive_datagram(NatPmpErrorResponse(128, 3, 6).encode(), GATEWAY_ADDRESS, 0.3)
    assert client.external_address is None
    assert client.next_event() is None
    assert client.statistics().unexpected == 1


def test_close_with_a_silent_gateway_gives_up_soon() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 1.0)
    gateway.silent = True
    gateway.requests.clear()
    client.close(1.0)
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 10.0, events=events)
    assert client.is_closed
    assert len(gateway.requests) == NATPMP_DELETE_ATTEMPTS
    assert gateway.times()[-1] - 1.0 == pytest.approx(0.75)
    assert of_type(events, MappingRemoved)[0].result is None


def test_removing_what_the_gateway_never_held_sends_nothing() -> None:
    client = new_client((TCP, 6881))
    mapping_id = client.mappings()[0].mapping_id
    client.remove_mapping(mapping_id, now=0.0)
    event = client.next_event()
    assert isinstance(event, MappingRemoved)
    assert (event.mapping.mapping_id, event.result) == (mapping_id, None)
    assert client.mappings() == ()
    assert [d for d, _ in client.datagrams_to_send(0.0)] == [ExternalAddressRequest().encode()]


def test_removing_a_mapping_in_flight_deletes_it_and_drops_late_answers() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 0.015)  # the address answered, the mapping request sent
    _, request = gateway.requests[-1]
    assert isinstance(request, MappingRequest)
    late = gateway.handle(request.encode(), 0.015)
    client.remove_mapping(client.mappings()[0].mapping_id, now=0.02)
    [(deletion, _)] = client.datagrams_to_send(0.02)
    assert decode_natpmp_request(deletion) == MappingRequest(TCP, 6881, 0, 0)
    assert late is not None
    # The mapping answer to the dropped request is no answer to the deletion.
    client.receive_datagram(late, GATEWAY_ADDRESS, 0.03)
    assert client.statistics().unexpected == 1
    assert client.mappings() != ()


def test_an_unanswered_renewal_keeps_the_earlier_grant_until_it_runs_out() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    [granted] = client.mappings()
    assert granted.external_port == 6881
    assert granted.expires_at is not None
    gateway.silent = True
    events: list[NatPmpEvent] = []
    # The renewal at ~300 s times out at ~428 s: the grant (until ~600 s) still stands.
    run(client, gateway, 1.0, 500.0, events=events)
    [failed] = of_type(events, MappingFailed)
    assert failed.result is None
    assert failed.mapping.external_port == 6881
    assert failed.mapping.expires_at == granted.expires_at
    assert client.mappings()[0].external_port == 6881
    # It lapses when it runs out, unrenewed: told by a second MappingFailed.
    run(client, gateway, 500.0, granted.expires_at + 0.001, events=events)
    [_, lapsed] = of_type(events, MappingFailed)
    assert lapsed.mapping.external_port is None
    assert lapsed.result is None
    assert lapsed.retry_at >= granted.expires_at  # a retry is under way or to come
    assert client.mappings()[0].external_port is None
    # The gateway answers again: a later retry (the back-off doubled: 120 s after the one
    # under way times out) maps the port anew.
    gateway.silent = False
    run(client, gateway, granted.expires_at + 0.001, 800.0, events=events)
    assert of_type(events, PortMapped)[-1].mapping.external_port == 6881


@pytest.mark.parametrize("short", [False, True], ids=["full", "short"])
@pytest.mark.parametrize(
    ("result", "own_wait"),
    [
        (NatPmpResult.NETWORK_FAILURE, NATPMP_RETRY_MIN * 8),
        (NatPmpResult.OUT_OF_RESOURCES, NATPMP_RETRY_MIN * 8),
        (NatPmpResult.NOT_AUTHORIZED, NATPMP_RETRY_MAX),
        (NatPmpResult.UNSUPPORTED_OPCODE, NATPMP_RETRY_MAX),
        (77, NATPMP_RETRY_MAX),
    ],
)
def test_a_refused_renewal_keeps_the_grant_till_it_runs_out(
    result: int, own_wait: float, short: bool
) -> None:
    """No nonce proves a NAT-PMP refusal: whatever its code, it never ends the grant
    standing (libtorrent leaves the session's port as it was too). The renewal is asked again
    as after silence; the grant lapses when it runs out, then the refusal's own wait holds."""
    gateway = FakeGateway()
    client = new_client((TCP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    [granted] = client.mappings()
    assert granted.expires_at is not None
    gateway.refuse = result
    gateway.short_errors = short
    events: list[NatPmpEvent] = []
    # Refused at ~300 s, asked again 60 s later, then 120 s, 240 s: each refusal leaves the
    # grant (until ~600 s) standing.
    run(client, gateway, 1.0, granted.expires_at - 0.001, events=events)
    refused = of_type(events, MappingFailed)
    asked = [t for t, _ in mapping_requests(gateway)[1:]]  # after the first grant
    waits = [round(f.retry_at - t) for f, t in zip(refused, asked, strict=True)]
    assert waits == [NATPMP_RETRY_MIN, NATPMP_RETRY_MIN * 2, NATPMP_RETRY_MIN * 4]
    assert all(f.result == result and f.mapping.external_port == 6881 for f in refused)
    assert client.mappings()[0].external_port == 6881
    # It lapses when it runs out, unrenewed; the next refusal has its own code's wait.
    run(client, gateway, granted.expires_at - 0.001, 2000.0, events=events)
    lapsed, again = of_type(events, MappingFailed)[3:5]
    assert (lapsed.result, lapsed.mapping.external_port) == (None, None)
    assert again.result == result
    asked_again = mapping_requests(gateway)[4][0]  # the first after the lapse
    assert again.retry_at - asked_again == pytest.approx(own_wait, abs=0.1)
    assert client.mappings()[0].external_port is None


def test_a_single_forged_refusal_costs_one_request_and_keeps_the_mapping() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    [granted] = client.mappings()
    assert granted.expires_at is not None
    renewal_at = granted.expires_at - 300  # halfway
    forged_at = renewal_at + 0.005  # the renewal is out, its answer 5 ms away

    def forge(now: float) -> None:
        assert mapping_requests(gateway)[-1][0] == renewal_at  # in flight
        # Right opcode, port and epoch, to our port: a forger beats the gateway's answer.
        forged = MappingResponse(
            TCP, NatPmpResult.NOT_AUTHORIZED, gateway.epoch(now), 6881, 0, 0
        ).encode()
        client.receive_datagram(forged, GATEWAY_ADDRESS, now)

    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, forged_at + 1.0, events=events, at={forged_at: forge})
    [failed] = of_type(events, MappingFailed)
    assert failed.result == NatPmpResult.NOT_AUTHORIZED
    assert failed.mapping.external_port == 6881
    assert failed.mapping.expires_at == granted.expires_at
    assert failed.retry_at == pytest.approx(forged_at + NATPMP_RETRY_MIN)
    assert client.mappings()[0].external_port == 6881
    assert client.statistics().unexpected == 1  # the gateway's own answer, now late
    # The renewal asked again is granted: the forgery cost one request, and nothing else.
    sent = len(mapping_requests(gateway))
    run(client, gateway, forged_at + 1.0, forged_at + NATPMP_RETRY_MIN + 1.0, events=events)
    assert len(mapping_requests(gateway)) == sent + 1
    [renewed] = client.mappings()
    assert renewed.external_port == 6881
    assert renewed.expires_at is not None
    assert renewed.expires_at > granted.expires_at
    assert len(of_type(events, MappingFailed)) == 1
    assert not of_type(events, PortMapped)  # the same port all along: nothing to tell


@pytest.mark.parametrize("short", [False, True], ids=["full", "short"])
def test_a_forged_refusal_with_an_old_epoch_keeps_the_grant(short: bool) -> None:
    """A refusal's SSSoE is no more proven than the refusal: a forger's 0 would read as a
    reboot (RFC 3.6), ending the grant the refusal itself may not end (and every other one
    kept through a failed renewal). It is not taken; the next grant's is checked as ever."""
    gateway = FakeGateway()
    client = new_client((TCP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    [granted] = client.mappings()
    assert granted.expires_at is not None
    first_at = granted.expires_at - 300 + 0.005  # the renewal is out, its answer 5 ms away
    second_at = first_at + NATPMP_RETRY_MIN + 0.005  # its retry is out

    def forge(now: float) -> None:
        if short:
            forged = NatPmpErrorResponse(128 | TCP, NatPmpResult.NOT_AUTHORIZED, 0).encode()
        else:
            forged = MappingResponse(TCP, NatPmpResult.NOT_AUTHORIZED, 0, 6881, 0, 0).encode()
        client.receive_datagram(forged, GATEWAY_ADDRESS, now)

    events: list[NatPmpEvent] = []
    run(
        client, gateway, 1.0, second_at + 1.0, events=events, at={first_at: forge, second_at: forge}
    )
    assert not of_type(events, GatewayReset)
    first, second = of_type(events, MappingFailed)
    assert [f.mapping.external_port for f in (first, second)] == [6881, 6881]
    assert second.retry_at == pytest.approx(second_at + 2 * NATPMP_RETRY_MIN)
    assert client.mappings()[0].expires_at == granted.expires_at
    # The retry is granted: the gateway's SSSoE, judged against the last one taken, is no
    # reset either.
    run(client, gateway, second_at + 1.0, second.retry_at + 1.0, events=events)
    assert client.statistics().gateway_resets == 0
    [renewed] = client.mappings()
    assert renewed.external_port == 6881
    assert renewed.expires_at is not None
    assert renewed.expires_at > granted.expires_at


def mapping_requests(gateway: FakeGateway) -> list[tuple[float, MappingRequest]]:
    return [(t, r) for t, r in gateway.requests if isinstance(r, MappingRequest)]


def test_a_gateway_reset_asks_a_grant_kept_through_failed_renewals_again_at_once() -> None:
    """A real reboot lost our mappings: a grant kept through failed renewals is asked again
    with the others after RFC 3.7's random delay (not after its back-off), and stays shown
    until granted again (a reset may be forged: it ends no grant)."""
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    gateway.silent_mappings = True  # the address is answered, the renewals are not
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 450.0, events=events)
    kept = client.mappings()
    assert all(m.external_port == 6881 for m in kept)
    backed_off = of_type(events, MappingFailed)[-1].retry_at
    assert backed_off > 460.0  # the retries would wait
    gateway.reboot(450.0)
    gateway.silent_mappings = False
    client.receive_announcement(gateway.announcement(450.0), GATEWAY_ADDRESS, 450.0)
    assert not of_type(events, GatewayReset)  # a hint: the answer tells, not the announcement
    failed = len(of_type(events, MappingFailed))
    run(client, gateway, 450.0, 450.015, events=events)  # the address asked at once
    assert gateway.requests[-1] == (450.0, ExternalAddressRequest())
    assert of_type(events, GatewayReset)
    assert len(of_type(events, MappingFailed)) == failed  # nothing lapsed
    assert client.mappings() == kept
    # Made again within RFC 3.7's random delay, not after the back-off.
    run(client, gateway, 450.015, 450.0 + NATPMP_RESET_DELAY_MAX + 0.1, events=events)
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}
    assert all(m.external_port == 6881 for m in client.mappings())
    assert all(m.expires_at is not None and m.expires_at > 1000 for m in client.mappings())


@pytest.mark.parametrize("forged", ["address", "mapping"])
def test_a_forged_reset_keeps_grants_kept_through_failed_renewals(forged: str) -> None:
    """No NAT-PMP answer is proven: a success to the mapping request in flight, or an
    address answer while one is asked, is forged as easily as a refusal, its SSSoE 0 read as
    a reboot. The reset ends no grant (the review's proof lapsed both at once): each is
    asked again, and runs out at its own expiry."""
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    gateway.silent = True
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 500.0, events=events)
    kept = client.mappings()
    assert [(m.external_port, m.expires_at) for m in kept] == [(6881, 600.02), (6881, 600.03)]
    t = client.next_deadline()
    assert t is not None
    client.handle_timer(t)
    [(data, _)] = client.datagrams_to_send(t)
    assert decode_natpmp_request(data) == ExternalAddressRequest()
    answer: ExternalAddressResponse | MappingResponse
    answer = ExternalAddressResponse(NatPmpResult.SUCCESS, 0, EXTERNAL)
    if forged == "mapping":
        # The gateway's own answer to the address request; the forger answers the mapping
        # request that follows.
        real = ExternalAddressResponse(NatPmpResult.SUCCESS, gateway.epoch(t), EXTERNAL)
        client.receive_datagram(real.encode(), GATEWAY_ADDRESS, t + 0.005)
        [(data, _)] = client.datagrams_to_send(t + 0.005)
        assert decode_natpmp_request(data) == MappingRequest(TCP, 6881, 6881, 600)
        answer = MappingResponse(TCP, NatPmpResult.SUCCESS, 0, 6881, 6881, 600)
    client.receive_datagram(answer.encode(), GATEWAY_ADDRESS, t + 0.01)
    run(client, gateway, t + 0.01, 600.0, events=events)
    [reset] = of_type(events, GatewayReset)
    assert reset.epoch == 0
    assert all(f.mapping.external_port == 6881 for f in of_type(events, MappingFailed))
    assert [m.external_port for m in client.mappings()] == [6881, 6881]
    asked = [at for at, _ in mapping_requests(gateway) if at > t]
    assert asked[0] <= t + 0.01 + NATPMP_RESET_DELAY_MAX
    # Unrenewed (the gateway is silent), each kept grant lapses at its own expiry.
    run(client, gateway, 600.0, 600.1, events=events)
    lapsed = [f.mapping.mapping_id for f in of_type(events, MappingFailed)[-2:]]
    if forged == "address":
        assert lapsed == [kept[0].mapping_id, kept[1].mapping_id]
        assert [m.external_port for m in client.mappings()] == [None, None]
    else:  # the forged grant stands, as a real one would
        assert lapsed[-1] == kept[1].mapping_id
        assert [m.external_port for m in client.mappings()] == [6881, None]


@dataclass
class ForgedEpochs(FakeGateway):
    """While ``forging``, every answer carries a lower SSSoE than the one before it: a
    forger answering each request first (no NAT-PMP answer is proven), each answer read as a
    reset. Off, the gateway's own SSSoE."""

    forging: bool = True

    def epoch(self, now: float) -> int:
        if self.forging:
            return 1_000_000 - 10 * len(self.requests)
        return super().epoch(now)


def test_forged_resets_recreate_the_mappings_once_a_minute_at_most() -> None:
    """Every answer a reset (a forger's falling SSSoEs) for ten minutes: each used to bring
    every mapping forward within 0 to 5 s, a request per mapping every few seconds for as
    long as the forger liked. Now a reset while a recreation is pending joins it, one after
    it waits for NATPMP_RESET_INTERVAL's end: a recreation a minute at most. A real reboot
    is still recovered at once, or at the interval's end when a reset came just before."""
    gateway = ForgedEpochs()
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 600.0, events=events)
    resets = of_type(events, GatewayReset)
    assert len(resets) >= 600 / NATPMP_RESET_INTERVAL  # read as resets all along
    recreations = 600 / NATPMP_RESET_INTERVAL + 1
    for protocol in (TCP, UDP):
        times = [t for t, r in mapping_requests(gateway) if r.protocol is protocol]
        assert len(times) <= recreations + 1  # the first request besides
        assert all(b - a >= NATPMP_RESET_INTERVAL - 0.1 for a, b in itertools.pairwise(times[1:]))
    assert len(gateway.times(ExternalAddressRequest)) <= recreations + 1
    assert [m.external_port for m in client.mappings()] == [6881, 6881]

    # The forger gone (its last SSSoE judges the gateway's own, a reset too), then a real
    # reboot more than the interval later: recovered at once.
    gateway.forging = False
    run(client, gateway, 600.0, 700.0, events=events)
    reboot = 800.0
    gateway.reboot(reboot)
    client.receive_announcement(gateway.announcement(reboot), GATEWAY_ADDRESS, reboot)
    run(client, gateway, reboot, reboot + NATPMP_RESET_DELAY_MAX + 0.1, events=events)
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}
    recreated = max(gateway.times(MappingRequest))
    # It reboots again just after: held to the interval's end, not lost till the renewal.
    again = recreated + 10.0
    gateway.reboot(again)
    client.receive_announcement(gateway.announcement(again), GATEWAY_ADDRESS, again)
    run(client, gateway, again, again + 1.0, events=events)
    assert gateway.mappings == {}
    run(client, gateway, again + 1.0, recreated + NATPMP_RESET_INTERVAL + 1.0, events=events)
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}


def test_a_refused_deletion_has_its_epoch_not_taken() -> None:
    """A NAT-PMP refusal of a deletion is a refusal of a mapping request, no more proven
    than a refusal of a mapping: its SSSoE is not read (a forger's 0 is no reset)."""
    gateway = FakeGateway(refuse_deletion=NatPmpResult.NOT_AUTHORIZED)
    client = new_client((TCP, 6881), (UDP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    tcp, udp = client.mappings()
    client.remove_mapping(tcp.mapping_id, now=100.0)
    [(data, _)] = client.datagrams_to_send(100.0)
    assert decode_natpmp_request(data) == MappingRequest(TCP, 6881, 0, 0)
    forged = MappingResponse(TCP, NatPmpResult.NOT_AUTHORIZED, 0, 6881, 0, 0).encode()
    client.receive_datagram(forged, GATEWAY_ADDRESS, 100.01)
    events: list[NatPmpEvent] = []
    while (event := client.next_event()) is not None:
        events.append(event)
    assert [type(e) for e in events] == [MappingRemoved]
    stats = client.statistics()
    assert (stats.gateway_resets, stats.received) == (0, 4)  # address, 2 grants, refusal
    assert client.mappings() == (udp,)
    deadline = client.next_deadline()  # no renewal brought forward, nor the address request
    assert deadline is not None
    assert deadline > 200.0


def test_an_expired_mapping_is_removed_without_deletion() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), lifetime=60)
    run(client, gateway, 0.0, 1.0)
    gateway.silent = True
    run(client, gateway, 1.0, 100.0)  # the renewal at 30 s still retransmitted; expired at 60
    sent = len(gateway.requests)
    events: list[NatPmpEvent] = []
    client.remove_mapping(client.mappings()[0].mapping_id, now=100.0)
    run(client, gateway, 100.0, 200.0, events=events)
    assert len(gateway.requests) == sent  # RFC 3.1: no deletion past the natural expiry
    [removed] = of_type(events, MappingRemoved)
    assert removed.result is None


# -- what is not ours --------------------------------------------------------------------------


def test_answers_from_elsewhere_are_ignored_and_counted() -> None:
    client = new_client((TCP, 6881))
    client.datagrams_to_send(0.0)
    answer = ExternalAddressResponse(0, 100, IPv4Address("6.6.6.6")).encode()
    client.receive_datagram(answer, PeerAddress(IPv4Address("192.168.1.2"), 5351), 0.1)
    client.receive_datagram(answer, PeerAddress(GATEWAY, 5350), 0.1)
    client.receive_datagram(answer, PeerAddress(IPv4Address("127.0.0.1"), 5351), 0.1)
    assert client.statistics().wrong_source == 3
    assert client.external_address is None
    assert client.next_event() is None


def test_garbage_and_unrelated_answers_are_ignored_and_counted() -> None:
    client = new_client((TCP, 6881))
    run(client, FakeGateway(), 0.0, 0.015)  # the mapping request in flight
    for data in (b"", b"\xff" * 16, b"\x00\x82\x00"):
        client.receive_datagram(data, GATEWAY_ADDRESS, 0.02)
    # Well formed but answering nothing in flight: another port, another protocol.
    for response in (
        MappingResponse(TCP, 0, 1001, 6882, 6882, 3600),
        MappingResponse(UDP, 0, 1001, 6881, 6881, 3600),
        NatPmpErrorResponse(129, 3, 1001),
    ):
        client.receive_datagram(response.encode(), GATEWAY_ADDRESS, 0.02)
    # A success that makes no sense: no port, no lifetime.
    for response in (
        MappingResponse(TCP, 0, 1001, 6881, 0, 3600),
        MappingResponse(TCP, 0, 1001, 6881, 6881, 0),
    ):
        client.receive_datagram(response.encode(), GATEWAY_ADDRESS, 0.02)
    stats = client.statistics()
    assert (stats.malformed, stats.unexpected) == (5, 3)
    assert client.mappings()[0].external_port is None
    client.receive_datagram(
        MappingResponse(TCP, 0, 1001, 6881, 6881, 3600).encode(), GATEWAY_ADDRESS, 0.03
    )
    assert client.mappings()[0].external_port == 6881


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 200),
            st.binary(max_size=20)
            | st.sampled_from(
                [
                    MappingResponse(TCP, 0, 0, 6881, 6881, 1).encode(),
                    MappingResponse(UDP, 3, 0, 6881, 0, 0).encode(),
                    ExternalAddressResponse(0, 0, EXTERNAL).encode(),
                    NatPmpErrorResponse(0, 1, 0).encode(),
                    NatPmpErrorResponse(130, 5, 9).encode(),
                ]
            ),
        ),
        max_size=20,
    )
)
def test_hostile_datagrams_never_crash_and_mappings_survive(
    noise: list[tuple[float, bytes]],
) -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), (UDP, 6881))

    def deliver(data: bytes) -> Callable[[float], None]:
        return lambda now: client.receive_datagram(data, GATEWAY_ADDRESS, now)

    actions = {t: deliver(d) for t, d in noise}
    run(client, gateway, 0.0, 200.0, at=actions)
    # Whatever the noise did, the gateway's own answers win within a retry round.
    run(client, gateway, 200.0, 4000.0)
    assert [m.external_port for m in client.mappings()] == [6881, 6881]
    assert client.external_address == EXTERNAL


# -- the API -----------------------------------------------------------------------------------


def test_bad_arguments_raise_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        NatPmpClient("192.168.1.1")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        NatPmpClient(GATEWAY, lifetime=0)
    with pytest.raises(LocalProtocolError):
        NatPmpClient(GATEWAY, port=0)
    client = new_client((TCP, 6881))
    for protocol, port, external in (
        (TCP, 6881, None),
        (TCP, 0, None),
        (TCP, 70000, None),
        (TCP, 1, -1),
        ("tcp", 1, None),
    ):
        with pytest.raises(LocalProtocolError):
            client.add_mapping(protocol, port, now=0.0, external_port=external)  # type: ignore[arg-type]
    client.add_mapping(UDP, 6881, now=0.0)  # another protocol: fine
    for port in range(2, NATPMP_MAX_MAPPINGS):
        client.add_mapping(TCP, port, now=0.0)
    with pytest.raises(LocalProtocolError):
        client.add_mapping(TCP, 9999, now=0.0)


def test_logs_few_lines_a_user_wants(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake.natpmp")
    gateway = FakeGateway(taken={6881})
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 2000.0)  # a renewal included: silent
    gateway.refuse = NatPmpResult.NOT_AUTHORIZED
    client.add_mapping(UDP, 6881, now=2000.0)
    run(client, gateway, 2000.0, 2001.0)
    gateway.silent = True
    run(client, gateway, 2001.0, 3800.0)  # the next renewals go unanswered
    infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert infos == [
        "NAT-PMP gateway 192.168.1.1:5351: our external address is 203.0.113.7",
        "NAT-PMP gateway 192.168.1.1:5351 maps TCP port 6881 to external port 6882 for 3600 s",
        "NAT-PMP gateway 192.168.1.1:5351 refused to map UDP port 6881: NOT_AUTHORIZED;"
        " retrying in 3600 s",
        "NAT-PMP gateway 192.168.1.1:5351 did not answer 9 requests",
    ]
