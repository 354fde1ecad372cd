"""The session's port mapping glue with several UPnP gateways: every gateway's grant is one
of our ports at the decided external address (sans IO: a stand-in UPnP mapper)."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import cast

from bip._client._external_address import ExternalAddresses
from bip._client._port_mapping import SessionPortMapping
from bip_handshake import (
    ExternalIPVoter,
    MappingId,
    MappingProtocol,
    PeerAddress,
    PortMapping,
    UpnpDevice,
    UpnpDeviceMapping,
    UpnpPortMapped,
    UpnpPortMapper,
    VoteSource,
)

DECIDED = IPv4Address("81.2.69.160")
ROUTER = UpnpDevice("http://192.168.1.1:5000/d.xml", "WANIPConnection:1", "http://192.168.1.1/c")
MESH = UpnpDevice("http://192.168.1.2:5000/d.xml", "WANIPConnection:1", "http://192.168.1.2/c")


def granted(external_port: int | None) -> PortMapping:
    lifetime = 0 if external_port is None else 3600
    expires = None if external_port is None else 3600.0
    return PortMapping(MappingId(1), MappingProtocol.TCP, 6881, external_port, lifetime, expires)


class TwoGateways:
    """What the glue reads of a UPnP mapper: the router grants 6881; the mesh node, after a
    conflict, 50000."""

    def __init__(self) -> None:
        self.held = [
            UpnpDeviceMapping(ROUTER, DECIDED, granted(6881)),
            UpnpDeviceMapping(MESH, None, granted(50000)),
        ]
        self.external_address: IPv4Address | None = DECIDED

    def mappings(self) -> tuple[PortMapping, ...]:
        return (self.held[0].mapping,)  # the gateway read first's view

    def device_mappings(self) -> tuple[UpnpDeviceMapping, ...]:
        return tuple(self.held)

    def external_port(self, protocol: MappingProtocol, internal_port: int) -> int | None:
        return self.held[0].mapping.external_port


def test_every_gateway_s_grant_is_one_of_our_ports() -> None:
    external = ExternalAddresses(ExternalIPVoter(), ports=(6881,))
    for n, peer in enumerate(("5.6.7.8", "9.10.11.12", "13.14.15.16")):
        external.vote(DECIDED, IPv4Address(peer), VoteSource.PEER, float(n))
    assert external.addresses == (PeerAddress(DECIDED, 6881),)
    session = SessionPortMapping(6881, external=external)
    upnp = TwoGateways()
    session.upnp = cast(UpnpPortMapper, upnp)
    session.on_event(UpnpPortMapped(upnp.held[1].mapping, MESH))
    assert session.mapped_ports() == (6881, 50000)
    assert set(external.addresses) == {PeerAddress(DECIDED, 6881), PeerAddress(DECIDED, 50000)}
    assert session.external_tcp_port == 6881  # what we announce: the gateway read first's
    upnp.held[1] = UpnpDeviceMapping(MESH, None, granted(None))  # the mesh node let it go
    session.on_event(UpnpPortMapped(upnp.held[0].mapping, ROUTER))
    assert external.addresses == (PeerAddress(DECIDED, 6881),)
