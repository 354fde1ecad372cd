"""``bip create -t``: a udp://, http:// or https:// announce URL is refused as ``bip download``
and ``bip seed`` refuse it (the announcing client's parser, the same message); WebTorrent's
ws:// and wss:// trackers, which other clients announce to, are still taken."""

from __future__ import annotations

from pathlib import Path

import pytest

from bip._cli import main
from bip._errors import CLIError
from bip._inputs import check_tracker_url
from bip_metainfo import Metainfo


def _refusal(url: str) -> str:
    """What ``bip download --tracker`` says of ``url``."""
    with pytest.raises(CLIError) as caught:
        check_tracker_url(url)
    return str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "udp://127.0.0.1",  # before: taken, though no client can announce to it
        "udp://127.0.0.1:0",
        "udp://0x7f.1:6969",
        "udp://[::1",
        "http:///announce",
    ],
)
def test_refused_as_download_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    (tmp_path / "f").write_bytes(b"f")
    out = tmp_path / "x.torrent"
    assert main(["create", str(tmp_path / "f"), "-o", str(out), "-q", "-t", url]) == 1
    err = capsys.readouterr().err
    assert err == f"bip: error: {_refusal(url)}\n"
    assert not out.exists()


def test_webtorrent_and_sound_urls_are_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_bytes(b"f")
    out = tmp_path / "x.torrent"
    urls = "udp://127.0.0.1:6969/announce,wss://127.0.0.1/announce,HTTP://127.0.0.1/a"
    assert main(["create", str(tmp_path / "f"), "-o", str(out), "-q", "-t", urls]) == 0
    assert Metainfo.from_file(out).trackers == (tuple(urls.split(",")),)
    assert main(["create", str(tmp_path / "f"), "-o", str(out), "-q", "-t", "ws://"]) == 1
    assert "bad tracker URL 'ws://'" in capsys.readouterr().err
