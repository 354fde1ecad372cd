"""Regressions for what coverage-guided fuzzing of the UDP tracker codecs found.

Each input is the minimised form of a fuzzer finding: before the fix it escaped as an
exception other than the package's own.
"""

from __future__ import annotations

import pytest

from bip_utracker._errors import LocalProtocolError
from bip_utracker._url import parse_tracker_url


@pytest.mark.parametrize(
    "url",
    [
        "udp://[::1]:6969/a\udcc4nn?x=1",  # in the path: was UnicodeEncodeError
        "udp://tracker.example:6969/?info=\ud800",  # in the query
        "udp://tracker.example:6969/announce#\udcff",  # even in the dropped fragment
    ],
)
def test_lone_surrogate_in_tracker_url_is_our_error(url: str) -> None:
    with pytest.raises(LocalProtocolError, match="not valid Unicode"):
        parse_tracker_url(url)


def test_non_ascii_path_is_still_kept_as_utf8_url_data() -> None:
    assert parse_tracker_url("udp://127.0.0.1:1/ä?x").url_data == "/ä?x".encode()
