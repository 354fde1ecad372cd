"""UtpReceiveBudget.wake: cheap while too little is free to reopen a starved window."""

from __future__ import annotations

from typing import cast

from bip_handshake._utp_connection import UtpConnection, UtpReceiveBudget, UtpState


class _Config:
    def __init__(self, receive_buffer: int) -> None:
        self.receive_buffer = receive_buffer


class _Starved:
    """Just what the budget reads of a connection, counting the window checks."""

    state = UtpState.CONNECTED
    finished = False

    def __init__(self, budget: UtpReceiveBudget, threshold: int, own: int) -> None:
        self._budget = budget
        self._update_threshold = threshold
        self._config = _Config(receive_buffer=own * 4)
        self.own = own
        self.checks = 0

    def _reopening_window(self) -> int:
        return UtpConnection._reopening_window(cast(UtpConnection, self))

    def _window_update(self) -> bool:
        self.checks += 1
        return min(self.own, self._budget.free()) >= self._update_threshold


def _starve(budget: UtpReceiveBudget, count: int, threshold: int = 1000) -> list[_Starved]:
    connections = [_Starved(budget, threshold, own=4 * threshold) for _ in range(count)]
    for connection in connections:
        budget.starve(cast(UtpConnection, connection))
    return connections


def test_wake_walks_no_starved_connection_while_less_than_a_packet_is_free() -> None:
    budget = UtpReceiveBudget(100_000)
    budget.used = budget.limit  # spent
    connections = _starve(budget, 200)
    for freed in range(1, 999, 7):  # reads freeing a little at a time
        budget.used = budget.limit - freed
        budget.wake()
    assert sum(connection.checks for connection in connections) == 0
    assert budget.take_woken() == []


def test_wake_reopens_every_starved_window_once_a_packet_is_free() -> None:
    budget = UtpReceiveBudget(100_000)
    budget.used = budget.limit
    connections = _starve(budget, 50)
    budget.used = budget.limit - 1000
    budget.wake()
    assert all(connection.checks == 1 for connection in connections)
    assert len(budget.take_woken()) == 50
    budget.wake()  # nobody starved any more: nothing walked
    assert all(connection.checks == 1 for connection in connections)


def test_the_floor_is_the_lowest_threshold_of_the_starved() -> None:
    budget = UtpReceiveBudget(100_000)
    budget.used = budget.limit
    big = _starve(budget, 3, threshold=1400)
    [small] = _starve(budget, 1, threshold=150)
    budget.used = budget.limit - 200  # room for the small one's packet only
    budget.wake()
    assert small.checks == 1
    assert all(connection.checks == 1 for connection in big)
    assert budget.take_woken() == [cast(UtpConnection, small)]
    budget.used = budget.limit - 300  # the floor rose to the big ones' packet
    budget.wake()
    assert all(connection.checks == 1 for connection in big)
    budget.used = budget.limit - 1400
    budget.wake()
    assert len(budget.take_woken()) == 3
