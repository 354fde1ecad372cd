"""The suite's logging rules, checked over every library's source.

Each library logs through ``logging.getLogger("bip_<name>...")`` (a literal name under its own
package, never ``__name__``, whose private module names are no API to configure), never prints,
and leaves handlers and levels to the application: the only handler a library adds is the
:class:`logging.NullHandler` on its top logger, as the logging HOWTO advises for libraries.
The ``bip`` command is an application: it may print and configure logging.
"""

from __future__ import annotations

import ast
import importlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parent.parent / "packages"
DOCS = PACKAGES.parent / "docs" / "logging.md"
LIBRARIES = sorted(path.name for path in PACKAGES.glob("bip_*") if (path / "src").is_dir())


def _modules(library: str) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted((PACKAGES / library / "src").rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _calls(tree: ast.Module) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def test_there_are_libraries() -> None:
    assert len(LIBRARIES) == 8, LIBRARIES


@pytest.mark.parametrize("library", LIBRARIES)
def test_no_print(library: str) -> None:
    printing = [
        f"{path.name}:{call.lineno}"
        for path, tree in _modules(library)
        for call in _calls(tree)
        if isinstance(call.func, ast.Name) and call.func.id == "print"
    ]
    assert printing == []


@pytest.mark.parametrize("library", LIBRARIES)
def test_loggers_are_named_under_the_package(library: str) -> None:
    wrong = []
    for path, tree in _modules(library):
        for call in _calls(tree):
            if _called_name(call) != "getLogger":
                continue
            [argument] = call.args
            name = argument.value if isinstance(argument, ast.Constant) else None
            if not (isinstance(name, str) and (name == library or name.startswith(library + "."))):
                wrong.append(f"{path.name}:{call.lineno}: getLogger({ast.unparse(argument)})")
    assert wrong == []


@pytest.mark.parametrize("library", LIBRARIES)
def test_handlers_and_levels_are_left_to_the_application(library: str) -> None:
    configuring = {"basicConfig", "setLevel", "addHandler", "StreamHandler", "FileHandler"}
    wrong = [
        f"{path.name}:{call.lineno}: {ast.unparse(call)}"
        for path, tree in _modules(library)
        for call in _calls(tree)
        if _called_name(call) in configuring
        and not (path.name == "__init__.py" and "NullHandler" in ast.unparse(call))
    ]
    assert wrong == []


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_library_that_logs_has_a_null_handler(library: str) -> None:
    logs = any(
        _called_name(call) == "getLogger" for _, tree in _modules(library) for call in _calls(tree)
    )
    if not logs:
        pytest.skip(f"{library} does not log")
    importlib.import_module(library)
    handlers = logging.getLogger(library).handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)


def test_every_logger_is_in_the_docs_table() -> None:
    """docs/logging.md's table names every logger a library uses (bar the top ones, which
    only hold the NullHandler), so an application knows what to configure."""
    table = set(re.findall(r"^\| `([a-z_.]+)` \|", DOCS.read_text(encoding="utf-8"), re.MULTILINE))
    used = {
        call.args[0].value
        for library in LIBRARIES
        for _, tree in _modules(library)
        for call in _calls(tree)
        if _called_name(call) == "getLogger"
        and call.args
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
        and "." in call.args[0].value
    }
    assert sorted(used - table) == []
    assert sorted(table - used) == []
