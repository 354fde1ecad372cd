"""Review of tracker names and shown URLs: regressions for what the review found.

``is_secret_segment`` missed standard base64 passkeys (a "+", "/" or "=" ended a run, and
"%2B" or "%2F" cut one into pieces too short to judge: about one in three went to the logs)
and base64url tokens whose pieces had no digits (3 in 100); it is measured here on seeded
random tokens of each real shape, and ordinary file names must stay readable.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Callable
from urllib.parse import quote

import pytest

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
        "%ZZ-not-an-escape",
    ],
)
def test_ordinary_names_stay_readable(name: str) -> None:
    assert not is_secret_segment(name)
