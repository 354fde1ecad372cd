"""The API reference, generated from each package's ``__all__``.

``.. bip-api:: bip_bencode`` documents every name the package exports, grouped by the private
module that defines it (whose summary line titles the group), in the order of that module's
source. Classes and functions go through autodoc (and napoleon, for the Google-style sections).
Module constants, sentinels and type aliases are written as ``py:data`` / ``py:type`` directives
with the docstring found after their assignment in the defining module: autodoc would look for
it only in the package ``__init__``, which has none.

Checks that turn gaps into build warnings (errors with ``-W``): a name in some package's
``__all__`` that the reference does not document, a public module without a ``bip-api`` page, an
exported constant without a docstring. ``docs/known-problems.txt`` lists the docstring problems
known today (each for its package's owner to fix); a warning it matches is printed as a known
problem and does not fail the build, so only new problems do.
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import logging as std_logging
import pkgutil
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.inspect import TypeAliasForwardRef
from sphinx.util.nodes import get_node_line, get_node_source, nested_parse_with_titles

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
KNOWN_PROBLEMS = DOCS / "known-problems.txt"
# bip_dht._krpc_queries.Ping, bip_select.simulator._x.Y: a path through a private module.
PRIVATE_PATH = re.compile(r"\b(bip(?:_\w+)?)((?:\.[a-z]\w*)*?)\.(_\w+)((?:\.\w+)*)\.(\w+)\b")
SIMPLE_TYPES = (int, float, str, bytes, bool, frozenset, tuple)

# ---------------------------------------------------------------------------------------------
# Finding things


def package_names() -> list[str]:
    """Import names of the workspace packages that export something."""
    names = []
    for init in sorted(ROOT.glob("packages/*/src/*/__init__.py")):
        module = try_import(init.parent.name)
        if module is not None and getattr(module, "__all__", None):
            names.append(init.parent.name)
    return names


def public_modules(package: str) -> list[str]:
    """The package and its public submodules (no underscore anywhere in the dotted path)."""
    module = importlib.import_module(package)
    found = [package]
    for info in pkgutil.walk_packages(module.__path__, f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return found


_import_failures: set[str] = set()


def try_import(name: str) -> ModuleType | None:
    """Import a module; one that fails is reported once (a warning) and skipped."""
    try:
        return importlib.import_module(name)
    except Exception as error:
        if name not in _import_failures:
            _import_failures.add(name)
            logger.warning("cannot import %s: %s: %s", name, type(error).__name__, error)
        return None


def analyzer(module_name: str) -> ModuleAnalyzer | None:
    try:
        found = ModuleAnalyzer.for_module(module_name)
        found.analyze()
    except Exception:  # no source (a compiled module): nothing to read
        return None
    return found


def attr_docs(module_name: str) -> dict[tuple[str, str], list[str]]:
    """Docstrings written after assignments, keyed by (class qualname or "", name)."""
    found = analyzer(module_name)
    return dict(found.attr_docs) if found else {}


def home_of(package: str, name: str, obj: object) -> str | None:
    """The module of this bip package that defines ``name`` (None: another package does)."""
    root = package.split(".", maxsplit=1)[0]
    module_name = getattr(obj, "__module__", None)
    if is_definition(obj) and isinstance(module_name, str):
        return module_name if module_name.split(".")[0] == root else None
    # Constants, sentinels and aliases carry no module: find the one that assigns the name,
    # preferring the one that documents it.
    root_module = importlib.import_module(root)
    candidates = [package] + [
        info.name for info in pkgutil.walk_packages(root_module.__path__, f"{root}.")
    ]
    modules = [module for module in map(try_import, candidates) if module is not None]
    holders = [module.__name__ for module in modules if getattr(module, name, None) is obj]
    for holder in holders:
        if ("", name) in attr_docs(holder):
            return holder
    if is_alias(obj):
        # Exported under another name (``Event as ConnectionEvent``): look for the original.
        for module in modules:
            if module.__name__ != package and alias_names(module, obj):
                return module.__name__
    others = [holder for holder in holders if holder != package]
    return others[0] if others else (package if holders else None)


def is_definition(obj: object) -> bool:
    """A class or function defined in some bip package (not ``PeerKey = Hashable``)."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return False
    return str(getattr(obj, "__module__", "")).startswith("bip")


def alias_names(module: ModuleType, obj: object) -> list[str]:
    """The names under which a module holds this exact type alias and documents it."""
    docs = attr_docs(module.__name__)
    return [name for name, value in vars(module).items() if value is obj and ("", name) in docs]


def constant_doc(home: str, name: str, obj: object) -> list[str]:
    """The docstring of a module-level constant, or of the enum member it names."""
    doc = attr_docs(home).get(("", name))
    if doc:
        return list(doc)
    if is_alias(obj):
        for original in alias_names(importlib.import_module(home), obj):
            return list(attr_docs(home)[("", original)])
    if isinstance(obj, enum.Enum):
        # NEED_DATA = Pending.NEED_DATA: the member's docstring says what it means.
        return list(attr_docs(type(obj).__module__).get((type(obj).__qualname__, obj.name), []))
    return []


def public_text(text: str) -> str:
    """``bip_dht._krpc_queries.Ping`` -> ``bip_dht.Ping`` when the package exports ``Ping``."""

    def replace(match: re.Match[str]) -> str:
        package = match.group(1) + match.group(2)
        name = match.group(5)
        module = try_import(package)
        if module is not None and name in getattr(module, "__all__", ()):
            return f"{package}.{name}"
        # bip_dht._sim_network.SimulatedNode is exported by bip_dht.simulator.
        return exported_by(match.group(1)).get(name, match.group(0))

    return PRIVATE_PATH.sub(replace, text)


@functools.cache
def exported_by(root: str) -> dict[str, str]:
    """Every name the public modules of a package export, with its public path."""
    found: dict[str, str] = {}
    if try_import(root) is None:
        return found
    for module_name in reversed(public_modules(root)):  # the package itself wins
        module = try_import(module_name)
        for name in getattr(module, "__all__", ()):
            found[name] = f"{module_name}.{name}"
    return found


def is_alias(obj: object) -> bool:
    if inspect.isclass(obj):  # a Protocol's metaclass lives in typing, but it is a class
        return not is_definition(obj)  # PeerKey = Hashable is an alias
    return isinstance(obj, types.UnionType | types.GenericAlias | typing.NewType) or (
        type(obj).__module__ == "typing"
    )


def type_text(obj: object) -> str:
    if inspect.isclass(obj) and not isinstance(obj, types.GenericAlias):
        if obj.__module__ == "builtins":
            return obj.__name__
        return f"{obj.__module__}.{obj.__qualname__}"
    return repr(obj).replace("typing.", "").replace("collections.abc.", "")


def alias_value(obj: object, package: str) -> str:
    if isinstance(obj, typing.NewType):
        return public_text(type_text(obj.__supertype__))
    text = public_text(type_text(obj))
    if "Literal[" in text:
        return text
    # Forward references print quoted (list['Value']): name them as the package exports them.
    root = importlib.import_module(package.split(".", maxsplit=1)[0])

    def qualify(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"{root.__name__}.{name}" if name in getattr(root, "__all__", ()) else name

    return re.sub(r"'(\w+)'", qualify, text)


def constant_value(obj: object) -> str:
    if isinstance(obj, enum.Enum):
        return repr(obj) if repr(obj) == obj.name else f"{type(obj).__name__}.{obj.name}"
    if isinstance(obj, types.MappingProxyType):
        return repr(dict(obj))
    text = public_text(repr(obj))
    return text if len(text) <= 200 else text[:197] + "..."


# ---------------------------------------------------------------------------------------------
# The directive


@dataclass
class Entry:
    name: str
    obj: object
    home: str | None


@dataclass
class Lines:
    """Generated reStructuredText, each line tagged with where it came from (for warnings)."""

    content: StringList = field(default_factory=StringList)

    def add(self, lines: list[str], source: str, first_line: int = 0) -> None:
        for offset, line in enumerate(lines):
            self.content.append(line, source, first_line + offset)


class BipApiDirective(SphinxDirective):
    """``.. bip-api:: package``: the whole public API of one package or public module."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        package = self.arguments[0]
        here = (self.get_source_info()[0], self.lineno)
        self.where = (self.env.docname, self.lineno)
        module = try_import(package)
        if module is None:
            return []
        self.env.note_dependency(str(Path(inspect.getfile(module))))
        entries = [Entry(name, getattr(module, name), None) for name in module.__all__]
        groups: dict[str, list[Entry]] = {}
        foreign: list[Entry] = []
        for entry in entries:
            entry.home = home_of(package, entry.name, entry.obj)
            if entry.home is None:
                foreign.append(entry)
            else:
                groups.setdefault(entry.home, []).append(entry)

        out = Lines()
        out.add([f".. py:module:: {package}", ""], *here)
        source_file = inspect.getsourcefile(module) or package
        if module.__doc__:
            out.add([*inspect.cleandoc(module.__doc__).splitlines(), ""], source_file, 1)
        out.add([f".. py:currentmodule:: {package}", ""], *here)
        for home in sorted(groups, key=lambda home: (home != package, home)):
            self.group(out, package, home, groups[home], here)
        if foreign:
            out.add(section("Re-exported from other bip packages"), *here)
            for entry in foreign:
                kind = "class" if inspect.isclass(entry.obj) else "function"
                if not (inspect.isclass(entry.obj) or inspect.isfunction(entry.obj)):
                    kind = "data"
                target = public_text(f"{getattr(entry.obj, '__module__', '?')}.{entry.name}")
                out.add(
                    [
                        f".. py:{kind}:: {entry.name}",
                        "",
                        f"   The same object as :py:obj:`{target}`, exported here too.",
                        "",
                    ],
                    *here,
                )
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, out.content, node)
        return node.children

    def group(
        self, out: Lines, package: str, home: str, members: list[Entry], here: tuple[str, int]
    ) -> None:
        if home != package:
            # The private module's first sentence names the group; the rest of its docstring
            # (the module's rules and design) opens it.
            doc = importlib.import_module(home).__doc__ or home
            out.add(section(summary(doc)), *here)
            home_file = inspect.getsourcefile(importlib.import_module(home)) or home
            out.add([*body_after_summary(doc), ""], f"{home_file}:docstring of {home}", 1)
        found = analyzer(home)
        order = {name: index for index, name in enumerate(found.tagorder)} if found else {}
        members.sort(key=lambda entry: order.get(entry.name, len(order)))
        home_file = inspect.getsourcefile(importlib.import_module(home)) or home
        for entry in members:
            obj = entry.obj
            qualified = f"{package}.{entry.name}"
            if is_definition(obj) and inspect.isclass(obj):
                out.add([f".. autoclass:: {qualified}", ""], *here)
                continue
            if is_definition(obj):
                out.add([f".. autofunction:: {qualified}", ""], *here)
                continue
            if is_alias(obj) or inspect.isclass(obj):
                header = [
                    f".. py:type:: {entry.name}",
                    f"   :canonical: {alias_value(obj, package)}",
                ]
            else:
                header = [f".. py:data:: {entry.name}"]
                if type(obj).__module__ != "builtins" or type(obj) in SIMPLE_TYPES:
                    header.append(f"   :type: {public_text(type_text(type(obj)))}")
                header.append(f"   :value: {constant_value(obj)}")
            out.add([*header, ""], *here)
            doc = constant_doc(home, entry.name, obj)
            if not doc:
                logger.warning(
                    "%s has no docstring (it is assigned in %s)",
                    qualified,
                    home,
                    location=self.where,
                )
            out.add([f"   {line}" if line else "" for line in doc] + [""], home_file, 0)


def body_after_summary(doc: str) -> list[str]:
    """A module docstring without the first sentence that titles its group."""
    text = inspect.cleandoc(doc)
    first, _, rest = text.partition("\n\n")
    sentence = re.split(r"(?<=[.!?])\s", " ".join(first.split()), maxsplit=1)
    lead = sentence[1] if len(sentence) > 1 else ""
    return [*([lead, ""] if lead else []), *rest.splitlines()]


def section(title: str) -> list[str]:
    return ["", title, "-" * max(len(title), 3), ""]


def summary(doc: str) -> str:
    """A module docstring's first line, as a section title (plain text: no roles)."""
    # The first sentence of the first paragraph (which may wrap over several lines).
    paragraph = inspect.cleandoc(doc).split("\n\n", 1)[0]
    sentence = re.split(r"(?<=[.!?])\s", " ".join(paragraph.split()), maxsplit=1)[0]
    title = sentence.strip().rstrip(".") or "?"
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", title).replace("``", "")


# ---------------------------------------------------------------------------------------------
# Checks


def check_coverage(app: Sphinx, env: BuildEnvironment) -> None:
    """Every exported name of every package is in the reference; every package has a page."""
    domain: Any = env.get_domain("py")
    for package in package_names():
        for module_name in public_modules(package):
            if module_name not in domain.modules:
                logger.warning("the API reference has no bip-api page for %s", module_name)
                continue
            module = try_import(module_name)
            for name in getattr(module, "__all__", []):
                if f"{module_name}.{name}" not in domain.objects:
                    logger.warning("the API reference misses %s.%s", module_name, name)


class KnownProblems(std_logging.Filter):
    """Lets through every warning except the known problems listed in known-problems.txt."""

    def __init__(self, app: Sphinx) -> None:
        super().__init__()
        self.app = app
        self.patterns: list[list[str]] = []
        for raw in KNOWN_PROBLEMS.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                self.patterns.append([part.strip() for part in line.split(" :: ")])
        self.used: set[int] = set()

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno < std_logging.WARNING:
            return True
        try:
            message = str(record.msg) % record.args if record.args else str(record.msg)
        except (TypeError, ValueError):
            message = str(record.msg)
        text = f"{self.location(record)}: {message}"
        for index, parts in enumerate(self.patterns):
            if all(matches(part, text) for part in parts):
                self.used.add(index)
                logger.info("known problem (docs/known-problems.txt): %s", text)
                return False
        return True

    def location(self, record: std_logging.LogRecord) -> str:
        location = getattr(record, "location", None)
        if isinstance(location, tuple):
            docname, line = location
            return f"{docname}:{line}"
        if isinstance(location, nodes.Node):
            return f"{get_node_source(location)}:{get_node_line(location)}"
        return str(location or "")


def matches(part: str, text: str) -> bool:
    """``part`` occurs in ``text``; a trailing ``$`` means at its end."""
    return text.endswith(part[:-1]) if part.endswith("$") else part in text


def install_known_problems(app: Sphinx) -> None:
    known = KnownProblems(app)
    app.bip_known_problems = known  # type: ignore[attr-defined]
    for handler in std_logging.getLogger("sphinx").handlers:
        if handler.level == std_logging.WARNING or "Warning" in type(handler).__name__:
            # First, so a known problem is neither counted nor shown as a warning.
            handler.filters.insert(0, known)


def report_stale_known_problems(app: Sphinx, exception: BaseException | None) -> None:
    known: KnownProblems = app.bip_known_problems  # type: ignore[attr-defined]
    if exception is None and app.builder.name == "html":
        for index, parts in enumerate(known.patterns):
            if index not in known.used:
                logger.info(
                    "fixed? known-problems.txt entry matched nothing: %s", " :: ".join(parts)
                )


# ---------------------------------------------------------------------------------------------
# Adjustments to autodoc and napoleon


def _consume_inline_attribute(self: GoogleDocstring) -> tuple[str, list[str]]:
    """Napoleon's attribute docstring parser, without the inline ``type: description``.

    Napoleon reads the first line of an attribute or property docstring as ``type: text``; our
    docstrings are prose whose first line often has a colon ("The number of leaves: ...") and
    whose types come from annotations. The whole docstring stays description (its sections are
    still parsed).
    """
    lines = list(self._consume_to_end())
    return "", type(self)(lines, self._config).lines()


def dataclass_factories(  # noqa: PLR0917 (the signature of Sphinx's event)
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """A dataclass field with a default_factory shows ``= <factory>``, which is not Python and
    makes Sphinx split the signature on commas: show ``= ...`` instead."""
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


def public_bases(app: Sphinx, name: str, obj: object, options: Any, bases: list[type]) -> None:
    """Show only public base classes: a private base is an implementation detail (its fields
    appear in the subclass's own signature)."""
    bases[:] = [base for base in bases if is_public(base)] or [object]


def is_public(cls: type) -> bool:
    module = getattr(cls, "__module__", "")
    if not module.startswith("bip"):
        return True
    package = try_import(module.split(".")[0])
    return cls.__name__ in getattr(package, "__all__", ())


def is_type_var(target: str) -> bool:
    module_name, _, name = target.rpartition(".")
    try:
        return isinstance(getattr(importlib.import_module(module_name), name), typing.TypeVar)
    except (ImportError, AttributeError, ValueError):
        return False


def is_instance_attribute(node: pending_xref, target: str) -> bool:
    """``:attr:`name``` for an attribute the class documents in its ``Attributes:`` section.

    Napoleon renders those as a field list (``:ivar:``), which gives no link target; the
    reference is then shown as code.
    """
    class_name = node.get("py:class") or ""
    *owner, attribute = target.split(".")
    if owner:
        class_name = owner[-1]
    module = try_import(node.get("py:module") or "")
    cls = getattr(module, class_name, None) if class_name else None
    if not inspect.isclass(cls):
        return False
    for klass in cls.__mro__:
        doc = inspect.getdoc(klass) or ""
        if re.search(rf"^\s+{re.escape(attribute)}(\s*\([^)]*\))?:", doc, re.MULTILINE):
            return True
    return False


def resolve_private(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve what Sphinx could not, where we know better.

    - ``pkg._module.Name`` (how annotations name things) goes to ``pkg.Name``;
    - a TypeVar is shown as its name;
    - an instance attribute from an ``Attributes:`` section is shown as code.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    public = public_text(target)
    if public != target:
        new = node.deepcopy()
        new["reftarget"] = public
        domain: Any = env.get_domain("py")
        return domain.resolve_xref(  # type: ignore[no-any-return]
            env,
            node.get("refdoc", ""),
            app.builder,
            node.get("reftype", "obj"),
            public,
            new,
            contnode,
        )
    if is_type_var(target):
        return contnode
    if node.get("reftype") == "attr" and is_instance_attribute(node, target):
        return contnode
    if in_module_notes(node):
        return contnode
    return None


def in_module_notes(node: nodes.Node) -> bool:
    """Is this in the docstring of a private module (a group's introduction)?

    Those docstrings are the module's design notes: they name the module's private helpers
    (``_plan_v2``, ``_create_walk``), which have no entry to link to, so such a name is shown
    as code. Everywhere else an unresolved reference is a warning.
    """
    source = get_node_source(node) or ""
    _, marker, documented = source.rpartition(":docstring of ")
    return bool(marker) and "._" in documented and documented in sys.modules


def attributes_section(cls: type) -> set[str]:
    """The names a class documents in the ``Attributes:`` section of its docstring."""
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)*)", doc, re.MULTILINE)
    if not match:
        return set()
    return set(re.findall(r"^    (\w+)(?:\s*\([^)]*\))?:", match.group(1), re.MULTILINE))


def public_types(  # noqa: PLR0917 (the signature of Sphinx's event)
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """Name types by their public path in the ``:type:`` fields napoleon writes from
    annotations (``bip_utracker.AnnounceEvent``, not ``bip_utracker._codec.AnnounceEvent``)."""
    for index, line in enumerate(lines):
        if ":type" in line or ":rtype:" in line:
            lines[index] = public_text(line)


_documenting: list[type] = []


def note_class(app: Sphinx, what: str, name: str, obj: object, options: Any, *rest: Any) -> None:
    """Remember the class autodoc is documenting: its members are filtered right after."""
    if what in {"class", "exception"} and inspect.isclass(obj):
        _documenting[:] = [obj]


def skip_attributes_documented_above(  # noqa: PLR0917 (the signature of Sphinx's event)
    app: Sphinx, what: str, name: str, obj: object, skip: bool, options: Any
) -> bool | None:
    """A field described in the class's ``Attributes:`` section (which napoleon turns into an
    attribute entry) is not listed a second time as an undocumented member."""
    documenting = what in {"class", "exception"} and _documenting
    if documenting and name in attributes_section(_documenting[0]):
        return True
    return None


def drop_object_base(app: Sphinx, doctree: nodes.document) -> None:
    """Remove autodoc's "Bases: object" lines: every class has that base."""
    for paragraph in list(doctree.findall(nodes.paragraph)):
        if paragraph.astext() == "Bases: object" and paragraph.parent is not None:
            paragraph.parent.remove(paragraph)


def type_aliases() -> dict[str, str]:
    """``autodoc_type_aliases``: signatures show ``Buffer``, not ``bytes | bytearray | ...``.

    autodoc maps an annotation *as written* to the alias, so only names that mean one thing
    across the workspace are mapped (``Request`` is a bip_utracker alias and a bip_peer class).
    """
    meanings: dict[str, set[str]] = {}
    aliases: dict[str, str] = {}
    for package in package_names():
        for module_name in public_modules(package):
            module = try_import(module_name)
            for name in getattr(module, "__all__", []):
                obj = getattr(module, name)
                home = getattr(obj, "__module__", None) if inspect.isclass(obj) else None
                meanings.setdefault(name, set()).add(f"{home}.{name}" if home else str(id(obj)))
                if is_alias(obj) and not isinstance(obj, typing.NewType):
                    aliases.setdefault(name, f"{module_name}.{name}")
    return {name: target for name, target in aliases.items() if len(meanings[name]) == 1}


def _alias_repr(self: TypeAliasForwardRef) -> str:
    """An alias inside a generic (``set[BlockKey]``) is stringified by repr: show its name."""
    return self.name


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("bip-api", BipApiDirective)
    TypeAliasForwardRef.__repr__ = _alias_repr  # type: ignore[method-assign]
    GoogleDocstring._consume_inline_attribute = _consume_inline_attribute  # type: ignore[method-assign]
    app.connect("builder-inited", install_known_problems)
    app.connect("env-check-consistency", check_coverage)
    app.connect("missing-reference", resolve_private)
    app.connect("autodoc-process-signature", dataclass_factories)
    app.connect("autodoc-process-bases", public_bases)
    app.connect("build-finished", report_stale_known_problems)
    app.connect("doctree-read", drop_object_base)
    app.connect("autodoc-process-signature", note_class, priority=100)
    app.connect("autodoc-skip-member", skip_attributes_documented_above)
    # After napoleon (priority 500) has written the fields.
    app.connect("autodoc-process-docstring", public_types, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
