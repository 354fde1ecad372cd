"""A fake NAT-PMP / PCP gateway for the port mapping tests: a sans-IO one
(:class:`FakeGateway`), a loop that runs a client core against it on a virtual clock
(:func:`run`), and a trio UDP server around it on 127.0.0.1 (:func:`serve_gateway`).

By default it speaks NAT-PMP alone and answers a PCP request with NAT-PMP's "unsupported
version" (RFC 6886 3.5); ``pcp=True`` makes it speak PCP's MAP and ANNOUNCE too (RFC 6887),
``natpmp=False`` PCP alone, ``ignore_pcp=True`` an old router that drops PCP unanswered."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

import trio

from bip_handshake._compact import PeerAddress
from bip_handshake._natpmp import (
    ExternalAddressRequest,
    ExternalAddressResponse,
    MappingProtocol,
    MappingRequest,
    MappingResponse,
    NatPmpClient,
    NatPmpError,
    NatPmpErrorResponse,
    NatPmpEvent,
    NatPmpResult,
    decode_natpmp_request,
)
from bip_handshake._pcp import (
    PCP_VERSION,
    PcpAnnounceResponse,
    PcpError,
    PcpErrorResponse,
    PcpMapRequest,
    PcpMapResponse,
    PcpResult,
    decode_pcp_request,
)

GATEWAY = IPv4Address("192.168.1.1")
GATEWAY_ADDRESS = PeerAddress(GATEWAY, 5351)
EXTERNAL = IPv4Address("203.0.113.7")
CLIENT = IPv4Address("192.168.1.5")

Request = ExternalAddressRequest | MappingRequest | PcpMapRequest


@dataclass
class FakeGateway:
    """RFC 6886's gateway side, and RFC 6887's with ``pcp``, with knobs to misbehave.

    Attributes:
        external: the address answered (0.0.0.0 for none).
        booted_at: the time its epoch started (SSSoE = now - booted_at).
        clock_rate: how fast its SSSoE runs against our clock.
        silent: answer nothing.
        silent_mappings: answer address requests only.
        refuse_deletion: answer deletions with this result code.
        refuse: answer every mapping request with this result code.
        refuse_address: answer address requests with this result code.
        short_errors: answer refusals with the 8-byte header only.
        taken: external ports another client holds (the next free one is granted).
        max_lifetime: the longest lifetime granted.
        pcp: speak PCP too (MAP, and ANNOUNCE when told to announce).
        natpmp: speak NAT-PMP; off (with ``pcp``), a NAT-PMP request is answered with
            PCP's UNSUPP_VERSION, version 2 (RFC 6887 9: a server speaking PCP alone).
        ignore_pcp: drop PCP requests unanswered (an old router), rather than answer them
            with NAT-PMP's "unsupported version" (RFC 6886 3.5).
        pcp_refuse: answer every PCP mapping request (not deletions) with this result code.
        pcp_refuse_lifetime: the lifetime of that failure.
        pcp_source: the packets' source address as the gateway sees it: a PCP request
            naming another client address is answered ADDRESS_MISMATCH (RFC 6887 8.1, as
            miniupnpd does); None: not checked. :func:`serve_gateway` sets it per packet.
        requests: every request received (NAT-PMP and PCP), with its time.
        mappings: (protocol, internal port) -> (external port, expires at).
        nonces: (protocol, internal port) -> the nonce of a mapping made over PCP.
        clients: (protocol, internal port) -> the client address that PCP mapping is for: a
            nonce guards a mapping of its own client address only (RFC 6887 11.1, 11.3).
        sock: the socket :func:`serve_gateway` runs it on (what :meth:`announce_to` sends
            from), None while not served.
    """

    external: IPv4Address = EXTERNAL
    booted_at: float = -1000.0
    clock_rate: float = 1.0
    silent: bool = False
    silent_mappings: bool = False
    refuse_deletion: int | None = None
    refuse: int | None = None
    refuse_address: int | None = None
    short_errors: bool = False
    taken: set[int] = field(default_factory=set)
    max_lifetime: int = 1 << 32
    pcp: bool = False
    natpmp: bool = True
    ignore_pcp: bool = False
    pcp_refuse: int | None = None
    pcp_refuse_lifetime: int = 30
    pcp_source: IPv4Address | None = None
    requests: list[tuple[float, Request]] = field(default_factory=list)
    mappings: dict[tuple[MappingProtocol, int], tuple[int, float]] = field(default_factory=dict)
    nonces: dict[tuple[MappingProtocol, int], bytes] = field(default_factory=dict)
    clients: dict[tuple[MappingProtocol, int], IPv4Address | IPv6Address] = field(
        default_factory=dict
    )
    sock: trio.socket.SocketType | None = None

    def epoch(self, now: float) -> int:
        return int((now - self.booted_at) * self.clock_rate)

    def reboot(self, now: float) -> None:
        self.booted_at = now
        self.mappings.clear()
        self.nonces.clear()

    def pcp_announcement(self, now: float) -> bytes:
        """PCP's ANNOUNCE, as a restarted server sends it unasked (RFC 6887 14.1)."""
        return PcpAnnounceResponse(PcpResult.SUCCESS, 0, self.epoch(now)).encode()

    def announcement(self, now: float) -> bytes:
        return ExternalAddressResponse(
            NatPmpResult.SUCCESS, self.epoch(now), self.external
        ).encode()

    async def announce_to(
        self, address: tuple[str, int], *, pcp: bool = False, times: int = 1
    ) -> None:
        """Send an announcement to ``address`` (a test's stand-in for 224.0.0.1:5350) from
        the served socket: NAT-PMP's external address (RFC 6886 3.2.1) or, with ``pcp``,
        PCP's ANNOUNCE (RFC 6887 14.1.1); ``times`` times, 250 ms apart and doubling, as
        RFC 6886 3.2.1 has a gateway repeat it."""
        assert self.sock is not None, "serve_gateway first"
        wait = 0.25
        for attempt in range(times):
            if attempt:
                await trio.sleep(wait)
                wait *= 2
            now = trio.current_time()
            data = self.pcp_announcement(now) if pcp else self.announcement(now)
            await self.sock.sendto(data, address)

    def handle(self, data: bytes, now: float) -> bytes | None:
        if data[:1] == bytes((PCP_VERSION,)):
            return self._handle_pcp(data, now)
        try:
            request = decode_natpmp_request(data)
        except NatPmpError:
            return None
        self.requests.append((now, request))
        if self.silent:
            return None
        epoch = self.epoch(now)
        if not self.natpmp:
            # RFC 6887 9: a PCP server answers a version it does not speak with its own.
            return PcpErrorResponse(
                PCP_VERSION, data[1] & 0x7F, PcpResult.UNSUPP_VERSION, 0, epoch
            ).encode()
        if isinstance(request, ExternalAddressRequest):
            if self.refuse_address is not None:
                if self.short_errors:
                    return NatPmpErrorResponse(128, self.refuse_address, epoch).encode()
                return ExternalAddressResponse(self.refuse_address, epoch, IPv4Address(0)).encode()
            return ExternalAddressResponse(NatPmpResult.SUCCESS, epoch, self.external).encode()
        if self.silent_mappings:
            return None
        key = (request.protocol, request.internal_port)
        if request.lifetime == 0 and self.refuse_deletion is not None:
            if self.short_errors:
                return NatPmpErrorResponse(
                    128 | request.protocol, self.refuse_deletion, epoch
                ).encode()
            return MappingResponse(
                request.protocol, self.refuse_deletion, epoch, request.internal_port, 0, 0
            ).encode()
        if request.lifetime == 0:
            self.mappings.pop(key, None)
            return MappingResponse(
                request.protocol, NatPmpResult.SUCCESS, epoch, request.internal_port, 0, 0
            ).encode()
        if self.refuse is not None:
            if self.short_errors:
                return NatPmpErrorResponse(128 | request.protocol, self.refuse, epoch).encode()
            return MappingResponse(
                request.protocol, self.refuse, epoch, request.internal_port, 0, 0
            ).encode()
        port = self._allocate(key, request.suggested_external_port)
        lifetime = min(request.lifetime, self.max_lifetime)
        self.mappings[key] = (port, now + lifetime)
        self.nonces.pop(key, None)  # a NAT-PMP mapping: no nonce guards it
        return MappingResponse(
            request.protocol, NatPmpResult.SUCCESS, epoch, request.internal_port, port, lifetime
        ).encode()

    def _allocate(self, key: tuple[MappingProtocol, int], suggested: int) -> int:
        if key in self.mappings:
            return self.mappings[key][0]
        port = suggested or 40000
        held = {p for (kind, _), (p, _) in self.mappings.items() if kind is key[0]}
        while port in self.taken or port in held:
            port += 1
        return port

    def _handle_pcp(self, data: bytes, now: float) -> bytes | None:
        try:
            request: PcpMapRequest | None = decode_pcp_request(data)
        except PcpError:
            request = None
        if request is not None:
            self.requests.append((now, request))
        if self.silent or self.ignore_pcp:
            return None
        epoch = self.epoch(now)
        if not self.pcp:
            # RFC 6886 3.5: a version it does not know, answered with its own.
            return NatPmpErrorResponse(0, NatPmpResult.UNSUPPORTED_VERSION, epoch).encode()
        if request is None:
            opcode = data[1] & 0x7F if len(data) > 1 else 0
            return PcpErrorResponse(
                PCP_VERSION, opcode, PcpResult.MALFORMED_REQUEST, 1800, epoch
            ).encode()
        if self.silent_mappings:
            return None
        if self.pcp_source is not None and request.client_address != self.pcp_source:
            return self._pcp_answer(request, PcpResult.ADDRESS_MISMATCH, 0, epoch, 0)
        key = (request.protocol, request.internal_port)
        owner = self.nonces.get(key)
        if (
            owner is not None
            and owner != request.nonce
            and self.clients.get(key) == request.client_address
        ):
            # RFC 6887 11.3: the mapping is another nonce's.
            return self._pcp_answer(request, PcpResult.NOT_AUTHORIZED, 1800, epoch, 0)
        if request.lifetime == 0:
            self.mappings.pop(key, None)
            self.nonces.pop(key, None)
            return self._pcp_answer(
                request, PcpResult.SUCCESS, 0, epoch, request.suggested_external_port
            )
        if self.pcp_refuse is not None:
            return self._pcp_answer(request, self.pcp_refuse, self.pcp_refuse_lifetime, epoch, 0)
        port = self._allocate(key, request.suggested_external_port)
        lifetime = min(request.lifetime, self.max_lifetime)
        self.mappings[key] = (port, now + lifetime)
        self.nonces[key] = request.nonce
        self.clients[key] = request.client_address
        return self._pcp_answer(request, PcpResult.SUCCESS, lifetime, epoch, port)

    def _pcp_answer(
        self, request: PcpMapRequest, result: int, lifetime: int, epoch: int, port: int
    ) -> bytes:
        address = self.external if result == PcpResult.SUCCESS else IPv4Address(0)
        return PcpMapResponse(
            result,
            lifetime,
            epoch,
            request.nonce,
            request.protocol,
            request.internal_port,
            port,
            address,
        ).encode()

    def times(self, kind: type | None = None) -> list[float]:
        return [t for t, r in self.requests if kind is None or isinstance(r, kind)]


def run(
    client: NatPmpClient,
    gateway: FakeGateway,
    start: float,
    end: float,
    *,
    latency: float = 0.01,
    events: list[NatPmpEvent] | None = None,
    at: dict[float, Callable[[float], None]] | None = None,
    client_address: IPv4Address | None = None,
) -> float:
    """Run ``client`` against ``gateway`` from ``start`` until ``end`` (virtual seconds).

    Answers arrive ``latency`` seconds after their request. ``at`` maps times to actions
    run when the clock reaches them (a reboot, an announcement...). Events go to ``events``.
    ``client_address``: given whenever the client asks for its address afresh, before it
    sends (as the shell reads it off a socket); None: never given.
    """
    now = start
    in_flight: list[tuple[float, bytes]] = []
    actions = sorted((at or {}).items())
    for _ in range(100_000):
        while actions and actions[0][0] <= now:
            actions.pop(0)[1](now)
        client.handle_timer(now)
        if client_address is not None and client.client_address_stale:
            client.set_client_address(client_address)
        for data, destination in client.datagrams_to_send(now):
            assert destination == client.gateway
            reply = gateway.handle(data, now)
            if reply is not None:
                in_flight.append((now + latency, reply))
        while (event := client.next_event()) is not None:
            if events is not None:
                events.append(event)
        deadline = client.next_deadline()
        candidates = [t for t, _ in in_flight] + [t for t, _ in actions[:1]]
        candidates.append(math.inf if deadline is None else deadline)
        following = max(now, min(candidates))
        if following > end:
            return end
        now = following
        arrived = [d for t, d in in_flight if t <= now]
        in_flight = [(t, d) for t, d in in_flight if t > now]
        for data in arrived:
            client.receive_datagram(data, client.gateway, now)
    raise AssertionError("the client did not settle")


async def serve_gateway(
    gateway: FakeGateway,
    *,
    check_source: bool = False,
    task_status: trio.TaskStatus[tuple[trio.socket.SocketType, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``gateway`` on a UDP socket on 127.0.0.1; reports ``(socket, port)`` when ready.

    ``check_source``: answer a PCP request whose client address is not its packet's source
    ADDRESS_MISMATCH (``FakeGateway.pcp_source``)."""
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        gateway.sock = sock
        task_status.started((sock, sock.getsockname()[1]))
        while True:
            data, source = await sock.recvfrom(2048)
            if check_source:
                gateway.pcp_source = IPv4Address(source[0])
            reply = gateway.handle(data, trio.current_time())
            if reply is not None:
                await sock.sendto(reply, source)
