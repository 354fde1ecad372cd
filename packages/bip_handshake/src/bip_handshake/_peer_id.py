"""Peer ids: the 20 bytes a peer names itself with in the handshake.

A peer id is opaque on the wire, but by convention its first bytes say which program sent it.
:class:`PeerId` generates ids in the Azureus style (``-BP0100-`` plus random bytes) and
:attr:`PeerId.client` turns the common styles back into a :class:`ClientInfo` for display:

- Azureus style ``-XXabcd-``: a two-character client code and four version characters, each a
  digit or a capital letter (``A`` = 10 ... ``Z`` = 35), e.g. ``-LT2110-`` is libtorrent 2.1.1;
- Shadow style ``S58B-----``: one letter for the client, then up to five version characters
  (``0-9A-Za-z.-`` worth 0 to 63) padded with ``-``, e.g. Shadow 5.8.11;
- Mainline style ``M7-4-3--``: one letter and three dash-separated decimal numbers;
- a few programs with their own habits, such as aria2 (``A2-1-36-0-``) and Transmission.

Identification is a display aid only: any program may send any id, so never base a decision on it.
"""

from __future__ import annotations

import importlib.metadata
import re
import secrets
import string
from dataclasses import dataclass
from random import Random

from ._errors import HandshakeError

__all__ = ["DEFAULT_PEER_ID_PREFIX", "ClientInfo", "PeerId", "PeerIdError", "azureus_prefix"]

PEER_ID_LENGTH = 20

_BASE36 = string.digits + string.ascii_uppercase
_SHADOW_DIGITS = string.digits + string.ascii_uppercase + string.ascii_lowercase + ".-"
_PRINTABLE = frozenset(range(0x21, 0x7F))


class PeerIdError(HandshakeError, ValueError):
    """A peer id (or a prefix for one) is malformed.

    A :class:`ValueError` too, as it always was.

    >>> PeerId(b"too short")
    Traceback (most recent call last):
    ...
    bip_handshake._peer_id.PeerIdError: a peer id is 20 bytes, got 9
    """


def azureus_prefix(code: str, major: int, minor: int, revision: int, tag: int = 0) -> bytes:
    """The Azureus-style prefix ``-XXabcd-`` for a two-character client code and a version.

    Each version part is written as one base-36 character (``0-9`` then ``A-Z``), so it must be
    in ``0..35``; *code* must be two printable ASCII characters.

    >>> azureus_prefix("BP", 0, 1, 0)
    b'-BP0100-'
    >>> azureus_prefix("DE", 1, 3, 15)
    b'-DE13F0-'
    """
    raw = code.encode("ascii", errors="replace")
    if len(raw) != 2 or not all(byte in _PRINTABLE for byte in raw):
        raise PeerIdError(f"a client code is two printable ASCII characters, got {code!r}")
    parts = (major, minor, revision, tag)
    if not all(0 <= part < len(_BASE36) for part in parts):
        raise PeerIdError(f"each version part must be in 0..35, got {parts}")
    return b"-" + raw + "".join(_BASE36[part] for part in parts).encode("ascii") + b"-"


def _version_parts(version: str) -> tuple[int, int, int]:
    """``(major, minor, revision)`` of a release version, each capped to one base-36 digit.

    A pre-release or local suffix is dropped and a missing part is 0; a part above 35 is written
    as 35 (``Z``) rather than failing at import, since the id only helps people recognise us.

    >>> _version_parts("0.1.0"), _version_parts("1.2"), _version_parts("2.0.1rc1+local")
    ((0, 1, 0), (1, 2, 0), (2, 0, 1))
    >>> _version_parts("0.40.0"), _version_parts("unknown")
    ((0, 35, 0), (0, 0, 0))
    """
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if match is None:
        return (0, 0, 0)
    major, minor, revision = (min(int(part or 0), len(_BASE36) - 1) for part in match.groups())
    return (major, minor, revision)


def _package_version() -> str:
    """bip_handshake's version, as installed: its pyproject.toml is the one place to bump."""
    try:
        return importlib.metadata.version("bip-handshake")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare source tree
        return "0"


_BIP_VERSION = _version_parts(_package_version())

DEFAULT_PEER_ID_PREFIX: bytes = azureus_prefix("BP", *_BIP_VERSION)
"""The prefix bip announces itself with: ``-BP`` plus bip_handshake's version (``-BP0100-``)."""


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The program and version a peer id claims, for display.

    >>> info = PeerId(b"-qB4520-" + bytes(12)).client
    >>> info
    ClientInfo(name='qBittorrent', version='4.5.2')
    >>> str(info)
    'qBittorrent 4.5.2'
    """

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


@dataclass(frozen=True, slots=True)
class PeerId:
    """Exactly 20 bytes naming a peer.

    ``repr`` shows the bytes exactly; ``str`` is a display form with every byte outside printable
    ASCII replaced by ``.``.

    >>> peer_id = PeerId(b"-LT2110-abcdefghijkl")
    >>> peer_id
    PeerId(b'-LT2110-abcdefghijkl')
    >>> str(peer_id)
    '-LT2110-abcdefghijkl'
    >>> peer_id.client
    ClientInfo(name='libtorrent', version='2.1.1')
    >>> PeerId.generate(rng=Random(1)).value[:8]
    b'-BP0100-'
    >>> PeerId.from_hex(peer_id.hex()) == peer_id
    True
    """

    value: bytes

    def __post_init__(self) -> None:
        value: object = self.value
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
            object.__setattr__(self, "value", value)
        if not isinstance(value, bytes):
            raise PeerIdError(f"a peer id is bytes, got {type(value).__name__}")
        if len(value) != PEER_ID_LENGTH:
            raise PeerIdError(f"a peer id is {PEER_ID_LENGTH} bytes, got {len(value)}")

    @classmethod
    def generate(
        cls, prefix: bytes | bytearray = DEFAULT_PEER_ID_PREFIX, rng: Random | None = None
    ) -> PeerId:
        """A new peer id: *prefix* followed by random bytes up to 20.

        With no *rng* the random bytes come from :mod:`secrets`; pass a seeded
        :class:`random.Random` for reproducible ids (tests, simulations).

        >>> a = PeerId.generate(rng=Random(7))
        >>> a == PeerId.generate(rng=Random(7))
        True
        >>> PeerId.generate(b"-XX1234-").value.startswith(b"-XX1234-")
        True
        """
        if not isinstance(prefix, bytes | bytearray) or len(prefix) > PEER_ID_LENGTH:
            raise PeerIdError(f"a peer id prefix is at most {PEER_ID_LENGTH} bytes")
        missing = PEER_ID_LENGTH - len(prefix)
        tail = secrets.token_bytes(missing) if rng is None else rng.randbytes(missing)
        return cls(bytes(prefix) + tail)

    @classmethod
    def from_hex(cls, text: str) -> PeerId:
        """Parse 40 hexadecimal digits.

        >>> PeerId.from_hex("2d4250303130302d" + "00" * 12).client
        ClientInfo(name='bip', version='0.1.0')
        """
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise PeerIdError("a peer id in hex is 40 hexadecimal digits") from None
        return cls(raw)

    def hex(self) -> str:
        """The 40 lower-case hexadecimal digits of the id.

        >>> PeerId(bytes(range(20))).hex()[:8]
        '00010203'
        """
        return self.value.hex()

    def __bytes__(self) -> bytes:
        return self.value

    def __str__(self) -> str:
        return "".join(chr(byte) if byte in _PRINTABLE else "." for byte in self.value)

    def __repr__(self) -> str:
        return f"PeerId({self.value!r})"

    @property
    def client(self) -> ClientInfo | None:
        """The client this id claims to come from, or ``None`` when no known style matches.

        >>> PeerId(b"M7-4-3--" + bytes(12)).client
        ClientInfo(name='BitTorrent', version='7.4.3')
        >>> PeerId(bytes(20)).client is None
        True
        """
        return identify_client(self.value)


# --------------------------------------------------------------------------- identification

# Azureus-style two-character codes (BitTorrent specification wiki, libtorrent, Transmission).
_AZUREUS_NAMES: dict[bytes, str] = {
    b"7T": "aTorrent",
    b"AG": "Ares",
    b"A~": "Ares",
    b"AR": "Arctic Torrent",
    b"AT": "Artemis",
    b"AX": "BitPump",
    b"AZ": "Azureus",
    b"BB": "BitBuddy",
    b"BC": "BitComet",
    b"BF": "Bitflu",
    b"BG": "BTG",
    b"BI": "BiglyBT",
    b"BL": "BitBlinder",
    b"BP": "bip",
    b"BR": "BitRocket",
    b"BT": "BitTorrent",
    b"BW": "BitWombat",
    b"CD": "Enhanced CTorrent",
    b"CT": "CTorrent",
    b"DE": "Deluge",
    b"FD": "Free Download Manager",
    b"FW": "FrostWire",
    b"FX": "Freebox",
    b"HL": "Halite",
    b"KG": "KGet",
    b"KT": "KTorrent",
    b"LC": "LeechCraft",
    b"LP": "Lphant",
    b"LT": "libtorrent",
    b"LW": "LimeWire",
    b"MO": "MonoTorrent",
    b"NX": "Net Transport",
    b"OS": "OneSwarm",
    b"PD": "Pando",
    b"PI": "PicoTorrent",
    b"QD": "QQDownload",
    b"QT": "Qt 4 Torrent example",
    b"RT": "Retriever",
    b"SB": "Swiftbit",
    b"SD": "Xunlei",
    b"SK": "spark",
    b"ST": "SymTorrent",
    b"SZ": "Shareaza",
    b"S~": "Shareaza beta",
    b"TL": "Tribler",
    b"TR": "Transmission",
    b"TS": "TorrentStorm",
    b"TT": "TuoTu",
    b"UL": "uLeecher",
    b"UM": "µTorrent Mac",
    b"UT": "µTorrent",
    b"UW": "µTorrent Web",
    b"VG": "Vagaa",
    b"WD": "WebTorrent Desktop",
    b"WT": "BitLet",
    b"WW": "WebTorrent",
    b"WY": "FireTorrent",
    b"XL": "Xunlei",
    b"XT": "XanTorrent",
    b"XX": "Xtorrent",
    b"ZT": "ZipTorrent",
    b"lt": "rTorrent (libtorrent)",
    b"pX": "pHoeniX",
    b"qB": "qBittorrent",
    b"st": "SharkTorrent",
}

# Shadow-style single letters.
_SHADOW_NAMES: dict[int, str] = {
    ord("A"): "ABC",
    ord("O"): "Osprey Permaseed",
    ord("Q"): "BTQueue",
    ord("R"): "Tribler",
    ord("S"): "Shadow",
    ord("T"): "BitTornado",
    ord("U"): "UPnP NAT Bit Torrent",
}

# Mainline-style single letters.
_MAINLINE_NAMES: dict[str, str] = {"M": "BitTorrent", "Q": "Queen Bee"}

_MAINLINE = re.compile(rb"([A-Z])(\d{1,3})-(\d{1,3})-(\d{1,3})-")
_ARIA2 = re.compile(rb"A2-(\d{1,3})-(\d{1,3})-(?:(\d{1,3})-)?")
_MLDONKEY = re.compile(rb"-ML(\d{1,3})\.(\d{1,3})\.(\d{1,3})-")
_XBT = re.compile(rb"XBT(\d)(\d)(\d)[-d]")


def _base36(chars: bytes) -> list[int] | None:
    """Decode each byte as one base-36 digit, or ``None`` if any is not one."""
    values = [_BASE36.find(chr(byte)) for byte in chars]
    return None if -1 in values else values


def _dotted(parts: list[int]) -> str:
    return ".".join(str(part) for part in parts)


def _azureus_version(code: bytes, chars: bytes) -> str | None:
    """The version string for an Azureus-style id, following each client's own habits."""
    if code == b"TR":
        # Transmission: "-TR0072-" is 0.72, "-TR3000-" is 3.00, "-TR400B-" is 4.0.0 beta; the
        # fourth character is "0" for a release, "Z"/"X" for a development build, "B" for a beta.
        if chars.isdigit() and chars[0] == ord("0"):
            return f"0.{chars[2:4].decode('ascii')}"
        suffix = {ord("0"): "", ord("Z"): "+", ord("X"): "+", ord("B"): " beta"}.get(chars[3])
        if not chars[:3].isdigit() or suffix is None:
            return None
        major, rest = chars[0] - ord("0"), chars[1:3].decode("ascii")
        if major < 4:
            return f"{major}.{rest}{suffix}"
        return f"{major}.{rest[0]}.{rest[1]}{suffix}"
    if code == b"CD":
        # Enhanced CTorrent writes two decimal pairs: "-CD0303-" is dnh3.3.
        if not chars.isdigit():
            return None
        return f"{int(chars[:2])}.{int(chars[2:])}"
    if code in (b"UT", b"UM", b"UW"):
        # µTorrent: three version digits and a build type ("B" beta).
        values = _base36(chars[:3])
        if values is None:
            return None
        return _dotted(values) + (" beta" if chars[3] == ord("B") else "")
    values = _base36(chars)
    if values is None:
        return None
    if code == b"AZ":
        return _dotted(values)  # Azureus and Vuze always use four parts
    return _dotted(values if values[3] else values[:3])


def _identify_special(data: bytes) -> ClientInfo | None:
    if data.startswith(b"AZ2500BT"):
        return ClientInfo("BitTyrant", "")
    if match := _ARIA2.match(data):
        major, minor, patch = match.groups()
        return ClientInfo("aria2", f"{int(major)}.{int(minor)}.{int(patch or b'0')}")
    if match := _MLDONKEY.match(data):
        return ClientInfo("MLDonkey", _dotted([int(part) for part in match.groups()]))
    if match := _XBT.match(data):
        beta = " debug" if data[6] == ord("d") else ""
        return ClientInfo("XBT Client", _dotted([int(part) for part in match.groups()]) + beta)
    if data.startswith(b"exbc"):
        return ClientInfo("BitComet", f"{data[4]}.{data[5]:02d}")
    return None


def _identify_azureus(data: bytes) -> ClientInfo | None:
    if data[0] != ord("-") or data[7] != ord("-"):
        return None
    code = data[1:3]
    if not all(byte in _PRINTABLE for byte in code):
        return None
    version = _azureus_version(code, data[3:7])
    if version is None:
        return None
    name = _AZUREUS_NAMES.get(code, code.decode("ascii"))
    if code == b"AZ" and not version.startswith("2."):
        name = "Vuze"  # Azureus was renamed Vuze with version 3
    return ClientInfo(name, version)


def _identify_mainline(data: bytes) -> ClientInfo | None:
    match = _MAINLINE.match(data)
    if match is None:
        return None
    name = _MAINLINE_NAMES.get(match.group(1).decode("ascii"))
    if name is None:
        return None
    return ClientInfo(name, _dotted([int(part) for part in match.groups()[1:]]))


def _identify_shadow(data: bytes) -> ClientInfo | None:
    name = _SHADOW_NAMES.get(data[0])
    if name is None:
        return None
    field = data[1:6]
    digits = field.rstrip(b"-")
    if not digits or data[6:9] != b"---" or b"-" in digits:
        return None
    values = [_SHADOW_DIGITS.find(chr(byte)) for byte in digits]
    if -1 in values:
        return None
    return ClientInfo(name, _dotted(values))


def identify_client(data: bytes) -> ClientInfo | None:
    """The :class:`ClientInfo` a 20-byte peer id claims, or ``None`` (never raises for 20 bytes)."""
    for parse in (_identify_special, _identify_azureus, _identify_mainline, _identify_shadow):
        info = parse(data)
        if info is not None:
            return info
    return None
