"""What the bip_disk event tests share (tests/bip_disk/test_event_order.py and
test_keep_move_events.py): a multi-file torrent's info built from its files' contents, and
the events read up to the first of a kind.

Imported as ``tests._disk_events``: the root conftest puts the repository's root on
``sys.path`` (tests/bip_disk is no package), as mypy finds it from the repository's root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import trio

from bip_bencode import encode
from bip_disk import DiskEvent, DiskManager
from bip_metainfo import Info

__all__ = ["multi_file_info", "until"]


def multi_file_info(name: str, files: Sequence[tuple[str, bytes]], piece_length: int) -> Info:
    """The info of torrent ``name`` holding ``files`` (each a name and its content), in
    that order in one piece space of ``piece_length`` pieces."""
    space = b"".join(content for _, content in files)
    return Info.from_bytes(
        encode(
            {
                b"name": name.encode(),
                b"piece length": piece_length,
                b"pieces": b"".join(
                    hashlib.sha1(space[at : at + piece_length]).digest()
                    for at in range(0, len(space), piece_length)
                ),
                b"files": [
                    {b"length": len(content), b"path": [file.encode()]} for file, content in files
                ],
            }
        )
    )


async def until(disk: DiskManager, kind: type[DiskEvent], deadline: float = 10) -> list[DiskEvent]:
    """The events up to and including the first of ``kind``, read within ``deadline``
    seconds.

    Raises:
        trio.TooSlowError: none came within ``deadline``.
        AssertionError: the event stream ended first.
    """
    events: list[DiskEvent] = []
    with trio.fail_after(deadline):
        async for event in disk.events():
            events.append(event)
            if isinstance(event, kind):
                return events
    raise AssertionError("the event stream ended")
