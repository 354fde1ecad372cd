"""Root conftest: suite-wide checks only. Interop machinery lives in tests/interop/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

INTEROP_DIR = Path(__file__).parent / "interop"


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
