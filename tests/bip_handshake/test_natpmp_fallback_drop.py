"""A mapping being removed is dropped once when a fallback to NAT-PMP forgets it too.

A fallback forgets (drops, :class:`MappingRemoved` with ``result=None``) every mapping being
removed that holds no grant and was only asked for in PCP. The PCP deletion of such a
mapping answered ADDRESS_MISMATCH fell back first, then dropped the mapping again: a bare
KeyError out of ``receive_datagram`` (which never raises for content), killing the shell,
after a first MappingRemoved had been queued. The answer's own drop now comes first.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bip_handshake._compact import PeerAddress
from bip_handshake._natpmp import (
    MappingFailed,
    MappingRemoved,
    NatPmpClient,
    NatPmpEvent,
)
from bip_handshake._pcp import (
    PcpMapRequest,
    PcpMapResponse,
    PcpResult,
    decode_pcp_request,
)
from bip_handshake._portmap import MappingProtocol

GATEWAY = PeerAddress(IPv4Address("10.0.0.1"), 5351)
CLIENT = IPv4Address("10.0.0.2")


def _answer(request: bytes, result: PcpResult) -> bytes:
    """The gateway's refusal of the PCP MAP ``request`` (its nonce and port repeated)."""
    sent = decode_pcp_request(request)
    assert isinstance(sent, PcpMapRequest)
    return PcpMapResponse(
        result,
        0,
        100,
        sent.nonce,
        sent.protocol,
        sent.internal_port,
        0,
        IPv4Address(0),
    ).encode()


def _events(client: NatPmpClient) -> list[NatPmpEvent]:
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    return events


def _refused_then_closing() -> tuple[NatPmpClient, bytes]:
    """A client speaking PCP whose only mapping was refused (no grant), then closed: its
    PCP deletion is the request in flight."""
    client = NatPmpClient(GATEWAY.host, pcp=True, client_address=CLIENT)
    client.add_mapping(MappingProtocol.UDP, 6881, 0.0)
    [(request, _)] = client.datagrams_to_send(0.0)
    client.receive_datagram(_answer(request, PcpResult.NOT_AUTHORIZED), GATEWAY, 0.0)
    assert client.protocol == "pcp"
    [failed] = _events(client)
    assert isinstance(failed, MappingFailed)
    assert failed.mapping.external_port is None  # nothing granted
    client.close(0.0)
    [(deletion, _)] = client.datagrams_to_send(0.0)
    sent = decode_pcp_request(deletion)
    assert isinstance(sent, PcpMapRequest)
    assert sent.lifetime == 0
    return client, deletion


def test_address_mismatch_answering_a_deletion_drops_it_once() -> None:
    client, deletion = _refused_then_closing()
    client.receive_datagram(_answer(deletion, PcpResult.ADDRESS_MISMATCH), GATEWAY, 0.1)
    [removed] = _events(client)
    assert isinstance(removed, MappingRemoved)
    assert removed.result == PcpResult.ADDRESS_MISMATCH
    assert int(removed.result) == 12
    # Consistent after: NAT-PMP spoken (the fallback), nothing left to delete or send.
    assert client.protocol == "natpmp"
    assert client.client_address_stale
    assert client.mappings() == ()
    assert client.is_closed
    assert client.datagrams_to_send(0.1) == []
    client.handle_timer(1000.0)
    assert client.datagrams_to_send(1000.0) == []
    assert _events(client) == []


@pytest.mark.parametrize("tail", [b"", bytes(4)], ids=["natpmp-layout", "pcp-layout"])
def test_not_pcp_answering_a_deletion_drops_it_once(tail: bytes) -> None:
    # The other fallback an answer brings (a version-0 "unsupported version" to our PCP
    # request) drops the mapping in the fallback alone: one MappingRemoved.
    client, deletion = _refused_then_closing()
    answer = bytes((0, 0x80 | deletion[1], 0, 1)) + (5).to_bytes(4, "big") + tail
    client.receive_datagram(answer, GATEWAY, 0.1)
    [removed] = _events(client)
    assert isinstance(removed, MappingRemoved)
    assert removed.result is None  # forgotten: a gateway without PCP holds nothing of it
    assert client.protocol == "natpmp"
    assert client.mappings() == ()
    assert client.is_closed
    assert client.datagrams_to_send(0.1) == []
