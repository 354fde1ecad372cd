"""``StorageLayout``: where a torrent's pieces live in a :class:`~bip_disk.FileSystem`.

A torrent's files sit one after another in its *piece space* (see
:class:`~bip_metainfo.PieceGeometry`): a v1 torrent concatenates them, pad files
included; in a v2 or hybrid torrent every non-empty file starts at a piece
boundary and the gap after it is a pad file, so the last piece of each file is
short in the v2 view. The layout maps that space onto relative paths:

- Paths are the torrent's own, already made safe by bip_metainfo
  (:func:`~bip_metainfo.sanitize_path`, :func:`~bip_metainfo.resolve_duplicates`):
  ``name`` for a single-file torrent, ``name/dir/file`` for a multi-file one.
  A ``name_override`` replaces the top component and is sanitised the same way (of a
  single file at the root, its name, even when a v2 file tree names it otherwise than
  the torrent).
- **Pad files** are never stored: a span that falls on one is marked ``is_pad``;
  :func:`read_span_data` returns zeros for it and :func:`write_span_data` skips it. (A peer
  that sends non-zero pad bytes makes the v1 hash fail, which is right.)
- **Zero-length files** hold no piece bytes; :func:`create_files` creates them.
- **Executable files** (BEP 47 ``x``) are created executable in a FileSystem that can
  (:meth:`NativeFileSystem.create_executable <bip_disk.NativeFileSystem.create_executable>`),
  by whatever creates them first: :func:`create_files` for an empty one or an allocated
  one, the DiskManager before the first write touching the others (as libtorrent sets
  the mode when it first opens a file for writing); :func:`write_span_data` does not.
  The other FileSystems store no modes, and ignore the attribute.
- **Symlinks** (BEP 47) hold no piece bytes either. bip_metainfo already points
  every link at a file or directory of the torrent, or at itself when its target
  is not in the torrent; :func:`create_files` creates the valid ones through
  :meth:`FileSystem.symlink <bip_disk.FileSystem.symlink>` (which refuses targets
  outside the root) and skips self-links (bip_metainfo's mark of a link whose
  target is not in the torrent), which would only be loops on disk.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from bip_metainfo import FileEntry, Info, PieceGeometry, sanitize_name

from ._errors import PathError, StorageError
from ._filesystem import Buffer, FileSystem

__all__ = [
    "Span",
    "StorageLayout",
    "StoredFile",
    "create_files",
    "create_stored_files",
    "executable_creator",
    "read_piece",
    "read_span_data",
    "write_span_data",
]


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file of the torrent, as it is stored.

    Attributes:
        index: its index in :attr:`Info.files <bip_metainfo.Info.files>`.
        path: its torrent-relative path (``"name/dir/file"``).
        length: its size in bytes (0 for a link).
        offset: where it starts in the piece space.
        is_pad: a pad file: never stored, reads as zeros.
        symlink_target: for a link, the root-relative path it points at; ``None``
            for anything else, and for a link whose target is not in the torrent.
        is_link: a BEP 47 link (attribute ``l``), valid or not; an invalid one
            (no ``symlink_target``) is not created at all.
        executable: the BEP 47 ``x`` attribute.
        pieces_root: the file's v2 merkle root (v2 and hybrid, non-empty files).
    """

    index: int
    path: str
    length: int
    offset: int
    is_pad: bool = False
    symlink_target: str | None = None
    is_link: bool = False
    executable: bool = False
    pieces_root: bytes | None = None

    @property
    def is_symlink(self) -> bool:
        """A BEP 47 link that :func:`create_files` creates."""
        return self.symlink_target is not None

    @property
    def is_stored(self) -> bool:
        """A file with data in the FileSystem: not a pad file, not a link."""
        return not self.is_pad and not self.is_link


@dataclass(frozen=True, slots=True)
class Span:
    """A run of bytes of one file inside one piece.

    Attributes:
        path: the file's relative path.
        file_index: the file's index in :attr:`StorageLayout.files`.
        file_offset: where the run starts inside the file.
        length: how many bytes it has (always more than 0).
        is_pad: the run lies in a pad file: never written, read as zeros.
    """

    path: str
    file_index: int
    file_offset: int
    length: int
    is_pad: bool


def _rename_top(path: tuple[str, ...], old: str, new: str) -> tuple[str, ...]:
    return (new, *path[1:]) if path and path[0] == old else path


class StorageLayout:
    """A torrent's files as relative paths, and its pieces as spans of them.

    >>> from bip_metainfo import FileEntry
    >>> layout = StorageLayout(
    ...     [FileEntry(("t", "a"), 5, 0), FileEntry(("t", "b"), 7, 5)], piece_length=8
    ... )
    >>> [(span.path, span.file_offset, span.length) for span in layout.spans(0)]
    [('t/a', 0, 5), ('t/b', 0, 3)]
    >>> layout.piece_size(1)
    4
    """

    __slots__ = ("_geometry", "_v2", "files", "num_pieces", "piece_length", "total_size")

    def __init__(
        self,
        files: Sequence[FileEntry],
        piece_length: int,
        *,
        v2: bool = False,
    ) -> None:
        """Lay out ``files`` (safe paths, piece-space order) in pieces of ``piece_length``.

        Prefer :meth:`from_info`. ``v2`` says the torrent has per-file merkle trees,
        so :meth:`v2_piece` can map pieces to them.

        Raises:
            PathError: a file's path is empty.
            ValueError: ``piece_length`` is not positive.
        """
        stored = []
        for index, entry in enumerate(files):
            if not entry.path:
                raise PathError(f"file {index} has an empty path")
            target = entry.symlink_target
            link = None
            if entry.is_symlink and target and tuple(target) != tuple(entry.path):
                link = "/".join(target)
            stored.append(
                StoredFile(
                    index=index,
                    path="/".join(entry.path),
                    length=entry.length,
                    offset=entry.offset,
                    is_pad=entry.is_pad,
                    symlink_target=link,
                    is_link=entry.is_symlink,
                    executable=entry.is_executable,
                    pieces_root=entry.pieces_root,
                )
            )
        self.files: tuple[StoredFile, ...] = tuple(stored)
        """Every file, by index: pad files and links included."""
        self._geometry = PieceGeometry(files, piece_length)
        self._v2 = v2
        self.piece_length = piece_length
        """Bytes per piece."""
        self.num_pieces = self._geometry.num_pieces
        """How many pieces the torrent has."""
        self.total_size = sum(file.length for file in self.files if file.is_stored)
        """Bytes of stored data (pad files excluded)."""

    @classmethod
    def from_info(cls, info: Info, *, name_override: str | None = None) -> StorageLayout:
        """The layout of a parsed torrent.

        Args:
            info: the torrent; its paths are already sanitised and de-duplicated.
            name_override: a name to store the torrent under instead of its own
                (the top directory, or the single file's name); sanitised like a
                torrent's name.

        Raises:
            PathError: ``name_override`` has nothing usable as a name.
        """
        files: Sequence[FileEntry] = info.files
        if name_override is not None:
            new = sanitize_name(name_override)
            if not new:
                raise PathError(f"{name_override!r} is not usable as a name")
            old = info.name
            stored = [entry for entry in info.files if not entry.is_pad]
            if len(stored) == 1 and len(stored[0].path) == 1:
                # A single file at the root is the torrent's name, even when it is not
                # called so: a v2 tree's only key need not be its ``name`` (libtorrent
                # stores the file under that key, at the root, as bip_metainfo does).
                # Its pad file, under ``name``, is renamed along (never stored).
                single = stored[0].path[0]
                files = [
                    _replace_name(entry, old if entry.is_pad else single, new)
                    for entry in info.files
                ]
            else:
                files = [_replace_name(entry, old, new) for entry in info.files]
        return cls(files, info.piece_length, v2=info.is_v2)

    # -- files -------------------------------------------------------------------

    @property
    def stored_files(self) -> tuple[StoredFile, ...]:
        """The files with data in the FileSystem (zero-length ones included)."""
        return tuple(file for file in self.files if file.is_stored)

    @property
    def symlinks(self) -> tuple[StoredFile, ...]:
        """The valid BEP 47 links, to create after the files."""
        return tuple(file for file in self.files if file.is_symlink)

    def file_pieces(self, file_index: int) -> range:
        """The pieces holding bytes of file ``file_index`` (empty for an empty file).

        Raises:
            IndexError: there is no such file.
        """
        self._check_file(file_index)
        return self._geometry.file_pieces(file_index)

    def _check_file(self, file_index: int) -> None:
        if not 0 <= file_index < len(self.files):
            raise IndexError(f"file {file_index} is not in 0..{len(self.files) - 1}")

    # -- pieces ------------------------------------------------------------------

    def piece_size(self, piece: int) -> int:
        """The bytes in piece ``piece``, pad bytes included (what peers transfer).

        Every piece is :attr:`piece_length` long but the torrent's last. In a v2 or
        hybrid torrent the pad after a file is part of its last piece here; use
        :meth:`data_size` for the v2 view.

        Raises:
            IndexError: there is no such piece.
        """
        return self._geometry.piece_size(piece)

    def data_size(self, piece: int) -> int:
        """The bytes of real file data in piece ``piece`` (pad bytes excluded).

        This is the size the v2 merkle hash of a file's last piece covers.

        Raises:
            IndexError: there is no such piece.
        """
        return self._geometry.piece_size(piece, include_pad=False)

    def spans(self, piece: int, begin: int = 0, length: int | None = None) -> tuple[Span, ...]:
        """The file runs that bytes ``begin .. begin + length`` of piece ``piece`` cover.

        Without ``length``, to the end of the piece. Pad runs are included and
        marked; zero-length files and links never appear.

        Raises:
            IndexError: there is no such piece, or the range is not inside it.
        """
        size = self._geometry.piece_size(piece)
        if length is None:
            length = size - begin
        if begin < 0 or length < 0 or begin + length > size:
            raise IndexError(
                f"bytes {begin}..{begin + length} are not inside piece {piece} of {size} bytes"
            )
        result = []
        position = 0
        end = begin + length
        for part in self._geometry.slices(piece):
            lo = max(begin, position)
            hi = min(end, position + part.length)
            if hi > lo:
                file = self.files[part.file_index]
                result.append(
                    Span(
                        path=file.path,
                        file_index=part.file_index,
                        file_offset=part.offset + lo - position,
                        length=hi - lo,
                        is_pad=file.is_pad,
                    )
                )
            position += part.length
            if position >= end:
                break
        return tuple(result)

    def v2_piece(self, piece: int) -> tuple[int, int] | None:
        """For a v2 or hybrid torrent, the file whose merkle tree covers ``piece``.

        Returns:
            ``(file_index, index_in_file)``: the piece is the file's
            ``index_in_file``-th entry in its piece layer. ``None`` for a v1 torrent.

        Raises:
            IndexError: there is no such piece.
        """
        slices = self._geometry.slices(piece)
        if not self._v2:
            return None
        for part in slices:
            file = self.files[part.file_index]
            if not file.is_pad and file.length:
                return part.file_index, piece - file.offset // self.piece_length
        raise IndexError(f"piece {piece} holds no file data")  # pragma: no cover - v2 invariant


def _replace_name(entry: FileEntry, old: str, new: str) -> FileEntry:
    target = entry.symlink_target
    return replace(
        entry,
        path=_rename_top(entry.path, old, new),
        symlink_target=None if target is None else _rename_top(target, old, new),
    )


# -- moving bytes between pieces and files ----------------------------------------------


def read_span_data(
    fs: FileSystem, layout: StorageLayout, piece: int, begin: int, length: int
) -> bytes:
    """Read ``length`` bytes at ``begin`` of piece ``piece``, across files.

    Pad runs read as zeros without touching the FileSystem.

    Raises:
        IndexError: the range is not inside the piece.
        StorageError: the FileSystem failed, or a file is shorter than the torrent
            says (then ``errno`` is ``None``: the file was truncated or not yet
            written, so the bytes do not exist).
    """
    spans = layout.spans(piece, begin, length)
    if len(spans) == 1:
        return _read_one(fs, spans[0])
    return b"".join(_read_one(fs, span) for span in spans)


def _read_one(fs: FileSystem, span: Span) -> bytes:
    if span.is_pad:
        return bytes(span.length)
    data = fs.read(span.path, span.file_offset, span.length)
    if len(data) != span.length:
        raise StorageError(
            f"{span.path!r} ends before byte {span.file_offset + span.length}",
            errno=None,
            path=span.path,
        )
    return data


def read_piece(fs: FileSystem, layout: StorageLayout, piece: int) -> bytes:
    """The whole of piece ``piece`` (pad bytes as zeros); see :func:`read_span_data`."""
    return read_span_data(fs, layout, piece, 0, layout.piece_size(piece))


def write_span_data(
    fs: FileSystem, layout: StorageLayout, piece: int, begin: int, data: Buffer
) -> None:
    """Write ``data`` at ``begin`` of piece ``piece``, split across its files.

    Bytes that fall on pad files are not written anywhere.

    Raises:
        IndexError: the data does not fit inside the piece.
        StorageError: the FileSystem failed; files before the failing one may
            have been written (the piece must not be considered good).
    """
    view = memoryview(data).cast("B")
    position = 0
    for span in layout.spans(piece, begin, len(view)):
        if not span.is_pad:
            fs.write(span.path, span.file_offset, view[position : position + span.length])
        position += span.length


def create_files(
    fs: FileSystem,
    layout: StorageLayout,
    *,
    allocate: Literal["none", "sparse", "full"] = "none",
) -> None:
    """Create the torrent's files and links in ``fs``.

    Zero-length files are created (so the torrent is complete on disk) where nothing is
    at their path (a directory there is left alone: such a file holds no piece), other
    files too when ``allocate`` asks for it: ``"sparse"`` sets their size,
    ``"full"`` also reserves the space so a full disk shows up now. Files already
    there are extended, never shrunk or rewritten. A FileSystem that can create files
    executable (``create_executable``, as :class:`~bip_disk.NativeFileSystem` can)
    gets the BEP 47 ``x`` files among these created executable first (a file already
    there keeps its mode); a non-empty one that ``allocate`` leaves alone is not
    created here (the DiskManager creates it executable before writing it first). The
    other FileSystems ignore the attribute. Then the valid BEP 47 links are created
    (an existing link is replaced).

    Raises:
        StorageError: the FileSystem failed (``ENOTSUP`` when it cannot store
            links).
        PathError: a link target is not a safe relative path.
    """
    create_stored_files(fs, layout, allocate=allocate)
    for link in layout.symlinks:
        assert link.symlink_target is not None  # symlinks() holds links only
        fs.symlink(link.path, link.symlink_target)


def create_stored_files(
    fs: FileSystem,
    layout: StorageLayout,
    *,
    allocate: Literal["none", "sparse", "full"] = "none",
) -> None:
    """The first half of :func:`create_files`: the files, without the links."""
    create_executable = executable_creator(fs)
    for file in layout.stored_files:
        if file.length and allocate == "none":
            # Created by the first write that touches it (executable then, by the
            # DiskManager), as libtorrent creates it: never, if nothing is written to it.
            continue
        if not file.length and _anything_at(fs, file.path):
            # A zero-length file holds no piece: whatever is at its path (the file, or a
            # directory the user made there) is left alone, as libtorrent creates an
            # empty file only where nothing is.
            continue
        if file.executable and create_executable is not None:
            # The mode is set by the call that creates the file: allocate would create
            # it 0o666.
            create_executable(file.path)
        if file.length == 0:
            fs.allocate(file.path, 0)
        else:
            fs.allocate(file.path, file.length, sparse=allocate == "sparse")


def _anything_at(fs: FileSystem, path: str) -> bool:
    """Whether something is at ``path``: a file, or what cannot be stat'ed as one (a
    directory, a FIFO)."""
    try:
        return fs.stat(path) is not None
    except StorageError as error:
        # Missing on the way (a parent is a file): nothing there, and creating the file
        # says what is wrong.
        return error.errno not in (errno.ENOENT, errno.ENOTDIR)


def executable_creator(fs: FileSystem) -> Callable[[str], object] | None:
    """``fs.create_executable`` (see
    :meth:`NativeFileSystem.create_executable <bip_disk.NativeFileSystem.create_executable>`),
    or None for a FileSystem without that optional capability (it stores no modes)."""
    create = getattr(fs, "create_executable", None)
    return create if callable(create) else None
