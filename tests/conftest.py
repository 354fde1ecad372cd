"""Root conftest: suite-wide checks only. Interop machinery lives in tests/interop/."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

INTEROP_DIR = Path(__file__).parent / "interop"

# Helpers shared by several test folders live in this folder and are imported as ``tests._x``
# (tests/bip is no package, tests/interop is one: both reach them so, as mypy does from the
# repository's root). Appended, not inserted: nothing already importable is shadowed.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def pytest_report_header() -> str:
    if _ci():
        return "interop: CI is set, so a missing interop client fails its test"
    return "interop: CI is not set, so a missing interop client skips its test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/interop must be marked `interop` (CI and `-m` rely on it)."""
    for item in items:
        if item.path.is_relative_to(INTEROP_DIR) and item.get_closest_marker("interop") is None:
            raise pytest.UsageError(f"{item.nodeid} is under tests/interop but not marked interop")


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Undo what a test did to logging: ``bip`` commands run in-process call
    ``logging.basicConfig(force=True)`` with pytest's captured stderr, closed after the test,
    and an example may set levels; later tests must log into neither."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = logging.Logger.manager.loggerDict
    levels = {name: log.level for name, log in loggers.items() if isinstance(log, logging.Logger)}
    yield
    for handler in root.handlers[:]:
        # pytest's own capturing handlers come and go with each test phase: leave them.
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    root.setLevel(level)
    for name, log in list(loggers.items()):
        if isinstance(log, logging.Logger):
            log.setLevel(levels.get(name, logging.NOTSET))
