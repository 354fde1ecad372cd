"""BEP 55 end to end with libtorrent as the relay: two bip sessions behind simulated NATs meet.

libtorrent 2.1 (_lt_utp.py: uTP only, downloading a torrent nobody has, so that every
connection stays) is the relay R. A and B are bip sessions whose UDP goes through a
port-restricted cone NAT each (an in-test forwarder: B's datagrams leave from a public port,
and only datagrams from addresses B has sent to come back in), uTP only, nothing listening on
TCP at the NATs' addresses. C, a public bip session without holepunching, joins first, so that
libtorrent's first PEX message to A (about C) is sent before B joins: A then hears of B only a
minute later, B of A within seconds. B's dial to A dies in A's NAT; B's client asks libtorrent
(which flagged A 0x08 in its PEX) for a rendezvous; libtorrent sends both a connect; both dial
over uTP at once, and they are connected.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from types import TracebackType

import pytest
import trio

from bip._client import ClientConfig, Session, TorrentOptions, open_session
from bip._client._torrent import Torrent
from bip._client._utp import UtpRouter
from bip_handshake import EncryptionPolicy, ListenError, PeerAddress
from bip_metainfo import Metainfo
from bip_peer import Peer, PexFlags

from ._helpers import StartProcess
from ._seeders import HOST, make_torrent
from .test_utp_libtorrent import start_libtorrent_utp

pytestmark = pytest.mark.interop

DEADLINE = 45.0  # libtorrent spaces its PEX messages 3 s apart; the uTP dial that fails, 3 s


class _NoPeers:
    """A DHT lookup that finds nobody."""

    async def __aenter__(self) -> AsyncIterator[PeerAddress]:
        return self._nothing()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    @staticmethod
    async def _nothing() -> AsyncIterator[PeerAddress]:
        return
        yield  # pragma: no cover - makes this an async generator


class Nat:
    """A port-restricted cone NAT in the shape of a DHT whose UDP socket uTP shares (the
    session's seam for uTP over another socket); tests/bip/test_session_holepunch.py has the
    same one for bip-only sessions."""

    def __init__(self, sock: trio.socket.SocketType, inside: PeerAddress) -> None:
        self._socket = sock
        self.addresses = (inside,)
        self.router = UtpRouter()
        self.opened: set[PeerAddress] = set()
        self.dropped = 0

    @property
    def public(self) -> PeerAddress:
        host, port = self._socket.getsockname()[:2]
        return PeerAddress(ip_address(host), port)

    async def send_datagram(
        self, data: bytes, address: PeerAddress, *, dont_fragment: bool = False
    ) -> None:
        self.opened.add(address.normalized())
        await self._socket.sendto(data, (str(address.host), address.port))

    async def run(self) -> None:
        while True:
            data, (host, port, *_) = await self._socket.recvfrom(65536)
            source = PeerAddress(ip_address(host), port)
            if source in self.opened:
                self.router.datagram_received(data, source)
            else:
                self.dropped += 1

    def get_peers(self, info_hash: bytes) -> _NoPeers:
        return _NoPeers()

    async def announce(self, info_hash: bytes, port: int | None = None) -> object:
        await trio.lowlevel.checkpoint()
        return None

    def add_node(self, address: PeerAddress) -> None:
        return None


def config(host: str, port: int = 0, **changes: object) -> ClientConfig:
    settings: dict[str, object] = {
        "listen": ((host, port),),
        "trackers": False,
        "prefer_utp": True,
        "redial_interval": 1.0,
        "encryption": EncryptionPolicy.PREFER_ENCRYPTED,
    }
    settings.update(changes)
    return ClientConfig(**settings)  # type: ignore[arg-type]


@asynccontextmanager
async def behind_nat(public: str, inside: str) -> AsyncIterator[tuple[Session, Nat]]:
    """A uTP-first session at ``inside`` whose UDP leaves from ``public`` (same port)."""
    for _ in range(20):  # bounded: a port free on both hosts is found at once in practice
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind((public, 0))
        port = sock.getsockname()[1]
        nat = Nat(sock, PeerAddress(IPv4Address(inside), port))
        try:
            async with (
                trio.open_nursery() as nursery,
                open_session(config(inside, port), dht=nat, utp_router=nat.router) as session,
            ):
                nursery.start_soon(nat.run)
                yield session, nat
                nursery.cancel_scope.cancel()
            return
        except ListenError:
            continue
        finally:
            sock.close()
    raise AssertionError("no port free on both hosts")


def met(here: Torrent, other: Session) -> list[Peer]:
    return [p for p in here.peers if p.peer_id == other.peer_id]


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll every 50 ms (the caller bounds the whole test in time)."""
    while not predicate():
        await trio.sleep(0.05)


async def test_libtorrent_introduces_two_bip_peers_behind_nats(
    start_process: StartProcess, tmp_path: Path
) -> None:
    torrent = make_torrent(tmp_path)
    metainfo = Metainfo.from_bytes(torrent.torrent_path.read_bytes())
    info = start_libtorrent_utp(start_process, tmp_path, torrent, download_to=tmp_path / "lt")
    relay = PeerAddress(IPv4Address(HOST), int(info["port"]))
    with trio.fail_after(DEADLINE):
        async with (
            open_session(config(HOST, holepunch=False)) as public,
            behind_nat("127.0.0.4", "127.0.0.5") as (a, nat_a),
            behind_nat("127.0.0.2", "127.0.0.3") as (b, nat_b),
        ):
            await public.add_torrent(metainfo, TorrentOptions(tmp_path / "c", peers=(relay,)))
            at_a = await a.add_torrent(metainfo, TorrentOptions(tmp_path / "a", peers=(relay,)))
            # libtorrent's first PEX message to A (about C): its next one is a minute away.
            await wait_until(lambda: a.pex.statistics().messages_received >= 1)
            at_b = await b.add_torrent(metainfo, TorrentOptions(tmp_path / "b", peers=(relay,)))
            await wait_until(lambda: bool(met(at_a, b)) and bool(met(at_b, a)))
            await trio.sleep(0.5)  # a duplicate of the simultaneous open is settled by then
            [a_to_b] = met(at_a, b)
            [b_to_a] = met(at_b, a)
            assert a_to_b.transport == b_to_a.transport == "utp"
            assert a_to_b.address == nat_b.public
            assert b_to_a.address == nat_a.public
            assert nat_a.dropped >= 1  # B's SYNs before the holepunch
            # libtorrent listed A flagged as speaking ut_holepunch, and relayed B's rendezvous.
            listed = b.pex.relay_for(metainfo.info.info_hash, nat_a.public)
            assert listed is not None
            assert listed.peer.address == relay
            assert PexFlags.HOLEPUNCH in listed.flags
            assert listed.can_relay
            assert at_b.status().holepunch_rendezvous == 1
            assert at_a.status().holepunch_connects == at_b.status().holepunch_connects == 1
            assert at_a.status().holepunch_peers == at_b.status().holepunch_peers == 1
