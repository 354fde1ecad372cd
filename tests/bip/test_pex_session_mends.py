"""The session's external address and a public address it listens on (PEX, holepunch).

A seedbox listens on its public address ``L``. The voter first decides L's IP (right), later
another (a changed route, or lying ``yourip`` votes): ExternalAddresses adds L, then removes
it. L was given to PEX and the holepunch service at construction and must stay ours: else a
peer listing L is dialled (a dial to ourselves) and a connect to it acted on.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

from bip._client._external_address import ExternalAddresses
from bip_handshake import ExternalIPVoter, PeerAddress, VoteSource
from bip_metainfo import InfoHash
from bip_peer import HolepunchMessage, HolepunchService, PeerExchange, PexMessage
from bip_peer._extended import ExtendedHandshake

IH = InfoHash.from_info_bytes(b"d4:name1:xe", v1=True, v2=False)
LISTEN = PeerAddress(IPv4Address("81.2.69.160"), 6881)


class _Sink:
    def __init__(self) -> None:
        self.addresses: list[PeerAddress] = []

    def discovered(self, info_hash: object, addresses: Any, source: str) -> None:
        self.addresses.extend(addresses)


class _Peer:
    """What PEX and holepunch read of a peer we dialled that offered both extensions (hashed
    by identity, as a Peer is)."""

    def __init__(self, address: PeerAddress) -> None:
        ids = {"ut_pex": 1, "ut_holepunch": 4}
        self.address = address
        self.info_hash = IH
        self.direction = "outbound"
        self.transport = "tcp"
        self.encryption = "none"
        self.extended_handshake = ExtendedHandshake(m=ids)
        self.connection = SimpleNamespace(
            their_extension_ids=ids, peer_has_all=False, peer_upload_only=False
        )


def _decide(external: ExternalAddresses, host: IPv4Address, now: float, round_: int) -> None:
    """Ten peers say they see us at ``host``; the voter's round ends."""
    for n in range(10):
        voter = IPv4Address(f"5.6.{7 + round_}.{n + 1}")
        external.vote(host, voter, VoteSource.PEER, now)
    external.tick(None, now + 1000)  # type: ignore[arg-type]


async def test_a_listening_address_survives_the_external_ip_moving_away() -> None:
    sink = _Sink()
    pex = PeerExchange(sink, our_addresses=[LISTEN])
    connects: list[PeerAddress] = []
    hole = HolepunchService(
        on_connect=lambda info_hash, address: connects.append(address), our_addresses=[LISTEN]
    )
    external = ExternalAddresses(ExternalIPVoter(), ports=[LISTEN.port], users=[pex, hole])
    _decide(external, LISTEN.host, 0.0, 0)  # type: ignore[arg-type]
    assert external.addresses == (LISTEN,)
    moved = IPv4Address("81.2.70.1")
    _decide(external, moved, 2000.0, 1)
    assert external.voter.decided == {4: moved}
    for user in (pex, hole):
        assert user.our_addresses == {LISTEN, PeerAddress(moved, LISTEN.port)}

    # A public peer lists L over PEX, and (as a relay) sends a connect to L.
    peer: Any = _Peer(PeerAddress(IPv4Address("93.184.216.34"), 6881))
    manager: Any = SimpleNamespace(is_connected=lambda p: p is peer, send_nowait=lambda p, m: True)
    pex.peer_added(manager, peer)
    hole.peer_added(manager, peer)
    pex.message_received(manager, peer, PexMessage(added=(LISTEN,)))
    hole.message_received(manager, peer, HolepunchMessage.connect(LISTEN))
    assert sink.addresses == []
    assert connects == []
