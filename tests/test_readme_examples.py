"""Every ```python block in the READMEs runs, so no example can rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = sorted([ROOT / "README.md", *ROOT.glob("packages/*/README.md")])
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

EXAMPLES = [
    pytest.param(code, id=f"{readme.relative_to(ROOT)}#{number}")
    for readme in READMES
    for number, code in enumerate(BLOCK.findall(readme.read_text()), start=1)
]


def test_every_package_readme_has_an_example() -> None:
    for readme in ROOT.glob("packages/*/README.md"):
        assert BLOCK.search(readme.read_text()), f"{readme} has no python example"


@pytest.mark.parametrize("code", EXAMPLES)
def test_readme_example_runs(code: str) -> None:
    exec(compile(code, "<readme>", "exec"), {"__name__": "readme_example"})
