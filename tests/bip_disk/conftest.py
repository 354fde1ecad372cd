"""Shared fixtures for the bip_disk tests (stable: other test modules rely on them).

Fixtures:

- ``filesystem``: a fresh, empty :class:`~bip_disk._filesystem.FileSystem`, once for
  each kind in :data:`FILESYSTEM_KINDS` (the test runs four times); closed after
  the test. Native and fsspec-local live in the test's ``tmp_path``.
- ``filesystem_kind``: the kind the ``filesystem`` fixture was built with (also
  usable alone, to parametrise a test over the kinds).
- ``filesystem_factory``: :func:`make_filesystem`, for tests that need a second
  filesystem (``move_storage``) or build them inside a hypothesis example
  (``filesystem_factory(kind, directory)``). Test modules cannot import conftest
  (``--import-mode=importlib``), hence a fixture.

The fsspec kinds are skipped when fsspec is not installed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bip_disk._filesystem import FileSystem

FILESYSTEM_KINDS = ("memory", "native", "fsspec-memory", "fsspec-local")
"""Every FileSystem the ``filesystem`` fixture yields.

:func:`make_filesystem` also knows ``"fsspec-staged"``: fsspec's memory backend
written the way object stores are (staged, uploaded on sync), which the contract
suite adds."""


def make_filesystem(kind: str, directory: Path) -> FileSystem:
    """A fresh, empty FileSystem of ``kind`` (see :data:`FILESYSTEM_KINDS`).

    ``directory`` is where the native and fsspec-local kinds put their root (it
    is created; it should not exist yet or be empty). fsspec's memory filesystem is
    one process-wide store, so its root is a fresh unique directory in it.
    """
    if kind == "memory":
        from bip_disk._memory import MemoryFileSystem

        return MemoryFileSystem()
    if kind == "native":
        from bip_disk._native import NativeFileSystem

        return NativeFileSystem(directory)
    if kind in ("fsspec-memory", "fsspec-local", "fsspec-staged"):
        fsspec = pytest.importorskip("fsspec")
        from bip_disk._fsspec import FsspecFileSystem

        if kind != "fsspec-local":
            return FsspecFileSystem(
                fsspec.filesystem("memory"),
                f"/bip-test-{uuid.uuid4().hex}",
                random_writes=kind == "fsspec-memory",
            )
        directory.mkdir(parents=True, exist_ok=True)
        return FsspecFileSystem(fsspec.filesystem("file"), str(directory))
    raise ValueError(f"unknown filesystem kind {kind!r}")


@pytest.fixture(params=FILESYSTEM_KINDS)
def filesystem_kind(request: pytest.FixtureRequest) -> str:
    """The kind of FileSystem under test (one run per kind)."""
    kind: str = request.param
    return kind


@pytest.fixture
def filesystem_factory() -> Callable[[str, Path], FileSystem]:
    """:func:`make_filesystem`: ``factory(kind, directory) -> FileSystem``."""
    return make_filesystem


@pytest.fixture
def filesystem(filesystem_kind: str, tmp_path: Path) -> Iterator[FileSystem]:
    """A fresh, empty FileSystem of each kind in turn."""
    fs = make_filesystem(filesystem_kind, tmp_path / "storage")
    try:
        yield fs
    finally:
        fs.close()
