"""bip's DHT node through a SOCKS5 proxy (``--proxy``): ``bip download``/``seed``'s node and
``bip dht --proxy`` send every datagram through the in-test proxy's UDP relay
(tests/_socks_server.py), as libtorrent proxies its DHT whenever a SOCKS5 proxy is set; uTP
keeps a socket of its own; the session says when a DHT of the caller's goes directly, and
neither tells peers a proxied DHT's port, nor maps it, nor takes its BEP 42 address."""

from __future__ import annotations

import argparse
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from _cli_helpers import assert_one_line_error
from _engine_helpers import LOOPBACK, loopback_config
from tests._resolvers import has_ipv6_loopback
from tests._socks_server import SocksServer, serve_socks5

import bip._client._session as session_module
from bip._cli import main
from bip._client import open_session
from bip._client._port_mapping import open_session_port_mapping
from bip._cmd_download import (
    add_session_arguments,
    config_from_args,
    open_dht_node,
    open_session_with_dht,
)
from bip_dht import DHT, DHTNode, open_dht
from bip_handshake import Extensions, PeerAddress, ProxyConfig
from bip_peer import Port

DEADLINE = 4.0
DIRECT = "127.0.0.3"  # the direct node: another host than ours (one node per IP in tables)
HASH = "0123456789abcdef0123456789abcdef01234567"
SESSION_LOG = "bip.client"


def session_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    return parser.parse_args(["--bind", LOOPBACK, "--no-trackers", *options])


def free_port() -> int:
    """A loopback port free for both UDP and TCP now."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both UDP and TCP")


def table_addresses(dht: DHT) -> list[PeerAddress]:
    now = trio.current_time()
    return [entry.node.address for entry in dht.node.table(4).entries(now)]


async def test_the_download_sessions_dht_goes_through_the_proxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SESSION_LOG)
    port = free_port()
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, open_dht((DIRECT, 0)) as direct:
            args = session_args(
                "--port",
                str(port),
                "--proxy",
                server.url(),
                "--dht-bootstrap",
                str(direct.addresses[0]),
            )
            config = config_from_args(args)
            async with open_session_with_dht(args, config, tmp_path) as session:
                dht = session.dht
                assert isinstance(dht, DHT)
                assert dht.proxy == config.proxy_settings
                # Not on the listen port: that is uTP's own socket, which keeps taking peers.
                assert dht.addresses[0].port != port
                assert any(utp.local_address.port == port for utp in session.utp_sockets)
                while dht.node.statistics().table_size == 0:
                    await trio.sleep(0.01)
                assert table_addresses(dht) == [direct.addresses[0]]
                # (other associations may carry uTP or UDP trackers)
                assert any(a.relayed and a.returned for a in server.associations)
                # The direct node heard the relay, never our socket.
                assert dht.addresses[0] not in table_addresses(direct)
                assert dht.statistics().send_errors == 0
    assert not [r for r in caplog.records if "directly" in r.getMessage()]


async def test_a_dht_opened_without_the_proxy_is_said_direct_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=SESSION_LOG)
    # Nothing listens on the proxy's port: the session needs none to start.
    with trio.fail_after(DEADLINE):
        async with (
            open_dht((LOOPBACK, 0)) as dht,
            open_session(loopback_config(proxy="socks5://127.0.0.1:1"), dht=dht),
        ):
            assert dht.proxy is None
    said = [r for r in caplog.records if "talks to its nodes directly" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.INFO
    assert "opened without the proxy" in said[0].getMessage()


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "proxied"])
async def test_a_proxied_dhts_port_is_not_told_nor_mapped_and_it_does_not_vote(
    proxied: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the relay reaches a proxied DHT, and its nodes saw the relay's exit address: no
    # BEP 5 PORT, no port mapping, no BEP 42 vote (a direct one, for contrast, has all three).
    mapped: dict[str, object] = {}

    def spy(config: object, **options: object) -> object:
        mapped.update(options)
        return open_session_port_mapping(config, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(session_module, "open_session_port_mapping", spy)
    decided = {4: PeerAddress.parse("81.2.69.160:6881")}
    monkeypatch.setattr(DHTNode, "external_addresses", property(lambda node: decided))
    # Nothing listens on the proxy's port: the DHT is proxied, never associated.
    proxy = ProxyConfig(LOOPBACK, 1) if proxied else None
    sent: list[object] = []
    with trio.fail_after(DEADLINE):
        async with (
            open_dht((LOOPBACK, 0), proxy=proxy) as dht,
            open_session(loopback_config(), dht=dht) as session,
        ):
            port = dht.addresses[0].port
            monkeypatch.setattr(session.manager, "send_nowait", lambda _, m: sent.append(m))
            peer = SimpleNamespace(
                extensions=Extensions.DHT, address=PeerAddress.parse("10.0.0.9:6881")
            )
            session._tell_dht_port(peer)  # type: ignore[arg-type]
            session.external.tick(session.manager, trio.current_time())
            votes = session.external.voter.statistics().votes
    udp_ports = mapped["udp_ports"]
    assert isinstance(udp_ports, tuple)
    # (mapped, told, votes) in one comparison: a failure shows all three
    found = (port in udp_ports, sent, votes)
    assert found == ((False, [], 0) if proxied else (True, [Port(port)], 1))


# -- bip dht --proxy ----------------------------------------------------------------------------


@pytest.fixture
def proxied_network() -> Iterator[tuple[str, SocksServer]]:
    """A DHT node on DIRECT and a SOCKS5 proxy, run by trio on a thread: the node's
    ``host:port`` and the proxy."""
    ready = threading.Event()
    state: dict[str, object] = {}

    async def run() -> None:
        stop = trio.Event()
        state["stop"] = stop
        state["token"] = trio.lowlevel.current_trio_token()
        async with serve_socks5() as server, open_dht((DIRECT, 0)) as node:
            state["node"] = str(node.addresses[0])
            state["server"] = server
            ready.set()
            with trio.fail_after(60):
                await stop.wait()

    thread = threading.Thread(target=trio.run, args=(run,), daemon=True)
    thread.start()
    assert ready.wait(DEADLINE), "the DHT did not start"
    try:
        server = state["server"]
        assert isinstance(server, SocksServer)
        yield str(state["node"]), server
    finally:
        stop = state["stop"]
        assert isinstance(stop, trio.Event)
        trio.from_thread.run_sync(stop.set, trio_token=state["token"])  # type: ignore[arg-type]
        thread.join(DEADLINE)


def test_bip_dht_announces_through_the_proxy(
    proxied_network: tuple[str, SocksServer], capsys: pytest.CaptureFixture[str]
) -> None:
    node, server = proxied_network
    common = ["--bind", LOOPBACK, "--bootstrap", node, "--timeout", str(DEADLINE)]
    assert main(["dht", "announce", HASH, *common, "--proxy", server.url()]) == 0
    assert "on the port the proxy relays from to 1 nodes" in capsys.readouterr().out
    [association] = server.associations
    # Asked directly, the node gives the announced peer: the relay's address (implied_port).
    assert main(["dht", "get-peers", HASH, *common]) == 0
    assert capsys.readouterr().out == f"{LOOPBACK}:{association.relay_port}\n"


def test_bip_dht_serve_through_a_proxy_without_bootstrap_says_nobody_can_join_us(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["dht", "serve", "--bind", f"{LOOPBACK}:0", "--proxy", f"socks5://{LOOPBACK}:1"]
    assert main([*argv, "--duration", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "nobody can join through us (give --bootstrap or --state)" in out
    assert "waiting for others" not in out


def test_bip_dht_refuses_a_bad_proxy_url(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["dht", "get-peers", HASH, "--bootstrap", "127.0.0.1:1", "--proxy", "http://x:1"]
    err = assert_one_line_error(argv, "--proxy", capsys)
    assert "socks5" in err


@pytest.mark.parametrize(
    ("proxy", "family"), [("socks5://[::1]:9", 6), ("socks5://127.0.0.1:9", 4)]
)
async def test_a_proxied_dht_on_any_address_binds_the_proxys_family(
    tmp_path: Path, proxy: str, family: int
) -> None:
    # Its relay socket talks to the proxy's addresses of its own family alone: on "any
    # address" it takes the proxy's (an IPv4 socket never associated with a proxy on ::1).
    if family == 6 and not has_ipv6_loopback():
        pytest.skip("no ::1 on this host")
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    args = parser.parse_args(["--bind", "0.0.0.0", "--no-trackers", "--proxy", proxy])
    config = config_from_args(args)
    with trio.fail_after(DEADLINE):
        async with open_dht_node(args, config, tmp_path) as (dht, _router):
            assert isinstance(dht, DHT)
            assert [address.family for address in dht.addresses] == [family]
