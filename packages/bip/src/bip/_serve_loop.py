"""The loop of the long-running ``serve`` commands: print statistics every so often until
a signal or the ``--duration`` ends it, then a final line."""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import AsyncIterator, Callable

import trio

__all__ = ["print_statistics_until_stopped"]


async def print_statistics_until_stopped(
    signals: AsyncIterator[int],
    *,
    duration: float | None,
    interval: float,
    statistics: Callable[[], str],
) -> None:
    """Print ``statistics()`` every ``interval`` seconds until one of ``signals`` arrives
    (named on stderr) or ``duration`` seconds pass (None: no limit), then ``final: ...``.

    ``signals`` is opened by the caller before it starts serving, so a Ctrl-C during the
    start-up is not lost.
    """
    deadline = math.inf if duration is None else trio.current_time() + duration
    with trio.move_on_at(deadline):
        async with trio.open_nursery() as nursery:

            async def wait_for_signal() -> None:
                async for signum in signals:
                    print(f"stopping on {signal.Signals(signum).name}", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(wait_for_signal)
            while True:
                await trio.sleep(interval)
                print(statistics(), flush=True)
    print(f"final: {statistics()}", flush=True)
