"""The shells' unwrapping of a lone exception (``unwrap_single``, ``background``): the
exception comes out as it was raised, its cause and context kept, a StopIteration as itself
where Python lets it (not from a coroutine: PEP 479)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from bip_handshake._background import background, unwrap_single


class CallerError(Exception):
    """An exception of the caller's callback, raised ``from`` another."""


def raise_from_key_error() -> None:
    try:
        raise KeyError("why")
    except KeyError as exc:
        raise CallerError("callback") from exc


def raise_while_handling_key_error() -> None:
    try:
        raise KeyError("why")
    except KeyError:
        raise CallerError("callback")  # noqa: B904 (the implicit context is the point)


async def task_raising_from_key_error() -> None:
    raise_from_key_error()


async def in_unwrapped_nursery(*tasks: Callable[[], Awaitable[None]]) -> None:
    """``tasks`` in a nursery under unwrap_single."""
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            for task in tasks:
                nursery.start_soon(task)


async def body_in_unwrapped_nursery(body: Callable[[], None]) -> None:
    """``body()`` as the body of a nursery under unwrap_single."""
    with unwrap_single():
        async with trio.open_nursery():
            body()


async def test_a_lone_exception_keeps_its_cause_and_context() -> None:
    with pytest.raises(CallerError) as info:
        await in_unwrapped_nursery(task_raising_from_key_error)
    error = info.value
    assert isinstance(error.__cause__, KeyError)  # was None (raise ... from None)
    assert error.__context__ is error.__cause__  # was the nursery's group
    assert error.__suppress_context__


async def test_a_lone_exception_keeps_its_implicit_context() -> None:
    with pytest.raises(CallerError) as info:
        await body_in_unwrapped_nursery(raise_while_handling_key_error)
    error = info.value
    assert error.__cause__ is None
    assert isinstance(error.__context__, KeyError)
    assert not error.__suppress_context__  # the traceback still shows the KeyError


async def test_a_stop_iteration_in_the_block_comes_out_as_itself() -> None:
    # In the block's own frame (a task's would be a RuntimeError before the nursery sees
    # it: PEP 479 turns a StopIteration leaving any coroutine into one), hence the
    # blocks written out here, in the test's own frame.
    with pytest.raises(StopIteration), unwrap_single():
        async with trio.open_nursery():
            next(iter(()))
    with pytest.raises(StopIteration):
        async with background(trio.sleep_forever):
            next(iter(()))


async def test_several_exceptions_stay_a_group() -> None:
    async def fails() -> None:
        raise CallerError("task")

    with pytest.RaisesGroup(CallerError, CallerError):
        await in_unwrapped_nursery(fails, fails)


async def test_background_runs_its_tasks_for_the_block_and_cancels_them_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks: list[float] = []
    ended: list[str] = []

    async def ticker() -> None:
        try:
            while True:
                ticks.append(trio.current_time())
                await trio.sleep(1)
        finally:
            ended.append("ticker")

    async with background(ticker):
        await trio.sleep(2.5)
    assert len(ticks) == 3
    assert ended == ["ticker"]


async def test_a_task_s_exception_ends_the_background_block_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(CallerError) as info:
        async with background(task_raising_from_key_error):
            await trio.sleep(60)  # cancelled at once by the task's error
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.__context__ is info.value.__cause__
    assert trio.current_time() == 0


async def test_the_block_s_exception_comes_out_of_background_untouched() -> None:
    with pytest.raises(CallerError) as info:
        async with background(trio.sleep_forever):
            raise_from_key_error()
    assert isinstance(info.value.__cause__, KeyError)
