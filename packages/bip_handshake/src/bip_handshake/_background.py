"""A service's background tasks run for the length of an ``async with`` block.

The port mappers and Local Service Discovery each keep one or two tasks running while their
block runs; :func:`background` is that frame, written once. :func:`unwrap_single` is its
unwrapping of a lone exception, for a shell's own nurseries inside or after that frame.

Both return objects of small classes with ``__exit__``/``__aexit__``, not generator-based
context managers: a StopIteration raised in a generator turns into "RuntimeError: generator
raised StopIteration" (PEP 479), and the caller's own exception must come out as it raised
it, its ``__cause__`` and ``__context__`` kept. (A StopIteration that leaves any coroutine,
a task or an ``async def`` callback's caller, is still turned into a RuntimeError by
Python, the StopIteration its ``__cause__``: nothing here can undo that.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import NoReturn

import trio

__all__ = ["background", "unwrap_single"]


def background(*tasks: Callable[[], Awaitable[None]]) -> AbstractAsyncContextManager[None]:
    """Run ``tasks`` while the block runs; they are cancelled when it ends.

    The block's own exception comes out as itself, not wrapped in an ExceptionGroup: the
    tasks raise nothing but bugs and the errors of the caller's callbacks, which come out the
    same way when alone (with their ``__cause__`` and ``__context__`` as they were raised).
    """
    return _Background(tasks)


def unwrap_single() -> AbstractContextManager[None]:
    """An exception group holding a single exception, raised in the block (by a nursery),
    comes out as that exception; a group of several comes out as it is.

    A nursery wraps even a lone exception (trio's strict exception groups): a bug in a
    task, or an exception of the caller's callback, would reach the caller as an
    ExceptionGroup, and nested nurseries would wrap it once per level. The exception keeps
    its ``__cause__``, ``__context__`` and ``__suppress_context__``: ``raise ... from`` in a
    callback reads the same in the caller's traceback.
    """
    return _UnwrapSingle()


class _UnwrapSingle(AbstractContextManager[None]):
    """What :func:`unwrap_single` returns (it holds no state)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # None, or several: left to go on as it is.
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            _raise_keeping_chain(exc.exceptions[0])


class _Background(AbstractAsyncContextManager[None]):
    """What :func:`background` returns: the tasks' nursery, entered and left by hand."""

    __slots__ = ("_manager", "_nursery", "_tasks")

    def __init__(self, tasks: tuple[Callable[[], Awaitable[None]], ...]) -> None:
        self._tasks = tasks
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> None:
        if self._manager is not None:
            raise RuntimeError("a background frame is entered once")
        # Made here, not in __init__: trio reads its run's settings when it is made.
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._manager, self._nursery = manager, nursery
        try:
            for task in self._tasks:
                nursery.start_soon(task)
        except BaseException as exc:
            # The nursery is open: leave it as an ``async with`` would, the tasks started
            # so far cancelled.
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        manager, nursery = self._manager, self._nursery
        if manager is None or nursery is None:
            raise RuntimeError("a background frame is left only after it is entered")
        self._nursery = None
        nursery.cancel_scope.cancel()
        try:
            return await manager.__aexit__(exc_type, exc, traceback)
        except BaseExceptionGroup as group:
            if len(group.exceptions) != 1:
                raise
            if group.exceptions[0] is exc:
                # The block's own: the ``async with`` re-raises it in the caller's frame,
                # untouched; raised from here, a coroutine, a StopIteration would become a
                # RuntimeError (PEP 479).
                return False
            _raise_keeping_chain(group.exceptions[0])


def _raise_keeping_chain(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as it was raised: ``raise`` inside ``__exit__`` would chain it to the
    group being handled (its ``__context__``); ``raise ... from None`` would drop its cause.

    (trio's own unwrapping does the same, in a private helper.)
    """
    cause, context, suppress = exc.__cause__, exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__cause__ = cause
        exc.__context__ = context
        exc.__suppress_context__ = suppress  # after __cause__, whose setter sets it
        # The traceback holds this frame, which would hold the exception: no cycle.
        del exc, cause, context
