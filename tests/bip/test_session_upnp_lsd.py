"""UPnP IGD and Local Service Discovery (BEP 14) in the session.

UPnP: the listen ports mapped on a fake IGD on 127.0.0.1 (tests/_upnp_igd.py), the port it
grants told to others, the mappings deleted on close; beside NAT-PMP, NAT-PMP's grant is the
one told. LSD: the "group" is a hub on 127.0.0.1 that sends every datagram to every sender
it has heard, standing in for the multicast group (tests never multicast); two sessions that
know nothing of each other but the torrent find each other through it; a private torrent is
never announced.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, same_files, until, write_content
from tests._upnp_igd import EXTERNAL, FakeIgd, running_igd

from bip._client import Session, TorrentOptions, open_session
from bip._cmd_download import add_session_arguments, config_from_args
from bip_handshake import MappingProtocol, decode_lsd_announce
from bip_metainfo import create_torrent

LOOPBACK = "127.0.0.1"
DEADLINE = 20.0


def granted(session: Session) -> bool:
    return bool(session.port_mappings) and all(
        m.external_port is not None for m in session.port_mappings
    )


async def test_upnp_maps_the_listen_ports_tells_the_grant_and_deletes_on_close() -> None:
    # Another host holds our port on the router: the mapper moves to another one (718).
    igd = FakeIgd()
    with trio.fail_after(DEADLINE):
        async with running_igd(igd) as (host, ssdp_port):
            config = loopback_config(upnp=True, upnp_ssdp_address=f"{host}:{ssdp_port}")
            async with open_session(config) as session:
                port = session.listen_port
                igd.taken.add(port)
                await until(lambda: granted(session))
                assert session.port_mapping.upnp is not None
                assert session.port_mapping.mapper is None  # NAT-PMP is off
                mapped = {(m.protocol, m.internal_port) for m in session.port_mappings}
                assert mapped == {(MappingProtocol.TCP, port), (MappingProtocol.UDP, port)}
                tcp = session.port_mapping.external_port(MappingProtocol.TCP, port)
                assert tcp is not None
                assert tcp != port
                assert session.external_port == tcp
                assert str(session.port_mapping.external_address) == EXTERNAL
                entries = list(igd.mappings.values())
                assert {e.internal_port for e in entries} == {port}
                assert {e.client for e in entries} == {LOOPBACK}  # NewInternalClient
                assert all(e.description.startswith("bip ") for e in entries)
            # Deleted on the way out.
            assert igd.mappings == {}
            assert len(igd.actions("DeletePortMapping")) == 2


async def test_upnp_beside_natpmp_a_silent_natpmp_gateway_leaves_upnp_s_grant(
    tmp_path: Path,
) -> None:
    igd = FakeIgd()
    with trio.fail_after(DEADLINE):
        async with running_igd(igd) as (host, ssdp_port):
            # A NAT-PMP "gateway" that never answers: a UDP socket nobody reads.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
                silent.bind((LOOPBACK, 0))
                config = loopback_config(
                    upnp=True,
                    upnp_ssdp_address=f"{host}:{ssdp_port}",
                    natpmp=True,
                    natpmp_gateway=LOOPBACK,
                    natpmp_gateway_port=silent.getsockname()[1],
                )
                async with open_session(config) as session:
                    port = session.listen_port
                    await until(
                        lambda: (
                            session.port_mapping.external_port(MappingProtocol.TCP, port)
                            is not None
                        )
                    )
                    assert session.port_mapping.mapper is not None
                    assert session.port_mapping.upnp is not None
                    # Both mappers' mappings are listed; only UPnP's are granted.
                    assert len(session.port_mappings) == 4
                    assert session.external_port == port  # the IGD granted the same port


def test_upnp_and_lsd_are_off_by_default() -> None:
    config = loopback_config()
    assert (config.upnp, config.lsd) == (False, False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("upnp_ssdp_address", "239.255.255.250"),
        ("upnp_ssdp_address", "[::1]:1900"),
        ("lsd_group", "not an address"),
        ("lsd_group", 6771),
        ("upnp", 1),
        ("lsd", "yes"),
    ],
)
def test_bad_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        loopback_config(**{field: value})


def test_cli_switches() -> None:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    config = config_from_args(parser.parse_args(["--upnp", "--lsd"]))
    assert (config.upnp, config.lsd) == (True, True)
    config = config_from_args(parser.parse_args([]))
    assert (config.upnp, config.lsd) == (False, False)


class Hub:
    """The LSD group's stand-in: each datagram goes to every address heard from so far."""

    def __init__(self) -> None:
        self.members: dict[tuple[str, int], None] = {}
        self.heard: list[bytes] = []

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind((LOOPBACK, 0))
            task_status.started(sock.getsockname()[1])
            while True:
                data, source = await sock.recvfrom(4096)
                self.heard.append(data)
                self.members[source] = None
                for member in self.members:
                    await sock.sendto(data, member)

    def hashes(self) -> set[bytes]:
        return {h for data in self.heard for h in decode_lsd_announce(data).info_hashes}


async def test_lsd_two_sessions_find_each_other_on_the_local_network(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (300_000,))
    torrent = make_torrent(folder, "hybrid")
    hub = Hub()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            hub_port = await nursery.start(hub.serve)
            config = loopback_config(lsd=True, lsd_group=f"{LOOPBACK}:{hub_port}")
            async with open_session(config) as seeder, open_session(config) as leecher:
                assert len(seeder.lsd) == 1  # IPv4 only: the group given is a test's
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
                # No peers, trackers nor DHT: only LSD can bring them together.
                leeching = await leecher.add_torrent(torrent, TorrentOptions(tmp_path / "leech"))
                await leeching.wait_complete()
                assert same_files(folder, tmp_path / "leech" / folder.name)
                # Both swarms of the hybrid torrent are announced (BEP 52 swarm ids), in a
                # message each a minute apart (BEP 14): the first has gone out.
                assert seeder.lsd[0].is_announced(torrent.info.info_hash)
                assert hub.hashes() & set(torrent.info.info_hash.swarm_ids())
                assert all(len(decode_lsd_announce(m).info_hashes) == 1 for m in hub.heard)
            nursery.cancel_scope.cancel()


async def test_lsd_never_announces_a_private_torrent(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (40_000,))
    private = create_torrent(folder, version="v1", private=True, creation_date=None)
    public = make_torrent(write_content(tmp_path / "other", (40_000,), seed=2), "v1")
    hub = Hub()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            hub_port = await nursery.start(hub.serve)
            config = loopback_config(lsd=True, lsd_group=f"{LOOPBACK}:{hub_port}")
            async with open_session(config) as session:
                await (
                    await session.add_torrent(private, TorrentOptions(folder.parent))
                ).wait_complete()
                await session.add_torrent(public, TorrentOptions(tmp_path / "other"))
                await until(lambda: bool(hub.heard))
                assert private.info.info_hash.v1 not in hub.hashes()
                assert public.info.info_hash.v1 in hub.hashes()
            nursery.cancel_scope.cancel()
