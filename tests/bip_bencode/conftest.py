"""Fixtures shared by the bip_bencode tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest


def _stack_depth() -> int:
    frame: FrameType | None = sys._getframe()
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def _call_deep_in_the_stack(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with the Python stack filled to 60 frames short of the recursion limit."""
    target = sys.getrecursionlimit() - 60

    def down(remaining: int) -> Any:
        if remaining <= 0:
            result = fn()
            # Checked after the call: materialising frame objects slows the GC down.
            assert _stack_depth() >= target - 2
            return result
        return down(remaining - 1)

    remaining = target - _stack_depth() - 2
    assert remaining > 0
    return down(remaining)


@pytest.fixture
def deep_in_the_stack() -> Callable[[Callable[[], Any]], Any]:
    """A function that runs a callable from deep inside the Python stack.

    Proves the code under test does not recurse: with 60 frames left before the
    interpreter's limit, any recursion over a deep value would raise RecursionError.
    """
    return _call_deep_in_the_stack
