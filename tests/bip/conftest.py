"""Shared by the bip tests: puts this folder on ``sys.path`` so that they can import the
helper modules next to them (``from _engine_helpers import ...``), and keeps every session
off the real routers (tests talk to 127.0.0.1 and ::1 alone)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def no_real_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``natpmp`` on and no gateway configured, a session asks the default route's
    router (IPv4) and the IPv6 default route's next hop: in a test, neither is found. A
    test opts in by patching ``bip._client._port_mapping.default_gateway`` (or
    ``default_gateway6``) itself, with a loopback stand-in."""
    monkeypatch.setattr("bip._client._port_mapping.default_gateway", lambda: None)
    monkeypatch.setattr("bip._client._port_mapping.default_gateway6", lambda: None)
