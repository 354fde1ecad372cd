"""``bip tracker announce`` echoes the tracker URL in its shown form: a passkey in the query or
in a path segment never reaches the screen (the --json output keeps the URL as given)."""

from __future__ import annotations

import json

import pytest
from _http_tracker_server import MiniTracker, http_server_in_thread, request_target

from bip._cli import main

V1 = "ab" * 20
PASSKEY = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("path", "shown_path", "secret"),
    [
        (f"/{PASSKEY}/announce", "/…/announce", PASSKEY),
        ("/announce/aB3-xY9_kLmN0pQrStUv", "/announce/…", "aB3-xY9_kLmN0pQrStUv"),  # base64url
        ("/tracker/announce.php", "/tracker/announce.php", None),  # nothing secret: as it is
    ],
)
def test_a_passkey_in_the_path_is_hidden(
    path: str, shown_path: str, secret: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with http_server_in_thread(MiniTracker(), path=path) as tracker:
        argv = ["tracker", "announce", tracker.url + "?passkey=s3cret", V1, "--bind", "127.0.0.1"]
        assert main(argv) == 0
        out = capsys.readouterr().out
        origin = tracker.url.removesuffix(path)
        assert out.splitlines()[0] == f"tracker:   {origin}{shown_path}"
        assert "s3cret" not in out
        if secret is not None:
            assert secret not in out
        # The tracker was asked at the URL as given, passkey and all.
        [request] = tracker.requests
        assert request_target(request).startswith(f"{path}?passkey=s3cret&info_hash=")

        assert main([*argv, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["tracker"] == tracker.url + "?passkey=s3cret"
