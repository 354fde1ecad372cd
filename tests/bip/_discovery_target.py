"""What the tracker announcer tests share (test_tracker_announce_floor.py, test_shown_urls.py,
test_http_tracker_names.py): a :class:`~bip._client._discovery.DiscoveryTarget` that is a
checked seed, and a sink that drops what is found."""

from __future__ import annotations

from collections.abc import Iterable

import trio

from bip_handshake import PeerAddress
from bip_metainfo import InfoHash

__all__ = ["NullSink", "SeedTarget"]


class SeedTarget:
    """A DiscoveryTarget: a seed of the v1 torrent ``info_hash`` whose data is checked,
    listening on port 6881, that has moved no data."""

    def __init__(self, info_hash: bytes) -> None:
        self.info_hash = InfoHash(v1=info_hash)
        self.listen_port = 6881
        self.private = False
        self.completed = trio.Event()
        self.seeded = trio.Event()
        self.ready = trio.Event()
        self.completed.set()
        self.seeded.set()
        self.ready.set()

    def transfer(self) -> tuple[int, int, int]:
        """Bytes uploaded, downloaded, and left: none moved, nothing left."""
        return (0, 0, 0)


class NullSink:
    """A discovery sink that drops the peers it is told of."""

    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        """Drop ``addresses``."""
