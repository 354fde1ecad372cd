"""aria2 1.36's DHT answers the queries bip_dht's codec builds, and we decode its answers.

aria2 runs its DHT only while it has a BitTorrent job, so it seeds a small torrent
(_dht_nodes.start_aria2_dht), knowing no other node. Our side is a raw KRPC node
(_dht_nodes.KRPCNode). aria2 has no BEP 44 (INTEROP.md), so: ping, find_node, get_peers, and
announce_peer with the token aria2 gave us, after which aria2 hands our address out to the next
get_peers; it ignores ``implied_port`` (it stores ``port``, and drops the announce when
``port`` is 0); a wrong token stores nothing.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import trio

from bip_dht import ErrorReply, FindNode, Response
from bip_handshake import NodeInfo, PeerAddress

from ._dht_nodes import open_krpc_node, start_aria2_dht, wait_answering
from ._helpers import StartProcess

pytestmark = pytest.mark.interop


def _response(reply: Response | ErrorReply) -> Response:
    assert isinstance(reply, Response), f"aria2 answered with an error: {reply!r}"
    return reply


def _token_of(reply: Response) -> bytes:
    assert reply.token, f"get_peers reply without a token: {reply!r}"
    return reply.token


async def test_aria2_answers_our_queries(start_process: StartProcess, tmp_path: Path) -> None:
    aria2 = start_aria2_dht(start_process, tmp_path)
    async with open_krpc_node() as ours:
        me = ours.node_id
        pong = await wait_answering(ours, aria2.address)
        aria2_id = pong.node_id
        assert aria2_id != me
        assert pong.version is not None
        assert pong.version[:2] == b"A2", pong.version

        # find_node: aria2 knows only loopback nodes (us, since our ping, and the readiness
        # probes' sockets).
        found = _response(
            await ours.query(
                lambda t: FindNode(transaction_id=t, node_id=me, target=secrets.token_bytes(20)),
                aria2.address,
            )
        )
        assert found.nodes is not None
        assert all(node.address.host.is_loopback for node in found.nodes), found.nodes
        assert NodeInfo(me, ours.address) in found.nodes, found.nodes

        # get_peers for its own torrent and for an unknown hash: a token, and nodes or values.
        info_hash = aria2.torrent.v1
        reply = _response(await ours.get_peers(aria2.address, info_hash))
        token = _token_of(reply)
        assert reply.values is not None or reply.nodes is not None

        # announce_peer with its token: accepted, and the next get_peers returns us.
        port = 6999
        _response(await ours.announce_peer(aria2.address, info_hash, port=port, token=token))
        with trio.fail_after(5):
            while True:
                again = _response(await ours.get_peers(aria2.address, info_hash))
                if again.values and PeerAddress(ours.address.host, port) in again.values:
                    break
                await trio.sleep(0.1)

        # implied_port: aria2 1.36 ignores it and stores ``port`` as sent (libtorrent takes the
        # UDP source port). So an announcer using implied_port must still send its real port
        # in ``port`` for aria2 to hand out a usable address.
        other = secrets.token_bytes(20)
        token = _token_of(_response(await ours.get_peers(aria2.address, other)))
        _response(
            await ours.announce_peer(
                aria2.address, other, port=port, token=token, implied_port=True
            )
        )
        values = _response(await ours.get_peers(aria2.address, other)).values
        assert values == (PeerAddress(ours.address.host, port),), values

        # And with ``port`` 0 beside implied_port (what a node that leaves the port to
        # implied_port might send), aria2 drops the announce without a reply.
        zero = secrets.token_bytes(20)
        token = _token_of(_response(await ours.get_peers(aria2.address, zero)))
        with pytest.raises(TimeoutError):
            await ours.announce_peer(
                aria2.address, zero, port=0, token=token, implied_port=True, timeout=0.5, attempts=1
            )

        # A token aria2 never gave: aria2 drops the query without a reply (libtorrent answers
        # 203) and stores nothing.
        with pytest.raises(TimeoutError):
            await ours.announce_peer(
                aria2.address, info_hash, port=7000, token=b"nope", timeout=0.5, attempts=1
            )
        values = _response(await ours.get_peers(aria2.address, info_hash)).values
        assert values is not None
        assert PeerAddress(ours.address.host, 7000) not in values
        assert not ours.undecodable, ours.undecodable
