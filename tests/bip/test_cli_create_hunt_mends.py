"""``bip create`` hunt mends: a folder's name cannot put terminal escapes on stderr, Ctrl-C
never waits for ever, and a name readers would change is one clear error before hashing."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from bip import _cmd_create
from bip._cli import main
from bip_metainfo import CreateCancelled, Metainfo

POSIX = pytest.mark.skipif(os.name != "posix", reason="escape characters in file names")


@POSIX
def test_the_progress_label_escapes_a_folder_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "evil\x1b]0;owned\x07\x1b[2J"
    folder.mkdir()
    (folder / "a").write_bytes(b"a" * 1000)
    out = tmp_path / "x.torrent"
    assert main(["create", str(folder), "-o", str(out), "--name", "evil"]) == 0
    err = capsys.readouterr().err
    assert "hashing evil\\x1b]0;owned\\x07\\x1b[2J" in err
    assert "\x1b" not in err
    assert "\x07" not in err


def test_ctrl_c_stops_waiting_for_a_worker_that_never_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the main thread waited for the worker without a bound (a read stuck for ever
    kept Ctrl-C silent for ever)."""
    release = threading.Event()

    def stuck_create(path: object, *, cancel: threading.Event, **options: object) -> Metainfo:
        signal.raise_signal(signal.SIGINT)
        release.wait(10)  # deaf to cancel, as a thread in a read that never returns
        raise CreateCancelled

    monkeypatch.setattr(_cmd_create, "create_torrent", stuck_create)
    monkeypatch.setattr(_cmd_create, "_STOP_GRACE", 0.2)
    (tmp_path / "f").write_bytes(b"f")
    timer = threading.Timer(3, release.set)  # ends the old code's endless wait
    timer.start()
    try:
        status = main(["create", str(tmp_path / "f"), "-o", str(tmp_path / "x")])
    finally:
        release.set()
        timer.cancel()
    assert status == 130
    err = capsys.readouterr().err
    assert "did not stop within 0.2 s of Ctrl-C" in err
    assert err.endswith("bip: error: interrupted\n")


def test_a_name_readers_would_change_is_one_error_before_hashing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "album"
    folder.mkdir()
    (folder / "con.txt").write_bytes(b"c" * 100)
    assert main(["create", str(folder), "-o", str(tmp_path / "x.torrent")]) == 1
    err = capsys.readouterr().err
    assert "album/con_.txt" in err
    assert "rename it" in err
    assert "hashing" not in err  # the progress bar never started
    assert not (tmp_path / "x.torrent").exists()
