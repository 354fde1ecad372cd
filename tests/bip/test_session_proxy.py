"""A session behind a SOCKS5 proxy (``ClientConfig.proxy``, ``--proxy``): peer dials, HTTP(S)
trackers and web seeds through the in-test proxy (tests/_socks_server.py) on 127.0.0.1, UDP
trackers through its relay (refused here), and the settings."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _discovery_target import SeedTarget
from _engine_helpers import (
    LOOPBACK,
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)
from _http_file_server import file_server, self_signed
from _http_tracker_server import MiniTracker, answer, http_server, reply
from tests._socks_server import serve_socks5

from bip._client import ClientConfig, TorrentOptions, open_session
from bip._client._discovery import TrackerAnnouncer
from bip._client._external_address import ExternalAddresses
from bip._client._http_exchange import ExchangeError, http_exchange
from bip._client._http_response import HttpResponseParser
from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_codec import parse_http_tracker_url
from bip._client._http_tracker_errors import TrackerBlockedError
from bip._client._session import _proxy_resolves_peer_names
from bip._client._webseed_http import WebSeedBlockedError, WebSeedClient
from bip._cmd_download import add_session_arguments, config_from_args
from bip._errors import CLIError
from bip_handshake import ExternalIPVoter, PeerAddress, PeerId
from bip_handshake._dialers import PeerDialer
from bip_handshake._socks_shell import ProxyConfig, parse_proxy_url
from bip_peer import ExtendedHandshake
from bip_utracker import AnnounceEvent, open_tracker_client

DEADLINE = 20.0
HASH = bytes(range(20))


async def test_a_leecher_behind_the_proxy_downloads_through_it(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (70_000, 5))
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as proxy:
            async with seeder_and_leecher(torrent, folder) as (seeder, _):
                config = loopback_config(proxy=proxy.url(user=None))
                async with open_session(config) as leecher:
                    assert leecher.dialer is not None
                    assert leecher.dialer.prefer == "tcp"  # TCP first, uTP through the relay
                    assert leecher.holepunch is None
                    seed = address_of(seeder)
                    download = await leecher.add_torrent(
                        torrent, TorrentOptions(tmp_path / "down", peers=(seed,))
                    )
                    await download.wait_complete()
                    stats = leecher.handshaker.statistics()
            # Every connection the leecher made went through the proxy, to the seed.
            assert proxy.connects
            assert set(proxy.connects) == {(LOOPBACK, seed.port)}
            assert stats.outbound_attempts == len(proxy.connects)
    assert same_files(folder, tmp_path / "down" / "album")


async def test_an_http_tracker_announce_through_the_proxy() -> None:
    tracker = MiniTracker()
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5(username=b"me", password=b"pw") as proxy,
            http_server(tracker) as server,
        ):
            port = int(server.url.split(":")[2].split("/")[0])
            config = ProxyConfig(LOOPBACK, proxy.port, "me", "pw")
            async with HttpTrackerClient(proxy=config) as client:
                result = await client.announce(
                    server.url, HASH, peer_id=PeerId.generate(), port=6881, left=1
                )
                assert result.tracker == PeerAddress.parse(f"{LOOPBACK}:{port}")
                # socks5h://: the proxy resolves the name; who answered is unknown.
                remote = ProxyConfig(LOOPBACK, proxy.port, "me", "pw", remote_dns=True)
                async with HttpTrackerClient(proxy=remote) as named:
                    result = await named.announce(
                        f"http://localhost:{port}/announce",
                        HASH,
                        peer_id=PeerId.generate(),
                        port=6882,
                        left=0,
                        event=AnnounceEvent.STARTED,
                    )
                assert result.tracker == PeerAddress.parse("0.0.0.0:0")
                assert PeerAddress.parse(f"{LOOPBACK}:6881") in result.peers
            assert proxy.connects == [(LOOPBACK, port), ("localhost", port)]


async def test_https_tracker_and_web_seed_over_the_proxied_stream(tmp_path: Path) -> None:
    server_context, client_context = self_signed(tmp_path)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "f.bin").write_bytes(bytes(range(100)))
    body = answer(interval=300, peers=bytes([127, 0, 0, 9, 0, 99]))
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as proxy,
            http_server(reply(body), tls=server_context) as tracker,
            file_server(tmp_path / "files", tls=server_context) as files,
        ):
            config = parse_proxy_url(proxy.url())
            client = HttpTrackerClient(ssl_context=client_context, proxy=config)
            result = await client.announce(tracker.url, HASH, peer_id=PeerId.generate(), port=1)
            assert [str(peer) for peer in result.peers] == ["127.0.0.9:99"]
            seeds = WebSeedClient(ssl_context=client_context, proxy=config)
            data = await seeds.fetch(parse_http_tracker_url(files.url + "f.bin"), 10, 5)
            assert data == bytes(range(10, 15))
            assert len(proxy.connects) == 2


async def test_udp_trackers_go_through_the_proxy_which_may_refuse_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    # Real sockets on loopback: the clock jumps only once everything has waited a little.
    autojump_clock.autojump_threshold = 0.01
    folder = write_content(tmp_path / "seed", (10,))
    caplog.set_level(logging.INFO, logger="bip.client")

    def failures() -> list[str]:
        return [r.getMessage() for r in caplog.records if "announce to udp://" in r.getMessage()]

    with trio.fail_after(60):
        async with serve_socks5() as proxy:
            proxy.refuse_udp = True  # as microsocks: "command not supported"
            config = loopback_config(proxy=proxy.url(), trackers=True)
            async with open_session(config) as session:
                assert session.trackers is not None
                assert session.trackers.proxy == config.proxy_settings
                for name, version in (("a", "v1"), ("b", "v2")):
                    await session.add_torrent(
                        make_torrent(folder, version),  # type: ignore[arg-type]
                        TorrentOptions(
                            tmp_path / name, extra_trackers=("udp://127.0.0.1:9/announce",)
                        ),
                    )
                while len(failures()) < 2:  # bounded by the deadline
                    await trio.sleep(0.5)
                stats = session.trackers.proxy_statistics
    # Each announce failed with the proxy's refusal, as libtorrent's; none was skipped, and
    # nothing was sent (through the proxy or directly).
    assert not [r for r in caplog.records if "skipping" in r.getMessage()]
    assert all("command not supported" in message for message in failures())
    assert not proxy.associations
    assert stats is not None
    assert stats.sent == 0


def test_config_validates_the_proxy() -> None:
    config = ClientConfig(proxy="socks5h://u:p@127.0.0.1:1080")
    assert config.proxy_settings == ProxyConfig("127.0.0.1", 1080, "u", "p", remote_dns=True)
    assert ClientConfig().proxy_settings is None
    with pytest.raises(ValueError, match="socks5:// or socks5h://"):
        ClientConfig(proxy="http://127.0.0.1:3128")
    with pytest.raises(TypeError, match="proxy_peer_connections"):
        ClientConfig(proxy_peer_connections=1)  # type: ignore[arg-type]

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        raise OSError("unused")

    with pytest.raises(ValueError, match="exclude each other"):
        ClientConfig(proxy="socks5://h:1", dial=dial)
    ClientConfig(proxy="socks5://h:1", dial=dial, proxy_peer_connections=False)


async def test_peers_dialled_directly_when_told() -> None:
    config = loopback_config(proxy="socks5://127.0.0.1:9", proxy_peer_connections=False)
    with trio.fail_after(DEADLINE):
        async with open_session(config) as session:
            assert isinstance(session.dialer, PeerDialer)


def session_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    return parser.parse_args(["--bind", LOOPBACK, "--no-trackers", *options])


def test_the_proxy_option() -> None:
    config = config_from_args(session_args("--proxy", "socks5://127.0.0.1:1080"))
    assert config.proxy == "socks5://127.0.0.1:1080"
    assert config_from_args(session_args()).proxy is None
    with pytest.raises(CLIError, match="--proxy: ") as raised:
        config_from_args(session_args("--proxy", "socks5://me:secret@h:1/x"))
    assert "secret" not in str(raised.value)


# -- the review's findings -----------------------------------------------------------------------


async def test_socks5h_to_this_machine_is_held_to_the_local_rules(tmp_path: Path) -> None:
    # The proxy runs here: its "localhost" is ours. A name the proxy resolves is judged by the
    # name, before the proxy hears of it; a name not known to be local, as strictly.
    (tmp_path / "f.bin").write_bytes(bytes(100))
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as proxy,
            http_server(reply(answer(interval=60)), path="/admin") as server,
            file_server(tmp_path) as files,
        ):
            remote = parse_proxy_url(proxy.url(remote_dns=True))
            client = HttpTrackerClient(proxy=remote)
            admin = server.url.replace("127.0.0.1", "localhost")
            with pytest.raises(TrackerBlockedError, match="on this machine") as raised:
                await client.announce(admin, HASH, peer_id=PeerId.generate(), port=1)
            assert raised.value.rule == "ssrf_mitigation"
            with pytest.raises(TrackerBlockedError, match="not '/admin'"):
                await client.announce(
                    "http://tracker.example/admin", HASH, peer_id=PeerId.generate(), port=1
                )
            seeds = WebSeedClient(proxy=remote)
            query = files.url.replace("127.0.0.1", "localhost") + "f.bin?x=1"
            with pytest.raises(WebSeedBlockedError, match="takes no query"):
                await seeds.fetch(parse_http_tracker_url(query), 0, 10)
            # The same requests over socks5://: the address resolved here is judged before
            # the proxy is asked to connect (the service hears not even a connection).
            local = parse_proxy_url(proxy.url())
            with pytest.raises(TrackerBlockedError, match="on this machine"):
                await HttpTrackerClient(proxy=local).announce(
                    admin, HASH, peer_id=PeerId.generate(), port=1
                )
            assert proxy.accepted == 0
            # From a server on the Internet, a redirect to a local name is refused unasked.
            url = parse_http_tracker_url("http://nas:1/announce")
            with pytest.raises(ExchangeError, match="local name"):
                await http_exchange(
                    url,
                    b"",
                    HttpResponseParser(),
                    tls_context=None,  # type: ignore[arg-type]
                    global_only=True,
                    proxy=remote,
                )
            assert proxy.accepted == 0
    assert server.requests == []
    assert files.requests == []


async def test_web_seeds_follow_the_peer_connections_proxy() -> None:
    secret = "socks5h://me:s3cr3t@127.0.0.1:9"
    assert "s3cr3t" not in repr(ClientConfig(proxy=secret))
    with trio.fail_after(DEADLINE):
        config = loopback_config(proxy=secret, proxy_tracker_connections=False)
        async with open_session(config) as session:
            assert session.web_seed_client._proxy == config.proxy_settings
            assert session.external._outbound_peer_votes is False
        assert _proxy_resolves_peer_names(config)
        config = loopback_config(proxy=secret, proxy_peer_connections=False)
        async with open_session(config) as session:
            assert session.web_seed_client._proxy is None
            assert session.external._outbound_peer_votes is True
        assert not _proxy_resolves_peer_names(config)
    assert not _proxy_resolves_peer_names(loopback_config(proxy="socks5://127.0.0.1:9"))


@dataclass
class FakePeer:
    address: PeerAddress
    direction: str


async def test_peers_dialled_through_the_proxy_do_not_vote() -> None:
    external = ExternalAddresses(ExternalIPVoter(), ports=[6881], outbound_peer_votes=False)
    seen = ExtendedHandshake(yourip=IPv4Address("81.2.69.160").packed)
    for n, direction in enumerate(("outbound", "inbound", "outbound")):
        peer = FakePeer(PeerAddress.parse(f"5.6.7.{n + 1}:1"), direction)
        external.message_received(None, peer, seen)  # type: ignore[arg-type]
    assert external.voter.statistics().votes == 1  # the peer that dialled us


@dataclass
class Sink:
    found: list[tuple[PeerAddress, ...]] = field(default_factory=list)

    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        self.found.append(tuple(addresses))


async def test_peer_names_are_dropped_when_the_proxy_resolves_names(
    autojump_clock: object, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []
    real = trio.socket.getaddrinfo

    async def recorded(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(trio.socket, "getaddrinfo", recorded)
    caplog.set_level(logging.DEBUG, logger="bip.client")
    peers = [{"ip": b"127.0.0.5", "port": 6001}, {"ip": b"peer.example", "port": 6002}]
    target, sink = SeedTarget(HASH), Sink()
    with trio.fail_after(300):  # the clock's: it jumps while all wait
        async with (
            http_server(reply(answer(interval=100, peers=peers))) as server,
            open_tracker_client(bind_v4=LOOPBACK, bind_v6=None) as udp,
        ):
            announcer = TrackerAnnouncer(
                udp,
                [server.url],
                peer_id=PeerId.generate(),
                http_client=HttpTrackerClient(),
                min_interval=100,
                resolve_peer_names=False,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(announcer.run, target, sink)
                await trio.sleep(150)  # two answers
                nursery.cancel_scope.cancel()
    assert sink.found == [(PeerAddress.parse("127.0.0.5:6001"),)] * 2
    assert not any(b"peer.example" in str(host).encode() for host in asked)
    dropped = [r for r in caplog.records if "dropped: peers are dialled through" in r.getMessage()]
    assert [r.levelno for r in dropped] == [logging.WARNING, logging.DEBUG]
