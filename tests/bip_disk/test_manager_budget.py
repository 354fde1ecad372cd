"""ByteBudget: FIFO, turned-away and cancelled waiters, oversized requests."""

from __future__ import annotations

import trio
import trio.testing

from bip_disk._budget import ByteBudget


async def test_takers_are_served_in_order_and_oversized_ones_alone() -> None:
    budget = ByteBudget(10)
    owner, other = object(), object()
    assert await budget.take(6, owner)
    granted: list[tuple[int, bool]] = []

    async def take(size: int, who: object) -> None:
        granted.append((size, await budget.take(size, who)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, 5, owner)  # does not fit: waits
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, 1, other)  # would fit, but waits its turn
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, 50, other)  # larger than the bound
        await trio.testing.wait_all_tasks_blocked()
        assert budget.waiting == 3
        assert granted == []
        budget.release(6)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(granted) == [(1, True), (5, True)]  # both granted (they wake in any order)
        assert budget.used == 6
        budget.release(6)  # nothing held: the oversized request goes through alone
        await trio.testing.wait_all_tasks_blocked()
        assert granted[-1] == (50, True)
        assert budget.used == 50
    budget.release(50)
    assert budget.used == 0


async def test_turned_away_and_cancelled_waiters_leave_nothing() -> None:
    budget = ByteBudget(4)
    stopped, running = object(), object()
    assert await budget.take(4, running)
    results: list[bool] = []

    async def take(who: object) -> None:
        results.append(await budget.take(2, who))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, stopped)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            nursery.start_soon(take, running)  # not cancelled: its own task
        await trio.testing.wait_all_tasks_blocked()
        budget.turn_away(stopped)
        await trio.testing.wait_all_tasks_blocked()
        assert results == [False]
        assert budget.waiting == 1
        nursery.cancel_scope.cancel()
    assert budget.waiting == 0
    assert budget.used == 4
