"""What each package ships, checked from the source tree (`.ci/run` checks the built artifacts).

Every package under ``packages/`` has a README, a CHANGELOG whose newest section is its version,
``py.typed``, the classifiers and project URLs a package index shows, a ``__version__`` equal to
its declared version, and sibling dependencies whose ranges admit the siblings' versions, so a
release of one package never leaves another one uninstallable.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

PACKAGES = Path(__file__).resolve().parent.parent / "packages"
FOLDERS = sorted(path for path in PACKAGES.iterdir() if (path / "pyproject.toml").is_file())


def _project(folder: Path) -> dict[str, Any]:
    with (folder / "pyproject.toml").open("rb") as file:
        project: dict[str, Any] = tomllib.load(file)["project"]
    return project


VERSIONS = {_project(folder)["name"]: _project(folder)["version"] for folder in FOLDERS}


def _import_name(folder: Path) -> str:
    return str(_project(folder)["name"]).replace("-", "_")


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_version_is_declared_once(folder: Path) -> None:
    module = importlib.import_module(_import_name(folder))
    assert module.__version__ == _project(folder)["version"]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_changelog_starts_at_the_version(folder: Path) -> None:
    changelog = (folder / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (\S+)", changelog, flags=re.MULTILINE)
    assert sections, "no version sections"
    assert sections[0] in {_project(folder)["version"], "Unreleased"}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_index_metadata(folder: Path) -> None:
    project = _project(folder)
    assert (folder / "README.md").is_file()
    assert project["readme"] == "README.md"
    assert (folder / "src" / _import_name(folder) / "py.typed").is_file()
    assert "Typing :: Typed" in project["classifiers"]
    assert {"Homepage", "Documentation", "Repository", "Changelog"} <= set(project["urls"])
    assert project["license"] == "MIT OR Apache-2.0"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_sibling_ranges_admit_the_siblings(folder: Path) -> None:
    for requirement in _project(folder).get("dependencies", []):
        match = re.fullmatch(r"(bip(?:-[a-z]+)?)>=([\d.]+),<([\d.]+)", requirement.replace(" ", ""))
        if match is None:
            assert not requirement.startswith("bip"), f"unpinned sibling {requirement}"
            continue
        name, low, high = match.groups()
        version = tuple(int(part) for part in VERSIONS[name].split("."))
        lowest, above = (tuple(int(part) for part in bound.split(".")) for bound in (low, high))
        assert lowest <= version < above, f"{requirement} does not admit {name} {VERSIONS[name]}"
