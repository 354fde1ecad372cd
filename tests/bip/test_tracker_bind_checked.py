"""``ClientConfig.tracker_bind`` is one IP address, checked where it is given.

Before, any string that was not an address was read as a host name ("the system picks"):
``"10.8.0.2:6881"``, ``"[fd00::2]"``, ``"wg0"``, ``""`` or ``" 10.8.0.2"`` bound the tracker
clients to every address of the machine, so a VPN user announced from outside it too."""

from __future__ import annotations

import pytest

from bip._client import ClientConfig
from bip._client._session import _tracker_binds


@pytest.mark.parametrize(
    "bad",
    [
        "10.8.0.2:6881",
        "[fd00::2]",
        "[fd00::2]:6881",
        "wg0",
        "vpn.example",
        "",
        " 10.8.0.2",
        "10.8.0.2 ",
    ],
)
def test_a_tracker_bind_that_is_no_address_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^tracker_bind must be an IP address \(no port"):
        ClientConfig(tracker_bind=bad)


@pytest.mark.parametrize("bad", [b"10.8.0.2", ("10.8.0.2",), 3])
def test_a_tracker_bind_that_is_no_str_is_refused(bad: object) -> None:
    with pytest.raises(TypeError, match=r"^tracker_bind must be a str"):
        ClientConfig(tracker_bind=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("good", "binds"),
    [
        ("10.8.0.2", ("10.8.0.2", None)),
        ("fd00::2", (None, "fd00::2")),
        ("fe80::1%eth0", (None, "fe80::1%eth0")),  # with its scope, as a socket binds it
        ("::ffff:10.8.0.2", ("10.8.0.2", None)),
        ("0.0.0.0", ("0.0.0.0", "::")),
        (None, ("0.0.0.0", "::")),
    ],
)
def test_an_address_is_taken(good: str | None, binds: tuple[str | None, str | None]) -> None:
    assert _tracker_binds(ClientConfig(tracker_bind=good)) == binds
