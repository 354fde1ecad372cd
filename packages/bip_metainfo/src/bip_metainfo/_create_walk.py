"""Creating torrents, step one: walking a file or a directory into the torrent's files.

:func:`_scan` turns the ``path`` given to :func:`~bip_metainfo.create_torrent`
into a list of :class:`_Entry` (one per file, sorted into the v2 file tree's
order), with the BEP 47 attributes libtorrent gives them: ``x`` for files their
owner may execute, ``h`` for hidden files on Windows, ``l`` for symbolic links
stored as links (their targets resolved lexically by :func:`_link_target`, links
out of the torrent left out). It refuses names that are not UTF-8, more files
than a torrent may hold and, when links are followed, dangling links, loops and
directories reached twice (loops through Windows junctions, which it walks into,
always). Given where the caller will write the torrent (:func:`_output`), it
refuses to share that file or any file of that directory, by identity, however
the walk reaches them. :func:`_check_names` then refuses names the torrent's readers would
change (so the torrent could not be seeded from the files it was made of). The
entries are then filled in by the hashing (:mod:`._create_pipeline`) and read by
:mod:`._create`, which builds the torrent from them; nothing here reads file data.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._create_hashing import _Identity
from ._errors import CreateError, MetainfoError
from ._info import BITCOMET_PAD, DEFAULT_MAX_FILES
from ._paths import resolve_duplicates, sanitize_name, sanitize_path, sanitize_symlink_target

# Entries create_torrent leaves out, at DEBUG: one record each (the walk stats every entry
# anyway, so this is no cost next to it); hidden files, left out on request, are not logged.
_log = logging.getLogger("bip_metainfo.create")

_PAD_HINT = "readers take such a file for BitComet padding and leave it out; rename it"
_RULES = (
    'names must suit every system: no control characters, \\ / : * ? " < > |, trailing '
    "dots or spaces, Windows device names such as CON, nor the invisible bidirectional "
    "controls U+200E, U+200F, U+202A-U+202E, U+2066-U+2069, U+061C, which readers drop"
)


@dataclass(slots=True)
class _Entry:
    """One file of the torrent, and what hashing finds out about it."""

    path: tuple[str, ...]  # components below the torrent's root; () for a single file
    source: str  # where to read it
    length: int
    executable: bool
    symlink: tuple[str, ...] | None = None  # BEP 47 target, from the torrent's root
    hidden: bool = False  # the Windows hidden attribute
    # The file as the walk saw it (``_Identity``), so hashing reads this very file, not one
    # renamed over it since; None where the walk gets no inode number (DirEntry.stat on
    # Windows).
    identity: _Identity | None = None
    pad: int = 0  # zeros after it in the v1 piece space (hybrid torrents)
    pieces_root: bytes | None = None
    layer: bytes = b""  # BEP 52 piece layer, for files of more than one piece
    nodes: list[bytes] = field(default_factory=list)  # piece hashes so far

    @property
    def attr(self) -> str:
        """The BEP 47 ``attr`` string, in libtorrent's letter order."""
        return (
            ("h" if self.hidden else "")
            + ("x" if self.executable else "")
            + ("l" if self.symlink is not None else "")
        )


def _entry(path: tuple[str, ...], source: str, info: os.stat_result) -> _Entry:
    """A regular file, with the attributes libtorrent gives it."""
    attributes = getattr(info, "st_file_attributes", 0)  # Windows only
    return _Entry(
        path,
        source,
        info.st_size,
        executable=bool(info.st_mode & stat.S_IXUSR),
        hidden=bool(attributes & stat.FILE_ATTRIBUTE_HIDDEN),
        identity=(
            (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            if info.st_ino
            else None
        ),
    )


@dataclass(frozen=True, slots=True)
class _Output:
    """Where the caller will write the torrent, as the walk must not share it."""

    path: str  # as given, for messages
    directory: tuple[int, int] | None  # (st_dev, st_ino) of the directory it goes in
    file: tuple[int, int] | None  # the regular file there now: an earlier run's torrent
    hidden: bool  # its name starts with ".": left out with include_hidden=False


def _output(path: str) -> _Output:
    """``path`` identified as the OS resolves it when the torrent is written there.

    Its directory through every link, as :func:`os.stat` follows them: ``l/..`` is the
    parent of where ``l`` leads, not the current directory, as :func:`os.path.abspath`
    would have it. The file itself through none: a rename onto a link replaces the link.
    Identities, not names, so a directory two names reach (a bind mount, another case on
    a case-insensitive file system) is one directory.

    Raises:
        OSError: the directory cannot be reached (FileNotFoundError: it does not exist).
    """
    directory = os.stat(os.path.dirname(path) or os.curdir)
    try:
        info: os.stat_result | None = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        info = None
    return _Output(
        path,
        (directory.st_dev, directory.st_ino) if directory.st_ino else None,
        (info.st_dev, info.st_ino) if info and info.st_ino and stat.S_ISREG(info.st_mode) else None,
        os.path.basename(path).startswith("."),
    )


def _check_output(output: _Output | None, source: str, info: os.stat_result) -> None:
    """Refuse to share the file the torrent will be written over (see :class:`_Output`).

    Raises:
        CreateError: ``info`` (of ``source``, a file the walk shares) is that file.
    """
    if output is not None and info.st_ino and (info.st_dev, info.st_ino) == output.file:
        raise CreateError(
            f"{output.path!r} is {source!r}, a file the torrent shares: write the torrent elsewhere"
        )


def _windows_hidden(item: os.DirEntry[str]) -> bool:
    if os.name != "nt":
        return False
    attributes = getattr(item.stat(follow_symlinks=False), "st_file_attributes", 0)
    return bool(attributes & stat.FILE_ATTRIBUTE_HIDDEN)


def _directory_key(path: str, info: os.stat_result) -> tuple[int, int] | None:
    """``(st_dev, st_ino)``, which identifies a directory, or None if the file system has none.

    ``DirEntry.stat()`` leaves both 0 on Windows (every directory would seem the same
    one): ``os.stat`` fills them in. A file system with no inode numbers at all gives 0
    again, and then loops cannot be told from trees (a loop then ends at ``ELOOP`` or
    the file limit).
    """
    if not info.st_ino:
        info = os.stat(path)
    return (info.st_dev, info.st_ino) if info.st_ino else None


def _check_utf8(name: str, where: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CreateError(
            f"{where!r}: the name is not valid UTF-8, which a torrent cannot hold; rename it"
        ) from None


def _link_target(
    target: str, directory: tuple[str, ...], roots: Sequence[str]
) -> tuple[str, ...] | None:
    """A link's target as a path from the torrent's root, or None if it leaves the root.

    Resolved lexically, as libtorrent does: a relative target from the link's own
    directory, ``..`` going above the root counting as leaving it even if a later
    element comes back; an absolute target only if it lies under the root. The
    root itself is no target either.
    """
    if os.path.isabs(target):
        normal = os.path.normpath(target)
        for root in roots:
            prefix = root.rstrip(os.sep) + os.sep
            if normal.startswith(prefix):
                return _link_target(normal[len(prefix) :], (), ())
        return None
    parts = list(directory)
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    elements = [target]
    for separator in separators:
        elements = [piece for element in elements for piece in element.split(separator)]
    for element in elements:
        if element in ("", "."):
            continue
        if element == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(element)
    return tuple(parts) or None


def _scan(
    root: str, *, include_hidden: bool, follow_symlinks: bool, output: _Output | None = None
) -> tuple[list[_Entry], bool]:
    """The files under ``root`` sorted into file-tree order, and whether it is one file.

    Raises:
        OSError: ``root`` cannot be read, a followed link points nowhere or loops.
        CreateError: ``root`` is neither a file nor a directory, a name is not UTF-8,
            there are more than :data:`DEFAULT_MAX_FILES` files, a followed link
            leads to a directory the walk has already reached, or ``output`` is a
            file the walk shares or lies in a directory it enters.
    """
    top = os.stat(root)
    if stat.S_ISREG(top.st_mode):
        _check_output(output, root, top)
        return [_entry((), root, top)], True
    if not stat.S_ISDIR(top.st_mode):
        raise CreateError(f"{root!r} is neither a regular file nor a directory")
    # The output's directory, where the walk would share the torrent (on a later run, if
    # not yet on this one); a hidden output is left out when hidden files are.
    watched = output.directory if output and (include_hidden or not output.hidden) else None

    def check_directory(path: str, key: tuple[int, int] | None) -> None:
        if output is not None and key is not None and key == watched:
            raise CreateError(
                f"{output.path!r} lies in {path!r}, a directory the torrent shares: the "
                "next torrent made of these files would share this one; write it elsewhere"
            )

    check_directory(root, _directory_key(root, top))
    roots = sorted({os.path.abspath(root), os.path.realpath(root)})
    entries: list[_Entry] = []
    stack: list[tuple[str, tuple[str, ...], frozenset[tuple[int, int]]]] = [
        (root, (), frozenset({(top.st_dev, top.st_ino)}))
    ]
    # Every directory entered, and where: followed links can reach one directory along
    # many paths, and a chain of directories each linking twice to the next would
    # double the walk at every level (34 links: a quarter of a million entries). Only
    # then: without links a tree reaches each directory once, and some file systems
    # (FUSE, network mounts) give different directories one inode number.
    visited = {(top.st_dev, top.st_ino): root}
    may_loop = follow_symlinks or os.name == "nt"
    while stack:
        directory, prefix, ancestors = stack.pop()
        with os.scandir(directory) as items:
            children = sorted(items, key=lambda item: item.name)  # errors come in order too
        subdirectories = []
        for item in children:
            if len(entries) > DEFAULT_MAX_FILES:
                raise CreateError(
                    f"{root!r} holds more than {DEFAULT_MAX_FILES} files, more than a torrent "
                    "may hold"
                )
            name = item.name
            if not include_hidden and (name.startswith(".") or _windows_hidden(item)):
                continue
            _check_utf8(name, item.path)
            path = (*prefix, name)
            if item.is_symlink():
                link = os.readlink(item.path)
                if not follow_symlinks:
                    _check_utf8(link, item.path)
                    target = _link_target(link, prefix, roots)
                    if target is not None:
                        entry = _entry(path, item.path, item.stat(follow_symlinks=False))
                        entry.length = 0
                        entry.symlink = target
                        entries.append(entry)
                    # a link out of the torrent: left out, as libtorrent does
                    _log.debug("left out %r: a symbolic link to outside the torrent", item.path)
                    continue
                try:
                    info = os.stat(item.path)
                except FileNotFoundError:
                    raise FileNotFoundError(
                        errno.ENOENT, f"the symbolic link points to nothing ({link!r})", item.path
                    ) from None
            else:
                info = item.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                # Only a followed link can lead back to a directory (or reach one twice):
                # with links stored a tree cannot loop, and some file systems (FUSE,
                # network mounts) give a directory and one below it one inode number, so
                # there the check would refuse a sound tree (libtorrent has none). Windows
                # junctions are no symlinks to is_symlink, and are walked into: checked.
                identity = (
                    _directory_key(item.path, info) if may_loop or watched is not None else None
                )
                check_directory(item.path, identity)
                key = identity if may_loop else None
                if key is not None:
                    if key in ancestors:
                        raise OSError(
                            errno.ELOOP,
                            "symbolic link loop: the link leads back to a directory it is in",
                            item.path,
                        )
                    if follow_symlinks:
                        first = visited.get(key)
                        if first is not None:
                            raise CreateError(
                                f"{item.path!r} and {first!r} are the same directory, reached "
                                "twice through symbolic links: following them would share its "
                                "files twice; remove a link, or store links instead of "
                                "following them"
                            )
                        visited[key] = item.path
                subdirectories.append((item.path, path, ancestors | {key} if key else ancestors))
            elif stat.S_ISREG(info.st_mode):
                _check_output(output, item.path, info)
                entries.append(_entry(path, item.path, info))
            else:
                # FIFOs, sockets and devices hold no file data: they are left out.
                _log.debug("left out %r: not a regular file or a directory", item.path)
        stack.extend(reversed(subdirectories))  # walked in name order, depth first
    if len(entries) > DEFAULT_MAX_FILES:
        raise CreateError(
            f"{root!r} holds more than {DEFAULT_MAX_FILES} files, more than a torrent may hold"
        )
    entries.sort(key=lambda entry: entry.path)
    return entries, False


def _check_names(name: str, entries: list[_Entry], *, v1: bool, portable: bool = True) -> None:
    """Refuse any name the torrent's readers would change, before any hashing.

    Readers (ours, and libtorrent on Windows) sanitise every name and rename paths
    that clash ignoring case (see :func:`~bip_metainfo.sanitize_path` and
    :func:`~bip_metainfo.resolve_duplicates`): a file ``a:b.txt`` is read as
    ``a_b.txt``, ``README`` beside ``Readme`` as ``README.1``. A torrent holding such
    names would be read as naming files that are not on disk, so it could not be
    checked or seeded from the files it was made of. The same functions run here,
    and the first name they would change is refused, as a name that is not UTF-8 is.
    With ``portable`` false such names are kept (as libtorrent keeps them); what no
    reader takes (BitComet's padding name in v1, more clashes than readers resolve)
    is still refused.

    Raises:
        CreateError: naming the file and what readers would call it.
    """
    readers = sanitize_name(name)
    if portable and readers != name:
        raise CreateError(
            f"the torrent's name {name!r} would be {readers or '(its info-hash)'!r} to its "
            f"readers ({_RULES}); rename it"
        )
    if v1 and BITCOMET_PAD in name:
        raise CreateError(f"the torrent's name {name!r} holds {BITCOMET_PAD!r}: {_PAD_HINT}")
    cache: dict[str, str] = {}  # a deep tree repeats its directories' names in every path

    def sanitised(component: str) -> str:
        result = cache.get(component)
        if result is None:
            result = cache[component] = sanitize_path([component])[0]
        return result

    paths = []
    for entry in entries:
        path = tuple(sanitised(component) for component in entry.path)
        if portable and path != entry.path:
            raise CreateError(
                f"{entry.source!r}: readers of the torrent would call it "
                f"{'/'.join((name, *path))!r} ({_RULES}); rename it"
            )
        if v1 and any(BITCOMET_PAD in component for component in path):
            raise CreateError(f"{entry.source!r}: the name holds {BITCOMET_PAD!r}: {_PAD_HINT}")
        if portable and entry.symlink is not None:
            target = sanitize_symlink_target(entry.symlink)
            if target != entry.symlink:
                raise CreateError(
                    f"{entry.source!r}: readers of the torrent would take the link's target "
                    f"{'/'.join(entry.symlink)!r} as {'/'.join(target or ())!r}; change it"
                )
        paths.append((name, *path))
    try:
        resolved = resolve_duplicates(paths)
    except MetainfoError as error:
        raise CreateError(
            f"too many file names clash when case is ignored, as readers compare them: {error}; "
            "rename them"
        ) from None
    for entry, path, read in zip(entries, paths, resolved, strict=True):
        if portable and read != path:
            raise CreateError(
                f"{entry.source!r}: its path equals another file's or directory's when case "
                f"(and Unicode normalisation) is ignored, as on Windows and macOS; readers of "
                f"the torrent would call it {'/'.join(read)!r}; rename it"
            )
