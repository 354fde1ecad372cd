"""`bip dht --state FILE` reads and writes its state as the session's resume files are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bip._cmd_dht import _read_state, _write_state
from bip._errors import CLIError


def test_a_fifo_or_a_directory_at_the_state_is_refused_at_once(tmp_path: Path) -> None:
    # A FIFO used to be opened and read: the command waited for a writer for ever.
    fifo = tmp_path / "state"
    os.mkfifo(fifo)
    with pytest.raises(CLIError, match="cannot read"):
        _read_state(str(fifo))
    with pytest.raises(CLIError, match="cannot read"):
        _read_state(str(tmp_path))


def test_the_temporaries_a_crash_left_go_at_the_next_save(tmp_path: Path) -> None:
    state = tmp_path / "state"
    left = tmp_path / "state.deadbeef.tmp"
    left.write_bytes(b"half a state")
    os.utime(left, (0, 0))  # a crash long ago
    _write_state(str(state), b"d1:ai1ee")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["state"]
    assert _read_state(str(state)) == b"d1:ai1ee"
