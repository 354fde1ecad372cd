"""Shared by the bip tests: puts this folder on ``sys.path`` so that they can import the
helper modules next to them (``from _engine_helpers import ...``), keeps every session
off the real routers (tests talk to 127.0.0.1 and ::1 alone), and fails a test in which a
torrent met an unexpected error (a bug its catch-all turned into ``FAILED``) unless the test
is marked ``torrent_bug``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "torrent_bug: the test makes a torrent meet an unexpected error on purpose (its"
        " 'unexpected error' ERROR record is expected)",
    )


class _UnexpectedErrors(logging.Handler):
    """Keeps the ERROR records of a torrent's catch-all (``Torrent._contained``)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith(": unexpected error"):
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_unexpected_torrent_error(request: pytest.FixtureRequest) -> Iterator[None]:
    """A torrent's catch-all fails that torrent alone, never the session: a bug it meets
    would otherwise pass a test unseen (the test may not look at that torrent's status)."""
    catcher = _UnexpectedErrors()
    logger = logging.getLogger("bip.client")
    logger.addHandler(catcher)
    try:
        yield
    finally:
        logger.removeHandler(catcher)
    if catcher.records and request.node.get_closest_marker("torrent_bug") is None:
        first = catcher.records[0]
        detail = logging.Formatter().formatException(first.exc_info) if first.exc_info else ""
        pytest.fail(f"a torrent met an unexpected error: {first.getMessage()}\n{detail}")


@pytest.fixture(autouse=True)
def no_real_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``natpmp`` on and no gateway configured, a session asks the default route's
    router (IPv4) and the IPv6 default route's next hop: in a test, neither is found. A
    test opts in by patching ``bip._client._port_mapping.default_gateway`` (or
    ``default_gateway6``) itself, with a loopback stand-in."""
    monkeypatch.setattr("bip._client._port_mapping.default_gateway", lambda: None)
    monkeypatch.setattr("bip._client._port_mapping.default_gateway6", lambda: None)
