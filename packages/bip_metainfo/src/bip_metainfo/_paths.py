"""Turning the untrusted paths in a torrent into safe relative paths.

Every file path, the torrent's ``name`` and every BEP 47 symlink target come from
whoever made the torrent. This module is the one place that turns them into paths
that no later layer can use to write outside the download directory, whatever the
torrent says. The rules follow libtorrent 2.1 (``sanitize_path_element``,
``sanitize_symlinks``, ``resolve_duplicate_filenames``), so a torrent yields the
same paths here as in libtorrent; where libtorrent's rule is unsafe on some
operating system we are stricter, and the list below says where.

**One path element** (a string of a ``path`` list, a v2 ``file tree`` key, the
``name``) is sanitised on its own; an element never turns into more than one
path component, and the rules are the same on every operating system, so the
result is safe on Windows, macOS and Linux alike:

1. Bytes are read as UTF-8. Each invalid sequence becomes one ``_``; how many bytes
   a bad sequence swallows follows libtorrent (an overlong form, a surrogate, a
   code point above U+10FFFF, a truncated sequence, a stray continuation byte).
   ``str`` input is treated as its UTF-8 encoding (lone surrogates are invalid).
2. ``/``, ``\\`` and NUL are dropped, so an element can never hold a separator;
   so are the invisible bidirectional controls, which can make ``gpj.exe`` look
   like ``exe.jpg``: libtorrent's marks, embeddings and overrides (U+200E,
   U+200F, U+202A-U+202E) and (*stricter*) the isolates U+2066-U+2069 and the
   Arabic letter mark U+061C, which reorder text the same way. Other invisible
   characters are kept, as libtorrent keeps them: the zero-width non-joiner and
   joiner (U+200C, U+200D) are part of Persian and Indic words and of emoji
   sequences, so dropping them would rename ordinary files.
3. Control characters (C0, DEL, C1) become ``_``, and so do the characters
   Windows forbids in names: ``" * : < > ? |`` (*stricter*; no drive letters,
   no NTFS streams).
4. An element longer than 240 bytes is cut there, keeping an extension of up to
   9 bytes (libtorrent's rule), so no element exceeds 255 bytes. Replaced
   characters count towards the cap (*stricter*: libtorrent counts only the
   characters it kept, so a run of invalid bytes can exceed 255 bytes).
5. What is left is refused if it is nothing or one or two dots: in a file path
   it becomes ``_`` (``.``, ``..``, ``/`` and an empty element all become ``_``);
   as a name it is ``""`` and the caller substitutes the hex info-hash (an empty
   name itself gives ``_``, as in libtorrent).
6. Trailing dots and spaces are removed, as Windows would silently do
   (*stricter*: libtorrent does this on Windows only); if nothing is left, as in 5.
7. Windows device names (CON, PRN, AUX, NUL, COM0-9, LPT0-9 with or without an
   extension, their superscript-digit forms, CONIN$, CONOUT$, CLOCK$) get a ``_``
   before the first dot: ``con.txt`` becomes ``con_.txt`` (*stricter*).

A file path keeps one component per element, so ``a/../../b`` inside one element
is the single component ``a....b``. Joined under any directory, a sanitised path
stays inside it; a later layer must still create only real directories under
the download directory and check with :func:`is_within` before it writes. The
length of a whole path (Windows' ``MAX_PATH``) and Windows' 8.3 short names are
that layer's business too.

**Duplicates.** Sanitising can make two paths equal, and so can a torrent. After
sanitising, :func:`resolve_duplicates` renames the later of two files whose paths
are equal ignoring case (``foo`` then ``foo.1``, ``bar.txt`` then ``bar.1.txt``);
a file also yields to a directory of the same name, and a torrent that needs more
than a bounded number of rename attempts is refused. Unlike libtorrent, a new
name never equals another file's path, and names equal after Unicode case
folding or normalisation count as duplicates, as they do on Windows and macOS.

**Symlinks.** A BEP 47 target is a path relative to the torrent's root.
:func:`sanitize_symlink_target` drops ``.`` and ``..`` elements and sanitises the
rest like a file path; :func:`resolve_symlinks` then keeps a target only if it
names a file or directory of the torrent (directly, relative to the link's own
directory, or through other links), and otherwise makes the link point at itself,
as libtorrent does. So no link leads outside the torrent. A target then follows the
file it names through renaming (:func:`follow_renames`), and
:func:`break_link_cycles` makes links in loops point at themselves, comparing paths
as renaming does.

Examples:

>>> sanitize_path([b"..", b"etc", b"passwd"])
('_', 'etc', 'passwd')
>>> sanitize_path(["C:", "x\\\\..\\\\y", "con.txt", "trailing. "])
('C_', 'x..y', 'con_.txt', 'trailing')
>>> sanitize_name(b"temp/../../abc")
'temp....abc'
>>> sanitize_name(b"..", fallback="b61560c2918f463768cd122b6d2fdd47b77bdb35")
'b61560c2918f463768cd122b6d2fdd47b77bdb35'
>>> resolve_duplicates([("d", "_", "foo"), ("d", "_", "foo"), ("d", "Bar.txt"), ("d", "bar.TXT")])
[('d', '_', 'foo'), ('d', '_', 'foo.1'), ('d', 'Bar.txt'), ('d', 'bar.1.TXT')]
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path

from ._errors import MetainfoError, MetainfoErrorKind

__all__ = [
    "DEFAULT_DUPLICATE_LIMIT",
    "DEFAULT_SYMLINK_HOPS",
    "break_link_cycles",
    "follow_renames",
    "is_within",
    "resolve_duplicates",
    "resolve_symlinks",
    "sanitize_name",
    "sanitize_path",
    "sanitize_symlink_target",
]

DEFAULT_DUPLICATE_LIMIT = 500
"""How many failed attempts at a free name :func:`resolve_duplicates` tolerates by
default before it refuses the torrent (libtorrent's ``max_duplicate_filenames``)."""

DEFAULT_SYMLINK_HOPS = 8
"""How many links :func:`resolve_symlinks` follows at most to resolve one target
(libtorrent's later ``max_symlink_hops``; libtorrent 2.1 has no bound)."""

# How many links break_link_cycles() lets one target pass through by default: as many as
# the strictest common disk follows to open a path (macOS's MAXSYMLINKS is 32; Linux
# follows 40, Windows 63 reparse points), counting every link met on the way, those met
# while resolving another link's target too. A link within it opens on each of them; a
# longer chain fails there with ELOOP, so it is made a self-link.
_DISK_LINK_HOPS = 32

_CAP = 240  # bytes kept of a long element, before its extension
_EXT_WINDOW = 10  # an extension starts in the last 9 bytes of the element
_DOT = 0x2E

# Characters dropped outright: separators, NUL, and the bidirectional controls, which
# can disguise a name's extension. libtorrent drops 200E, 200F and 202A-202E; the
# isolates and the Arabic letter mark (Unicode 6.3, after libtorrent's list) reorder
# text just as well. Zero-width joiners and the like are kept, as libtorrent keeps
# them: Persian, Indic and emoji names need ZWNJ/ZWJ, and they cannot reorder a name.
_DROPPED = frozenset(
    [
        *(0x00, ord("/"), ord("\\"), 0x061C),
        *range(0x200E, 0x2010),  # left-to-right and right-to-left marks
        *range(0x202A, 0x202F),  # bidirectional embeddings and overrides
        *range(0x2066, 0x206A),  # bidirectional isolates
    ]
)
_WINDOWS_FORBIDDEN = frozenset(map(ord, '"*:<>?|'))

# Anything the fast path cannot pass through unchanged.
_UNSAFE = re.compile('[\x00-\x1f\x7f-\x9f/\\\\"*:<>?|\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]')

_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", "clock$", "conin$", "conout$"]
    + [f"{device}{digit}" for device in ("com", "lpt") for digit in "0123456789\xb9\xb2\xb3"]
)


def _decode_at(data: bytes, i: int) -> tuple[int, int]:
    """The code point starting at ``data[i]`` (``-1`` if invalid) and its byte length.

    Invalid input consumes bytes exactly as libtorrent's ``parse_utf8_codepoint``
    does, so the number of ``_`` an invalid element turns into is the same.
    """
    lead = data[i]
    if lead < 0x80:
        return lead, 1
    if lead >> 5 == 0b110:
        length = 2
    elif lead >> 4 == 0b1110:
        length = 3
    elif lead >> 3 == 0b11110:
        length = 4
    elif lead >> 2 == 0b111110:
        return -1, min(5, len(data) - i)  # a 5-byte form: skipped whole
    else:
        return -1, 1  # a continuation byte, or 0xFC-0xFF
    if i + length > len(data):
        return -1, len(data) - i  # truncated: the rest is one bad sequence
    code = lead & (0x7F >> length)
    for k in range(i + 1, i + length):
        byte = data[k]
        if byte & 0xC0 != 0x80:
            return -1, length
        code = code << 6 | byte & 0x3F
    if code < (0x80, 0x800, 0x10000)[length - 2] or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return -1, length  # overlong, out of range, or a surrogate
    return code, length


def _is_reserved(text: str) -> bool:
    return text.partition(".")[0].rstrip(" ").lower() in _RESERVED


def _as_bytes(element: bytes | str, what: str) -> bytes:
    if isinstance(element, str):
        return element.encode("utf-8", "surrogatepass")
    if isinstance(element, bytes):
        return element
    raise TypeError(f"{what} must be bytes or str, not {type(element).__name__}")


def _element(data: bytes, force: bool) -> str:
    """Sanitise one path element; with ``force`` the result is never empty."""
    if len(data) < _CAP:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            # The common case: nothing to change. Exactly the inputs the full
            # algorithm below would return unchanged.
            if (
                text
                and text[-1] not in " ."
                and _UNSAFE.search(text) is None
                and not _is_reserved(text)
            ):
                return text
    return _element_slow(data, force)


def _element_slow(data: bytes, force: bool) -> str:
    if not data:
        return "_"  # libtorrent: an empty element is "_", even as a name
    size = len(data)
    out: list[str] = []
    added = 0  # bytes written
    dots = 0  # dots written
    found_extension = False
    i = 0
    while i < size:
        code, length = _decode_at(data, i)
        if code in _DROPPED:
            i += length
            continue
        if code < 0 or code < 0x20 or 0x7F <= code <= 0x9F or code in _WINDOWS_FORBIDDEN:
            out.append("_")
            added += 1
        else:
            out.append(chr(code))
            added += length
            dots += code == _DOT
        if added >= _CAP and not found_extension:
            # Cut here, but keep an extension that starts in the last 9 bytes.
            dot = data.rfind(b".", max(size - _EXT_WINDOW, i) + 1)
            if dot < 0:
                break
            found_extension = True
            i = dot
            continue
        i += length
    if added == dots and added <= 2:
        return "_" if force else ""  # nothing, ".", "..": never a name
    text = "".join(out).rstrip(" .")
    if not text:
        return "_" if force else ""
    if _is_reserved(text):
        head, dot_, tail = text.partition(".")
        # Once more: the inserted "_" moves the 240-byte cut by one byte.
        return _element(f"{head}_{dot_}{tail}".encode(), force)
    return text


def sanitize_path(components: Sequence[bytes | str]) -> tuple[str, ...]:
    """Turn a torrent's file path (a ``path`` list) into safe relative components.

    Each element becomes exactly one component by the rules in the module
    documentation: no component is empty, ``.`` or ``..``, holds a separator,
    NUL or control character, is a Windows device name or ends in a dot or space,
    or is longer than 255 bytes of UTF-8. Joined under any directory, the result
    stays inside it.

    Args:
        components: the path's elements, ``bytes`` (decoded as UTF-8) or ``str``.

    Returns:
        One sanitised component per element; an empty input gives ``()``, which
        the caller must refuse (libtorrent: ``torrent_missing_name``).

    Raises:
        TypeError: ``components`` is a single string, or holds something that is
            neither ``bytes`` nor ``str``.

    >>> sanitize_path([b"/", b"\\\\", b"bar"])
    ('_', '_', 'bar')
    >>> sanitize_path([b"foo/../../../bar", b"NUL", b"a\\x00b", b"\\xffx"])
    ('foo......bar', 'NUL_', 'ab', '_x')
    >>> sanitize_path(["a", ".", "", "..."])
    ('a', '_', '_', '_')
    """
    if isinstance(components, str | bytes | bytearray):
        raise TypeError("components must be a sequence of path elements, not one string")
    return tuple(_element(_as_bytes(part, "a path element"), True) for part in components)


def sanitize_name(name: bytes | str, *, fallback: bytes | str | None = None) -> str:
    """Sanitise a torrent's ``name`` (the top directory, or the single file's name).

    The rules are those of one path element (see the module documentation), except
    that a name which sanitises to nothing (``.``, ``..``, ``/``, only bidirectional
    controls, only dots and spaces) is not replaced by ``_``: it gives
    ``fallback``, or ``""`` when there is none. libtorrent then uses the hex
    info-hash for a multi-file torrent and refuses a single-file one, and so does
    :class:`~bip_metainfo.Info`. An empty name gives ``_``, as in libtorrent; both
    refuse it for a single file before sanitising.

    Args:
        name: the raw name, ``bytes`` (decoded as UTF-8) or ``str``.
        fallback: what to use when nothing usable is left, typically
            ``info_hash.hex()``; it is sanitised too.

    Returns:
        One safe path component, or ``""`` if nothing is left and no fallback
        was given.

    Raises:
        TypeError: ``name`` or ``fallback`` is neither ``bytes`` nor ``str``.
        ValueError: ``fallback`` itself sanitises to nothing.

    >>> sanitize_name(b"\\\\est2")
    'est2'
    >>> sanitize_name(".")
    ''
    >>> sanitize_name("/", fallback="0123abcd")
    '0123abcd'
    """
    result = _element(_as_bytes(name, "name"), False)
    if result or fallback is None:
        return result
    result = _element(_as_bytes(fallback, "fallback"), False)
    if not result:
        raise ValueError(f"fallback {fallback!r} is not a usable name either")
    return result


def sanitize_symlink_target(components: Sequence[bytes | str]) -> tuple[str, ...] | None:
    """Sanitise a BEP 47 ``symlink path`` (a target relative to the torrent's root).

    ``.`` and ``..`` elements are dropped (BEP 47 forbids them; libtorrent drops
    them too), and the others are sanitised exactly like a file path, so a target
    names the same components as the file it points to, whatever the elements
    were. The result is lexically inside the torrent; whether it names anything
    in the torrent is for :func:`resolve_symlinks` to decide.

    Args:
        components: the ``symlink path`` list.

    Returns:
        The sanitised target, or ``None`` if no element is left: the entry is then
        not a link at all but an ordinary (empty) file, as in libtorrent.

    Raises:
        TypeError: as for :func:`sanitize_path`.

    >>> sanitize_symlink_target([b"..", b"a", b"/", b"bar"])
    ('a', '_', 'bar')
    >>> sanitize_symlink_target([b".", b".."]) is None
    True
    """
    if isinstance(components, str | bytes | bytearray):
        raise TypeError("components must be a sequence of path elements, not one string")
    kept = [part for part in components if _as_bytes(part, "a target element") not in (b".", b"..")]
    return sanitize_path(kept) or None


class _Tree:
    """Paths interned as nodes: one node per (parent node, key of a component) pair.

    Keeps memory linear in the number of components however deep the paths are,
    where a set of every prefix as a tuple would be quadratic. ``key`` maps a
    component to the key it is interned under (:func:`_fold` to compare names as a
    case-insensitive disk does); None interns components as they are.
    """

    def __init__(self, key: Callable[[str], str] | None = None) -> None:
        self.nodes: dict[tuple[int, str], int] = {}
        self.directories: set[int] = set()  # every node that :meth:`directory` made
        self._key = key
        # The directories :meth:`directory` last found, the latest first, each with the
        # node of each of its prefixes (the root first). Two, not one: a v2 torrent's
        # pad files, all in ``<name>/.pad``, come between its files, so the previous
        # call's directory is mostly the pads' and a real file's deep directory would
        # be walked from the top again (files x depth) whenever pads take part.
        self._recent: list[tuple[tuple[str, ...], list[int]]] = [((), [0])]

    def add(self, parent: int, component: str) -> int:
        """The node of ``component`` (already a key) under ``parent``, made if new."""
        node = self.nodes.get((parent, component))
        if node is None:
            node = self.nodes[parent, component] = len(self.nodes) + 1
        return node

    def find(self, path: Sequence[str], start: int = 0) -> int | None:
        """The node of ``path`` (keys) below node ``start``, or None if it has none."""
        node = start
        for component in path:
            found = self.nodes.get((node, component))
            if found is None:
                return None
            node = found
        return node

    def directory(self, components: tuple[str, ...]) -> int:
        """The node of the directory ``components``, which is added with its ancestors.

        Components shared with one of the last two directories found are not walked
        again: in a v2 file tree every file repeats its whole directory prefix, which
        the torrent itself states only once, so walking each file's path component by
        component would cost files x depth steps. The shared part is found by
        bisection over tuple comparisons, which run in C; only the components that
        differ cost a step each.
        """
        recent = self._recent
        for slot, (last, chain) in enumerate(recent):
            if components == last:
                if slot:  # the latest first: the other one is the one to forget next
                    recent.insert(0, recent.pop(slot))
                return chain[-1]
        best, shared = recent[0][1], 0  # the chain sharing the most, and how much
        for last, chain in recent:
            low, high = shared, min(len(last), len(components))
            if components[:low] != last[:low]:
                continue  # shares less than ``best``
            while low < high:  # the longest common prefix: components[:low] == last[:low]
                middle = (low + high + 1) // 2
                if components[:middle] == last[:middle]:
                    low = middle
                else:
                    high = middle - 1
            if low > shared:
                best, shared = chain, low
        chain = best[: shared + 1]
        node = chain[-1]
        key = self._key
        for component in components[shared:]:
            node = self.add(node, component if key is None else key(component))
            self.directories.add(node)
            chain.append(node)
        recent.insert(0, (components, chain))
        del recent[2:]
        return node


def resolve_symlinks(
    paths: Sequence[Sequence[str]],
    targets: Mapping[int, Sequence[str]],
    *,
    root: Sequence[str] = (),
    max_hops: int = DEFAULT_SYMLINK_HOPS,
) -> dict[int, tuple[str, ...]]:
    """Check every symlink target against the torrent's files (libtorrent's rule).

    A target is kept when it names a file or a directory of the torrent, first
    as given, then relative to the link's own directory (libtorrent's backwards
    compatibility), and finally by following other links that may point at
    directories (at most ``max_hops`` of them, never the same link twice). Any
    other link is made to point at itself, which is what libtorrent does, so a
    link never leads outside the torrent or to something that is not in it.
    Comparison is exact (case-sensitive). Run this before
    :func:`resolve_duplicates`, as libtorrent does.

    Args:
        paths: every file's sanitised path, symlinks included, by file index.
        targets: for each symlink's index, its target from
            :func:`sanitize_symlink_target`, relative to ``root``.
        root: the torrent's root directory in the coordinates of ``paths``: the
            ``(name,)`` of a multi-file torrent whose paths start with its name,
            ``()`` if the paths are relative to the root.
        max_hops: how many links a target may be resolved through.

    Returns:
        For each index of ``targets``: the target to use, in the coordinates of
        ``paths`` (so under ``root``), or the link's own path when the target is
        not valid.

    Raises:
        ValueError: a path is empty.

    >>> files = [("t", "A", "SDL2"), ("t", "SDL2"), ("t", "Current")]
    >>> resolve_symlinks(files, {1: ("Current", "SDL2"), 2: ("A",)}, root=("t",))
    {1: ('t', 'Current', 'SDL2'), 2: ('t', 'A')}
    >>> resolve_symlinks([("a", "f"), ("l",)], {1: ("nope",)})
    {1: ('l',)}
    """
    tree = _Tree()
    files: dict[int, int] = {}  # node -> the first file with that path
    parents: list[int] = []  # each file's directory node
    leaves: list[int] = []
    for path in paths:
        if not path:
            raise ValueError("a file path is empty")
        parents.append(tree.directory(tuple(path[:-1])))
        leaves.append(tree.add(parents[-1], path[-1]))
        files.setdefault(leaves[-1], len(leaves) - 1)
    directories = tree.directories

    def kind(node: int | None) -> tuple[bool, bool]:
        """(names a file or directory, could be a link to a directory)."""
        if node is None:
            return False, False
        if node in directories:
            return True, True
        index = files.get(node)
        return index is not None, index is not None and index in targets

    result: dict[int, tuple[str, ...]] = {}
    links: dict[int, tuple[str, ...]] = {}  # link's node -> its target, for later hops
    pending: list[int] = []
    base = tuple(root)
    for index in sorted(targets):
        path = tuple(paths[index])
        target = tuple(targets[index])
        link = leaves[index]
        # From the root, then from the link's own directory, whose node is known: a
        # walk down the link's (implicit, in a v2 tree) directory would cost its depth.
        for candidate, node in (
            (base + target, tree.find(base + target)),
            (path[:-1] + target, tree.find(target, parents[index])),
        ):
            exists, via = kind(node)
            if exists:
                result[index] = candidate
                if via:
                    links[link] = candidate
                break
        else:
            links[link] = base + target
            pending.append(index)

    for index in pending:
        target = base + tuple(targets[index])
        traversed: set[int] = set()
        ok = True
        depth = 1
        node = 0  # the node of target[: depth - 1]: one step per component, not a walk
        while depth < len(target) and ok:
            branch = tree.nodes.get((node, target[depth - 1]))  # target[:depth]'s
            if branch is not None and branch in directories:
                depth += 1
                node = branch
            elif (
                branch is None
                or branch not in links
                or branch in traversed
                or len(traversed) >= max_hops
            ):
                ok = False
            else:
                traversed.add(branch)
                target = links[branch] + target[depth:]
                depth = 1
                node = 0
        valid = ok and kind(tree.find(target))[0]
        result[index] = base + tuple(targets[index]) if valid else tuple(paths[index])
    return dict(sorted(result.items()))


def break_link_cycles(
    paths: Sequence[Sequence[str]],
    result: dict[int, tuple[str, ...]],
    max_hops: int = _DISK_LINK_HOPS,
    *,
    case_insensitive: bool = False,
) -> None:
    """Make links that loop on disk point at themselves.

    Run on :func:`resolve_symlinks`' result (whose rule is libtorrent's, which keeps
    such links); :class:`~bip_metainfo.Info` does, so no loop reaches a disk. With
    ``case_insensitive``, paths are compared as :func:`resolve_duplicates` compares
    them, as a case-insensitive disk would (``d/up -> D`` is a loop there): run it so
    on the paths :func:`resolve_duplicates` gave (see :func:`follow_renames`), among
    which no two files are the same file on such a disk.

    Each target is resolved as the disk would resolve it, component by component
    through the links it passes (``L/e`` with ``L -> d`` is ``d/e``). ``a -> b``,
    ``b -> a`` both name files of the torrent, so each looks valid alone, but on disk
    they are a loop (ELOOP for whoever opens them), and so is a chain of more than
    ``max_hops`` links, one ending at a link that points at itself, and one passing
    through a file (``B/f`` where ``B`` is a file). A link to a directory holding it
    (``d/up -> d``, or ``d/up -> L`` with ``L -> d``) makes an endless tree for every
    program that follows links (``find -L``, backups, indexers), and so do links
    leading into each other's directories (``a/L -> b``, ``b/M -> a``). Each such
    link becomes a self-link, which the storage layer does not create, and so does
    every link whose target passes through one. Linear in the links' and files'
    components, whatever ``max_hops`` is: each link is resolved once, without recursion.

    ``max_hops`` counts every link a target passes through, those met while resolving
    another link's target included, as the OS counts them; the default is macOS's
    limit (Linux follows 40), so a link that opens on disk is kept.
    """
    if all(target == tuple(paths[link]) for link, target in result.items()):
        return  # self-links only: no tree of every path to build
    fold = _name_folder() if case_insensitive else None
    tree = _Tree(fold)
    link_at: dict[int, int] = {}  # a link's node -> the first link with that path
    own: dict[int, int] = {}  # a link -> its node
    for index, path in enumerate(paths):
        name = path[-1] if fold is None else fold(path[-1])
        node = tree.add(tree.directory(tuple(path[:-1])), name)
        if index in result:
            link_at.setdefault(node, index)
            own[index] = node
    settled: dict[int, tuple[int, int]] = {}  # link -> (node its target resolves to, hops)
    through: dict[int, list[int]] = {}  # link -> the links its target passes through
    active: set[int] = set()

    def resolve(link: int) -> Generator[int, tuple[int, int], tuple[int, int]]:
        """The node ``link`` leads to and how many links that takes: _LOOPS if it never
        leads anywhere valid, or only through more than ``max_hops`` links (ELOOP on
        disk). Yields each link its target passes through and is sent back what that
        one leads to: :func:`settle` keeps a stack of these, so however long a chain
        is, nothing recurses, and each link is resolved once."""
        node, hops, used = 0, 1, []
        for component in result[link]:
            child = tree.nodes.get((node, component if fold is None else fold(component)))
            other = None if child is None else link_at.get(child)
            if child is None:
                node = _LOOPS  # nothing there on disk (through a file, or renamed away)
            elif other is None:
                node = child
                continue
            else:
                node, more = yield other
                used.append(other)
                hops += more
            if node < 0 or hops > max_hops:
                break
        if hops > max_hops:
            node, hops = _LOOPS, max_hops + 1  # capped: the links passed through add up
        settled[link] = (node, hops)
        through[link] = used
        return node, hops

    def settle(start: int) -> None:
        """Resolve ``start`` and every link its target passes through."""
        active.add(start)
        stack = [(start, resolve(start))]
        answer: tuple[int, int] | None = None
        while stack:
            link, work = stack[-1]
            try:
                other = next(work) if answer is None else work.send(answer)
            except StopIteration as stop:
                stack.pop()
                active.discard(link)
                answer = stop.value
                continue
            answer = settled.get(other)
            if answer is None and (other in active or result[other] == tuple(paths[other])):
                answer = (_LOOPS, 0)  # a cycle, or a self-link: nothing valid at its end
            if answer is None:
                active.add(other)
                stack.append((other, resolve(other)))

    for link in sorted(result):
        if link not in settled and result[link] != tuple(paths[link]):
            settle(link)
    users: dict[int, list[int]] = {}
    for link, used in through.items():
        for other in used:
            users.setdefault(other, []).append(link)
    done: set[int] = set()

    def cut(links: list[int]) -> None:
        """Make ``links``, and every link passing through one, self-links."""
        done.update(links)
        while links:
            link = links.pop()
            result[link] = tuple(paths[link])
            for user in users.get(link, ()):
                if user not in done:
                    done.add(user)
                    links.append(user)

    parent_of = {node: parent for (parent, _), node in tree.nodes.items()}

    def holds(node: int, directory: int) -> bool:
        """Whether ``directory`` is ``node`` or one of its ancestors."""
        while node != directory and node:
            node = parent_of[node]
        return node == directory

    cut(
        [
            link
            for link, (node, _) in settled.items()
            if node < 0 or holds(parent_of[own[link]], node)
        ]
    )
    # On disk, a link to a directory is one more way down from the directory holding it:
    # links leading into each other's directories make a cycle of such ways and real
    # subdirectories, in which every link loops.
    below: dict[int, list[int]] = {}
    for (parent, _), node in tree.nodes.items():
        if node in tree.directories:
            below.setdefault(parent, []).append(node)
    ways: list[tuple[int, int, int]] = []  # (link, its directory, the directory it leads to)
    for link, (node, _) in settled.items():
        if node in tree.directories and link not in done:
            ways.append((link, parent_of[own[link]], node))
            below.setdefault(ways[-1][1], []).append(node)
    component = _cycles(below)
    cut([link for link, start, end in ways if component[start] == component[end]])


_LOOPS = -1  # resolve()'s node for a link that leads nowhere valid


def _cycles(edges: Mapping[int, Sequence[int]]) -> dict[int, int]:
    """Each node's strongly connected component (Tarjan's, without recursion): two nodes
    share one exactly when each leads to the other."""
    order: dict[int, int] = {}
    low: dict[int, int] = {}
    component: dict[int, int] = {}
    stack: list[int] = []
    for root in edges:
        if root in order:
            continue
        order[root] = low[root] = len(order)
        stack.append(root)
        work = [(root, iter(edges.get(root, ())))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in order:
                    order[child] = low[child] = len(order)
                    stack.append(child)
                    work.append((child, iter(edges.get(child, ()))))
                    break
                if child not in component:  # still on the stack
                    low[node] = min(low[node], order[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == order[node]:
                    while True:
                        member = stack.pop()
                        component[member] = node
                        if member == node:
                            break
    return component


def follow_renames(
    before: Sequence[Sequence[str]],
    after: Sequence[Sequence[str]],
    result: dict[int, tuple[str, ...]],
) -> None:
    """Move symlink targets along with the files :func:`resolve_duplicates` renamed.

    ``result`` is :func:`resolve_symlinks`' (targets checked against the paths
    ``before`` renaming), changed in place to name the same files ``after`` it: a
    target that names a renamed file's old path, or passes through a renamed link's
    (as a target may pass through a link to a directory), takes the new path,
    unless a file or a directory still has the old one exactly (the first of two
    equal paths keeps it, a directory always does). A self-link stays one. Then run
    :func:`break_link_cycles` with ``case_insensitive``: without this, a link kept
    the old path, which on a case-insensitive disk is the other file's, or the
    directory that made the rename, perhaps the link's own (a loop).
    Linear in the targets' components.

    >>> result = {2: ("A",)}
    >>> follow_renames([("a",), ("A",), ("L",)], [("a",), ("A.1",), ("L",)], result)
    >>> result
    {2: ('A.1',)}
    """
    old = _Tree()
    renamed: dict[int, int] = {}  # the node of an old path -> the first file renamed from it
    for index, (path, new) in enumerate(zip(before, after, strict=True)):
        if tuple(path) != tuple(new):
            node = 0
            for component in path:
                node = old.add(node, component)
            renamed.setdefault(node, index)
    if not renamed:
        return
    kept = _Tree()
    for path in after:
        kept.add(kept.directory(tuple(path[:-1])), path[-1])
    for index, target in result.items():
        if target == tuple(before[index]):
            result[index] = tuple(after[index])
            continue
        # Down both trees at once, one step per component: target[:depth]'s nodes.
        was = 0
        still: int | None = 0
        for depth, component in enumerate(target, start=1):
            step = old.nodes.get((was, component))
            if step is None:
                break
            was = step
            if still is not None:
                still = kept.nodes.get((still, component))
            moved = renamed.get(was)
            if moved is not None and still is None:
                result[index] = (*after[moved], *target[depth:])
                break


def _fold(component: str) -> str:
    """The key under which two names are the same file on a case-insensitive disk."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", component).casefold())


def _name_folder() -> Callable[[str], str]:
    """:func:`_fold`, each distinct name folded once."""
    folded: dict[str, str] = {}

    def fold_name(component: str) -> str:
        key = folded.get(component)
        if key is None:
            key = folded[component] = _fold(component)
        return key

    return fold_name


def _renamed(component: str, counter: int) -> str:
    """``stem.N.ext``, libtorrent's name for the Nth duplicate, within 255 bytes."""
    dot = component.rfind(".")
    stem, extension = (component, "") if dot < 0 else (component[:dot], component[dot:])
    suffix = f".{counter}{extension}"
    while stem and len(stem.encode()) + len(suffix.encode()) > 255:
        stem = stem[:-1]
    return stem + suffix


def resolve_duplicates(
    paths: Sequence[Sequence[str]],
    *,
    limit: int = DEFAULT_DUPLICATE_LIMIT,
    pads: Sequence[bool] | None = None,
    sizes: Sequence[int] | None = None,
) -> list[tuple[str, ...]]:
    """Rename files whose sanitised paths clash, libtorrent style.

    Two paths clash when they are equal ignoring case (and Unicode normalisation),
    as they would be on Windows or macOS. The first file with a path keeps it,
    unless a directory of the torrent has that path: directories always win. Every
    other file is renamed by inserting a counter before the extension of its last
    component (``foo`` to ``foo.1``, ``bar.txt`` to ``bar.1.txt``, ``.hidden`` to
    ``.1.hidden``), taking the first counter whose name is not a directory, the
    path of another file or an earlier new name. Pad files (``pads``) of equal
    ``sizes`` may share a path. Each counter that is already taken counts as one
    collision; more than ``limit`` of them in a torrent mean it is refused.

    Args:
        paths: every file's sanitised path (see :func:`sanitize_path`), in order.
        limit: how many collisions to tolerate (libtorrent's default is 500).
        pads: which files are pad files; ``None`` if none are.
        sizes: the files' sizes, needed with ``pads``.

    Returns:
        The paths to use, in the same order; unchanged ones are equal to the input.

    Raises:
        MetainfoError: ``TOO_MANY_DUPLICATE_NAMES``, more than ``limit`` collisions.
        ValueError: a path is empty, or ``pads`` is given without ``sizes``.

    >>> resolve_duplicates([("t", "a"), ("t", "a", "b"), ("t", "A")])
    [('t', 'a.1'), ('t', 'a', 'b'), ('t', 'A.2')]
    """
    if pads is not None and sizes is None:
        raise ValueError("pads needs sizes")
    # Each distinct component is folded once (two Unicode normalisations of up to 255
    # bytes): a deep tree repeats the same directory names in every file's path.
    folded: dict[str, str] = {}

    def fold(component: str) -> str:
        key = folded.get(component)
        if key is None:
            key = folded[component] = _fold(component)
        return key

    tree = _Tree(fold)
    parents: list[int] = []
    leaves: list[int] = []
    for path in paths:
        if not path:
            raise ValueError("a file path is empty")
        parents.append(tree.directory(tuple(path[:-1])))
        leaves.append(tree.add(parents[-1], fold(path[-1])))
    directories = tree.directories
    owners: dict[int, int] = {}
    for index, leaf in enumerate(leaves):
        if leaf not in directories:
            owners.setdefault(leaf, index)

    result: list[tuple[str, ...]] = []
    collisions = 0
    for index, path in enumerate(paths):
        owner = owners.get(leaves[index])
        if owner == index:
            result.append(tuple(path))
            continue
        if (
            owner is not None
            and pads is not None
            and sizes is not None
            and pads[index]
            and pads[owner]
            and sizes[index] == sizes[owner]
        ):
            result.append(tuple(path))  # identical pad files may overlap
            continue
        counter = 0
        while True:
            counter += 1
            name = _renamed(path[-1], counter)
            key = (parents[index], fold(name))
            if key not in tree.nodes:
                tree.nodes[key] = len(tree.nodes) + 1
                result.append((*path[:-1], name))
                break
            collisions += 1
            if collisions > limit:
                raise MetainfoError(
                    MetainfoErrorKind.TOO_MANY_DUPLICATE_NAMES,
                    f"more than {limit} clashes while renaming duplicate file paths"
                    f" (at {'/'.join(path)!r})",
                )
    return result


def is_within(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``root`` or lies inside it, with symlinks resolved.

    For the layer that writes files: call it right before creating or opening a
    file or link, so that a symlink planted in the download directory (by another
    program, or by a torrent's own links) cannot redirect a write elsewhere.
    Both paths are resolved as the OS sees them now (existing symlinks followed,
    ``..`` applied); a relative ``path`` is taken relative to ``root``. Case is
    compared as the OS does (``os.path.normcase``).

    >>> is_within("/downloads", "/downloads/t/a.txt")
    True
    >>> is_within("/downloads", "t/../../etc/passwd")
    False
    """
    base = Path(root).resolve()
    target = (base / path).resolve()
    base_text = os.path.normcase(str(base))
    target_text = os.path.normcase(str(target))
    try:
        return os.path.commonpath([base_text, target_text]) == base_text
    except ValueError:  # different drives on Windows
        return False
