"""MSE cryptographic primitives: 768-bit Diffie-Hellman, SHA-1 hashes, RC4-drop1024.

Small pure functions plus one stateful cipher class; the state machines in `_mse` use them.

>>> y = dh_public_key(2)
>>> len(y), y[-1]
(96, 4)
>>> RC4Stream(bytes.fromhex("0102030405")).process(bytes(4)).hex()
'30abbcc7'
"""

from __future__ import annotations

import hashlib

try:  # cryptography >= 43 moved the legacy ciphers here
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher

__all__ = [
    "DH_G",
    "DH_KEY_LEN",
    "DH_P",
    "VC",
    "RC4Stream",
    "dh_public_key",
    "dh_secret",
    "hash_concat",
    "is_valid_public_key",
    "stream_keys",
]

#: The 768-bit MSE prime (the Oakley group 1 prime).
DH_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E"
    "3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3621000000"
    "0000090563",
    16,
)
#: The DH generator.
DH_G = 2
#: Length in bytes of a public key or shared secret on the wire.
DH_KEY_LEN = 96
#: The verification constant: eight zero bytes.
VC = bytes(8)
#: Keystream bytes thrown away after keying RC4.
RC4_DISCARD = 1024


def hash_concat(*parts: bytes) -> bytes:
    """SHA-1 of the concatenation of `parts` (the spec's ``HASH(a, b, ...)``).

    >>> hash_concat(b"ab", b"c") == hash_concat(b"abc")
    True
    """
    h = hashlib.sha1()
    for part in parts:
        h.update(part)
    return h.digest()


def dh_public_key(private_key: int) -> bytes:
    """``G ** private_key mod P`` as 96 big-endian bytes."""
    return pow(DH_G, private_key, DH_P).to_bytes(DH_KEY_LEN, "big")


def is_valid_public_key(public_key: bytes) -> bool:
    """True if a remote key is 96 bytes and lies in [2, P-2] (0, 1, P-1 and >= P are degenerate).

    >>> is_valid_public_key((1).to_bytes(96, "big")), is_valid_public_key((2).to_bytes(96, "big"))
    (False, True)
    """
    if len(public_key) != DH_KEY_LEN:
        return False
    y = int.from_bytes(public_key, "big")
    return 2 <= y <= DH_P - 2


def dh_secret(private_key: int, remote_public_key: bytes) -> bytes:
    """The shared secret S as 96 big-endian bytes. The caller validates the remote key first."""
    y = int.from_bytes(remote_public_key, "big")
    return pow(y, private_key, DH_P).to_bytes(DH_KEY_LEN, "big")


def stream_keys(secret: bytes, skey: bytes) -> tuple[bytes, bytes]:
    """``(keyA, keyB)``: RC4 keys for the initiator->receiver and receiver->initiator streams."""
    return hash_concat(b"keyA", secret, skey), hash_concat(b"keyB", secret, skey)


class RC4Stream:
    """One direction of an MSE RC4 stream: keyed, 1024 keystream bytes discarded, then continuous.

    Encrypting and decrypting are the same operation (XOR with the keystream).

    >>> a, b = RC4Stream(b"k" * 20), RC4Stream(b"k" * 20)
    >>> b.process(a.process(b"hello"))
    b'hello'
    """

    __slots__ = ("_ctx",)

    def __init__(self, key: bytes) -> None:
        self._ctx = Cipher(ARC4(key), mode=None).encryptor()
        self._ctx.update(bytes(RC4_DISCARD))

    def process(self, data: bytes | bytearray | memoryview) -> bytes:
        """XOR `data` with the next ``len(data)`` keystream bytes."""
        if not data:
            return b""
        return self._ctx.update(bytes(data))
