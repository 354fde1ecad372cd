"""Creating torrents, step one: walking a file or a directory into the torrent's files.

:func:`_scan` turns the ``path`` given to :func:`~bip_metainfo.create_torrent`
into a list of :class:`_Entry` (one per file, sorted into the v2 file tree's
order), with the BEP 47 attributes libtorrent gives them: ``x`` for files their
owner may execute, ``h`` for hidden files on Windows, ``l`` for symbolic links
stored as links (their targets resolved lexically by :func:`_link_target`, links
out of the torrent left out). It refuses names that are not UTF-8 and, when
links are followed, dangling links and loops. The entries are then filled in by
the hashing (:mod:`._create_pipeline`) and read by :mod:`._create`, which builds
the torrent from them; nothing here reads file data.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._errors import CreateError

# Entries create_torrent leaves out, at DEBUG: one record each (the walk stats every entry
# anyway, so this is no cost next to it); hidden files, left out on request, are not logged.
_log = logging.getLogger("bip_metainfo.create")


@dataclass(slots=True)
class _Entry:
    """One file of the torrent, and what hashing finds out about it."""

    path: tuple[str, ...]  # components below the torrent's root; () for a single file
    source: str  # where to read it
    length: int
    executable: bool
    symlink: tuple[str, ...] | None = None  # BEP 47 target, from the torrent's root
    hidden: bool = False  # the Windows hidden attribute
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
    )


def _windows_hidden(item: os.DirEntry[str]) -> bool:
    if os.name != "nt":
        return False
    attributes = getattr(item.stat(follow_symlinks=False), "st_file_attributes", 0)
    return bool(attributes & stat.FILE_ATTRIBUTE_HIDDEN)


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


def _scan(root: str, *, include_hidden: bool, follow_symlinks: bool) -> tuple[list[_Entry], bool]:
    """The files under ``root`` sorted into file-tree order, and whether it is one file.

    Raises:
        OSError: ``root`` cannot be read, a followed link points nowhere or loops.
        CreateError: ``root`` is neither a file nor a directory, or a name is not UTF-8.
    """
    top = os.stat(root)
    if stat.S_ISREG(top.st_mode):
        return [_entry((), root, top)], True
    if not stat.S_ISDIR(top.st_mode):
        raise CreateError(f"{root!r} is neither a regular file nor a directory")
    roots = sorted({os.path.abspath(root), os.path.realpath(root)})
    entries: list[_Entry] = []
    stack: list[tuple[str, tuple[str, ...], frozenset[tuple[int, int]]]] = [
        (root, (), frozenset({(top.st_dev, top.st_ino)}))
    ]
    while stack:
        directory, prefix, ancestors = stack.pop()
        with os.scandir(directory) as items:
            children = sorted(items, key=lambda item: item.name)  # errors come in order too
        for item in children:
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
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    raise OSError(
                        errno.ELOOP,
                        "symbolic link loop: the link leads back to a directory it is in",
                        item.path,
                    )
                stack.append((item.path, path, ancestors | {key}))
            elif stat.S_ISREG(info.st_mode):
                entries.append(_entry(path, item.path, info))
            else:
                # FIFOs, sockets and devices hold no file data: they are left out.
                _log.debug("left out %r: not a regular file or a directory", item.path)
    entries.sort(key=lambda entry: entry.path)
    return entries, False
