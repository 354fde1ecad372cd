"""Reading a test's side of a stream: until the other end closes, or until so many bytes."""

from __future__ import annotations

import trio


async def read_until_closed(stream: trio.abc.Stream, limit: int | None = None) -> bytes:
    """Everything ``stream`` gives until the other end closes it (or ``limit`` bytes)."""
    data = bytearray()
    while limit is None or len(data) < limit:
        try:
            chunk = await stream.receive_some()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def read_up_to(stream: trio.abc.Stream, count: int, have: bytes = b"") -> bytes:
    """``have`` and what ``stream`` gives next, until ``count`` bytes (fewer if it ends)."""
    data = bytearray(have)
    while len(data) < count:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return bytes(data)
