"""What the interop tests of a bip leecher behind a real SOCKS5 proxy share: the settings of a
session on one loopback host, a seed's two-file payload, and the filter with which the seed
refuses the leecher's own address (so that only what went through the proxy delivers a byte).
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from pathlib import Path

from bip._client import ClientConfig
from bip_handshake import EncryptionPolicy, IPFilter, IPRange
from bip_metainfo import Metainfo, create_torrent

__all__ = ["PAYLOAD_FILES", "refusing", "seed_payload", "session_config"]

PAYLOAD_FILES = ("one.bin", "two.bin")
"""The names of :func:`seed_payload` 's files."""


def session_config(host: str, **changes: object) -> ClientConfig:
    """A session listening on ``host`` alone, without trackers, preferring encryption, saving
    its resume data every half second and announcing no NAT-PMP address; ``changes`` are
    further :class:`ClientConfig` fields (and may override these)."""
    settings: dict[str, object] = {
        "listen": ((host, 0),),
        "trackers": False,
        "encryption": EncryptionPolicy.PREFER_ENCRYPTED,
        "resume_interval": 0.5,
        "natpmp_announce_address": None,
    }
    settings.update(changes)
    return ClientConfig(**settings)  # type: ignore[arg-type]


def seed_payload(root: Path, *, size: int, seed: int) -> tuple[Path, Metainfo]:
    """``root/seed/payload`` with ``one.bin`` of ``size`` random bytes and ``two.bin`` of
    1,000 (``random.Random(seed)``: the same on every run), and its hybrid torrent."""
    folder = root / "seed" / "payload"
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    (folder / PAYLOAD_FILES[0]).write_bytes(rng.randbytes(size))
    (folder / PAYLOAD_FILES[1]).write_bytes(rng.randbytes(1_000))
    return folder, create_torrent(folder, version="hybrid", creation_date=None, created_by=None)


def refusing(host: str) -> IPFilter:
    """An IP filter that blocks the IPv4 address ``host`` alone."""
    address = IPv4Address(host)
    return IPFilter.blocking([IPRange(address, address)])
