"""Review of tracker names and shown URLs: regressions for what the review found.

Peer names: the system's getaddrinfo runs in one of trio's worker threads, which a cancel
abandons but cannot stop; the thread holds a token of trio's default thread limiter (shared
with file I/O and every other lookup) until the resolver's own timeouts end it. Cancelled at
5 s and its slot given back, a tracker naming silent peers every announce piled up such
threads four at a time per torrent. The fake resolver here plays such a thread: it ignores
cancellation for a while.

``is_secret_segment`` missed standard base64 passkeys (a "+", "/" or "=" ended a run, and
"%2B" or "%2F" cut one into pieces too short to judge: about one in three went to the logs)
and base64url tokens whose pieces had no digits (3 in 100); it is measured here on seeded
random tokens of each real shape, and ordinary file names must stay readable.
"""

from __future__ import annotations

import base64
import math
import random
import uuid
from collections.abc import Callable
from urllib.parse import quote

import pytest
import trio
import trio.testing
from tests._resolvers import FixedResolver

from bip._client._http_tracker import PEER_NAME_LOOKUPS, PEER_NAME_OVERRUN, resolve_peer_names
from bip._client._http_tracker_codec import PeerName
from bip_utracker._url import is_secret_segment, shown_url

_SAMPLES = 2000
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _b64(rng: random.Random, size: int) -> str:
    return base64.b64encode(rng.randbytes(size)).decode()


def _b64url(rng: random.Random, size: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(size)).decode().rstrip("=")


# shape -> (generator, the most it may miss of _SAMPLES)
SHAPES: dict[str, tuple[Callable[[random.Random], str], float]] = {
    "hex32": (lambda rng: rng.randbytes(16).hex(), 0.0),
    "hex40 upper": (lambda rng: rng.randbytes(20).hex().upper(), 0.0),
    "uuid": (lambda rng: str(uuid.UUID(bytes=rng.randbytes(16), version=4)), 0.0),
    "base64 16 bytes": (lambda rng: _b64(rng, 16), 0.03),
    "base64 16 bytes, percent-encoded": (lambda rng: quote(_b64(rng, 16), safe=""), 0.03),
    "base64 24 bytes, percent-encoded": (lambda rng: quote(_b64(rng, 24), safe=""), 0.01),
    "base64url 16 bytes": (lambda rng: _b64url(rng, 16), 0.025),
    "base64url 32 bytes": (lambda rng: _b64url(rng, 32), 0.002),
    "base32 20 bytes": (lambda rng: base64.b32encode(rng.randbytes(20)).decode(), 0.005),
    "base62 32": (lambda rng: "".join(rng.choice(_ALNUM) for _ in range(32)), 0.005),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_real_passkey_shapes_are_hidden(shape: str) -> None:
    generate, most = SHAPES[shape]
    rng = random.Random(shape)
    missed = [key for key in (generate(rng) for _ in range(_SAMPLES)) if not is_secret_segment(key)]
    assert len(missed) <= most * _SAMPLES, missed[:5]


@pytest.mark.parametrize(
    "secret",
    [
        "iHa%2FEkU5%2FukCO1ZOsEvD4Q%3D%3D",  # missed before: "2F" pieces
        "vmDUuYjIF3pykNu+EkWBVw==",  # missed before: "+" and "==" ended the runs
        "qDJuhuayPrIIIztzFYeYgQ",  # missed before: a base64url token without digits
        "c_DTHKvVrXUtEJkxKx_BkQ",  # missed before: base64url pieces without digits
        "14122814-540b-493a-bdbd-85824237289d",  # missed before: a UUID of few letters
    ],
)
def test_passkeys_missed_before_are_hidden(secret: str) -> None:
    assert is_secret_segment(secret)
    shown = shown_url(f"https://t.example/{secret}/announce")
    assert shown == "https://t.example/\u2026/announce"


@pytest.mark.parametrize(
    "name",
    [
        "announce",
        "announce.php",
        "MyTrackerAnnounceEndpoint",
        "ThisIsAVeryLongCamelCaseName",
        "iPhoneXsMax-review-2024",
        "C++_Primer_5th_Edition.pdf",
        "Ubuntu+Server+22.04",
        "My%20Holiday%20Photos%202024.zip",
        "%E4%B8%AD%E6%96%87.iso",
        "OpenWrt-23.05.3-x86-64-generic-ext4-combined-efi.img.gz",
        "Game.of.Thrones.S08E06.The.Iron.Throne.1080p.AMZN.WEB-DL.DDP5.1.H.264-GoT.mkv",
        "LibreOffice_24.2.3_Linux_x86-64_deb.tar.gz",
        "android-studio-2023.3.1.18-linux.tar.gz",
        "kubernetes-server-linux-amd64.tar.gz",
        "wikipedia_en_all_maxi_2024-01.zim",
        "2024-05-01",
        "aaaa0000-aaaa0000",  # hex-looking words, not a UUID
        "%ZZ-not-an-escape",
    ],
)
def test_ordinary_names_stay_readable(name: str) -> None:
    assert not is_secret_segment(name)


# -- peer names: lookups that outlive their cancel -----------------------------------------------


async def test_a_lookup_past_its_timeout_keeps_its_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Every lookup takes 20 s whatever cancels it (a worker thread's way).
    stubborn = FixedResolver(default=("127.0.0.1",), delay=20.0, outlives_cancel=True)
    trio.socket.set_custom_hostname_resolver(stubborn)
    found: list[PeerName] = []
    names = [PeerName(f"slow{index}.invalid", 1) for index in range(3 * PEER_NAME_LOOKUPS)]
    async with trio.open_nursery() as nursery:  # two torrents' answers at once
        nursery.start_soon(resolve_peer_names, names[:6], lambda name, _: found.append(name))
        nursery.start_soon(resolve_peer_names, names[6:], lambda name, _: found.append(name))
    assert len(stubborn.asked) == len(names)
    assert stubborn.most == PEER_NAME_LOOKUPS  # never more threads than places
    assert found == []  # every one answered after its 5 s: dropped


async def test_a_lookup_that_never_ends_is_given_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    silent = FixedResolver(delay=math.inf)  # never answers, ends when cancelled
    trio.socket.set_custom_hostname_resolver(silent)
    start = trio.current_time()
    await resolve_peer_names([PeerName("stuck.invalid", 1)], lambda name, _: None)
    assert trio.current_time() - start == pytest.approx(PEER_NAME_OVERRUN)
    assert silent.running == 0


async def test_removing_the_torrent_cancels_its_lookups(
    autojump_clock: trio.testing.MockClock,
) -> None:
    silent = FixedResolver(delay=math.inf)  # never answers, ends when cancelled
    trio.socket.set_custom_hostname_resolver(silent)
    names = [PeerName(f"p{index}.invalid", 1) for index in range(8)]
    with trio.move_on_after(1):
        await resolve_peer_names(names, lambda name, _: None)
    assert silent.running == 0
