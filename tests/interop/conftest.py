"""Fixtures for interop tests; the machinery itself is in _helpers.py."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ._helpers import RunningProcess, StartProcess, require_client, running_process


@pytest.fixture
def client(request: pytest.FixtureRequest) -> str:
    """The path of a client named by indirect parametrization; a missing one skips (fails in CI).

    `@pytest.mark.parametrize("client", ["aria2c", "rtorrent"], indirect=True)`. Outside a
    parametrized test, call `require_client(name)` from _helpers instead.
    """
    name = getattr(request, "param", None)
    if not isinstance(name, str):
        raise pytest.UsageError("the client fixture needs indirect parametrization with a name")
    return require_client(name)


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[StartProcess]:
    """`start_process(argv, ready=...)` starts a process with `running_process`.

    Every process started through it is stopped by PID at teardown, the last one first. `cwd`
    defaults to the test's tmp_path.
    """
    with contextlib.ExitStack() as stack:

        def start(
            argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None, **options: Any
        ) -> RunningProcess:
            # The options are running_process's; StartProcess spells them out for callers.
            return stack.enter_context(
                running_process(argv, cwd=tmp_path if cwd is None else cwd, **options)
            )

        yield start
