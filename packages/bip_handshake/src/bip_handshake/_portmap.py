"""Port mapping's shared vocabulary: what NAT-PMP and UPnP IGD mappers both report.

The two mappers (:class:`~bip_handshake.NatPmpClient` with its trio shell
:func:`~bip_handshake.open_port_mapper`, and :func:`~bip_handshake.open_upnp_mapper`) name a
mapping by a :class:`MappingId`, show it as a :class:`PortMapping` snapshot, and tell what
happens to it with the same :class:`PortMappingEvent` s (:class:`PortMapped`,
:class:`MappingFailed`, :class:`MappingRemoved`), so one handler reads both side by side.
Each mapper adds events of its own (NAT-PMP's ``GatewayReset``, UPnP's ``UpnpDeviceFound``...).

>>> mapping = PortMapping(MappingId(1), MappingProtocol.TCP, 6881, 6881, 3600, 3600.0)
>>> PortMapped(mapping).mapping.external_port
6881
>>> MappingProtocol.UDP.name
'UDP'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

__all__ = [
    "MappingFailed",
    "MappingId",
    "MappingProtocol",
    "MappingRemoved",
    "PortMapped",
    "PortMapping",
    "PortMappingEvent",
]


class MappingProtocol(enum.IntEnum):
    """The transport a mapping forwards; the value is its NAT-PMP request opcode (RFC 6886
    3.3), the name what UPnP's ``NewProtocol`` carries."""

    UDP = 1
    TCP = 2


MappingId = NewType("MappingId", int)
"""Names one mapping of a :class:`~bip_handshake.NatPmpClient` or of a UPnP mapper."""


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A snapshot of one mapping, NAT-PMP or UPnP.

    A UPnP mapping granted with a permanent lease (the router takes no other) has
    ``lifetime`` 0 and ``expires_at`` ``math.inf``; it is still renewed now and then.

    Attributes:
        mapping_id: the id ``add_mapping`` returned.
        protocol: UDP or TCP.
        internal_port: our port.
        external_port: the port the gateway forwards, or None while not granted.
        lifetime: the lifetime granted, in seconds (0 while not granted).
        expires_at: when the grant runs out unless renewed (None while not granted).
    """

    mapping_id: MappingId
    protocol: MappingProtocol
    internal_port: int
    external_port: int | None
    lifetime: int
    expires_at: float | None


class PortMappingEvent:
    """What a port mapper reports: NAT-PMP or UPnP.

    Base class of what :meth:`~bip_handshake.NatPmpClient.next_event` returns and of what
    the UPnP mapper (:func:`~bip_handshake.open_upnp_mapper`) hands its ``on_event``:
    :class:`PortMapped`, :class:`MappingFailed` and :class:`MappingRemoved` serve both, so
    one handler reads the two mappers side by side.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PortMapped(PortMappingEvent):
    """A mapping was granted, or its external port changed (a plain renewal is silent);
    NAT-PMP or UPnP.

    Attributes:
        mapping: the mapping as now granted.
    """

    mapping: PortMapping


@dataclass(frozen=True, slots=True)
class MappingFailed(PortMappingEvent):
    """A mapping request (or renewal) failed: the mapping is not granted until a retry is,
    or an earlier grant lapsed before a renewal succeeded; NAT-PMP (whose ``result`` is a
    :class:`~bip_handshake.NatPmpResult`, or a :class:`~bip_handshake.PcpResult` when the
    gateway speaks PCP, or another int) or UPnP (whose ``result`` is the
    router's UPnP error code, a :class:`~bip_handshake.UpnpErrorCode` such as 718 or
    another int).

    A renewal that goes unanswered, or is refused for a reason that may pass (NAT-PMP's
    result 3 or 4, UPnP's 501 or 728), leaves the earlier grant in force until it runs out:
    the snapshot then still has its ``external_port`` and ``expires_at``, and a second
    ``MappingFailed`` (``result`` None) tells when it lapses unrenewed.

    Attributes:
        mapping: the mapping, its external port None unless an earlier grant still stands.
        result: the gateway's result code, or None when it did not answer.
        retry_at: when the mapping is requested again.
    """

    mapping: PortMapping
    result: int | None
    retry_at: float


@dataclass(frozen=True, slots=True)
class MappingRemoved(PortMappingEvent):
    """A mapping was removed after ``remove_mapping`` or the mapper's close; NAT-PMP or UPnP
    (whose ``result`` is 0, the router's UPnP error code, or None).

    Attributes:
        mapping: the mapping as it was last known.
        result: 0 when the gateway confirmed the deletion, its result code when it refused
            it, None when nothing was confirmed (the gateway never granted the mapping, its
            lifetime had run out, or the deletion went unanswered).
    """

    mapping: PortMapping
    result: int | None
