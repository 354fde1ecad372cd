"""Every ```python block in docs/ runs, so no example in the documentation can rot.

The same approach as tests/test_readme_examples.py: each block is a whole program (imports
included), run on its own. Examples are offline and loopback-only, and fast.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Every fence opening: an optional MyST directive ({code-block}) and a language.
FENCE = re.compile(r"^(?:```|~~~)+\s*(\{[\w-]+\})?\s*([\w+-]*)", re.MULTILINE)
PYTHONISH = {"py", "py3", "python3", "pycon", "ipython", "ipython3"}

EXAMPLES = [
    pytest.param(code, id=f"{page.relative_to(ROOT)}#{number}")
    for page in PAGES
    for number, code in enumerate(BLOCK.findall(page.read_text()), start=1)
]


def test_docs_have_examples() -> None:
    assert PAGES, "docs/ has no Markdown pages"
    assert len(EXAMPLES) >= len(list(DOCS.glob("libraries/*.md"))), "a page lost its example"
    for page in DOCS.glob("libraries/*.md"):
        assert BLOCK.search(page.read_text()), f"{page} has no python example"


def test_every_library_has_a_page() -> None:
    for init in ROOT.glob("packages/*/src/*/__init__.py"):
        exports = re.search(r"^__all__\b[^=]*=\s*\[\s*[\"']", init.read_text(), re.MULTILINE)
        if exports:  # the bip command exports nothing yet, and has no page yet
            name = init.parent.name
            assert (DOCS / "libraries" / f"{name}.md").is_file(), f"docs/libraries/{name}.md"
            assert (DOCS / "api" / f"{name}.rst").is_file(), f"docs/api/{name}.rst"


def test_no_python_block_escapes_the_test() -> None:
    for page in PAGES:
        for fence in FENCE.finditer(page.read_text()):
            directive, language = fence.group(1), fence.group(2).lower()
            unrun = language in PYTHONISH or (directive is not None and language.startswith("py"))
            assert not unrun, f"{page}: write ```python so the block runs: {fence.group(0)!r}"


@pytest.mark.parametrize("code", EXAMPLES)
def test_docs_example_runs(code: str) -> None:
    exec(compile(code, "<docs>", "exec"), {"__name__": "docs_example"})
