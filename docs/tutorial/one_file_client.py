"""Build a torrent client in one file: the bip libraries composed into a downloader.

    python docs/tutorial/one_file_client.py TORRENT DEST [--tracker URL] [--dht HOST:PORT]
        [--peer HOST:PORT] [--bind HOST] [--timeout SECONDS]

Downloads one torrent (v1, v2 or hybrid) into DEST and exits 0 once every piece is verified,
1 with a one-line message if it cannot. docs/tutorial.md walks through it, and
tests/test_tutorial.py runs it against a loopback seeder, so it cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
from typing import cast

import trio

import bip_disk
import bip_peer
import bip_select
from bip_dht import open_dht
from bip_disk import DiskManager, NativeFileSystem, TorrentHandle, TorrentState, open_disk_manager
from bip_handshake import EncryptionPolicy, Extensions, PeerAddress, open_handshaker
from bip_metainfo import Metainfo, MetainfoError
from bip_peer import Peer, PeerManager, PeerManagerConfig, open_peer_manager
from bip_select import Choker, QueueConfig, SwarmBrain, TorrentGeometry
from bip_utracker import AnnounceProgress, Announcer, open_tracker_client

TICK = 0.1  # seconds
MAX_QUEUE = QueueConfig().max_queue  # requests the brain keeps open to one peer at most


# -- step: download --
class Download:
    """One torrent's download: peers and the disk feed the brain; its actions go to the peers."""

    def __init__(
        self, brain: SwarmBrain, manager: PeerManager, disk: DiskManager, handle: TorrentHandle
    ) -> None:
        self.brain, self.manager, self.disk, self.handle = brain, manager, disk, handle
        self.joined: set[Peer] = set()  # the peers the brain knows
        self.done = trio.Event()  # complete, or failed
        self.failure: str | None = None

    def feed(self, event: bip_select.Input) -> None:
        """Tell the brain what happened."""
        self.carry_out(self.brain.handle(event, trio.current_time()))

    def progress(self) -> AnnounceProgress:
        """What trackers are told: the bytes still missing."""
        return AnnounceProgress(left=self.brain.geometry.bytes_left(self.disk.have(self.handle)))

    def carry_out(self, actions: list[bip_select.Action]) -> None:
        """Do what the brain decided: a message to send (bip_select translates), or a drop."""
        for action in actions:
            peer = cast(Peer, action.peer)  # the brain's peers are the Peer handles we gave it
            if isinstance(action, bip_select.DropPeer):  # bad data, or too slow for too long
                self.joined.discard(peer)
                self.manager.remove_peer(peer, action.reason)
                continue
            message = bip_select.message_for(action, self.handle.num_pieces)
            # The brain's view may lag the connection's (a cancel for a block that has just
            # arrived): the connection refuses such a message, and that is harmless.
            with contextlib.suppress(bip_peer.StaleSendError):
                # Never wait for one slow peer: a full send queue means it stopped reading.
                if not self.manager.send_nowait(peer, message):
                    self.manager.remove_peer(peer, "send queue full")

    # -- step: peers --
    async def run_peers(self) -> None:
        """The peer manager's events: peers join and leave the brain, their messages feed it."""
        async for event in self.manager.events():
            if isinstance(event, bip_peer.PeerAdded):  # comes before any message of the peer
                self.joined.add(event.peer)
                for joined in bip_select.join_inputs(event.peer):  # what its handshakes said
                    self.feed(joined)
            elif isinstance(event, bip_peer.PeerRemoved) and event.peer in self.joined:
                self.joined.discard(event.peer)
                self.feed(bip_select.PeerLeft(event.peer))
            elif isinstance(event, bip_peer.MessageReceived) and event.peer in self.joined:
                await self.message(event.peer, event.message)

    async def message(self, peer: Peer, message: object) -> None:
        """One message from a peer the brain knows: a block goes to the disk first."""
        if isinstance(message, bip_peer.Piece):  # the connection checked we asked for it
            try:
                await self.disk.write_block(
                    self.handle, message.index, message.begin, message.block
                )
            except bip_disk.TorrentStateError:  # a storage fault: TorrentFailed follows
                return
            if peer in self.joined:  # it may have left while the disk was busy
                self.feed(bip_select.block_received(peer, message))
        else:  # haves, bitfields, chokes, rejects, the BEP 10 handshake's reqq...
            now = trio.current_time()
            self.carry_out(bip_select.handle_message(self.brain, peer, message, now))

    # -- step: verified --
    async def run_disk(self) -> None:
        """The disk's verdicts: only a piece that hashed right is ours (and announced)."""
        async for event in self.disk.events():
            if isinstance(event, bip_disk.PieceVerified):
                self.feed(bip_select.PieceVerified(event.piece, event.good))
                if self.brain.is_complete:
                    self.done.set()
            elif isinstance(event, bip_disk.TorrentFailed):
                self.failure = f"storage: {event.reason}"
                self.done.set()

    async def run_timers(self) -> None:
        """The brain's timers: request timeouts, snubbing, refills (it says when they are due)."""
        while True:
            await trio.sleep(TICK)
            deadline, now = self.brain.next_deadline(), trio.current_time()
            if deadline is not None and now >= deadline:
                self.feed(bip_select.Tick(now))


async def download(args: argparse.Namespace) -> str | None:
    """Download the torrent; ``None`` once every piece is verified, else why not."""
    # -- step: load --
    torrent = Metainfo.from_file(args.torrent)  # v1, v2 or hybrid; v2 piece layers included
    info = torrent.info
    # -- step: services --
    download: Download | None = None
    with trio.move_on_after(args.timeout):  # the whole run, the check of DEST included
        async with (
            open_disk_manager() as disk,
            open_handshaker(
                listen=[(args.bind, 0)],  # port 0: any free port; a fresh peer id by default
                extensions=Extensions.FAST | Extensions.EXTENSION_PROTOCOL,
                encryption=EncryptionPolicy.PREFER_ENCRYPTED,  # MSE when the peer speaks it
            ) as handshaker,
            # Room in each peer's send queue for the most requests the brain keeps open to a
            # peer (500, libtorrent's limit, whatever the peer's reqq says), and then some.
            open_peer_manager(PeerManagerConfig(send_queue_size=MAX_QUEUE + 64)) as manager,
            # The tracker client and the DHT give the peers they find to the handshaker.
            open_tracker_client(
                bind_v4=args.bind, bind_v6=None, sink=handshaker, max_retransmits=2
            ) as trackers,
            open_dht((args.bind, 0), args.dht, peer_sink=handshaker) as dht,
            trio.open_nursery() as nursery,
        ):
            # -- step: disk --
            handle = await disk.add_torrent(torrent, NativeFileSystem(args.dest))
            if await disk.wait_checked(handle) is TorrentState.ERROR:  # what is there is hashed
                return f"storage: {disk.status(handle).reason}"
            # -- step: brain --
            rng = random.Random()
            brain = SwarmBrain(
                TorrentGeometry.from_info(info),
                rng=rng,
                have=disk.have(handle),
                # No upload slots: a download-only client keeps every peer choked (BEP 3 allows it).
                choker=Choker(rng=rng, regular_slots=0, optimistic_slots=0),
            )
            # -- step: run --
            download = Download(brain, manager, disk, handle)
            handshaker.register(info.info_hash)  # from now on, dial its peers and accept its own
            # Every completed handshake, dialled or accepted, becomes a peer of the manager.
            nursery.start_soon(manager.add_peers_from, handshaker.completed(), info.num_pieces)
            nursery.start_soon(download.run_peers)
            nursery.start_soon(download.run_disk)
            nursery.start_soon(download.run_timers)
            # -- step: sources --
            handshaker.discovered(info.info_hash, args.peer, "user")  # the --peer addresses
            port, us = handshaker.listen_addresses[0].port, handshaker.peer_id
            urls = args.tracker or [url for tier in torrent.trackers for url in tier]
            for url in (url for url in urls if url.startswith("udp://")):  # bip_utracker is UDP
                tracker = Announcer(
                    trackers, url, info.info_hash, peer_id=us, port=port, progress=download.progress
                )
                nursery.start_soon(tracker.run)  # started, every interval, stopped when cancelled
            if args.dht:  # a lookup, our port announced on the way, now and every 15 minutes
                nursery.start_soon(
                    lambda: dht.keep_finding(info.info_hash, announce=True, port=port)
                )
            # -- step: wait --
            if not brain.is_complete:
                await download.done.wait()  # complete, or failed
            nursery.cancel_scope.cancel()  # leaving the block flushes and closes everything
            return download.failure
    if download is None:  # out of time: say how far it got
        return f"timed out after {args.timeout:g} s"
    peers = download.manager.statistics().peers_added
    have = f"{download.brain.num_have} of {info.num_pieces} pieces from {peers} peers"
    return f"timed out after {args.timeout:g} s with {have}"


# -- step: main --
def main(argv: list[str] | None = None) -> int:
    """The command line; the exit status."""
    parser = argparse.ArgumentParser(description="Download one torrent into a folder.")
    add = parser.add_argument
    add("torrent", help="the .torrent file")
    add("dest", help="the folder to download into")
    add("--tracker", action="append", default=[], metavar="URL", help="a udp:// tracker")
    add("--dht", action="append", default=[], metavar="HOST:PORT", help="a DHT node to join")
    add("--peer", action="append", default=[], type=PeerAddress.parse, metavar="HOST:PORT")
    add("--bind", default="127.0.0.1", help="our address (0.0.0.0 to leave this machine)")
    add("--timeout", type=float, default=600.0, help="seconds before giving up (600)")
    args = parser.parse_args(argv)
    try:
        failure = trio.run(download, args)
    except (OSError, MetainfoError) as error:  # no torrent file, a bad one, a busy port...
        failure = str(error)
    if failure is not None:
        print(f"one_file_client: {failure}", file=sys.stderr)
        return 1
    print(f"one_file_client: {args.torrent} is complete in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
# -- end --
