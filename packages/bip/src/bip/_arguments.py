"""argparse pieces more than one ``bip`` command uses: number types, shared arguments, and
the usage answer of a command group called without its action."""

from __future__ import annotations

import argparse
import gzip
import logging
import math
import os
import re
import sys
import zlib
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Final, TypeVar

from bip_handshake import (
    IPFilter,
    IPFilterError,
    ProxyConfig,
    parse_ip_filter,
    parse_proxy_url,
)

from ._errors import CLIError

__all__ = [
    "DEFAULT_FOLLOW_INTERVAL",
    "MAX_IP_FILTER_FILE",
    "MIN_FOLLOW_INTERVAL",
    "PROXY_ENVIRONMENT",
    "add_command_group",
    "add_follow_interval_option",
    "add_ip_filter_options",
    "add_seed_limit_options",
    "add_serve_loop_options",
    "add_super_seed_option",
    "add_timeout",
    "add_torrent_and_directory",
    "duration",
    "follow_interval",
    "ipv4_endpoint_or_off",
    "load_ip_filter",
    "positive",
    "print_usage",
    "proxy_settings",
    "proxy_url",
]

N = TypeVar("N", int, float)

MAX_IP_FILTER_FILE: Final = 256 * 1024 * 1024
"""Bytes an ``--ip-filter`` file may hold (after gunzip): the largest public blocklists are
a few tens of MB, and the parser's own bound (two million ranges) is reached well before."""
DEFAULT_FOLLOW_INTERVAL: Final = 30 * 60.0
"""Seconds between two lookups of a BEP 46 link's key by ``bip download`` (``--follow-interval``):
a publisher's versions come hours or days apart, and each lookup asks several DHT nodes."""
MIN_FOLLOW_INTERVAL: Final = 10.0
"""The shortest ``--follow-interval`` taken: a few seconds, not to flood the DHT with lookups."""
_GZIP_MAGIC: Final = b"\x1f\x8b"
_DURATION_UNITS: Final = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# Parts largest unit first, each at most once ("1h30m", "90", "2.5h"); a bare number is
# seconds. Anchored by fullmatch: nothing else may follow.
_DURATION_RE: Final = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?",
    re.ASCII,  # digits only from 0 to 9: int/float would read other scripts' digits too
)
_MAX_DURATION: Final = 100 * 365 * 86400.0  # seconds; beyond, a typo (and trio's clock)

logger = logging.getLogger("bip")


def positive(kind: type[N]) -> Callable[[str], N]:
    """An argparse ``type=`` that reads a ``kind`` number above 0 (finite, for a float)."""

    def check(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        # `not value > 0` also refuses a float NaN, which compares false with everything.
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
        return value

    return check


def duration(text: str) -> float:
    """An argparse ``type=`` reading a positive duration in seconds: ``90`` (seconds),
    ``30s``, ``30m``, ``2h``, ``1d``, or parts together from the largest unit (``1h30m``,
    ``2.5h``).

    Raises:
        argparse.ArgumentTypeError: anything else (``30 min``, ``-1``, ``0``, ``1m2h``).
    """
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (seconds, or e.g. 90s, 30m, 2h, 1h30m, 1d)"
        )
    seconds = sum(
        float(part) * _DURATION_UNITS[unit]
        for unit, part in match.groupdict().items()
        if part is not None
    )
    if not 0 < seconds <= _MAX_DURATION:
        raise argparse.ArgumentTypeError(
            f"a duration must be above 0 and at most 100 years, not {text!r}"
        )
    return seconds


def follow_interval(text: str) -> float:
    """An argparse ``type=`` reading ``--follow-interval``: a :func:`duration` of at least
    :data:`MIN_FOLLOW_INTERVAL` seconds, or ``off`` (any case) or any zero duration (``0``,
    ``0s``, ``0.0``, ``0m``) as ``0.0``: not followed.

    >>> follow_interval("30m"), follow_interval("off"), follow_interval("0s")
    (1800.0, 0.0, 0.0)

    Raises:
        argparse.ArgumentTypeError: not a duration, or a shorter one than the minimum.
    """
    if text.strip().lower() == "off" or _is_zero_duration(text):
        return 0.0
    seconds = duration(text)
    if seconds < MIN_FOLLOW_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"at least {MIN_FOLLOW_INTERVAL:g} seconds (or 0/off), not {text!r}: each look"
            " asks several DHT nodes"
        )
    return seconds


def _is_zero_duration(text: str) -> bool:
    """Whether ``text`` is a duration of :func:`duration`'s form that adds up to zero."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if match is None:
        return False
    parts = [part for part in match.groups() if part is not None]
    return bool(parts) and all(float(part) == 0 for part in parts)


def add_follow_interval_option(parser: argparse.ArgumentParser) -> None:
    """``--follow-interval DURATION``: how often ``bip download`` looks a BEP 46 link's key
    up again for the publisher's newer versions (:func:`follow_interval`; ``None`` when not
    given: :data:`DEFAULT_FOLLOW_INTERVAL` then, for a BEP 46 link only)."""
    parser.add_argument(
        "--follow-interval",
        type=follow_interval,
        default=None,
        metavar="DURATION",
        help="for a BEP 46 link (magnet:?xs=urn:btpk:KEY): look the key up in the DHT again"
        " this often while the command runs (default 30m; at least"
        f" {MIN_FOLLOW_INTERVAL:g}s; 0 or off: never). A newer version the publisher put"
        " there replaces the running one once its metadata is known (at most 10m, or this"
        " interval if shorter): the running one is removed, its data kept, and the new one"
        " checks the files in DIR (those it shares with the old are not fetched again) and"
        " downloads the rest; the status line and seeding limits follow it. A new version"
        " that fails gives way to the old one again. Other sources are not followed",
    )


def ipv4_endpoint_or_off(text: str) -> str | None:
    """An argparse ``type=`` reading an IPv4 ``ADDRESS:PORT`` (port 1..65535) as
    ``"A.B.C.D:PORT"``, or ``off`` (any case) as None: a listening address that may be turned
    off, such as ``--natpmp-announce-address``.

    >>> ipv4_endpoint_or_off("224.0.0.1:5350"), ipv4_endpoint_or_off("off")
    ('224.0.0.1:5350', None)

    Raises:
        argparse.ArgumentTypeError: anything else (a host name, IPv6, no port, port 0).
    """
    text = text.strip()
    if text.lower() == "off":
        return None
    host, colon, port_text = text.rpartition(":")
    try:
        address = IPv4Address(host)
    except ValueError:
        address = None
    # ASCII digits only, five at most: int() would read other scripts' digits, and "0099999".
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    port = int(port_text) if digits else 0
    if not colon or address is None or not 0 < port <= 0xFFFF:
        raise argparse.ArgumentTypeError(
            f"expected an IPv4 ADDRESS:PORT (224.0.0.1:5350, a port in 1..65535) or 'off',"
            f" not {text!r}"
        )
    return f"{address}:{port}"


def add_seed_limit_options(parser: argparse.ArgumentParser, *, implies_seed: bool) -> None:
    """``--seed-ratio R`` and ``--seed-time DURATION``: when seeding stops by itself
    (``implies_seed``: the command only seeds with ``--seed``, and either option says it)."""
    implies = " (implies --seed)" if implies_seed else ""
    parser.add_argument(
        "--seed-ratio",
        type=positive(float),
        metavar="RATIO",
        help="stop seeding (exit 0) once the bytes uploaded in this run reach RATIO times the"
        " size of the torrent's data (the selected files' when downloading; 1.0: one full"
        " copy), as aria2 counts it, so that a seed that downloaded nothing has a ratio too;"
        " uploads while downloading count" + implies,
    )
    parser.add_argument(
        "--seed-time",
        type=duration,
        metavar="DURATION",
        help="stop seeding (exit 0) after seeding this long: seconds, or 90s, 30m, 2h, 1h30m,"
        " 1d; with --seed-ratio, whichever comes first" + implies,
    )


def add_super_seed_option(parser: argparse.ArgumentParser) -> None:
    """``--super-seed``: reveal pieces as BEP 16 says (``TorrentOptions.super_seeding``)."""
    parser.add_argument(
        "--super-seed",
        action="store_true",
        help="super-seed (BEP 16), for an initial seeder: tell each peer one rare piece at a"
        " time, the next once it announced that one, and refuse its requests for the others,"
        " so that the upload goes to pieces the swarm passes on rather than to peers that"
        " only take (libtorrent's super_seeding)",
    )


def add_command_group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``bip NAME``, a command made of actions (``bip NAME ACTION ...``), and return the
    place to add the actions to; ``bip NAME`` alone prints its help (:func:`print_usage`)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    actions = parser.add_subparsers(title=f"{name} commands", metavar="ACTION")
    parser.set_defaults(func=lambda args: print_usage(parser))
    return actions


def add_serve_loop_options(parser: argparse.ArgumentParser, *, stats_interval: float) -> None:
    """``--stats-interval`` and ``--duration``, what a ``serve`` action hands to
    :func:`bip._serve_loop.print_statistics_until_stopped`."""
    parser.add_argument(
        "--stats-interval",
        type=positive(float),
        default=stats_interval,
        metavar="SECONDS",
        help=f"seconds between statistics lines (default {stats_interval:g})",
    )
    parser.add_argument(
        "--duration",
        type=positive(float),
        metavar="SECONDS",
        help="stop after this long (default: run until Ctrl-C)",
    )


def add_timeout(parser: argparse.ArgumentParser, *, default: float) -> None:
    """``--timeout SECONDS``: how long a one-shot question may take in all."""
    parser.add_argument(
        "--timeout",
        type=positive(float),
        default=default,
        metavar="SECONDS",
        help=f"give up after this long (default {default:g})",
    )


def add_torrent_and_directory(parser: argparse.ArgumentParser) -> None:
    """The ``TORRENT [DIR]`` arguments of the commands that work on data already on disk."""
    parser.add_argument("torrent", metavar="TORRENT", help="the .torrent file")
    parser.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        default=".",
        help="the directory the torrent's files are in (default: here)",
    )


def print_usage(parser: argparse.ArgumentParser) -> int:
    """Print ``parser``'s help on stderr and return the usage exit status (2): what a command
    group such as ``bip dht`` does when no action is given."""
    parser.print_help(sys.stderr)
    return 2


PROXY_ENVIRONMENT: Final = "BIP_PROXY"
"""The environment variable ``--proxy`` falls back to: a password in it stays out of ``ps``."""


def proxy_url(args: argparse.Namespace) -> str | None:
    """The proxy URL the command was given: ``--proxy``, else :data:`PROXY_ENVIRONMENT`
    (empty or unset: no proxy), checked.

    Raises:
        CLIError: not a SOCKS5 URL; the message names where it came from and never shows the
            password.
    """
    url: str | None = getattr(args, "proxy", None)
    where = "--proxy"
    if url is None:
        url = os.environ.get(PROXY_ENVIRONMENT) or None
        where = PROXY_ENVIRONMENT
    if url is not None:
        try:
            parse_proxy_url(url)
        except ValueError as error:  # its message never shows the password
            raise CLIError(f"{where}: {error}") from None
    return url


def proxy_settings(args: argparse.Namespace) -> ProxyConfig | None:
    """:func:`proxy_url`, parsed (None: no proxy).

    Raises:
        CLIError: as :func:`proxy_url`.
    """
    url = proxy_url(args)
    return None if url is None else parse_proxy_url(url)


def add_ip_filter_options(parser: argparse.ArgumentParser) -> None:
    """``--ip-filter FILE`` (repeatable) and ``--ip-filter-strict``: peers never to talk to."""
    parser.add_argument(
        "--ip-filter",
        action="append",
        default=[],
        metavar="FILE",
        help="a blocklist: peers in it are never dialled and are refused when they connect,"
        " and DHT nodes in it are never queried (trackers and web seeds are not filtered)."
        " P2P/PeerGuardian (name:first-last),"
        " eMule ipfilter.dat (first - last , level , name; level <= 127 blocks), or one CIDR"
        " block, range or address per line, detected per line; gzipped files are read too."
        " Repeat for more lists. Malformed lines are skipped with a warning counting them",
    )
    parser.add_argument(
        "--ip-filter-strict",
        action="store_true",
        help="refuse an --ip-filter file with any malformed line (default: skip such lines)",
    )


def _read_blocklist(path: Path) -> str:
    """A blocklist file's text (gunzipped if gzipped), at most :data:`MAX_IP_FILTER_FILE`
    bytes. Names in lists come in every encoding: undecodable bytes are replaced, since
    only the addresses matter.

    Raises:
        CLIError: the file cannot be read, is too large, or is a broken gzip file.
    """
    try:
        with path.open("rb") as file:
            gzipped = file.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
            file.seek(0)
            source = gzip.GzipFile(fileobj=file) if gzipped else file
            data = source.read(MAX_IP_FILTER_FILE + 1)
    except (OSError, EOFError, zlib.error) as error:
        # gzip's errors are OSError (BadGzipFile), EOFError or zlib.error.
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise CLIError(f"--ip-filter {path}: cannot read: {reason}") from None
    if len(data) > MAX_IP_FILTER_FILE:
        raise CLIError(f"--ip-filter {path}: larger than {MAX_IP_FILTER_FILE} bytes")
    return data.decode("utf-8", errors="replace")


def load_ip_filter(paths: Sequence[str], *, strict: bool) -> IPFilter | None:
    """The filter blocking what every file in ``paths`` blocks (``None`` without files).

    Lenient unless ``strict``: each file's malformed lines are skipped, with one warning
    saying how many and showing the first.

    Raises:
        CLIError: a file cannot be read or is too large, holds too many ranges, or (strict)
            has a malformed line; the message names the file and the line.
    """
    if not paths:
        return None
    combined: IPFilter | None = None
    for name in paths:
        path = Path(name)
        text = _read_blocklist(path)
        try:
            parsed = parse_ip_filter(text, strict=strict)
        except IPFilterError as error:
            raise CLIError(f"--ip-filter {path}: {error}") from None
        if parsed.skipped:
            logger.warning(
                "--ip-filter %s: skipped %d malformed line(s), the first at %s"
                " (--ip-filter-strict refuses such a file)",
                path,
                parsed.skipped,
                parsed.first_error,
            )
        if parsed.rules == 0:
            logger.warning("--ip-filter %s: no range in the file: it blocks nothing", path)
        logger.info("--ip-filter %s: %d range(s) read", path, parsed.rules)
        combined = parsed.filter if combined is None else combined | parsed.filter
    return combined
