"""NAT-PMP (RFC 6886) and PCP (RFC 6887): asking the home router to forward our ports, as a
sans-IO core.

Behind a NAT nobody can dial us unless the gateway forwards a port to us. NAT-PMP asks it
to: a client sends small UDP requests to port 5351 of its default gateway and gets back the
gateway's external IPv4 address and, per request, a mapping (external port -> our internal
port) with a lifetime. PCP, its successor on the same port, does the same with other
packets (their codec is in ``_pcp``). This module holds the NAT-PMP packet codec and
:class:`NatPmpClient`, the client's state machine for both protocols; it never reads a
clock nor touches a socket (the caller passes ``now``, in seconds from any monotonic origin,
and moves datagrams in and out):

- ``add_mapping(protocol, internal_port, now)`` / ``remove_mapping(mapping_id, now)`` /
  ``close(now)`` say what we want;
- ``datagrams_to_send(now)`` gives the ``(bytes, gateway)`` pairs to send;
- ``receive_datagram(data, source, now)`` takes whatever arrived;
- ``next_deadline()`` / ``handle_timer(now)`` drive retransmission, renewal and retries;
- ``next_event()`` gives :class:`NatPmpEvent` s (the external address learnt, a port mapped or
  moved, a mapping refused or removed, the gateway reset) or None.

How RFC 6886 is run (and, unless said below, PCP alike):

- One request is in flight at a time (RFC 3.1: gateways are small devices; requests are
  queued and issued serially). Deletions go first, then the external address request, then
  mapping requests in the order they fell due.
- A request unanswered for 250 ms is sent again, the wait doubling each time; after the
  ninth send and 64 s more (127.75 s in all) the gateway is deemed not to speak NAT-PMP: the
  request and every other one already due fail together (:class:`MappingFailed` /
  :class:`NatPmpAddressFailed` with ``result=None``), rather than each waiting its own two
  minutes. A deletion is advisory (RFC 3.1): it is tried :data:`NATPMP_DELETE_ATTEMPTS` times.
- A mapping asks for :data:`NATPMP_LIFETIME` (3600 s) and suggests its internal port as the
  external one (or the port the caller chose). The gateway may grant another external port
  (:class:`PortMapped` tells it) and a shorter lifetime; a longer one is read as the one we
  asked for (RFC 3.3: the gateway SHOULD NOT offer more). The mapping is renewed halfway to
  its expiry, suggesting the port the gateway granted, so a gateway that rebooted meanwhile
  gives the same port back. The external address is asked again as often, since a gateway
  may get a new address from its ISP. A renewal that goes unanswered, or is refused (below),
  leaves the earlier grant standing until it runs out, so the port is still told to others
  meanwhile; it lapses then (a second :class:`MappingFailed`). A gateway found to have lost
  its table (below) has it asked again at once, not ended: it stays shown until granted
  again or run out.
- A refused request (result codes 1-5, or a code this RFC does not define, which RFC 3.5
  says is fatal to the request) fails its mapping with :class:`MappingFailed`. It is tried
  again later: after :data:`NATPMP_RETRY_MIN` seconds doubling up to
  :data:`NATPMP_RETRY_MAX` for what may pass (no answer, 3 network failure, 4 out of
  resources), after :data:`NATPMP_RETRY_MAX` for the rest (1 unsupported version, 2 refused
  by the user, 5 unsupported opcode: a firmware update or a changed setting may lift them,
  and RFC 3.1 asks not to remember a gateway's refusal for too long).
- A NAT-PMP refusal of a renewal, whatever its code, never ends the grant standing: it
  carries no nonce, so one datagram from the gateway's address and port to our socket's
  port, while the renewal is out, is all a forger needs, and a working mapping should not
  be lost to one. :class:`MappingFailed` tells the refusal (the grant still shown); the
  renewal is asked again as after silence (:data:`NATPMP_RETRY_MIN` seconds, doubling), so
  a forged refusal costs one request and a real one is heard again; the grant lapses when
  it runs out unrenewed, and from then on the refusal's own wait applies. Nor is the SSSoE
  of a refusal of a mapping request (a mapping or its deletion) taken (below): a forger's 0
  would read as a reboot; a real reboot shows in the next answer taken. This is
  libtorrent's outcome (2.0's ``natpmp::on_reply``): a refusal answering an existing
  mapping with port or lifetime 0, as refusals do, clears the mapping's protocol before
  the callback, so the session's mapped port is left as it was, and the gateway's mapping
  lives out its lifetime (RFC 3.3). Unlike libtorrent we go on asking (it forgets such a
  mapping for good, and reports a refusal carrying a port and lifetime as port 0 at once,
  asking again in two hours). A PCP MAP refusal names the mapping's nonce (matched before
  its result is read): one that cannot pass ends the grant at once.
- Every response carries the gateway's seconds since the start of its epoch (SSSoE; one
  refusing a mapping request, which no nonce proves, is not read, above). When one is lower
  than the last one, or lower by more than 2 s than the last one plus 7/8 of the time
  elapsed since on our clock (RFC 3.6), the gateway lost its mapping table: every
  mapping is renewed after a random delay of 0 to 5 s (RFC 3.7), serially, and the external
  address is asked again (:class:`GatewayReset`). That is all a reset does: a grant kept
  through failed renewals is asked again with the rest and stays shown until granted again
  or run out, as the others do. No NAT-PMP answer is proven (no nonce: a success to the
  mapping request in flight, or an address answer while one is asked, is as easy to forge
  as a refusal), so a reset that ended grants would hand them to any forger of a low SSSoE;
  this way a forged reset costs one request per mapping, and a real reboot, which lost our
  mappings, has them asked again, and so made again, at once. Resets are bounded in rate
  (neither RFC bounds them; each recreation brings as many answers to forge): every
  mapping is recreated for a reset at most once per :data:`NATPMP_RESET_INTERVAL` (60 s).
  A reset while a recreation is pending joins it; one within the interval after it waits
  for the interval's end (the grants just made are the gateway's as it is now). So a
  forger answering each request with a falling SSSoE costs at most one request per mapping
  a minute, and a real reboot is recovered at once, or within a minute of a reset before
  it.
- Removing a mapping that the gateway may hold sends a deletion (lifetime 0, suggested port
  0, RFC 3.4); one that never got an answer, or whose lifetime has run out anyway, goes at
  once. :meth:`NatPmpClient.close` removes every mapping; :attr:`NatPmpClient.is_closed`
  says when the last deletion is done.
- A mapping forwards to the address it was made for: the request's source under NAT-PMP
  (RFC 3.3), the client address the request names under PCP (RFC 6887 11.1, which must be
  the source, 8.1). So another address of ours given
  (:meth:`NatPmpClient.set_client_address`: a DHCP renewal, another network) asks for
  every mapping again at once, granted ones included, in the protocol spoken (under
  NAT-PMP the same request from the new source is simply a new mapping); the request in
  flight starts over. Renewing them at their time instead would leave the gateway
  forwarding to an address we no longer have for up to half a lifetime. The old grants
  stay shown until granted again or run out (the old mappings cannot be deleted from
  another address: they run out on the gateway). IPv4 and IPv6 gateways alike (below).
- A datagram is accepted only from the gateway's address and port (5351, or the ``port``
  the client is given; RFC 3.2: from anyone else it is silently dropped), only as well
  formed (version 0, a response opcode, at least the length of its kind: bytes past it are
  ignored, as libtorrent does), and only as the answer to the request in flight (same
  opcode and internal port: NAT-PMP has no transaction ids, RFC 3.5). Everything else is
  counted (:meth:`NatPmpClient.statistics`) and dropped: a stray, forged or garbled
  datagram never raises and never disturbs a request. A success that makes no sense (a
  mapping with external port 0 or lifetime 0, or a mapping answer to a deletion saying
  anything but 0/0) is counted as malformed too (a grant answering a deletion as
  unexpected: it is the late answer to the request the deletion replaced), and the request
  goes on being retransmitted.
- The gateway's announcements (RFC 6886 3.2.1: its external address, multicast after a
  reboot or an address change; RFC 6887 14.1.1: PCP's ANNOUNCE after a restart), given to
  :meth:`NatPmpClient.receive_announcement` (or arriving unasked on our own socket), are
  hints, never believed: anyone on the network can send one from the gateway's address to
  the well-known group, and one datagram would reach every client. An announcement's source
  port is the server's own, as an answer's is (the RFCs have the server send it, to the
  clients' port 5350, as it answers: from its port, 5351): it is taken from the gateway's
  address and the ``port`` the client is given, so that a gateway served on another port
  is heard, and from any other port it is counted as from elsewhere. A hint brings forward
  the request whose answer tells: NAT-PMP's address request, or under PCP the renewal of a
  mapping held (its answer matched on its nonce). That answer alone, which comes from the
  gateway to our own port (an off-path forger must guess it), has its epoch and address
  taken. At most one hint is acted on per :data:`NATPMP_HINT_INTERVAL` (later ones within
  it are merged into it), so forgeries cost the gateway one request each 10 s and change
  nothing, while a real reboot is seen within 10 s (its own burst of announcements, ten
  over four minutes, is merged likewise). An announcement never switches protocols, and is
  not acted on while the protocol is being negotiated (the probe's answer tells).

How RFC 6887 is run (PCP is spoken first unless ``pcp=False``):

- Version negotiation (RFC 6887 9, RFC 6886 3.5): the first requests go out as PCP MAP
  requests (:attr:`NatPmpClient.protocol` is None meanwhile). A PCP answer settles it
  (``"pcp"``). A version-0 answer with result 1 (NAT-PMP's "unsupported version", or a PCP
  server's UNSUPP_VERSION naming version 0) makes it NAT-PMP from then on (``"natpmp"``),
  as in libtorrent's natpmp.cpp. Silence through :data:`PCP_PROBE_ATTEMPTS` sends does too
  (1.75 s): that rule is ours, not libtorrent's (which falls back on the explicit answer
  alone), for old routers that drop a version they do not know, so that one still maps
  our ports within two seconds; a PCP router answering later than that, the answer
  carrying the probe's nonce, is then taken at its word: PCP again, the mapping it granted
  kept (and deleted in PCP). A MAP answered ADDRESS_MISMATCH (the client address in our
  request is not our packets' source: our address changed, a NAT between us) makes it
  NAT-PMP too, which has no client address to get wrong, so our ports are mapped at once;
  the caller gives our address afresh meanwhile (:meth:`NatPmpClient.set_client_address`,
  :attr:`NatPmpClient.client_address_stale`); when the address given then differs from the
  one refused, PCP is spoken again at once (a PCP-only router would otherwise map nothing
  for an hour). A NAT-PMP request answered with PCP's UNSUPP_VERSION (version 2) shows a
  server speaking PCP alone: PCP then, unless that gateway itself had turned PCP down (the
  request is then refused: no ping-pong; after ADDRESS_MISMATCH, only while our address
  is the one it refused). PCP is tried again :data:`NATPMP_RETRY_MAX` after a fallback,
  after a gateway reset (a firmware update may bring it), and after a PCP gateway went
  silent through a whole retransmission (a new router may not speak it); a close while
  such a probe of a gateway known to speak NAT-PMP is out goes back to NAT-PMP at once, so
  that the deletions are not held back. Each switch starts the request in flight over in
  the new protocol; a mapping only ever asked for in PCP of a gateway that does not speak
  it needs no deletion.
- One MAP request per mapping, with a random 12-byte nonce of its own (from ``rng``) that
  its renewals and its deletion (a MAP with lifetime 0) repeat. A mapping is deleted in the
  protocol that granted it, whatever is spoken by then (RFC 6887 15: a PCP server may
  refuse a MAP deletion of a NAT-PMP mapping as NOT_AUTHORIZED), but for a PCP grant
  after a fallback that showed the gateway not to speak PCP (it went silent to it, or said
  so): in NAT-PMP then, while it lasts (a router sharing one table takes it); renewals go
  in the protocol spoken. PCP has no request for the external address: it comes with
  every MAP answer (:class:`NatPmpAddressChanged` when it changes); the address request
  (opcode 0) goes out only while NAT-PMP is spoken (under PCP it is no request at all). So
  a client learns no address over PCP while it has no mapping, nor from a PCP router that
  refuses every MAP: :attr:`NatPmpClient.external_address` stays None then.
- Every MAP answer is matched on its nonce, protocol and internal port before its result is
  read; a forged or stale one, which cannot know the nonce, is counted as unexpected and
  dropped. A header-only failure names no nonce: it is taken only as UNSUPP_VERSION
  (negotiation) or MALFORMED_REQUEST (of opcode MAP) answering a PCP request (or, version
  2, a NAT-PMP one), and never clears a standing grant: refusing a renewal, it counts as
  silence (retried after :data:`NATPMP_RETRY_MIN`, doubling, the grant kept till it runs
  out). Its epoch is not taken either (a forger's 0 would read as a restart, bringing every
  renewal forward, and judge the gateway's next answer: a second one);
  a MALFORMED_REQUEST settles a probe all the same (the gateway speaks PCP).
- A grant is renewed at a random point between 1/2 and 5/8 of its lifetime (RFC 11.2.1).
- The epoch time shows a server that lost its state (RFC 8.5): back by more than 1 s, or
  apart from our clock's elapsed time by more than 2 s and a sixteenth (an ANNOUNCE, sent
  unasked after a restart, is a hint: the renewal it brings forward is what is checked).
  Then, as with NAT-PMP, every mapping is recreated within 0 to 5 s (RFC 8.5 has the client
  re-send its requests; a grant kept through failed renewals stays shown till granted again
  or run out, as with NAT-PMP), at most once per :data:`NATPMP_RESET_INTERVAL` (an
  on-path forger knows the nonces). Each protocol's epoch
  is judged against its own last one (the two clocks need not be one), kept across
  switches (the hourly PCP probe included: a reboot just before it is still seen), and
  through a PCP gateway's silence (a rebooting router is silent a while); the NAT-PMP one
  is checked by a version-0 "unsupported version" answer (in NAT-PMP's layout) too. A
  reset seen in one protocol forgets the other's reference.
- Result codes: NETWORK_FAILURE, NO_RESOURCES, USER_EX_QUOTA and CANNOT_PROVIDE_EXTERNAL may
  pass (retried after :data:`NATPMP_RETRY_MIN`, doubling; a renewal's earlier grant kept);
  the rest (NOT_AUTHORIZED, UNSUPP_*, MALFORMED_*, ...) after :data:`NATPMP_RETRY_MAX`
  (ADDRESS_MISMATCH is a fallback, above); and never sooner than the failure's lifetime
  the server gives (RFC 7.2), capped at :data:`NATPMP_RETRY_MAX`. An UNSUPP_VERSION naming
  a version we do not speak (PCP's 1, a future one) is such a refusal: the mapping is
  asked again in PCP every hour and refused each time, :attr:`NatPmpClient.protocol`
  staying None (a gateway speaking neither NAT-PMP nor PCP version 2 has nothing to fall
  back to).
- Retransmission follows NAT-PMP's schedule (250 ms doubling, nine sends, then the retry
  back-off), not RFC 6887 8.1.1's (3 s doubling up to 1024 s, without end): one serial
  queue carries both protocols, a gateway on the LAN answers in milliseconds, version
  negotiation needs quick early retries to tell a silent old router, and the give-up and
  back-off bound the load on the gateway as 8.1.1's longest interval means to.
- The request's client IP is ``client_address``, IPv4-mapped: our address toward the
  gateway (the shell reads it off a socket connected to the gateway, on opening, before
  every PCP probe and after ADDRESS_MISMATCH).

An IPv6 gateway (the IPv6 default router, a CPE firewall) is asked for pinholes, as
libtorrent's per-socket NAT-PMP/PCP does for an IPv6 listen socket: the same core and rules
as above, PCP alone, with these differences:

- The client address is our global IPv6 address (not IPv4-mapped), the one the pinholes
  open; a grant's external address is an IPv6 one (our own, unless the firewall
  translates it): :attr:`NatPmpClient.external_address` and :class:`NatPmpAddressChanged`
  carry it. A MAP success naming an IPv4 (or unspecified) address makes no sense, and is
  counted as malformed. No suggestion is ``::`` (RFC 6887 11.1), not ``::ffff:0.0.0.0``.
- NAT-PMP has no IPv6, so nothing falls back to it: a request while the protocol is unknown
  goes through the whole retransmission schedule (no 1.75 s probe), and a gateway silent
  through it, or answering NAT-PMP's "unsupported version", fails the mappings
  (:class:`MappingFailed`, retried with the usual back-off; said at INFO once, at DEBUG
  after, until the gateway answers PCP). ADDRESS_MISMATCH fails the mapping too (no
  fallback), and our address is read afresh: another one asks for every pinhole again at
  once, granted or not, as any new client address does (above): a grant opens the old
  address alone.
- NAT-PMP packets from the gateway's address (an address answer, an announcement) are
  counted as unexpected, never taken as hints: only PCP's ANNOUNCE is.

Not here: listening for the multicast announcements on 224.0.0.1:5350 or [ff02::1]:5350
(the shell does, and hands the gateway's to :meth:`NatPmpClient.receive_announcement`,
which takes them as hints, above; without them a reboot is seen at the next renewal, and
the address is re-asked every half lifetime), PCP's PEER opcode and options (a response's
are skipped), and UPnP IGD.

>>> from ipaddress import IPv4Address
>>> client = NatPmpClient(IPv4Address("192.168.1.1"), rng=random.Random(0), pcp=False)
>>> tcp = client.add_mapping(MappingProtocol.TCP, 6881, now=0.0)
>>> [(request, gateway)] = client.datagrams_to_send(0.0)
>>> decode_natpmp_request(request), str(gateway)
(ExternalAddressRequest(), '192.168.1.1:5351')
>>> answer = ExternalAddressResponse(NatPmpResult.SUCCESS, 1000, IPv4Address("203.0.113.7"))
>>> client.receive_datagram(answer.encode(), gateway, now=0.1)
>>> client.next_event()
NatPmpAddressChanged(address=IPv4Address('203.0.113.7'))
>>> [(request, gateway)] = client.datagrams_to_send(0.1)
>>> decode_natpmp_request(request) == MappingRequest(MappingProtocol.TCP, 6881, 6881, 3600)
True
>>> answer = MappingResponse(MappingProtocol.TCP, NatPmpResult.SUCCESS, 1000, 6881, 40001, 3600)
>>> client.receive_datagram(answer.encode(), gateway, now=0.2)
>>> event = client.next_event()
>>> event.mapping.external_port, event.mapping.expires_at
(40001, 3600.2)
>>> client.next_deadline()  # the address asked again, then the renewal: halfway
1800.1

Over PCP (the default), the first datagram is a PCP MAP request:

>>> from bip_handshake._pcp import decode_pcp_request
>>> client = NatPmpClient(
...     IPv4Address("192.168.1.1"), client_address=IPv4Address("192.168.1.5"),
...     rng=random.Random(0))
>>> tcp = client.add_mapping(MappingProtocol.TCP, 6881, now=0.0)
>>> [(request, gateway)] = client.datagrams_to_send(0.0)
>>> request = decode_pcp_request(request)
>>> request.lifetime, str(request.client_address), request.internal_port, client.protocol
(3600, '192.168.1.5', 6881, None)
>>> answer = PcpMapResponse(
...     PcpResult.SUCCESS, 3600, 1000, request.nonce, MappingProtocol.TCP, 6881, 40001,
...     IPv4Address("203.0.113.7"))
>>> client.receive_datagram(answer.encode(), gateway, now=0.1)
>>> client.next_event(), client.protocol
(NatPmpAddressChanged(address=IPv4Address('203.0.113.7')), 'pcp')
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final, Literal, TypeAlias

from ._compact import PeerAddress
from ._errors import LocalProtocolError, RemoteProtocolError
from ._pcp import _HEADER as _PCP_HEADER
from ._pcp import _OP_MAP as _PCP_OP_MAP
from ._pcp import (
    PCP_NONCE_SIZE,
    PCP_VERSION,
    PcpAnnounceResponse,
    PcpError,
    PcpErrorResponse,
    PcpMapRequest,
    PcpMapResponse,
    PcpResult,
    _check_protocol,
    _check_uint,
    decode_pcp_response,
)

# The mappers' shared vocabulary lives in _portmap; re-exported here, where it began.
from ._portmap import (
    MappingFailed,
    MappingId,
    MappingProtocol,
    MappingRemoved,
    PortMapped,
    PortMapping,
    PortMappingEvent,
)

__all__ = [
    "NATPMP_DELETE_ATTEMPTS",
    "NATPMP_HINT_INTERVAL",
    "NATPMP_INITIAL_TIMEOUT",
    "NATPMP_LIFETIME",
    "NATPMP_MAX_ATTEMPTS",
    "NATPMP_MAX_MAPPINGS",
    "NATPMP_MIN_RENEW_DELAY",
    "NATPMP_PORT",
    "NATPMP_RESET_DELAY_MAX",
    "NATPMP_RESET_INTERVAL",
    "NATPMP_RETRY_MAX",
    "NATPMP_RETRY_MIN",
    "PCP_PROBE_ATTEMPTS",
    "ExternalAddressRequest",
    "ExternalAddressResponse",
    "GatewayProtocol",
    "GatewayReset",
    "MappingFailed",
    "MappingId",
    "MappingProtocol",
    "MappingRemoved",
    "MappingRequest",
    "MappingResponse",
    "NatPmpAddressChanged",
    "NatPmpAddressFailed",
    "NatPmpClient",
    "NatPmpError",
    "NatPmpErrorResponse",
    "NatPmpEvent",
    "NatPmpMessage",
    "NatPmpResult",
    "NatPmpStatistics",
    "PortMapped",
    "PortMapping",
    "PortMappingEvent",
    "decode_natpmp_request",
    "decode_natpmp_response",
]

NATPMP_PORT: Final = 5351
"""The UDP port a NAT-PMP gateway listens on (RFC 6886 3.1)."""

NATPMP_LIFETIME: Final = 3600
"""Seconds of mapping lifetime asked for (RFC 3.3 recommends 7200; libtorrent asks 3600)."""

NATPMP_INITIAL_TIMEOUT: Final = 0.25
"""Seconds before the first retransmission (RFC 3.1); each later wait doubles."""

NATPMP_MAX_ATTEMPTS: Final = 9
"""Sends of one request before the gateway is deemed silent (RFC 3.1: 127.75 s in all)."""

NATPMP_DELETE_ATTEMPTS: Final = 3
"""Sends of a deletion: RFC 3.1 lets a client try less (a deletion is advisory); 1.75 s."""

NATPMP_RETRY_MIN: Final = 60.0
"""Seconds before a request that failed in a way that may pass is tried again; doubles."""

NATPMP_RETRY_MAX: Final = 3600.0
"""Longest wait before a failed request is tried again (and the wait after a refusal)."""

NATPMP_MIN_RENEW_DELAY: Final = 2.0
"""Least seconds between a grant and its renewal: a gateway granting 1-second lifetimes
costs us one request per mapping every 2 s, not a flood."""

NATPMP_RESET_DELAY_MAX: Final = 5.0
"""Mappings are recreated after a gateway reset within a random 0..5 s (RFC 3.7)."""

NATPMP_RESET_INTERVAL: Final = 60.0
"""Least seconds between two recreations of every mapping for a gateway reset: a reset
within it (forged SSSoEs or epochs, one answer each) is merged into the next recreation
due, no earlier than this after the last one, rather than asking for every mapping again
(see the module docstring). A forger then costs the gateway at most one request per
mapping each minute; a real reboot is recovered at once, or within a minute of a reset
before it."""

NATPMP_MAX_MAPPINGS: Final = 64
"""Mappings one client may hold at once (a BitTorrent client needs two or three)."""

NATPMP_HINT_INTERVAL: Final = 10.0
"""Least seconds between two announcements acted on (each brings one request forward):
anyone on the network can forge them, so they are bounded; a gateway's own burst after a
reboot (RFC 6886 3.2.1: ten sends over about four minutes) is seen by its first one."""

PCP_PROBE_ATTEMPTS: Final = 3
"""Sends of a PCP request, while the gateway's protocol is unknown, before its silence is
read as an RFC 6886 router dropping a version it does not know: NAT-PMP is tried after
1.75 s, so an old router maps our ports within about two seconds. This silence rule is
ours: RFC 6887 9 and libtorrent fall back on an explicit "unsupported version" alone."""

GatewayProtocol: TypeAlias = Literal["pcp", "natpmp"]
"""What a gateway is talked to in (:attr:`NatPmpClient.protocol`)."""

# RFC 3.6: our conservative estimate of the gateway's clock runs at 7/8 of ours, and a
# response may lag it by 2 s before we conclude the gateway lost its state.
_EPOCH_RATE: Final = 7 / 8
_EPOCH_SLACK: Final = 2.0

_VERSION: Final = 0
_OP_ADDRESS: Final = 0
_RESPONSE_BIT: Final = 128


_log = logging.getLogger("bip_handshake.natpmp")
_EARLIER_NONCES: Final = 4  # nonces a mapping keeps for our earlier addresses


class NatPmpError(RemoteProtocolError):
    """A NAT-PMP packet could not be decoded (raised by :func:`decode_natpmp_response` and
    :func:`decode_natpmp_request`; :class:`NatPmpClient` counts such packets instead).

    >>> decode_natpmp_response(b"\\x00")
    Traceback (most recent call last):
    ...
    bip_handshake._natpmp.NatPmpError: a NAT-PMP response has at least 8 bytes, got 1
    """


class NatPmpResult(enum.IntEnum):
    """The result codes RFC 6886 3.5 defines. A response may carry others (kept as ints)."""

    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2
    NETWORK_FAILURE = 3
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


def _result(code: int) -> NatPmpResult | int:
    try:
        return NatPmpResult(code)
    except ValueError:
        return code


def _check_result(value: object) -> NatPmpResult | int:
    return _result(_check_uint("a result code", value, 16))


class NatPmpMessage:
    """Base class of the NAT-PMP packets (requests and responses)."""

    __slots__ = ()

    def encode(self) -> bytes:
        """The packet's bytes."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it


@dataclass(frozen=True, slots=True)
class ExternalAddressRequest(NatPmpMessage):
    """Opcode 0: what is the gateway's external IPv4 address? (RFC 3.2)

    >>> ExternalAddressRequest().encode()
    b'\\x00\\x00'
    """

    def encode(self) -> bytes:
        """The two bytes of the request."""
        return bytes((_VERSION, _OP_ADDRESS))


@dataclass(frozen=True, slots=True)
class MappingRequest(NatPmpMessage):
    """Opcode 1 (UDP) or 2 (TCP): forward an external port to ``internal_port`` (RFC 3.3).

    A lifetime of 0 with a suggested port of 0 deletes the mapping (RFC 3.4).

    Attributes:
        protocol: UDP or TCP.
        internal_port: our port the gateway forwards to (0 only in a deletion of all).
        suggested_external_port: the external port we would like; 0 lets the gateway pick.
        lifetime: seconds the mapping should live; 0 deletes it.
    """

    protocol: MappingProtocol
    internal_port: int
    suggested_external_port: int
    lifetime: int

    def __post_init__(self) -> None:
        _check_protocol(self.protocol)
        _check_uint("an internal port", self.internal_port, 16)
        _check_uint("a suggested external port", self.suggested_external_port, 16)
        _check_uint("a lifetime", self.lifetime, 32)

    def encode(self) -> bytes:
        """The twelve bytes of the request (the reserved field zero)."""
        return (
            bytes((_VERSION, int(self.protocol), 0, 0))
            + self.internal_port.to_bytes(2, "big")
            + self.suggested_external_port.to_bytes(2, "big")
            + self.lifetime.to_bytes(4, "big")
        )


@dataclass(frozen=True, slots=True)
class ExternalAddressResponse(NatPmpMessage):
    """Opcode 128: the gateway's external address (RFC 3.2), also its announcement (3.2.1).

    Attributes:
        result: the result code; the address means nothing unless it is 0.
        epoch: the gateway's seconds since the start of its epoch (SSSoE, RFC 3.6).
        address: the external IPv4 address (0.0.0.0 when the result is not 0).
    """

    result: NatPmpResult | int
    epoch: int
    address: IPv4Address

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", _check_result(self.result))
        _check_uint("an epoch", self.epoch, 32)
        if not isinstance(self.address, IPv4Address):
            raise LocalProtocolError(f"an address is an IPv4Address, got {self.address!r}")

    def encode(self) -> bytes:
        """The twelve bytes of the response."""
        return (
            bytes((_VERSION, _RESPONSE_BIT | _OP_ADDRESS))
            + int(self.result).to_bytes(2, "big")
            + self.epoch.to_bytes(4, "big")
            + self.address.packed
        )


@dataclass(frozen=True, slots=True)
class MappingResponse(NatPmpMessage):
    """Opcode 129 (UDP) or 130 (TCP): what the gateway did with a mapping request (RFC 3.3).

    Attributes:
        protocol: UDP or TCP (the request's opcode).
        result: the result code.
        epoch: the gateway's seconds since the start of its epoch.
        internal_port: the request's internal port (it tells which request this answers).
        external_port: the external port granted (0 when none, and after a deletion).
        lifetime: seconds the mapping lives (0 after a deletion or a failure).
    """

    protocol: MappingProtocol
    result: NatPmpResult | int
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int

    def __post_init__(self) -> None:
        _check_protocol(self.protocol)
        object.__setattr__(self, "result", _check_result(self.result))
        _check_uint("an epoch", self.epoch, 32)
        _check_uint("an internal port", self.internal_port, 16)
        _check_uint("an external port", self.external_port, 16)
        _check_uint("a lifetime", self.lifetime, 32)

    def encode(self) -> bytes:
        """The sixteen bytes of the response."""
        return (
            bytes((_VERSION, _RESPONSE_BIT | int(self.protocol)))
            + int(self.result).to_bytes(2, "big")
            + self.epoch.to_bytes(4, "big")
            + self.internal_port.to_bytes(2, "big")
            + self.external_port.to_bytes(2, "big")
            + self.lifetime.to_bytes(4, "big")
        )


@dataclass(frozen=True, slots=True)
class NatPmpErrorResponse(NatPmpMessage):
    """A failure answered with the common header only: version, opcode, result, SSSoE.

    RFC 3.5 answers a request of an unknown version this way (with opcode 0 in its figure,
    which gateways write as 0 or 128), and a gateway may answer an unknown opcode or a
    failure this short. ``opcode`` is kept as received (a response opcode, 128 and up, or 0).

    Attributes:
        opcode: the opcode field as received.
        result: the (non-zero) result code.
        epoch: the gateway's seconds since the start of its epoch.
    """

    opcode: int
    result: NatPmpResult | int
    epoch: int

    def __post_init__(self) -> None:
        _check_uint("an opcode", self.opcode, 8)
        object.__setattr__(self, "result", _check_result(self.result))
        if self.result == NatPmpResult.SUCCESS:
            raise LocalProtocolError("a short response is an error: its result is not 0")
        _check_uint("an epoch", self.epoch, 32)

    def encode(self) -> bytes:
        """The eight bytes of the response."""
        return (
            bytes((_VERSION, self.opcode))
            + int(self.result).to_bytes(2, "big")
            + self.epoch.to_bytes(4, "big")
        )


NatPmpResponse = ExternalAddressResponse | MappingResponse | NatPmpErrorResponse
NatPmpRequest = ExternalAddressRequest | MappingRequest


def decode_natpmp_response(data: bytes) -> NatPmpResponse:
    """Decode a packet a gateway sent; bytes past the packet's length are ignored.

    A response whose result is not 0 may stop after the common 8-byte header
    (:class:`NatPmpErrorResponse`).

    Raises:
        NatPmpError: not a version-0 NAT-PMP response of a known opcode, or too short.

    >>> decode_natpmp_response(bytes.fromhex("0080000000000010cb007107")).address
    IPv4Address('203.0.113.7')
    >>> decode_natpmp_response(bytes.fromhex("0082000300000010"))
    NatPmpErrorResponse(opcode=130, result=<NatPmpResult.NETWORK_FAILURE: 3>, epoch=16)
    """
    data = bytes(data)
    if len(data) < 8:
        raise NatPmpError(f"a NAT-PMP response has at least 8 bytes, got {len(data)}")
    version, opcode = data[0], data[1]
    if version != _VERSION:
        raise NatPmpError(f"not a NAT-PMP version 0 response: version {version}")
    result = _result(int.from_bytes(data[2:4], "big"))
    epoch = int.from_bytes(data[4:8], "big")
    if opcode == _RESPONSE_BIT | _OP_ADDRESS:
        if len(data) >= 12:
            return ExternalAddressResponse(result, epoch, IPv4Address(data[8:12]))
    elif opcode in (_RESPONSE_BIT | MappingProtocol.UDP, _RESPONSE_BIT | MappingProtocol.TCP):
        if len(data) >= 16:
            return MappingResponse(
                MappingProtocol(opcode & ~_RESPONSE_BIT),
                result,
                epoch,
                int.from_bytes(data[8:10], "big"),
                int.from_bytes(data[10:12], "big"),
                int.from_bytes(data[12:16], "big"),
            )
    elif result == NatPmpResult.SUCCESS:
        # Only failures may come with another opcode (RFC 3.5's unsupported version).
        raise NatPmpError(f"not a NAT-PMP response: opcode {opcode}")
    if result == NatPmpResult.SUCCESS:
        raise NatPmpError(f"a successful NAT-PMP response of opcode {opcode} is too short")
    return NatPmpErrorResponse(opcode, result, epoch)


def decode_natpmp_request(data: bytes) -> NatPmpRequest:
    """Decode a packet a client sent (what a gateway, or a test's fake one, reads).

    Raises:
        NatPmpError: not a version-0 NAT-PMP request of a known opcode and length.

    >>> request = decode_natpmp_request(bytes.fromhex("000200001ae11ae100000e10"))
    >>> request.protocol, request.internal_port, request.suggested_external_port, request.lifetime
    (<MappingProtocol.TCP: 2>, 6881, 6881, 3600)
    """
    data = bytes(data)
    if len(data) < 2 or data[0] != _VERSION:
        raise NatPmpError("not a NAT-PMP version 0 request")
    opcode = data[1]
    if opcode == _OP_ADDRESS and len(data) == 2:
        return ExternalAddressRequest()
    if opcode in (MappingProtocol.UDP, MappingProtocol.TCP) and len(data) == 12:
        return MappingRequest(
            MappingProtocol(opcode),
            int.from_bytes(data[4:6], "big"),
            int.from_bytes(data[6:8], "big"),
            int.from_bytes(data[8:12], "big"),
        )
    raise NatPmpError(f"not a NAT-PMP request: opcode {opcode}, {len(data)} bytes")


NatPmpEvent = PortMappingEvent
"""The NAT-PMP name of :class:`PortMappingEvent`, kept for the code that uses it."""


@dataclass(frozen=True, slots=True)
class NatPmpAddressChanged(NatPmpEvent):
    """The gateway's external address was learnt, or changed (for an IPv6 gateway, the
    address its pinholes open: our own global address, unless the firewall translates it).

    Attributes:
        address: the new address.
    """

    address: IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class NatPmpAddressFailed(NatPmpEvent):
    """An external address request failed; it is tried again at ``retry_at``.

    Attributes:
        result: the gateway's result code, or None when it did not answer (or answered
            0.0.0.0: it has no address yet).
        retry_at: when the address is asked again.
    """

    result: NatPmpResult | int | None
    retry_at: float


@dataclass(frozen=True, slots=True)
class GatewayReset(NatPmpEvent):
    """The gateway's epoch went back (RFC 6886 3.6, RFC 6887 8.5): it lost its mappings;
    they are asked again, one at a time after a random delay of up to
    :data:`NATPMP_RESET_DELAY_MAX` seconds, or at the end of
    :data:`NATPMP_RESET_INTERVAL` after the last such recreation (a grant stays shown until
    granted again or run out: a NAT-PMP reset may be forged). Every reset is this event; only
    the first of a run is logged at INFO, the held or merged ones at DEBUG, so that forged
    ones cannot fill the log.

    Attributes:
        epoch: the SSSoE (NAT-PMP) or epoch time (PCP) that showed it.
        expected: the least one we would have believed.
    """

    epoch: int
    expected: float


@dataclass(frozen=True, slots=True)
class NatPmpStatistics:
    """A snapshot of a :class:`NatPmpClient`'s counters.

    Attributes:
        sent: datagrams sent, retransmissions included.
        retransmitted: datagrams sent again for want of an answer.
        received: datagrams accepted as answers (announcements are counted in ``hints``
            and ``announcements_ignored``).
        wrong_source: datagrams dropped for not coming from the gateway's address and port.
        malformed: datagrams dropped for not decoding, or for a success that makes no sense.
        unexpected: well-formed datagrams dropped for answering no request in flight (a
            PCP answer with another nonce among them).
        timeouts: requests that went unanswered through every retransmission.
        gateway_resets: times the epoch rule found the gateway had lost its state.
        protocol: what the gateway is talked to in, None while not known yet
            (:attr:`NatPmpClient.protocol`).
        hints: the gateway's announcements (unasked, from its address and port, well
            formed) acted on: each brought a request forward, whose answer tells.
        announcements_ignored: the gateway's announcements not acted on: within
            :data:`NATPMP_HINT_INTERVAL` of the last one acted on, while the protocol is
            negotiated, closed, or with the answer that would tell under way or due anyway
            (a dual-stack router's NAT-PMP announcements under PCP are hints too).
    """

    sent: int
    retransmitted: int
    received: int
    wrong_source: int
    malformed: int
    unexpected: int
    timeouts: int
    gateway_resets: int
    protocol: GatewayProtocol | None = None
    hints: int = 0
    announcements_ignored: int = 0


class _State(enum.Enum):
    WANTED = "wanted"  # to be requested at ``due`` (new, or failed and retried)
    MAPPED = "mapped"  # granted; renewed at ``due``
    REMOVING = "removing"  # to be deleted at ``due``


class _Speaking(enum.Enum):
    PROBING = "probing"  # PCP requests out, no PCP answer yet
    PCP = "pcp"
    NATPMP = "natpmp"


class _Mapping:
    __slots__ = (
        "due",
        "earlier_nonces",
        "expires_at",
        "external_port",
        "failures",
        "id",
        "internal_port",
        "lifetime",
        "maybe_on_gateway",
        "natpmp_asked",
        "nonce",
        "pcp_grant",
        "protocol",
        "state",
        "suggested_port",
    )

    def __init__(
        self, mapping_id: MappingId, protocol: MappingProtocol, internal: int, external: int
    ) -> None:
        self.id = mapping_id
        self.protocol = protocol
        self.internal_port = internal
        self.suggested_port = external  # the wanted port, then the port last granted
        self.external_port: int | None = None
        self.lifetime = 0
        self.expires_at: float | None = None
        self.state = _State.WANTED
        self.due = -math.inf
        self.failures = 0
        # Once a request went out, the gateway may hold the mapping though no answer came:
        # removing it then needs a deletion.
        self.maybe_on_gateway = False
        self.natpmp_asked = False  # a NAT-PMP request for it went out
        self.nonce: bytes | None = None  # PCP's mapping nonce, drawn for its first PCP request
        # The nonces it had under our earlier addresses (a few): under a new address it is a
        # new PCP mapping with a nonce of its own (an answer to the old address's request then
        # matches nothing), and back under an old one it takes that one's again (the gateway
        # may still hold that mapping: another nonce would be refused NOT_AUTHORIZED, RFC 6887
        # 11.3).
        self.earlier_nonces: dict[IPv4Address | IPv6Address, bytes] = {}
        # The standing grant came from a PCP answer: it is deleted in PCP (RFC 6887 15), a
        # NAT-PMP one in NAT-PMP, whatever is spoken by then.
        self.pcp_grant = False

    def snapshot(self) -> PortMapping:
        return PortMapping(
            self.id,
            self.protocol,
            self.internal_port,
            self.external_port,
            self.lifetime,
            self.expires_at,
        )


class _Kind(enum.Enum):
    ADDRESS = "address"
    MAP = "map"
    DELETE = "delete"


class _Request:
    __slots__ = (
        "attempts",
        "kind",
        "mapping",
        "max_attempts",
        "next_at",
        "payload",
        "pcp",
        "probe",
        "resend",
    )

    def __init__(
        self,
        kind: _Kind,
        mapping: _Mapping | None,
        payload: bytes,
        *,
        pcp: bool = False,
        probe: bool = False,
    ) -> None:
        self.kind = kind
        self.mapping = mapping
        self.payload = payload
        self.pcp = pcp  # a PCP request (else NAT-PMP)
        self.probe = probe  # sent while the gateway's protocol is unknown
        # Deletions are tried fewer times (RFC 6886, 3.1): a gateway that does not answer
        # lets the mapping expire anyway. A probe gives up sooner: silence then means a
        # gateway that drops PCP, and NAT-PMP is tried.
        self.max_attempts = NATPMP_DELETE_ATTEMPTS if kind is _Kind.DELETE else NATPMP_MAX_ATTEMPTS
        if probe:
            self.max_attempts = min(self.max_attempts, PCP_PROBE_ATTEMPTS)
        self.attempts = 0  # sends so far
        self.next_at = -math.inf  # when the next send is due (or the request times out)
        self.resend = True  # a send is owed: the first, or a retransmission


_Result = NatPmpResult | PcpResult | int | None

_NATPMP_TRANSIENT: Final = frozenset({NatPmpResult.NETWORK_FAILURE, NatPmpResult.OUT_OF_RESOURCES})
_PCP_TRANSIENT: Final = frozenset(
    {
        PcpResult.NETWORK_FAILURE,
        PcpResult.NO_RESOURCES,
        PcpResult.USER_EX_QUOTA,
        PcpResult.CANNOT_PROVIDE_EXTERNAL,
    }
)


def _transient(result: _Result) -> bool:
    # The two protocols number their codes apart (PCP's 3 is MALFORMED_REQUEST, NAT-PMP's a
    # network failure), and IntEnums compare by value: the class tells which a code is. A
    # plain int is a code neither defines: fatal to the request (RFC 6886 3.5).
    if result is None:
        return True
    if isinstance(result, PcpResult):
        return result in _PCP_TRANSIENT
    return isinstance(result, NatPmpResult) and result in _NATPMP_TRANSIENT


def _result_name(result: _Result) -> str:
    return result.name if isinstance(result, enum.IntEnum) else f"result code {result}"


class NatPmpClient:
    """A port mapping client for one gateway, speaking PCP or NAT-PMP; see the module
    docstring.

    Args:
        gateway: the gateway's IPv4 address (the default route's gateway, RFC 3); or the
            IPv6 default router's address (without its scope: the shell keeps it), which
            is then asked in PCP alone for pinholes (see the module docstring).
        port: the gateway's NAT-PMP and PCP port: 5351 but in tests.
        lifetime: seconds of lifetime each mapping asks for (1..2**32-1).
        rng: picks the random delay before mappings are recreated after a gateway reset,
            and PCP's mapping nonces and renewal times.
        pcp: talk PCP first (RFC 6887), falling back to NAT-PMP; False: NAT-PMP alone
            (refused with an IPv6 gateway: NAT-PMP has no IPv6).
        client_address: our address toward the gateway (the source address of our
            requests), which PCP requests carry (RFC 6887 8.1); needed when ``pcp`` is on.
            Of the gateway's family: with an IPv6 gateway, the global IPv6 address the
            pinholes are for (not IPv4-mapped). It may change (DHCP):
            :meth:`set_client_address` gives it afresh.

    Raises:
        LocalProtocolError: a bad argument (PCP on without a client address among them).
    """

    def __init__(
        self,
        gateway: IPv4Address | IPv6Address,
        *,
        port: int = NATPMP_PORT,
        lifetime: int = NATPMP_LIFETIME,
        rng: random.Random | None = None,
        pcp: bool = True,
        client_address: IPv4Address | IPv6Address | None = None,
    ) -> None:
        if isinstance(gateway, IPv6Address):
            if gateway.ipv4_mapped is not None or gateway.scope_id is not None:
                raise LocalProtocolError(
                    f"an IPv6 PCP gateway is neither IPv4-mapped nor scoped, got {gateway}"
                )
            if pcp is not True:
                raise LocalProtocolError("NAT-PMP has no IPv6: an IPv6 gateway needs pcp=True")
        elif not isinstance(gateway, IPv4Address):
            raise LocalProtocolError(f"a NAT-PMP gateway is an IPv4Address, got {gateway!r}")
        if _check_uint("a port", port, 16) == 0:
            raise LocalProtocolError("a gateway port is in 1..65535, got 0")
        if _check_uint("a lifetime", lifetime, 32) == 0:
            raise LocalProtocolError("a mapping lifetime is at least 1 s")
        if not isinstance(pcp, bool):
            raise LocalProtocolError(f"pcp is a bool, got {pcp!r}")
        # An IPv6 gateway: PCP alone, for pinholes (RFC 6887 with an IPv6 client address).
        self._pcp_only = isinstance(gateway, IPv6Address)
        if client_address is not None:
            self._check_client_address(client_address, unspecified=True)
        if pcp and (client_address is None or client_address.is_unspecified):
            raise LocalProtocolError(
                "PCP needs client_address, our address toward the gateway (or pcp=False)"
            )
        self._gateway = PeerAddress(gateway, port)
        self._lifetime = lifetime
        self._rng = rng if rng is not None else random.Random()
        self._pcp = pcp
        self._client_address = client_address
        self._speaking = _Speaking.PROBING if pcp else _Speaking.NATPMP
        self._pcp_retry_at = math.inf  # after a fallback: when PCP is tried again
        self._refused_pcp = False  # the gateway itself answered that it does not speak PCP
        # Our address the gateway refused (ADDRESS_MISMATCH) before the fallback under way:
        # given another one, PCP is spoken again at once.
        self._mismatched: IPv4Address | IPv6Address | None = None
        # While NAT-PMP is spoken: whether the gateway speaks PCP all the same (a fallback
        # for ADDRESS_MISMATCH), so that its PCP grants are still deleted in PCP.
        self._pcp_deletions = False
        # What was spoken before the probe under way (None: the first one).
        self._probed_from: _Speaking | None = None
        # The probe that went unanswered before a fallback to NAT-PMP: a slow PCP router's
        # late answer to it (its nonce proves it) brings PCP back.
        self._late_probe: _Request | None = None
        self._client_address_stale = False  # a probe is starting, or ADDRESS_MISMATCH
        self._mappings: dict[MappingId, _Mapping] = {}
        self._next_id = 1
        self._request: _Request | None = None
        self._events: deque[NatPmpEvent] = deque()
        self._address: IPv4Address | IPv6Address | None = None
        # PCP alone (an IPv6 gateway): its silence, or "unsupported version", is said at
        # INFO once until it answers PCP (a router without PCP is the common case there).
        self._told_no_pcp = False
        # NAT-PMP's address request; PCP has none (its MAP answers carry the address).
        self._address_due: float | None = -math.inf  # None: not to be asked (closed)
        self._address_failures = 0
        # The last epoch of each protocol (True: PCP's), with when it came (RFC 6886 3.6,
        # RFC 6887 8.5): one reference per protocol, kept across switches.
        self._epochs: dict[bool, tuple[int, float]] = {}
        self._closed = False
        self._sent = 0
        self._retransmitted = 0
        self._received = 0
        self._wrong_source = 0
        self._malformed = 0
        self._unexpected = 0
        self._timeouts = 0
        self._resets = 0
        self._hints = 0
        self._ignored = 0
        self._hinted_at = -math.inf  # when the last hint acted on brought its request
        # When the last recreation of every mapping for a reset was due (or is: a reset
        # meanwhile is merged into it); the next one no sooner than NATPMP_RESET_INTERVAL on.
        self._recreated_at = -math.inf

    # -- what the caller wants -------------------------------------------------------------

    @property
    def gateway(self) -> PeerAddress:
        """Where requests go, and the only source answers are taken from."""
        return self._gateway

    @property
    def external_address(self) -> IPv4Address | IPv6Address | None:
        """The gateway's external address, None until known. Over PCP it comes with a MAP
        grant alone: a PCP router that refuses every MAP never tells it (NAT-PMP's address
        request is no PCP request). For an IPv6 gateway, the address its pinholes open."""
        return self._address

    @property
    def family(self) -> Literal[4, 6]:
        """The gateway's address family: 4, or 6 for an IPv6 firewall asked in PCP alone
        for pinholes."""
        return 6 if self._pcp_only else 4

    @property
    def protocol(self) -> GatewayProtocol | None:
        """What the gateway is talked to in: ``"pcp"`` or ``"natpmp"``, None while PCP
        requests are out and unanswered (the gateway's protocol is not known yet). It stays
        None with a gateway answering UNSUPP_VERSION for a version we do not speak (PCP's
        1): its refusals come hourly, with nothing to fall back to."""
        if self._speaking is _Speaking.PCP:
            return "pcp"
        if self._speaking is _Speaking.NATPMP:
            return "natpmp"
        return None

    @property
    def client_address(self) -> IPv4Address | IPv6Address | None:
        """Our address toward the gateway, which PCP requests carry (None with PCP off and
        none given)."""
        return self._client_address

    @property
    def client_address_stale(self) -> bool:
        """Whether our address toward the gateway should be read again and given to
        :meth:`set_client_address` before the next :meth:`datagrams_to_send`: a PCP probe
        is starting (the hourly retry, after a reset or a silent PCP gateway), or the
        gateway answered ADDRESS_MISMATCH (our address changed since it was read)."""
        return self._client_address_stale

    def set_client_address(self, address: IPv4Address | IPv6Address) -> None:
        """Give our address toward the gateway afresh (it may have changed, DHCP): PCP
        requests carry it from their next send on. Clears :attr:`client_address_stale`
        (the same address again, when it could not be read, clears it too).

        Another address than the one held asks for every mapping again at once, those
        granted included, in the protocol spoken: a mapping forwards to the address it was
        made for (PCP's client address, NAT-PMP's request source), which may be gone (a
        DHCP renewal, a deprecated temporary IPv6 address, a renumbered prefix), and a
        renewal would only keep it so. Their grants stay shown until granted again or run
        out. The first address given (none held) is no change. After a fallback for
        ADDRESS_MISMATCH, another address than the refused one brings PCP back at once.

        Raises:
            LocalProtocolError: not an address of the gateway's family (an IPv4Address, or
                for an IPv6 gateway an IPv6Address that is not IPv4-mapped), or
                unspecified.
        """
        self._check_client_address(address)
        held = self._client_address
        if address != held:
            _log.info(
                "%s gateway %s: our address toward it is %s", self._label, self._gateway, address
            )
        self._client_address = address
        self._client_address_stale = False
        refused = self._mismatched
        if refused is not None and address != refused and self._speaking is _Speaking.NATPMP:
            # The gateway refused our old address, not PCP: a PCP-only router would refuse
            # NAT-PMP for an hour (no ping-pong), with nothing mapped meanwhile.
            _log.info("PCP gateway %s: PCP again, from our new address", self._gateway)
            self._switch(_Speaking.PCP)
        if held is not None and address != held:
            self._moved(held, address)

    def _moved(self, held: IPv4Address | IPv6Address, address: IPv4Address | IPv6Address) -> None:
        """Our address changed: every mapping, granted or not, is asked for the new one at
        once, for both families and both protocols (one rule).

        A grant forwards to the address it was made for: PCP's client address (RFC 6887
        11.1; the server checks it against the packets' source, 8.1), NAT-PMP's request
        source (RFC 6886 3.3). A renewal carrying our old address would be refused
        ADDRESS_MISMATCH or, worse, keep forwarding to an address nothing reaches any more
        for up to half a lifetime; NAT-PMP has no address to carry: the same request from
        the new source is a new mapping, the old one running out on the gateway (nothing
        can delete it from another address). The grants stay shown until granted again
        (the port may differ: :class:`PortMapped`) or run out, as after a reset. The
        mapping request in flight starts over (its answer is for the old address; IPv6's
        comes to the socket bound to it), and a slow PCP router's late answer to a probe
        (a grant for the old address too) is no longer taken: it is counted as
        unexpected. Deletions go on as they were: advisory.

        Each mapping takes the PCP nonce it had under ``address`` before, else a new one:
        under another client address it is another PCP mapping (RFC 6887 11.1), and an
        answer to the request that carried ``held`` (an ADDRESS_MISMATCH on its way) must
        not match the one that carries ``address``."""
        self._mismatched = None
        self._late_probe = None
        request = self._request
        if request is not None and request.kind is _Kind.MAP:
            self._request = None
        for m in self._mappings.values():
            if m.state is not _State.REMOVING:
                m.due = -math.inf
                if m.nonce is not None:
                    earlier = m.earlier_nonces
                    earlier[held] = m.nonce
                    while len(earlier) > _EARLIER_NONCES:
                        del earlier[next(iter(earlier))]
                m.nonce = m.earlier_nonces.pop(address, None)

    def _check_client_address(self, address: object, *, unspecified: bool = False) -> None:
        if self._pcp_only:
            if not isinstance(address, IPv6Address) or address.ipv4_mapped is not None:
                raise LocalProtocolError(
                    f"a client address of an IPv6 gateway is an IPv6Address, got {address!r}"
                )
        elif not isinstance(address, IPv4Address):
            raise LocalProtocolError(f"a client address is an IPv4Address, got {address!r}")
        if address.is_unspecified and not unspecified:
            raise LocalProtocolError(f"a client address is specified, got {address}")

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called and every deletion is done."""
        return self._closed and not self._mappings and self._request is None

    def mappings(self) -> tuple[PortMapping, ...]:
        """Snapshots of the mappings not yet removed, in the order they were added."""
        return tuple(m.snapshot() for m in self._mappings.values())

    def add_mapping(
        self,
        protocol: MappingProtocol,
        internal_port: int,
        now: float,
        *,
        external_port: int | None = None,
    ) -> MappingId:
        """Ask for ``internal_port`` to be forwarded; it is kept mapped until removed.

        Args:
            protocol: UDP or TCP.
            internal_port: our listening port (1..65535).
            now: the current time.
            external_port: the external port to suggest (0: the gateway's choice); by
                default the internal port.

        Raises:
            LocalProtocolError: a bad argument, the client closed, :data:`NATPMP_MAX_MAPPINGS`
                mappings held, or this protocol and port mapped already.
        """
        _check_protocol(protocol)
        if _check_uint("an internal port", internal_port, 16) == 0:
            raise LocalProtocolError("an internal port is in 1..65535, got 0")
        suggested = internal_port if external_port is None else external_port
        _check_uint("an external port", suggested, 16)
        if self._closed:
            raise LocalProtocolError("the NAT-PMP client is closed")
        if len(self._mappings) >= NATPMP_MAX_MAPPINGS:
            raise LocalProtocolError(
                f"a NAT-PMP client holds at most {NATPMP_MAX_MAPPINGS} mappings"
            )
        for m in self._mappings.values():
            if m.protocol is protocol and m.internal_port == internal_port:
                raise LocalProtocolError(f"{protocol.name} port {internal_port} is mapped already")
        mapping_id = MappingId(self._next_id)
        self._next_id += 1
        mapping = _Mapping(mapping_id, protocol, internal_port, suggested)
        mapping.due = now
        self._mappings[mapping_id] = mapping
        return mapping_id

    def remove_mapping(self, mapping_id: MappingId, now: float) -> None:
        """Stop keeping a mapping, deleting it on the gateway if it may be there.

        :class:`MappingRemoved` follows, at once or when the deletion is done. Removing a
        mapping already being removed does nothing.

        Raises:
            LocalProtocolError: no such mapping.
        """
        mapping = self._mappings.get(mapping_id)
        if mapping is None:
            raise LocalProtocolError(f"no NAT-PMP mapping {mapping_id!r}")
        if mapping.state is _State.REMOVING:
            return
        request = self._request
        if request is not None and request.mapping is mapping:
            # Its request is dropped: a late answer to it counts as unexpected.
            self._request = None
        expired = mapping.expires_at is not None and mapping.expires_at <= now
        # No PCP answer yet: a mapping asked for only in PCP is most likely on no gateway
        # (one that drops PCP holds nothing; a PCP one whose answer was lost lets it expire).
        unanswered = (
            self._speaking is _Speaking.PROBING
            and not mapping.natpmp_asked
            and mapping.expires_at is None
        )
        if not mapping.maybe_on_gateway or expired or unanswered:
            # Nothing to delete: never asked for, or gone anyway (RFC 3.1: no deletion
            # needs trying past the time the mapping would have expired).
            self._drop(mapping, None)
            return
        mapping.state = _State.REMOVING
        mapping.due = now

    def close(self, now: float) -> None:
        """Remove every mapping and stop asking for the address; :attr:`is_closed` says when
        the deletions are done. Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        self._address_due = None
        if self._request is not None and self._request.kind is _Kind.ADDRESS:
            self._request = None
        if self._speaking is _Speaking.PROBING and self._probed_from is _Speaking.NATPMP:
            # Re-probing a gateway known to speak NAT-PMP (the hourly retry, a reset): the
            # deletions go the known way at once. A router silent to PCP would otherwise
            # hold them back 1.75 s, most of the shell's close timeout. The probe itself
            # most likely reached a router that drops PCP: what only it asked for is not
            # there.
            _log.info("PCP gateway %s: closing, back to NAT-PMP", self._gateway)
            self._switch(_Speaking.NATPMP)
            self._forget_pcp_only()
        for mapping_id in list(self._mappings):
            self.remove_mapping(mapping_id, now)

    def statistics(self) -> NatPmpStatistics:
        """A snapshot of the counters."""
        return NatPmpStatistics(
            sent=self._sent,
            retransmitted=self._retransmitted,
            received=self._received,
            wrong_source=self._wrong_source,
            malformed=self._malformed,
            unexpected=self._unexpected,
            timeouts=self._timeouts,
            gateway_resets=self._resets,
            protocol=self.protocol,
            hints=self._hints,
            announcements_ignored=self._ignored,
        )

    def next_event(self) -> NatPmpEvent | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    # -- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` (then :meth:`datagrams_to_send`) has work, or None."""
        lapses = [
            m.expires_at
            for m in self._mappings.values()
            if m.state is _State.WANTED and m.expires_at is not None
        ]
        if self._request is not None:
            return min([self._request.next_at, *lapses])
        dues = [m.due for m in self._mappings.values()] + lapses
        if self._address_due is not None and self._speaking is _Speaking.NATPMP:
            dues.append(self._address_due)
        return min(dues, default=None)

    def handle_timer(self, now: float) -> None:
        """Let time pass: owe a retransmission, time the request in flight out, let an
        earlier grant whose renewal failed run out, or start probing PCP again (then
        :attr:`client_address_stale` is set)."""
        for m in self._mappings.values():
            if m.state is _State.WANTED and m.expires_at is not None and m.expires_at <= now:
                self._grant_lapsed(m, now)
        self._time_request(now)
        self._maybe_reprobe(now)

    def _time_request(self, now: float) -> None:
        request = self._request
        if request is None or now < request.next_at or request.resend:
            return
        if request.attempts < request.max_attempts:
            request.resend = True
            return
        self._request = None
        if request.probe and self._speaking is _Speaking.PROBING:
            # Silence to PCP: an RFC 6886 router drops a version it does not know (our
            # rule; libtorrent waits for an explicit answer). A slow PCP router's late
            # answer to this probe still counts (_late_answer).
            self._fall_back(now, "did not answer PCP", answered=False)
            self._late_probe = request
            return
        mapping = request.mapping
        if request.kind is _Kind.DELETE:
            assert mapping is not None
            _log.debug(
                "%s deletion of %s port %d unanswered",
                self._label,
                mapping.protocol.name,
                mapping.internal_port,
            )
            self._drop(mapping, None)
            return
        self._timeouts += 1
        if self._pcp_only and self._speaking is _Speaking.PROBING:
            self._no_pcp(f"did not answer {request.attempts} PCP requests")
        else:
            _log.info(
                "%s gateway %s did not answer %d requests",
                self._label,
                self._gateway,
                request.attempts,
            )
        # The gateway is silent: every request already due fails with this one.
        if request.kind is _Kind.ADDRESS or (
            self._speaking is _Speaking.NATPMP
            and self._address_due is not None
            and self._address_due <= now
        ):
            self._address_failed(None, now)
        if mapping is not None:
            self._mapping_failed(mapping, None, now)
        for other in list(self._mappings.values()):
            if other.due <= now:
                if other.state is _State.REMOVING:
                    self._drop(other, None)
                else:
                    self._mapping_failed(other, None, now)
        if self._speaking is _Speaking.PCP:
            # A PCP gateway gone silent may have been swapped for one that drops PCP: the
            # next request probes again, and falls back to NAT-PMP if need be. Its epoch
            # is kept: a router silent while it rebooted is the likelier case, and its
            # answer then shows the reset, so that every mapping is made again at once (a
            # new router's unrelated clock costs one needless round of recreations).
            self._switch(_Speaking.PROBING)

    def _maybe_reprobe(self, now: float) -> None:
        """The long retry after a fallback, or a gateway reset, is due: a firmware update
        may have brought PCP; the requests due probe it."""
        if (
            self._pcp_retry_at <= now
            and self._request is None
            and not self._closed  # closing: the deletions go the known way, not probing
            and any(m.due <= now for m in self._mappings.values())
        ):
            self._switch(_Speaking.PROBING)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, PeerAddress]]:
        """The datagram owed now (a request falling due, or a retransmission), if any."""
        request = self._request
        if request is None:
            request = self._request = self._start_next(now)
            if request is None:
                return []
        if not request.resend:
            return []
        if request.pcp and request.mapping is not None:
            # Built at each send: the client address may have been given afresh.
            lifetime = 0 if request.kind is _Kind.DELETE else self._lifetime
            request.payload = self._pcp_request(request.mapping, lifetime)
        request.resend = False
        if request.attempts:
            self._retransmitted += 1
        request.next_at = now + math.ldexp(NATPMP_INITIAL_TIMEOUT, request.attempts)
        request.attempts += 1
        self._sent += 1
        if request.mapping is not None:
            request.mapping.maybe_on_gateway = True
            if not request.pcp:
                request.mapping.natpmp_asked = True
        return [(request.payload, self._gateway)]

    def _start_next(self, now: float) -> _Request | None:
        removing: _Mapping | None = None
        wanted: _Mapping | None = None
        for m in self._mappings.values():
            if m.due > now:
                continue
            if m.state is _State.REMOVING:
                if removing is None or m.due < removing.due:
                    removing = m
            elif wanted is None or m.due < wanted.due:
                wanted = m
        self._maybe_reprobe(now)  # when the caller did not let time pass first
        # Without NAT-PMP to fall back to (IPv6), a request while the protocol is unknown
        # is retransmitted through the whole schedule, as any other.
        probe = self._speaking is _Speaking.PROBING and not self._pcp_only
        if removing is not None:
            # Deleted in the protocol that granted it (RFC 6887 15: a PCP server may refuse
            # a MAP deletion of a NAT-PMP mapping); without a grant, in the one spoken. A
            # PCP grant after a fallback that showed no PCP (silence, "unsupported
            # version"): in NAT-PMP, as what the gateway speaks now (a PCP deletion would
            # go unanswered or be refused, and a router sharing one table takes it).
            speaks_pcp = self._speaking is not _Speaking.NATPMP or self._pcp_deletions
            if removing.expires_at is not None:
                in_pcp = removing.pcp_grant and speaks_pcp
            else:
                in_pcp = self._speaking is not _Speaking.NATPMP
            if in_pcp:
                payload = self._pcp_request(removing, 0)
                return _Request(_Kind.DELETE, removing, payload, pcp=True, probe=probe)
            payload = MappingRequest(removing.protocol, removing.internal_port, 0, 0).encode()
            return _Request(_Kind.DELETE, removing, payload)
        if self._speaking is not _Speaking.NATPMP:
            if wanted is not None:
                payload = self._pcp_request(wanted, self._lifetime)
                return _Request(_Kind.MAP, wanted, payload, pcp=True, probe=probe)
            return None
        if self._address_due is not None and self._address_due <= now:
            return _Request(_Kind.ADDRESS, None, ExternalAddressRequest().encode())
        if wanted is not None:
            payload = MappingRequest(
                wanted.protocol, wanted.internal_port, wanted.suggested_port, self._lifetime
            ).encode()
            return _Request(_Kind.MAP, wanted, payload)
        return None

    def _pcp_request(self, mapping: _Mapping, lifetime: int) -> bytes:
        if mapping.nonce is None:
            mapping.nonce = self._rng.randbytes(PCP_NONCE_SIZE)
        assert self._client_address is not None  # the constructor saw to it
        # Suggest what was granted (port and address), so that a renewal, or the request
        # after a server restart, gets the same back (RFC 6887 11.1).
        return PcpMapRequest(
            lifetime,
            self._client_address,
            mapping.nonce,
            mapping.protocol,
            mapping.internal_port,
            mapping.suggested_port,
            self._address or (IPv6Address(0) if self._pcp_only else IPv4Address(0)),
        ).encode()

    # -- the protocol spoken ---------------------------------------------------------------

    @property
    def _label(self) -> str:
        return "NAT-PMP" if self._speaking is _Speaking.NATPMP else "PCP"

    def _no_pcp(self, what: str) -> None:
        """An IPv6 gateway not known to speak PCP went silent or refused its version: said
        at INFO once (most routers open no pinholes on request), at DEBUG after, until it
        answers PCP."""
        level = logging.DEBUG if self._told_no_pcp else logging.INFO
        self._told_no_pcp = True
        _log.log(
            level,
            "PCP gateway %s %s: no pinholes (NAT-PMP has no IPv6); asking again later",
            self._gateway,
            what,
        )

    def _switch(self, speaking: _Speaking) -> None:
        """Talk ``speaking`` from now on. The request in flight is dropped, to start over in
        the new protocol (a late answer to it counts as unexpected). The epochs are kept:
        each protocol's is judged against its own last one."""
        if speaking is _Speaking.PROBING:
            self._probed_from = self._speaking
            self._client_address_stale = True  # read it again before the probe goes out
        self._speaking = speaking
        self._request = None
        self._late_probe = None
        self._pcp_retry_at = math.inf
        self._mismatched = None
        if speaking is not _Speaking.NATPMP:
            self._refused_pcp = False

    def _fall_back(
        self, now: float, reason: str, *, answered: bool, pcp_spoken: bool = False
    ) -> None:
        """NAT-PMP from now on, PCP tried again after :data:`NATPMP_RETRY_MAX`.

        Args:
            reason: why, for the log.
            answered: the gateway itself said so (it does not speak PCP, or refused our
                client address), rather than went silent: no ping-pong back to PCP.
            pcp_spoken: the gateway speaks PCP all the same (it refused our client
                address): its PCP grants are still deleted in PCP. Otherwise they are
                deleted in NAT-PMP while it is spoken (:meth:`_start_next` decides at
                deletion time: a late PCP answer bringing PCP back makes it PCP again for
                every PCP grant, ``pcp_grant`` staying a fact about each grant).
        """
        _log.info("PCP gateway %s %s: NAT-PMP from now on", self._gateway, reason)
        self._switch(_Speaking.NATPMP)
        self._refused_pcp = answered
        self._pcp_retry_at = now + NATPMP_RETRY_MAX
        self._pcp_deletions = pcp_spoken
        self._forget_pcp_only()

    def _forget_pcp_only(self) -> None:
        """A gateway that does not speak PCP (or refused it) holds nothing a PCP request
        asked for: a mapping with no grant standing and no NAT-PMP request sent needs no
        deletion."""
        for m in list(self._mappings.values()):
            if m.expires_at is None and not m.natpmp_asked:
                m.maybe_on_gateway = False
                if m.state is _State.REMOVING:
                    self._drop(m, None)

    # -- answers ---------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: PeerAddress, now: float) -> None:
        """Take a datagram that arrived from ``source`` on our own socket (an answer; an
        announcement arriving here unasked is a hint, as in :meth:`receive_announcement`);
        never raises for its content."""
        if source != self._gateway:
            self._wrong_source += 1
            return
        if self._pcp and bytes(data[:1]) != b"\x00":
            self._receive_pcp(data, now)
            return
        try:
            response = decode_natpmp_response(data)
        except NatPmpError:
            self._malformed += 1
            return
        request = self._request
        if (
            request is not None
            and request.pcp
            and response.result == NatPmpResult.UNSUPPORTED_VERSION
        ):
            # A PCP request out: a version-0 packet can only say that the gateway does not
            # speak PCP: NAT-PMP's "unsupported version" (RFC 6886 3.5), or a PCP server's
            # UNSUPP_VERSION naming version 0 (RFC 6887 9), both result 1 at bytes 2-3.
            self._natpmp_not_pcp(response, len(data), request, now)
            return
        if self._pcp_only:
            # NAT-PMP has no IPv6: nothing else in it answers us, nor is a hint.
            self._unexpected += 1
            return
        if isinstance(response, ExternalAddressResponse):
            if request is None or request.kind is not _Kind.ADDRESS:
                # Unasked: an announcement (RFC 3.2.1) sent here rather than to the group,
                # or a late repeat: a hint, as one heard on the group.
                self._announced(now)
                return
            self._accept(response.epoch, now)
            self._request = None
            self._on_address(response, now)
            return
        if request is not None and request.pcp:
            self._unexpected += 1
            return
        if isinstance(response, NatPmpErrorResponse):
            if request is None or not self._short_answers(response, request):
                self._unexpected += 1
                return
            self._refusal_epoch(request, response.epoch, now)
            self._request = None
            # No nonce in NAT-PMP: a refusal of a renewal keeps the grant (module docstring).
            self._refused(request, response.result, now, proven=False)
            return
        mapping = request.mapping if request is not None else None
        if (
            request is None
            or mapping is None
            or mapping.protocol is not response.protocol
            or mapping.internal_port != response.internal_port
        ):
            self._unexpected += 1
            return
        if response.result == NatPmpResult.SUCCESS:
            if request.kind is _Kind.DELETE and (response.external_port or response.lifetime):
                # A grant: the late answer to the request this deletion replaced.
                self._unexpected += 1
                return
            if request.kind is _Kind.MAP and not (response.external_port and response.lifetime):
                self._malformed += 1
                return
        if response.result == NatPmpResult.SUCCESS:
            self._accept(response.epoch, now)
        else:
            self._refusal_epoch(request, response.epoch, now)
        self._request = None
        if request.kind is _Kind.DELETE:
            self._drop(mapping, response.result)
        elif response.result != NatPmpResult.SUCCESS:
            self._mapping_failed(mapping, response.result, now, proven=False)
        else:
            self._granted(mapping, response.external_port, response.lifetime, now, pcp=False)

    def _refusal_epoch(self, request: _Request, epoch: int, now: float) -> None:
        """A NAT-PMP refusal's SSSoE: taken (RFC 6886 3.6) unless it refuses a mapping
        request (a mapping or its deletion).

        Such a refusal carries no nonce and may not end the grant it refuses (module
        docstring); its SSSoE is no better proven, and a forger's low one would read as a
        reboot, which brings every mapping's request forward, and be the reference the
        gateway's next answer is judged by. It is counted alone: a real reboot shows in the
        next answer taken (libtorrent reads no SSSoE at all).
        """
        if request.mapping is not None:
            self._received += 1
        else:
            self._accept(epoch, now)

    def receive_announcement(self, data: bytes, source: PeerAddress, now: float) -> None:
        """Take a datagram heard on the announcement group (224.0.0.1:5350, RFC 6886
        3.2.1, RFC 6887 14.1.1); never raises for its content.

        Only an announcement from the gateway's address and port (:attr:`gateway`: the
        server sends it from its own port, as it answers) is taken, and as a hint alone
        (see the module docstring): it brings forward the request whose answer tells
        whether the gateway rebooted or changed its address. Anything else (an answer,
        which never comes this way, or garbage) is counted and dropped.
        """
        if source != self._gateway:
            self._wrong_source += 1
            return
        data = bytes(data)
        if data[:1] == bytes((PCP_VERSION,)):
            # Read whether PCP is on or not: a dual-stack router's restart is news to a
            # NAT-PMP client too (what its address request's answer then tells).
            try:
                pcp = decode_pcp_response(data)
            except PcpError:
                self._malformed += 1
                return
            announced = isinstance(pcp, PcpAnnounceResponse) and pcp.result == PcpResult.SUCCESS
        else:
            try:
                natpmp = decode_natpmp_response(data)
            except NatPmpError:
                self._malformed += 1
                return
            # NAT-PMP has no IPv6: no announcement of an IPv6 gateway is in it.
            announced = isinstance(natpmp, ExternalAddressResponse) and not self._pcp_only
        if not announced:
            # An answer is never multicast: taken here, a forged one would need no port.
            self._unexpected += 1
            return
        self._announced(now)

    def _announced(self, now: float) -> None:
        """An unasked announcement from the gateway's address: a hint (anyone can forge
        one), acted on by bringing forward the request whose answer is believed, at most
        once per :data:`NATPMP_HINT_INTERVAL` (a hint within it merges into the last)."""
        at = max(now, self._hinted_at + NATPMP_HINT_INTERVAL)
        request = self._request
        if self._closed or self._speaking is _Speaking.PROBING:
            # Closing needs nothing; a probe's answer (or silence) settles the protocol.
            self._ignored += 1
            return
        if self._speaking is _Speaking.NATPMP:
            # The address request: its answer carries the address and the SSSoE.
            due = self._address_due
            if due is None or due <= at or (request is not None and request.kind is _Kind.ADDRESS):
                self._ignored += 1
                return
            self._address_due = at
        else:
            # A MAP answer carries the address and the epoch: one in flight tells, else a
            # renewal of a grant we hold (a restarted server lost it) is brought forward.
            if request is not None and request.pcp and request.kind is _Kind.MAP:
                self._ignored += 1
                return
            held = [
                m
                for m in self._mappings.values()
                if m.state is not _State.REMOVING and m.expires_at is not None
            ]
            if not held:  # nothing a restart could take from us
                self._ignored += 1
                return
            renewal = min(held, key=lambda m: m.due)
            if renewal.due <= at:
                self._ignored += 1
                return
            renewal.due = at
        self._hinted_at = at
        self._hints += 1
        _log.debug("%s gateway %s announced itself: asking at %.1f", self._label, self._gateway, at)

    @staticmethod
    def _short_answers(response: NatPmpErrorResponse, request: _Request) -> bool:
        # An unsupported version is answered with opcode 0 (RFC 3.5's figure) or 128; other
        # short failures carry the request's opcode with the response bit.
        if response.opcode in (_OP_ADDRESS, _RESPONSE_BIT):
            return request.mapping is None or response.result == NatPmpResult.UNSUPPORTED_VERSION
        return request.mapping is not None and response.opcode == _RESPONSE_BIT | int(
            request.mapping.protocol
        )

    def _natpmp_not_pcp(
        self, response: NatPmpResponse, size: int, request: _Request, now: float
    ) -> None:
        """A version-0 "unsupported version" answering our PCP request."""
        if size < _PCP_HEADER:  # a shorter answer is in NAT-PMP's layout
            # NAT-PMP's layout: its SSSoE is checked as any NAT-PMP answer's (RFC 6886
            # 3.6), so that a reboot just before the hourly probe is seen. A PCP server's
            # 24-byte answer naming version 0 holds a lifetime there, not an epoch.
            self._accept(response.epoch, now)
        else:
            self._received += 1
        if self._pcp_only:
            # Nothing to fall back to: a refusal (named by no nonce, so it ends no grant),
            # asked again after the long wait.
            self._no_pcp("does not speak PCP")
            self._request = None
            self._refused(request, response.result, now, proven=False)
            return
        if self._speaking is _Speaking.NATPMP:
            # A PCP grant's deletion after a fallback: the gateway speaks PCP no more, and
            # a deletion is advisory.
            self._request = None
            self._refused(request, response.result, now)
            return
        self._fall_back(now, "does not speak PCP", answered=True)

    def _receive_pcp(self, data: bytes, now: float) -> None:
        try:
            response = decode_pcp_response(data)
        except PcpError:
            self._malformed += 1
            return
        request = self._request
        if isinstance(response, PcpAnnounceResponse) and response.result != PcpResult.SUCCESS:
            # Opcode 0 with a failure: no announcement, but a header-only failure answering
            # a request of opcode 0 (our NAT-PMP address request, to a PCP-only server).
            response = PcpErrorResponse(
                PCP_VERSION, 0, response.result, response.lifetime, response.epoch
            )
        if isinstance(response, PcpAnnounceResponse):
            # RFC 6887 14.1: a server that restarted says so unasked. Never believed (nor
            # a reason to switch protocols): a hint.
            self._announced(now)
            return
        if isinstance(response, PcpErrorResponse):
            self._header_only(response, request, now)
            return
        mapping = request.mapping if request is not None and request.pcp else None
        if request is None or mapping is None or not self._names(response, mapping):
            if not self._late_answer(response, now):
                # Not our request's nonce: stale, or forged by one who cannot see our
                # requests.
                self._unexpected += 1
            return
        if not self._makes_sense(response, request.kind):
            self._senseless(request.kind)
            return
        if response.result == PcpResult.UNSUPP_VERSION:
            # Our own version, named by a server that answers in it: makes no sense, and
            # is refused like a version we do not speak.
            self._received += 1
            self._request = None
            self._refused(request, response.result, now, response.lifetime)
            return
        self._pcp_answered(response.epoch, now)
        if response.result == PcpResult.ADDRESS_MISMATCH:
            # RFC 6887 8.1, 11.4 (miniupnpd checks it): our request's client address is
            # not the packet's source (our address changed, DHCP; or a NAT between us).
            # NAT-PMP has no such field: it maps our ports at once, while the caller reads
            # our address again; PCP is tried again after the long wait.
            self._client_address_stale = True
            self._request = None
            if self._pcp_only:
                # No NAT-PMP to fall back to (IPv6): the mapping fails until our address is
                # read afresh (another one asks again at once), or the long wait is over.
                self._mismatched = self._client_address
                if request.kind is _Kind.DELETE:
                    self._drop(mapping, response.result)
                else:
                    self._mapping_failed(mapping, response.result, now, response.lifetime)
                return
            if request.kind is _Kind.DELETE:
                # Advisory: a mapping made for the old address cannot be deleted from this
                # one anyway (it expires). Dropped before the fallback, which forgets (so
                # drops) a mapping being removed that holds no grant: it is gone once, with
                # the gateway's answer as its result.
                self._drop(mapping, response.result)
            if self._speaking is not _Speaking.NATPMP:
                self._fall_back(now, "refused our client address", answered=True, pcp_spoken=True)
                self._mismatched = self._client_address  # another one brings PCP back
            return  # a mapping request starts over in NAT-PMP
        self._request = None
        if request.kind is _Kind.DELETE:
            self._drop(mapping, response.result)
        elif response.result != PcpResult.SUCCESS:
            self._mapping_failed(mapping, response.result, now, response.lifetime)
        else:
            self._pcp_granted(mapping, response, now)

    @staticmethod
    def _names(response: PcpMapResponse, mapping: _Mapping) -> bool:
        """Whether a MAP answer carries ``mapping``'s nonce, protocol and internal port
        (read before anything else in it, its result included)."""
        return (
            response.nonce == mapping.nonce
            and response.protocol is mapping.protocol
            and response.internal_port == mapping.internal_port
        )

    def _makes_sense(self, response: PcpMapResponse, kind: _Kind) -> bool:
        """A success must say what it granted (an address of the gateway's family); a
        deletion's success grants nothing."""
        if response.result != PcpResult.SUCCESS:
            return True
        if kind is _Kind.DELETE:
            return not response.lifetime
        address = response.external_address
        return bool(
            response.external_port
            and response.lifetime
            and isinstance(address, IPv6Address if self._pcp_only else IPv4Address)
            and not address.is_unspecified
        )

    def _senseless(self, kind: _Kind) -> None:
        if kind is _Kind.DELETE:
            # A grant: the late answer to the request this deletion replaced.
            self._unexpected += 1
        else:
            self._malformed += 1

    def _pcp_granted(self, mapping: _Mapping, response: PcpMapResponse, now: float) -> None:
        self._set_address(response.external_address)  # of our family: _makes_sense saw to it
        self._granted(mapping, response.external_port, response.lifetime, now, pcp=True)

    def _header_only(
        self, response: PcpErrorResponse, request: _Request | None, now: float
    ) -> None:
        """A failure with the common header alone: it names no nonce, so anyone able to
        send from the gateway's address could have sent it. Taken only as UNSUPP_VERSION
        (version negotiation) or MALFORMED_REQUEST of opcode MAP answering a PCP request
        (the two failures a server may have to answer without the body, RFC 6887 7.2, 9)."""
        if request is None:
            self._unexpected += 1
            return
        if response.result == PcpResult.UNSUPP_VERSION:
            self._unsupported_version(response, request, now)
            return
        if (
            response.result != PcpResult.MALFORMED_REQUEST
            or response.opcode != _PCP_OP_MAP
            or not request.pcp
            or request.mapping is None
        ):
            self._unexpected += 1
            return
        # A PCP answer to our PCP request: the gateway speaks PCP. Its epoch is not taken:
        # no better proven than the failure, a forger's 0 would read as a restart (every
        # grant kept through a failed renewal lapsed, this one's too) and be the reference
        # the gateway's next answer is judged by (a second reset).
        self._received += 1
        self._speaks_pcp()
        self._request = None
        self._refused(request, response.result, now, response.lifetime, proven=False)

    def _late_answer(self, response: PcpMapResponse, now: float) -> bool:
        """Whether ``response`` answers the probe that went unanswered before a fallback:
        a slow PCP router (its nonce proves it), then talked PCP again, the mapping it
        granted kept (so deleted in PCP)."""
        late = self._late_probe
        mapping = late.mapping if late is not None else None
        if (
            late is None
            or mapping is None
            or self._mappings.get(mapping.id) is not mapping
            or not self._names(response, mapping)
        ):
            return False
        if not self._makes_sense(response, late.kind):
            self._senseless(late.kind)
            return True
        _log.info("PCP gateway %s answered PCP late: PCP from now on", self._gateway)
        self._switch(_Speaking.PCP)  # the NAT-PMP request in flight starts over in PCP
        self._accept(response.epoch, now, pcp=True)
        mapping.maybe_on_gateway = True
        if (
            late.kind is _Kind.MAP
            and response.result == PcpResult.SUCCESS
            and mapping.state is not _State.REMOVING
        ):
            self._pcp_granted(mapping, response, now)
        # Else a refusal, to be heard again when the request is made anew in PCP; or a
        # mapping being removed, which the deletion now reaches in PCP.
        return True

    def _pcp_answered(self, epoch: int, now: float) -> None:
        """A PCP answer to our request, matched on its nonce: the gateway speaks PCP, and
        its epoch is checked."""
        self._speaks_pcp()
        self._accept(epoch, now, pcp=True)

    def _speaks_pcp(self) -> None:
        """A PCP answer to our PCP request came: a probe has its answer."""
        self._told_no_pcp = False
        if self._speaking is _Speaking.PROBING:
            _log.info("PCP gateway %s speaks PCP", self._gateway)
            self._speaking = _Speaking.PCP

    def _unsupported_version(
        self, response: PcpErrorResponse, request: _Request, now: float
    ) -> None:
        self._received += 1
        if not request.pcp and response.version == PCP_VERSION and not self._refused_pcp:
            # Our NAT-PMP request answered in PCP: the server speaks PCP alone (RFC 6887 9).
            if self._speaking is _Speaking.NATPMP:
                _log.info("PCP gateway %s speaks PCP alone", self._gateway)
                self._switch(_Speaking.PCP)  # the request starts over in PCP...
            self._request = None
            if request.kind is _Kind.DELETE and request.mapping is not None:
                # ...but a NAT-PMP grant's deletion: a server speaking PCP alone no longer
                # holds it (and a deletion is advisory).
                self._drop(request.mapping, response.result)
            return
        # A version we do not speak (PCP's 1, a future one), or a gateway that refused PCP
        # and now NAT-PMP too: a refusal, tried again after the long wait (no ping-pong).
        self._request = None
        self._refused(request, response.result, now, response.lifetime, proven=False)

    def _refused(
        self,
        request: _Request,
        result: _Result,
        now: float,
        lifetime: int = 0,
        *,
        proven: bool = True,
    ) -> None:
        """The request in flight was refused (see :meth:`_mapping_failed` for ``proven``)."""
        if request.mapping is None:
            self._address_failed(result, now)
        elif request.kind is _Kind.DELETE:
            self._drop(request.mapping, result)
        else:
            self._mapping_failed(request.mapping, result, now, lifetime, proven=proven)

    def _accept(self, epoch: int, now: float, *, pcp: bool = False) -> None:
        """An answer's epoch, checked against the last one of the same protocol."""
        self._received += 1
        reference = self._epochs.get(pcp)
        self._epochs[pcp] = (epoch, now)
        if reference is None:
            return
        last, last_at = reference
        elapsed = now - last_at
        if pcp:
            # RFC 6887 8.5: back by more than 1 s (some reordering allowed), or apart from
            # our clock's elapsed time by more than 2 s and a sixteenth.
            ran = epoch - last
            expected = last + elapsed - elapsed / 16 - 2
            if epoch + 1 >= last and not (
                elapsed + 2 < ran - ran / 16 or ran + 2 < elapsed - elapsed / 16
            ):
                return
        else:
            expected = last + elapsed * _EPOCH_RATE
            if epoch >= last and epoch >= expected - _EPOCH_SLACK:
                return
        self._resets += 1
        # The other protocol's clock restarted too, from a value we do not know.
        self._epochs.pop(not pcp, None)
        self._events.append(GatewayReset(epoch, expected))
        # Recreate every mapping the gateway held, after one random delay (RFC 6886 3.7,
        # RFC 6887 8.5: the client re-sends its requests; neither has it drop a grant);
        # the serial queue then sends them one at a time. The answer at hand may be one of
        # them: its own handling schedules it after this. A grant kept through failed
        # renewals is re-asked alike and stays shown until re-granted or run out, as a
        # held one does: no NAT-PMP answer is proven (no nonce), so ending grants here
        # would hand a forger of any answer with a low SSSoE every grant kept so; re-asking
        # costs a forged reset a few requests, and re-creates a real reboot's at once.
        #
        # Bounded as hints are: one recreation each NATPMP_RESET_INTERVAL at most. Every
        # answer taken may show a reset, and each recreation brings as many answers: a
        # forger answering them with falling SSSoEs (or epochs, on path) would otherwise
        # have every mapping asked again every few seconds, for as long as it likes. A
        # reset while a recreation is pending joins it (a mapping granted meanwhile is
        # asked again with it: a second real reboot may have lost it); one after it waits
        # for the interval's end: grants that young were made by the gateway as it is now,
        # unless it rebooted again within the interval (then recovered at its end).
        if self._recreated_at > now:
            at = self._recreated_at
            prompt = False
        else:
            delay = now + self._rng.uniform(0.0, NATPMP_RESET_DELAY_MAX)
            at = max(delay, self._recreated_at + NATPMP_RESET_INTERVAL)
            prompt = at == delay
            self._recreated_at = at
        # INFO when recreating at once (a reboot, or the first of a forger's resets); a
        # reset merged or held back at DEBUG: a forger's stream would flood the log.
        _log.log(
            logging.INFO if prompt else logging.DEBUG,
            "%s gateway %s lost its mappings (epoch %d, expected %.0f): asking again in %.1f s",
            "PCP" if pcp else "NAT-PMP",
            self._gateway,
            epoch,
            expected,
            at - now,
        )
        for m in self._mappings.values():
            if m.state is _State.MAPPED or (m.state is _State.WANTED and m.expires_at is not None):
                m.due = min(m.due, at)
        if self._address_due is not None:
            self._address_due = min(self._address_due, at)
        if self._pcp and self._speaking is _Speaking.NATPMP:
            # A restarted gateway may have come back speaking PCP (a firmware update): the
            # recreations probe it.
            self._pcp_retry_at = min(self._pcp_retry_at, at)

    def _on_address(self, response: ExternalAddressResponse, now: float) -> None:
        if self._closed:
            return
        if response.result != NatPmpResult.SUCCESS or response.address == IPv4Address(0):
            # 0.0.0.0: the gateway has no address yet (no DHCP lease upstream).
            result = None if response.result == NatPmpResult.SUCCESS else response.result
            self._address_failed(result, now)
            return
        self._address_due = now + self._lifetime / 2
        self._set_address(response.address)

    def _set_address(self, address: IPv4Address | IPv6Address) -> None:
        self._address_failures = 0
        if address != self._address:
            self._address = address
            _log.info(
                "%s gateway %s: our external address is %s", self._label, self._gateway, address
            )
            self._events.append(NatPmpAddressChanged(address))

    def _address_failed(self, result: _Result, now: float) -> None:
        if self._closed:
            return
        self._address_failures += 1
        retry_at = now + self._retry_delay(result, self._address_failures)
        self._address_due = retry_at
        self._events.append(NatPmpAddressFailed(result, retry_at))

    def _granted(
        self, mapping: _Mapping, external_port: int, granted: int, now: float, *, pcp: bool
    ) -> None:
        lifetime = min(granted, self._lifetime)
        changed = mapping.external_port != external_port
        mapping.pcp_grant = pcp
        mapping.maybe_on_gateway = True
        mapping.state = _State.MAPPED
        mapping.failures = 0
        mapping.external_port = mapping.suggested_port = external_port
        mapping.lifetime = lifetime
        mapping.expires_at = now + lifetime
        # Halfway (RFC 6886 3.3); in PCP at a random point between 1/2 and 5/8 of the
        # lifetime (RFC 6887 11.2.1), so that many clients do not renew together.
        renew = lifetime * self._rng.uniform(0.5, 0.625) if pcp else lifetime / 2
        mapping.due = now + max(renew, NATPMP_MIN_RENEW_DELAY)
        if changed:
            _log.info(
                "%s gateway %s maps %s port %d to external port %d for %d s",
                self._label,
                self._gateway,
                mapping.protocol.name,
                mapping.internal_port,
                external_port,
                lifetime,
            )
            self._events.append(PortMapped(mapping.snapshot()))

    def _mapping_failed(
        self,
        mapping: _Mapping,
        result: _Result,
        now: float,
        lifetime: int = 0,
        *,
        proven: bool = True,
    ) -> None:
        """A mapping request failed (``result`` None: unanswered).

        ``proven`` False: the refusal names no nonce (any NAT-PMP refusal, a PCP header-only
        failure), so anyone able to send from the gateway's address could have forged it.
        It never clears a standing grant: refusing a renewal, it is read as silence (asked
        again after :data:`NATPMP_RETRY_MIN`, doubling, the grant kept till it runs out).
        """
        mapping.failures += 1
        standing = mapping.expires_at is not None and mapping.expires_at > now
        if not proven and standing:
            retry_at = now + self._retry_delay(None, mapping.failures)
        else:
            # A PCP server says how long its refusal will last (RFC 6887 7.2): not asked
            # sooner (yet never later than the longest wait).
            delay = self._retry_delay(result, mapping.failures)
            retry_at = now + max(delay, min(lifetime, NATPMP_RETRY_MAX))
        if result is not None:
            _log.info(
                "%s gateway %s refused to map %s port %d: %s; retrying in %.0f s",
                self._label,
                self._gateway,
                mapping.protocol.name,
                mapping.internal_port,
                _result_name(result),
                retry_at - now,
            )
        mapping.state = _State.WANTED
        mapping.due = retry_at
        if not (standing and (_transient(result) or not proven)):
            self._clear_grant(mapping)
        # Otherwise a renewal went unanswered (or was turned down for a reason that may
        # pass): the earlier grant stands until it runs out (RFC 3.3: a mapping lives its
        # lifetime), so peers may go on dialling the port; handle_timer lets it lapse then.
        self._events.append(MappingFailed(mapping.snapshot(), result, retry_at))

    def _grant_lapsed(self, mapping: _Mapping, now: float) -> None:
        """An earlier grant ran out before a renewal succeeded (a gateway reset does not end
        it: :meth:`_accept` has it asked again at once)."""
        _log.info(
            "%s gateway %s: the mapping of %s port %d ran out unrenewed",
            self._label,
            self._gateway,
            mapping.protocol.name,
            mapping.internal_port,
        )
        self._clear_grant(mapping)
        # Its retry is due when its back-off says, or under way already.
        self._events.append(MappingFailed(mapping.snapshot(), None, max(mapping.due, now)))

    @staticmethod
    def _clear_grant(mapping: _Mapping) -> None:
        mapping.pcp_grant = False
        mapping.external_port = None
        mapping.lifetime = 0
        mapping.expires_at = None

    def _drop(self, mapping: _Mapping, result: _Result) -> None:
        del self._mappings[mapping.id]
        self._events.append(MappingRemoved(mapping.snapshot(), result))

    @staticmethod
    def _retry_delay(result: _Result, failures: int) -> float:
        if _transient(result):
            return min(math.ldexp(NATPMP_RETRY_MIN, min(failures - 1, 32)), NATPMP_RETRY_MAX)
        return NATPMP_RETRY_MAX
