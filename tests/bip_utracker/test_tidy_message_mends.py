"""Mends of what a review found in how a tracker's error message is tidied for exceptions and
logs: it is cut on whole escapes (never in the middle of one), a literal backslash is
escaped (the two characters ``\\n`` no longer read as an escaped newline), and space
separators other than ASCII space (a no-break space, an ideographic space) stay as they are,
as bip's ``safe_text`` keeps them."""

from __future__ import annotations

import random
import unicodedata

import pytest

from bip_handshake import PeerAddress
from bip_utracker._client_core import (
    MAX_ERROR_MESSAGE,
    AnnounceParams,
    RequestFailed,
    TrackerClientCore,
    _tidy_message,
)
from bip_utracker._codec import (
    AnnounceEvent,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    decode_request,
)
from bip_utracker._errors import TrackerRejectedError

TRACKER = PeerAddress.parse("127.0.0.1:6969")
PARAMS = AnnounceParams(b"i" * 20, b"p" * 20, port=6881, left=100, event=AnnounceEvent.STARTED)


def shown(char: str) -> str:
    """How one character of a tracker's message is shown."""
    if char == "\\":
        return "\\\\"
    if char.isprintable() or unicodedata.category(char) == "Zs":
        return char
    return repr(char)[1:-1]


@pytest.mark.parametrize(
    "message",
    [
        "x" + "\n" * 2000,
        "a" * (MAX_ERROR_MESSAGE - 3) + "\u202e",
        "a" * (MAX_ERROR_MESSAGE - 6) + "\U000e0041",
        "a" * (MAX_ERROR_MESSAGE - 1) + "\\",
        "b" * 900 + "\x85" * 200,
    ],
)
def test_a_message_is_cut_on_whole_escapes(message: str) -> None:
    tidy = _tidy_message(message)
    whole = ""
    for piece in (shown(char) for char in message):  # the longest run of whole escapes
        if len(whole) + len(piece) > MAX_ERROR_MESSAGE:
            break
        whole += piece
    assert tidy == whole


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("a\\nb", "a\\\\nb"),  # the two characters \ and n: not a newline escaped
        ("refused\n" + "FAKE", "refused\\nFAKE"),
        ("torrent\u00a0not\u00a0registered", "torrent\u00a0not\u00a0registered"),
        ("\u767b\u9332\u3000\u3055\u308c\u3066\u3044\u307e\u305b\u3093", None),  # IDEOGRAPHIC
        ("zero\u200bwidth\u202e", "zero\\u200bwidth\\u202e"),
        ("line\u2028sep\x85nel\x9b2J", "line\\u2028sep\\x85nel\\x9b2J"),
        ("private\ue000use un\u0378assigned", "private\\ue000use un\\u0378assigned"),
    ],
)
def test_a_message_escapes_backslashes_and_keeps_spaces(message: str, expected: str | None) -> None:
    assert _tidy_message(message) == (message if expected is None else expected)


def test_a_refusal_carries_the_tidy_message() -> None:
    core = TrackerClientCore(rng=random.Random(7))
    core.announce(TRACKER, PARAMS, 0.0)
    [(connect_data, _)] = core.datagrams_to_send(0.0)
    connect = decode_request(connect_data)
    assert isinstance(connect, ConnectRequest)
    core.receive_datagram(ConnectResponse(connect.transaction_id, 99).encode(), TRACKER, 0.0)
    [(announce_data, _)] = core.datagrams_to_send(0.0)
    announce = decode_request(announce_data)
    refusal = ErrorResponse(announce.transaction_id, "not\u00a0registered: C:\\x").encode()
    core.receive_datagram(refusal, TRACKER, 0.0)
    failed = core.next_event()
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, TrackerRejectedError)
    assert failed.error.message == "not\u00a0registered: C:\\\\x"
