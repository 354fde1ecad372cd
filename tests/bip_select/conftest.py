"""Shared by the bip_select tests: puts this folder on ``sys.path`` so that they can import
the helper modules next to them (``from _brains import ...``), and counts the picker's runs
(the ``picks`` fixture)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

from bip_select._geometry import Block
from bip_select._selection import PiecePicker

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def picks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the picker runs (PiecePicker.pick calls), by peer: the work a step costs."""
    calls: list[str] = []
    original = PiecePicker.pick

    def counting(
        self: PiecePicker,
        peer: str,
        count: int,
        now: float,
        *,
        choked: bool = False,
        exclusive: bool = False,
        on_parole: AbstractSet[Hashable] | None = None,
        arrived: Callable[[Hashable, Block], bool] | None = None,
    ) -> list[Block]:
        calls.append(peer)
        return original(
            self,
            peer,
            count,
            now,
            choked=choked,
            exclusive=exclusive,
            on_parole=on_parole,
            arrived=arrived,
        )

    monkeypatch.setattr(PiecePicker, "pick", counting)
    return calls
