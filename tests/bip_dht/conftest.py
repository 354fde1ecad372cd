"""Shared by the bip_dht tests: puts this folder on ``sys.path`` so that they can import the
helper modules next to them (``from _hostile import ...``)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
