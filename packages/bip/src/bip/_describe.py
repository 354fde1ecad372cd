"""Torrents and magnet links described for people (text) and programs (JSON).

Everything shown comes from an untrusted file, so text output escapes control characters:
a comment cannot move the cursor, recolour the terminal or fake extra lines.
"""

from __future__ import annotations

import datetime
import json
import re
import unicodedata
from typing import Any

from bip_metainfo import FileEntry, Info, InfoHash, MagnetLink, Metainfo

from ._humanize import format_size

__all__ = [
    "files_tree",
    "json_text",
    "magnet_json",
    "magnet_text",
    "safe_text",
    "torrent_json",
    "torrent_text",
    "torrent_version",
]


def torrent_version(info: Info) -> str:
    """``"v1"``, ``"v2"`` or ``"hybrid"``."""
    if info.is_hybrid:
        return "hybrid"
    return "v2" if info.is_v2 else "v1"


def safe_text(text: str) -> str:
    """``text`` with control and format characters escaped (``\\n``, ``\\x1b``, ``\\u202e``)."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append(char)
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(repr(char)[1:-1] if char not in "\"'" else char)
        else:
            out.append(char)
    return "".join(out)


# What JSON leaves raw but for printable ASCII and the line breaks of its indentation (it
# escapes U+0000-U+001F in strings itself, and ensure_ascii=False keeps the rest as is).
_JSON_RAW = re.compile("[^\n\x20-\x7e]+")
# Escaped in JSON output: what a terminal acts on or a viewer hides (C1 controls and DEL,
# bidirectional overrides and other format characters, line and paragraph separators), and
# lone surrogates, which no output encoding holds.
_JSON_ESCAPED = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))


def json_text(value: object) -> str:
    r"""``value`` as the indented JSON every ``--json`` prints: names in any script as they
    are, but control and format characters escaped as ``\u0085`` (valid JSON, shown inert
    by a terminal). ``json.dumps`` escapes only U+0000-U+001F, so a C1 control, DEL or a
    bidirectional override in a torrent's name would reach the terminal raw.

    >>> print(json_text({"name": "caf\u00e9\u202e\x7f"}))
    {
      "name": "café\u202e\u007f"
    }
    """
    return _JSON_RAW.sub(_escape_json_run, json.dumps(value, indent=2, ensure_ascii=False))


def _escape_json_run(match: re.Match[str]) -> str:
    run = match.group()
    if run.isprintable():  # text in other scripts: one check for the run
        return run
    return "".join(_escape_json_char(char) for char in run)


def _escape_json_char(char: str) -> str:
    if unicodedata.category(char) not in _JSON_ESCAPED:
        return char
    code = ord(char)
    if code > 0xFFFF:  # \u takes four hex digits: a pair of surrogates, as JSON writes it
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _date(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    try:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None  # a date no calendar holds: shown as the raw number only
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _hashes_json(info_hash: InfoHash) -> dict[str, str | None]:
    return {
        "v1": None if info_hash.v1 is None else info_hash.v1.hex(),
        "v2": None if info_hash.v2 is None else info_hash.v2.hex(),
    }


def _file_json(index: int, entry: FileEntry, info: Info) -> dict[str, Any]:
    pieces = info.geometry.file_pieces(index)
    return {
        "index": index,
        "path": "/".join(entry.path),
        "length": entry.length,
        "offset": entry.offset,
        "first_piece": pieces.start if pieces else None,
        "last_piece": pieces.stop - 1 if pieces else None,
        "attributes": entry.attributes,
        "pad": entry.is_pad,
        "executable": entry.is_executable,
        "hidden": entry.is_hidden,
        "symlink_target": None if entry.symlink_target is None else "/".join(entry.symlink_target),
        "pieces_root": None if entry.pieces_root is None else entry.pieces_root.hex(),
        "sha1": None if entry.sha1 is None else entry.sha1.hex(),
        "md5sum": entry.md5sum,
        "mtime": entry.mtime,
    }


def torrent_json(torrent: Metainfo) -> dict[str, Any]:
    """Everything in a torrent as JSON-ready values (hashes in hex, sizes in bytes)."""
    info = torrent.info
    return {
        "type": "torrent",
        "name": info.name,
        "info_hash": _hashes_json(info.info_hash),
        "version": torrent_version(info),
        "total_size": info.total_size,
        "piece_length": info.piece_length,
        "num_pieces": info.num_pieces,
        "num_files": sum(1 for entry in info.files if not entry.is_pad),
        "private": info.private,
        "source": info.source,
        "comment": torrent.comment,
        "created_by": torrent.created_by,
        "creation_date": torrent.creation_date,
        "creation_date_utc": _date(torrent.creation_date),
        "encoding": torrent.encoding,
        "trackers": [list(tier) for tier in torrent.trackers],
        "web_seeds": list(torrent.url_list),
        "http_seeds": list(torrent.httpseeds),
        "dht_nodes": [[host, port] for host, port in torrent.nodes],
        "similar": [value.hex() for value in (*info.similar, *torrent.similar)],
        "collections": list(dict.fromkeys((*info.collections, *torrent.collections))),
        "piece_layers": len(torrent.piece_layers),
        "files": [_file_json(i, entry, info) for i, entry in enumerate(info.files)],
        "magnet": str(torrent.magnet()),
    }


def magnet_json(link: MagnetLink) -> dict[str, Any]:
    """Everything in a magnet link as JSON-ready values."""
    return {
        "type": "magnet",
        "name": link.display_name,
        "info_hash": _hashes_json(link.info_hash),
        "exact_length": link.exact_length,
        "trackers": list(link.trackers),
        "web_seeds": list(link.web_seeds),
        "acceptable_sources": list(link.acceptable_sources),
        "exact_sources": list(link.exact_sources),
        "keywords": list(link.keywords),
        "peers": [f"{_endpoint(host, port)}" for host, port in link.peers],
        "dht_nodes": [f"{_endpoint(host, port)}" for host, port in link.dht_nodes],
        "select_only": None
        if link.select_only is None
        else [list(bounds) for bounds in link.select_only],
        "extra": [list(pair) for pair in link.extra],
        "magnet": str(link),
    }


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _row(lines: list[str], label: str, value: object) -> None:
    lines.append(f"{label + ':':<14}{safe_text(str(value))}")


def _hash_rows(lines: list[str], info_hash: InfoHash) -> None:
    if info_hash.v1 is not None:
        _row(lines, "info-hash v1", info_hash.v1.hex())
    if info_hash.v2 is not None:
        _row(lines, "info-hash v2", info_hash.v2.hex())


def torrent_text(torrent: Metainfo, *, show_pad: bool = False) -> str:
    """A torrent, readable: identity, sizes, metadata, trackers, then the file tree."""
    info = torrent.info
    lines: list[str] = []
    _row(lines, "name", info.name)
    _hash_rows(lines, info.info_hash)
    _row(lines, "version", torrent_version(info))
    files = [entry for entry in info.files if not entry.is_pad]
    _row(
        lines,
        "size",
        f"{format_size(info.total_size)} ({info.total_size:,} bytes) in {len(files)}"
        f" file{'s' if len(files) != 1 else ''}",
    )
    _row(lines, "pieces", f"{info.num_pieces:,} of {format_size(info.piece_length)}")
    _row(lines, "private", "yes" if info.private else "no")
    if info.source is not None:
        _row(lines, "source", info.source)
    if torrent.created_by is not None:
        _row(lines, "created by", torrent.created_by)
    if torrent.creation_date is not None:
        _row(lines, "created on", _date(torrent.creation_date) or torrent.creation_date)
    if torrent.comment is not None:
        _row(lines, "comment", torrent.comment)
    if torrent.trackers:
        lines.append("trackers:")
        for number, tier in enumerate(torrent.trackers, 1):
            for url in tier:
                lines.append(f"  tier {number}: {safe_text(url)}")
    if torrent.url_list:
        lines.append("web seeds:")
        lines.extend(f"  {safe_text(url)}" for url in torrent.url_list)
    if torrent.httpseeds:
        lines.append("http seeds:")
        lines.extend(f"  {safe_text(url)}" for url in torrent.httpseeds)
    if torrent.nodes:
        lines.append("DHT nodes:")
        lines.extend(f"  {safe_text(_endpoint(host, port))}" for host, port in torrent.nodes)
    similar = [value.hex() for value in (*info.similar, *torrent.similar)]
    if similar:
        lines.append("similar (BEP 38):")
        lines.extend(f"  {value}" for value in similar)
    collections = list(dict.fromkeys((*info.collections, *torrent.collections)))
    if collections:
        lines.append("collections (BEP 38):")
        lines.extend(f"  {safe_text(name)}" for name in collections)
    _row(lines, "magnet", torrent.magnet())
    lines.append(f"files ({len(files)}; by index, as 'bip download --files' takes them):")
    lines.extend(files_tree(info.files, show_pad=show_pad))
    return "\n".join(lines)


def files_tree(files: tuple[FileEntry, ...], *, show_pad: bool = False) -> list[str]:
    """The files as an indented tree: each file's index first (what ``bip download
    --files`` and BEP 53 ``so`` take: pad files count), sizes in a column, directories
    ending in ``/``.

    Files keep the torrent's order (which is the v2 tree order for created torrents); a
    directory is printed where its first file appears.
    """
    rows: list[tuple[str, str, str]] = []
    opened: tuple[str, ...] = ()
    for index, entry in enumerate(files):
        if entry.is_pad and not show_pad:
            continue
        parents = entry.path[:-1]
        common = 0
        while common < min(len(parents), len(opened)) and parents[common] == opened[common]:
            common += 1
        for depth in range(common, len(parents)):
            rows.append(("", "  " * depth + safe_text(parents[depth]) + "/", ""))
        opened = parents
        name = "  " * len(parents) + safe_text(entry.path[-1])
        if entry.is_symlink:
            target = "/".join(entry.symlink_target or ())
            rows.append((str(index), f"{name} -> {safe_text(target)}", "link"))
            continue
        flags = "".join(flag for flag in "xhp" if flag in entry.attributes)
        size = format_size(entry.length) + (f"  [{flags}]" if flags else "")
        rows.append((str(index), name, size))
    numbers = max((len(number) for number, _, _ in rows), default=0)
    width = max((len(text) for _, text, _ in rows), default=0)
    return [
        f"  {number:>{numbers}}  {text:<{width}}  {size}".rstrip() for number, text, size in rows
    ]


def magnet_text(link: MagnetLink) -> str:
    """A magnet link, readable: what it names and where it says to look."""
    lines: list[str] = []
    _row(lines, "name", link.display_name if link.display_name is not None else "(none)")
    _hash_rows(lines, link.info_hash)
    if link.exact_length is not None:
        _row(lines, "size", f"{format_size(link.exact_length)} ({link.exact_length:,} bytes)")
    sections = (
        ("trackers", link.trackers),
        ("web seeds", link.web_seeds),
        ("acceptable sources", link.acceptable_sources),
        ("exact sources", link.exact_sources),
        ("keywords", link.keywords),
        ("peers", tuple(_endpoint(h, p) for h, p in link.peers)),
        ("DHT nodes", tuple(_endpoint(h, p) for h, p in link.dht_nodes)),
    )
    for title, values in sections:
        if values:
            lines.append(f"{title}:")
            lines.extend(f"  {safe_text(value)}" for value in values)
    if link.select_only is not None:
        ranges = ", ".join(
            str(first) if first == last else f"{first}-{last}" for first, last in link.select_only
        )
        # An empty ``so`` (or one whose every entry was unusable) selects no file at all.
        _row(lines, "files", f"only {ranges} (BEP 53)" if ranges else "none (BEP 53)")
    for name, value in link.extra:
        _row(lines, safe_text(name), value)  # a parameter's name is the link's text too
    lines.append("(a magnet link: the file list comes with the metadata, from peers)")
    return "\n".join(lines)
