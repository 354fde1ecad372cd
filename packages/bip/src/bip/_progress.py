"""A small progress bar / status line on stderr.

Generic: a label, an amount done out of a total, and extra ``name value`` fields (peers,
upload rate...) that the caller supplies. The bar measures its own rate over a sliding
window and derives the ETA from it, unless told not to.

On a terminal it redraws one line in place, at most ``min_interval`` apart (10 times a
second by default), so a fast loop calling :meth:`ProgressBar.update` costs almost nothing.
When the stream is not a terminal (a log file, CI, a pipe) it prints plain lines instead,
at most one per ``plain_interval``, and always the final one.
"""

from __future__ import annotations

import collections
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TextIO

from ._describe import safe_text
from ._humanize import format_duration, format_rate, format_size

__all__ = ["DEFAULT_MIN_INTERVAL", "DEFAULT_PLAIN_INTERVAL", "ProgressBar", "render_line"]

DEFAULT_MIN_INTERVAL = 0.1
"""Seconds between two redraws on a terminal: about 10 a second, smooth and cheap."""

DEFAULT_PLAIN_INTERVAL = 1.0
"""Seconds between two lines when the stream is not a terminal, so logs stay readable."""

_RATE_WINDOW = 5.0
"""Seconds of history the rate is measured over: long enough to smooth bursts."""

_MAX_SAMPLES = 256
"""Bound on the kept history, however often ``update`` is called."""

_BAR_MIN = 10
"""Narrowest bar worth drawing; below it the line shows the percentage only."""

Fields = Iterable[tuple[str, str]]


def render_line(
    label: str,
    done: int,
    total: int | None,
    fields: Fields = (),
    *,
    width: int = 80,
    bar: bool = True,
    sizes: bool = True,
) -> str:
    """One status line: ``label [#####.....]  42.0%  1.2 MiB/3.0 MiB  rate 1.0 MiB/s ...``.

    Args:
        label: what is progressing (a torrent's name, "hashing").
        done: the amount done.
        total: the amount to do, or ``None`` when unknown (no bar nor percentage then).
        fields: extra ``(name, value)`` pairs appended in order (``("peers", "3")``).
        width: the line is cut to this many characters.
        bar: draw the ``[###...]`` bar (the line budget allowing).
        sizes: ``done`` and ``total`` are bytes (shown as sizes); else plain counts.
    """
    show = format_size if sizes else str
    amount = f"{show(done)}/{show(total)}" if total is not None else show(done)
    tail = [amount] + [f"{name} {value}" if name else value for name, value in fields]
    parts = [label]
    if total is not None:
        fraction = 1.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
        percent = f"{fraction * 100:5.1f}%"
        rest = "  ".join([percent, *tail])
        room = width - len(label) - len(rest) - 6
        if bar and room >= _BAR_MIN:
            cells = min(room, 40)
            filled = int(fraction * cells)
            parts.append("[" + "#" * filled + "." * (cells - filled) + "]")
        parts.append(rest)
    else:
        parts.append("  ".join(tail))
    line = "  ".join(parts)
    return line if len(line) <= width else line[: max(width - 1, 0)] + "~"


class ProgressBar:
    """A status line for one job, redrawn in place on a terminal.

    Use as a context manager (``finish`` on exit) or call :meth:`finish` yourself::

        with ProgressBar("hashing", total=size) as bar:
            for chunk in chunks:
                bar.update(bar.done + len(chunk))
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        is_tty: bool | None = None,
        rate: bool = True,
        sizes: bool = True,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        plain_interval: float = DEFAULT_PLAIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        """Args:
        label: what is progressing (a torrent's name: control characters are shown
            escaped, as in a label set later through ``label``).
        total: the amount to do (``None``: unknown, e.g. a magnet before its metadata).
        stream: where to draw (default ``sys.stderr``, read at each draw so tests that
            swap it see the output).
        is_tty: force terminal (``True``) or plain-line (``False``) output; default: ask
            the stream.
        rate: add the measured ``rate`` and ``eta`` fields (turn off when the caller
            supplies its own, e.g. download and upload rates of a torrent).
        sizes: ``done``/``total`` are bytes (else counts: pieces, files).
        min_interval: seconds between redraws on a terminal.
        plain_interval: seconds between lines when not on a terminal.
        clock: monotonic seconds (a fake one in tests).
        width: line width (default: the terminal's, read at each draw).
        """
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream
        self._is_tty = is_tty
        self._rate = rate
        self._sizes = sizes
        self._min_interval = min_interval
        self._plain_interval = plain_interval
        self._clock = clock
        self._width = width
        self._fields: list[tuple[str, str]] = []
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=_MAX_SAMPLES)
        self._last_draw: float | None = None
        self._drawn_length = 0
        self._finished = False
        self._started = clock()
        self._samples.append((self._started, 0))

    # -- feeding ------------------------------------------------------------------------

    def update(self, done: int, *, total: int | None = None, fields: Fields | None = None) -> None:
        """Record progress and redraw if the last draw is old enough.

        Args:
            done: the amount done so far (absolute, not an increment).
            total: a new total (a magnet's size once its metadata is known).
            fields: replace the extra fields (kept from the last call when ``None``).
        """
        now = self._clock()
        self.done = done
        if total is not None:
            self.total = total
        if fields is not None:
            self._fields = list(fields)
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > _RATE_WINDOW:
            self._samples.popleft()
        interval = self._min_interval if self._tty() else self._plain_interval
        if self._last_draw is None or now - self._last_draw >= interval:
            self._draw(now)

    def rate(self) -> float:
        """The measured rate, in units of ``done`` per second, over the last few seconds."""
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        elapsed = t1 - t0
        return (d1 - d0) / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the measured rate; ``None`` when unknown (no total, no rate)."""
        if self.total is None:
            return None
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.rate()
        return left / rate if rate > 0 else None

    def elapsed(self) -> float:
        """Seconds since the bar was made."""
        return self._clock() - self._started

    def finish(self, *, fields: Fields | None = None) -> None:
        """Draw the final state and end the line. Idempotent."""
        if self._finished:
            return
        if fields is not None:
            self._fields = list(fields)
        self._draw(self._clock(), final=True)
        self._out().write("\n" if self._tty() else "")
        self._out().flush()
        self._finished = True

    def clear(self) -> None:
        """Erase the bar's line (on a terminal) so other output can be printed cleanly."""
        if self._tty() and self._drawn_length:
            self._out().write("\r" + " " * self._drawn_length + "\r")
            self._out().flush()
            self._drawn_length = 0

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On an error the line is ended (not redrawn) so the error message starts clean.
        if exc_type is None:
            self.finish()
        elif not self._finished:
            if self._tty() and self._drawn_length:
                self._out().write("\n")
                self._out().flush()
            self._finished = True

    # -- drawing ------------------------------------------------------------------------

    def _out(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _tty(self) -> bool:
        if self._is_tty is not None:
            return self._is_tty
        isatty = getattr(self._out(), "isatty", None)
        try:
            return bool(isatty()) if isatty is not None else False
        except ValueError:  # a closed stream
            return False

    def _line(self, final: bool) -> str:
        fields: list[tuple[str, str]] = []
        if self._rate:
            if final:
                elapsed = self._clock() - self._started
                average = self.done / elapsed if elapsed > 0 else 0.0
                fields.append(("avg", self._format_rate(average)))
                fields.append(("in", format_duration(elapsed)))
            else:
                fields.append(("rate", self._format_rate(self.rate())))
                fields.append(("eta", format_duration(self.eta())))
        fields.extend(self._fields)
        width = self._width
        if width is None:
            width = shutil.get_terminal_size((100, 24)).columns - 1 if self._tty() else 200
        return render_line(
            # Escaped when drawn, so that a label changed since (a magnet's dn, then the
            # torrent's name) is escaped too: a name cannot drive the terminal.
            safe_text(self.label),
            self.done,
            self.total,
            fields,
            width=width,
            bar=self._tty(),
            sizes=self._sizes,
        )

    def _format_rate(self, rate: float) -> str:
        return format_rate(rate) if self._sizes else f"{rate:.1f}/s"

    def _draw(self, now: float, final: bool = False) -> None:
        self._last_draw = now
        line = self._line(final)
        out = self._out()
        if self._tty():
            pad = " " * max(self._drawn_length - len(line), 0)
            out.write("\r" + line + pad)
            self._drawn_length = len(line)
        else:
            out.write(line + "\n")
        out.flush()
