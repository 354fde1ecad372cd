"""Sphinx configuration for the bip documentation.

Build: ``uv run --group docs sphinx-build -W --keep-going -n -b html docs docs/_build/html``.
Narrative pages are Markdown (MyST); the API reference is autodoc over each package's
``__all__``, with the packages' Google-style sections read by napoleon. Warnings are errors in
CI, and nitpicky mode makes every cross-reference in a docstring a checked link.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "bip"
author = "The bip developers"
copyright = "the bip developers; MIT OR Apache-2.0"
release = version = "0.1"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "bip_api",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
root_doc = "index"

# Every reference must resolve (nitpicky), except to projects we do not document here: there is
# no network at build time, so no intersphinx inventories for Python, trio or cryptography.
nitpicky = True
_EXTERNAL = (
    "trio|cryptography|fsspec|ipaddress|collections|typing|types|enum|os|random|hashlib|socket"
    "|pathlib|concurrent|dataclasses|abc|contextlib|array|struct|zlib|hmac|threading|secrets"
    "|errno|logging|io|asyncio"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({_EXTERNAL})(\..*)?"),
    # fsspec's base class, named in annotations through a TYPE_CHECKING import.
    (r"py:class", r"AbstractFileSystem"),
    # trio's own docstrings, inherited by our trio.abc.Stream implementations (MSEStream).
    (r"py:meth", r"HalfCloseableStream\..*"),
    # Private helper types in signatures (a sentinel default, the handle a socket gives its
    # streams): undocumented on purpose, not broken links.
    (r"py:class", r"(.*\.)?_[A-Z]\w*"),
    # The Linux error queue DHT's constructor takes from open_dht: internal, not exported.
    (r"py:class", r"bip_dht\._udp_errors\.ErrorQueue"),
]

# MyST: ```python blocks are code (tests/test_docs_examples.py runs them); headings get anchors.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc: the reference documents what each package's __all__ exports, in source order.
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autoclass_content = "class"

# napoleon: the packages write Google-style Args / Returns / Raises / Attributes sections.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = False
napoleon_attr_annotations = True
napoleon_preprocess_types = False

default_role = "py:obj"
pygments_style = "default"

html_theme = "furo"
html_title = "bip"
html_static_path: list[str] = []
html_show_sourcelink = False

# Signatures name the packages' type aliases (Buffer, Value, ...) instead of expanding them.
import bip_api  # noqa: E402 (docs/_ext is on the path only from here)

autodoc_type_aliases = bip_api.type_aliases()

# The API pages hold hundreds of objects: keep them out of the tables of contents (the module
# groups stay), or every page's navigation copies them all and the build slows down sharply.
toc_object_entries = False
