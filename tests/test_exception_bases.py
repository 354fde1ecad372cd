"""The docs' promise about exceptions, checked over every library's exports.

docs/getting-started.md names one base class per package and docs/design.md the few exceptions
that are not about bad input and so stand outside them: every exception class a library exports
derives from its package's base, or is on that list.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
_CLASS = re.compile(r"\{py:class\}`~(bip_\w+)\.(\w+)`")


def _paragraph(page: str, marker: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    [paragraph] = [block for block in text.split("\n\n") if marker in block]
    return paragraph


BASES = dict(_CLASS.findall(_paragraph("getting-started.md", "one base class per")))


def _outside() -> set[tuple[str, str]]:
    return set(_CLASS.findall(_paragraph("design.md", "stand outside")))


def test_the_docs_name_a_base_for_every_library() -> None:
    assert sorted(BASES) == [
        "bip_bencode",
        "bip_dht",
        "bip_disk",
        "bip_handshake",
        "bip_metainfo",
        "bip_peer",
        "bip_select",
        "bip_utracker",
    ]


@pytest.mark.parametrize("library", sorted(BASES))
def test_every_exported_exception_derives_from_the_documented_base(library: str) -> None:
    module = importlib.import_module(library)
    base = getattr(module, BASES[library])
    astray = [
        name
        for name in module.__all__
        if inspect.isclass(cls := getattr(module, name))
        and issubclass(cls, BaseException)
        and not issubclass(cls, base)
        and (library, name) not in _outside()
    ]
    assert astray == []


def test_the_exceptions_outside_are_exported_and_outside() -> None:
    outside = _outside()
    assert outside, "design.md lists the exceptions that stand outside the bases"
    for library, name in outside:
        module = importlib.import_module(library)
        assert name in module.__all__
        assert not issubclass(getattr(module, name), getattr(module, BASES[library]))
