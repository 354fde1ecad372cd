"""A service's background tasks run for the length of an ``async with`` block.

The port mappers and Local Service Discovery each keep one or two tasks running while their
block runs; :func:`background` is that frame, written once. :func:`unwrap_single` is its
unwrapping of a lone exception, for a shell's own nurseries inside or after that frame.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import trio

__all__ = ["background", "unwrap_single"]


@asynccontextmanager
async def background(*tasks: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``tasks`` while the block runs; they are cancelled when it ends.

    The block's own exception comes out as itself, not wrapped in an ExceptionGroup: the
    tasks raise nothing but bugs and the errors of the caller's callbacks, which come out the
    same way when alone.
    """
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            for task in tasks:
                nursery.start_soon(task)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()


@contextmanager
def unwrap_single() -> Iterator[None]:
    """An exception group holding a single exception, raised in the block (by a nursery),
    comes out as that exception; a group of several comes out as it is.

    A nursery wraps even a lone exception (trio's strict exception groups): a bug in a
    task, or an exception of the caller's callback, would reach the caller as an
    ExceptionGroup, and nested nurseries would wrap it once per level.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
