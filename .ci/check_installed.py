"""Run by `.ci/run` inside a clean venv holding one bip package (from its wheel or its sdist).

Checks what a user gets from the registry: the package imports from the venv (not the source
tree), ships ``py.typed``, reports the installed version as ``__version__``, and carries the
metadata a package index shows (summary, classifiers with ``Typing :: Typed``, project URLs).

Usage: ``python -I check_installed.py IMPORT_NAME DIST_NAME VENV``
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path


def main() -> None:
    """Check one installed package; exit non-zero with a message on the first problem."""
    import_name, dist_name, venv = sys.argv[1:4]
    module = importlib.import_module(import_name)
    location = Path(module.__file__ or "")
    problems = []
    if not str(location).startswith(venv):
        problems.append(f"imported from {location}, not from {venv}")
    if not (location.parent / "py.typed").is_file():
        problems.append("no py.typed next to __init__.py")
    installed = importlib.metadata.version(dist_name)
    declared = getattr(module, "__version__", None)
    if declared != installed:
        problems.append(f"__version__ is {declared!r}, the installed version is {installed!r}")
    metadata = importlib.metadata.metadata(dist_name)
    if not metadata["Summary"]:
        problems.append("no summary")
    if "Typing :: Typed" not in (metadata.get_all("Classifier") or []):
        problems.append("no 'Typing :: Typed' classifier")
    urls = metadata.get_all("Project-URL") or []
    if not any(url.startswith("Documentation") for url in urls):
        problems.append(f"no Documentation project URL in {urls}")
    if problems:
        sys.exit(f"{dist_name}: " + "; ".join(problems))
    print(f"{dist_name} {installed}: import {import_name} ok ({location})")


if __name__ == "__main__":
    main()
