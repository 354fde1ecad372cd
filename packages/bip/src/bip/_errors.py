"""The one exception commands raise on purpose, and the mapping of every failure to a line.

A command that meets bad input raises :class:`CLIError` (or lets a library's own error
through); :func:`describe` turns any of them into the text after ``bip: error:`` and
:func:`exit_code_for` into the process exit status. Anything else is a bug in bip and keeps
its traceback.
"""

from __future__ import annotations

import errno
import os

from bip_bencode import BencodeError
from bip_dht import DHTError
from bip_disk import DiskError
from bip_handshake import CompactError, HandshakeError, PeerIdError
from bip_metainfo import (
    CreateCancelled,
    CreateError,
    HashRequestError,
    InfoHashError,
    MagnetError,
    MetainfoBaseError,
    MetainfoError,
)
from bip_peer import PeerError
from bip_select import SelectError
from bip_utracker import TrackerError

from ._describe import safe_text

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "EXPECTED_ERRORS",
    "CLIError",
    "describe",
    "exit_code_for",
    "find_expected",
]

EXIT_FAILURE = 1
"""The exit status of a command that failed (bad input, unreachable peer, bad data...)."""

EXIT_USAGE = 2
"""The exit status of a command line argparse rejected (argparse's own convention)."""

EXIT_INTERRUPTED = 130
"""The exit status after Ctrl-C: 128 + SIGINT, what shells report for a killed job."""


class CLIError(Exception):
    """A command cannot go on, for a reason the user can act on.

    ``main`` prints ``bip: error: <message>`` on stderr and exits with ``exit_code``,
    without a traceback (unless ``--debug``).

    Attributes:
        message: one line saying what is wrong (and, where it helps, what to do).
        exit_code: the process exit status, non-zero.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        if exit_code == 0:
            raise ValueError("a CLIError's exit_code must be non-zero")
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CLIError,
    BencodeError,
    MetainfoBaseError,
    CreateCancelled,
    DiskError,
    HandshakeError,
    CompactError,
    PeerIdError,
    PeerError,
    SelectError,
    DHTError,
    TrackerError,
    OSError,
    KeyboardInterrupt,
)
"""Failures that get a one-line message: ours, every library's base error, the OS's and
Ctrl-C. Anything else is a bug and keeps its traceback."""


def find_expected(exc: BaseException) -> BaseException | None:
    """The failure to report for ``exc``, looking inside exception groups.

    trio wraps errors from a nursery in ``ExceptionGroup``; the user cares about the error
    inside. A group answers with its first expected leaf, Ctrl-C first (an interrupted run
    often also carries the ``Cancelled`` fallout of the interruption). Returns ``None`` when
    ``exc`` is (or holds) nothing expected, i.e. a bug.
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(exc))
        for leaf in leaves:
            if isinstance(leaf, KeyboardInterrupt):
                return leaf
        for leaf in leaves:
            if isinstance(leaf, EXPECTED_ERRORS):
                return leaf
        return None
    if isinstance(exc, EXPECTED_ERRORS):
        return exc
    return None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every non-group exception in ``group``, depth first."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def exit_code_for(exc: BaseException) -> int:
    """The process exit status for an expected failure ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, CLIError):
        return exc.exit_code
    return EXIT_FAILURE


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, for ``bip: error: <line>``.

    Its text is often someone else's (a torrent's or a magnet's name, a tracker's or a peer's
    words, a file name): control characters are escaped, as ``bip show`` escapes them. A
    message that escaped its text already (a ``repr``) holds no control character: it comes
    out unchanged, not escaped twice.
    """
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, CLIError):
        text = exc.message
    elif isinstance(exc, OSError):
        text = _describe_os_error(exc)
    else:
        text = str(exc) or type(exc).__name__
        # The library's class name says which layer failed ("bad torrent" vs "tracker").
        text = f"{_LABELS.get(_base_of(exc), type(exc).__name__)}: {text}"
    # One line, whatever a library put in its message: its line breaks become spaces, and
    # what is left that could move the cursor or recolour the terminal is shown escaped.
    return safe_text(" ".join(text.split()))


def _describe_os_error(exc: OSError) -> str:
    """``OSError`` as the OS words it, with the file it is about."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or str(exc)
    if exc.errno == errno.EADDRINUSE:
        reason = f"{reason} (is another program using that port?)"
    if exc.filename is not None:
        target = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            target = f"{target} -> {os.fsdecode(exc.filename2)}"
        return f"{target}: {reason}"
    return reason


_LABELS: dict[type[BaseException], str] = {
    BencodeError: "bad bencoded data",
    MetainfoError: "bad torrent",
    MagnetError: "bad magnet link",
    InfoHashError: "bad info-hash",
    CreateError: "cannot create the torrent",
    HashRequestError: "bad hash request",
    MetainfoBaseError: "bad input",  # after its subclasses: the first class that matches names it
    CreateCancelled: "creation cancelled",
    DiskError: "storage",
    # Before HandshakeError, which they derive from: the first class that matches names it.
    CompactError: "bad compact address",
    PeerIdError: "bad peer id",
    HandshakeError: "handshake",
    PeerError: "peer",
    SelectError: "piece selection",
    DHTError: "DHT",
    TrackerError: "tracker",
}


def _base_of(exc: BaseException) -> type[BaseException]:
    """The library base class ``exc`` belongs to (its own class when none matches)."""
    for base in _LABELS:
        if isinstance(exc, base):
            return base
    return type(exc)
