"""A service's background tasks run for the length of an ``async with`` block.

The port mappers and Local Service Discovery each keep one or two tasks running while their
block runs; :func:`background` is that frame, written once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

__all__ = ["background"]


@asynccontextmanager
async def background(*tasks: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``tasks`` while the block runs; they are cancelled when it ends.

    The block's own exception comes out as itself, not wrapped in an ExceptionGroup: the
    tasks raise nothing but bugs and the errors of the caller's callbacks, which come out the
    same way when alone.
    """
    try:
        async with trio.open_nursery() as nursery:
            for task in tasks:
                nursery.start_soon(task)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
