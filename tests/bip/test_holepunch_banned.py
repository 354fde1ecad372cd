"""A BEP 55 connect naming a host the torrent banned is not dialled (libtorrent checks the
ban before it dials a holepunch's address)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from bip._client._holepunch import HolepunchCounts, HolepunchPolicy
from bip_handshake import PeerAddress
from bip_metainfo import InfoHash

TORRENT = InfoHash(v1=b"\x11" * 20)
BANNED = PeerAddress.parse("10.0.0.66:6881")
FINE = PeerAddress.parse("10.0.0.7:6881")


class FakeHandshaker:
    def __init__(self) -> None:
        self.dials: list[tuple[InfoHash, PeerAddress]] = []

    def connect(self, torrent: InfoHash, address: PeerAddress) -> bool:
        self.dials.append((torrent, address))
        return True


class FakeDialer:
    def __init__(self) -> None:
        self.utp_sockets = (SimpleNamespace(local_address=SimpleNamespace(family=4)),)
        self.hints: list[PeerAddress] = []

    def prefer_utp_for(self, address: PeerAddress, ttl: float, *, only: bool = True) -> None:
        self.hints.append(address)


async def test_a_connect_to_a_banned_host_is_not_dialled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    asked: list[tuple[InfoHash, PeerAddress]] = []

    def refuses(info_hash: InfoHash, address: PeerAddress) -> bool:
        asked.append((info_hash, address))
        return address.host == BANNED.host

    handshaker, dialer = FakeHandshaker(), FakeDialer()
    pex: Any = SimpleNamespace()
    policy = HolepunchPolicy(
        handshaker=handshaker,  # type: ignore[arg-type]
        pex=pex,
        dialer=dialer,  # type: ignore[arg-type]
        refuses=refuses,
    )
    policy._on_connect(TORRENT, PeerAddress.parse("[::ffff:10.0.0.66]:7000"))  # mapped: same host
    policy._on_connect(TORRENT, FINE)
    assert handshaker.dials == [(TORRENT, FINE)]
    assert dialer.hints == [FINE]
    assert policy.counts(TORRENT) == HolepunchCounts(connects=1)
    assert asked[0] == (TORRENT, PeerAddress.parse("10.0.0.66:7000"))  # asked normalised


async def test_without_a_ban_check_every_connect_is_dialled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handshaker = FakeHandshaker()
    pex: Any = SimpleNamespace()
    policy = HolepunchPolicy(
        handshaker=handshaker,  # type: ignore[arg-type]
        pex=pex,
        dialer=FakeDialer(),  # type: ignore[arg-type]
    )
    policy._on_connect(TORRENT, BANNED)
    assert handshaker.dials == [(TORRENT, BANNED)]
