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


# -- Final read ---------------------------------------------------------------------------------
# The fixed NAME.tmp of older versions is bip's only in a folder bip owns (a save directory's
# .bip, as its caller knows), not in any folder named .bip: bip dht --state DIR/.bip/notes
# deleted the user's notes.tmp.


def test_bip_dht_state_in_a_folder_named_bip_keeps_the_users_fixed_tmp(tmp_path: Path) -> None:
    folder = tmp_path / ".bip"
    folder.mkdir()
    mine = folder / "notes.tmp"
    mine.write_bytes(b"the user's draft")
    os.utime(mine, (0, 0))  # as stale as a crash's
    _write_state(str(folder / "notes"), b"d1:ai1ee")
    assert mine.read_bytes() == b"the user's draft"
    assert _read_state(str(folder / "notes")) == b"d1:ai1ee"
