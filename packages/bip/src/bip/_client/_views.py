"""Snapshots of one torrent for a user interface: its peers and how far each file is.

:class:`PeerInfo` is libtorrent's ``peer_info`` (``torrent_handle.get_peer_info``) for what a
client shows in its peer list: who, over what, in which choke and interest state, how much
of the torrent the peer has, and the traffic both ways. :func:`file_progress` is
``torrent_handle.file_progress`` with piece granularity: the bytes of each file that lie in
verified pieces, which is what a client can promise a player or a previewer.

Both are frozen values computed on demand; nothing here changes the torrent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bip_handshake import Direction, PeerAddress, Transport
from bip_metainfo import Info
from bip_peer import Peer, PeerStatistics

__all__ = ["PeerInfo", "file_progress", "peer_infos"]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One connected peer, as a client's peer list shows it.

    Attributes:
        address: where the connection goes (an inbound peer's source port, not its
            listen port).
        client: the program the peer says it is: its BEP 10 ``v`` when it sent one, else
            what its peer id names (``qBittorrent 4.5.2``), else the peer id shown as text.
        direction: ``"outbound"`` (we dialled) or ``"inbound"``.
        transport: ``"tcp"`` or ``"utp"``.
        encrypted: the stream is RC4-encrypted (MSE/PE).
        am_choking: we refuse the peer's requests.
        am_interested: the peer has pieces we want.
        peer_choking: the peer refuses our requests.
        peer_interested: we have pieces the peer wants.
        seed: the peer has every piece.
        pieces: the pieces the peer has (0 before a magnet's metadata is known).
        download_rate: bytes per second read from the peer (protocol overhead included).
        upload_rate: bytes per second written to the peer.
        downloaded: bytes read from the peer over this connection.
        uploaded: bytes written to the peer over this connection.
        connected_for: seconds since the connection was made.
        requests_out: block requests of ours the peer has not answered.
        requests_in: block requests of the peer's we have not answered.
    """

    address: PeerAddress
    client: str
    direction: Direction
    transport: Transport
    encrypted: bool
    am_choking: bool
    am_interested: bool
    peer_choking: bool
    peer_interested: bool
    seed: bool
    pieces: int
    download_rate: float
    upload_rate: float
    downloaded: int
    uploaded: int
    connected_for: float
    requests_out: int
    requests_in: int


def _client(peer: Peer) -> str:
    """libtorrent's order: the extension handshake's ``v``, then the peer id's client."""
    handshake = peer.extended_handshake
    if handshake is not None and handshake.v:
        return handshake.v
    client = peer.peer_id.client
    return str(client) if client is not None else str(peer.peer_id)


def peer_infos(
    peers: Iterable[Peer], statistics: Mapping[Peer, PeerStatistics]
) -> tuple[PeerInfo, ...]:
    """A :class:`PeerInfo` for each of ``peers``, ordered by address; ``statistics`` are the
    peer manager's (:attr:`~bip_peer.ManagerStatistics.peers`): a peer missing there (it
    left meanwhile) shows no traffic."""
    infos = []
    for peer in peers:
        connection = peer.connection
        stats = statistics.get(peer, PeerStatistics())
        infos.append(
            PeerInfo(
                address=peer.address,
                client=_client(peer),
                direction=peer.direction,
                transport=peer.transport,
                encrypted=peer.encryption == "rc4",
                am_choking=connection.am_choking,
                am_interested=connection.am_interested,
                peer_choking=connection.peer_choking,
                peer_interested=connection.peer_interested,
                seed=connection.peer_has_all,
                pieces=len(connection.peer_pieces),
                download_rate=stats.receive_rate,
                upload_rate=stats.send_rate,
                downloaded=stats.bytes_received,
                uploaded=stats.bytes_sent,
                connected_for=stats.connected_for,
                requests_out=len(connection.our_requests),
                requests_in=len(connection.peer_requests),
            )
        )
    infos.sort(key=lambda info: (info.address.host.version, info.address.host, info.address.port))
    return tuple(infos)


def file_progress(info: Info, verified: Iterable[int]) -> tuple[int, ...]:
    """The bytes of each file of ``info`` (in :attr:`~bip_metainfo.Info.files` order) that
    lie in the ``verified`` pieces. A BEP 47 pad file counts its bytes in those pieces too
    (a client hides pad files, as it hides them from the file list). Pieces outside the
    torrent are ignored.

    Costs one pass over the verified pieces' file slices.
    """
    progress = [0] * len(info.files)
    geometry = info.geometry
    for piece in verified:
        if 0 <= piece < geometry.num_pieces:
            for part in geometry.slices(piece):
                progress[part.file_index] += part.length
    return tuple(progress)
