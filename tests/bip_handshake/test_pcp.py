"""PCP (RFC 6887): the codec, and the client core's version negotiation and PCP rules against
a fake gateway on virtual time (or fed by hand)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import TypeVar

import pytest
from _natpmp_gateway import CLIENT, EXTERNAL, GATEWAY, GATEWAY_ADDRESS, FakeGateway, run
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake._errors import LocalProtocolError, RemoteProtocolError
from bip_handshake._natpmp import (
    NATPMP_HINT_INTERVAL,
    NATPMP_RESET_INTERVAL,
    NATPMP_RETRY_MAX,
    NATPMP_RETRY_MIN,
    PCP_PROBE_ATTEMPTS,
    ExternalAddressRequest,
    ExternalAddressResponse,
    GatewayProtocol,
    GatewayReset,
    MappingFailed,
    MappingProtocol,
    MappingRemoved,
    MappingRequest,
    MappingResponse,
    NatPmpAddressChanged,
    NatPmpAddressFailed,
    NatPmpClient,
    NatPmpErrorResponse,
    NatPmpEvent,
    PortMapped,
    decode_natpmp_request,
)
from bip_handshake._pcp import (
    PCP_MAX_MESSAGE,
    PcpAnnounceResponse,
    PcpError,
    PcpErrorResponse,
    PcpMapRequest,
    PcpMapResponse,
    PcpOption,
    PcpResponse,
    PcpResult,
    decode_pcp_request,
    decode_pcp_response,
)

TCP, UDP = MappingProtocol.TCP, MappingProtocol.UDP
NONCE = bytes(range(1, 13))

T = TypeVar("T")


def new_client(*ports: tuple[MappingProtocol, int], lifetime: int = 3600) -> NatPmpClient:
    client = NatPmpClient(GATEWAY, lifetime=lifetime, rng=random.Random(7), client_address=CLIENT)
    for protocol, port in ports:
        client.add_mapping(protocol, port, now=0.0)
    return client


def of_type(events: list[NatPmpEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def drain(client: NatPmpClient) -> list[NatPmpEvent]:
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    return events


def sent_request(client: NatPmpClient, now: float) -> PcpMapRequest:
    [(data, _)] = client.datagrams_to_send(now)
    return decode_pcp_request(data)


def answer(
    request: PcpMapRequest,
    *,
    result: int = 0,
    lifetime: int | None = None,
    epoch: int = 1000,
    port: int | None = None,
    address: IPv4Address | IPv6Address = EXTERNAL,
    nonce: bytes | None = None,
) -> bytes:
    return PcpMapResponse(
        result,
        request.lifetime if lifetime is None else lifetime,
        epoch,
        request.nonce if nonce is None else nonce,
        request.protocol,
        request.internal_port,
        request.suggested_external_port if port is None else port,
        address,
    ).encode()


def protocol(client: NatPmpClient) -> GatewayProtocol | None:
    # Read through a call: mypy would narrow the property across the client's calls.
    return client.protocol


def stale(client: NatPmpClient) -> bool:
    return client.client_address_stale


def pcp_requests(gateway: FakeGateway) -> list[tuple[float, PcpMapRequest]]:
    return [(t, r) for t, r in gateway.requests if isinstance(r, PcpMapRequest)]


# -- codec -------------------------------------------------------------------------------------

MAP_REQUEST = bytes.fromhex(
    "02010000"
    "00000e10"
    "00000000000000000000ffffc0a80105"  # header: lifetime, client IP
    "0102030405060708090a0b0c"
    "06000000"
    "1ae1"
    "1ae1"  # nonce, TCP, ports
    "00000000000000000000ffff00000000"  # no address suggested
)


def test_wire_format_is_rfc_6887() -> None:
    request = PcpMapRequest(3600, CLIENT, NONCE, TCP, 6881, 6881, IPv4Address(0))
    assert request.encode() == MAP_REQUEST
    assert decode_pcp_request(MAP_REQUEST) == request
    response = bytes.fromhex(
        "02810000"
        "00000e10"
        "000003e8"
        "000000000000000000000000"  # R, lifetime, epoch
        "0102030405060708090a0b0c"
        "11000000"
        "1ae1"
        "9c40"  # nonce, UDP (17), ports
        "00000000000000000000ffffcb007107"
    )
    assert decode_pcp_response(response) == PcpMapResponse(
        PcpResult.SUCCESS, 3600, 1000, NONCE, UDP, 6881, 40000, EXTERNAL
    )
    announce = bytes.fromhex("028000000000000000000005") + bytes(12)
    assert decode_pcp_response(announce) == PcpAnnounceResponse(0, 0, 5)


nonces = st.binary(min_size=12, max_size=12)
ports = st.integers(0, 0xFFFF)
uint32 = st.integers(0, 0xFFFF_FFFF)
protocols = st.sampled_from(MappingProtocol)
addresses = st.builds(IPv4Address, uint32) | st.builds(IPv6Address, st.integers(0, 2**128 - 1))
opcodes = st.integers(1, 127)  # 0 with version 2 is ANNOUNCE's (its own class)
options = st.lists(
    st.builds(PcpOption, st.integers(0, 255), st.binary(max_size=9)), max_size=4
).map(tuple)


@given(
    st.builds(PcpMapRequest, uint32, addresses, nonces, protocols, ports, ports, addresses, options)
)
def test_requests_round_trip(request: PcpMapRequest) -> None:
    encoded = request.encode()
    assert len(encoded) % 4 == 0
    assert decode_pcp_request(encoded) == request


@given(
    st.builds(
        PcpMapResponse,
        st.integers(0, 255),
        uint32,
        uint32,
        nonces,
        protocols,
        ports,
        ports,
        addresses,
        options,
    )
    | st.builds(PcpAnnounceResponse, st.integers(0, 255), uint32, uint32, options)
    | st.builds(PcpErrorResponse, st.just(2), opcodes, st.integers(1, 255), uint32, uint32)
    | st.builds(
        # Another version's UNSUPP_VERSION (version 2's are the builder above: with opcode 0
        # one is an ANNOUNCE response, its own class, so it would not round-trip as this).
        PcpErrorResponse,
        st.integers(0, 255).filter(lambda version: version != 2),
        st.integers(0, 127),
        st.just(1),
        uint32,
        uint32,
    )
)
def test_responses_round_trip(response: PcpResponse) -> None:
    assert decode_pcp_response(response.encode()) == response


def test_ipv4_mapped_ipv6_addresses_are_ipv4() -> None:
    mapped = IPv6Address("::ffff:192.168.1.5")
    request = PcpMapRequest(1, mapped, NONCE, TCP, 1, 1, IPv6Address("::ffff:0:0"))
    assert request.client_address == CLIENT
    assert request.suggested_external_address == IPv4Address(0)
    assert decode_pcp_request(request.encode()) == request


def test_result_codes_are_named_and_unknown_kept() -> None:
    assert [code.value for code in PcpResult] == list(range(14))
    assert PcpResult(13).name == "EXCESSIVE_REMOTE_PEERS"
    unknown = PcpMapResponse(99, 0, 0, NONCE, TCP, 1, 0, IPv4Address(0))
    response = decode_pcp_response(unknown.encode())
    assert response.result == 99
    assert not isinstance(response.result, PcpResult)


def test_options_are_walked_by_their_length_and_padding() -> None:
    kept = (PcpOption(1, b"\x01\x02\x03"), PcpOption(130), PcpOption(0x80, bytes(5)))
    response = PcpMapResponse(0, 60, 7, NONCE, TCP, 1, 2, EXTERNAL, kept)
    encoded = response.encode()
    assert len(encoded) == 60 + 8 + 4 + 12
    assert decode_pcp_response(encoded).options == kept  # type: ignore[union-attr]


MAP_ANSWER = PcpMapResponse(0, 60, 7, NONCE, TCP, 1, 2, EXTERNAL).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        MAP_ANSWER[:23],  # shorter than the header
        MAP_ANSWER + PcpOption(1, bytes(1100)).encode()[: PCP_MAX_MESSAGE - 60 + 4],  # > 1100
        bytes([2, 1]) + MAP_ANSWER[2:],  # no R bit: a request
        bytes([3]) + MAP_ANSWER[1:],  # another version, succeeding
        bytes([1]) + MAP_ANSWER[1:3] + b"\x02" + MAP_ANSWER[4:],  # another version, refusing
        MAP_ANSWER[:59],  # a success too short for the MAP body
        bytes([2, 0x82]) + MAP_ANSWER[2:24],  # PEER: an opcode we do not use, succeeding
        MAP_ANSWER[:36] + b"\x00" + MAP_ANSWER[37:],  # protocol 0 (all)
        MAP_ANSWER + bytes((1, 0, 0, 9)) + bytes(4),  # an option overrunning the message
        MAP_ANSWER + bytes(3),  # stray bytes after the body
    ],
)
def test_malformed_responses_raise_our_error(data: bytes) -> None:
    with pytest.raises(PcpError):
        decode_pcp_response(data)
    assert issubclass(PcpError, RemoteProtocolError)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        MAP_REQUEST[:59],
        b"\x00" + MAP_REQUEST[1:],  # NAT-PMP's version
        b"\x02\x81" + MAP_REQUEST[2:],  # a response
        b"\x02\x00" + bytes(22),  # ANNOUNCE: not a request we decode
    ],
)
def test_malformed_requests_raise_our_error(data: bytes) -> None:
    with pytest.raises(PcpError):
        decode_pcp_request(data)


@given(st.binary(max_size=90) | st.binary(min_size=1090, max_size=1110))
def test_arbitrary_bytes_decode_or_raise_our_error(data: bytes) -> None:
    for decode in (decode_pcp_response, decode_pcp_request):
        with contextlib.suppress(PcpError):
            decode(data)
    with contextlib.suppress(PcpError):
        decode_pcp_response(MAP_ANSWER + data[: PCP_MAX_MESSAGE - 60])  # as options


BIG_OPTION = PcpOption(1, bytes(1100))


@pytest.mark.parametrize(
    "build",
    [
        lambda: PcpMapRequest(1, CLIENT, bytes(11), TCP, 1, 1, IPv4Address(0)),
        lambda: PcpMapRequest(1, "192.168.1.5", NONCE, TCP, 1, 1, IPv4Address(0)),  # type: ignore[arg-type]
        lambda: PcpMapRequest(1, CLIENT, NONCE, 6, 1, 1, IPv4Address(0)),  # type: ignore[arg-type]
        lambda: PcpMapRequest(1 << 32, CLIENT, NONCE, TCP, 1, 1, IPv4Address(0)),
        lambda: PcpMapRequest(1, CLIENT, NONCE, TCP, 1, 1, IPv4Address(0), [PcpOption(1)]),  # type: ignore[arg-type]
        lambda: PcpMapRequest(1, CLIENT, NONCE, TCP, 1, 1, IPv4Address(0), (BIG_OPTION,)),
        lambda: PcpMapResponse(256, 0, 0, NONCE, TCP, 1, 1, EXTERNAL),
        lambda: PcpMapResponse(0, 0, 0, NONCE, TCP, 70000, 1, EXTERNAL),
        lambda: PcpAnnounceResponse(0, 0, -1),
        lambda: PcpErrorResponse(2, 1, 0, 0, 0),
        lambda: PcpErrorResponse(2, 128, 1, 0, 0),
        lambda: PcpOption(256),
        lambda: PcpOption(1, "data"),  # type: ignore[arg-type]
    ],
)
def test_bad_message_fields_raise_local_error(build: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError):
        build()


# -- version negotiation -----------------------------------------------------------------------


def test_a_pcp_gateway_is_talked_to_in_pcp() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), (UDP, 6881))
    assert client.statistics().protocol is None
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 10.0, events=events)
    assert client.protocol == "pcp"
    assert client.statistics().protocol == "pcp"
    requests = [r for _, r in gateway.requests]
    assert all(isinstance(r, PcpMapRequest) for r in requests)  # no address request
    tcp, udp = pcp_requests(gateway)
    assert (tcp[1].protocol, udp[1].protocol) == (TCP, UDP)
    assert tcp[1].client_address == CLIENT
    assert tcp[1].nonce != udp[1].nonce  # a nonce of its own per mapping
    assert tcp[1].suggested_external_address == IPv4Address(0)
    assert udp[1].suggested_external_address == EXTERNAL  # learnt from the first answer
    # The address comes with the MAP answer, before the port is told.
    assert events[:2] == [NatPmpAddressChanged(EXTERNAL), events[1]]
    assert [(e.mapping.protocol, e.mapping.external_port) for e in of_type(events, PortMapped)] == [
        (TCP, 6881),
        (UDP, 6881),
    ]
    assert client.external_address == EXTERNAL
    assert gateway.nonces == {(TCP, 6881): tcp[1].nonce, (UDP, 6881): udp[1].nonce}


def test_a_natpmp_gateway_saying_unsupported_version_means_natpmp_at_once() -> None:
    gateway = FakeGateway()  # RFC 6886 3.5: answers version 2 with its "unsupported version"
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    assert client.protocol == "natpmp"
    kinds = [type(r) for _, r in gateway.requests]
    assert kinds == [PcpMapRequest, ExternalAddressRequest, MappingRequest]
    assert gateway.times()[1] == pytest.approx(0.01)  # one round trip
    assert client.mappings()[0].external_port == 6881
    assert not of_type(events, MappingFailed)


def test_pcp_unsupp_version_naming_version_0_means_natpmp() -> None:
    client = new_client((UDP, 6881))
    sent_request(client, 0.0)
    # PCP's own layout (24 bytes) with the version field 0: bytes 2-3 are NAT-PMP's result 1.
    client.receive_datagram(
        PcpErrorResponse(0, 1, PcpResult.UNSUPP_VERSION, 0, 10).encode(), GATEWAY_ADDRESS, 0.01
    )
    assert client.protocol == "natpmp"
    [(data, _)] = client.datagrams_to_send(0.01)
    assert decode_natpmp_request(data) == ExternalAddressRequest()


def test_a_gateway_silent_to_pcp_gets_natpmp_within_two_seconds() -> None:
    gateway = FakeGateway(ignore_pcp=True)  # an old router drops version 2
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 5.0, events=events)
    probes = [t for t, _ in pcp_requests(gateway)]
    assert probes == pytest.approx([0.0, 0.25, 0.75])
    assert len(probes) == PCP_PROBE_ATTEMPTS
    natpmp = [(t, r) for t, r in gateway.requests if not isinstance(r, PcpMapRequest)]
    first, request = natpmp[0]
    assert first == pytest.approx(1.75)
    assert request == ExternalAddressRequest()
    assert [m.external_port for m in client.mappings()] == [6881, 6881]
    assert client.protocol == "natpmp"
    assert client.statistics().timeouts == 0
    assert not of_type(events, MappingFailed)  # the probe's silence fails nothing


def test_a_pcp_only_server_after_a_false_fallback_gets_pcp_back() -> None:
    # The probe's answers were lost (it "drops" PCP until 1 s), then NAT-PMP is answered
    # with PCP's UNSUPP_VERSION: the server speaks PCP alone.
    gateway = FakeGateway(pcp=True, natpmp=False, ignore_pcp=True)
    client = new_client((TCP, 6881))

    def hear_pcp(now: float) -> None:
        gateway.ignore_pcp = False

    run(client, gateway, 0.0, 5.0, at={1.0: hear_pcp})
    kinds = [type(r) for _, r in gateway.requests]
    assert kinds == [PcpMapRequest] * 3 + [ExternalAddressRequest, PcpMapRequest]
    assert client.protocol == "pcp"
    assert client.mappings()[0].external_port == 6881


def test_no_ping_pong_with_a_gateway_refusing_both_versions() -> None:
    gateway = FakeGateway(pcp=False, natpmp=False)  # version 2 -> "use 0", version 0 -> "use 2"
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 100.0, events=events)
    # The probe falls back; each NAT-PMP request is then refused, for the long wait.
    kinds = [type(r) for _, r in gateway.requests]
    assert kinds == [PcpMapRequest, ExternalAddressRequest, MappingRequest]
    [address] = of_type(events, NatPmpAddressFailed)
    [failed] = of_type(events, MappingFailed)
    assert failed.result == address.result == PcpResult.UNSUPP_VERSION
    assert failed.retry_at == pytest.approx(0.03 + NATPMP_RETRY_MAX)
    assert client.protocol == "natpmp"
    assert not of_type(events, PortMapped)


def test_pcp_is_tried_again_after_the_long_retry_and_after_a_reset() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 3000.0)
    assert len(pcp_requests(gateway)) == 1  # the renewal at 1800 s went NAT-PMP
    run(client, gateway, 3000.0, 3700.0)  # the renewal at ~3600 s probes PCP first
    [_, (again, _)] = pcp_requests(gateway)
    assert 3600 <= again <= 3601
    assert client.protocol == "natpmp"
    # The gateway reboots and says so: PCP is probed again at the recreation.
    gateway.reboot(3700.0)
    client.receive_datagram(gateway.announcement(3700.0), GATEWAY_ADDRESS, 3700.0)
    run(client, gateway, 3700.0, 3710.0)
    assert 3700 <= pcp_requests(gateway)[-1][0] <= 3705
    assert client.protocol == "natpmp"
    assert client.mappings()[0].external_port == 6881


def test_closing_after_the_long_retry_deletes_without_probing() -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), lifetime=10_000)  # no renewal before 5000 s
    run(client, gateway, 0.0, 1.0)
    client.close(4000.0)  # PCP would be tried again by now, but a close goes the known way
    [(deletion, _)] = client.datagrams_to_send(4000.0)
    assert decode_natpmp_request(deletion) == MappingRequest(TCP, 6881, 0, 0)
    assert client.protocol == "natpmp"


def test_a_pcp_gateway_gone_silent_is_probed_again() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    # Swapped for an old router at the same address: it drops PCP, speaks NAT-PMP.
    gateway.pcp, gateway.ignore_pcp = False, True
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 700.0, events=events)
    # The renewal (~300-375 s) times out after nine sends; its retry probes, falls back.
    assert client.statistics().timeouts == 1
    assert client.protocol == "natpmp"
    [mapping] = client.mappings()
    assert mapping.external_port == 6881
    assert mapping.expires_at is not None
    assert mapping.expires_at > 600  # granted anew in NAT-PMP before the old grant ran out
    assert isinstance(gateway.requests[-1][1], MappingRequest)


def test_pcp_off_speaks_natpmp_alone() -> None:
    client = NatPmpClient(GATEWAY, pcp=False)
    assert client.protocol == "natpmp"
    client.add_mapping(TCP, 6881, now=0.0)
    [(data, _)] = client.datagrams_to_send(0.0)
    assert decode_natpmp_request(data) == ExternalAddressRequest()
    # A PCP packet is no NAT-PMP one.
    client.receive_datagram(PcpAnnounceResponse(0, 0, 1).encode(), GATEWAY_ADDRESS, 0.01)
    assert client.statistics().malformed == 1


def test_pcp_needs_the_client_address() -> None:
    with pytest.raises(LocalProtocolError, match="client_address"):
        NatPmpClient(GATEWAY)
    with pytest.raises(LocalProtocolError, match="client_address"):
        NatPmpClient(GATEWAY, client_address=IPv4Address(0))
    with pytest.raises(LocalProtocolError):
        NatPmpClient(GATEWAY, client_address="192.168.1.5")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        NatPmpClient(GATEWAY, pcp=1, client_address=CLIENT)  # type: ignore[arg-type]


# -- PCP mappings ------------------------------------------------------------------------------


def test_renewal_falls_between_half_and_five_eighths_with_the_same_nonce() -> None:
    gateway = FakeGateway(pcp=True, max_lifetime=1000)
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 5000.0)
    requests = pcp_requests(gateway)
    assert len(requests) >= 8
    answered = [t + 0.01 for t, _ in requests]
    gaps = [b - a for a, b in zip(answered, [t for t, _ in requests[1:]], strict=False)]
    assert all(500 <= gap <= 625 for gap in gaps)
    assert len({round(gap) for gap in gaps}) > 1  # random, not always the same point
    assert {r.nonce for _, r in requests} == {requests[0][1].nonce}
    assert all(r.lifetime == 3600 for _, r in requests)
    assert client.mappings()[0].lifetime == 1000


def test_removal_is_a_map_with_lifetime_zero_and_the_same_nonce() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), (UDP, 6881))
    run(client, gateway, 0.0, 1.0)
    tcp_id = client.mappings()[0].mapping_id
    client.remove_mapping(tcp_id, now=1.0)
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 2.0, events=events)
    [removed] = of_type(events, MappingRemoved)
    assert (removed.mapping.mapping_id, removed.result) == (tcp_id, PcpResult.SUCCESS)
    (_, first), (_, deletion) = pcp_requests(gateway)[0], pcp_requests(gateway)[-1]
    assert (deletion.lifetime, deletion.nonce, deletion.protocol) == (0, first.nonce, TCP)
    assert gateway.mappings.keys() == {(UDP, 6881)}
    client.close(2.0)
    run(client, gateway, 2.0, 5000.0)
    assert client.is_closed
    assert gateway.mappings == {}


def test_closing_before_any_pcp_answer_sends_no_deletion() -> None:
    client = new_client((TCP, 6881))
    sent_request(client, 0.0)  # out, unanswered (a gateway that drops PCP, or none)
    client.close(0.1)
    assert client.is_closed
    assert client.datagrams_to_send(0.1) == []
    [removed] = of_type(drain(client), MappingRemoved)
    assert removed.result is None


def test_a_deletion_answered_unsupported_version_falls_back() -> None:
    """The gateway was swapped for a NAT-PMP one: what only PCP asked for (and was never
    granted) is on no gateway now, and goes without a deletion; a grant is deleted anew."""
    client = new_client((TCP, 6881), (UDP, 6881))
    tcp = sent_request(client, 0.0)
    client.receive_datagram(answer(tcp), GATEWAY_ADDRESS, 0.01)
    udp = sent_request(client, 0.01)
    client.receive_datagram(answer(udp, result=PcpResult.NOT_AUTHORIZED), GATEWAY_ADDRESS, 0.02)
    drain(client)
    client.close(1.0)
    assert sent_request(client, 1.0).lifetime == 0  # the TCP grant first (ours in order)
    client.receive_datagram(NatPmpErrorResponse(0, 1, 5).encode(), GATEWAY_ADDRESS, 1.01)
    assert client.protocol == "natpmp"
    [removed] = of_type(drain(client), MappingRemoved)
    assert (removed.mapping.protocol, removed.result) == (UDP, None)
    [(deletion, _)] = client.datagrams_to_send(1.01)
    assert decode_natpmp_request(deletion) == MappingRequest(TCP, 6881, 0, 0)


def test_forged_and_stale_answers_are_dropped_and_counted() -> None:
    client = new_client((TCP, 6881))
    request = sent_request(client, 0.0)
    forged = [
        answer(request, nonce=bytes(12)),  # another nonce: a forger cannot know ours
        PcpMapResponse(0, 3600, 1000, request.nonce, UDP, 6881, 6881, EXTERNAL).encode(),
        PcpMapResponse(0, 3600, 1000, request.nonce, TCP, 6882, 6882, EXTERNAL).encode(),
        PcpErrorResponse(2, 2, PcpResult.NOT_AUTHORIZED, 0, 1000).encode(),  # PEER's failure
        PcpAnnounceResponse(PcpResult.NETWORK_FAILURE, 0, 1000).encode(),
    ]
    for data in forged:
        client.receive_datagram(data, GATEWAY_ADDRESS, 0.01)
    assert client.statistics().unexpected == len(forged)
    assert client.mappings()[0].external_port is None
    client.receive_datagram(answer(request), GATEWAY_ADDRESS, 0.02)
    assert client.mappings()[0].external_port == 6881
    # Nothing in flight now: a repeat of the answer is stale.
    client.receive_datagram(answer(request), GATEWAY_ADDRESS, 0.03)
    assert client.statistics().unexpected == len(forged) + 1


def test_successes_that_make_no_sense_are_malformed() -> None:
    client = new_client((TCP, 6881))
    request = sent_request(client, 0.0)
    for data in (
        answer(request, port=0),
        answer(request, lifetime=0),
        answer(request, address=IPv4Address(0)),
        answer(request, address=IPv6Address("2001:db8::1")),  # out of scope: IPv4 alone
        b"\x02\x81" + bytes(30),  # garbled
    ):
        client.receive_datagram(data, GATEWAY_ADDRESS, 0.01)
    assert client.statistics().malformed == 5
    assert client.protocol is None  # nothing accepted as an answer


def test_a_deletion_is_not_answered_by_the_late_grant() -> None:
    client = new_client((TCP, 6881))
    request = sent_request(client, 0.0)
    client.receive_datagram(answer(request), GATEWAY_ADDRESS, 0.01)
    client.remove_mapping(client.mappings()[0].mapping_id, now=1.0)
    deletion = sent_request(client, 1.0)
    assert deletion.lifetime == 0
    client.receive_datagram(answer(request, epoch=1001), GATEWAY_ADDRESS, 1.01)  # a grant
    assert client.statistics().unexpected == 1
    client.receive_datagram(answer(deletion, epoch=1001), GATEWAY_ADDRESS, 1.02)
    assert client.mappings() == ()


def test_the_address_follows_the_map_answers() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    gateway.external = IPv4Address("198.51.100.9")
    run(client, gateway, 1.0, 5000.0, events=events)  # renewals
    assert of_type(events, NatPmpAddressChanged) == [
        NatPmpAddressChanged(EXTERNAL),
        NatPmpAddressChanged(IPv4Address("198.51.100.9")),
    ]
    assert pcp_requests(gateway)[-1][1].suggested_external_address == IPv4Address("198.51.100.9")


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (PcpResult.NETWORK_FAILURE, NATPMP_RETRY_MIN),
        (PcpResult.NO_RESOURCES, NATPMP_RETRY_MIN),
        (PcpResult.USER_EX_QUOTA, NATPMP_RETRY_MIN),
        (PcpResult.CANNOT_PROVIDE_EXTERNAL, NATPMP_RETRY_MIN),
        (PcpResult.NOT_AUTHORIZED, NATPMP_RETRY_MAX),
        (PcpResult.MALFORMED_REQUEST, NATPMP_RETRY_MAX),  # NAT-PMP's 3 would pass: not PCP's
        (PcpResult.UNSUPP_OPCODE, NATPMP_RETRY_MAX),
        (PcpResult.UNSUPP_OPTION, NATPMP_RETRY_MAX),
        (PcpResult.MALFORMED_OPTION, NATPMP_RETRY_MAX),
        (PcpResult.UNSUPP_PROTOCOL, NATPMP_RETRY_MAX),
        (PcpResult.EXCESSIVE_REMOTE_PEERS, NATPMP_RETRY_MAX),
        (99, NATPMP_RETRY_MAX),  # a code RFC 6887 does not define
    ],
)
def test_result_codes_that_may_pass_and_those_that_will_not(code: int, retry: float) -> None:
    gateway = FakeGateway(pcp=True, pcp_refuse=code, pcp_refuse_lifetime=0)
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    [failed] = of_type(events, MappingFailed)
    assert failed.result == code
    assert failed.retry_at == pytest.approx(0.01 + retry)
    assert client.protocol == "pcp"  # a refusal is a PCP answer all the same
    gateway.pcp_refuse = None
    run(client, gateway, 1.0, retry + 1.0)
    assert client.mappings()[0].external_port == 6881


def test_the_failure_lifetime_delays_the_retry_up_to_the_longest_wait() -> None:
    gateway = FakeGateway(pcp=True, pcp_refuse=PcpResult.NO_RESOURCES, pcp_refuse_lifetime=300)
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    assert of_type(events, MappingFailed)[0].retry_at == pytest.approx(300.01)
    gateway.pcp_refuse_lifetime = 1 << 31
    run(client, gateway, 1.0, 400.0, events=events)
    assert of_type(events, MappingFailed)[-1].retry_at == pytest.approx(300.02 + NATPMP_RETRY_MAX)


def test_a_renewal_refused_for_a_reason_that_may_pass_keeps_the_grant() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    gateway.pcp_refuse = PcpResult.NO_RESOURCES
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 400.0, events=events)
    assert all(f.mapping.external_port == 6881 for f in of_type(events, MappingFailed))
    gateway.pcp_refuse = PcpResult.NOT_AUTHORIZED
    run(client, gateway, 400.0, 590.0, events=events)  # the next retry, before 600 s
    last = of_type(events, MappingFailed)[-1]
    assert (last.result, last.mapping.external_port) == (PcpResult.NOT_AUTHORIZED, None)


def test_a_header_only_failure_answers_the_map_in_flight() -> None:
    client = new_client((TCP, 6881))
    sent_request(client, 0.0)
    short = PcpErrorResponse(2, 1, PcpResult.MALFORMED_REQUEST, 0, 1000)
    client.receive_datagram(short.encode(), GATEWAY_ADDRESS, 0.01)
    [failed] = of_type(drain(client), MappingFailed)
    assert failed.result == PcpResult.MALFORMED_REQUEST
    assert failed.retry_at == 0.01 + NATPMP_RETRY_MAX
    assert client.protocol == "pcp"


def test_a_version_we_do_not_speak_is_a_refusal() -> None:
    client = new_client((TCP, 6881))
    sent_request(client, 0.0)
    client.receive_datagram(
        PcpErrorResponse(1, 1, PcpResult.UNSUPP_VERSION, 0, 5).encode(), GATEWAY_ADDRESS, 0.01
    )
    [failed] = of_type(drain(client), MappingFailed)
    assert (failed.result, failed.retry_at) == (PcpResult.UNSUPP_VERSION, 0.01 + NATPMP_RETRY_MAX)
    assert client.protocol is None


# -- the epoch ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("later", "epoch_step", "reset"),
    [
        (100.0, 100, False),  # in step
        (100.0, 92, False),  # 100 - 100/16 - 2 = 91.75: slow, but within RFC 8.5's bound
        (100.0, 91, True),
        (100.0, 108, False),  # fast: 108 - 108/16 = 101.25, within 100 + 2
        (100.0, 109, True),  # 102.19
        (0.5, -1, False),  # back by one second: reordering
        (0.0, -2, True),  # back by more
    ],
)
def test_epoch_rule_of_rfc_6887(later: float, epoch_step: int, reset: bool) -> None:
    client = new_client((TCP, 6881))
    request = sent_request(client, 0.0)
    client.receive_datagram(answer(request, epoch=5000), GATEWAY_ADDRESS, 0.0)
    # An ANNOUNCE brings the renewal forward; its answer's epoch is checked.
    client.receive_announcement(PcpAnnounceResponse(0, 0, 0).encode(), GATEWAY_ADDRESS, later)
    renewal = sent_request(client, later)
    assert renewal.nonce == request.nonce
    client.receive_datagram(answer(renewal, epoch=5000 + epoch_step), GATEWAY_ADDRESS, later)
    assert client.statistics().gateway_resets == int(reset)


def test_an_announce_after_a_restart_recreates_the_mappings() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []

    def restart(now: float) -> None:
        gateway.reboot(now)
        client.receive_datagram(gateway.pcp_announcement(now), GATEWAY_ADDRESS, now)

    run(client, gateway, 0.0, 1000.0, events=events, at={900.0: restart})
    [reset] = of_type(events, GatewayReset)
    assert reset.epoch == 0
    again = [t for t, _ in pcp_requests(gateway) if t >= 900]
    assert len(again) == 2
    assert 900 <= again[0] <= 905.1  # within RFC 6886 3.7's random 0..5 s, then serially
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}
    assert client.statistics().gateway_resets == 1


def test_forged_announces_bring_renewals_forward_bounded_in_rate() -> None:
    """A forged ANNOUNCE (epoch 0: "restarted") every 3 s for 10 minutes: each is a hint
    that brings one renewal forward, at most once per NATPMP_HINT_INTERVAL; its answer,
    matched on the nonce, shows no restart. A real restart is still seen within it."""
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    nonces = dict(gateway.nonces)
    sent = len(gateway.requests)
    forged = PcpAnnounceResponse(0, 0, 0).encode()

    def forge(now: float) -> None:
        client.receive_announcement(forged, GATEWAY_ADDRESS, now)

    run(client, gateway, 1.0, 601.0, events=events, at={1.0 + 3.0 * i: forge for i in range(200)})
    renewals = [r for _, r in pcp_requests(gateway)[sent:]]
    assert len(renewals) == len(gateway.requests) - sent  # PCP alone
    assert len(renewals) <= 600 / NATPMP_HINT_INTERVAL + 1
    assert {r.nonce for r in renewals} <= set(nonces.values())
    stats = client.statistics()
    assert (stats.gateway_resets, stats.hints) == (0, len(renewals))
    assert stats.hints + stats.announcements_ignored == 200
    assert protocol(client) == "pcp"
    assert gateway.nonces == nonces
    assert not of_type(events, GatewayReset)

    def restart(now: float) -> None:
        gateway.reboot(now)
        client.receive_announcement(gateway.pcp_announcement(now), GATEWAY_ADDRESS, now)

    more: dict[float, Callable[[float], None]] = {601.0 + 3.0 * i: forge for i in range(33)}
    run(client, gateway, 601.0, 700.0, events=events, at=more | {603.5: restart})
    assert len(of_type(events, GatewayReset)) == 1
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}
    remade = [t for t, _ in pcp_requests(gateway) if t > 603.5]
    assert remade[1] <= 603.5 + NATPMP_HINT_INTERVAL + 5.0


class FallingEpochs(FakeGateway):
    """Every answer's epoch time lower than the one before it: an on-path forger (it sees
    our nonces) answering each request first, each answer read as a restart."""

    def epoch(self, now: float) -> int:
        return 1_000_000 - 10 * len(self.requests)


def test_forged_restarts_recreate_the_mappings_once_a_minute_at_most() -> None:
    """RFC 6887 8.5's restarts are bounded as NAT-PMP's resets are: every MAP answer a
    restart for ten minutes recreates the mappings once per NATPMP_RESET_INTERVAL at most
    (it was every few seconds), each with its own nonce as ever."""
    gateway = FallingEpochs(pcp=True)
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 600.0, events=events)
    assert len(of_type(events, GatewayReset)) >= 600 / NATPMP_RESET_INTERVAL
    assert protocol(client) == "pcp"
    for kind in (TCP, UDP):
        times = [t for t, r in pcp_requests(gateway) if r.protocol is kind]
        assert len(times) <= 600 / NATPMP_RESET_INTERVAL + 2  # the first request besides
        assert all(b - a >= NATPMP_RESET_INTERVAL - 0.1 for a, b in itertools.pairwise(times[1:]))
    assert len({r.nonce for _, r in pcp_requests(gateway)}) == 2


@pytest.mark.parametrize("heard", ["announcement", "datagram"])
def test_an_announce_while_probing_settles_nothing(heard: str) -> None:
    """Anyone can send one from the gateway's address: it never switches protocols (a
    forged one during the hourly re-probe would have made a NAT-PMP router PCP's)."""
    client = new_client((TCP, 6881))
    receive = client.receive_announcement if heard == "announcement" else client.receive_datagram
    first = sent_request(client, 0.0)
    receive(PcpAnnounceResponse(0, 0, 10).encode(), GATEWAY_ADDRESS, 0.1)
    assert protocol(client) is None
    assert client.datagrams_to_send(0.1) == []  # the probe's schedule goes on, untouched
    client.handle_timer(0.25)
    assert sent_request(client, 0.25) == first
    stats = client.statistics()
    assert (stats.announcements_ignored, stats.hints, stats.unexpected) == (1, 0, 0)
    # Silence to the probe still means NAT-PMP.
    client.handle_timer(0.75)
    sent_request(client, 0.75)
    client.handle_timer(1.75)
    assert protocol(client) == "natpmp"


def test_an_announce_in_another_protocol_is_a_hint_too() -> None:
    # Talking NAT-PMP after a fallback, a dual-stack router's PCP ANNOUNCE brings the
    # address request forward (its answer's SSSoE tells whether it restarted).
    gateway = FakeGateway()
    fell_back = new_client((TCP, 6881))
    run(fell_back, gateway, 0.0, 1.0)
    sent = len(gateway.requests)
    fell_back.receive_datagram(PcpAnnounceResponse(0, 0, 10).encode(), GATEWAY_ADDRESS, 1.0)
    run(fell_back, gateway, 1.0, 2.0)
    assert [r for _, r in gateway.requests[sent:]] == [ExternalAddressRequest()]
    stats = fell_back.statistics()
    assert (stats.hints, stats.unexpected, stats.gateway_resets) == (1, 0, 0)
    assert protocol(fell_back) == "natpmp"
    # Talking PCP, a dual-stack router's NAT-PMP announcement brings a renewal forward.
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 1.0)
    sent = len(gateway.requests)
    client.receive_announcement(gateway.announcement(1.0), GATEWAY_ADDRESS, 1.0)
    run(client, gateway, 1.0, 2.0)
    [(_, renewal)] = gateway.requests[sent:]
    assert isinstance(renewal, PcpMapRequest)
    assert renewal.nonce == gateway.nonces[(TCP, 6881)]
    stats = client.statistics()
    assert (stats.hints, stats.unexpected, stats.announcements_ignored) == (1, 0, 0)
    # ...nor a packet at all with PCP off.
    natpmp = NatPmpClient(GATEWAY, pcp=False)
    natpmp.receive_datagram(PcpAnnounceResponse(0, 0, 10).encode(), GATEWAY_ADDRESS, 0.1)
    assert natpmp.statistics().malformed == 1


def test_natpmp_packets_while_talking_pcp_are_unexpected() -> None:
    client = new_client((TCP, 6881))
    client.receive_datagram(
        NatPmpErrorResponse(0, 1, 5).encode(), GATEWAY_ADDRESS, 0.0
    )  # nothing in flight: no fallback
    sent_request(client, 0.0)
    client.receive_datagram(NatPmpErrorResponse(130, 3, 5).encode(), GATEWAY_ADDRESS, 0.01)
    # A dual-stack router's NAT-PMP announcement: no answer, and no news while probing.
    client.receive_datagram(ExternalAddressResponse(0, 5, EXTERNAL).encode(), GATEWAY_ADDRESS, 0.01)
    stats = client.statistics()
    assert (stats.unexpected, stats.announcements_ignored) == (2, 1)
    assert client.protocol is None


# -- noise -------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 200),
            st.binary(max_size=70)
            | st.sampled_from(
                [
                    PcpMapResponse(0, 1, 0, NONCE, TCP, 6881, 6881, EXTERNAL).encode(),
                    PcpMapResponse(2, 9, 0, NONCE, UDP, 6881, 0, EXTERNAL).encode(),
                    PcpAnnounceResponse(0, 0, 0).encode(),
                    PcpErrorResponse(2, 1, 3, 0, 0).encode(),
                    PcpErrorResponse(0, 1, 1, 0, 0).encode(),
                    NatPmpErrorResponse(0, 1, 0).encode(),
                ]
            ),
        ),
        max_size=20,
    )
)
def test_hostile_datagrams_never_crash_and_mappings_survive(
    noise: list[tuple[float, bytes]],
) -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), (UDP, 6881))

    def deliver(data: bytes) -> Callable[[float], None]:
        return lambda now: client.receive_datagram(data, GATEWAY_ADDRESS, now)

    run(client, gateway, 0.0, 200.0, at={t: deliver(d) for t, d in noise})
    # Whatever the noise did (a forged fallback to NAT-PMP among it), the gateway's own
    # answers win within the long retry.
    run(client, gateway, 200.0, 8000.0)
    assert [m.external_port for m in client.mappings()] == [6881, 6881]
    assert client.external_address == EXTERNAL


def test_logs_the_negotiation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bip_handshake.natpmp")
    run(new_client((TCP, 6881)), FakeGateway(ignore_pcp=True), 0.0, 3.0)
    run(new_client((TCP, 6881)), FakeGateway(pcp=True), 0.0, 1.0)
    infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert infos == [
        "PCP gateway 192.168.1.1:5351 did not answer PCP: NAT-PMP from now on",
        "NAT-PMP gateway 192.168.1.1:5351: our external address is 203.0.113.7",
        "NAT-PMP gateway 192.168.1.1:5351 maps TCP port 6881 to external port 6881 for 3600 s",
        "PCP gateway 192.168.1.1:5351 speaks PCP",
        "PCP gateway 192.168.1.1:5351: our external address is 203.0.113.7",
        "PCP gateway 192.168.1.1:5351 maps TCP port 6881 to external port 6881 for 3600 s",
    ]


# -- the codec's lengths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        PcpMapResponse(0, 3600, 5, NONCE, TCP, 6881, 6881, EXTERNAL).encode() + b"\0\0",
        PcpAnnounceResponse(0, 0, 5).encode() + bytes(3),
        # An option of 5 bytes without its padding (RFC 7.3).
        PcpAnnounceResponse(0, 0, 5).encode() + bytes((130, 0, 0, 5)) + bytes(5),
        # A MAP answer neither the header alone nor header and body: a truncated body.
        PcpMapResponse(2, 0, 5, NONCE, TCP, 6881, 0, EXTERNAL).encode()[:40],
    ],
)
def test_lengths_rfc_6887_drops(data: bytes) -> None:
    with pytest.raises(PcpError):
        decode_pcp_response(data)
    client = new_client((TCP, 6881))
    sent_request(client, 0.0)
    client.receive_datagram(data, GATEWAY_ADDRESS, 0.01)
    assert client.statistics().malformed == 1


def test_requests_not_a_multiple_of_four_are_malformed() -> None:
    request = PcpMapRequest(3600, CLIENT, NONCE, TCP, 6881, 6881, IPv4Address(0))
    with pytest.raises(PcpError, match="multiple of 4"):
        decode_pcp_request(request.encode() + b"\0")


# -- ADDRESS_MISMATCH --------------------------------------------------------------------------

NEW_CLIENT = IPv4Address("192.168.1.23")


def test_address_mismatch_maps_over_natpmp_at_once_and_probes_again_later() -> None:
    # miniupnpd answers ADDRESS_MISMATCH when the request's client address is not the
    # packet's source: here a NAT between us, so that our address read again is the same.
    gateway = FakeGateway(pcp=True, pcp_source=NEW_CLIENT)
    client = new_client((TCP, 6881))
    assert not stale(client)
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 1.0, events=events)
    assert protocol(client) == "natpmp"
    kinds = [type(r) for _, r in gateway.requests]
    assert kinds == [PcpMapRequest, ExternalAddressRequest, MappingRequest]
    assert client.mappings()[0].external_port == 6881
    assert not of_type(events, MappingFailed)  # a fallback, not a refusal
    assert stale(client)  # the caller is asked to read our address again
    client.set_client_address(CLIENT)  # the same: no ping-pong back to PCP
    assert not stale(client)
    assert protocol(client) == "natpmp"
    run(client, gateway, 1.0, 3599.0, client_address=CLIENT)
    assert not stale(client)
    assert len(pcp_requests(gateway)) == 1  # the renewal went NAT-PMP
    # PCP is tried again after the long wait, with the address read afresh.
    run(client, gateway, 3599.0, 3700.0, client_address=NEW_CLIENT)
    assert protocol(client) == "pcp"
    [_, (again, probe)] = pcp_requests(gateway)
    assert 3600 <= again <= 3601
    assert probe.client_address == NEW_CLIENT


@pytest.mark.parametrize("read", ["at once", "late"])
def test_address_mismatch_with_a_new_address_speaks_pcp_again_at_once(read: str) -> None:
    """A PCP-only router refused the address we had (DHCP moved us): NAT-PMP, its
    fallback, is refused too, but our new address brings PCP back at once rather than
    after the hour of no ping-pong (in which nothing would be mapped)."""
    gateway = FakeGateway(pcp=True, natpmp=False, pcp_source=NEW_CLIENT)
    client = new_client((TCP, 6881), (UDP, 6881))
    events: list[NatPmpEvent] = []
    if read == "at once":  # as the shell does: read before anything more is sent
        run(client, gateway, 0.0, 5.0, events=events, client_address=NEW_CLIENT)
        kinds = [type(r) for _, r in gateway.requests]
        assert kinds == [PcpMapRequest] * 3
        assert not of_type(events, MappingFailed)
    else:  # given only once NAT-PMP was refused (for an hour)
        run(client, gateway, 0.0, 1.0, events=events)
        assert protocol(client) == "natpmp"
        assert {f.result for f in of_type(events, MappingFailed)} == {PcpResult.UNSUPP_VERSION}
        client.set_client_address(NEW_CLIENT)
        run(client, gateway, 1.0, 5.0, events=events)
    assert protocol(client) == "pcp"
    assert [m.external_port for m in client.mappings()] == [6881, 6881]
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}
    last = [r for _, r in pcp_requests(gateway)[-2:]]
    assert {r.client_address for r in last} == {NEW_CLIENT}


def test_address_mismatch_answering_a_deletion_drops_it() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 1.0)
    assert protocol(client) == "pcp"
    gateway.pcp_source = NEW_CLIENT  # our address changed meanwhile
    client.close(2.0)
    events: list[NatPmpEvent] = []
    run(client, gateway, 2.0, 3.0, events=events)
    [removed] = of_type(events, MappingRemoved)
    assert removed.result == PcpResult.ADDRESS_MISMATCH
    assert client.is_closed
    assert protocol(client) == "natpmp"
    assert stale(client)


@pytest.mark.parametrize("speaking", ["pcp", "natpmp"])
def test_a_new_client_address_asks_again_for_granted_mappings_at_once(speaking: str) -> None:
    """DHCP moved us: the gateway forwards the grants to our old address, so each mapping is
    asked for the new one at once (PCP's requests naming it, NAT-PMP's coming from it), not
    at its renewal half an hour later; the grants stay shown meanwhile."""
    if speaking == "pcp":
        gateway = FakeGateway(pcp=True)
        client = new_client((TCP, 6881), (UDP, 6881))
    else:
        gateway = FakeGateway()
        client = NatPmpClient(GATEWAY, rng=random.Random(7), pcp=False, client_address=CLIENT)
        client.add_mapping(TCP, 6881, now=0.0)
        client.add_mapping(UDP, 6881, now=0.0)
    run(client, gateway, 0.0, 1.0)
    assert protocol(client) == speaking
    granted = client.mappings()
    assert [m.external_port for m in granted] == [6881, 6881]
    asked = len(gateway.requests)
    gateway.pcp_source = NEW_CLIENT  # the old address in a PCP request: ADDRESS_MISMATCH
    client.set_client_address(NEW_CLIENT)
    assert client.mappings() == granted  # shown until granted again
    events: list[NatPmpEvent] = []
    run(client, gateway, 10.0, 11.0, events=events)
    again = gateway.requests[asked:]
    assert [t for t, _ in again] == pytest.approx([10.0, 10.01])
    kinds = {type(r) for _, r in again}
    assert kinds == ({PcpMapRequest} if speaking == "pcp" else {MappingRequest})
    if speaking == "pcp":
        assert {r.client_address for _, r in again} == {NEW_CLIENT}  # type: ignore[union-attr]
    assert protocol(client) == speaking
    assert not of_type(events, MappingFailed)
    assert [m.external_port for m in client.mappings()] == [6881, 6881]
    assert all(m.expires_at == pytest.approx(3610.0, abs=0.1) for m in client.mappings())


def test_the_same_client_address_or_the_first_one_asks_nothing_again() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 1.0)
    renewal = client.next_deadline()
    assert renewal is not None
    assert renewal > 1000
    client.set_client_address(CLIENT)
    assert client.next_deadline() == renewal
    # NAT-PMP alone, no address held: the first one given is no change.
    gateway = FakeGateway()
    client = NatPmpClient(GATEWAY, rng=random.Random(7), pcp=False)
    client.add_mapping(TCP, 6881, now=0.0)
    run(client, gateway, 0.0, 1.0)
    renewal = client.next_deadline()
    client.set_client_address(CLIENT)
    assert client.client_address == CLIENT
    assert client.next_deadline() == renewal


def test_a_new_client_address_starts_the_mapping_request_in_flight_over() -> None:
    client = new_client((TCP, 6881))
    first = sent_request(client, 0.0)
    assert first.client_address == CLIENT
    assert client.datagrams_to_send(0.1) == []  # waiting for the answer
    client.set_client_address(NEW_CLIENT)
    again = sent_request(client, 0.1)  # at once, not at the retransmission
    assert again.client_address == NEW_CLIENT
    assert again.nonce != first.nonce  # another PCP mapping: another nonce (RFC 6887 11.1)
    assert client.statistics().retransmitted == 0
    # Back under the first address, the mapping takes that address's nonce again (the gateway
    # may still hold it: another nonce would be refused NOT_AUTHORIZED, RFC 6887 11.3).
    client.set_client_address(CLIENT)
    assert sent_request(client, 0.2).nonce == first.nonce


def test_a_mismatch_answering_the_old_address_request_is_stale() -> None:
    """Our address moved while a renewal carrying the old one was out: the gateway's
    ADDRESS_MISMATCH to it answers a request we dropped, and must not send us to NAT-PMP."""
    client = new_client((TCP, 6881))
    first = sent_request(client, 0.0)
    client.receive_datagram(answer(first), GATEWAY_ADDRESS, 0.01)
    renewal_at = client.next_deadline()
    assert renewal_at is not None
    client.handle_timer(renewal_at)
    renewal = sent_request(client, renewal_at)  # carries CLIENT
    client.set_client_address(NEW_CLIENT)  # the minute's read
    again = sent_request(client, renewal_at + 0.01)
    stale = answer(renewal, result=PcpResult.ADDRESS_MISMATCH, lifetime=0)
    client.receive_datagram(stale, GATEWAY_ADDRESS, renewal_at + 0.02)
    assert protocol(client) == "pcp"
    client.receive_datagram(answer(again), GATEWAY_ADDRESS, renewal_at + 0.03)
    assert protocol(client) == "pcp"
    assert client.statistics().unexpected == 1  # the stale mismatch, not the grant


def test_a_late_probe_answer_for_the_old_client_address_is_not_taken() -> None:
    gateway = FakeGateway(pcp=True, ignore_pcp=True)  # slow: NAT-PMP after 1.75 s
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 3.0)
    assert protocol(client) == "natpmp"
    [(_, probe), *_] = pcp_requests(gateway)
    client.set_client_address(NEW_CLIENT)
    # The probe's grant is for CLIENT, where nothing reaches us any more.
    client.receive_datagram(answer(probe), GATEWAY_ADDRESS, 3.1)
    assert client.statistics().unexpected == 1
    assert protocol(client) == "natpmp"


def test_set_client_address_checks_its_argument() -> None:
    client = new_client()
    with pytest.raises(LocalProtocolError):
        client.set_client_address(IPv4Address(0))
    with pytest.raises(LocalProtocolError):
        client.set_client_address("192.168.1.6")  # type: ignore[arg-type]
    assert client.client_address == CLIENT


def test_a_probe_after_a_fallback_asks_for_the_client_address_afresh() -> None:
    gateway = FakeGateway()  # NAT-PMP alone
    client = new_client((TCP, 6881), lifetime=10_000)
    run(client, gateway, 0.0, 1.0)
    assert not stale(client)
    client.add_mapping(UDP, 6881, now=3700.0)
    client.handle_timer(3700.0)  # the long retry is due: the next request probes PCP
    assert stale(client)
    client.set_client_address(NEW_CLIENT)
    assert sent_request(client, 3700.0).client_address == NEW_CLIENT


# -- the epoch across switches -----------------------------------------------------------------


def test_a_reboot_just_before_the_hourly_probe_is_seen() -> None:
    gateway = FakeGateway(max_lifetime=1000)  # NAT-PMP alone: renewals every 500 s
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 250.0, events=events)
    client.add_mapping(UDP, 6881, now=250.0)
    # The UDP renewal at 3750 s probes PCP (the hourly retry); the gateway rebooted at
    # 3700 s: the probe's "unsupported version" tells (its SSSoE went back).
    run(client, gateway, 250.0, 4600.0, events=events, at={3700.0: gateway.reboot})
    [reset] = of_type(events, GatewayReset)
    assert reset.epoch < 60
    tcp = [
        t
        for t, r in gateway.requests
        if isinstance(r, MappingRequest) and r.protocol is TCP and t > 3700
    ]
    assert tcp[0] < 3760  # recreated at once, not at its renewal (4000 s)


@pytest.mark.parametrize(
    ("answer_bytes", "resets"),
    [
        (NatPmpErrorResponse(0, 1, 3).encode(), 1),  # NAT-PMP's layout: SSSoE 3
        # A PCP server's layout naming version 0: bytes 4-8 are a lifetime, not an epoch.
        (PcpErrorResponse(0, 1, PcpResult.UNSUPP_VERSION, 0, 3).encode(), 0),
    ],
)
def test_the_probes_unsupported_version_checks_natpmps_epoch(
    answer_bytes: bytes, resets: int
) -> None:
    gateway = FakeGateway()
    client = new_client((TCP, 6881), lifetime=10_000)
    run(client, gateway, 0.0, 1.0)  # NAT-PMP, SSSoE about 1000
    client.add_mapping(UDP, 6881, now=3700.0)
    client.handle_timer(3700.0)
    sent_request(client, 3700.0)  # the hourly PCP probe
    client.receive_datagram(answer_bytes, GATEWAY_ADDRESS, 3700.01)
    assert protocol(client) == "natpmp"
    assert client.statistics().gateway_resets == resets


def test_pcps_epoch_is_kept_through_a_silent_reboot() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    events: list[NatPmpEvent] = []

    def down(now: float) -> None:
        gateway.silent = True

    def up(now: float) -> None:
        gateway.silent = False
        gateway.reboot(now)

    # Silent through the renewal's nine sends (~300-500 s), back before its retry.
    run(client, gateway, 1.0, 700.0, events=events, at={290.0: down, 510.0: up})
    assert client.statistics().timeouts == 1
    assert len(of_type(events, GatewayReset)) == 1  # the first answer after it tells
    assert protocol(client) == "pcp"
    assert client.mappings()[0].external_port == 6881


# -- answers matched before they are read ------------------------------------------------------


def test_a_header_only_failure_never_clears_a_standing_grant() -> None:
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 1.0)
    now = client.next_deadline()
    assert now is not None
    client.handle_timer(now)
    sent_request(client, now)  # the renewal, its nonce unknown to a forger
    forged = [
        PcpErrorResponse(2, 1, PcpResult.NOT_AUTHORIZED, 3600, 2000).encode(),
        PcpErrorResponse(2, 1, PcpResult.NO_RESOURCES, 3600, 2000).encode(),
        PcpErrorResponse(2, 2, PcpResult.MALFORMED_REQUEST, 3600, 2000).encode(),  # PEER's
    ]
    for data in forged:
        client.receive_datagram(data, GATEWAY_ADDRESS, now + 0.001)
    assert client.statistics().unexpected == len(forged)
    assert drain(client) == []
    # The two a server may have to send without the body are taken, as silence: the grant
    # stands, the renewal is retried soon (not after the failure's hour). Their epoch is not
    # taken: a forger's 0 would read as a restart (GatewayReset), lapse the grant kept
    # through the first refusal, and be the reference the gateway's next answer is judged by.
    for data in (
        PcpErrorResponse(2, 1, PcpResult.MALFORMED_REQUEST, 3600, 0).encode(),
        PcpErrorResponse(2, 1, PcpResult.MALFORMED_REQUEST, 3600, 0).encode(),
        PcpErrorResponse(1, 1, PcpResult.UNSUPP_VERSION, 3600, 0).encode(),
    ):
        client.receive_datagram(data, GATEWAY_ADDRESS, now + 0.002)
        [failed] = drain(client)
        assert isinstance(failed, MappingFailed)
        assert failed.mapping.external_port == 6881
        assert failed.retry_at <= now + 0.002 + 4 * NATPMP_RETRY_MIN
        client.handle_timer(failed.retry_at)
        sent_request(client, failed.retry_at)
        now = failed.retry_at
    assert client.mappings()[0].external_port == 6881
    assert client.statistics().gateway_resets == 0
    # The gateway's own answer (to the retransmission) is judged against its own last epoch.
    events: list[NatPmpEvent] = []
    run(client, gateway, now, now + 1.0, events=events)
    assert not of_type(events, GatewayReset)
    assert client.statistics().gateway_resets == 0
    [renewed] = client.mappings()
    assert renewed.external_port == 6881
    assert renewed.expires_at is not None
    assert renewed.expires_at > now + 3000


def test_a_full_answer_is_matched_on_its_nonce_before_its_result_is_read() -> None:
    client = new_client((TCP, 6881))
    request = sent_request(client, 0.0)
    for code in (PcpResult.UNSUPP_VERSION, PcpResult.ADDRESS_MISMATCH, PcpResult.NOT_AUTHORIZED):
        client.receive_datagram(
            answer(request, result=code, lifetime=0, nonce=bytes(12)), GATEWAY_ADDRESS, 0.01
        )
    assert client.statistics().unexpected == 3
    assert drain(client) == []
    assert protocol(client) is None  # still probing, nothing refused
    assert not stale(client)
    # With our nonce, UNSUPP_VERSION in our own version is a refusal.
    client.receive_datagram(
        answer(request, result=PcpResult.UNSUPP_VERSION, lifetime=0), GATEWAY_ADDRESS, 0.02
    )
    [failed] = of_type(drain(client), MappingFailed)
    assert failed.result == PcpResult.UNSUPP_VERSION


def test_a_version_1_server_is_refused_hourly_and_stays_unknown() -> None:
    class VersionOne(FakeGateway):
        def _handle_pcp(self, data: bytes, now: float) -> bytes | None:
            self.requests.append((now, decode_pcp_request(data)))
            return PcpErrorResponse(1, 1, PcpResult.UNSUPP_VERSION, 0, self.epoch(now)).encode()

    gateway = VersionOne()
    client = new_client((TCP, 6881))
    events: list[NatPmpEvent] = []
    run(client, gateway, 0.0, 2 * NATPMP_RETRY_MAX + 1.0, events=events)
    assert [t for t, _ in pcp_requests(gateway)] == pytest.approx(
        [0.0, 0.01 + NATPMP_RETRY_MAX, 0.02 + 2 * NATPMP_RETRY_MAX]
    )
    assert protocol(client) is None
    assert len(of_type(events, MappingFailed)) == 3
    assert client.external_address is None


def test_a_pcp_router_refusing_every_map_tells_no_address() -> None:
    gateway = FakeGateway(pcp=True, pcp_refuse=PcpResult.NOT_AUTHORIZED)
    client = new_client((TCP, 6881))
    run(client, gateway, 0.0, 10.0)
    assert protocol(client) == "pcp"
    assert client.external_address is None  # documented: PCP has no address request


# -- closing and late answers ------------------------------------------------------------------


@pytest.mark.parametrize("ignore_pcp", [True, False])
def test_closing_while_reprobing_a_natpmp_gateway_deletes_in_natpmp_at_once(
    ignore_pcp: bool,
) -> None:
    gateway = FakeGateway(ignore_pcp=ignore_pcp)
    client = new_client((TCP, 6881), (UDP, 6881))
    now = run(client, gateway, 0.0, 3599.0)
    while not (gateway.requests and isinstance(gateway.requests[-1][1], PcpMapRequest)):
        deadline = client.next_deadline()
        assert deadline is not None
        now = run(client, gateway, now, deadline + 0.001)  # up to the hourly probe
    assert protocol(client) is None
    sent = len(gateway.requests)
    client.close(now)
    run(client, gateway, now, now + 5.0)
    after = gateway.requests[sent:]
    assert [type(r) for _, r in after] == [MappingRequest, MappingRequest]
    assert all(r.lifetime == 0 for _, r in after)  # type: ignore[union-attr]
    assert after[0][0] == pytest.approx(now)  # not held back by the probe's 1.75 s
    assert client.is_closed
    assert protocol(client) == "natpmp"
    assert gateway.mappings == {}


def test_a_slow_pcp_routers_late_answer_brings_pcp_back() -> None:
    client = new_client((TCP, 6881))
    probe = sent_request(client, 0.0)
    for now in (0.25, 0.75):
        client.handle_timer(now)
        assert sent_request(client, now) == probe
    client.handle_timer(1.75)  # silence: NAT-PMP
    assert protocol(client) == "natpmp"
    [(data, _)] = client.datagrams_to_send(1.75)
    assert decode_natpmp_request(data) == ExternalAddressRequest()
    client.receive_datagram(answer(probe, nonce=bytes(12)), GATEWAY_ADDRESS, 1.8)  # not ours
    assert client.statistics().unexpected == 1
    client.receive_datagram(answer(probe, epoch=2000), GATEWAY_ADDRESS, 1.9)
    assert protocol(client) == "pcp"
    assert client.statistics().unexpected == 1
    events = drain(client)
    assert NatPmpAddressChanged(EXTERNAL) in events
    [mapped] = of_type(events, PortMapped)
    assert mapped.mapping.external_port == 6881
    # Its mapping is deleted in PCP, with its nonce.
    client.close(2.0)
    deletion = sent_request(client, 2.0)
    assert (deletion.lifetime, deletion.nonce) == (0, probe.nonce)


@pytest.mark.parametrize("late", [True, False])
def test_pcp_grants_after_a_silent_fallback_are_deleted_as_the_gateway_speaks(
    late: bool,
) -> None:
    """A PCP router goes silent: after the re-probe's silence NAT-PMP is spoken, and the
    PCP grants still standing are deleted in NAT-PMP (what the gateway now speaks); the
    probe answered late brings PCP back, and every PCP grant is deleted in PCP again, not
    the probe's alone."""
    client = new_client((TCP, 6881), (UDP, 6881))
    granted: dict[MappingProtocol, bytes] = {}
    for now in (0.0, 0.01):
        request = sent_request(client, now)
        client.receive_datagram(answer(request), GATEWAY_ADDRESS, now)
        granted[request.protocol] = request.nonce
    assert protocol(client) == "pcp"
    probe: PcpMapRequest | None = None
    for _ in range(100):  # silent: the renewal's nine sends, the retry's probe, NAT-PMP
        deadline = client.next_deadline()
        assert deadline is not None
        now = deadline
        client.handle_timer(now)
        for data, _ in client.datagrams_to_send(now):
            if data[0] == 2:
                probe = decode_pcp_request(data)
        if protocol(client) == "natpmp":
            break
    assert protocol(client) == "natpmp"
    assert probe is not None
    assert all(m.external_port == 6881 for m in client.mappings())  # the grants stand
    if late:
        client.receive_datagram(answer(probe, epoch=1000 + int(now)), GATEWAY_ADDRESS, now)
        assert protocol(client) == "pcp"
    drain(client)
    client.close(now)
    deletions: list[bytes] = []
    for _ in range(2):
        [(data, _)] = client.datagrams_to_send(now)
        deletions.append(data)
        if late:
            deletion = decode_pcp_request(data)
            client.receive_datagram(answer(deletion), GATEWAY_ADDRESS, now)
        else:
            natpmp = decode_natpmp_request(data)
            assert isinstance(natpmp, MappingRequest)
            client.receive_datagram(
                MappingResponse(natpmp.protocol, 0, 1000, 6881, 0, 0).encode(),
                GATEWAY_ADDRESS,
                now,
            )
    assert client.is_closed
    if late:
        pcp = [decode_pcp_request(d) for d in deletions]
        assert {(r.protocol, r.nonce, r.lifetime) for r in pcp} == {
            (TCP, granted[TCP], 0),
            (UDP, granted[UDP], 0),
        }
    else:
        assert {decode_natpmp_request(d) for d in deletions} == {
            MappingRequest(TCP, 6881, 0, 0),
            MappingRequest(UDP, 6881, 0, 0),
        }


def test_mappings_are_deleted_in_the_protocol_that_granted_them() -> None:
    gateway = FakeGateway()  # NAT-PMP alone, at first
    client = new_client((TCP, 6881), lifetime=10_000)
    run(client, gateway, 0.0, 1.0)  # TCP granted in NAT-PMP
    gateway.pcp = True  # a firmware update
    client.add_mapping(UDP, 6881, now=3700.0)
    run(client, gateway, 3700.0, 3701.0)  # the hourly probe: PCP
    assert protocol(client) == "pcp"
    sent = len(gateway.requests)
    client.close(3701.0)
    run(client, gateway, 3701.0, 3705.0)
    deletions = {type(r): r.protocol for _, r in gateway.requests[sent:]}  # type: ignore[union-attr]
    # RFC 6887 15: a PCP deletion of a NAT-PMP mapping may be refused NOT_AUTHORIZED.
    assert deletions == {MappingRequest: TCP, PcpMapRequest: UDP}
    assert client.is_closed
    assert gateway.mappings == {}


def test_a_restart_asks_grants_kept_through_failed_renewals_again_and_keeps_them() -> None:
    """RFC 6887 8.5: a client that sees a server's restart re-sends its requests; it ends no
    grant (nor does the NAT-PMP rule). A grant kept through refused renewals is asked again
    within the random 0..5 s, shown until granted again."""
    gateway = FakeGateway(pcp=True)
    client = new_client((TCP, 6881), (UDP, 6881), lifetime=600)
    run(client, gateway, 0.0, 1.0)
    gateway.pcp_refuse = PcpResult.NO_RESOURCES  # may pass: the grants are kept
    events: list[NatPmpEvent] = []
    run(client, gateway, 1.0, 450.0, events=events)
    assert len(of_type(events, MappingFailed)) >= 2
    kept = client.mappings()
    assert [(m.external_port, m.expires_at is not None) for m in kept] == [(6881, True)] * 2
    gateway.pcp_refuse = None

    def restart(now: float) -> None:
        gateway.reboot(now)
        client.receive_datagram(gateway.pcp_announcement(now), GATEWAY_ADDRESS, now)

    failed = len(of_type(events, MappingFailed))
    run(client, gateway, 450.0, 450.1, events=events, at={450.0: restart})
    assert len(of_type(events, GatewayReset)) == 1  # the hinted renewal's answer showed it
    assert len(of_type(events, MappingFailed)) == failed  # nothing lapsed
    assert [m.external_port for m in client.mappings()] == [6881, 6881]
    run(client, gateway, 450.1, 455.2, events=events)
    assert gateway.mappings.keys() == {(TCP, 6881), (UDP, 6881)}
    assert all(m.expires_at is not None and m.expires_at > 1000 for m in client.mappings())
